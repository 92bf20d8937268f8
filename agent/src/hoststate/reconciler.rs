//! The event-driven host-state reconciler.
//!
//! One task per node namespace. It subscribes to the rtnetlink multicast groups (links, IPv4/IPv6
//! addresses, routes and rules, neighbours) *before* its first dump, so no change is lost. Each
//! event is classified against the desired state ([`EventFilter`]): only events that show an
//! owned object gone or changed, a stale owned object, a foreign object on a desired key, or a
//! managed link drifting, schedule a pass; Weft's own echoes and foreign noise cost a message
//! parse. A pass runs [`ReconcilerConfig::debounce`] after the first such event (never sooner than
//! that after the previous pass: rate limit), dumps what is dirty and repairs it. A periodic full
//! resync ([`ReconcilerConfig::resync_interval`]) is the backstop; a receive buffer overrun
//! (ENOBUFS, delivered as an NLMSG_OVERRUN) forces a full relist.
//!
//! Two more sockets feed the same debounce: `NFNLGRP_NFTABLES` (changes to Weft's SNAT tables,
//! [`super::nft`]) and the IPv4/IPv6 netconf groups (forwarding and rp_filter changes,
//! [`super::netconf`]). If either cannot be opened its kind relies on the periodic resync.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::sys::AsyncSocket;
use rtnetlink::LinkUnspec;
use rtnetlink::MulticastGroup;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::desired::{HostState, IpFamily, RouteKey, RouteSpec, SnatSpec, MAIN_TABLE};
use super::diff::{self, ObservedRoute};
use super::kernel::{self, Links};
use super::links::{link_drift, Drift, LinkRole, LinkSpec, ManagedLinks};
use super::netconf::{touches_sysctls, NetconfEvents};
use super::nft::{self, NftError, NftEvent, NftEvents, NftSocket, RawMessage};
use super::report::{HostReport, HostStatus};
use super::HostStateError;
use crate::iface::InterfaceInfo;
use crate::netns::Netns;
use weft_plan::pod::HOST_VETH_PREFIX;

/// Tuning of the reconciler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcilerConfig {
    /// The gateway's name (its kernel prefix routes may be adopted).
    pub gateway: String,
    /// Full resync period (config `hostResyncInterval`).
    pub resync_interval: Duration,
    /// Delay between the first relevant event and the pass, and minimum time between passes.
    pub debounce: Duration,
    /// `SO_RCVBUF` of the event socket.
    pub receive_buffer: usize,
    /// How long a pod's host veth must be gone before the pod is reported (a DEL in flight
    /// deletes the veth before the record).
    pub veth_grace: Duration,
    /// Retry delay after a failed operation.
    pub retry: Duration,
}

impl ReconcilerConfig {
    /// Defaults for gateway `gateway`: 30 s resync, 20 ms debounce, 4 MiB buffer, 1 s grace.
    pub fn new(gateway: &str) -> Self {
        ReconcilerConfig {
            gateway: gateway.to_string(),
            resync_interval: Duration::from_secs(30),
            debounce: Duration::from_millis(20),
            receive_buffer: 4 << 20,
            veth_grace: Duration::from_secs(1),
            retry: Duration::from_millis(500),
        }
    }
}

/// Which object kinds a pass must look at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dirty {
    /// Managed links.
    pub links: bool,
    /// Sysctls.
    pub sysctls: bool,
    /// Addresses.
    pub addresses: bool,
    /// Routes.
    pub routes: bool,
    /// Rules.
    pub rules: bool,
    /// Neighbours.
    pub neighbours: bool,
    /// SNAT tables (nf_tables).
    pub snat: bool,
}

impl Dirty {
    /// Everything.
    pub const ALL: Dirty = Dirty {
        links: true,
        sysctls: true,
        addresses: true,
        routes: true,
        rules: true,
        neighbours: true,
        snat: true,
    };

    /// Whether anything is dirty.
    pub fn any(&self) -> bool {
        *self != Dirty::default()
    }

    /// The union.
    pub fn merge(&mut self, other: Dirty) {
        self.links |= other.links;
        self.sysctls |= other.sysctls;
        self.addresses |= other.addresses;
        self.routes |= other.routes;
        self.rules |= other.rules;
        self.neighbours |= other.neighbours;
        self.snat |= other.snat;
    }

    fn only_routes() -> Self {
        Dirty {
            routes: true,
            ..Dirty::default()
        }
    }
}

/// What an event means for the reconciler.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Classified {
    /// What to look at.
    pub dirty: Dirty,
    /// The socket overran: relist everything.
    pub overrun: bool,
    /// A link facing the underlay went below its planned MTU (read from the event itself:
    /// ovs-vswitchd may put an internal port's MTU back before a pass could see it).
    pub lowered: Option<super::links::UnderlayLowered>,
}

/// Classifies netlink events against the desired state and the links known from the last pass
/// (kept current from link events).
#[derive(Debug, Default)]
pub struct EventFilter {
    links: Links,
    desired: HostState,
    route_keys: HashSet<RouteKey>,
    specs: HashMap<String, LinkSpec>,
    /// Some desired route takes its next hop from the host's routes (noEncap peers).
    resolves: bool,
}

impl EventFilter {
    /// Replaces the reference state.
    pub fn update(&mut self, links: Links, desired: &HostState, specs: &[LinkSpec]) {
        self.links = links;
        self.route_keys = desired.routes.iter().map(RouteSpec::key).collect();
        self.desired = desired.clone();
        self.resolves = desired.routes.iter().any(|r| r.via.is_some() && !r.onlink);
        self.specs = specs.iter().map(|s| (s.name.clone(), s.clone())).collect();
    }

