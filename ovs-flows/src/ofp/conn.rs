//! One OpenFlow connection: the handshake (hello with version bitmap, features, switch config)
//! and the session loop that owns the socket.
//!
//! The session multiplexes requests from many tasks over the one socket. A request is an
//! [`Exchange`]: already-encoded messages plus the xids whose replies and errors belong to it
//! and the xid of its final message. The switch handles messages in order, so when the final
//! message's reply (or error) arrives every earlier message's error has arrived too: the
//! exchange then completes with every frame routed to it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::endpoint::BoxStream;
use super::messages::{PacketIn, PortStatus};
use super::ofperr::OfpError;
use super::wire::{
    self, msg_type, Features, Frame, Header, Hello, WireError, HEADER_LEN, OFP_VERSION,
};
use super::Event;

/// Stop taking new requests while this many bytes wait to be written.
const WRITE_HIGH_WATER: usize = 4 << 20;
/// Read buffer growth step.
const READ_CHUNK: usize = 64 << 10;

/// Why a connection attempt or an established connection failed.
#[derive(Debug, Clone, Error)]
pub enum ConnError {
    /// Connecting the socket failed.
    #[error("cannot connect to openflow endpoint {endpoint}: {source}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// The socket error.
        source: Arc<std::io::Error>,
    },
    /// Reading or writing the socket failed.
    #[error("i/o error on openflow connection: {0}")]
    Io(Arc<std::io::Error>),
    /// The peer closed the connection between messages.
    #[error("peer closed the openflow connection")]
    Closed,
    /// A frame's length field is below the 8-byte header.
    #[error("openflow frame with bad length {len} (type {msg_type}, xid {xid:#x})")]
    BadFrameLength {
        /// The length field.
        len: u16,
        /// The frame's message type.
        msg_type: u8,
        /// The frame's xid.
        xid: u32,
    },
    /// The connection closed in the middle of a frame.
    #[error("truncated openflow frame: expected {expected} bytes, connection closed after {got}")]
    Truncated {
        /// Bytes the frame header announced (8 if the header itself was cut).
        expected: usize,
        /// Bytes received.
        got: usize,
    },
    /// A frame after the handshake carries another version.
    #[error("openflow frame with version {version:#04x} on a connection that negotiated 1.5")]
    UnexpectedVersion {
        /// The frame's version.
        version: u8,
    },
    /// The peer does not offer OpenFlow 1.5.
    #[error("peer does not offer openflow 1.5: it offers {}", versions(offered))]
    VersionRefused {
        /// The versions the peer offered (wire numbers).
        offered: Vec<u8>,
    },
    /// The peer answered the hello with an error.
    #[error("peer rejected the openflow hello: {0}")]
    HelloFailed(OfpError),
    /// A message from the peer does not decode.
    #[error("malformed {what} from peer: {source}")]
    Malformed {
        /// The message.
        what: &'static str,
        /// Why.
        source: WireError,
    },
    /// The handshake did not complete in time.
    #[error("openflow handshake timed out after {0:?}")]
    HandshakeTimeout(Duration),
    /// The handshake received something else than expected.
    #[error("unexpected openflow message type {msg_type} during the handshake")]
    UnexpectedMessage {
        /// The message type.
        msg_type: u8,
    },
    /// The peer stopped answering our echo requests.
    #[error("openflow peer silent for {0:?} after an echo request")]
    DeadPeer(Duration),
}

fn versions(offered: &[u8]) -> String {
    if offered.is_empty() {
        return "no version".to_string();
    }
    offered
        .iter()
        .map(|v| format!("openflow {}", wire::version_name(*v)))
        .collect::<Vec<_>>()
        .join(", ")
}

impl From<std::io::Error> for ConnError {
    fn from(e: std::io::Error) -> Self {
        ConnError::Io(Arc::new(e))
    }
}

impl ConnError {
    /// Whether retrying the same endpoint cannot help (the peer refuses our version).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            ConnError::VersionRefused { .. } | ConnError::HelloFailed(_)
        )
    }
}

/// A request: encoded messages and the xids whose answers belong to it.
#[derive(Debug)]
pub(crate) struct Exchange {
    /// The encoded messages, back to back.
    pub bytes: Vec<u8>,
    /// Every xid whose replies or errors are routed to this exchange.
    pub xids: Vec<u32>,
    /// The xid of the message whose (last) reply completes the exchange.
    pub final_xid: u32,
    /// Receives every frame routed to the exchange, in arrival order.
    pub reply: oneshot::Sender<Result<Vec<Frame>, ConnError>>,
}

