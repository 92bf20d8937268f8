//! Where the OpenFlow client connects: `unix:PATH` (the bridge management socket),
//! `tcp:IP:PORT`, or a caller-supplied [`Connector`] (e.g. one that connects from inside a
//! network namespace).

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream the client can speak OpenFlow over.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// A boxed [`Stream`].
pub type BoxStream = Box<dyn Stream>;

/// The future a [`Connector`] returns.
pub type ConnectFuture = Pin<Box<dyn Future<Output = std::io::Result<BoxStream>> + Send>>;

/// Opens a fresh stream to the switch. Called once per connection attempt (initial connect and
/// every reconnect); it must not block the runtime.
pub trait Connector: Send + Sync + 'static {
    /// Opens a new stream.
    fn connect(&self) -> ConnectFuture;
}

impl<F> Connector for F
where
    F: Fn() -> ConnectFuture + Send + Sync + 'static,
{
    fn connect(&self) -> ConnectFuture {
        self()
    }
}

/// Errors parsing an endpoint string.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EndpointError {
    /// The string is neither `unix:PATH` nor `tcp:IP:PORT`.
    #[error("unsupported openflow endpoint {0:?}: expected unix:PATH or tcp:IP:PORT")]
    Unsupported(String),
    /// The `tcp:` address does not parse.
    #[error("bad tcp address in openflow endpoint {endpoint:?}: {reason}")]
    BadAddress {
        /// The endpoint string.
        endpoint: String,
        /// The parser's message.
        reason: String,
    },
}

/// An OpenFlow endpoint.
#[derive(Clone)]
pub enum Endpoint {
    /// A unix socket, normally `RUNDIR/BRIDGE.mgmt`.
    Unix(PathBuf),
    /// A TCP address (a `ptcp:` controller target of the bridge).
    Tcp(SocketAddr),
    /// A custom connector (tests use one that connects from inside a network namespace).
    Custom(Arc<dyn Connector>),
}

impl Endpoint {
    /// Parses `unix:PATH` or `tcp:IP:PORT` (IPv6 as `tcp:[::1]:6653`).
    pub fn parse(s: &str) -> Result<Endpoint, EndpointError> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(EndpointError::Unsupported(s.to_string()));
            }
            Ok(Endpoint::Unix(PathBuf::from(path)))
        } else if let Some(addr) = s.strip_prefix("tcp:") {
            addr.parse()
                .map(Endpoint::Tcp)
                .map_err(|e: std::net::AddrParseError| EndpointError::BadAddress {
                    endpoint: s.to_string(),
                    reason: e.to_string(),
                })
        } else {
            Err(EndpointError::Unsupported(s.to_string()))
        }
    }

    /// An endpoint that calls `connector` for each connection attempt.
    pub fn custom(connector: impl Connector) -> Endpoint {
        Endpoint::Custom(Arc::new(connector))
    }

    /// Opens a stream to the endpoint.
    pub async fn connect(&self) -> std::io::Result<BoxStream> {
        match self {
            Endpoint::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok(Box::new(stream))
            }
            Endpoint::Tcp(addr) => {
                let stream = tokio::net::TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                Ok(Box::new(stream))
            }
            Endpoint::Custom(connector) => connector.connect().await,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
            Endpoint::Tcp(addr) => write!(f, "tcp:{addr}"),
            Endpoint::Custom(_) => write!(f, "custom"),
        }
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Endpoint({self})")
    }
}

impl std::str::FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Endpoint::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_unix_and_tcp() {
        assert_eq!(
            Endpoint::parse("unix:/run/openvswitch/br-int.mgmt")
                .unwrap()
                .to_string(),
            "unix:/run/openvswitch/br-int.mgmt"
        );
        assert_eq!(
            Endpoint::parse("tcp:127.0.0.1:6653").unwrap().to_string(),
            "tcp:127.0.0.1:6653"
        );
        assert_eq!(
            Endpoint::parse("tcp:[::1]:6653").unwrap().to_string(),
            "tcp:[::1]:6653"
        );
    }

    #[test]
    fn rejects_others() {
        assert!(matches!(
            Endpoint::parse("ssl:1.2.3.4:6653"),
            Err(EndpointError::Unsupported(_))
        ));
        assert!(matches!(
            Endpoint::parse("tcp:nohost"),
            Err(EndpointError::BadAddress { .. })
        ));
        assert!(Endpoint::parse("unix:").is_err());
    }
}
