//! Mutation testing of verdicts. A conformance case is worth only the wrong kubelet behaviour
//! it would catch, so each case is kept as a [`Fixture`]: exactly what its verdicts were judged
//! on when it ran against the real kubelet (the experiment with its evidence, and the
//! PodLifecycle reports it names). Each [`Mutation`] rewrites that record as a kubelet that
//! behaves wrongly in one way would have produced it; a case must pass on its fixture and fail
//! on at least one mutation.
//!
//! Mutations change raw observations (times, counts, events, announcements). What the model
//! derives from them is derived again by the model itself (see `Restart::rejudge`), so a
//! mutated restart is judged by the same code as a real one.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::crd::ProbeExperiment;
use crate::crd::experiment::{Evidence, HitTime, TargetEvent, TargetRecord, Verdict};
use crate::harness::verdict::evaluate;
use crate::lifecycle::history::{BackoffState, ConditionTransition, EventRecord};
use crate::lifecycle::snapshot::Phase;
use crate::lifecycle::{BackoffProfile, PodHistory};

/// What one finished experiment was judged on: the experiment itself, its status holding the
/// evidence and the reports as judged. `kubectl podlife run --evidence DIR` writes one per
/// experiment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fixture {
    pub experiment: ProbeExperiment,
}

impl Fixture {
    /// The experiment's evidence; a fixture without one cannot be judged.
    ///
    /// # Errors
    /// The experiment has no stored evidence (it did not finish, or an older operator ran it),
    /// or the judged reports were too large to keep.
    pub fn evidence(&self) -> Result<&Evidence, String> {
        let evidence = self
            .experiment
            .status
            .as_ref()
            .and_then(|s| s.evidence.as_ref())
            .ok_or_else(|| "the experiment has no evidence".to_string())?;
        match &evidence.pods_omitted {
            Some(why) => Err(why.clone()),
            None => Ok(evidence),
        }
    }

    /// Judges the fixture again, as stored or after `mutation`.
    ///
    /// # Errors
    /// See [`Fixture::evidence`].
    pub fn judge(&self, mutation: Option<Mutation>) -> Result<Vec<Verdict>, String> {
        let mut evidence = self.evidence()?.clone();
        let mut pods = std::mem::take(&mut evidence.pods);
        // Every restart judged by today's tolerance, not the one stored when it was recorded.
        let profile = BackoffProfile::default();
        pods.iter_mut().flat_map(|h| h.containers.iter_mut()).flat_map(|c| c.restarts.iter_mut()).for_each(|r| r.rejudge(&profile));
        if let Some(m) = mutation {
            m.apply(&mut pods, &mut evidence);
        }
        Ok(evaluate(&self.experiment.spec.expectations, &pods, &evidence))
    }
}

/// One way a kubelet could be wrong, as it would show in the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mutation {
    /// Every back-off one step further along the curve (10 s where 0 s is due, 20 s for 10 s).
    BackoffShiftedOneStep,
    /// The first restart of a sequence comes 10 s after the exit instead of at once.
    FirstRestartLate,
    /// The back-off announced is right but applied 20 s later than announced.
    AppliedLaterThanAnnounced,
    /// The back-off doubles on to a 600 s cap instead of 300 s.
    CapAt600,
    /// A run longer than the reset time does not reset the curve.
    NoResetAfterLongRun,
    /// No probe ever reaches the container.
    ProbesNeverSent,
    /// Probes come at half the configured rate.
    ProbePeriodDoubled,
    /// Probes come at twice the configured rate.
    ProbePeriodHalved,
    /// Liveness is probed while the startup probe has not yet succeeded.
    LivenessDuringStartup,
    /// Containers are never restarted.
    NoRestart,
    /// One restart more than happened.
    ExtraRestart,
    /// Restarts happen without a Killing event.
    RestartWithoutKilling,
    /// No events reach the record at all (as with a broken event watch).
    EventsLost,
    /// Events of things that did not happen: probe kills, a failed preStop hook, an app start.
    UnexpectedEvents,
    /// SIGTERM is sent before the preStop hook ran.
    SigtermBeforePreStop,
    /// A terminating container is killed at once, ignoring its grace period.
    GraceIgnored,
    /// A terminating container is killed 30 s late.
    GraceOverrun,
    /// The last exit code or signal of every container is another one.
    WrongExitCode,
    /// The pod ends in the other final phase (Succeeded and Failed swapped; Running fails).
    WrongPhase,
    /// The pod turns Ready 1 s after creation, during any initial delay or startup.
    ReadyDuringInitialDelay,
    /// Ready stays True while the pod terminates.
    ReadyWhileTerminating,
    /// One Job pod more runs at once than parallelism allows.
    JobConcurrencyOffByOne,
}