/// Counters shared by the sessions of one client.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub connects: AtomicU64,
    pub echo_requests_answered: AtomicU64,
    pub echo_requests_sent: AtomicU64,
    pub unsolicited_errors: AtomicU64,
}

/// Settings of one connection.
#[derive(Debug, Clone)]
pub(crate) struct SessionConfig {
    pub handshake_timeout: Duration,
    /// Send an echo request after this much silence and drop the peer if nothing arrives
    /// within the second duration.
    pub keepalive: Option<(Duration, Duration)>,
    /// Ask for asynchronous messages (packet-in, port-status) with this miss-send length.
    pub miss_send_len: Option<u16>,
}

/// Everything a session shares with the client.
pub(crate) struct SessionShared {
    pub xids: Arc<AtomicU32>,
    pub counters: Arc<Counters>,
    pub events: broadcast::Sender<Event>,
}

/// A connected, handshaken stream.
pub(crate) struct Connected {
    stream: BoxStream,
    rbuf: BytesMut,
    pub features: Features,
}

/// Takes one complete frame off the front of `rbuf`, if there is one.
fn next_frame(rbuf: &mut BytesMut, version: Option<u8>) -> Result<Option<Frame>, ConnError> {
    let Some(header) = Header::parse(rbuf) else {
        return Ok(None);
    };
    let len = usize::from(header.length);
    if len < HEADER_LEN {
        return Err(ConnError::BadFrameLength {
            len: header.length,
            msg_type: header.msg_type,
            xid: header.xid,
        });
    }
    if let Some(v) = version {
        if header.version != v {
            return Err(ConnError::UnexpectedVersion {
                version: header.version,
            });
        }
    }
    if rbuf.len() < len {
        rbuf.reserve(len - rbuf.len());
        return Ok(None);
    }
    let mut frame = rbuf.split_to(len);
    let body = frame.split_off(HEADER_LEN).freeze();
    Ok(Some(Frame { header, body }))
}

/// The error for end-of-stream with `rbuf` holding a partial frame (or none).
fn eof_error(rbuf: &BytesMut) -> ConnError {
    if rbuf.is_empty() {
        return ConnError::Closed;
    }
    let expected = Header::parse(rbuf).map_or(HEADER_LEN, |h| usize::from(h.length));
    ConnError::Truncated {
        expected,
        got: rbuf.len(),
    }
}

async fn read_frame(
    stream: &mut BoxStream,
    rbuf: &mut BytesMut,
    version: Option<u8>,
) -> Result<Frame, ConnError> {
    loop {
        if let Some(frame) = next_frame(rbuf, version)? {
            return Ok(frame);
        }
        rbuf.reserve(READ_CHUNK);
        if stream.read_buf(rbuf).await? == 0 {
            return Err(eof_error(rbuf));
        }
    }
}

/// Performs the handshake on a fresh stream: hello (OpenFlow 1.5 only, version bitmap),
/// optional switch config asking for asynchronous messages, and features request.
pub(crate) async fn handshake(
    mut stream: BoxStream,
    cfg: &SessionConfig,
    xids: &AtomicU32,
) -> Result<Connected, ConnError> {
    let timeout = cfg.handshake_timeout;
    tokio::time::timeout(timeout, handshake_inner(&mut stream, cfg, xids))
        .await
        .map_err(|_| ConnError::HandshakeTimeout(timeout))?
        .map(|(rbuf, features)| Connected {
            stream,
            rbuf,
            features,
        })
}

