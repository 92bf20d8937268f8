//! The OVSDB client: one task owns the connection; callers on any task send requests through a
//! channel and wait on a oneshot. The task answers the server's `echo`, probes an idle server,
//! keeps the monitor cache, and reconnects with capped exponential backoff.
//!
//! Behaviour at the edges, which callers rely on:
//! - Every reconnect is a full resync: `get_schema`, then `monitor_cond`, then the cache is
//!   replaced by the initial snapshot and subscribers get [`CacheEvent::Resynced`].
//! - A request in flight when the connection drops fails with [`OvsdbError::Disconnected`] (it
//!   may or may not have run). Nothing is ever retried behind the caller's back.
//! - A request made while disconnected waits for the next resync, bounded by the call timeout.
//!   If no connection comes in time it fails with [`OvsdbError::NotConnected`] and is guaranteed
//!   never to be sent later; once sent, a missing reply gives [`OvsdbError::Timeout`].
//! - During an outage the cache keeps the last known state; [`Client::state`] tells it is stale.
//! - A caller's deadline ([`with_deadline`], e.g. a CNI ADD's) bounds each call it makes as well,
//!   with the same guarantees; a call whose future is dropped before it was sent is never sent.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::cache::{Cache, MonitorSpec, RowChange};
use super::error::{OvsdbError, Result};
use super::ops::{parse_transact_result, transact_params, Operation, TransactOutcome};
use super::rpc::{encode_error, encode_request, encode_response, Framer, Message};
use super::schema::DbSchema;
use super::transport::Endpoint;

/// The `Open_vSwitch` database name.
pub const OPEN_VSWITCH_DB: &str = "Open_vSwitch";

const MONITOR_ID: &str = "weft";
const READ_CHUNK: usize = 64 * 1024;

/// Client settings. [`ClientConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Where to connect.
    pub endpoint: Endpoint,
    /// Database to transact on and monitor.
    pub database: String,
    /// Default bound on a whole call, including waiting for a connection.
    pub call_timeout: Duration,
    /// Bound on connecting plus `get_schema` plus the initial `monitor_cond` reply.
    pub handshake_timeout: Duration,
    /// If set, send an echo after this much silence and reconnect after as much again.
    pub inactivity_probe: Option<Duration>,
    /// First reconnect delay; doubled after each failed attempt.
    pub backoff_initial: Duration,
    /// Cap on the reconnect delay.
    pub backoff_max: Duration,
    /// Largest message accepted from the server.
    pub max_message_bytes: usize,
    /// Tables and columns to keep in the cache.
    pub monitor: MonitorSpec,
}

impl ClientConfig {
    /// Defaults: `Open_vSwitch`, Weft's monitor set, 30 s calls, 10 s handshake, 5 s probe,
    /// backoff 100 ms doubling to 5 s, 64 MiB messages.
    pub fn new(endpoint: Endpoint) -> Self {
        ClientConfig {
            endpoint,
            database: OPEN_VSWITCH_DB.to_owned(),
            call_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            inactivity_probe: Some(Duration::from_secs(5)),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            max_message_bytes: 64 << 20,
            monitor: MonitorSpec::weft(),
        }
    }
}

/// Connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// Connecting or waiting to reconnect; the cache holds the last known state.
    Connecting,
    /// Connected and the cache is in sync.
    Synced,
    /// The client was shut down.
    Closed,
}

/// A cache notification.
#[derive(Debug, Clone)]
pub enum CacheEvent {
    /// The cache was replaced by a fresh snapshot (first connect and every reconnect).
    Resynced {
        /// Cache generation after the change.
        generation: u64,
    },
    /// Rows changed.
    Changed {
        /// Cache generation after the change.
        generation: u64,
        /// The changed rows.
        changes: Arc<[RowChange]>,
    },
    /// The connection dropped; the cache is stale until the next `Resynced`.
    Disconnected {
        /// Why.
        error: Arc<OvsdbError>,
    },
}

/// Counters, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Successful connections (each followed by a resync).
    pub connects: u64,
    /// Synced connections that were lost.
    pub disconnects: u64,
    /// Echo requests from the server we answered.
    pub echoes_answered: u64,
    /// Echo probes we sent.
    pub probes_sent: u64,
    /// `update2` notifications applied.
    pub updates: u64,
}

