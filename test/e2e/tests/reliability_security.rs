//! Issue 7 security proofs:
//! - the agent's sockets (`cniSocket`, `apiSocket`) are 0600, owned by root, in 0700 root
//!   directories, and an unprivileged user cannot connect to them; a group- or world-writable
//!   socket directory is refused at start;
//! - the agent, the plugin and the flow library never execute external programs: their sources
//!   are scanned for process spawning (a lint that names the offending file and line);
//! - ARP and IPv6 neighbor-discovery spoofing from a pod is dropped end to end: a pod claiming
//!   another pod's or the gateway's address gets no answer from the pipeline's responders, and
//!   its forged announcements never reach (and so never poison the neighbour cache of) other
//!   pods. IP and MAC spoofing are covered by node_security.rs. A control sends the same forged
//!   packets with SpoofGuard bypassed for the spoofer and fails unless they get through.
//!
//! Needs `cargo build --workspace --bins` first (build/test does it).

use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use weft_e2e::node::{ping, Node, NodeOptions, Pod};
use weft_e2e::spoof::Bypass;

/// The MAC the pipeline answers ARP and ND with (docs/ovs-pipeline.md).
const VIRTUAL_MAC: &str = "02:77:65:66:74:01";

#[test]
fn agent_sockets_are_root_only() -> Result<()> {
    let node = Node::start(NodeOptions::new(&["10.82.0.0/24"]))?;
    let api_socket = node
        .cni_socket
        .parent()
        .context("socket dir")?
        .join("agent.sock");
    for socket in [&node.cni_socket, &api_socket] {
        let meta = std::fs::metadata(socket).with_context(|| format!("{}", socket.display()))?;
        let mode = meta.permissions().mode() & 0o777;
        ensure!(mode == 0o600, "{} has mode {mode:o}", socket.display());
        ensure!(
            meta.uid() == 0 && meta.gid() == 0,
            "{} is owned by {}:{}",
            socket.display(),
            meta.uid(),
            meta.gid()
        );
        let dir = std::fs::metadata(socket.parent().context("dir")?)?;
        ensure!(
            dir.permissions().mode() & 0o777 == 0o700 && dir.uid() == 0,
            "{} dir has mode {:o} owner {}",
            socket.display(),
            dir.permissions().mode() & 0o777,
            dir.uid()
        );
        // An unprivileged user (nobody) cannot connect; root can.
        let connect = "import socket,sys\ns=socket.socket(socket.AF_UNIX)\n\
                       try:\n  s.connect(sys.argv[1]); print('connected')\n\
                       except PermissionError: print('denied')\n";
        let path = socket.to_str().context("utf-8 path")?;
        let as_nobody = Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .args(["/usr/bin/python3", "-c", connect, path])
            .output()?;
        let said = String::from_utf8_lossy(&as_nobody.stdout);
        ensure!(
            said.trim() == "denied",
            "nobody connecting to {path}: {said} {}",
            String::from_utf8_lossy(&as_nobody.stderr)
        );
        let as_root = Command::new("/usr/bin/python3")
            .args(["-c", connect, path])
            .output()?;
        ensure!(
            String::from_utf8_lossy(&as_root.stdout).trim() == "connected",
            "root cannot connect to {path}"
        );
    }
    Ok(())
}

/// An existing socket directory others can write to is refused by the real agent at start,
/// with an error naming the directory and its mode, and nothing is created in it; once the
/// directory is private again the agent serves both sockets.
#[test]
fn agent_refuses_a_writable_socket_directory() -> Result<()> {
    let mut node = Node::start(NodeOptions::new(&["10.84.0.0/24"]))?;
    let run = node
        .cni_socket
        .parent()
        .context("socket dir")?
        .to_path_buf();
    node.stop_agent();
    for entry in std::fs::read_dir(&run)? {
        std::fs::remove_file(entry?.path())?;
    }
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o777))?;
    node.start_agent()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while node.agent_running() {
        ensure!(
            std::time::Instant::now() < deadline,
            "agent still runs with a 0777 socket directory; log:\n{}",
            node.agent_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let expected = format!(
        "cannot serve cni socket in directory {}: it has mode 0777",
        run.display()
    );
    let log = node.agent_log();
    ensure!(log.contains(&expected), "expected {expected:?} in:\n{log}");
    let left: Vec<_> = std::fs::read_dir(&run)?.collect();
    ensure!(left.is_empty(), "agent left {left:?} in {}", run.display());
    ensure!(
        std::fs::metadata(&run)?.permissions().mode() & 0o7777 == 0o777,
        "the directory's mode was changed"
    );

    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700))?;
    node.stop_agent();
    node.start_agent()?;
    node.wait_ready(Duration::from_secs(30))?;
    for name in ["cni.sock", "agent.sock"] {
        let mode = std::fs::metadata(run.join(name))?.permissions().mode() & 0o777;
        ensure!(mode == 0o600, "{name} has mode {mode:o}");
    }
    Ok(())
}

