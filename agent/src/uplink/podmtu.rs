//! Pods whose MTU differs from the plan (field report 2: after an encap -> noEncap switch the
//! old pods keep 1450): [`survey`] reads both veth ends of every pod from the kernel and
//! returns one [`PodMtu`] per pod (the structured report behind the log lines, agent status,
//! metrics and `weftctl`); [`fix`] sets both ends and the OVS port's `mtu_request` to the plan
//! (config `reconcilePodMTU: true`). Only whole pairs are changed: a host end above its pod end
//! would just move the drop from one side to the other.

use crate::iface::link::get_by_name;
use crate::netns::{Netns, NetnsError};
use crate::ovsdb::{Condition, Operation, Ovs, OvsdbError, Row};
use weft_plan::record::PodRecord;

/// Errors of the pod MTU survey and repair.
#[derive(Debug, thiserror::Error)]
pub enum PodMtuError {
    /// A namespace could not be opened.
    #[error("pod {pod}: {source}")]
    Netns {
        /// `namespace/name`.
        pod: String,
        /// Why.
        source: NetnsError,
    },
    /// A netlink request failed.
    #[error("pod {pod}: cannot {action} interface {ifname}: {reason}")]
    Kernel {
        /// `namespace/name`.
        pod: String,
        /// What was attempted.
        action: String,
        /// The interface.
        ifname: String,
        /// Why.
        reason: String,
    },
    /// OVSDB refused the new `mtu_request`.
    #[error("pod {pod}: cannot set mtu_request {mtu} on port {port}: {source}")]
    Ovsdb {
        /// `namespace/name`.
        pod: String,
        /// The port.
        port: String,
        /// The MTU.
        mtu: u32,
        /// Why.
        source: OvsdbError,
    },
}

/// One pod's MTUs against the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodMtu {
    /// `namespace/name`.
    pub pod: String,
    /// The pod's network namespace path.
    pub netns: String,
    /// The interface inside the pod.
    pub ifname: String,
    /// The host end (and OVS port).
    pub host_ifname: String,
    /// The pod end's MTU (`None`: not readable, e.g. the sandbox is gone).
    pub pod_mtu: Option<u32>,
    /// The host end's MTU.
    pub host_mtu: Option<u32>,
    /// The plan's pod MTU.
    pub planned: u32,
}

impl PodMtu {
    /// Whether a readable end differs from the plan.
    pub fn differs(&self) -> bool {
        [self.pod_mtu, self.host_mtu]
            .iter()
            .any(|m| m.is_some_and(|m| m != self.planned))
    }
}

/// Reads both ends of every pod; returns every pod (filter with [`PodMtu::differs`]).
pub async fn survey(host: &Netns, pods: &[PodRecord], planned: u32) -> Vec<PodMtu> {
    let host_nl = host.rtnetlink().await.ok();
    let mut out = Vec::with_capacity(pods.len());
    for pod in pods {
        let host_mtu = match &host_nl {
            Some(nl) => get_by_name(nl, host.path(), &pod.host_ifname)
                .await
                .ok()
                .flatten()
                .and_then(|l| l.mtu),
            None => None,
        };
        let pod_mtu = match Netns::open(&pod.netns) {
            Ok(ns) => match ns.rtnetlink().await {
                Ok(nl) => get_by_name(&nl, ns.path(), &pod.ifname)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|l| l.mtu),
                Err(_) => None,
            },
            Err(_) => None,
        };
        out.push(PodMtu {
            pod: pod.key(),
            netns: pod.netns.clone(),
            ifname: pod.ifname.clone(),
            host_ifname: pod.host_ifname.clone(),
            pod_mtu,
            host_mtu,
            planned,
        });
    }
    out
}

/// Sets the pod end, the host end and the OVS port's `mtu_request` of `pod` to the plan.
pub async fn fix(ovs: &Ovs, host: &Netns, pod: &PodMtu) -> Result<(), PodMtuError> {
    let kernel = |action: &str, ifname: &str, reason: String| PodMtuError::Kernel {
        pod: pod.pod.clone(),
        action: action.to_string(),
        ifname: ifname.to_string(),
        reason,
    };
    let ns = Netns::open(&pod.netns).map_err(|source| PodMtuError::Netns {
        pod: pod.pod.clone(),
        source,
    })?;
    for (ns, ifname) in [(&ns, &pod.ifname), (host, &pod.host_ifname)] {
        let nl = ns.rtnetlink().await.map_err(|source| PodMtuError::Netns {
            pod: pod.pod.clone(),
            source,
        })?;
        let link = get_by_name(&nl, ns.path(), ifname)
            .await
            .map_err(|e| kernel("look up", ifname, e.to_string()))?
            .ok_or_else(|| kernel("find", ifname, "no such interface".into()))?;
        nl.link()
            .set(
                rtnetlink::LinkUnspec::new_with_index(link.index)
                    .mtu(pod.planned)
                    .build(),
            )
            .execute()
            .await
            .map_err(|e| {
                kernel(
                    &format!("set mtu {} on", pod.planned),
                    ifname,
                    e.to_string(),
                )
            })?;
    }
    ovs.client()
        .transact(vec![Operation::update(
            "Interface",
            vec![Condition::eq("name", pod.host_ifname.as_str())],
            Row::new().with("mtu_request", i64::from(pod.planned)),
        )])
        .await
        .map_err(|source| PodMtuError::Ovsdb {
            pod: pod.pod.clone(),
            port: pod.host_ifname.clone(),
            mtu: pod.planned,
            source,
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(pod_mtu: Option<u32>, host_mtu: Option<u32>) -> PodMtu {
        PodMtu {
            pod: "default/dns".into(),
            netns: "/run/netns/x".into(),
            ifname: "eth0".into(),
            host_ifname: "wfdns-abc".into(),
            pod_mtu,
            host_mtu,
            planned: 1500,
        }
    }

    #[test]
    fn a_readable_end_off_plan_differs() {
        assert!(!pod(Some(1500), Some(1500)).differs());
        assert!(pod(Some(1450), Some(1450)).differs());
        assert!(pod(Some(1450), Some(1500)).differs());
        assert!(pod(None, Some(1450)).differs());
        assert!(!pod(None, None).differs());
    }
}
