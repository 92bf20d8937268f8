//! The node's uplink on the OVS bridge, crash-safe.
//!
//! Attaching puts the node's NIC (e.g. `eth0`) into the bridge on the fixed OpenFlow port
//! [`ports::UPLINK`] under the name [`steps::renamed_nic`] (`eth0~`), and gives its name, MAC,
//! addresses and routes to an OVS internal port on [`ports::HOST_INTERNAL`], so the host keeps
//! `eth0` while its traffic crosses the bridge (flows: `ovs_flows::pipeline::uplink`). Both get
//! an explicit `mtu_request` from the MTU plan (the transport MTU, never a minimum over the
//! bridge's ports: field report 2).
//!
//! Crash safety: the NIC is snapshotted into a journal under `dataDir` ([`journal`]) before
//! anything changes, and every step ([`AttachStep`], [`DetachStep`]) is idempotent and
//! journaled once done. A start reads the journal and converges on the target it wants
//! ([`steps::plan_steps`]): a half-done attach is finished (or undone if the uplink is no longer
//! wanted), a half-done detach is finished (or turned back into an attach). Every step re-runs
//! safely whether the crash came before or after its journal entry; tests prove it by stopping
//! at every step ([`CrashPoint`]) and then converging.
//!
//! Side effects go through [`Ovs`] (OVSDB), [`UplinkFlows`] (OpenFlow) and [`system::Kernel`]
//! (rtnetlink in a namespace handle), so tests drive the same code inside network namespaces.

pub mod effects;
#[cfg(any(test, feature = "test-util"))]
pub mod fake;
pub mod journal;
pub mod podmtu;
#[cfg(test)]
mod run_tests;
pub mod system;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use ovs_flows::flow::Flow;
use ovs_flows::pipeline::ports;

pub use effects::{UplinkKernel, UplinkOvs};
pub use journal::{Journal, JournalError, Operation};
pub use system::Kernel;
pub use weft_plan::uplink::steps::{
    renamed_nic, AttachStep, DetachStep, NicSnapshot, StepPlan, Target,
};
pub use weft_plan::uplink::{modeswitch, steps};

use crate::netns::NetnsError;
use crate::ovsdb::{Ovs, OvsdbError, PortKind, PortSpec};
use steps::Found;
pub use weft_plan::names::UPLINK_OF_KEY;
use weft_plan::names::{MODE_KEY, MTU_PLAN_KEY, OWNER_KEY, OWNER_VALUE, TUNNEL_PORT};
use weft_plan::MacAddr;

