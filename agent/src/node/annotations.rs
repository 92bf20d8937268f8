//! Keeps the own Node's Weft annotations (the transport address, and with the uplink attached
//! its MAC: [`super::peers::TRANSPORT_ADDRESS_ANNOTATION`], [`super::peers::UPLINK_MAC_ANNOTATION`])
//! equal to what the agent wants: plan ([`annotation_patch`], pure), then reconcile on every
//! change of the own Node's view and on a periodic resync. Annotations lost after the first
//! publish (an API server restored from backup, a user's edit) are written again, so peers in
//! noEncap keep this node's peer flows. Failures are retried with backoff, logged with backoff
//! ([`FailureLog`]), and recorded in [`KubeHealth`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::k8s::health::{FailureLog, KubeHealth, LogLevel};
use crate::k8s::{self, LocalNode};

/// First retry delay after a failed patch; doubles up to [`RETRY_CAP`].
const RETRY_FIRST: Duration = Duration::from_millis(200);
/// Largest retry delay.
const RETRY_CAP: Duration = Duration::from_secs(30);

/// The merge patch that makes `actual` carry `desired` (only the keys that differ), or an empty
/// map when nothing needs to change. Other annotations are never touched.
pub fn annotation_patch(
    desired: &BTreeMap<String, String>,
    actual: &BTreeMap<String, String>,
) -> BTreeMap<String, Option<String>> {
    desired
        .iter()
        .filter(|(k, v)| actual.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect()
}

/// Reconciles the annotations of Node `node` until the task is dropped: on every change of
/// `view` (the own Node as the watch sees it) and every `resync`.
pub async fn reconcile(
    kube: kube::Client,
    node: String,
    desired: BTreeMap<String, String>,
    mut view: watch::Receiver<Option<LocalNode>>,
    health: Arc<KubeHealth>,
    resync: Duration,
) {
    let mut failures = FailureLog::default();
    let mut delay = RETRY_FIRST;
    let mut published_once = false;
    loop {
        let patch = {
            let current = view.borrow_and_update();
            match current.as_ref() {
                Some(n) => annotation_patch(&desired, &n.annotations),
                // Not seen (yet): patch everything; a missing Node answers 404, retried.
                None => annotation_patch(&desired, &BTreeMap::new()),
            }
        };
        if patch.is_empty() {
            health.annotations_checked(true, false);
            delay = RETRY_FIRST;
            wait_for_change(&mut view, resync).await;
            continue;
        }
        match k8s::patch_node_annotations(&kube, &node, &patch).await {
            Ok(_) => {
                health.contact_ok();
                health.annotations_checked(true, true);
                let ended = failures.succeeded();
                if !published_once {
                    tracing::info!(%node, annotations = ?patch, failed_attempts = ended, "node annotations published");
                } else {
                    tracing::info!(%node, annotations = ?patch, failed_attempts = ended, "node annotations restored");
                }
                published_once = true;
                delay = RETRY_FIRST;
                // The watch delivers the patched Node; compare again then (or at the resync).
                wait_for_change(&mut view, resync).await;
            }
            Err(error) => {
                let message = error.to_string();
                health.annotations_failed(&message);
                match failures.failed(&message, Instant::now()) {
                    LogLevel::Warn => tracing::warn!(
                        %node, error = %message, attempts = failures.failures(), retry_in = ?delay,
                        "cannot publish node annotations, retrying with backoff"
                    ),
                    LogLevel::Debug => tracing::debug!(
                        %node, error = %message, attempts = failures.failures(), retry_in = ?delay,
                        "cannot publish node annotations, retrying with backoff"
                    ),
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RETRY_CAP);
            }
        }
    }
}

async fn wait_for_change(view: &mut watch::Receiver<Option<LocalNode>>, resync: Duration) {
    tokio::select! {
        changed = view.changed() => {
            if changed.is_err() {
                // The view is gone (shutting down): keep to the resync pace.
                tokio::time::sleep(resync).await;
            }
        }
        () = tokio::time::sleep(resync) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn patch_sets_only_missing_or_different_keys_and_leaves_others() {
        let desired = map(&[("weft.dev/a", "1"), ("weft.dev/b", "2")]);
        assert!(annotation_patch(
            &desired,
            &map(&[("weft.dev/a", "1"), ("weft.dev/b", "2"), ("x", "y")])
        )
        .is_empty());
        let patch = annotation_patch(&desired, &map(&[("weft.dev/a", "0"), ("x", "y")]));
        assert_eq!(
            patch,
            BTreeMap::from([
                ("weft.dev/a".to_string(), Some("1".to_string())),
                ("weft.dev/b".to_string(), Some("2".to_string())),
            ])
        );
        assert!(annotation_patch(&BTreeMap::new(), &map(&[("x", "y")])).is_empty());
    }
}