async fn handshake_inner(
    stream: &mut BoxStream,
    cfg: &SessionConfig,
    xids: &AtomicU32,
) -> Result<(BytesMut, Features), ConnError> {
    let mut out = Vec::new();
    wire::encode_hello(
        &mut out,
        xids.fetch_add(1, Ordering::Relaxed),
        &[OFP_VERSION],
    );
    stream.write_all(&out).await?;

    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    let frame = read_frame(stream, &mut rbuf, None).await?;
    match frame.header.msg_type {
        msg_type::HELLO => {}
        msg_type::ERROR => {
            let error = OfpError::decode(&frame).map_err(|source| ConnError::Malformed {
                what: "hello error",
                source,
            })?;
            return Err(ConnError::HelloFailed(error));
        }
        other => return Err(ConnError::UnexpectedMessage { msg_type: other }),
    }
    let hello = Hello::decode(&frame).map_err(|source| ConnError::Malformed {
        what: "hello",
        source,
    })?;
    if !hello.accepts_of15() {
        // Tell the peer why, as OpenFlow asks (OFPET_HELLO_FAILED / OFPHFC_INCOMPATIBLE).
        let mut out = Vec::new();
        let start = wire::begin(&mut out, msg_type::ERROR, frame.header.xid);
        out[start] = hello.header_version.min(OFP_VERSION);
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(b"we support openflow 1.5 only");
        let _ = wire::finish(&mut out, start, "hello error");
        let _ = stream.write_all(&out).await;
        return Err(ConnError::VersionRefused {
            offered: hello.offered(),
        });
    }

    let mut out = Vec::new();
    if let Some(len) = cfg.miss_send_len {
        wire::encode_set_config(&mut out, xids.fetch_add(1, Ordering::Relaxed), len);
    }
    let features_xid = xids.fetch_add(1, Ordering::Relaxed);
    wire::encode_empty(&mut out, msg_type::FEATURES_REQUEST, features_xid);
    stream.write_all(&out).await?;

    loop {
        let frame = read_frame(stream, &mut rbuf, Some(OFP_VERSION)).await?;
        match frame.header.msg_type {
            msg_type::ECHO_REQUEST => {
                let mut out = Vec::new();
                // The body came in a frame, so it fits in a frame.
                let _ = wire::encode_echo(
                    &mut out,
                    msg_type::ECHO_REPLY,
                    frame.header.xid,
                    &frame.body,
                );
                stream.write_all(&out).await?;
            }
            msg_type::FEATURES_REPLY if frame.header.xid == features_xid => {
                let features = Features::decode(&frame).map_err(|source| ConnError::Malformed {
                    what: "features reply",
                    source,
                })?;
                return Ok((rbuf, features));
            }
            msg_type::ERROR => {
                let error = OfpError::decode(&frame).map_err(|source| ConnError::Malformed {
                    what: "error message",
                    source,
                })?;
                return Err(ConnError::HelloFailed(error));
            }
            other => debug!(msg_type = other, "ignoring message during the handshake"),
        }
    }
}

/// How a session ended.
pub(crate) enum SessionEnd {
    /// The client was dropped.
    Shutdown,
    /// The connection failed.
    Failed(ConnError),
}

/// The request channels a session reads from. Priority requests (the reconnect hook's) are
/// always taken; normal requests only once the gate is open.
pub(crate) struct Lanes<'a> {
    pub priority: &'a mut mpsc::Receiver<Exchange>,
    pub normal: &'a mut mpsc::Receiver<Exchange>,
    pub gate: watch::Receiver<bool>,
    pub shutdown: &'a mut oneshot::Receiver<()>,
}

struct Pending {
    reply: oneshot::Sender<Result<Vec<Frame>, ConnError>>,
    xids: Vec<u32>,
    final_xid: u32,
    frames: Vec<Frame>,
}

struct Session<'s> {
    shared: &'s SessionShared,
    cfg: &'s SessionConfig,
    /// xid -> exchange id.
    routes: HashMap<u32, u64>,
    pending: HashMap<u64, Pending>,
    next_id: u64,
    outq: VecDeque<Bytes>,
    queued: usize,
    last_rx: Instant,
    echo_sent: Option<Instant>,
}

/// Runs an established connection until it fails or the client is dropped. Every exchange in
/// flight when the connection fails completes with the failure.
pub(crate) async fn run(
    conn: Connected,
    shared: &SessionShared,
    cfg: &SessionConfig,
    lanes: Lanes<'_>,
) -> SessionEnd {
    let Connected { stream, rbuf, .. } = conn;
    let mut session = Session {
        shared,
        cfg,
        routes: HashMap::new(),
        pending: HashMap::new(),
        next_id: 0,
        outq: VecDeque::new(),
        queued: 0,
        last_rx: Instant::now(),
        echo_sent: None,
    };
    let end = session.run(stream, rbuf, lanes).await;
    let error = match &end {
        SessionEnd::Shutdown => ConnError::Closed,
        SessionEnd::Failed(e) => e.clone(),
    };
    for (_, p) in session.pending.drain() {
        let _ = p.reply.send(Err(error.clone()));
    }
    end
}

