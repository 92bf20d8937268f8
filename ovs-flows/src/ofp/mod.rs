//! A native OpenFlow 1.5 client for Open vSwitch.
//!
//! [`Client`] speaks to one bridge over its management socket (`unix:RUNDIR/BRIDGE.mgmt`), a
//! TCP controller target, or any stream a [`Connector`] opens. One task owns the socket; any
//! number of tasks issue requests concurrently through cheap [`Client`] clones. The client
//! reconnects with capped exponential backoff and runs the [`Client::on_reconnect`] hook
//! (replay the flows) before other requests resume.
//!
//! OVS 3.1 behaviour this client relies on (each point is exercised by the `ofp_*` tests):
//! - Bundles: OVS validates a bundled flow-mod partly when it is added (decoding, match
//!   prerequisites, `goto_table` backwards: the error carries the add message's xid) and partly
//!   at commit (switch state such as a missing group: the error carries the add message's xid,
//!   then the commit fails with `OFPBFC_MSG_FAILED`). Error data holds the whole
//!   `OFPT_BUNDLE_ADD_MESSAGE` with the flow-mod inside. A refused add does not spoil the
//!   bundle, so [`Client::bundle`] sends a barrier after the adds and commits only if no add
//!   was refused (otherwise it discards the bundle).
//! - Asynchronous messages: the management socket is an OVS "service" connection, which gets
//!   packet-ins and port-status only after an `OFPT_SET_CONFIG` with a nonzero miss-send
//!   length; the client sends one in the handshake ([`ClientConfig::async_messages`]). Packets
//!   that entered the pipeline from a packet-out come back with reason `PacketOut`.
//!
//! Layers: [`wire`] (header, framing, small fixed messages), [`messages`] (flow-mod, flow
//! statistics, packet-in/out, port-status), [`ofperr`] (error messages and their names), the
//! connection (handshake and session loop) and the client API.

mod client;
mod conn;
pub mod endpoint;
pub mod messages;
pub mod ofperr;
pub mod wire;

pub use client::{
    BundleFailure, Client, ClientConfig, ClientError, ClientStats, Event, FailureStage, Keepalive,
};
pub use conn::ConnError;
pub use endpoint::{BoxStream, ConnectFuture, Connector, Endpoint, EndpointError};
pub use messages::{
    FlowEntry, FlowMod, FlowModCommand, FlowStats, FlowStatsRequest, PacketIn, PacketInReason,
    PacketOut, PortDesc, PortReason, PortStatus,
};
pub use ofperr::{ErrorKind, OfpError};
pub use wire::{port, Features, GROUP_ANY, NO_BUFFER, TABLE_ALL};
