//! The test API server against kube's own client over real HTTP: the semantics the agent relies
//! on (resourceVersions, watches, bookmarks, 410 Gone, selectors, patches, conflicts, errors).

use std::pin::pin;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Config, Resource, ResourceExt};
use serde_json::json;
use weft_e2e::apiserver::{ApiServer, ApiServerOptions};

/// A kube client reaching `server` through a kubeconfig file, as the agent does.
async fn client(server: &ApiServer) -> Result<Client> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig(&path)?;
    let kc = Kubeconfig::read_from(&path)?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

fn node(name: &str, labels: serde_json::Value) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {},
    }))
    .unwrap()
}

fn api_code(e: &kube::Error) -> Option<(u16, String)> {
    match e {
        kube::Error::Api(s) => Some((s.code, s.reason.clone())),
        _ => None,
    }
}

/// The next event of a raw watch, failing after `timeout`.
async fn next_event<S>(stream: &mut S, timeout: Duration) -> Result<WatchEvent<Node>>
where
    S: futures::Stream<Item = kube::Result<WatchEvent<Node>>> + Unpin,
{
    match tokio::time::timeout(timeout, stream.next()).await {
        Ok(Some(ev)) => Ok(ev?),
        Ok(None) => bail!("watch stream ended"),
        Err(_) => bail!("no watch event within {timeout:?}"),
    }
}

#[tokio::test]
async fn crud_errors_and_conflicts_as_kube_sees_them() -> Result<()> {
    let server = ApiServer::start()?;
    let nodes: Api<Node> = Api::all(client(&server).await?);

    let created = nodes
        .create(&PostParams::default(), &node("n1", json!({})))
        .await?;
    assert!(created.uid().is_some_and(|u| u.len() == 36));
    assert!(created.creation_timestamp().is_some());
    let rv1: u64 = created.resource_version().unwrap().parse()?;

    let got = nodes.get("n1").await?;
    assert_eq!(got.resource_version(), created.resource_version());

    let list = nodes.list(&ListParams::default()).await?;
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.metadata.resource_version, Some(rv1.to_string()));

    let missing = nodes.get("nope").await.unwrap_err();
    assert_eq!(api_code(&missing), Some((404, "NotFound".into())));
    assert!(nodes.get_opt("nope").await?.is_none());

    let dup = nodes
        .create(&PostParams::default(), &node("n1", json!({})))
        .await
        .unwrap_err();
    assert_eq!(api_code(&dup), Some((409, "AlreadyExists".into())));

    // PUT with the current resourceVersion succeeds and bumps it; the stale one conflicts.
    let mut update = got.clone();
    update.labels_mut().insert("role".into(), "worker".into());
    let updated = nodes.replace("n1", &PostParams::default(), &update).await?;
    let rv2: u64 = updated.resource_version().unwrap().parse()?;
    assert!(rv2 > rv1);
    let mut stale = got.clone();
    stale.labels_mut().insert("role".into(), "other".into());
    let conflict = nodes
        .replace("n1", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert_eq!(api_code(&conflict), Some((409, "Conflict".into())));
    assert_eq!(nodes.get("n1").await?.labels()["role"], "worker");

    // dryRun leaves the store alone.
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    nodes.create(&dry, &node("n2", json!({}))).await?;
    assert!(nodes.get_opt("n2").await?.is_none());

    nodes.delete("n1", &DeleteParams::default()).await?;
    let gone = nodes
        .delete("n1", &DeleteParams::default())
        .await
        .unwrap_err();
    assert_eq!(api_code(&gone), Some((404, "NotFound".into())));
    assert!(server.nodes().is_empty());

    // Namespaced objects need their namespace; Pods list across namespaces too.
    let client = client(&server).await?;
    for (ns, name) in [("a", "p1"), ("b", "p2")] {
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": name}}))?;
        let created = pods.create(&PostParams::default(), &pod).await?;
        assert_eq!(created.namespace().as_deref(), Some(ns));
    }
    let all: Api<Pod> = Api::all(client.clone());
    assert_eq!(all.list(&ListParams::default()).await?.items.len(), 2);
    let in_a: Api<Pod> = Api::namespaced(client.clone(), "a");
    assert_eq!(in_a.list(&ListParams::default()).await?.items.len(), 1);
    assert!(in_a.get_opt("p2").await?.is_none());

    // Events: create and list.
    let events: Api<Event> = Api::namespaced(client, "default");
    let event: Event = serde_json::from_value(json!({
        "metadata": {"generateName": "n1."},
        "involvedObject": {"kind": "Node", "name": "n1"},
        "reason": "Test", "message": "hello", "type": "Normal"
    }))?;
    let posted = events.create(&PostParams::default(), &event).await?;
    assert!(posted.name_any().starts_with("n1."));
    let listed = events
        .list(&ListParams::default().fields("involvedObject.name=n1"))
        .await?;
    assert_eq!(listed.items.len(), 1);
    assert_eq!(server.events().len(), 1);
    Ok(())
}

