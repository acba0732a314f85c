//! Verdicts: each expectation of a ProbeExperiment checked against what was recorded. Pure:
//! the pod's history and the target's hit counters in, one verdict per expectation out, each
//! with the observed value next to the expected one.

use std::collections::BTreeMap;

use jiff::Timestamp;

use crate::crd::experiment::{Expectation, Verdict};
use crate::lifecycle::PodHistory;
use crate::lifecycle::history::ContainerHistory;

/// Probe hit counters per container port, from podlife-target's `GET /hits`
/// (`counters[probe][result]`).
pub type HitCounters = BTreeMap<u16, BTreeMap<String, BTreeMap<String, u64>>>;

/// What the experiment observed besides the pod's history.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Probe hit counters per control port (the last read before the pod went away).
    pub hits: HitCounters,
    /// podlife-target's lifecycle event kinds per control port, in order.
    pub target_events: BTreeMap<u16, Vec<String>>,
    /// When the delete action ran.
    pub deleted_at: Option<Timestamp>,
}

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

/// Checks every expectation; `created` is when the experiment's pod was created.
#[must_use]
pub fn evaluate(expectations: &[Expectation], history: &PodHistory, observed: &Observed, created: Timestamp) -> Vec<Verdict> {
    expectations.iter().map(|e| evaluate_one(e, history, observed, created)).collect()
}

/// True if `wanted` appears in `seen` in order, not necessarily adjacent.
fn is_subsequence(wanted: &[String], seen: &[String]) -> bool {
    let mut rest = seen.iter();
    wanted.iter().all(|w| rest.any(|s| s == w))
}

fn verdict(name: String, passed: bool, expected: String, observed: String) -> Verdict {
    Verdict { name, passed, expected, observed }
}

