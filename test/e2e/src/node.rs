//! A single Weft node for tests, wired exactly as in production: its own OVS (in the node's
//! network namespace), the test API server listening inside that namespace, and the real
//! `weft-agent` binary running there as a process; pods are network namespaces wired by calling
//! the real `weft` plugin binary with `CNI_*` variables and the network config on stdin.
//!
//! The binaries are found next to the test executable (`target/<profile>/`, the parent of the
//! `deps/` directory the test runs from); `build/test` runs `cargo build --workspace --bins`
//! before `cargo test` so they are current. Everything is torn down on drop, also on panic:
//! the agent by its pid, then the API server, pod namespaces, and the OVS instance.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::apiserver::{ApiServer, ApiServerOptions};
use crate::ovs::{OvsInstance, OvsOptions};
use crate::{cmd, netns, Datapath};

/// The bridge every node uses.
pub const BRIDGE: &str = "br-int";
/// The gateway port every node uses.
pub const GATEWAY: &str = "weft-gw0";
/// The interface holding the node's IPs (the transport interface).
pub const UPLINK: &str = "uplink0";
/// The tunnel port (encap mode).
pub const TUNNEL: &str = "weft-tun0";
/// The node's IPv4 InternalIP.
pub const NODE_IP4: &str = "192.168.50.10";
/// The node's IPv6 InternalIP.
pub const NODE_IP6: &str = "fd00:50::10";

static POD_COUNTER: AtomicU32 = AtomicU32::new(0);

/// The binaries a node runs, built by `cargo build --workspace --bins`.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `weft-agent`.
    pub agent: PathBuf,
    /// The `weft` CNI plugin.
    pub plugin: PathBuf,
}

impl Binaries {
    /// Finds the binaries in `target/<profile>/`: next to the running executable (the lab), or
    /// next to the running test's `deps/` directory.
    pub fn locate() -> Result<Self> {
        let exe = std::env::current_exe()?;
        let here = exe
            .parent()
            .ok_or_else(|| anyhow!("cannot locate target dir from {}", exe.display()))?;
        let dir = if here.join("weft-agent").exists() {
            here
        } else {
            here.parent()
                .ok_or_else(|| anyhow!("cannot locate target dir from {}", exe.display()))?
        };
        let bins = Binaries {
            agent: dir.join("weft-agent"),
            plugin: dir.join("weft"),
        };
        for bin in [&bins.agent, &bins.plugin] {
            if !bin.exists() {
                bail!(
                    "{} is missing: run `cargo build --workspace --bins` before the tests (build/test does)",
                    bin.display()
                );
            }
        }
        Ok(bins)
    }
}

/// How to start a node.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The node's pod CIDRs (one per family).
    pub pod_cidrs: Vec<String>,
    /// Extra agent config lines (YAML).
    pub extra_config: String,
    /// Wait until STATUS succeeds before returning (default true).
    pub wait_ready: bool,
    /// Extra `weft-agent` flags (e.g. `--restore-uplink`).
    pub agent_args: Vec<String>,
}

impl NodeOptions {
    /// A node with the given pod CIDRs.
    pub fn new(pod_cidrs: &[&str]) -> Self {
        NodeOptions {
            pod_cidrs: pod_cidrs.iter().map(|s| s.to_string()).collect(),
            extra_config: String::new(),
            wait_ready: true,
            agent_args: Vec::new(),
        }
    }
}

/// The agent process; killed on drop.
#[derive(Debug)]
pub(crate) struct AgentProcess(Child);

impl AgentProcess {
    /// Starts `agent --config CONFIG ARGS...` inside `netns`, appending its output to `log`.
    pub(crate) fn spawn(
        netns: &str,
        agent: &Path,
        config: &Path,
        args: &[String],
        log: &Path,
    ) -> Result<Self> {
        Self::spawn_with_env(netns, agent, config, args, &[], log)
    }

    /// [`Self::spawn`] with extra environment variables (e.g. the test-only crash hook).
    pub(crate) fn spawn_with_env(
        netns: &str,
        agent: &Path,
        config: &Path,
        args: &[String],
        env: &[(&str, &str)],
        log: &Path,
    ) -> Result<Self> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let child = Command::new("ip")
            .args(["netns", "exec", netns])
            .arg(agent)
            .arg("--config")
            .arg(config)
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start weft-agent")?;
        Ok(AgentProcess(child))
    }

    /// Whether the process still runs.
    pub(crate) fn running(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Kills the process with SIGKILL (a crash) and reaps it.
    pub(crate) fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// Waits up to `timeout` for the process to exit; its exit status, if it did.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        stop_child(&mut self.0);
    }
}

