//! The operator's in-memory state: one trimmed history per tracked pod, and which of them
//! have changes still to write. Never whole Pod objects.
//!
//! # Guarantees
//! - A relist of one namespace judges only the pods of that namespace: a pod missing from
//!   namespace `a`'s list says nothing about namespace `b`.
//! - A pod seen alive again after it was taken for gone is tracked again, not expired.
//! - A deleted pod's report expires `deleted_ttl` after the `deletedAt` stored in the report,
//!   so the clock does not restart with the operator.
//! - Events that arrive before their pod wait for it, bounded in bytes and in age: an event
//!   whose pod has not shown up within [`PENDING_EVENT_MAX_AGE`] belongs to an untracked pod.
//! - A report that failed to write is retried with a back-off, never more than once per window.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Event;

use super::metrics::{TerminationLabels, WorkloadLabels};
use super::shards::Ownership;
use super::{Metrics, OperatorConfig};
use crate::crd::PodLifecycle;
use crate::lifecycle::budget::{REPORT_OVERHEAD_BYTES, fair_share};
use crate::lifecycle::workload::Owners;
use crate::lifecycle::{Change, EventSnapshot, PodHistory, PodSnapshot, Source};

/// How a report write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Written,
    /// The report object did not exist (404): the next write creates it.
    Missing,
    /// The apiserver refused this report (an API status): retried with a back-off up to
    /// [`WRITE_RETRY_MAX`].
    Refused,
    /// The apiserver could not be reached: retried soon, up to [`WRITE_RETRY_UNREACHABLE_MAX`].
    Unreachable,
}

/// Events of pods not seen yet are kept this long. Pods are listed before events are watched,
/// so only a pod created in the last moments can still show up, or one created while a relist
/// and its catch-up (at most 30 s) run; an event older than this belongs to an untracked pod.
pub const PENDING_EVENT_MAX_AGE: Duration = Duration::from_secs(90);
/// The most bytes of events waiting for their pod. This machine's apiserver delivers at most
/// about 330 pod watch events/s (shared/notes), about 4 MB in 30 s.
pub const PENDING_EVENT_MAX_BYTES: usize = 16 * 1024 * 1024;
/// How long after a failed owner lookup (a timeout, a 5xx) it is tried again.
pub const OWNER_RETRY: Duration = Duration::from_secs(10);
/// Longest wait before a refused write is tried again.
pub const WRITE_RETRY_MAX: Duration = Duration::from_secs(60);
/// After this many refusals in a row a report stops holding back the resume position (it is
/// still retried): one report the apiserver will never take must not turn off catch-up.
pub const REFUSALS_BEFORE_STUCK: u32 = 5;
/// Longest wait before a write that could not reach the apiserver is tried again: short, so
/// that reports are current within seconds of the apiserver coming back.
pub const WRITE_RETRY_UNREACHABLE_MAX: Duration = Duration::from_secs(4);

/// What one relist covers: one namespace's pods, or every pod in the cluster. Each scope is
/// one watch, with its own position (resourceVersion).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    Namespace(String),
    Cluster,
}

impl Scope {
    /// Its key in a shard Lease's positions: `""` for the cluster, else the namespace.
    #[must_use]
    pub fn key(&self) -> String {
        match self {
            Scope::Namespace(ns) => ns.clone(),
            Scope::Cluster => String::new(),
        }
    }

    #[must_use]
    pub fn from_key(key: &str) -> Scope {
        if key.is_empty() { Scope::Cluster } else { Scope::Namespace(key.to_string()) }
    }

    fn covers(&self, namespace: &str) -> bool {
        match self {
            Scope::Namespace(ns) => ns == namespace,
            Scope::Cluster => true,
        }
    }
}

#[derive(Debug)]
pub struct Tracked {
    pub namespace: String,
    /// Boxed: a history is over 500 bytes, and a map of 10k pods has up to twice as many slots
    /// as entries, each the size of its value.
    pub history: Box<PodHistory>,
    pub dirty: bool,
    /// False until the report object exists (its spec is applied once, then only status).
    pub report_exists: bool,
    /// The report's labels name the pod's workload (applied once its owner chain is complete).
    labelled: bool,
    /// An owner lookup failed for a passing reason: look again (and write) at this time, even
    /// if nothing else changed.
    owners_retry_at: Option<Instant>,
    /// The pod no longer exists (a delete was seen, or a relist of its scope lacked it).
    pub gone: bool,
    /// Taken by a write window whose outcome is not known yet.
    writing: bool,
    failed_writes: u32,
    /// Refused this many times in a row: see [`REFUSALS_BEFORE_STUCK`].
    refusals: u32,
    retry_at: Option<Instant>,
    /// Taken for a write at most once a window: not again before this.
    not_before: Option<Instant>,
    /// The resourceVersion of the oldest pod change not yet taken for a write (0 if it had
    /// none): a resume position must stay below it.
    unwritten_since: Option<u64>,
    /// `unwritten_since` as it was when the write in flight was taken; restored if that
    /// write does not happen or fails.
    in_flight_since: Option<u64>,
    /// The report's size as last taken for a write (or as read at start): what it holds in
    /// etcd, for the operator-wide budget.
    bytes: usize,
}

impl Tracked {
    fn new(namespace: String, history: Box<PodHistory>, report_exists: bool) -> Self {
        // A stored report with a complete chain got its labels in the same write.
        let labelled = report_exists && history.owners.as_ref().is_some_and(|o| o.complete);
        // A stored report whose chain a previous operator could not finish: finish it now.
        let owners_retry_at = (report_exists && history.owners.as_ref().is_some_and(|o| !o.complete)).then(Instant::now);
        Tracked {
            labelled,
            owners_retry_at,
            namespace,
            history,
            dirty: !report_exists,
            report_exists,
            gone: false,
            writing: false,
            failed_writes: 0,
            refusals: 0,
            retry_at: None,
            not_before: None,
            unwritten_since: None,
            in_flight_since: None,
            bytes: 0,
        }
    }

    fn from_stored(stored: StoredReport) -> Self {
        Tracked { bytes: stored.bytes, ..Tracked::new(stored.namespace, stored.history, true) }
    }

    /// Trims the history to `max_bytes` (its report's overhead included) and notes the size.
    fn fit(&mut self, max_bytes: usize) {
        self.bytes = self.history.enforce_budget(max_bytes.saturating_sub(REPORT_OVERHEAD_BYTES)) + REPORT_OVERHEAD_BYTES;
    }

    /// Its unwritten changes hold its scope's resume position back: not once refused
    /// [`REFUSALS_BEFORE_STUCK`] times (it is still retried).
    fn holds_position(&self) -> bool {
        self.refusals < REFUSALS_BEFORE_STUCK
    }

    /// Taken less than a write window before `now`: it waits for its window.
    fn in_window(&self, now: Instant) -> bool {
        self.not_before.is_some_and(|at| at > now)
    }

    /// The taken write did not happen or failed: its pod changes are unwritten again.
    fn restore_unwritten(&mut self) {
        if let Some(taken) = self.in_flight_since.take() {
            self.unwritten_since = Some(self.unwritten_since.map_or(taken, |now| now.min(taken)));
        }
    }
}

/// See [`Store::report_state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportState {
    /// No pod of that UID is tracked: the selection does not cover it, or it was never seen.
    Untracked,
    /// Observed changes are not written yet (or their write has not come back).
    Unwritten,
    /// The report holds everything observed so far.
    Written,
}

/// A report read at start, not yet matched to a pod.
#[derive(Debug)]
pub struct StoredReport {
    pub namespace: String,
    pub history: Box<PodHistory>,
    /// Its size as stored (history and overhead), for the operator-wide budget.
    pub bytes: usize,
}

#[derive(Debug)]
struct Pending {
    first_arrival: Instant,
    events: Vec<EventSnapshot>,
    bytes: usize,
}

/// Takes the stored report of `uid`, once its pod is seen or known gone. The map is shrunk as
/// it empties: a cold start fills it with every report, and its slots would otherwise outlive
/// them (about 1 MB at 10k pods now that histories are boxed; 10 MB when they were inline).
fn claim_stored(existing: &mut HashMap<String, StoredReport>, uid: &str) -> Option<StoredReport> {
    let stored = existing.remove(uid)?;
    if existing.capacity() > 64 && existing.len() < existing.capacity() / 4 {
        existing.shrink_to_fit();
    }
    Some(stored)
}

