//! Transport round trip: the real `weft` binary against a minimal jsonrpsee server on a temp
//! unix socket, served with the library's own framing helper (`rpc::server::serve`).
//!
//! The server is a stand-in for the transport only (it records requests and answers canned
//! results); the real CNI server lives in the agent.

mod common;

use std::sync::{Arc, Mutex};

use common::{attachment_env, net_conf, run_plugin, Outcome};
use jsonrpsee::types::ErrorObjectOwned;
use jsonrpsee::RpcModule;
use serde_json::json;
use weft_cni::env::Command;
use weft_cni::result::{CniResult, Interface, IpConfig, Route};
use weft_cni::rpc::{method, server, CniRequest, CniResponse};
use weft_cni::{CniError, CniVersion};

type Recorded = Arc<Mutex<Vec<CniRequest>>>;

/// Container id for which the test server's ADD fails, to prove error passthrough.
const FAILING_CONTAINER: &str = "fail-me";

/// The 1.1.0 result the test server answers ADD with, derived from the request.
fn add_result(req: &CniRequest) -> CniResult {
    CniResult {
        interfaces: vec![
            Interface {
                name: "weft0a1b2c3d".into(),
                mac: Some("02:42:0a:f4:00:01".into()),
                mtu: Some(1450),
                ..Default::default()
            },
            Interface {
                name: req.ifname.clone().unwrap_or_default(),
                mac: Some("02:42:0a:f4:00:05".into()),
                mtu: Some(1450),
                sandbox: req.netns.clone(),
                ..Default::default()
            },
        ],
        ips: vec![
            IpConfig {
                address: "10.244.0.5/24".parse().unwrap(),
                gateway: Some("10.244.0.1".parse().unwrap()),
                interface: Some(1),
            },
            IpConfig {
                address: "fd00:244::5/64".parse().unwrap(),
                gateway: Some("fd00:244::1".parse().unwrap()),
                interface: Some(1),
            },
        ],
        routes: vec![Route {
            dst: "0.0.0.0/0".parse().unwrap(),
            gw: Some("10.244.0.1".parse().unwrap()),
            mtu: Some(1450),
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }],
        dns: Default::default(),
    }
}

/// Starts the test server on a fresh socket; returns its path, the recorded requests and the
/// temp dir guard (dropping it removes the socket).
async fn start_server() -> (String, Recorded, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("cni.sock");
    let recorded: Recorded = Arc::default();
    let mut module = RpcModule::new(recorded.clone());
    for name in [
        method::ADD,
        method::DEL,
        method::CHECK,
        method::STATUS,
        method::GC,
    ] {
        module
            .register_method(name, |params, seen: &Recorded, _| {
                let req: CniRequest = params.one()?;
                seen.lock().unwrap().push(req.clone());
                match req.command {
                    Command::Add if req.container_id.as_deref() == Some(FAILING_CONTAINER) => {
                        Err(ErrorObjectOwned::from(CniError::new(
                            7,
                            "pod CIDR exhausted",
                            "10.244.0.0/30 has no free address",
                        )))
                    }
                    Command::Add => Ok(CniResponse {
                        result: Some(add_result(&req)),
                    }),
                    Command::Status => {
                        Err(CniError::new(50, "agent bootstrap not complete", "").into())
                    }
                    _ => Ok(CniResponse::default()),
                }
            })
            .unwrap();
    }
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    tokio::spawn(server::serve(listener, module));
    (socket.to_str().unwrap().to_owned(), recorded, dir)
}

