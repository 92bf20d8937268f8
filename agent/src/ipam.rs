//! In-process IPAM: addresses for pods from the node's podCIDRs (IPv4, IPv6 or both).
//!
//! Guarantees:
//! - an address is never handed to two owners: every change is written to disk (temp file,
//!   fsync, rename, fsync of the directory) before the caller sees it, so an agent restart or a
//!   crash keeps every allocation it ever returned;
//! - allocation is idempotent per owner (container id + interface): asking again returns the
//!   same addresses;
//! - the network address, the gateway (first address) and, for IPv4, the broadcast address are
//!   never allocated;
//! - release of an unknown owner is a no-op (DEL is idempotent).
//!
//! Decisions are pure (a private pool works on memory and records every change as reversible
//! edits); the [`Store`] is the only side effect, behind a trait so the planner can be tested
//! without a disk. Two front ends share the pool: [`Ipam`], where every change is saved before
//! the call returns (bootstrap, tests), and [`SharedIpam`], which serves concurrent callers with
//! group commit (one write + fsync + rename for every change pending at that moment).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

mod commit;

pub use commit::{Reservation, SharedIpam};

/// File name of the allocation store inside `dataDir`.
pub const STORE_FILE: &str = "ipam.json";
const STORE_VERSION: u32 = 1;

/// Errors of the IPAM. Cloneable: a failed group commit hands the same error to every caller
/// whose change it held.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IpamError {
    /// Every usable address of a pod CIDR is taken.
    #[error("pod CIDR {cidr} is exhausted ({used} addresses in use)")]
    Exhausted {
        /// The CIDR.
        cidr: IpNet,
        /// Addresses in use in it.
        used: usize,
    },
    /// The node has no pod CIDR.
    #[error("node has no pod CIDR")]
    NoPodCidr,
    /// A pod CIDR too small to hold a gateway and one pod.
    #[error("pod CIDR {0} is too small (needs room for the gateway and at least one pod)")]
    CidrTooSmall(IpNet),
    /// The store could not be read or written.
    #[error("ipam store {path}: {message}")]
    Store {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

pub use weft_plan::record::Owner;

/// Persisted form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StoreData {
    /// Format version.
    pub version: u32,
    /// Address -> owner.
    pub allocations: BTreeMap<IpAddr, Owner>,
}

/// Where allocations are persisted. Guarantee: `save` returns only once the data is durable, and
/// a crash during `save` leaves either the old or the new content, never a mix.
pub trait Store: Send {
    /// Loads the persisted allocations (empty if nothing was ever saved).
    fn load(&mut self) -> Result<BTreeMap<IpAddr, Owner>, IpamError>;
    /// Persists the allocations.
    fn save(&mut self, allocations: &BTreeMap<IpAddr, Owner>) -> Result<(), IpamError>;
}

/// A JSON file, replaced atomically.
#[derive(Debug, Clone)]
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    /// The store at `data_dir/ipam.json`.
    pub fn in_dir(data_dir: &Path) -> Self {
        FileStore {
            path: data_dir.join(STORE_FILE),
        }
    }

    fn error(&self, message: impl std::fmt::Display) -> IpamError {
        IpamError::Store {
            path: self.path.clone(),
            message: message.to_string(),
        }
    }
}

impl Store for FileStore {
    fn load(&mut self) -> Result<BTreeMap<IpAddr, Owner>, IpamError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(err) => return Err(self.error(err)),
        };
        let data: StoreData = serde_json::from_str(&text).map_err(|e| self.error(e))?;
        if data.version != STORE_VERSION {
            return Err(self.error(format!(
                "unsupported version {} (expected {STORE_VERSION})",
                data.version
            )));
        }
        Ok(data.allocations)
    }

    fn save(&mut self, allocations: &BTreeMap<IpAddr, Owner>) -> Result<(), IpamError> {
        let dir = self
            .path
            .parent()
            .ok_or_else(|| self.error("has no parent directory"))?;
        std::fs::create_dir_all(dir).map_err(|e| self.error(e))?;
        let data = StoreData {
            version: STORE_VERSION,
            allocations: allocations.clone(),
        };
        let text = serde_json::to_vec_pretty(&data).map_err(|e| self.error(e))?;
        let tmp = self.path.with_extension("json.tmp");
        let mut file = std::fs::File::create(&tmp).map_err(|e| self.error(e))?;
        file.write_all(&text).map_err(|e| self.error(e))?;
        file.sync_all().map_err(|e| self.error(e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| self.error(e))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.error(e))?;
        Ok(())
    }
}

