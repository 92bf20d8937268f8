//! One plugin invocation: environment + stdin in, stdout text or a CNI error out.
//!
//! Checks run in this order, so each bad input gets one well-defined code:
//! 1. `CNI_COMMAND` present and known (4); VERSION is answered here and never fails.
//! 2. stdin decodes as a JSON object with well-typed known keys (6).
//! 3. `cniVersion`, `name`, `type` present and valid, `agentSocket`/`agentTimeoutSeconds` valid (7).
//! 4. `cniVersion` supported (1) and the verb exists in it (1: CHECK needs 0.4.0, STATUS/GC 1.1.0).
//! 5. The variables the verb requires are set and valid (4).
//! 6. `prevResult` decodes (6) and is consistent (7); CHECK requires one (7).
//! 7. The agent is called with a bounded timeout (11, or 50 for STATUS, when unreachable).

use std::io::Read;

use crate::config::NetConf;
use crate::env::{Command, RawEnv};
use crate::error::{code, CniError};
use crate::result::CniResult;
use crate::rpc::{client, CniRequest, CniResponse};
use crate::version::{CniVersion, VersionInfo};

/// Largest network configuration accepted on stdin.
pub const MAX_STDIN_LEN: u64 = 16 * 1024 * 1024;

/// How the plugin reaches the agent: the side-effect boundary of an invocation.
pub trait Agent {
    /// Sends `request` to the agent at `conf.agent_socket` and returns its answer, giving up
    /// after `conf.agent_timeout` (connection included). Must not retry: a retry is the
    /// runtime's decision, prompted by code 11.
    fn call(
        &self,
        conf: &NetConf,
        request: &CniRequest,
    ) -> Result<CniResponse, client::ClientError>;
}

/// The real agent: jsonrpsee over the unix socket, on a single-threaded tokio runtime built per
/// call (the plugin makes exactly one call per process).
#[derive(Debug, Default, Clone, Copy)]
pub struct UnixSocketAgent;

impl Agent for UnixSocketAgent {
    fn call(
        &self,
        conf: &NetConf,
        request: &CniRequest,
    ) -> Result<CniResponse, client::ClientError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(client::ClientError::Runtime)?;
        runtime.block_on(client::call(
            &conf.agent_socket,
            conf.agent_timeout,
            request,
        ))
    }
}

/// Reads stdin for `env`'s command, bounded by [`MAX_STDIN_LEN`].
///
/// VERSION on an interactive terminal reads nothing, so `CNI_COMMAND=VERSION weft` answers at
/// once instead of waiting for input.
pub fn read_stdin(env: &RawEnv) -> Result<Vec<u8>, CniError> {
    use std::io::IsTerminal;
    let stdin = std::io::stdin();
    if env.command().ok() == Some(Command::Version) && stdin.is_terminal() {
        return Ok(Vec::new());
    }
    read_bounded(stdin.lock())
}

fn read_bounded(reader: impl Read) -> Result<Vec<u8>, CniError> {
    let mut buf = Vec::new();
    reader
        .take(MAX_STDIN_LEN + 1)
        .read_to_end(&mut buf)
        .map_err(|e| {
            CniError::new(
                code::IO_FAILURE,
                "failed to read network config from stdin",
                e.to_string(),
            )
        })?;
    if buf.len() as u64 > MAX_STDIN_LEN {
        return Err(CniError::new(
            code::DECODING_FAILURE,
            format!("network config on stdin is larger than {MAX_STDIN_LEN} bytes"),
            "",
        ));
    }
    Ok(buf)
}

/// Runs one invocation. `Ok(Some(text))` goes to stdout with exit status 0, `Ok(None)` is a
/// silent success, `Err` is printed as the error object with a non-zero exit status.
///
/// The error's `cniVersion` is the requested version when it is supported, else the latest.
pub fn run(env: &RawEnv, stdin: &[u8], agent: &dyn Agent) -> Result<Option<String>, CniError> {
    run_inner(env, stdin, agent).map_err(|err| err.with_version(error_version(stdin)))
}

