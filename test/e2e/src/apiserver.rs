//! The test API server: the one stand-in this project allows, for kube-apiserver.
//!
//! Plain HTTP on `127.0.0.1:<ephemeral port>`, reached by the agent's normal kube client through a
//! kubeconfig ([`ApiServer::write_kubeconfig`]). It serves core/v1 Nodes (cluster-scoped), Pods
//! and Events (namespaced; Pods also across all namespaces) and events.k8s.io/v1 Events, with the
//! semantics clients depend on:
//!
//! - one global resourceVersion counter, like etcd's revision; lists carry it in
//!   `metadata.resourceVersion`; a no-op update keeps the version and produces no event;
//! - get, list, create (uid, creationTimestamp, `generateName`), PUT (a stale resourceVersion is
//!   409 Conflict), delete, and PATCH as JSON merge, strategic merge (see [`patch`] for the
//!   simplification) and JSON patch; `/status` subresources for Nodes and Pods (main-resource
//!   updates keep the status, status updates change only the status);
//! - `watch=true`: newline-delimited ADDED / MODIFIED / DELETED events after the given
//!   resourceVersion, replayed from a bounded history; a version older than the history gives a
//!   watch ERROR event carrying a 410 `Expired` Status, as the real server does, so clients relist;
//!   objects entering or leaving a selector produce ADDED / DELETED; `allowWatchBookmarks` gives
//!   periodic BOOKMARK events; `timeoutSeconds` ends the watch; `sendInitialEvents` is honoured;
//! - `labelSelector` (equality, existence and sets) and `fieldSelector` (`metadata.name`,
//!   `metadata.namespace`, `spec.nodeName`, ...) on list and watch;
//! - errors are `Status` objects with the real reasons (NotFound, AlreadyExists, Conflict, ...);
//! - `/version`, `/api`, `/apis` and the resource lists for discovery.
//!
//! `dryRun` runs a write on a throwaway copy of the store.
//!
//! Every request is authenticated by its bearer token and authorized by RBAC ([`rbac`]) against
//! the ClusterRoles, Roles and bindings of build/yamls/weft.yml (and the bootstrap discovery
//! policy): the harness writes an admin kubeconfig ([`ApiServer::write_kubeconfig`],
//! `system:masters`) for itself and a ServiceAccount one
//! ([`ApiServer::write_service_account_kubeconfig`]) for each agent, so a permission the
//! manifest lacks fails the agent as on a real cluster (403 Forbidden, recorded in
//! [`ApiServer::forbidden_requests`]).
//!
//! Simplifications: tokens are random strings, not signed JWTs; no admission; namespaces need not exist; deletion is
//! immediate (no grace period, finalizers are not waited for); lists always return the latest
//! state in one page (`limit`, `continue` and `resourceVersionMatch` are ignored); a watch from a
//! resourceVersion newer than the store's waits for it instead of failing; server-side apply is
//! not supported (415).
//!
//! The Rust API also reaches into the store directly: the helpers act as the kubelet and
//! controllers would (a merge patch may change the status too), and [`ApiServer::stop`],
//! [`ApiServer::restart`] and [`ApiServer::compact_history`] let tests take the server away, bring
//! it back on the same address with the same objects, and force clients to relist.

mod http;
pub mod patch;
pub mod rbac;
pub mod selector;
pub mod store;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::Path;
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::task::{JoinHandle, JoinSet};

use rbac::{Attributes, Rbac, UserInfo};
pub use store::ApiError;
use store::{find_resource, ResourceId, Scope, Store};

/// 32 random hex digits from the kernel's random pool.
fn random_token() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut bytes);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Tunables of a test API server.
#[derive(Debug, Clone)]
pub struct ApiServerOptions {
    /// Interval of BOOKMARK events on watches that allow them (the real server: about a minute).
    pub bookmark_interval: Duration,
    /// How many changes the history keeps for watches; older versions get 410 Expired.
    pub history_limit: usize,
    /// Address to listen on; port 0 picks an ephemeral port.
    pub listen: SocketAddr,
    /// Network namespace (`ip netns` name) to listen in; `None`: the caller's. A process
    /// inside a node's namespace (an agent) cannot reach the test's own loopback, so the lab
    /// and node tests listen inside the node's namespace.
    pub netns: Option<String>,
    /// The roles and bindings requests are authorized against (default: the bootstrap
    /// discovery policy plus build/yamls/weft.yml's RBAC objects).
    pub rbac: Rbac,
}

impl Default for ApiServerOptions {
    fn default() -> Self {
        Self {
            bookmark_interval: Duration::from_secs(1),
            history_limit: 1000,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            netns: None,
            rbac: Rbac::weft_manifest(),
        }
    }
}