    /// Classifies one message.
    pub fn classify(&mut self, message: &NetlinkMessage<RouteNetlinkMessage>) -> Classified {
        let inner = match &message.payload {
            NetlinkPayload::Overrun(_) => {
                return Classified {
                    dirty: Dirty::ALL,
                    overrun: true,
                    lowered: None,
                }
            }
            NetlinkPayload::InnerMessage(inner) => inner,
            _ => return Classified::default(),
        };
        let mut lowered = None;
        let dirty = match inner {
            RouteNetlinkMessage::NewLink(m) => {
                let info = InterfaceInfo::from_message(m);
                let known_index = self.links.index(&info.name);
                self.links.names.insert(info.index, info.name.clone());
                self.links.by_name.insert(info.name.clone(), info.clone());
                let referenced = self.referenced(&info.name);
                let spec = self.specs.get(&info.name);
                let drifted = spec.is_some_and(|s| !link_drift(s, Some(&info)).is_empty());
                // Only on a link that existed before this message: ovs-vswitchd creates an internal
                // port's tap at the default MTU and sets `mtu_request` just after, which is not
                // the underlay going down.
                if known_index == Some(info.index) {
                    lowered = spec.and_then(|s| s.lowered(&info));
                }
                if referenced && known_index != Some(info.index) {
                    Dirty::ALL // (re)created: everything on it is gone
                } else if drifted {
                    Dirty {
                        links: true,
                        ..Dirty::ALL
                    }
                } else if !self.specs.contains_key(&info.name)
                    && info.name.starts_with(HOST_VETH_PREFIX)
                {
                    // A pod veth not known yet (ADD in flight): look at the pod store again.
                    Dirty {
                        links: true,
                        ..Dirty::default()
                    }
                } else {
                    Dirty::default()
                }
            }
            RouteNetlinkMessage::DelLink(m) => {
                let info = InterfaceInfo::from_message(m);
                self.links.names.remove(&info.index);
                self.links.by_name.remove(&info.name);
                if self.specs.contains_key(&info.name) || self.referenced(&info.name) {
                    Dirty {
                        links: true,
                        ..Dirty::default()
                    }
                } else {
                    Dirty::default()
                }
            }
            RouteNetlinkMessage::DelAddress(m) => {
                let dev = self.links.names.get(&m.header.index);
                let gone = super::kernel::address_of(m);
                let wanted = self
                    .desired
                    .addresses
                    .iter()
                    .any(|a| Some(&a.dev) == dev && Some(a.addr) == gone);
                // Removing the last IPv4 address of a device flushes every IPv4 route through
                // it without any RTM_DELROUTE: look at the routes on such devices too.
                let referenced = dev.is_some_and(|d| self.referenced(d));
                Dirty {
                    addresses: wanted,
                    routes: referenced,
                    neighbours: referenced,
                    ..Dirty::default()
                }
            }
            RouteNetlinkMessage::NewRoute(m) => match kernel::observe_route(m, &self.links) {
                Some(route) if self.route_event_matters(&route, false) => Dirty::only_routes(),
                _ => Dirty::default(),
            },
            RouteNetlinkMessage::DelRoute(m) => match kernel::observe_route(m, &self.links) {
                Some(route) if self.route_event_matters(&route, true) => Dirty::only_routes(),
                _ => Dirty::default(),
            },
            RouteNetlinkMessage::NewRule(m) => Dirty {
                rules: kernel::observe_rule(m)
                    .is_some_and(|r| r.owned() && !self.desired.rules.contains(&r.spec)),
                ..Dirty::default()
            },
            RouteNetlinkMessage::DelRule(m) => Dirty {
                rules: kernel::observe_rule(m)
                    .is_some_and(|r| r.owned() && self.desired.rules.contains(&r.spec)),
                ..Dirty::default()
            },
            RouteNetlinkMessage::NewNeighbour(m) | RouteNetlinkMessage::DelNeighbour(m) => {
                let deleted = matches!(inner, RouteNetlinkMessage::DelNeighbour(_));
                let matters = kernel::observe_neighbour(m, &self.links).is_some_and(|n| {
                    let want = self
                        .desired
                        .neighbours
                        .iter()
                        .find(|d| d.dev == n.dev && d.ip == n.ip);
                    match want {
                        Some(w) => deleted || !(n.owned() && n.permanent && n.mac == Some(w.mac)),
                        None => n.owned() && !deleted,
                    }
                });
                Dirty {
                    neighbours: matters,
                    ..Dirty::default()
                }
            }
            _ => Dirty::default(),
        };
        Classified {
            dirty,
            overrun: false,
            lowered,
        }
    }

    fn route_event_matters(&self, route: &ObservedRoute, deleted: bool) -> bool {
        let desired_key = self.route_keys.contains(&route.spec.key());
        // The host's own routes decide noEncap next hops (off-segment peers).
        let next_hops = self.resolves && !route.owned() && route.spec.table == MAIN_TABLE;
        if next_hops {
            return true;
        }
        if deleted {
            route.owned() && desired_key
        } else if route.owned() {
            !self.desired.routes.contains(&route.spec)
        } else {
            // A foreign route took one of our keys (or a kernel prefix route came back).
            desired_key
        }
    }

    /// Whether desired objects live on interface `name`.
    fn referenced(&self, name: &str) -> bool {
        self.specs.contains_key(name)
            || self
                .desired
                .routes
                .iter()
                .any(|r| r.dev.as_deref() == Some(name))
            || self.desired.addresses.iter().any(|a| a.dev == name)
            || self.desired.neighbours.iter().any(|n| n.dev == name)
    }
}

