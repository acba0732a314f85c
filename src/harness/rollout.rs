//! Verdicts on a Deployment experiment as a whole: how many replicas were un-Ready at once,
//! how long the rollout took, and whether each terminating pod left its Service's endpoints
//! before its SIGTERM. Pure: the pods' reports and the experiment's observations in.

use jiff::Timestamp;

use super::verdict::verdict;
use crate::crd::experiment::{DeploymentObserved, EndpointChange, EndpointTiming, RolloutSeconds, Verdict};
use crate::lifecycle::PodHistory;
use crate::target::sigterm_from_termination_message;

/// One pod's endpoint in a Service's EndpointSlices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointState {
    pub pod: String,
    pub ready: bool,
    pub terminating: bool,
}

/// The changes from `before` to `after` (both by pod UID), stamped `at`: a new or changed
/// endpoint as it is now, a vanished one as not present.
#[must_use]
pub fn endpoint_changes(
    before: &std::collections::BTreeMap<String, EndpointState>,
    after: &std::collections::BTreeMap<String, EndpointState>,
    at: Timestamp,
) -> Vec<EndpointChange> {
    let mut out = Vec::new();
    for (uid, now) in after {
        if before.get(uid) != Some(now) {
            out.push(EndpointChange {
                at,
                pod: now.pod.clone(),
                uid: uid.clone(),
                present: true,
                ready: now.ready,
                terminating: now.terminating,
            });
        }
    }
    for (uid, was) in before {
        if !after.contains_key(uid) {
            out.push(EndpointChange { at, pod: was.pod.clone(), uid: uid.clone(), present: false, ready: false, terminating: false });
        }
    }
    out
}

/// A Service's EndpointSlices as a watch delivers them, folded into per-pod endpoint changes.
/// A relist (`begin_relist`, `relisted`, `end_relist`) replaces every slice at once when it
/// ends, so a slice deleted while the watch was down is dropped then, and a half-read list
/// makes no changes.
#[derive(Debug, Default)]
pub struct SliceFold {
    slices: std::collections::BTreeMap<String, Vec<(String, EndpointState)>>,
    relisting: Option<std::collections::BTreeMap<String, Vec<(String, EndpointState)>>>,
    known: std::collections::BTreeMap<String, EndpointState>,
}

impl SliceFold {
    /// A slice was added or changed; its endpoints by pod UID.
    pub fn applied(&mut self, slice: String, endpoints: Vec<(String, EndpointState)>, at: Timestamp) -> Vec<EndpointChange> {
        self.slices.insert(slice, endpoints);
        self.changes(at)
    }

    pub fn deleted(&mut self, slice: &str, at: Timestamp) -> Vec<EndpointChange> {
        self.slices.remove(slice);
        self.changes(at)
    }

    pub fn begin_relist(&mut self) {
        self.relisting = Some(std::collections::BTreeMap::new());
    }

    pub fn relisted(&mut self, slice: String, endpoints: Vec<(String, EndpointState)>) {
        self.relisting.get_or_insert_with(Default::default).insert(slice, endpoints);
    }

    pub fn end_relist(&mut self, at: Timestamp) -> Vec<EndpointChange> {
        if let Some(listed) = self.relisting.take() {
            self.slices = listed;
        }
        self.changes(at)
    }

    /// A pod's endpoint across every slice: present in any, ready in any.
    fn changes(&mut self, at: Timestamp) -> Vec<EndpointChange> {
        let mut now: std::collections::BTreeMap<String, EndpointState> = std::collections::BTreeMap::new();
        for (uid, state) in self.slices.values().flatten() {
            let entry = now.entry(uid.clone()).or_insert_with(|| state.clone());
            entry.ready |= state.ready;
            entry.terminating &= state.terminating;
        }
        let changes = endpoint_changes(&self.known, &now, at);
        self.known = now;
        changes
    }
}

fn no_deployment(name: &str, expected: String) -> Verdict {
    verdict(name.into(), false, expected, "no deployment observed (spec.deployment not set?)".into())
}

/// Whether pod `h` counted as Ready at `t`: its Ready condition True, and not being deleted.
fn ready_at(h: &PodHistory, t: Timestamp) -> bool {
    let ready = h.conditions.iter().rfind(|c| c.type_ == "Ready" && c.at <= t).is_some_and(|c| c.status == "True");
    ready && h.deleted_at.is_none_or(|d| t < d)
}

fn wanted_at(d: &DeploymentObserved, t: Timestamp) -> i32 {
    d.replicas.iter().rfind(|r| r.at <= t).or(d.replicas.first()).map_or(0, |r| r.replicas)
}

