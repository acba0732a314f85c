//! Verdicts: each expectation of a ProbeExperiment checked against what was recorded. Pure:
//! the pods' PodLifecycle reports and the experiment's evidence in, one verdict per
//! expectation out, each with the observed value next to the expected one.

use jiff::Timestamp;

use crate::crd::experiment::{Evidence, Expectation, HitTime, JobExpectation, JobObserved, TargetRecord, Verdict};
use crate::lifecycle::PodHistory;
use crate::lifecycle::history::BackoffState;
use crate::lifecycle::history::ContainerHistory;
use crate::lifecycle::snapshot::ContainerKind;

fn container<'a>(h: &'a PodHistory, name: &str) -> Option<&'a ContainerHistory> {
    h.containers.iter().find(|c| c.name == name)
}

/// Consecutive repeats folded: True, True, False → True, False.
fn folded<'a>(items: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for s in items {
        if out.last() != Some(&s) {
            out.push(s);
        }
    }
    out
}

/// Checks every expectation against the pods' reports (`pods`, the histories the operator
/// recorded) and the rest of the `evidence`. A pod-level expectation must hold for every pod
/// in `pods` (one pod, or a Job's pods).
#[must_use]
pub fn evaluate(expectations: &[Expectation], pods: &[PodHistory], evidence: &Evidence) -> Vec<Verdict> {
    expectations
        .iter()
        .map(|e| match e {
            Expectation::Job(j) => evaluate_job(j, pods, evidence.job.as_ref()),
            Expectation::MaxUnready(max) => super::rollout::max_unready(*max, pods, evidence.deployment.as_ref()),
            Expectation::RolloutSeconds(r) => super::rollout::rollout_seconds(r, evidence.deployment.as_ref()),
            Expectation::EndpointRemovedBeforeSigterm(t) => super::rollout::endpoint_before_sigterm(t, pods, evidence.deployment.as_ref()),
            _ => evaluate_on_every_pod(e, pods, evidence),
        })
        .collect()
}

fn evaluate_on_every_pod(e: &Expectation, pods: &[PodHistory], evidence: &Evidence) -> Verdict {
    let each: Vec<(&PodHistory, Verdict)> = pods.iter().map(|h| (h, evaluate_one(e, h, evidence))).collect();
    match each.as_slice() {
        [] => {
            // Only the expectation's name and expected value are wanted here.
            let unobserved = evaluate_one(e, &PodHistory::new("", ""), evidence);
            verdict(unobserved.name, false, unobserved.expected, "no pod observed".into())
        }
        [(_, only)] => only.clone(),
        [(_, first), ..] => match each.iter().find(|(_, v)| !v.passed) {
            Some((h, v)) => verdict(v.name.clone(), false, v.expected.clone(), format!("pod {}: {}", h.pod, v.observed)),
            None => verdict(first.name.clone(), true, first.expected.clone(), format!("all {} pods: {}", pods.len(), first.observed)),
        },
    }
}

/// The most runs of app containers that overlapped in time, from the kubelet's startedAt and
/// finishedAt (1 s resolution). Runs touching at one second do not overlap: a run that starts
/// after another ended can only read as starting in the same second, never earlier.
#[must_use]
pub fn max_concurrent_runs(pods: &[PodHistory]) -> usize {
    // At one instant: ends of runs that began earlier, then starts, then ends of runs that
    // began at that instant too (a run inside one second must end after it started).
    const END_OF_EARLIER: u8 = 0;
    const START: u8 = 1;
    const END_OF_SAME_SECOND: u8 = 2;
    let mut edges: Vec<(Timestamp, u8)> = Vec::new();
    for c in pods.iter().flat_map(|h| h.containers.iter()).filter(|c| c.kind == ContainerKind::App) {
        for t in c.terminations.iter().map(|r| &r.termination) {
            if let (Some(s), Some(f)) = (t.started_at, t.finished_at) {
                edges.push((s, START));
                edges.push((f, if f > s { END_OF_EARLIER } else { END_OF_SAME_SECOND }));
            }
        }
    }
    edges.sort_unstable();
    let (mut now, mut most) = (0usize, 0usize);
    for (_, edge) in edges {
        if edge == START {
            now += 1;
            most = most.max(now);
        } else {
            debug_assert!(now > 0, "every end follows its start");
            now = now.saturating_sub(1);
        }
    }
    most
}

