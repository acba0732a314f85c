//! Compares one report with the reference and names every difference.
//!
//! What counts, per pod:
//! - **lost**: the reference saw it, the report does not have it (a phase, a condition change,
//!   a container state, a ready or started flip, a run's termination, a restart, an event);
//! - **duplicated**: the report has it twice, or has what the reference never saw;
//! - **mis-measured**: both have it but the report's measurement differs: a restart's gap,
//!   its step on the back-off curve, a termination's exit code or finish, a condition's
//!   transition time, an event counted higher than it happened.
//!
//! - **dropped**: lost, but declared: the report's ring or byte budget dropped its oldest
//!   entries on purpose and counted them in `truncated`, and the entry is older than the oldest
//!   one the report still keeps in that list.

use jiff::Timestamp;

use super::reference::{ContainerReference, PodReference};
use crate::lifecycle::history::{ContainerHistory, PodHistory};
use crate::lifecycle::snapshot::ContainerState;

/// What kind of entry differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Category {
    Phase,
    Condition,
    ContainerState,
    Flip,
    Termination,
    Restart,
    Event,
}

/// How it differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Lost,
    Duplicated,
    MisMeasured,
    /// Lost to the report's declared bounds (see the module docs).
    Dropped,
}

/// One difference, with when it happened (for attributing it to a fault) and what it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub kind: Kind,
    pub category: Category,
    pub at: Timestamp,
    pub detail: String,
}

/// The comparison of one pod: every transition the reference saw, and every difference.
#[derive(Debug, Clone, Default)]
pub struct PodAudit {
    pub observed: Vec<(Category, Timestamp)>,
    pub findings: Vec<Finding>,
    /// The report dropped entries to its bounds; its losses may be on purpose.
    pub truncated: bool,
}

impl PodAudit {
    fn find(&mut self, kind: Kind, category: Category, at: Timestamp, detail: String) {
        self.findings.push(Finding { kind, category, at, detail });
    }

    /// A loss, unless the report declared dropping entries of that list and this one is older
    /// than the oldest it still keeps (`horizon`).
    fn lose(&mut self, category: Category, at: Timestamp, horizon: Option<Timestamp>, detail: String) {
        let kind = if horizon.is_some_and(|h| at <= h) { Kind::Dropped } else { Kind::Lost };
        self.find(kind, category, at, detail);
    }
}

/// The oldest time a bounded list still holds, if the report declared drops from it.
fn horizon(declared: u64, oldest: Option<Timestamp>) -> Option<Timestamp> {
    (declared > 0).then_some(oldest).flatten()
}

/// Longest common subsequence: the matched pairs (index in `a`, index in `b`). Of equally
/// long matchings it prefers the one that pairs the newest entries: a report's rings keep the
/// newest, so a truncated report is the end of the reference, and for an alternating sequence
/// (ready true, false, true ...) matching from the start would pair it with the oldest.
fn lcs<A, B>(a: &[A], b: &[B], eq: impl Fn(&A, &B) -> bool) -> Vec<(usize, usize)> {
    let (n, m) = (a.len(), b.len());
    // t[i][j]: the longest common subsequence of a[..i] and b[..j].
    let mut t = vec![vec![0u32; m + 1]; n + 1];
    for i in 1..=n {
        for j in 1..=m {
            t[i][j] = if eq(&a[i - 1], &b[j - 1]) { t[i - 1][j - 1] + 1 } else { t[i - 1][j].max(t[i][j - 1]) };
        }
    }
    let mut pairs = Vec::new();
    let (mut i, mut j) = (n, m);
    while i > 0 && j > 0 {
        if eq(&a[i - 1], &b[j - 1]) {
            pairs.push((i - 1, j - 1));
            i -= 1;
            j -= 1;
        } else if t[i - 1][j] >= t[i][j - 1] {
            i -= 1;
        } else {
            j -= 1;
        }
    }
    pairs.reverse();
    pairs
}

/// One entry of a sequence: what must match, the time it must carry (a condition's
/// lastTransitionTime; none for entries timed by when they were observed), when it happened,
/// and how to name it.
struct Item<K> {
    key: K,
    time: Option<Timestamp>,
    at: Timestamp,
    label: String,
}

