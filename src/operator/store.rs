//! The operator's in-memory state: one trimmed history per tracked pod, and which of them
//! have changes still to write. Never whole Pod objects.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::ListParams;
use kube::{Api, Client};

use super::{Metrics, OperatorConfig, Result, kube_err};
use crate::crd::PodLifecycle;
use crate::lifecycle::{Change, EventSnapshot, PodHistory, PodSnapshot, Source};

/// How a report write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Written,
    /// The report object did not exist (404).
    Missing,
    Failed,
}

/// Events that arrive before their pod is seen wait here (bounded; oldest dropped first).
const PENDING_EVENTS_CAP: usize = 10_000;

#[derive(Debug)]
pub struct Tracked {
    pub namespace: String,
    pub history: PodHistory,
    pub dirty: bool,
    /// False until the report object exists (its spec is applied once, then only status).
    pub report_exists: bool,
    pub deleted: Option<Instant>,
}

#[derive(Debug, Default)]
struct Inner {
    pods: HashMap<String, Tracked>,
    /// Reports found at start, by pod UID, not yet matched to a pod.
    existing: HashMap<String, PodLifecycle>,
    /// Events of pods not seen yet, by pod UID; `pending_order` bounds them, oldest pod first.
    pending_events: HashMap<String, Vec<EventSnapshot>>,
    pending_order: VecDeque<String>,
    pending_count: usize,
}

#[derive(Debug)]
pub struct Store {
    pub config: OperatorConfig,
    pub metrics: Arc<Metrics>,
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
    }
}

