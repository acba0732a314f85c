//! An experiment's evidence, pure: the target's record merged read by read and bounded as it
//! will be stored (the verdicts are judged on exactly what is stored), the decisions of the
//! experiment loop (which actions are due, which ports to read), and the timeline's marks
//! drawn from stored evidence.

use std::collections::BTreeMap;

use jiff::Timestamp;

use crate::crd::experiment::{Action, Evidence, Expectation, HitTime, ProbeExperimentSpec, TargetEvent, TargetRecord};
use crate::harness::pod::target_control_ports;
use crate::harness::timeline::TargetMark;
use crate::target::record::RecordSnapshot;

/// Newest probe hits kept per target: a few minutes of 1 s probes of three kinds, and the
/// status stays far below the apiserver's object size limit.
pub const MAX_HITS: usize = 400;
/// Newest lifecycle events kept per target.
pub const MAX_EVENTS: usize = 200;

/// Folds one read of a target's `GET /hits` into its record: counters replaced (they are the
/// target's own totals), events and hits merged over the target's runs without duplicates,
/// then cut to the newest [`MAX_EVENTS`] and [`MAX_HITS`].
pub fn merge_read(record: &mut TargetRecord, read: RecordSnapshot) {
    // Older targets do not send their start time; their boot count is the best run key there is.
    let run = if read.started_ms > 0 { read.started_ms } else { read.boot };
    record.counters = read.counters;
    record.events.extend(read.events.into_iter().map(|e| TargetEvent { kind: e.kind, at_ms: e.at_ms, run }));
    // Runs in order, and within a run the target's own order (a SIGTERM and the exit it caused
    // can share a millisecond): a stable sort, then each event once, first copy kept.
    record.events.sort_by_key(|e| (e.run, e.at_ms));
    let mut seen = std::collections::HashSet::new();
    record.events.retain(|e| seen.insert((e.run, e.at_ms, e.kind.clone())));
    keep_newest(&mut record.events, MAX_EVENTS);
    record.hits.extend(read.hits.into_iter().map(|h| HitTime {
        run,
        seq: h.seq,
        probe: h.probe.as_str().to_string(),
        at_ms: h.at_ms,
        result: h.result,
    }));
    record.hits.sort();
    record.hits.dedup_by(|a, b| a.run == b.run && a.seq == b.seq);
    keep_newest(&mut record.hits, MAX_HITS);
}

fn keep_newest<T>(items: &mut Vec<T>, max: usize) {
    let extra = items.len().saturating_sub(max);
    items.drain(..extra);
}

/// The control ports whose record is read: every podlife-target in the pod, and any port an
/// expectation names.
#[must_use]
pub fn ports_to_read(spec: &ProbeExperimentSpec) -> BTreeMap<u16, Option<String>> {
    let mut ports: BTreeMap<u16, Option<String>> = target_control_ports(&spec.pod).into_iter().map(|(p, c)| (p, Some(c))).collect();
    for e in &spec.expectations {
        let port = match e {
            Expectation::ProbeHits(p) => p.port,
            Expectation::HookOrder(o) => o.port,
            Expectation::ProbeInterval(p) => p.port,
            Expectation::TerminationSeconds(t) => t.port,
            _ => continue,
        };
        ports.entry(port).or_insert(None);
    }
    ports
}

/// The pending actions (indices into `actions`) that are due `elapsed` seconds after the pod
/// was created. `first_true(condition)` is when that pod condition first turned True, in
/// seconds after creation, if it has.
#[must_use]
pub fn due_actions(actions: &[Action], pending: &[usize], elapsed: f64, first_true: impl Fn(&str) -> Option<f64>) -> Vec<usize> {
    pending
        .iter()
        .copied()
        .filter(|&i| {
            let action = &actions[i];
            let start = match (&action.at_seconds, &action.when) {
                (Some(at), _) => Some(*at),
                (None, Some(condition)) => first_true(condition),
                (None, None) => Some(0.0),
            };
            start.is_some_and(|s| elapsed >= s + action.delay_seconds.unwrap_or(0.0))
        })
        .collect()
}

