//! The API client `weftctl` uses: the plugin's RPC client ([`weft_cni::rpc::client::call_method`]:
//! jsonrpsee over the agent's unix socket, newline-framed like the server, one connection per
//! call), with weftctl's errors. One client for both.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonrpsee::core::client::Error as RpcClientError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use weft_cni::rpc::client::{call_method, CallFailure};

/// Errors calling the agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket.
    #[error("agent not running: {} {reason}", socket.display())]
    NotRunning {
        /// The socket.
        socket: PathBuf,
        /// `not found`, `refused the connection (stale socket)`.
        reason: &'static str,
    },
    /// Connecting failed otherwise (e.g. permission denied).
    #[error("cannot reach the agent at {}: {source}", socket.display())]
    Connect {
        /// The socket.
        socket: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("agent at {} did not answer {method} within {}s", socket.display(), timeout.as_secs())]
    Timeout {
        /// The socket.
        socket: PathBuf,
        /// The method.
        method: &'static str,
        /// The timeout.
        timeout: Duration,
    },
    /// The agent answered with an error.
    #[error("{message}")]
    Agent {
        /// The API error code (`super::types::code`).
        code: i32,
        /// The agent's message.
        message: String,
    },
    /// The exchange failed (connection dropped, unusable answer).
    #[error("agent at {} failed {method}: {reason}", socket.display())]
    Protocol {
        /// The socket.
        socket: PathBuf,
        /// The method.
        method: &'static str,
        /// What happened.
        reason: String,
    },
}

/// A client for the agent at one socket.
#[derive(Debug, Clone)]
pub struct ApiClient {
    socket: PathBuf,
    timeout: Duration,
}

impl ApiClient {
    /// A client for `socket`, each call bounded by `timeout`.
    pub fn new(socket: &Path, timeout: Duration) -> Self {
        ApiClient {
            socket: socket.to_path_buf(),
            timeout,
        }
    }

    /// Calls `method` with `params` and decodes the answer (through the workspace's one RPC
    /// client, [`weft_cni::rpc::client::call_method`]).
    pub async fn call<P: Serialize, R: DeserializeOwned>(
        &self,
        method: &'static str,
        params: &P,
    ) -> Result<R, ClientError> {
        let protocol = |reason: String| ClientError::Protocol {
            socket: self.socket.clone(),
            method,
            reason,
        };
        call_method(&self.socket, self.timeout, method, params)
            .await
            .map_err(|failure| match failure {
                CallFailure::Connect(source) => connect_error(&self.socket, source),
                CallFailure::Params(e) => protocol(format!("parameters not serialisable: {e}")),
                CallFailure::Timeout | CallFailure::Rpc(RpcClientError::RequestTimeout) => {
                    ClientError::Timeout {
                        socket: self.socket.clone(),
                        method,
                        timeout: self.timeout,
                    }
                }
                CallFailure::Rpc(RpcClientError::Call(obj)) => ClientError::Agent {
                    code: obj.code(),
                    message: obj.message().to_string(),
                },
                CallFailure::Rpc(other) => protocol(other.to_string()),
            })
    }
}

fn connect_error(socket: &Path, source: std::io::Error) -> ClientError {
    match source.kind() {
        std::io::ErrorKind::NotFound => ClientError::NotRunning {
            socket: socket.to_path_buf(),
            reason: "not found",
        },
        std::io::ErrorKind::ConnectionRefused => ClientError::NotRunning {
            socket: socket.to_path_buf(),
            reason: "refused the connection (stale socket)",
        },
        _ => ClientError::Connect {
            socket: socket.to_path_buf(),
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::{method, AgentInfo};

    #[tokio::test]
    async fn missing_and_stale_sockets_read_as_agent_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let client = ApiClient::new(&socket, Duration::from_secs(2));
        let err = client
            .call::<_, AgentInfo>(method::AGENT_INFO, &serde_json::json!({}))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("agent not running: {} not found", socket.display())
        );
        // A socket file nobody listens on.
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        let err = client
            .call::<_, AgentInfo>(method::AGENT_INFO, &serde_json::json!({}))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "agent not running: {} refused the connection (stale socket)",
                socket.display()
            )
        );
    }
}