/// How long OVS may take to give a port its ofport and kernel device, or remove it.
const APPEAR_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of the uplink attach and detach; each names the interface and what was attempted.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    /// The journal could not be read or written.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The NIC to attach does not exist.
    #[error("uplink nic {name} does not exist in netns {netns}")]
    NoNic {
        /// The name looked for.
        name: String,
        /// The namespace.
        netns: PathBuf,
    },
    /// The NIC recorded in the journal is gone (its index no longer exists).
    #[error("uplink nic {name} (index {index}) recorded in the journal is gone")]
    NicGone {
        /// Its original name.
        name: String,
        /// Its recorded index.
        index: u32,
    },
    /// A name the attach needs is held by another interface.
    #[error("interface name {name} is taken by another interface (index {index})")]
    NameTaken {
        /// The name.
        name: String,
        /// The other interface's index.
        index: u32,
    },
    /// A netlink request failed.
    #[error("cannot {action} interface {ifname} in netns {netns}: {source}")]
    Kernel {
        /// What was attempted.
        action: String,
        /// The interface.
        ifname: String,
        /// The namespace.
        netns: PathBuf,
        /// The kernel's answer.
        source: std::io::Error,
    },
    /// A sysctl could not be written.
    #[error("cannot set sysctl {key}={value} in netns {netns}: {source}")]
    Sysctl {
        /// The key below /proc/sys.
        key: String,
        /// The value.
        value: String,
        /// The namespace.
        netns: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The namespace could not be used.
    #[error(transparent)]
    Netns(NetnsError),
    /// OVSDB failed.
    #[error("uplink port {port}: {source}")]
    Ovsdb {
        /// The port.
        port: String,
        /// Why.
        source: OvsdbError,
    },
    /// OVS gave a port another OpenFlow port than its fixed one.
    #[error("port {port} got ofport {got}, expected {want} (another port holds it?)")]
    WrongOfport {
        /// The port.
        port: String,
        /// What OVS assigned.
        got: u32,
        /// The fixed port.
        want: u32,
    },
    /// A kernel device did not appear or disappear in time.
    #[error("interface {ifname} did not {what} in netns {netns} within {timeout:?}")]
    Timeout {
        /// The interface.
        ifname: String,
        /// `appear`, `disappear` or `leave OVS's datapath`.
        what: &'static str,
        /// The namespace.
        netns: PathBuf,
        /// How long we waited.
        timeout: Duration,
    },
    /// The tunnel port of the previous mode could not be removed.
    #[error(transparent)]
    Tunnel(#[from] crate::ports::tunnel::TunnelError),
    /// The uplink flows could not be installed.
    #[error("cannot install the uplink flows: {0}")]
    Flows(String),
    /// The MAC recorded in the journal does not parse.
    #[error("journal records unusable mac {mac:?} for nic {name}")]
    BadMac {
        /// The NIC.
        name: String,
        /// The text.
        mac: String,
    },
}

/// Installs the uplink's flows. Guarantee: all-or-nothing (one bundle), idempotent, and the
/// flows stay installed across OpenFlow reconnects (the implementation replays them).
pub trait UplinkFlows: Send + Sync {
    /// Installs `flows` (and keeps them).
    fn install(&self, flows: Vec<Flow>) -> impl Future<Output = Result<(), String>> + Send;
}

impl UplinkFlows for ovs_flows::ofp::Client {
    async fn install(&self, flows: Vec<Flow>) -> Result<(), String> {
        self.bundle(&ovs_flows::pipeline::add_all(flows))
            .await
            .map_err(|e| e.to_string())
    }
}

impl UplinkFlows for crate::flows::FlowSet {
    async fn install(&self, flows: Vec<Flow>) -> Result<(), String> {
        self.install_static(flows).await.map_err(|e| e.to_string())
    }
}

/// What the attach needs to know.
#[derive(Debug, Clone)]
pub struct UplinkSpec {
    /// The NIC's name (the transport interface): the internal port keeps it.
    pub nic: String,
    /// The bridge.
    pub bridge: String,
    /// The plan's uplink MTU: `mtu_request` of both ports and the MTU of both devices.
    pub mtu: u32,
    /// The journal file (`dataDir/uplink-journal.json`).
    pub journal: PathBuf,
    /// The flows between the uplink and the host internal port (`uplink_flows`).
    pub flows: Vec<Flow>,
}

/// Whether the journal entry of a step is written when a run stops there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Journaled {
    /// Stop after the step's effect, before its journal entry (a kill mid-step).
    Before,
    /// Stop right after its journal entry.
    After,
}

/// Where a run stops as if killed: the test hook that proves crash safety. `None` in
/// production.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// After an attach step.
    Attach(AttachStep, Journaled),
    /// After a detach step.
    Detach(DetachStep, Journaled),
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// What the journal called for.
    pub plan: StepPlan,
    /// The steps run, in order (`attach:<step>` / `detach:<step>`).
    pub ran: Vec<String>,
    /// Whether the run stopped at its crash point.
    pub stopped: bool,
}

/// Converges the node on `target` from whatever the journal and the system say. The normal
/// entry point at agent start (`Target::Attached` when the mode wants the uplink) and at
/// `--restore-uplink` shutdown (`Target::Detached`).
pub async fn converge(
    ovs: &impl UplinkOvs,
    flows: &impl UplinkFlows,
    kernel: &impl UplinkKernel,
    spec: &UplinkSpec,
    target: Target,
) -> Result<Outcome, UplinkError> {
    converge_until(ovs, flows, kernel, spec, target, None).await
}

/// [`converge`], stopping at `crash` as if the process had been killed there.
pub async fn converge_until(
    ovs: &impl UplinkOvs,
    flows: &impl UplinkFlows,
    kernel: &impl UplinkKernel,
    spec: &UplinkSpec,
    target: Target,
    crash: Option<CrashPoint>,
) -> Result<Outcome, UplinkError> {
    let existing = journal::load(&spec.journal)?;
    let boot = journal::boot_id();
    let found = match &existing {
        None => Found::Nothing,
        Some(j) => {
            let same_boot = j.boot_id == boot;
            match j.operation {
                Operation::Attach => Found::Attach { same_boot },
                Operation::Detach => Found::Detach { same_boot },
            }
        }
    };
    let step_plan = steps::plan_steps(found, target);
    let mut run = Run {
        ovs,
        flows,
        kernel,
        spec,
        crash,
        outcome: Outcome {
            plan: step_plan.clone(),
            ran: Vec::new(),
            stopped: false,
        },
    };
    match (step_plan, existing) {
        (StepPlan::Nothing, _) => {}
        (StepPlan::FreshAttach, old) => {
            if let Some(old) = old {
                run.forget(&old).await?;
            }
            run.fresh_attach(boot).await?;
        }
        (StepPlan::ResumeAttach, Some(j)) => run.attach(j).await?,
        (StepPlan::Detach, Some(j)) => run.detach(j).await?,
        (StepPlan::ForgetAfterReboot, Some(j)) => {
            run.forget(&j).await?;
            journal::remove(&spec.journal)?;
        }
        // plan_steps gives these only with a journal.
        (StepPlan::ResumeAttach | StepPlan::Detach | StepPlan::ForgetAfterReboot, None) => {}
    }
    Ok(run.outcome)
}