/// One node. Fields drop in order: agent, API server, OVS (and with it the run directory).
pub struct Node {
    agent: Option<AgentProcess>,
    /// The test API server (inside the node's namespace).
    pub api: ApiServer,
    /// The node's OVS; its namespace is the node's.
    pub ovs: OvsInstance,
    /// The binaries.
    pub bins: Binaries,
    /// Node name.
    pub name: String,
    /// Agent config file.
    pub config: PathBuf,
    /// The agent's CNI socket.
    pub cni_socket: PathBuf,
    /// The agent's data directory (IPAM store).
    pub data_dir: PathBuf,
    /// The agent's log file (all its runs, appended).
    pub log: PathBuf,
    /// Extra `weft-agent` flags, passed on every start.
    pub agent_args: Vec<String>,
}

impl Node {
    /// Starts OVS (flow-restore-wait set, as the DaemonSet does), the uplink with the node IPs,
    /// the API server with the Node object, and the agent; waits until STATUS succeeds.
    pub fn start(options: NodeOptions) -> Result<Node> {
        let bins = Binaries::locate()?;
        let ovs = OvsInstance::start_with(OvsOptions {
            flow_restore_wait: true,
            ..OvsOptions::default()
        })?;
        let ns = ovs.netns().to_string();
        // No dummy module on these machines: a veth whose peer stays in the node too.
        let peer = format!("{UPLINK}p");
        cmd::run(
            "ip",
            &[
                "-n", &ns, "link", "add", UPLINK, "type", "veth", "peer", "name", &peer,
            ],
        )?;
        cmd::run("ip", &["-n", &ns, "link", "set", &peer, "up"])?;
        cmd::run(
            "ip",
            &[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{NODE_IP4}/24"),
                "dev",
                UPLINK,
            ],
        )?;
        cmd::run(
            "ip",
            &[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{NODE_IP6}/64"),
                "dev",
                UPLINK,
                "nodad",
            ],
        )?;
        cmd::run("ip", &["-n", &ns, "link", "set", UPLINK, "up"])?;

        let api = ApiServer::start_with(ApiServerOptions {
            netns: Some(ns.clone()),
            ..ApiServerOptions::default()
        })?;
        let name = ns.clone();
        let spec = match options.pod_cidrs.first() {
            Some(first) => json!({"podCIDR": first, "podCIDRs": options.pod_cidrs}),
            None => json!({}),
        };
        api.create_node(json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name},
            "spec": spec,
            "status": {"addresses": [
                {"type": "InternalIP", "address": NODE_IP4},
                {"type": "InternalIP", "address": NODE_IP6},
                {"type": "Hostname", "address": name}
            ]}
        }))
        .map_err(|e| anyhow!("creating node {name}: {e:?}"))?;

        let dir = ovs.rundir().join("agent");
        std::fs::create_dir_all(&dir)?;
        let kubeconfig = dir.join("kubeconfig");
        // The agent's identity: the DaemonSet's ServiceAccount, authorized by weft.yml's RBAC.
        let (sa_ns, sa) = crate::apiserver::rbac::weft_agent_service_account();
        api.write_service_account_kubeconfig(&kubeconfig, &sa_ns, &sa)?;
        let cni_socket = dir.join("run").join("cni.sock");
        let data_dir = dir.join("data");
        let config = dir.join("weft-agent.conf");
        std::fs::write(
            &config,
            format!(
                "nodeName: {name}\nkubeconfig: {}\novsBridge: {BRIDGE}\novsDatapathType: {}\n\
                 ovsRunDir: {}\nhostGateway: {GATEWAY}\ncniSocket: {}\napiSocket: {}\n\
                 dataDir: {}\n{}",
                kubeconfig.display(),
                Datapath::current(),
                ovs.rundir().display(),
                cni_socket.display(),
                dir.join("run").join("agent.sock").display(),
                data_dir.display(),
                options.extra_config
            ),
        )?;
        let mut node = Node {
            agent: None,
            api,
            ovs,
            bins,
            name,
            config,
            cni_socket,
            data_dir,
            log: dir.join("weft-agent.log"),
            agent_args: options.agent_args.clone(),
        };
        node.start_agent()?;
        if options.wait_ready {
            node.wait_ready(Duration::from_secs(30))?;
        }
        Ok(node)
    }

    /// The node's network namespace.
    pub fn netns(&self) -> &str {
        self.ovs.netns()
    }

    /// Stops the agent, appends `extra` (YAML lines) to its config, starts it again and waits
    /// until it is ready (e.g. a mode switch: `"trafficEncapMode: noEncap\n"`).
    pub fn restart_agent_with(&mut self, extra: &str, timeout: Duration) -> Result<()> {
        self.stop_agent();
        let mut config = std::fs::read_to_string(&self.config)?;
        config.push_str(extra);
        std::fs::write(&self.config, config)?;
        self.start_agent()?;
        self.wait_ready(timeout)
    }

    /// Starts the agent process inside the node's namespace (logs appended to [`Node::log`]).
    pub fn start_agent(&mut self) -> Result<()> {
        if self.agent.is_some() {
            bail!("agent of node {} already runs", self.name);
        }
        self.agent = Some(AgentProcess::spawn(
            self.ovs.netns(),
            &self.bins.agent,
            &self.config,
            &self.agent_args,
            &self.log,
        )?);
        Ok(())
    }

    /// Stops the agent (SIGTERM, SIGKILL after 5 s).
    pub fn stop_agent(&mut self) {
        self.agent = None;
    }

    /// Kills the agent with SIGKILL (a crash).
    pub fn kill_agent(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            let _ = agent.0.kill();
            let _ = agent.0.wait();
        }
    }

    /// Sends `signal` to the running agent (e.g. SIGSTOP to stall it, SIGTERM to stop it while
    /// requests are in flight).
    pub fn signal_agent(&self, signal: Signal) -> Result<()> {
        let pid = self.agent_pid().context("no agent running")?;
        kill(Pid::from_raw(i32::try_from(pid)?), signal)
            .with_context(|| format!("cannot send {signal} to weft-agent {pid}"))
    }

    /// Waits up to `timeout` for the agent to exit by itself and forgets it; its exit status
    /// (None if it still ran: then it is stopped).
    pub fn wait_agent_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let status = self.agent.as_mut()?.wait_exit(timeout);
        self.agent = None;
        status
    }

    /// Whether the agent process is still running.
    pub fn agent_running(&mut self) -> bool {
        self.agent.as_mut().is_some_and(AgentProcess::running)
    }

    /// Waits until CNI STATUS through the plugin succeeds; fails early if the agent exits.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.plugin("STATUS", &PluginCall::default())?;
            if out.success {
                return Ok(());
            }
            if !self.agent_running() {
                bail!(
                    "weft-agent of node {} exited before ready; log:\n{}",
                    self.name,
                    self.agent_log()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "weft-agent of node {} not ready after {timeout:?} (last STATUS: {}); log:\n{}",
                    self.name,
                    out.stdout,
                    self.agent_log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The agent's log so far.
    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The network config the runtime passes on stdin.
    pub fn netconf(&self, cni_version: &str) -> Value {
        json!({
            "cniVersion": cni_version,
            "name": "weft",
            "type": "weft",
            "agentSocket": self.cni_socket,
            "agentTimeoutSeconds": 30,
        })
    }

    /// Runs the plugin binary for `command` as a runtime does.
    pub fn plugin(&self, command: &str, call: &PluginCall) -> Result<PluginOutput> {
        let config = call.config.clone().unwrap_or_else(|| self.netconf("1.1.0"));
        run_plugin(&self.bins.plugin, command, call, &config.to_string())
    }

    /// A handle that runs the plugin against this node from any thread (`Node` itself holds
    /// the API server, which is not `Sync`).
    pub fn runtime(&self) -> Runtime {
        Runtime {
            plugin: self.bins.plugin.clone(),
            config: self.netconf("1.1.0"),
        }
    }

    /// ADD of `pod` through the plugin; fails unless it succeeds, returns the result.
    pub fn add(&self, pod: &Pod) -> Result<Value> {
        let out = self.plugin("ADD", &pod.call())?;
        if !out.success {
            bail!("ADD of {} failed: {}", pod.name, out.stdout);
        }
        out.json()
    }

    /// DEL of `pod` through the plugin; fails unless it succeeds.
    pub fn del(&self, pod: &Pod) -> Result<()> {
        let out = self.plugin("DEL", &pod.call())?;
        if !out.success {
            bail!("DEL of {} failed: {}", pod.name, out.stdout);
        }
        Ok(())
    }

    /// Interfaces of the node's namespace whose name starts with `prefix`.
    pub fn links_with_prefix(&self, prefix: &str) -> Result<Vec<String>> {
        let out = cmd::run("ip", &["-n", self.netns(), "-o", "link", "show"])?;
        Ok(out
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .filter(|n| n.starts_with(prefix))
            .collect())
    }

    /// Names of every port on the bridge.
    pub fn all_ports(&self) -> Result<Vec<String>> {
        Ok(self
            .ovs
            .vsctl(&["list-ports", BRIDGE])?
            .lines()
            .map(str::to_string)
            .collect())
    }

    /// Names of the bridge's ports other than the infrastructure ports (gateway, tunnel, and
    /// the uplink NIC `uplink0~` and host internal port `uplink0` attached in noEncap and in
    /// netdev encap mode): the pod ports.
    pub fn pod_ports(&self) -> Result<Vec<String>> {
        let nic = format!("{UPLINK}~");
        Ok(self
            .all_ports()?
            .into_iter()
            .filter(|p| ![GATEWAY, TUNNEL, UPLINK, nic.as_str()].contains(&p.as_str()))
            .collect())
    }

    /// Flows on the bridge whose cookie has Weft's pod category (3), as `ovs-ofctl` prints them.
    pub fn pod_flows(&self) -> Result<Vec<String>> {
        Ok(self
            .ovs
            .dump_flows(BRIDGE)?
            .into_iter()
            .filter(|f| cookie_of(f).is_some_and(|c| (c >> 40) & 0xff == 3))
            .collect())
    }

    /// The distinct restart rounds of the Weft flows on the bridge.
    pub fn flow_rounds(&self) -> Result<std::collections::BTreeSet<u16>> {
        Ok(self
            .ovs
            .dump_flows(BRIDGE)?
            .iter()
            .filter_map(|f| cookie_of(f))
            .map(|c| (c >> 48) as u16)
            .collect())
    }

    /// The IPAM store's allocations (address -> owner JSON).
    pub fn ipam_allocations(&self) -> Result<serde_json::Map<String, Value>> {
        let path = self.data_dir.join("ipam.json");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let v: Value = serde_json::from_str(&text)?;
                Ok(v["allocations"].as_object().cloned().unwrap_or_default())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Calls the plugin as a container runtime does, for one node's network config.
#[derive(Debug, Clone)]
pub struct Runtime {
    plugin: PathBuf,
    config: Value,
}

impl Runtime {
    /// A handle running `plugin` with the network config `config`.
    pub(crate) fn new(plugin: PathBuf, config: Value) -> Runtime {
        Runtime { plugin, config }
    }

    /// Runs `command` for `call` (its `config`, if set, replaces the node's).
    pub fn call(&self, command: &str, call: &PluginCall) -> Result<PluginOutput> {
        let config = call.config.as_ref().unwrap_or(&self.config);
        run_plugin(&self.plugin, command, call, &config.to_string())
    }
}

/// What one plugin call passes besides the command.
#[derive(Debug, Clone, Default)]
pub struct PluginCall {
    /// `CNI_CONTAINERID`.
    pub container_id: Option<String>,
    /// `CNI_NETNS`.
    pub netns: Option<String>,
    /// `CNI_IFNAME`.
    pub ifname: Option<String>,
    /// `CNI_ARGS`.
    pub args: Option<String>,
    /// The network config; default: the node's for 1.1.0.
    pub config: Option<Value>,
}

/// What the plugin printed and how it exited.
#[derive(Debug, Clone)]
pub struct PluginOutput {
    /// Exit status 0.
    pub success: bool,
    /// Stdout.
    pub stdout: String,
    /// Wall time of the call.
    pub elapsed: Duration,
}

impl PluginOutput {
    /// Stdout as JSON.
    pub fn json(&self) -> Result<Value> {
        serde_json::from_str(&self.stdout)
            .with_context(|| format!("plugin printed no JSON: {:?}", self.stdout))
    }

    /// The CNI error code, if the call failed with an error object.
    pub fn code(&self) -> Option<u64> {
        if self.success {
            return None;
        }
        self.json().ok().and_then(|v| v["code"].as_u64())
    }
}

/// Runs the plugin binary at `plugin`.
pub fn run_plugin(
    plugin: &Path,
    command: &str,
    call: &PluginCall,
    stdin: &str,
) -> Result<PluginOutput> {
    let mut cmd = Command::new(plugin);
    cmd.env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_PATH", "/opt/cni/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in [
        ("CNI_CONTAINERID", &call.container_id),
        ("CNI_NETNS", &call.netns),
        ("CNI_IFNAME", &call.ifname),
        ("CNI_ARGS", &call.args),
    ] {
        if let Some(value) = value {
            cmd.env(key, value);
        }
    }
    let started = Instant::now();
    let mut child = cmd.spawn().context("cannot run the weft plugin")?;
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.as_bytes())?;
    }
    let output = child.wait_with_output()?;
    Ok(PluginOutput {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        elapsed: started.elapsed(),
    })
}

/// A pod: a network namespace made by the test (deleted on drop) and its CNI identity.
#[derive(Debug)]
pub struct Pod {
    /// Namespace name (`ip netns`).
    pub netns: String,
    /// Kubernetes pod name.
    pub name: String,
    /// Kubernetes namespace.
    pub namespace: String,
    /// Container id.
    pub container_id: String,
    /// Interface name inside.
    pub ifname: String,
}

impl Pod {
    /// Creates a namespace for pod `name` of node `node` (namespace `default`, ifname `eth0`).
    pub fn create(node: &Node, name: &str) -> Result<Pod> {
        let n = POD_COUNTER.fetch_add(1, Ordering::Relaxed);
        let netns_name = format!("{}-p{n}", node.netns());
        netns::create(&netns_name)?;
        Ok(Pod {
            netns: netns_name,
            name: name.to_string(),
            namespace: "default".to_string(),
            container_id: format!("{:016x}{n:08x}", std::process::id()),
            ifname: "eth0".to_string(),
        })
    }

    /// The namespace's path.
    pub fn path(&self) -> String {
        netns::path(&self.netns).display().to_string()
    }

    /// The plugin call wiring this pod.
    pub fn call(&self) -> PluginCall {
        PluginCall {
            container_id: Some(self.container_id.clone()),
            netns: Some(self.path()),
            ifname: Some(self.ifname.clone()),
            args: Some(format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={}",
                self.namespace, self.name
            )),
            config: None,
        }
    }

    /// Runs a command inside the pod.
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        netns::exec(&self.netns, args)
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = netns::delete(&self.netns);
    }
}

