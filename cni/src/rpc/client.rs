//! The plugin side: a jsonrpsee client over a unix socket with a bounded timeout.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonrpsee::core::client::{
    ClientBuilder, ClientT, Error as RpcClientError, ReceivedMessage, TransportReceiverT,
    TransportSenderT,
};
use jsonrpsee::core::params::ArrayParams;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use super::framing::{write_frame, FrameError, FrameReader};
use super::{cni_error_from_rpc, method_for, CniRequest, CniResponse};
use crate::env::Command;
use crate::error::{code, CniError};

/// Errors calling the agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting failed: socket missing, connection refused, permission denied.
    #[error("agent not reachable at {}: {source}", socket.display())]
    Unreachable {
        /// The agent socket.
        socket: PathBuf,
        /// The connect error.
        #[source]
        source: std::io::Error,
    },
    /// The agent did not answer within the timeout.
    #[error("agent at {} did not answer {method} within {}s", socket.display(), timeout.as_secs())]
    Timeout {
        /// The agent socket.
        socket: PathBuf,
        /// The method called.
        method: &'static str,
        /// The timeout in force.
        timeout: Duration,
    },
    /// The connection broke before the answer arrived.
    #[error("agent at {} closed the connection during {method}: {reason}", socket.display())]
    Disconnected {
        /// The agent socket.
        socket: PathBuf,
        /// The method called.
        method: &'static str,
        /// What the transport reported.
        reason: String,
    },
    /// The agent answered with a CNI error, passed through unchanged.
    #[error(transparent)]
    Agent(CniError),
    /// The agent's answer is unusable (protocol mismatch, malformed response).
    #[error("agent at {} answered {method} with an unusable response: {reason}", socket.display())]
    Protocol {
        /// The agent socket.
        socket: PathBuf,
        /// The method called.
        method: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// VERSION has no agent method.
    #[error("{0} is not forwarded to the agent")]
    NoMethod(Command),
    /// The plugin could not start its async runtime.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

impl ClientError {
    /// The CNI error for this failure of `command`.
    ///
    /// An unreachable, slow or vanished agent is transient: code 11 (try again later), except for
    /// STATUS, whose spec answer for "a daemon the plugin relies on is unavailable" is code 50.
    pub fn into_cni_error(self, command: Command) -> CniError {
        let transient = if command == Command::Status {
            code::PLUGIN_NOT_AVAILABLE
        } else {
            code::TRY_AGAIN_LATER
        };
        match self {
            ClientError::Agent(err) => err,
            ClientError::Unreachable { ref source, .. } => {
                let details = format!("connect: {source}; is weft-agent running?");
                CniError::new(transient, self.to_string(), details)
            }
            ClientError::Timeout { .. } | ClientError::Disconnected { .. } => {
                CniError::new(transient, self.to_string(), "")
            }
            ClientError::Protocol { .. } => {
                CniError::new(code::AGENT_PROTOCOL, self.to_string(), "")
            }
            ClientError::NoMethod(_) | ClientError::Runtime(_) => {
                CniError::new(code::INTERNAL, self.to_string(), "")
            }
        }
    }
}

/// How one [`call_method`] failed, before its caller maps it to its own error type.
#[derive(Debug)]
pub enum CallFailure {
    /// Connecting to the socket failed.
    Connect(std::io::Error),
    /// The parameters did not serialise (the serde error, rendered).
    Params(String),
    /// No answer within the timeout, connection included.
    Timeout,
    /// jsonrpsee's error: the agent's error object, a transport or protocol failure.
    Rpc(RpcClientError),
}

/// Calls `method` with `params` on the agent at `socket` over one connection of its own, waiting
/// at most `timeout` for the answer (connection included), and decodes the answer. The one RPC
/// client of the workspace: the plugin ([`call`]) and weftctl (the agent's `ApiClient`) both go
/// through it and map [`CallFailure`] to their own errors.
pub async fn call_method<P: Serialize, R: DeserializeOwned>(
    socket: &Path,
    timeout: Duration,
    method: &str,
    params: &P,
) -> Result<R, CallFailure> {
    let exchange = async {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(CallFailure::Connect)?;
        let client = unix_client(stream, timeout);
        let mut array = ArrayParams::new();
        array
            .insert(params)
            .map_err(|e| CallFailure::Params(e.to_string()))?;
        client
            .request::<R, _>(method, array)
            .await
            .map_err(CallFailure::Rpc)
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(answer) => answer,
        Err(_) => Err(CallFailure::Timeout),
    }
}

/// Sends `request` to the agent at `socket` and waits at most `timeout` for the answer,
/// connection included. One connection per call.
pub async fn call(
    socket: &Path,
    timeout: Duration,
    request: &CniRequest,
) -> Result<CniResponse, ClientError> {
    let method = method_for(request.command).ok_or(ClientError::NoMethod(request.command))?;
    call_method(socket, timeout, method, request)
        .await
        .map_err(|failure| match failure {
            CallFailure::Connect(source) => ClientError::Unreachable {
                socket: socket.to_owned(),
                source,
            },
            CallFailure::Params(e) => ClientError::Protocol {
                socket: socket.to_owned(),
                method,
                reason: format!("request not serialisable: {e}"),
            },
            CallFailure::Timeout => ClientError::Timeout {
                socket: socket.to_owned(),
                method,
                timeout,
            },
            CallFailure::Rpc(err) => classify(err, socket, method, timeout),
        })
}

fn classify(
    err: RpcClientError,
    socket: &Path,
    method: &'static str,
    timeout: Duration,
) -> ClientError {
    let socket = socket.to_owned();
    match err {
        RpcClientError::Call(obj) => ClientError::Agent(cni_error_from_rpc(&obj, method)),
        RpcClientError::RequestTimeout => ClientError::Timeout {
            socket,
            method,
            timeout,
        },
        RpcClientError::Transport(e) => ClientError::Disconnected {
            socket,
            method,
            reason: e.to_string(),
        },
        // The background task stops on a broken socket (transport) or on an answer it cannot
        // parse (protocol).
        RpcClientError::RestartNeeded(e) if matches!(*e, RpcClientError::Transport(_)) => {
            ClientError::Disconnected {
                socket,
                method,
                reason: e.to_string(),
            }
        }
        RpcClientError::RestartNeeded(e) => ClientError::Protocol {
            socket,
            method,
            reason: e.to_string(),
        },
        other => ClientError::Protocol {
            socket,
            method,
            reason: other.to_string(),
        },
    }
}

/// A jsonrpsee client over a connected unix stream speaking Weft's line framing, one request at a
/// time, each bounded by `timeout`. Shared by the plugin and weftctl.
pub fn unix_client(stream: UnixStream, timeout: Duration) -> jsonrpsee::core::client::Client {
    let (read, write) = stream.into_split();
    ClientBuilder::default()
        .request_timeout(timeout)
        .max_concurrent_requests(1)
        .build_with_tokio(Sender(write), Receiver(FrameReader::new(read)))
}

/// Writing half of the client transport: one frame per message.
struct Sender(OwnedWriteHalf);

impl TransportSenderT for Sender {
    type Error = FrameError;

    async fn send(&mut self, msg: String) -> Result<(), Self::Error> {
        write_frame(&mut self.0, &msg).await
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.0.shutdown().await.map_err(FrameError::Io)
    }
}

/// Reading half of the client transport.
struct Receiver(FrameReader<OwnedReadHalf>);

impl TransportReceiverT for Receiver {
    type Error = FrameError;

    async fn receive(&mut self) -> Result<ReceivedMessage, Self::Error> {
        match self.0.read_frame().await? {
            Some(text) => Ok(ReceivedMessage::Text(text)),
            None => Err(FrameError::Closed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_failures_map_to_11_or_50_for_status() {
        let err = || ClientError::Unreachable {
            socket: "/run/x.sock".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        let add = err().into_cni_error(Command::Add);
        assert_eq!(add.code, code::TRY_AGAIN_LATER);
        assert!(
            add.msg.starts_with("agent not reachable at /run/x.sock: "),
            "{}",
            add.msg
        );
        assert_eq!(
            err().into_cni_error(Command::Status).code,
            code::PLUGIN_NOT_AVAILABLE
        );
        let timeout = ClientError::Timeout {
            socket: "/run/x.sock".into(),
            method: "cni_add",
            timeout: Duration::from_secs(3),
        };
        let cni = timeout.into_cni_error(Command::Add);
        assert_eq!(cni.code, code::TRY_AGAIN_LATER);
        assert_eq!(
            cni.msg,
            "agent at /run/x.sock did not answer cni_add within 3s"
        );
    }

    #[test]
    fn agent_errors_pass_through() {
        let agent = CniError::new(3, "container unknown", "c1");
        assert_eq!(
            ClientError::Agent(agent.clone()).into_cni_error(Command::Check),
            agent
        );
    }
}
