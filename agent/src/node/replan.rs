//! Following the underlay's MTU down while the agent runs.
//!
//! Without `transportMTU` the plan is a function of the transport interface's MTU. The
//! host-state reconciler watches the links facing the underlay (the attached uplink's internal
//! port, which carries the node's name and IP, and the renamed NIC; else the transport
//! interface itself) and reports one seen below the MTU the plan was made for
//! ([`UnderlayLowered`]). The agent then plans again with that MTU ([`replan`], pure) and puts
//! the new plan in force without a restart ([`apply`]):
//! 1. the journal's NIC MTU (attached uplink) and the bridge's `weft-mtu-plan`, so that a
//!    later start plans the same and a detach gives the NIC the lowered MTU;
//! 2. the pod network's plan ([`PodNetwork::replan`]): ADDs under way finish with the old
//!    plan, later ones get the new pod MTU;
//! 3. `mtu_request` of the gateway, tunnel and uplink ports, and the gateway's and uplink's
//!    kernel MTUs (the host-state reconciler keeps them there from then on);
//! 4. every pod surveyed against the new pod MTU: each one off the plan is reported, and fixed
//!    live with `reconcilePodMTU`.
//!
//! It is reported as a warning in the log, a Warning Event `UnderlayMTULowered` on the Node,
//! `weft_mtu_replans_total{result}`, the status's plan and `weftctl check mtu`.
//!
//! A raised MTU is not followed live: on a link Weft owns it is drift (the reconciler, and for
//! an internal port ovs-vswitchd itself, put the planned MTU back), and following a raise the
//! underlay does not carry would drop every full-size packet. Raising needs `transportMTU` (or,
//! without an attached uplink, a restart). An MTU the mode cannot use (e.g. a configured `mtu`
//! that no longer fits) keeps the old plan and is reported as refused.
//!
//! [`PodNetwork::replan`]: crate::cniserver::PodNetwork::replan

use std::collections::BTreeMap;

use super::bootstrap::{
    BootstrapError, Bootstrapped, TransportConfig, TransportPlan, MTU_PLAN_KEY,
};
use crate::config::AgentConfig;
use crate::hoststate::{KubeDriftSink, UnderlayLowered};
use crate::metrics::Metrics;
use crate::mtu::{self, MtuError, MtuInput, MtuPlan};
use crate::netns::Netns;
use crate::ovsdb::{Ovs, OvsBridgeClient, Record};
use crate::ports::gateway;
use crate::ports::tunnel::{self, TunnelSpec};

/// The plan for an underlay whose MTU went down to `lowered`: `None` when the plan does not
/// follow the interface (`transportMTU` is configured), when `lowered` is not below the MTU
/// the plan was made for, or when nothing would change.
pub fn replan(
    current: &TransportPlan,
    tc: &TransportConfig,
    lowered: u32,
) -> Result<Option<MtuPlan>, MtuError> {
    if tc.transport_mtu != 0 || lowered >= current.plan.uplink {
        return Ok(None);
    }
    let plan = mtu::plan(&MtuInput {
        mode: current.mode,
        underlay: current.underlay(),
        transport_mtu: lowered,
        configured_mtu: tc.configured_mtu,
    })?;
    Ok((plan != current.plan).then_some(plan))
}

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The plan before.
    pub from: MtuPlan,
    /// The plan now in force.
    pub to: MtuPlan,
    /// Pods whose MTU differs from the new plan (before any fix).
    pub off_plan: usize,
    /// Pods fixed live (`reconcilePodMTU`).
    pub fixed: usize,
}

