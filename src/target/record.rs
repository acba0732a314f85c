//! The target's record of what happened to it: every probe hit, every lifecycle event.
//!
//! Bounded in count and in bytes: the hit log keeps the newest [`HIT_LOG_CAPACITY`] entries and
//! counts what it dropped, and every free-form text in it (a User-Agent, an event's detail such
//! as a whole script) is cut to [`MAX_TEXT_BYTES`], so a long soak or a hostile caller cannot
//! grow the target without limit.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub const HIT_LOG_CAPACITY: usize = 10_000;
pub const EVENT_LOG_CAPACITY: usize = 1_000;
/// The most bytes of a User-Agent or an event's detail that are kept.
pub const MAX_TEXT_BYTES: usize = 256;

/// `text` cut to at most [`MAX_TEXT_BYTES`] bytes on a character boundary, marked with `…`.
#[must_use]
pub fn bounded_text(mut text: String) -> String {
    if text.len() > MAX_TEXT_BYTES {
        let mut end = MAX_TEXT_BYTES - '…'.len_utf8();
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// The kubelet's three probe types. podlife-target serves each one separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

impl ProbeKind {
    pub const ALL: [ProbeKind; 3] = [ProbeKind::Liveness, ProbeKind::Readiness, ProbeKind::Startup];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "liveness",
            ProbeKind::Readiness => "readiness",
            ProbeKind::Startup => "startup",
        }
    }
}

impl fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProbeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "liveness" => Ok(ProbeKind::Liveness),
            "readiness" => Ok(ProbeKind::Readiness),
            "startup" => Ok(ProbeKind::Startup),
            other => Err(format!("unknown probe type '{other}': expected liveness, readiness or startup")),
        }
    }
}

/// The lifecycle hooks podlife-target can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookKind {
    PostStart,
    PreStop,
}

impl HookKind {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            HookKind::PostStart => "poststart",
            HookKind::PreStop => "prestop",
        }
    }
}

impl FromStr for HookKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "poststart" => Ok(HookKind::PostStart),
            "prestop" => Ok(HookKind::PreStop),
            other => Err(format!("unknown hook '{other}': expected poststart or prestop")),
        }
    }
}

/// How a probe reached the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Http,
    Tcp,
    Grpc,
    Exec,
}

impl Transport {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Tcp => "tcp",
            Transport::Grpc => "grpc",
            Transport::Exec => "exec",
        }
    }
}

/// One probe hit, as the target saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hit {
    /// Position in the whole run's sequence of hits (never reused, even after the log drops old ones).
    pub seq: u64,
    /// Unix milliseconds when the hit arrived.
    pub at_ms: u64,
    pub probe: ProbeKind,
    pub transport: Transport,
    pub peer: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The scripted action label: ok, fail, hang, slow, close, redirect.
    pub result: String,
    /// Time from arrival to answer; `None` for a hang (no answer was sent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    pub boot: u64,
}

/// What happened to the process: start, hooks, signals, exit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleEvent {
    pub at_ms: u64,
    pub kind: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    pub boot: u64,
}

/// The in-memory record behind `GET /hits`.
#[derive(Debug, Default)]
pub struct Record {
    started_ms: u64,
    hits: VecDeque<Hit>,
    events: VecDeque<LifecycleEvent>,
    next_seq: u64,
    dropped_hits: u64,
    dropped_events: u64,
    counters: BTreeMap<(ProbeKind, String), u64>,
}

/// A snapshot of the record, as served by `GET /hits`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordSnapshot {
    pub boot: u64,
    /// When this process started (Unix ms): tells runs apart even without a state directory,
    /// where every run is boot 1.
    #[serde(default)]
    pub started_ms: u64,
    pub hits: Vec<Hit>,
    pub dropped_hits: u64,
    /// `counters["liveness"]["fail"]` = how many liveness hits were answered with fail.
    pub counters: BTreeMap<String, BTreeMap<String, u64>>,
    pub events: Vec<LifecycleEvent>,
    pub dropped_events: u64,
}

impl Record {
    /// An empty record of a process that started at `started_ms` (Unix ms).
    #[must_use]
    pub fn new(started_ms: u64) -> Self {
        Record { started_ms, ..Default::default() }
    }

