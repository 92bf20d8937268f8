//! `weftctl`, the operator CLI: kubectl-like verbs over the agent's local API, plus checks that
//! need no agent (`check cni`, `check host`). The binary only parses [`Cli`] and prints what
//! [`run`] returns.
//!
//! Exit codes: 0 success; 1 the command failed (one line on stderr, e.g. `agent not running:
//! /var/run/weft/agent.sock not found`); 2 usage error; 3 a check ran and found problems.

pub mod bundle;
pub mod checkcni;
pub mod checkhost;
pub mod render;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use clap_complete::Shell;
use serde_json::json;

use crate::api::client::{ApiClient, ClientError};
use crate::api::types::*;
use crate::config::{self, AgentConfig};
use render::{age, opt, render, Format, Table};

/// Exit code: a check found problems.
pub const EXIT_PROBLEMS: u8 = 3;
/// Exit code: the command failed.
pub const EXIT_FAILED: u8 = 1;

/// Errors of weftctl; each prints as one line.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Calling the agent failed.
    #[error(transparent)]
    Agent(#[from] ClientError),
    /// The agent config could not be read.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The CNI config directory could not be read.
    #[error(transparent)]
    Cni(#[from] crate::cniconf::CniConfError),
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// Writing the support bundle failed.
    #[error("cannot write support bundle {path}: {source}")]
    Bundle {
        /// The archive path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A probe failed.
    #[error("{0}")]
    Probe(String),
}

/// What a command printed and how it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Text for stdout.
    pub stdout: String,
    /// Exit code (0 or [`EXIT_PROBLEMS`]).
    pub code: u8,
}

impl Outcome {
    fn ok(stdout: String) -> Self {
        Outcome { stdout, code: 0 }
    }
}

/// Command line of weftctl.
#[derive(Parser, Debug)]
#[command(
    name = "weftctl",
    version,
    about = "Weft operator CLI: inspect a node's Weft agent and check the host",
    after_help = "Exit codes: 0 ok, 1 failed (reason on stderr), 2 usage, 3 a check found problems."
)]
pub struct Cli {
    /// Agent API socket [default: apiSocket from --config, else /var/run/weft/agent.sock].
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Agent configuration file weftctl reads its defaults from (ignored when missing).
    #[arg(long, global = true, value_name = "FILE", default_value = config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// Seconds to wait for the agent.
    #[arg(long, global = true, default_value_t = 30)]
    pub timeout: u64,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// `-o table|json|yaml`.
#[derive(Args, Debug, Clone, Copy)]
pub struct OutputArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// Top-level commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show objects of the node's agent.
    Get {
        /// What to show.
        #[command(subcommand)]
        what: GetCommand,
    },
    /// Trace a packet from a local pod through the node's OpenFlow pipeline.
    TracePacket(TraceArgs),
    /// Check the node for settings and state that break Weft.
    Check {
        /// What to check.
        #[command(subcommand)]
        what: CheckCommand,
    },
    /// Write a support bundle (tar.gz): agent info, flows, OVSDB dump, routes/rules/neighbours,
    /// MTU report, checks, logs, config with secrets removed.
    Supportbundle {
        /// The archive to write.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
    },
    /// Print a shell completion script.
    Completion {
        /// The shell.
        shell: Shell,
    },
    /// Kubernetes probe: exit 0 when the agent answers (`live`) or serves pods (`ready`).
    Probe {
        /// Which probe.
        kind: ProbeKind,
    },
}

/// Probe kinds.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ProbeKind {
    /// The agent answers on its API socket.
    Live,
    /// The agent finished bootstrap and serves CNI requests.
    Ready,
}

