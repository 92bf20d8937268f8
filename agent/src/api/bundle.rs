//! Support bundle data, collected by the agent: agent info, pod interfaces, flows, a full OVSDB
//! dump, the MTU report, desired vs actual host state, the realized NetworkPolicy
//! (`networkpolicy.json`), routes/rules/neighbours, the repairs log,
//! the CNI configs, the agent config and kubeconfig with secrets removed, and the tail of the
//! agent log (`logFile`). A part that cannot be collected becomes a line of `errors.txt`;
//! the bundle itself never fails. `weftctl supportbundle` packs the files into a tar.gz.

use std::io::{Read, Seek, SeekFrom};

use serde::Serialize;
use serde_json::{json, Value};

use super::redact::redact_text;
use super::types::{BundleFile, FlowsRequest, PodInterfacesRequest, SupportBundle};
use super::ApiState;

/// The largest log tail put in a bundle.
pub const MAX_LOG_TAIL: u64 = 4 * 1024 * 1024;
/// The largest CNI config file put in a bundle.
const MAX_CNI_FILE: u64 = 1024 * 1024;

struct Collector {
    files: Vec<BundleFile>,
    errors: Vec<String>,
}

impl Collector {
    fn text(&mut self, name: &str, content: String) {
        self.files.push(BundleFile {
            name: name.to_string(),
            content,
        });
    }

    fn json<T: Serialize, E: std::fmt::Display>(&mut self, name: &str, value: Result<T, E>) {
        match value {
            Ok(v) => {
                let text = serde_json::to_string_pretty(&v).unwrap_or_default();
                self.text(name, text + "\n");
            }
            Err(e) => self.errors.push(format!("{name}: {e}")),
        }
    }
}

/// Collects everything; see the module documentation.
pub async fn collect(state: &ApiState) -> SupportBundle {
    let mut c = Collector {
        files: Vec::new(),
        errors: Vec::new(),
    };
    c.json("agentinfo.json", Ok::<_, String>(state.agent_info()));
    c.json(
        "podinterfaces.json",
        state.pod_interfaces(&PodInterfacesRequest::default()),
    );
    match state.ovs_flows(&FlowsRequest::default()).await {
        Ok(lines) => {
            let text: String = lines
                .iter()
                .map(|l| match l.packets {
                    Some(n) => format!("{} n_packets={n}\n", l.flow),
                    None => format!("{}\n", l.flow),
                })
                .collect();
            c.text("ovs/flows.txt", text);
        }
        Err(e) => c.errors.push(format!("ovs/flows.txt: {e}")),
    }
    c.json("ovs/ovsdb.json", ovsdb_dump(state).await);
    c.json("mtu.json", state.mtu_report().await);
    c.json("hoststate.json", state.host_state().await);
    c.json("networkpolicy.json", state.network_policies().await);
    match state.host_nl().await {
        Ok(handle) => match super::host::dump(&handle).await {
            Ok((routes, rules, neighbours)) => {
                c.text("host/routes.txt", routes);
                c.text("host/rules.txt", rules);
                c.text("host/neighbours.txt", neighbours);
            }
            Err(e) => c.errors.push(format!("host: {e}")),
        },
        Err(e) => c.errors.push(format!("host: {e}")),
    }
    c.json("repairs.json", Ok::<_, String>(state.repairs.snapshot()));
    let config = serde_yaml::to_string(&state.config).unwrap_or_default();
    c.text("config/weft-agent.conf", redact_text(&config));
    if !state.config.kubeconfig.is_empty() {
        match std::fs::read_to_string(&state.config.kubeconfig) {
            Ok(text) => c.text("config/kubeconfig", redact_text(&text)),
            Err(e) => c.errors.push(format!(
                "config/kubeconfig {}: {e}",
                state.config.kubeconfig
            )),
        }
    }
    cni_configs(state, &mut c);
    if !state.config.log_file.is_empty() {
        match tail(std::path::Path::new(&state.config.log_file), MAX_LOG_TAIL) {
            Ok(text) => c.text("logs/weft-agent.log", text),
            Err(e) => c.errors.push(format!(
                "logs/weft-agent.log {}: {e}",
                state.config.log_file
            )),
        }
    }
    if !c.errors.is_empty() {
        let text = c.errors.join("\n") + "\n";
        c.text("errors.txt", text);
    }
    SupportBundle { files: c.files }
}

/// Every row of every table of the Open_vSwitch database (one `select` per table, one
/// transaction), keyed by table.
async fn ovsdb_dump(state: &ApiState) -> Result<Value, String> {
    let ovs = state.ovs().ok_or("ovsdb not connected yet")?;
    let client = ovs.client();
    let schema = client.schema().ok_or("ovsdb schema not known yet")?;
    let tables: Vec<&String> = schema.tables.keys().collect();
    let mut params = vec![json!(client.database())];
    params.extend(
        tables
            .iter()
            .map(|t| json!({"op": "select", "table": t, "where": []})),
    );
    let result = client
        .call("transact", Value::Array(params))
        .await
        .map_err(|e| e.to_string())?;
    let results = result.as_array().ok_or("transact result is not an array")?;
    let mut dump = serde_json::Map::new();
    for (table, result) in tables.iter().zip(results) {
        dump.insert(
            (*table).clone(),
            result.get("rows").cloned().unwrap_or(Value::Null),
        );
    }
    Ok(Value::Object(dump))
}

fn cni_configs(state: &ApiState, c: &mut Collector) {
    let dir = &state.config.cni_conf_dir;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            c.errors.push(format!("cni {}: {e}", dir.display()));
            return;
        }
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| crate::cniconf::is_cni_config_name(n))
        .collect();
    names.sort();
    for name in names {
        match tail(&dir.join(&name), MAX_CNI_FILE) {
            Ok(text) => c.text(&format!("cni/{name}"), redact_text(&text)),
            Err(e) => c.errors.push(format!("cni/{name}: {e}")),
        }
    }
}

/// The last `max` bytes of a file, as text.
pub fn tail(path: &std::path::Path, max: u64) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    if len > max {
        file.seek(SeekFrom::Start(len - max))?;
    }
    let mut bytes = Vec::new();
    file.take(max).read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "0123456789").unwrap();
        assert_eq!(tail(&path, 4).unwrap(), "6789");
        assert_eq!(tail(&path, 100).unwrap(), "0123456789");
        assert!(tail(&dir.path().join("none"), 4).is_err());
    }
}