#[tokio::test]
async fn merge_strategic_and_status_patches() -> Result<()> {
    let server = ApiServer::start()?;
    server.create_node(json!({
        "metadata": {"name": "n1", "annotations": {"keep": "me"}},
        "spec": {"podCIDRs": ["10.0.0.0/24"]},
        "status": {"addresses": [
            {"type": "InternalIP", "address": "192.0.2.1"},
            {"type": "Hostname", "address": "n1"}
        ]}
    }))?;
    let nodes: Api<Node> = Api::all(client(&server).await?);
    let pp = PatchParams::default();

    let merged = nodes
        .patch(
            "n1",
            &pp,
            &Patch::Merge(json!({"metadata": {"annotations": {"a": "1", "keep": null}}})),
        )
        .await?;
    assert_eq!(merged.annotations().get("a").map(String::as_str), Some("1"));
    assert!(!merged.annotations().contains_key("keep"));

    // Strategic: podCIDRs is a merge list, addresses merge on `type`.
    let strategic = nodes
        .patch_status(
            "n1",
            &pp,
            &Patch::Strategic(json!({"status": {"addresses": [
                {"type": "InternalIP", "address": "192.0.2.7"}
            ]}})),
        )
        .await?;
    let addresses = strategic.status.unwrap().addresses.unwrap();
    assert_eq!(addresses.len(), 2);
    assert_eq!(addresses[0].address, "192.0.2.7");
    let cidrs = nodes
        .patch(
            "n1",
            &pp,
            &Patch::Strategic(json!({"spec": {"podCIDRs": ["fd00::/64"]}})),
        )
        .await?;
    assert_eq!(
        cidrs.spec.unwrap().pod_cidrs.unwrap(),
        ["10.0.0.0/24", "fd00::/64"]
    );

    // A main-resource patch does not change the status.
    let ignored = nodes
        .patch(
            "n1",
            &pp,
            &Patch::Merge(json!({"status": {"addresses": []}})),
        )
        .await?;
    assert_eq!(ignored.status.unwrap().addresses.unwrap().len(), 2);

    // A patch carrying a stale resourceVersion is a conflict.
    let stale = nodes
        .patch(
            "n1",
            &pp,
            &Patch::Merge(json!({"metadata": {"resourceVersion": "1", "labels": {"x": "z"}}})),
        )
        .await
        .unwrap_err();
    assert_eq!(api_code(&stale), Some((409, "Conflict".into())));

    // Repeating a patch is a no-op that keeps the resourceVersion.
    let label = Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}}));
    let first = nodes.patch("n1", &pp, &label).await?;
    let again = nodes.patch("n1", &pp, &label).await?;
    assert_eq!(first.labels()["x"], "y");
    assert_eq!(again.resource_version(), first.resource_version());

    let apply = nodes
        .patch(
            "n1",
            &PatchParams::apply("test"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Node"})),
        )
        .await
        .unwrap_err();
    assert_eq!(api_code(&apply).map(|c| c.0), Some(415));
    let missing = nodes
        .patch("nope", &pp, &Patch::Merge(json!({})))
        .await
        .unwrap_err();
    assert_eq!(api_code(&missing).map(|c| c.0), Some(404));
    Ok(())
}