fn evaluate_job(j: &JobExpectation, pods: &[PodHistory], job: Option<&JobObserved>) -> Verdict {
    let Some(job) = job else {
        return verdict("job".into(), false, "a Job".into(), "this experiment ran no Job".into());
    };
    let concurrent = i32::try_from(max_concurrent_runs(pods)).unwrap_or(i32::MAX);
    let mut expected = Vec::new();
    let mut observed = Vec::new();
    let mut ok = true;
    if let Some(n) = j.succeeded {
        ok &= job.succeeded == n;
        expected.push(format!("succeeded {n}"));
        observed.push(format!("succeeded {}", job.succeeded));
    }
    if let Some(n) = j.failed {
        ok &= job.failed == n;
        expected.push(format!("failed {n}"));
        observed.push(format!("failed {}", job.failed));
    }
    if let Some(c) = &j.condition {
        ok &= job.true_conditions.contains(c);
        expected.push(format!("{c}=True"));
        observed.push(if job.true_conditions.is_empty() { "no condition True".into() } else { job.true_conditions.join(",") + "=True" });
    }
    if j.min_concurrent.is_some() || j.max_concurrent.is_some() {
        let (lo, hi) = (j.min_concurrent.unwrap_or(0), j.max_concurrent.unwrap_or(i32::MAX));
        ok &= (lo..=hi).contains(&concurrent);
        expected.push(match j.max_concurrent {
            Some(hi) => format!("{lo}..={hi} running at once"),
            None => format!(">= {lo} running at once"),
        });
        observed.push(format!("{concurrent} running at once"));
    }
    verdict("job".into(), ok && !expected.is_empty(), expected.join(", "), observed.join(", "))
}

/// True if `wanted` appears in `seen` in order, not necessarily adjacent.
fn is_subsequence(wanted: &[String], seen: &[String]) -> bool {
    let mut rest = seen.iter();
    wanted.iter().all(|w| rest.any(|s| s == w))
}

pub(super) fn verdict(name: String, passed: bool, expected: String, observed: String) -> Verdict {
    Verdict { name, passed, expected, observed }
}