impl Inner {
    /// Each scope resumes from its oldest shard's position.
    fn recompute_resume(&mut self) {
        self.resume_from.clear();
        for ((scope, _), at) in &self.resume_by_shard {
            let entry = self.resume_from.entry(scope.clone()).or_insert(*at);
            *entry = (*entry).min(*at);
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    pods: HashMap<String, Tracked>,
    /// Reports found at start, by pod UID, not yet matched to a pod.
    existing: HashMap<String, StoredReport>,
    /// Events of pods not seen yet, by pod UID; `pending_order` is by first arrival.
    pending: HashMap<String, Pending>,
    pending_order: VecDeque<(String, Instant)>,
    pending_bytes: usize,
    /// The newest pod resourceVersion seen per scope: where its watch stands.
    positions: HashMap<Scope, u64>,
    /// Each scope's position at the last write window that left nothing unwritten.
    clean: HashMap<Scope, u64>,
    /// Where the reports say the previous writer's watches could resume.
    resume_from: HashMap<Scope, u64>,
    /// The newest resume position among each shard's reports. Shards may come from different
    /// writers (a dead replica's, a live one's): the scope resumes from the oldest of them,
    /// or what only the dead one saw would be skipped.
    resume_by_shard: HashMap<(Scope, u32), u64>,
}

/// One report to write, taken from the store.
#[derive(Debug, Clone)]
pub struct DirtyReport {
    pub uid: String,
    pub namespace: String,
    pub report_exists: bool,
    /// The report already carries its workload's labels.
    pub labelled: bool,
    pub history: PodHistory,
}

/// One write window's reports, and where the watches stood when they were taken.
#[derive(Debug, Default)]
pub struct Batch {
    pub reports: Vec<DirtyReport>,
    positions: HashMap<Scope, u64>,
    /// Every changed report was taken (none held back by a retry back-off).
    complete: bool,
}

#[derive(Debug)]
pub struct Store {
    pub config: OperatorConfig,
    pub metrics: Arc<Metrics>,
    /// With sharding: the shards this term records; pods outside them are not kept.
    ownership: Option<Arc<Ownership>>,
    inner: Mutex<Inner>,
}

fn change_label(c: Change) -> &'static str {
    match c {
        Change::Phase => "phase",
        Change::Condition => "condition",
        Change::ContainerState => "container_state",
        Change::Flip => "flip",
        Change::Termination => "termination",
        Change::Restart => "restart",
        Change::Event => "event",
        Change::EventCount => "event_count",
        Change::Owner => "owner",
    }
}

/// The measured restarts of a history (restart number and start), to see which a status measured.
fn measured(h: &PodHistory) -> Vec<(i32, Option<Timestamp>)> {
    h.containers.iter().flat_map(|c| &c.restarts).filter(|r| r.measured_seconds.is_some()).map(|r| (r.number, r.started_at)).collect()
}

/// Per container: the newest termination's run, the newest restart's number and the restart count.
fn latest_runs(h: &PodHistory) -> Vec<(String, i32, i32, i32)> {
    h.containers
        .iter()
        .map(|c| (c.name.clone(), c.terminations.back().map_or(-1, |t| t.run), c.restarts.back().map_or(0, |r| r.number), c.restart_count))
        .collect()
}

fn workload_labels(namespace: &str, h: &PodHistory, container: &str) -> WorkloadLabels {
    let workload = h.owners.as_ref().and_then(|o| o.workload());
    WorkloadLabels {
        namespace: namespace.to_string(),
        workload_kind: workload.map_or_else(|| "none".to_string(), |w| w.kind.clone()),
        workload: workload.map_or_else(String::new, |w| w.name.clone()),
        container: container.to_string(),
    }
}

/// Rough in-memory size of an event snapshot, for the pending bound.
fn event_bytes(e: &EventSnapshot) -> usize {
    96 + e.uid.len() + e.reason.len() + e.message.len() + e.type_.len() + e.container.as_ref().map_or(0, String::len)
}

/// Reads one stored report. Reports are read as plain JSON so that one written by an older
/// schema, or edited by hand, is skipped with a reason instead of failing the whole list.
///
/// # Errors
/// The object is not a `PodLifecycle` this version can read; the message says which field.
pub fn parse_report(object: serde_json::Value) -> Result<(String, StoredReport), String> {
    let report: PodLifecycle = serde_json::from_value(object).map_err(|e| e.to_string())?;
    let uid = report.spec.pod_uid.clone();
    if uid.is_empty() {
        return Err("spec.podUid is empty".into());
    }
    let namespace = report.metadata.namespace.clone().unwrap_or_default();
    let mut history = Box::new(report.status.unwrap_or_else(|| PodHistory::new(&report.spec.pod_name, &uid)));
    // Decoding grew its lists by doubling; held for the pod's life, they keep only what they hold.
    history.shrink_to_fit();
    let bytes = history.serialized_len() + REPORT_OVERHEAD_BYTES;
    Ok((uid, StoredReport { namespace, history, bytes }))
}

impl Store {
    /// A store for one term: everything an earlier term held is gone.
    pub fn new(config: OperatorConfig, metrics: Arc<Metrics>) -> Self {
        metrics.tracked_pods.set(0);
        Store { config, metrics, ownership: None, inner: Mutex::new(Inner::default()) }
    }

    /// Keeps only the pods of these shards, and resumes each from the position its Lease
    /// carries (or a newer one its reports carry).
    #[must_use]
    pub fn with_ownership(mut self, ownership: Arc<Ownership>) -> Self {
        {
            let mut inner = self.lock();
            for (shard, positions) in ownership.resume() {
                for (key, at) in positions {
                    inner.resume_by_shard.insert((Scope::from_key(key), *shard), *at);
                }
            }
            inner.recompute_resume();
        }
        self.ownership = Some(ownership);
        self
    }

    /// Each scope's position at the last write window that left nothing unwritten, by scope
    /// key: what the shard Leases carry.
    #[must_use]
    pub fn clean_positions(&self) -> crate::operator::shards::Positions {
        self.lock().clean.iter().map(|(scope, at)| (scope.key(), *at)).collect()
    }

    /// The pod is this term's to record.
    #[must_use]
    pub fn owns(&self, uid: &str) -> bool {
        self.ownership.as_ref().is_none_or(|o| o.owns(uid))
    }

    /// The operator-wide budget's part for this replica: its share of the shards.
    fn total_budget(&self) -> usize {
        match &self.ownership {
            Some(o) => self.config.total_budget_bytes / o.shards() as usize * o.held().count(),
            None => self.config.total_budget_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        crate::lock(&self.inner)
    }

    /// The scope whose watch covers pods of `namespace`.
    #[must_use]
    pub fn scope_of(&self, namespace: &str) -> Scope {
        match self.config.selection {
            super::Selection::Namespaces(_) => Scope::Namespace(namespace.to_string()),
            _ => Scope::Cluster,
        }
    }

    /// Adds the reports read at start, so histories resume instead of starting over, and
    /// notes where their writer's watches can be resumed.
    pub fn add_stored(&self, reports: impl IntoIterator<Item = (String, StoredReport)>) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        for (uid, report) in reports {
            if !self.owns(&uid) {
                continue;
            }
            if let Some(at) = report.history.watch_resume_from {
                let shard = self.ownership.as_ref().map_or(0, |o| o.shard_of(&uid));
                let entry = inner.resume_by_shard.entry((self.scope_of(&report.namespace), shard)).or_insert(at);
                *entry = (*entry).max(at);
            }
            inner.existing.insert(uid, report);
        }
        inner.recompute_resume();
    }

    /// Where a watch of `scope` can be resumed so that nothing since the last complete write
    /// is missed: this term's own position, or the one the stored reports carry. A scope none
    /// of them speaks for (a sharded replica holding no report of that namespace) resumes
    /// from the oldest position known for any scope: positions are the cluster's one
    /// revision counter, and the previous writers were behind there at most.
    #[must_use]
    pub fn resume_point(&self, scope: &Scope) -> Option<u64> {
        let inner = self.lock();
        let own = inner.positions.get(scope).copied().max(inner.resume_from.get(scope).copied());
        own.or_else(|| inner.resume_from.values().min().copied())
    }

    /// How many stored reports wait for their pod.
    #[must_use]
    pub fn stored_unmatched(&self) -> usize {
        self.lock().existing.len()
    }

    /// Feeds one whole Pod (the tests' way in; the watches hand over snapshots).
    #[cfg(test)]
    pub fn observe_pod(&self, pod: &k8s_openapi::api::core::v1::Pod, source: Source, deleted: bool) {
        self.observe_snapshot(&PodSnapshot::from_pod(pod), source, deleted);
    }