#[tokio::test]
async fn watch_replays_from_resource_version_with_bookmarks_and_timeout() -> Result<()> {
    let server = ApiServer::start_with(ApiServerOptions {
        bookmark_interval: Duration::from_millis(200),
        ..ApiServerOptions::default()
    })?;
    let nodes: Api<Node> = Api::all(client(&server).await?);
    let start = nodes
        .list(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .unwrap();

    server.create_node(json!({"metadata": {"name": "n1"}}))?;
    server.patch_node("n1", json!({"spec": {"podCIDR": "10.0.0.0/24"}}))?;
    server.delete_node("n1")?;

    let params = WatchParams::default().timeout(2);
    let mut stream = pin!(nodes.watch(&params, &start).await?.boxed());
    let mut seen = Vec::new();
    let mut last_rv = start.parse::<u64>()?;
    for _ in 0..3 {
        let (kind, n) = match next_event(&mut stream, Duration::from_secs(2)).await? {
            WatchEvent::Added(n) => ("ADDED", n),
            WatchEvent::Modified(n) => ("MODIFIED", n),
            WatchEvent::Deleted(n) => ("DELETED", n),
            other => bail!("unexpected {other:?}"),
        };
        let rv: u64 = n.resource_version().unwrap().parse()?;
        assert!(rv > last_rv, "versions grow");
        last_rv = rv;
        seen.push(kind);
    }
    assert_eq!(seen, ["ADDED", "MODIFIED", "DELETED"]);

    // Nothing changes now: bookmarks carry the latest version, then the timeout ends the watch.
    match next_event(&mut stream, Duration::from_secs(1)).await? {
        WatchEvent::Bookmark(b) => {
            assert_eq!(
                b.metadata.resource_version,
                server.resource_version().to_string()
            )
        }
        other => bail!("expected a bookmark, got {other:?}"),
    }
    let t0 = Instant::now();
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(4), stream.next())
        .await
        .context("watch outlived its timeoutSeconds")?
    {
        assert!(matches!(ev?, WatchEvent::Bookmark(_)));
    }
    assert!(t0.elapsed() < Duration::from_secs(3));

    // Without bookmarks there are none.
    let quiet = WatchParams::default().disable_bookmarks().timeout(1);
    let events: Vec<_> = nodes
        .watch(&quiet, &server.resource_version().to_string())
        .await?
        .try_collect()
        .await?;
    assert!(events.is_empty(), "{events:?}");
    Ok(())
}

#[tokio::test]
async fn too_old_resource_version_is_410_expired() -> Result<()> {
    let server = ApiServer::start_with(ApiServerOptions {
        history_limit: 3,
        ..ApiServerOptions::default()
    })?;
    let nodes: Api<Node> = Api::all(client(&server).await?);
    let start = server.resource_version().to_string();
    for i in 0..5 {
        server.create_node(json!({"metadata": {"name": format!("n{i}")}}))?;
    }
    let mut stream = pin!(nodes
        .watch(&WatchParams::default().timeout(5), &start)
        .await?
        .boxed());
    match next_event(&mut stream, Duration::from_secs(2)).await? {
        WatchEvent::Error(e) => {
            assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
        }
        other => bail!("expected 410, got {other:?}"),
    }
    assert!(
        stream.next().await.is_none(),
        "the watch ends after the error"
    );

    // Compaction ends an open, caught-up watch with 410 as well.
    let now = server.resource_version().to_string();
    let mut open = pin!(nodes
        .watch(&WatchParams::default().timeout(5), &now)
        .await?
        .boxed());
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.compact_history();
    match next_event(&mut open, Duration::from_secs(2)).await? {
        WatchEvent::Error(e) => assert_eq!(e.code, 410),
        other => bail!("expected 410, got {other:?}"),
    }
    let resumed = pin!(nodes
        .watch(&WatchParams::default().timeout(5), &now)
        .await?
        .boxed())
    .next()
    .await;
    assert!(matches!(resumed, Some(Ok(WatchEvent::Error(e))) if e.code == 410));
    Ok(())
}