    /// Records a hit and returns its sequence number.
    pub fn push_hit(&mut self, mut hit: Hit) -> u64 {
        hit.user_agent = hit.user_agent.map(bounded_text);
        hit.peer = bounded_text(hit.peer);
        hit.seq = self.next_seq;
        self.next_seq += 1;
        *self.counters.entry((hit.probe, hit.result.clone())).or_default() += 1;
        if self.hits.len() == HIT_LOG_CAPACITY {
            self.hits.pop_front();
            self.dropped_hits += 1;
        }
        let seq = hit.seq;
        self.hits.push_back(hit);
        seq
    }

    /// Fills in the latency of a hit once its answer has gone out.
    pub fn set_latency(&mut self, seq: u64, latency_ms: u64) {
        if let Some(h) = self.hits.iter_mut().rev().find(|h| h.seq == seq) {
            h.latency_ms = Some(latency_ms);
        }
    }

    pub fn push_event(&mut self, mut event: LifecycleEvent) {
        event.detail = bounded_text(event.detail);
        if self.events.len() == EVENT_LOG_CAPACITY {
            self.events.pop_front();
            self.dropped_events += 1;
        }
        self.events.push_back(event);
    }

    #[must_use]
    pub fn snapshot(&self, boot: u64, since_seq: Option<u64>) -> RecordSnapshot {
        let mut counters: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for ((probe, result), n) in &self.counters {
            counters.entry(probe.as_str().to_string()).or_default().insert(result.clone(), *n);
        }
        RecordSnapshot {
            boot,
            started_ms: self.started_ms,
            hits: self.hits.iter().filter(|h| since_seq.is_none_or(|s| h.seq >= s)).cloned().collect(),
            dropped_hits: self.dropped_hits,
            counters,
            events: self.events.iter().cloned().collect(),
            dropped_events: self.dropped_events,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(probe: ProbeKind, result: &str) -> Hit {
        Hit {
            seq: 0,
            at_ms: 1,
            probe,
            transport: Transport::Http,
            peer: "10.0.0.1:1".into(),
            user_agent: Some("kube-probe/1.34".into()),
            result: result.into(),
            latency_ms: None,
            boot: 1,
        }
    }

    #[test]
    fn the_log_is_bounded_but_counters_and_sequence_are_not() {
        let mut r = Record::default();
        for _ in 0..HIT_LOG_CAPACITY + 5 {
            r.push_hit(hit(ProbeKind::Liveness, "ok"));
        }
        r.push_hit(hit(ProbeKind::Readiness, "fail"));
        let s = r.snapshot(1, None);
        assert_eq!(s.hits.len(), HIT_LOG_CAPACITY);
        assert_eq!(s.dropped_hits, 6);
        assert_eq!(s.counters["liveness"]["ok"], (HIT_LOG_CAPACITY + 5) as u64);
        assert_eq!(s.counters["readiness"]["fail"], 1);
        assert_eq!(s.hits.last().unwrap().seq, (HIT_LOG_CAPACITY + 5) as u64);
    }

    #[test]
    fn free_text_is_cut_so_the_record_is_bounded_in_bytes() {
        // Before: every hit kept its whole User-Agent and every script change its whole text.
        let mut r = Record::default();
        let mut h = hit(ProbeKind::Liveness, "ok");
        h.user_agent = Some("é".repeat(10_000));
        r.push_hit(h);
        r.push_event(LifecycleEvent { at_ms: 1, kind: "script".into(), detail: "ok for 1s, ".repeat(10_000), boot: 1 });
        let s = r.snapshot(1, None);
        let ua = s.hits[0].user_agent.as_deref().unwrap();
        assert!(ua.len() <= MAX_TEXT_BYTES && ua.ends_with('…') && ua.starts_with("éé"), "{}", ua.len());
        assert!(s.events[0].detail.len() <= MAX_TEXT_BYTES && s.events[0].detail.starts_with("ok for 1s"));
        assert_eq!(bounded_text("short".into()), "short");
    }

    #[test]
    fn latency_is_attached_to_the_right_hit_and_since_filters() {
        let mut r = Record::default();
        let a = r.push_hit(hit(ProbeKind::Startup, "ok"));
        let b = r.push_hit(hit(ProbeKind::Startup, "slow"));
        r.set_latency(b, 1500);
        let s = r.snapshot(1, Some(b));
        assert_eq!(s.hits.len(), 1);
        assert_eq!(s.hits[0].latency_ms, Some(1500));
        assert_eq!(r.snapshot(1, Some(a)).hits[0].latency_ms, None);
    }
}