    /// Feeds one trimmed pod observation to its history.
    pub fn observe_snapshot(&self, snap: &PodSnapshot, source: Source, deleted: bool) {
        if snap.uid.is_empty() {
            return;
        }
        let now = Timestamp::now();
        let scope = self.scope_of(&snap.namespace);
        let mut inner = self.lock();
        let inner = &mut *inner;
        if let Some(version) = snap.resource_version {
            let position = inner.positions.entry(scope).or_insert(version);
            *position = (*position).max(version);
        }
        if !self.owns(&snap.uid) {
            return;
        }
        let tracked = inner.pods.entry(snap.uid.clone()).or_insert_with(|| {
            self.metrics.tracked_pods.inc();
            match claim_stored(&mut inner.existing, &snap.uid) {
                Some(stored) => Tracked::from_stored(stored),
                None => Tracked::new(snap.namespace.clone(), Box::new(PodHistory::new(&snap.name, &snap.uid)), false),
            }
        });
        let measured_before = measured(&tracked.history);
        let latest_before = latest_runs(&tracked.history);
        let changes = tracked.history.observe(snap, now, source, &self.config.profile);
        for c in &changes {
            self.metrics.transition(change_label(*c), source);
        }
        // Every restart once, when its delay becomes known (often a status after the restart).
        if measured(&tracked.history) != measured_before {
            for c in &tracked.history.containers {
                for r in &c.restarts {
                    if let Some(m) = r.measured_seconds
                        && !measured_before.contains(&(r.number, r.started_at))
                    {
                        self.metrics.restart_delay.observe(m);
                        if let (Source::Live, Some(announced)) = (source, r.announced_seconds) {
                            self.metrics
                                .workload_sync_lag
                                .get_or_create(&workload_labels(&tracked.namespace, &tracked.history, &c.name))
                                .observe(m - announced);
                        }
                    }
                }
            }
        }
        // Per workload only what is seen live: a rebuilt history (a restarted operator's first
        // list) would count again what the previous one counted.
        if source == Source::Live && !changes.is_empty() {
            self.count_workload_news(&tracked.namespace, &tracked.history, &latest_before);
        }
        let mut changed = !changes.is_empty();
        if deleted && !tracked.gone {
            tracked.gone = true;
            tracked.history.deleted_at.get_or_insert(now);
            changed = true;
        } else if !deleted && tracked.gone && snap.deleted_at.is_none() {
            // Taken for gone by a relist, yet here it is: it never left.
            tracked.gone = false;
            tracked.history.deleted_at = None;
            changed = true;
        }
        if changed {
            tracked.dirty = true;
            // The lowest: a catch-up's list can bring an older version after its replay.
            let version = snap.resource_version.unwrap_or(0);
            tracked.unwritten_since = Some(tracked.unwritten_since.map_or(version, |v| v.min(version)));
        }
        // Events that came before the pod: one lookup, not a scan.
        if let Some(early) = inner.pending.remove(&snap.uid) {
            inner.pending_bytes -= early.bytes;
            for e in &early.events {
                self.fold_event(tracked, e);
            }
        }
        self.metrics.pending_events.set(i64::try_from(inner.pending_bytes).unwrap_or(i64::MAX));
    }

    /// Counts the restarts and terminations that are new since `before` (see [`latest_runs`]).
    fn count_workload_news(&self, namespace: &str, h: &PodHistory, before: &[(String, i32, i32, i32)]) {
        for c in &h.containers {
            let (last_run, last_restart, count_before) = before.iter().find(|b| b.0 == c.name).map_or((-1, 0, 0), |b| (b.1, b.2, b.3));
            let labels = workload_labels(namespace, h, &c.name);
            for t in c.terminations.iter().filter(|t| t.run > last_run) {
                let reason = t.termination.reason.clone().unwrap_or_else(|| "unknown".into());
                let WorkloadLabels { namespace, workload_kind, workload, container } = labels.clone();
                self.metrics
                    .workload_terminations
                    .get_or_create(&TerminationLabels { namespace, workload_kind, workload, container, reason })
                    .inc();
            }
            // By the restart count: restarts between two observations count too.
            if let Ok(new) = u64::try_from(c.restart_count - count_before)
                && new > 0
            {
                self.metrics.workload_restarts.get_or_create(&labels).inc_by(new);
            }
            if let Some(r) = c.restarts.back().filter(|r| r.number > last_restart) {
                self.metrics.workload_backoff_step.get_or_create(&labels).set(i64::from(r.backoff_step));
            }
        }
    }

    fn fold_event(&self, tracked: &mut Tracked, e: &EventSnapshot) {
        match tracked.history.observe_event(e) {
            Some(c) => {
                self.metrics.transition(change_label(c), Source::Live);
                tracked.dirty = true;
            }
            None => _ = self.metrics.events_ignored.inc(),
        }
    }

    /// Feeds one event (new, or a count update) to its pod's history. Events must come in
    /// resourceVersion order: a relist's must be sorted first (see `watch_events`).
    pub fn observe_event(&self, event: &Event) {
        let Some(uid) = event.involved_object.uid.clone() else { return };
        if !self.owns(&uid) {
            // Another replica's pod: kept waiting, it would fill the pending bound.
            return;
        }
        let Some(snap) = EventSnapshot::from_event(event) else { return };
        self.observe_event_snapshot(uid, snap, Instant::now());
    }

    fn observe_event_snapshot(&self, uid: String, snap: EventSnapshot, now: Instant) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        if let Some(tracked) = inner.pods.get_mut(&uid) {
            self.fold_event(tracked, &snap);
            return;
        }
        let bytes = event_bytes(&snap);
        let pending = inner.pending.entry(uid.clone()).or_insert_with(|| {
            inner.pending_order.push_back((uid, now));
            Pending { first_arrival: now, events: Vec::new(), bytes: 0 }
        });
        pending.events.push(snap);
        pending.bytes += bytes;
        inner.pending_bytes += bytes;
        self.evict_pending(inner, now);
    }

    /// Drops the pending events of pods that never showed up: first those past their age,
    /// then, if still over the byte bound, the longest-waiting.
    fn evict_pending(&self, inner: &mut Inner, now: Instant) {
        while let Some((uid, arrival)) = inner.pending_order.front().cloned() {
            let expired = now.duration_since(arrival) >= PENDING_EVENT_MAX_AGE;
            if !expired && inner.pending_bytes <= PENDING_EVENT_MAX_BYTES {
                break;
            }
            inner.pending_order.pop_front();
            // An entry consumed by its pod (or replaced since) is stale here: skip it.
            if inner.pending.get(&uid).is_some_and(|p| p.first_arrival == arrival)
                && let Some(p) = inner.pending.remove(&uid)
            {
                inner.pending_bytes -= p.bytes;
                let why = if expired { "untracked" } else { "full" };
                self.metrics.pending_dropped(why, p.events.len());
            }
        }
        self.metrics.pending_events.set(i64::try_from(inner.pending_bytes).unwrap_or(i64::MAX));
    }

    /// After a (re)list of `scope`: its tracked pods that the list lacked were deleted while
    /// unwatched, and its stored reports that no listed pod claimed belong to pods that went
    /// away while the operator was down. Pods outside `scope` are not judged.
    pub fn mark_missing_as_gone(&self, scope: &Scope, seen: &HashSet<String>) {
        let now = Timestamp::now();
        let mut inner = self.lock();
        let inner = &mut *inner;
        for (uid, tracked) in &mut inner.pods {
            if scope.covers(&tracked.namespace) && !seen.contains(uid) && !tracked.gone {
                tracked.gone = true;
                tracked.history.deleted_at.get_or_insert(now);
                tracked.dirty = true;
            }
        }
        let orphans: Vec<String> = inner
            .existing
            .iter()
            .filter(|(uid, r)| scope.covers(&r.namespace) && !seen.contains(*uid))
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in orphans {
            let Some(stored) = claim_stored(&mut inner.existing, &uid) else { continue };
            let mut tracked = Tracked::from_stored(stored);
            tracked.gone = true;
            tracked.dirty = tracked.history.deleted_at.is_none();
            tracked.history.deleted_at.get_or_insert(now);
            if let Some(early) = inner.pending.remove(&uid) {
                inner.pending_bytes -= early.bytes;
                for e in &early.events {
                    self.fold_event(&mut tracked, e);
                }
            }
            self.metrics.tracked_pods.inc();
            inner.pods.insert(uid, tracked);
        }
    }

    /// Takes the changed histories that are due for a write, clearing their dirty marks.
    /// Each carries the last clean position of its scope (see [`Store::written_all`]).
    ///
    /// A report taken less than a write window ago waits for its window to pass (at most one
    /// write per pod per window); any other changed report is taken at once, so a change waits
    /// for the writer's next tick, not for a whole window. A waiting report's unwritten pod
    /// changes keep its scope's position below them.
    pub fn take_dirty(&self, now: Instant) -> Batch {
        self.take(now, true)
    }

    /// Takes every changed history, whether or not its window has passed (a term's last flush).
    pub fn take_all_dirty(&self, now: Instant) -> Batch {
        self.take(now, false)
    }

