//! Model tests: synthetic sequences shaped like the kubelet's, recorded sequences from the real
//! kubelet (tests/fixtures), and properties over arbitrary sequences.

use jiff::Timestamp;
use proptest::prelude::*;

use super::BackoffProfile;
use super::history::{BackoffState, Change, PodHistory, Source};
use super::snapshot::{
    ConditionSnapshot, ContainerKind, ContainerSnapshot, ContainerState, EventSnapshot, Phase, PodSnapshot, Termination,
};

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).unwrap()
}

fn pod(phase: Phase, containers: Vec<ContainerSnapshot>) -> PodSnapshot {
    PodSnapshot {
        namespace: "ns".into(),
        name: "p".into(),
        uid: "u".into(),
        resource_version: None,
        created_at: Some(t(0)),
        deleted_at: None,
        phase,
        conditions: vec![],
        containers,
        controller: None,
    }
}

fn app(restarts: i32, state: ContainerState, last: Option<Termination>, ready: bool) -> ContainerSnapshot {
    ContainerSnapshot {
        name: "app".into(),
        kind: ContainerKind::App,
        container_id: None,
        state: Some(state),
        last_terminated: last,
        ready,
        started: Some(ready),
        restart_count: restarts,
    }
}

fn exited(run: i32, started: i64, finished: i64) -> Termination {
    Termination {
        exit_code: 1,
        signal: None,
        reason: Some("Error".into()),
        message: None,
        started_at: Some(t(started)),
        finished_at: Some(t(finished)),
        container_id: Some(format!("containerd://run{run}")),
    }
}

fn running(at: i64) -> ContainerState {
    ContainerState::Running { started_at: Some(t(at)) }
}

fn crashloop(backoff: &str) -> ContainerState {
    ContainerState::Waiting {
        reason: Some("CrashLoopBackOff".into()),
        message: Some(format!("back-off {backoff} restarting failed container=app pod=ns_p(u)")),
    }
}

/// A crash loop shaped exactly like the real kubelet's (shared/notes/local-cluster.md): the
/// first restart is immediate, then each gap is the announced back-off plus a few seconds.
fn crash_loop_sequence() -> Vec<(i64, PodSnapshot)> {
    let gaps = [0, 13, 26, 43, 85];
    let announced = ["", "10s", "20s", "40s", "1m20s"];
    let snap =
        |restarts: i32, state: ContainerState, last: Option<Termination>| pod(Phase::Running, vec![app(restarts, state, last, false)]);
    let mut seq = vec![(1, snap(0, running(1), None))];
    let mut start = 1;
    let mut previous: Option<Termination> = None;
    for (i, gap) in gaps.iter().enumerate() {
        let run = i32::try_from(i).unwrap();
        let end = start + 1;
        let this = exited(run, start, end);
        // The exit shows as terminated first, with the run before it in lastState ...
        seq.push((end, snap(run, ContainerState::Terminated(this.clone()), previous.clone())));
        let mut now = end;
        if !announced[i].is_empty() {
            // ... then, about 11 s later, as CrashLoopBackOff with the announced back-off ...
            now = end + 11;
            seq.push((now, snap(run, crashloop(announced[i]), Some(this.clone()))));
        }
        // ... and the restart lands with this run in lastState.
        let next = end + gap;
        seq.push((now.max(next), snap(run + 1, running(next), Some(this.clone()))));
        previous = Some(this);
        start = next;
    }
    seq
}

fn replay(seq: &[(i64, PodSnapshot)], source: Source) -> PodHistory {
    let mut h = PodHistory::new("p", "u");
    for (now, snap) in seq {
        h.observe(snap, t(*now), source, &BackoffProfile::default());
    }
    h
}

