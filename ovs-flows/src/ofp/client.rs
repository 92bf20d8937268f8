//! The public OpenFlow client: requests, events, reconnection and the replay hook.
//!
//! Guarantees:
//! - [`Client::bundle`] is all-or-nothing: either every flow-mod is applied in one atomic
//!   commit, or the bundle is discarded and the error names every failing flow-mod (its index
//!   in the bundle and its `ovs-ofctl` text).
//! - Every request completes within [`ClientConfig::request_timeout`]. A request written to a
//!   connection that then drops fails with [`ClientError::Disconnected`] (it may or may not
//!   have been applied). A request issued while disconnected waits, inside the same timeout,
//!   for the reconnection and for the reconnect hook to finish; then it is sent.
//! - On every reconnection (not the first connection) the hook set with
//!   [`Client::on_reconnect`] runs with a client of its own that bypasses the wait, before any
//!   other request is sent.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use thiserror::Error;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::{info, warn};

use super::conn::{self, ConnError, Counters, Exchange, Lanes, SessionConfig, SessionEnd};
use super::endpoint::Endpoint;
use super::messages::{
    decode_flow_descs, FlowEntry, FlowMod, FlowStatsRequest, PacketIn, PacketOut, PortStatus,
};
use super::ofperr::OfpError;
use super::wire::{
    self, bundle_ctrl, msg_type, BundleCtrl, Features, Frame, MultipartReply, WireError,
    CONTROLLER_MAX_LEN_NO_BUFFER,
};

/// Keepalive settings: probe a silent peer, drop it if it stays silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Send an echo request after this much silence from the switch.
    pub interval: Duration,
    /// Declare the switch dead if nothing arrives this long after the echo request.
    pub timeout: Duration,
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// How long [`Client::connect`] keeps retrying the first connection.
    pub connect_timeout: Duration,
    /// Limit for hello + features on each connection.
    pub handshake_timeout: Duration,
    /// Limit for each request, including any wait for a reconnection.
    pub request_timeout: Duration,
    /// First reconnection delay; doubles per failed attempt.
    pub min_backoff: Duration,
    /// Cap of the reconnection delay.
    pub max_backoff: Duration,
    /// Our own echo keepalive (`None`: rely on the switch's probes and socket errors).
    pub keepalive: Option<Keepalive>,
    /// Ask the switch for packet-in and port-status messages. On the management socket OVS
    /// sends asynchronous messages only to connections that set a nonzero miss-send length;
    /// this client sets it to "no buffer" (whole packets).
    pub async_messages: bool,
    /// Limit for the reconnect hook; normal requests resume after it even if the hook hangs.
    pub hook_timeout: Duration,
    /// Capacity of the event broadcast channel (slow subscribers lose the oldest events).
    pub event_capacity: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            keepalive: Some(Keepalive {
                interval: Duration::from_secs(5),
                timeout: Duration::from_secs(10),
            }),
            async_messages: true,
            hook_timeout: Duration::from_secs(60),
            event_capacity: 1024,
        }
    }
}

/// Something the switch or the connection reports without being asked.
#[derive(Debug, Clone)]
pub enum Event {
    /// A connection completed its handshake.
    Connected(Features),
    /// Normal requests flow again (after the reconnect hook, if any).
    Ready,
    /// The connection failed; the client reconnects.
    Disconnected(ConnError),
    /// A packet sent to the controller.
    PacketIn(PacketIn),
    /// A port was added, removed or changed.
    PortStatus(PortStatus),
    /// An error whose xid matches no pending request.
    UnsolicitedError(OfpError),
}

/// When the switch reported a bundled flow-mod's failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureStage {
    /// When the flow-mod was sent or added to the bundle (OVS: decoding and validation that needs no
    /// switch state, e.g. a bad match prerequisite or a goto_table backwards).
    Add,
    /// When the bundle was committed (OVS: checks against switch state, e.g. a missing group).
    Commit,
}

/// One failing flow-mod of a rejected bundle or batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleFailure {
    /// Index of the flow-mod in the bundle.
    pub index: usize,
    /// When the switch reported it.
    pub stage: FailureStage,
    /// The flow-mod in `ovs-ofctl` syntax.
    pub flow_mod: String,
    /// The switch's error.
    pub error: OfpError,
}

impl fmt::Display for BundleFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "flow #{} `{}`: {}",
            self.index, self.flow_mod, self.error
        )
    }
}