/// Process spawning in Rust source: `std::process::Command`, `tokio::process`, exec/fork/spawn
/// wrappers. Returns the matching pattern.
fn spawns_process(line: &str) -> Option<&'static str> {
    let code = line.split("//").next().unwrap_or("");
    const PATTERNS: [&str; 9] = [
        "process::Command",
        "tokio::process",
        "async_process",
        "unistd::exec",
        "unistd::fork",
        "execvp(",
        "posix_spawn",
        "duct::",
        "subprocess",
    ];
    if let Some(p) = PATTERNS.iter().find(|p| code.contains(*p)) {
        return Some(p);
    }
    // `use std::process::{Command, Stdio}` and the like.
    if code.contains("std::process::{") && code.contains("Command") {
        return Some("std::process::{.., Command}");
    }
    None
}

/// Files allowed to spawn processes, relative to the repository root. Empty: none is.
const SPAWN_ALLOWED: &[&str] = &[];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

#[test]
fn agent_plugin_and_flows_never_execute_programs() -> Result<()> {
    // The scanner recognises every form it must.
    for bad in [
        "use std::process::Command;",
        "let c = std::process::Command::new(\"ip\");",
        "use std::process::{Command, Stdio};",
        "tokio::process::Command::new(\"ovs-vsctl\")",
        "nix::unistd::execv(&path, &args)",
    ] {
        ensure!(spawns_process(bad).is_some(), "scanner misses {bad:?}");
    }
    for ok in [
        "use std::process::ExitCode;",
        "Command::Add => \"ADD\",",
        "// std::process::Command is not used here",
    ] {
        ensure!(spawns_process(ok).is_none(), "scanner flags {ok:?}");
    }

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = Vec::new();
    for dir in ["agent/src", "cni/src", "ovs-flows/src"] {
        rust_files(&root.join(dir), &mut files)?;
    }
    ensure!(files.len() > 20, "found only {} source files", files.len());
    let mut found = Vec::new();
    for file in &files {
        let rel = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .display()
            .to_string();
        if SPAWN_ALLOWED.contains(&rel.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(file)?;
        for (n, line) in text.lines().enumerate() {
            if let Some(pattern) = spawns_process(line) {
                found.push(format!("{rel}:{}: {pattern}: {}", n + 1, line.trim()));
            }
        }
    }
    ensure!(
        found.is_empty(),
        "the agent, plugin and flow library must not execute programs:\n{}",
        found.join("\n")
    );
    Ok(())
}

/// Sends forged ARP / neighbor-discovery frames from a pod's eth0 with a raw socket and counts
/// the answers addressed back to the claimed address within one second.
///
/// `arp OP SPA TPA DSTMAC` sends an ARP packet from the pod's own MAC; prints the number of ARP
/// replies whose sender is TPA and whose target is SPA. `ns SRC TARGET` sends a neighbor
/// solicitation from SRC; prints the number of advertisements for TARGET sent to SRC. `na
/// TARGET` sends an unsolicited, overriding advertisement for TARGET to all nodes; prints 0.
const RAW_FRAMES: &str = r#"
import socket, struct, sys, time
IF = 'eth0'
own = bytes(int(x, 16) for x in open('/sys/class/net/eth0/address').read().strip().split(':'))
def mac(s): return bytes(int(x, 16) for x in s.split(':'))
def count(sock, match):
    sock.settimeout(0.05); end = time.time() + 1.0; n = 0
    while time.time() < end:
        try: d = sock.recv(4096)
        except socket.timeout: continue
        if match(d): n += 1
    return n
def csum(data):
    if len(data) % 2: data += b'\0'
    s = sum(struct.unpack('!%dH' % (len(data) // 2), data))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
def icmp6(src, dst, body):
    pseudo = src + dst + struct.pack('!I3xB', len(body), 58)
    c = csum(pseudo + body)
    body = body[:2] + struct.pack('!H', c) + body[4:]
    return struct.pack('!IHBB', 0x60000000, len(body), 58, 255) + src + dst + body
mode = sys.argv[1]
if mode == 'arp':
    op, spa, tpa, dst = int(sys.argv[2]), socket.inet_aton(sys.argv[3]), socket.inet_aton(sys.argv[4]), mac(sys.argv[5])
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806)); s.bind((IF, 0x0806))
    tha = b'\0' * 6 if op == 1 else dst
    s.send(dst + own + b'\x08\x06' + struct.pack('!HHBBH', 1, 0x0800, 6, 4, op) + own + spa + tha + tpa)
    print(count(s, lambda d: d[12:14] == b'\x08\x06' and d[20:22] == b'\0\x02' and d[28:32] == tpa and d[38:42] == spa))
else:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x86dd)); s.bind((IF, 0x86dd))
    if mode == 'ns':
        src, target = socket.inet_pton(socket.AF_INET6, sys.argv[2]), socket.inet_pton(socket.AF_INET6, sys.argv[3])
        dst = bytes.fromhex('ff0200000000000000000001ff') + target[13:]
        body = struct.pack('!BBHI', 135, 0, 0, 0) + target + b'\x01\x01' + own
        s.send(b'\x33\x33' + dst[12:] + own + b'\x86\xdd' + icmp6(src, dst, body))
        print(count(s, lambda d: d[12:14] == b'\x86\xdd' and d[20] == 58 and d[54] == 136 and d[62:78] == target and d[38:54] == src))
    else:
        target = socket.inet_pton(socket.AF_INET6, sys.argv[2])
        src = target
        dst = bytes.fromhex('ff020000000000000000000000000001')
        body = struct.pack('!BBHI', 136, 0, 0, 0x20000000) + target + b'\x02\x01' + own
        s.send(b'\x33\x33\x00\x00\x00\x01' + own + b'\x86\xdd' + icmp6(src, dst, body))
        print(0)
