//! The uplink attach as pure decisions: the steps an attach or detach runs, the NIC snapshot they
//! start from, which steps a start must (re)run given the journal it finds ([`steps`]), and what
//! a traffic-mode switch changes ([`modeswitch`]). The agent's `uplink` part runs them.

pub mod modeswitch;
pub mod steps;