#[derive(Default)]
struct Counters {
    connects: AtomicU64,
    disconnects: AtomicU64,
    echoes_answered: AtomicU64,
    probes_sent: AtomicU64,
    updates: AtomicU64,
}

/// State shared between the handles and the connection task.
struct Shared {
    cache: RwLock<Cache>,
    schema: RwLock<Option<Arc<DbSchema>>>,
    events: broadcast::Sender<CacheEvent>,
    generation: watch::Sender<u64>,
    state: watch::Sender<ConnectionState>,
    counters: Counters,
}

impl Shared {
    fn bump_generation(&self) -> u64 {
        let mut generation = 0;
        self.generation.send_modify(|g| {
            *g += 1;
            generation = *g;
        });
        generation
    }
}

tokio::task_local! {
    /// The deadline of the calling request, set by [`with_deadline`].
    static CALL_DEADLINE: Instant;
}

/// Runs `fut` with every OVSDB call it makes (on this task) bounded by `deadline` as well as by
/// the call timeout: a call still waiting for a connection at the deadline fails with
/// [`OvsdbError::NotConnected`] and is guaranteed never to be sent later. Used by CNI ADD, so
/// nothing a runtime gave up on reaches OVSDB afterwards.
pub async fn with_deadline<F: std::future::Future>(deadline: Instant, fut: F) -> F::Output {
    CALL_DEADLINE.scope(deadline, fut).await
}

/// The deadline of the current task's [`with_deadline`] scope, if any.
pub fn current_deadline() -> Option<Instant> {
    CALL_DEADLINE.try_with(|d| *d).ok()
}

/// Marks a call abandoned when its future is dropped before the connection task took it.
struct AbandonOnDrop(Arc<AtomicU8>);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        let _ = self
            .0
            .compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire);
    }
}

const QUEUED: u8 = 0;
const SENT: u8 = 1;
const ABANDONED: u8 = 2;

struct Command {
    method: String,
    params: Value,
    reply: oneshot::Sender<Result<Value>>,
    /// QUEUED -> SENT (connection task) or QUEUED -> ABANDONED (caller timed out).
    state: Arc<AtomicU8>,
}

struct Inner {
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    database: String,
    call_timeout: Duration,
    /// Dropped with the last handle, which stops the connection task.
    _shutdown: watch::Sender<()>,
}

/// A handle to the OVSDB client. Cheap to clone; the connection task stops when the last handle
/// is dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("database", &self.inner.database)
            .field("state", &self.state())
            .finish()
    }
}

