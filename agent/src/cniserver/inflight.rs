//! Requests in flight: the budget of each ADD (the plugin's deadline, its connection, a later
//! DEL of the same attachment, the agent stopping) and the drain on shutdown.
//!
//! Guarantees:
//! - An ADD is abandoned (never finished later) once its plugin's deadline is near (the agent
//!   stops [`margin`] before it, so its rollback is done before the plugin gives up), once the
//!   plugin closed its connection, once a DEL of the same (container ID, ifname) arrived, or
//!   once the agent is stopping.
//! - A DEL wins over every ADD of its attachment that the runtime started before it: ADDs
//!   registered here are cancelled when the DEL arrives, and an ADD that reaches the agent only
//!   after the DEL (it was started earlier, e.g. stuck in the socket backlog) is refused by the
//!   DEL's tombstone.
//! - Once [`Inflight::stop`] was called no new request is taken, and [`Inflight::drained`]
//!   waits (bounded) until every request taken before has answered.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// Why an ADD was abandoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abandon {
    /// The plugin's deadline (less the agent's margin) passed.
    Deadline,
    /// The plugin closed its connection (it gave up, or its runtime killed it).
    PeerGone,
    /// A DEL of the same attachment arrived.
    Superseded,
    /// The agent is stopping.
    Stopping,
}

impl std::fmt::Display for Abandon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Abandon::Deadline => "the plugin's deadline is reached",
            Abandon::PeerGone => "the plugin closed its connection",
            Abandon::Superseded => "a del of the attachment arrived",
            Abandon::Stopping => "the agent is stopping",
        })
    }
}

/// How long before the plugin's deadline the agent gives up on an ADD: a sixth of the plugin's
/// timeout, at least 500 ms and at most 5 s (30 s timeout: the agent stops at 25 s), which is
/// time for the rollback.
pub fn margin(timeout: Duration) -> Duration {
    (timeout / 6).clamp(Duration::from_millis(500), Duration::from_secs(5))
}

/// The attachment key: (container ID, ifname).
pub type Key = (String, String);

/// What bounds one ADD. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Budget {
    deadline: Option<Instant>,
    superseded: watch::Receiver<bool>,
    stopping: watch::Receiver<bool>,
    peer_gone: Option<watch::Receiver<bool>>,
}

impl Budget {
    /// A budget nothing cancels (internal callers and tests).
    pub fn unbounded() -> Self {
        Budget {
            deadline: None,
            superseded: watch::channel(false).1,
            stopping: watch::channel(false).1,
            peer_gone: None,
        }
    }

