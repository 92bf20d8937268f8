//! The `weft` binary invoked as a runtime invokes it: VERSION, every bad input, and an agent
//! that is missing, refusing or silent. Each case asserts the exact CNI code and error shape.

mod common;

use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use common::{attachment_env, net_conf, run_plugin};
use serde_json::json;

const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// A socket path under a directory that does not exist: nothing can listen there.
const NO_AGENT: &str = "/nonexistent/weft-test/cni.sock";

#[test]
fn version_answers_in_each_requested_version() {
    for version in VERSIONS {
        let out = run_plugin(
            &[("CNI_COMMAND", "VERSION")],
            &format!(r#"{{"cniVersion":"{version}"}}"#),
        );
        assert_eq!(out.status, 0, "{out:?}");
        assert_eq!(
            out.json(),
            json!({"cniVersion": version, "supportedVersions": VERSIONS}),
        );
    }
}

#[test]
fn version_without_input_answers_the_latest() {
    let out = run_plugin(&[("CNI_COMMAND", "VERSION")], "");
    assert_eq!(out.status, 0);
    assert_eq!(
        out.json(),
        json!({"cniVersion": "1.1.0", "supportedVersions": VERSIONS})
    );
}

#[test]
fn malformed_json_is_code_6() {
    let out = run_plugin(
        &attachment_env("ADD", "c1"),
        r#"{"cniVersion":"1.1.0","name":"#,
    );
    let err = out.expect_error(6);
    assert_eq!(err["cniVersion"], "1.1.0");
    assert_eq!(err["msg"], "failed to decode network config");
    assert!(err["details"].as_str().unwrap().contains("EOF"), "{err}");

    let out = run_plugin(&attachment_env("ADD", "c1"), r#"["not","an","object"]"#);
    out.expect_error(6);
    let out = run_plugin(
        &attachment_env("ADD", "c1"),
        r#"{"cniVersion":"1.1.0","name":["x"],"type":"weft"}"#,
    );
    out.expect_error(6);
}

#[test]
fn missing_cni_version_name_or_type_is_code_7() {
    let cases = [
        (r#"{"name":"n","type":"weft"}"#, "cniVersion"),
        (r#"{"cniVersion":"1.0.0","type":"weft"}"#, "name"),
        (r#"{"cniVersion":"1.0.0","name":"n"}"#, "type"),
        (r#"{"cniVersion":"1.0.0","name":"","type":"weft"}"#, "name"),
    ];
    for (conf, key) in cases {
        let out = run_plugin(&attachment_env("ADD", "c1"), conf);
        let err = out.expect_error(7);
        assert_eq!(
            err["msg"],
            format!("network config is missing {key}"),
            "{conf}"
        );
    }
}

#[test]
fn invalid_config_values_are_code_7() {
    for extra in [
        r#","agentTimeoutSeconds":0"#,
        r#","agentTimeoutSeconds":100000"#,
    ] {
        let out = run_plugin(
            &attachment_env("ADD", "c1"),
            &net_conf("1.1.0", NO_AGENT, extra),
        );
        out.expect_error(7);
    }
    let out = run_plugin(
        &attachment_env("ADD", "c1"),
        r#"{"cniVersion":"1.1.0","name":"bad/name","type":"weft"}"#,
    );
    assert_eq!(
        out.expect_error(7)["msg"],
        "invalid network name \"bad/name\""
    );
    let out = run_plugin(
        &attachment_env("ADD", "c1"),
        r#"{"cniVersion":"1.1.0","name":"n","type":"weft","agentSocket":"relative.sock"}"#,
    );
    out.expect_error(7);
}

#[test]
fn unsupported_version_is_code_1() {
    for version in ["0.1.0", "0.2.0", "1.2.0", "2.0.0"] {
        let out = run_plugin(
            &attachment_env("ADD", "c1"),
            &net_conf(version, NO_AGENT, ""),
        );
        let err = out.expect_error(1);
        assert_eq!(
            err,
            json!({
                "cniVersion": "1.1.0",
                "code": 1,
                "msg": format!("incompatible CNI version \"{version}\""),
                "details": "plugin supports 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"
            })
        );
    }
}

#[test]
fn verbs_missing_from_the_requested_version_are_code_1() {
    let gc_env = [("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")];
    let status_env = [("CNI_COMMAND", "STATUS")];
    let check_env = attachment_env("CHECK", "c1");
    type Env<'a> = &'a [(&'a str, &'a str)];
    let cases: [(Env<'_>, &str, &str); 4] = [
        (&check_env, "0.3.1", "CHECK"),
        (&status_env, "1.0.0", "STATUS"),
        (&gc_env, "1.0.0", "GC"),
        (&gc_env, "0.4.0", "GC"),
    ];
    for (env, version, verb) in cases {
        let out = run_plugin(env, &net_conf(version, NO_AGENT, ""));
        let err = out.expect_error(1);
        assert_eq!(err["cniVersion"], version);
        assert_eq!(
            err["msg"],
            format!("{verb} is not available in CNI version {version}")
        );
    }
}

#[test]
fn missing_command_is_code_4() {
    let mut env = attachment_env("ADD", "c1");
    env.remove(0);
    let out = run_plugin(&env, &net_conf("1.1.0", NO_AGENT, ""));
    let err = out.expect_error(4);
    assert_eq!(
        err["msg"],
        "required environment variables missing: CNI_COMMAND"
    );

    let out = run_plugin(
        &[("CNI_COMMAND", "ATTACH")],
        &net_conf("1.1.0", NO_AGENT, ""),
    );
    assert_eq!(out.expect_error(4)["msg"], "unknown CNI_COMMAND \"ATTACH\"");
}

#[test]
fn missing_attachment_variables_are_code_4_and_named() {
    let without = |command, names: &[&str]| {
        let env: Vec<_> = attachment_env(command, "c1")
            .into_iter()
            .filter(|(k, _)| !names.contains(k))
            .collect();
        run_plugin(&env, &net_conf("0.4.0", NO_AGENT, ""))
    };
    let cases: [(&str, &[&str], &str); 5] = [
        ("ADD", &["CNI_CONTAINERID"], "CNI_CONTAINERID"),
        ("ADD", &["CNI_NETNS"], "CNI_NETNS"),
        (
            "ADD",
            &["CNI_CONTAINERID", "CNI_NETNS"],
            "CNI_CONTAINERID, CNI_NETNS",
        ),
        ("CHECK", &["CNI_IFNAME"], "CNI_IFNAME"),
        ("DEL", &["CNI_CONTAINERID"], "CNI_CONTAINERID"),
    ];
    for (command, remove, listed) in cases {
        let err = without(command, remove).expect_error(4);
        assert_eq!(
            err["msg"],
            format!("required environment variables missing: {listed}")
        );
        assert_eq!(
            err["cniVersion"], "0.4.0",
            "errors answer in the requested version"
        );
    }
    let gc = run_plugin(&[("CNI_COMMAND", "GC")], &net_conf("1.1.0", NO_AGENT, ""));
    assert_eq!(
        gc.expect_error(4)["msg"],
        "required environment variables missing: CNI_PATH"
    );
}

#[test]
fn invalid_ifname_netns_container_id_and_args_are_code_4() {
    let cases = [
        (
            "CNI_IFNAME",
            "eth0123456789abc",
            "invalid CNI_IFNAME \"eth0123456789abc\": longer than 15 bytes",
        ),
        (
            "CNI_IFNAME",
            "eth/0",
            "invalid CNI_IFNAME \"eth/0\": contains '/' or ':'",
        ),
        (
            "CNI_IFNAME",
            "eth:0",
            "invalid CNI_IFNAME \"eth:0\": contains '/' or ':'",
        ),
        (
            "CNI_IFNAME",
            "..",
            "invalid CNI_IFNAME \"..\": '.' and '..' are reserved",
        ),
        (
            "CNI_IFNAME",
            "eth 0",
            "invalid CNI_IFNAME \"eth 0\": contains whitespace",
        ),
        (
            "CNI_NETNS",
            "var/run/netns/x",
            "invalid CNI_NETNS \"var/run/netns/x\": not an absolute path",
        ),
        (
            "CNI_NETNS",
            "/var/run/netns/../../etc/x",
            "invalid CNI_NETNS \"/var/run/netns/../../etc/x\": contains a '..' component",
        ),
        (
            "CNI_CONTAINERID",
            "-abc",
            "invalid CNI_CONTAINERID \"-abc\"",
        ),
        ("CNI_CONTAINERID", "a/b", "invalid CNI_CONTAINERID \"a/b\""),
        (
            "CNI_ARGS",
            "K8S_POD_NAME=web;junk",
            "invalid CNI_ARGS pair \"junk\": expected KEY=VALUE",
        ),
    ];
    for (key, value, msg) in cases {
        let env: Vec<_> = attachment_env("ADD", "c1")
            .into_iter()
            .map(|(k, v)| if k == key { (k, value) } else { (k, v) })
            .collect();
        let out = run_plugin(&env, &net_conf("1.1.0", NO_AGENT, ""));
        assert_eq!(out.expect_error(4)["msg"], msg, "{key}={value}");
    }
}

#[test]
fn check_without_prev_result_is_code_7() {
    let out = run_plugin(
        &attachment_env("CHECK", "c1"),
        &net_conf("1.1.0", NO_AGENT, ""),
    );
    assert_eq!(
        out.expect_error(7)["msg"],
        "network config is missing prevResult"
    );
}

#[test]
fn malformed_prev_result_is_code_6() {
    let out = run_plugin(
        &attachment_env("DEL", "c1"),
        &net_conf(
            "1.1.0",
            NO_AGENT,
            r#","prevResult":{"ips":[{"address":"not-an-ip"}]}"#,
        ),
    );
    assert_eq!(out.expect_error(6)["msg"], "failed to decode prevResult");
}

#[test]
fn agent_socket_missing_is_code_11_naming_the_socket() {
    for command in ["ADD", "DEL", "CHECK"] {
        let prev = r#","prevResult":{"cniVersion":"1.1.0"}"#;
        let out = run_plugin(
            &attachment_env(command, "c1"),
            &net_conf("1.1.0", NO_AGENT, prev),
        );
        let err = out.expect_error(11);
        let msg = err["msg"].as_str().unwrap();
        assert!(
            msg.starts_with(&format!("agent not reachable at {NO_AGENT}: ")),
            "{command}: {msg}"
        );
        assert!(
            err["details"]
                .as_str()
                .unwrap()
                .contains("No such file or directory"),
            "{err}"
        );
    }
    let gc = run_plugin(
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")],
        &net_conf("1.1.0", NO_AGENT, r#","cni.dev/valid-attachments":[]"#),
    );
    gc.expect_error(11);
}

#[test]
fn status_with_agent_missing_is_code_50() {
    let out = run_plugin(
        &[("CNI_COMMAND", "STATUS")],
        &net_conf("1.1.0", NO_AGENT, ""),
    );
    let err = out.expect_error(50);
    assert!(err["msg"].as_str().unwrap().contains(NO_AGENT), "{err}");
}

#[test]
fn agent_refusing_connections_is_code_11() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("cni.sock");
    drop(UnixListener::bind(&socket).unwrap()); // the file stays, nobody listens: ECONNREFUSED
    let socket = socket.to_str().unwrap();
    let out = run_plugin(&attachment_env("ADD", "c1"), &net_conf("0.3.1", socket, ""));
    let err = out.expect_error(11);
    assert_eq!(err["cniVersion"], "0.3.1");
    assert!(err["msg"].as_str().unwrap().contains(socket), "{err}");
    assert!(
        err["details"].as_str().unwrap().contains("refused"),
        "{err}"
    );
}

#[test]
fn silent_agent_times_out_with_code_11() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("cni.sock");
    // Bound and listening but never accepting: the connect succeeds, no answer ever comes.
    let _listener = UnixListener::bind(&socket).unwrap();
    let socket = socket.to_str().unwrap();
    let conf = format!(
        r#"{{"cniVersion":"1.1.0","name":"n","type":"weft","agentSocket":"{socket}","agentTimeoutSeconds":1}}"#
    );
    let started = Instant::now();
    let out = run_plugin(&attachment_env("ADD", "c1"), &conf);
    let elapsed = started.elapsed();
    let err = out.expect_error(11);
    assert_eq!(
        err["msg"],
        format!("agent at {socket} did not answer cni_add within 1s")
    );
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(5),
        "took {elapsed:?}"
    );
}
