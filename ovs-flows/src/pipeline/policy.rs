//! NetworkPolicy flows (issue 15): the EgressSecurity and IngressSecurity stages, built from
//! the compiler's output ([`weft_plan::policy::CompiledPolicy`]). docs/networkpolicy.md.

use weft_plan::policy::CompiledPolicy;

use super::NodeConfig;
use crate::flow::Flow;
use crate::ofp::FlowMod;

/// Every policy flow of `policy` (cookie category Policy, round `cfg.round`).
pub fn flows(cfg: &NodeConfig, policy: &CompiledPolicy) -> Vec<Flow> {
    let _ = (cfg, policy);
    Vec::new()
}

/// What changes between two compiled policies, as flows: install it in one bundle
/// ([`PolicyDiff::flow_mods`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyDiff {
    /// Flows that are new.
    pub add: Vec<Flow>,
    /// Flows whose match exists with other actions (modified in place, counters kept).
    pub modify: Vec<Flow>,
    /// Flows that are gone.
    pub delete: Vec<Flow>,
}

impl PolicyDiff {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.modify.is_empty() && self.delete.is_empty()
    }

    /// The flow-mods, deletes first (strict deletes, strict modifies, adds).
    pub fn flow_mods(&self) -> Vec<FlowMod> {
        let mut mods: Vec<FlowMod> = self
            .delete
            .iter()
            .cloned()
            .map(FlowMod::delete_strict)
            .collect();
        mods.extend(self.modify.iter().cloned().map(FlowMod::modify_strict));
        mods.extend(self.add.iter().cloned().map(FlowMod::add));
        mods
    }
}

/// The flow changes from `old` to `new`, touching only flows whose match or actions differ.
pub fn diff(cfg: &NodeConfig, old: &CompiledPolicy, new: &CompiledPolicy) -> PolicyDiff {
    let _ = (cfg, old, new);
    PolicyDiff::default()
}
