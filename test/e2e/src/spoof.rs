//! Controls for the SpoofGuard proofs: a test that forged packets go unanswered can only fail
//! if, without SpoofGuard, the same packets would be answered. [`Bypass`] takes SpoofGuard away
//! from one pod's port on a running node, so a test can send the same forged packets through
//! the weakened pipeline and demonstrate that its checks catch them.

use anyhow::{ensure, Context, Result};
use ovs_flows::pipeline::{tables, Registry};

use crate::node::{Node, BRIDGE};

/// Cookie of the bypass flows. Its category bits are 0, no Weft category: the agent's sweep of
/// stale rounds never deletes them, and they are told apart from the agent's own flows.
pub const BYPASS_COOKIE: u64 = 0x5b_0f_fa_ce;

/// Above every priority the pipeline uses (`priority::EXCEPTION` is 210).
const BYPASS_PRIORITY: u16 = 300;

/// SpoofGuard removed for one pod's port on a running node (for control runs only).
pub struct Bypass<'a> {
    node: &'a Node,
    ofport: u32,
    tables: [u8; 2],
    flows: usize,
}

/// The OpenFlow port of bridge interface `iface` (a pod's host veth).
pub fn ofport(node: &Node, iface: &str) -> Result<u32> {
    let out = node.ovs.vsctl(&["get", "Interface", iface, "ofport"])?;
    out.trim()
        .parse()
        .with_context(|| format!("ofport of {iface}: {out:?}"))
}

impl<'a> Bypass<'a> {
    /// Deletes the ARPSpoofGuard and SpoofGuard flows of the pod on host interface `spoofer`
    /// and lets everything its port sends through both tables unchecked: a pipeline without
    /// SpoofGuard for that pod. With `forward_to` (another pod's host interface), the spoofer's
    /// ARP and IPv6 neighbor advertisements are also output to that port, as a switch that
    /// forwards announcements would (the pipeline never does), so a forged announcement reaches
    /// that pod's neighbour cache.
    pub fn install(node: &'a Node, spoofer: &str, forward_to: Option<&str>) -> Result<Self> {
        let reg = Registry::wave1();
        let (arp_guard, arp_next) = (
            reg.number(&tables::ARP_SPOOF_GUARD),
            reg.number(&tables::ARP_RESPONDER),
        );
        let ip_guard = reg.number(&tables::SPOOF_GUARD);
        let ip_next = reg
            .next(&tables::SPOOF_GUARD)
            .context("no table after SpoofGuard")?;
        let port = ofport(node, spoofer)?;
        let copy = match forward_to {
            Some(iface) => format!("output:{},", ofport(node, iface)?),
            None => String::new(),
        };
        for table in [arp_guard, ip_guard] {
            node.ovs.ofctl(&[
                "del-flows",
                BRIDGE,
                &format!("table={table},in_port={port}"),
            ])?;
        }
        let head = |table: u8, prio: u16| {
            format!("cookie={BYPASS_COOKIE:#x},table={table},priority={prio},in_port={port}")
        };
        let mut flows = vec![
            format!(
                "{},arp,actions={copy}goto_table:{arp_next}",
                head(arp_guard, BYPASS_PRIORITY)
            ),
            format!(
                "{},ip,actions=goto_table:{ip_next}",
                head(ip_guard, BYPASS_PRIORITY)
            ),
            format!(
                "{},ipv6,actions=goto_table:{ip_next}",
                head(ip_guard, BYPASS_PRIORITY)
            ),
        ];
        if !copy.is_empty() {
            flows.push(format!(
                "{},icmp6,icmp_type=136,actions={copy}goto_table:{ip_next}",
                head(ip_guard, BYPASS_PRIORITY + 1)
            ));
        }
        for flow in &flows {
            node.ovs.ofctl(&["add-flow", BRIDGE, flow])?;
        }
        let bypass = Bypass {
            node,
            ofport: port,
            tables: [arp_guard, ip_guard],
            flows: flows.len(),
        };
        bypass.check_installed()?;
        Ok(bypass)
    }

    /// Fails unless the port's guard tables hold exactly the bypass flows: the agent has not
    /// restored SpoofGuard behind the control's back (call it after the control's checks).
    pub fn check_installed(&self) -> Result<()> {
        let mut found = Vec::new();
        for table in self.tables {
            let filter = format!("table={table},in_port={}", self.ofport);
            let out = self
                .node
                .ovs
                .ofctl(&["--no-stats", "dump-flows", BRIDGE, &filter])?;
            found.extend(
                out.lines()
                    .map(str::trim)
                    .filter(|l| {
                        !l.is_empty() && !l.starts_with("OFPST_") && !l.starts_with("NXST_")
                    })
                    .map(str::to_string),
            );
        }
        let ours = format!("cookie={BYPASS_COOKIE:#x},");
        ensure!(
            found.len() == self.flows && found.iter().all(|f| f.starts_with(&ours)),
            "SpoofGuard bypass on ofport {} changed under the control: {found:#?}",
            self.ofport
        );
        Ok(())
    }
}