"#;

fn raw(pod: &Pod, args: &[&str]) -> Result<u32> {
    let mut all = vec!["python3", "-c", RAW_FRAMES];
    all.extend_from_slice(args);
    let out = pod.exec(&all)?;
    out.trim()
        .parse()
        .with_context(|| format!("raw frame helper printed {out:?}"))
}

fn addr(result: &Value, v4: bool) -> Result<(IpAddr, IpAddr)> {
    result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| {
            let a: IpAddr = ip["address"].as_str()?.split('/').next()?.parse().ok()?;
            let g: IpAddr = ip["gateway"].as_str()?.parse().ok()?;
            Some((a, g))
        })
        .find(|(a, _)| a.is_ipv4() == v4)
        .context("address of that family in the result")
}

/// The link-layer address `pod` has cached for `ip`, if any.
fn neighbour(pod: &Pod, ip: IpAddr) -> Result<Option<String>> {
    let out = pod.exec(&["ip", "neigh", "show", &ip.to_string(), "dev", "eth0"])?;
    Ok(out
        .split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .map(str::to_string))
}

/// What a spoofer's forged ARP and neighbor discovery achieved on a node.
#[derive(Debug)]
struct Forged {
    /// Each forged request (claiming another pod's or the gateway's address) and how many
    /// answers it got back.
    answers: Vec<(String, u32)>,
    /// The observer's neighbour entries for the gateway and the victim afterwards: each must
    /// still be the virtual MAC unless a forged announcement reached the observer.
    cache: Vec<(IpAddr, Option<String>)>,
}

impl Forged {
    /// The cache entries that no longer point at the virtual MAC.
    fn poisoned(&self) -> Vec<&(IpAddr, Option<String>)> {
        self.cache
            .iter()
            .filter(|(_, lladdr)| lladdr.as_deref() != Some(VIRTUAL_MAC))
            .collect()
    }
}