/// A running reconciler; stops when dropped.
pub struct HostReconciler {
    report: Arc<HostReport>,
    kick: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HostReconciler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HostReconciler {
    /// Subscribes to the netlink groups inside `netns`, then starts the reconcile task on the
    /// current runtime (the first pass runs at once).
    pub async fn start(
        netns: Netns,
        desired: watch::Receiver<HostState>,
        links: Arc<dyn ManagedLinks>,
        report: Arc<HostReport>,
        config: ReconcilerConfig,
    ) -> Result<Self, HostStateError> {
        let events = subscribe(&netns, config.receive_buffer).await?;
        let buffer = config.receive_buffer;
        // Without these two the reconciler still runs: their kinds fall back to the resync.
        let nft_events = open_events(&netns, move || NftEvents::open(buffer))
            .await
            .inspect_err(|error| tracing::error!(%error, "no nf_tables events: SNAT tables are checked on the periodic resync only"))
            .ok();
        let netconf_events = open_events(&netns, move || NetconfEvents::open(buffer))
            .await
            .inspect_err(|error| tracing::error!(%error, "no netconf events: sysctls are checked on the periodic resync only"))
            .ok();
        let handle = netns.rtnetlink().await?;
        let kick = Arc::new(Notify::new());
        let worker = Worker {
            netns,
            handle,
            desired,
            links,
            report: Arc::clone(&report),
            config,
            filter: EventFilter::default(),
            missing_since: HashMap::new(),
            veth_gone: HashMap::new(),
            reported: HashSet::new(),
            established: HashSet::new(),
        };
        let task = tokio::spawn(worker.run(events, nft_events, netconf_events, Arc::clone(&kick)));
        Ok(HostReconciler { report, kick, task })
    }

    /// The reporting state (metrics, status).
    pub fn report(&self) -> &Arc<HostReport> {
        &self.report
    }

    /// A status snapshot.
    pub fn status(&self) -> HostStatus {
        self.report.status()
    }

    /// Asks for a pass soon (e.g. after a pod was added or deleted).
    pub fn kick(&self) {
        self.kick.notify_one();
    }
}

type Events = futures::channel::mpsc::UnboundedReceiver<(
    NetlinkMessage<RouteNetlinkMessage>,
    rtnetlink::sys::SocketAddr,
)>;

/// Opens a socket in `netns` bound to the groups the reconciler watches.
async fn subscribe(netns: &Netns, receive_buffer: usize) -> Result<Events, HostStateError> {
    let runtime = tokio::runtime::Handle::current();
    let rt = runtime.clone();
    let path = netns.path().to_path_buf();
    let (connection, events) = netns
        .run(move || {
            let _guard = rt.enter();
            let (mut connection, _handle, events) = rtnetlink::new_multicast_connection(&[
                MulticastGroup::Link,
                MulticastGroup::Neigh,
                MulticastGroup::Ipv4Ifaddr,
                MulticastGroup::Ipv6Ifaddr,
                MulticastGroup::Ipv4Route,
                MulticastGroup::Ipv6Route,
                MulticastGroup::Ipv4Rule,
                MulticastGroup::Ipv6Rule,
            ])?;
            connection
                .socket_mut()
                .socket_mut()
                .set_rx_buf_sz(receive_buffer)?;
            Ok::<_, std::io::Error>((connection, events))
        })
        .await?
        .map_err(|source| HostStateError::Subscribe {
            netns: path,
            source,
        })?;
    runtime.spawn(connection);
    Ok(events)
}

/// Opens an event socket with `open` on a thread inside `netns` (runtime entered).
async fn open_events<T: Send + 'static>(
    netns: &Netns,
    open: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, HostStateError> {
    let rt = tokio::runtime::Handle::current();
    let path = netns.path().to_path_buf();
    netns
        .run(move || {
            let _guard = rt.enter();
            open()
        })
        .await?
        .map_err(|source| HostStateError::Subscribe {
            netns: path,
            source,
        })
}

/// The next nf_tables event, or never without a socket.
async fn next_nft(events: &mut Option<NftEvents>) -> std::io::Result<NftEvent> {
    match events {
        Some(events) => events.next().await,
        None => std::future::pending().await,
    }
}

/// The next netconf datagram, or never without a socket.
async fn next_netconf(
    events: &mut Option<NetconfEvents>,
) -> std::io::Result<Option<Vec<RawMessage>>> {
    match events {
        Some(events) => events.next().await,
        None => std::future::pending().await,
    }
}

/// Schedules a pass for an event seen now: `debounce` from now, never sooner than `debounce`
/// after the last pass, never later than an already scheduled one.
fn schedule(
    due: &mut Option<Instant>,
    first_event: &mut Option<Instant>,
    last_pass: Instant,
    debounce: Duration,
) {
    let now = Instant::now();
    first_event.get_or_insert(now);
    let at = (now + debounce).max(last_pass + debounce);
    *due = Some(due.map_or(at, |d| d.min(at)));
}

struct Worker {
    netns: Netns,
    handle: rtnetlink::Handle,
    desired: watch::Receiver<HostState>,
    links: Arc<dyn ManagedLinks>,
    report: Arc<HostReport>,
    config: ReconcilerConfig,
    filter: EventFilter,
    /// Object -> when it was first seen missing (`None`: found by a resync, time unknown).
    missing_since: HashMap<String, Option<Instant>>,
    /// Pod host veths seen missing, and since when.
    veth_gone: HashMap<String, Instant>,
    /// Conditions already logged (missing gateway, conflicts, lost veths), logged once.
    reported: HashSet<String>,
    /// Keys (`kind object`) of desired objects a completed pass has put in place or found in
    /// place. Adding one of these again is a repair; adding any other is an install (the first
    /// pass, a new peer), which is logged but not counted as a repair.
    established: HashSet<String>,
}

/// What a pass achieved.
#[derive(Debug, Default)]
struct PassOutcome {
    failed: bool,
    recheck: Option<Instant>,
}

impl Worker {
    async fn run(
        mut self,
        mut events: Events,
        mut nft: Option<NftEvents>,
        mut netconf: Option<NetconfEvents>,
        kick: Arc<Notify>,
    ) {
        let mut dirty = Dirty::ALL;
        let mut first_event: Option<Instant> = None;
        let mut due: Option<Instant> = Some(Instant::now());
        let mut last_pass = Instant::now() - self.config.debounce;
        let mut resync = tokio::time::interval_at(
            Instant::now() + self.config.resync_interval,
            self.config.resync_interval,
        );
        let mut desired_open = true;
        let mut events_open = true;
        loop {
            let timer = async {
                match due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                message = events.next(), if events_open => match message {
                    Some((message, _)) => {
                        let classified = self.filter.classify(&message);
                        if let Some(lowered) = classified.lowered {
                            self.report.underlay_lowered(lowered);
                        }
                        if classified.overrun {
                            self.report.metrics.overruns.inc();
                            tracing::warn!(netns = %self.netns.path().display(), "netlink event buffer overrun, relisting host state");
                        }
                        if classified.dirty.any() {
                            dirty.merge(classified.dirty);
                            schedule(&mut due, &mut first_event, last_pass, self.config.debounce);
                        }
                    }
                    None => {
                        tracing::error!(netns = %self.netns.path().display(), "netlink event socket closed; host state now relies on the periodic resync");
                        events_open = false;
                    }
                },
                event = next_nft(&mut nft) => {
                    let event = event.map(|e| match e {
                        NftEvent::Foreign => Some(false),
                        NftEvent::Ours => Some(true),
                        NftEvent::Overrun => None,
                    });
                    match self.side_event("nf_tables", "the SNAT tables", event) {
                        Some(true) => {
                            dirty.snat = true;
                            schedule(&mut due, &mut first_event, last_pass, self.config.debounce);
                        }
                        Some(false) => {}
                        None => nft = None,
                    }
                }
                messages = next_netconf(&mut netconf) => {
                    let event = messages.map(|m| m.map(|m| touches_sysctls(&m, &self.sysctl_devices())));
                    match self.side_event("netconf", "the sysctls", event) {
                        Some(true) => {
                            dirty.sysctls = true;
                            schedule(&mut due, &mut first_event, last_pass, self.config.debounce);
                        }
                        Some(false) => {}
                        None => netconf = None,
                    }
                }
                () = timer => {
                    let outcome = self.pass(dirty, first_event).await;
                    last_pass = Instant::now();
                    dirty = Dirty::default();
                    first_event = None;
                    due = None;
                    if outcome.failed {
                        dirty = Dirty::ALL;
                        due = Some(last_pass + self.config.retry);
                    }
                    if let Some(at) = outcome.recheck {
                        dirty.links = true;
                        due = Some(due.map_or(at, |d| d.min(at)));
                    }
                }
                _ = resync.tick() => {
                    self.report.metrics.resyncs.inc();
                    dirty = Dirty::ALL;
                    due = Some(Instant::now());
                }
                changed = self.desired.changed(), if desired_open => {
                    if changed.is_err() {
                        desired_open = false;
                    }
                    dirty = Dirty::ALL;
                    due = Some(Instant::now());
                }
                () = kick.notified() => {
                    dirty.links = true;
                    let at = Instant::now() + self.config.debounce;
                    due = Some(due.map_or(at, |d| d.min(at)));
                }
            }
        }
    }

