//! The root-only unix sockets the agent serves (the CNI socket and the local API socket).
//!
//! A socket is never connectable by anyone else, not even for an instant: it is bound inside a
//! fresh private staging directory (0700, only the agent can traverse it), made 0600 there and
//! only then renamed onto its path. The process umask is never touched (the agent is
//! multi-threaded), and no `unsafe` is needed.

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

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
    /// The existing directory would let someone else replace or shadow the socket.
    #[error(
        "cannot serve {kind} socket in directory {dir}: it has mode {mode:04o} and owner uid \
         {uid}; it must not be group- or world-writable and must be owned by root or uid {agent}"
    )]
    UnsafeDirectory {
        /// Which socket.
        kind: &'static str,
        /// The socket's directory.
        dir: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// Its owner.
        uid: u32,
        /// The agent's effective uid.
        agent: u32,
    },
    /// The staged socket did not come out as a 0600 socket owned by the agent.
    #[error("cannot serve {kind} socket {path}: bound socket has mode {mode:04o} owner uid {uid}")]
    NotPrivate {
        /// Which socket.
        kind: &'static str,
        /// The socket path.
        path: PathBuf,
        /// The staged socket's permission bits.
        mode: u32,
        /// Its owner.
        uid: u32,
    },
}

/// Makes staging directory names unique within the process (the pid makes them unique across
/// processes).
static STAGING: AtomicU64 = AtomicU64::new(0);

/// Staging directories are named `.weft-PID-N`.
const STAGING_PREFIX: &str = ".weft-";

/// How many staging names one process tries before giving up.
const STAGING_ATTEMPTS: u32 = 1024;