fn describe_failures(failures: &[BundleFailure]) -> String {
    let mut text = failures
        .iter()
        .take(3)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    if failures.len() > 3 {
        text.push_str(&format!(" and {} more", failures.len() - 3));
    }
    text
}

/// Errors of client requests.
#[derive(Debug, Clone, Error)]
pub enum ClientError {
    /// [`Client::connect`] could not complete a first handshake.
    #[error("cannot connect to openflow endpoint {endpoint}: {source}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// The last failure.
        source: ConnError,
    },
    /// The connection dropped while the request was in flight.
    #[error("openflow {request} interrupted: {source}")]
    Disconnected {
        /// The request.
        request: &'static str,
        /// Why the connection dropped.
        source: ConnError,
    },
    /// The request did not complete within the request timeout.
    #[error("openflow {request} timed out after {after:?}")]
    Timeout {
        /// The request.
        request: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// The switch rejected the request.
    #[error("switch rejected {request}: {error}")]
    Rejected {
        /// The request (a flow-mod in `ovs-ofctl` syntax).
        request: String,
        /// The switch's error.
        error: OfpError,
    },
    /// The switch rejected flow-mods of a bundle; the bundle was discarded, nothing changed.
    #[error("bundle of {size} flow mods rejected, nothing changed: {}", describe_failures(.failures))]
    BundleRejected {
        /// Number of flow-mods in the bundle.
        size: usize,
        /// Every failing flow-mod the switch named.
        failures: Vec<BundleFailure>,
    },
    /// Some flow-mods of a non-atomic batch failed (the others were applied).
    #[error("{} of {size} flow mods rejected: {}", .failures.len(), describe_failures(.failures))]
    BatchRejected {
        /// Number of flow-mods in the batch.
        size: usize,
        /// Every failing flow-mod.
        failures: Vec<BundleFailure>,
    },
    /// A request could not be encoded.
    #[error("cannot encode {request}: {source}")]
    Encode {
        /// The request.
        request: String,
        /// Why.
        source: WireError,
    },
    /// A reply could not be decoded.
    #[error("malformed reply to openflow {request}: {source}")]
    BadReply {
        /// The request.
        request: &'static str,
        /// Why.
        source: WireError,
    },
    /// The switch answered with an unexpected message.
    #[error("unexpected reply to openflow {request}: message type {msg_type}")]
    UnexpectedReply {
        /// The request.
        request: &'static str,
        /// The reply's message type.
        msg_type: u8,
    },
    /// The client's connection task is gone.
    #[error("openflow client is shut down")]
    Shutdown,
}

/// Connection counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Successful handshakes (1 + reconnections).
    pub connects: u64,
    /// Echo requests from the switch answered.
    pub echo_requests_answered: u64,
    /// Keepalive echo requests sent.
    pub echo_requests_sent: u64,
    /// Errors that matched no request.
    pub unsolicited_errors: u64,
}

type HookFuture = Pin<Box<dyn Future<Output = Result<(), ClientError>> + Send>>;
type Hook = Arc<dyn Fn(Client) -> HookFuture + Send + Sync>;

struct Shared {
    endpoint: String,
    config: ClientConfig,
    xids: Arc<AtomicU32>,
    bundle_ids: AtomicU32,
    counters: Arc<Counters>,
    events: broadcast::Sender<Event>,
    features: Mutex<Option<Features>>,
    /// The last connection failure (reported if the first connection never succeeds).
    last_error: Mutex<Option<ConnError>>,
    connected: watch::Sender<bool>,
    hook: Mutex<Option<Hook>>,
}

struct Inner {
    shared: Arc<Shared>,
    normal: mpsc::Sender<Exchange>,
    priority: mpsc::Sender<Exchange>,
    /// Dropping the last client drops this and stops the connection task.
    _shutdown: oneshot::Sender<()>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lane {
    Normal,
    Priority,
}

/// A handle to one OpenFlow connection (cheap to clone; the connection closes when the last
/// clone is dropped).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    lane: Lane,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.inner.shared.endpoint)
            .field("lane", &self.lane)
            .finish()
    }
}