impl Store {
    pub fn new(config: OperatorConfig, metrics: Arc<Metrics>) -> Self {
        Store { config, metrics, inner: Mutex::new(Inner::default()) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        crate::lock(&self.inner)
    }

    /// Lists existing reports so histories resume instead of starting over.
    /// Only reports within this operator's selection are loaded: another namespace's reports
    /// belong to another operator, and adopting them would expire them.
    pub async fn load_reports(&self, client: &Client) -> Result<()> {
        let apis: Vec<Api<PodLifecycle>> = match &self.config.selection {
            super::Selection::Namespaces(nss) => nss.iter().map(|ns| Api::namespaced(client.clone(), ns)).collect(),
            _ => vec![Api::all(client.clone())],
        };
        let mut reports = Vec::new();
        for api in apis {
            reports.extend(api.list(&ListParams::default()).await.map_err(kube_err("list PodLifecycle reports"))?.items);
        }
        let mut inner = self.lock();
        for report in reports {
            inner.existing.insert(report.spec.pod_uid.clone(), report);
        }
        tracing::info!(reports = inner.existing.len(), "loaded existing reports");
        Ok(())
    }

    /// Feeds one pod observation to its history.
    pub fn observe_pod(&self, pod: &Pod, source: Source, deleted: bool) {
        let snap = PodSnapshot::from_pod(pod);
        if snap.uid.is_empty() {
            return;
        }
        let now = Timestamp::now();
        let mut inner = self.lock();
        let inner = &mut *inner;
        let tracked = inner.pods.entry(snap.uid.clone()).or_insert_with(|| {
            let (history, report_exists) = match inner.existing.remove(&snap.uid) {
                Some(report) => (report.status.unwrap_or_else(|| PodHistory::new(&snap.name, &snap.uid)), true),
                None => (PodHistory::new(&snap.name, &snap.uid), false),
            };
            self.metrics.tracked_pods.inc();
            Tracked { namespace: snap.namespace.clone(), history, dirty: !report_exists, report_exists, deleted: None }
        });
        let changes = tracked.history.observe(&snap, now, source, &self.config.profile);
        for c in &changes {
            self.metrics.transition(change_label(*c), source);
            if *c == Change::Restart
                && let Some(r) = tracked.history.containers.iter().filter_map(|c| c.restarts.back()).max_by_key(|r| r.started_at)
                && let Some(m) = r.measured_seconds
            {
                self.metrics.restart_delay.observe(m);
            }
        }
        if deleted && tracked.deleted.is_none() {
            tracked.deleted = Some(Instant::now());
            if tracked.history.deleted_at.is_none() {
                tracked.history.deleted_at = Some(now);
            }
            tracked.dirty = true;
        }
        tracked.dirty |= !changes.is_empty();
        // Events that came before the pod: one lookup, not a scan.
        let uid = snap.uid.clone();
        if let Some(early) = inner.pending_events.remove(&uid) {
            inner.pending_count -= early.len();
            inner.pending_order.retain(|u| *u != uid);
            if let Some(tracked) = inner.pods.get_mut(&uid) {
                for e in early {
                    if let Some(c) = tracked.history.observe_event(&e) {
                        self.metrics.transition(change_label(c), Source::Live);
                        tracked.dirty = true;
                    }
                }
            }
        }
    }

    /// Feeds one event (ADDED or a count update) to its pod's history.
    pub fn observe_event(&self, event: &Event) {
        let Some(uid) = event.involved_object.uid.clone() else { return };
        let Some(snap) = EventSnapshot::from_event(event) else { return };
        let mut inner = self.lock();
        match inner.pods.get_mut(&uid) {
            Some(tracked) => {
                if let Some(c) = tracked.history.observe_event(&snap) {
                    self.metrics.transition(change_label(c), Source::Live);
                    tracked.dirty = true;
                }
            }
            None => {
                // Bounded: past the cap, the pod waited on longest loses its early events.
                while inner.pending_count >= PENDING_EVENTS_CAP {
                    let Some(oldest) = inner.pending_order.pop_front() else { break };
                    inner.pending_count -= inner.pending_events.remove(&oldest).map_or(0, |v| v.len());
                }
                if !inner.pending_events.contains_key(&uid) {
                    inner.pending_order.push_back(uid.clone());
                }
                inner.pending_events.entry(uid).or_default().push(snap);
                inner.pending_count += 1;
            }
        }
    }

    /// After a (re)list: tracked pods the list did not contain were deleted while unwatched.
    pub fn mark_missing_as_deleted(&self, seen: &HashSet<String>) {
        let now = Timestamp::now();
        let mut inner = self.lock();
        for (uid, tracked) in &mut inner.pods {
            if !seen.contains(uid) && tracked.deleted.is_none() {
                tracked.deleted = Some(Instant::now());
                tracked.history.deleted_at.get_or_insert(now);
                tracked.dirty = true;
            }
        }
        // Reports of pods that vanished while the operator was away: adopt them as deleted,
        // so they too expire after the TTL.
        let orphans: Vec<(String, PodLifecycle)> = inner.existing.drain().filter(|(uid, _)| !seen.contains(uid)).collect();
        for (uid, report) in orphans {
            let mut history = report.status.unwrap_or_else(|| PodHistory::new(&report.spec.pod_name, &uid));
            history.deleted_at.get_or_insert(now);
            let namespace = report.metadata.namespace.clone().unwrap_or_default();
            inner.pods.insert(uid, Tracked { namespace, history, dirty: true, report_exists: true, deleted: Some(Instant::now()) });
        }
    }

    /// Takes the changed histories to write, clearing their dirty marks.
    pub fn take_dirty(&self) -> Vec<(String, String, bool, PodHistory)> {
        let mut inner = self.lock();
        let mut out = Vec::new();
        for (uid, t) in &mut inner.pods {
            if t.dirty {
                t.dirty = false;
                t.history.enforce_budget(self.config.budget_bytes);
                out.push((uid.clone(), t.namespace.clone(), t.report_exists, t.history.clone()));
            }
        }
        // Sampled here, once per window, rather than recounted on every event (O(pods)).
        self.metrics.queue_depth.set(i64::try_from(out.len()).unwrap_or(i64::MAX));
        out
    }

    /// Records the outcome of a write: on failure the pod is marked dirty again, and if the
    /// report was gone (deleted by hand, say), the next write creates it anew.
    pub fn written(&self, uid: &str, outcome: WriteOutcome) {
        let mut inner = self.lock();
        if let Some(t) = inner.pods.get_mut(uid) {
            match outcome {
                WriteOutcome::Written => t.report_exists = true,
                WriteOutcome::Missing => {
                    t.report_exists = false;
                    t.dirty = true;
                }
                WriteOutcome::Failed => t.dirty = true,
            }
        }
    }

    /// Reports whose pod was deleted longer than the TTL ago.
    pub fn take_expired(&self) -> Vec<(String, String)> {
        let ttl = self.config.deleted_ttl;
        let mut inner = self.lock();
        let expired: Vec<String> =
            inner.pods.iter().filter(|(_, t)| t.deleted.is_some_and(|d| d.elapsed() >= ttl)).map(|(u, _)| u.clone()).collect();
        expired
            .iter()
            .filter_map(|uid| {
                let t = inner.pods.remove(uid)?;
                self.metrics.tracked_pods.dec();
                Some((uid.clone(), t.namespace))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str) -> Pod {
        serde_json::from_value(
            serde_json::json!({"metadata": {"name": format!("p-{uid}"), "namespace": "n", "uid": uid}, "status": {"phase": "Pending"}}),
        )
        .unwrap()
    }

    fn event(pod_uid: &str, uid: &str) -> Event {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": uid, "namespace": "n", "uid": uid},
            "involvedObject": {"kind": "Pod", "uid": pod_uid, "fieldPath": "spec.containers{app}"},
            "reason": "Scheduled", "message": "m", "count": 1
        }))
        .unwrap()
    }

    #[test]
    fn events_before_their_pod_are_kept_bounded_and_applied_when_it_appears() {
        let store = Store::new(OperatorConfig::default(), Arc::new(Metrics::new()));
        store.observe_event(&event("early", "e0"));
        // Flood with events of pods that never show up: the oldest pod's events go first.
        for i in 0..PENDING_EVENTS_CAP {
            store.observe_event(&event(&format!("other{}", i % 100), &format!("x{i}")));
        }
        store.observe_event(&event("late", "e1"));
        store.observe_pod(&pod("early"), Source::Live, false);
        store.observe_pod(&pod("late"), Source::Live, false);
        let inner = store.lock();
        assert!(inner.pods["early"].history.events.is_empty(), "evicted by the cap");
        assert_eq!(inner.pods["late"].history.events.len(), 1);
        assert!(inner.pending_count <= PENDING_EVENTS_CAP);
        assert_eq!(inner.pending_count, inner.pending_events.values().map(Vec::len).sum::<usize>());
        assert_eq!(inner.pending_order.len(), inner.pending_events.len());
    }
}
