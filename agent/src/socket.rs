//! The root-only unix sockets the agent serves (the CNI socket and the local API socket).

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a socket could not be served.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// The socket's directory, a stale socket or the socket itself could not be set up.
    #[error("cannot serve {kind} socket {path}: {source}")]
    Io {
        /// Which socket (`cni`, `api`).
        kind: &'static str,
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Something other than a socket is in the way.
    #[error("cannot serve {kind} socket {path}: a file that is not a socket is in the way")]
    NotASocket {
        /// Which socket.
        kind: &'static str,
        /// The socket path.
        path: PathBuf,
    },
}

/// Binds a unix socket only root can use: its directory is created 0700 if missing, a stale
/// socket is replaced (anything else in the way is an error), the socket is 0600.
pub fn bind_private(
    kind: &'static str,
    path: &Path,
) -> Result<tokio::net::UnixListener, SocketError> {
    let err = |source| SocketError::Io {
        kind,
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(err)?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path).map_err(err)?,
        Ok(_) => {
            return Err(SocketError::NotASocket {
                kind,
                path: path.to_path_buf(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn socket_is_private_and_stale_sockets_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/x.sock");
        let first = bind_private("test", &path).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        drop(first);
        bind_private("test", &path).unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let err = bind_private("test", &file).unwrap_err();
        assert!(matches!(err, SocketError::NotASocket { .. }), "{err}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
    }
}
