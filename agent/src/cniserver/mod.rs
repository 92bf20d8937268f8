//! The agent's CNI server: the `weft` plugin's verbs, served over jsonrpsee on the unix socket
//! `cniSocket` (directory created 0700, socket 0600, root only).
//!
//! The socket is served from the agent's first moment; until bootstrap hands over the
//! [`PodNetwork`] ([`CniService::set_ready`]) ADD, DEL, CHECK and GC answer code 11 (try again
//! later) and STATUS answers code 50 (not available).
//!
//! Per ADD ([`PodNetwork::add`]): validate the netns path and ifname; calls for one attachment
//! (container ID, ifname) are serialised, different attachments run concurrently; the ADD runs
//! within its [`inflight::Budget`] (the plugin's deadline, its connection, a later DEL of the
//! attachment, the agent stopping) and is rolled back when that runs out; allocate IPs; create the veth (pod end
//! directly in the pod netns, host end named from namespace/pod, MTU from the plan, explicit
//! MACs, addresses, default routes via the gateway IPs, TX checksum off with the netdev datapath);
//! host end made inert for the host stack (no ARP, no IPv6); attach it to the bridge with the
//! attachment in its external_ids and an agent-chosen OpenFlow port number
//! ([`ofports`]); install the pod's flows in one bundle while OVS adds the port, then confirm OVS
//! assigned that number. The IPs are saved (group commit) while the veth is created and are
//! handed out only once durable. Any failure undoes every step already done, in reverse order.
//!
//! Error codes the agent returns (the plugin passes them through; 100 and 101 are the plugin's
//! own):
//!
//! | code | meaning |
//! |---|---|
//! | 3 | CHECK of an attachment the agent does not know |
//! | 4 | missing or invalid CNI_NETNS / CNI_IFNAME / CNI_CONTAINERID (e.g. netns does not exist) |
//! | 11 | agent bootstrap not complete or stopping, or the ADD was abandoned and rolled back: try again later |
//! | 50 | STATUS: agent bootstrap not complete |
//! | 110 | the interface name is already taken inside the pod netns |
//! | 111 | a pod CIDR is exhausted |
//! | 112 | IPAM store failure |
//! | 113 | kernel interface failure (veth, addresses, routes) |
//! | 114 | OVSDB failure (port create/delete, no ofport) |
//! | 115 | OpenFlow failure (pod flows) |
//! | 116 | CHECK found mismatches (each listed in `details`) |
//! | 117 | the host-side veth name is taken by another interface |

mod attach;
pub mod inflight;
pub mod locks;
pub mod ofports;
pub use weft_plan::record as pods;
pub mod validate;

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use jsonrpsee::types::ErrorObjectOwned;
use jsonrpsee::RpcModule;
use weft_cni::error::code as spec;
use weft_cni::rpc::{method, server, CniRequest, CniResponse};
use weft_cni::CniError;

pub use attach::{AttachError, PodNetwork, PodNetworkConfig, RebuildReport, ROLLBACK_TIMEOUT};

use crate::config::AgentConfig;
use crate::mtu::MtuPlan;
use weft_plan::gateway::GatewaySpec;

/// The pod network's configuration from the agent config, the MTU plan and the gateway.
pub fn attach_config(
    config: &AgentConfig,
    plan: MtuPlan,
    gateway: GatewaySpec,
) -> PodNetworkConfig {
    let dns = &config.cni_dns;
    PodNetworkConfig {
        bridge: config.ovs_bridge.clone(),
        datapath: config.ovs_datapath_type,
        plan,
        gateway,
        dns: weft_cni::result::Dns {
            nameservers: dns.nameservers.clone(),
            domain: (!dns.domain.is_empty()).then(|| dns.domain.clone()),
            search: dns.search.clone(),
            options: dns.options.clone(),
        },
        policy_wait: config.network_policy_pod_wait(),
    }
}

