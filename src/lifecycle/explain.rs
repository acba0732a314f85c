//! `kubectl podlife explain POD`: the causal chain of a pod's current state and of its last
//! restarts, in plain sentences, from its report alone. Pure: history in, sentences out.
//!
//! The kubelet aggregates repeated events (one Killing with a count, first and last time), so
//! a kill is tied to a run when the event series spans that run; the exact kill time is known
//! only when one of the two recorded times falls inside the run.

use jiff::Timestamp;
use serde::Serialize;

use super::history::{ContainerHistory, EventRecord, PodHistory, format_seconds};
use super::snapshot::{ContainerState, Termination};
use crate::lifecycle::history::BackoffState;

/// How many of each container's latest runs are told.
pub const RUNS_TOLD: usize = 3;

/// Times have one-second resolution (the kubelet's), so an event "in" a run may be stamped a
/// second after its end.
const CLOCK_SLACK_SECONDS: i64 = 1;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    pub pod: String,
    /// Where the pod stands now.
    pub now: Vec<String>,
    /// The latest ended runs, oldest first, each as its own chain of causes.
    pub runs: Vec<RunStory>,
    /// What is out of the ordinary.
    pub unusual: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunStory {
    pub container: String,
    /// The restart count of the run that ended (0: the first run).
    pub run: i32,
    pub sentences: Vec<String>,
}

fn clock(t: Timestamp) -> String {
    t.strftime("%H:%M:%S").to_string()
}

fn secs(from: Timestamp, to: Timestamp) -> f64 {
    to.duration_since(from).as_secs_f64()
}

fn ordinal(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (1, 11) | (2, 12) | (3, 13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// An event series of `container` whose times span `[from, to]`.
fn series_in<'a>(
    history: &'a PodHistory,
    container: &str,
    reason: &str,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
) -> Vec<&'a EventRecord> {
    history
        .events
        .iter()
        .filter(|e| e.reason == reason && e.container.as_deref() == Some(container))
        .filter(|e| {
            let first = e.first_seen.or(e.last_seen);
            let last = e.last_seen.or(e.first_seen);
            let after_start = match (from, last) {
                (Some(f), Some(l)) => l.as_second() >= f.as_second(),
                _ => true,
            };
            let before_end = match (to, first) {
                (Some(t), Some(f)) => f.as_second() <= t.as_second() + CLOCK_SLACK_SECONDS,
                _ => true,
            };
            after_start && before_end
        })
        .collect()
}

/// The instant of an event series that falls inside `[from, to]`, if one does.
fn instant_in(e: &EventRecord, from: Option<Timestamp>, to: Option<Timestamp>) -> Option<Timestamp> {
    let inside = |t: Timestamp| {
        from.is_none_or(|f| t.as_second() >= f.as_second()) && to.is_none_or(|e| t.as_second() <= e.as_second() + CLOCK_SLACK_SECONDS)
    };
    [e.last_seen, e.first_seen].into_iter().flatten().find(|t| inside(*t))
}

fn probe_of_killing(message: &str) -> Option<&'static str> {
    ["liveness", "startup"].into_iter().find(|p| message.contains(&format!("failed {p} probe")))
}