    /// The agent-side deadline, if the plugin sent one.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Whether the request must stop now, and why.
    pub fn check(&self) -> Result<(), Abandon> {
        if *self.stopping.borrow() {
            return Err(Abandon::Stopping);
        }
        if *self.superseded.borrow() {
            return Err(Abandon::Superseded);
        }
        if self.peer_gone.as_ref().is_some_and(|p| *p.borrow()) {
            return Err(Abandon::PeerGone);
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Abandon::Deadline);
        }
        Ok(())
    }

    /// Resolves once the request must stop (never, for an unbounded budget).
    pub async fn abandoned(&self) -> Abandon {
        let mut stopping = self.stopping.clone();
        let mut superseded = self.superseded.clone();
        let mut peer = self.peer_gone.clone();
        let deadline = async {
            match self.deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let peer_gone = async {
            match peer.as_mut() {
                Some(p) => {
                    if p.wait_for(|g| *g).await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending().await,
            }
        };
        // A dropped sender (the registry forgot the request) is no reason to stop.
        let flag = |rx: &mut watch::Receiver<bool>| {
            let mut rx = rx.clone();
            async move {
                if rx.wait_for(|v| *v).await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            () = flag(&mut stopping) => Abandon::Stopping,
            () = flag(&mut superseded) => Abandon::Superseded,
            () = peer_gone => Abandon::PeerGone,
            () = deadline => Abandon::Deadline,
        }
    }
}

/// A request taken by the agent; dropping it marks it answered.
#[derive(Debug)]
pub struct Ticket<'a> {
    owner: &'a Inflight,
    add: Option<(Key, u64)>,
    budget: Budget,
}

impl Ticket<'_> {
    /// The request's budget (unbounded for DEL and CHECK).
    pub fn budget(&self) -> &Budget {
        &self.budget
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if let Some((key, id)) = self.add.take() {
            let mut adds = lock(&self.owner.adds);
            if let Some(list) = adds.get_mut(&key) {
                list.retain(|(other, _)| *other != id);
                if list.is_empty() {
                    adds.remove(&key);
                }
            }
        }
        self.owner.active.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// How long a DEL's tombstone refuses ADDs started before it: the longest plugin timeout
/// (`agentTimeoutSeconds` at most 600) and a minute more.
const TOMBSTONE_TTL: Duration = Duration::from_secs(660);

/// An ADD in flight: its id and the sender that cancels it.
type AddCancel = (u64, watch::Sender<bool>);

/// The registry of requests in flight (see the module docs).
#[derive(Debug)]
pub struct Inflight {
    next: std::sync::atomic::AtomicU64,
    adds: Mutex<HashMap<Key, Vec<AddCancel>>>,
    /// Per attachment, when the runtime started its latest DEL (Unix ms) and when it arrived.
    tombstones: Mutex<HashMap<Key, (u64, Instant)>>,
    stopping: watch::Sender<bool>,
    active: watch::Sender<usize>,
}

impl Default for Inflight {
    fn default() -> Self {
        Inflight {
            next: Default::default(),
            adds: Mutex::default(),
            tombstones: Mutex::default(),
            stopping: watch::channel(false).0,
            active: watch::channel(0).0,
        }
    }
}

impl Inflight {
    /// Takes an ADD of `key` started at `started_ms` with the plugin's deadline `deadline_ms`
    /// (both Unix ms, as the plugin sent them), whose caller's connection is `peer_gone`.
    /// Refused if the agent is stopping, a DEL started after this ADD already arrived, or the
    /// deadline is already too near.
    pub fn begin_add(
        &self,
        key: Key,
        started_ms: Option<u64>,
        deadline_ms: Option<u64>,
        peer_gone: Option<watch::Receiver<bool>>,
    ) -> Result<Ticket<'_>, Abandon> {
        if *self.stopping.borrow() {
            return Err(Abandon::Stopping);
        }
        if let Some(started) = started_ms {
            if lock(&self.tombstones)
                .get(&key)
                .is_some_and(|(del_started, _)| started < *del_started)
            {
                return Err(Abandon::Superseded);
            }
        }
        let deadline = deadline_ms.map(|deadline| {
            let now_ms = weft_cni::rpc::unix_ms_now();
            let timeout =
                Duration::from_millis(deadline.saturating_sub(started_ms.unwrap_or(now_ms)));
            let left = Duration::from_millis(deadline.saturating_sub(now_ms));
            Instant::now() + left.saturating_sub(margin(timeout))
        });
        let (cancel, superseded) = watch::channel(false);
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        lock(&self.adds)
            .entry(key.clone())
            .or_default()
            .push((id, cancel));
        self.active.send_modify(|n| *n += 1);
        let ticket = Ticket {
            owner: self,
            add: Some((key, id)),
            budget: Budget {
                deadline,
                superseded,
                stopping: self.stopping.subscribe(),
                peer_gone,
            },
        };
        ticket.budget.check()?;
        Ok(ticket)
    }

    /// Takes a DEL of `key` started at `started_ms` (Unix ms): every ADD of `key` in flight is
    /// cancelled, and ADDs started before it that arrive later are refused.
    pub fn begin_del(&self, key: Key, started_ms: Option<u64>) -> Result<Ticket<'_>, Abandon> {
        self.begin_other()?;
        let started = started_ms.unwrap_or_else(weft_cni::rpc::unix_ms_now);
        {
            let mut tombstones = lock(&self.tombstones);
            tombstones.retain(|_, (_, at)| at.elapsed() < TOMBSTONE_TTL);
            let entry = tombstones
                .entry(key.clone())
                .or_insert((started, Instant::now()));
            if entry.0 <= started {
                *entry = (started, Instant::now());
            }
        }
        if let Some(adds) = lock(&self.adds).get(&key) {
            for (_, cancel) in adds {
                cancel.send_replace(true);
            }
        }
        Ok(self.ticket())
    }

    /// Takes any other request (CHECK, GC); refused once the agent is stopping.
    pub fn begin_other(&self) -> Result<Ticket<'_>, Abandon> {
        if *self.stopping.borrow() {
            return Err(Abandon::Stopping);
        }
        Ok(self.ticket())
    }

    fn ticket(&self) -> Ticket<'_> {
        self.active.send_modify(|n| *n += 1);
        Ticket {
            owner: self,
            add: None,
            budget: Budget::unbounded(),
        }
    }

    /// Requests taken and not answered yet.
    pub fn active(&self) -> usize {
        *self.active.borrow()
    }

    /// Stops taking requests and abandons every ADD in flight (each rolls back).
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Waits until every request taken has answered, at most `timeout`; returns how many are
    /// still running.
    pub async fn drained(&self, timeout: Duration) -> usize {
        let mut active = self.active.subscribe();
        let _ = tokio::time::timeout(timeout, active.wait_for(|n| *n == 0)).await;
        self.active()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: &str) -> Key {
        (c.to_string(), "eth0".to_string())
    }

    #[test]
    fn margin_is_a_sixth_of_the_timeout_within_bounds() {
        assert_eq!(margin(Duration::from_secs(30)), Duration::from_secs(5));
        assert_eq!(margin(Duration::from_secs(6)), Duration::from_secs(1));
        assert_eq!(margin(Duration::from_secs(1)), Duration::from_millis(500));
        assert_eq!(margin(Duration::from_secs(600)), Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_del_cancels_the_add_in_flight_and_refuses_an_earlier_one() {
        let inflight = Inflight::default();
        let now = weft_cni::rpc::unix_ms_now();
        let add = inflight
            .begin_add(key("c1"), Some(now), Some(now + 30_000), None)
            .unwrap();
        let other = inflight
            .begin_add(key("c2"), Some(now), Some(now + 30_000), None)
            .unwrap();
        assert_eq!(add.budget().check(), Ok(()));
        let del = inflight.begin_del(key("c1"), Some(now + 10)).unwrap();
        assert_eq!(add.budget().check(), Err(Abandon::Superseded));
        assert_eq!(add.budget().abandoned().await, Abandon::Superseded);
        assert_eq!(other.budget().check(), Ok(()), "other keys are untouched");
        // An ADD the runtime started before the DEL, seen after it: refused.
        let late = inflight.begin_add(key("c1"), Some(now + 5), Some(now + 30_000), None);
        assert_eq!(late.err(), Some(Abandon::Superseded));
        // An ADD started after the DEL (the runtime retries): taken.
        let retry = inflight.begin_add(key("c1"), Some(now + 20), Some(now + 30_000), None);
        assert!(retry.is_ok());
        drop((add, other, del, retry));
        assert_eq!(inflight.active(), 0);
    }

    #[tokio::test]
    async fn the_deadline_less_the_margin_bounds_an_add() {
        let inflight = Inflight::default();
        let now = weft_cni::rpc::unix_ms_now();
        // Started 2 s ago with a 3 s timeout: 1 s left, less the 500 ms margin.
        let add = inflight
            .begin_add(key("c1"), Some(now - 2_000), Some(now + 1_000), None)
            .unwrap();
        let started = Instant::now();
        assert_eq!(add.budget().abandoned().await, Abandon::Deadline);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(400) && waited < Duration::from_millis(900),
            "{waited:?}"
        );
        // Already past the deadline less the margin: refused at once.
        let late = inflight.begin_add(key("c2"), Some(now - 2_900), Some(now + 100), None);
        assert_eq!(late.err(), Some(Abandon::Deadline));
    }

    #[tokio::test]
    async fn peer_gone_and_stop_abandon_and_drain_waits_for_answers() {
        let inflight = Inflight::default();
        let (gone, gone_rx) = watch::channel(false);
        let add = inflight
            .begin_add(key("c1"), None, None, Some(gone_rx))
            .unwrap();
        assert_eq!(add.budget().check(), Ok(()));
        gone.send_replace(true);
        assert_eq!(add.budget().abandoned().await, Abandon::PeerGone);

        let add2 = inflight.begin_add(key("c2"), None, None, None).unwrap();
        inflight.stop();
        assert_eq!(add2.budget().abandoned().await, Abandon::Stopping);
        assert_eq!(inflight.begin_other().err(), Some(Abandon::Stopping));
        assert_eq!(inflight.drained(Duration::from_millis(50)).await, 2);
        drop(add);
        drop(add2);
        assert_eq!(inflight.drained(Duration::from_millis(50)).await, 0);
    }
}