#[test]
fn a_crash_loop_records_every_restart_with_measured_announced_and_expected_back_off() {
    let h = replay(&crash_loop_sequence(), Source::Live);
    let c = &h.containers[0];
    assert_eq!(c.restart_count, 5);
    // (number, measured, announced, expected, fits the curve)
    type Row = (i32, Option<f64>, Option<f64>, f64, Option<bool>);
    let rows: Vec<Row> =
        c.restarts.iter().map(|r| (r.number, r.measured_seconds, r.announced_seconds, r.expected_seconds, r.fits_curve)).collect();
    assert_eq!(
        rows,
        [
            (1, Some(0.0), None, 0.0, Some(true)),
            (2, Some(13.0), Some(10.0), 10.0, Some(true)),
            (3, Some(26.0), Some(20.0), 20.0, Some(true)),
            (4, Some(43.0), Some(40.0), 40.0, Some(true)),
            (5, Some(85.0), Some(80.0), 80.0, Some(true)),
        ]
    );
    assert_eq!(c.terminations.len(), 5, "every run's termination, not only lastState");
    assert_eq!(c.terminations.iter().map(|t| t.run).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    assert_eq!(c.crash_loops.len(), 1);
    assert_eq!(c.crash_loops[0].cycles, 5, "identical cycles fold into one counter");
    assert_eq!(h.summary.restarts, 5);
    assert_eq!(h.summary.last_termination_reason.as_deref(), Some("Error"));
}

#[test]
fn the_current_back_off_shows_while_waiting() {
    let seq = crash_loop_sequence();
    let mut h = PodHistory::new("p", "u");
    // Replay up to the CrashLoopBackOff that announces 40s.
    for (now, snap) in &seq {
        h.observe(snap, t(*now), Source::Live, &BackoffProfile::default());
        if let Some(ContainerState::Waiting { message: Some(m), .. }) = &snap.containers[0].state
            && m.contains(" 40s ")
        {
            break;
        }
    }
    assert_eq!(h.summary.backoff, "40s");
    match &h.containers[0].backoff {
        BackoffState::Waiting { announced_seconds, next_restart_after } => {
            assert_eq!(*announced_seconds, 40.0);
            let last_exit = h.containers[0].terminations.back().unwrap().termination.finished_at.unwrap();
            assert_eq!(next_restart_after.unwrap().duration_since(last_exit).as_secs(), 40);
        }
        other => panic!("expected Waiting, got {other:?}"),
    }
}

#[test]
fn replaying_the_same_snapshots_adds_nothing() {
    let seq = crash_loop_sequence();
    let mut h = replay(&seq, Source::Live);
    let before = serde_json::to_value(&h).unwrap();
    for (now, snap) in &seq {
        let changes = h.observe(snap, t(*now + 1000), Source::Rebuilt, &BackoffProfile::default());
        assert!(changes.is_empty(), "replay changed {changes:?}");
    }
    let mut after = serde_json::to_value(&h).unwrap();
    after["summary"]["transitionsRecorded"] = before["summary"]["transitionsRecorded"].clone();
    assert_eq!(before, after);
}

#[test]
fn a_rebuild_after_a_gap_marks_what_it_reconstructed() {
    let seq = crash_loop_sequence();
    // Saw only the start live, then missed everything until the last snapshot.
    let mut h = replay(&seq[..1], Source::Live);
    let (now, last) = seq.last().unwrap();
    let changes = h.observe(last, t(*now), Source::Rebuilt, &BackoffProfile::default());
    assert!(changes.contains(&Change::Restart));
    let r = h.containers[0].restarts.back().unwrap();
    assert_eq!((r.number, r.unobserved_before, r.source), (5, 4, Source::Rebuilt));
    assert_eq!(r.fits_curve, None, "a restart after unobserved ones cannot be judged");
    assert_eq!(r.backoff_step, 5, "the curve position still counts the unobserved restarts");
    assert_eq!(h.containers[0].terminations.back().unwrap().source, Source::Rebuilt);
}

#[test]
fn a_long_run_resets_the_curve() {
    let mut h = PodHistory::new("p", "u");
    let p = BackoffProfile::default();
    h.observe(&pod(Phase::Running, vec![app(0, running(0), None, true)]), t(0), Source::Live, &p);
    h.observe(&pod(Phase::Running, vec![app(1, running(1), Some(exited(0, 0, 1)), true)]), t(1), Source::Live, &p);
    h.observe(&pod(Phase::Running, vec![app(2, running(13), Some(exited(1, 1, 2)), true)]), t(13), Source::Live, &p);
    // This run lasted 700 s > 600 s: the next restart is immediate again.
    h.observe(&pod(Phase::Running, vec![app(3, running(714), Some(exited(2, 13, 713)), true)]), t(714), Source::Live, &p);
    let steps: Vec<(u32, f64)> = h.containers[0].restarts.iter().map(|r| (r.backoff_step, r.expected_seconds)).collect();
    assert_eq!(steps, [(1, 0.0), (2, 10.0), (1, 0.0)]);
}

#[test]
fn conditions_phases_and_ready_flips_are_recorded_once_each() {
    let mut h = PodHistory::new("p", "u");
    let p = BackoffProfile::default();
    let cond = |status: &str, at: i64| ConditionSnapshot {
        type_: "Ready".into(),
        status: status.into(),
        reason: None,
        message: None,
        last_transition: Some(t(at)),
    };
    let mut s = pod(Phase::Pending, vec![]);
    h.observe(&s, t(0), Source::Live, &p);
    s.phase = Phase::Running;
    s.containers = vec![app(0, running(2), None, false)];
    s.conditions = vec![cond("False", 2)];
    h.observe(&s, t(2), Source::Live, &p);
    s.containers[0].ready = true;
    s.conditions = vec![cond("True", 4)];
    h.observe(&s, t(4), Source::Live, &p);
    h.observe(&s, t(5), Source::Live, &p);
    s.containers[0].ready = false;
    s.conditions = vec![cond("False", 9)];
    h.observe(&s, t(9), Source::Live, &p);
    assert_eq!(h.phases.iter().map(|p| p.phase).collect::<Vec<_>>(), [Phase::Pending, Phase::Running]);
    let ready: Vec<(&str, i64)> = h.conditions.iter().map(|c| (c.status.as_str(), c.at.as_second() - 1_800_000_000)).collect();
    assert_eq!(ready, [("False", 2), ("True", 4), ("False", 9)]);
    assert_eq!(h.containers[0].ready.iter().map(|f| f.value).collect::<Vec<_>>(), [true, false]);
    assert_eq!(h.containers[0].restart_count, 0);
    assert_eq!(h.summary.ready, "0/1");
    assert_eq!(h.summary.startup.ready_seconds, Some(4.0));
    assert_eq!(h.summary.startup.running_seconds, Some(2.0));
}

fn event(uid: &str, reason: &str, message: &str, count: u32, at: i64) -> EventSnapshot {
    EventSnapshot {
        uid: uid.into(),
        reason: reason.into(),
        message: message.into(),
        type_: "Warning".into(),
        container: Some("app".into()),
        count,
        first_seen: Some(t(at)),
        last_seen: Some(t(at)),
        resource_version: None,
    }
}

#[test]
fn unhealthy_killing_termination_and_restart_are_linked() {
    let mut h = PodHistory::new("p", "u");
    let p = BackoffProfile::default();
    h.observe(&pod(Phase::Running, vec![app(0, running(0), None, true)]), t(0), Source::Live, &p);
    h.observe_event(&event("e1", "Unhealthy", "Liveness probe failed: HTTP probe failed with statuscode: 503", 1, 10));
    // Aggregated: the same Event object comes back with a higher count.
    assert_eq!(
        h.observe_event(&event("e1", "Unhealthy", "Liveness probe failed: HTTP probe failed with statuscode: 503", 3, 12)),
        Some(Change::EventCount)
    );
    assert_eq!(h.observe_event(&event("e1", "Unhealthy", "x", 3, 12)), None, "a stale copy is ignored");
    h.observe_event(&event("e2", "Killing", "Container app failed liveness probe, will be restarted", 1, 12));
    let mut killed = exited(0, 0, 13);
    killed.exit_code = 143;
    h.observe(&pod(Phase::Running, vec![app(1, running(14), Some(killed), false)]), t(14), Source::Live, &p);
    let kill = h.containers[0].probe_kills.back().unwrap();
    assert_eq!(kill.probe, "liveness");
    assert!(kill.unhealthy_message.as_deref().unwrap().contains("statuscode: 503"));
    assert_eq!((kill.exit_code, kill.restarted_as), (Some(143), Some(1)));
    assert_eq!(h.events.iter().find(|e| e.uid == "e1").unwrap().count, 3);
}

/// A container that crash-looped `runs` times, with long termination and event messages.
fn long_crash_loop(runs: i64) -> PodHistory {
    let mut h = PodHistory::new("p", "u");
    let p = BackoffProfile::default();
    for i in 0..runs {
        let run = i32::try_from(i).unwrap();
        let mut term = exited(run, i * 10, i * 10 + 1);
        term.message = Some("x".repeat(200));
        term.exit_code = i32::try_from(i % 7).unwrap();
        h.observe(&pod(Phase::Running, vec![app(run + 1, running(i * 10 + 5), Some(term), i % 2 == 0)]), t(i * 10 + 5), Source::Live, &p);
        h.observe_event(&event(&format!("e{i}"), "BackOff", &"m".repeat(300), 1, i * 10));
    }
    h
}

/// Entries the byte budget may drop, per tier: raw transitions, exits, restart records.
fn droppable(h: &PodHistory) -> (usize, usize, usize) {
    let mut raw = h.phases.len() + h.conditions.len() + h.events.len();
    let (mut exits, mut restarts) = (0, 0);
    for c in &h.containers {
        raw += c.states.len() + c.ready.len() + c.started.len();
        exits += c.terminations.len() + c.probe_kills.len();
        restarts += c.restarts.len();
    }
    (raw, exits, restarts)
}

#[test]
fn histories_stay_bounded_and_under_budget() {
    let mut h = long_crash_loop(2_000);
    let c = &h.containers[0];
    assert!(c.restarts.len() <= super::history::MAX_RESTARTS && c.terminations.len() <= super::history::MAX_TERMINATIONS);
    assert!(h.events.len() <= super::history::MAX_EVENTS);
    assert!(h.truncated.total() > 0);
    assert_eq!(c.restart_count, 2_000, "counters are never truncated");
    let size = h.enforce_budget(32 * 1024);
    assert_eq!(size, serde_json::to_vec(&h).unwrap().len(), "the size returned is the size written");
    assert!(size <= 32 * 1024);
    assert!(h.truncated.budget > 0);
}

/// Defect caught: the budget trimming the longest list first, which took restart records (the
/// back-off verdicts' evidence) while old events and conditions were still kept.
#[test]
fn the_budget_gives_up_raw_transitions_first_and_restart_records_last() {
    let full = long_crash_loop(60);
    let (raw, exits, restarts) = droppable(&full);
    assert!(raw > 0 && exits > 0 && restarts > 0);

    // Room for everything but a third of the raw transitions: only raw ones go, oldest first.
    let mut h = full.clone();
    let size = h.enforce_budget(full.serialized_len() * 9 / 10);
    let (raw_left, exits_left, restarts_left) = droppable(&h);
    assert!(size <= full.serialized_len() * 9 / 10);
    assert!(raw_left > 0 && raw_left < raw, "some raw transitions went ({raw_left} of {raw} left)");
    assert_eq!((exits_left, restarts_left), (exits, restarts), "exits and restarts untouched while raw transitions remain");
    let newest_event = |h: &PodHistory| h.events.back().map(|e| e.uid.clone());
    assert_eq!(newest_event(&h), newest_event(&full), "the newest event is kept: the oldest go first");

    // Room for the restart records alone: raw transitions and exits all go, restarts stay.
    let mut bare = full.clone();
    bare.phases.clear();
    bare.conditions.clear();
    bare.events.clear();
    for c in &mut bare.containers {
        c.states.clear();
        c.ready.clear();
        c.started.clear();
        c.terminations.clear();
        c.probe_kills.clear();
    }
    // The budget counter's digits grow by a few bytes.
    let restarts_only = bare.serialized_len() + 16;
    let mut h = full.clone();
    assert!(h.enforce_budget(restarts_only) <= restarts_only);
    assert_eq!(droppable(&h), (0, 0, restarts), "only raw transitions and exits were given up");

    // Tighter still: the oldest restart records go, the newest stay.
    let mut h = full.clone();
    assert!(h.enforce_budget(restarts_only - 2_000) <= restarts_only - 2_000);
    let kept = &h.containers[0].restarts;
    assert!(!kept.is_empty() && kept.len() < restarts);
    assert_eq!(kept.back().map(|r| r.number), full.containers[0].restarts.back().map(|r| r.number));
}

/// Defect caught: serializing the whole history once per dropped entry while the store's
/// lock is held (quadratic in the history's length).
#[test]
fn trimming_to_the_budget_serializes_the_history_a_bounded_number_of_times() {
    let mut h = long_crash_loop(2_000);
    let before = droppable(&h);
    super::history::HISTORY_SERIALIZATIONS.with(|n| n.set(0));
    h.enforce_budget(8 * 1024);
    let after = droppable(&h);
    let dropped = (before.0 - after.0) + (before.1 - after.1) + (before.2 - after.2);
    let serializations = super::history::HISTORY_SERIALIZATIONS.with(std::cell::Cell::get);
    assert!(dropped > 100, "{dropped} entries dropped");
    assert!(serializations <= 4, "{serializations} whole-history serializations for {dropped} dropped entries");
}

fn arb_state() -> impl Strategy<Value = ContainerState> {
    prop_oneof![
        (proptest::option::of("[A-Za-z]{0,12}"), proptest::option::of(".{0,40}"))
            .prop_map(|(reason, message)| ContainerState::Waiting { reason, message }),
        proptest::option::of(0i64..100_000).prop_map(|s| ContainerState::Running { started_at: s.map(t) }),
        arb_termination().prop_map(ContainerState::Terminated),
    ]
}

fn arb_termination() -> impl Strategy<Value = Termination> {
    (any::<i32>(), proptest::option::of(0i64..100_000), proptest::option::of(0i64..100_000), proptest::option::of("[a-z0-9]{1,4}"))
        .prop_map(|(exit_code, s, f, id)| Termination {
            exit_code,
            signal: None,
            reason: Some("Error".into()),
            message: None,
            started_at: s.map(t),
            finished_at: f.map(t),
            container_id: id,
        })
}

fn arb_snapshot() -> impl Strategy<Value = PodSnapshot> {
    let container = (arb_state(), proptest::option::of(arb_termination()), any::<bool>(), -3i32..50, prop_oneof![Just("a"), Just("b")])
        .prop_map(|(state, last, ready, restarts, name)| ContainerSnapshot { name: name.into(), ..app(restarts, state, last, ready) });
    (prop_oneof![Just(Phase::Pending), Just(Phase::Running), Just(Phase::Failed)], proptest::collection::vec(container, 0..3)).prop_map(
        |(phase, mut containers)| {
            // Container names are unique within a pod.
            containers.dedup_by(|a, b| a.name == b.name);
            pod(phase, containers)
        },
    )
}

fn arb_event() -> impl Strategy<Value = EventSnapshot> {
    (
        prop_oneof![
            Just("Killing".to_string()),
            Just("Unhealthy".to_string()),
            Just("BackOff".to_string()),
            Just("Started".to_string()),
            "[A-Za-z]{0,10}"
        ],
        ".{0,60}",
        proptest::option::of(prop_oneof![Just("a".to_string()), Just("b".to_string()), "[a-z]{0,3}"]),
        0u32..5,
        proptest::option::of(0i64..200_000),
        proptest::option::of(0u64..50),
        0u8..6,
    )
        .prop_map(|(reason, message, container, count, at, rv, uid)| EventSnapshot {
            uid: format!("e{uid}"),
            reason,
            message,
            type_: "Warning".into(),
            container,
            count,
            first_seen: at.map(t),
            last_seen: at.map(t),
            resource_version: rv,
        })
}

/// One thing the operator's watches deliver: a pod status, or an event about the pod.
#[derive(Debug, Clone)]
enum Delivery {
    Status(i64, PodSnapshot),
    Event(EventSnapshot),
}

proptest! {
    // The model's fuzz target (stable, in `cargo test`): any interleaving of statuses and
    // events, replays and reorderings included, must neither panic nor break the invariants.
    #[test]
    fn any_status_and_event_sequence_keeps_the_invariants(seq in proptest::collection::vec(prop_oneof![
        (0i64..200_000, arb_snapshot()).prop_map(|(now, s)| Delivery::Status(now, s)),
        arb_event().prop_map(Delivery::Event),
    ], 0..60)) {
        let mut h = PodHistory::new("p", "u");
        let mut highest_rv = None;
        for d in &seq {
            match d {
                Delivery::Status(now, snap) => drop(h.observe(snap, t(*now), Source::Live, &BackoffProfile::default())),
                Delivery::Event(e) => {
                    let fresh = h.observe_event(e).is_some();
                    // An event at or below the newest version seen is a replay: never news.
                    if let (Some(rv), Some(high)) = (e.resource_version, highest_rv) && rv <= high {
                        prop_assert!(!fresh, "replayed event {e:?} counted again");
                    }
                    highest_rv = highest_rv.max(e.resource_version);
                }
            }
        }
        for c in &h.containers {
            let unobserved: i32 = c.restarts.iter().map(|r| r.unobserved_before + 1).sum();
            prop_assert!(c.restarts.len() == super::history::MAX_RESTARTS || unobserved == c.restart_count);
        }
        let size = h.enforce_budget(8 * 1024);
        prop_assert_eq!(size, serde_json::to_vec(&h).unwrap().len());
        prop_assert!(size <= 8 * 1024 || droppable(&h) == (0, 0, 0), "over budget with entries left to drop");
        // The report round-trips: what is written can be read back.
        let back: PodHistory = serde_json::from_slice(&serde_json::to_vec(&h).unwrap()).unwrap();
        prop_assert_eq!(back.containers.len(), h.containers.len());
    }

    #[test]
    fn no_sequence_panics_and_no_restart_is_lost(seq in proptest::collection::vec((0i64..200_000, arb_snapshot()), 0..40)) {
        let mut h = PodHistory::new("p", "u");
        let mut max_seen = std::collections::HashMap::new();
        for (now, snap) in &seq {
            h.observe(snap, t(*now), Source::Live, &BackoffProfile::default());
            for c in &snap.containers {
                let m = max_seen.entry(c.name.clone()).or_insert(0);
                *m = (*m).max(c.restart_count);
            }
        }
        for c in &h.containers {
            // The recorded count is the highest ever seen: restarts only go up, none is lost.
            prop_assert_eq!(c.restart_count, max_seen[&c.name].max(0));
            let unobserved: i32 = c.restarts.iter().map(|r| r.unobserved_before + 1).sum();
            prop_assert!(c.restarts.len() == super::history::MAX_RESTARTS || unobserved == c.restart_count);
        }
        let size = h.enforce_budget(8 * 1024);
        prop_assert_eq!(size, serde_json::to_vec(&h).unwrap().len());
        prop_assert!(size <= 8 * 1024 || droppable(&h) == (0, 0, 0), "over budget with entries left to drop");
    }

    #[test]
    fn replay_is_idempotent(seq in proptest::collection::vec((0i64..200_000, arb_snapshot()), 0..20)) {
        let mut h = PodHistory::new("p", "u");
        for (now, snap) in &seq {
            h.observe(snap, t(*now), Source::Live, &BackoffProfile::default());
        }
        if let Some((now, last)) = seq.last() {
            let again = h.observe(last, t(*now), Source::Rebuilt, &BackoffProfile::default());
            prop_assert!(again.is_empty(), "{:?}", again);
        }
    }
}

/// Replays a recording made by `e2e/record-fixture` on the real cluster.
fn replay_fixture(jsonl: &str) -> PodHistory {
    let recording = super::recording::Recording::parse(jsonl).unwrap();
    recording.replay(&BackoffProfile::default(), |_| {}).expect("the fixture has pod observations")
}

#[test]
fn a_real_crash_loop_follows_the_kubelets_curve() {
    let h = replay_fixture(include_str!("../../tests/fixtures/crashloop.jsonl"));
    let c = &h.containers[0];
    assert!(c.restart_count >= 4, "the recording covers at least four restarts: {}", c.restart_count);
    assert_eq!(c.restarts.len() as i32, c.restart_count, "every restart recorded once");
    for r in &c.restarts {
        eprintln!(
            "restart {}: measured {:?}s announced {:?}s expected {}s",
            r.number, r.measured_seconds, r.announced_seconds, r.expected_seconds
        );
        let measured = r.measured_seconds.unwrap_or_else(|| panic!("restart {} has a measured delay: {r:?}", r.number));
        assert_eq!(r.fits_curve, Some(true), "restart {} measured {measured}s vs expected {}s", r.number, r.expected_seconds);
        if r.number >= 2 {
            assert_eq!(r.announced_seconds, Some(r.expected_seconds), "restart {}: the kubelet announced its curve", r.number);
        }
    }
    // Every run that ended is in the history once, with the boot script's exit code.
    let runs: Vec<i32> = c.terminations.iter().map(|t| t.run).collect();
    let expected: Vec<i32> = (0..runs.len() as i32).collect();
    assert_eq!(runs, expected);
    assert!(c.terminations.iter().all(|t| t.termination.exit_code == 1));
    assert!(h.events.iter().any(|e| e.reason == "BackOff" && e.count >= 2), "aggregated BackOff counts: {:?}", h.events);
}

#[test]
fn a_real_liveness_kill_is_linked_from_unhealthy_to_restart() {
    let h = replay_fixture(include_str!("../../tests/fixtures/liveness.jsonl"));
    let c = &h.containers[0];
    assert!(c.restart_count >= 2, "{}", c.restart_count);
    let linked: Vec<_> = c.probe_kills.iter().filter(|k| k.exit_code.is_some() && k.restarted_as.is_some()).collect();
    assert!(!linked.is_empty(), "{:?}", c.probe_kills);
    for k in linked {
        assert_eq!(k.probe, "liveness");
        assert!(k.unhealthy_message.as_deref().unwrap_or_default().starts_with("Liveness probe failed"), "{k:?}");
        // The target exits 0 on SIGTERM, which the kubelet sends when it kills.
        assert_eq!(k.exit_code, Some(0));
    }
    // Readiness went false at each kill and true again: flips, not restarts.
    assert!(c.ready.iter().filter(|f| !f.value).count() >= 2);
}

#[test]
fn a_restart_published_before_its_previous_run_is_measured_when_that_run_arrives() {
    // Seen on our v1.34 node under load: restartCount 1, running, lastState empty; lastState
    // followed in a later status.
    let p = BackoffProfile::default();
    let mut h = PodHistory::new("p", "u");
    let snap = |restarts, state, last| pod(Phase::Running, vec![app(restarts, state, last, true)]);
    h.observe(&snap(0, running(1), None), t(1), Source::Live, &p);
    h.observe(&snap(1, running(6), None), t(6), Source::Live, &p);
    assert_eq!(h.containers[0].restarts[0].fits_curve, None, "not measurable yet");
    h.observe(&snap(1, running(6), Some(exited(0, 1, 5))), t(7), Source::Live, &p);
    let r = &h.containers[0].restarts[0];
    assert_eq!((r.measured_seconds, r.fits_curve, r.previous_finished_at), (Some(1.0), Some(true), Some(t(5))));
    assert_eq!(h.containers[0].terminations.len(), 1);
    // A later restart's termination does not rewrite an earlier, measured restart.
    h.observe(&snap(2, running(30), Some(exited(1, 6, 20))), t(30), Source::Live, &p);
    assert_eq!(h.containers[0].restarts[0].measured_seconds, Some(1.0));
    assert_eq!(h.containers[0].restarts[1].measured_seconds, Some(10.0));
}

/// A container status as the kubelet writes it, with the newest run's `containerID`.
fn app_run(restarts: i32, id: &str, state: ContainerState, last: Option<Termination>) -> ContainerSnapshot {
    ContainerSnapshot { container_id: Some(format!("containerd://{id}")), ..app(restarts, state, last, false) }
}

#[test]
fn a_restart_whose_previous_run_was_recorded_first_is_measured() {
    // Defect: the run's termination came in as state.terminated, then the restart arrived with
    // an empty lastState, then lastState caught up. The termination was already known, so the
    // late-measure path never ran and the restart stayed unmeasured (the conformance back-off
    // case once accepted 6 of 7 measured restarts because of this).
    let p = BackoffProfile::default();
    let mut h = PodHistory::new("p", "u");
    let snap = |c| pod(Phase::Running, vec![c]);
    h.observe(&snap(app_run(2, "run2", running(40), Some(exited(1, 20, 21)))), t(40), Source::Live, &p);
    h.observe(&snap(app_run(2, "run2", ContainerState::Terminated(exited(2, 40, 41)), Some(exited(1, 20, 21)))), t(41), Source::Live, &p);
    h.observe(&snap(app_run(3, "run3", running(63), None)), t(63), Source::Live, &p);
    h.observe(&snap(app_run(3, "run3", running(63), Some(exited(2, 40, 41)))), t(64), Source::Live, &p);
    let r = h.containers[0].restarts.iter().find(|r| r.number == 3).expect("restart 3 recorded");
    assert_eq!((r.previous_finished_at, r.started_at, r.measured_seconds), (Some(t(41)), Some(t(63)), Some(22.0)), "{r:?}");
}

#[test]
fn a_restart_seen_while_its_run_is_only_created_is_measured_when_it_starts() {
    // The kubelet shows a created-but-not-started run as Waiting with no reason, the new
    // restartCount and the new containerID, and lastState still the run before (v1.34
    // convertToAPIContainerStatuses). Taking that Waiting for CrashLoopBackOff measured the
    // restart from the previous run's own start: a negative delay.
    let p = BackoffProfile::default();
    let mut h = PodHistory::new("p", "u");
    let snap = |c| pod(Phase::Running, vec![c]);
    let run2 = exited(2, 40, 41);
    h.observe(&snap(app_run(2, "run2", ContainerState::Terminated(run2.clone()), Some(exited(1, 20, 21)))), t(41), Source::Live, &p);
    h.observe(&snap(app_run(2, "run2", crashloop("20s"), Some(run2.clone()))), t(52), Source::Live, &p);
    let created = ContainerState::Waiting { reason: None, message: None };
    h.observe(&snap(app_run(3, "run3", created, Some(run2.clone()))), t(63), Source::Live, &p);
    h.observe(&snap(app_run(3, "run3", running(63), Some(run2.clone()))), t(64), Source::Live, &p);
    let c = &h.containers[0];
    let r = c.restarts.iter().find(|r| r.number == 3).expect("restart 3 recorded");
    assert_eq!((r.started_at, r.measured_seconds, r.announced_seconds), (Some(t(63)), Some(22.0), Some(20.0)), "{r:?}");
    assert_eq!(c.terminations.iter().map(|t| t.run).collect::<Vec<_>>(), [1, 2], "run 2 is not mistaken for run 3");
}

fn versioned(uid: &str, reason: &str, message: &str, version: u64) -> EventSnapshot {
    EventSnapshot { resource_version: Some(version), ..event(uid, reason, message, 1, i64::try_from(version).unwrap()) }
}

#[test]
fn a_replayed_event_stays_a_replay_after_it_left_the_ring() {
    // Defect: events were told apart from replays only by the 64-entry ring, so a relist or a
    // restarted operator brought older events back as new, and a replayed Killing opened a
    // second probe kill that the next restart was linked to.
    let p = BackoffProfile::default();
    let mut h = PodHistory::new("p", "u");
    h.observe(&pod(Phase::Running, vec![app(0, running(0), None, true)]), t(0), Source::Live, &p);
    let killing = versioned("kill", "Killing", "Container app failed liveness probe, will be restarted", 10);
    h.observe_event(&versioned("unhealthy", "Unhealthy", "Liveness probe failed: 503", 9));
    h.observe_event(&killing);
    for i in 0..100u64 {
        h.observe_event(&versioned(&format!("e{i}"), "Pulled", "already present", 20 + i));
    }
    assert!(h.events.iter().all(|e| e.uid != "kill"), "the Killing event has left the ring");
    let kills = h.containers[0].probe_kills.len();
    let recorded = h.summary.transitions_recorded;
    // An operator restart: the report is read back, then the watch lists every event again.
    let mut reloaded: PodHistory = serde_json::from_value(serde_json::to_value(&h).unwrap()).unwrap();
    reloaded.enforce_budget(4 * 1024);
    for e in
        [versioned("unhealthy", "Unhealthy", "Liveness probe failed: 503", 9), killing, versioned("e3", "Pulled", "already present", 23)]
    {
        assert_eq!(reloaded.observe_event(&e), None, "{} is a replay", e.uid);
    }
    assert_eq!(reloaded.containers[0].probe_kills.len(), kills, "no second probe kill");
    assert_eq!(reloaded.summary.transitions_recorded, recorded);
    // News still counts: a count update (a higher version) and a new event.
    let mut update = versioned("e99", "Pulled", "already present", 200);
    update.count = 2;
    assert_eq!(reloaded.observe_event(&update), Some(Change::EventCount));
    assert_eq!(reloaded.observe_event(&versioned("new", "Started", "Started container app", 201)), Some(Change::Event));
}

#[test]
fn an_older_status_replayed_after_a_newer_one_changes_nothing() {
    // A watch resumed from an earlier position replays statuses already folded in; the ready
    // flip back to an old value must not be recorded again.
    let p = BackoffProfile::default();
    let mut h = PodHistory::new("p", "u");
    let at = |version: u64, ready: bool| PodSnapshot {
        resource_version: Some(version),
        ..pod(Phase::Running, vec![app(0, running(1), None, ready)])
    };
    h.observe(&at(10, false), t(1), Source::Live, &p);
    h.observe(&at(11, true), t(2), Source::Live, &p);
    assert!(h.observe(&at(10, false), t(3), Source::Rebuilt, &p).is_empty(), "a replay of version 10");
    assert!(h.observe(&at(11, true), t(3), Source::Rebuilt, &p).is_empty());
    // News still counts: ready and started both flip back.
    assert_eq!(h.observe(&at(12, false), t(4), Source::Live, &p), [Change::Flip, Change::Flip]);
    assert_eq!(h.containers[0].ready.iter().map(|f| f.value).collect::<Vec<_>>(), [true, false]);
}

/// (entries, room) of every list in a history.
fn list_room(h: &PodHistory) -> Vec<(&'static str, usize, usize)> {
    let mut lists = vec![
        ("phases", h.phases.len(), h.phases.capacity()),
        ("conditions", h.conditions.len(), h.conditions.capacity()),
        ("events", h.events.len(), h.events.capacity()),
        ("containers", h.containers.len(), h.containers.capacity()),
    ];
    for c in &h.containers {
        lists.push(("states", c.states.len(), c.states.capacity()));
        lists.push(("ready", c.ready.len(), c.ready.capacity()));
        lists.push(("started", c.started.len(), c.started.capacity()));
        lists.push(("terminations", c.terminations.len(), c.terminations.capacity()));
        lists.push(("restarts", c.restarts.len(), c.restarts.capacity()));
    }
    lists
}

// Catches lists that grow by doubling (as `VecDeque::push_back` alone does): 10k histories
// held for their pods' lives then keep up to half their room empty, megabytes of RSS.
#[test]
fn a_history_keeps_little_room_beyond_its_entries() {
    for runs in [1, 3, 9, 40, 200] {
        let h = long_crash_loop(runs);
        for (list, len, room) in list_room(&h) {
            assert!(room <= len + len / 8 + 1, "{runs} runs: {list} holds {len} in room for {room}");
        }
    }
}

// Catches a decoded report (its lists grown by doubling while parsing) kept as decoded.
#[test]
fn a_shrunk_history_keeps_no_room_beyond_its_entries() {
    let mut h: PodHistory = serde_json::from_str(&serde_json::to_string(&long_crash_loop(9)).unwrap()).unwrap();
    assert!(list_room(&h).iter().any(|(_, len, room)| room > len), "decoding leaves room (or this test shows nothing)");
    h.shrink_to_fit();
    for (list, len, room) in list_room(&h) {
        assert_eq!(room, len, "{list}");
    }
}
