//! [`SharedIpam`]: the allocator for concurrent callers, with group commit.
//!
//! Every change is decided at once in memory, under one short lock, and queued. One writer
//! thread takes everything queued at that moment (a batch), saves the whole allocation map once
//! (one write + fsync + rename + directory fsync, [`Store::save`]) and then answers every caller
//! of the batch. Changes queued while a save runs go into the next batch, so under load the
//! number of saves grows with the disk's latency, not with the number of callers.
//!
//! Guarantees (the same as [`Ipam`]'s):
//! - An address is never handed out before it is durable: [`SharedIpam::allocate`] and
//!   [`Reservation::durable`] return the addresses only once the batch holding them is saved.
//! - An address is never handed to two owners: an allocation occupies its addresses in memory
//!   from the moment it is decided, and an address whose release is not durable yet is never
//!   picked (the release may still be rolled back).
//! - A failed save fails exactly the changes of its batch: they are undone in memory (newest
//!   first) and every caller of the batch gets the error. Changes queued after the batch stay
//!   queued; one that touched an address of the failed batch is rewritten so that undoing it
//!   later restores the state before the failed batch.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use ipnet::IpNet;
use tokio::sync::oneshot;

use super::{gateway_of, Edit, Ipam, IpamError, Owner, Pool, Store};

type Reply = oneshot::Sender<Result<(), IpamError>>;

/// Changes made in memory that one save makes durable, and who waits for that save.
#[derive(Debug, Default)]
struct Change {
    edits: Vec<Edit>,
    waiters: Vec<Reply>,
}

#[derive(Debug)]
struct State {
    pool: Pool,
    /// Changes not yet taken by the writer, oldest first.
    queued: Vec<Change>,
    /// The batch being saved right now.
    saving: Vec<Change>,
    /// The handle was dropped: the writer saves what is queued and ends.
    closed: bool,
    /// Saves attempted so far.
    saves: u64,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The IPAM shared by concurrent callers (see the module docs for its guarantees). Cheap to
/// clone; the writer thread ends when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct SharedIpam {
    shared: Arc<Shared>,
    _closer: Arc<Closer>,
}

/// Tells the writer to finish when the last [`SharedIpam`] clone goes.
#[derive(Debug)]
struct Closer(Arc<Shared>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.wake.notify_all();
    }
}

/// Addresses decided in memory for one owner, not yet known to be durable.
#[derive(Debug)]
pub struct Reservation {
    ips: Vec<IpNet>,
    commit: Option<oneshot::Receiver<Result<(), IpamError>>>,
}

impl Reservation {
    /// The reserved addresses. Not to be handed out before [`Reservation::durable`] succeeds.
    pub fn ips(&self) -> &[IpNet] {
        &self.ips
    }

    /// Waits until the reservation is durable and returns its addresses; on error the
    /// reservation was rolled back and the addresses are free again.
    pub async fn durable(self) -> Result<Vec<IpNet>, IpamError> {
        if let Some(commit) = self.commit {
            commit.await.unwrap_or_else(|_| Err(writer_gone()))?;
        }
        Ok(self.ips)
    }

    /// [`Reservation::durable`] for synchronous callers (never on an async worker).
    pub fn wait(self) -> Result<Vec<IpNet>, IpamError> {
        if let Some(commit) = self.commit {
            commit
                .blocking_recv()
                .unwrap_or_else(|_| Err(writer_gone()))?;
        }
        Ok(self.ips)
    }
}

fn writer_gone() -> IpamError {
    IpamError::Store {
        path: "ipam".into(),
        message: "the ipam writer thread ended".into(),
    }
}