/// The timeline's marks: every stored probe hit and lifecycle event (not the TCP connection
/// bookkeeping), in time order.
#[must_use]
pub fn timeline_marks(evidence: &Evidence) -> Vec<TargetMark> {
    let mut marks = Vec::new();
    for t in &evidence.targets {
        let mark = |at: Timestamp, kind: &str, result: Option<&str>| TargetMark {
            at,
            kind: kind.to_string(),
            result: result.map(str::to_string),
            port: t.port,
            container: t.container.clone(),
        };
        marks.extend(t.hits.iter().filter_map(|h| Some(mark(h.at()?, &h.probe, Some(&h.result)))));
        let shown = t.events.iter().filter(|e| !e.kind.starts_with("tcp-") && e.kind != "listening");
        marks.extend(shown.filter_map(|e| Some(mark(e.at()?, &e.kind, None))));
    }
    marks.sort_by_key(|m| m.at);
    marks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::record::{Hit, LifecycleEvent, ProbeKind, Transport};

    fn read(started_ms: u64, hits: &[(u64, u64)], events: &[(&str, u64)]) -> RecordSnapshot {
        RecordSnapshot {
            boot: 1,
            started_ms,
            hits: hits
                .iter()
                .map(|&(seq, at_ms)| Hit {
                    seq,
                    at_ms,
                    probe: ProbeKind::Liveness,
                    transport: Transport::Http,
                    peer: String::new(),
                    user_agent: None,
                    result: "ok".into(),
                    latency_ms: Some(1),
                    boot: 1,
                })
                .collect(),
            dropped_hits: 0,
            counters: BTreeMap::from([("liveness".into(), BTreeMap::from([("ok".into(), hits.len() as u64)]))]),
            events: events
                .iter()
                .map(|&(kind, at_ms)| LifecycleEvent { at_ms, kind: kind.into(), detail: String::new(), boot: 1 })
                .collect(),
            dropped_events: 0,
        }
    }

    #[test]
    fn reads_merge_over_runs_without_duplicates_and_stay_bounded() {
        let mut r = TargetRecord::default();
        merge_read(&mut r, read(100, &[(0, 1000), (1, 2000)], &[("start", 900)]));
        // The same run read again, then a restarted target (a new run) whose seq starts over.
        merge_read(&mut r, read(100, &[(1, 2000), (2, 3000)], &[("start", 900), ("sigterm", 2500)]));
        merge_read(&mut r, read(5000, &[(0, 6000)], &[("start", 5000)]));
        assert_eq!(r.hits.iter().map(|h| (h.run, h.seq)).collect::<Vec<_>>(), [(100, 0), (100, 1), (100, 2), (5000, 0)]);
        assert_eq!(r.events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(), ["start", "sigterm", "start"]);
        // Within one millisecond the target's order stands, whatever the names.
        let mut same_ms = TargetRecord::default();
        merge_read(&mut same_ms, read(100, &[], &[("sigterm", 7000), ("exit", 7000)]));
        merge_read(&mut same_ms, read(100, &[], &[("sigterm", 7000), ("exit", 7000)]));
        assert_eq!(same_ms.events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(), ["sigterm", "exit"]);
        // Counters are the latest run's own.
        assert_eq!(r.counters["liveness"]["ok"], 1);
        let many: Vec<(u64, u64)> = (0..1000).map(|i| (i, 10_000 + i)).collect();
        merge_read(&mut r, read(9000, &many, &[]));
        assert_eq!(r.hits.len(), MAX_HITS);
        assert_eq!(r.hits.last().map(|h| h.seq), Some(999), "the newest are kept");
    }

    fn action(at: Option<f64>, when: Option<&str>, delay: Option<f64>) -> Action {
        Action {
            name: "a".into(),
            at_seconds: at,
            when: when.map(Into::into),
            delay_seconds: delay,
            call: None,
            delete: None,
            exec: None,
            rollout: None,
            scale: None,
        }
    }

    #[test]
    fn actions_are_due_at_their_time_or_after_their_condition_plus_delay() {
        let actions = [action(Some(5.0), None, None), action(None, Some("Ready"), Some(1.0)), action(None, Some("Ready"), None)];
        let never = |_: &str| None;
        let ready_at_3 = |c: &str| (c == "Ready").then_some(3.0);
        assert_eq!(due_actions(&actions, &[0, 1, 2], 4.9, never), Vec::<usize>::new());
        assert_eq!(due_actions(&actions, &[0, 1, 2], 3.5, ready_at_3), [2]);
        assert_eq!(due_actions(&actions, &[0, 1, 2], 5.0, ready_at_3), [0, 1, 2]);
        assert_eq!(due_actions(&actions, &[1], 5.0, ready_at_3), [1], "only pending ones");
    }

    #[test]
    fn marks_leave_out_connection_bookkeeping_and_name_the_container() {
        let mut r = TargetRecord { port: 9190, container: Some("envoy".into()), ..Default::default() };
        merge_read(&mut r, read(100, &[(0, 2000)], &[("start", 1000), ("listening", 1001), ("tcp-accept", 1500), ("sigterm", 3000)]));
        let marks = timeline_marks(&Evidence { targets: vec![r], ..Default::default() });
        let kinds: Vec<(&str, Option<&str>)> = marks.iter().map(|m| (m.kind.as_str(), m.result.as_deref())).collect();
        assert_eq!(kinds, [("start", None), ("liveness", Some("ok")), ("sigterm", None)]);
        assert!(marks.iter().all(|m| m.container.as_deref() == Some("envoy") && m.port == 9190));
    }
}
