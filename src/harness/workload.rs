//! A workload's pods on one time axis: every pod it had in the window, live and deleted, one
//! row each, with replacements, restarts and back-off marked, and a summary per pod. Pure:
//! reports in, view out.

use jiff::Timestamp;
use serde::Serialize;

use super::timeline::{Lane, Marker, Segment, Timeline, Tone, escape};
use crate::lifecycle::PodHistory;
use crate::lifecycle::history::format_seconds;
use crate::lifecycle::snapshot::ContainerState;

/// One pod of the workload.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRow {
    pub pod: String,
    pub uid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted: Option<Timestamp>,
    pub restarts: i32,
    /// Time alive without the Ready condition True (from creation to deletion or now).
    pub unready_seconds: f64,
    /// The longest back-off the kubelet announced (or, unannounced, applied) before a restart.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub longest_backoff_seconds: Option<f64>,
    /// The pod this one replaced: the earliest deleted pod not replaced yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadView {
    pub workload: String,
    pub rows: Vec<PodRow>,
    pub restarts: i32,
    pub replacements: usize,
    pub unready_seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub longest_backoff_seconds: Option<f64>,
}

fn created(h: &PodHistory) -> Option<Timestamp> {
    h.summary.startup.created.or_else(|| h.phases.front().map(|p| p.at))
}

/// `(at, ready)` points of the Ready condition, and the pod's span.
fn ready_points(h: &PodHistory) -> Vec<(Timestamp, bool)> {
    h.conditions.iter().filter(|c| c.type_ == "Ready").map(|c| (c.at, c.status == "True")).collect()
}

fn unready_seconds(h: &PodHistory, now: Timestamp) -> f64 {
    let Some(start) = created(h) else { return 0.0 };
    let end = h.deleted_at.unwrap_or(now).max(start);
    let mut ready_since: Option<Timestamp> = None;
    let mut ready_total = 0.0;
    for (at, ready) in ready_points(h) {
        let at = at.clamp(start, end);
        match (ready, ready_since) {
            (true, None) => ready_since = Some(at),
            (false, Some(since)) => {
                ready_total += at.duration_since(since).as_secs_f64();
                ready_since = None;
            }
            _ => {}
        }
    }
    if let Some(since) = ready_since {
        ready_total += end.duration_since(since).as_secs_f64();
    }
    (end.duration_since(start).as_secs_f64() - ready_total).max(0.0)
}

fn longest_backoff(h: &PodHistory) -> Option<f64> {
    h.containers
        .iter()
        .flat_map(|c| c.restarts.iter().filter_map(|r| r.announced_seconds.or(r.measured_seconds)))
        .chain(h.containers.iter().filter_map(|c| match c.backoff {
            crate::lifecycle::history::BackoffState::Waiting { announced_seconds, .. } => Some(announced_seconds),
            crate::lifecycle::history::BackoffState::None => None,
        }))
        .fold(None, |m: Option<f64>, s| Some(m.map_or(s, |m| m.max(s))))
}

fn controller(h: &PodHistory) -> Option<&str> {
    h.owners.as_ref().and_then(|o| o.chain.first()).map(|l| l.uid.as_str())
}

/// Which pod replaced which, as `(new uid, old pod name)`. Deleted pods are taken in the order
/// they went; each is replaced by the earliest pod not matched yet that was created after it
/// and either after its deletion (a pod recreated) or under another controller (a rollout's
/// new ReplicaSet, whose pods come before the old ones go).
fn replacements(pods: &[&PodHistory]) -> Vec<(String, String)> {
    let mut deleted: Vec<&PodHistory> = pods.iter().copied().filter(|h| h.deleted_at.is_some()).collect();
    deleted.sort_by_key(|h| h.deleted_at);
    let mut matched: Vec<(String, String)> = Vec::new();
    for old in deleted {
        let (Some(born), Some(gone)) = (created(old), old.deleted_at) else { continue };
        let successor = pods.iter().find(|new| {
            let Some(new_born) = created(new) else { return false };
            new.uid != old.uid
                && new_born > born
                && (new_born >= gone || controller(new) != controller(old))
                && !matched.iter().any(|(uid, _)| *uid == new.uid)
        });
        if let Some(new) = successor {
            matched.push((new.uid.clone(), old.pod.clone()));
        }
    }
    matched
}

