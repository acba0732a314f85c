//! A pod's watch stream as `e2e/record-fixture` records it from the real cluster: one JSON line
//! per Pod or Event watch object, stamped with when it was observed.
//!
//! The model's tests, the audit's tests and the model-cost benchmark all replay these, so the
//! parsing and the order of replay live here once.
//!
//! # Guarantees
//! - Pure: the text comes in, values go out.
//! - Observations are replayed in the order they were observed (a stable sort by time, so lines
//!   observed in the same second keep their recorded order).

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Event, Pod};
use serde::Deserialize;

use super::{BackoffProfile, EventSnapshot, PodHistory, PodSnapshot, Source};

#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("line {line}: {source}")]
    Line { line: usize, source: serde_json::Error },
    #[error("line {line}: unknown kind {kind:?} (expected \"pod\" or \"event\")")]
    Kind { line: usize, kind: String },
}

/// One watch object, as observed.
#[derive(Debug, Clone)]
pub enum Observed {
    Pod { at: Timestamp, pod: Box<Pod>, deleted: bool },
    Event { at: Timestamp, event: Box<Event> },
}

impl Observed {
    #[must_use]
    pub fn at(&self) -> Timestamp {
        match self {
            Observed::Pod { at, .. } | Observed::Event { at, .. } => *at,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Line {
    observed_at: Timestamp,
    kind: String,
    #[serde(rename = "type")]
    type_: String,
    object: serde_json::Value,
}

/// A parsed recording, in the order of observation.
#[derive(Debug, Clone, Default)]
pub struct Recording {
    pub observations: Vec<Observed>,
}

impl Recording {
    /// Parses JSON lines; blank lines are skipped.
    ///
    /// # Errors
    /// A line that is not a recorded Pod or Event, named by its 1-based number.
    pub fn parse(jsonl: &str) -> Result<Recording, RecordingError> {
        let mut observations = Vec::new();
        for (i, text) in jsonl.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let line = i + 1;
            let parsed: Line = serde_json::from_str(text).map_err(|source| RecordingError::Line { line, source })?;
            let at = parsed.observed_at;
            let observed = match parsed.kind.as_str() {
                "pod" => Observed::Pod {
                    at,
                    pod: serde_json::from_value(parsed.object).map_err(|source| RecordingError::Line { line, source })?,
                    deleted: parsed.type_ == "DELETED",
                },
                "event" => Observed::Event {
                    at,
                    event: serde_json::from_value(parsed.object).map_err(|source| RecordingError::Line { line, source })?,
                },
                _ => return Err(RecordingError::Kind { line, kind: parsed.kind }),
            };
            observations.push(observed);
        }
        observations.sort_by_key(Observed::at);
        Ok(Recording { observations })
    }

    /// Replays everything into one pod's history, as an operator that missed nothing would:
    /// events seen before the pod's first status wait for it. `visit` sees each observation
    /// first (the audit feeds its independent reference from it). `None` if no pod was seen.
    pub fn replay(&self, profile: &BackoffProfile, mut visit: impl FnMut(&Observed)) -> Option<PodHistory> {
        let mut history: Option<PodHistory> = None;
        let mut early_events = Vec::new();
        for observed in &self.observations {
            visit(observed);
            match observed {
                Observed::Pod { at, pod, .. } => {
                    let snap = PodSnapshot::from_pod(pod);
                    let h = history.get_or_insert_with(|| PodHistory::new(&snap.name, &snap.uid));
                    h.observe(&snap, *at, Source::Live, profile);
                    for e in early_events.drain(..) {
                        h.observe_event(&e);
                    }
                }
                Observed::Event { event, .. } => {
                    let Some(e) = EventSnapshot::from_event(event) else { continue };
                    match history.as_mut() {
                        Some(h) => _ = h.observe_event(&e),
                        None => early_events.push(e),
                    }
                }
            }
        }
        history
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_line_is_named_by_its_number() {
        let good = include_str!("../../tests/fixtures/crashloop.jsonl").lines().next().unwrap();
        let err = Recording::parse(&format!("{good}\n\n{{\"observedAt\":\"nope\"}}\n")).unwrap_err();
        assert!(matches!(err, RecordingError::Line { line: 3, .. }), "{err}");
        let err = Recording::parse(&good.replace("\"kind\":\"pod\"", "\"kind\":\"node\"")).unwrap_err();
        assert!(matches!(err, RecordingError::Kind { line: 1, .. }), "{err}");
    }

    #[test]
    fn observations_replay_in_the_order_they_were_observed() {
        let recording = Recording::parse(include_str!("../../tests/fixtures/liveness.jsonl")).unwrap();
        let times: Vec<Timestamp> = recording.observations.iter().map(Observed::at).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        let pods = recording.observations.iter().filter(|o| matches!(o, Observed::Pod { .. })).count();
        assert!(pods > 5 && pods < recording.observations.len(), "{pods} pods");
    }
}
