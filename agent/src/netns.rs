//! Network namespaces: open and validate one by path, run code inside it, and get an rtnetlink
//! handle whose socket lives in it.
//!
//! Entering a namespace (`setns`) changes only the calling thread, so it is done on a dedicated,
//! short-lived std thread and never on a tokio worker: a worker that entered a pod's namespace
//! would run every later task there. A netlink socket keeps the namespace it was created in for
//! its whole life, so [`Netns::rtnetlink`] creates the socket on such a thread and then drives the
//! connection on the runtime like any other.
//!
//! This is the only module of the agent that may contain `unsafe` (the crate denies it; the
//! private `ethtool` submodule allows it for the `SIOCETHTOOL` ioctl, which has no safe wrapper).
//! Everything else here, `setns` included, goes through nix's safe API.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::sched::{setns, CloneFlags};
use nix::sys::statfs::{fstatfs, NSFS_MAGIC};

/// Errors from opening, validating and entering network namespaces.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The path does not exist (for a pod: the sandbox is gone).
    #[error("netns {path} does not exist")]
    NotFound {
        /// The path that was opened.
        path: PathBuf,
    },
    /// The path exists but is not a network namespace.
    #[error("{path} is not a network namespace ({found})")]
    NotNetns {
        /// The path that was opened.
        path: PathBuf,
        /// What the path is instead, e.g. `ext4 file` or `mnt:[4026531841]`.
        found: String,
    },
    /// Opening or inspecting the path failed for another reason.
    #[error("cannot open netns {path}: {source}")]
    Open {
        /// The path that was opened.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// `setns` into the namespace failed.
    #[error("cannot enter netns {path}: {source}")]
    Enter {
        /// The namespace's path.
        path: PathBuf,
        /// The underlying error.
        source: nix::errno::Errno,
    },
    /// The thread running code inside the namespace could not be spawned or panicked.
    #[error("worker thread for netns {path} failed: {reason}")]
    Thread {
        /// The namespace's path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Creating the netlink socket inside the namespace failed.
    #[error("cannot open a netlink socket in netns {path}: {source}")]
    Netlink {
        /// The namespace's path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// [`Netns::rtnetlink`] was called outside a tokio runtime.
    #[error("netlink connection for netns {path} needs a tokio runtime")]
    NoRuntime {
        /// The namespace's path.
        path: PathBuf,
    },
    /// An ethtool ioctl failed.
    #[error("ethtool {command} on interface {ifname} failed: {source}")]
    Ethtool {
        /// The interface.
        ifname: String,
        /// The ethtool command, e.g. `ETHTOOL_STXCSUM`.
        command: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// An interface name is not usable in an ioctl (empty, too long or containing NUL).
    #[error("invalid interface name {ifname:?} for ethtool")]
    BadIfname {
        /// The name given.
        ifname: String,
    },
}

/// Identity of a network namespace: the (device, inode) pair of its nsfs file. Two handles refer
/// to the same namespace exactly when their ids are equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NetnsId {
    /// `st_dev` of the nsfs file.
    pub dev: u64,
    /// `st_ino` of the nsfs file (the number shown in `net:[...]`).
    pub ino: u64,
}

/// An open network namespace. Cloning is cheap and shares the file descriptor, which keeps the
/// namespace alive while any clone exists.
#[derive(Debug, Clone)]
pub struct Netns {
    path: PathBuf,
    fd: Arc<OwnedFd>,
    id: NetnsId,
}

impl Netns {
    /// Opens the namespace at `path` (e.g. `/var/run/netns/cni-1234` or `/proc/PID/ns/net`) and
    /// checks that it is a network namespace: the file must live on nsfs, and a short-lived probe
    /// thread must be able to enter it as a network namespace (no unsafe `NS_GET_NSTYPE` ioctl
    /// needed; costs one thread spawn). A missing path gives [`NetnsError::NotFound`], anything else that is not a
    /// network namespace (a plain file left behind by an unmounted namespace, a mount namespace)
    /// gives [`NetnsError::NotNetns`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, NetnsError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => NetnsError::NotFound { path: path.clone() },
            _ => NetnsError::Open {
                path: path.clone(),
                source,
            },
        })?;
        let open_err = |source: io::Error| NetnsError::Open {
            path: path.clone(),
            source,
        };
        let meta = file.metadata().map_err(open_err)?;
        let fs = fstatfs(&file).map_err(|e| open_err(e.into()))?;
        if fs.filesystem_type() != NSFS_MAGIC {
            return Err(NetnsError::NotNetns {
                path,
                found: format!("a file on filesystem type {:#x}", fs.filesystem_type().0),
            });
        }
        // nsfs holds every namespace type. Let the kernel decide: entering the file as a network
        // namespace fails with EINVAL for any other type. The probe thread ends at once and
        // leaves the caller's namespace alone.
        let probe = file.try_clone().map_err(open_err)?;
        let entered = std::thread::Builder::new()
            .name("weft-netns-probe".into())
            .spawn(move || setns(probe.as_fd(), CloneFlags::CLONE_NEWNET))
            .map_err(open_err)?
            .join()
            .map_err(|_| open_err(io::Error::other("netns probe thread panicked")))?;
        match entered {
            Ok(()) => {}
            Err(nix::errno::Errno::EINVAL) => {
                // For /proc/PID/ns/* files the link text names the type, e.g. "mnt:[4026531841]".
                let link = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let found = if link.contains(":[") {
                    link
                } else {
                    "a namespace of another type".to_string()
                };
                return Err(NetnsError::NotNetns { path, found });
            }
            Err(errno) => return Err(open_err(errno.into())),
        }
        Ok(Netns {
            path,
            fd: Arc::new(file.into()),
            id: NetnsId {
                dev: meta.dev(),
                ino: meta.ino(),
            },
        })
    }

    /// Opens the network namespace the process runs in (`/proc/self/ns/net`, the main thread's).
    pub fn current() -> Result<Self, NetnsError> {
        Netns::open("/proc/self/ns/net")
    }

    /// The path this namespace was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The namespace's identity.
    pub fn id(&self) -> NetnsId {
        self.id
    }

    /// Runs `f` on a new std thread that has entered this namespace, blocking the caller until it
    /// returns. For synchronous callers; async code uses [`Netns::run`].
    pub fn run_blocking<F, R>(&self, f: F) -> Result<R, NetnsError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = self.spawn_in(move |entered| {
            // The receiver outlives the thread (joined below).
            let _ = tx.send(entered.map(|()| f()));
        })?;
        let _ = thread.join();
        rx.recv().unwrap_or_else(|_| Err(self.panicked()))
    }

    /// Runs `f` on a new std thread that has entered this namespace and awaits its result
    /// without blocking the runtime. The runtime's own threads never change namespace.
    pub async fn run<F, R>(&self, f: F) -> Result<R, NetnsError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        // Detached: the thread ends on its own once `f` returns.
        let _thread = self.spawn_in(move |entered| {
            // The receiver is gone only if the caller's future was dropped; nothing to report.
            let _ = tx.send(entered.map(|()| f()));
        })?;
        rx.await.unwrap_or_else(|_| Err(self.panicked()))
    }

    /// Returns an rtnetlink handle whose socket was created inside this namespace, so every
    /// request on it acts on this namespace. The connection is spawned on the current tokio
    /// runtime and ends when the last clone of the handle is dropped.
    pub async fn rtnetlink(&self) -> Result<rtnetlink::Handle, NetnsError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| NetnsError::NoRuntime {
            path: self.path.clone(),
        })?;
        let path = self.path.clone();
        let rt = runtime.clone();
        let (connection, handle) = self
            .run(move || {
                // Registering the socket with the reactor needs the runtime's context; the
                // socket itself is created by this thread, inside the namespace.
                let _guard = rt.enter();
                rtnetlink::new_connection()
                    .map(|(connection, handle, _messages)| (connection, handle))
                    .map_err(|source| NetnsError::Netlink { path, source })
            })
            .await??;
        runtime.spawn(connection);
        Ok(handle)
    }

    /// Spawns a thread that enters the namespace and then calls `f` with the outcome of entering
    /// it (`f` must not touch the network when that is an error: the thread is still in the
    /// caller's namespace).
    fn spawn_in<F>(&self, f: F) -> Result<std::thread::JoinHandle<()>, NetnsError>
    where
        F: FnOnce(Result<(), NetnsError>) + Send + 'static,
    {
        let fd = Arc::clone(&self.fd);
        let path = self.path.clone();
        std::thread::Builder::new()
            .name("weft-netns".into())
            .spawn(move || {
                let entered = setns(fd.as_fd(), CloneFlags::CLONE_NEWNET)
                    .map_err(|source| NetnsError::Enter { path, source });
                f(entered)
            })
            .map_err(|e| NetnsError::Thread {
                path: self.path.clone(),
                reason: e.to_string(),
            })
    }

    fn panicked(&self) -> NetnsError {
        NetnsError::Thread {
            path: self.path.clone(),
            reason: "closure panicked".into(),
        }
    }
}

