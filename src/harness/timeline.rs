//! Timelines: a pod's history laid out as lanes of segments and markers on one time axis,
//! rendered for a terminal or as an SVG Gantt chart. Pure: history in, text out.

use std::fmt::Write as _;

use jiff::Timestamp;

use crate::lifecycle::history::{PodHistory, format_seconds};
use crate::lifecycle::snapshot::ContainerState;

/// What a segment of a lane shows; it decides the glyph and the colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Good,
    Waiting,
    Bad,
    Neutral,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub start: f64,
    pub end: f64,
    pub label: String,
    pub tone: Tone,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Lane {
    pub name: String,
    pub segments: Vec<Segment>,
    /// Instants drawn as thin ticks, e.g. probe hits.
    pub ticks: Vec<Tick>,
}

/// One instant on a lane: a probe hit, green if answered ok.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    pub at: f64,
    pub label: String,
    pub tone: Tone,
}

/// A point in time worth a note: a restart, a termination, an event.
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    pub at: f64,
    pub lane: String,
    pub text: String,
    /// A few characters drawn on the chart itself, e.g. "16s/10s" for a restart.
    pub short: Option<String>,
    pub tone: Tone,
}

/// A history on one axis: seconds from `origin`.
/// One thing podlife-target recorded, placed on the timeline: a probe hit (`kind` liveness,
/// readiness or startup with its scripted `result`) or a lifecycle event (start, poststart,
/// prestop, sigterm, exit, ...).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TargetMark {
    pub at: Timestamp,
    pub kind: String,
    pub result: Option<String>,
    /// The target's control port (tells two targets in one pod apart).
    pub port: u16,
    /// The container that runs this target, when the spec says so.
    pub container: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    pub title: String,
    pub origin: Timestamp,
    pub span: f64,
    pub lanes: Vec<Lane>,
    pub markers: Vec<Marker>,
}

fn secs(origin: Timestamp, t: Timestamp) -> f64 {
    t.duration_since(origin).as_secs_f64()
}

/// Turns `(start, label, tone)` points into segments that last until the next point.
fn segments(points: Vec<(f64, String, Tone)>, end: f64) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::new();
    for (i, (start, label, tone)) in points.iter().enumerate() {
        let stop = points.get(i + 1).map_or(end, |p| p.0).max(*start);
        out.push(Segment { start: *start, end: stop, label: label.clone(), tone: *tone });
    }
    out
}