fn evaluate_one(e: &Expectation, h: &PodHistory, evidence: &Evidence) -> Verdict {
    let created = evidence.created_at;
    match e {
        Expectation::TerminationSeconds(t) => termination_seconds(t, h, evidence),
        Expectation::HookOrder(o) => {
            let seen: Vec<String> = evidence.target(o.port).map(|t| t.events.iter().map(|e| e.kind.clone()).collect()).unwrap_or_default();
            let ok = is_subsequence(&o.events, &seen);
            let relevant: Vec<&str> = seen.iter().map(String::as_str).filter(|k| !k.starts_with("tcp-") && *k != "listening").collect();
            verdict(
                "hook order".into(),
                ok,
                o.events.join(" → "),
                if seen.is_empty() { "target not reachable".into() } else { relevant.join(" → ") },
            )
        }
        Expectation::ReadyAfterStartup(r) => ready_after_startup(r, h),
        Expectation::ProbeInterval(p) => probe_interval(p, evidence.target(p.port).map(|t| t.hits.as_slice())),
        Expectation::RestartsIncrease(r) => restarts_increase(r, h),
        Expectation::Restarts(r) => {
            let observed = container(h, &r.container).map(|c| c.restart_count);
            let ok = observed.is_some_and(|n| n >= r.min && r.max.is_none_or(|m| n <= m));
            let expected = match r.max {
                Some(m) if m == r.min => format!("{m}"),
                Some(m) => format!("{}..={m}", r.min),
                None => format!(">= {}", r.min),
            };
            verdict(format!("restarts of {}", r.container), ok, expected, observed.map_or("no such container".into(), |n| n.to_string()))
        }
        Expectation::LastTermination(t) => {
            let last = container(h, &t.container).and_then(|c| c.terminations.back()).map(|r| &r.termination);
            let signal_of =
                |l: &crate::lifecycle::snapshot::Termination| l.signal.or((129..=192).contains(&l.exit_code).then_some(l.exit_code - 128));
            let ok = last.is_some_and(|l| {
                t.exit_code.is_none_or(|c| c == l.exit_code)
                    && t.reason.as_ref().is_none_or(|r| l.reason.as_ref() == Some(r))
                    && t.signal.is_none_or(|s| signal_of(l) == Some(s))
            });
            let mut expected = format!(
                "exit code {} reason {}",
                t.exit_code.map_or("any".into(), |c| c.to_string()),
                t.reason.as_deref().unwrap_or("any")
            );
            if let Some(s) = t.signal {
                expected.push_str(&format!(" signal {s}"));
            }
            let observed = last.map_or("no termination".into(), |l| {
                let signal = signal_of(l).map_or(String::new(), |s| format!(" signal {s}"));
                format!("exit code {} reason {}{signal}", l.exit_code, l.reason.as_deref().unwrap_or("-"))
            });
            verdict(format!("last termination of {}", t.container), ok, expected, observed)
        }
        Expectation::Event(ev) => {
            let matching: u32 = h
                .events
                .iter()
                .filter(|x| x.reason == ev.reason && ev.message_contains.as_ref().is_none_or(|m| x.message.contains(m.as_str())))
                .map(|x| x.count)
                .sum();
            let what = match &ev.message_contains {
                Some(m) => format!("{} containing '{m}'", ev.reason),
                None => ev.reason.clone(),
            };
            let ok = (matching > 0) == ev.seen;
            verdict(
                format!("event {what}"),
                ok,
                if ev.seen { "seen".into() } else { "never seen".into() },
                if matching > 0 { format!("seen {matching}x") } else { "not seen".into() },
            )
        }
        Expectation::ConditionSequence(seq) => {
            let observed = folded(h.conditions.iter().filter(|c| c.type_ == seq.type_).map(|c| c.status.as_str()));
            let ok = observed == seq.statuses.iter().map(String::as_str).collect::<Vec<_>>();
            verdict(format!("{} sequence", seq.type_), ok, seq.statuses.join(" → "), observed.join(" → "))
        }
        Expectation::PhaseSequence(phases) => {
            let observed = folded(h.phases.iter().map(|p| p.phase.as_str()));
            let ok = observed == phases.iter().map(String::as_str).collect::<Vec<_>>();
            verdict("phase sequence".into(), ok, phases.join(" → "), observed.join(" → "))
        }
        Expectation::FinalPhase(want) => {
            let last = h.phases.back().map(|p| p.phase.as_str());
            verdict("final phase".into(), last == Some(want.as_str()), want.clone(), last.unwrap_or("none seen").to_string())
        }
        Expectation::NeverReadyForSeconds(n) => {
            let n = *n;
            let first_ready = h.first_true("Ready").map(|at| at.duration_since(created).as_secs_f64());
            let ok = first_ready.is_none_or(|s| s >= n);
            verdict(
                format!("not Ready for {n}s"),
                ok,
                format!("Ready no earlier than {n}s"),
                first_ready.map_or("never Ready".into(), |s| format!("Ready at {s:.0}s")),
            )
        }
        Expectation::Backoff(b) => {
            let Some(c) = container(h, &b.container) else {
                return verdict(format!("back-off of {}", b.container), false, "restarts on the curve".into(), "no such container".into());
            };
            let measured: Vec<_> = c.restarts.iter().filter(|r| r.fits_curve.is_some()).collect();
            let shown = |r: &&crate::lifecycle::history::Restart| {
                let announced = r.announced_seconds.map_or(String::new(), |a| format!(", announced {a:.0}s"));
                format!("#{} {:.0}s vs {:.0}s{announced}", r.number, r.measured_seconds.unwrap_or(-1.0), r.expected_seconds)
            };
            let off: Vec<String> = measured.iter().filter(|r| r.fits_curve == Some(false)).map(shown).collect();
            let unmeasured: Vec<String> = c.restarts.iter().filter(|r| r.fits_curve.is_none()).map(|r| format!("#{}", r.number)).collect();
            // A restart left out quietly could hide one off the curve: it fails unless the case says why.
            let unmeasured_ok = unmeasured.is_empty() || b.unmeasured_allowed_because.is_some();
            let ok = off.is_empty() && unmeasured_ok && measured.len() >= b.min_restarts as usize;
            let mut observed = if off.is_empty() {
                measured
                    .iter()
                    .map(|r| format!("#{} {:.0}s/{:.0}s", r.number, r.measured_seconds.unwrap_or(-1.0), r.expected_seconds))
                    .collect::<Vec<_>>()
                    .join(", ")
            } else {
                format!("off the curve: {}", off.join(", "))
            };
            if !unmeasured.is_empty() {
                let why = b.unmeasured_allowed_because.as_ref().map_or(String::new(), |w| format!(", allowed: {w}"));
                observed.push_str(&format!(" (not measurable: {}{why})", unmeasured.join(", ")));
            }
            let mut expected = format!(">= {} restarts, each on the curve", b.min_restarts);
            let mut ok = ok;
            if let Some(cap) = b.cap_seconds {
                let (cap_ok, seen) = backoff_cap(c, cap);
                ok &= cap_ok;
                expected.push_str(&format!("; announced back-off capped at {cap:.0}s (reached, then held)"));
                observed.push_str(&format!("; announced {seen}"));
            }
            verdict(format!("back-off of {}", b.container), ok, expected, observed)
        }
        Expectation::ProbeHits(p) => {
            let total: Option<u64> = evidence.target(p.port).map(|t| t.counters.get(&p.probe).map_or(0, |r| r.values().sum()));
            let ok = total.is_some_and(|n| n >= p.min && p.max.is_none_or(|m| n <= m));
            let expected = match p.max {
                Some(m) => format!("{}..={m}", p.min),
                None => format!(">= {}", p.min),
            };
            verdict(format!("{} probe hits", p.probe), ok, expected, total.map_or("target not reachable".into(), |n| n.to_string()))
        }
        // Judged on the Job as a whole by `evaluate`, never per pod.
        Expectation::Job(_)
        | Expectation::MaxUnready(_)
        | Expectation::RolloutSeconds(_)
        | Expectation::EndpointRemovedBeforeSigterm(_) => {
            verdict("workload".into(), false, "the workload as a whole".into(), "not a pod-level expectation".into())
        }
    }
}