impl Client {
    /// Starts the connection task and returns at once (must run inside a tokio runtime).
    pub fn start(config: ClientConfig) -> Client {
        let (events, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            cache: RwLock::new(Cache::default()),
            schema: RwLock::new(None),
            events,
            generation: watch::channel(0).0,
            state: watch::channel(ConnectionState::Connecting).0,
            counters: Counters::default(),
        });
        let (commands, command_rx) = mpsc::channel(1024);
        let (shutdown, shutdown_rx) = watch::channel(());
        let inner = Arc::new(Inner {
            commands,
            shared: shared.clone(),
            database: config.database.clone(),
            call_timeout: config.call_timeout,
            _shutdown: shutdown,
        });
        tokio::spawn(run(shared, config, command_rx, shutdown_rx));
        Client { inner }
    }

    /// Starts the client and waits until the first resync, bounded by the handshake timeout.
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        let timeout = config.handshake_timeout;
        let endpoint = config.endpoint.to_string();
        let client = Client::start(config);
        client
            .wait_synced(timeout)
            .await
            .map_err(|_| OvsdbError::HandshakeTimeout { endpoint, timeout })?;
        Ok(client)
    }

    /// Waits until connected and in sync.
    pub async fn wait_synced(&self, timeout: Duration) -> Result<()> {
        let mut state = self.inner.shared.state.subscribe();
        let waited = tokio::time::timeout(
            timeout,
            state.wait_for(|s| *s != ConnectionState::Connecting),
        )
        .await;
        match waited {
            Ok(Ok(s)) if *s == ConnectionState::Synced => Ok(()),
            Ok(_) => Err(OvsdbError::Closed),
            Err(_) => Err(OvsdbError::NotConnected {
                method: "monitor_cond".to_owned(),
                waited: timeout,
            }),
        }
    }

    /// Current connection state.
    pub fn state(&self) -> ConnectionState {
        *self.inner.shared.state.borrow()
    }

    /// A receiver of connection state changes.
    pub fn watch_state(&self) -> watch::Receiver<ConnectionState> {
        self.inner.shared.state.subscribe()
    }

    /// Counters since start.
    pub fn stats(&self) -> Stats {
        let c = &self.inner.shared.counters;
        Stats {
            connects: c.connects.load(Ordering::Relaxed),
            disconnects: c.disconnects.load(Ordering::Relaxed),
            echoes_answered: c.echoes_answered.load(Ordering::Relaxed),
            probes_sent: c.probes_sent.load(Ordering::Relaxed),
            updates: c.updates.load(Ordering::Relaxed),
        }
    }

    /// The database this client works on.
    pub fn database(&self) -> &str {
        &self.inner.database
    }

    /// The schema read at the last connect.
    pub fn schema(&self) -> Option<Arc<DbSchema>> {
        self.inner.shared.schema.read().ok()?.clone()
    }

    /// Change events. A receiver that lags (`RecvError::Lagged`) must re-read the cache.
    pub fn subscribe(&self) -> broadcast::Receiver<CacheEvent> {
        self.inner.shared.events.subscribe()
    }

    /// A receiver of the cache generation, bumped on every change and resync.
    pub fn watch_generation(&self) -> watch::Receiver<u64> {
        self.inner.shared.generation.subscribe()
    }

    /// Runs `f` on the cache under its read lock (do not block inside).
    pub fn read_cache<R>(&self, f: impl FnOnce(&Cache) -> R) -> R {
        let guard = self
            .inner
            .shared
            .cache
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&guard)
    }

    /// A copy of the cache.
    pub fn cache_snapshot(&self) -> Cache {
        self.read_cache(Cache::clone)
    }

    /// Sends a raw JSON-RPC request with the default call timeout.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value> {
        self.call_with_timeout(method, params, self.inner.call_timeout)
            .await
    }

    /// Sends a raw JSON-RPC request; `timeout` bounds waiting for a connection plus the reply.
    pub async fn call_with_timeout(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value> {
        // A caller's deadline ([`with_deadline`]) bounds every call it makes.
        let timeout = CALL_DEADLINE
            .try_with(|deadline| deadline.saturating_duration_since(Instant::now()))
            .map_or(timeout, |left| left.min(timeout));
        let state = Arc::new(AtomicU8::new(QUEUED));
        // Dropped while still queued (the caller's future was cancelled): never sent later.
        let _abandon = AbandonOnDrop(state.clone());
        let (reply, reply_rx) = oneshot::channel();
        let command = Command {
            method: method.to_owned(),
            params,
            reply,
            state: state.clone(),
        };
        let exchange = async {
            self.inner
                .commands
                .send(command)
                .await
                .map_err(|_| OvsdbError::Closed)?;
            reply_rx.await.map_err(|_| OvsdbError::Closed)?
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => {
                let never_sent = state
                    .compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
                Err(if never_sent {
                    OvsdbError::NotConnected {
                        method: method.to_owned(),
                        waited: timeout,
                    }
                } else {
                    OvsdbError::Timeout {
                        method: method.to_owned(),
                        timeout,
                    }
                })
            }
        }
    }

    /// Runs a transaction with the default call timeout.
    pub async fn transact(&self, ops: Vec<Operation>) -> Result<TransactOutcome> {
        self.transact_with_timeout(ops, self.inner.call_timeout)
            .await
    }

    /// Runs a transaction; op errors become [`OvsdbError::Transaction`], a commit error
    /// [`OvsdbError::CommitFailed`].
    pub async fn transact_with_timeout(
        &self,
        ops: Vec<Operation>,
        timeout: Duration,
    ) -> Result<TransactOutcome> {
        let params = transact_params(&self.inner.database, &ops);
        let result = self.call_with_timeout("transact", params, timeout).await?;
        parse_transact_result(&ops, &result)
    }

    /// Round-trips an `echo`.
    pub async fn echo(&self) -> Result<()> {
        let result = self.call("echo", json!(["weft"])).await?;
        if result == json!(["weft"]) {
            Ok(())
        } else {
            Err(OvsdbError::Protocol {
                reason: format!("echo returned {result}"),
            })
        }
    }
}