#[tokio::test]
async fn selectors_on_list_and_watch() -> Result<()> {
    let server = ApiServer::start()?;
    let client = client(&server).await?;
    let nodes: Api<Node> = Api::all(client.clone());
    for (name, role) in [("a", "worker"), ("b", "worker"), ("c", "master")] {
        server.create_node(json!({"metadata": {"name": name, "labels": {"role": role}}}))?;
    }
    let names = |list: kube::core::ObjectList<Node>| -> Vec<String> {
        list.items.iter().map(|n| n.name_any()).collect()
    };
    assert_eq!(
        names(
            nodes
                .list(&ListParams::default().labels("role=worker"))
                .await?
        ),
        ["a", "b"]
    );
    assert_eq!(
        names(
            nodes
                .list(&ListParams::default().labels("role!=worker"))
                .await?
        ),
        ["c"]
    );
    assert_eq!(
        names(
            nodes
                .list(&ListParams::default().fields("metadata.name=b"))
                .await?
        ),
        ["b"]
    );
    let bad = nodes
        .list(&ListParams::default().fields("spec.nodeName=x"))
        .await
        .unwrap_err();
    assert_eq!(api_code(&bad).map(|c| c.0), Some(400));

    // Pods by node across namespaces; a pod bound later enters the watch as ADDED and a pod
    // moving away leaves it as DELETED.
    server.create_pod(
        json!({"metadata": {"name": "p1", "namespace": "x"}, "spec": {"nodeName": "a"}}),
    )?;
    server.create_pod(
        json!({"metadata": {"name": "p2", "namespace": "y"}, "spec": {"nodeName": "b"}}),
    )?;
    server.create_pod(json!({"metadata": {"name": "p3", "namespace": "y"}}))?;
    let pods: Api<Pod> = Api::all(client.clone());
    let on_a = ListParams::default().fields("spec.nodeName=a");
    let listed = pods.list(&on_a).await?;
    assert_eq!(
        listed
            .items
            .iter()
            .map(|p| p.name_any())
            .collect::<Vec<_>>(),
        ["p1"]
    );
    let rv = listed.metadata.resource_version.unwrap();
    let wp = WatchParams::default()
        .disable_bookmarks()
        .fields("spec.nodeName=a")
        .timeout(5);
    let mut stream = pin!(pods.watch(&wp, &rv).await?.boxed());
    server.patch_pod("y", "p3", json!({"spec": {"nodeName": "a"}}))?;
    server.patch_pod(
        "y",
        "p2",
        json!({"metadata": {"labels": {"unrelated": "1"}}}),
    )?;
    server.patch_pod("x", "p1", json!({"spec": {"nodeName": "b"}}))?;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let ev = tokio::time::timeout(Duration::from_secs(2), stream.next())
            .await?
            .context("watch ended")??;
        seen.push(match ev {
            WatchEvent::Added(p) => format!("ADDED {}", p.name_any()),
            WatchEvent::Deleted(p) => format!("DELETED {}", p.name_any()),
            other => format!("{other:?}"),
        });
    }
    assert_eq!(seen, ["ADDED p3", "DELETED p1"]);
    Ok(())
}

