//! The agent's Kubernetes side: the kube client, the view of the agent's own Node, the view of
//! its peers, and the annotations the agent publishes on its Node.
//!
//! The agent talks to the API server only through kube's normal client built from a kubeconfig
//! (or the in-cluster configuration); tests point that kubeconfig at the test API server.

mod backoff;
pub mod convert;
mod follow;
pub mod health;
pub mod netpol;
pub mod node;
pub mod peers;
pub mod policy;

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

pub use convert::{node_info, NodeInfoError};
pub use health::KubeHealth;
pub use node::{LocalNode, NodeInfo, NodeView};
pub use peers::{PeerNodes, PeersView};
pub use policy::PolicyView;
pub use weft_plan::names::FIELD_MANAGER;

/// Errors of the Kubernetes side of the agent.
#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    /// The kubeconfig file could not be read or parsed.
    #[error("reading kubeconfig {path}: {source}")]
    Kubeconfig {
        /// Path of the kubeconfig.
        path: String,
        /// Why.
        source: kube::config::KubeconfigError,
    },
    /// The in-cluster configuration is not available.
    #[error("loading in-cluster kube configuration: {0}")]
    InCluster(#[source] kube::config::InClusterError),
    /// The client could not be built from the configuration.
    #[error("building kube client for {server}: {source}")]
    Client {
        /// API server URL.
        server: String,
        /// Why.
        source: kube::Error,
    },
    /// Patching the Node's annotations failed.
    #[error("patching annotations of node {node}: {source}")]
    PatchNode {
        /// Node name.
        node: String,
        /// Why.
        source: kube::Error,
    },
    /// A view's watcher task ended (the runtime is shutting down).
    #[error("watch of node {node} ended")]
    ViewClosed {
        /// Node name.
        node: String,
    },
}

/// Builds a kube client from the kubeconfig at `kubeconfig`, or from the in-cluster service
/// account when it is empty.
pub async fn client(kubeconfig: &str) -> Result<Client, K8sError> {
    let config = if kubeconfig.is_empty() {
        Config::incluster().map_err(K8sError::InCluster)?
    } else {
        let kc = Kubeconfig::read_from(Path::new(kubeconfig)).map_err(|source| {
            K8sError::Kubeconfig {
                path: kubeconfig.to_string(),
                source,
            }
        })?;
        Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|source| K8sError::Kubeconfig {
                path: kubeconfig.to_string(),
                source,
            })?
    };
    let server = config.cluster_url.to_string();
    Client::try_from(config).map_err(|source| K8sError::Client { server, source })
}

/// Sets (`Some`) or removes (`None`) annotations on Node `node` with one JSON merge patch; other
/// annotations are left alone. Returns the Node as stored afterwards.
pub async fn patch_node_annotations(
    client: &Client,
    node: &str,
    annotations: &BTreeMap<String, Option<String>>,
) -> Result<Node, K8sError> {
    let api: Api<Node> = Api::all(client.clone());
    let patch = serde_json::json!({ "metadata": { "annotations": annotations } });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    };
    api.patch(node, &params, &Patch::Merge(&patch))
        .await
        .map_err(|source| K8sError::PatchNode {
            node: node.to_string(),
            source,
        })
}