/// The NIC snapshot of the journal in `data_dir`, if an attach or detach is recorded: its
/// MTU is the transport MTU the plan starts from while the NIC is attached.
pub fn recorded_nic(journal: &std::path::Path) -> Option<NicSnapshot> {
    journal::load(journal).ok().flatten().map(|j| j.nic)
}

/// Records `mtu` as the NIC's MTU in the journal (the underlay went down to it while the NIC
/// was attached): later starts plan from it, and a detach gives it back to the NIC. Nothing is
/// written without a journal.
pub fn record_nic_mtu(journal: &std::path::Path, mtu: u32) -> Result<(), UplinkError> {
    if let Some(mut j) = journal::load(journal)? {
        if j.nic.mtu != mtu {
            j.nic.mtu = mtu;
            journal::store(journal, &j)?;
        }
    }
    Ok(())
}

/// Run before the agent needs the network (the API server may well be reached through this
/// NIC): an attach or detach that this boot's journal shows unfinished is undone, back to the
/// plain NIC with its name, addresses and routes; so is a finished attach that ovs-vswitchd's
/// restart while the agent was down left unusable (`userspace_datapath` with flow-restore-wait
/// still set, or the node's addresses gone from the internal port). A crash mid-attach (e.g. after the rename,
/// with the node IP on a NIC that no longer answers ARP) must not cut the agent off from the
/// API server it needs before it can converge. A finished attach is left alone (restarts keep
/// the datapath); the bootstrap attaches again when the mode wants it.
pub async fn recover_unfinished(
    ovs: &Ovs,
    host: &crate::netns::Netns,
    data_dir: &std::path::Path,
    bridge: &str,
    userspace_datapath: bool,
) -> Result<Option<Outcome>, UplinkError> {
    let path = journal::path_in(data_dir);
    let Some(j) = journal::load(&path)? else {
        return Ok(None);
    };
    let finished =
        j.operation == Operation::Attach && AttachStep::ALL.iter().all(|s| j.attach.contains(s));
    if j.boot_id != journal::boot_id() {
        return Ok(None);
    }
    let kernel = Kernel::open(host.clone()).await?;
    if finished {
        // A finished attach on a userspace datapath that ovs-vswitchd restarted while the agent
        // was down (a DaemonSet rolling update restarts both): the netdev datapath starts empty
        // and, with flow-restore-wait set, stays without flows until the agent installs them,
        // and the internal port's tap may be recreated without the node's addresses. The node
        // IP is unusable until the bootstrap, which needs the API server first: detach now, the
        // bootstrap attaches again. (The kernel datapath keeps its flows across a vswitchd
        // restart: nothing to do there.)
        let restarted = userspace_datapath && ovs.flow_restore_wait().await.unwrap_or(false);
        let lost = match kernel.snapshot(&j.nic.name).await {
            Ok(now) => !j.nic.addresses.iter().all(|a| now.addresses.contains(a)),
            Err(_) => true,
        };
        if !restarted && !lost {
            return Ok(None);
        }
    }
    let spec = UplinkSpec {
        nic: j.nic.name.clone(),
        bridge: bridge.to_string(),
        mtu: j.mtu,
        journal: path,
        flows: Vec::new(),
    };
    let outcome = converge(ovs, &NoFlows, &kernel, &spec, Target::Detached).await?;
    if finished {
        tracing::warn!(
            steps = ?outcome.ran, nic = %spec.nic,
            "uplink attached but ovs-vswitchd restarted while the agent was down (no flows, or the node addresses gone from the internal port): nic restored before reaching the api server"
        );
    } else {
        tracing::warn!(
            operation = ?j.operation, done = ?j.attach, steps = ?outcome.ran, nic = %spec.nic,
            "unfinished uplink operation found at start (killed mid-way?): nic restored before reaching the api server"
        );
    }
    Ok(Some(outcome))
}

/// Flows for [`recover_unfinished`], which only detaches (detach installs no flows).
struct NoFlows;

impl UplinkFlows for NoFlows {
    async fn install(&self, _flows: Vec<Flow>) -> Result<(), String> {
        Err("no uplink flows can be installed before the bootstrap".into())
    }
}

