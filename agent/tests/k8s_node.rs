//! The agent's Node views and Node patch against the test API server, through kube's normal
//! client and a kubeconfig, over real HTTP.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{bail, Result};
use ipnet::IpNet;
use serde_json::json;
use tokio::sync::watch;
use weft_agent::k8s::{self, K8sError, LocalNode, NodeView, PeersView};
use weft_e2e::ApiServer;

/// Within this, a change on the API server must be visible in a view.
const SOON: Duration = Duration::from_secs(1);

struct Kube {
    server: ApiServer,
    client: kube::Client,
    _dir: tempfile::TempDir,
}

async fn kube() -> Result<Kube> {
    let server = ApiServer::start()?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig(&path)?;
    let client = k8s::client(path.to_str().unwrap()).await?;
    Ok(Kube {
        server,
        client,
        _dir: dir,
    })
}

fn cidrs(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|c| c.parse().unwrap()).collect()
}

/// Waits up to `within` for the view to satisfy `f`.
async fn wait_until<T: Clone + std::fmt::Debug>(
    rx: &mut watch::Receiver<T>,
    within: Duration,
    what: &str,
    f: impl FnMut(&T) -> bool,
) -> Result<T> {
    let outcome = tokio::time::timeout(within, rx.wait_for(f))
        .await
        .map(|r| r.map(|v| v.clone()));
    match outcome {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(_)) => bail!("view closed while waiting for {what}"),
        Err(_) => bail!(
            "{what} not seen within {within:?}; view is {:?}",
            *rx.borrow()
        ),
    }
}

fn has_cidrs(want: Vec<IpNet>) -> impl FnMut(&Option<LocalNode>) -> bool {
    move |n| n.as_ref().is_some_and(|n| n.pod_cidrs == want)
}

/// Everything logged by this test binary. One global subscriber (set once) rather than a
/// per-test default: tracing caches per-callsite interest globally, and thread-local subscribers
/// of parallel tests can make it miss events. Tests tell their lines apart by unique node names.
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        #[derive(Clone)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = Sink(buf.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        buf
    })
    .clone()
}

#[tokio::test]
async fn own_node_waits_for_pod_cidrs_and_follows_every_change() -> Result<()> {
    let logs = logs();
    let k = kube().await?;
    k.server.create_node(json!({
        "metadata": {"name": "log-node-a"},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.10"}]}
    }))?;
    let view = NodeView::start(k.client.clone(), "log-node-a");
    let mut rx = view.subscribe();
    let node = wait_until(&mut rx, SOON, "log-node-a", |n| n.is_some()).await?;
    let node = node.unwrap();
    assert!(node.pod_cidrs.is_empty());
    assert_eq!(
        node.internal_ips,
        ["192.0.2.10".parse::<std::net::IpAddr>()?]
    );
    // Still waiting: no podCIDRs yet.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), view.wait_for_pod_cidrs())
            .await
            .is_err()
    );
    // Heartbeat-like changes that do not alter the converted node do not count as changes.
    k.server.patch_node(
        "log-node-a",
        json!({"status": {"conditions": [{"type": "Ready"}]}}),
    )?;

    let steps: [&[&str]; 4] = [
        &["10.10.1.0/24"],
        &["fd00:10:1::/64"],
        &["10.10.1.0/24", "fd00:10:1::/64"],
        &["10.10.7.0/24", "fd00:10:7::/64"],
    ];
    for step in steps {
        k.server
            .patch_node("log-node-a", json!({"spec": {"podCIDRs": step}}))?;
        wait_until(
            &mut rx,
            SOON,
            &format!("podCIDRs {step:?}"),
            has_cidrs(cidrs(step)),
        )
        .await?;
    }
    let ready = view.wait_for_pod_cidrs().await?;
    assert_eq!(ready.pod_cidrs, cidrs(steps[3]));

    k.server.delete_node("log-node-a")?;
    wait_until(&mut rx, SOON, "node-a deleted", Option::is_none).await?;

    let text = String::from_utf8(logs.lock().unwrap().clone())?;
    let waiting = text
        .lines()
        .filter(|l| l.contains("waiting for node log-node-a to get podCIDRs"))
        .count();
    // Once while the node lacked podCIDRs, once more after it was deleted.
    assert_eq!(waiting, 2, "{text}");
    let has = text
        .lines()
        .filter(|l| l.contains("node log-node-a has podCIDRs"))
        .count();
    assert_eq!(has, steps.len(), "one line per CIDR change: {text}");
    Ok(())
}