/// Three pods on one dual-stack node: the observer, the victim and the spoofer.
struct Scene {
    node: Node,
    observer: Pod,
    victim: Pod,
    spoofer: Pod,
    /// The observer's, victim's and spoofer's (IPv4, IPv6) addresses and the gateway's.
    a: (IpAddr, IpAddr),
    b: (IpAddr, IpAddr),
    c: (IpAddr, IpAddr),
    gw: (IpAddr, IpAddr),
    /// The host veths of the observer and the spoofer.
    host_if: (String, String),
}

impl Scene {
    fn start(cidrs: &[&str]) -> Result<Scene> {
        let node = Node::start(NodeOptions::new(cidrs))?;
        let observer = Pod::create(&node, "observer")?;
        let victim = Pod::create(&node, "victim")?;
        let spoofer = Pod::create(&node, "spoofer")?;
        let (ra, rb, rc) = (
            node.add(&observer)?,
            node.add(&victim)?,
            node.add(&spoofer)?,
        );
        let ((a4, gw4), (a6, gw6)) = (addr(&ra, true)?, addr(&ra, false)?);
        let host = |r: &Value| -> Result<String> {
            Ok(r["interfaces"][0]["name"]
                .as_str()
                .context("host veth in the result")?
                .to_string())
        };
        Ok(Scene {
            a: (a4, a6),
            b: (addr(&rb, true)?.0, addr(&rb, false)?.0),
            c: (addr(&rc, true)?.0, addr(&rc, false)?.0),
            gw: (gw4, gw6),
            host_if: (host(&ra)?, host(&rc)?),
            node,
            observer,
            victim,
            spoofer,
        })
    }

    /// The spoofer forges ARP and neighbor discovery: requests and solicitations claiming the
    /// victim's, the observer's and the gateway's addresses, and gratuitous announcements for
    /// the gateway's and the victim's. Honest requests from the spoofer's own addresses must be
    /// answered (else nothing was measured). The real test and its control both run this.
    fn forge(&self) -> Result<Forged> {
        let (a, c) = (&self.observer, &self.spoofer);
        let watched = [self.gw.0, self.gw.1, self.b.0, self.b.1];
        // The observer resolves the gateway and the victim (the pipeline answers with its MAC).
        for dst in watched {
            ping(&a.netns, dst)?;
        }
        for ip in watched {
            let lladdr = neighbour(a, ip)?;
            ensure!(
                lladdr.as_deref() == Some(VIRTUAL_MAC),
                "observer resolved {ip} to {lladdr:?}"
            );
        }
        // Past the kernel's ARP locktime (1 s), so a forged ARP reaching the observer would
        // update its cache.
        std::thread::sleep(Duration::from_millis(1200));

        let broadcast = "ff:ff:ff:ff:ff:ff";
        let [a4, b4, c4, gw4] = [self.a.0, self.b.0, self.c.0, self.gw.0].map(|ip| ip.to_string());
        let [a6, b6, c6, gw6] = [self.a.1, self.b.1, self.c.1, self.gw.1].map(|ip| ip.to_string());
        let mut answers = Vec::new();
        ensure!(
            raw(c, &["arp", "1", &c4, &a4, broadcast])? >= 1,
            "honest ARP request from the spoofer was not answered"
        );
        for claimed in [&b4, &gw4] {
            let n = raw(c, &["arp", "1", claimed, &a4, broadcast])?;
            answers.push((format!("ARP request from {claimed} for {a4}"), n));
        }
        // Gratuitous replies and requests claiming the gateway's and the victim's addresses.
        for claimed in [&gw4, &b4] {
            raw(c, &["arp", "2", claimed, claimed, broadcast])?;
            raw(c, &["arp", "1", claimed, &a4, broadcast])?;
        }
        ensure!(
            raw(c, &["ns", &c6, &gw6])? >= 1,
            "honest neighbor solicitation from the spoofer was not answered"
        );
        for claimed in [&b6, &a6] {
            let n = raw(c, &["ns", claimed, &gw6])?;
            answers.push((format!("solicitation from {claimed} for {gw6}"), n));
        }
        for claimed in [&gw6, &b6] {
            raw(c, &["na", claimed])?;
        }
        let cache = watched
            .into_iter()
            .map(|ip| Ok((ip, neighbour(a, ip)?)))
            .collect::<Result<_>>()?;
        Ok(Forged { answers, cache })
    }
}

