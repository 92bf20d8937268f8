//! The infrastructure OVS ports the agent converges besides the uplink: the host [`gateway`]
//! (internal port on the fixed OpenFlow port 32769, and its kernel interface) and the
//! [`tunnel`] port (32768, encap only). Each converges OVSDB (and the kernel link) to a pure spec
//! from [`weft_plan`]; both are idempotent. The composition root ([`crate::node`]) calls them at
//! start and on a mode switch.

pub mod gateway;
pub mod tunnel;