    /// One pass over what is dirty. Failures of single operations are logged, counted and
    /// retried; they do not stop the pass.
    async fn pass(&mut self, dirty: Dirty, trigger: Option<Instant>) -> PassOutcome {
        let desired = self.desired.borrow().clone();
        let specs = self.links.managed_links();
        let mut outcome = PassOutcome::default();
        let mut errors = Vec::new();
        let links = match kernel::links(&self.handle).await {
            Ok(links) => links,
            Err(error) => {
                self.fail("links", &error, &mut errors);
                self.report
                    .pass_done(Vec::new(), Vec::new(), counts(&desired), errors.pop());
                outcome.failed = true;
                return outcome;
            }
        };
        let mut missing_veths = Vec::new();
        if dirty.links {
            self.links_pass(&specs, &links, trigger, &mut missing_veths, &mut outcome)
                .await;
        } else {
            missing_veths = self.current_missing_veths(&specs);
        }
        // Re-read links if a link was repaired (its state matters for routes).
        let links = kernel::links(&self.handle).await.unwrap_or(links);
        let gateway_up = links.by_name.contains_key(&self.config.gateway);
        let gw_key = format!("gateway {} missing", self.config.gateway);
        if gateway_up {
            self.reported.remove(&gw_key);
        } else if self.reported.insert(gw_key) {
            tracing::warn!(gateway = %self.config.gateway, "gateway interface missing; its routes, neighbours and addresses wait for it");
        }
        if dirty.sysctls {
            self.sysctl_pass(&desired, &links, trigger, &mut errors)
                .await;
        }
        if dirty.addresses {
            self.address_pass(&desired, &links, trigger, &mut errors)
                .await;
        }
        let mut conflicts = Vec::new();
        if dirty.routes {
            self.route_pass(&desired, &links, trigger, &mut conflicts, &mut errors)
                .await;
        }
        if dirty.rules {
            self.rule_pass(&desired, trigger, &mut errors).await;
        }
        if dirty.neighbours {
            self.neighbour_pass(&desired, &links, trigger, &mut errors)
                .await;
        }
        if dirty.snat {
            self.snat_pass(&desired, trigger, &mut errors).await;
        }
        // Routes as converged: noEncap peer routes carry the host's next hop.
        let mut desired = desired;
        let resolves = desired.routes.iter().any(|r| r.via.is_some() && !r.onlink);
        if let Some(routes) = self.report.converged_routes(&desired.routes) {
            desired.routes = routes;
        }
        self.filter.update(links, &desired, &specs);
        // A peer route left out for want of a host route still waits on the host's routes.
        self.filter.resolves |= resolves;
        self.establish(&desired, dirty);
        outcome.failed = !errors.is_empty();
        if !dirty.routes {
            conflicts = self.report.status().conflicts;
        }
        self.report
            .pass_done(missing_veths, conflicts, counts(&desired), errors.pop());
        outcome
    }