/// Error codes the agent returns beyond the spec's.
pub mod code {
    /// The pod-side interface name is already taken in the pod netns.
    pub const INTERFACE_EXISTS: u32 = 110;
    /// A pod CIDR has no free address.
    pub const IPAM_EXHAUSTED: u32 = 111;
    /// The IPAM store failed.
    pub const IPAM_FAILURE: u32 = 112;
    /// A kernel interface operation failed.
    pub const INTERFACE_FAILURE: u32 = 113;
    /// An OVSDB operation failed.
    pub const OVSDB_FAILURE: u32 = 114;
    /// An OpenFlow operation failed.
    pub const FLOW_FAILURE: u32 = 115;
    /// CHECK found differences.
    pub const CHECK_FAILED: u32 = 116;
    /// The host-side veth name is in use.
    pub const HOST_NAME_TAKEN: u32 = 117;
}

/// Errors serving the socket.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The socket could not be served.
    #[error(transparent)]
    Socket(#[from] crate::socket::SocketError),
}

/// Observes every ADD, DEL and CHECK the server answers (e.g. for metrics).
pub trait CniObserver: Send + Sync + std::fmt::Debug {
    /// `verb` (`ADD`, `DEL`, `CHECK`) took `elapsed`; `error_code` is the CNI code of a failure.
    fn observe(&self, verb: &'static str, elapsed: Duration, error_code: Option<u32>);
}

/// The service behind the socket: ready or not, and the pod network once ready.
#[derive(Debug, Default)]
pub struct CniService {
    network: OnceLock<Arc<PodNetwork>>,
    observer: OnceLock<Arc<dyn CniObserver>>,
    inflight: inflight::Inflight,
}

impl CniService {
    /// A service that is not ready yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Hands over the bootstrapped pod network: from now on requests are served.
    pub fn set_ready(&self, network: Arc<PodNetwork>) {
        if self.network.set(network).is_err() {
            tracing::warn!("cni service was already ready");
        }
    }

    /// Reports every later ADD, DEL and CHECK to `observer` (set once).
    pub fn set_observer(&self, observer: Arc<dyn CniObserver>) {
        let _ = self.observer.set(observer);
    }

    /// The pod network once ready.
    pub fn ready_network(&self) -> Option<Arc<PodNetwork>> {
        self.network.get().cloned()
    }

    fn observed<T>(
        &self,
        verb: &'static str,
        started: Instant,
        result: Result<T, ErrorObjectOwned>,
    ) -> Result<T, ErrorObjectOwned> {
        if let Some(observer) = self.observer.get() {
            let code = result
                .as_ref()
                .err()
                .map(|e| u32::try_from(e.code()).unwrap_or(0));
            observer.observe(verb, started.elapsed(), code);
        }
        result
    }

    /// Stops taking requests and abandons every ADD in flight (each rolls back), at once.
    pub fn begin_stop(&self) {
        self.inflight.stop();
    }

    /// Stops taking requests (each new one answers code 11), abandons every ADD in flight (each
    /// rolls back) and waits at most `grace` for the requests already taken to answer. Returns
    /// how many were still running at the end.
    pub async fn stop(&self, grace: Duration) -> usize {
        self.inflight.stop();
        let running = self.inflight.active();
        let started = Instant::now();
        let left = self.inflight.drained(grace).await;
        // Answered is not written: the answers go out before the process may exit.
        let unwritten = server::wait_answers_written(
            grace
                .saturating_sub(started.elapsed())
                .max(Duration::from_millis(200)),
        )
        .await;
        tracing::info!(
            running,
            left,
            unwritten,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "cni requests in flight drained"
        );
        left
    }

    /// The pod network, or code 11 while bootstrap runs.
    fn network(&self) -> Result<&Arc<PodNetwork>, CniError> {
        self.network.get().ok_or_else(|| {
            CniError::new(
                spec::TRY_AGAIN_LATER,
                "weft-agent is not ready",
                "node bootstrap has not completed",
            )
        })
    }