impl SharedIpam {
    /// Takes over `ipam` (its allocations and its store) and starts the writer thread.
    pub fn start<S: Store + 'static>(ipam: Ipam<S>) -> Result<Self, IpamError> {
        let Ipam { pool, store } = ipam;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                pool,
                queued: Vec::new(),
                saving: Vec::new(),
                closed: false,
                saves: 0,
            }),
            wake: Condvar::new(),
        });
        let writer = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("weft-ipam".into())
            .spawn(move || write_batches(&writer, store))
            .map_err(|e| IpamError::Store {
                path: "ipam".into(),
                message: format!("cannot start the ipam writer thread: {e}"),
            })?;
        Ok(SharedIpam {
            _closer: Arc::new(Closer(Arc::clone(&shared))),
            shared,
        })
    }

    /// Decides one address per pod CIDR for `owner` in memory (or finds the ones it holds) and
    /// queues the change; [`Reservation::durable`] waits for its save. The caller may prepare
    /// work with the addresses meanwhile but must not hand them out before that.
    pub fn reserve(&self, owner: &Owner) -> Result<Reservation, IpamError> {
        let mut state = self.shared.lock();
        match state.pool.allocate(owner)? {
            Some(edits) => {
                let ips = state.pool.addresses_of(owner);
                let commit = Some(self.enqueue(&mut state, edits));
                Ok(Reservation { ips, commit })
            }
            None => {
                // Already held: durable, or held by a change still queued or being saved
                // (then wait for that change's save, whatever its outcome).
                let ips = state.pool.addresses_of(owner);
                let State { queued, saving, .. } = &mut *state;
                let pending = saving.iter_mut().chain(queued.iter_mut()).rev().find(|c| {
                    c.edits
                        .iter()
                        .any(|e| e.after.as_ref().is_some_and(|o| o.same_attachment(owner)))
                });
                let commit = pending.map(|change| {
                    let (tx, rx) = oneshot::channel();
                    change.waiters.push(tx);
                    rx
                });
                Ok(Reservation { ips, commit })
            }
        }
    }

    /// Allocates one address per pod CIDR for `owner` (or returns the ones it holds) once
    /// durable.
    pub async fn allocate(&self, owner: &Owner) -> Result<Vec<IpNet>, IpamError> {
        self.reserve(owner)?.durable().await
    }

    /// Releases every address held by the attachment (container id + ifname) and waits until
    /// that is durable. Returns what was released; unknown owners release nothing.
    pub async fn release(&self, owner: &Owner) -> Result<Vec<IpAddr>, IpamError> {
        let owner = owner.clone();
        self.release_where(move |o| o.same_attachment(&owner)).await
    }

    /// Releases every address whose owner is not in `keep` and waits until that is durable.
    pub async fn retain(&self, keep: &[Owner]) -> Result<Vec<IpAddr>, IpamError> {
        let keep = keep.to_vec();
        self.release_where(move |o| !keep.iter().any(|k| k.same_attachment(o)))
            .await
    }

    async fn release_where(
        &self,
        doomed: impl Fn(&Owner) -> bool,
    ) -> Result<Vec<IpAddr>, IpamError> {
        let (released, commit) = {
            let mut state = self.shared.lock();
            let edits = state.pool.release_where(doomed);
            if edits.is_empty() {
                return Ok(Vec::new());
            }
            let released: Vec<IpAddr> = edits.iter().map(|e| e.ip).collect();
            (released, self.enqueue(&mut state, edits))
        };
        commit.await.unwrap_or_else(|_| Err(writer_gone()))?;
        Ok(released)
    }

    fn enqueue(
        &self,
        state: &mut State,
        edits: Vec<Edit>,
    ) -> oneshot::Receiver<Result<(), IpamError>> {
        for edit in &edits {
            *state.pool.unsettled.entry(edit.ip).or_default() += 1;
        }
        let (tx, rx) = oneshot::channel();
        state.queued.push(Change {
            edits,
            waiters: vec![tx],
        });
        self.shared.wake.notify_one();
        rx
    }

    /// The gateway address of each pod CIDR (its first host address).
    pub fn gateways(&self) -> Vec<IpNet> {
        self.shared
            .lock()
            .pool
            .cidrs
            .iter()
            .map(gateway_of)
            .collect()
    }

    /// The addresses held by an attachment (including a change not yet durable).
    pub fn addresses_of(&self, owner: &Owner) -> Vec<IpNet> {
        self.shared.lock().pool.addresses_of(owner)
    }

    /// Every allocation (including changes not yet durable).
    pub fn allocations(&self) -> BTreeMap<IpAddr, Owner> {
        self.shared.lock().pool.allocations.clone()
    }

    /// Distinct owners (including changes not yet durable).
    pub fn owners(&self) -> BTreeSet<Owner> {
        self.shared
            .lock()
            .pool
            .allocations
            .values()
            .cloned()
            .collect()
    }

    /// Allocations that lie outside the current pod CIDRs (the node's CIDR changed).
    pub fn outside_cidrs(&self) -> Vec<(IpAddr, Owner)> {
        self.shared.lock().pool.outside_cidrs()
    }

    /// How many saves the writer has attempted (one per batch).
    pub fn saves(&self) -> u64 {
        self.shared.lock().saves
    }
}