impl Mutation {
    pub const ALL: [Mutation; 22] = [
        Mutation::BackoffShiftedOneStep,
        Mutation::FirstRestartLate,
        Mutation::AppliedLaterThanAnnounced,
        Mutation::CapAt600,
        Mutation::NoResetAfterLongRun,
        Mutation::ProbesNeverSent,
        Mutation::ProbePeriodDoubled,
        Mutation::ProbePeriodHalved,
        Mutation::LivenessDuringStartup,
        Mutation::NoRestart,
        Mutation::ExtraRestart,
        Mutation::RestartWithoutKilling,
        Mutation::EventsLost,
        Mutation::UnexpectedEvents,
        Mutation::SigtermBeforePreStop,
        Mutation::GraceIgnored,
        Mutation::GraceOverrun,
        Mutation::WrongExitCode,
        Mutation::WrongPhase,
        Mutation::ReadyDuringInitialDelay,
        Mutation::ReadyWhileTerminating,
        Mutation::JobConcurrencyOffByOne,
    ];

    /// The short name used in the README's table.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Mutation::BackoffShiftedOneStep => "backoff-shifted",
            Mutation::FirstRestartLate => "first-restart-late",
            Mutation::AppliedLaterThanAnnounced => "applied-not-announced",
            Mutation::CapAt600 => "cap-600",
            Mutation::NoResetAfterLongRun => "no-reset",
            Mutation::ProbesNeverSent => "no-probes",
            Mutation::ProbePeriodDoubled => "period-doubled",
            Mutation::ProbePeriodHalved => "period-halved",
            Mutation::LivenessDuringStartup => "liveness-in-startup",
            Mutation::NoRestart => "no-restart",
            Mutation::ExtraRestart => "extra-restart",
            Mutation::RestartWithoutKilling => "no-killing",
            Mutation::EventsLost => "events-lost",
            Mutation::UnexpectedEvents => "unexpected-events",
            Mutation::SigtermBeforePreStop => "sigterm-before-prestop",
            Mutation::GraceIgnored => "grace-ignored",
            Mutation::GraceOverrun => "grace-overrun",
            Mutation::WrongExitCode => "wrong-exit",
            Mutation::WrongPhase => "wrong-phase",
            Mutation::ReadyDuringInitialDelay => "ready-early",
            Mutation::ReadyWhileTerminating => "ready-while-terminating",
            Mutation::JobConcurrencyOffByOne => "job-concurrency+1",
        }
    }

    /// Rewrites the record as a kubelet with this fault would have produced it.
    pub fn apply(self, pods: &mut [PodHistory], evidence: &mut Evidence) {
        let profile = BackoffProfile::default();
        match self {
            Mutation::BackoffShiftedOneStep => shift_restarts(pods, &profile, |step, _| {
                let more = profile.expected_seconds(step + 1) - profile.expected_seconds(step);
                Some((more, Some(profile.expected_seconds(step + 1))))
            }),
            Mutation::FirstRestartLate => shift_restarts(pods, &profile, |step, _| (step <= 1).then_some((10.0, None))),
            Mutation::AppliedLaterThanAnnounced => shift_restarts(pods, &profile, |step, _| (step > 1).then_some((20.0, None))),
            Mutation::CapAt600 => {
                let uncapped = BackoffProfile { max_seconds: 600.0, ..profile };
                shift_restarts(pods, &profile, |step, _| {
                    let more = uncapped.expected_seconds(step) - profile.expected_seconds(step);
                    (more > 0.0).then_some((more, Some(uncapped.expected_seconds(step))))
                });
                for c in pods.iter_mut().flat_map(|h| h.containers.iter_mut()) {
                    if let BackoffState::Waiting { announced_seconds, .. } = &mut c.backoff
                        && *announced_seconds >= profile.max_seconds
                    {
                        *announced_seconds = 600.0;
                    }
                }
            }
            Mutation::NoResetAfterLongRun => shift_restarts(pods, &profile, |step, number| {
                // A sequence that started again at step 1 after its first restart was a reset.
                (step == 1 && number > 1).then_some((profile.initial_seconds, None))
            }),
            Mutation::ProbesNeverSent => {
                for t in &mut evidence.targets {
                    t.counters.clear();
                    t.hits.clear();
                }
            }
            Mutation::ProbePeriodDoubled => {
                for t in &mut evidence.targets {
                    // Every other hit of each probe in each run.
                    let mut seen: std::collections::BTreeMap<(u64, String), usize> = std::collections::BTreeMap::new();
                    t.hits.retain(|h| {
                        let n = seen.entry((h.run, h.probe.clone())).or_default();
                        *n += 1;
                        *n % 2 == 1
                    });
                    for n in t.counters.values_mut().flat_map(|r| r.values_mut()) {
                        *n /= 2;
                    }
                }
            }
            Mutation::ProbePeriodHalved => {
                for t in &mut evidence.targets {
                    t.hits = double_rate(&t.hits);
                    for n in t.counters.values_mut().flat_map(|r| r.values_mut()) {
                        *n *= 2;
                    }
                }
            }
            Mutation::LivenessDuringStartup => {
                for t in &mut evidence.targets {
                    let startup: Vec<HitTime> = t.hits.iter().filter(|h| h.probe == "startup").cloned().collect();
                    let seq = t.hits.iter().map(|h| h.seq).max().unwrap_or(0) + 1;
                    for (i, h) in startup.iter().enumerate() {
                        t.hits.push(HitTime { probe: "liveness".into(), seq: seq + i as u64, ..h.clone() });
                    }
                    // In time order, as the target would have recorded them.
                    t.hits.sort_by_key(|h| (h.run, h.at_ms, h.seq));
                    if !startup.is_empty() {
                        *t.counters.entry("liveness".into()).or_default().entry("ok".into()).or_default() += startup.len() as u64;
                    }
                }
            }
            Mutation::NoRestart => {
                for c in pods.iter_mut().flat_map(|h| h.containers.iter_mut()) {
                    c.restart_count = 0;
                    c.restarts.clear();
                    c.states.iter_mut().for_each(|s| s.restart_count = 0);
                }
            }
            Mutation::ExtraRestart => {
                for c in pods.iter_mut().flat_map(|h| h.containers.iter_mut()) {
                    c.restart_count += 1;
                    if let Some(last) = c.states.back_mut() {
                        last.restart_count += 1;
                    }
                }
            }
            // Only the probe kills: a Killing "Stopping container" at deletion is another matter.
            Mutation::RestartWithoutKilling => {
                pods.iter_mut().for_each(|h| h.events.retain(|e| !(e.reason == "Killing" && e.message.contains("probe"))));
            }
            Mutation::EventsLost => pods.iter_mut().for_each(|h| h.events.clear()),
            Mutation::UnexpectedEvents => {
                for h in pods.iter_mut() {
                    let names: Vec<String> = h.containers.iter().map(|c| c.name.clone()).collect();
                    for name in names {
                        for (reason, message) in [
                            ("Killing", format!("Container {name} failed liveness probe, will be restarted")),
                            ("Killing", format!("Container {name} failed startup probe, will be restarted")),
                            ("FailedPreStopHook", format!("PreStopHook failed for container {name}")),
                            ("Started", "Started container app".to_string()),
                        ] {
                            h.events.push_back(EventRecord {
                                uid: format!("mutation-{reason}-{name}"),
                                reason: reason.into(),
                                type_: "Warning".into(),
                                message,
                                container: Some(name.clone()),
                                count: 1,
                                first_seen: None,
                                last_seen: None,
                            });
                        }
                    }
                }
            }
            Mutation::SigtermBeforePreStop => {
                for t in &mut evidence.targets {
                    if !t.events.iter().any(|e| e.kind == "prestop") {
                        continue;
                    }
                    // The SIGTERM that followed the hook arrives just before it instead.
                    t.events.retain(|e| e.kind != "sigterm");
                    let Some(prestop) = t.events.iter().position(|e| e.kind == "prestop") else { continue };
                    let (at_ms, run) = (t.events[prestop].at_ms.saturating_sub(1), t.events[prestop].run);
                    t.events.insert(prestop, TargetEvent { kind: "sigterm".into(), at_ms, run });
                }
            }
            Mutation::GraceIgnored => move_last_finish(pods, evidence, |from, _| Some(from)),
            Mutation::GraceOverrun => move_last_finish(pods, evidence, |_, finished| Some(finished + SignedDuration::from_secs(30))),
            Mutation::WrongExitCode => {
                for c in pods.iter_mut().flat_map(|h| h.containers.iter_mut()) {
                    if let Some(last) = c.terminations.back_mut() {
                        let t = &mut last.termination;
                        (t.exit_code, t.reason) = match t.exit_code {
                            0 => (1, Some("Error".into())),
                            137 => (143, Some("Error".into())),
                            143 => (137, Some("Error".into())),
                            code => (code + 1, Some("Error".into())),
                        };
                        t.signal = None;
                    }
                }
            }
            Mutation::WrongPhase => {
                for h in pods.iter_mut() {
                    if let Some(last) = h.phases.back_mut() {
                        last.phase = match last.phase {
                            Phase::Succeeded => Phase::Failed,
                            Phase::Failed => Phase::Succeeded,
                            Phase::Pending => Phase::Running,
                            Phase::Running | Phase::Unknown => Phase::Failed,
                        };
                    }
                }
            }
            Mutation::ReadyDuringInitialDelay => {
                let early = evidence.created_at + SignedDuration::from_secs(1);
                for h in pods.iter_mut() {
                    let at = h.conditions.iter().position(|c| c.at > early).unwrap_or(h.conditions.len());
                    let ready = ConditionTransition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        reason: None,
                        message: None,
                        at: early,
                        source: Default::default(),
                    };
                    h.conditions.insert(at, ready);
                }
            }
            Mutation::ReadyWhileTerminating => {
                // Every Ready=False after the delete is lost: the pod stays Ready while it goes.
                let Some(deleted) = evidence.deleted_at else { return };
                for h in pods.iter_mut() {
                    h.conditions.retain(|c| !(c.type_ == "Ready" && c.status == "False" && c.at >= deleted));
                }
            }
            Mutation::JobConcurrencyOffByOne => {
                // The run that started last starts 1 s after the first one did, alongside it.
                let mut runs: Vec<(Timestamp, usize, usize, usize)> = Vec::new();
                for (p, h) in pods.iter().enumerate() {
                    for (c, ch) in h.containers.iter().enumerate() {
                        for (r, t) in ch.terminations.iter().enumerate() {
                            if let Some(s) = t.termination.started_at {
                                runs.push((s, p, c, r));
                            }
                        }
                    }
                }
                runs.sort();
                if let (Some(first), Some(&(_, p, c, r))) = (runs.first().map(|r| r.0), runs.last())
                    && runs.len() > 1
                {
                    let t = &mut pods[p].containers[c].terminations[r].termination;
                    if let (Some(s), Some(f)) = (t.started_at, t.finished_at) {
                        let to = first + SignedDuration::from_secs(1);
                        t.finished_at = Some(to + f.duration_since(s));
                        t.started_at = Some(to);
                    }
                }
            }
        }
    }
}

