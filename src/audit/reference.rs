//! The reference: what an independent watcher saw of each pod, built straight from the raw
//! Pod and Event objects, not through the lifecycle model (sharing its code would let one
//! bug hide in both).

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, ContainerStatus, Event, Pod};

/// One run of one container, as the kubelet reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The restart count this run had (0 = first run), when a status showed it running or
    /// terminated with its own restart count.
    pub number: Option<i32>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub exit_code: Option<i32>,
    /// When the reference first learned of this run.
    pub seen_at: Timestamp,
}

/// A state of one container: waiting (reason), running (start) or terminated (start, end).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StateKey {
    pub kind: u8,
    pub reason: Option<String>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub restart_count: i32,
}

#[derive(Debug, Clone, Default)]
pub struct ContainerReference {
    /// Runs by container id.
    pub runs: BTreeMap<String, Run>,
    /// Each distinct state, with when it was first seen.
    pub states: Vec<(StateKey, Timestamp)>,
    /// Ready values as they changed, with when (the initial `false` of a new container is not
    /// a change).
    pub ready: Vec<(bool, Timestamp)>,
    pub started: Vec<(bool, Timestamp)>,
    pub restart_count: i32,
}

/// A condition as it changed: type, status, reason, message and its lastTransitionTime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionChange {
    pub type_: String,
    pub status: String,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub last_transition: Option<Timestamp>,
    pub seen_at: Timestamp,
}

#[derive(Debug, Clone)]
pub struct EventReference {
    pub reason: String,
    pub message: String,
    pub count: u32,
    pub seen_at: Timestamp,
}

/// Everything the reference saw of one pod.
#[derive(Debug, Clone, Default)]
pub struct PodReference {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub phases: Vec<(String, Timestamp)>,
    pub conditions: Vec<ConditionChange>,
    pub containers: BTreeMap<String, ContainerReference>,
    pub events: BTreeMap<String, EventReference>,
    /// The newest Pod resourceVersion seen.
    pub resource_version: u64,
    pub deleted_at: Option<Timestamp>,
}