/// State shared by the HTTP handlers and the Rust API.
struct Shared {
    store: Mutex<Store>,
    /// The latest resourceVersion, to wake watches.
    changed: tokio::sync::watch::Sender<u64>,
    bookmark_interval: Duration,
    requests: Mutex<HashMap<(String, String), u64>>,
    rbac: Rbac,
    /// Bearer token -> user.
    tokens: Mutex<HashMap<String, UserInfo>>,
    /// Every request refused with 403: "user: message".
    forbidden: Mutex<Vec<String>>,
}

impl Shared {
    /// Authenticates the request's bearer token and authorizes `attrs` for its user: 401 for an
    /// unknown token, 403 (recorded) for anything the RBAC objects do not grant.
    fn authorize(&self, headers: &hyper::HeaderMap, attrs: &Attributes) -> Result<(), ApiError> {
        let token = headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let user = match token {
            None => UserInfo::anonymous(),
            Some(t) => {
                let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
                tokens
                    .get(t)
                    .cloned()
                    .ok_or_else(|| ApiError::new(401, "Unauthorized", "Unauthorized"))?
            }
        };
        if self.rbac.allows(&user, attrs) {
            return Ok(());
        }
        let message = attrs.forbidden_message(&user);
        tracing::warn!(user = %user.name, "test API server: {message}");
        self.forbidden
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(message.clone());
        Err(ApiError::new(403, "Forbidden", message))
    }

    /// Runs a change on the store and wakes the watches.
    fn mutate<T>(&self, f: impl FnOnce(&mut Store) -> Result<T, ApiError>) -> Result<T, ApiError> {
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let out = f(&mut store);
        self.changed.send_replace(store.resource_version());
        out
    }

    /// Runs a change on the store, or with `dry_run` on a copy that is thrown away.
    fn write<T>(
        &self,
        dry_run: bool,
        f: impl FnOnce(&mut Store) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        if dry_run {
            let mut copy = self.read(Store::clone);
            f(&mut copy)
        } else {
            self.mutate(f)
        }
    }

    fn read<T>(&self, f: impl FnOnce(&Store) -> T) -> T {
        f(&self.store.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn count(&self, verb: &str, plural: &str) {
        let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *requests
            .entry((verb.to_string(), plural.to_string()))
            .or_default() += 1;
    }
}

/// Binds `addr`, inside the named network namespace when one is given (the socket keeps it).
fn bind(addr: SocketAddr, netns: Option<&str>) -> Result<StdListener> {
    match netns {
        None => Ok(StdListener::bind(addr)?),
        Some(name) => Ok(crate::netns::run_in(name, move || {
            StdListener::bind(addr)
        })??),
    }
}

/// The accept loop while the server is up.
struct Serving {
    task: JoinHandle<()>,
    done: std_mpsc::Receiver<()>,
}

/// A running (or stopped) test API server. Dropping it stops everything it started.
pub struct ApiServer {
    shared: Arc<Shared>,
    runtime: Option<Runtime>,
    addr: SocketAddr,
    netns: Option<String>,
    serving: Option<Serving>,
}

const NODES: (&str, &str, &str) = ("", "v1", "nodes");
const PODS: (&str, &str, &str) = ("", "v1", "pods");

fn served((group, version, plural): (&str, &str, &str)) -> Result<ResourceId, ApiError> {
    find_resource(group, version, plural).ok_or_else(|| {
        ApiError::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource {group}/{version}/{plural}"),
        )
    })
}

fn resource((group, version, plural): (&str, &str, &str)) -> ResourceId {
    find_resource(group, version, plural).unwrap_or_default()
}

impl ApiServer {
    /// Starts a server with default options on an ephemeral port of 127.0.0.1.
    pub fn start() -> Result<Self> {
        Self::start_with(ApiServerOptions::default())
    }