    /// What one event of a side socket (nf_tables, netconf) means: `event` is `Ok(Some(look))`,
    /// `Ok(None)` after lost events (an overrun: look), or the socket's failure. Returns
    /// whether to look at `what`, `None` when the socket is gone (`what` then relies on the
    /// periodic resync).
    fn side_event(
        &self,
        socket: &str,
        what: &str,
        event: std::io::Result<Option<bool>>,
    ) -> Option<bool> {
        let netns = self.netns.path().display();
        match event {
            Ok(Some(look)) => Some(look),
            Ok(None) => {
                self.report.metrics.overruns.inc();
                tracing::warn!(%netns, socket, "event buffer overrun, relisting {what}");
                Some(true)
            }
            Err(error) => {
                tracing::error!(%error, %netns, socket, "event socket failed; {what} now rely on the periodic resync");
                None
            }
        }
    }

    /// Indexes of the interfaces desired sysctls belong to (netconf events name them by index).
    fn sysctl_devices(&self) -> HashSet<i32> {
        self.desired
            .borrow()
            .sysctls
            .iter()
            .filter_map(|s| s.dev.as_deref())
            .filter_map(|dev| self.filter.links.index(dev))
            .filter_map(|index| i32::try_from(index).ok())
            .collect()
    }

    fn fail(&mut self, kind: &str, error: &HostStateError, errors: &mut Vec<String>) {
        self.report.metrics.errors.inc(kind);
        tracing::warn!(%error, kind, netns = %self.netns.path().display(), "host state operation failed, will retry");
        errors.push(error.to_string());
    }

    /// Marks `object` missing (first sighting wins) and returns the key.
    fn note_missing(&mut self, kind: &str, object: &str, trigger: Option<Instant>) -> String {
        let key = format!("{kind} {object}");
        self.missing_since.entry(key.clone()).or_insert(trigger);
        key
    }

    /// After a pass over `dirty`: the desired objects of the kinds looked at are established
    /// (present or just added); keys of objects no longer desired are forgotten.
    fn establish(&mut self, desired: &HostState, dirty: Dirty) {
        let mut keys: Vec<(bool, &'static str, Vec<String>)> = vec![
            (
                dirty.routes,
                "route",
                desired.routes.iter().map(ToString::to_string).collect(),
            ),
            (
                dirty.rules,
                "rule",
                desired.rules.iter().map(ToString::to_string).collect(),
            ),
            (
                dirty.neighbours,
                "neighbour",
                desired.neighbours.iter().map(ToString::to_string).collect(),
            ),
            (
                dirty.sysctls,
                "sysctl",
                desired.sysctls.iter().map(ToString::to_string).collect(),
            ),
            (
                dirty.addresses,
                "address",
                desired.addresses.iter().map(ToString::to_string).collect(),
            ),
            (
                dirty.snat,
                "snat",
                desired.snat.iter().map(ToString::to_string).collect(),
            ),
        ];
        let wanted: HashSet<String> = keys
            .iter()
            .flat_map(|(_, kind, objects)| objects.iter().map(move |o| format!("{kind} {o}")))
            .collect();
        self.established.retain(|k| wanted.contains(k));
        for (looked, kind, objects) in keys.drain(..) {
            if looked {
                self.established
                    .extend(objects.into_iter().map(|o| format!("{kind} {o}")));
            }
        }
    }

    /// `object` was put in place. Links are always established (the CNI server and the
    /// bootstrap make them right), so their drift is always a repair.
    fn repaired(&mut self, key: &str, kind: &str, object: &str, dev: Option<&str>) {
        let since = self.missing_since.remove(key).flatten();
        if !kind.starts_with("link_") && !self.established.contains(key) {
            tracing::info!(
                kind,
                object,
                dev = dev.unwrap_or("-"),
                "host state installed"
            );
            return;
        }
        let missing_for = since.map(|s| s.elapsed());
        tracing::warn!(
            kind,
            object,
            dev = dev.unwrap_or("-"),
            netns = %self.netns.path().display(),
            missing_for_ms = missing_for.map(|d| d.as_millis() as u64),
            found_by = if since.is_some() { "netlink event" } else { "resync" },
            "host state repaired"
        );
        self.report.repaired(kind, object, missing_for);
    }

    fn current_missing_veths(&self, specs: &[LinkSpec]) -> Vec<String> {
        specs
            .iter()
            .filter(|s| {
                self.veth_gone
                    .get(&s.name)
                    .is_some_and(|t| t.elapsed() >= self.config.veth_grace)
            })
            .filter_map(|s| match &s.role {
                LinkRole::PodVeth { pod } => Some(format!("{pod} ({})", s.name)),
                _ => None,
            })
            .collect()
    }