#[tokio::test]
async fn kube_watcher_relists_after_410_and_rides_out_a_restart() -> Result<()> {
    let mut server = ApiServer::start()?;
    let nodes: Api<Node> = Api::all(client(&server).await?);
    server.create_node(json!({"metadata": {"name": "n1"}}))?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut stream = pin!(watcher(nodes, watcher::Config::default()).default_backoff());
        while let Some(ev) = stream.next().await {
            if let Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n)) = ev {
                let _ = tx.send(n.name_any());
            }
        }
    });
    let expect = async |rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>, name: &str| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Ok(Some(got)) = tokio::time::timeout_at(deadline.into(), rx.recv()).await {
            if got == name {
                return Ok(());
            }
        }
        bail!("watcher did not see node {name}")
    };
    expect(&mut rx, "n1").await?;
    let lists = server.request_count("list", "nodes");

    server.compact_history();
    server.create_node(json!({"metadata": {"name": "n2"}}))?;
    expect(&mut rx, "n2").await?;
    assert!(
        server.request_count("list", "nodes") > lists,
        "watcher relisted"
    );

    server.stop();
    assert!(std::net::TcpStream::connect(server.addr()).is_err());
    server.create_node(json!({"metadata": {"name": "n3"}}))?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart()?;
    expect(&mut rx, "n3").await?;
    task.abort();
    Ok(())
}

#[tokio::test]
async fn discovery_endpoints_answer() -> Result<()> {
    let server = ApiServer::start()?;
    let client = client(&server).await?;
    let version = client.apiserver_version().await?;
    assert_eq!(version.major, "1");
    let core = client.list_core_api_versions().await?;
    assert_eq!(core.versions, ["v1"]);
    let resources = client.list_core_api_resources("v1").await?;
    assert!(resources
        .resources
        .iter()
        .any(|r| r.name == "nodes" && !r.namespaced));
    let groups = client.list_api_groups().await?;
    assert!(groups.groups.iter().any(|g| g.name == "events.k8s.io"));
    Ok(())
}

#[tokio::test]
async fn kube_event_recorder_creates_then_updates_a_series() -> Result<()> {
    use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
    let server = ApiServer::start()?;
    let client = client(&server).await?;
    let node = server.create_node(json!({"metadata": {"name": "n1"}}))?;
    let node: Node = serde_json::from_value(node)?;
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: "weft-agent".into(),
            instance: Some("n1".into()),
        },
    );
    let event = KubeEvent {
        type_: EventType::Warning,
        reason: "MTUMismatch".into(),
        note: Some("pod p1 has MTU 1500, plan says 1450".into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    recorder.publish(&event, &node.object_ref(&())).await?;
    recorder.publish(&event, &node.object_ref(&())).await?;
    let events = server.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["apiVersion"], "events.k8s.io/v1");
    assert_eq!(events[0]["regarding"]["name"], "n1");
    assert_eq!(events[0]["series"]["count"], 2);
    Ok(())
}

#[tokio::test]
async fn streaming_list_watch_sends_initial_events_then_changes() -> Result<()> {
    let server = ApiServer::start()?;
    server.create_node(json!({"metadata": {"name": "n1"}}))?;
    let nodes: Api<Node> = Api::all(client(&server).await?);
    let config = watcher::Config::default().streaming_lists();
    let mut stream = pin!(watcher(nodes, config));
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !seen.contains(&"apply n2".to_string()) {
        let ev = tokio::time::timeout_at(deadline.into(), stream.next())
            .await
            .context("streaming list watch too slow")?
            .context("watch ended")??;
        seen.push(match ev {
            watcher::Event::Init => "init".to_string(),
            watcher::Event::InitApply(n) => format!("init-apply {}", n.name_any()),
            watcher::Event::InitDone => {
                server.create_node(json!({"metadata": {"name": "n2"}}))?;
                "init-done".to_string()
            }
            watcher::Event::Apply(n) => format!("apply {}", n.name_any()),
            watcher::Event::Delete(n) => format!("delete {}", n.name_any()),
        });
    }
    assert_eq!(seen, ["init", "init-apply n1", "init-done", "apply n2"]);
    assert_eq!(server.request_count("list", "nodes"), 0, "no list call");
    Ok(())
}

/// A kube client authenticated with `token`.
async fn client_with_token(server: &ApiServer, token: &str) -> Result<Client> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig_with_token(&path, token)?;
    let kc = Kubeconfig::read_from(&path)?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