/// Pings `dst` from namespace `ns` (3 echo requests, all must be answered).
pub fn ping(ns: &str, dst: IpAddr) -> Result<()> {
    let dst = dst.to_string();
    netns::exec(ns, &["ping", "-c", "3", "-i", "0.2", "-W", "2", &dst])
        .map(drop)
        .with_context(|| format!("ping {dst} from netns {ns}"))
}

/// Opens a TCP listener on `server_ip` in namespace `server_ns`, connects from `client_ns`,
/// sends 256 KiB (segments at the path MTU) and reads them back echoed.
pub fn tcp_roundtrip(server_ns: &str, server_ip: IpAddr, client_ns: &str) -> Result<()> {
    let listener = netns::run_in(server_ns, move || TcpListener::bind((server_ip, 0)))??;
    listener.set_nonblocking(true)?;
    let addr: SocketAddr = listener.local_addr()?;
    let server = std::thread::spawn(move || -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let (mut stream, _) = loop {
            match listener.accept() {
                Ok(conn) => break conn,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        bail!("no connection to {addr}");
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(e.into()),
            }
        };
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut reader = stream.try_clone()?;
        std::io::copy(&mut reader, &mut stream)?;
        Ok(())
    });
    let mut client: TcpStream = netns::tcp_connect_in(client_ns, addr)
        .with_context(|| format!("tcp connect from netns {client_ns} to {addr}"))?;
    client.set_read_timeout(Some(Duration::from_secs(10)))?;
    let payload: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    let mut writer = client.try_clone()?;
    let data = payload.clone();
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        writer.write_all(&data)?;
        writer.shutdown(std::net::Shutdown::Write)
    });
    let mut back = Vec::new();
    std::io::Read::read_to_end(&mut client, &mut back)
        .with_context(|| format!("tcp echo from {addr} to netns {client_ns}"))?;
    sender
        .join()
        .map_err(|_| anyhow!("sender panicked"))?
        .context("sending")?;
    server.join().map_err(|_| anyhow!("server panicked"))??;
    if back != payload {
        bail!(
            "tcp echo via {addr}: got {} bytes back, expected {}",
            back.len(),
            payload.len()
        );
    }
    Ok(())
}