impl AsFd for Netns {
    /// The namespace's file descriptor, e.g. for `IFLA_NET_NS_FD`.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Turns TX checksum offload off (`ethtool -K IFNAME tx off`) on an interface of the calling
/// thread's network namespace; call it from inside [`Netns::run`]. Needed on pod veths with the
/// OVS netdev datapath, which never fills in partial checksums: without it TCP never connects.
pub fn disable_tx_checksum(ifname: &str) -> Result<(), NetnsError> {
    ethtool::set_value(ifname, ethtool::ETHTOOL_STXCSUM, "ETHTOOL_STXCSUM", 0)
}

/// Reports whether TX checksum offload is on for an interface of the calling thread's network
/// namespace; call it from inside [`Netns::run`].
pub fn tx_checksum_enabled(ifname: &str) -> Result<bool, NetnsError> {
    ethtool::get_value(ifname, ethtool::ETHTOOL_GTXCSUM, "ETHTOOL_GTXCSUM").map(|v| v != 0)
}

/// The legacy ethtool ioctl interface (`SIOCETHTOOL` with a `struct ethtool_value`), which every
/// kernel supports and which maps TX checksumming onto the device's feature bits.
#[allow(unsafe_code)]
mod ethtool {
    use std::io;
    use std::os::fd::AsRawFd;

