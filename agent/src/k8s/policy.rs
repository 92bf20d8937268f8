//! The cluster view NetworkPolicy needs: every Pod (labels, IPs, node, named ports), every
//! Namespace (labels) and every `networking.k8s.io/v1` NetworkPolicy, kept by three watches in
//! the style of the Node watch (list, then watch from the list's resourceVersion, resume after
//! errors, relist after 410 Gone), converted on arrival ([`super::netpol`]) so only the fields
//! policy uses stay in memory.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::pin::pin;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy as K8sPolicy;
use kube::runtime::utils::StreamBackoff;
use kube::runtime::watcher::{self, watcher, Event};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weft_plan::policy::{ClusterView, Labels, NetworkPolicy, PodInfo};

use super::backoff::WatchBackoff;
use super::netpol::{namespace_labels, network_policy, pod_info, ConvertError};

/// One kind's objects: the current set, and the set being relisted.
#[derive(Debug)]
struct Kind<V> {
    current: BTreeMap<String, V>,
    relisting: BTreeMap<String, V>,
    synced: bool,
}

impl<V> Default for Kind<V> {
    fn default() -> Self {
        Kind {
            current: BTreeMap::new(),
            relisting: BTreeMap::new(),
            synced: false,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    pods: Kind<PodInfo>,
    namespaces: Kind<Labels>,
    policies: Kind<NetworkPolicy>,
}

/// The live cluster view for NetworkPolicy. Dropping it stops the watches.
pub struct PolicyView {
    state: Arc<Mutex<State>>,
    rx: watch::Receiver<u64>,
    tasks: Vec<JoinHandle<()>>,
}

impl Debug for PolicyView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyView").finish_non_exhaustive()
    }
}

impl PolicyView {
    /// Starts the three watches on the current runtime.
    pub fn start(client: Client) -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let (tx, rx) = watch::channel(0u64);
        let tx = Arc::new(tx);
        let tasks = vec![
            spawn_follow(
                Api::<Pod>::all(client.clone()),
                "pods",
                Arc::clone(&state),
                Arc::clone(&tx),
                |s| &mut s.pods,
                |pod: &Pod| pod_info(pod).map(|info| info.map(|i| (key(&i.namespace, &i.name), i))),
            ),
            spawn_follow(
                Api::<Namespace>::all(client.clone()),
                "namespaces",
                Arc::clone(&state),
                Arc::clone(&tx),
                |s| &mut s.namespaces,
                |ns: &Namespace| namespace_labels(ns).map(Some),
            ),
            spawn_follow(
                Api::<K8sPolicy>::all(client),
                "networkpolicies",
                Arc::clone(&state),
                tx,
                |s| &mut s.policies,
                |p: &K8sPolicy| network_policy(p).map(|p| Some((key(&p.namespace, &p.name), p))),
            ),
        ];
        PolicyView { state, rx, tasks }
    }

    /// Changes (a generation number) after every complete (re)list and every change of a
    /// converted object.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.rx.clone()
    }

    /// Whether all three kinds have been listed at least once.
    pub fn synced(&self) -> bool {
        let s = lock(&self.state);
        s.pods.synced && s.namespaces.synced && s.policies.synced
    }

    /// The view, `None` until all three kinds have been listed (never mistake "not listed yet"
    /// for "no policy").
    pub fn snapshot(&self) -> Option<ClusterView> {
        let s = lock(&self.state);
        if !(s.pods.synced && s.namespaces.synced && s.policies.synced) {
            return None;
        }
        Some(ClusterView {
            namespaces: s.namespaces.current.clone(),
            pods: s.pods.current.values().cloned().collect(),
            policies: s.policies.current.values().cloned().collect(),
        })
    }

    /// Counts of (pods, namespaces, policies) in the view.
    pub fn counts(&self) -> (usize, usize, usize) {
        let s = lock(&self.state);
        (
            s.pods.current.len(),
            s.namespaces.current.len(),
            s.policies.current.len(),
        )
    }
}

impl Drop for PolicyView {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

fn object_key<K: Resource>(obj: &K) -> Option<String> {
    let meta = obj.meta();
    let name = meta.name.as_deref()?;
    Some(match meta.namespace.as_deref() {
        Some(ns) => key(ns, name),
        None => name.to_string(),
    })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

type Convert<K, V> = fn(&K) -> Result<Option<(String, V)>, ConvertError>;

fn spawn_follow<K, V>(
    api: Api<K>,
    what: &'static str,
    state: Arc<Mutex<State>>,
    tx: Arc<watch::Sender<u64>>,
    kind: fn(&mut State) -> &mut Kind<V>,
    convert: Convert<K, V>,
) -> JoinHandle<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
    V: PartialEq + Send + 'static,
{
    tokio::spawn(async move {
        let mut events = pin!(StreamBackoff::new(
            watcher(api, watcher::Config::default()),
            WatchBackoff::default()
        ));
        while let Some(event) = events.next().await {
            let changed = match event {
                Ok(event) => {
                    let mut s = lock(&state);
                    apply(kind(&mut s), event, convert, what)
                }
                Err(watcher::Error::WatchError(status)) if status.code == 410 => {
                    tracing::info!(watch = what, "watch expired (410 Gone), relisting");
                    false
                }
                Err(error) => {
                    tracing::warn!(watch = what, %error, "watch failed, retrying");
                    false
                }
            };
            if changed {
                tx.send_modify(|generation| *generation += 1);
            }
        }
    })
}

/// Applies one watch event to a kind; whether the published set changed.
fn apply<K: Resource, V: PartialEq>(
    kind: &mut Kind<V>,
    event: Event<K>,
    convert: Convert<K, V>,
    what: &str,
) -> bool {
    let converted = |obj: &K| match convert(obj) {
        Ok(v) => v,
        Err(error) => {
            tracing::warn!(watch = what, %error, "ignoring object");
            None
        }
    };
    match event {
        Event::Init => {
            kind.relisting.clear();
            false
        }
        Event::InitApply(obj) => {
            if let Some((k, v)) = converted(&obj) {
                kind.relisting.insert(k, v);
            }
            false
        }
        Event::InitDone => {
            let relisted = std::mem::take(&mut kind.relisting);
            let changed = !kind.synced || kind.current != relisted;
            kind.current = relisted;
            kind.synced = true;
            changed
        }
        Event::Apply(obj) => match converted(&obj) {
            Some((k, v)) => {
                if kind.current.get(&k) == Some(&v) {
                    false
                } else {
                    kind.current.insert(k, v);
                    true
                }
            }
            None => object_key(&obj).is_some_and(|k| kind.current.remove(&k).is_some()),
        },
        Event::Delete(obj) => object_key(&obj).is_some_and(|k| kind.current.remove(&k).is_some()),
    }
}