/// The cookie of a flow printed by `ovs-ofctl`.
fn cookie_of(flow: &str) -> Option<u64> {
    let hex = flow.split("cookie=0x").nth(1)?.split([',', ' ']).next()?;
    u64::from_str_radix(hex, 16).ok()
}

fn stop_child(child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// CNI config and bin dirs of a node whose pods come from a real container runtime: a test
/// directory (removed on drop) that the agent's `install-cni` fills and the runtime reads.
#[derive(Debug)]
pub struct CniDirs {
    dir: tempfile::TempDir,
    /// `cniConfDir`: where `install-cni` writes the conflist.
    pub conf: PathBuf,
    /// `cniBinDir`: where `install-cni` installs `weft` (and the chained plugins).
    pub bin: PathBuf,
}

impl CniDirs {
    /// Creates the (empty) dirs.
    pub fn new() -> Result<CniDirs> {
        let dir = tempfile::Builder::new().prefix("weft-cni-").tempdir()?;
        let conf = dir.path().join("net.d");
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&conf)?;
        std::fs::create_dir_all(&bin)?;
        Ok(CniDirs { dir, conf, bin })
    }

    /// The test directory holding both.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Agent config lines pointing `cniConfDir`/`cniBinDir` here, with `chained` plugins
    /// after Weft in the conflist.
    pub fn agent_config(&self, chained: &[&str]) -> String {
        format!(
            "cniConfDir: {}\ncniBinDir: {}\ncniChainedPlugins: [{}]\n",
            self.conf.display(),
            self.bin.display(),
            chained.join(", ")
        )
    }
}