#[test]
fn spoofguard_drops_arp_and_nd_spoofing() -> Result<()> {
    let scene = Scene::start(&["10.83.0.0/24", "fd00:83::/64"])?;
    let forged = scene.forge()?;
    eprintln!("with SpoofGuard: {forged:?}");
    for (what, n) in &forged.answers {
        ensure!(*n == 0, "{what} was answered {n} times");
    }
    ensure!(
        forged.poisoned().is_empty(),
        "forged announcements changed the observer's neighbour cache: {:?}",
        forged.poisoned()
    );
    // And everybody still talks.
    let (a, c) = (&scene.observer, &scene.spoofer);
    for dst in [scene.gw.0, scene.gw.1, scene.b.0, scene.b.1] {
        ping(&a.netns, dst)?;
    }
    ping(&c.netns, scene.a.0)?;
    ping(&c.netns, scene.a.1)?;

    // Control 1: the same forged packets through the pipeline without SpoofGuard for the
    // spoofer are answered, so the answer checks above can fail. The caches stay clean: the
    // pipeline never forwards ARP or neighbor discovery, whatever SpoofGuard does.
    let bypass = Bypass::install(&scene.node, &scene.host_if.1, None)?;
    let control = scene.forge()?;
    bypass.check_installed()?;
    eprintln!("control without SpoofGuard: {control:?}");
    for (what, n) in &control.answers {
        ensure!(
            *n >= 1,
            "control: {what} was not answered without SpoofGuard"
        );
    }
    ensure!(
        control.poisoned().is_empty(),
        "control: without SpoofGuard the pipeline forwarded announcements: {:?}",
        control.poisoned()
    );
    // Control 2: a pipeline that also forwards the spoofer's announcements to the observer
    // lets them poison every watched entry, so the cache check above can fail too.
    let bypass = Bypass::install(&scene.node, &scene.host_if.1, Some(&scene.host_if.0))?;
    let control = scene.forge()?;
    bypass.check_installed()?;
    eprintln!("control forwarding announcements: {control:?}");
    ensure!(
        control.poisoned().len() == control.cache.len(),
        "control: forwarded forged announcements left the observer's cache as it was: {:?}",
        control.cache
    );
    for pod in [&scene.observer, &scene.victim, &scene.spoofer] {
        scene.node.del(pod)?;
    }
    Ok(())
}

/// The ClusterRole in the shipped manifest grants exactly what docs/security.md lists rule by
/// rule: adding a permission means documenting why (and changing this list).
#[test]
fn manifest_rbac_is_least_privilege() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(root.join("build/yamls/weft.yml"))?;
    let mut roles = Vec::new();
    for doc in text.split("\n---") {
        let value: serde_yaml::Value = serde_yaml::from_str(doc)?;
        let kind = value["kind"].as_str().unwrap_or_default();
        if kind == "ClusterRole" || kind == "Role" {
            roles.push(value);
        }
    }
    ensure!(
        roles.len() == 1,
        "expected one (Cluster)Role, found {}",
        roles.len()
    );
    let mut granted = Vec::new();
    for rule in roles[0]["rules"].as_sequence().context("rules")? {
        let list = |key: &str| -> Vec<String> {
            rule[key]
                .as_sequence()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        };
        for group in list("apiGroups") {
            for resource in list("resources") {
                for verb in list("verbs") {
                    granted.push(format!("{group}/{resource}:{verb}"));
                }
            }
        }
    }
    granted.sort();
    let expected = [
        "/namespaces:list",
        "/namespaces:watch",
        "/nodes:list",
        "/nodes:patch",
        "/nodes:watch",
        "/pods:list",
        "/pods:watch",
        "events.k8s.io/events:create",
        "events.k8s.io/events:patch",
        "networking.k8s.io/networkpolicies:list",
        "networking.k8s.io/networkpolicies:watch",
    ];
    ensure!(
        granted == expected,
        "ClusterRole grants {granted:?}, docs/security.md documents {expected:?}"
    );
    let doc = std::fs::read_to_string(root.join("docs/security.md"))?;
    for rule in expected {
        ensure!(
            doc.contains(rule),
            "docs/security.md does not explain {rule}"
        );
    }
    Ok(())
}