/// The story of one ended run.
fn run_story(history: &PodHistory, c: &ContainerHistory, t: &Termination, run: i32) -> Vec<String> {
    let mut out = Vec::new();
    let (start, end) = (t.started_at, t.finished_at);
    let killings: Vec<&EventRecord> = series_in(history, &c.name, "Killing", start, end);
    let probe_kill = killings.iter().find_map(|k| probe_of_killing(&k.message).map(|p| (p, *k)));
    let any_kill = probe_kill.map(|(_, k)| k).or_else(|| killings.first().copied());
    if let Some((probe, _)) = probe_kill {
        let unhealthy = series_in(history, &c.name, "Unhealthy", start, end);
        if let Some(u) = unhealthy.iter().find(|u| u.message.to_lowercase().starts_with(probe)) {
            let mut s = format!("the {probe} probe failed: \"{}\"", u.message);
            if let (Some(first), Some(last)) = (u.first_seen, u.last_seen)
                && u.count > 1
            {
                let every = secs(first, last) / f64::from(u.count - 1);
                s.push_str(&format!(
                    "; the kubelet reported it {} times between {} and {}, about every {}",
                    u.count,
                    clock(first),
                    clock(last),
                    format_seconds(every)
                ));
            }
            out.push(s);
        } else {
            out.push(format!("the {probe} probe failed"));
        }
    }
    let killed_at = any_kill.and_then(|k| instant_in(k, start, end));
    match (any_kill, killed_at) {
        (Some(k), Some(at)) => out.push(format!("then the kubelet killed the container at {}: \"{}\"", clock(at), k.message)),
        (Some(k), None) => out.push(format!("then the kubelet killed the container: \"{}\"", k.message)),
        (None, _) => {}
    }
    let reason = t.reason.as_deref().unwrap_or("Terminated");
    let ran = match (start, end) {
        (Some(s), Some(e)) => format!(" after running {}", format_seconds(secs(s, e))),
        _ => String::new(),
    };
    let end_clock = end.map_or_else(String::new, |e| format!(" at {}", clock(e)));
    match (any_kill, t.exit_code) {
        (_, _) if reason == "OOMKilled" => out.push(format!("it was OOM-killed (exit {}){end_clock}{ran}", t.exit_code)),
        (Some(_), 137) => {
            let grace = match (killed_at, end) {
                (Some(k), Some(e)) => format!(" {} after the kill began, when its grace period ran out", format_seconds(secs(k, e))),
                _ => " when its grace period ran out".to_string(),
            };
            out.push("SIGTERM did not stop it".to_string());
            out.push(format!("SIGKILL ended it{grace}: exit 137{end_clock}"));
        }
        (Some(_), 143) => out.push(format!("it exited on SIGTERM (exit 143){end_clock}{}", after_kill(killed_at, end))),
        (Some(_), code) => out.push(format!("it exited with code {code} ({reason}){end_clock}{}", after_kill(killed_at, end))),
        (None, 137) => out.push(format!("it was killed by SIGKILL (exit 137, {reason}){end_clock}{ran}, not by a probe of the kubelet")),
        (None, 0) => out.push(format!("it exited on its own with code 0 ({reason}){end_clock}{ran}")),
        (None, code) => out.push(format!("it exited on its own with code {code} ({reason}){end_clock}{ran}")),
    }
    match c.restarts.iter().find(|r| r.number == run + 1) {
        Some(r) => {
            let curve = match (r.fits_curve, r.announced_seconds) {
                (Some(false), _) => format!(", OFF the curve (expected {})", format_seconds(r.expected_seconds)),
                (_, Some(a)) => format!(" (announced {})", format_seconds(a)),
                _ => String::new(),
            };
            let when = match r.measured_seconds {
                Some(m) if m < 1.0 => "immediately".to_string(),
                Some(m) => format!("after {}", format_seconds(m)),
                None => "after an unmeasured delay".to_string(),
            };
            let step = if r.backoff_step <= 1 {
                "the first step of the back-off, which restarts at once".to_string()
            } else {
                format!("the {} step of the back-off", ordinal(r.backoff_step))
            };
            out.push(format!("the kubelet restarted it {when}, {step}{curve}"));
        }
        None if c.restart_count > run => out.push("it was restarted; the restart was not observed".to_string()),
        None => {}
    }
    out
}

fn after_kill(killed_at: Option<Timestamp>, end: Option<Timestamp>) -> String {
    match (killed_at, end) {
        (Some(k), Some(e)) => format!(", {} after the kill began", format_seconds(secs(k, e))),
        _ => String::new(),
    }
}

fn now_sentences(history: &PodHistory, now: Timestamp) -> Vec<String> {
    let s = &history.summary;
    let mut out = vec![format!(
        "pod {} is {}{}, {} ready, {} restart{}",
        history.pod,
        s.phase.map_or("of unknown phase", |p| p.as_str()),
        s.owner.as_ref().map_or_else(String::new, |o| format!(" (owned by {o})")),
        s.ready,
        s.restarts,
        if s.restarts == 1 { "" } else { "s" }
    )];
    if let Some(at) = history.deleted_at {
        out.push(format!("it was deleted at {}", clock(at)));
    }
    for c in &history.containers {
        match c.states.back().map(|s| (&s.state, s.at)) {
            Some((ContainerState::Running { started_at }, at)) => {
                out.push(format!("container {} is running since {}", c.name, clock(started_at.unwrap_or(at))));
            }
            Some((ContainerState::Waiting { reason, .. }, _)) => {
                let reason = reason.as_deref().unwrap_or("Waiting");
                match &c.backoff {
                    BackoffState::Waiting { announced_seconds, next_restart_after } => {
                        let next = next_restart_after.map_or_else(String::new, |n| {
                            let left = secs(now, n);
                            let left = if left > 0.0 { format!(", in {}", format_seconds(left)) } else { String::new() };
                            format!("; next restart not before {}{left}", clock(n))
                        });
                        out.push(format!(
                            "container {} is waiting in {reason}: back-off {}, the {} step{next}",
                            c.name,
                            format_seconds(*announced_seconds),
                            ordinal(c.backoff_step + 1)
                        ));
                    }
                    BackoffState::None => out.push(format!("container {} is waiting: {reason}", c.name)),
                }
            }
            Some((ContainerState::Terminated(t), _)) => {
                out.push(format!("container {} has ended: exit {} ({})", c.name, t.exit_code, t.reason.as_deref().unwrap_or("Terminated")));
            }
            None => out.push(format!("container {} has no state yet", c.name)),
        }
    }
    out
}