/// The writer thread: saves batches until the handle is dropped and nothing is queued.
fn write_batches<S: Store>(shared: &Shared, mut store: S) {
    let mut state = shared.lock();
    loop {
        while state.queued.is_empty() && !state.closed {
            state = shared.wake.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        if state.queued.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut state.queued);
        state.saving = batch;
        state.saves += 1;
        let snapshot = state.pool.allocations.clone();
        drop(state);
        let saved = store.save(&snapshot);
        state = shared.lock();
        let batch = std::mem::take(&mut state.saving);
        let outcome = match saved {
            Ok(()) => Ok(()),
            Err(err) => {
                roll_back(&mut state, &batch);
                Err(err)
            }
        };
        for change in batch {
            for edit in &change.edits {
                state.pool.settle(edit.ip);
            }
            for waiter in change.waiters {
                // A caller that went away no longer needs the answer.
                let _ = waiter.send(outcome.clone());
            }
        }
    }
}

/// Undoes a failed batch, newest edit first. An address changed again by a change queued since
/// gets that change rewritten instead: its `before` becomes the failed edit's `before`, as if
/// the failed change had never happened.
fn roll_back(state: &mut State, batch: &[Change]) {
    for edit in batch.iter().flat_map(|c| c.edits.iter()).rev() {
        if state.pool.undo(edit) {
            continue;
        }
        let later = state
            .queued
            .iter_mut()
            .flat_map(|c| c.edits.iter_mut())
            .find(|e| e.ip == edit.ip);
        if let Some(later) = later {
            later.before = edit.before.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// A store in memory, shared with the test: counts saves, can be made slow (so changes pile
    /// up behind a save) and can be told to fail.
    #[derive(Clone, Default)]
    struct MemStore {
        data: Arc<Mutex<BTreeMap<IpAddr, Owner>>>,
        saves: Arc<AtomicUsize>,
        fail: Arc<AtomicBool>,
        delay: Duration,
    }

    impl Store for MemStore {
        fn load(&mut self) -> Result<BTreeMap<IpAddr, Owner>, IpamError> {
            Ok(self.data.lock().unwrap().clone())
        }
        fn save(&mut self, a: &BTreeMap<IpAddr, Owner>) -> Result<(), IpamError> {
            std::thread::sleep(self.delay);
            self.saves.fetch_add(1, Ordering::SeqCst);
            if self.fail.load(Ordering::SeqCst) {
                return Err(IpamError::Store {
                    path: "mem".into(),
                    message: "disk full".into(),
                });
            }
            *self.data.lock().unwrap() = a.clone();
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

    fn shared(store: &MemStore, cidrs: &[&str]) -> SharedIpam {
        let cidrs: Vec<IpNet> = cidrs.iter().map(|c| c.parse().unwrap()).collect();
        SharedIpam::start(Ipam::open(&cidrs, store.clone()).unwrap()).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_allocations_share_saves_and_are_durable_when_returned() {
        let store = MemStore {
            delay: Duration::from_millis(20),
            ..MemStore::default()
        };
        let ipam = shared(&store, &["10.0.0.0/24", "fd00::/64"]);
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let ipam = ipam.clone();
                let data = Arc::clone(&store.data);
                tokio::spawn(async move {
                    let ips = ipam.allocate(&owner(&format!("c{i}"))).await.unwrap();
                    // Durable before it is handed out: the store already holds it.
                    let saved = data.lock().unwrap().clone();
                    for ip in &ips {
                        assert_eq!(saved.get(&ip.addr()), Some(&owner(&format!("c{i}"))));
                    }
                    ips
                })
            })
            .collect();
        let mut seen = BTreeSet::new();
        for task in tasks {
            for ip in task.await.unwrap() {
                assert!(seen.insert(ip.addr()), "{ip} handed out twice");
            }
        }
        assert_eq!(seen.len(), 128);
        let saves = store.saves.load(Ordering::SeqCst);
        assert!(saves < 16, "64 allocations took {saves} saves");
        assert_eq!(ipam.saves(), saves as u64);
        assert_eq!(store.data.lock().unwrap().len(), 128);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_failed_save_rolls_back_its_whole_batch_and_fails_every_caller() {
        let store = MemStore {
            delay: Duration::from_millis(20),
            ..MemStore::default()
        };
        let ipam = shared(&store, &["10.0.0.0/24"]);
        ipam.allocate(&owner("kept")).await.unwrap();
        store.fail.store(true, Ordering::SeqCst);
        // The first allocation starts a (failing) save; the rest queue behind it and go into
        // the next batch, which fails too.
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let ipam = ipam.clone();
                tokio::spawn(async move { ipam.allocate(&owner(&format!("c{i}"))).await })
            })
            .collect();
        let release = {
            let ipam = ipam.clone();
            tokio::spawn(async move { ipam.release(&owner("kept")).await })
        };
        for task in tasks {
            let err = task.await.unwrap().unwrap_err();
            assert!(err.to_string().contains("disk full"), "{err}");
        }
        assert!(release.await.unwrap().is_err());
        // Nothing of the failed batches remains, in memory or on disk; "kept" is kept.
        let owners: Vec<String> = ipam.owners().into_iter().map(|o| o.container_id).collect();
        assert_eq!(owners, ["kept"]);
        assert_eq!(store.data.lock().unwrap().len(), 1);
        let saves = store.saves.load(Ordering::SeqCst);
        assert!(saves <= 8, "17 failing changes took {saves} saves");
        // The store recovers: the freed addresses are available again.
        store.fail.store(false, Ordering::SeqCst);
        let ips = ipam.allocate(&owner("after")).await.unwrap();
        assert_eq!(ips.len(), 1);
        assert_eq!(store.data.lock().unwrap().len(), 2);
    }

    #[test]
    fn a_pending_release_never_frees_its_address_for_another_owner() {
        let store = MemStore::default();
        // One usable address (10.0.0.2): the CIDR is full while it is held.
        let ipam = shared(&store, &["10.0.0.0/30"]);
        let first = ipam.reserve(&owner("a")).unwrap().wait().unwrap();
        assert_eq!(first[0].to_string(), "10.0.0.2/30");
        // Queue a release without letting the writer run it yet: hold the state lock while
        // deciding, exactly as `release` does, then try to allocate before it is durable.
        let (released, commit) = {
            let mut state = ipam.shared.lock();
            let edits = state.pool.release_where(|o| o.same_attachment(&owner("a")));
            let released: Vec<IpAddr> = edits.iter().map(|e| e.ip).collect();
            let commit = ipam.enqueue(&mut state, edits);
            // Still unsettled: no other owner may take it.
            let err = state.pool.allocate(&owner("b")).unwrap_err();
            assert!(matches!(err, IpamError::Exhausted { .. }), "{err}");
            (released, commit)
        };
        assert_eq!(released.len(), 1);
        commit.blocking_recv().unwrap().unwrap();
        let second = ipam.reserve(&owner("b")).unwrap().wait().unwrap();
        assert_eq!(second, first);
    }

    #[test]
    fn rollback_of_a_failed_batch_rewrites_a_later_change_of_the_same_address() {
        let store = MemStore::default();
        let ipam = shared(&store, &["10.0.0.0/24"]);
        let mut state = ipam.shared.lock();
        // Batch being saved: allocate to "a". Queued after it: release of "a".
        let alloc = state.pool.allocate(&owner("a")).unwrap().unwrap();
        let ip = alloc[0].ip;
        state.saving.push(Change {
            edits: alloc,
            waiters: Vec::new(),
        });
        let release = state.pool.release_where(|o| o.same_attachment(&owner("a")));
        state.queued.push(Change {
            edits: release,
            waiters: Vec::new(),
        });
        let batch = std::mem::take(&mut state.saving);
        roll_back(&mut state, &batch);
        // Undoing the queued release later must not resurrect "a"'s allocation.
        let later = state.queued.pop().unwrap();
        for edit in later.edits.iter().rev() {
            state.pool.undo(edit);
        }
        assert!(!state.pool.allocations.contains_key(&ip));
        state.queued.clear();
    }

    #[test]
    fn allocation_is_idempotent_and_waits_for_a_pending_save() {
        let store = MemStore {
            delay: Duration::from_millis(30),
            ..MemStore::default()
        };
        let ipam = shared(&store, &["10.0.0.0/24"]);
        let first = ipam.reserve(&owner("a")).unwrap();
        // Asked again before the first save finished: same addresses, and it waits for them.
        let again = ipam.reserve(&owner("a")).unwrap();
        assert_eq!(again.ips(), first.ips());
        let again = again.wait().unwrap();
        assert_eq!(
            store.data.lock().unwrap().len(),
            1,
            "returned before durable"
        );
        assert_eq!(first.wait().unwrap(), again);
        // Once durable, asking again needs no save.
        let saves = ipam.saves();
        assert_eq!(ipam.reserve(&owner("a")).unwrap().wait().unwrap(), again);
        assert_eq!(ipam.saves(), saves);
    }

    #[test]
    fn the_writer_saves_what_is_queued_when_the_last_handle_goes() {
        let store = MemStore {
            delay: Duration::from_millis(10),
            ..MemStore::default()
        };
        let ipam = shared(&store, &["10.0.0.0/24"]);
        let reservation = ipam.reserve(&owner("a")).unwrap();
        drop(ipam);
        assert_eq!(reservation.wait().unwrap().len(), 1);
        assert_eq!(store.data.lock().unwrap().len(), 1);
    }
}