/// Test-only: the environment variable naming the uplink step at which the agent kills itself
/// with SIGKILL (`attach:<step>:before|after`, e.g. `attach:nic-renamed:after`; steps as
/// journaled). It lets e2e tests crash the real binary at every step deterministically. Unset in
/// production; an unparsable value is logged and ignored.
pub const CRASH_ENV: &str = "WEFT_TEST_CRASH_AT";

/// The crash point named by [`CRASH_ENV`], if set and valid.
fn test_crash_point() -> Option<CrashPoint> {
    let text = std::env::var(CRASH_ENV).ok()?;
    let point = parse_crash_point(&text);
    if point.is_none() {
        tracing::warn!(value = %text, "{CRASH_ENV}: not attach|detach:<step>:before|after, ignored");
    }
    point
}

/// Parses `attach:<step>:before|after` or `detach:<step>:before|after`.
fn parse_crash_point(text: &str) -> Option<CrashPoint> {
    let mut parts = text.split(':');
    let (op, step, when) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let when = match when {
        "before" => Journaled::Before,
        "after" => Journaled::After,
        _ => return None,
    };
    let step = serde_json::Value::String(step.to_string());
    match op {
        "attach" => Some(CrashPoint::Attach(serde_json::from_value(step).ok()?, when)),
        "detach" => Some(CrashPoint::Detach(serde_json::from_value(step).ok()?, when)),
        _ => None,
    }
}

/// Signals that the run stopped at its crash point.
struct Stopped;

struct Run<'a, O, F, K> {
    ovs: &'a O,
    flows: &'a F,
    kernel: &'a K,
    spec: &'a UplinkSpec,
    crash: Option<CrashPoint>,
    outcome: Outcome,
}

