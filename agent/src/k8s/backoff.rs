//! Retry delays for the Node watchers: quick first retries so a relist after 410 Gone or a short
//! API server outage is seen within a second, growing to a cap so a long outage is not hammered,
//! with jitter so many agents do not retry in step.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kube::runtime::utils::Backoff;

const FIRST: Duration = Duration::from_millis(200);
const CAP: Duration = Duration::from_secs(10);

/// Exponential backoff from 200 ms to 10 s with up to 25% jitter; reset by any successful event.
#[derive(Debug, Default)]
pub(crate) struct WatchBackoff {
    attempt: u32,
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let base = FIRST.saturating_mul(1 << self.attempt.min(16)).min(CAP);
        self.attempt = self.attempt.saturating_add(1);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let jitter = base / 4 * (nanos % 1000) / 1000;
        Some(base + jitter)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_and_resets() {
        let mut b = WatchBackoff::default();
        let first = b.next().unwrap();
        assert!(first >= FIRST && first <= FIRST * 5 / 4, "{first:?}");
        let later: Vec<_> = (0..20).map(|_| b.next().unwrap()).collect();
        assert!(later.iter().all(|d| *d <= CAP * 5 / 4));
        assert!(*later.last().unwrap() >= CAP);
        b.reset();
        assert!(b.next().unwrap() <= FIRST * 5 / 4);
    }
}