fn unusual(history: &PodHistory) -> Vec<String> {
    let mut out = Vec::new();
    for c in &history.containers {
        let oom = c.terminations.iter().filter(|t| t.termination.reason.as_deref() == Some("OOMKilled")).count();
        if oom > 0 {
            out.push(format!("container {} was OOM-killed {oom} time{}", c.name, if oom == 1 { "" } else { "s" }));
        }
        let startup_kills: u32 = history
            .events
            .iter()
            .filter(|e| {
                e.reason == "Killing" && e.container.as_deref() == Some(c.name.as_str()) && probe_of_killing(&e.message) == Some("startup")
            })
            .map(|e| e.count)
            .sum();
        if startup_kills > 0 && !c.started.iter().any(|f| f.value) {
            out.push(format!("the startup probe of {} never passed: the kubelet killed it {startup_kills} time(s) for it", c.name));
        }
        for pair in c.terminations.iter().collect::<Vec<_>>().windows(2) {
            let (a, b) = (&pair[0].termination, &pair[1].termination);
            if a.exit_code != b.exit_code {
                out.push(format!(
                    "the exit code of {} changed from {} to {} (run {} to run {})",
                    c.name, a.exit_code, b.exit_code, pair[0].run, pair[1].run
                ));
            }
        }
        for pair in c.restarts.iter().collect::<Vec<_>>().windows(2) {
            if pair[1].backoff_step <= 1 {
                let ran = match (pair[0].started_at, pair[1].previous_finished_at) {
                    (Some(s), Some(e)) => format!(" after a run of {}", format_seconds(secs(s, e))),
                    _ => String::new(),
                };
                out.push(format!("the back-off of {} was reset{ran}: restart #{} was immediate again", c.name, pair[1].number));
            }
        }
        let off: Vec<String> = c.restarts.iter().filter(|r| r.fits_curve == Some(false)).map(|r| format!("#{}", r.number)).collect();
        if !off.is_empty() {
            out.push(format!(
                "restart{} {} of {} did not follow the documented back-off curve",
                if off.len() == 1 { "" } else { "s" },
                off.join(", "),
                c.name
            ));
        }
    }
    if history.truncated.total() > 0 {
        out.push(format!("older history was dropped to keep the report bounded ({} entries)", history.truncated.total()));
    }
    out
}

/// Explains `history` as of `now`.
#[must_use]
pub fn explain(history: &PodHistory, now: Timestamp) -> Explanation {
    let mut runs = Vec::new();
    for c in &history.containers {
        let told = c.terminations.len().saturating_sub(RUNS_TOLD);
        for t in c.terminations.iter().skip(told) {
            runs.push(RunStory { container: c.name.clone(), run: t.run, sentences: run_story(history, c, &t.termination, t.run) });
        }
    }
    runs.sort_by_key(|r| {
        let c = history.containers.iter().find(|c| c.name == r.container);
        c.and_then(|c| c.terminations.iter().find(|t| t.run == r.run)).and_then(|t| t.termination.finished_at)
    });
    Explanation { pod: history.pod.clone(), now: now_sentences(history, now), runs, unusual: unusual(history) }
}