/// Runs the plugin without blocking the runtime the test server runs on.
async fn plugin(env: Vec<(&'static str, &'static str)>, stdin: String) -> Outcome {
    tokio::task::spawn_blocking(move || run_plugin(&env, &stdin))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_result_is_converted_to_the_requested_version() {
    let (socket, recorded, _dir) = start_server().await;

    let out = plugin(
        attachment_env("ADD", "c-031"),
        net_conf("0.3.1", &socket, ""),
    )
    .await;
    assert_eq!(out.status, 0, "{out:?}");
    assert_eq!(
        out.json(),
        json!({
            "cniVersion": "0.3.1",
            "interfaces": [
                {"name": "weft0a1b2c3d", "mac": "02:42:0a:f4:00:01"},
                {"name": "eth0", "mac": "02:42:0a:f4:00:05", "sandbox": "/var/run/netns/pod-1"}
            ],
            "ips": [
                {"version": "4", "address": "10.244.0.5/24", "gateway": "10.244.0.1", "interface": 1},
                {"version": "6", "address": "fd00:244::5/64", "gateway": "fd00:244::1", "interface": 1}
            ],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.0.1"}]
        })
    );

    let out = plugin(
        attachment_env("ADD", "c-040"),
        net_conf("0.4.0", &socket, ""),
    )
    .await;
    assert_eq!(out.status, 0, "{out:?}");
    let v040 = out.json();
    assert_eq!(v040["cniVersion"], "0.4.0");
    assert_eq!(v040["ips"][0]["version"], "4");
    assert_eq!(v040["ips"][1]["version"], "6");
    assert!(v040["interfaces"][1].get("mtu").is_none(), "{v040}");

    let out = plugin(
        attachment_env("ADD", "c-110"),
        net_conf("1.1.0", &socket, ""),
    )
    .await;
    assert_eq!(out.status, 0, "{out:?}");
    assert_eq!(
        out.json(),
        json!({
            "cniVersion": "1.1.0",
            "interfaces": [
                {"name": "weft0a1b2c3d", "mac": "02:42:0a:f4:00:01", "mtu": 1450},
                {"name": "eth0", "mac": "02:42:0a:f4:00:05", "mtu": 1450, "sandbox": "/var/run/netns/pod-1"}
            ],
            "ips": [
                {"address": "10.244.0.5/24", "gateway": "10.244.0.1", "interface": 1},
                {"address": "fd00:244::5/64", "gateway": "fd00:244::1", "interface": 1}
            ],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.0.1", "mtu": 1450}]
        })
    );

    let seen = recorded.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    let versions: Vec<_> = seen.iter().map(|r| r.cni_version).collect();
    assert_eq!(
        versions,
        [CniVersion::V0_3_1, CniVersion::V0_4_0, CniVersion::V1_1_0]
    );
    let req = &seen[2];
    assert_eq!(req.command, Command::Add);
    assert_eq!(req.container_id.as_deref(), Some("c-110"));
    assert_eq!(req.netns.as_deref(), Some("/var/run/netns/pod-1"));
    assert_eq!(req.ifname.as_deref(), Some("eth0"));
    assert_eq!(req.pod_namespace(), Some("default"));
    assert_eq!(req.pod_name(), Some("web-0"));
    assert_eq!(req.network_name, "weft-net");
    assert_eq!(req.network_config["someFutureKey"], json!({"x": 1}));
    assert_eq!(req.prev_result, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_errors_pass_through_unchanged() {
    let (socket, recorded, _dir) = start_server().await;
    let out = plugin(
        attachment_env("ADD", FAILING_CONTAINER),
        net_conf("0.4.0", &socket, ""),
    )
    .await;
    assert_eq!(
        out.expect_error(7),
        json!({
            "cniVersion": "0.4.0",
            "code": 7,
            "msg": "pod CIDR exhausted",
            "details": "10.244.0.0/30 has no free address"
        })
    );
    let out = plugin(
        vec![("CNI_COMMAND", "STATUS")],
        net_conf("1.1.0", &socket, ""),
    )
    .await;
    assert_eq!(
        out.expect_error(50),
        json!({"cniVersion": "1.1.0", "code": 50, "msg": "agent bootstrap not complete"})
    );
    assert_eq!(recorded.lock().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn del_check_and_gc_forward_and_print_nothing() {
    let (socket, recorded, _dir) = start_server().await;
    let prev_040 = r#","prevResult":{"cniVersion":"0.4.0","interfaces":[{"name":"eth0","sandbox":"/var/run/netns/pod-1"}],
        "ips":[{"version":"4","address":"10.244.0.5/24","gateway":"10.244.0.1","interface":0}]}"#;

    let out = plugin(
        attachment_env("DEL", "c1"),
        net_conf("0.4.0", &socket, prev_040),
    )
    .await;
    assert_eq!((out.status, out.stdout.as_str()), (0, ""));
    let out = plugin(
        attachment_env("CHECK", "c1"),
        net_conf("0.4.0", &socket, prev_040),
    )
    .await;
    assert_eq!((out.status, out.stdout.as_str()), (0, ""));
    let gc_env = vec![("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")];
    let attachments = r#","cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}]"#;
    let out = plugin(gc_env, net_conf("1.1.0", &socket, attachments)).await;
    assert_eq!((out.status, out.stdout.as_str()), (0, ""));

    let seen = recorded.lock().unwrap().clone();
    let commands: Vec<_> = seen.iter().map(|r| r.command).collect();
    assert_eq!(commands, [Command::Del, Command::Check, Command::Gc]);
    let prev = seen[1]
        .prev_result
        .as_ref()
        .expect("CHECK forwards prevResult");
    assert_eq!(prev.ips[0].address.to_string(), "10.244.0.5/24");
    assert_eq!(
        prev.interfaces[0].sandbox.as_deref(),
        Some("/var/run/netns/pod-1")
    );
    let gc = &seen[2];
    assert_eq!(gc.container_id, None);
    let valid = gc.valid_attachments.as_ref().unwrap();
    assert_eq!(
        (valid[0].container_id.as_str(), valid[0].ifname.as_str()),
        ("c1", "eth0")
    );
}

/// Serves one connection with a fixed reply line, whatever the request.
async fn start_raw_server(reply: &'static str) -> (String, tempfile::TempDir) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("cni.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut request = String::new();
        BufReader::new(read).read_line(&mut request).await.unwrap();
        write.write_all(reply.as_bytes()).await.unwrap();
        // Hold the connection open: the plugin must decide from the reply alone.
        tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    });
    (socket.to_str().unwrap().to_owned(), dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_agent_answers_are_code_100() {
    for reply in [
        "this is not json\n",
        "{\"jsonrpc\":\"2.0\",\"id\":0,\"result\":{\"result\":\"not a result\"}}\n",
        "{\"jsonrpc\":\"2.0\",\"id\":0,\"error\":{\"code\":-32601,\"message\":\"Method not found\"}}\n",
    ] {
        let (socket, _dir) = start_raw_server(reply).await;
        let out = plugin(attachment_env("ADD", "c1"), net_conf("1.1.0", &socket, "")).await;
        let err = out.expect_error(100);
        assert!(err["msg"].as_str().unwrap().contains("cni_add"), "{reply}: {err}");
    }
}