#[tokio::test]
async fn rbac_grants_the_agent_service_account_only_what_weft_yml_does() -> Result<()> {
    let server = ApiServer::start()?;
    let (ns, sa) = weft_e2e::apiserver::rbac::weft_agent_service_account();
    let admin_nodes: Api<Node> = Api::all(client(&server).await?);
    admin_nodes
        .create(&PostParams::default(), &node("rbac-1", json!({})))
        .await?;
    let agent = client_with_token(&server, &server.service_account_token(&ns, &sa)).await?;
    let nodes: Api<Node> = Api::all(agent.clone());

    // Granted: list, watch and patch Nodes, create events.k8s.io Events.
    assert_eq!(nodes.list(&ListParams::default()).await?.items.len(), 1);
    let mut w = pin!(nodes.watch(&WatchParams::default(), "0").await?);
    assert!(matches!(
        next_event(&mut w, Duration::from_secs(5)).await?,
        WatchEvent::Added(_)
    ));
    let patch = json!({"metadata": {"annotations": {"weft.dev/x": "1"}}});
    nodes
        .patch("rbac-1", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(agent.clone(), "default");
    let ev: k8s_openapi::api::events::v1::Event = serde_json::from_value(json!({
        "metadata": {"name": "rbac-ev"}, "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "weft.dev/agent", "reportingInstance": "n", "action": "Test",
        "reason": "Test", "type": "Normal"
    }))?;
    events.create(&PostParams::default(), &ev).await?;
    assert!(server.forbidden_requests().is_empty());

    // Not granted: get (only list/watch), delete, update, the status subresource, a single Pod,
    // core/v1 Events; each a 403 Forbidden Status naming the user.
    let user = format!("system:serviceaccount:{ns}:{sa}");
    let forbidden = |r: Result<(), kube::Error>, what: &str| -> Result<()> {
        let e = r.err().with_context(|| format!("{what} must be refused"))?;
        let kube::Error::Api(s) = &e else {
            bail!("{what}: {e}");
        };
        assert_eq!((s.code, s.reason.as_str()), (403, "Forbidden"), "{what}");
        assert!(s.message.contains(&user), "{what}: {}", s.message);
        Ok(())
    };
    forbidden(nodes.get("rbac-1").await.map(|_| ()), "get node")?;
    forbidden(
        nodes
            .delete("rbac-1", &DeleteParams::default())
            .await
            .map(|_| ()),
        "delete node",
    )?;
    let n = admin_nodes.get("rbac-1").await?;
    forbidden(
        nodes
            .replace("rbac-1", &PostParams::default(), &n)
            .await
            .map(|_| ()),
        "update node",
    )?;
    forbidden(
        nodes
            .patch_status("rbac-1", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ()),
        "patch node status",
    )?;
    // Pods are listed and watched for NetworkPolicy, never read one by one or changed.
    let pods: Api<Pod> = Api::all(agent.clone());
    pods.list(&ListParams::default()).await?;
    let default_pods: Api<Pod> = Api::namespaced(agent.clone(), "default");
    forbidden(default_pods.get("absent").await.map(|_| ()), "get pod")?;
    let core_events: Api<Event> = Api::namespaced(agent, "default");
    forbidden(
        core_events.list(&ListParams::default()).await.map(|_| ()),
        "list core events",
    )?;
    assert_eq!(server.forbidden_requests().len(), 6);

    // Another ServiceAccount gets nothing but discovery; an unknown token is 401.
    let other = client_with_token(&server, &server.service_account_token("default", &sa)).await?;
    let other_nodes: Api<Node> = Api::all(other.clone());
    assert_eq!(
        other_nodes
            .list(&ListParams::default())
            .await
            .err()
            .as_ref()
            .and_then(api_code),
        Some((403, "Forbidden".to_string()))
    );
    other.apiserver_version().await?;
    let stranger: Api<Node> = Api::all(client_with_token(&server, "not-a-token").await?);
    assert_eq!(
        stranger
            .list(&ListParams::default())
            .await
            .err()
            .as_ref()
            .and_then(api_code),
        Some((401, "Unauthorized".to_string()))
    );
    Ok(())
}
