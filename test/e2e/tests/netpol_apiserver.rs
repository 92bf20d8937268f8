//! The test API server's Namespaces (core/v1, cluster-scoped) and NetworkPolicies
//! (networking.k8s.io/v1, namespaced) as kube's own client sees them: discovery, CRUD, label
//! selectors, namespaced and all-namespaces lists, and watches resumed from a resourceVersion.

use std::time::Duration;

use anyhow::{bail, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, ResourceExt};
use serde_json::json;
use weft_e2e::apiserver::ApiServer;

async fn client(server: &ApiServer) -> Result<Client> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig(&path)?;
    let kc = Kubeconfig::read_from(&path)?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

fn policy(ns: &str, name: &str, labels: serde_json::Value) -> NetworkPolicy {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "podSelector": {"matchLabels": {"pod": "a"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                         "ports": [{"protocol": "TCP", "port": "serve-80-tcp"}]}]
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn namespaces_and_network_policies_list_watch_and_select() -> Result<()> {
    let server = ApiServer::start()?;
    let client = client(&server).await?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let post = PostParams::default();
    for ns in ["x", "y", "z"] {
        let obj: Namespace =
            serde_json::from_value(json!({"metadata": {"name": ns, "labels": {"ns": ns}}}))?;
        namespaces.create(&post, &obj).await?;
    }
    let listed = namespaces
        .list(&ListParams::default().labels("ns in (x,z)"))
        .await?;
    let names: Vec<String> = listed.items.iter().map(|n| n.name_any()).collect();
    assert_eq!(names, ["x", "z"]);
    let ns_rv = listed.metadata.resource_version.clone().unwrap_or_default();

    let x: Api<NetworkPolicy> = Api::namespaced(client.clone(), "x");
    let y: Api<NetworkPolicy> = Api::namespaced(client.clone(), "y");
    let all: Api<NetworkPolicy> = Api::all(client.clone());
    let created = x
        .create(&post, &policy("x", "allow-y", json!({"case": "1"})))
        .await?;
    assert_eq!(created.namespace().as_deref(), Some("x"));
    let spec = created.spec.clone().unwrap_or_default();
    assert_eq!(spec.policy_types, Some(vec!["Ingress".to_string()]));
    y.create(&post, &policy("y", "other", json!({"case": "2"})))
        .await?;
    let all_rv = all
        .list(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    assert_eq!(all.list(&ListParams::default()).await?.items.len(), 2);
    assert_eq!(x.list(&ListParams::default()).await?.items.len(), 1);
    assert_eq!(
        all.list(&ListParams::default().labels("case=2"))
            .await?
            .items
            .iter()
            .map(|p| p.name_any())
            .collect::<Vec<_>>(),
        ["other"]
    );

    // A watch from the list's resourceVersion sees exactly the later changes, in order.
    let mut watch = all
        .watch(&kube::api::WatchParams::default(), &all_rv)
        .await?
        .boxed();
    let patch = json!({"spec": {"podSelector": {"matchLabels": {"pod": "b"}}}});
    x.patch("allow-y", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    y.delete("other", &DeleteParams::default()).await?;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(5), watch.next()).await;
        match event {
            Ok(Some(Ok(WatchEvent::Modified(p)))) => {
                let selector = p
                    .spec
                    .clone()
                    .and_then(|s| s.pod_selector)
                    .and_then(|s| s.match_labels);
                seen.push(format!("modified {} {selector:?}", p.name_any()));
            }
            Ok(Some(Ok(WatchEvent::Deleted(p)))) => seen.push(format!("deleted {}", p.name_any())),
            Ok(Some(Ok(WatchEvent::Bookmark(_)))) => {}
            other => bail!("unexpected watch event {other:?}"),
        }
    }
    assert_eq!(
        seen,
        [
            "modified allow-y Some({\"pod\": \"b\"})".to_string(),
            "deleted other".to_string()
        ]
    );

    // Namespaces: a label change after the list is seen by a watch from the list's version.
    let mut ns_watch = namespaces
        .watch(&kube::api::WatchParams::default().labels("ns"), &ns_rv)
        .await?
        .boxed();
    let patch = json!({"metadata": {"labels": {"team": "red"}}});
    namespaces
        .patch("y", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ns_watch.next()).await {
            Ok(Some(Ok(WatchEvent::Modified(n)))) => {
                assert_eq!(n.name_any(), "y");
                assert_eq!(n.labels().get("team").map(String::as_str), Some("red"));
                break;
            }
            Ok(Some(Ok(WatchEvent::Bookmark(_)))) => {}
            other => bail!("unexpected namespace watch event {other:?}"),
        }
    }
    Ok(())
}