/// Reads what a TCP server prints to a new connection from `client_ns` (until it closes).
pub fn tcp_read(client_ns: &str, addr: SocketAddr) -> Result<String> {
    let mut stream = netns::tcp_connect_in(client_ns, addr)
        .with_context(|| format!("tcp connect from netns {client_ns} to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut stream, &mut text)?;
    Ok(text)
}

impl Node {
    /// Fails unless nothing of any pod is left on the node: no host veth (`wf*`), no pod OVS
    /// port, no pod flow, no IPAM allocation, no hostPort DNAT chain of the chained `portmap`.
    pub fn assert_no_pod_state(&self) -> Result<()> {
        let links = self.links_with_prefix("wf")?;
        if !links.is_empty() {
            bail!("host veths left: {links:?}");
        }
        let ports = self.pod_ports()?;
        if !ports.is_empty() {
            bail!("pod ports left: {ports:?}");
        }
        let flows = self.pod_flows()?;
        if !flows.is_empty() {
            bail!("pod flows left: {flows:?}");
        }
        let ips = self.ipam_allocations()?;
        if !ips.is_empty() {
            bail!("IPs left: {ips:?}");
        }
        let nat = netns::exec(self.netns(), &["iptables-save", "-t", "nat"])?;
        if nat.lines().any(|l| l.starts_with("-A CNI-DN-")) {
            bail!("hostPort DNAT rules left:\n{nat}");
        }
        Ok(())
    }

    /// Runs the real `weft-agent install-cni` with the node's config inside its namespace
    /// (installing this build's plugin), plus `args`; returns what it printed (stdout+stderr).
    pub fn install_cni(&self, args: &[&str]) -> Result<String> {
        install_cni(self.netns(), &self.bins, &self.config, args)
    }
}

/// Runs the real `weft-agent --config CONFIG install-cni --plugin PLUGIN ARGS...` inside
/// `netns`; returns what it printed (stdout+stderr).
pub(crate) fn install_cni(
    netns: &str,
    bins: &Binaries,
    config: &Path,
    args: &[&str],
) -> Result<String> {
    let output = Command::new("ip")
        .args(["netns", "exec", netns])
        .arg(&bins.agent)
        .arg("--config")
        .arg(config)
        .arg("install-cni")
        .arg("--plugin")
        .arg(&bins.plugin)
        .args(args)
        .output()
        .context("cannot run weft-agent install-cni")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() {
        bail!("weft-agent install-cni failed ({}): {text}", output.status);
    }
    Ok(text)
}

impl Node {
    /// The pid of the running agent process, if it was started and not stopped (`ip netns exec`
    /// execs the agent in place, so this is the agent itself).
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(|agent| agent.0.id())
    }
}