#[tokio::test]
async fn own_node_view_waits_for_a_node_that_does_not_exist_yet() -> Result<()> {
    let k = kube().await?;
    let view = NodeView::start(k.client.clone(), "late");
    let waiter = tokio::spawn({
        let mut rx = view.subscribe();
        async move {
            wait_until(
                &mut rx,
                Duration::from_secs(5),
                "late",
                has_cidrs(cidrs(&["10.1.0.0/16"])),
            )
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(view.current().is_none());
    k.server.create_node(json!({
        "metadata": {"name": "late"}, "spec": {"podCIDRs": ["10.1.0.0/16"]}
    }))?;
    waiter.await??;
    Ok(())
}

#[tokio::test]
async fn own_node_view_relists_after_history_compaction() -> Result<()> {
    let k = kube().await?;
    k.server
        .create_node(json!({"metadata": {"name": "n"}, "spec": {"podCIDRs": ["10.0.1.0/24"]}}))?;
    let view = NodeView::start(k.client.clone(), "n");
    let mut rx = view.subscribe();
    wait_until(
        &mut rx,
        SOON,
        "first CIDR",
        has_cidrs(cidrs(&["10.0.1.0/24"])),
    )
    .await?;
    let lists = k.server.request_count("list", "nodes");

    k.server.compact_history();
    k.server
        .patch_node("n", json!({"spec": {"podCIDRs": ["10.0.2.0/24"]}}))?;
    // The relist backs off briefly (200 ms plus jitter) before listing again.
    wait_until(
        &mut rx,
        Duration::from_secs(2),
        "CIDR after compaction",
        has_cidrs(cidrs(&["10.0.2.0/24"])),
    )
    .await?;
    assert!(
        k.server.request_count("list", "nodes") > lists,
        "the view relisted"
    );

    // And it keeps following afterwards.
    k.server
        .patch_node("n", json!({"spec": {"podCIDRs": ["10.0.3.0/24"]}}))?;
    wait_until(
        &mut rx,
        SOON,
        "later CIDR",
        has_cidrs(cidrs(&["10.0.3.0/24"])),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn own_node_view_catches_up_after_api_server_restart() -> Result<()> {
    let mut k = kube().await?;
    k.server
        .create_node(json!({"metadata": {"name": "n"}, "spec": {"podCIDRs": ["10.0.1.0/24"]}}))?;
    let view = NodeView::start(k.client.clone(), "n");
    let mut rx = view.subscribe();
    wait_until(
        &mut rx,
        SOON,
        "first CIDR",
        has_cidrs(cidrs(&["10.0.1.0/24"])),
    )
    .await?;

    k.server.stop();
    k.server
        .patch_node("n", json!({"spec": {"podCIDRs": ["10.0.9.0/24"]}}))?;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(view.current().unwrap().pod_cidrs, cidrs(&["10.0.1.0/24"]));
    k.server.restart()?;
    // Retries back off from 200 ms; a short outage is bridged within a few seconds.
    wait_until(
        &mut rx,
        Duration::from_secs(4),
        "CIDR changed while down",
        has_cidrs(cidrs(&["10.0.9.0/24"])),
    )
    .await?;
    k.server
        .patch_node("n", json!({"spec": {"podCIDRs": ["10.0.10.0/24"]}}))?;
    wait_until(
        &mut rx,
        SOON,
        "CIDR after restart",
        has_cidrs(cidrs(&["10.0.10.0/24"])),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn annotation_patch_is_stored_and_seen_by_the_view() -> Result<()> {
    let k = kube().await?;
    k.server.create_node(json!({
        "metadata": {"name": "n", "annotations": {"other": "keep"}},
        "spec": {"podCIDRs": ["10.0.1.0/24"]}
    }))?;
    let view = NodeView::start(k.client.clone(), "n");
    let mut rx = view.subscribe();

    let set: BTreeMap<String, Option<String>> = [
        (
            "weft.io/transport-ip".to_string(),
            Some("192.0.2.10".to_string()),
        ),
        (
            "weft.io/uplink-mac".to_string(),
            Some("02:00:00:00:00:01".to_string()),
        ),
    ]
    .into();
    let patched = k8s::patch_node_annotations(&k.client, "n", &set).await?;
    assert_eq!(patched.metadata.annotations.as_ref().unwrap().len(), 3);
    let stored = k.server.get_node("n")?;
    assert_eq!(
        stored["metadata"]["annotations"]["weft.io/transport-ip"],
        "192.0.2.10"
    );
    assert_eq!(stored["metadata"]["annotations"]["other"], "keep");
    wait_until(&mut rx, SOON, "annotations", |n| {
        n.as_ref()
            .is_some_and(|n| n.annotations.contains_key("weft.io/uplink-mac"))
    })
    .await?;

    let remove: BTreeMap<String, Option<String>> =
        [("weft.io/uplink-mac".to_string(), None)].into();
    k8s::patch_node_annotations(&k.client, "n", &remove).await?;
    let stored = k.server.get_node("n")?;
    assert!(stored["metadata"]["annotations"]
        .get("weft.io/uplink-mac")
        .is_none());
    assert_eq!(stored["metadata"]["annotations"]["other"], "keep");

    let err = k8s::patch_node_annotations(&k.client, "missing", &set)
        .await
        .unwrap_err();
    assert!(matches!(err, K8sError::PatchNode { ref node, .. } if node == "missing"));
    assert!(
        err.to_string()
            .starts_with("patching annotations of node missing: "),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn peers_view_lists_every_other_node_and_follows_changes() -> Result<()> {
    let k = kube().await?;
    for (name, cidr) in [("self", "10.0.0.0/24"), ("p1", "10.0.1.0/24")] {
        k.server
            .create_node(json!({"metadata": {"name": name}, "spec": {"podCIDRs": [cidr]}}))?;
    }
    // A node whose podCIDR does not parse is left out, not fatal.
    k.server
        .create_node(json!({"metadata": {"name": "bad"}, "spec": {"podCIDRs": ["x"]}}))?;
    let view = PeersView::start(k.client.clone(), "self");
    let mut rx = view.subscribe();
    let names = |p: &Option<k8s::PeerNodes>| -> Vec<String> {
        p.as_ref()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    };
    let peers = wait_until(&mut rx, SOON, "initial peers", Option::is_some).await?;
    assert_eq!(names(&peers), ["p1"]);

    k.server
        .create_node(json!({"metadata": {"name": "p2"}, "spec": {"podCIDRs": ["10.0.2.0/24"]}}))?;
    wait_until(&mut rx, SOON, "p2 added", |p| names(p) == ["p1", "p2"]).await?;
    k.server.patch_node(
        "p1",
        json!({"status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.1"}]}}),
    )?;
    wait_until(&mut rx, SOON, "p1 address", |p| {
        p.as_ref().is_some_and(|p| p["p1"].internal_ips.len() == 1)
    })
    .await?;
    k.server
        .patch_node("bad", json!({"spec": {"podCIDRs": ["10.0.3.0/24"]}}))?;
    wait_until(&mut rx, SOON, "bad fixed", |p| {
        names(p) == ["bad", "p1", "p2"]
    })
    .await?;
    k.server.delete_node("p2")?;
    wait_until(&mut rx, SOON, "p2 deleted", |p| names(p) == ["bad", "p1"]).await?;
    Ok(())
}

#[tokio::test]
async fn client_errors_name_what_failed() {
    let Err(err) = k8s::client("/nonexistent/kubeconfig").await else {
        panic!("a missing kubeconfig must fail");
    };
    assert!(
        err.to_string()
            .starts_with("reading kubeconfig /nonexistent/kubeconfig: "),
        "{err}"
    );
    // Outside a cluster there is no in-cluster configuration.
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() {
        assert!(matches!(k8s::client("").await, Err(K8sError::InCluster(_))));
    }
}