fn item<K>(key: K, at: Timestamp, label: String) -> Item<K> {
    Item { key, time: None, at, label }
}

/// Compares sequences. Entries equal in key and time are paired first (in order); of the
/// rest, an entry equal in key only is mis-measured (its time differs); what is left of the
/// reference is lost, what is left of the report duplicated. Pairing on the time first keeps
/// one loss from shifting every later pair by one.
fn sequence<K: PartialEq>(audit: &mut PodAudit, category: Category, reference: &[Item<K>], report: &[Item<K>], bound: Option<Timestamp>) {
    let pairs = lcs(reference, report, |a, b| a.key == b.key && a.time == b.time);
    let mut used: Vec<bool> = (0..report.len()).map(|j| pairs.iter().any(|(_, b)| *b == j)).collect();
    for (i, r) in reference.iter().enumerate() {
        audit.observed.push((category, r.at));
        if pairs.iter().any(|(a, _)| *a == i) {
            continue;
        }
        match (0..report.len()).find(|j| !used[*j] && report[*j].key == r.key) {
            Some(j) => {
                used[j] = true;
                let (got, want) = (report[j].time, r.time);
                audit.find(Kind::MisMeasured, category, r.at, format!("{} at {got:?}, reference {want:?}", r.label));
            }
            // A condition is placed by its own transition time, as the report's entries are.
            None => {
                let placed = r.time.unwrap_or(r.at);
                let kind = if bound.is_some_and(|h| placed <= h) { Kind::Dropped } else { Kind::Lost };
                audit.find(kind, category, r.at, r.label.clone());
            }
        }
    }
    for (j, r) in report.iter().enumerate() {
        if !used[j] {
            audit.find(Kind::Duplicated, category, r.at, r.label.clone());
        }
    }
}

fn state_key_of(state: &ContainerState, restart_count: i32) -> super::reference::StateKey {
    match state {
        ContainerState::Waiting { reason, .. } => {
            super::reference::StateKey { kind: 0, reason: reason.clone(), started_at: None, finished_at: None, restart_count }
        }
        ContainerState::Running { started_at } => {
            super::reference::StateKey { kind: 1, reason: None, started_at: *started_at, finished_at: None, restart_count }
        }
        ContainerState::Terminated(t) => super::reference::StateKey {
            kind: 2,
            reason: t.reason.clone(),
            started_at: t.started_at,
            finished_at: t.finished_at,
            restart_count,
        },
    }
}

fn seconds(from: Timestamp, to: Timestamp) -> f64 {
    to.duration_since(from).as_secs_f64()
}

