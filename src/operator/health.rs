//! Whether the operator's watches are healthy enough for it to call itself ready.
//!
//! kube-runtime's watcher retries failed watches with a back-off and yields each failure as an
//! error; a successful retry yields nothing until the next change arrives. So a watch counts
//! as failing from its first error while errors keep coming, and as recovered when an item
//! arrives or when no error has come for longer than a retry can take.
//!
//! # Guarantees
//! - `/readyz` turns false once a watch has been failing for longer than `stale_after`, and
//!   true again when it recovers.
//! - A single error, or an outage shorter than `stale_after`, does not change readiness.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The longest a failing watch goes between two errors: the watcher's back-off cap (4 s, see
/// `watch_backoff`) plus a connection attempt that runs into the client's connect timeout
/// (30 s), plus a margin. Silence longer than this after an error means the retry worked.
pub const RETRY_SILENCE: Duration = Duration::from_secs(40);

#[derive(Debug, Clone, Copy, Default)]
struct Streak {
    first_error: Option<Instant>,
    last_error: Option<Instant>,
}

/// A watch that has failed without a break for this long is started over with a fresh list.
/// kube-runtime's watcher starts over only on 410 and otherwise resumes from the same
/// resourceVersion; an apiserver can answer that same resume with the same other error for
/// good (seen here: "etcd event received with PrevKv=nil" for a label-selected pod watch after
/// etcd compacted past a previous value), and the operator would record nothing until restarted.
pub const RESTART_AFTER: Duration = Duration::from_secs(10);

/// Tracks one watch's run of errors, to tell when to start it over.
#[derive(Debug, Default)]
pub struct FailingSince(Option<Instant>);

impl FailingSince {
    /// An item arrived: the watch works.
    pub fn ok(&mut self) {
        self.0 = None;
    }

    /// An error at `now`; true once errors have come without a break for [`RESTART_AFTER`].
    pub fn failed(&mut self, now: Instant) -> bool {
        let since = *self.0.get_or_insert(now);
        now.duration_since(since) >= RESTART_AFTER
    }
}

/// The health of every named watch, and whether the first lists are in.
#[derive(Debug)]
pub struct WatchHealth {
    stale_after: Duration,
    watches: Mutex<BTreeMap<&'static str, Streak>>,
    synced: Mutex<bool>,
}

impl WatchHealth {
    #[must_use]
    pub fn new(stale_after: Duration) -> Self {
        WatchHealth { stale_after, watches: Mutex::default(), synced: Mutex::new(false) }
    }

    pub fn error(&self, watch: &'static str, now: Instant) {
        let mut watches = crate::lock(&self.watches);
        let s = watches.entry(watch).or_default();
        if s.last_error.is_none_or(|last| now.duration_since(last) > RETRY_SILENCE) {
            s.first_error = Some(now);
        }
        s.last_error = Some(now);
    }

    pub fn ok(&self, watch: &'static str) {
        crate::lock(&self.watches).insert(watch, Streak::default());
    }

    pub fn set_synced(&self, synced: bool) {
        *crate::lock(&self.synced) = synced;
    }

    /// The watches failing for longer than `stale_after` at `now`.
    #[must_use]
    pub fn stale(&self, now: Instant) -> Vec<&'static str> {
        crate::lock(&self.watches)
            .iter()
            .filter(|(_, s)| match (s.first_error, s.last_error) {
                (Some(first), Some(last)) => now.duration_since(last) <= RETRY_SILENCE && now.duration_since(first) > self.stale_after,
                _ => false,
            })
            .map(|(name, _)| *name)
            .collect()
    }

    /// Ready: the first lists are in and no watch is stale.
    #[must_use]
    pub fn ready(&self, now: Instant) -> bool {
        *crate::lock(&self.synced) && self.stale(now).is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_failing_past_stale_after_makes_the_operator_unready_until_it_recovers() {
        // Defect: /readyz stayed true however long a watch had been failing.
        let h = WatchHealth::new(Duration::from_secs(60));
        let t0 = Instant::now();
        h.set_synced(true);
        assert!(h.ready(t0));
        // An outage: the watcher retries every few seconds and fails each time.
        for s in (0..=90).step_by(4) {
            h.error("pods", t0 + Duration::from_secs(s));
            assert_eq!(h.ready(t0 + Duration::from_secs(s)), s <= 60, "at {s} s");
        }
        assert_eq!(h.stale(t0 + Duration::from_secs(90)), ["pods"]);
        // The retry works: no more errors. Ready again once the silence outlasts a retry ...
        assert!(!h.ready(t0 + Duration::from_secs(100)));
        assert!(h.ready(t0 + Duration::from_secs(88) + RETRY_SILENCE + Duration::from_secs(1)));
        // ... or at once when an item arrives.
        h.error("pods", t0 + Duration::from_secs(200));
        h.ok("pods");
        assert!(h.ready(t0 + Duration::from_secs(200)));
    }

    #[test]
    fn a_watch_failing_without_a_break_is_started_over_and_an_item_ends_the_run() {
        let mut f = FailingSince::default();
        let t0 = Instant::now();
        assert!(!f.failed(t0));
        assert!(!f.failed(t0 + Duration::from_secs(9)));
        assert!(f.failed(t0 + RESTART_AFTER));
        f.ok();
        assert!(!f.failed(t0 + Duration::from_secs(30)), "a new run of errors starts from zero");
    }

    #[test]
    fn a_short_outage_and_a_lone_error_do_not_change_readiness() {
        let h = WatchHealth::new(Duration::from_secs(60));
        h.set_synced(true);
        let t0 = Instant::now();
        h.error("events", t0);
        assert!(h.ready(t0 + Duration::from_secs(1)));
        // Errors spaced further apart than a retry can take start a new streak each time.
        h.error("events", t0 + Duration::from_secs(50));
        h.error("events", t0 + Duration::from_secs(100));
        assert!(h.ready(t0 + Duration::from_secs(101)));
        assert!(!WatchHealth::new(Duration::from_secs(60)).ready(t0), "not ready before the first lists");
    }
}