    use nix::libc;
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

    use super::NetnsError;

    /// Get TX checksum offload (linux/ethtool.h).
    pub(super) const ETHTOOL_GTXCSUM: u32 = 0x16;
    /// Set TX checksum offload (linux/ethtool.h).
    pub(super) const ETHTOOL_STXCSUM: u32 = 0x17;

    /// `struct ethtool_value` from linux/ethtool.h.
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }

    pub(super) fn get_value(
        ifname: &str,
        cmd: u32,
        command: &'static str,
    ) -> Result<u32, NetnsError> {
        let mut value = EthtoolValue { cmd, data: 0 };
        ioctl(ifname, command, &mut value)?;
        Ok(value.data)
    }

    pub(super) fn set_value(
        ifname: &str,
        cmd: u32,
        command: &'static str,
        data: u32,
    ) -> Result<(), NetnsError> {
        let mut value = EthtoolValue { cmd, data };
        ioctl(ifname, command, &mut value)
    }

    fn ioctl(
        ifname: &str,
        command: &'static str,
        value: &mut EthtoolValue,
    ) -> Result<(), NetnsError> {
        let err = |source: io::Error| NetnsError::Ethtool {
            ifname: ifname.to_string(),
            command,
            source,
        };
        let bytes = ifname.as_bytes();
        // One byte stays zero: the kernel expects a NUL-terminated name.
        if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
            return Err(NetnsError::BadIfname {
                ifname: ifname.to_string(),
            });
        }
        // The ioctl acts on the namespace the socket was created in: the calling thread's.
        let sock = socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| err(e.into()))?;

        let mut name = [0 as libc::c_char; libc::IFNAMSIZ];
        for (dst, src) in name.iter_mut().zip(bytes) {
            *dst = *src as libc::c_char;
        }
        let mut req = libc::ifreq {
            ifr_name: name,
            ifr_ifru: libc::__c_anonymous_ifr_ifru {
                ifru_data: (value as *mut EthtoolValue).cast(),
            },
        };

        // SAFETY: the only unsafe block of the agent. `sock` is an open socket owned by this
        // function. `req` lives until the call returns; its name is NUL-terminated (length
        // checked above) and `ifru_data` points to `value`, a live, exclusively borrowed
        // `struct ethtool_value`. For SIOCETHTOOL the kernel reads the name and the pointer from
        // `req` (the rest of the union is unused) and, for ETHTOOL_GTXCSUM/ETHTOOL_STXCSUM,
        // reads/writes exactly `size_of::<EthtoolValue>()` bytes through the pointer.
        let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut req) };
        if rc < 0 {
            return Err(err(io::Error::last_os_error()));
        }
        Ok(())
    }
}