    /// The jsonrpsee methods: `cni_add`, `cni_del`, `cni_check`, `cni_status`, `cni_gc`.
    pub fn rpc_module(self: &Arc<Self>) -> RpcModule<Arc<CniService>> {
        let mut module = RpcModule::new(Arc::clone(self));
        // Registration fails only for duplicate names, which these are not.
        let _ = module.register_async_method(method::ADD, |params, ctx, _| async move {
            let started = Instant::now();
            let result = async {
                let request: CniRequest = params.one()?;
                let network = ctx.network().map_err(rpc_error)?;
                let ticket = ctx
                    .inflight
                    .begin_add(
                        request_key(&request),
                        request.started_unix_ms,
                        request.deadline_unix_ms,
                        server::peer_gone(),
                    )
                    .map_err(|why| rpc_error(abandoned("add", &request, why)))?;
                let result = network
                    .add(&request, ticket.budget())
                    .await
                    .map_err(rpc_error)?;
                Ok::<_, ErrorObjectOwned>(CniResponse {
                    result: Some(result),
                })
            }
            .await;
            ctx.observed("ADD", started, result)
        });
        let _ = module.register_async_method(method::DEL, |params, ctx, _| async move {
            let started = Instant::now();
            let result = async {
                let request: CniRequest = params.one()?;
                let network = ctx.network().map_err(rpc_error)?;
                let _ticket = ctx
                    .inflight
                    .begin_del(request_key(&request), request.started_unix_ms)
                    .map_err(|why| rpc_error(abandoned("del", &request, why)))?;
                network.del(&request).await.map_err(rpc_error)?;
                Ok::<_, ErrorObjectOwned>(CniResponse::default())
            }
            .await;
            ctx.observed("DEL", started, result)
        });
        let _ = module.register_async_method(method::CHECK, |params, ctx, _| async move {
            let started = Instant::now();
            let result = async {
                let request: CniRequest = params.one()?;
                let network = ctx.network().map_err(rpc_error)?;
                let _ticket = ctx
                    .inflight
                    .begin_other()
                    .map_err(|why| rpc_error(abandoned("check", &request, why)))?;
                network.check(&request).await.map_err(rpc_error)?;
                Ok::<_, ErrorObjectOwned>(CniResponse::default())
            }
            .await;
            ctx.observed("CHECK", started, result)
        });
        let _ = module.register_async_method(method::STATUS, |_params, ctx, _| async move {
            match ctx.network.get() {
                Some(_) => Ok(CniResponse::default()),
                None => Err(rpc_error(CniError::new(
                    spec::PLUGIN_NOT_AVAILABLE,
                    "weft-agent is not ready",
                    "node bootstrap has not completed",
                ))),
            }
        });
        let _ = module.register_async_method(method::GC, |params, ctx, _| async move {
            let request: CniRequest = params.one()?;
            let network = ctx.network().map_err(rpc_error)?;
            let _ticket = ctx
                .inflight
                .begin_other()
                .map_err(|why| rpc_error(abandoned("gc", &request, why)))?;
            network.gc(&request).await.map_err(rpc_error)?;
            Ok::<_, ErrorObjectOwned>(CniResponse::default())
        });
        module
    }

    /// Binds `path` (directory created 0700 if missing, a stale socket replaced, the socket
    /// 0600) and serves it until the returned task is aborted.
    pub fn serve(self: &Arc<Self>, path: &Path) -> Result<tokio::task::JoinHandle<()>, ServeError> {
        let listener = bind(path)?;
        let module = self.rpc_module();
        Ok(tokio::spawn(server::serve(listener, module)))
    }
}

/// The attachment a request names: (container ID, ifname).
fn request_key(request: &CniRequest) -> inflight::Key {
    (
        request.container_id.clone().unwrap_or_default(),
        request.ifname.clone().unwrap_or_default(),
    )
}

/// Code 11 for a request refused or abandoned before it ran.
fn abandoned(verb: &str, request: &CniRequest, why: inflight::Abandon) -> CniError {
    tracing::warn!(
        verb, container = request.container_id.as_deref().unwrap_or(""),
        ifname = request.ifname.as_deref().unwrap_or(""), reason = %why,
        "{verb} abandoned before it started"
    );
    CniError::new(
        spec::TRY_AGAIN_LATER,
        format!("{verb} abandoned: {why}"),
        format!(
            "container {} interface {}: {why}",
            request.container_id.as_deref().unwrap_or(""),
            request.ifname.as_deref().unwrap_or("")
        ),
    )
}

fn rpc_error(err: CniError) -> ErrorObjectOwned {
    ErrorObjectOwned::from(err)
}

/// Binds the CNI socket (root only: directory 0700, socket 0600, a stale socket replaced).
pub fn bind(path: &Path) -> Result<tokio::net::UnixListener, ServeError> {
    Ok(crate::socket::bind_private("cni", path)?)
}