/// Delays restarts: `delay(step, number)` gives how much later the restart starts and, if it
/// changes, what the kubelet announced before it. Each changed restart is judged again.
fn shift_restarts(pods: &mut [PodHistory], profile: &BackoffProfile, delay: impl Fn(u32, i32) -> Option<(f64, Option<f64>)>) {
    for c in pods.iter_mut().flat_map(|h| h.containers.iter_mut()) {
        for r in &mut c.restarts {
            let Some((seconds, announced)) = delay(r.backoff_step, r.number) else { continue };
            r.started_at = r.started_at.map(|s| s + SignedDuration::from_secs_f64(seconds));
            if announced.is_some() && (r.announced_seconds.is_some() || r.backoff_step > 1) {
                r.announced_seconds = announced.filter(|a| *a > 0.0);
            }
            r.rejudge(profile);
        }
    }
}

/// Every probe's hits at twice the rate: a hit halfway between each two of one run.
fn double_rate(hits: &[HitTime]) -> Vec<HitTime> {
    let mut out = hits.to_vec();
    let mut seq = hits.iter().map(|h| h.seq).max().unwrap_or(0) + 1;
    for (i, a) in hits.iter().enumerate() {
        if let Some(b) = hits[i + 1..].iter().find(|b| b.probe == a.probe && b.run == a.run) {
            out.push(HitTime { seq, at_ms: a.at_ms + (b.at_ms - a.at_ms) / 2, ..a.clone() });
            seq += 1;
        }
    }
    out.sort_by_key(|h| (h.run, h.at_ms, h.seq));
    out
}