fn evaluate_one(e: &Expectation, h: &PodHistory, observed: &Observed, created: Timestamp) -> Verdict {
    let hits = &observed.hits;
    if let Some(t) = &e.termination_seconds {
        let finished = container(h, &t.container).and_then(|c| c.terminations.back()).and_then(|r| r.termination.finished_at);
        let took = match (observed.deleted_at, finished) {
            (Some(d), Some(f)) => Some(f.duration_since(d).as_secs_f64()),
            _ => None,
        };
        let ok = took.is_some_and(|s| s >= t.min && s <= t.max);
        let observed = match (observed.deleted_at, took) {
            (None, _) => "no delete action ran".to_string(),
            (_, None) => "no termination recorded".to_string(),
            (_, Some(s)) => format!("{s:.0}s"),
        };
        return verdict(format!("termination of {} after delete", t.container), ok, format!("{}s..={}s", t.min, t.max), observed);
    }
    if let Some(o) = &e.hook_order {
        let seen = observed.target_events.get(&o.port).cloned().unwrap_or_default();
        let ok = is_subsequence(&o.events, &seen);
        let relevant: Vec<&str> = seen.iter().map(String::as_str).filter(|k| !k.starts_with("tcp-") && *k != "listening").collect();
        return verdict(
            "hook order".into(),
            ok,
            o.events.join(" → "),
            if seen.is_empty() { "target not reachable".into() } else { relevant.join(" → ") },
        );
    }
    if let Some(r) = &e.restarts {
        let observed = container(h, &r.container).map(|c| c.restart_count);
        let ok = observed.is_some_and(|n| n >= r.min && r.max.is_none_or(|m| n <= m));
        let expected = match r.max {
            Some(m) if m == r.min => format!("{m}"),
            Some(m) => format!("{}..={m}", r.min),
            None => format!(">= {}", r.min),
        };
        return verdict(
            format!("restarts of {}", r.container),
            ok,
            expected,
            observed.map_or("no such container".into(), |n| n.to_string()),
        );
    }
    if let Some(t) = &e.last_termination {
        let last = container(h, &t.container).and_then(|c| c.terminations.back()).map(|r| &r.termination);
        let ok = last.is_some_and(|l| {
            t.exit_code.is_none_or(|c| c == l.exit_code) && t.reason.as_ref().is_none_or(|r| l.reason.as_ref() == Some(r))
        });
        let expected =
            format!("exit code {} reason {}", t.exit_code.map_or("any".into(), |c| c.to_string()), t.reason.as_deref().unwrap_or("any"));
        let observed =
            last.map_or("no termination".into(), |l| format!("exit code {} reason {}", l.exit_code, l.reason.as_deref().unwrap_or("-")));
        return verdict(format!("last termination of {}", t.container), ok, expected, observed);
    }
    if let Some(ev) = &e.event {
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
        return verdict(
            format!("event {what}"),
            ok,
            if ev.seen { "seen".into() } else { "never seen".into() },
            if matching > 0 { format!("seen {matching}x") } else { "not seen".into() },
        );
    }
    if let Some(seq) = &e.condition_sequence {
        let observed = folded(h.conditions.iter().filter(|c| c.type_ == seq.type_).map(|c| c.status.as_str()));
        let ok = observed == seq.statuses.iter().map(String::as_str).collect::<Vec<_>>();
        return verdict(format!("{} sequence", seq.type_), ok, seq.statuses.join(" → "), observed.join(" → "));
    }
    if let Some(phases) = &e.phase_sequence {
        let observed = folded(h.phases.iter().map(|p| p.phase.as_str()));
        let ok = observed == phases.iter().map(String::as_str).collect::<Vec<_>>();
        return verdict("phase sequence".into(), ok, phases.join(" → "), observed.join(" → "));
    }
    if let Some(want) = &e.final_phase {
        let last = h.phases.back().map(|p| p.phase.as_str());
        return verdict("final phase".into(), last == Some(want.as_str()), want.clone(), last.unwrap_or("none seen").to_string());
    }
    if let Some(n) = e.never_ready_for_seconds {
        let first_ready =
            h.conditions.iter().find(|c| c.type_ == "Ready" && c.status == "True").map(|c| c.at.duration_since(created).as_secs_f64());
        let ok = first_ready.is_none_or(|s| s >= n);
        return verdict(
            format!("not Ready for {n}s"),
            ok,
            format!("Ready no earlier than {n}s"),
            first_ready.map_or("never Ready".into(), |s| format!("Ready at {s:.0}s")),
        );
    }
    if let Some(b) = &e.backoff {
        let Some(c) = container(h, &b.container) else {
            return verdict(format!("back-off of {}", b.container), false, "restarts on the curve".into(), "no such container".into());
        };
        let measured: Vec<_> = c.restarts.iter().filter(|r| r.fits_curve.is_some()).collect();
        let off: Vec<String> = measured
            .iter()
            .filter(|r| r.fits_curve == Some(false))
            .map(|r| format!("#{} {:.0}s vs {:.0}s", r.number, r.measured_seconds.unwrap_or(-1.0), r.expected_seconds))
            .collect();
        let ok = off.is_empty() && measured.len() >= b.min_restarts as usize;
        let mut observed = if off.is_empty() {
            measured
                .iter()
                .map(|r| format!("#{} {:.0}s/{:.0}s", r.number, r.measured_seconds.unwrap_or(-1.0), r.expected_seconds))
                .collect::<Vec<_>>()
                .join(", ")
        } else {
            format!("off the curve: {}", off.join(", "))
        };
        let unmeasured: Vec<String> = c.restarts.iter().filter(|r| r.fits_curve.is_none()).map(|r| format!("#{}", r.number)).collect();
        if !unmeasured.is_empty() {
            observed.push_str(&format!(" (not measurable: {})", unmeasured.join(", ")));
        }
        return verdict(format!("back-off of {}", b.container), ok, format!(">= {} restarts, each on the curve", b.min_restarts), observed);
    }
    if let Some(p) = &e.probe_hits {
        let total: Option<u64> = hits.get(&p.port).map(|c| c.get(&p.probe).map_or(0, |r| r.values().sum()));
        let ok = total.is_some_and(|n| n >= p.min && p.max.is_none_or(|m| n <= m));
        let expected = match p.max {
            Some(m) => format!("{}..={m}", p.min),
            None => format!(">= {}", p.min),
        };
        return verdict(format!("{} probe hits", p.probe), ok, expected, total.map_or("target not reachable".into(), |n| n.to_string()));
    }
    verdict("unknown expectation".into(), false, "one check per expectation".into(), "none set".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::experiment::{ConditionSequence, CountRange, EventExpectation, ProbeHitsExpectation};
    use crate::lifecycle::history::{ConditionTransition, ContainerHistory, EventRecord, PhaseTransition};
    use crate::lifecycle::snapshot::ContainerKind;
    use crate::lifecycle::snapshot::Phase;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
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
        let mut hits = HitCounters::new();
        hits.entry(9090).or_default().entry("liveness".into()).or_default().insert("ok".into(), 7);
        let exps = vec![
            Expectation { restarts: Some(CountRange { container: "target".into(), min: 1, max: None }), ..Default::default() },
            Expectation { restarts: Some(CountRange { container: "target".into(), min: 0, max: Some(0) }), ..Default::default() },
            Expectation {
                event: Some(EventExpectation { reason: "Killing".into(), message_contains: Some("liveness".into()), seen: true }),
                ..Default::default()
            },
            Expectation {
                event: Some(EventExpectation { reason: "ProbeWarning".into(), message_contains: None, seen: false }),
                ..Default::default()
            },
            Expectation {
                condition_sequence: Some(ConditionSequence {
                    type_: "Ready".into(),
                    statuses: vec!["False".into(), "True".into(), "False".into()],
                }),
                ..Default::default()
            },
            Expectation { never_ready_for_seconds: Some(10.0), ..Default::default() },
            Expectation { never_ready_for_seconds: Some(20.0), ..Default::default() },
            Expectation {
                probe_hits: Some(ProbeHitsExpectation { probe: "liveness".into(), min: 5, max: Some(10), port: 9090 }),
                ..Default::default()
            },
            Expectation {
                probe_hits: Some(ProbeHitsExpectation { probe: "liveness".into(), min: 1, max: None, port: 9190 }),
                ..Default::default()
            },
        ];
        let v = evaluate(&exps, &h, &Observed { hits, ..Default::default() }, t(0));
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
        use crate::crd::experiment::{HookOrder, SecondsRange};
        let mut h = history();
        let term = serde_json::json!({"run": 0, "exitCode": 0, "finishedAt": "2027-01-15T08:00:12Z"});
        h.containers[0].terminations.push_back(serde_json::from_value(term).unwrap());
        let mut observed = Observed { deleted_at: Some(t(4)), ..Default::default() };
        observed
            .target_events
            .insert(9090, ["start", "listening", "poststart", "tcp-open", "prestop", "sigterm"].map(String::from).to_vec());
        let order = |events: &[&str]| Expectation {
            hook_order: Some(HookOrder { events: events.iter().map(|s| s.to_string()).collect(), port: 9090 }),
            ..Default::default()
        };
        let within = |min: f64, max: f64| Expectation {
            termination_seconds: Some(SecondsRange { container: "target".into(), min, max }),
            ..Default::default()
        };
        let v = evaluate(
            &[order(&["poststart", "prestop", "sigterm"]), order(&["sigterm", "prestop"]), within(5.0, 10.0), within(0.0, 5.0)],
            &h,
            &observed,
            t(0),
        );
        assert_eq!(v.iter().map(|v| v.passed).collect::<Vec<_>>(), [true, false, true, false]);
        assert_eq!(v[1].observed, "start → poststart → prestop → sigterm");
        assert_eq!(v[2].observed, "8s");
    }

    #[test]
    fn the_final_phase_is_the_last_one_observed() {
        let mut h = history();
        for (phase, at) in [(Phase::Pending, 0), (Phase::Running, 2), (Phase::Failed, 3)] {
            h.phases.push_back(PhaseTransition { phase, at: t(at), source: Default::default() });
        }
        let want = |p: &str| Expectation { final_phase: Some(p.into()), ..Default::default() };
        let v = evaluate(&[want("Failed"), want("Succeeded")], &h, &Observed::default(), t(0));
        assert_eq!((v[0].passed, v[1].passed, v[1].observed.as_str()), (true, false, "Failed"));
    }

    #[test]
    fn an_empty_expectation_fails_rather_than_passes() {
        let v = evaluate(&[Expectation::default()], &history(), &Observed::default(), t(0));
        assert!(!v[0].passed);
    }
}
