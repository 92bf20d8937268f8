//! The one error type of the OVSDB client.

use std::time::Duration;

/// Everything that can go wrong talking to ovsdb-server.
#[derive(Debug, thiserror::Error)]
pub enum OvsdbError {
    /// The endpoint string is neither `unix:PATH` nor `tcp:IP:PORT`.
    #[error("invalid ovsdb endpoint {endpoint:?}: expected unix:PATH or tcp:IP:PORT")]
    InvalidEndpoint {
        /// The rejected endpoint string.
        endpoint: String,
    },
    /// Opening the connection failed.
    #[error("connect to ovsdb endpoint {endpoint} failed: {source}")]
    Connect {
        /// The endpoint we tried.
        endpoint: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Reading or writing the connection failed.
    #[error("ovsdb connection i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent a message larger than the configured bound.
    #[error("ovsdb message exceeds the limit of {limit} bytes")]
    FrameTooLarge {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// The peer sent bytes that are not a JSON object or array.
    #[error("malformed ovsdb message: {reason}")]
    MalformedFrame {
        /// What was wrong.
        reason: String,
    },
    /// The peer closed the connection in the middle of a message.
    #[error("ovsdb connection closed mid-message with {pending} bytes buffered")]
    TruncatedFrame {
        /// Bytes of the incomplete message.
        pending: usize,
    },
    /// The peer closed the connection.
    #[error("ovsdb connection closed by the peer")]
    ConnectionClosed,
    /// A well-formed JSON message that breaks the JSON-RPC/OVSDB protocol.
    #[error("ovsdb protocol violation: {reason}")]
    Protocol {
        /// What was wrong.
        reason: String,
    },
    /// A JSON value could not be read as the OVSDB value expected.
    #[error("invalid ovsdb value for {what}: {reason}")]
    InvalidValue {
        /// The object (column, field) being decoded.
        what: String,
        /// What was wrong.
        reason: String,
    },
    /// Our inactivity probe (echo) got no answer.
    #[error("ovsdb peer {endpoint} silent for {idle:?} despite an echo probe")]
    ProbeTimeout {
        /// The endpoint.
        endpoint: String,
        /// How long the peer was silent.
        idle: Duration,
    },
    /// Connecting and setting up the monitor took too long.
    #[error("ovsdb handshake with {endpoint} did not finish within {timeout:?}")]
    HandshakeTimeout {
        /// The endpoint.
        endpoint: String,
        /// The configured bound.
        timeout: Duration,
    },
    /// The connection dropped while the request was in flight; it may or may not have executed.
    #[error("ovsdb connection lost while {method} was in flight; its outcome is unknown")]
    Disconnected {
        /// The RPC method.
        method: String,
    },
    /// No connection became available within the call timeout; the request was never sent.
    #[error("ovsdb {method} was not sent: no connection within {waited:?}")]
    NotConnected {
        /// The RPC method.
        method: String,
        /// How long the call waited.
        waited: Duration,
    },
    /// The request was sent but no reply arrived within the call timeout; outcome unknown.
    #[error("ovsdb {method} got no reply within {timeout:?}; its outcome is unknown")]
    Timeout {
        /// The RPC method.
        method: String,
        /// The call timeout.
        timeout: Duration,
    },
    /// The client was shut down.
    #[error("ovsdb client is shut down")]
    Closed,
    /// The server answered the RPC with an error (not a transaction op error).
    #[error("ovsdb server rejected {method}: {error}")]
    Rpc {
        /// The RPC method.
        method: String,
        /// The error member, as JSON text.
        error: String,
    },
    /// One operation of a transaction failed.
    #[error(transparent)]
    Transaction(Box<TxError>),
    /// All operations succeeded but the commit failed (e.g. an index or referential violation).
    #[error("ovsdb transaction commit failed: {error}{}", details.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    CommitFailed {
        /// The error string, e.g. `constraint violation`.
        error: String,
        /// The server's details, if any.
        details: Option<String>,
    },
    /// A monitored table is missing from the server's schema.
    #[error("ovsdb schema of database {database} has no table {table}")]
    UnknownTable {
        /// The database.
        database: String,
        /// The missing table.
        table: String,
    },
    /// A row a helper needs does not exist.
    #[error("ovsdb {table} row {name} does not exist")]
    RowNotFound {
        /// The table.
        table: String,
        /// The row's name (or `*` for the root row).
        name: String,
    },
    /// OVS failed to set up an interface (its `error` column or `ofport` -1).
    #[error("interface {interface} failed in ovs: {error}")]
    InterfaceFailed {
        /// The interface name.
        interface: String,
        /// The `error` column, or a description.
        error: String,
    },
    /// No ofport was assigned in time.
    #[error("interface {interface} got no ofport within {timeout:?}")]
    OfportTimeout {
        /// The interface name.
        interface: String,
        /// The bound waited.
        timeout: Duration,
    },
    /// An optimistic helper transaction kept racing with other writers.
    #[error("ovsdb {what} kept conflicting with concurrent writers after {attempts} attempts")]
    Conflict {
        /// The object being ensured.
        what: String,
        /// Attempts made.
        attempts: u32,
    },
}

/// A failed operation inside a transaction, as reported by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxError {
    /// Index of the failed operation in the transaction.
    pub op_index: usize,
    /// The operation kind (`insert`, `update`, ...).
    pub op: &'static str,
    /// The table the operation targeted, if any.
    pub table: Option<String>,
    /// The error string, e.g. `constraint violation`, `unknown column`, `timed out`.
    pub error: String,
    /// The server's details text, if any.
    pub details: Option<String>,
    /// The column concerned, when it can be told from the error.
    pub column: Option<String>,
}

impl std::fmt::Display for TxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ovsdb transaction op {} ({}", self.op_index, self.op)?;
        if let Some(table) = &self.table {
            write!(f, " on table {table}")?;
        }
        if let Some(column) = &self.column {
            write!(f, ", column {column}")?;
        }
        write!(f, ") failed: {}", self.error)?;
        if let Some(details) = &self.details {
            write!(f, ": {details}")?;
        }
        Ok(())
    }
}

impl std::error::Error for TxError {}

impl OvsdbError {
    /// The transaction op error, if this is one.
    pub fn tx_error(&self) -> Option<&TxError> {
        match self {
            OvsdbError::Transaction(e) => Some(e),
            _ => None,
        }
    }

    pub(crate) fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        OvsdbError::InvalidValue {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

/// Result alias for this module.
pub type Result<T, E = OvsdbError> = std::result::Result<T, E>;