/// The connection task: connect, run a session, back off, repeat; stop on shutdown.
async fn run(
    shared: Arc<Shared>,
    config: ClientConfig,
    mut commands: mpsc::Receiver<Command>,
    mut shutdown: watch::Receiver<()>,
) {
    let mut backoff = config.backoff_initial;
    loop {
        let ended = tokio::select! {
            _ = shutdown.changed() => break,
            ended = session(&shared, &config, &mut commands) => ended,
        };
        let Some(ended) = ended else { break };
        shared.state.send_replace(ConnectionState::Connecting);
        if ended.synced {
            shared.counters.disconnects.fetch_add(1, Ordering::Relaxed);
            backoff = config.backoff_initial;
            tracing::warn!(endpoint = %config.endpoint, error = %ended.error, "ovsdb connection lost, reconnecting");
            let _ = shared.events.send(CacheEvent::Disconnected {
                error: Arc::new(ended.error),
            });
        } else {
            tracing::debug!(endpoint = %config.endpoint, error = %ended.error, ?backoff, "ovsdb connect failed");
        }
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tokio::time::sleep(backoff) => {}
        }
        if !ended.synced {
            backoff = (backoff * 2).min(config.backoff_max);
        }
    }
    shared.state.send_replace(ConnectionState::Closed);
}

struct SessionEnd {
    /// The session reached the synced state.
    synced: bool,
    error: OvsdbError,
}

/// What a pending id is waiting for.
enum Pending {
    Caller {
        method: String,
        reply: oneshot::Sender<Result<Value>>,
    },
    Schema,
    Monitor,
    Probe,
}

/// Aborts the I/O tasks when the session ends.
struct AbortOnDrop(Vec<JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// One connection's lifetime. `None` means the client was shut down.
async fn session(
    shared: &Shared,
    config: &ClientConfig,
    commands: &mut mpsc::Receiver<Command>,
) -> Option<SessionEnd> {
    let handshake_deadline = Instant::now() + config.handshake_timeout;
    let stream = match tokio::time::timeout_at(handshake_deadline, config.endpoint.connect()).await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            return Some(SessionEnd {
                synced: false,
                error,
            })
        }
        Err(_) => {
            return Some(SessionEnd {
                synced: false,
                error: OvsdbError::HandshakeTimeout {
                    endpoint: config.endpoint.to_string(),
                    timeout: config.handshake_timeout,
                },
            })
        }
    };
    let (read_half, write_half) = tokio::io::split(stream);
    let (incoming_tx, mut incoming) = mpsc::channel(64);
    let (outgoing, outgoing_rx) = mpsc::unbounded_channel();
    let _tasks = AbortOnDrop(vec![
        tokio::spawn(reader(
            read_half,
            config.max_message_bytes,
            incoming_tx.clone(),
        )),
        tokio::spawn(writer(write_half, outgoing_rx, incoming_tx)),
    ]);
    let mut conn = Conn {
        shared,
        config,
        outgoing,
        pending: HashMap::new(),
        next_id: 1,
        synced: false,
        schema: None,
        probe_sent: false,
    };
    conn.send_internal("get_schema", json!([config.database]), Pending::Schema);

    let probe = config.inactivity_probe;
    let tick = probe.map_or(Duration::from_secs(3600), |p| {
        (p / 4).max(Duration::from_millis(10))
    });
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_rx = Instant::now();

    let error = loop {
        tokio::select! {
            message = incoming.recv() => match message {
                Some(Ok(value)) => {
                    last_rx = Instant::now();
                    conn.probe_sent = false;
                    if let Err(error) = conn.handle(value) {
                        break error;
                    }
                }
                Some(Err(error)) => break error,
                None => break OvsdbError::ConnectionClosed,
            },
            command = commands.recv(), if conn.synced => match command {
                Some(command) => conn.send_command(command),
                None => {
                    conn.fail_pending();
                    return None;
                }
            },
            _ = tokio::time::sleep_until(handshake_deadline), if !conn.synced => {
                break OvsdbError::HandshakeTimeout {
                    endpoint: config.endpoint.to_string(),
                    timeout: config.handshake_timeout,
                };
            }
            _ = ticker.tick(), if probe.is_some() => {
                let Some(probe) = probe else { continue };
                let idle = last_rx.elapsed();
                if conn.probe_sent && idle >= probe * 2 {
                    break OvsdbError::ProbeTimeout { endpoint: config.endpoint.to_string(), idle };
                }
                if !conn.probe_sent && idle >= probe {
                    conn.probe_sent = true;
                    shared.counters.probes_sent.fetch_add(1, Ordering::Relaxed);
                    conn.send_internal("echo", json!([]), Pending::Probe);
                }
            }
        }
    };
    conn.fail_pending();
    Some(SessionEnd {
        synced: conn.synced,
        error,
    })
}

