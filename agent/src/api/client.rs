//! The API client `weftctl` uses: jsonrpsee over the agent's unix socket, newline-framed like
//! the server (`weft_cni::rpc::framing`). One connection per call.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonrpsee::core::client::{ClientT, Error as RpcClientError};
use jsonrpsee::core::params::ArrayParams;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixStream;

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

    /// Calls `method` with `params` and decodes the answer.
    pub async fn call<P: Serialize, R: DeserializeOwned>(
        &self,
        method: &'static str,
        params: &P,
    ) -> Result<R, ClientError> {
        match tokio::time::timeout(self.timeout, self.exchange(method, params)).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout {
                socket: self.socket.clone(),
                method,
                timeout: self.timeout,
            }),
        }
    }

    async fn exchange<P: Serialize, R: DeserializeOwned>(
        &self,
        method: &'static str,
        params: &P,
    ) -> Result<R, ClientError> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|source| connect_error(&self.socket, source))?;
        let client = weft_cni::rpc::client::unix_client(stream, self.timeout);
        let protocol = |reason: String| ClientError::Protocol {
            socket: self.socket.clone(),
            method,
            reason,
        };
        let mut array = ArrayParams::new();
        array
            .insert(params)
            .map_err(|e| protocol(format!("parameters not serialisable: {e}")))?;
        client
            .request::<R, _>(method, array)
            .await
            .map_err(|err| match err {
                RpcClientError::Call(obj) => ClientError::Agent {
                    code: obj.code(),
                    message: obj.message().to_string(),
                },
                RpcClientError::RequestTimeout => ClientError::Timeout {
                    socket: self.socket.clone(),
                    method,
                    timeout: self.timeout,
                },
                other => protocol(other.to_string()),
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