/// Puts `plan` (made for the underlay MTU `underlay_mtu`) in force on the running node, in
/// the order of the module docs, and updates `booted` to match. It re-runs bootstrap steps, so
/// it fails as they do; whatever was applied before a failure is applied again next time.
pub async fn apply(
    config: &AgentConfig,
    ovs: &Ovs,
    booted: &mut Bootstrapped,
    plan: MtuPlan,
    underlay_mtu: u32,
) -> Result<Applied, BootstrapError> {
    let from = booted.transport.plan;
    let bridge = &config.ovs_bridge;
    if let Some(spec) = &booted.uplink.uplink {
        crate::uplink::record_nic_mtu(&spec.journal, underlay_mtu)?;
    }
    let recorded = BTreeMap::from([(
        MTU_PLAN_KEY.to_string(),
        serde_json::to_string(&plan).unwrap_or_default(),
    )]);
    ovs.set_external_ids(&Record::Bridge(bridge.clone()), &recorded)
        .await
        .map_err(|source| BootstrapError::Ovsdb {
            bridge: bridge.clone(),
            source,
        })?;
    booted.network.replan(plan).await;
    booted.transport.plan = plan;
    booted.gateway.mtu = plan.gateway;
    gateway::ensure_port(ovs, bridge, &booted.gateway).await?;
    if let Some(spec) = TunnelSpec::desired(config.tunnel_port, booted.transport.mode, &plan) {
        tunnel::ensure(ovs, bridge, &spec).await?;
    }
    let host = Netns::current()?;
    if let Some(spec) = booted.uplink.uplink.as_mut() {
        spec.mtu = plan.uplink;
        let kernel = crate::uplink::Kernel::open(host.clone()).await?;
        crate::uplink::converge(
            ovs,
            booted.network.flows(),
            &kernel,
            spec,
            crate::uplink::Target::Attached,
        )
        .await?;
    }
    let handle = host.rtnetlink().await?;
    gateway::ensure_link(&handle, host.path(), &booted.gateway).await?;
    let (pods, fixed) = crate::uplink::check_pods(
        ovs,
        &host,
        &booted.network.records(),
        plan.pod,
        config.reconcile_pod_mtu,
    )
    .await;
    let off_plan = pods.iter().filter(|p| p.differs()).count();
    booted.uplink.pods = pods;
    booted.uplink.fixed = fixed;
    Ok(Applied {
        from,
        to: plan,
        off_plan,
        fixed: booted.uplink.fixed.len(),
    })
}