/// The most replicas un-Ready at once (wanted minus Ready), from the first moment all wanted
/// replicas were Ready; `None` if they never all were.
#[must_use]
pub fn most_unready(pods: &[PodHistory], d: &DeploymentObserved) -> Option<(i32, Timestamp)> {
    // Every moment the count can change: Ready flips, deletions, scale actions.
    let mut moments: Vec<Timestamp> = pods.iter().flat_map(|h| h.conditions.iter().filter(|c| c.type_ == "Ready").map(|c| c.at)).collect();
    moments.extend(pods.iter().filter_map(|h| h.deleted_at));
    moments.extend(d.replicas.iter().map(|r| r.at));
    moments.sort();
    moments.dedup();
    let unready = |t: Timestamp| wanted_at(d, t) - i32::try_from(pods.iter().filter(|h| ready_at(h, t)).count()).unwrap_or(i32::MAX);
    let start = moments.iter().position(|t| unready(*t) <= 0)?;
    moments[start..].iter().map(|t| (unready(*t).max(0), *t)).max_by_key(|(n, t)| (*n, std::cmp::Reverse(*t)))
}

#[must_use]
pub fn max_unready(max: u32, pods: &[PodHistory], d: Option<&DeploymentObserved>) -> Verdict {
    let expected = format!("<= {max} un-Ready at once");
    let Some(d) = d else { return no_deployment("max un-Ready", expected) };
    match most_unready(pods, d) {
        Some((n, at)) => {
            let ok = u32::try_from(n).is_ok_and(|n| n <= max);
            verdict("max un-Ready".into(), ok, expected, format!("{n} at {}", at.strftime("%H:%M:%S%.3f")))
        }
        None => verdict("max un-Ready".into(), false, expected, "the replicas were never all Ready".into()),
    }
}

#[must_use]
pub fn rollout_seconds(r: &RolloutSeconds, d: Option<&DeploymentObserved>) -> Verdict {
    let expected = format!("{}..={} s", r.min, r.max);
    let Some(d) = d else { return no_deployment("rollout seconds", expected) };
    let took = match (d.rollout_started_at, d.rollout_complete_at) {
        (Some(s), Some(e)) => Some(e.duration_since(s).as_secs_f64()),
        _ => None,
    };
    let observed = match (d.rollout_started_at, took) {
        (None, _) => "no rollout action ran".into(),
        (Some(_), None) => "the rollout did not complete".into(),
        (Some(_), Some(s)) => format!("{s:.1} s"),
    };
    verdict("rollout seconds".into(), took.is_some_and(|s| s >= r.min && s <= r.max), expected, observed)
}

/// When pod `uid`'s endpoint stopped taking traffic: its first change to not ready (or gone)
/// after it was last ready.
fn endpoint_left(changes: &[&EndpointChange]) -> Option<Timestamp> {
    let mut was_ready = false;
    let mut left = None;
    for c in changes {
        let serving = c.present && c.ready;
        if serving {
            was_ready = true;
            left = None;
        } else if was_ready && left.is_none() {
            left = Some(c.at);
        }
    }
    left
}

/// The pod's last SIGTERM, as a target wrote it into a termination message: the one that
/// pairs with the endpoint's last leaving (an earlier probe kill has its own).
fn last_sigterm(h: &PodHistory) -> Option<Timestamp> {
    h.containers
        .iter()
        .flat_map(|c| c.terminations.iter())
        .filter_map(|t| t.termination.message.as_deref().and_then(sigterm_from_termination_message))
        .max()
}

/// Per pod that got SIGTERM and had been a ready endpoint: the endpoint's last leaving minus
/// the last SIGTERM, in ms (negative: before); `None` if it was still a ready endpoint.
#[must_use]
pub fn endpoint_lags(pods: &[PodHistory], d: &DeploymentObserved) -> Vec<(String, Option<i64>)> {
    let mut out = Vec::new();
    for h in pods {
        let Some(sigterm) = last_sigterm(h) else { continue };
        if !ever_ready(d, &h.uid) {
            continue;
        }
        let changes: Vec<&EndpointChange> = d.endpoints.iter().filter(|c| c.uid == h.uid).collect();
        let lag = endpoint_left(&changes).map(|left| left.duration_since(sigterm).as_millis() as i64);
        out.push((h.pod.clone(), lag));
    }
    out
}

