//! What the agent needs from a Node, and the view of the agent's own Node.

use ipnet::IpNet;
use kube::runtime::watcher;
use kube::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use std::sync::Arc;

use super::follow::follow_nodes;
use super::health::KubeHealth;
use super::K8sError;
pub use weft_plan::view::{LocalNode, NodeInfo};

/// A live view of the agent's own Node, kept by a background watch.
///
/// The channel holds `None` while the Node does not exist (or does not convert), and the latest
/// [`LocalNode`] otherwise; it changes only when the converted value changes. While the Node has
/// no podCIDRs the view logs `waiting for node NAME to get podCIDRs` once, and logs the CIDRs
/// when they appear or change. Dropping the view stops the watch.
pub struct NodeView {
    name: String,
    rx: watch::Receiver<Option<LocalNode>>,
    task: JoinHandle<()>,
}

impl NodeView {
    /// Starts watching Node `name` (a watch on `metadata.name=NAME`) on the current runtime.
    pub fn start(client: Client, name: &str) -> Self {
        Self::start_with(client, name, KubeHealth::new())
    }

    /// [`NodeView::start`], recording the watch's successes and failures in `health`.
    pub fn start_with(client: Client, name: &str, health: Arc<KubeHealth>) -> Self {
        let (tx, rx) = watch::channel(None);
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let node_name = name.to_string();
        let mut logged: Option<Vec<IpNet>> = None;
        let task = tokio::spawn(async move {
            follow_nodes(client, config, "own node", &health, move |nodes| {
                let node = nodes.get(&node_name).cloned();
                let cidrs = node.as_ref().map(|n| n.pod_cidrs.clone()).unwrap_or_default();
                if logged.as_ref() != Some(&cidrs) {
                    if cidrs.is_empty() {
                        tracing::info!(node = %node_name, "waiting for node {node_name} to get podCIDRs");
                    } else {
                        tracing::info!(node = %node_name, pod_cidrs = ?cidrs, "node {node_name} has podCIDRs");
                    }
                    logged = Some(cidrs);
                }
                tx.send_if_modified(|current| {
                    let changed = *current != node;
                    *current = node;
                    changed
                });
            })
            .await;
        });
        Self {
            name: name.to_string(),
            rx,
            task,
        }
    }

    /// The Node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A receiver of the view, to await changes.
    pub fn subscribe(&self) -> watch::Receiver<Option<LocalNode>> {
        self.rx.clone()
    }

    /// The latest value.
    pub fn current(&self) -> Option<LocalNode> {
        self.rx.borrow().clone()
    }

    /// Waits until the Node exists and has at least one podCIDR, and returns it.
    pub async fn wait_for_pod_cidrs(&self) -> Result<LocalNode, K8sError> {
        let mut rx = self.rx.clone();
        let closed = || K8sError::ViewClosed {
            node: self.name.clone(),
        };
        let node = rx
            .wait_for(|n| n.as_ref().is_some_and(|n| !n.pod_cidrs.is_empty()))
            .await
            .map_err(|_| closed())?;
        node.clone().ok_or_else(closed)
    }
}

impl Drop for NodeView {
    fn drop(&mut self) {
        self.task.abort();
    }
}
