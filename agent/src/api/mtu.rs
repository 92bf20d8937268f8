//! The MTU report (field reports 1 and 2): every interface Weft manages, its MTU from the plan
//! and the MTU read back: the gateway and pod host veths over netlink in the node's namespace,
//! each pod's interface over netlink inside the pod's namespace, and the tunnel and uplink
//! ports from their OVSDB Interface `mtu` column. Other components add entries through
//! [`MtuSource`].

use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use netlink_packet_route::link::LinkAttribute;
use ovs_flows::pipeline::ports;

use super::types::{MtuEntry, MtuKind, MtuPlanInfo, MtuReport};
use crate::netns::Netns;
use crate::ovsdb::Client;
use weft_plan::record::PodRecord;

/// How many pod namespaces are read at once.
const POD_CONCURRENCY: usize = 8;

/// A component that manages interfaces of its own and reports them in the MTU report.
pub trait MtuSource: Send + Sync {
    /// The component's entries, read now.
    fn entries(&self) -> BoxFuture<'_, Vec<MtuEntry>>;
}

/// The MTU of `name` in the namespace `handle` talks to.
pub async fn link_mtu(handle: &rtnetlink::Handle, name: &str) -> Result<u32, String> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(link)) => link
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Mtu(m) => Some(*m),
                _ => None,
            })
            .ok_or_else(|| format!("interface {name} reports no MTU")),
        Ok(None) => Err(format!("interface {name} not found")),
        Err(rtnetlink::Error::NetlinkError(e))
            if e.to_io().raw_os_error() == Some(nix::errno::Errno::ENODEV as i32) =>
        {
            Err(format!("interface {name} not found"))
        }
        Err(e) => Err(format!("interface {name}: {e}")),
    }
}

fn entry(
    kind: MtuKind,
    interface: &str,
    pod: Option<String>,
    planned: u32,
    source: &str,
    actual: Result<u32, String>,
) -> MtuEntry {
    let (actual, error) = match actual {
        Ok(mtu) => (Some(mtu), None),
        Err(e) => (None, Some(e)),
    };
    MtuEntry {
        kind,
        interface: interface.to_string(),
        pod,
        planned,
        actual,
        source: source.to_string(),
        error,
    }
}

async fn pod_mtu(record: &PodRecord) -> Result<u32, String> {
    if record.netns.is_empty() {
        return Err("pod netns unknown".into());
    }
    let ns = Netns::open(&record.netns).map_err(|e| e.to_string())?;
    let handle = ns.rtnetlink().await.map_err(|e| e.to_string())?;
    link_mtu(&handle, &record.ifname).await
}

/// Reads every managed interface's MTU. `host` talks to the node's namespace; `ovsdb` gives
/// the tunnel and uplink ports (absent until those exist).
pub async fn entries(
    host: &rtnetlink::Handle,
    plan: &MtuPlanInfo,
    gateway: &str,
    pods: &[PodRecord],
    ovsdb: Option<&Client>,
) -> Vec<MtuEntry> {
    let mut out = vec![entry(
        MtuKind::Gateway,
        gateway,
        None,
        plan.gateway,
        "netlink",
        link_mtu(host, gateway).await,
    )];
    if let Some(client) = ovsdb {
        // (ofport, name, mtu, where it came from). A userspace (netdev) tunnel port has no
        // device, so OVSDB shows no `mtu` for it: its `mtu_request` is what the plan set.
        let infra: Vec<(u32, String, Option<i64>, &'static str)> = client.read_cache(|cache| {
            cache
                .table("Interface")
                .filter_map(|(_, row)| {
                    let ofport = u32::try_from(row.get_i64("ofport")?).ok()?;
                    (ofport == ports::TUNNEL
                        || ofport == ports::UPLINK
                        || ofport == ports::HOST_INTERNAL)
                        .then(|| {
                            let (mtu, source) = match row.get_i64("mtu") {
                                Some(mtu) => (Some(mtu), "ovsdb"),
                                None => (row.get_i64("mtu_request"), "ovsdb mtu_request"),
                            };
                            (
                                ofport,
                                row.get_str("name").unwrap_or_default().to_string(),
                                mtu,
                                source,
                            )
                        })
                })
                .collect()
        });
        for (ofport, name, mtu, source) in infra {
            let (kind, planned) = if ofport == ports::TUNNEL {
                (MtuKind::Tunnel, plan.tunnel.unwrap_or(plan.pod))
            } else {
                (MtuKind::Uplink, plan.uplink)
            };
            let actual = mtu
                .and_then(|m| u32::try_from(m).ok())
                .ok_or_else(|| format!("ovsdb has no mtu for {name}"));
            out.push(entry(kind, &name, None, planned, source, actual));
        }
    }
    let per_pod: Vec<Vec<MtuEntry>> = futures::stream::iter(pods.iter().cloned())
        .map(|record| async move {
            let key = Some(record.key());
            vec![
                entry(
                    MtuKind::HostVeth,
                    &record.host_ifname,
                    key.clone(),
                    plan.pod,
                    "netlink",
                    link_mtu(host, &record.host_ifname).await,
                ),
                entry(
                    MtuKind::Pod,
                    &record.ifname,
                    key,
                    plan.pod,
                    "netlink (pod netns)",
                    pod_mtu(&record).await,
                ),
            ]
        })
        .buffered(POD_CONCURRENCY)
        .collect()
        .await;
    out.extend(per_pod.into_iter().flatten());
    out
}

/// Assembles the report from the entries. Pure.
pub fn report(plan: MtuPlanInfo, mut entries: Vec<MtuEntry>) -> MtuReport {
    entries.sort_by(|a, b| (a.kind, &a.pod, &a.interface).cmp(&(b.kind, &b.pod, &b.interface)));
    let mismatches = entries.iter().filter(|e| !e.ok()).count() as u64;
    let mut pods_to_fix: Vec<String> = entries
        .iter()
        .filter(|e| !e.ok())
        .filter_map(|e| e.pod.clone())
        .collect();
    pods_to_fix.sort();
    pods_to_fix.dedup();
    MtuReport {
        plan,
        entries,
        mismatches,
        pods_to_fix,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(
        kind: MtuKind,
        name: &str,
        pod: Option<&str>,
        planned: u32,
        actual: Option<u32>,
    ) -> MtuEntry {
        MtuEntry {
            kind,
            interface: name.into(),
            pod: pod.map(str::to_string),
            planned,
            actual,
            source: "netlink".into(),
            error: None,
        }
    }

    #[test]
    fn report_counts_mismatches_and_names_pods_once() {
        let plan = MtuPlanInfo {
            pod: 1450,
            gateway: 1450,
            tunnel: Some(1450),
            uplink: 1500,
            max_pod: 1450,
        };
        let r = report(
            plan,
            vec![
                e(MtuKind::Pod, "eth0", Some("default/old"), 1450, Some(1500)),
                e(
                    MtuKind::HostVeth,
                    "wfold-x",
                    Some("default/old"),
                    1450,
                    Some(1500),
                ),
                e(MtuKind::Pod, "eth0", Some("default/new"), 1450, Some(1450)),
                e(MtuKind::Gateway, "weft-gw0", None, 1450, Some(1450)),
                e(MtuKind::Pod, "eth0", Some("default/gone"), 1450, None),
            ],
        );
        assert_eq!(r.mismatches, 3);
        assert_eq!(r.pods_to_fix, ["default/gone", "default/old"]);
        assert_eq!(r.entries[0].kind, MtuKind::Gateway);
        assert_eq!(r.entries[1].kind, MtuKind::HostVeth);
    }
}