fn run_inner(env: &RawEnv, stdin: &[u8], agent: &dyn Agent) -> Result<Option<String>, CniError> {
    let started = crate::rpc::unix_ms_now();
    let command = env.command()?;
    if command == Command::Version {
        return Ok(Some(to_json(&VersionInfo::for_input(stdin))));
    }
    let conf = NetConf::parse(stdin)?;
    conf.cni_version.check_verb(command)?;
    let cni_env = env.validate(command)?;

    let prev_result = conf
        .prev_result
        .as_ref()
        .map(CniResult::decode)
        .transpose()?;
    if command == Command::Check && prev_result.is_none() {
        return Err(CniError::new(
            code::INVALID_NETWORK_CONFIG,
            "network config is missing prevResult",
            "the runtime must pass the result of the preceding ADD to CHECK",
        ));
    }

    let request = CniRequest {
        command,
        cni_version: conf.cni_version,
        container_id: cni_env.container_id,
        netns: cni_env.netns,
        ifname: cni_env.ifname,
        args: cni_env.args,
        network_name: conf.name.clone(),
        network_config: conf.raw.clone(),
        prev_result,
        valid_attachments: conf.valid_attachments.clone(),
        started_unix_ms: Some(started),
        deadline_unix_ms: Some(
            started.saturating_add(u64::try_from(conf.agent_timeout.as_millis()).unwrap_or(0)),
        ),
    };
    let response = agent
        .call(&conf, &request)
        .map_err(|e| e.into_cni_error(command))?;

    if command != Command::Add {
        return Ok(None);
    }
    let result = response.result.ok_or_else(|| {
        CniError::new(
            code::AGENT_PROTOCOL,
            format!(
                "agent at {} returned no result for ADD",
                conf.agent_socket.display()
            ),
            "",
        )
    })?;
    result.validate().map_err(|e| {
        CniError::new(
            code::AGENT_PROTOCOL,
            format!(
                "agent at {} returned an invalid result",
                conf.agent_socket.display()
            ),
            e.to_string(),
        )
    })?;
    Ok(Some(to_json(&result.encode(conf.cni_version))))
}

fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// The version to report an error in: the requested one if it is supported.
fn error_version(stdin: &[u8]) -> CniVersion {
    #[derive(serde::Deserialize)]
    struct Peek {
        #[serde(rename = "cniVersion")]
        cni_version: Option<serde_json::Value>,
    }
    serde_json::from_slice::<Peek>(stdin)
        .ok()
        .and_then(|p| p.cni_version?.as_str()?.parse().ok())
        .unwrap_or(CniVersion::LATEST)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{Interface, IpConfig};
    use std::cell::RefCell;

    /// Records requests and answers with a canned response.
    struct FakeAgent {
        answer: Result<CniResponse, CniError>,
        seen: RefCell<Vec<CniRequest>>,
    }

    impl FakeAgent {
        fn ok(result: Option<CniResult>) -> Self {
            Self {
                answer: Ok(CniResponse { result }),
                seen: RefCell::new(Vec::new()),
            }
        }
    }

    impl Agent for FakeAgent {
        fn call(
            &self,
            _: &NetConf,
            request: &CniRequest,
        ) -> Result<CniResponse, client::ClientError> {
            self.seen.borrow_mut().push(request.clone());
            self.answer.clone().map_err(client::ClientError::Agent)
        }
    }

    fn env(command: &str) -> RawEnv {
        RawEnv::from_vars([
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/var/run/netns/p1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web"),
            ("CNI_PATH", "/opt/cni/bin"),
        ])
    }

    fn result() -> CniResult {
        CniResult {
            interfaces: vec![Interface {
                name: "eth0".into(),
                sandbox: Some("/var/run/netns/p1".into()),
                ..Default::default()
            }],
            ips: vec![IpConfig {
                address: "10.244.0.5/24".parse().unwrap(),
                gateway: Some("10.244.0.1".parse().unwrap()),
                interface: Some(0),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn add_builds_the_request_and_converts_the_result() {
        let agent = FakeAgent::ok(Some(result()));
        let conf = br#"{"cniVersion":"0.3.1","name":"weft","type":"weft","mtu":1500}"#;
        let out = run(&env("ADD"), conf, &agent).unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["cniVersion"], "0.3.1");
        assert_eq!(v["ips"][0]["version"], "4");

        let seen = agent.seen.borrow();
        let req = &seen[0];
        assert_eq!(req.command, Command::Add);
        assert_eq!(req.cni_version, CniVersion::V0_3_1);
        assert_eq!(req.container_id.as_deref(), Some("c1"));
        assert_eq!(req.netns.as_deref(), Some("/var/run/netns/p1"));
        assert_eq!(req.ifname.as_deref(), Some("eth0"));
        assert_eq!(req.pod_namespace(), Some("ns"));
        assert_eq!(req.pod_name(), Some("web"));
        assert_eq!(req.network_name, "weft");
        assert_eq!(req.network_config["mtu"], 1500);
        // The default agentTimeoutSeconds (30) travels as an absolute deadline.
        let (started, deadline) = (req.started_unix_ms.unwrap(), req.deadline_unix_ms.unwrap());
        assert_eq!(deadline - started, 30_000);
    }

    #[test]
    fn check_converts_prev_result_and_requires_it() {
        let agent = FakeAgent::ok(None);
        let prev = result().encode(CniVersion::V0_4_0);
        let conf =
            serde_json::json!({"cniVersion":"0.4.0","name":"weft","type":"weft","prevResult":prev});
        let out = run(&env("CHECK"), conf.to_string().as_bytes(), &agent).unwrap();
        assert_eq!(out, None);
        assert_eq!(agent.seen.borrow()[0].prev_result, Some(result()));

        let err = run(
            &env("CHECK"),
            br#"{"cniVersion":"0.4.0","name":"weft","type":"weft"}"#,
            &agent,
        )
        .unwrap_err();
        assert_eq!(err.code, code::INVALID_NETWORK_CONFIG);
        assert_eq!(err.cni_version, CniVersion::V0_4_0);
    }

    #[test]
    fn verb_not_in_version_is_code_1_before_the_agent_is_called() {
        let agent = FakeAgent::ok(None);
        for (verb, version) in [("CHECK", "0.3.1"), ("STATUS", "1.0.0"), ("GC", "0.4.0")] {
            let conf = format!(r#"{{"cniVersion":"{version}","name":"weft","type":"weft"}}"#);
            let err = run(&env(verb), conf.as_bytes(), &agent).unwrap_err();
            assert_eq!(err.code, code::INCOMPATIBLE_VERSION, "{verb} {version}");
            assert_eq!(err.cni_version.as_str(), version);
        }
        assert!(agent.seen.borrow().is_empty());
    }

    #[test]
    fn gc_and_status_forward_without_attachment_fields() {
        let agent = FakeAgent::ok(None);
        let conf = br#"{"cniVersion":"1.1.0","name":"weft","type":"weft",
            "cni.dev/valid-attachments":[{"containerID":"c9","ifname":"eth0"}]}"#;
        assert_eq!(run(&env("GC"), conf, &agent).unwrap(), None);
        assert_eq!(run(&env("STATUS"), conf, &agent).unwrap(), None);
        let seen = agent.seen.borrow();
        assert_eq!(seen[0].command, Command::Gc);
        assert_eq!(
            seen[0].valid_attachments.as_ref().unwrap()[0].container_id,
            "c9"
        );
        assert_eq!(seen[0].container_id, None);
        assert_eq!(seen[1].command, Command::Status);
    }

    #[test]
    fn agent_errors_pass_through_with_the_requested_version() {
        let agent = FakeAgent {
            answer: Err(CniError::new(7, "podCIDR exhausted", "10.244.0.0/30")),
            seen: RefCell::new(Vec::new()),
        };
        let err = run(
            &env("ADD"),
            br#"{"cniVersion":"1.0.0","name":"weft","type":"weft"}"#,
            &agent,
        )
        .unwrap_err();
        assert_eq!(
            err,
            CniError::new(7, "podCIDR exhausted", "10.244.0.0/30").with_version(CniVersion::V1_0_0)
        );
    }

    #[test]
    fn add_without_or_with_inconsistent_result_is_code_100() {
        let conf = br#"{"cniVersion":"1.1.0","name":"weft","type":"weft"}"#;
        let err = run(&env("ADD"), conf, &FakeAgent::ok(None)).unwrap_err();
        assert_eq!(err.code, code::AGENT_PROTOCOL);
        let mut bad = result();
        bad.ips[0].interface = Some(4);
        let err = run(&env("ADD"), conf, &FakeAgent::ok(Some(bad))).unwrap_err();
        assert_eq!(err.code, code::AGENT_PROTOCOL);
    }

    #[test]
    fn stdin_is_bounded() {
        let big = vec![b' '; (MAX_STDIN_LEN + 1) as usize];
        assert_eq!(
            read_bounded(&big[..]).unwrap_err().code,
            code::DECODING_FAILURE
        );
        assert_eq!(read_bounded(&b"{}"[..]).unwrap(), b"{}");
    }
}