impl Client {
    /// Connects and completes a first handshake, retrying with backoff for up to
    /// `connect_timeout` (a peer that refuses OpenFlow 1.5 fails at once). The returned
    /// client reconnects by itself afterwards.
    pub async fn connect(endpoint: Endpoint, config: ClientConfig) -> Result<Client, ClientError> {
        let (events, _) = broadcast::channel(config.event_capacity.max(1));
        let (connected, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            endpoint: endpoint.to_string(),
            config: config.clone(),
            xids: Arc::new(AtomicU32::new(1)),
            bundle_ids: AtomicU32::new(1),
            counters: Arc::new(Counters::default()),
            events,
            features: Mutex::new(None),
            last_error: Mutex::new(None),
            connected,
            hook: Mutex::new(None),
        });
        let (normal_tx, normal_rx) = mpsc::channel(1024);
        let (priority_tx, priority_rx) = mpsc::channel(1024);
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let inner = Arc::new(Inner {
            shared: shared.clone(),
            normal: normal_tx,
            priority: priority_tx,
            _shutdown: shutdown_tx,
        });
        let (first_tx, first_rx) = oneshot::channel();
        let supervisor = Supervisor {
            endpoint,
            shared: shared.clone(),
            inner: Arc::downgrade(&inner),
            normal: normal_rx,
            priority: priority_rx,
            shutdown: shutdown_rx,
            first: Some(first_tx),
        };
        tokio::spawn(supervisor.run());
        let client = Client {
            inner,
            lane: Lane::Normal,
        };
        match tokio::time::timeout(config.connect_timeout, first_rx).await {
            Ok(Ok(Ok(()))) => Ok(client),
            Ok(Ok(Err(source))) => Err(ClientError::Connect {
                endpoint: shared.endpoint.clone(),
                source,
            }),
            Ok(Err(_)) => Err(ClientError::Shutdown),
            Err(_) => Err(ClientError::Connect {
                endpoint: shared.endpoint.clone(),
                source: lock(&shared.last_error)
                    .clone()
                    .unwrap_or(ConnError::HandshakeTimeout(config.connect_timeout)),
            }),
        }
    }

    /// Subscribes to packet-ins, port-status messages and connection events.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.shared.events.subscribe()
    }

    /// Sets the hook run after every reconnection (not the first connection), before normal
    /// requests resume. The hook receives a client whose requests bypass that wait; use it
    /// only inside the hook. A failing hook is logged and normal requests resume.
    pub fn on_reconnect<F, Fut>(&self, hook: F)
    where
        F: Fn(Client) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ClientError>> + Send + 'static,
    {
        let hook: Hook = Arc::new(move |client| Box::pin(hook(client)));
        *lock(&self.inner.shared.hook) = Some(hook);
    }

    /// The features of the current (or last) connection.
    pub fn features(&self) -> Option<Features> {
        *lock(&self.inner.shared.features)
    }

    /// Whether a connection is established.
    pub fn is_connected(&self) -> bool {
        *self.inner.shared.connected.borrow()
    }

    /// Connection counters.
    pub fn stats(&self) -> ClientStats {
        let c = &self.inner.shared.counters;
        ClientStats {
            connects: c.connects.load(Ordering::Relaxed),
            echo_requests_answered: c.echo_requests_answered.load(Ordering::Relaxed),
            echo_requests_sent: c.echo_requests_sent.load(Ordering::Relaxed),
            unsolicited_errors: c.unsolicited_errors.load(Ordering::Relaxed),
        }
    }

    /// Sends an echo request and returns the payload the switch echoed back.
    pub async fn echo(&self, data: &[u8]) -> Result<Vec<u8>, ClientError> {
        const REQ: &str = "echo";
        let xid = self.xids(1);
        let mut out = Vec::new();
        wire::encode_echo(&mut out, msg_type::ECHO_REQUEST, xid, data).map_err(|source| {
            ClientError::Encode {
                request: REQ.into(),
                source,
            }
        })?;
        let frames = self.exchange(REQ, out, Vec::new(), xid).await?;
        let frame = final_frame(REQ, &frames, xid)?;
        expect_type(REQ, frame, msg_type::ECHO_REPLY)?;
        Ok(frame.body.to_vec())
    }

    /// Sends a barrier and waits for its reply: every earlier request has been processed.
    pub async fn barrier(&self) -> Result<(), ClientError> {
        const REQ: &str = "barrier";
        let xid = self.xids(1);
        let mut out = Vec::new();
        wire::encode_empty(&mut out, msg_type::BARRIER_REQUEST, xid);
        let frames = self.exchange(REQ, out, Vec::new(), xid).await?;
        expect_type(
            REQ,
            final_frame(REQ, &frames, xid)?,
            msg_type::BARRIER_REPLY,
        )
    }

    /// Applies one flow-mod and waits until the switch has processed it (flow-mod + barrier).
    pub async fn flow_mod(&self, flow_mod: &FlowMod) -> Result<(), ClientError> {
        match self.flow_mods(std::slice::from_ref(flow_mod)).await {
            Err(ClientError::BatchRejected { failures, .. }) => {
                let failure = failures.into_iter().next();
                Err(
                    failure.map_or(ClientError::Shutdown, |f| ClientError::Rejected {
                        request: f.flow_mod,
                        error: f.error,
                    }),
                )
            }
            other => other,
        }
    }

    /// Applies flow-mods one after the other, pipelined, NOT atomically: failing flow-mods
    /// are reported (all of them) and the others stay applied. Use [`Client::bundle`] for
    /// all-or-nothing.
    pub async fn flow_mods(&self, flow_mods: &[FlowMod]) -> Result<(), ClientError> {
        const REQ: &str = "flow mods";
        let n = flow_mods.len();
        let base = self.xids(n as u32 + 1);
        let mut out = Vec::with_capacity(n * 128 + 8);
        let mut xids = Vec::with_capacity(n);
        for (i, fm) in flow_mods.iter().enumerate() {
            let xid = base.wrapping_add(i as u32);
            fm.encode(&mut out, xid)
                .map_err(|source| encode_error(i, fm, source))?;
            xids.push(xid);
        }
        let barrier = base.wrapping_add(n as u32);
        wire::encode_empty(&mut out, msg_type::BARRIER_REQUEST, barrier);
        let frames = self.exchange(REQ, out, xids, barrier).await?;
        let mut failures = Vec::new();
        for frame in &frames {
            if frame.header.xid == barrier {
                expect_type(REQ, frame, msg_type::BARRIER_REPLY)?;
                continue;
            }
            let index = frame.header.xid.wrapping_sub(base) as usize;
            if let (Some(fm), msg_type::ERROR) = (flow_mods.get(index), frame.header.msg_type) {
                failures.push(failure(REQ, FailureStage::Add, index, fm, frame)?);
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(ClientError::BatchRejected { size: n, failures })
        }
    }

    /// Applies flow-mods atomically in one OpenFlow 1.5 bundle (flags ATOMIC | ORDERED):
    /// open, every flow-mod added without waiting, a barrier; if the switch rejected none of
    /// them, commit. If any add or the commit fails, nothing changes on the switch and the
    /// error names every flow-mod the switch rejected.
    pub async fn bundle(&self, flow_mods: &[FlowMod]) -> Result<(), ClientError> {
        const REQ: &str = "bundle";
        let n = flow_mods.len();
        if n == 0 {
            return Ok(());
        }
        let bundle_id = self.inner.shared.bundle_ids.fetch_add(1, Ordering::Relaxed);
        let flags = bundle_ctrl::FLAG_ATOMIC | bundle_ctrl::FLAG_ORDERED;
        // xids: base..base+n for the adds, then open, barrier, commit/discard.
        let base = self.xids(n as u32 + 3);
        let open = base.wrapping_add(n as u32);
        let barrier = open.wrapping_add(1);
        let close = barrier.wrapping_add(1);

        let mut out = Vec::with_capacity(n * 144 + 64);
        wire::encode_bundle_ctrl(&mut out, open, bundle_id, bundle_ctrl::OPEN_REQUEST, flags);
        let mut xids = Vec::with_capacity(n + 1);
        xids.push(open);
        for (i, fm) in flow_mods.iter().enumerate() {
            let xid = base.wrapping_add(i as u32);
            wire::encode_bundle_add(&mut out, xid, bundle_id, flags, |out, xid| {
                fm.encode(out, xid)
            })
            .map_err(|source| encode_error(i, fm, source))?;
            xids.push(xid);
        }
        wire::encode_empty(&mut out, msg_type::BARRIER_REQUEST, barrier);
        let frames = self.exchange(REQ, out, xids.clone(), barrier).await?;

        let mut failures = Vec::new();
        let mut open_error = None;
        for frame in &frames {
            let xid = frame.header.xid;
            if xid == open {
                if frame.header.msg_type == msg_type::ERROR {
                    open_error = Some(rejected("bundle open", frame)?);
                } else {
                    expect_bundle_reply(REQ, frame, bundle_ctrl::OPEN_REPLY)?;
                }
            } else if xid == barrier {
                expect_type(REQ, frame, msg_type::BARRIER_REPLY)?;
            } else if frame.header.msg_type == msg_type::ERROR {
                let index = xid.wrapping_sub(base) as usize;
                if let Some(fm) = flow_mods.get(index) {
                    failures.push(failure(REQ, FailureStage::Add, index, fm, frame)?);
                }
            }
        }
        if open_error.is_some() || !failures.is_empty() {
            // OVS would commit the adds it accepted (and creates a bundle implicitly on the
            // first add even if the open failed): discard instead.
            let mut out = Vec::new();
            wire::encode_bundle_ctrl(
                &mut out,
                close,
                bundle_id,
                bundle_ctrl::DISCARD_REQUEST,
                flags,
            );
            if let Err(e) = self.exchange(REQ, out, Vec::new(), close).await {
                warn!(bundle_id, error = %e, "cannot discard rejected bundle");
            }
            if let Some(error) = open_error {
                return Err(error);
            }
            return Err(ClientError::BundleRejected { size: n, failures });
        }

        // Commit. Errors found only at commit time carry the failing add's xid and arrive
        // before the commit's own OFPBFC_MSG_FAILED error.
        let mut out = Vec::new();
        wire::encode_bundle_ctrl(
            &mut out,
            close,
            bundle_id,
            bundle_ctrl::COMMIT_REQUEST,
            flags,
        );
        xids.retain(|x| *x != open);
        let frames = self.exchange(REQ, out, xids, close).await?;
        let mut commit_error = None;
        for frame in &frames {
            let xid = frame.header.xid;
            if xid == close {
                if frame.header.msg_type == msg_type::ERROR {
                    commit_error = Some(decode_error(REQ, frame)?);
                } else {
                    expect_bundle_reply(REQ, frame, bundle_ctrl::COMMIT_REPLY)?;
                }
            } else if frame.header.msg_type == msg_type::ERROR {
                let index = xid.wrapping_sub(base) as usize;
                if let Some(fm) = flow_mods.get(index) {
                    failures.push(failure(REQ, FailureStage::Commit, index, fm, frame)?);
                }
            }
        }
        match commit_error {
            None if failures.is_empty() => Ok(()),
            Some(error) if failures.is_empty() => Err(ClientError::Rejected {
                request: format!("commit of bundle of {n} flow mods"),
                error,
            }),
            _ => Err(ClientError::BundleRejected { size: n, failures }),
        }
    }

    /// Reads flows and their counters (`OFPMP_FLOW_DESC`), reassembling multipart replies.
    pub async fn dump_flows(
        &self,
        request: &FlowStatsRequest,
    ) -> Result<Vec<FlowEntry>, ClientError> {
        const REQ: &str = "flow stats request";
        let xid = self.xids(1);
        let mut out = Vec::new();
        request
            .encode(&mut out, xid)
            .map_err(|source| ClientError::Encode {
                request: REQ.into(),
                source,
            })?;
        let frames = self.exchange(REQ, out, Vec::new(), xid).await?;
        let mut entries = Vec::new();
        for frame in &frames {
            match frame.header.msg_type {
                msg_type::MULTIPART_REPLY => {
                    let reply =
                        MultipartReply::decode(frame).map_err(|source| ClientError::BadReply {
                            request: REQ,
                            source,
                        })?;
                    if reply.mp_type != wire::multipart::FLOW_DESC {
                        return Err(ClientError::BadReply {
                            request: REQ,
                            source: WireError::Unexpected {
                                what: "multipart type",
                                value: u64::from(reply.mp_type),
                            },
                        });
                    }
                    entries.extend(decode_flow_descs(&reply.body).map_err(|source| {
                        ClientError::BadReply {
                            request: REQ,
                            source,
                        }
                    })?);
                }
                msg_type::ERROR => return Err(rejected(REQ, frame)?),
                other => {
                    return Err(ClientError::UnexpectedReply {
                        request: REQ,
                        msg_type: other,
                    })
                }
            }
        }
        Ok(entries)
    }

    /// Sends a packet out of the switch and waits until the switch processed it.
    pub async fn packet_out(&self, packet: &PacketOut) -> Result<(), ClientError> {
        const REQ: &str = "packet out";
        let base = self.xids(2);
        let barrier = base.wrapping_add(1);
        let mut out = Vec::with_capacity(packet.data.len() + 64);
        packet
            .encode(&mut out, base)
            .map_err(|source| ClientError::Encode {
                request: REQ.into(),
                source,
            })?;
        wire::encode_empty(&mut out, msg_type::BARRIER_REQUEST, barrier);
        let frames = self.exchange(REQ, out, vec![base], barrier).await?;
        for frame in &frames {
            if frame.header.msg_type == msg_type::ERROR {
                return Err(rejected(REQ, frame)?);
            }
        }
        Ok(())
    }

    /// Reserves `n` consecutive xids and returns the first.
    fn xids(&self, n: u32) -> u32 {
        self.inner.shared.xids.fetch_add(n, Ordering::Relaxed)
    }

    /// Sends encoded messages and collects every frame routed back to them.
    async fn exchange(
        &self,
        request: &'static str,
        bytes: Vec<u8>,
        xids: Vec<u32>,
        final_xid: u32,
    ) -> Result<Vec<Frame>, ClientError> {
        let after = self.inner.shared.config.request_timeout;
        let (reply, rx) = oneshot::channel();
        let exchange = Exchange {
            bytes,
            xids,
            final_xid,
            reply,
        };
        let lane = match self.lane {
            Lane::Normal => &self.inner.normal,
            Lane::Priority => &self.inner.priority,
        };
        let work = async {
            lane.send(exchange)
                .await
                .map_err(|_| ClientError::Shutdown)?;
            match rx.await {
                Ok(Ok(frames)) => Ok(frames),
                Ok(Err(source)) => Err(ClientError::Disconnected { request, source }),
                Err(_) => Err(ClientError::Shutdown),
            }
        };
        tokio::time::timeout(after, work)
            .await
            .map_err(|_| ClientError::Timeout { request, after })?
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn encode_error(index: usize, fm: &FlowMod, source: WireError) -> ClientError {
    ClientError::Encode {
        request: format!("flow mod #{index} `{fm}`"),
        source,
    }
}

fn decode_error(request: &'static str, frame: &Frame) -> Result<OfpError, ClientError> {
    OfpError::decode(frame).map_err(|source| ClientError::BadReply { request, source })
}

fn rejected(request: &str, frame: &Frame) -> Result<ClientError, ClientError> {
    Ok(ClientError::Rejected {
        request: request.to_string(),
        error: OfpError::decode(frame).map_err(|source| ClientError::BadReply {
            request: "error message",
            source,
        })?,
    })
}

fn failure(
    request: &'static str,
    stage: FailureStage,
    index: usize,
    fm: &FlowMod,
    frame: &Frame,
) -> Result<BundleFailure, ClientError> {
    Ok(BundleFailure {
        index,
        stage,
        flow_mod: fm.to_string(),
        error: decode_error(request, frame)?,
    })
}

fn final_frame<'a>(
    request: &'static str,
    frames: &'a [Frame],
    xid: u32,
) -> Result<&'a Frame, ClientError> {
    let frame = frames
        .iter()
        .rev()
        .find(|f| f.header.xid == xid)
        .ok_or(ClientError::Shutdown)?;
    if frame.header.msg_type == msg_type::ERROR {
        return Err(rejected(request, frame)?);
    }
    Ok(frame)
}