impl Timeline {
    /// Lays out `history` up to `now` (or its deletion).
    #[must_use]
    pub fn from_history(history: &PodHistory, now: Timestamp) -> Timeline {
        let mut starts: Vec<Timestamp> = history.phases.iter().map(|p| p.at).collect();
        starts.extend(history.conditions.iter().map(|c| c.at));
        starts.extend(history.containers.iter().flat_map(|c| c.states.iter().map(|s| s.at)));
        let origin = history.summary.startup.created.into_iter().chain(starts.iter().copied()).min().unwrap_or(now);
        let end_time = history.deleted_at.unwrap_or(now);
        let span = secs(origin, end_time).max(1.0);
        let mut lanes = Vec::new();
        let phase_points = history
            .phases
            .iter()
            .map(|p| {
                let tone = match p.phase.as_str() {
                    "Running" | "Succeeded" => Tone::Good,
                    "Pending" => Tone::Waiting,
                    "Failed" => Tone::Bad,
                    _ => Tone::Neutral,
                };
                (secs(origin, p.at), p.phase.as_str().to_string(), tone)
            })
            .collect();
        lanes.push(Lane { name: "phase".into(), segments: segments(phase_points, span), ticks: Vec::new() });
        let mut condition_types: Vec<&str> = Vec::new();
        for c in &history.conditions {
            if !condition_types.contains(&c.type_.as_str()) {
                condition_types.push(&c.type_);
            }
        }
        for kind in condition_types {
            let points = history
                .conditions
                .iter()
                .filter(|c| c.type_ == kind)
                .map(|c| (secs(origin, c.at), c.status.clone(), if c.status == "True" { Tone::Good } else { Tone::Bad }))
                .collect();
            lanes.push(Lane { name: kind.to_string(), segments: segments(points, span), ticks: Vec::new() });
        }
        let mut markers = Vec::new();
        for c in &history.containers {
            let lane = format!("{} ({:?})", c.name, c.kind).to_lowercase();
            let points = c
                .states
                .iter()
                .map(|s| {
                    let (label, tone) = match &s.state {
                        ContainerState::Waiting { reason, .. } => (reason.clone().unwrap_or_else(|| "Waiting".into()), Tone::Waiting),
                        ContainerState::Running { .. } => ("Running".to_string(), Tone::Good),
                        ContainerState::Terminated(t) => (
                            format!("{} ({})", t.reason.clone().unwrap_or_else(|| "Terminated".into()), t.exit_code),
                            if t.exit_code == 0 { Tone::Neutral } else { Tone::Bad },
                        ),
                    };
                    (secs(origin, s.at), label, tone)
                })
                .collect();
            lanes.push(Lane { name: lane.clone(), segments: segments(points, span), ticks: Vec::new() });
            for r in &c.restarts {
                let Some(at) = r.started_at.or(r.previous_finished_at) else { continue };
                let measured = r.measured_seconds.map_or_else(|| "?".to_string(), format_seconds);
                let announced = r.announced_seconds.map_or_else(String::new, |a| format!(", announced {}", format_seconds(a)));
                let verdict = match r.fits_curve {
                    Some(true) => "fits the curve",
                    Some(false) => "OFF the curve",
                    None => "not measurable",
                };
                markers.push(Marker {
                    at: secs(origin, at),
                    lane: lane.clone(),
                    text: format!(
                        "restart #{}: after {measured} (expected {}{announced}) {verdict}",
                        r.number,
                        format_seconds(r.expected_seconds)
                    ),
                    short: Some(format!("#{} {measured}/{}", r.number, format_seconds(r.expected_seconds))),
                    tone: if r.fits_curve == Some(false) { Tone::Bad } else { Tone::Neutral },
                });
            }
            for k in &c.probe_kills {
                if let Some(at) = k.killing_at {
                    markers.push(Marker {
                        at: secs(origin, at),
                        lane: lane.clone(),
                        text: format!("{} probe kill", k.probe),
                        short: Some("kill".into()),
                        tone: Tone::Bad,
                    });
                }
            }
        }
        for e in &history.events {
            let interesting = matches!(
                e.reason.as_str(),
                "Unhealthy" | "Killing" | "ProbeWarning" | "FailedPostStartHook" | "FailedPreStopHook" | "ExceededGracePeriod"
            );
            if let (true, Some(at)) = (interesting, e.first_seen) {
                let lane = e.container.clone().unwrap_or_else(|| "pod".into());
                let count = if e.count > 1 { format!(" x{}", e.count) } else { String::new() };
                markers.push(Marker {
                    at: secs(origin, at),
                    lane,
                    text: format!("{}{count}: {}", e.reason, truncate(&e.message, 70)),
                    short: None,
                    tone: Tone::Waiting,
                });
            }
        }
        markers.sort_by(|a, b| a.at.total_cmp(&b.at));
        Timeline { title: history.pod.clone(), origin, span, lanes, markers }
    }

    /// Adds what podlife-target recorded: a lane of probe hits per probe type (ticks, green
    /// for ok), and its hooks, signals and exits as markers.
    #[must_use]
    pub fn with_target_marks(mut self, marks: &[TargetMark]) -> Timeline {
        let several_targets = marks.iter().any(|m| m.port != marks[0].port);
        // One target: "liveness hits"; several: "envoy liveness hits" (or ":9190 ..." unnamed).
        let lane_name = |m: &TargetMark, what: &str| match (&m.container, several_targets) {
            (_, false) => what.to_string(),
            (Some(c), true) => format!("{c} {what}"),
            (None, true) => format!(":{} {what}", m.port),
        };
        let marker_lane = |m: &TargetMark| m.container.clone().unwrap_or_else(|| format!("target :{}", m.port));
        for m in marks {
            let at = secs(self.origin, m.at);
            if let Some(result) = &m.result {
                let name = lane_name(m, &format!("{} hits", m.kind));
                let tone = if result == "ok" { Tone::Good } else { Tone::Bad };
                let tick = Tick { at, label: format!("{} {result}", m.kind), tone };
                match self.lanes.iter_mut().find(|l| l.name == name) {
                    Some(lane) => lane.ticks.push(tick),
                    None => self.lanes.push(Lane { name, segments: Vec::new(), ticks: vec![tick] }),
                }
            } else if m.kind != "start" {
                let tone = if matches!(m.kind.as_str(), "sigterm" | "exit") { Tone::Bad } else { Tone::Neutral };
                self.markers.push(Marker { at, lane: marker_lane(m), text: m.kind.clone(), short: Some(m.kind.clone()), tone });
            }
        }
        self.span = self.span.max(self.lanes.iter().flat_map(|l| l.ticks.iter().map(|t| t.at)).fold(0.0, f64::max));
        self.markers.sort_by(|a, b| a.at.total_cmp(&b.at));
        self
    }

