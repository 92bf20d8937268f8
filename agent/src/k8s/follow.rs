//! One loop that follows a set of Nodes through kube's watcher and hands the complete, converted
//! set to a callback: shared by the own-Node view and the peers view.

use std::collections::BTreeMap;
use std::pin::pin;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::utils::StreamBackoff;
use kube::runtime::watcher::{self, watcher, Event};
use kube::{Api, Client};

use super::backoff::WatchBackoff;
use super::convert::node_info;
use super::health::{FailureLog, KubeHealth, LogLevel};
use weft_plan::view::NodeInfo;

/// Follows the Nodes `config` selects and calls `publish` with all of them by name after each
/// complete (re)list and after every change. Nodes that do not convert are logged and left out.
///
/// Every event and error is recorded in `health`. Runs until its task is dropped. Errors are
/// retried with backoff and logged with backoff too ([`FailureLog`]); kube's watcher
/// resumes from the last resourceVersion, and relists after 410 Gone, so `publish` always sees
/// a set consistent with some resourceVersion of the API server.
pub(crate) async fn follow_nodes(
    client: Client,
    config: watcher::Config,
    what: &str,
    health: &KubeHealth,
    mut publish: impl FnMut(&BTreeMap<String, NodeInfo>),
) {
    let mut failures = FailureLog::default();
    let api: Api<Node> = Api::all(client);
    let mut nodes = BTreeMap::new();
    let mut relisted = BTreeMap::new();
    let mut events = pin!(StreamBackoff::new(
        watcher(api, config),
        WatchBackoff::default()
    ));
    while let Some(event) = events.next().await {
        match &event {
            // `Init` comes before the list request: no answer from the server yet.
            Ok(Event::Init) => {}
            Ok(_) => {
                health.contact_ok();
                let ended = failures.succeeded();
                if ended > 0 {
                    tracing::info!(watch = what, failures = ended, "node watch recovered");
                }
            }
            // A 410 is an answer: the server is there.
            Err(watcher::Error::WatchError(status)) if status.code == 410 => health.contact_ok(),
            Err(e) => {
                let message = e.to_string();
                health.contact_failed(&message);
                match failures.failed(&message, std::time::Instant::now()) {
                    LogLevel::Warn => tracing::warn!(
                        watch = what, error = %message, attempts = failures.failures(),
                        "node watch failed, retrying with backoff"
                    ),
                    LogLevel::Debug => tracing::debug!(
                        watch = what, error = %message, attempts = failures.failures(),
                        "node watch failed, retrying with backoff"
                    ),
                }
            }
        }
        match event {
            Ok(Event::Init) => relisted.clear(),
            Ok(Event::InitApply(node)) => insert(&mut relisted, &node),
            Ok(Event::InitDone) => {
                nodes = std::mem::take(&mut relisted);
                publish(&nodes);
            }
            Ok(Event::Apply(node)) => {
                insert(&mut nodes, &node);
                publish(&nodes);
            }
            Ok(Event::Delete(node)) => {
                if let Some(name) = node.metadata.name.as_deref() {
                    nodes.remove(name);
                }
                publish(&nodes);
            }
            Err(watcher::Error::WatchError(status)) if status.code == 410 => {
                tracing::info!(watch = what, "node watch expired (410 Gone), relisting");
            }
            Err(_) => {}
        }
    }
}

fn insert(nodes: &mut BTreeMap<String, NodeInfo>, node: &Node) {
    match node_info(node) {
        Ok(info) => {
            nodes.insert(info.name.clone(), info);
        }
        Err(e) => {
            tracing::warn!(error = %e, "ignoring node");
            if let Some(name) = node.metadata.name.as_deref() {
                nodes.remove(name);
            }
        }
    }
}