/// Moves the finishedAt of every container's last termination: `to(sigterm or delete, finished)`.
fn move_last_finish(pods: &mut [PodHistory], evidence: &Evidence, to: impl Fn(Timestamp, Timestamp) -> Option<Timestamp>) {
    let sigterm = evidence.targets.iter().find_map(TargetRecord::last_sigterm);
    let Some(from) = sigterm.or(evidence.deleted_at) else { return };
    for c in pods.iter_mut().flat_map(|h| h.containers.iter_mut()) {
        if let Some(t) = c.terminations.back_mut()
            && let Some(finished) = t.termination.finished_at
        {
            t.termination.finished_at = to(from, finished);
        }
    }
}

/// The mutations that make `fixture` fail (a verdict that passes on the real record fails).
///
/// # Errors
/// See [`Fixture::evidence`]; or the fixture already fails unmutated.
pub fn killers(fixture: &Fixture) -> Result<Vec<Mutation>, String> {
    let real = fixture.judge(None)?;
    if let Some(failed) = real.iter().find(|v| !v.passed) {
        return Err(format!("fails unmutated ({}: {}), so no mutation can be said to kill it", failed.name, failed.observed));
    }
    let mut killed = Vec::new();
    for m in Mutation::ALL {
        if fixture.judge(Some(m))?.iter().any(|v| !v.passed) {
            killed.push(m);
        }
    }
    Ok(killed)
}

/// The README's table: each case and the mutations that kill it.
#[must_use]
pub fn table(rows: &[(String, Vec<Mutation>)]) -> String {
    let mut out = String::from("| case | killed by |\n|---|---|\n");
    for (case, killed) in rows {
        let names: Vec<String> = killed.iter().map(|m| format!("`{}`", m.name())).collect();
        let names = if names.is_empty() { "**none: survives every mutation**".to_string() } else { names.join(" ") };
        out.push_str(&format!("| {case} | {names} |\n"));
    }
    out
}
