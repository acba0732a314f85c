//! Audits reports against an independent recording of the same pods: the chaos suite's
//! judge (`tests/chaos`).
//!
//! # Expected flow
//! 1. A watcher of its own feeds every Pod and Event it sees into a [`Reference`].
//! 2. [`audit_pod`] compares a pod's `PodLifecycle` status with its reference and names each
//!    lost, duplicated or mis-measured entry, with when it happened.
//!
//! # Guarantees
//! - The reference is built from the raw Kubernetes objects, not through the lifecycle model.
//! - Pure: no I/O, no clock except for entries whose time the reference cannot know.

pub mod compare;
pub mod reference;

pub use compare::{Category, Finding, Kind, PodAudit, audit_pod};
pub use reference::{PodReference, Reference};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::recording::{Observed, Recording};
    use crate::lifecycle::{BackoffProfile, PodHistory};

    /// Feeds a recording from the real kubelet (e2e/record-fixture) to both the reference and
    /// the model, as an operator that missed nothing would see it.
    fn both(jsonl: &str) -> (PodReference, PodHistory) {
        let recording = Recording::parse(jsonl).unwrap();
        let mut reference = Reference::default();
        let history = recording
            .replay(&BackoffProfile::default(), |observed| match observed {
                Observed::Pod { at, pod, deleted } => reference.observe_pod(pod, *at, *deleted),
                Observed::Event { at, event } => reference.observe_event(event, *at),
            })
            .unwrap();
        (reference.pods.into_values().next().unwrap(), history)
    }

    fn kinds(audit: &PodAudit) -> Vec<(Kind, Category)> {
        audit.findings.iter().map(|f| (f.kind, f.category)).collect()
    }

    #[test]
    fn a_report_that_missed_nothing_matches_the_reference() {
        for fixture in [include_str!("../../tests/fixtures/crashloop.jsonl"), include_str!("../../tests/fixtures/liveness.jsonl")] {
            let (reference, report) = both(fixture);
            let audit = audit_pod(&reference, &report, 600.0);
            assert!(audit.findings.is_empty(), "{:#?}", audit.findings);
            let restarts = audit.observed.iter().filter(|(c, _)| *c == Category::Restart).count();
            assert!(restarts >= 2 && audit.observed.len() > 20, "{} observed, {restarts} restarts", audit.observed.len());
        }
    }

    #[test]
    fn a_lost_restart_a_duplicated_termination_and_a_wrong_gap_are_each_named() {
        let (reference, report) = both(include_str!("../../tests/fixtures/crashloop.jsonl"));
        let mut lost = report.clone();
        lost.containers[0].restarts.remove(1);
        assert_eq!(kinds(&audit_pod(&reference, &lost, 600.0)), [(Kind::Lost, Category::Restart)]);
        let mut twice = report.clone();
        let copy = twice.containers[0].terminations[0].clone();
        twice.containers[0].terminations.push_back(copy);
        assert_eq!(kinds(&audit_pod(&reference, &twice, 600.0)), [(Kind::Duplicated, Category::Termination)]);
        let mut wrong = report.clone();
        wrong.containers[0].restarts[2].measured_seconds = Some(99.0);
        assert_eq!(kinds(&audit_pod(&reference, &wrong, 600.0)), [(Kind::MisMeasured, Category::Restart)]);
        let mut step = report.clone();
        step.containers[0].restarts[3].backoff_step += 1;
        assert_eq!(kinds(&audit_pod(&reference, &step, 600.0)), [(Kind::MisMeasured, Category::Restart)]);
    }

    #[test]
    fn one_lost_condition_change_is_one_finding_and_a_wrong_time_is_mis_measured() {
        let (reference, report) = both(include_str!("../../tests/fixtures/liveness.jsonl"));
        let ready = |h: &PodHistory| h.conditions.iter().position(|c| c.type_ == "Ready" && c.status == "False").unwrap();
        let mut lost = report.clone();
        let first_false = ready(&lost);
        let next_true = lost.conditions.iter().enumerate().skip(first_false + 1).find(|(_, c)| c.type_ == "Ready").map(|(i, _)| i).unwrap();
        let later = lost.conditions.iter().skip(next_true + 1).filter(|c| c.type_ == "Ready").count();
        assert!(later >= 2, "the fixture flips Ready several times");
        // Losing a False and the True after it (a flap missed whole) must not make every later
        // change look mis-timed: two findings, both lost.
        lost.conditions.remove(next_true);
        lost.conditions.remove(first_false);
        assert_eq!(kinds(&audit_pod(&reference, &lost, 600.0)), [(Kind::Lost, Category::Condition), (Kind::Lost, Category::Condition)]);
        let mut late = report.clone();
        let i = ready(&late);
        late.conditions[i].at += jiff::SignedDuration::from_secs(3);
        assert_eq!(kinds(&audit_pod(&reference, &late, 600.0)), [(Kind::MisMeasured, Category::Condition)]);
    }

    #[test]
    fn entries_the_report_dropped_to_its_bounds_are_declared_not_lost() {
        let (reference, report) = both(include_str!("../../tests/fixtures/liveness.jsonl"));
        let mut trimmed = report.clone();
        trimmed.containers[0].ready.pop_front();
        assert_eq!(kinds(&audit_pod(&reference, &trimmed, 600.0)), [(Kind::Lost, Category::Flip)], "silently: lost");
        trimmed.truncated.flips = 1;
        assert_eq!(kinds(&audit_pod(&reference, &trimmed, 600.0)), [(Kind::Dropped, Category::Flip)], "counted and oldest: dropped");
        // Rings keep the newest: a report missing its oldest flips lines up with the newest ones
        // of the reference, though ready values alternate and could pair either way.
        let mut ring = report.clone();
        ring.containers[0].ready.pop_front();
        ring.containers[0].ready.pop_front();
        ring.truncated.flips = 2;
        assert_eq!(kinds(&audit_pod(&reference, &ring, 600.0)), [(Kind::Dropped, Category::Flip), (Kind::Dropped, Category::Flip)]);
        // A counted drop does not excuse a newer entry going missing.
        let mut newer = report.clone();
        newer.truncated.flips = 1;
        newer.containers[0].ready.pop_back();
        assert_eq!(kinds(&audit_pod(&reference, &newer, 600.0)), [(Kind::Lost, Category::Flip)]);
    }

    #[test]
    fn lost_flips_phases_and_replayed_events_are_named() {
        let (reference, report) = both(include_str!("../../tests/fixtures/liveness.jsonl"));
        let mut flips = report.clone();
        flips.containers[0].ready.pop_front();
        assert!(kinds(&audit_pod(&reference, &flips, 600.0)).contains(&(Kind::Lost, Category::Flip)));
        let mut phase = report.clone();
        phase.phases.pop_front();
        assert_eq!(kinds(&audit_pod(&reference, &phase, 600.0)), [(Kind::Lost, Category::Phase)]);
        let mut replayed = report.clone();
        let again = replayed.events[0].clone();
        replayed.events.push_back(again);
        assert_eq!(kinds(&audit_pod(&reference, &replayed, 600.0)), [(Kind::Duplicated, Category::Event)]);
        let mut state = report.clone();
        state.containers[0].states.pop_back();
        assert_eq!(kinds(&audit_pod(&reference, &state, 600.0)), [(Kind::Lost, Category::ContainerState)]);
    }
}