    fn take(&self, now: Instant, paced: bool) -> Batch {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let mut batch = Batch { positions: inner.positions.clone(), complete: true, ..Batch::default() };
        let mut due = Vec::new();
        for (uid, t) in &mut inner.pods {
            let owners_due = t.owners_retry_at.is_some_and(|at| at <= now) && t.history.owners.as_ref().is_some_and(|o| !o.complete);
            if !t.dirty && !owners_due {
                continue;
            }
            if paced && t.in_window(now) {
                match t.unwritten_since.filter(|_| t.holds_position()) {
                    Some(version @ 1..) => {
                        let position = batch.positions.entry(self.scope_of(&t.namespace)).or_insert(version - 1);
                        *position = (*position).min(version - 1);
                    }
                    // A change without a resourceVersion: no position can be trusted.
                    Some(0) => batch.complete = false,
                    // Only events, owners or a relist's verdict: those are read again by
                    // a restarted operator, not replayed from the pod watch.
                    None => {}
                }
                continue;
            }
            t.owners_retry_at = None;
            if t.retry_at.is_some_and(|at| at > now) {
                if t.holds_position() {
                    batch.complete = false;
                }
                continue;
            }
            t.fit(self.config.budget_bytes);
            due.push(uid.clone());
        }
        self.fit_total_budget(inner, &mut due, now, paced);
        for uid in due {
            let Some(t) = inner.pods.get_mut(&uid) else { continue };
            t.dirty = false;
            t.writing = true;
            t.not_before = Some(now + self.config.write_window);
            t.in_flight_since = t.unwritten_since.take();
            let scope = self.scope_of(&t.namespace);
            if let Some(clean) = inner.clean.get(&scope).or_else(|| inner.resume_from.get(&scope)) {
                t.history.watch_resume_from = Some(*clean);
            }
            batch.reports.push(DirtyReport {
                uid,
                namespace: t.namespace.clone(),
                report_exists: t.report_exists,
                labelled: t.labelled,
                history: PodHistory::clone(&t.history),
            });
        }
        // Sampled here, once per window, rather than recounted on every event (O(pods)).
        self.metrics.queue_depth.set(i64::try_from(batch.reports.len()).unwrap_or(i64::MAX));
        self.evict_pending(inner, now);
        batch
    }

    /// Keeps all reports together under the operator-wide budget: when they outgrow it, the
    /// largest are trimmed to a fair share of 90% of it (see [`fair_share`]) and written again, so that
    /// etcd gives the space back. Reports read at start and not claimed yet count as they are.
    /// One serialization per trimmed report: the lock is held for O(reports), not O(entries).
    fn fit_total_budget(&self, inner: &mut Inner, due: &mut Vec<String>, now: Instant, paced: bool) {
        let unclaimed: usize = inner.existing.values().map(|r| r.bytes).sum();
        let total = unclaimed + inner.pods.values().map(|t| t.bytes).sum::<usize>();
        self.metrics.report_bytes.set(i64::try_from(total).unwrap_or(i64::MAX));
        let budget = self.total_budget();
        if total <= budget {
            self.metrics.report_byte_cap.set(0);
            return;
        }
        // Trim to 90% of the budget, so that the next few windows' growth does not trim (and
        // rewrite) the same reports again.
        let low_water = budget - budget / 10;
        let sizes: Vec<usize> = inner.pods.values().map(|t| t.bytes).collect();
        let Some(cap) = fair_share(&sizes, low_water.saturating_sub(unclaimed)) else { return };
        self.metrics.report_byte_cap.set(i64::try_from(cap).unwrap_or(i64::MAX));
        let already: HashSet<String> = due.iter().cloned().collect();
        let mut trimmed = 0;
        for (uid, t) in &mut inner.pods {
            if t.bytes <= cap {
                continue;
            }
            let before = t.bytes;
            t.fit(cap);
            if t.bytes >= before {
                continue; // Nothing left to drop: only its summary and counters remain.
            }
            trimmed += 1;
            if already.contains(uid) {
                continue;
            }
            if t.retry_at.is_some_and(|at| at > now) || (paced && t.in_window(now)) {
                t.dirty = true; // Written once its retry back-off, or its window, ends.
            } else {
                due.push(uid.clone());
            }
        }
        if trimmed > 0 {
            tracing::info!(total, budget, cap, trimmed, "reports over the operator-wide budget: trimmed the largest");
        }
    }

    /// Every report of `batch` was written: if nothing else was left dirty, everything up to
    /// the positions it was taken at is stored, and later reports carry them as the place a
    /// restarted operator or a new leader resumes its watches from.
    pub fn written_all(&self, batch: &Batch) {
        if batch.complete {
            self.lock().clean.extend(batch.positions.iter().map(|(s, p)| (s.clone(), *p)));
        }
    }

    /// Puts back reports taken for a write that was not attempted.
    pub fn requeue(&self, uids: impl IntoIterator<Item = String>) {
        let mut inner = self.lock();
        for uid in uids {
            if let Some(t) = inner.pods.get_mut(&uid) {
                t.dirty = true;
                t.writing = false;
                // Not attempted: it may go in the next tick.
                t.not_before = None;
                t.restore_unwritten();
            }
        }
    }

    /// Records the outcome of a write. A failed write is retried after a back-off that
    /// doubles per failure; if the report was gone (deleted by hand, say), the next write
    /// creates it anew; if even the create finds nothing (the namespace is gone) the history
    /// of a gone pod is dropped, as there is nowhere to write it.
    pub fn written(&self, uid: &str, outcome: WriteOutcome, now: Instant) {
        let mut inner = self.lock();
        let Some(t) = inner.pods.get_mut(uid) else { return };
        t.writing = false;
        if outcome == WriteOutcome::Written {
            t.in_flight_since = None;
        } else {
            t.restore_unwritten();
        }
        let cap = match outcome {
            WriteOutcome::Written => {
                t.report_exists = true;
                t.failed_writes = 0;
                t.refusals = 0;
                t.retry_at = None;
                return;
            }
            WriteOutcome::Missing if t.report_exists => {
                t.report_exists = false;
                t.dirty = true;
                return;
            }
            WriteOutcome::Missing if t.gone => {
                inner.pods.remove(uid);
                self.metrics.tracked_pods.dec();
                return;
            }
            WriteOutcome::Missing | WriteOutcome::Refused => {
                t.refusals = t.refusals.saturating_add(1);
                if t.refusals == REFUSALS_BEFORE_STUCK {
                    tracing::error!(pod = %t.history.pod, namespace = %t.namespace, "report refused {REFUSALS_BEFORE_STUCK} times; still retrying, no longer holding back the resume position");
                }
                WRITE_RETRY_MAX
            }
            WriteOutcome::Unreachable => WRITE_RETRY_UNREACHABLE_MAX,
        };
        t.dirty = true;
        t.failed_writes = t.failed_writes.saturating_add(1);
        t.retry_at = Some(now + retry_delay(t.failed_writes, cap));
    }

    /// Records an owner chain the writer completed by lookups.
    pub fn set_owners(&self, uid: &str, owners: &Owners) {
        if let Some(t) = self.lock().pods.get_mut(uid)
            && t.history.owners.as_ref().is_none_or(|o| !o.complete)
        {
            t.history.set_owners(owners.clone());
        }
    }

    /// An owner lookup for pod `uid` failed for a passing reason: take its report again after
    /// [`OWNER_RETRY`] to try once more.
    pub fn retry_owners(&self, uid: &str, now: Instant) {
        if let Some(t) = self.lock().pods.get_mut(uid) {
            t.owners_retry_at = Some(now + OWNER_RETRY);
        }
    }

    /// The report of pod `uid` now carries its workload's labels.
    pub fn labelled(&self, uid: &str) {
        if let Some(t) = self.lock().pods.get_mut(uid) {
            t.labelled = true;
        }
    }

    /// Where the report of pod `uid` stands: experiments judge a pod on its report once all
    /// that was observed of it is written.
    pub fn report_state(&self, uid: &str) -> ReportState {
        match self.lock().pods.get(uid) {
            None => ReportState::Untracked,
            Some(t) if t.report_exists && !t.dirty && !t.writing => ReportState::Written,
            Some(_) => ReportState::Unwritten,
        }
    }

    /// When the pod's `condition` first turned True, as its history recorded it.
    pub fn first_true(&self, uid: &str, condition: &str) -> Option<Timestamp> {
        self.lock().pods.get(uid)?.history.first_true(condition)
    }

    /// Reports whose pod is gone and whose stored `deletedAt` is longer than the TTL ago. They
    /// stay tracked until [`Store::expired`] confirms each deletion, so a failed one is retried.
    pub fn take_expired(&self, now: Timestamp) -> Vec<(String, String)> {
        let ttl = jiff::SignedDuration::try_from(self.config.deleted_ttl).unwrap_or(jiff::SignedDuration::MAX);
        let inner = self.lock();
        inner
            .pods
            .iter()
            .filter(|(_, t)| t.gone && t.history.deleted_at.is_some_and(|d| now.duration_since(d) >= ttl))
            .map(|(u, t)| (u.clone(), t.namespace.clone()))
            .collect()
    }