    /// Starts a server with `options`.
    pub fn start_with(options: ApiServerOptions) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("weft-test-apiserver")
            .enable_all()
            .build()
            .context("building the test API server runtime")?;
        let (changed, _) = tokio::sync::watch::channel(0);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(options.history_limit)),
            changed,
            bookmark_interval: options.bookmark_interval,
            requests: Mutex::new(HashMap::new()),
            rbac: options.rbac,
            tokens: Mutex::new(HashMap::from([(random_token(), UserInfo::admin())])),
            forbidden: Mutex::new(Vec::new()),
        });
        let listener = bind(options.listen, options.netns.as_deref())
            .with_context(|| format!("binding the test API server to {}", options.listen))?;
        let addr = listener.local_addr()?;
        let mut server = Self {
            shared,
            runtime: Some(runtime),
            addr,
            netns: options.netns,
            serving: None,
        };
        server.serve(listener)?;
        Ok(server)
    }

    /// `http://<address>:<port>`, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address served on; it stays the same across [`ApiServer::restart`].
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Writes a kubeconfig pointing at this server with the admin's token (`system:masters`:
    /// the test harness acting as a cluster admin) to `path`.
    pub fn write_kubeconfig(&self, path: &Path) -> Result<()> {
        let token = self.token_of(&UserInfo::admin());
        self.write_kubeconfig_with_token(path, &token)
    }

    /// Writes a kubeconfig for ServiceAccount `namespace/name` (as the kubelet mounts its token
    /// into a pod): requests are authorized by RBAC as `system:serviceaccount:NS:NAME`.
    pub fn write_service_account_kubeconfig(
        &self,
        path: &Path,
        namespace: &str,
        name: &str,
    ) -> Result<()> {
        let token = self.service_account_token(namespace, name);
        self.write_kubeconfig_with_token(path, &token)
    }

    /// Writes a kubeconfig pointing at this server with `token` (any string: unknown tokens get
    /// 401) to `path`.
    pub fn write_kubeconfig_with_token(&self, path: &Path, token: &str) -> Result<()> {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: weft-test\n  cluster:\n    \
             server: {}\ncontexts:\n- name: weft-test\n  context:\n    cluster: weft-test\n    \
             user: weft-test\ncurrent-context: weft-test\nusers:\n- name: weft-test\n  user:\n    \
             token: {token}\n",
            self.url()
        );
        std::fs::write(path, text).with_context(|| format!("writing kubeconfig {}", path.display()))
    }

    /// A bearer token for ServiceAccount `namespace/name` (the same one on every call).
    pub fn service_account_token(&self, namespace: &str, name: &str) -> String {
        self.token_of(&UserInfo::service_account(namespace, name))
    }

    fn token_of(&self, user: &UserInfo) -> String {
        let mut tokens = self.shared.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((t, _)) = tokens.iter().find(|(_, u)| *u == user) {
            return t.clone();
        }
        let t = random_token();
        tokens.insert(t.clone(), user.clone());
        t
    }

    /// The message of every request refused with 403 Forbidden so far.
    pub fn forbidden_requests(&self) -> Vec<String> {
        self.shared
            .forbidden
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether the server accepts connections.
    pub fn is_running(&self) -> bool {
        self.serving.is_some()
    }

    /// Stops serving: closes the listener and every connection (open watches end abruptly, as
    /// when kube-apiserver goes away). The objects stay for [`ApiServer::restart`].
    pub fn stop(&mut self) {
        if let Some(serving) = self.serving.take() {
            serving.task.abort();
            let _ = serving.done.recv_timeout(Duration::from_secs(5));
        }
    }

    /// Serves again on the same address with the same objects and resourceVersions.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        let listener = bind(self.addr, self.netns.as_deref())
            .with_context(|| format!("binding the test API server to {} again", self.addr))?;
        self.serve(listener)
    }

    fn serve(&mut self, listener: StdListener) -> Result<()> {
        listener.set_nonblocking(true)?;
        let runtime = self
            .runtime
            .as_ref()
            .context("test API server runtime is gone")?;
        let listener = {
            let _guard = runtime.enter();
            TcpListener::from_std(listener)?
        };
        let (done_tx, done) = std_mpsc::channel();
        let shared = self.shared.clone();
        let task = runtime.spawn(accept_loop(
            AcceptState {
                listener: Some(listener),
                connections: JoinSet::new(),
                done: done_tx,
            },
            shared,
        ));
        self.serving = Some(Serving { task, done });
        Ok(())
    }

    /// Forgets the watch history and expires every resourceVersion handed out so far, like an
    /// etcd compaction: open watches get a 410 Expired error event and clients must relist.
    pub fn compact_history(&self) {
        let _ = self.shared.mutate(|s| {
            s.compact();
            Ok(())
        });
    }

    /// The store's latest resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.read(Store::resource_version)
    }

    /// How many requests of `verb` (`list`, `watch`, `get`, `create`, `update`, `patch`,
    /// `delete`) were served for resource `plural` (`nodes`, `pods`, `events`).
    pub fn request_count(&self, verb: &str, plural: &str) -> u64 {
        let requests = self
            .shared
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        requests
            .get(&(verb.to_string(), plural.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Creates a Node from its JSON.
    pub fn create_node(&self, node: Value) -> Result<Value, ApiError> {
        self.shared.mutate(|s| s.create(resource(NODES), "", node))
    }

    /// One Node.
    pub fn get_node(&self, name: &str) -> Result<Value, ApiError> {
        self.shared.read(|s| s.get(resource(NODES), "", name))
    }

    /// Merge-patches a Node, status included (as the kubelet or a controller would).
    pub fn patch_node(&self, name: &str, merge_patch: Value) -> Result<Value, ApiError> {
        self.shared
            .mutate(|s| s.patch_all(resource(NODES), "", name, &merge_patch))
    }

    /// Replaces a Node, status included; a stale `metadata.resourceVersion` is a conflict.
    pub fn replace_node(&self, name: &str, node: Value) -> Result<Value, ApiError> {
        self.shared
            .mutate(|s| s.replace(resource(NODES), "", name, node, Scope::All))
    }

    /// Deletes a Node.
    pub fn delete_node(&self, name: &str) -> Result<Value, ApiError> {
        self.shared.mutate(|s| s.delete(resource(NODES), "", name))
    }

    /// Every Node.
    pub fn nodes(&self) -> Vec<Value> {
        self.list("", "v1", "nodes")
    }

    /// Creates a Pod in its `metadata.namespace` (`default` if unset), status included.
    pub fn create_pod(&self, pod: Value) -> Result<Value, ApiError> {
        let ns = pod
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string();
        self.shared.mutate(|s| s.create(resource(PODS), &ns, pod))
    }

    /// One Pod.
    pub fn get_pod(&self, namespace: &str, name: &str) -> Result<Value, ApiError> {
        self.shared.read(|s| s.get(resource(PODS), namespace, name))
    }

    /// Merge-patches a Pod, status included.
    pub fn patch_pod(
        &self,
        namespace: &str,
        name: &str,
        merge_patch: Value,
    ) -> Result<Value, ApiError> {
        self.shared
            .mutate(|s| s.patch_all(resource(PODS), namespace, name, &merge_patch))
    }

    /// Deletes a Pod.
    pub fn delete_pod(&self, namespace: &str, name: &str) -> Result<Value, ApiError> {
        self.shared
            .mutate(|s| s.delete(resource(PODS), namespace, name))
    }

    /// Every Pod in every namespace.
    pub fn pods(&self) -> Vec<Value> {
        self.list("", "v1", "pods")
    }

    /// Every Event, core/v1 and events.k8s.io/v1.
    pub fn events(&self) -> Vec<Value> {
        let mut events = self.list("", "v1", "events");
        events.extend(self.list("events.k8s.io", "v1", "events"));
        events
    }

    /// Creates an object of any served resource `(group, version, plural)` in `namespace`
    /// (empty for cluster-scoped resources), status included.
    pub fn create_object(
        &self,
        gvr: (&str, &str, &str),
        namespace: &str,
        obj: Value,
    ) -> Result<Value, ApiError> {
        let res = served(gvr)?;
        self.shared.mutate(|s| s.create(res, namespace, obj))
    }

    /// Merge-patches an object of any served resource, status included.
    pub fn patch_object(
        &self,
        gvr: (&str, &str, &str),
        namespace: &str,
        name: &str,
        merge_patch: Value,
    ) -> Result<Value, ApiError> {
        let res = served(gvr)?;
        self.shared
            .mutate(|s| s.patch_all(res, namespace, name, &merge_patch))
    }

    /// Deletes an object of any served resource.
    pub fn delete_object(
        &self,
        gvr: (&str, &str, &str),
        namespace: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        let res = served(gvr)?;
        self.shared.mutate(|s| s.delete(res, namespace, name))
    }

    fn list(&self, group: &str, version: &str, plural: &str) -> Vec<Value> {
        let Some(res) = find_resource(group, version, plural) else {
            return Vec::new();
        };
        self.shared
            .read(|s| s.list(res, None, &selector::Selectors::default()))
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// What the accept loop owns; dropping it (when the loop is aborted) closes the listener, aborts
/// every connection, and then tells [`ApiServer::stop`] it is done.
struct AcceptState {
    listener: Option<TcpListener>,
    connections: JoinSet<()>,
    done: std_mpsc::Sender<()>,
}

impl Drop for AcceptState {
    fn drop(&mut self) {
        self.listener.take();
        self.connections.abort_all();
        let _ = self.done.send(());
    }
}

async fn accept_loop(mut state: AcceptState, shared: Arc<Shared>) {
    loop {
        let Some(listener) = state.listener.as_ref() else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "test API server: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        state.connections.spawn(async move {
            let service = service_fn(move |req| http::handle(shared.clone(), req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        while state.connections.try_join_next().is_some() {}
    }
}
