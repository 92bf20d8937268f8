//! Native OVSDB (RFC 7047) client: transact, monitor_cond with update2 into a local cache,
//! echo handling, reconnect with full resync, and typed helpers for the rows Weft owns.
//!
//! Layers, bottom up:
//! - [`datum`], [`schema`], [`ops`], [`cache`], [`rpc`]: pure data and codecs, unit-tested;
//! - [`transport`]: endpoints (`unix:`, `tcp:`, custom connectors);
//! - [`client`]: the connection task, concurrent calls, echo, probe, reconnect and resync;
//! - [`helpers`]: idempotent bridge/port/external_ids operations behind the [`OvsBridgeClient`]
//!   trait;
//! - [`batch`], [`portbatch`]: group commit of concurrent port changes into one transaction.

pub mod batch;
pub mod cache;
pub mod client;
pub mod datum;
pub mod error;
pub mod helpers;
pub mod ops;
pub mod portbatch;
pub mod rpc;
pub mod schema;
pub mod transport;

pub use cache::{Cache, ChangeKind, MonitorSpec, RowChange};
pub use client::{CacheEvent, Client, ClientConfig, ConnectionState, Stats, OPEN_VSWITCH_DB};
pub use datum::{Atom, Datum, Row, Uuid};
pub use error::{OvsdbError, TxError};
pub use helpers::{
    BridgeSpec, DatapathType, FailMode, Ovs, OvsBridgeClient, PortKind, PortSpec, Record,
};
pub use ops::{
    Condition, Function, Mutation, Mutator, OpResult, Operation, TransactOutcome, WaitUntil,
};
pub use portbatch::PortBatcher;
pub use schema::{AtomicType, ColumnType, DbSchema};
pub use transport::{AsyncStream, BoxedStream, Endpoint};