fn termination_seconds(t: &crate::crd::experiment::SecondsRange, h: &PodHistory, evidence: &Evidence) -> Verdict {
    use crate::crd::experiment::TerminationFrom;
    let finished = container(h, &t.container).and_then(|c| c.terminations.back()).and_then(|r| r.termination.finished_at);
    let (start, what, missing) = match t.from {
        TerminationFrom::Delete => (evidence.deleted_at, "delete", "no delete action ran"),
        TerminationFrom::Sigterm => {
            (evidence.target(t.port).and_then(TargetRecord::last_sigterm), "SIGTERM", "the target recorded no SIGTERM")
        }
    };
    let took = match (start, finished) {
        (Some(s), Some(f)) => Some(f.duration_since(s).as_secs_f64()),
        _ => None,
    };
    let ok = took.is_some_and(|s| s >= t.min && s <= t.max);
    let observed = match (start, took) {
        (None, _) => missing.to_string(),
        (_, None) => "no termination recorded".to_string(),
        (_, Some(s)) => format!("{s:.1}s"),
    };
    verdict(format!("termination of {} after {what}", t.container), ok, format!("{}s..={}s", t.min, t.max), observed)
}

/// The announced back-offs in order (each restart's, then the current one): the cap holds if
/// the largest equals `cap` and was announced at least twice (it stopped doubling).
fn backoff_cap(c: &ContainerHistory, cap: f64) -> (bool, String) {
    let mut announced: Vec<f64> = c.restarts.iter().filter_map(|r| r.announced_seconds).collect();
    if let BackoffState::Waiting { announced_seconds, .. } = c.backoff {
        announced.push(announced_seconds);
    }
    let top = announced.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let at_cap = announced.iter().filter(|a| (**a - cap).abs() < 0.5).count();
    let ok = (top - cap).abs() < 0.5 && at_cap >= 2;
    let seen = announced.iter().map(|a| format!("{a:.0}s")).collect::<Vec<_>>().join(", ");
    (ok, if seen.is_empty() { "nothing".into() } else { seen })
}

/// The restart counts in the order the kubelet reported them (from each observed container
/// state): they must never go down, and must reach `min`.
fn restarts_increase(r: &crate::crd::experiment::CountRange, h: &PodHistory) -> Verdict {
    let name = format!("restart count of {} only increases", r.container);
    let expected = format!("never decreasing, up to >= {}", r.min);
    let Some(c) = container(h, &r.container) else {
        return verdict(name, false, expected, "no such container".into());
    };
    let counts: Vec<i32> = {
        let mut v: Vec<i32> = c.states.iter().map(|s| s.restart_count).collect();
        v.dedup();
        v
    };
    let decreases = counts.windows(2).any(|w| w[1] < w[0]);
    let numbers_increase = c.restarts.iter().zip(c.restarts.iter().skip(1)).all(|(a, b)| b.number > a.number);
    let ok = !decreases && numbers_increase && c.restart_count >= r.min && r.max.is_none_or(|m| c.restart_count <= m);
    let observed = counts.iter().map(ToString::to_string).collect::<Vec<_>>().join(" → ");
    verdict(name, ok, expected, if observed.is_empty() { "no state observed".into() } else { observed })
}

fn ready_after_startup(r: &crate::crd::experiment::ReadyAfterStartup, h: &PodHistory) -> Verdict {
    let name = format!("Ready after {} started", r.container);
    let expected = format!("Ready within {}s after startup succeeded, not before", r.max_seconds);
    let Some(c) = container(h, &r.container) else {
        return verdict(name, false, expected, "no such container".into());
    };
    let Some(started) = c.started.iter().find(|f| f.value).map(|f| f.at) else {
        return verdict(name, false, expected, "startup never succeeded".into());
    };
    // The condition's time is the kubelet's (1 s resolution); `started` is when we saw it.
    let ready = h.first_true("Ready");
    let Some(ready) = ready else {
        return verdict(name, false, expected, "never Ready".into());
    };
    let gap = ready.duration_since(started).as_secs_f64();
    // One second of slack below zero: lastTransitionTime is truncated to the second.
    let ok = gap >= -1.0 && gap <= r.max_seconds;
    verdict(name, ok, expected, format!("Ready {gap:.1}s after startup succeeded"))
}

