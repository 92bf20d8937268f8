//! The view of every other Node in the cluster: the peers the datapath connects to.

use std::sync::Arc;

use super::health::KubeHealth;

use kube::runtime::watcher;
use kube::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use weft_plan::view::{NodeInfo, PeerNodes};

/// A live view of all Nodes except the agent's own, kept by a background watch.
///
/// The channel holds `None` until the first complete list, so a reconciler never mistakes "not
/// listed yet" for "no peers"; afterwards it holds the full peer set, replaced after every change
/// that alters a converted peer (status heartbeats do not wake receivers). Dropping the view stops
/// the watch.
pub struct PeersView {
    rx: watch::Receiver<Option<PeerNodes>>,
    task: JoinHandle<()>,
}

impl PeersView {
    /// Starts watching all Nodes, leaving out `own_name`, on the current runtime.
    pub fn start(client: Client, own_name: &str) -> Self {
        Self::start_with(client, own_name, KubeHealth::new())
    }

    /// [`PeersView::start`], recording the watch's successes and failures in `health`.
    pub fn start_with(client: Client, own_name: &str, health: Arc<KubeHealth>) -> Self {
        let (tx, rx) = watch::channel(None);
        let own = own_name.to_string();
        let task = tokio::spawn(async move {
            follow_nodes_into(client, own, tx, &health).await;
        });
        Self { rx, task }
    }

    /// A receiver of the view, to await changes.
    pub fn subscribe(&self) -> watch::Receiver<Option<PeerNodes>> {
        self.rx.clone()
    }

    /// The latest peer set, `None` before the first complete list.
    pub fn current(&self) -> Option<PeerNodes> {
        self.rx.borrow().clone()
    }
}

impl Drop for PeersView {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn follow_nodes_into(
    client: Client,
    own: String,
    tx: watch::Sender<Option<PeerNodes>>,
    health: &KubeHealth,
) {
    super::follow::follow_nodes(
        client,
        watcher::Config::default(),
        "peer nodes",
        health,
        |nodes| {
            let mut peers = nodes.clone();
            peers.remove(&own);
            tx.send_if_modified(|current| {
                let changed = current.as_deref() != Some(&peers);
                if changed {
                    *current = Some(Arc::new(peers));
                }
                changed
            });
        },
    )
    .await;
}