/// Per-connection state of a session.
struct Conn<'a> {
    shared: &'a Shared,
    config: &'a ClientConfig,
    outgoing: mpsc::UnboundedSender<Vec<u8>>,
    pending: HashMap<u64, Pending>,
    next_id: u64,
    synced: bool,
    schema: Option<Arc<DbSchema>>,
    probe_sent: bool,
}

impl Conn<'_> {
    fn send_internal(&mut self, method: &str, params: Value, pending: Pending) {
        let id = self.next_id;
        self.next_id += 1;
        self.pending.insert(id, pending);
        let _ = self.outgoing.send(encode_request(method, &params, id));
    }

    fn send_command(&mut self, command: Command) {
        // A caller that gave up must never see its request run later.
        if command
            .state
            .compare_exchange(QUEUED, SENT, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        let _ = self
            .outgoing
            .send(encode_request(&command.method, &command.params, id));
        self.pending.insert(
            id,
            Pending::Caller {
                method: command.method,
                reply: command.reply,
            },
        );
    }

    fn fail_pending(&mut self) {
        for (_, pending) in self.pending.drain() {
            if let Pending::Caller { method, reply } = pending {
                let _ = reply.send(Err(OvsdbError::Disconnected { method }));
            }
        }
    }

    fn reply(&self, bytes: Vec<u8>) {
        let _ = self.outgoing.send(bytes);
    }

    fn handle(&mut self, value: Value) -> Result<()> {
        match Message::from_value(value)? {
            Message::Request { method, params, id } if method == "echo" => {
                self.shared
                    .counters
                    .echoes_answered
                    .fetch_add(1, Ordering::Relaxed);
                self.reply(encode_response(&id, &params));
            }
            Message::Request { method, id, .. } => {
                tracing::debug!(%method, "ovsdb server sent an unsupported request");
                self.reply(encode_error(&id, "unknown method"));
            }
            Message::Notification { method, params } if method == "update2" => {
                self.apply_update2(&params)?;
            }
            Message::Notification { method, .. } => {
                tracing::debug!(%method, "ignoring ovsdb notification");
            }
            Message::Response { id, result, error } => {
                let Some(pending) = id.as_u64().and_then(|id| self.pending.remove(&id)) else {
                    tracing::warn!(%id, "ovsdb response to an unknown request id");
                    return Ok(());
                };
                self.on_response(pending, result, error)?;
            }
        }
        Ok(())
    }

    fn on_response(&mut self, pending: Pending, result: Value, error: Value) -> Result<()> {
        let failed = |method: &str, error: &Value| OvsdbError::Rpc {
            method: method.to_owned(),
            error: error.to_string(),
        };
        match pending {
            Pending::Caller { method, reply } => {
                let outcome = if error.is_null() {
                    Ok(result)
                } else {
                    Err(failed(&method, &error))
                };
                let _ = reply.send(outcome);
            }
            Pending::Probe => {}
            Pending::Schema => {
                if !error.is_null() {
                    return Err(failed("get_schema", &error));
                }
                let schema = Arc::new(DbSchema::from_json(&result)?);
                if self.config.monitor.is_empty() {
                    self.schema = Some(schema.clone());
                    self.on_synced(schema, None)?;
                } else {
                    let request = self.config.monitor.request(&schema)?;
                    self.schema = Some(schema);
                    self.send_internal(
                        "monitor_cond",
                        json!([self.config.database, MONITOR_ID, request]),
                        Pending::Monitor,
                    );
                }
            }
            Pending::Monitor => {
                if !error.is_null() {
                    return Err(failed("monitor_cond", &error));
                }
                let schema = self.schema.clone().ok_or_else(|| OvsdbError::Protocol {
                    reason: "monitor reply before schema".to_owned(),
                })?;
                self.on_synced(schema, Some(&result))?;
            }
        }
        Ok(())
    }

    fn on_synced(&mut self, schema: Arc<DbSchema>, initial: Option<&Value>) -> Result<()> {
        let mut fresh = Cache::default();
        if let Some(initial) = initial {
            fresh.reset(&self.config.monitor, initial, &schema)?;
        }
        *self
            .shared
            .cache
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
        *self
            .shared
            .schema
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(schema);
        self.synced = true;
        self.shared
            .counters
            .connects
            .fetch_add(1, Ordering::Relaxed);
        let generation = self.shared.bump_generation();
        let _ = self.shared.events.send(CacheEvent::Resynced { generation });
        self.shared.state.send_replace(ConnectionState::Synced);
        tracing::info!(endpoint = %self.config.endpoint, generation, "ovsdb connected and cache in sync");
        Ok(())
    }

    fn apply_update2(&mut self, params: &Value) -> Result<()> {
        let (Some(schema), true) = (self.schema.clone(), self.synced) else {
            return Err(OvsdbError::Protocol {
                reason: "update2 before the monitor was set up".to_owned(),
            });
        };
        let updates = match params.as_array().map(Vec::as_slice) {
            Some([id, updates]) if id == MONITOR_ID => updates,
            _ => {
                return Err(OvsdbError::Protocol {
                    reason: "update2 params are not [\"weft\", updates]".to_owned(),
                })
            }
        };
        let changes = self
            .shared
            .cache
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .apply_update2(updates, &schema)?;
        self.shared.counters.updates.fetch_add(1, Ordering::Relaxed);
        if !changes.is_empty() {
            let generation = self.shared.bump_generation();
            let _ = self.shared.events.send(CacheEvent::Changed {
                generation,
                changes: changes.into(),
            });
        }
        Ok(())
    }
}