/// The view of `workload` from its pods' reports, oldest pod first.
#[must_use]
pub fn view(workload: &str, histories: &[PodHistory], now: Timestamp) -> WorkloadView {
    let mut pods: Vec<&PodHistory> = histories.iter().collect();
    pods.sort_by_key(|h| (created(h), h.pod.clone()));
    let replaced_by = replacements(&pods);
    let rows: Vec<PodRow> = pods
        .iter()
        .map(|h| PodRow {
            pod: h.pod.clone(),
            uid: h.uid.clone(),
            created: created(h),
            deleted: h.deleted_at,
            restarts: h.summary.restarts,
            unready_seconds: unready_seconds(h, now),
            longest_backoff_seconds: longest_backoff(h),
            replaces: replaced_by.iter().find(|(new, _)| *new == h.uid).map(|(_, old)| old.clone()),
        })
        .collect();
    WorkloadView {
        workload: workload.to_string(),
        restarts: rows.iter().map(|r| r.restarts).sum(),
        replacements: rows.iter().filter(|r| r.replaces.is_some()).count(),
        unready_seconds: rows.iter().map(|r| r.unready_seconds).sum(),
        longest_backoff_seconds: rows
            .iter()
            .filter_map(|r| r.longest_backoff_seconds)
            .fold(None, |m, s| Some(m.map_or(s, |m: f64| m.max(s)))),
        rows,
    }
}

/// One row per pod on one axis: starting (waiting), Ready, not Ready, in back-off.
#[must_use]
pub fn timeline(view: &WorkloadView, histories: &[PodHistory], now: Timestamp) -> Timeline {
    let origin = view.rows.iter().filter_map(|r| r.created).min().unwrap_or(now);
    let end = histories.iter().map(|h| h.deleted_at.unwrap_or(now)).max().unwrap_or(now);
    let span = end.duration_since(origin).as_secs_f64().max(1.0);
    let secs = |t: Timestamp| t.duration_since(origin).as_secs_f64();
    // Rows are named by what tells the pods apart: "7d4f8-x2x9q" for "web-7d4f8-x2x9q".
    let prefix = common_dash_prefix(view.rows.iter().map(|r| r.pod.as_str()));
    let short = |pod: &str| pod.get(prefix..).filter(|s| !s.is_empty()).unwrap_or(pod).to_string();
    let mut lanes = Vec::new();
    let mut markers = Vec::new();
    for row in &view.rows {
        let Some(h) = histories.iter().find(|h| h.uid == row.uid) else { continue };
        let Some(start) = row.created else { continue };
        // Ready flips and back-off waits, merged in time order into one state per moment.
        let mut points: Vec<(Timestamp, Option<bool>, Option<bool>)> =
            ready_points(h).into_iter().map(|(at, r)| (at, Some(r), None)).collect();
        for c in &h.containers {
            for s in &c.states {
                let backoff = matches!(&s.state, ContainerState::Waiting { reason: Some(r), .. } if r == "CrashLoopBackOff");
                points.push((s.at, None, Some(backoff)));
            }
        }
        points.sort_by_key(|p| p.0);
        let (mut ready, mut backoff, mut was_ready) = (false, false, false);
        let mut states: Vec<(f64, String, Tone)> = vec![(secs(start), "starting".into(), Tone::Waiting)];
        for (at, r, b) in points {
            ready = r.unwrap_or(ready);
            backoff = b.unwrap_or(backoff);
            was_ready |= ready;
            let (label, tone) = match (backoff, ready, was_ready) {
                (true, _, _) => ("back-off", Tone::Bad),
                (false, true, _) => ("Ready", Tone::Good),
                (false, false, true) => ("not Ready", Tone::Bad),
                (false, false, false) => ("starting", Tone::Waiting),
            };
            if states.last().is_none_or(|s| s.1 != label) {
                states.push((secs(at.max(start)), label.to_string(), tone));
            }
        }
        let stop = secs(h.deleted_at.unwrap_or(now));
        let segments = states
            .iter()
            .enumerate()
            .map(|(i, (at, label, tone))| Segment {
                start: *at,
                end: states.get(i + 1).map_or(stop, |n| n.0).max(*at),
                label: label.clone(),
                tone: *tone,
            })
            .collect();
        let lane = short(&row.pod);
        lanes.push(Lane { name: lane.clone(), segments, ticks: Vec::new() });
        if let Some(old) = &row.replaces {
            markers.push(Marker {
                at: secs(start),
                lane: lane.clone(),
                text: format!("created, replacing {}", short(old)),
                short: Some("new".into()),
                tone: Tone::Neutral,
            });
        }
        if let Some(at) = h.deleted_at {
            markers.push(Marker {
                at: secs(at),
                lane: lane.clone(),
                text: "deleted".into(),
                short: Some("del".into()),
                tone: Tone::Neutral,
            });
        }
        for c in &h.containers {
            for r in &c.restarts {
                let Some(at) = r.started_at else { continue };
                let waited = r.announced_seconds.or(r.measured_seconds).map_or_else(|| "?".into(), format_seconds);
                markers.push(Marker {
                    at: secs(at),
                    lane: lane.clone(),
                    text: format!("{} restart #{} after a back-off of {waited} (step {})", c.name, r.number, r.backoff_step),
                    short: Some(format!("#{}", r.number)),
                    tone: if r.fits_curve == Some(false) { Tone::Bad } else { Tone::Neutral },
                });
            }
        }
    }
    markers.sort_by(|a, b| a.at.total_cmp(&b.at));
    Timeline { title: view.workload.clone(), origin, span, lanes, markers }
}