/// Removes staging directories in `dir` left by processes that no longer run (an agent killed
/// between bind and rename). Best effort: a directory that cannot be read is left alone.
fn sweep_staging(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(STAGING_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Removes the staging directory (and a socket left in it) when dropped.
struct Staging(PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Binds a unix socket only root (the agent's uid) can use. Its directory is created 0700 if
/// missing; an existing directory must be owned by root or the agent and not group- or
/// world-writable ([`SocketError::UnsafeDirectory`] otherwise). Anything but a socket at `path`
/// is refused before anything is created; a stale socket is replaced atomically. The socket is
/// bound in a private staging directory next to `path`, made 0600 and renamed onto `path`, so
/// it is never reachable with wider permissions; nothing is left behind on failure.
pub fn bind_private(
    kind: &'static str,
    path: &Path,
) -> Result<tokio::net::UnixListener, SocketError> {
    let err = |source| SocketError::Io {
        kind,
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if path.file_name().is_none() {
        return Err(err(std::io::ErrorKind::InvalidInput.into()));
    }
    check_dir(kind, dir)?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {}
        Ok(_) => {
            return Err(SocketError::NotASocket {
                kind,
                path: path.to_path_buf(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }

    sweep_staging(dir);
    // mkdir(2) with 0700 yields at most 0700 whatever the umask. A name already taken (left by
    // an earlier run with the same pid, e.g. pid 1 in a container, killed mid-bind) is skipped.
    let mut attempts = 0;
    let staging = loop {
        attempts += 1;
        let candidate = dir.join(format!(
            "{STAGING_PREFIX}{}-{}",
            std::process::id(),
            STAGING.fetch_add(1, Ordering::Relaxed)
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&candidate) {
            Ok(()) => break Staging(candidate),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if attempts >= STAGING_ATTEMPTS {
                    return Err(err(e));
                }
            }
            Err(e) => return Err(err(e)),
        }
    };
    let staged = staging.0.join("s");
    let listener = std::os::unix::net::UnixListener::bind(&staged).map_err(err)?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    let meta = std::fs::symlink_metadata(&staged).map_err(err)?;
    let agent = nix::unistd::geteuid().as_raw();
    if !meta.file_type().is_socket() || meta.mode() & 0o777 != 0o600 || meta.uid() != agent {
        return Err(SocketError::NotPrivate {
            kind,
            path: path.to_path_buf(),
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
        });
    }
    listener.set_nonblocking(true).map_err(err)?;
    let listener = tokio::net::UnixListener::from_std(listener).map_err(err)?;
    // The last step: rename(2) replaces a stale socket atomically.
    std::fs::rename(&staged, path).map_err(err)?;
    drop(staging);
    Ok(listener)
}

/// Creates `dir` 0700 if missing, or checks that an existing one is owned by root or the agent
/// and not group- or world-writable.
fn check_dir(kind: &'static str, dir: &Path) -> Result<(), SocketError> {
    let io = |source| SocketError::Io {
        kind,
        path: dir.to_path_buf(),
        source,
    };
    let meta = match std::fs::metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io);
        }
        Err(e) => return Err(io(e)),
    };
    if !meta.is_dir() {
        return Err(io(std::io::ErrorKind::NotADirectory.into()));
    }
    let agent = nix::unistd::geteuid().as_raw();
    let (mode, uid) = (meta.mode() & 0o7777, meta.uid());
    if mode & 0o022 != 0 || (uid != 0 && uid != agent) {
        return Err(SocketError::UnsafeDirectory {
            kind,
            dir: dir.to_path_buf(),
            mode,
            uid,
            agent,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn socket_is_private_and_stale_sockets_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/x.sock");
        let first = bind_private("test", &path).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(entries(path.parent().unwrap()), ["x.sock"]);
        drop(first);
        // The stale socket is replaced by the rename: the new listener serves the path.
        let second = bind_private("test", &path).unwrap();
        let client = tokio::net::UnixStream::connect(&path);
        let (accepted, connected) = tokio::join!(second.accept(), client);
        accepted.unwrap();
        connected.unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(entries(path.parent().unwrap()), ["x.sock"]);
    }

    #[tokio::test]
    async fn existing_directory_is_kept_and_the_socket_is_still_0600() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        // As kubelet creates a DirectoryOrCreate hostPath.
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = run.join("x.sock");
        let _listener = bind_private("test", &path).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&run), 0o755);
        assert_eq!(entries(&run), ["x.sock"]);
    }

    #[tokio::test]
    async fn writable_directory_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        for bits in [0o777, 0o1777, 0o770, 0o702] {
            let run = dir.path().join(format!("run{bits:o}"));
            std::fs::create_dir(&run).unwrap();
            std::fs::set_permissions(&run, std::fs::Permissions::from_mode(bits)).unwrap();
            let path = run.join("x.sock");
            let err = bind_private("test", &path).unwrap_err();
            assert!(
                matches!(err, SocketError::UnsafeDirectory { mode, .. } if mode == bits),
                "{err}"
            );
            let text = err.to_string();
            assert!(text.contains(&run.display().to_string()), "{text}");
            assert!(text.contains(&format!("{bits:04o}")), "{text}");
            assert_eq!(mode(&run), bits);
            assert!(entries(&run).is_empty(), "{:?}", entries(&run));
        }
    }

    #[tokio::test]
    async fn non_socket_is_refused_before_anything_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        for path in [&file, &sub] {
            let err = bind_private("test", path).unwrap_err();
            assert!(matches!(err, SocketError::NotASocket { .. }), "{err}");
        }
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
        assert!(entries(&sub).is_empty());
        assert_eq!(entries(dir.path()), ["file", "sub"]);
    }

    #[tokio::test]
    async fn staging_left_by_a_killed_agent_is_swept() {
        let dir = tempfile::tempdir().unwrap();
        // Above the kernel's pid_max (2^22): that process cannot be running.
        let stale = dir.path().join(".weft-999999999-0");
        std::fs::create_dir(&stale).unwrap();
        std::fs::write(stale.join("s"), "").unwrap();
        // Not a staging directory name, or a live process's: kept.
        let own = format!(".weft-{}-999", std::process::id());
        for keep in [".weft-x", "other", own.as_str()] {
            std::fs::create_dir(dir.path().join(keep)).unwrap();
        }
        let _listener = bind_private("test", &dir.path().join("x.sock")).unwrap();
        assert_eq!(
            entries(dir.path()),
            [own.as_str(), ".weft-x", "other", "x.sock"]
        );
    }

    #[tokio::test]
    async fn a_staging_name_left_by_an_earlier_run_with_this_pid_is_skipped() {
        // pid 1 in a container: the run before this one had the same pid and died mid-bind.
        let dir = tempfile::tempdir().unwrap();
        let next = STAGING.load(Ordering::Relaxed);
        let pid = std::process::id();
        for n in next..next + 3 {
            std::fs::create_dir(dir.path().join(format!(".weft-{pid}-{n}"))).unwrap();
        }
        let path = dir.path().join("x.sock");
        let _listener = bind_private("test", &path).unwrap();
        assert!(std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_socket());
    }

    #[tokio::test]
    async fn failed_bind_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        // A directory whose name is too long for the staged socket's sockaddr_un (108 bytes).
        let run = dir.path().join("r".repeat(100));
        std::fs::create_dir(&run).unwrap();
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
        let err = bind_private("test", &run.join("x.sock")).unwrap_err();
        assert!(matches!(err, SocketError::Io { .. }), "{err}");
        assert!(entries(&run).is_empty(), "{:?}", entries(&run));
    }
}
