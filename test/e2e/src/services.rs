//! Kubernetes Services on a test cluster: kube-proxy's rules on every node
//! ([`crate::kubeproxy`]), and backends that tell each client the source address they saw.
//!
//! - [`Backend`]: a TCP server and a UDP server (DNS-like: one datagram in, one out) on a fixed
//!   port in a pod's namespace. Each answers `from IP` with the peer address it saw, so one
//!   exchange proves data went through both ways, and tells which source the server saw.
//! - [`tcp_ask`] / [`udp_ask`]: the client side. TCP only connects when the SYN-ACK comes from
//!   the address the client dialed (the Service address); the UDP socket is connected, so the
//!   kernel only delivers an answer whose source is the Service address and port.
//!
//! Servers stop (threads joined) when the [`Backend`] drops; their sockets live in the pod's
//! namespace, which the pod deletes.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::cluster::Cluster;
use crate::kubeproxy::{self, EndpointSlice, ProxyConfig, Service};
use crate::netns;

/// The cluster CIDR kube-proxy is started with (`--cluster-cidr`), per family: every node's pod
/// CIDR (`10.244.i.0/24`, `fd00:10:244:i::/64`) lies inside.
pub const CLUSTER_CIDR_V4: &str = "10.244.0.0/16";
/// IPv6 `--cluster-cidr`.
pub const CLUSTER_CIDR_V6: &str = "fd00:10:244::/48";

/// kube-proxy's `--proxy-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    /// `iptables` (iptables-nft here).
    Iptables,
    /// `nftables`.
    Nftables,
}

/// Writes kube-proxy's rules for `services`/`slices` on every node of `cluster` (each node its
/// own `--hostname-override`), for IPv4 and, with `v6`, IPv6, in `mode`.
pub fn program_kube_proxy(
    cluster: &Cluster,
    services: &[Service],
    slices: &[EndpointSlice],
    v6: bool,
    mode: ProxyMode,
) -> Result<()> {
    for node in &cluster.nodes {
        let mut families = vec![(false, CLUSTER_CIDR_V4)];
        if v6 {
            families.push((true, CLUSTER_CIDR_V6));
        }
        for (is_v6, cidr) in families {
            let cfg = ProxyConfig {
                node_name: node.name.clone(),
                cluster_cidr: cidr.parse()?,
            };
            match mode {
                ProxyMode::Iptables => {
                    let rules = kubeproxy::rules(&cfg, services, slices);
                    kubeproxy::apply(node.netns(), is_v6, &rules)
                }
                ProxyMode::Nftables => {
                    let script = kubeproxy::nft_rules(&cfg, services, slices);
                    kubeproxy::apply_nft(node.netns(), &script)
                }
            }
            .with_context(|| format!("kube-proxy {mode:?} rules on {}", node.name))?;
        }
    }
    Ok(())
}

/// A backend pod's servers.
pub struct Backend {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Backend {
    /// Starts a TCP and a UDP server on `port` (every address of both families) in `ns`.
    pub fn start(ns: &str, port: u16) -> Result<Backend> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tcp, udp) = netns::run_in(ns, move || -> std::io::Result<_> {
            let tcp = TcpListener::bind((Ipv6Addr::UNSPECIFIED, port))
                .or_else(|_| TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)))?;
            let udp = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, port))
                .or_else(|_| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)))?;
            Ok((tcp, udp))
        })??;
        tcp.set_nonblocking(true)?;
        udp.set_read_timeout(Some(Duration::from_millis(100)))?;
        let s = Arc::clone(&stop);
        let tcp_thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match tcp.accept() {
                    Ok((stream, peer)) => {
                        std::thread::spawn(move || serve_tcp(stream, peer));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        let s = Arc::clone(&stop);
        let udp_thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !s.load(Ordering::Relaxed) {
                if let Ok((_, peer)) = udp.recv_from(&mut buf) {
                    let _ = udp.send_to(answer(peer).as_bytes(), peer);
                }
            }
        });
        Ok(Backend {
            stop,
            threads: vec![tcp_thread, udp_thread],
        })
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// `from IP\n`, the peer's address with IPv4-mapped IPv6 unmapped.
fn answer(peer: SocketAddr) -> String {
    let ip = match peer.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        ip => ip,
    };
    format!("from {ip}\n")
}

/// Answers every line with [`answer`] until the client closes (a long-lived connection asks
/// many times).
fn serve_tcp(stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
        if writer.write_all(answer(peer).as_bytes()).is_err() {
            return;
        }
        line.clear();
    }
}

fn parse_answer(text: &str) -> Result<IpAddr> {
    text.trim()
        .strip_prefix("from ")
        .and_then(|ip| ip.parse().ok())
        .ok_or_else(|| anyhow!("unexpected answer {text:?}"))
}

/// A TCP connection from `client_ns` to `addr` (a Service or pod address) that asks the
/// backend which source it saw, once per [`TcpSession::ask`].
pub struct TcpSession {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    addr: SocketAddr,
}

impl TcpSession {
    /// Connects (3 s timeout).
    pub fn connect(client_ns: &str, addr: SocketAddr) -> Result<TcpSession> {
        let stream = netns::tcp_connect_in(client_ns, addr)
            .map_err(|e| anyhow!("tcp connect from netns {client_ns} to {addr}: {e}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        let writer = stream.try_clone()?;
        Ok(TcpSession {
            reader: BufReader::new(stream),
            writer,
            addr,
        })
    }

    /// One request/answer: the source the backend saw.
    pub fn ask(&mut self) -> Result<IpAddr> {
        self.writer
            .write_all(b"who\n")
            .with_context(|| format!("tcp send to {}", self.addr))?;
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .with_context(|| format!("tcp answer from {}", self.addr))?;
        if n == 0 {
            bail!("tcp connection to {} closed", self.addr);
        }
        parse_answer(&line)
    }
}

/// One TCP connection from `client_ns` to `addr`: the source the backend saw.
pub fn tcp_ask(client_ns: &str, addr: SocketAddr) -> Result<IpAddr> {
    TcpSession::connect(client_ns, addr)?.ask()
}

/// One datagram from `client_ns` to `addr` on a connected UDP socket (only an answer from
/// `addr` itself is delivered), 3 tries of 1 s: the source the backend saw.
pub fn udp_ask(client_ns: &str, addr: SocketAddr) -> Result<IpAddr> {
    let socket = netns::run_in(client_ns, move || -> std::io::Result<UdpSocket> {
        let any: SocketAddr = if addr.is_ipv6() {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let s = UdpSocket::bind(any)?;
        s.connect(addr)?;
        Ok(s)
    })??;
    socket.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut buf = [0u8; 512];
    for _ in 0..3 {
        socket.send(b"who\n")?;
        if let Ok(n) = socket.recv(&mut buf) {
            return parse_answer(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    bail!("no udp answer from {addr} to netns {client_ns}")
}