/// The length of the longest prefix, ending with '-', that all of `names` share (0 for one name).
#[must_use]
pub fn common_dash_prefix<'a>(names: impl Iterator<Item = &'a str> + Clone) -> usize {
    let mut all = names.clone();
    let Some(first) = all.next() else { return 0 };
    if names.count() < 2 {
        return 0;
    }
    let shared = all.fold(first.len(), |n, name| first.bytes().zip(name.bytes()).take(n).take_while(|(a, b)| a == b).count());
    first[..shared].rfind('-').map_or(0, |i| i + 1)
}

fn seconds_or_dash(s: Option<f64>) -> String {
    s.map_or_else(|| "-".into(), format_seconds)
}

impl WorkloadView {
    /// The per-pod table and the summary line.
    #[must_use]
    pub fn render_table(&self) -> String {
        let mut out = format!("{:<40} {:>9} {:>9} {:>9} {:>12}  {}\n", "POD", "STATUS", "RESTARTS", "UN-READY", "MAX BACK-OFF", "REPLACES");
        for r in &self.rows {
            out.push_str(&format!(
                "{:<40} {:>9} {:>9} {:>9} {:>12}  {}\n",
                r.pod,
                if r.deleted.is_some() { "deleted" } else { "live" },
                r.restarts,
                format_seconds(r.unready_seconds),
                seconds_or_dash(r.longest_backoff_seconds),
                r.replaces.as_deref().unwrap_or("-")
            ));
        }
        out.push_str(&format!(
            "\n{}: {} pods ({} live), {} restarts, {} replacements, {} un-Ready in all, longest back-off {}\n",
            self.workload,
            self.rows.len(),
            self.rows.iter().filter(|r| r.deleted.is_none()).count(),
            self.restarts,
            self.replacements,
            format_seconds(self.unready_seconds),
            seconds_or_dash(self.longest_backoff_seconds)
        ));
        out
    }

