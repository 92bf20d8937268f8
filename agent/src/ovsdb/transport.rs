//! Where the client connects: `unix:PATH`, `tcp:IP:PORT`, or a caller-supplied connector (tests
//! use one to connect from inside a network namespace).

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use super::error::{OvsdbError, Result};

/// A byte stream the client can run over.
pub trait AsyncStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> AsyncStream for T {}

/// A boxed connection.
pub type BoxedStream = Box<dyn AsyncStream>;

/// What a custom connector returns.
pub type ConnectFuture = Pin<Box<dyn Future<Output = std::io::Result<BoxedStream>> + Send>>;

type ConnectFn = dyn Fn() -> ConnectFuture + Send + Sync;

/// An OVSDB server endpoint. Called again on every reconnect.
#[derive(Clone)]
pub enum Endpoint {
    /// A unix socket path.
    Unix(PathBuf),
    /// A TCP address.
    Tcp(SocketAddr),
    /// A caller-supplied connector, e.g. one that connects from another network namespace.
    Custom {
        /// Name used in logs and errors.
        name: String,
        /// Opens a new connection.
        connect: Arc<ConnectFn>,
    },
}

impl Endpoint {
    /// A custom connector from a closure returning a future of a stream.
    pub fn custom<F, Fut, S>(name: &str, connect: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::io::Result<S>> + Send + 'static,
        S: AsyncStream,
    {
        Endpoint::Custom {
            name: name.to_owned(),
            connect: Arc::new(move || {
                let fut = connect();
                Box::pin(async move { fut.await.map(|s| Box::new(s) as BoxedStream) })
            }),
        }
    }

    /// Opens a new connection.
    pub async fn connect(&self) -> Result<BoxedStream> {
        let result = match self {
            Endpoint::Unix(path) => tokio::net::UnixStream::connect(path)
                .await
                .map(|s| Box::new(s) as BoxedStream),
            Endpoint::Tcp(addr) => tokio::net::TcpStream::connect(addr).await.map(|s| {
                // Small requests and replies: do not wait for Nagle.
                let _ = s.set_nodelay(true);
                Box::new(s) as BoxedStream
            }),
            Endpoint::Custom { connect, .. } => connect().await,
        };
        result.map_err(|source| OvsdbError::Connect {
            endpoint: self.to_string(),
            source,
        })
    }
}

impl FromStr for Endpoint {
    type Err = OvsdbError;

    fn from_str(text: &str) -> Result<Self> {
        let invalid = || OvsdbError::InvalidEndpoint {
            endpoint: text.to_owned(),
        };
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(invalid());
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = text.strip_prefix("tcp:") {
            // Accept both `tcp:1.2.3.4:6640` and `tcp:[::1]:6640`.
            return addr.parse().map(Endpoint::Tcp).map_err(|_| invalid());
        }
        Err(invalid())
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
            Endpoint::Tcp(addr) => write!(f, "tcp:{addr}"),
            Endpoint::Custom { name, .. } => write!(f, "custom:{name}"),
        }
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Endpoint({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints() {
        assert_eq!(
            "unix:/run/openvswitch/db.sock"
                .parse::<Endpoint>()
                .unwrap()
                .to_string(),
            "unix:/run/openvswitch/db.sock"
        );
        assert_eq!(
            "tcp:127.0.0.1:6640"
                .parse::<Endpoint>()
                .unwrap()
                .to_string(),
            "tcp:127.0.0.1:6640"
        );
        assert_eq!(
            "tcp:[::1]:6640".parse::<Endpoint>().unwrap().to_string(),
            "tcp:[::1]:6640"
        );
        for bad in [
            "unix:",
            "tcp:1.2.3.4",
            "ssl:1.2.3.4:6640",
            "/run/db.sock",
            "tcp:host:1",
        ] {
            let err = bad.parse::<Endpoint>().unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[tokio::test]
    async fn custom_connector_is_called_and_errors_name_the_endpoint() {
        let ep = Endpoint::custom("refuse", || async {
            Err::<tokio::net::UnixStream, _>(std::io::Error::other("nope"))
        });
        let err = ep.connect().await.err().unwrap();
        assert_eq!(
            err.to_string(),
            "connect to ovsdb endpoint custom:refuse failed: nope"
        );
    }
}