fn probe_interval(p: &crate::crd::experiment::ProbeIntervalExpectation, hits: Option<&[HitTime]>) -> Verdict {
    let name = format!("{} probe interval", p.probe);
    let expected = format!("every gap {}s..={}s, >= {} gaps", p.min_seconds, p.max_seconds, p.min_gaps);
    let Some(hits) = hits else {
        return verdict(name, false, expected, "target not reachable".into());
    };
    let mine: Vec<&HitTime> = hits.iter().filter(|h| h.probe == p.probe).collect();
    // Gaps within one run only: a restart resets the prober's schedule.
    let gaps: Vec<f64> =
        mine.windows(2).filter(|w| w[0].run == w[1].run).map(|w| w[1].at_ms.saturating_sub(w[0].at_ms) as f64 / 1000.0).collect();
    let outside: Vec<String> = gaps.iter().filter(|g| **g < p.min_seconds || **g > p.max_seconds).map(|g| format!("{g:.2}s")).collect();
    let ok = outside.is_empty() && gaps.len() >= p.min_gaps as usize;
    let lo = gaps.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = gaps.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let observed = if gaps.is_empty() {
        format!("{} hits, no gap", mine.len())
    } else if outside.is_empty() {
        format!("{} gaps, {lo:.2}s..{hi:.2}s", gaps.len())
    } else {
        format!("{} gaps, outside: {}", gaps.len(), outside.join(", "))
    };
    verdict(name, ok, expected, observed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::experiment::{ConditionSequence, CountRange, EventExpectation, ProbeHitsExpectation, TargetEvent};
    use crate::lifecycle::history::{ConditionTransition, ContainerHistory, EventRecord, PhaseTransition};
    use crate::lifecycle::snapshot::ContainerKind;
    use crate::lifecycle::snapshot::Phase;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    /// Evidence of an experiment created at t(0) that recorded nothing else.
    fn at_zero() -> Evidence {
        Evidence { created_at: t(0), ..Default::default() }
    }

    fn with_target(record: TargetRecord) -> Evidence {
        Evidence { targets: vec![record], ..at_zero() }
    }

    fn history() -> PodHistory {
        let mut h = PodHistory::new("p", "u");
        let mut c: ContainerHistory = serde_json::from_value(serde_json::json!({
            "name": "target", "kind": "App", "restartCount": 2, "states": [], "ready": [], "started": [],
            "terminations": [], "restarts": [], "backoff": {"state": "none"}
        }))
        .unwrap();
        c.kind = ContainerKind::App;
        h.containers.push(c);
        for (status, at) in [("False", 1), ("True", 12), ("True", 13), ("False", 30)] {
            h.conditions.push_back(ConditionTransition {
                type_: "Ready".into(),
                status: status.into(),
                reason: None,
                message: None,
                at: t(at),
                source: Default::default(),
            });
        }
        h.events.push_back(EventRecord {
            uid: "e".into(),
            reason: "Killing".into(),
            type_: "Normal".into(),
            message: "Container target failed liveness probe, will be restarted".into(),
            container: Some("target".into()),
            count: 2,
            first_seen: None,
            last_seen: None,
        });
        h
    }

    #[test]
    fn each_kind_of_expectation_reports_observed_next_to_expected() {
        let h = history();
        let mut counters = std::collections::BTreeMap::new();
        counters.entry("liveness".to_string()).or_insert_with(std::collections::BTreeMap::new).insert("ok".to_string(), 7);
        let exps = vec![
            Expectation::Restarts(CountRange { container: "target".into(), min: 1, max: None }),
            Expectation::Restarts(CountRange { container: "target".into(), min: 0, max: Some(0) }),
            Expectation::Event(EventExpectation { reason: "Killing".into(), message_contains: Some("liveness".into()), seen: true }),
            Expectation::Event(EventExpectation { reason: "ProbeWarning".into(), message_contains: None, seen: false }),
            Expectation::ConditionSequence(ConditionSequence {
                type_: "Ready".into(),
                statuses: vec!["False".into(), "True".into(), "False".into()],
            }),
            Expectation::NeverReadyForSeconds(10.0),
            Expectation::NeverReadyForSeconds(20.0),
            Expectation::ProbeHits(ProbeHitsExpectation { probe: "liveness".into(), min: 5, max: Some(10), port: 9090 }),
            Expectation::ProbeHits(ProbeHitsExpectation { probe: "liveness".into(), min: 1, max: None, port: 9190 }),
        ];
        let v = evaluate(&exps, &[h], &with_target(TargetRecord { port: 9090, counters, ..Default::default() }));
        let passed: Vec<bool> = v.iter().map(|v| v.passed).collect();
        assert_eq!(passed, [true, false, true, true, true, true, false, true, false]);
        assert_eq!((v[1].expected.as_str(), v[1].observed.as_str()), ("0", "2"));
        assert_eq!(v[2].observed, "seen 2x");
        assert_eq!(v[4].observed, "False → True → False");
        assert_eq!(v[6].observed, "Ready at 12s");
        assert_eq!(v[8].observed, "target not reachable");
    }

    #[test]
    fn hook_order_is_a_subsequence_and_termination_is_timed_from_the_delete() {
        use crate::crd::experiment::{HookOrder, SecondsRange, TerminationFrom};
        let mut h = history();
        let term = serde_json::json!({"run": 0, "exitCode": 0, "finishedAt": "2027-01-15T08:00:12Z"});
        h.containers[0].terminations.push_back(serde_json::from_value(term).unwrap());
        let kinds = ["start", "listening", "poststart", "tcp-open", "prestop", "sigterm"];
        let mut events: Vec<TargetEvent> = kinds.iter().map(|k| TargetEvent { kind: (*k).to_string(), at_ms: 0, run: 1 }).collect();
        // SIGTERM reached the target 5.5 s after the delete, 2.5 s before the container finished.
        events.last_mut().unwrap().at_ms = 1_800_000_009_500;
        let mut evidence = Evidence { deleted_at: Some(t(4)), ..with_target(TargetRecord { port: 9090, events, ..Default::default() }) };
        let order =
            |events: &[&str]| Expectation::HookOrder(HookOrder { events: events.iter().map(|s| s.to_string()).collect(), port: 9090 });
        let range = |min: f64, max: f64, from: TerminationFrom| {
            Expectation::TerminationSeconds(SecondsRange { container: "target".into(), min, max, from, port: 9090 })
        };
        let within = |min, max| range(min, max, TerminationFrom::Delete);
        let after_sigterm = |min, max| range(min, max, TerminationFrom::Sigterm);
        let v = evaluate(
            &[
                order(&["poststart", "prestop", "sigterm"]),
                order(&["sigterm", "prestop"]),
                within(5.0, 10.0),
                within(0.0, 5.0),
                after_sigterm(2.0, 3.0),
                after_sigterm(0.0, 2.0),
            ],
            &[h.clone()],
            &evidence,
        );
        assert_eq!(v.iter().map(|v| v.passed).collect::<Vec<_>>(), [true, false, true, false, true, false]);
        assert_eq!(v[1].observed, "start → poststart → prestop → sigterm");
        assert_eq!((v[2].observed.as_str(), v[4].observed.as_str()), ("8.0s", "2.5s"));
        evidence.targets[0].events.clear();
        let v = evaluate(&[after_sigterm(0.0, 9.0)], &[h], &evidence);
        assert_eq!(v[0].observed, "the target recorded no SIGTERM");
    }

    #[test]
    fn the_final_phase_is_the_last_one_observed() {
        let mut h = history();
        for (phase, at) in [(Phase::Pending, 0), (Phase::Running, 2), (Phase::Failed, 3)] {
            h.phases.push_back(PhaseTransition { phase, at: t(at), source: Default::default() });
        }
        let want = |p: &str| Expectation::FinalPhase(p.into());
        let v = evaluate(&[want("Failed"), want("Succeeded")], &[h], &at_zero());
        assert_eq!((v[0].passed, v[1].passed, v[1].observed.as_str()), (true, false, "Failed"));
    }

    fn hit(boot: u64, seq: u64, probe: &str, at_ms: u64) -> HitTime {
        HitTime { run: boot, seq, probe: probe.into(), at_ms, result: "ok".into() }
    }

    #[test]
    fn probe_intervals_are_measured_within_one_boot() {
        // A restart (boot 2) starts its own schedule: the gap across it is not a probe period.
        let hits = vec![
            hit(1, 0, "readiness", 1000),
            hit(1, 1, "liveness", 1500),
            hit(1, 2, "readiness", 3000),
            hit(1, 3, "readiness", 5100),
            hit(2, 0, "readiness", 60_000),
            hit(2, 1, "readiness", 62_000),
        ];
        let evidence = with_target(TargetRecord { port: 9090, hits, ..Default::default() });
        let interval = |min: f64, max: f64, min_gaps: u32| {
            Expectation::ProbeInterval(crate::crd::experiment::ProbeIntervalExpectation {
                probe: "readiness".into(),
                min_seconds: min,
                max_seconds: max,
                min_gaps,
                port: 9090,
            })
        };
        let v = evaluate(&[interval(1.5, 2.5, 3), interval(1.5, 2.05, 3), interval(1.5, 2.5, 4)], &[history()], &evidence);
        assert_eq!(v.iter().map(|v| v.passed).collect::<Vec<_>>(), [true, false, false]);
        assert_eq!(v[0].observed, "3 gaps, 2.00s..2.10s");
        assert_eq!(v[1].observed, "3 gaps, outside: 2.10s");
    }

    #[test]
    fn ready_after_startup_is_timed_from_the_started_flip() {
        use crate::lifecycle::history::Flip;
        let mut h = history();
        let want = |max: f64| {
            Expectation::ReadyAfterStartup(crate::crd::experiment::ReadyAfterStartup { container: "target".into(), max_seconds: max })
        };
        let v = evaluate(&[want(3.0)], &[h.clone()], &at_zero());
        assert_eq!(v[0].observed, "startup never succeeded");
        h.containers[0].started.push_back(Flip { value: false, at: t(1) });
        h.containers[0].started.push_back(Flip { value: true, at: t(10) });
        // Ready turned True at 12 s in the fixture: 2 s after startup.
        let v = evaluate(&[want(3.0), want(1.0)], &[h.clone()], &at_zero());
        assert_eq!((v[0].passed, v[1].passed, v[0].observed.as_str()), (true, false, "Ready 2.0s after startup succeeded"));
        // Ready long before startup succeeded is wrong however small the bound.
        h.containers[0].started.back_mut().unwrap().at = t(20);
        assert!(!evaluate(&[want(3.0)], &[h], &at_zero())[0].passed);
    }

    #[test]
    fn the_backoff_cap_must_be_reached_and_held() {
        use crate::crd::experiment::BackoffExpectation;
        let mut h = history();
        let restart = |n: i32, announced: f64| -> crate::lifecycle::history::Restart {
            serde_json::from_value(
                serde_json::json!({"number": n, "backoffStep": n, "announcedSeconds": announced, "expectedSeconds": announced,
                    "measuredSeconds": announced + 3.0, "fitsCurve": true}),
            )
            .unwrap()
        };
        for (n, a) in [(2, 10.0), (3, 20.0), (4, 40.0), (5, 80.0), (6, 160.0), (7, 300.0)] {
            h.containers[0].restarts.push_back(restart(n, a));
        }
        let capped = |cap: f64| {
            Expectation::Backoff(BackoffExpectation {
                container: "target".into(),
                min_restarts: 0,
                cap_seconds: Some(cap),
                unmeasured_allowed_because: None,
            })
        };
        // Reached once but not yet held.
        assert!(!evaluate(&[capped(300.0)], &[h.clone()], &at_zero())[0].passed);
        h.containers[0].backoff = BackoffState::Waiting { announced_seconds: 300.0, next_restart_after: None };
        let v = evaluate(&[capped(300.0), capped(600.0)], &[h.clone()], &at_zero());
        assert_eq!((v[0].passed, v[1].passed), (true, false));
        assert!(v[0].observed.ends_with("announced 10s, 20s, 40s, 80s, 160s, 300s, 300s"), "{}", v[0].observed);
        // Doubling past the cap breaks it.
        h.containers[0].backoff = BackoffState::Waiting { announced_seconds: 600.0, next_restart_after: None };
        assert!(!evaluate(&[capped(300.0)], &[h], &at_zero())[0].passed);
    }

    #[test]
    fn restarts_that_could_not_be_measured_fail_unless_the_case_says_why() {
        use crate::crd::experiment::BackoffExpectation;
        let mut h = history();
        let restart = |n: i32, fits: Option<bool>| -> crate::lifecycle::history::Restart {
            let mut r = serde_json::json!({"number": n, "backoffStep": n, "expectedSeconds": 10.0, "measuredSeconds": 12.0});
            if let Some(f) = fits {
                r["fitsCurve"] = f.into();
            }
            serde_json::from_value(r).unwrap()
        };
        h.containers[0].restarts.extend([restart(1, Some(true)), restart(2, None), restart(3, Some(true))]);
        let backoff = |because: Option<&str>| {
            Expectation::Backoff(BackoffExpectation {
                container: "target".into(),
                min_restarts: 2,
                cap_seconds: None,
                unmeasured_allowed_because: because.map(Into::into),
            })
        };
        let v = evaluate(&[backoff(None), backoff(Some("restart 2 overlaps a node reboot"))], &[h.clone()], &at_zero());
        assert_eq!((v[0].passed, v[1].passed), (false, true));
        assert!(v[0].observed.ends_with("(not measurable: #2)"), "{}", v[0].observed);
        assert!(v[1].observed.ends_with("(not measurable: #2, allowed: restart 2 overlaps a node reboot)"), "{}", v[1].observed);
        // One off the curve names what the kubelet announced next to what was applied.
        h.containers[0].restarts[2].fits_curve = Some(false);
        h.containers[0].restarts[2].announced_seconds = Some(20.0);
        let v = evaluate(&[backoff(Some("x"))], &[h], &at_zero());
        assert!(!v[0].passed);
        assert!(v[0].observed.starts_with("off the curve: #3 12s vs 10s, announced 20s"), "{}", v[0].observed);
    }

    fn run(started: i64, finished: i64) -> crate::lifecycle::history::TerminationRecord {
        let at = |s: i64| t(s).to_string();
        serde_json::from_value(serde_json::json!({"run": 0, "exitCode": 0, "startedAt": at(started), "finishedAt": at(finished)})).unwrap()
    }

    #[test]
    fn a_jobs_concurrency_counts_overlapping_runs_and_every_pod_is_checked() {
        use crate::crd::experiment::JobExpectation;
        let job_pods = |runs: [(i64, i64); 4]| -> Vec<PodHistory> {
            runs.into_iter()
                .enumerate()
                .map(|(i, (s, f))| {
                    let mut h = history();
                    h.pod = format!("job-{i}");
                    h.containers[0].terminations.push_back(run(s, f));
                    h.containers[0].restart_count = i32::from(i == 3);
                    h
                })
                .collect()
        };
        // Replacements starting in the second their predecessors ended: two at once, not three.
        assert_eq!(max_concurrent_runs(&job_pods([(0, 5), (1, 6), (5, 9), (6, 12)])), 2);
        // Runs that start and end within one second still count, and still end.
        assert_eq!(max_concurrent_runs(&job_pods([(0, 0), (5, 8), (20, 20), (30, 31)])), 1);
        assert_eq!(max_concurrent_runs(&job_pods([(0, 3), (2, 2), (2, 4), (9, 9)])), 3);
        // 0-5, 1-6 and 4-9 overlap from second 4: a third pod ran before one had ended.
        let pods = job_pods([(0, 5), (1, 6), (4, 9), (7, 12)]);
        assert_eq!(max_concurrent_runs(&pods), 3);
        assert_eq!(max_concurrent_runs(&pods[..2]), 2);
        let job = JobObserved { succeeded: 4, failed: 0, true_conditions: vec!["SuccessCriteriaMet".into(), "Complete".into()] };
        let evidence = Evidence { job: Some(job), ..at_zero() };
        let expect_job = |max: i32| {
            Expectation::Job(JobExpectation {
                succeeded: Some(4),
                failed: Some(0),
                condition: Some("Complete".into()),
                max_concurrent: Some(max),
                min_concurrent: Some(2),
            })
        };
        let no_restart = no_restart_for("target");
        let v = evaluate(&[expect_job(3), expect_job(2), no_restart], &pods, &evidence);
        assert_eq!(v.iter().map(|v| v.passed).collect::<Vec<_>>(), [true, false, false]);
        assert_eq!(v[1].observed, "succeeded 4, failed 0, SuccessCriteriaMet,Complete=True, 3 running at once");
        assert_eq!(v[2].observed, "pod job-3: 1");
        let v = evaluate(&[expect_job(3)], &pods, &at_zero());
        assert_eq!(v[0].observed, "this experiment ran no Job");
        assert_eq!(evaluate(&[no_restart_for("target")], &[], &at_zero())[0].observed, "no pod observed");
    }

    fn no_restart_for(c: &str) -> Expectation {
        Expectation::Restarts(crate::crd::experiment::CountRange { container: c.into(), min: 0, max: Some(0) })
    }

    #[test]
    fn a_signal_is_read_from_the_runtime_or_from_128_plus_signal() {
        use crate::crd::experiment::TerminationExpectation;
        let mut h = history();
        let ended = |code: i32| serde_json::from_value(serde_json::json!({"run": 0, "exitCode": code, "reason": "Error"})).unwrap();
        let want = |signal: i32| {
            Expectation::LastTermination(TerminationExpectation {
                container: "target".into(),
                exit_code: None,
                reason: None,
                signal: Some(signal),
            })
        };
        h.containers[0].terminations.push_back(ended(137));
        let v = evaluate(&[want(9), want(15)], &[h.clone()], &at_zero());
        assert_eq!((v[0].passed, v[1].passed), (true, false));
        assert_eq!(v[1].observed, "exit code 137 reason Error signal 9");
        h.containers[0].terminations.push_back(ended(1));
        assert!(!evaluate(&[want(9)], &[h], &at_zero())[0].passed, "exit 1 is no signal");
    }

    #[test]
    fn a_restart_count_that_goes_down_fails() {
        use crate::lifecycle::history::StateTransition;
        use crate::lifecycle::snapshot::ContainerState;
        let mut h = history();
        let state = |n: i32| -> StateTransition {
            StateTransition {
                state: ContainerState::Running { started_at: None },
                at: t(i64::from(n)),
                restart_count: n,
                source: Default::default(),
            }
        };
        for n in [0, 1, 1, 2] {
            h.containers[0].states.push_back(state(n));
        }
        let want =
            |min: i32| Expectation::RestartsIncrease(crate::crd::experiment::CountRange { container: "target".into(), min, max: None });
        let v = evaluate(&[want(2), want(3)], &[h.clone()], &at_zero());
        assert_eq!((v[0].passed, v[1].passed, v[0].observed.as_str()), (true, false, "0 → 1 → 2"));
        h.containers[0].states.push_back(state(1));
        let v = evaluate(&[want(2)], &[h], &at_zero());
        assert_eq!((v[0].passed, v[0].observed.as_str()), (false, "0 → 1 → 2 → 1"));
    }
}