    /// One HTML page: the chart, then the table.
    #[must_use]
    pub fn render_html(&self, timeline: &Timeline) -> String {
        let mut page = format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>podlife: {0}</title><style>body{{font-family:'DejaVu Sans',Arial,sans-serif;margin:24px}} td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px}} table{{border-collapse:collapse}}</style></head><body>\n<h1>{0}</h1>\n{1}\n<table><tr><th>pod</th><th>status</th><th>restarts</th><th>un-Ready</th><th>longest back-off</th><th>replaces</th></tr>\n",
            escape(&self.workload),
            timeline.render_svg()
        );
        for r in &self.rows {
            page.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                escape(&r.pod),
                if r.deleted.is_some() { "deleted" } else { "live" },
                r.restarts,
                format_seconds(r.unready_seconds),
                seconds_or_dash(r.longest_backoff_seconds),
                escape(r.replaces.as_deref().unwrap_or("-"))
            ));
        }
        page.push_str("</table></body></html>\n");
        page
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::history::ConditionTransition;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn pod(name: &str, created: i64, ready: &[(i64, bool)], deleted: Option<i64>) -> PodHistory {
        let mut h = PodHistory::new(name, &format!("uid-{name}"));
        h.summary.startup.created = Some(t(created));
        for (at, r) in ready {
            h.conditions.push_back(ConditionTransition {
                type_: "Ready".into(),
                status: if *r { "True" } else { "False" }.into(),
                reason: None,
                message: None,
                at: t(*at),
                source: crate::lifecycle::Source::Live,
            });
        }
        h.deleted_at = deleted.map(t);
        h
    }

    #[test]
    fn a_rollout_replaces_pods_and_counts_un_ready_time() {
        // web-a ran 0..100 (Ready from 5); web-b replaced it at 100 and was Ready at 112.
        let pods =
            [pod("web-a", 0, &[(0, false), (5, true), (95, false)], Some(100)), pod("web-b", 100, &[(100, false), (112, true)], None)];
        let v = view("Deployment/web", &pods, t(200));
        assert_eq!(v.rows.iter().map(|r| r.pod.as_str()).collect::<Vec<_>>(), ["web-a", "web-b"]);
        assert_eq!(v.rows[0].unready_seconds, 10.0, "0..5 and 95..100");
        assert_eq!(v.rows[1].unready_seconds, 12.0, "100..112");
        assert_eq!(v.rows[1].replaces.as_deref(), Some("web-a"));
        assert_eq!(v.replacements, 1);
        assert_eq!(v.unready_seconds, 22.0);
        let tl = timeline(&v, &pods, t(200));
        assert_eq!(tl.lanes.len(), 2);
        let labels: Vec<&str> = tl.lanes[0].segments.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, ["starting", "Ready", "not Ready"]);
        assert_eq!(tl.lanes[1].segments[0].start, 100.0, "one axis for all pods");
        assert_eq!(tl.lanes.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), ["a", "b"], "named by what differs");
        assert!(tl.markers.iter().any(|m| m.text == "created, replacing a"), "{:?}", tl.markers);
        assert!(v.render_table().contains("2 pods (1 live), 0 restarts, 1 replacements, 22s un-Ready"), "{}", v.render_table());
    }

    #[test]
    fn a_surge_rollouts_new_pods_replace_the_old_ones_they_came_before() {
        // maxSurge 1, maxUnavailable 0: each new pod is Ready before an old one goes.
        let owned = |mut h: PodHistory, rs: &str| {
            h.owners = crate::lifecycle::workload::Owners::from_controller(Some(crate::lifecycle::workload::OwnerLink {
                kind: "ReplicaSet".into(),
                name: rs.into(),
                uid: rs.into(),
                api_version: "apps/v1".into(),
            }));
            h
        };
        let pods = [
            owned(pod("old-1", 0, &[], Some(13)), "rs-1"),
            owned(pod("old-2", 0, &[], Some(18)), "rs-1"),
            owned(pod("new-1", 9, &[], None), "rs-2"),
            owned(pod("new-2", 14, &[], None), "rs-2"),
            // Scaled up alongside, under the old revision: replaces nobody.
            owned(pod("old-3", 5, &[], None), "rs-1"),
        ];
        let v = view("Deployment/web", &pods, t(30));
        let replaces = |name: &str| v.rows.iter().find(|r| r.pod == name).unwrap().replaces.clone();
        assert_eq!(replaces("new-1").as_deref(), Some("old-1"));
        assert_eq!(replaces("new-2").as_deref(), Some("old-2"));
        assert_eq!(replaces("old-3"), None);
    }

    #[test]
    fn pods_alive_together_replace_nobody() {
        let pods = [pod("a", 0, &[], None), pod("b", 1, &[], None)];
        let v = view("StatefulSet/db", &pods, t(10));
        assert!(v.rows.iter().all(|r| r.replaces.is_none()));
        assert_eq!(v.rows[0].unready_seconds, 10.0, "never Ready: all its life");
    }

    #[test]
    fn back_off_is_the_longest_announced_and_restarts_are_marked() {
        let h: PodHistory = {
            let fixture: serde_json::Value =
                serde_json::from_str(include_str!("../../tests/fixtures/conformance/backoff-curve-and-cap.json")).unwrap();
            serde_json::from_value(fixture["status"]["evidence"]["pods"][0].clone()).unwrap()
        };
        // Judged before its deletion: "now" is its last recorded state.
        let now = h.containers[0].states.back().unwrap().at;
        let v = view("Job/x", std::slice::from_ref(&h), now);
        let announced_max = h.containers[0].restarts.iter().filter_map(|r| r.announced_seconds).fold(0.0, f64::max);
        assert!(announced_max >= 160.0, "the cap case reaches the long steps: {announced_max}");
        assert_eq!(v.rows[0].longest_backoff_seconds, Some(announced_max));
        let tl = timeline(&v, std::slice::from_ref(&h), now);
        let restarts = tl.markers.iter().filter(|m| m.text.contains("restart #")).count();
        assert_eq!(restarts, h.containers[0].restarts.iter().filter(|r| r.started_at.is_some()).count());
        assert!(tl.lanes[0].segments.iter().any(|s| s.label == "back-off"));
    }
}
