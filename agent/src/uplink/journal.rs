//! The uplink journal: `dataDir/uplink-journal.json`, the NIC's snapshot and the steps of the
//! attach or detach under way, written atomically (temp file, fsync, rename, fsync of the
//! directory) before and after every step.
//!
//! ```json
//! {"version":1,"bootId":"…","operation":"attach","uplink":"eth0~","mtu":1500,
//!  "nic":{"name":"eth0","index":2,"mac":"52:54:00:12:34:56","mtu":1500,"arp":true,
//!         "addresses":["192.168.1.10/24"],"routes":[{"destination":"0.0.0.0/0",
//!         "gateway":"192.168.1.1","table":254,"metric":null,"protocol":4,"scope":0,
//!         "prefSource":null,"onlink":false}],"disableIpv6":"0","rpFilter":"0"},
//!  "attach":["recorded","flows-installed","nic-renamed"],"detach":[]}
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use weft_plan::uplink::steps::{AttachStep, DetachStep, NicSnapshot};

/// The journal's file name inside `dataDir`.
pub const FILE_NAME: &str = "uplink-journal.json";
/// The format version written.
pub const VERSION: u32 = 1;
/// Largest journal accepted (a NIC with thousands of routes is still far below).
const MAX_BYTES: u64 = 4 << 20;

/// Errors reading or writing the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The file could not be read or written.
    #[error("uplink journal {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file does not hold a journal this agent understands.
    #[error("uplink journal {path} is unreadable: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Which operation the journal tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Operation {
    /// Attaching (or attached, when every attach step is done).
    Attach,
    /// Detaching.
    Detach,
}

/// The journal's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Journal {
    /// Format version ([`VERSION`]).
    pub version: u32,
    /// `/proc/sys/kernel/random/boot_id` when written: a reboot resets the kernel side.
    pub boot_id: String,
    /// The operation under way (or done, for an attach).
    pub operation: Operation,
    /// The NIC's name once attached.
    pub uplink: String,
    /// The MTU the plan gives the uplink and the internal port.
    pub mtu: u32,
    /// The NIC before the attach.
    pub nic: NicSnapshot,
    /// Attach steps done (in order).
    pub attach: Vec<AttachStep>,
    /// Detach steps done (in order).
    pub detach: Vec<DetachStep>,
}

impl Journal {
    /// Whether every attach step is done and no detach started.
    pub fn attached(&self) -> bool {
        self.operation == Operation::Attach
            && AttachStep::ALL.iter().all(|s| self.attach.contains(s))
    }
}

/// The journal file of `data_dir`.
pub fn path_in(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

/// Reads the journal; `Ok(None)` when there is none.
pub fn load(path: &Path) -> Result<Option<Journal>, JournalError> {
    let io = |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let len = file.metadata().map_err(io)?.len();
    if len > MAX_BYTES {
        return Err(JournalError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("{len} bytes, more than {MAX_BYTES}"),
        });
    }
    let journal: Journal = serde_json::from_reader(std::io::BufReader::new(file)).map_err(|e| {
        JournalError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    })?;
    if journal.version != VERSION {
        return Err(JournalError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("version {} (this agent writes {VERSION})", journal.version),
        });
    }
    Ok(Some(journal))
}

/// Writes the journal atomically: a crash leaves either the old or the new content.
pub fn store(path: &Path, journal: &Journal) -> Result<(), JournalError> {
    let io = |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(journal).map_err(|e| JournalError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    {
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    sync_dir(dir).map_err(io)
}

/// Deletes the journal (durably); absent is fine.
pub fn remove(path: &Path) -> Result<(), JournalError> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(JournalError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    }
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    sync_dir(dir).map_err(|source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// This boot's id (empty if the kernel does not say).
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_plan::uplink::steps::SavedRoute;

    fn journal() -> Journal {
        Journal {
            version: VERSION,
            boot_id: "b".into(),
            operation: Operation::Attach,
            uplink: "eth0~".into(),
            mtu: 1500,
            nic: NicSnapshot {
                name: "eth0".into(),
                index: 2,
                mac: "52:54:00:12:34:56".into(),
                mtu: 1500,
                arp: true,
                addresses: vec!["192.168.1.10/24".parse().unwrap()],
                routes: vec![SavedRoute {
                    destination: "0.0.0.0/0".parse().unwrap(),
                    gateway: Some("192.168.1.1".parse().unwrap()),
                    table: 254,
                    metric: None,
                    protocol: 4,
                    scope: 0,
                    pref_source: None,
                    onlink: false,
                }],
                disable_ipv6: Some("0".into()),
                rp_filter: Some("0".into()),
            },
            attach: vec![AttachStep::Recorded],
            detach: vec![],
        }
    }

    #[test]
    fn roundtrip_and_atomic_replace() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        assert_eq!(load(&path).unwrap(), None);
        let mut j = journal();
        store(&path, &j).unwrap();
        assert_eq!(load(&path).unwrap(), Some(j.clone()));
        j.attach = AttachStep::ALL.to_vec();
        store(&path, &j).unwrap();
        let back = load(&path).unwrap().unwrap();
        assert!(back.attached());
        assert!(!path.with_extension("json.tmp").exists());
        remove(&path).unwrap();
        remove(&path).unwrap();
        assert_eq!(load(&path).unwrap(), None);
    }

    #[test]
    fn corrupt_and_foreign_versions_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        std::fs::write(&path, "{\"version\":").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("uplink-journal.json is unreadable"), "{err}");
        let mut j = journal();
        j.version = 9;
        std::fs::write(&path, serde_json::to_string(&j).unwrap()).unwrap();
        assert!(load(&path).unwrap_err().to_string().contains("version 9"));
    }

    #[test]
    fn format_is_stable() {
        let text = serde_json::to_value(journal()).unwrap();
        assert_eq!(text["operation"], "attach");
        assert_eq!(text["attach"][0], "recorded");
        assert_eq!(text["nic"]["routes"][0]["gateway"], "192.168.1.1");
        assert_eq!(text["nic"]["disableIpv6"], "0");
    }
}