/// Reads and frames messages until error or EOF; the last item sent is the error.
async fn reader(
    mut read_half: tokio::io::ReadHalf<super::transport::BoxedStream>,
    max: usize,
    incoming: mpsc::Sender<Result<Value>>,
) {
    let mut framer = Framer::new(max);
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        let n = match read_half.read(&mut chunk).await {
            Ok(0) => {
                let pending = framer.pending();
                let end = if pending > 0 {
                    OvsdbError::TruncatedFrame { pending }
                } else {
                    OvsdbError::ConnectionClosed
                };
                let _ = incoming.send(Err(end)).await;
                return;
            }
            Ok(n) => n,
            Err(e) => {
                let _ = incoming.send(Err(OvsdbError::Io(e))).await;
                return;
            }
        };
        framer.push(&chunk[..n]);
        loop {
            match framer.next_value() {
                Ok(Some(value)) => {
                    if incoming.send(Ok(value)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = incoming.send(Err(e)).await;
                    return;
                }
            }
        }
    }
}

/// Writes queued messages; reports a write error through the incoming channel.
async fn writer(
    mut write_half: tokio::io::WriteHalf<super::transport::BoxedStream>,
    mut outgoing: mpsc::UnboundedReceiver<Vec<u8>>,
    incoming: mpsc::Sender<Result<Value>>,
) {
    while let Some(first) = outgoing.recv().await {
        let mut batch = first;
        while let Ok(more) = outgoing.try_recv() {
            batch.extend_from_slice(&more);
            if batch.len() > READ_CHUNK * 4 {
                break;
            }
        }
        let written = async {
            write_half.write_all(&batch).await?;
            write_half.flush().await
        };
        if let Err(e) = written.await {
            let _ = incoming.send(Err(OvsdbError::Io(e))).await;
            return;
        }
    }
}