/// Whether pod `uid` was ever a ready endpoint: one that never was (replaced or scaled away
/// before it was Ready) never took traffic, so its SIGTERM is not judged.
fn ever_ready(d: &DeploymentObserved, uid: &str) -> bool {
    d.endpoints.iter().any(|c| c.uid == uid && c.present && c.ready)
}

#[must_use]
pub fn endpoint_before_sigterm(t: &EndpointTiming, pods: &[PodHistory], d: Option<&DeploymentObserved>) -> Verdict {
    let name = "endpoint removed before SIGTERM";
    let expected =
        if t.within_ms == 0 { "before the SIGTERM".to_string() } else { format!("at most {} ms after the SIGTERM", t.within_ms) };
    let Some(d) = d else { return no_deployment(name, expected) };
    let lags = endpoint_lags(pods, d);
    let shown: Vec<String> = lags
        .iter()
        .map(|(pod, lag)| match lag {
            Some(ms) if *ms <= 0 => format!("{pod}: {} ms before", -ms),
            Some(ms) => format!("{pod}: {ms} ms after"),
            None => format!("{pod}: still an endpoint"),
        })
        .collect();
    let measured = lags.iter().filter(|(_, l)| l.is_some()).count();
    let ok = measured >= t.min_pods as usize && lags.iter().all(|(_, l)| l.is_some_and(|ms| ms <= t.within_ms));
    let mut shown = shown;
    shown.extend(
        pods.iter().filter(|h| last_sigterm(h).is_some() && !ever_ready(d, &h.uid)).map(|h| format!("{}: never a ready endpoint", h.pod)),
    );
    let observed = if shown.is_empty() { "no pod that served recorded a SIGTERM".to_string() } else { shown.join(", ") };
    verdict(name.into(), ok, format!("{expected} (>= {} pods)", t.min_pods), observed)
}