/// Follows `lowered` ([`replan`] + [`apply`]) and reports the outcome (log, Event, metric).
/// Returns whether it is settled; `false` (applying failed) asks for another attempt later.
pub async fn follow(
    config: &AgentConfig,
    ovs: &Ovs,
    booted: &mut Bootstrapped,
    lowered: &UnderlayLowered,
    events: &KubeDriftSink,
    metrics: &Metrics,
) -> bool {
    let tc = TransportConfig::from_config(config);
    let plan = match replan(&booted.transport, &tc, lowered.mtu) {
        Ok(Some(plan)) => plan,
        Ok(None) => return true,
        Err(error) => {
            tracing::error!(
                link = %lowered.link, mtu = lowered.mtu, planned = lowered.planned, %error,
                "underlay mtu lowered, but no plan fits it: keeping the old plan"
            );
            events.publish(
                "UnderlayMTURefused",
                "Replan",
                format!(
                    "{} went from MTU {} to {}, but no MTU plan fits it ({error}); the old plan stays",
                    lowered.link, lowered.planned, lowered.mtu
                ),
            );
            metrics.observe_replan("refused");
            return true;
        }
    };
    tracing::warn!(
        link = %lowered.link, mtu = lowered.mtu, planned = lowered.planned,
        from = ?booted.transport.plan, to = ?plan, "underlay mtu lowered: re-planning live"
    );
    match apply(config, ovs, booted, plan, lowered.mtu).await {
        Ok(applied) => {
            tracing::warn!(
                pod_mtu = applied.to.pod, gateway_mtu = applied.to.gateway,
                uplink_mtu = applied.to.uplink, tunnel_mtu = ?applied.to.tunnel,
                pods_off_plan = applied.off_plan, pods_fixed = applied.fixed,
                "mtu plan re-planned for the lowered underlay"
            );
            events.publish(
                "UnderlayMTULowered",
                "Replan",
                format!(
                    "{} went from MTU {} to {}: pod MTU {} -> {}, {} pod(s) off the plan, {} fixed live{}",
                    lowered.link,
                    lowered.planned,
                    lowered.mtu,
                    applied.from.pod,
                    applied.to.pod,
                    applied.off_plan,
                    applied.fixed,
                    if config.reconcile_pod_mtu || applied.off_plan == 0 {
                        ""
                    } else {
                        " (set reconcilePodMTU or recreate them)"
                    }
                ),
            );
            metrics.observe_replan("applied");
            true
        }
        Err(error) => {
            tracing::error!(%error, link = %lowered.link, mtu = lowered.mtu, "cannot put the re-planned mtu in force, will retry");
            metrics.observe_replan("failed");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mtu::{TrafficMode, TunnelType};

    fn current(mode: TrafficMode, address: &str, transport_mtu: u32) -> TransportPlan {
        let address: std::net::IpAddr = address.parse().unwrap();
        let underlay = match address {
            std::net::IpAddr::V4(_) => mtu::Family::Ipv4,
            std::net::IpAddr::V6(_) => mtu::Family::Ipv6,
        };
        TransportPlan {
            mode,
            transport: Some("eth0".into()),
            address: Some(address),
            subnets: vec![],
            plan: mtu::plan(&MtuInput {
                mode,
                underlay,
                transport_mtu,
                configured_mtu: 0,
            })
            .unwrap(),
        }
    }

    fn tc(mode: TrafficMode, transport_mtu: u32, configured_mtu: u32) -> TransportConfig {
        TransportConfig {
            mode,
            interface: String::new(),
            cidrs: vec![],
            transport_mtu,
            configured_mtu,
        }
    }

    #[test]
    fn a_lower_underlay_gives_the_plan_of_that_mtu() {
        let geneve = TrafficMode::Encap(TunnelType::Geneve);
        let now = current(geneve, "192.168.1.10", 1500);
        let plan = replan(&now, &tc(geneve, 0, 0), 1400).unwrap().unwrap();
        assert_eq!((plan.pod, plan.gateway, plan.uplink), (1350, 1350, 1400));
        assert_eq!(plan.tunnel, Some(1350));
        // IPv6 underlay: 20 more.
        let v6 = current(geneve, "2001:db8::10", 1500);
        assert_eq!(
            replan(&v6, &tc(geneve, 0, 0), 1400).unwrap().unwrap().pod,
            1330
        );
        // noEncap: the pods get the underlay's MTU.
        let flat = current(TrafficMode::NoEncap, "192.168.1.10", 1500);
        let plan = replan(&flat, &tc(TrafficMode::NoEncap, 0, 0), 1400)
            .unwrap()
            .unwrap();
        assert_eq!((plan.pod, plan.uplink, plan.tunnel), (1400, 1400, None));
    }

    #[test]
    fn not_lower_or_configured_is_not_followed_and_an_impossible_plan_is_refused() {
        let geneve = TrafficMode::Encap(TunnelType::Geneve);
        let now = current(geneve, "192.168.1.10", 1500);
        assert_eq!(replan(&now, &tc(geneve, 0, 0), 1500), Ok(None));
        assert_eq!(replan(&now, &tc(geneve, 0, 0), 9000), Ok(None));
        // transportMTU configured: the config is the truth.
        assert_eq!(replan(&now, &tc(geneve, 1500, 0), 1400), Ok(None));
        // A configured pod MTU that no longer fits is refused.
        assert!(replan(&now, &tc(geneve, 0, 1450), 1400).is_err());
        // A configured pod MTU that still fits: only the uplink side changes.
        let plan = replan(&now, &tc(geneve, 0, 1300), 1400).unwrap().unwrap();
        assert_eq!((plan.pod, plan.uplink), (1300, 1400));
    }
}