/// `get` subcommands.
#[derive(Subcommand, Debug)]
pub enum GetCommand {
    /// Version, node, mode, datapath, MTU plan, bridge, round, uptime, readiness, counters.
    Agentinfo(OutputArgs),
    /// Pod interfaces on this node.
    #[command(visible_alias = "podinterfaces")]
    Podinterface {
        /// Only this pod.
        pod: Option<String>,
        /// Only this namespace.
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Output.
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Installed OpenFlow flows (filters combine).
    Ovsflows {
        /// A table, by number or name (e.g. 70 or L3Forwarding).
        #[arg(long)]
        table: Option<String>,
        /// A pod's flows (name or namespace/name).
        #[arg(long)]
        pod: Option<String>,
        /// The pod's namespace.
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// A cookie category: pipeline, gateway, pod, peer, tunnel, uplink, service, policy.
        #[arg(long)]
        category: Option<String>,
        /// Output.
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Host routes: desired vs actual.
    Routes(OutputArgs),
    /// Host state the agent repaired.
    Repairs(OutputArgs),
    /// NetworkPolicy realized on this node: policies, rules, applied-to pods, flow counts,
    /// per-rule sessions/packets/bytes, held pods, drops.
    #[command(visible_aliases = ["networkpolicies", "netpol"])]
    Networkpolicy(OutputArgs),
}

/// `check` subcommands.
#[derive(Subcommand, Debug)]
pub enum CheckCommand {
    /// Every managed interface's MTU against the plan; pods to fix.
    Mtu(OutputArgs),
    /// CNI config load order (runtime and Multus "auto"); works without the agent.
    Cni {
        /// The CNI config directory [default: cniConfDir from --config].
        #[arg(long, value_name = "DIR")]
        cni_conf_dir: Option<PathBuf>,
        /// Output.
        #[command(flatten)]
        out: OutputArgs,
    },
    /// networkd / udev / NetworkManager settings that would fight Weft; works without the agent.
    Host {
        /// Read the host's files under this directory instead of `/`.
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
        /// Output.
        #[command(flatten)]
        out: OutputArgs,
    },
}

/// `trace-packet` arguments.
#[derive(Args, Debug)]
pub struct TraceArgs {
    /// Source pod (name or namespace/name) on this node; with `--from-tunnel`, a remote pod IP.
    #[arg(long)]
    pub source: String,
    /// Destination pod (name or namespace/name) or IP address.
    #[arg(long)]
    pub destination: String,
    /// Namespace of pods given by name only.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// icmp (default), tcp or udp.
    #[arg(long)]
    pub proto: Option<String>,
    /// Destination port (tcp/udp).
    #[arg(long)]
    pub dport: Option<u16>,
    /// Trace the packet as it arrives by the tunnel from the peer node with this transport
    /// address (the receiving half of a cross-node trace); `--source` is then the remote
    /// pod's IP address.
    #[arg(long, value_name = "PEER_IP")]
    pub from_tunnel: Option<std::net::IpAddr>,
    /// Output.
    #[command(flatten)]
    pub out: OutputArgs,
}

/// The agent config weftctl reads defaults from: the file if it exists, else defaults.
fn agent_config(path: &Path) -> Result<AgentConfig, CtlError> {
    if path.exists() {
        Ok(AgentConfig::load(path)?)
    } else {
        Ok(AgentConfig::default())
    }
}

/// Runs the command.
pub fn run(cli: Cli) -> Result<Outcome, CtlError> {
    if let Command::Completion { shell } = &cli.command {
        let mut out = Vec::new();
        clap_complete::generate(*shell, &mut Cli::command(), "weftctl", &mut out);
        return Ok(Outcome::ok(String::from_utf8_lossy(&out).into_owned()));
    }
    let config = agent_config(&cli.config)?;
    let socket = cli
        .socket
        .clone()
        .unwrap_or_else(|| config.api_socket.clone());
    let client = ApiClient::new(&socket, Duration::from_secs(cli.timeout));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CtlError::Runtime)?;
    runtime.block_on(execute(cli.command, &config, &client))
}

async fn execute(
    command: Command,
    config: &AgentConfig,
    client: &ApiClient,
) -> Result<Outcome, CtlError> {
    let empty = json!({});
    match command {
        Command::Completion { .. } => Ok(Outcome::ok(String::new())),
        Command::Get { what } => match what {
            GetCommand::Agentinfo(out) => {
                let info: AgentInfo = client.call(method::AGENT_INFO, &empty).await?;
                Ok(Outcome::ok(render(out.output, &info, agent_info_table)))
            }
            GetCommand::Podinterface {
                pod,
                namespace,
                out,
            } => {
                let req = PodInterfacesRequest {
                    name: pod,
                    namespace,
                };
                let pods: Vec<PodInterface> = client.call(method::POD_INTERFACES, &req).await?;
                Ok(Outcome::ok(render(out.output, &pods, pods_table)))
            }
            GetCommand::Ovsflows {
                table,
                pod,
                namespace,
                category,
                out,
            } => {
                let req = FlowsRequest {
                    table,
                    pod,
                    namespace,
                    category,
                };
                let flows: Vec<FlowLine> = client.call(method::OVS_FLOWS, &req).await?;
                Ok(Outcome::ok(render(out.output, &flows, flows_table)))
            }
            GetCommand::Routes(out) => {
                let report: HostStateReport = client.call(method::HOST_STATE, &empty).await?;
                let problems = report.routes.iter().any(|r| r.state != RouteState::Ok);
                Ok(Outcome {
                    stdout: render(out.output, &report, routes_table),
                    code: if problems { EXIT_PROBLEMS } else { 0 },
                })
            }
            GetCommand::Networkpolicy(out) => {
                let report: crate::api::netpol::PolicyReport =
                    client.call(method::NETWORK_POLICIES, &empty).await?;
                Ok(Outcome::ok(render(
                    out.output,
                    &report,
                    crate::api::netpol::table,
                )))
            }
            GetCommand::Repairs(out) => {
                let repairs: Vec<RepairEntry> = client.call(method::REPAIRS, &empty).await?;
                Ok(Outcome::ok(render(out.output, &repairs, repairs_table)))
            }
        },
        Command::TracePacket(args) => {
            let req = TraceRequest {
                source: args.source,
                destination: args.destination,
                namespace: args.namespace,
                proto: args.proto,
                dport: args.dport,
                from_tunnel: args.from_tunnel,
            };
            let trace: TraceResult = client.call(method::TRACE_PACKET, &req).await?;
            Ok(Outcome::ok(render(args.out.output, &trace, trace_table)))
        }
        Command::Check { what } => match what {
            CheckCommand::Mtu(out) => {
                let report: MtuReport = client.call(method::MTU_REPORT, &empty).await?;
                Ok(Outcome {
                    stdout: render(out.output, &report, mtu_table),
                    code: if report.mismatches > 0 {
                        EXIT_PROBLEMS
                    } else {
                        0
                    },
                })
            }
            CheckCommand::Cni { cni_conf_dir, out } => {
                let dir = cni_conf_dir.unwrap_or_else(|| config.cni_conf_dir.clone());
                let check = checkcni::check(&dir)?;
                Ok(Outcome {
                    stdout: render(out.output, &check, checkcni::table),
                    code: if check.has_problems() {
                        EXIT_PROBLEMS
                    } else {
                        0
                    },
                })
            }
            CheckCommand::Host { root, out } => {
                let check = checkhost::check(&root, &weft_interfaces(config));
                Ok(Outcome {
                    stdout: render(out.output, &check, checkhost::table),
                    code: if check.has_problems() {
                        EXIT_PROBLEMS
                    } else {
                        0
                    },
                })
            }
        },
        Command::Supportbundle { output } => {
            let bundle: SupportBundle = client.call(method::SUPPORT_BUNDLE, &empty).await?;
            let mut files = bundle.files;
            match checkcni::check(&config.cni_conf_dir) {
                Ok(check) => files.push(BundleFile {
                    name: "checks/cni.json".into(),
                    content: pretty(&check),
                }),
                Err(e) => files.push(BundleFile {
                    name: "checks/cni.error".into(),
                    content: format!("{e}\n"),
                }),
            }
            let host = checkhost::check(Path::new("/"), &weft_interfaces(config));
            files.push(BundleFile {
                name: "checks/host.json".into(),
                content: pretty(&host),
            });
            let names =
                bundle::write_archive(&output, &files).map_err(|source| CtlError::Bundle {
                    path: output.clone(),
                    source,
                })?;
            let mut text = format!("wrote {} ({} files)\n", output.display(), names.len());
            for name in names {
                text.push_str(&format!("  {name}\n"));
            }
            Ok(Outcome::ok(text))
        }
        Command::Probe { kind } => {
            let info: AgentInfo = client.call(method::AGENT_INFO, &empty).await?;
            match kind {
                ProbeKind::Live => Ok(Outcome::ok(format!("alive ({})\n", info.phase))),
                // The conflist watch's problems (another CNI config would be loaded instead of
                // Weft's) make the node not ready: its pods would not get Weft's network.
                ProbeKind::Ready if info.ready && conflist_problems(&info).is_empty() => {
                    Ok(Outcome::ok("ready\n".into()))
                }
                ProbeKind::Ready if info.ready => Err(CtlError::Probe(format!(
                    "cni config: {}",
                    conflist_problems(&info).join("; ")
                ))),
                ProbeKind::Ready => Err(CtlError::Probe(format!(
                    "agent not ready: phase {}",
                    info.phase
                ))),
            }
        }
    }
}

/// The problems the agent's conflist watch reports (status section `cniConfig`).
fn conflist_problems(info: &AgentInfo) -> Vec<String> {
    info.sections
        .get("cniConfig")
        .and_then(|section| section.get("problems"))
        .and_then(serde_json::Value::as_array)
        .map(|problems| {
            problems
                .iter()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Pretty JSON with a final newline.
fn pretty<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default() + "\n"
}

/// The Weft interfaces host checks match against: the gateway, the bridge, a pod host veth.
fn weft_interfaces(config: &AgentConfig) -> Vec<checkhost::WeftInterface> {
    vec![
        checkhost::WeftInterface {
            name: config.host_gateway.clone(),
            driver: "openvswitch",
        },
        checkhost::WeftInterface {
            name: config.ovs_bridge.clone(),
            driver: "openvswitch",
        },
        checkhost::WeftInterface {
            // Host veth ends are `wf` + pod name + `-` + hash (see iface::host_veth_name).
            name: "wfpod-abcdef".into(),
            driver: "veth",
        },
    ]
}

fn agent_info_table(info: &AgentInfo) -> String {
    let plan = info.mtu_plan.map_or_else(
        || "-".to_string(),
        |p| {
            format!(
                "pod {} gateway {} tunnel {} uplink {}",
                p.pod,
                p.gateway,
                opt(p.tunnel),
                p.uplink
            )
        },
    );
    let c = &info.counters;
    let mut rows = vec![
        ("Version", info.version.clone()),
        ("Node", info.node.clone()),
        ("Phase", info.phase.to_string()),
        ("Ready", info.ready.to_string()),
        ("Mode", opt(info.mode.as_ref())),
        ("Datapath", info.datapath.clone()),
        ("Bridge", info.bridge.clone()),
        ("Gateway", info.gateway.clone()),
        ("Round", opt(info.round)),
        ("MTU plan", plan),
        ("Transport", opt(info.transport.as_ref())),
        ("Pod CIDRs", info.pod_cidrs.join(", ")),
        ("Uptime", age(info.uptime_seconds)),
        ("Pods", c.pods.to_string()),
        (
            "CNI requests",
            format!(
                "add {} del {} check {} errors {}",
                c.cni_add, c.cni_del, c.cni_check, c.cni_errors
            ),
        ),
        ("Flow ops", c.flow_ops.to_string()),
        (
            "Reconnects",
            format!(
                "ovsdb {} openflow {}",
                c.ovsdb_reconnects, c.openflow_reconnects
            ),
        ),
        ("Host repairs", c.host_repairs.to_string()),
        ("MTU mismatches", c.mtu_mismatches.to_string()),
    ];
    for (name, value) in &info.sections {
        rows.push(("Section", format!("{name}: {value}")));
    }
    rows.iter()
        .map(|(k, v)| format!("{:<15} {v}\n", format!("{k}:")))
        .collect()
}

fn pods_table(pods: &Vec<PodInterface>) -> String {
    let mut t = Table::new(&[
        "namespace",
        "name",
        "interface",
        "host interface",
        "ofport",
        "ips",
        "mac",
    ]);
    for p in pods {
        t.row(vec![
            p.namespace.clone(),
            p.name.clone(),
            p.ifname.clone(),
            p.host_ifname.clone(),
            opt(p.ofport),
            p.ips.join(","),
            p.mac.clone(),
        ]);
    }
    t.render()
}

fn flows_table(flows: &Vec<FlowLine>) -> String {
    let mut t = Table::new(&[
        "table", "name", "priority", "category", "round", "packets", "flow",
    ]);
    for f in flows {
        t.row(vec![
            f.table.to_string(),
            opt(f.table_name.as_ref()),
            f.priority.to_string(),
            opt(f.category.as_ref()),
            opt(f.round),
            opt(f.packets),
            f.flow.clone(),
        ]);
    }
    t.render()
}

fn routes_table(report: &HostStateReport) -> String {
    let mut t = Table::new(&["destination", "device", "gateway", "table", "state"]);
    for r in &report.routes {
        t.row(vec![
            r.route.destination.clone(),
            opt(r.route.device.as_ref()),
            opt(r.route.gateway.as_ref()),
            r.route.table.to_string(),
            r.state.to_string(),
        ]);
    }
    t.render()
}

fn repairs_table(repairs: &Vec<RepairEntry>) -> String {
    if repairs.is_empty() {
        return "No repairs.\n".into();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut t = Table::new(&["age", "kind", "object", "detail"]);
    for r in repairs {
        t.row(vec![
            age(now.saturating_sub(r.time_ms / 1000)),
            r.kind.clone(),
            r.object.clone(),
            r.detail.clone(),
        ]);
    }
    t.render()
}

fn mtu_table(report: &MtuReport) -> String {
    let p = &report.plan;
    let mut out = format!(
        "MTU plan: pod {} gateway {} tunnel {} uplink {} (max pod {})\n",
        p.pod,
        p.gateway,
        opt(p.tunnel),
        p.uplink,
        p.max_pod
    );
    let mut t = Table::new(&["kind", "interface", "pod", "planned", "actual", "status"]);
    for e in &report.entries {
        let status = match (&e.error, e.ok()) {
            (Some(err), _) => format!("ERROR: {err}"),
            (None, true) => "ok".into(),
            (None, false) => "MISMATCH".into(),
        };
        t.row(vec![
            e.kind.to_string(),
            e.interface.clone(),
            opt(e.pod.as_ref()),
            e.planned.to_string(),
            opt(e.actual),
            status,
        ]);
    }
    out.push_str(&t.render());
    if report.pods_to_fix.is_empty() {
        out.push_str("\nAll managed interfaces follow the plan.\n");
    } else {
        out.push_str(&format!(
            "\n{} interface(s) off the plan. Pods to fix (restart them to get the planned MTU):\n",
            report.mismatches
        ));
        for pod in &report.pods_to_fix {
            out.push_str(&format!("  {pod}\n"));
        }
    }
    out
}

fn trace_table(trace: &TraceResult) -> String {
    let mut out = format!("Bridge {}\nFlow   {}\n\n", trace.bridge, trace.flow);
    for step in &trace.steps {
        let indent = "  ".repeat(step.depth as usize);
        let name = step
            .table_name
            .as_deref()
            .map(|n| format!(" {n}"))
            .unwrap_or_default();
        let priority = step
            .priority
            .map(|p| format!(" priority {p}"))
            .unwrap_or_default();
        out.push_str(&format!(
            "{indent}table {}{name}: {}{priority}\n",
            step.table, step.matched
        ));
        for action in &step.actions {
            out.push_str(&format!("{indent}    {action}\n"));
        }
    }
    out.push_str(&format!(
        "\nDatapath actions: {}\nVerdict: {}\n",
        trace.datapath_actions, trace.verdict
    ));
    for decision in &trace.policy {
        out.push_str(&format!("NetworkPolicy: {decision}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_parses_kubectl_like_commands() {
        let cli = Cli::try_parse_from([
            "weftctl",
            "get",
            "podinterface",
            "web",
            "-n",
            "prod",
            "-o",
            "json",
        ])
        .unwrap();
        match cli.command {
            Command::Get {
                what:
                    GetCommand::Podinterface {
                        pod,
                        namespace,
                        out,
                    },
            } => {
                assert_eq!(pod.as_deref(), Some("web"));
                assert_eq!(namespace.as_deref(), Some("prod"));
                assert_eq!(out.output, Format::Json);
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from([
            "weftctl",
            "--socket",
            "/s",
            "supportbundle",
            "-o",
            "/tmp/b.tgz",
        ])
        .unwrap();
        assert_eq!(cli.socket.as_deref(), Some(Path::new("/s")));
        assert!(matches!(cli.command, Command::Supportbundle { .. }));
        assert!(Cli::try_parse_from(["weftctl", "get", "agentinfo", "-o", "xml"]).is_err());
        let cli = Cli::try_parse_from([
            "weftctl",
            "trace-packet",
            "--source",
            "a",
            "--destination",
            "10.0.0.1",
            "--proto",
            "tcp",
            "--dport",
            "80",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::TracePacket(TraceArgs {
                dport: Some(80),
                ..
            })
        ));
        Cli::command().debug_assert();
    }

    #[test]
    fn completions_are_generated_for_each_shell() {
        for shell in ["bash", "zsh", "fish"] {
            let cli = Cli::try_parse_from(["weftctl", "completion", shell]).unwrap();
            let out = run(cli).unwrap();
            assert!(out.stdout.contains("weftctl"), "{shell}");
            assert!(out.stdout.contains("agentinfo"), "{shell}");
        }
    }
}