impl Explanation {
    /// Plain text: one paragraph per part, each sentence on a line.
    #[must_use]
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let cap = |s: &str| {
            let mut c = s.chars();
            c.next().map_or_else(String::new, |f| f.to_uppercase().chain(c).collect())
        };
        for s in &self.now {
            out.push_str(&format!("{}.\n", cap(s)));
        }
        for r in &self.runs {
            out.push_str(&format!("\n{} run {} (restart count {}):\n", r.container, r.run + 1, r.run));
            for (i, s) in r.sentences.iter().enumerate() {
                out.push_str(&format!("  {}{}.\n", if i == 0 { "" } else { "→ " }, cap(s)));
            }
        }
        if !self.unusual.is_empty() {
            out.push_str("\nUnusual:\n");
            for s in &self.unusual {
                out.push_str(&format!("  ! {}.\n", cap(s)));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pod's history as the operator recorded it on the real kubelet (a conformance fixture).
    fn recorded(fixture: &str) -> PodHistory {
        let experiment: serde_json::Value = serde_json::from_str(fixture).unwrap();
        serde_json::from_value(experiment["status"]["evidence"]["pods"][0].clone()).unwrap()
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_liveness_kill_that_ignores_sigterm_is_told_as_a_chain() {
        // Real record: liveness fails (503), the probe's terminationGracePeriodSeconds is 2,
        // the target ignores SIGTERM.
        let h = recorded(include_str!("../../tests/fixtures/conformance/liveness-probe-grace-period-overrides-pod.json"));
        let e = explain(&h, at("2026-12-02T14:47:30Z"));
        let first = e.runs.iter().find(|r| r.run == 0).expect("the first run is told");
        let text = first.sentences.join(" | ");
        assert!(text.contains("the liveness probe failed: \"Liveness probe failed: HTTP probe failed with statuscode: 503\""), "{text}");
        assert!(text.contains("reported it 3 times"), "{text}");
        assert!(text.contains("then the kubelet killed the container at 14:46:50"), "{text}");
        assert!(text.contains("SIGTERM did not stop it"), "{text}");
        assert!(text.contains("SIGKILL ended it 2s after the kill began"), "the 2 s probe grace: {text}");
        assert!(text.contains("exit 137 at 14:46:52"), "{text}");
        assert!(text.contains("restarted it immediately, the first step"), "{text}");
        let third = e.runs.iter().find(|r| r.run == 2).unwrap().sentences.join(" | ");
        assert!(third.contains("after 13s, the 3rd step of the back-off, OFF the curve (expected 20s)"), "{third}");
        assert!(e.unusual.iter().any(|u| u.contains("did not follow the documented back-off curve")), "{:?}", e.unusual);
        assert!(e.now[0].starts_with("pod "), "{:?}", e.now);
    }

    #[test]
    fn a_reset_back_off_is_unusual() {
        let h = recorded(include_str!("../../tests/fixtures/conformance/backoff-reset-after-long-run.json"));
        let e = explain(&h, at("2026-12-02T23:00:00Z"));
        assert!(e.unusual.iter().any(|u| u.contains("was reset after a run of 10m")), "{:?}", e.unusual);
        let text: Vec<String> = e.runs.iter().flat_map(|r| r.sentences.clone()).collect();
        assert!(text.iter().any(|s| s.contains("exited on its own with code 1")), "{text:?}");
    }

    #[test]
    fn a_startup_probe_that_never_passed_is_unusual() {
        let h = recorded(include_str!("../../tests/fixtures/conformance/startup-failing-restarts.json"));
        let e = explain(&h, at("2026-12-02T23:00:00Z"));
        assert!(e.unusual.iter().any(|u| u.contains("startup probe of") && u.contains("never passed")), "{:?}", e.unusual);
        assert!(e.runs.iter().any(|r| r.sentences[0].starts_with("the startup probe failed")), "{:?}", e.runs);
    }

    #[test]
    fn a_clean_run_has_nothing_unusual() {
        let h = recorded(include_str!("../../tests/fixtures/conformance/liveness-http-no-restart.json"));
        let e = explain(&h, at("2026-12-02T23:00:00Z"));
        assert!(e.unusual.is_empty(), "{:?}", e.unusual);
        assert!(e.runs.is_empty(), "{:?}", e.runs);
        assert!(e.now.iter().any(|s| s.contains("is running since")), "{:?}", e.now);
    }

    #[test]
    fn an_oom_kill_and_a_changed_exit_code_are_unusual() {
        let mut h = recorded(include_str!("../../tests/fixtures/conformance/restart-always-exit-1-restarts.json"));
        let c = &mut h.containers[0];
        assert!(c.terminations.len() >= 2, "the fixture has two runs");
        c.terminations[1].termination.reason = Some("OOMKilled".into());
        c.terminations[1].termination.exit_code = 137;
        let e = explain(&h, at("2026-12-02T23:00:00Z"));
        assert!(e.unusual.iter().any(|u| u.contains("OOM-killed 1 time")), "{:?}", e.unusual);
        assert!(e.unusual.iter().any(|u| u.contains("changed from 1 to 137")), "{:?}", e.unusual);
        assert!(e.runs.iter().any(|r| r.sentences.iter().any(|s| s.starts_with("it was OOM-killed"))), "{:?}", e.runs);
    }

    #[test]
    fn ordinals() {
        assert_eq!([1, 2, 3, 4, 11, 12, 13, 21, 22].map(ordinal), ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd"]);
    }
}
