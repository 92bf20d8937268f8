//! The plugin's whole input path: the `CNI_*` environment and the network config on stdin, run
//! through `plugin::run` against an in-memory agent (no socket), plus VERSION and `prevResult`
//! decoding on their own.
//!
//! Input: `KEY=VALUE` lines for the environment, a NUL byte, then stdin. Without a NUL the whole
//! input is stdin for an ADD with a valid environment.

#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_cni::config::NetConf;
use weft_cni::env::{Command, RawEnv};
use weft_cni::plugin::{self, Agent};
use weft_cni::result::CniResult;
use weft_cni::rpc::{client::ClientError, CniRequest, CniResponse};
use weft_cni::version::VersionInfo;

/// Answers every call with a fixed, valid ADD result.
struct FixedAgent(Option<CniResult>);

impl Agent for FixedAgent {
    fn call(&self, _: &NetConf, _: &CniRequest) -> Result<CniResponse, ClientError> {
        Ok(CniResponse {
            result: self.0.clone(),
        })
    }
}

const DEFAULT_ENV: &[(&str, &str)] = &[
    ("CNI_COMMAND", "ADD"),
    ("CNI_CONTAINERID", "c0ffee"),
    ("CNI_NETNS", "/var/run/netns/p1"),
    ("CNI_IFNAME", "eth0"),
    ("CNI_ARGS", "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web"),
    ("CNI_PATH", "/opt/cni/bin"),
];

fuzz_target!(|data: &[u8]| {
    let (env, stdin) = match data.iter().position(|&b| b == 0) {
        Some(nul) => {
            let vars = data[..nul].split(|&b| b == b'\n').filter_map(|line| {
                let eq = line.iter().position(|&b| b == b'=')?;
                let key = String::from_utf8_lossy(&line[..eq]).into_owned();
                let value = std::ffi::OsString::from(
                    <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&line[eq + 1..]),
                );
                Some((key, value))
            });
            (RawEnv::from_vars(vars), &data[nul + 1..])
        }
        None => (
            RawEnv::from_vars(DEFAULT_ENV.iter().map(|(k, v)| (*k, v.to_string()))),
            data,
        ),
    };
    let result = CniResult::decode(&serde_json::json!({
        "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/p1"}],
        "ips": [{"address": "10.244.0.5/24", "gateway": "10.244.0.1", "interface": 0}]
    }))
    .ok();
    let agent = FixedAgent(result);
    let _ = plugin::run(&env, stdin, &agent);
    // Every verb's environment rules on the same variables.
    for command in [
        Command::Add,
        Command::Del,
        Command::Check,
        Command::Status,
        Command::Gc,
    ] {
        let _ = env.validate(command);
    }
    let _ = VersionInfo::for_input(stdin);
    if let Ok(conf) = NetConf::parse(stdin) {
        if let Some(prev) = &conf.prev_result {
            if let Ok(decoded) = CniResult::decode(prev) {
                // A decoded result always encodes, in every version.
                for version in weft_cni::CniVersion::ALL {
                    let _ = serde_json::to_string(&decoded.encode(version));
                }
            }
        }
    }
});