impl Session<'_> {
    async fn run(&mut self, stream: BoxStream, mut rbuf: BytesMut, lanes: Lanes<'_>) -> SessionEnd {
        let Lanes {
            priority,
            normal,
            mut gate,
            shutdown,
        } = lanes;
        let (mut reader, mut writer) = tokio::io::split(stream);
        let mut gate_open = *gate.borrow_and_update();
        let tick = self
            .cfg
            .keepalive
            .map(|(interval, timeout)| (interval.min(timeout) / 4).max(Duration::from_millis(20)))
            .unwrap_or(Duration::from_secs(3600));
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        // Frames that arrived with the end of the handshake.
        if let Err(e) = self.drain_frames(&mut rbuf) {
            return SessionEnd::Failed(e);
        }
        loop {
            let can_take = self.queued < WRITE_HIGH_WATER;
            tokio::select! {
                _ = &mut *shutdown => return SessionEnd::Shutdown,
                read = reader.read_buf(&mut rbuf) => {
                    match read {
                        Ok(0) => return SessionEnd::Failed(eof_error(&rbuf)),
                        Ok(_) => {
                            self.last_rx = Instant::now();
                            self.echo_sent = None;
                            if let Err(e) = self.drain_frames(&mut rbuf) {
                                return SessionEnd::Failed(e);
                            }
                            if rbuf.capacity() - rbuf.len() < 4096 {
                                rbuf.reserve(READ_CHUNK);
                            }
                        }
                        Err(e) => return SessionEnd::Failed(e.into()),
                    }
                }
                written = writer.write(self.outq.front().map_or(&[][..], |b| &b[..])),
                    if !self.outq.is_empty() => {
                    match written {
                        Ok(0) => return SessionEnd::Failed(ConnError::Closed),
                        Ok(n) => self.advance(n),
                        Err(e) => return SessionEnd::Failed(e.into()),
                    }
                }
                cmd = priority.recv(), if can_take => match cmd {
                    Some(x) => self.submit(x),
                    None => return SessionEnd::Shutdown,
                },
                cmd = normal.recv(), if can_take && gate_open => match cmd {
                    Some(x) => self.submit(x),
                    None => return SessionEnd::Shutdown,
                },
                changed = gate.changed(), if !gate_open => {
                    if changed.is_err() {
                        // The gate's owner is gone: never block normal requests forever.
                        gate_open = true;
                    } else {
                        gate_open = *gate.borrow_and_update();
                    }
                }
                _ = ticker.tick() => {
                    if let Err(e) = self.keepalive() {
                        return SessionEnd::Failed(e);
                    }
                }
            }
        }
    }

    fn advance(&mut self, mut n: usize) {
        self.queued -= n;
        while n > 0 {
            let Some(front) = self.outq.front_mut() else {
                return;
            };
            if n >= front.len() {
                n -= front.len();
                self.outq.pop_front();
            } else {
                let _ = front.split_to(n);
                n = 0;
            }
        }
    }

    fn enqueue(&mut self, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        self.queued += bytes.len();
        self.outq.push_back(Bytes::from(bytes));
    }

    fn submit(&mut self, x: Exchange) {
        if x.reply.is_closed() {
            // The caller gave up (timed out) while the request waited: do not send it late.
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        for xid in &x.xids {
            self.routes.insert(*xid, id);
        }
        self.routes.insert(x.final_xid, id);
        self.pending.insert(
            id,
            Pending {
                reply: x.reply,
                xids: x.xids,
                final_xid: x.final_xid,
                frames: Vec::new(),
            },
        );
        self.enqueue(x.bytes);
    }

    fn keepalive(&mut self) -> Result<(), ConnError> {
        let Some((interval, timeout)) = self.cfg.keepalive else {
            return Ok(());
        };
        let now = Instant::now();
        match self.echo_sent {
            Some(sent) if now.duration_since(sent) >= timeout => {
                Err(ConnError::DeadPeer(now.duration_since(self.last_rx)))
            }
            None if now.duration_since(self.last_rx) >= interval => {
                let mut out = Vec::new();
                let xid = self.shared.xids.fetch_add(1, Ordering::Relaxed);
                let _ = wire::encode_echo(&mut out, msg_type::ECHO_REQUEST, xid, b"weft");
                self.enqueue(out);
                self.echo_sent = Some(now);
                self.shared
                    .counters
                    .echo_requests_sent
                    .fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn drain_frames(&mut self, rbuf: &mut BytesMut) -> Result<(), ConnError> {
        while let Some(frame) = next_frame(rbuf, Some(OFP_VERSION))? {
            self.dispatch(frame)?;
        }
        Ok(())
    }

    fn dispatch(&mut self, frame: Frame) -> Result<(), ConnError> {
        let header = frame.header;
        if header.msg_type == msg_type::ECHO_REQUEST {
            let mut out = Vec::new();
            let _ = wire::encode_echo(&mut out, msg_type::ECHO_REPLY, header.xid, &frame.body);
            self.enqueue(out);
            self.shared
                .counters
                .echo_requests_answered
                .fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        if let Some(id) = self.routes.get(&header.xid).copied() {
            return self.route(id, frame);
        }
        match header.msg_type {
            msg_type::PACKET_IN => {
                let pi = PacketIn::decode(&frame).map_err(|source| ConnError::Malformed {
                    what: "packet in",
                    source,
                })?;
                let _ = self.shared.events.send(Event::PacketIn(pi));
            }
            msg_type::PORT_STATUS => {
                let ps = PortStatus::decode(&frame).map_err(|source| ConnError::Malformed {
                    what: "port status",
                    source,
                })?;
                let _ = self.shared.events.send(Event::PortStatus(ps));
            }
            msg_type::ERROR => {
                let error = OfpError::decode(&frame).map_err(|source| ConnError::Malformed {
                    what: "error message",
                    source,
                })?;
                warn!(xid = header.xid, %error, "openflow error for no pending request");
                self.shared
                    .counters
                    .unsolicited_errors
                    .fetch_add(1, Ordering::Relaxed);
                let _ = self.shared.events.send(Event::UnsolicitedError(error));
            }
            msg_type::ECHO_REPLY => {}
            other => debug!(
                msg_type = other,
                xid = header.xid,
                "ignoring openflow message"
            ),
        }
        Ok(())
    }

    fn route(&mut self, id: u64, frame: Frame) -> Result<(), ConnError> {
        let Some(pending) = self.pending.get_mut(&id) else {
            self.routes.remove(&frame.header.xid);
            return Ok(());
        };
        let is_final = frame.header.xid == pending.final_xid
            && match frame.header.msg_type {
                msg_type::MULTIPART_REPLY => {
                    let reply = wire::MultipartReply::decode(&frame).map_err(|source| {
                        ConnError::Malformed {
                            what: "multipart reply",
                            source,
                        }
                    })?;
                    !reply.more()
                }
                _ => true,
            };
        pending.frames.push(frame);
        if is_final {
            if let Some(p) = self.pending.remove(&id) {
                for xid in p.xids.iter().chain(std::iter::once(&p.final_xid)) {
                    if self.routes.get(xid) == Some(&id) {
                        self.routes.remove(xid);
                    }
                }
                let _ = p.reply.send(Ok(p.frames));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_split_and_checked() {
        let mut buf = BytesMut::from(&[6u8, 2, 0, 10, 0, 0, 0, 1, 0xaa, 0xbb, 6, 3][..]);
        let frame = next_frame(&mut buf, Some(6)).unwrap().unwrap();
        assert_eq!(frame.header.msg_type, 2);
        assert_eq!(&frame.body[..], &[0xaa, 0xbb]);
        assert!(next_frame(&mut buf, Some(6)).unwrap().is_none());
        assert!(matches!(
            eof_error(&buf),
            ConnError::Truncated {
                expected: 8,
                got: 2
            }
        ));

        let mut bad = BytesMut::from(&[6u8, 2, 0, 4, 0, 0, 0, 1][..]);
        assert!(matches!(
            next_frame(&mut bad, Some(6)),
            Err(ConnError::BadFrameLength { len: 4, .. })
        ));
        let mut other = BytesMut::from(&[4u8, 2, 0, 8, 0, 0, 0, 1][..]);
        assert!(matches!(
            next_frame(&mut other, Some(6)),
            Err(ConnError::UnexpectedVersion { version: 4 })
        ));
        let mut partial = BytesMut::from(&[6u8, 2, 0, 100, 0, 0, 0, 1, 1, 2][..]);
        assert!(next_frame(&mut partial, Some(6)).unwrap().is_none());
        assert!(matches!(
            eof_error(&partial),
            ConnError::Truncated {
                expected: 100,
                got: 10
            }
        ));
    }

    #[test]
    fn version_refusal_names_the_offered_versions() {
        let e = ConnError::VersionRefused {
            offered: vec![1, 4],
        };
        assert_eq!(
            e.to_string(),
            "peer does not offer openflow 1.5: it offers openflow 1.0, openflow 1.3"
        );
        assert!(e.is_fatal());
    }
}