    /// A terminal Gantt chart `width` characters wide, followed by the markers.
    #[must_use]
    pub fn render_text(&self, width: usize) -> String {
        let label_width = self.lanes.iter().map(|l| l.name.chars().count()).max().unwrap_or(5).min(28);
        let cols = width.saturating_sub(label_width + 3).max(10);
        let mut out = String::new();
        let _ = writeln!(out, "{}  (0 s = {}, span {})", self.title, self.origin, format_seconds(self.span));
        for lane in &self.lanes {
            let mut row = vec![' '; cols];
            for seg in &lane.segments {
                let glyph = match seg.tone {
                    Tone::Good => '█',
                    Tone::Waiting => '░',
                    Tone::Bad => '▒',
                    Tone::Neutral => '─',
                };
                let (a, b) = (self.col(seg.start, cols), self.col(seg.end, cols).max(self.col(seg.start, cols) + 1));
                for cell in row.iter_mut().take(b.min(cols)).skip(a) {
                    *cell = glyph;
                }
            }
            for tick in &lane.ticks {
                let cell = self.col(tick.at, cols).min(cols - 1);
                // A failure wins over an ok hit sharing its column.
                if row[cell] != '×' {
                    row[cell] = if tick.tone == Tone::Good { '|' } else { '×' };
                }
            }
            let name: String = lane.name.chars().take(label_width).collect();
            let _ = writeln!(out, "{name:>label_width$} │{}│", row.into_iter().collect::<String>());
        }
        let _ = writeln!(out, "{:>label_width$} └{}┘", "", "─".repeat(cols));
        let _ = writeln!(out, "{:>label_width$}  0s{:>w$}", "", format_seconds(self.span), w = cols.saturating_sub(2));
        let _ = writeln!(out, "{:>label_width$}  █ running/true  ░ waiting  ▒ failed/false  ─ ended ok  | probe ok  × probe failed", "");
        for m in &self.markers {
            let _ = writeln!(out, "  +{:>7.1}s  {:<18} {}", m.at, truncate(&m.lane, 18), m.text);
        }
        out
    }

    fn col(&self, t: f64, cols: usize) -> usize {
        let ratio = (t / self.span).clamp(0.0, 1.0);
        // Truncation is intended: a column index.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let c = (ratio * cols as f64) as usize;
        c.min(cols)
    }