    async fn links_pass(
        &mut self,
        specs: &[LinkSpec],
        links: &Links,
        trigger: Option<Instant>,
        missing_veths: &mut Vec<String>,
        outcome: &mut PassOutcome,
    ) {
        let names: HashSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        self.veth_gone
            .retain(|name, _| names.contains(name.as_str()));
        for spec in specs {
            let observed = links.by_name.get(&spec.name);
            let drift = link_drift(spec, observed);
            if drift == [Drift::Missing] {
                if let LinkRole::PodVeth { pod } = &spec.role {
                    let since = *self
                        .veth_gone
                        .entry(spec.name.clone())
                        .or_insert_with(Instant::now);
                    if since.elapsed() >= self.config.veth_grace {
                        missing_veths.push(format!("{pod} ({})", spec.name));
                        if self.reported.insert(format!("veth {}", spec.name)) {
                            tracing::error!(pod = %pod, veth = %spec.name, netns = %self.netns.path().display(), "host veth of pod disappeared; the pod has no network until it is recreated");
                            self.report.metrics.errors.inc("pod_veth_missing");
                        }
                    } else {
                        let at = since + self.config.veth_grace;
                        outcome.recheck = Some(outcome.recheck.map_or(at, |r| r.min(at)));
                    }
                }
                continue;
            }
            self.veth_gone.remove(&spec.name);
            self.reported.remove(&format!("veth {}", spec.name));
            // A pass sees what a missed event would have shown, but not on the internal port:
            // ovs-vswitchd puts an operator's change there back at once, and a pass may catch
            // its freshly created tap before `mtu_request` is applied.
            if spec.role != LinkRole::UplinkPort {
                if let Some(lowered) = observed.and_then(|link| spec.lowered(link)) {
                    self.report.underlay_lowered(lowered);
                }
            }
            let (Some(link), false) = (observed, drift.is_empty()) else {
                continue;
            };
            let mut set = LinkUnspec::new_with_index(link.index);
            let mut keys = Vec::new();
            for d in &drift {
                match d {
                    Drift::Mac { want, .. } => set = set.address(want.octets().to_vec()),
                    Drift::Mtu { want, .. } => set = set.mtu(*want),
                    Drift::Down => set = set.up(),
                    Drift::Missing => {}
                }
                let object = format!("{} {} ({d})", spec.role, spec.name);
                keys.push((
                    self.note_missing(d.kind(), &object, trigger),
                    d.kind(),
                    object,
                ));
            }
            match self.handle.link().set(set.build()).execute().await {
                Ok(()) => {
                    for (key, kind, object) in keys {
                        self.repaired(&key, kind, &object, Some(&spec.name));
                    }
                }
                Err(e) => {
                    let error = HostStateError::Netlink {
                        action: "restore".into(),
                        object: format!("link {}", spec.name),
                        source: crate::iface::netlink_io(e),
                    };
                    self.fail("link", &error, &mut Vec::new());
                    outcome.failed = true;
                }
            }
        }
    }

    async fn sysctl_pass(
        &mut self,
        desired: &HostState,
        links: &Links,
        trigger: Option<Instant>,
        errors: &mut Vec<String>,
    ) {
        let wanted: Vec<_> = desired
            .sysctls
            .iter()
            .filter(|s| s.dev.as_ref().is_none_or(|d| links.by_name.contains_key(d)))
            .cloned()
            .collect();
        if wanted.is_empty() {
            return;
        }
        // /proc/sys/net is per network namespace: read and write from a thread inside it.
        let result = self
            .netns
            .run(move || {
                wanted
                    .into_iter()
                    .map(|s| {
                        let have = kernel::read_sysctl(&s.key);
                        let outcome = match &have {
                            Ok(v) if *v == s.value => None,
                            _ => Some(kernel::write_sysctl(&s.key, &s.value).map(|()| have.ok())),
                        };
                        (s, outcome)
                    })
                    .collect::<Vec<_>>()
            })
            .await;
        let results = match result {
            Ok(results) => results,
            Err(e) => {
                self.fail("sysctl", &e.into(), errors);
                return;
            }
        };
        for (spec, outcome) in results {
            match outcome {
                None => {}
                Some(Ok(before)) => {
                    let object = format!("{spec} (was {})", before.unwrap_or_default());
                    let key = self.note_missing("sysctl", &spec.to_string(), trigger);
                    self.repaired(&key, "sysctl", &object, spec.dev.as_deref());
                }
                Some(Err(source)) => {
                    let error = HostStateError::Sysctl {
                        key: spec.key.clone(),
                        value: spec.value.clone(),
                        source,
                    };
                    self.fail("sysctl", &error, errors);
                }
            }
        }
    }

    async fn address_pass(
        &mut self,
        desired: &HostState,
        links: &Links,
        trigger: Option<Instant>,
        errors: &mut Vec<String>,
    ) {
        let present = match kernel::addresses(&self.handle, links).await {
            Ok(p) => p,
            Err(e) => return self.fail("address", &e, errors),
        };
        for address in diff::missing_addresses(&desired.addresses, &present) {
            let Some(index) = links.index(&address.dev) else {
                continue; // waits for the interface (reported once above for the gateway)
            };
            let object = address.to_string();
            let key = self.note_missing("address", &object, trigger);
            match kernel::add_address(&self.handle, index, &address.dev, address.addr).await {
                Ok(()) => self.repaired(&key, "address", &object, Some(&address.dev)),
                Err(e) => self.fail("address", &e, errors),
            }
        }
    }