fn expect_type(request: &'static str, frame: &Frame, expected: u8) -> Result<(), ClientError> {
    if frame.header.msg_type == expected {
        Ok(())
    } else if frame.header.msg_type == msg_type::ERROR {
        Err(rejected(request, frame)?)
    } else {
        Err(ClientError::UnexpectedReply {
            request,
            msg_type: frame.header.msg_type,
        })
    }
}

fn expect_bundle_reply(request: &'static str, frame: &Frame, ctrl: u16) -> Result<(), ClientError> {
    expect_type(request, frame, msg_type::BUNDLE_CONTROL)?;
    let reply =
        BundleCtrl::decode(frame).map_err(|source| ClientError::BadReply { request, source })?;
    if reply.ctrl != ctrl {
        return Err(ClientError::BadReply {
            request,
            source: WireError::Unexpected {
                what: "bundle control type",
                value: u64::from(reply.ctrl),
            },
        });
    }
    Ok(())
}

/// Opens a stream and performs the handshake.
async fn connect(
    endpoint: &Endpoint,
    cfg: &SessionConfig,
    xids: &AtomicU32,
) -> Result<conn::Connected, ConnError> {
    let stream = endpoint.connect().await.map_err(|e| ConnError::Connect {
        endpoint: endpoint.to_string(),
        source: Arc::new(e),
    })?;
    conn::handshake(stream, cfg, xids).await
}