/// One address changed in memory: who held it before and who holds it after. Undoing an edit
/// puts `before` back.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Edit {
    ip: IpAddr,
    before: Option<Owner>,
    after: Option<Owner>,
}

/// The allocation state in memory and every decision on it; no IO.
#[derive(Debug)]
struct Pool {
    cidrs: Vec<IpNet>,
    allocations: BTreeMap<IpAddr, Owner>,
    /// Per CIDR, where the next search starts (round-robin, so a released address is not
    /// handed out again at once).
    cursors: Vec<u128>,
    /// Addresses with a change that is not durable yet, and how many such changes: never
    /// picked, so a release that may still be rolled back never frees its address for another
    /// owner. Always empty for [`Ipam`], which saves before returning.
    unsettled: BTreeMap<IpAddr, usize>,
}

impl Pool {
    fn new(cidrs: &[IpNet], allocations: BTreeMap<IpAddr, Owner>) -> Result<Self, IpamError> {
        if cidrs.is_empty() {
            return Err(IpamError::NoPodCidr);
        }
        for cidr in cidrs {
            if usable(cidr).is_none() {
                return Err(IpamError::CidrTooSmall(*cidr));
            }
        }
        Ok(Pool {
            cidrs: cidrs.iter().map(IpNet::trunc).collect(),
            cursors: vec![0; cidrs.len()],
            allocations,
            unsettled: BTreeMap::new(),
        })
    }

    /// Picks one address per CIDR for `owner` and records them in memory. `Ok(None)` if the
    /// owner already holds addresses. All-or-nothing: if one family is exhausted, nothing
    /// changes.
    fn allocate(&mut self, owner: &Owner) -> Result<Option<Vec<Edit>>, IpamError> {
        if self.allocations.values().any(|o| o.same_attachment(owner)) {
            return Ok(None);
        }
        let mut picked = Vec::with_capacity(self.cidrs.len());
        for index in 0..self.cidrs.len() {
            picked.push(self.pick(index)?);
        }
        let mut edits = Vec::with_capacity(picked.len());
        for (index, (ip, offset)) in picked.into_iter().enumerate() {
            self.allocations.insert(ip, owner.clone());
            self.cursors[index] = offset + 1;
            edits.push(Edit {
                ip,
                before: None,
                after: Some(owner.clone()),
            });
        }
        Ok(Some(edits))
    }

    /// Removes every allocation whose owner is `doomed` from memory; returns the edits.
    fn release_where(&mut self, doomed: impl Fn(&Owner) -> bool) -> Vec<Edit> {
        let released: Vec<(IpAddr, Owner)> = self
            .allocations
            .iter()
            .filter(|(_, owner)| doomed(owner))
            .map(|(ip, owner)| (*ip, owner.clone()))
            .collect();
        released
            .into_iter()
            .map(|(ip, owner)| {
                self.allocations.remove(&ip);
                Edit {
                    ip,
                    before: Some(owner),
                    after: None,
                }
            })
            .collect()
    }

    /// Puts an edit's `before` back if the address still holds its `after`. Returns `false`
    /// when a later edit changed the address since (the caller then rewrites that edit).
    fn undo(&mut self, edit: &Edit) -> bool {
        if self.allocations.get(&edit.ip) != edit.after.as_ref() {
            return false;
        }
        match &edit.before {
            Some(owner) => self.allocations.insert(edit.ip, owner.clone()),
            None => self.allocations.remove(&edit.ip),
        };
        true
    }

    fn settle(&mut self, ip: IpAddr) {
        if let Some(count) = self.unsettled.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                self.unsettled.remove(&ip);
            }
        }
    }

    fn addresses_of(&self, owner: &Owner) -> Vec<IpNet> {
        self.allocations
            .iter()
            .filter(|(_, o)| o.same_attachment(owner))
            .filter_map(|(ip, _)| {
                let cidr = self.cidrs.iter().find(|c| c.contains(ip))?;
                IpNet::new(*ip, cidr.prefix_len()).ok()
            })
            .collect()
    }

    fn outside_cidrs(&self) -> Vec<(IpAddr, Owner)> {
        self.allocations
            .iter()
            .filter(|(ip, _)| !self.cidrs.iter().any(|c| c.contains(*ip)))
            .map(|(ip, o)| (*ip, o.clone()))
            .collect()
    }

    fn taken(&self, ip: &IpAddr) -> bool {
        self.allocations.contains_key(ip) || self.unsettled.contains_key(ip)
    }

    /// Finds a free address in CIDR `index`, searching round-robin from its cursor. Returns the
    /// address and its offset from the first usable address.
    fn pick(&self, index: usize) -> Result<(IpAddr, u128), IpamError> {
        let cidr = self.cidrs[index];
        let (first, count) = usable(&cidr).ok_or(IpamError::CidrTooSmall(cidr))?;
        let start = self.cursors[index] % count;
        // Only allocations (and unsettled releases) inside this CIDR can collide; bounded by
        // how many exist, so the search ends quickly even in a /64.
        let allocated = self
            .allocations
            .keys()
            .filter(|ip| cidr.contains(*ip))
            .count();
        let blocked = self
            .unsettled
            .keys()
            .filter(|ip| cidr.contains(*ip) && !self.allocations.contains_key(ip))
            .count();
        let used = (allocated + blocked) as u128;
        if used >= count {
            return Err(IpamError::Exhausted {
                cidr,
                used: allocated,
            });
        }
        for step in 0..=used {
            let offset = (start + step) % count;
            let ip = add(first, offset);
            if !self.taken(&ip) {
                return Ok((ip, offset));
            }
        }
        Err(IpamError::Exhausted {
            cidr,
            used: allocated,
        })
    }
}