    async fn route_pass(
        &mut self,
        desired: &HostState,
        links: &Links,
        trigger: Option<Instant>,
        conflicts: &mut Vec<String>,
        errors: &mut Vec<String>,
    ) {
        let observed = match kernel::routes(&self.handle, links).await {
            Ok(r) => r,
            Err(e) => return self.fail("route", &e, errors),
        };
        let resolved = diff::resolve_next_hops(&desired.routes, &observed);
        let mut unreachable = HashSet::new();
        for route in &resolved.unreachable {
            let via = route.via.map(|ip| ip.to_string()).unwrap_or_default();
            let text = format!("no route to {via} for {}", route.dst);
            unreachable.insert(text.clone());
            if self.reported.insert(text) {
                tracing::warn!(
                    peer_cidr = %route.dst,
                    node_ip = %via,
                    "no host route toward the peer node IP: its pod CIDR is left unrouted until the host has one"
                );
            }
        }
        // Forget what became reachable, so a later loss is logged again.
        self.reported
            .retain(|k| !k.starts_with("no route to ") || unreachable.contains(k));
        self.report.routes_resolved(&desired.routes, &resolved);
        let diff = diff::diff_routes(&resolved.routes, &observed, &self.config.gateway);
        for (want, foreign) in &diff.conflicts {
            let text = format!(
                "route {want} blocked by foreign route {} proto {}",
                foreign.spec, foreign.protocol
            );
            if self.reported.insert(text.clone()) {
                self.report.metrics.conflicts.inc("route");
                tracing::warn!(conflict = %text, "a foreign route holds a key Weft needs; leaving it alone");
            }
            conflicts.push(text);
        }
        for route in &diff.add {
            if route.dev.as_ref().is_some_and(|d| links.index(d).is_none()) {
                continue; // waits for its interface
            }
            let object = route.to_string();
            let key = self.note_missing("route", &object, trigger);
            match kernel::add_route(&self.handle, route, links).await {
                Ok(()) => self.repaired(&key, "route", &object, route.dev.as_deref()),
                Err(e) => self.fail("route", &e, errors),
            }
        }
        for route in &diff.remove {
            match kernel::delete_route(&self.handle, route).await {
                Ok(()) => {
                    self.report.metrics.stale_removed.inc("route");
                    tracing::info!(route = %route, "stale weft route removed");
                }
                Err(e) => self.fail("route", &e, errors),
            }
        }
    }

    async fn rule_pass(
        &mut self,
        desired: &HostState,
        trigger: Option<Instant>,
        errors: &mut Vec<String>,
    ) {
        let observed = match kernel::rules(&self.handle).await {
            Ok(r) => r,
            Err(e) => return self.fail("rule", &e, errors),
        };
        let diff = diff::diff_rules(&desired.rules, &observed);
        for rule in &diff.add {
            let object = rule.to_string();
            let key = self.note_missing("rule", &object, trigger);
            match kernel::add_rule(&self.handle, rule).await {
                Ok(()) => self.repaired(&key, "rule", &object, None),
                Err(e) => self.fail("rule", &e, errors),
            }
        }
        for rule in &diff.remove {
            match kernel::delete_rule(&self.handle, rule).await {
                Ok(()) => {
                    self.report.metrics.stale_removed.inc("rule");
                    tracing::info!(rule = %rule, "stale weft rule removed");
                }
                Err(e) => self.fail("rule", &e, errors),
            }
        }
    }

    async fn snat_pass(
        &mut self,
        desired: &HostState,
        trigger: Option<Instant>,
        errors: &mut Vec<String>,
    ) {
        let specs: Vec<SnatSpec> = desired.snat.iter().cloned().collect();
        let results = match self.netns.run(move || sync_snat_tables(&specs)).await {
            Ok(r) => r,
            Err(e) => return self.fail("snat", &e.into(), errors),
        };
        for result in results {
            match result {
                Ok(None) => {}
                Ok(Some(SnatChange::Applied { spec, was })) => {
                    let object = spec.to_string();
                    let key = self.note_missing("snat", &object, trigger);
                    self.repaired(&key, "snat", &format!("{object} (was {was})"), None);
                }
                Ok(Some(SnatChange::Removed(family))) => {
                    self.report.metrics.stale_removed.inc("snat");
                    tracing::info!(table = %format!("{} {}", nft::family_name(family), nft::TABLE), "stale weft nf_tables table removed");
                }
                Err(e) => self.fail("snat", &e.into(), errors),
            }
        }
    }

    async fn neighbour_pass(
        &mut self,
        desired: &HostState,
        links: &Links,
        trigger: Option<Instant>,
        errors: &mut Vec<String>,
    ) {
        let observed = match kernel::neighbours(&self.handle, links).await {
            Ok(n) => n,
            Err(e) => return self.fail("neighbour", &e, errors),
        };
        let diff = diff::diff_neighbours(&desired.neighbours, &observed);
        for neighbour in &diff.add {
            if links.index(&neighbour.dev).is_none() {
                continue;
            }
            let object = neighbour.to_string();
            let key = self.note_missing("neighbour", &object, trigger);
            match kernel::add_neighbour(&self.handle, neighbour, links).await {
                Ok(()) => self.repaired(&key, "neighbour", &object, Some(&neighbour.dev)),
                Err(e) => self.fail("neighbour", &e, errors),
            }
        }
        for (dev, ip) in &diff.remove {
            match kernel::delete_neighbour(&self.handle, dev, *ip, links).await {
                Ok(()) => {
                    self.report.metrics.stale_removed.inc("neighbour");
                    tracing::info!(%ip, %dev, "stale weft neighbour removed");
                }
                Err(e) => self.fail("neighbour", &e, errors),
            }
        }
    }
}

/// What the SNAT pass did to one family's table.
enum SnatChange {
    /// Installed or replaced (`was`: why: missing or changed).
    Applied { spec: SnatSpec, was: &'static str },
    /// Removed (not desired: `noSNAT`, or no pod CIDR of the family).
    Removed(IpFamily),
}

/// Brings Weft's table of each family in line with `specs`, from a thread inside the namespace.
fn sync_snat_tables(specs: &[SnatSpec]) -> Vec<Result<Option<SnatChange>, NftError>> {
    let mut socket = match NftSocket::open() {
        Ok(s) => s,
        // No nf_tables in this kernel: no table can exist, nothing to remove.
        Err(_) if specs.is_empty() => return Vec::new(),
        Err(e) => return vec![Err(e)],
    };
    [IpFamily::V4, IpFamily::V6]
        .into_iter()
        .map(|family| {
            let want = specs.iter().find(|s| s.family == family);
            let have = socket.observe(family)?;
            Ok(match (want, have) {
                (Some(want), Some(have)) if have.matches(want) => None,
                (Some(want), have) => {
                    socket.apply(want)?;
                    Some(SnatChange::Applied {
                        spec: want.clone(),
                        was: if have.is_some() { "changed" } else { "missing" },
                    })
                }
                (None, Some(_)) => {
                    socket.delete(family)?;
                    Some(SnatChange::Removed(family))
                }
                (None, None) => None,
            })
        })
        .collect()
}

fn counts(desired: &HostState) -> BTreeMap<String, usize> {
    BTreeMap::from([
        ("routes".to_string(), desired.routes.len()),
        ("rules".to_string(), desired.rules.len()),
        ("neighbours".to_string(), desired.neighbours.len()),
        ("sysctls".to_string(), desired.sysctls.len()),
        ("addresses".to_string(), desired.addresses.len()),
        ("snat".to_string(), desired.snat.len()),
    ])
}

#[cfg(test)]
mod tests {
    use super::super::desired::{desired, HostInput, PeerSpec, WEFT_PROTOCOL};
    use super::super::kernel::{route_message, rule_message};
    use super::*;
    use crate::mtu::{TrafficMode, TunnelType};
    use rtnetlink::packet_core::NetlinkHeader;