impl<O: UplinkOvs, F: UplinkFlows, K: UplinkKernel> Run<'_, O, F, K> {
    fn ovs_err(port: &str) -> impl FnOnce(OvsdbError) -> UplinkError + '_ {
        move |source| UplinkError::Ovsdb {
            port: port.to_string(),
            source,
        }
    }

    /// Journals `step` of operation `op` done in `steps(j)`, honouring the crash point
    /// `point(step, ..)` before and after the journal write; `Err(Stopped)` means stop here.
    fn step_done<S: Copy + PartialEq + serde::Serialize>(
        &mut self,
        j: &mut Journal,
        op: &str,
        step: S,
        steps: fn(&mut Journal) -> &mut Vec<S>,
        point: fn(S, Journaled) -> CrashPoint,
    ) -> Result<Result<(), Stopped>, UplinkError> {
        self.outcome.ran.push(format!("{op}:{}", kebab(&step)));
        if self.crash == Some(point(step, Journaled::Before)) {
            self.outcome.stopped = true;
            return Ok(Err(Stopped));
        }
        let done = steps(j);
        if !done.contains(&step) {
            done.push(step);
        }
        journal::store(&self.spec.journal, j)?;
        if self.crash == Some(point(step, Journaled::After)) {
            self.outcome.stopped = true;
            return Ok(Err(Stopped));
        }
        Ok(Ok(()))
    }

    fn attach_done(
        &mut self,
        j: &mut Journal,
        step: AttachStep,
    ) -> Result<Result<(), Stopped>, UplinkError> {
        self.step_done(j, "attach", step, |j| &mut j.attach, CrashPoint::Attach)
    }

    fn detach_done(
        &mut self,
        j: &mut Journal,
        step: DetachStep,
    ) -> Result<Result<(), Stopped>, UplinkError> {
        self.step_done(j, "detach", step, |j| &mut j.detach, CrashPoint::Detach)
    }

    async fn fresh_attach(&mut self, boot_id: String) -> Result<(), UplinkError> {
        let nic = self.kernel.snapshot(&self.spec.nic).await?;
        tracing::info!(
            nic = %nic.name, index = nic.index, mac = %nic.mac, mtu = nic.mtu,
            addresses = ?nic.addresses, routes = nic.routes.len(), "uplink nic recorded"
        );
        let mut j = Journal {
            version: journal::VERSION,
            boot_id,
            operation: Operation::Attach,
            uplink: renamed_nic(&nic.name),
            mtu: self.spec.mtu,
            nic,
            attach: Vec::new(),
            detach: Vec::new(),
        };
        if self.attach_done(&mut j, AttachStep::Recorded)?.is_err() {
            return Ok(());
        }
        self.attach(j).await
    }

    /// Runs every attach step after `Recorded` (each idempotent) with the journal's snapshot.
    async fn attach(&mut self, mut j: Journal) -> Result<(), UplinkError> {
        // Re-converging a finished attach (every resync, every vswitchd restart) is routine:
        // logged at DEBUG; the first attach (and one with a new MTU) at INFO.
        let was_attached = j.operation == Operation::Attach
            && j.mtu == self.spec.mtu
            && AttachStep::ALL.iter().all(|s| j.attach.contains(s));
        if j.operation != Operation::Attach || j.mtu != self.spec.mtu {
            j.operation = Operation::Attach;
            j.detach.clear();
            j.mtu = self.spec.mtu;
            journal::store(&self.spec.journal, &j)?;
        }
        let nic = j.nic.clone();
        let uplink = j.uplink.clone();
        let mtu = self.spec.mtu;
        let mac = MacAddr::parse(&nic.mac).ok_or_else(|| UplinkError::BadMac {
            name: nic.name.clone(),
            mac: nic.mac.clone(),
        })?;

        self.flows
            .install(self.spec.flows.clone())
            .await
            .map_err(UplinkError::Flows)?;
        if self
            .attach_done(&mut j, AttachStep::FlowsInstalled)?
            .is_err()
        {
            return Ok(());
        }

        let link =
            self.kernel
                .link_by_index(nic.index)
                .await?
                .ok_or_else(|| UplinkError::NicGone {
                    name: nic.name.clone(),
                    index: nic.index,
                })?;
        if link.name != uplink {
            if let Some(other) = self.kernel.link_by_name(&uplink).await? {
                return Err(UplinkError::NameTaken {
                    name: uplink,
                    index: other.index,
                });
            }
            self.kernel.rename(nic.index, &link.name, &uplink).await?;
        }
        // Inert for the host stack: with the netdev datapath the kernel still sees every frame
        // on the NIC, and must neither answer ARP/ND nor accept IP for the node's addresses
        // there (the internal port has them).
        self.kernel
            .write_sysctl(format!("net/ipv6/conf/{uplink}/disable_ipv6"), "1".into())
            .await?;
        self.kernel
            .write_sysctl(format!("net/ipv4/conf/{uplink}/rp_filter"), "1".into())
            .await?;
        self.kernel
            .configure(nic.index, &uplink, false, mtu)
            .await?;
        if self.attach_done(&mut j, AttachStep::NicRenamed)?.is_err() {
            return Ok(());
        }

        let port = PortSpec::new(&uplink, PortKind::System)
            .with_ofport_request(ports::UPLINK)
            .with_mtu_request(mtu)
            .with_external_id(OWNER_KEY, OWNER_VALUE)
            .with_external_id(UPLINK_OF_KEY, &nic.name);
        self.ensure_port(&port, ports::UPLINK).await?;
        if self
            .attach_done(&mut j, AttachStep::UplinkPortAdded)?
            .is_err()
        {
            return Ok(());
        }

        let port = PortSpec::new(&nic.name, PortKind::Internal)
            .with_ofport_request(ports::HOST_INTERNAL)
            .with_mtu_request(mtu)
            .with_external_id(OWNER_KEY, OWNER_VALUE)
            .with_external_id(UPLINK_OF_KEY, &nic.name);
        self.ensure_port(&port, ports::HOST_INTERNAL).await?;
        self.ovs
            .set_interface_mac(&nic.name, &nic.mac)
            .await
            .map_err(Self::ovs_err(&nic.name))?;
        let internal = self.wait_internal(&nic).await?;
        if internal.mac != Some(mac) {
            self.kernel.set_mac(internal.index, &nic.name, mac).await?;
        }
        self.kernel
            .configure(internal.index, &nic.name, nic.arp, mtu)
            .await?;
        if self
            .attach_done(&mut j, AttachStep::InternalPortAdded)?
            .is_err()
        {
            return Ok(());
        }

        for address in &nic.addresses {
            self.kernel
                .add_address(internal.index, &nic.name, *address)
                .await?;
        }
        self.kernel
            .remove_addresses(nic.index, &uplink, &nic.addresses)
            .await?;
        if self
            .attach_done(&mut j, AttachStep::AddressesMoved)?
            .is_err()
        {
            return Ok(());
        }

        for route in &nic.routes {
            self.kernel
                .add_route(internal.index, &nic.name, route)
                .await?;
        }
        if self.attach_done(&mut j, AttachStep::RoutesMoved)?.is_err() {
            return Ok(());
        }
        if was_attached {
            tracing::debug!(nic = %uplink, host = %nic.name, mtu, "uplink attached to bridge {}", self.spec.bridge);
        } else {
            tracing::info!(nic = %uplink, host = %nic.name, mtu, "uplink attached to bridge {}", self.spec.bridge);
        }
        Ok(())
    }

    async fn ensure_port(&self, port: &PortSpec, want: u32) -> Result<(), UplinkError> {
        self.ovs
            .ensure_port(&self.spec.bridge, port)
            .await
            .map_err(Self::ovs_err(&port.name))?;
        let got = self
            .ovs
            .wait_for_ofport(&port.name, APPEAR_TIMEOUT)
            .await
            .map_err(Self::ovs_err(&port.name))?;
        if got != want {
            return Err(UplinkError::WrongOfport {
                port: port.name.clone(),
                got,
                want,
            });
        }
        Ok(())
    }

    /// Waits for the internal port's device: the NIC's name on another index.
    async fn wait_internal(
        &self,
        nic: &NicSnapshot,
    ) -> Result<crate::iface::InterfaceInfo, UplinkError> {
        let deadline = tokio::time::Instant::now() + APPEAR_TIMEOUT;
        loop {
            if let Some(link) = self.kernel.link_by_name(&nic.name).await? {
                if link.index != nic.index {
                    return Ok(link);
                }
            }
            if tokio::time::Instant::now() > deadline {
                return Err(UplinkError::Timeout {
                    ifname: nic.name.clone(),
                    what: "appear",
                    netns: self.kernel.netns_path(),
                    timeout: APPEAR_TIMEOUT,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the NIC is no longer a port of OVS's kernel datapath (its `IFLA_MASTER`, the
    /// datapath's `ovs-system` device, is gone). ovs-vswitchd removes the datapath port after it
    /// sees the OVSDB change, and looks it up by the name it knows: renaming the NIC back before
    /// that leaves it enslaved to the datapath for good (every packet it receives goes to a bridge
    /// that no longer has it, and the node is cut off). On the userspace datapath a port has no
    /// master, so this returns at once.
    async fn wait_released(&self, nic: &NicSnapshot) -> Result<(), UplinkError> {
        let deadline = tokio::time::Instant::now() + APPEAR_TIMEOUT;
        loop {
            match self.kernel.link_by_index(nic.index).await? {
                Some(link) if link.master.is_some() => {}
                _ => return Ok(()),
            }
            if tokio::time::Instant::now() > deadline {
                return Err(UplinkError::Timeout {
                    ifname: nic.name.clone(),
                    what: "leave OVS's datapath",
                    netns: self.kernel.netns_path(),
                    timeout: APPEAR_TIMEOUT,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Deletes the internal port (only when OVS has it as an internal interface: never a port
    /// someone else made under the NIC's name) and waits for its device to go.
    async fn remove_internal(&self, nic: &NicSnapshot) -> Result<(), UplinkError> {
        let ours = self.ovs.interface_type(&nic.name).as_deref() == Some("internal");
        if ours {
            self.ovs
                .delete_port(&nic.name)
                .await
                .map_err(Self::ovs_err(&nic.name))?;
        }
        let deadline = tokio::time::Instant::now() + APPEAR_TIMEOUT;
        loop {
            match self.kernel.link_by_name(&nic.name).await? {
                Some(link) if link.index != nic.index => {}
                _ => return Ok(()),
            }
            if tokio::time::Instant::now() > deadline {
                return Err(UplinkError::Timeout {
                    ifname: nic.name.clone(),
                    what: "disappear",
                    netns: self.kernel.netns_path(),
                    timeout: APPEAR_TIMEOUT,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs every detach step (each idempotent) and deletes the journal.
    async fn detach(&mut self, mut j: Journal) -> Result<(), UplinkError> {
        if j.operation != Operation::Detach {
            j.operation = Operation::Detach;
            j.detach.clear();
        }
        if self.detach_done(&mut j, DetachStep::Started)?.is_err() {
            return Ok(());
        }
        let nic = j.nic.clone();
        let uplink = j.uplink.clone();

        self.remove_internal(&nic).await?;
        if self
            .detach_done(&mut j, DetachStep::InternalPortRemoved)?
            .is_err()
        {
            return Ok(());
        }

        self.ovs
            .delete_port(&uplink)
            .await
            .map_err(Self::ovs_err(&uplink))?;
        self.wait_released(&nic).await?;
        if self
            .detach_done(&mut j, DetachStep::UplinkPortRemoved)?
            .is_err()
        {
            return Ok(());
        }

        let link =
            self.kernel
                .link_by_index(nic.index)
                .await?
                .ok_or_else(|| UplinkError::NicGone {
                    name: nic.name.clone(),
                    index: nic.index,
                })?;
        if link.name != nic.name {
            if let Some(other) = self.kernel.link_by_name(&nic.name).await? {
                return Err(UplinkError::NameTaken {
                    name: nic.name.clone(),
                    index: other.index,
                });
            }
            self.kernel.rename(nic.index, &link.name, &nic.name).await?;
        }
        if let Some(value) = &nic.disable_ipv6 {
            self.kernel
                .write_sysctl(
                    format!("net/ipv6/conf/{}/disable_ipv6", nic.name),
                    value.clone(),
                )
                .await?;
        }
        if let Some(value) = &nic.rp_filter {
            self.kernel
                .write_sysctl(
                    format!("net/ipv4/conf/{}/rp_filter", nic.name),
                    value.clone(),
                )
                .await?;
        }
        self.kernel
            .configure(nic.index, &nic.name, nic.arp, nic.mtu)
            .await?;
        if self.detach_done(&mut j, DetachStep::NicRestored)?.is_err() {
            return Ok(());
        }

        for address in &nic.addresses {
            self.kernel
                .add_address(nic.index, &nic.name, *address)
                .await?;
        }
        if self
            .detach_done(&mut j, DetachStep::AddressesRestored)?
            .is_err()
        {
            return Ok(());
        }

        for route in &nic.routes {
            self.kernel.add_route(nic.index, &nic.name, route).await?;
        }
        if self
            .detach_done(&mut j, DetachStep::RoutesRestored)?
            .is_err()
        {
            return Ok(());
        }
        journal::remove(&self.spec.journal)?;
        tracing::info!(nic = %nic.name, "uplink detached: addresses and routes restored");
        Ok(())
    }

    /// After a reboot: only OVSDB remembers the attach. Removes both ports.
    async fn forget(&mut self, j: &Journal) -> Result<(), UplinkError> {
        self.outcome.ran.push("forget".into());
        let ours = self.ovs.interface_type(&j.nic.name).as_deref() == Some("internal");
        if ours {
            self.ovs
                .delete_port(&j.nic.name)
                .await
                .map_err(Self::ovs_err(&j.nic.name))?;
        }
        self.ovs
            .delete_port(&j.uplink)
            .await
            .map_err(Self::ovs_err(&j.uplink))?;
        Ok(())
    }
}

fn kebab<T: serde::Serialize>(step: &T) -> String {
    serde_json::to_value(step)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Whether the node's uplink belongs on the bridge: always in noEncap; in encap with the
/// netdev datapath too (its tunnels need the endpoint IP on an OVS internal port); never
/// without a transport interface.
pub fn wanted(no_encap: bool, datapath: crate::ovsdb::DatapathType, has_transport: bool) -> bool {
    has_transport && (no_encap || datapath == crate::ovsdb::DatapathType::Netdev)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ovsdb::DatapathType;

    #[test]
    fn crash_points_parse_from_the_journal_step_names() {
        assert_eq!(
            parse_crash_point("attach:nic-renamed:after"),
            Some(CrashPoint::Attach(AttachStep::NicRenamed, Journaled::After))
        );
        assert_eq!(
            parse_crash_point("detach:routes-restored:before"),
            Some(CrashPoint::Detach(
                DetachStep::RoutesRestored,
                Journaled::Before
            ))
        );
        for bad in [
            "",
            "attach",
            "attach:nic-renamed",
            "attach:nope:after",
            "attach:nic-renamed:later",
            "attach:nic-renamed:after:x",
            "move:nic-renamed:after",
        ] {
            assert_eq!(parse_crash_point(bad), None, "{bad}");
        }
    }

    #[test]
    fn uplink_is_wanted_in_noencap_and_with_netdev() {
        for (no_encap, dp, transport, want) in [
            (true, DatapathType::System, true, true),
            (true, DatapathType::Netdev, true, true),
            (false, DatapathType::Netdev, true, true),
            (false, DatapathType::System, true, false),
            (true, DatapathType::Netdev, false, false),
            (false, DatapathType::Netdev, false, false),
        ] {
            assert_eq!(
                wanted(no_encap, dp, transport),
                want,
                "{no_encap} {dp:?} {transport}"
            );
        }
    }
}

/// What [`at_start`] did, for the bootstrap's report.
#[derive(Debug, Clone)]
pub struct StartReport {
    /// The mode switch as planned.
    pub switch: modeswitch::Switch,
    /// The uplink spec when the uplink is attached.
    pub uplink: Option<UplinkSpec>,
    /// Every pod's MTU against the plan, before any fix.
    pub pods: Vec<podmtu::PodMtu>,
    /// Pods whose MTU was fixed (`reconcilePodMTU`).
    pub fixed: Vec<String>,
}

/// The inputs of [`at_start`].
#[derive(Debug, Clone)]
pub struct StartInput<'a> {
    /// The agent config.
    pub config: &'a crate::config::AgentConfig,
    /// The mode this start runs.
    pub mode: crate::mtu::TrafficMode,
    /// The plan.
    pub plan: crate::mtu::MtuPlan,
    /// The transport interface (the NIC), if any.
    pub transport: Option<String>,
    /// The bridge's external_ids as found, before this start recorded its own.
    pub applied: &'a std::collections::BTreeMap<String, String>,
    /// The node config of the flows (round, pod CIDRs).
    pub node: &'a ovs_flows::pipeline::NodeConfig,
}

/// The bootstrap's uplink and mode-switch part, run after the flow set is connected and before
/// the pipeline is installed: plans the switch from what the bridge recorded, removes the
/// tunnel port when the mode has none ([`crate::ports::tunnel::remove`]), converges the uplink
/// on attached or detached (the journal finishes or undoes whatever a killed run left).
pub async fn at_start(
    input: &StartInput<'_>,
    ovs: &Ovs,
    flows: &impl UplinkFlows,
    host: &crate::netns::Netns,
) -> Result<StartReport, UplinkError> {
    let no_encap = matches!(input.mode, crate::mtu::TrafficMode::NoEncap);
    let want = wanted(
        no_encap,
        input.config.ovs_datapath_type,
        input.transport.is_some(),
    );
    let applied = modeswitch::Applied::from_external_ids(input.applied, MODE_KEY, MTU_PLAN_KEY);
    let switch = modeswitch::plan_switch(
        &applied,
        &modeswitch::Wanted {
            mode: input.mode,
            plan: input.plan,
            uplink: want,
        },
    );
    if switch.mode_changed || !switch.mtu_changes.is_empty() {
        tracing::warn!(
            from = ?applied.mode, to = %input.mode, changes = ?switch.mtu_changes,
            "traffic mode or mtu plan changed since the last start: re-applying the plan to every managed interface"
        );
    }
    if switch.remove_tunnel_port && crate::ports::tunnel::remove(ovs).await? {
        tracing::info!(port = TUNNEL_PORT, mode = %input.mode, "tunnel port removed: the mode has none");
    }
    let journal_path = journal::path_in(&input.config.data_dir);
    let kernel = Kernel::open(host.clone()).await?;
    let spec = UplinkSpec {
        nic: input
            .transport
            .clone()
            .or_else(|| recorded_nic(&journal_path).map(|n| n.name))
            .unwrap_or_default(),
        bridge: input.config.ovs_bridge.clone(),
        mtu: input.plan.uplink,
        journal: journal_path,
        flows: ovs_flows::pipeline::uplink::uplink_flows(input.node),
    };
    let target = if want {
        Target::Attached
    } else {
        Target::Detached
    };
    let crash = test_crash_point();
    let outcome = converge_until(ovs, flows, &kernel, &spec, target, crash).await?;
    if outcome.stopped {
        // Test-only (`WEFT_TEST_CRASH_AT`): die here exactly as `kill -9` would.
        tracing::warn!(?crash, steps = ?outcome.ran, "{CRASH_ENV}: killing the agent");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
    tracing::info!(?target, plan = ?outcome.plan, steps = ?outcome.ran, nic = %spec.nic, mtu = spec.mtu, "uplink converged");
    Ok(StartReport {
        switch,
        uplink: want.then_some(spec),
        pods: Vec::new(),
        fixed: Vec::new(),
    })
}

/// The NIC's MAC (recorded in the journal) when the start left the uplink attached: published
/// for the peers whatever the mode (noEncap peers send to it, IPv6 tunnel peers set it as
/// their tunnel neighbour).
pub fn attached_nic_mac(report: &StartReport) -> Option<MacAddr> {
    let spec = report.uplink.as_ref()?;
    MacAddr::parse(&recorded_nic(&spec.journal)?.mac)
}

/// Lists every pod whose MTU differs from `planned` (one warning per pod) and, with
/// `reconcile`, fixes them live; returns the survey and the pods fixed.
pub async fn check_pods(
    ovs: &Ovs,
    host: &crate::netns::Netns,
    pods: &[weft_plan::record::PodRecord],
    planned: u32,
    reconcile: bool,
) -> (Vec<podmtu::PodMtu>, Vec<String>) {
    let survey = podmtu::survey(host, pods, planned).await;
    let mut fixed = Vec::new();
    for pod in survey.iter().filter(|p| p.differs()) {
        tracing::warn!(
            pod = %pod.pod, host_veth = %pod.host_ifname, pod_mtu = ?pod.pod_mtu,
            host_mtu = ?pod.host_mtu, planned, reconcile, "pod mtu differs from the plan"
        );
        if reconcile {
            match podmtu::fix(ovs, host, pod).await {
                Ok(()) => {
                    tracing::info!(pod = %pod.pod, mtu = planned, "pod mtu fixed live");
                    fixed.push(pod.pod.clone());
                }
                Err(error) => tracing::warn!(%error, "cannot fix pod mtu"),
            }
        }
    }
    (survey, fixed)
}