fn container(
    audit: &mut PodAudit,
    name: &str,
    r: &ContainerReference,
    h: Option<&ContainerHistory>,
    trunc: &crate::lifecycle::history::Truncation,
    reset_after: f64,
) {
    let empty = ContainerHistory::new(name, crate::lifecycle::snapshot::ContainerKind::App);
    let h = h.unwrap_or(&empty);
    // States: the set of distinct states, each once.
    let report_states: Vec<_> = h.states.iter().map(|s| (state_key_of(&s.state, s.restart_count), s.at)).collect();
    let states_bound = horizon(trunc.states + trunc.budget, h.states.front().map(|s| s.at));
    for (key, at) in &r.states {
        audit.observed.push((Category::ContainerState, *at));
        if !report_states.iter().any(|(k, _)| k == key) {
            audit.lose(Category::ContainerState, *at, states_bound, format!("{name}: state {key:?}"));
        }
    }
    for (i, (key, at)) in report_states.iter().enumerate() {
        let repeated = report_states[..i].iter().any(|(k, _)| k == key);
        if repeated || !r.states.iter().any(|(k, _)| k == key) {
            audit.find(Kind::Duplicated, Category::ContainerState, *at, format!("{name}: state {key:?}"));
        }
    }
    // Ready and started flips: the same sequence.
    for (which, reference, report) in [("ready", &r.ready, &h.ready), ("started", &r.started, &h.started)] {
        let reference: Vec<_> = reference.iter().map(|(v, at)| item(*v, *at, format!("{name}: {which} -> {v}"))).collect();
        let bound = horizon(trunc.flips + trunc.budget, report.front().map(|f| f.at));
        let report: Vec<_> = report.iter().map(|f| item(f.value, f.at, format!("{name}: {which} -> {}", f.value))).collect();
        sequence(audit, Category::Flip, &reference, &report, bound);
    }
    // Terminations, by container id.
    for (id, run) in r.runs.iter().filter(|(_, run)| run.finished_at.is_some()) {
        let at = run.finished_at.unwrap_or(run.seen_at);
        audit.observed.push((Category::Termination, at));
        let recorded: Vec<_> = h.terminations.iter().filter(|t| t.termination.container_id.as_deref() == Some(id.as_str())).collect();
        let bound = horizon(trunc.terminations + trunc.budget, h.terminations.front().and_then(|t| t.termination.finished_at));
        match recorded.as_slice() {
            [] => audit.lose(Category::Termination, at, bound, format!("{name}: run {id} exit {:?}", run.exit_code)),
            [t] => {
                if Some(t.termination.exit_code) != run.exit_code || t.termination.finished_at != run.finished_at {
                    audit.find(
                        Kind::MisMeasured,
                        Category::Termination,
                        at,
                        format!("{name}: run {id}: recorded {t:?}, reference {run:?}"),
                    );
                } else if run.number.is_some_and(|n| n != t.run) {
                    audit.find(
                        Kind::MisMeasured,
                        Category::Termination,
                        at,
                        format!("{name}: run {id} recorded as run {} not {:?}", t.run, run.number),
                    );
                }
            }
            more => audit.find(Kind::Duplicated, Category::Termination, at, format!("{name}: run {id} recorded {} times", more.len())),
        }
    }
    for t in &h.terminations {
        let known = t.termination.container_id.as_ref().is_some_and(|id| r.runs.contains_key(id));
        if !known {
            let at = t.termination.finished_at.unwrap_or_default();
            audit.find(Kind::Duplicated, Category::Termination, at, format!("{name}: termination the reference never saw: {t:?}"));
        }
    }
    // Restarts 1..=restartCount: present once each, measured as the reference measures them.
    let mut step = 0u32;
    for number in 1..=r.restart_count {
        let gap = r.restart_gap(number);
        let seen = r.runs.values().find(|run| run.number == Some(number)).map(|run| run.seen_at);
        let at = gap.map(|(_, started)| started).or(seen).unwrap_or_else(Timestamp::now);
        audit.observed.push((Category::Restart, at));
        // The reference's own curve step: one more per restart, back to 1 after a long run.
        let previous_ran =
            r.runs.values().find(|run| run.number == Some(number - 1)).and_then(|run| Some(seconds(run.started_at?, run.finished_at?)));
        step = if previous_ran.is_some_and(|s| s > reset_after) { 1 } else { step + 1 };
        let recorded: Vec<_> = h.restarts.iter().filter(|x| x.number == number).collect();
        let oldest = h.restarts.front().map(|x| x.number);
        let dropped = trunc.restarts + trunc.budget > 0 && oldest.is_some_and(|o| number < o);
        match recorded.as_slice() {
            [] if dropped => audit.find(Kind::Dropped, Category::Restart, at, format!("{name}: restart #{number}")),
            [] => audit.find(Kind::Lost, Category::Restart, at, format!("{name}: restart #{number}")),
            [x] => {
                let expected = gap.map(|(f, s)| seconds(f, s));
                if expected.is_some() && x.measured_seconds != expected {
                    audit.find(
                        Kind::MisMeasured,
                        Category::Restart,
                        at,
                        format!("{name}: restart #{number} measured {:?}, reference {expected:?}", x.measured_seconds),
                    );
                } else if x.backoff_step != step {
                    audit.find(
                        Kind::MisMeasured,
                        Category::Restart,
                        at,
                        format!("{name}: restart #{number} at curve step {}, reference {step}", x.backoff_step),
                    );
                }
            }
            more => audit.find(Kind::Duplicated, Category::Restart, at, format!("{name}: restart #{number} recorded {} times", more.len())),
        }
    }
    for x in h.restarts.iter().filter(|x| x.number > r.restart_count || x.number < 1) {
        audit.find(
            Kind::Duplicated,
            Category::Restart,
            x.started_at.unwrap_or_default(),
            format!("{name}: restart #{} the reference never saw", x.number),
        );
    }
}

