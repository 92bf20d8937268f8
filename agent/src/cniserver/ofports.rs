//! OpenFlow port numbers for pod ports, chosen by the agent.
//!
//! Each pod port is created with an `ofport_request` the agent picked, so the pod's flows can be
//! installed while ovs-vswitchd is still adding the port instead of after OVS reports the port
//! number. ADD still waits for OVS to assign the port and fails (rolling back) if OVS did not
//! honour the request.
//!
//! Guarantees:
//! - Numbers come from [`POD_OFPORTS`], which never includes the infrastructure ports
//!   (tunnel 32768, gateway 32769, uplink 32770, host internal port 32771).
//! - A number is never picked while any interface in OVS has it as `ofport` or `ofport_request`,
//!   or while another ADD holds it ([`OfportLease`]). Nothing is persisted: the numbers in use
//!   are read from the OVSDB cache, so an agent restart recovers them from OVS.
//! - Picking is round-robin from the last number picked, so a number freed by a DEL is reused
//!   only after the whole range went round (no stale flow or port of the old pod can meet it).

use std::collections::BTreeSet;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, MutexGuard};

/// The OpenFlow port numbers pod ports get.
pub const POD_OFPORTS: RangeInclusive<u32> = 1..=32767;

/// The first number of [`POD_OFPORTS`] after `last` (wrapping around) that is not in `used`;
/// `None` when every number is used. Pure.
pub fn next_free(last: u32, used: &BTreeSet<u32>) -> Option<u32> {
    let (first, end) = (*POD_OFPORTS.start(), *POD_OFPORTS.end());
    let size = end - first + 1;
    let start = last.clamp(first - 1, end) + 1 - first;
    (0..size)
        .map(|step| first + (start + step) % size)
        .find(|port| !used.contains(port))
}

#[derive(Debug, Default)]
struct State {
    /// The number picked last (0: none yet).
    last: u32,
    /// Numbers held by ADDs in progress.
    leased: BTreeSet<u32>,
}

/// Hands out pod OpenFlow port numbers. Shared by every ADD of the node.
#[derive(Debug, Default)]
pub struct OfportAllocator {
    state: Mutex<State>,
}

impl OfportAllocator {
    /// An allocator that starts picking after the highest pod number in `in_use` (the numbers
    /// OVS holds at start), so numbers of pods deleted before a restart are not reused at once.
    pub fn resume(&self, in_use: &BTreeSet<u32>) {
        let highest = in_use
            .iter()
            .rev()
            .find(|p| POD_OFPORTS.contains(p))
            .copied();
        self.lock().last = highest.unwrap_or(0);
    }

    /// Picks a number not in `in_use` (every `ofport` and `ofport_request` in OVS) and not
    /// leased; `None` when the range is exhausted. The lease ends when dropped.
    pub fn lease(self: &Arc<Self>, in_use: &BTreeSet<u32>) -> Option<OfportLease> {
        let mut state = self.lock();
        let used: BTreeSet<u32> = in_use.union(&state.leased).copied().collect();
        let ofport = next_free(state.last, &used)?;
        state.last = ofport;
        state.leased.insert(ofport);
        Some(OfportLease {
            ofport,
            allocator: Arc::clone(self),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A number held for one ADD. Keep it until OVS shows the port with it (or the port is gone).
#[derive(Debug)]
pub struct OfportLease {
    ofport: u32,
    allocator: Arc<OfportAllocator>,
}

impl OfportLease {
    /// The number.
    pub fn ofport(&self) -> u32 {
        self.ofport
    }
}

impl Drop for OfportLease {
    fn drop(&mut self) {
        self.allocator.lock().leased.remove(&self.ofport);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ports: &[u32]) -> BTreeSet<u32> {
        ports.iter().copied().collect()
    }

    #[test]
    fn picks_round_robin_and_skips_used_numbers() {
        assert_eq!(next_free(0, &set(&[])), Some(1));
        assert_eq!(next_free(0, &set(&[1, 2])), Some(3));
        assert_eq!(next_free(5, &set(&[1])), Some(6));
        // Wraps below the infrastructure ports, never onto them.
        assert_eq!(next_free(32767, &set(&[1])), Some(2));
        assert_eq!(next_free(32769, &set(&[])), Some(1));
        assert_eq!(next_free(32766, &set(&[32767])), Some(1));
    }

    #[test]
    fn never_hands_out_infrastructure_ports_or_a_full_range() {
        let all: BTreeSet<u32> = POD_OFPORTS.collect();
        assert_eq!(next_free(0, &all), None);
        let mut almost = all.clone();
        almost.remove(&32767);
        assert_eq!(next_free(100, &almost), Some(32767));
        for infra in 32768..=32771 {
            assert!(!POD_OFPORTS.contains(&infra));
        }
    }

    #[test]
    fn leases_are_exclusive_until_dropped_and_not_reused_at_once() {
        let allocator = Arc::new(OfportAllocator::default());
        allocator.resume(&set(&[3, 32769, 40000]));
        let a = allocator.lease(&set(&[])).unwrap();
        let b = allocator.lease(&set(&[])).unwrap();
        assert_eq!((a.ofport(), b.ofport()), (4, 5));
        drop(a);
        // 4 is free again but the next pick moves on.
        assert_eq!(allocator.lease(&set(&[])).unwrap().ofport(), 6);
        // A number OVS holds is skipped.
        assert_eq!(allocator.lease(&set(&[7])).unwrap().ofport(), 8);
    }

    #[test]
    fn a_held_lease_is_skipped_after_wrapping() {
        let allocator = Arc::new(OfportAllocator::default());
        allocator.resume(&set(&[32766]));
        let held = allocator.lease(&set(&[])).unwrap();
        assert_eq!(held.ofport(), 32767);
        let busy: BTreeSet<u32> = (1..=32766).collect();
        assert!(allocator.lease(&busy).is_none(), "32767 is leased");
        drop(held);
        assert_eq!(allocator.lease(&busy).unwrap().ofport(), 32767);
    }
}