/// The allocator for one caller at a time: every change is saved before the call returns. For
/// concurrent callers, turn it into a [`SharedIpam`].
pub struct Ipam<S: Store> {
    pool: Pool,
    store: S,
}

impl<S: Store> std::fmt::Debug for Ipam<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ipam")
            .field("cidrs", &self.pool.cidrs)
            .field("allocations", &self.pool.allocations.len())
            .finish()
    }
}

impl<S: Store> Ipam<S> {
    /// Opens the allocator over the node's pod CIDRs (at most one per family), loading persisted
    /// allocations, including any outside the current CIDRs (see [`Ipam::outside_cidrs`]).
    pub fn open(cidrs: &[IpNet], mut store: S) -> Result<Self, IpamError> {
        // Validate the CIDRs before touching the store.
        Pool::new(cidrs, BTreeMap::new())?;
        let allocations = store.load()?;
        Ok(Ipam {
            pool: Pool::new(cidrs, allocations)?,
            store,
        })
    }

    /// The gateway address of each pod CIDR (its first host address).
    pub fn gateways(&self) -> Vec<IpNet> {
        self.pool.cidrs.iter().map(gateway_of).collect()
    }

    /// Allocates one address per pod CIDR for `owner`, or returns the ones it already holds.
    /// All-or-nothing: if one family is exhausted or the save fails, nothing is kept.
    pub fn allocate(&mut self, owner: &Owner) -> Result<Vec<IpNet>, IpamError> {
        let cursors = self.pool.cursors.clone();
        let Some(edits) = self.pool.allocate(owner)? else {
            return Ok(self.pool.addresses_of(owner));
        };
        if let Err(err) = self.store.save(&self.pool.allocations) {
            for edit in edits.iter().rev() {
                self.pool.undo(edit);
            }
            self.pool.cursors = cursors;
            return Err(err);
        }
        Ok(self.pool.addresses_of(owner))
    }

    /// Releases every address held by the attachment (container id + ifname). Returns what was
    /// released; unknown owners release nothing.
    pub fn release(&mut self, owner: &Owner) -> Result<Vec<IpAddr>, IpamError> {
        self.release_where(|o| o.same_attachment(owner))
    }

    /// Releases every address whose owner is not in `keep` (garbage collection against the
    /// runtime's list of valid attachments, or against OVS ports at start).
    pub fn retain(&mut self, keep: &[Owner]) -> Result<Vec<IpAddr>, IpamError> {
        self.release_where(|o| !keep.iter().any(|k| k.same_attachment(o)))
    }

    fn release_where(&mut self, doomed: impl Fn(&Owner) -> bool) -> Result<Vec<IpAddr>, IpamError> {
        let edits = self.pool.release_where(doomed);
        if edits.is_empty() {
            return Ok(Vec::new());
        }
        if let Err(err) = self.store.save(&self.pool.allocations) {
            for edit in edits.iter().rev() {
                self.pool.undo(edit);
            }
            return Err(err);
        }
        Ok(edits.into_iter().map(|e| e.ip).collect())
    }

    /// The addresses held by an attachment, with the prefix length of their CIDR.
    pub fn addresses_of(&self, owner: &Owner) -> Vec<IpNet> {
        self.pool.addresses_of(owner)
    }

    /// Every allocation.
    pub fn allocations(&self) -> &BTreeMap<IpAddr, Owner> {
        &self.pool.allocations
    }

    /// Distinct owners.
    pub fn owners(&self) -> BTreeSet<Owner> {
        self.pool.allocations.values().cloned().collect()
    }