    /// A self-contained SVG Gantt chart.
    #[must_use]
    pub fn render_svg(&self) -> String {
        const LABEL: f64 = 210.0;
        const PLOT: f64 = 900.0;
        const ROW: f64 = 30.0;
        let markers_h = 18.0 * self.markers.len() as f64;
        let height = 60.0 + ROW * self.lanes.len() as f64 + 56.0 + markers_h;
        let x = |t: f64| LABEL + PLOT * (t / self.span).clamp(0.0, 1.0);
        let colour = |tone: Tone| match tone {
            Tone::Good => "#2e9e5b",
            Tone::Waiting => "#e0b030",
            Tone::Bad => "#d0473c",
            Tone::Neutral => "#9aa3ad",
        };
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" font-family="DejaVu Sans, Arial, sans-serif" font-size="12">"#,
            w = LABEL + PLOT + 30.0
        );
        let _ = write!(s, r##"<rect width="100%" height="100%" fill="#ffffff"/>"##);
        let _ = write!(s, r#"<text x="10" y="24" font-size="16" font-weight="bold">{}</text>"#, escape(&self.title));
        let _ = write!(s, r##"<text x="10" y="42" fill="#555">0 s = {} · span {}</text>"##, self.origin, format_seconds(self.span));
        for (i, lane) in self.lanes.iter().enumerate() {
            let y = 60.0 + ROW * i as f64;
            let _ = write!(s, r#"<text x="10" y="{}">{}</text>"#, y + 19.0, escape(&lane.name));
            for seg in &lane.segments {
                let (x0, x1) = (x(seg.start), x(seg.end).max(x(seg.start) + 1.0));
                let _ = write!(
                    s,
                    r##"<rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="22" fill="{}" stroke="#fff"><title>{} ({:.1}s–{:.1}s)</title></rect>"##,
                    y + 4.0,
                    x1 - x0,
                    colour(seg.tone),
                    escape(&seg.label),
                    seg.start,
                    seg.end
                );
                if x1 - x0 > 7.0 * seg.label.len() as f64 {
                    let _ = write!(s, r##"<text x="{:.1}" y="{:.1}" fill="#fff">{}</text>"##, x0 + 4.0, y + 19.0, escape(&seg.label));
                }
            }
            for tick in &lane.ticks {
                let _ = write!(
                    s,
                    r##"<rect x="{:.1}" y="{:.1}" width="2" height="22" fill="{}"><title>{} at {:.1}s</title></rect>"##,
                    x(tick.at) - 1.0,
                    y + 4.0,
                    colour(tick.tone),
                    escape(&tick.label),
                    tick.at
                );
            }
        }
        let axis_y = 60.0 + ROW * self.lanes.len() as f64 + 8.0;
        let _ = write!(s, r##"<line x1="{LABEL}" y1="{axis_y}" x2="{}" y2="{axis_y}" stroke="#333"/>"##, LABEL + PLOT);
        for i in 0..=10 {
            let t = self.span * f64::from(i) / 10.0;
            let _ = write!(
                s,
                r##"<line x1="{0:.1}" y1="{axis_y}" x2="{0:.1}" y2="{1}" stroke="#333"/><text x="{0:.1}" y="{2}" text-anchor="middle">{3:.0}s</text>"##,
                x(t),
                axis_y + 5.0,
                axis_y + 18.0,
                t
            );
        }
        for (i, m) in self.markers.iter().enumerate() {
            let mx = x(m.at);
            let ty = axis_y + 52.0 + 18.0 * i as f64;
            let _ = write!(
                s,
                r##"<line x1="{mx:.1}" y1="60" x2="{mx:.1}" y2="{axis_y}" stroke="{c}" stroke-dasharray="3,3" opacity="0.6"/><circle cx="{mx:.1}" cy="{axis_y}" r="4" fill="{c}"/><text x="10" y="{ty:.1}" fill="{c}">+{:.1}s  {}: {}</text>"##,
                m.at,
                escape(&m.lane),
                escape(&m.text),
                c = colour(m.tone)
            );
            if let Some(short) = &m.short {
                // Alternately just above the axis and below the tick labels, so neighbours
                // do not overlap each other or the lanes.
                let label_y = if i % 2 == 0 { axis_y - 3.0 } else { axis_y + 31.0 };
                let _ = write!(s, r##"<text x="{:.1}" y="{label_y:.1}" font-size="10" fill="#222">{}</text>"##, mx + 5.0, escape(short));
            }
        }
        s.push_str("</svg>\n");
        s
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_string() } else { format!("{}…", s.chars().take(n - 1).collect::<String>()) }
}

/// Escapes text for XML and HTML (SVG, JUnit, the HTML report): content and attribute values.
#[must_use]
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::history::PodHistory;
    use crate::lifecycle::snapshot::{ContainerKind, ContainerSnapshot, Phase, PodSnapshot, Termination};
    use crate::lifecycle::{BackoffProfile, Source};

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn history() -> PodHistory {
        let mut h = PodHistory::new("demo", "u");
        let p = BackoffProfile::default();
        let pod = |restarts, state, last| PodSnapshot {
            namespace: "n".into(),
            name: "demo".into(),
            uid: "u".into(),
            resource_version: None,
            created_at: Some(t(0)),
            deleted_at: None,
            phase: Phase::Running,
            conditions: vec![],
            controller: None,
            containers: vec![ContainerSnapshot {
                name: "app".into(),
                kind: ContainerKind::App,
                container_id: None,
                state: Some(state),
                last_terminated: last,
                ready: false,
                started: None,
                restart_count: restarts,
            }],
        };
        let term = |s, f| Termination {
            exit_code: 1,
            signal: None,
            reason: Some("Error".into()),
            message: None,
            started_at: Some(t(s)),
            finished_at: Some(t(f)),
            container_id: Some(format!("c{s}")),
        };
        h.observe(&pod(0, ContainerState::Running { started_at: Some(t(2)) }, None), t(2), Source::Live, &p);
        h.observe(&pod(0, ContainerState::Terminated(term(2, 4)), None), t(4), Source::Live, &p);
        h.observe(&pod(1, ContainerState::Running { started_at: Some(t(4)) }, Some(term(2, 4))), t(4), Source::Live, &p);
        h.observe(&pod(1, ContainerState::Terminated(term(4, 6)), Some(term(2, 4))), t(6), Source::Live, &p);
        h.observe(&pod(2, ContainerState::Running { started_at: Some(t(60)) }, Some(term(4, 6))), t(60), Source::Live, &p);
        h
    }

    #[test]
    fn lanes_follow_the_history_and_restarts_are_annotated() {
        let tl = Timeline::from_history(&history(), t(100));
        assert_eq!(tl.span, 100.0);
        let app = tl.lanes.iter().find(|l| l.name.starts_with("app")).unwrap();
        let labels: Vec<&str> = app.segments.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, ["Running", "Error (1)", "Running", "Error (1)", "Running"]);
        assert_eq!(app.segments.last().unwrap().end, 100.0, "the last segment lasts until now");
        let restarts: Vec<&str> = tl.markers.iter().map(|m| m.text.as_str()).collect();
        assert!(restarts[1].contains("restart #2: after 54s (expected 10s)") && restarts[1].contains("OFF the curve"), "{restarts:?}");
    }

    #[test]
    fn text_and_svg_render_every_lane() {
        let tl = Timeline::from_history(&history(), t(100));
        let text = tl.render_text(80);
        assert!(text.lines().all(|l| l.chars().count() <= 100), "{text}");
        assert!(text.contains("restart #1") && text.contains('█'), "{text}");
        let svg = tl.render_svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<title>").count(), tl.lanes.iter().map(|l| l.segments.len()).sum::<usize>());
        assert!(!svg.contains("<script"), "no active content");
        assert!(svg.contains("#2 54s/10s"), "restarts are annotated on the chart: measured/expected");
    }

    #[test]
    fn target_marks_add_probe_hit_lanes_and_hook_markers() {
        let mark = |at: i64, kind: &str, result: Option<&str>| TargetMark {
            at: t(at),
            kind: kind.into(),
            result: result.map(Into::into),
            port: 9090,
            container: Some("app".into()),
        };
        let marks = [
            mark(1, "start", None),
            mark(2, "liveness", Some("ok")),
            mark(3, "poststart", None),
            mark(4, "liveness", Some("fail")),
            mark(5, "readiness", Some("ok")),
            mark(90, "sigterm", None),
        ];
        let tl = Timeline::from_history(&history(), t(100)).with_target_marks(&marks);
        let liveness = tl.lanes.iter().find(|l| l.name == "liveness hits").unwrap();
        assert_eq!(liveness.ticks.iter().map(|t| (t.at, t.tone)).collect::<Vec<_>>(), [(2.0, Tone::Good), (4.0, Tone::Bad)]);
        assert!(tl.lanes.iter().any(|l| l.name == "readiness hits"));
        let hooks: Vec<&str> = tl
            .markers
            .iter()
            .filter(|m| m.lane == "app" && m.short.is_some() && !m.text.starts_with("restart"))
            .map(|m| m.text.as_str())
            .collect();
        assert_eq!(hooks, ["poststart", "sigterm"], "start is the container's own lane; hooks and signals are marked");
        let text = tl.render_text(100);
        assert!(text.lines().any(|l| l.contains("liveness hits") && l.contains('|') && l.contains('×')), "{text}");
        assert!(tl.render_svg().contains("<title>liveness fail at 4.0s</title>"));
        // Two targets in one pod get a lane each, named by control port.
        let envoy = TargetMark { port: 9190, container: Some("envoy".into()), ..mark(3, "liveness", Some("ok")) };
        let unnamed = TargetMark { port: 9290, container: None, ..mark(4, "liveness", Some("ok")) };
        let tl = Timeline::from_history(&history(), t(100)).with_target_marks(&[mark(2, "liveness", Some("ok")), envoy, unnamed]);
        let names: Vec<&str> = tl.lanes.iter().filter(|l| !l.ticks.is_empty()).map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["app liveness hits", "envoy liveness hits", ":9290 liveness hits"]);
    }
}
