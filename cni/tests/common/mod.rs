//! Runs the real `weft` binary the way a container runtime does: a clean environment holding
//! only the CNI variables, the network config on stdin, the answer on stdout.

#![allow(dead_code)] // each test crate uses a different subset

use std::io::Write;
use std::process::{Command, Stdio};

/// What one invocation produced.
#[derive(Debug)]
pub struct Outcome {
    /// Exit status code.
    pub status: i32,
    /// Everything printed on stdout.
    pub stdout: String,
}

impl Outcome {
    /// Stdout parsed as one JSON value; panics with the raw text if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", self.stdout))
    }

    /// Asserts a failed invocation printing a CNI error with `code`, and returns the error object
    /// after checking it has exactly the spec's keys and types.
    pub fn expect_error(&self, code: u64) -> serde_json::Value {
        assert_ne!(self.status, 0, "expected failure, got {self:?}");
        let v = self.json();
        let obj = v.as_object().expect("error is an object");
        for key in obj.keys() {
            assert!(
                ["cniVersion", "code", "msg", "details"].contains(&key.as_str()),
                "unexpected key {key} in {v}"
            );
        }
        assert!(v["cniVersion"].is_string(), "{v}");
        assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        if let Some(details) = obj.get("details") {
            assert!(details.as_str().is_some_and(|d| !d.is_empty()), "{v}");
        }
        assert_eq!(v["code"], code, "{v}");
        v
    }
}

/// Runs the plugin with exactly `env` (nothing inherited) and `stdin`.
pub fn run_plugin(env: &[(&str, &str)], stdin: &str) -> Outcome {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weft"))
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn weft");
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait for weft");
    Outcome {
        status: out.status.code().expect("weft exited normally"),
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
    }
}

/// The environment of an ADD/DEL/CHECK for container `id` in netns `/var/run/netns/<id>`.
pub fn attachment_env(
    command: &'static str,
    id: &'static str,
) -> Vec<(&'static str, &'static str)> {
    vec![
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", id),
        ("CNI_NETNS", "/var/run/netns/pod-1"),
        ("CNI_IFNAME", "eth0"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0",
        ),
        ("CNI_PATH", "/opt/cni/bin"),
    ]
}

/// A network config for `version` pointing at `socket`, with extra JSON members appended.
pub fn net_conf(version: &str, socket: &str, extra: &str) -> String {
    format!(
        r#"{{"cniVersion":"{version}","name":"weft-net","type":"weft","agentSocket":"{socket}",
            "agentTimeoutSeconds":5,"someFutureKey":{{"x":1}}{extra}}}"#
    )
}
