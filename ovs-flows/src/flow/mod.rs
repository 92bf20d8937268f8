//! The flow model: [`Flow`], [`Match`], [`Action`], printed exactly as
//! `ovs-ofctl -O OpenFlow15 --no-stats dump-flows` prints them, so tests and `weftctl` compare
//! readable text.

mod action;
pub mod ct_state;
mod field;
mod matches;
mod text;

use std::fmt;

pub use action::{
    canonical_order, learn_flags, Action, ActionList, Controller, Ct, CtZone, Learn, LearnSpec,
    Nat, NatKind, PacketInReason,
};
pub use field::{
    port, Field, MacAddr, SubField, OXM_CLASS_ERICOXM_OF, OXM_CLASS_NXM0, OXM_CLASS_NXM1,
    OXM_CLASS_OPENFLOW_BASIC, OXM_CLASS_PACKET_REGS,
};
pub use matches::Match;

/// OpenFlow's default flow priority (not printed by OVS).
pub const DEFAULT_PRIORITY: u16 = 0x8000;

/// One OpenFlow flow entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    /// Flow table.
    pub table: u8,
    /// Priority (higher wins).
    pub priority: u16,
    /// Opaque cookie (Weft puts the restart round and category here).
    pub cookie: u64,
    /// Seconds of inactivity before removal (0 = never).
    pub idle_timeout: u16,
    /// Seconds before removal (0 = never).
    pub hard_timeout: u16,
    /// What the flow matches.
    pub matches: Match,
    /// What the flow does; empty = drop.
    pub actions: Vec<Action>,
}

impl Default for Flow {
    fn default() -> Self {
        Flow {
            table: 0,
            priority: DEFAULT_PRIORITY,
            cookie: 0,
            idle_timeout: 0,
            hard_timeout: 0,
            matches: Match::default(),
            actions: Vec::new(),
        }
    }
}

impl fmt::Display for Flow {
    /// E.g. `cookie=0x55, table=2, idle_timeout=3, priority=1,ip actions=drop`, as
    /// `ovs-ofctl --no-stats dump-flows` prints it (leading space trimmed).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.cookie != 0 {
            write!(f, "cookie={:#x}, ", self.cookie)?;
        }
        if self.table != 0 {
            write!(f, "table={}, ", self.table)?;
        }
        if self.idle_timeout != 0 {
            write!(f, "idle_timeout={}, ", self.idle_timeout)?;
        }
        if self.hard_timeout != 0 {
            write!(f, "hard_timeout={}, ", self.hard_timeout)?;
        }
        let mut m = String::new();
        if self.priority != DEFAULT_PRIORITY {
            m.push_str(&format!("priority={}", self.priority));
        }
        let matches = self.matches.to_string();
        if !matches.is_empty() {
            if !m.is_empty() {
                m.push(',');
            }
            m.push_str(&matches);
        }
        if !m.is_empty() {
            write!(f, "{m} ")?;
        }
        write!(f, "actions={}", ActionList(&self.actions))
    }
}
