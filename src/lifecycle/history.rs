//! A pod's history: what [`PodHistory::observe`] and [`PodHistory::observe_event`] build from
//! a stream of snapshots. This is the `status` of a `PodLifecycle` report.
//!
//! # Guarantees
//! - Observing the same snapshot or event twice changes nothing (no duplicate entries), so a
//!   rebuild after an operator restart or a watch expiry can replay freely.
//! - No input panics.
//! - Every list is bounded; what is dropped is counted in [`Truncation`], and
//!   [`PodHistory::enforce_budget`] keeps the serialized size under a byte budget.

use std::collections::VecDeque;

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::backoff::{BackoffProfile, parse_announced};
use super::snapshot::{ContainerKind, ContainerSnapshot, ContainerState, EventSnapshot, Phase, PodSnapshot, Termination};
use super::workload::Owners;

/// Ring capacities: enough for a long crash loop's recent past, small enough for 10k pods.
pub const MAX_PHASES: usize = 32;
pub const MAX_CONDITIONS: usize = 128;
pub const MAX_STATES: usize = 64;
pub const MAX_FLIPS: usize = 64;
pub const MAX_TERMINATIONS: usize = 64;
pub const MAX_RESTARTS: usize = 64;
pub const MAX_EVENTS: usize = 64;
pub const MAX_PROBE_KILLS: usize = 32;
/// The report's default byte budget: far below etcd's 1.5 MiB object limit.
pub const DEFAULT_BUDGET_BYTES: usize = 256 * 1024;

/// How an entry was learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
pub enum Source {
    /// Seen as it happened, from a watch event.
    #[default]
    Live,
    /// Reconstructed from status timestamps after a gap (operator restart, watch expiry).
    Rebuilt,
}