    /// The expired report of `uid` was deleted (or was already gone).
    pub fn expired(&self, uid: &str) {
        if self.lock().pods.remove(uid).is_some() {
            self.metrics.tracked_pods.dec();
        }
    }
}

/// 1 s, 2 s, 4 s … up to `cap`.
fn retry_delay(failures: u32, cap: Duration) -> Duration {
    doubled(Duration::from_secs(1), failures.saturating_sub(1), cap)
}

/// `first` doubled `doublings` times, at most `cap`: the steps of a back-off.
pub fn doubled(first: Duration, doublings: u32, cap: Duration) -> Duration {
    first.saturating_mul(1 << doublings.min(16)).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use std::collections::BTreeMap;

    fn pod_in(ns: &str, uid: &str) -> Pod {
        serde_json::from_value(
            serde_json::json!({"metadata": {"name": format!("p-{uid}"), "namespace": ns, "uid": uid}, "status": {"phase": "Pending"}}),
        )
        .unwrap()
    }

    fn pod(uid: &str) -> Pod {
        pod_in("n", uid)
    }

    fn event(pod_uid: &str, uid: &str) -> EventSnapshot {
        let e: Event = serde_json::from_value(serde_json::json!({
            "metadata": {"name": uid, "namespace": "n", "uid": uid},
            "involvedObject": {"kind": "Pod", "uid": pod_uid, "fieldPath": "spec.containers{app}"},
            "reason": "Scheduled", "message": "m", "count": 1
        }))
        .unwrap();
        EventSnapshot::from_event(&e).unwrap()
    }

    /// A store without pacing (a zero write window), so that tests of other rules may take
    /// the same report twice at one instant; [`paced_store`] has the default window.
    fn store() -> Store {
        Store::new(OperatorConfig { write_window: Duration::ZERO, ..OperatorConfig::default() }, Arc::new(Metrics::new()))
    }

    fn paced_store() -> Store {
        Store::new(OperatorConfig::default(), Arc::new(Metrics::new()))
    }

    /// A StatefulSet's pod whose container ran `restarts` times, the last run ended `reason`.
    fn owned_pod(restarts: i32, reason: &str, version: u64) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db-0", "namespace": "n", "uid": "u", "resourceVersion": version.to_string(),
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": "s", "controller": true}]},
            "status": {"phase": "Running", "containerStatuses": [{"name": "app", "image": "i", "imageID": "", "ready": false,
                "restartCount": restarts,
                "state": {"running": {"startedAt": format!("2026-12-02T10:00:{:02}Z", restarts * 10)}},
                "lastState": if restarts > 0 { serde_json::json!({"terminated": {"exitCode": 137, "reason": reason,
                    "startedAt": format!("2026-12-02T10:00:{:02}Z", restarts * 10 - 10), "finishedAt": format!("2026-12-02T10:00:{:02}Z", restarts * 10 - 1)}}) } else { serde_json::json!({}) }
            }]}
        }))
        .unwrap()
    }

    #[test]
    fn restarts_and_terminations_are_counted_per_workload_once_and_only_live() {
        // Defects caught: counting a rebuilt history again after a restart of the operator;
        // counting a replayed status twice; labelling by pod (unbounded) instead of workload.
        let s = store();
        s.observe_pod(&owned_pod(0, "", 1), Source::Live, false);
        s.observe_pod(&owned_pod(1, "OOMKilled", 2), Source::Live, false);
        s.observe_pod(&owned_pod(1, "OOMKilled", 2), Source::Live, false);
        s.observe_pod(&owned_pod(3, "Error", 3), Source::Live, false);
        let text = s.metrics.encode();
        let labels = r#"namespace="n",workload_kind="StatefulSet",workload="db",container="app""#;
        assert!(text.contains(&format!("podlife_workload_restarts_total{{{labels}}} 3")), "{text}");
        assert!(text.contains(&format!(r#"podlife_workload_terminations_total{{{labels},reason="OOMKilled"}} 1"#)), "{text}");
        assert!(text.contains(&format!(r#"podlife_workload_terminations_total{{{labels},reason="Error"}} 1"#)), "{text}");
        assert!(!text.contains("db-0"), "no per-pod label");
        let rebuilt = store();
        rebuilt.observe_pod(&owned_pod(3, "Error", 3), Source::Rebuilt, false);
        assert!(!rebuilt.metrics.encode().contains("podlife_workload_restarts_total{"), "a rebuilt history counts nothing");
    }

    /// A store that has seen one pod of ReplicaSet web-7d (whose Deployment is not known yet).
    fn store_with_replicaset_pod() -> Store {
        let s = store();
        let mut rs = owned_pod(0, "", 1);
        rs.metadata.owner_references.as_mut().unwrap()[0] = serde_json::from_value(
            serde_json::json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d", "uid": "r", "controller": true}),
        )
        .unwrap();
        s.observe_pod(&rs, Source::Live, false);
        s
    }

    #[test]
    fn a_chain_whose_lookup_failed_is_taken_again_later_without_a_change() {
        // Defect caught: a stable pod whose ReplicaSet lookup timed out once was never
        // labelled, as nothing made its report dirty again.
        let s = store_with_replicaset_pod();
        let t0 = Instant::now();
        assert_eq!(s.take_dirty(t0).reports.len(), 1);
        s.retry_owners("u", t0);
        s.written("u", WriteOutcome::Written, t0);
        assert!(s.take_dirty(t0 + Duration::from_secs(1)).reports.is_empty(), "not before the retry time");
        assert_eq!(s.take_dirty(t0 + OWNER_RETRY).reports.len(), 1, "taken again for the lookup");
        assert!(s.take_dirty(t0 + OWNER_RETRY * 3).reports.is_empty(), "once per failure");
        assert_eq!(s.report_state("u"), ReportState::Unwritten, "its write is out");
        s.written("u", WriteOutcome::Written, t0);
        assert_eq!(s.report_state("u"), ReportState::Written, "a pending lookup does not hold experiments back");
        // After a restart, a stored incomplete chain is due at once.
        let stored = s.lock().pods["u"].history.clone();
        assert!(Tracked::new("n".into(), stored, true).owners_retry_at.is_some());
    }

    #[test]
    fn labels_are_due_once_the_chain_is_complete() {
        let s = store_with_replicaset_pod();
        let batch = s.take_dirty(Instant::now());
        let owners = batch.reports[0].history.owners.clone().unwrap();
        assert_eq!(owners.needs_lookup().map(|l| l.name.as_str()), Some("web-7d"));
        assert_eq!(batch.reports[0].history.summary.owner.as_deref(), Some("ReplicaSet/web-7d"), "the owner known so far");
        let mut complete = owners;
        complete.extend(crate::lifecycle::workload::Parent::Owner(crate::lifecycle::workload::OwnerLink {
            kind: "Deployment".into(),
            name: "web".into(),
            uid: "d".into(),
            api_version: "apps/v1".into(),
        }));
        s.set_owners("u", &complete);
        s.written("u", WriteOutcome::Written, Instant::now());
        let state = s.lock().pods["u"].history.summary.owner.clone();
        assert_eq!(state.as_deref(), Some("Deployment/web"));
        assert!(!s.lock().pods["u"].labelled, "labelled only when the writer says the labels went out");
        s.labelled("u");
        // A report read back after a restart with a complete chain needs no second label write.
        let stored = s.lock().pods["u"].history.clone();
        assert!(Tracked::new("n".into(), stored, true).labelled);
    }

    #[test]
    fn a_relist_of_one_namespace_leaves_the_other_namespaces_pods_alone() {
        // Defect: with --namespaces a,b each namespace's relist marked every pod it had not
        // listed as deleted, so b's live pods expired after the TTL (and came back empty).
        let store = store();
        store.observe_pod(&pod_in("a", "ua"), Source::Live, false);
        store.observe_pod(&pod_in("b", "ub"), Source::Live, false);
        store.mark_missing_as_gone(&Scope::Namespace("a".into()), &HashSet::from(["ua".to_string()]));
        let inner = store.lock();
        assert!(!inner.pods["ub"].gone && inner.pods["ub"].history.deleted_at.is_none(), "b's pod is alive");
        drop(inner);
        // A relist of b that lacks the pod does mark it.
        store.mark_missing_as_gone(&Scope::Namespace("b".into()), &HashSet::new());
        assert!(store.lock().pods["ub"].gone);
        assert!(!store.lock().pods["ua"].gone);
    }

    /// A history of `events` events with 400-byte messages.
    fn noisy_history(uid: &str, events: usize) -> PodHistory {
        let mut h = PodHistory::new("p", uid);
        for i in 0..events {
            let mut e = event(uid, &format!("{uid}-e{i}"));
            e.message = "m".repeat(400);
            e.resource_version = Some(i as u64 + 1);
            h.observe_event(&e);
        }
        h
    }

    /// Defect caught: the map of reports read at start keeping its slots once its pods have
    /// claimed them (16,384 slots at 10k pods, each a key, a namespace and a boxed history).
    #[test]
    fn claimed_stored_reports_give_their_room_back() {
        let store = store();
        let uids: Vec<String> = (0..1000).map(|i| format!("u{i}")).collect();
        store.add_stored(
            uids.iter()
                .map(|uid| (uid.clone(), StoredReport { namespace: "n".into(), history: PodHistory::new("p", uid).into(), bytes: 0 })),
        );
        let filled = store.lock().existing.capacity();
        assert!(filled >= 1000);
        for uid in &uids[..999] {
            store.observe_pod(&pod(uid), Source::Live, false);
        }
        let inner = store.lock();
        assert_eq!((inner.existing.len(), inner.pods.len()), (1, 999));
        assert!(inner.existing.capacity() <= 64, "room for {} stored reports kept (of {filled})", inner.existing.capacity());
    }

    /// Defects caught: reports that together outgrow the operator-wide budget (etcd's quota at
    /// 10k pods), quiet pods trimmed along with noisy ones, and a trimmed report that is not
    /// written again (etcd would keep the old size), or is rewritten every window.
    #[test]
    fn all_reports_together_stay_under_the_total_budget_and_only_the_largest_are_trimmed() {
        let config = OperatorConfig { total_budget_bytes: 48 * 1024, ..OperatorConfig::default() };
        let store = Store::new(config, Arc::new(Metrics::new()));
        let quiet: Vec<String> = (0..10).map(|i| format!("quiet-{i}")).collect();
        for uid in &quiet {
            store.observe_pod(&pod(uid), Source::Live, false);
        }
        let noisy = ["noisy-0", "noisy-1"];
        store.add_stored(noisy.map(|uid| {
            let history = noisy_history(uid, 40);
            let bytes = history.serialized_len() + REPORT_OVERHEAD_BYTES;
            (uid.to_string(), StoredReport { namespace: "n".into(), history: history.into(), bytes })
        }));
        for uid in noisy {
            store.observe_pod(&pod(uid), Source::Live, false);
        }
        let quiet_before: Vec<PodHistory> = quiet.iter().map(|u| store.lock().pods[u].history.as_ref().clone()).collect();
        let noisy_events = store.lock().pods["noisy-0"].history.events.len();
        let total_before: usize = store.lock().pods.values().map(|t| t.history.serialized_len() + REPORT_OVERHEAD_BYTES).sum();
        assert!(total_before > 48 * 1024, "the test starts over budget ({total_before} bytes)");

        let now = Instant::now();
        let batch = store.take_dirty(now);
        let total: usize = store.lock().pods.values().map(|t| t.history.serialized_len() + REPORT_OVERHEAD_BYTES).sum();
        assert!(total <= 48 * 1024, "{total} bytes in all after trimming");
        for (uid, before) in quiet.iter().zip(&quiet_before) {
            assert_eq!(store.lock().pods[uid].history.as_ref(), before, "{uid} is quiet and keeps everything");
        }
        for uid in noisy {
            let inner = store.lock();
            let t = &inner.pods[uid];
            assert!(t.history.events.len() < noisy_events && t.history.truncated.budget > 0, "{uid} was trimmed");
            assert_eq!(t.bytes, t.history.serialized_len() + REPORT_OVERHEAD_BYTES);
            drop(inner);
            assert!(batch.reports.iter().any(|r| r.uid == uid), "{uid} is written again at its new size");
        }
        for r in &batch.reports {
            store.written(&r.uid, WriteOutcome::Written, now);
        }
        // A little growth later, nothing is over budget: no report is trimmed or written again.
        store.observe_event_snapshot("quiet-0".into(), event("quiet-0", "late"), now);
        let batch = store.take_dirty(now + store.config.write_window);
        assert_eq!(batch.reports.iter().map(|r| r.uid.as_str()).collect::<Vec<_>>(), ["quiet-0"]);
    }

    #[test]
    fn stored_reports_are_adopted_as_gone_only_by_a_relist_of_their_namespace() {
        let store = store();
        let report = |ns: &str, uid: &str| {
            (uid.to_string(), StoredReport { namespace: ns.into(), history: PodHistory::new("p", uid).into(), bytes: 0 })
        };
        store.add_stored([report("a", "old-a"), report("b", "live-b")]);
        store.mark_missing_as_gone(&Scope::Namespace("a".into()), &HashSet::new());
        assert!(store.lock().pods["old-a"].gone);
        assert!(!store.lock().pods.contains_key("live-b"), "b's report waits for b's relist");
        store.observe_pod(&pod_in("b", "live-b"), Source::Rebuilt, false);
        assert!(store.lock().pods["live-b"].report_exists, "its history resumes from the report");
    }

    #[test]
    fn a_pod_taken_for_gone_and_seen_again_is_tracked_again() {
        let store = store();
        store.observe_pod(&pod("u"), Source::Live, false);
        store.mark_missing_as_gone(&Scope::Cluster, &HashSet::new());
        store.observe_pod(&pod("u"), Source::Live, false);
        let inner = store.lock();
        assert!(!inner.pods["u"].gone && inner.pods["u"].history.deleted_at.is_none());
    }

    #[test]
    fn the_deleted_ttl_counts_from_the_stored_deleted_at() {
        // Defect: the TTL counted from an in-memory Instant, so an operator restarting more
        // often than the TTL never expired a report.
        let config = OperatorConfig { deleted_ttl: Duration::from_secs(3600), ..OperatorConfig::default() };
        let store = Store::new(config, Arc::new(Metrics::new()));
        let mut history = PodHistory::new("p", "old");
        let deleted = Timestamp::now() - jiff::SignedDuration::from_secs(7200);
        history.deleted_at = Some(deleted);
        store.add_stored([("old".to_string(), StoredReport { namespace: "n".into(), history: history.into(), bytes: 0 })]);
        store.mark_missing_as_gone(&Scope::Cluster, &HashSet::new());
        // Just after a restart: already two hours past deletion, so it goes now; it stays
        // tracked until its deletion is confirmed.
        assert_eq!(store.take_expired(Timestamp::now()), [("old".to_string(), "n".to_string())]);
        assert_eq!(store.take_expired(Timestamp::now()).len(), 1, "a deletion that failed is tried again");
        store.expired("old");
        store.observe_pod(&pod("fresh"), Source::Live, true);
        assert!(store.take_expired(Timestamp::now()).is_empty(), "a pod deleted just now is kept");
        assert_eq!(store.take_expired(Timestamp::now() + jiff::SignedDuration::from_secs(3601)).len(), 1);
    }

    #[test]
    fn a_pod_still_terminating_is_not_expired() {
        // deletionTimestamp alone (graceful deletion, finalizers) is not gone.
        let store = Store::new(OperatorConfig { deleted_ttl: Duration::ZERO, ..OperatorConfig::default() }, Arc::new(Metrics::new()));
        let mut p = pod("u");
        p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()));
        store.observe_pod(&p, Source::Live, false);
        assert!(store.take_expired(Timestamp::now() + jiff::SignedDuration::from_secs(60)).is_empty());
    }

    #[test]
    fn events_of_untracked_pods_do_not_crowd_out_a_tracked_pods_early_events() {
        // Defect: the buffer held 10,000 events, oldest pod first out, so a burst of events
        // of untracked pods pushed out the early events of a pod about to be tracked.
        let store = store();
        let t0 = Instant::now();
        store.observe_event_snapshot("early".into(), event("early", "e0"), t0);
        for i in 0..20_000 {
            store.observe_event_snapshot(format!("other{}", i % 5000), event("x", &format!("x{i}")), t0 + Duration::from_millis(i));
        }
        store.observe_pod(&pod("early"), Source::Live, false);
        assert_eq!(store.lock().pods["early"].history.events.len(), 1, "kept");
        // Past their age, the untracked pods' events are dropped, and the buffer is empty.
        store.take_dirty(t0 + PENDING_EVENT_MAX_AGE + Duration::from_secs(21));
        let inner = store.lock();
        assert_eq!((inner.pending.len(), inner.pending_bytes), (0, 0));
    }

    #[test]
    fn the_pending_buffer_is_bounded_in_bytes() {
        let store = store();
        let t0 = Instant::now();
        let mut big = event("x", "big");
        big.message = "m".repeat(64 * 1024);
        for i in 0..400 {
            let mut e = big.clone();
            e.uid = format!("big{i}");
            store.observe_event_snapshot(format!("pod{i}"), e, t0);
        }
        let inner = store.lock();
        assert!(inner.pending_bytes <= PENDING_EVENT_MAX_BYTES, "{}", inner.pending_bytes);
        assert_eq!(inner.pending_bytes, inner.pending.values().map(|p| p.bytes).sum::<usize>());
        assert!(!inner.pending.contains_key("pod0"), "the longest-waiting went first");
    }

    #[test]
    fn failed_writes_back_off_and_a_success_resets() {
        // Defect: a failing write was retried every window, forever.
        let store = store();
        store.observe_pod(&pod("u"), Source::Live, false);
        let t0 = Instant::now();
        assert_eq!(store.take_dirty(t0).reports.len(), 1);
        let mut due = Vec::new();
        let mut now = t0;
        for _ in 0..6 {
            store.written("u", WriteOutcome::Refused, now);
            // Not due again within the window after the failure.
            assert!(store.take_dirty(now + Duration::from_millis(500)).reports.is_empty());
            let mut wait = Duration::from_millis(500);
            while store.take_dirty(now + wait).reports.is_empty() {
                wait += Duration::from_millis(500);
            }
            due.push(wait.as_secs_f64());
            now += wait;
        }
        assert_eq!(due, [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]);
        store.written("u", WriteOutcome::Written, now);
        store.observe_pod(&pod_in("n", "u"), Source::Live, true);
        assert_eq!(store.take_dirty(now).reports.len(), 1, "after a success, the next change goes at once");
        store.written("u", WriteOutcome::Unreachable, now);
        for _ in 0..5 {
            store.written("u", WriteOutcome::Unreachable, now);
        }
        assert_eq!(store.take_dirty(now + WRITE_RETRY_UNREACHABLE_MAX).reports.len(), 1, "an unreachable apiserver is retried within 4 s");
    }

    /// Takes what is due at `at`, checks it is `expected`, writes it all and ends the window;
    /// returns the clean position of the cluster scope.
    fn write_window_at(store: &Store, at: Instant, expected: &[&str]) -> Option<u64> {
        let batch = store.take_dirty(at);
        assert_eq!(batch.reports.iter().map(|r| r.uid.as_str()).collect::<Vec<_>>(), expected);
        for r in &batch.reports {
            store.written(&r.uid, WriteOutcome::Written, at);
        }
        store.written_all(&batch);
        store.clean_positions().get("").copied()
    }

    /// Defects caught: a pod written twice within one window (the write amplification the
    /// window exists to stop), and a quiet pod's change held for a whole window (the latency
    /// the pacing exists to cut).
    #[test]
    fn a_pod_is_written_at_most_once_a_window_and_a_quiet_one_at_once() {
        let store = paced_store();
        let window = store.config.write_window;
        let t0 = Instant::now();
        store.observe_pod(&versioned("n", "busy", 10), Source::Live, false);
        write_window_at(&store, t0, &["busy"]);
        store.observe_pod(&versioned("n", "busy", 11), Source::Live, false);
        store.observe_pod(&versioned("n", "quiet", 12), Source::Live, false);
        let soon = t0 + window / 4;
        let taken: Vec<String> = store.take_dirty(soon).reports.into_iter().map(|r| r.uid).collect();
        assert_eq!(taken, ["quiet"], "the quiet pod goes at the next tick, the busy one waits");
        assert!(store.take_dirty(t0 + window - Duration::from_millis(1)).reports.is_empty());
        let taken: Vec<String> = store.take_dirty(t0 + window).reports.into_iter().map(|r| r.uid).collect();
        assert_eq!(taken, ["busy"], "once its window has passed");
    }

    /// Defect caught: a term ending with a change still waiting for its window, handed over
    /// unwritten.
    #[test]
    fn a_terms_last_flush_takes_what_waits_for_its_window() {
        let store = paced_store();
        let t0 = Instant::now();
        store.observe_pod(&versioned("n", "a", 10), Source::Live, false);
        write_window_at(&store, t0, &["a"]);
        store.observe_pod(&versioned("n", "a", 11), Source::Live, false);
        assert!(store.take_dirty(t0).reports.is_empty());
        let batch = store.take_all_dirty(t0);
        assert_eq!(batch.reports.len(), 1);
        assert!(batch.complete);
    }

    /// Defect caught: a resume position past a change that waits for its window, so that an
    /// operator restarted then would skip it (and lose that status from the history).
    #[test]
    fn a_change_waiting_for_its_window_holds_the_resume_position_below_it() {
        let store = paced_store();
        let window = store.config.write_window;
        let t0 = Instant::now();
        store.observe_pod(&versioned("n", "a", 10), Source::Live, false);
        assert_eq!(write_window_at(&store, t0, &["a"]), Some(10));
        store.observe_pod(&versioned("n", "a", 21), Source::Live, false);
        store.observe_pod(&versioned("n", "a", 22), Source::Live, false);
        store.observe_pod(&versioned("n", "b", 30), Source::Live, false);
        assert_eq!(write_window_at(&store, t0 + window / 2, &["b"]), Some(20), "below a's first unwritten change (21), not at 30");
        // a's write is taken but fails: its changes are unwritten again and still hold it back.
        let batch = store.take_dirty(t0 + window);
        assert_eq!(batch.reports.len(), 1);
        store.written("a", WriteOutcome::Unreachable, t0 + window);
        store.observe_pod(&versioned("n", "c", 40), Source::Live, false);
        let later = t0 + window + window / 4;
        assert_eq!(write_window_at(&store, later, &["c"]), Some(20), "a's failed write left 21 unwritten");
        // a is written at last: the position moves to where the watch stands.
        assert_eq!(write_window_at(&store, later + WRITE_RETRY_UNREACHABLE_MAX + window, &["a"]), Some(40));
    }

    /// Defect caught: a report put back unattempted (a closed fence) waiting a whole window,
    /// or forgetting the changes it carried.
    #[test]
    fn a_report_put_back_unattempted_goes_at_the_next_tick_and_keeps_its_changes_unwritten() {
        let store = paced_store();
        let t0 = Instant::now();
        store.observe_pod(&versioned("n", "a", 10), Source::Live, false);
        let batch = store.take_dirty(t0);
        store.requeue(batch.reports.into_iter().map(|r| r.uid));
        assert_eq!(store.lock().pods["a"].unwritten_since, Some(10));
        assert_eq!(store.take_dirty(t0).reports.len(), 1, "not paced: it was never written");
    }

    /// A pod at `version`, its phase alternating so that every version is a change.
    fn versioned(ns: &str, uid: &str, version: u64) -> Pod {
        let mut p = pod_in(ns, uid);
        p.metadata.resource_version = Some(version.to_string());
        if let Some(status) = p.status.as_mut() {
            status.phase = Some(if version.is_multiple_of(2) { "Running" } else { "Pending" }.into());
        }
        p
    }

    #[test]
    fn the_resume_position_advances_only_past_changes_that_were_all_written() {
        let store = store();
        let t0 = Instant::now();
        store.add_stored([(
            "old".to_string(),
            StoredReport {
                namespace: "n".into(),
                history: PodHistory { watch_resume_from: Some(40), ..PodHistory::new("p", "old") }.into(),
                bytes: 0,
            },
        )]);
        assert_eq!(store.resume_point(&Scope::Cluster), Some(40), "from the stored reports");
        store.observe_pod(&versioned("n", "a", 50), Source::Live, false);
        store.observe_pod(&versioned("n", "b", 51), Source::Live, false);
        let batch = store.take_dirty(t0);
        assert_eq!(batch.reports.len(), 2);
        assert!(batch.reports.iter().all(|r| r.history.watch_resume_from == Some(40)), "carried until a window is complete");
        store.written("a", WriteOutcome::Written, t0);
        store.written("b", WriteOutcome::Refused, t0);
        // b failed: the window was not complete and the writer does not call written_all.
        store.observe_pod(&versioned("n", "a", 61), Source::Live, false);
        let batch = store.take_dirty(t0);
        assert_eq!(batch.reports.iter().map(|r| r.uid.as_str()).collect::<Vec<_>>(), ["a"], "b waits for its back-off");
        store.written("a", WriteOutcome::Written, t0);
        store.written_all(&batch);
        store.observe_pod(&versioned("n", "a", 72), Source::Live, false);
        let next = store.take_dirty(t0);
        assert_eq!(next.reports[0].history.watch_resume_from, Some(40), "b's unwritten change (51) still holds it back");
        // b is written at last: the next complete window moves the position to where it stood.
        let later = t0 + Duration::from_secs(2);
        let batch = store.take_dirty(later);
        assert_eq!(batch.reports.iter().map(|r| r.uid.as_str()).collect::<Vec<_>>(), ["b"]);
        store.written("b", WriteOutcome::Written, later);
        store.written_all(&batch);
        store.observe_pod(&versioned("n", "a", 83), Source::Live, false);
        assert_eq!(store.take_dirty(later).reports[0].history.watch_resume_from, Some(72));
        assert_eq!(store.resume_point(&Scope::Cluster), Some(83), "within a term, where the watch stands");
    }

    /// `stuck` refused [`REFUSALS_BEFORE_STUCK`] times, each retry a [`WRITE_RETRY_MAX`] apart,
    /// then a change of `other` at 20; returns the time of the last refusal plus that spacing.
    fn refuse_for_good(store: &Store) -> Instant {
        store.observe_pod(&versioned("n", "stuck", 10), Source::Live, false);
        let mut now = Instant::now();
        for _ in 0..REFUSALS_BEFORE_STUCK {
            assert_eq!(store.take_dirty(now).reports.len(), 1);
            store.written("stuck", WriteOutcome::Refused, now);
            now += WRITE_RETRY_MAX;
        }
        store.observe_pod(&versioned("n", "other", 20), Source::Live, false);
        now
    }

    #[test]
    fn a_report_refused_for_good_stops_holding_back_the_resume_position() {
        let store = store();
        let now = refuse_for_good(&store);
        let batch = store.take_dirty(now - WRITE_RETRY_MAX + Duration::from_secs(1));
        assert!(batch.complete, "refused {REFUSALS_BEFORE_STUCK} times: no longer holds the window back");
    }

    /// Defect caught: a report refused for good pulling the clean position back below its
    /// change for the window after each of its retries (pacing held it where the retry rule
    /// had let go), so that the published position went backwards.
    #[test]
    fn a_report_refused_for_good_does_not_pull_the_position_back_while_paced() {
        let store = paced_store();
        let now = refuse_for_good(&store);
        // The stuck report was just retried (and refused): it waits for both its back-off
        // and its window.
        assert_eq!(write_window_at(&store, now - WRITE_RETRY_MAX + Duration::from_millis(250), &["other"]), Some(20));
    }

    /// Defect caught: a change observed while its pod's write is in flight counted as written
    /// by that write, or a refused or missing write forgetting its changes.
    #[test]
    fn changes_behind_a_write_in_flight_or_a_failed_one_hold_the_position() {
        for outcome in [WriteOutcome::Written, WriteOutcome::Refused, WriteOutcome::Missing] {
            let store = paced_store();
            let t0 = Instant::now();
            store.observe_pod(&versioned("n", "a", 10), Source::Live, false);
            store.take_dirty(t0);
            store.observe_pod(&versioned("n", "a", 11), Source::Live, false);
            store.written("a", outcome, t0);
            store.observe_pod(&versioned("n", "b", 20), Source::Live, false);
            let held = if outcome == WriteOutcome::Written { 10 } else { 9 };
            assert_eq!(write_window_at(&store, t0 + Duration::from_millis(250), &["b"]), Some(held), "{outcome:?}");
        }
    }

    #[test]
    fn a_report_whose_namespace_is_gone_is_not_rewritten_every_window() {
        // A 404 on create: for a gone pod there is nowhere to write; for a live one, back off.
        let store = store();
        let now = Instant::now();
        store.observe_pod(&pod("gone"), Source::Live, true);
        store.observe_pod(&pod("live"), Source::Live, false);
        store.take_dirty(now);
        store.written("gone", WriteOutcome::Missing, now);
        store.written("live", WriteOutcome::Missing, now);
        assert!(!store.lock().pods.contains_key("gone"));
        assert!(store.take_dirty(now + Duration::from_millis(500)).reports.is_empty(), "the live one backs off");
    }

    #[test]
    fn unreadable_reports_are_refused_with_a_reason() {
        let ok = serde_json::json!({"apiVersion": "podlife.io/v1alpha1", "kind": "PodLifecycle",
            "metadata": {"name": "u", "namespace": "n"}, "spec": {"podName": "p", "podUid": "u"}});
        let (uid, stored) = parse_report(ok).unwrap();
        assert_eq!((uid.as_str(), stored.namespace.as_str()), ("u", "n"));
        let old_schema = serde_json::json!({"apiVersion": "podlife.io/v1alpha1", "kind": "PodLifecycle",
            "metadata": {"name": "u", "namespace": "n"}, "spec": {"podName": "p", "podUid": "u"},
            "status": {"pod": "p", "uid": "u", "phases": "Running"}});
        assert!(parse_report(old_schema).unwrap_err().contains("invalid type"));
        let no_uid = serde_json::json!({"apiVersion": "podlife.io/v1alpha1", "kind": "PodLifecycle",
            "metadata": {"name": "u", "namespace": "n"}, "spec": {"podName": "p", "podUid": ""}});
        assert_eq!(parse_report(no_uid).unwrap_err(), "spec.podUid is empty");
    }

    #[test]
    fn a_sharded_term_keeps_only_its_pods_and_resumes_from_its_oldest_shard() {
        // Defects this catches: a replica keeping (and writing) pods of shards held elsewhere;
        // and resuming from the newest report of any shard, which skips what a dead replica's
        // shard saw after its last write while a live replica's shard kept writing.
        let uids: Vec<String> = (0..200).map(|i| format!("uid-{i}")).collect();
        let in_shard = |k: u32| uids.iter().filter(move |u| super::super::shards::shard_of(u, 4) == k).cloned();
        let (dead_ones, live_ones, elsewhere) = (in_shard(0).next().unwrap(), in_shard(1).next().unwrap(), in_shard(2).next().unwrap());
        let open = Arc::new(super::super::leader::Fence::new(Duration::from_secs(10)));
        open.renewed(Instant::now());
        let ownership = Ownership::new(4, [(0, Arc::clone(&open)), (1, Arc::clone(&open))].into_iter().collect(), BTreeMap::new());
        let store = store().with_ownership(Arc::new(ownership));
        let stored = |uid: &str, at: u64| {
            let history = PodHistory { watch_resume_from: Some(at), ..PodHistory::new("p", uid) };
            (uid.to_string(), StoredReport { namespace: "n".into(), history: history.into(), bytes: 0 })
        };
        store.add_stored([stored(&dead_ones, 40), stored(&live_ones, 90), stored(&elsewhere, 10)]);
        assert_eq!(store.stored_unmatched(), 2, "another shard's report is not kept");
        assert_eq!(store.resume_point(&Scope::Cluster), Some(40), "from the shard that stopped writing first");
        // A namespace none of this term's reports is in (chaos 08:43: a pod created there
        // between two terms lost its first states to a plain list).
        assert_eq!(store.resume_point(&Scope::Namespace("b".into())), Some(40), "from the oldest known position");
        store.observe_pod(&versioned("n", &elsewhere, 95), Source::Live, false);
        store.observe_pod(&versioned("n", &live_ones, 96), Source::Live, false);
        let written: Vec<String> = store.take_dirty(Instant::now()).reports.into_iter().map(|r| r.uid).collect();
        assert_eq!(written, [live_ones], "only this term's pods are written");
    }

    #[test]
    fn a_shard_lease_position_counts_even_without_reports_and_others_pods_move_the_position() {
        // Defects this catches: a shard with no reports left out of the minimum (a pod created
        // and deleted there before its holder died would be skipped); a quiet shard's old
        // report position dragging the resume point past the watch history; and positions that
        // only owned pods move, so a quiet shard's Lease would carry an old one forever.
        let uids: Vec<String> = (0..200).map(|i| format!("uid-{i}")).collect();
        let in_shard = |k: u32| uids.iter().find(|u| super::super::shards::shard_of(u, 4) == k).cloned().unwrap();
        let (quiet, elsewhere) = (in_shard(0), in_shard(2));
        let open = Arc::new(super::super::leader::Fence::new(Duration::from_secs(10)));
        open.renewed(Instant::now());
        let mut resume = BTreeMap::new();
        resume.insert(0, [(String::new(), 70_u64)].into_iter().collect());
        resume.insert(1, [(String::new(), 55_u64)].into_iter().collect());
        let ownership = Ownership::new(4, [(0, Arc::clone(&open)), (1, Arc::clone(&open))].into_iter().collect(), resume);
        let store = store().with_ownership(Arc::new(ownership));
        let history = PodHistory { watch_resume_from: Some(20), ..PodHistory::new("p", &quiet) };
        store.add_stored([(quiet.clone(), StoredReport { namespace: "n".into(), history: history.into(), bytes: 0 })]);
        assert_eq!(
            store.resume_point(&Scope::Cluster),
            Some(55),
            "shard 1 has no report, only its Lease's 55; shard 0's Lease (70) is newer than its report (20)"
        );
        store.observe_pod(&versioned("n", &elsewhere, 99), Source::Live, false);
        let batch = store.take_dirty(Instant::now());
        assert!(batch.reports.is_empty(), "nothing of ours changed");
        store.written_all(&batch);
        assert_eq!(store.clean_positions().get(""), Some(&99), "another shard's change moved the position on");
    }
}