    /// Allocations that lie outside the current pod CIDRs (the node's CIDR changed).
    pub fn outside_cidrs(&self) -> Vec<(IpAddr, Owner)> {
        self.pool.outside_cidrs()
    }
}

/// The first pod address and how many there are: skips the network address and the gateway (the
/// first host address), and for IPv4 the broadcast address. `None` if no pod fits.
fn usable(cidr: &IpNet) -> Option<(IpAddr, u128)> {
    let host_bits = u32::from(cidr.max_prefix_len() - cidr.prefix_len());
    let size: u128 = if host_bits >= 128 {
        u128::MAX
    } else {
        1u128 << host_bits
    };
    let reserved = match cidr {
        IpNet::V4(_) => 3,
        IpNet::V6(_) => 2,
    };
    let count = size.checked_sub(reserved).filter(|c| *c > 0)?;
    Some((add(cidr.network(), 2), count))
}

fn gateway_of(cidr: &IpNet) -> IpNet {
    IpNet::new(add(cidr.network(), 1), cidr.prefix_len()).unwrap_or(*cidr)
}

fn add(ip: IpAddr, offset: u128) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4((u32::from(v4).wrapping_add(offset as u32)).into()),
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6).wrapping_add(offset)).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store in memory that can be told to fail, to test rollback.
    #[derive(Default)]
    struct MemStore {
        data: BTreeMap<IpAddr, Owner>,
        fail: bool,
        saves: usize,
    }

    impl Store for &mut MemStore {
        fn load(&mut self) -> Result<BTreeMap<IpAddr, Owner>, IpamError> {
            Ok(self.data.clone())
        }
        fn save(&mut self, a: &BTreeMap<IpAddr, Owner>) -> Result<(), IpamError> {
            if self.fail {
                return Err(IpamError::Store {
                    path: "mem".into(),
                    message: "disk full".into(),
                });
            }
            self.saves += 1;
            self.data = a.clone();
            Ok(())
        }
    }

    fn owner(id: &str) -> Owner {
        Owner {
            container_id: id.into(),
            ifname: "eth0".into(),
            pod: format!("default/{id}"),
        }
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn reserves_network_gateway_and_broadcast() {
        let mut store = MemStore::default();
        let mut ipam = Ipam::open(&nets(&["10.0.0.0/29"]), &mut store).unwrap();
        assert_eq!(ipam.gateways(), nets(&["10.0.0.1/29"]));
        let mut got = Vec::new();
        for i in 0..5 {
            got.push(ipam.allocate(&owner(&format!("c{i}"))).unwrap()[0].to_string());
        }
        assert_eq!(
            got,
            [
                "10.0.0.2/29",
                "10.0.0.3/29",
                "10.0.0.4/29",
                "10.0.0.5/29",
                "10.0.0.6/29"
            ]
        );
        let err = ipam.allocate(&owner("c5")).unwrap_err();
        assert!(matches!(err, IpamError::Exhausted { used: 5, .. }), "{err}");
        assert!(err.to_string().contains("10.0.0.0/29"));
    }

    #[test]
    fn dual_stack_gives_one_of_each_and_is_idempotent() {
        let mut store = MemStore::default();
        let mut ipam = Ipam::open(&nets(&["10.1.0.0/24", "fd00:1::/64"]), &mut store).unwrap();
        let a = ipam.allocate(&owner("a")).unwrap();
        assert_eq!(a, nets(&["10.1.0.2/24", "fd00:1::2/64"]));
        assert_eq!(ipam.allocate(&owner("a")).unwrap(), a);
        let b = ipam.allocate(&owner("b")).unwrap();
        assert_eq!(b, nets(&["10.1.0.3/24", "fd00:1::3/64"]));
        assert_eq!(ipam.gateways(), nets(&["10.1.0.1/24", "fd00:1::1/64"]));
    }

    #[test]
    fn release_and_round_robin_reuse() {
        let mut store = MemStore::default();
        let mut ipam = Ipam::open(&nets(&["10.0.0.0/29"]), &mut store).unwrap();
        let a = ipam.allocate(&owner("a")).unwrap();
        ipam.allocate(&owner("b")).unwrap();
        assert_eq!(ipam.release(&owner("a")).unwrap(), [a[0].addr()]);
        assert!(ipam.release(&owner("a")).unwrap().is_empty(), "idempotent");
        // The next allocation does not reuse a's address at once.
        assert_eq!(ipam.allocate(&owner("c")).unwrap(), nets(&["10.0.0.4/29"]));
        for id in ["d", "e", "f"] {
            ipam.allocate(&owner(id)).unwrap();
        }
        // f wrapped around to a's old address; the CIDR is now full.
        assert_eq!(ipam.addresses_of(&owner("f")), a);
        assert!(ipam.allocate(&owner("g")).is_err());
        ipam.release(&owner("f")).unwrap();
        assert_eq!(ipam.allocate(&owner("g")).unwrap().len(), 1);
    }

    #[test]
    fn failed_save_changes_nothing() {
        let mut store = MemStore::default();
        {
            let mut ipam = Ipam::open(&nets(&["10.0.0.0/24"]), &mut store).unwrap();
            ipam.allocate(&owner("a")).unwrap();
        }
        store.fail = true;
        let mut ipam = Ipam::open(&nets(&["10.0.0.0/24"]), &mut store).unwrap();
        assert!(ipam.allocate(&owner("b")).is_err());
        assert!(ipam.addresses_of(&owner("b")).is_empty());
        assert!(ipam.release(&owner("a")).is_err());
        assert_eq!(ipam.addresses_of(&owner("a")).len(), 1);
    }

    #[test]
    fn retain_drops_everything_not_listed() {
        let mut store = MemStore::default();
        let mut ipam = Ipam::open(&nets(&["10.0.0.0/24", "fd00::/120"]), &mut store).unwrap();
        for id in ["a", "b", "c"] {
            ipam.allocate(&owner(id)).unwrap();
        }
        let released = ipam.retain(&[owner("b")]).unwrap();
        assert_eq!(released.len(), 4);
        assert_eq!(
            ipam.owners()
                .into_iter()
                .map(|o| o.container_id)
                .collect::<Vec<_>>(),
            ["b"]
        );
    }

    #[test]
    fn tiny_or_missing_cidrs_are_refused() {
        let mut store = MemStore::default();
        assert!(matches!(
            Ipam::open(&[], &mut store),
            Err(IpamError::NoPodCidr)
        ));
        assert!(matches!(
            Ipam::open(&nets(&["10.0.0.0/30"]), &mut store).map(|_| ()),
            Ok(())
        ));
        assert!(matches!(
            Ipam::open(&nets(&["10.0.0.0/31"]), &mut store),
            Err(IpamError::CidrTooSmall(_))
        ));
        assert!(matches!(
            Ipam::open(&nets(&["fd00::/127"]), &mut store),
            Err(IpamError::CidrTooSmall(_))
        ));
    }

    #[test]
    fn file_store_survives_reopen_and_never_double_allocates() {
        let dir = tempfile::tempdir().unwrap();
        let cidrs = nets(&["10.9.0.0/24", "fd09::/64"]);
        let first = {
            let mut ipam = Ipam::open(&cidrs, FileStore::in_dir(dir.path())).unwrap();
            (0..20)
                .map(|i| ipam.allocate(&owner(&format!("p{i}"))).unwrap())
                .collect::<Vec<_>>()
        };
        let mut ipam = Ipam::open(&cidrs, FileStore::in_dir(dir.path())).unwrap();
        assert_eq!(ipam.allocations().len(), 40);
        assert_eq!(ipam.addresses_of(&owner("p7")), first[7]);
        let fresh = ipam.allocate(&owner("new")).unwrap();
        for held in &first {
            for ip in held {
                assert!(!fresh.contains(ip), "{ip} handed out twice");
            }
        }
        let text = std::fs::read_to_string(dir.path().join(STORE_FILE)).unwrap();
        assert!(text.contains("\"version\": 1"), "{text}");
        assert!(!dir.path().join("ipam.json.tmp").exists());
    }

    #[test]
    fn corrupt_store_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STORE_FILE), "{not json").unwrap();
        let err = Ipam::open(&nets(&["10.0.0.0/24"]), FileStore::in_dir(dir.path())).unwrap_err();
        assert!(err.to_string().contains("ipam.json"), "{err}");
    }

    #[test]
    fn allocations_outside_new_cidrs_are_reported() {
        let mut store = MemStore::default();
        {
            let mut ipam = Ipam::open(&nets(&["10.0.0.0/24"]), &mut store).unwrap();
            ipam.allocate(&owner("old")).unwrap();
        }
        let ipam = Ipam::open(&nets(&["10.0.1.0/24"]), &mut store).unwrap();
        let outside = ipam.outside_cidrs();
        drop(ipam);
        assert_eq!(outside.len(), 1);
        assert_eq!(outside[0].1.container_id, "old");
        assert_eq!(store.saves, 1, "opening saves nothing");
    }
}