fn is_live(s: &Source) -> bool {
    *s == Source::Live
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PhaseTransition {
    pub phase: Phase,
    pub at: Timestamp,
    #[serde(default, skip_serializing_if = "is_live")]
    pub source: Source,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConditionTransition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub at: Timestamp,
    #[serde(default, skip_serializing_if = "is_live")]
    pub source: Source,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StateTransition {
    #[serde(flatten)]
    pub state: ContainerState,
    /// When the state began: startedAt, finishedAt, or when it was first observed.
    pub at: Timestamp,
    pub restart_count: i32,
    #[serde(default, skip_serializing_if = "is_live")]
    pub source: Source,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Flip {
    pub value: bool,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TerminationRecord {
    /// The restart count of the run that ended (0 for the first run).
    pub run: i32,
    #[serde(flatten)]
    pub termination: Termination,
    #[serde(default, skip_serializing_if = "is_live")]
    pub source: Source,
}

/// One restart, with the delay the kubelet applied and the one its curve predicts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Restart {
    /// The restart count after this restart (1 for the first).
    pub number: i32,
    /// Position in the current back-off sequence (1 = immediate), after resets.
    pub backoff_step: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_finished_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// previous run's finishedAt → this run's startedAt (1 s resolution, from the kubelet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_seconds: Option<f64>,
    /// What the kubelet announced in `waiting.message` before this restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announced_seconds: Option<f64>,
    pub expected_seconds: f64,
    /// Announced as the curve says (if seen) and measured within [expected - 1 s, expected +
    /// the step's slack] (see `BackoffProfile::judge`); `None` if not measurable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fits_curve: Option<bool>,
    /// Restarts that happened between two observations and could not be measured.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unobserved_before: i32,
    #[serde(default, skip_serializing_if = "is_live")]
    pub source: Source,
}

impl Restart {
    /// The delay from the previous run's finishedAt to this run's startedAt, judged against the
    /// curve; a restart that followed unobserved ones is measured but not judged.
    fn measure(&mut self, previous_finished_at: Option<Timestamp>, profile: &BackoffProfile) {
        self.previous_finished_at = previous_finished_at;
        self.measured_seconds = seconds_between(previous_finished_at, self.started_at);
        self.fits_curve = if self.unobserved_before > 0 {
            None
        } else {
            self.measured_seconds.map(|m| profile.fits(self.backoff_step, self.expected_seconds, self.announced_seconds, m))
        };
    }
}

impl Restart {
    /// Measures and judges this restart again from its recorded times and announcement: for a
    /// history whose raw observations were changed (the harness's kubelet mutations).
    pub fn rejudge(&mut self, profile: &BackoffProfile) {
        self.measure(self.previous_finished_at, profile);
    }
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// The kubelet's back-off as it stands now: `none` (not crash looping) or `waiting` (in
/// CrashLoopBackOff, with the announced back-off and the earliest time of the next restart:
/// the last exit plus the announced back-off).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase", tag = "state")]
pub enum BackoffState {
    #[default]
    None,
    Waiting {
        announced_seconds: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next_restart_after: Option<Timestamp>,
    },
}

/// The schema of [`BackoffState`] as serde writes it (structural, unlike a tagged enum's).
#[derive(JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // Only its schema is used.
struct BackoffStateSchema {
    state: BackoffKind,
    announced_seconds: Option<f64>,
    next_restart_after: Option<Timestamp>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // Only its schema is used.
enum BackoffKind {
    None,
    Waiting,
}

impl JsonSchema for BackoffState {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "BackoffState".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        BackoffStateSchema::json_schema(generator)
    }
}

/// A probe failure that killed a container, linked to what followed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeKill {
    /// liveness or startup.
    pub probe: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub killing_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminated_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarted_as: Option<i32>,
}

/// Identical CrashLoop cycles (same exit code and reason), folded into a counter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CrashLoopFold {
    pub exit_code: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub cycles: u64,
    pub first_at: Timestamp,
    pub last_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct Truncation {
    pub phases: u64,
    pub conditions: u64,
    pub states: u64,
    pub flips: u64,
    pub terminations: u64,
    pub restarts: u64,
    pub events: u64,
    pub probe_kills: u64,
    /// Entries dropped to stay under the byte budget.
    pub budget: u64,
}

impl Truncation {
    #[must_use]
    pub fn total(&self) -> u64 {
        self.phases
            + self.conditions
            + self.states
            + self.flips
            + self.terminations
            + self.restarts
            + self.events
            + self.probe_kills
            + self.budget
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerHistory {
    pub name: String,
    pub kind: ContainerKind,
    pub restart_count: i32,
    pub states: VecDeque<StateTransition>,
    pub ready: VecDeque<Flip>,
    pub started: VecDeque<Flip>,
    pub terminations: VecDeque<TerminationRecord>,
    pub restarts: VecDeque<Restart>,
    pub backoff: BackoffState,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub crash_loops: Vec<CrashLoopFold>,
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    pub probe_kills: VecDeque<ProbeKill>,
    /// Announced back-off seen since the last restart, waiting for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_announced_seconds: Option<f64>,
    /// Where the current back-off sequence stands (restarts since the last reset).
    #[serde(default)]
    pub backoff_step: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventRecord {
    pub uid: String,
    pub reason: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Occurrences, including the count updates of an aggregated event.
    pub count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Timestamp>,
}

/// The stages clusterloader2's pod-startup measurement uses, in seconds from creation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct StartupBreakdown {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initialized_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_seconds: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// "ready/total" containers, as kubectl shows it.
    pub ready: String,
    pub restarts: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_termination_reason: Option<String>,
    /// The current back-off as kubectl users read it: "40s", or "-".
    pub backoff: String,
    pub startup: StartupBreakdown,
    pub transitions_recorded: u64,
    /// The workload that owns the pod, as "Deployment/web"; absent for a bare pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// The whole history of one pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodHistory {
    pub pod: String,
    pub uid: String,
    pub phases: VecDeque<PhaseTransition>,
    pub conditions: VecDeque<ConditionTransition>,
    pub containers: Vec<ContainerHistory>,
    pub events: VecDeque<EventRecord>,
    pub summary: Summary,
    pub truncated: Truncation,
    /// The pod's owner chain, recorded at first sight of an owner. It outlives the owners: a
    /// deleted Deployment's pods keep saying whose they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owners: Option<Owners>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<Timestamp>,
    /// The newest Event resourceVersion folded into this history. An event at or below it was
    /// seen before (a relist or a restarted operator replays it), even once it has left the
    /// `events` ring or been trimmed for the byte budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_seen_through: Option<u64>,
    /// The newest Pod resourceVersion folded into this history: an older status replayed
    /// later (a watch resumed from an earlier position) changes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_seen_through: Option<u64>,
    /// Operator bookkeeping, not the pod's: the position of the operator's pod watch up to
    /// which every change of every pod had been written when this report was. A restarted
    /// operator, or a new leader, resumes its watch there and replays what it missed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch_resume_from: Option<u64>,
}

/// What one observation changed, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Phase,
    Condition,
    ContainerState,
    Flip,
    Termination,
    Restart,
    Event,
    EventCount,
    /// The owner chain was first seen or grew.
    Owner,
}

fn push_bounded<T>(list: &mut VecDeque<T>, item: T, cap: usize, dropped: &mut u64) {
    if list.len() >= cap {
        list.pop_front();
        *dropped += 1;
    }
    if list.len() == list.capacity() {
        // Grown by an eighth, not doubled: a history is kept for the pod's whole life, and
        // doubling leaves up to half of each list empty (megabytes over 10k pods).
        list.reserve_exact((list.len() / 8).max(1));
    }
    list.push_back(item);
}

fn seconds_between(from: Option<Timestamp>, to: Option<Timestamp>) -> Option<f64> {
    Some(to?.duration_since(from?).as_secs_f64())
}

type StateKey = (u8, Option<String>, Option<Timestamp>, Option<Timestamp>, i32);

/// Identifies one state of one run: a replayed snapshot maps to an entry already recorded.
fn state_key(s: &ContainerState, restart_count: i32) -> StateKey {
    match s {
        ContainerState::Waiting { reason, .. } => (0, reason.clone(), None, None, restart_count),
        ContainerState::Running { started_at } => (1, None, *started_at, None, restart_count),
        ContainerState::Terminated(t) => (2, t.reason.clone(), t.started_at, t.finished_at, restart_count),
    }
}

impl ContainerHistory {
    #[must_use]
    pub fn new(name: &str, kind: ContainerKind) -> Self {
        ContainerHistory {
            name: name.to_string(),
            kind,
            restart_count: 0,
            states: VecDeque::new(),
            ready: VecDeque::new(),
            started: VecDeque::new(),
            terminations: VecDeque::new(),
            restarts: VecDeque::new(),
            backoff: BackoffState::None,
            crash_loops: Vec::new(),
            probe_kills: VecDeque::new(),
            pending_announced_seconds: None,
            backoff_step: 0,
        }
    }

    fn shrink_to_fit(&mut self) {
        self.states.shrink_to_fit();
        self.ready.shrink_to_fit();
        self.started.shrink_to_fit();
        self.terminations.shrink_to_fit();
        self.restarts.shrink_to_fit();
        self.crash_loops.shrink_to_fit();
        self.probe_kills.shrink_to_fit();
    }

    fn has_termination(&self, t: &Termination) -> bool {
        let key = t.run_key();
        self.terminations.iter().any(|r| r.termination.run_key() == key)
    }

    fn record_termination(&mut self, run: i32, t: &Termination, source: Source, trunc: &mut Truncation, changes: &mut Vec<Change>) {
        if self.has_termination(t) {
            return;
        }
        // A kill whose probe we saw: attach the termination it caused.
        if let Some(kill) = self.probe_kills.iter_mut().rev().find(|k| k.exit_code.is_none()) {
            let after_kill = match (kill.killing_at, t.finished_at) {
                (Some(k), Some(f)) => f >= k.checked_sub(jiff::SignedDuration::from_secs(2)).unwrap_or(k),
                _ => true,
            };
            if after_kill {
                kill.exit_code = Some(t.exit_code);
                kill.terminated_at = t.finished_at;
            }
        }
        let repeats = self.terminations.back().is_some_and(|prev| {
            prev.termination.exit_code == t.exit_code && prev.termination.reason == t.reason && prev.termination.signal == t.signal
        });
        if repeats {
            let at = t.finished_at.unwrap_or(Timestamp::UNIX_EPOCH);
            match self.crash_loops.last_mut() {
                Some(f) if f.exit_code == t.exit_code && f.reason == t.reason => {
                    f.cycles += 1;
                    f.last_at = at;
                }
                _ => self.crash_loops.push(CrashLoopFold {
                    exit_code: t.exit_code,
                    reason: t.reason.clone(),
                    cycles: 2,
                    first_at: at,
                    last_at: at,
                }),
            }
            if self.crash_loops.len() > 8 {
                self.crash_loops.remove(0);
            }
        }
        push_bounded(
            &mut self.terminations,
            TerminationRecord { run, termination: t.clone(), source },
            MAX_TERMINATIONS,
            &mut trunc.terminations,
        );
        changes.push(Change::Termination);
    }

    /// The recorded termination of run `run` (0 = the first run).
    fn termination_of_run(&self, run: i32) -> Option<&Termination> {
        self.terminations.iter().rev().find(|t| t.run == run).map(|t| &t.termination)
    }

    /// When run `run` started: from its termination, or from the Running state it was seen in.
    fn start_of_run(&self, run: i32) -> Option<Timestamp> {
        self.termination_of_run(run).and_then(|t| t.started_at).or_else(|| {
            self.states.iter().rev().find_map(|s| match s.state {
                ContainerState::Running { started_at } if s.restart_count == run => started_at,
                _ => None,
            })
        })
    }

    /// Measures every restart whose two ends are now known. The kubelet publishes them in
    /// whichever order its status syncs land: a restart can arrive before the run it replaced
    /// ended in any status (restartCount up, lastState empty; seen on our v1.34 node under
    /// load), or while the new run is only created (Waiting with no reason), so that its start
    /// comes with a later status.
    fn complete_restarts(&mut self, profile: &BackoffProfile) {
        let newest = self.restarts.back().map(|r| r.number);
        for i in 0..self.restarts.len() {
            let (number, known_previous, known_start) = {
                let r = &self.restarts[i];
                if r.measured_seconds.is_some() {
                    continue;
                }
                (r.number, r.previous_finished_at, r.started_at)
            };
            let previous = self.termination_of_run(number - 1).cloned();
            let started_at = known_start.or_else(|| self.start_of_run(number));
            let previous_finished_at = known_previous.or_else(|| previous.as_ref().and_then(|p| p.finished_at));
            if previous_finished_at.is_none() && started_at == known_start {
                continue;
            }
            // The newest restart's step was chosen without its previous run: a run that turns
            // out to have lasted past reset_after restarted the curve.
            if known_previous.is_none() && Some(number) == newest && previous.as_ref().is_some_and(|p| ran_past_reset(p, profile)) {
                let r = &mut self.restarts[i];
                r.backoff_step = 1;
                r.expected_seconds = profile.expected_seconds(1);
                self.backoff_step = 1;
            }
            let r = &mut self.restarts[i];
            r.started_at = started_at;
            r.previous_finished_at = previous_finished_at;
            if previous_finished_at.is_some() && started_at.is_some() {
                r.measure(previous_finished_at, profile);
            }
        }
    }

    fn observe(
        &mut self,
        c: &ContainerSnapshot,
        now: Timestamp,
        source: Source,
        profile: &BackoffProfile,
        trunc: &mut Truncation,
        changes: &mut Vec<Change>,
    ) {
        // Earlier runs first, so the termination history stays in order.
        let last_run = last_terminated_run(c);
        if let Some(last) = &c.last_terminated {
            self.record_termination(last_run, last, source, trunc, changes);
        }
        if c.restart_count > self.restart_count {
            self.record_restart(c, last_run, source, profile, trunc, changes);
        }
        if let Some(state) = &c.state {
            let key = state_key(state, c.restart_count);
            let changed = !self.states.iter().any(|prev| state_key(&prev.state, prev.restart_count) == key);
            if changed {
                let at = match state {
                    ContainerState::Running { started_at } => started_at.unwrap_or(now),
                    ContainerState::Terminated(t) => t.finished_at.unwrap_or(now),
                    ContainerState::Waiting { .. } => now,
                };
                let entry = StateTransition { state: state.clone(), at, restart_count: c.restart_count, source };
                push_bounded(&mut self.states, entry, MAX_STATES, &mut trunc.states);
                changes.push(Change::ContainerState);
            }
            // Back-off follows the current run only; a replayed older snapshot must not re-arm it.
            let current = c.restart_count == self.restart_count;
            match state {
                ContainerState::Terminated(t) => self.record_termination(c.restart_count, t, source, trunc, changes),
                _ if !current => {}
                ContainerState::Waiting { reason, message } if reason.as_deref() == Some("CrashLoopBackOff") => {
                    if let Some(announced) = message.as_deref().and_then(parse_announced) {
                        self.pending_announced_seconds = Some(announced);
                        let last_exit = self.terminations.back().and_then(|t| t.termination.finished_at);
                        let next = last_exit.and_then(|t| t.checked_add(jiff::SignedDuration::from_secs_f64(announced)).ok());
                        self.backoff = BackoffState::Waiting { announced_seconds: announced, next_restart_after: next };
                    }
                }
                ContainerState::Running { .. } => self.backoff = BackoffState::None,
                ContainerState::Waiting { .. } => {}
            }
        }
        // A flip is a change; a container that starts not ready has not flipped yet.
        if self.ready.back().map(|f| f.value) != Some(c.ready) && (c.ready || !self.ready.is_empty()) {
            push_bounded(&mut self.ready, Flip { value: c.ready, at: now }, MAX_FLIPS, &mut trunc.flips);
            changes.push(Change::Flip);
        }
        if let Some(started) = c.started
            && self.started.back().map(|f| f.value) != Some(started)
            && (started || !self.started.is_empty())
        {
            push_bounded(&mut self.started, Flip { value: started, at: now }, MAX_FLIPS, &mut trunc.flips);
            changes.push(Change::Flip);
        }
        self.complete_restarts(profile);
    }

    fn record_restart(
        &mut self,
        c: &ContainerSnapshot,
        last_run: i32,
        source: Source,
        profile: &BackoffProfile,
        trunc: &mut Truncation,
        changes: &mut Vec<Change>,
    ) {
        let unobserved = c.restart_count - self.restart_count - 1;
        // When the run this restart started began. Running or terminated: its own state says.
        // Waiting with this run in lastState (back-off): it has already ended. Waiting for a run
        // that is only created: not known yet; a later status brings it.
        let started_at = match &c.state {
            Some(ContainerState::Running { started_at }) => *started_at,
            Some(ContainerState::Terminated(t)) => t.started_at,
            _ if last_run == c.restart_count => c.last_terminated.as_ref().and_then(|t| t.started_at),
            _ => None,
        };
        // The run before it was recorded from lastState or from an earlier terminated state.
        let previous = self.termination_of_run(c.restart_count - 1).cloned();
        // A run longer than reset_after expires the kubelet's back-off entry: start over.
        let reset = previous.as_ref().is_some_and(|p| ran_past_reset(p, profile));
        let step =
            if reset { 1 } else { self.backoff_step.saturating_add(1).saturating_add(u32::try_from(unobserved.max(0)).unwrap_or(0)) };
        let mut restart = Restart {
            number: c.restart_count,
            backoff_step: step,
            previous_finished_at: previous.as_ref().and_then(|p| p.finished_at),
            started_at,
            measured_seconds: None,
            announced_seconds: self.pending_announced_seconds.take(),
            expected_seconds: profile.expected_seconds(step),
            fits_curve: None,
            unobserved_before: unobserved.max(0),
            source,
        };
        if restart.previous_finished_at.is_some() && started_at.is_some() {
            restart.measure(restart.previous_finished_at, profile);
        }
        if let Some(kill) = self.probe_kills.iter_mut().rev().find(|k| k.restarted_as.is_none()) {
            kill.restarted_as = Some(c.restart_count);
        }
        self.backoff_step = step;
        self.restart_count = c.restart_count;
        self.backoff = BackoffState::None;
        push_bounded(&mut self.restarts, restart, MAX_RESTARTS, &mut trunc.restarts);
        changes.push(Change::Restart);
    }
}

fn first_true_in(conditions: &VecDeque<ConditionTransition>, condition: &str) -> Option<Timestamp> {
    conditions.iter().find(|c| c.type_ == condition && c.status == "True").map(|c| c.at)
}

/// Whether a run lasted longer than the profile's reset_after (the kubelet then forgets its
/// back-off and restarts at once).
fn ran_past_reset(run: &Termination, profile: &BackoffProfile) -> bool {
    seconds_between(run.started_at, run.finished_at).is_some_and(|s| s > profile.reset_after_seconds)
}

impl PodHistory {
    /// When the pod's `condition` (Ready, ContainersReady, ...) first turned True.
    #[must_use]
    pub fn first_true(&self, condition: &str) -> Option<Timestamp> {
        first_true_in(&self.conditions, condition)
    }

    #[must_use]
    pub fn new(pod: &str, uid: &str) -> Self {
        PodHistory { pod: pod.to_string(), uid: uid.to_string(), ..Default::default() }
    }

    /// Folds one status snapshot, observed at `now`, into the history. A snapshot older than
    /// one already folded in (by resourceVersion) is a replay and changes nothing.
    pub fn observe(&mut self, snap: &PodSnapshot, now: Timestamp, source: Source, profile: &BackoffProfile) -> Vec<Change> {
        let mut changes = Vec::new();
        if let (Some(version), Some(seen)) = (snap.resource_version, self.status_seen_through)
            && version <= seen
        {
            return changes;
        }
        self.status_seen_through = self.status_seen_through.max(snap.resource_version);
        if self.owners.is_none()
            && let Some(owners) = Owners::from_controller(snap.controller.clone())
        {
            self.set_owners(owners);
            changes.push(Change::Owner);
        }
        if self.phases.back().map(|p| p.phase) != Some(snap.phase) {
            push_bounded(&mut self.phases, PhaseTransition { phase: snap.phase, at: now, source }, MAX_PHASES, &mut self.truncated.phases);
            changes.push(Change::Phase);
        }
        for cond in &snap.conditions {
            let last = self.conditions.iter().rev().find(|c| c.type_ == cond.type_);
            let changed = last.is_none_or(|l| l.status != cond.status || l.reason != cond.reason || l.message != cond.message);
            if changed {
                let entry = ConditionTransition {
                    type_: cond.type_.clone(),
                    status: cond.status.clone(),
                    reason: cond.reason.clone(),
                    message: cond.message.clone(),
                    at: cond.last_transition.unwrap_or(now),
                    source,
                };
                push_bounded(&mut self.conditions, entry, MAX_CONDITIONS, &mut self.truncated.conditions);
                changes.push(Change::Condition);
            }
        }
        for c in &snap.containers {
            let idx = match self.containers.iter().position(|h| h.name == c.name) {
                Some(i) => i,
                None => {
                    // One slot at a time: a pod's containers are few and fixed (a first push
                    // would otherwise make room for four histories of 300 bytes).
                    self.containers.reserve_exact(1);
                    self.containers.push(ContainerHistory::new(&c.name, c.kind));
                    self.containers.len() - 1
                }
            };
            let history = &mut self.containers[idx];
            history.kind = c.kind;
            history.observe(c, now, source, profile, &mut self.truncated, &mut changes);
        }
        if snap.deleted_at.is_some() {
            self.deleted_at = snap.deleted_at;
        }
        self.refresh_summary(snap);
        self.summary.transitions_recorded += changes.iter().filter(|c| **c != Change::Owner).count() as u64;
        changes
    }

    /// Gives back the room its lists hold beyond their entries (a decoded report's lists
    /// grew by doubling).
    pub fn shrink_to_fit(&mut self) {
        self.phases.shrink_to_fit();
        self.conditions.shrink_to_fit();
        self.events.shrink_to_fit();
        self.containers.shrink_to_fit();
        for c in &mut self.containers {
            c.shrink_to_fit();
        }
    }

    /// Records the owner chain (as it grows by lookups) and names the workload in the summary.
    pub fn set_owners(&mut self, owners: Owners) {
        self.summary.owner = owners.workload().map(ToString::to_string);
        self.owners = Some(owners);
    }

    /// Folds one Event into the history. A count update of a known event raises its count;
    /// Killing after Unhealthy opens a [`ProbeKill`] that later terminations and restarts join.
    ///
    /// # Guarantees
    /// Events must arrive in resourceVersion order (a watch delivers them so; a relist must be
    /// sorted first). Then an event at or below [`PodHistory::events_seen_through`] is a replay
    /// and changes nothing, whatever the rings have dropped since.
    pub fn observe_event(&mut self, e: &EventSnapshot) -> Option<Change> {
        if let (Some(version), Some(seen)) = (e.resource_version, self.events_seen_through)
            && version <= seen
        {
            return None;
        }
        self.events_seen_through = self.events_seen_through.max(e.resource_version);
        if let Some(known) = self.events.iter_mut().find(|r| r.uid == e.uid) {
            if e.count <= known.count {
                return None;
            }
            known.count = e.count;
            known.last_seen = e.last_seen.or(known.last_seen);
            known.message.clone_from(&e.message);
            return Some(Change::EventCount);
        }
        if e.reason == "Killing"
            && let Some(name) = &e.container
            && let Some(probe) = killing_probe(&e.message)
        {
            let unhealthy = self.events.iter().rev().find(|r| r.reason == "Unhealthy" && r.container.as_ref() == Some(name)).cloned();
            if let Some(h) = self.containers.iter_mut().find(|h| &h.name == name) {
                let kill = ProbeKill {
                    probe: probe.to_string(),
                    unhealthy_message: unhealthy.as_ref().map(|u| u.message.clone()),
                    unhealthy_at: unhealthy.and_then(|u| u.last_seen),
                    killing_at: e.last_seen.or(e.first_seen),
                    exit_code: None,
                    terminated_at: None,
                    restarted_as: None,
                };
                push_bounded(&mut h.probe_kills, kill, MAX_PROBE_KILLS, &mut self.truncated.probe_kills);
            }
        }
        let record = EventRecord {
            uid: e.uid.clone(),
            reason: e.reason.clone(),
            type_: e.type_.clone(),
            message: e.message.clone(),
            container: e.container.clone(),
            count: e.count,
            first_seen: e.first_seen,
            last_seen: e.last_seen,
        };
        push_bounded(&mut self.events, record, MAX_EVENTS, &mut self.truncated.events);
        self.summary.transitions_recorded += 1;
        Some(Change::Event)
    }

    fn refresh_summary(&mut self, snap: &PodSnapshot) {
        let counted: Vec<&ContainerSnapshot> =
            snap.containers.iter().filter(|c| matches!(c.kind, ContainerKind::App | ContainerKind::Sidecar)).collect();
        let ready = counted.iter().filter(|c| c.ready).count();
        self.summary.phase = Some(snap.phase);
        self.summary.ready = format!("{ready}/{}", counted.len());
        self.summary.restarts = self.containers.iter().map(|c| c.restart_count).sum();
        self.summary.last_termination_reason = self
            .containers
            .iter()
            .filter_map(|c| c.terminations.back())
            .max_by_key(|t| t.termination.finished_at)
            .and_then(|t| t.termination.reason.clone());
        self.summary.backoff = self
            .containers
            .iter()
            .filter_map(|c| match c.backoff {
                BackoffState::Waiting { announced_seconds, .. } => Some(announced_seconds),
                BackoffState::None => None,
            })
            .fold(None, |acc: Option<f64>, s| Some(acc.map_or(s, |a| a.max(s))))
            .map_or_else(|| "-".to_string(), format_seconds);
        let created = snap.created_at.or(self.summary.startup.created);
        // Only the conditions are borrowed: the summary is written below.
        let conditions = &self.conditions;
        let first_true = |kind: &str| first_true_in(conditions, kind);
        let running_at = if counted.is_empty() {
            None
        } else {
            let starts: Option<Vec<Timestamp>> = self
                .containers
                .iter()
                .filter(|c| matches!(c.kind, ContainerKind::App | ContainerKind::Sidecar))
                .map(|c| c.states.iter().find(|s| matches!(s.state, ContainerState::Running { .. })).map(|s| s.at))
                .collect();
            starts.and_then(|s| s.into_iter().max())
        };
        let startup = &mut self.summary.startup;
        startup.created = created;
        startup.scheduled_seconds = startup.scheduled_seconds.or_else(|| seconds_between(created, first_true("PodScheduled")));
        startup.initialized_seconds = startup.initialized_seconds.or_else(|| seconds_between(created, first_true("Initialized")));
        startup.running_seconds = startup.running_seconds.or_else(|| seconds_between(created, running_at));
        startup.ready_seconds = startup.ready_seconds.or_else(|| seconds_between(created, first_true("Ready")));
    }

    /// Drops entries until the serialized history fits `max_bytes`, counting each drop in
    /// `truncated.budget`, and returns the serialized size. A write can then never fail for
    /// size. What goes first: the oldest raw transitions (phases, conditions, container states,
    /// ready and started flips, events), then kills and terminations, and the restart records
    /// with their back-off judgement last. The summary, the counters and the crash-loop folds
    /// are never dropped, so a history can stay above a budget smaller than them.
    ///
    /// The history is serialized once per pass and each dropped entry's own size is taken off
    /// the estimate, so trimming costs about two serializations, not one per dropped entry. The
    /// estimate can be a few bytes off (the budget counter's digits, a last comma), hence the
    /// passes.
    pub fn enforce_budget(&mut self, max_bytes: usize) -> usize {
        let mut size = self.serialized_len();
        for _ in 0..8 {
            if size <= max_bytes {
                break;
            }
            let mut estimate = size;
            while estimate > max_bytes {
                let Some(list) = self.next_to_drop() else { return self.serialized_len() };
                // The entry and the comma that separated it from its neighbour.
                estimate = estimate.saturating_sub(self.drop_front(list) + 1);
                self.truncated.budget += 1;
            }
            size = self.serialized_len();
        }
        size
    }

    /// The size of the history as written (compact JSON).
    #[must_use]
    pub fn serialized_len(&self) -> usize {
        #[cfg(test)]
        HISTORY_SERIALIZATIONS.with(|n| n.set(n.get() + 1));
        serialized_len(self)
    }

    /// The list whose front goes next: the lowest tier first, and in it the oldest front.
    fn next_to_drop(&self) -> Option<List> {
        let mut lists = vec![
            (List::Phases, self.phases.front().map(|p| p.at)),
            (List::Conditions, self.conditions.front().map(|c| c.at)),
            (List::Events, self.events.front().map(|e| e.first_seen.or(e.last_seen).unwrap_or(Timestamp::MIN))),
        ];
        for (i, c) in self.containers.iter().enumerate() {
            lists.extend([
                (List::States(i), c.states.front().map(|s| s.at)),
                (List::Ready(i), c.ready.front().map(|f| f.at)),
                (List::Started(i), c.started.front().map(|f| f.at)),
                (List::ProbeKills(i), c.probe_kills.front().map(|k| k.killing_at.or(k.unhealthy_at).unwrap_or(Timestamp::MIN))),
                (List::Terminations(i), c.terminations.front().map(|t| t.termination.finished_at.unwrap_or(Timestamp::MIN))),
                (List::Restarts(i), c.restarts.front().map(|r| r.started_at.unwrap_or(Timestamp::MIN))),
            ]);
        }
        lists
            .into_iter()
            .filter_map(|(list, front)| Some((list.tier(), front?, list)))
            .min_by_key(|(tier, at, _)| (*tier, *at))
            .map(|(.., list)| list)
    }

    /// Pops the front of `list` and returns its serialized size.
    fn drop_front(&mut self, list: List) -> usize {
        match list {
            List::Phases => self.phases.pop_front().map_or(0, |e| serialized_len(&e)),
            List::Conditions => self.conditions.pop_front().map_or(0, |e| serialized_len(&e)),
            List::Events => self.events.pop_front().map_or(0, |e| serialized_len(&e)),
            List::States(i) => self.containers[i].states.pop_front().map_or(0, |e| serialized_len(&e)),
            List::Terminations(i) => self.containers[i].terminations.pop_front().map_or(0, |e| serialized_len(&e)),
            List::Restarts(i) => self.containers[i].restarts.pop_front().map_or(0, |e| serialized_len(&e)),
            List::Ready(i) => self.containers[i].ready.pop_front().map_or(0, |e| serialized_len(&e)),
            List::Started(i) => self.containers[i].started.pop_front().map_or(0, |e| serialized_len(&e)),
            List::ProbeKills(i) => self.containers[i].probe_kills.pop_front().map_or(0, |e| serialized_len(&e)),
        }
    }
}

#[cfg(test)]
thread_local! {
    /// Whole-history serializations on this thread: what the budget's cost is counted in.
    pub(crate) static HISTORY_SERIALIZATIONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Counts the bytes of compact JSON without keeping them: the budget needs a size on every
/// write, and building the whole text only to measure it grew and copied a buffer each time.
fn serialized_len<T: Serialize>(value: &T) -> usize {
    struct ByteCount(usize);
    impl std::io::Write for ByteCount {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = ByteCount(0);
    serde_json::to_writer(&mut count, value).map_or(0, |()| count.0)
}

/// The bounded lists of a history, for trimming to the byte budget (indexes are containers).
#[derive(Debug, Clone, Copy)]
enum List {
    Phases,
    Conditions,
    Events,
    States(usize),
    Terminations(usize),
    Restarts(usize),
    Ready(usize),
    Started(usize),
    ProbeKills(usize),
}

/// The order in which the byte budget gives lists up: raw transitions first, restart records
/// (what the back-off verdicts stand on) last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum BudgetTier {
    RawTransitions,
    Exits,
    Restarts,
}

impl List {
    fn tier(self) -> BudgetTier {
        match self {
            List::Phases | List::Conditions | List::Events | List::States(_) | List::Ready(_) | List::Started(_) => {
                BudgetTier::RawTransitions
            }
            List::Terminations(_) | List::ProbeKills(_) => BudgetTier::Exits,
            List::Restarts(_) => BudgetTier::Restarts,
        }
    }
}

/// The run that `lastState.terminated` describes. The kubelet fills lastState from the
/// second-newest run, except while it shows a cached start failure (CrashLoopBackOff and the
/// like): then the newest run has ended and moved into lastState itself. The newest run's id
/// (`containerID`) tells the two apart; without it, only CrashLoopBackOff is taken to mean the
/// newest run.
fn last_terminated_run(c: &ContainerSnapshot) -> i32 {
    let last_id = c.last_terminated.as_ref().and_then(|t| t.container_id.as_ref());
    match (&c.container_id, last_id) {
        (Some(current), Some(last)) if current == last => c.restart_count,
        (Some(_), _) => c.restart_count - 1,
        (None, _) => match &c.state {
            Some(ContainerState::Waiting { reason: Some(r), .. }) if r == "CrashLoopBackOff" => c.restart_count,
            _ => c.restart_count - 1,
        },
    }
}

/// Which probe a Killing event blames: "Container app failed liveness probe, will be restarted".
fn killing_probe(message: &str) -> Option<&'static str> {
    if message.contains("failed liveness probe") {
        Some("liveness")
    } else if message.contains("failed startup probe") {
        Some("startup")
    } else {
        None
    }
}

/// 80 → "1m20s", 10 → "10s", as the kubelet prints durations.
#[must_use]
pub fn format_seconds(s: f64) -> String {
    let total = s.round() as i64;
    if total >= 60 { format!("{}m{}s", total / 60, total % 60) } else { format!("{total}s") }
}