    fn state() -> HostState {
        desired(&HostInput {
            mode: TrafficMode::Encap(TunnelType::Geneve),
            gateway: "gw".into(),
            pod_cidrs: vec!["10.244.1.0/24".parse().unwrap()],
            transport: None,
            peers: vec![PeerSpec {
                name: "b".into(),
                pod_cidrs: vec!["10.244.2.0/24".parse().unwrap()],
                transport_ips: vec![],
            }],
            peer_gateway_mac: [2, 0, 0, 0, 0, 1],
            no_snat: false,
        })
    }

    fn filter() -> EventFilter {
        let mut links = Links::default();
        links.names.insert(5, "gw".into());
        let mut f = EventFilter::default();
        f.update(links, &state(), &[]);
        f
    }

    fn msg(inner: RouteNetlinkMessage) -> NetlinkMessage<RouteNetlinkMessage> {
        NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::InnerMessage(inner),
        )
    }

    #[test]
    fn own_echoes_and_foreign_noise_are_ignored_deletions_are_not() {
        let mut f = filter();
        let ours = state().routes.iter().next().unwrap().clone();
        let m = route_message(&ours, Some(5));
        assert!(!f
            .classify(&msg(RouteNetlinkMessage::NewRoute(m.clone())))
            .dirty
            .any());
        assert!(
            f.classify(&msg(RouteNetlinkMessage::DelRoute(m.clone())))
                .dirty
                .routes
        );
        // A foreign route elsewhere: nothing.
        let mut foreign = ours.clone();
        foreign.dst = "192.168.9.0/24".parse().unwrap();
        let mut fm = route_message(&foreign, Some(5));
        fm.header.protocol = 4.into();
        assert!(!f
            .classify(&msg(RouteNetlinkMessage::NewRoute(fm.clone())))
            .dirty
            .any());
        assert!(!f
            .classify(&msg(RouteNetlinkMessage::DelRoute(fm)))
            .dirty
            .any());
        // A foreign route on our key: look.
        let mut on_key = route_message(&ours, Some(5));
        on_key.header.protocol = 4.into();
        assert!(
            f.classify(&msg(RouteNetlinkMessage::NewRoute(on_key)))
                .dirty
                .routes
        );
        // A stale owned route showing up: look.
        let mut stale = route_message(&foreign, Some(5));
        stale.header.protocol = WEFT_PROTOCOL.into();
        assert!(
            f.classify(&msg(RouteNetlinkMessage::NewRoute(stale)))
                .dirty
                .routes
        );
    }

    #[test]
    fn rule_deletions_and_overruns() {
        let mut f = filter();
        let rule = state().rules.iter().next().unwrap().clone();
        let m = rule_message(&rule);
        assert!(
            f.classify(&msg(RouteNetlinkMessage::DelRule(m.clone())))
                .dirty
                .rules
        );
        assert!(!f
            .classify(&msg(RouteNetlinkMessage::NewRule(m)))
            .dirty
            .any());
        let mut header = NetlinkHeader::default();
        header.message_type = rtnetlink::packet_core::NLMSG_OVERRUN;
        let overrun = NetlinkMessage::new(header, NetlinkPayload::Overrun(Vec::new()));
        let c = f.classify(&overrun);
        assert!(c.overrun);
        assert_eq!(c.dirty, Dirty::ALL);
    }

    #[test]
    fn a_lowered_underlay_link_is_reported_from_the_event_itself() {
        use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
        let mut f = filter();
        let specs = super::super::links::uplink_links("eth0", 1500, None, true);
        f.update(Links::default(), &state(), &specs);
        let link = |mtu: u32| {
            let mut m = LinkMessage::default();
            m.header.index = 7;
            m.header.flags = LinkFlags::Up;
            m.attributes.push(LinkAttribute::IfName("eth0".into()));
            m.attributes.push(LinkAttribute::Mtu(mtu));
            msg(RouteNetlinkMessage::NewLink(m))
        };
        // First seen (created, e.g. a tap ovs-vswitchd just made at the default MTU): not a
        // lowering.
        assert_eq!(f.classify(&link(1400)).lowered, None);
        let c = f.classify(&link(1400));
        assert_eq!(
            c.lowered.map(|l| (l.link, l.mtu, l.planned)),
            Some(("eth0".to_string(), 1400, 1500))
        );
        // ovs-vswitchd putting the planned MTU back is neither a lowering nor drift.
        let back = f.classify(&link(1500));
        assert_eq!(back.lowered, None);
        assert!(!back.dirty.links);
        // A raised MTU is drift (repaired), not followed.
        let raised = f.classify(&link(9000));
        assert_eq!(raised.lowered, None);
        assert!(raised.dirty.links);
    }
}