/// A Deployment experiment's pods on one axis (see `harness::workload`), with each pod's
/// SIGTERM and the moment its endpoint stopped being ready marked on its row.
#[must_use]
pub fn timeline(title: &str, pods: &[PodHistory], d: &DeploymentObserved, end: Timestamp) -> super::timeline::Timeline {
    use super::timeline::{Marker, Tone};
    let view = super::workload::view(title, pods, end);
    let mut timeline = super::workload::timeline(&view, pods, end);
    let at = |t: Timestamp| t.duration_since(timeline.origin).as_secs_f64();
    let prefix = super::workload::common_dash_prefix(pods.iter().map(|h| h.pod.as_str()));
    let mut marks = Vec::new();
    for h in pods {
        let lane = h.pod.get(prefix..).filter(|s| !s.is_empty()).unwrap_or(&h.pod).to_string();
        let sigterm = last_sigterm(h);
        if let Some(s) = sigterm {
            marks.push(Marker {
                at: at(s),
                lane: lane.clone(),
                text: "SIGTERM (the target's clock)".into(),
                short: Some("TERM".into()),
                tone: Tone::Bad,
            });
        }
        let changes: Vec<&EndpointChange> = d.endpoints.iter().filter(|c| c.uid == h.uid).collect();
        if let Some(left) = endpoint_left(&changes) {
            marks.push(Marker {
                at: at(left),
                lane,
                text: "endpoint no longer ready".into(),
                short: Some("ep-".into()),
                tone: Tone::Waiting,
            });
        }
    }
    timeline.markers.extend(marks);
    timeline.markers.sort_by(|a, b| a.at.total_cmp(&b.at));
    timeline
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::experiment::ReplicasAt;
    use crate::lifecycle::Source;
    use crate::lifecycle::history::{ConditionTransition, ContainerHistory, TerminationRecord};
    use crate::lifecycle::snapshot::{ContainerKind, Termination};

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_millisecond(1_800_000_000_000 + ms).unwrap()
    }

    fn pod(name: &str, ready: &[(i64, bool)], deleted: Option<i64>, sigterm: Option<i64>) -> PodHistory {
        let mut h = PodHistory::new(name, name);
        for (at, r) in ready {
            h.conditions.push_back(ConditionTransition {
                type_: "Ready".into(),
                status: if *r { "True" } else { "False" }.into(),
                reason: None,
                message: None,
                at: t(*at),
                source: Source::Live,
            });
        }
        h.deleted_at = deleted.map(t);
        let mut c = ContainerHistory::new("app", ContainerKind::App);
        if let Some(s) = sigterm {
            c.terminations.push_back(TerminationRecord {
                run: 0,
                termination: Termination {
                    exit_code: 0,
                    message: Some(format!("SIGTERM at {}; drained for 3000ms, then exited", t(s))),
                    ..Default::default()
                },
                source: Source::Live,
            });
        }
        h.containers.push(c);
        h
    }

    fn observed(endpoints: Vec<EndpointChange>) -> DeploymentObserved {
        DeploymentObserved { replicas: vec![ReplicasAt { at: t(0), replicas: 2 }], endpoints, ..Default::default() }
    }

    fn ep(at: i64, pod: &str, present: bool, ready: bool) -> EndpointChange {
        EndpointChange { at: t(at), pod: pod.into(), uid: pod.into(), present, ready, terminating: present && !ready }
    }

    #[test]
    fn a_surge_rollout_keeps_every_replica_ready_and_an_unavailable_one_does_not() {
        // old-a, old-b Ready at 1 s; new-a Ready at 10 s, then old-a deleted; new-b Ready at
        // 20 s, then old-b deleted: never fewer than 2 Ready.
        let surge = [
            pod("old-a", &[(1000, true)], Some(10_500), None),
            pod("old-b", &[(1000, true)], Some(20_500), None),
            pod("new-a", &[(9000, false), (10_000, true)], None, None),
            pod("new-b", &[(15_000, false), (20_000, true)], None, None),
        ];
        let d = observed(vec![]);
        assert_eq!(most_unready(&surge, &d).map(|(n, _)| n), Some(0));
        assert!(max_unready(0, &surge, Some(&d)).passed);
        // maxUnavailable 1 with no surge: old-a deleted at 5 s, before new-a is Ready at 10 s.
        let unavailable = [
            pod("old-a", &[(1000, true)], Some(5000), None),
            pod("old-b", &[(1000, true)], None, None),
            pod("new-a", &[(6000, false), (10_000, true)], None, None),
        ];
        let v = max_unready(0, &unavailable, Some(&d));
        assert!(!v.passed, "{v:?}");
        assert!(v.observed.starts_with("1 at "), "{v:?}");
        // Start-up does not count: before all were first Ready nothing is judged.
        assert!(max_unready(0, &[pod("slow", &[(5000, true)], None, None), pod("slow2", &[(6000, true)], None, None)], Some(&d)).passed);
    }

    #[test]
    fn endpoint_leaving_is_judged_against_the_targets_sigterm() {
        // preStop sleep: the endpoint goes not-ready at 10.1 s, SIGTERM at 15 s (4900 ms before).
        let slept = pod("a", &[(1000, true)], Some(10_000), Some(15_000));
        // No preStop: SIGTERM at 10.05 s, the endpoint leaves at 10.2 s (150 ms after).
        let bare = pod("b", &[(1000, true)], Some(10_000), Some(10_050));
        let d = observed(vec![
            ep(1000, "a", true, true),
            ep(1000, "b", true, true),
            ep(10_100, "a", true, false),
            ep(10_200, "b", false, false),
        ]);
        let lags = endpoint_lags(&[slept.clone(), bare.clone()], &d);
        assert_eq!(lags, [("a".to_string(), Some(-4900)), ("b".to_string(), Some(150))]);
        let strict = EndpointTiming { within_ms: 0, min_pods: 1 };
        assert!(endpoint_before_sigterm(&strict, std::slice::from_ref(&slept), Some(&d)).passed);
        let v = endpoint_before_sigterm(&strict, &[slept.clone(), bare.clone()], Some(&d));
        assert!(!v.passed && v.observed.contains("b: 150 ms after"), "{v:?}");
        assert!(endpoint_before_sigterm(&EndpointTiming { within_ms: 200, min_pods: 2 }, &[slept, bare.clone()], Some(&d)).passed);
        // Never measured (no endpoint seen leaving) is a failure, not a pass.
        let never = observed(vec![ep(1000, "b", true, true)]);
        assert!(!endpoint_before_sigterm(&EndpointTiming { within_ms: 10_000, min_pods: 1 }, &[bare], Some(&never)).passed);
        // Too few pods measured.
        assert!(!endpoint_before_sigterm(&EndpointTiming { within_ms: 0, min_pods: 1 }, &[], Some(&d)).passed);
    }

    #[test]
    fn endpoint_changes_are_news_only() {
        use std::collections::BTreeMap;
        let state = |ready, terminating| EndpointState { pod: "p".into(), ready, terminating };
        let before = BTreeMap::from([("a".to_string(), state(true, false)), ("b".to_string(), state(true, false))]);
        let after = BTreeMap::from([("a".to_string(), state(false, true)), ("c".to_string(), state(false, false))]);
        let changes = endpoint_changes(&before, &after, t(5));
        let shown: Vec<(&str, bool, bool, bool)> = changes.iter().map(|c| (c.uid.as_str(), c.present, c.ready, c.terminating)).collect();
        assert_eq!(shown, [("a", true, false, true), ("c", true, false, false), ("b", false, false, false)]);
        assert!(endpoint_changes(&after, &after, t(6)).is_empty(), "an unchanged slice adds nothing");
    }

    #[test]
    fn slices_fold_across_slices_and_a_relist_drops_what_went_while_the_watch_was_down() {
        let state = |pod: &str, ready| EndpointState { pod: pod.into(), ready, terminating: !ready };
        let mut f = SliceFold::default();
        assert_eq!(f.applied("s1".into(), vec![("a".into(), state("a", true))], t(1)).len(), 1);
        // The same pod in a second slice, not ready there: still ready overall, no change.
        assert!(f.applied("s2".into(), vec![("a".into(), state("a", false)), ("b".into(), state("b", true))], t(2)).len() == 1);
        let left = f.deleted("s1", t(3));
        assert_eq!(left.iter().map(|c| (c.uid.as_str(), c.present, c.ready)).collect::<Vec<_>>(), [("a", true, false)]);
        // The watch broke; s2 was deleted meanwhile and s3 made. Nothing changes mid-list.
        f.begin_relist();
        f.relisted("s3".into(), vec![("c".into(), state("c", true))]);
        let after = f.end_relist(t(9));
        let shown: Vec<(&str, bool)> = after.iter().map(|c| (c.uid.as_str(), c.present)).collect();
        assert_eq!(shown, [("c", true), ("a", false), ("b", false)], "a and b gone with s2, c new");
    }

    #[test]
    fn a_pod_never_ready_is_not_judged_and_the_last_sigterm_pairs_with_the_last_leave() {
        // Scaled away before it was ever Ready: no endpoint to leave, not a failure.
        let early = pod("early", &[], Some(3000), Some(3010));
        // Liveness-killed at 2 s (a SIGTERM, endpoint not ready, ready again), deleted at 10 s.
        let mut killed = pod("killed", &[(1000, true)], Some(10_000), Some(2000));
        killed.containers[0].terminations.push_back(TerminationRecord {
            run: 1,
            termination: Termination { message: Some(format!("SIGTERM at {}; exited at once", t(10_050))), ..Default::default() },
            source: Source::Live,
        });
        let d = observed(vec![
            ep(1000, "killed", true, true),
            ep(2100, "killed", true, false),
            ep(4000, "killed", true, true),
            ep(10_020, "killed", true, false),
            ep(1000, "early", true, false),
        ]);
        let lags = endpoint_lags(&[early.clone(), killed.clone()], &d);
        assert_eq!(lags, [("killed".to_string(), Some(-30))], "the deletion's SIGTERM, not the probe kill's");
        let v = endpoint_before_sigterm(&EndpointTiming { within_ms: 0, min_pods: 1 }, &[early, killed], Some(&d));
        assert!(v.passed, "{v:?}");
        assert!(v.observed.contains("early: never a ready endpoint"), "{v:?}");
    }

    #[test]
    fn rollout_seconds_need_a_complete_rollout() {
        let mut d = observed(vec![]);
        let range = RolloutSeconds { min: 0.0, max: 30.0 };
        assert_eq!(rollout_seconds(&range, Some(&d)).observed, "no rollout action ran");
        d.rollout_started_at = Some(t(1000));
        assert!(!rollout_seconds(&range, Some(&d)).passed);
        d.rollout_complete_at = Some(t(13_500));
        let v = rollout_seconds(&range, Some(&d));
        assert!(v.passed && v.observed == "12.5 s", "{v:?}");
        assert!(!rollout_seconds(&RolloutSeconds { min: 0.0, max: 10.0 }, Some(&d)).passed);
    }

    #[test]
    fn the_sigterm_time_is_read_from_the_targets_termination_message() {
        let at = sigterm_from_termination_message("SIGTERM at 2026-12-02T18:00:00.123Z; drained for 3000ms, then exited");
        assert_eq!(at, Some("2026-12-02T18:00:00.123Z".parse().unwrap()));
        assert_eq!(sigterm_from_termination_message("SIGTERM at 2026-12-02T18:00:00.123Z;"), at);
        assert_eq!(sigterm_from_termination_message("SIGTERM: exited at once"), None, "an older target's message");
    }
}