/// Compares a report with the reference of the same pod.
#[must_use]
pub fn audit_pod(reference: &PodReference, report: &PodHistory, reset_after_seconds: f64) -> PodAudit {
    let mut audit = PodAudit { truncated: report.truncated.total() > 0, ..PodAudit::default() };
    let reference_phases: Vec<_> = reference.phases.iter().map(|(p, at)| item(p.clone(), *at, format!("phase {p}"))).collect();
    let report_phases: Vec<_> =
        report.phases.iter().map(|p| item(p.phase.as_str().to_string(), p.at, format!("phase {}", p.phase.as_str()))).collect();
    let t = &report.truncated;
    sequence(
        &mut audit,
        Category::Phase,
        &reference_phases,
        &report_phases,
        horizon(t.phases + t.budget, report.phases.front().map(|p| p.at)),
    );
    let mut types: Vec<&str> = reference.conditions.iter().map(|c| c.type_.as_str()).collect();
    types.sort_unstable();
    types.dedup();
    for type_ in types {
        let changes: Vec<_> = reference.conditions.iter().filter(|c| c.type_ == type_).collect();
        let reference_items: Vec<_> = changes
            .iter()
            .map(|c| Item {
                key: (c.status.clone(), c.reason.clone(), c.message.clone()),
                time: c.last_transition,
                at: c.seen_at,
                label: format!("{type_} {}", c.status),
            })
            .collect();
        let report_items: Vec<_> = report
            .conditions
            .iter()
            .filter(|c| c.type_ == type_)
            .map(|c| Item {
                key: (c.status.clone(), c.reason.clone(), c.message.clone()),
                time: Some(c.at),
                at: c.at,
                label: format!("{type_} {}", c.status),
            })
            .collect();
        let bound = horizon(t.conditions + t.budget, report.conditions.front().map(|c| c.at));
        sequence(&mut audit, Category::Condition, &reference_items, &report_items, bound);
    }
    for (name, c) in &reference.containers {
        container(&mut audit, name, c, report.containers.iter().find(|h| &h.name == name), &report.truncated, reset_after_seconds);
    }
    // Events: each once, never counted higher than it happened.
    for (uid, e) in &reference.events {
        audit.observed.push((Category::Event, e.seen_at));
        let recorded: Vec<_> = report.events.iter().filter(|r| &r.uid == uid).collect();
        let bound = horizon(report.truncated.events + report.truncated.budget, report.events.iter().filter_map(|r| r.first_seen).min());
        match recorded.as_slice() {
            [] => audit.lose(Category::Event, e.seen_at, bound, format!("event {} {}", e.reason, e.message)),
            [r] if r.count > e.count => {
                audit.find(
                    Kind::MisMeasured,
                    Category::Event,
                    e.seen_at,
                    format!("event {} counted {} times, happened {}", e.reason, r.count, e.count),
                );
            }
            [_] => {}
            more => audit.find(Kind::Duplicated, Category::Event, e.seen_at, format!("event {} recorded {} times", e.reason, more.len())),
        }
    }
    for r in report.events.iter().filter(|r| !reference.events.contains_key(&r.uid)) {
        audit.find(
            Kind::Duplicated,
            Category::Event,
            r.last_seen.unwrap_or_default(),
            format!("event {} the reference never saw", r.reason),
        );
    }
    // A probe kill per Killing event that blamed a probe, never more.
    let killings =
        reference.events.values().filter(|e| e.reason == "Killing" && e.message.contains("failed") && e.message.contains("probe")).count();
    let kills: usize = report.containers.iter().map(|c| c.probe_kills.len()).sum();
    if kills > killings {
        audit.find(
            Kind::Duplicated,
            Category::Event,
            Timestamp::now(),
            format!("{kills} probe kills recorded for {killings} Killing events"),
        );
    }
    audit
}