/// Owns the request channels across connections: connects, handshakes, runs the reconnect
/// hook, runs sessions, and backs off between attempts.
struct Supervisor {
    endpoint: Endpoint,
    shared: Arc<Shared>,
    inner: Weak<Inner>,
    normal: mpsc::Receiver<Exchange>,
    priority: mpsc::Receiver<Exchange>,
    shutdown: oneshot::Receiver<()>,
    first: Option<oneshot::Sender<Result<(), ConnError>>>,
}

impl Supervisor {
    async fn run(mut self) {
        let cfg = self.shared.config.clone();
        let session_cfg = SessionConfig {
            handshake_timeout: cfg.handshake_timeout,
            keepalive: cfg.keepalive.map(|k| (k.interval, k.timeout)),
            miss_send_len: cfg.async_messages.then_some(CONTROLLER_MAX_LEN_NO_BUFFER),
        };
        let session_shared = conn::SessionShared {
            xids: self.shared.xids.clone(),
            counters: self.shared.counters.clone(),
            events: self.shared.events.clone(),
        };
        let mut backoff = cfg.min_backoff;
        let mut connected_before = false;
        loop {
            let attempt = tokio::select! {
                _ = &mut self.shutdown => return,
                attempt = connect(&self.endpoint, &session_cfg, &self.shared.xids) => attempt,
            };
            match attempt {
                Ok(connected) => {
                    backoff = cfg.min_backoff;
                    let features = connected.features;
                    *lock(&self.shared.features) = Some(features);
                    self.shared
                        .counters
                        .connects
                        .fetch_add(1, Ordering::Relaxed);
                    self.shared.connected.send_replace(true);
                    info!(endpoint = %self.endpoint, datapath_id = format!("{:016x}", features.datapath_id), "openflow connected");
                    let _ = self.shared.events.send(Event::Connected(features));
                    let gate = self.start_hook(connected_before);
                    connected_before = true;
                    if let Some(first) = self.first.take() {
                        let _ = first.send(Ok(()));
                    }
                    let lanes = Lanes {
                        priority: &mut self.priority,
                        normal: &mut self.normal,
                        gate,
                        shutdown: &mut self.shutdown,
                    };
                    let end = conn::run(connected, &session_shared, &session_cfg, lanes).await;
                    self.shared.connected.send_replace(false);
                    match end {
                        SessionEnd::Shutdown => return,
                        SessionEnd::Failed(e) => {
                            warn!(endpoint = %self.endpoint, error = %e, "openflow connection lost");
                            *lock(&self.shared.last_error) = Some(e.clone());
                            let _ = self.shared.events.send(Event::Disconnected(e));
                        }
                    }
                }
                Err(e) => {
                    if self.first.is_some() && e.is_fatal() {
                        if let Some(first) = self.first.take() {
                            let _ = first.send(Err(e));
                        }
                        return;
                    }
                    warn!(endpoint = %self.endpoint, error = %e, retry_in = ?backoff, "openflow connection attempt failed");
                    *lock(&self.shared.last_error) = Some(e);
                }
            }
            tokio::select! {
                _ = &mut self.shutdown => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(cfg.max_backoff);
        }
    }

    /// Starts the reconnect hook (on reconnections only) and returns the gate that opens
    /// normal requests once it is done.
    fn start_hook(&self, reconnect: bool) -> watch::Receiver<bool> {
        let hook = lock(&self.shared.hook).clone();
        let inner = self.inner.upgrade();
        let events = self.shared.events.clone();
        let (Some(hook), Some(inner), true) = (hook, inner, reconnect) else {
            let _ = events.send(Event::Ready);
            return watch::channel(true).1;
        };
        let (gate_tx, gate_rx) = watch::channel(false);
        let limit = self.shared.config.hook_timeout;
        let client = Client {
            inner,
            lane: Lane::Priority,
        };
        tokio::spawn(async move {
            match tokio::time::timeout(limit, hook(client)).await {
                Ok(Ok(())) => info!("openflow reconnect hook done"),
                Ok(Err(e)) => warn!(error = %e, "openflow reconnect hook failed"),
                Err(_) => warn!(?limit, "openflow reconnect hook timed out"),
            }
            let _ = gate_tx.send(true);
            let _ = events.send(Event::Ready);
        });
        gate_rx
    }
}