fn ts(t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> Option<Timestamp> {
    t.map(|t| t.0)
}

fn state_key(c: &ContainerStatus) -> Option<StateKey> {
    let s = c.state.as_ref()?;
    let rc = c.restart_count;
    if let Some(w) = &s.waiting {
        return Some(StateKey { kind: 0, reason: w.reason.clone(), started_at: None, finished_at: None, restart_count: rc });
    }
    if let Some(r) = &s.running {
        return Some(StateKey { kind: 1, reason: None, started_at: ts(r.started_at.as_ref()), finished_at: None, restart_count: rc });
    }
    s.terminated.as_ref().map(|t| StateKey {
        kind: 2,
        reason: t.reason.clone(),
        started_at: ts(t.started_at.as_ref()),
        finished_at: ts(t.finished_at.as_ref()),
        restart_count: rc,
    })
}

fn push_change<T: PartialEq + Clone>(list: &mut Vec<(T, Timestamp)>, value: T, at: Timestamp) {
    if list.last().map(|(v, _)| v) != Some(&value) {
        list.push((value, at));
    }
}

impl ContainerReference {
    fn run(&mut self, id: &str, seen_at: Timestamp) -> &mut Run {
        self.runs.entry(id.to_string()).or_insert(Run { number: None, started_at: None, finished_at: None, exit_code: None, seen_at })
    }

    fn terminated(&mut self, t: &ContainerStateTerminated, number: Option<i32>, seen_at: Timestamp) {
        let Some(id) = t.container_id.as_deref().filter(|i| !i.is_empty()) else { return };
        let run = self.run(id, seen_at);
        run.started_at = run.started_at.or(ts(t.started_at.as_ref()));
        run.finished_at = ts(t.finished_at.as_ref()).or(run.finished_at);
        run.exit_code = Some(t.exit_code);
        run.number = run.number.or(number);
    }

    fn observe(&mut self, c: &ContainerStatus, at: Timestamp) {
        self.restart_count = self.restart_count.max(c.restart_count);
        if let Some(key) = state_key(c)
            && !self.states.iter().any(|(k, _)| *k == key)
        {
            self.states.push((key, at));
        }
        let current = c.container_id.as_deref().filter(|i| !i.is_empty());
        if let Some(s) = &c.state {
            if let (Some(r), Some(id)) = (&s.running, current) {
                let run = self.run(id, at);
                run.number = Some(c.restart_count);
                run.started_at = run.started_at.or(ts(r.started_at.as_ref()));
            }
            if let Some(t) = &s.terminated {
                self.terminated(t, Some(c.restart_count), at);
            }
        }
        if let Some(t) = c.last_state.as_ref().and_then(|l| l.terminated.as_ref()) {
            // lastState is the newest run when it carries the current container id (a back-off
            // waiting state), otherwise the one before it.
            let same = current.is_some() && t.container_id.as_deref() == current;
            let number = if same { c.restart_count } else { c.restart_count - 1 };
            self.terminated(t, Some(number), at);
        }
        if self.ready.last().map(|(v, _)| *v) != Some(c.ready) && (c.ready || !self.ready.is_empty()) {
            push_change(&mut self.ready, c.ready, at);
        }
        if let Some(started) = c.started
            && self.started.last().map(|(v, _)| *v) != Some(started)
            && (started || !self.started.is_empty())
        {
            push_change(&mut self.started, started, at);
        }
    }

    /// The gap before restart `number`: the previous run's finish to this run's start.
    #[must_use]
    pub fn restart_gap(&self, number: i32) -> Option<(Timestamp, Timestamp)> {
        let by_number = |n: i32| self.runs.values().find(|r| r.number == Some(n));
        let started = by_number(number)?.started_at?;
        let finished = by_number(number - 1)?.finished_at?;
        Some((finished, started))
    }
}

/// Every pod the reference saw, by UID.
#[derive(Debug, Default)]
pub struct Reference {
    pub pods: BTreeMap<String, PodReference>,
    /// Events seen before their pod, by pod UID.
    orphan_events: BTreeMap<String, Vec<(String, EventReference)>>,
}

impl Reference {
    /// One Pod object as the reference's watch delivered it at `at`.
    pub fn observe_pod(&mut self, pod: &Pod, at: Timestamp, deleted: bool) {
        let Some(uid) = pod.metadata.uid.clone() else { return };
        let p = self.pods.entry(uid.clone()).or_insert_with(|| PodReference {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: uid.clone(),
            ..PodReference::default()
        });
        if let Some(early) = self.orphan_events.remove(&uid) {
            p.events.extend(early);
        }
        let version = pod.metadata.resource_version.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0);
        if version != 0 && version <= p.resource_version {
            return; // a relist repeating what was seen
        }
        p.resource_version = version;
        if deleted {
            p.deleted_at.get_or_insert(at);
        }
        let Some(status) = &pod.status else { return };
        push_change(&mut p.phases, status.phase.clone().unwrap_or_else(|| "Unknown".into()), at);
        for c in status.conditions.iter().flatten() {
            let last = p.conditions.iter().rev().find(|x| x.type_ == c.type_);
            if last.is_none_or(|l| l.status != c.status || l.reason != c.reason || l.message != c.message) {
                p.conditions.push(ConditionChange {
                    type_: c.type_.clone(),
                    status: c.status.clone(),
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                    last_transition: ts(c.last_transition_time.as_ref()),
                    seen_at: at,
                });
            }
        }
        let all = status.init_container_statuses.iter().flatten().chain(status.container_statuses.iter().flatten());
        for c in all {
            p.containers.entry(c.name.clone()).or_default().observe(c, at);
        }
    }

    /// One Event about a pod.
    pub fn observe_event(&mut self, e: &Event, at: Timestamp) {
        let (Some(pod_uid), Some(uid)) = (e.involved_object.uid.clone(), e.metadata.uid.clone()) else { return };
        let count = e.series.as_ref().and_then(|s| s.count).or(e.count).and_then(|c| u32::try_from(c).ok()).unwrap_or(1).max(1);
        let record = EventReference {
            reason: e.reason.clone().unwrap_or_default(),
            message: e.message.clone().unwrap_or_default(),
            count,
            seen_at: at,
        };
        match self.pods.get_mut(&pod_uid) {
            Some(p) => {
                let entry = p.events.entry(uid).or_insert_with(|| record.clone());
                entry.count = entry.count.max(count);
            }
            None => self.orphan_events.entry(pod_uid).or_default().push((uid, record)),
        }
    }
}
