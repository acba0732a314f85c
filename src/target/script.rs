//! Probe scripts: what podlife-target answers to each probe hit, over time.
//!
//! Pure code: parsing and stepping take values in and give values out. Time is passed in as
//! Unix milliseconds so that a cursor can be saved to disk and resumed after a restart.
//!
//! # Grammar
//!
//! ```text
//! script   = step { "," ["then"] step } [ "," "repeat" ]
//! step     = action [ span ]
//! span     = "for" DURATION              lasts this long, from when the step began
//!          | COUNT ("times" | "time" | "hits" | "hit")   lasts this many hits
//! action   = "ok"
//!          | "fail" [ CODE ]             CODE 1-255: exec exit code (HTTP gets 503)
//!                                        CODE 300-599: HTTP status (exec exits 1)
//!          | "hang"                      accept, never answer
//!          | "slow" DURATION             answer ok after DURATION
//!          | "close"                     close the connection without answering
//!          | "redirect" TARGET           TARGET "/path" is local, "http(s)://..." is not
//! DURATION = NUMBER ("ms" | "s" | "m" | "h")     e.g. 500ms, 20s, 1.5m
//! ```
//!
//! Example: `ok for 20s, then fail 3 times, then ok`.
//!
//! A step without a span lasts forever. When the last step ends, the script stays on it,
//! unless the script ends with `repeat`, in which case it starts again from the first step.

use std::fmt;
use std::time::Duration;

/// The longest script accepted. Real scripts are a line or two; the bound keeps a hostile or
/// mistaken upload from costing the probes that share the runtime.
pub const MAX_SCRIPT_BYTES: usize = 16 * 1024;

use serde::{Deserialize, Serialize};

/// What one probe hit is answered with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "action")]
pub enum Action {
    /// Healthy: HTTP 200, gRPC SERVING, exec exit 0, TCP listener open.
    Ok,
    /// Unhealthy with a code; see [`Action::http_status`] and [`Action::exit_code`].
    Fail { code: Option<u16> },
    /// Accept the request and never answer, so the kubelet's `timeoutSeconds` expires.
    Hang,
    /// Answer healthy after a delay.
    Slow {
        #[serde(with = "millis")]
        delay: Duration,
    },
    /// Close the connection without an answer.
    Close,
    /// Answer with an HTTP 302 to `location`.
    Redirect { location: String },
}

impl Action {
    /// The HTTP status this action answers with, where it answers at all.
    #[must_use]
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Action::Ok | Action::Slow { .. } => Some(200),
            Action::Fail { code: Some(code) } if *code >= 300 => Some(*code),
            Action::Fail { .. } => Some(503),
            Action::Redirect { .. } => Some(302),
            Action::Hang | Action::Close => None,
        }
    }

    /// The exit code an exec probe or hook returns for this action.
    #[must_use]
    pub fn exit_code(&self) -> i32 {
        match self {
            Action::Ok | Action::Slow { .. } | Action::Redirect { .. } => 0,
            Action::Fail { code: Some(code) } if (1..=255).contains(code) => i32::from(*code),
            Action::Fail { .. } | Action::Close | Action::Hang => 1,
        }
    }

    /// True if the kubelet would count this answer as healthy when it arrives in time.
    #[must_use]
    pub fn is_healthy(&self) -> bool {
        matches!(self, Action::Ok | Action::Slow { .. } | Action::Redirect { .. })
    }

    /// A short label for logs, hit records and metrics.
    #[must_use]
    pub fn label(&self) -> &'static str {
        match self {
            Action::Ok => "ok",
            Action::Fail { .. } => "fail",
            Action::Hang => "hang",
            Action::Slow { .. } => "slow",
            Action::Close => "close",
            Action::Redirect { .. } => "redirect",
        }
    }
}

/// How long a step lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Span {
    /// Until the script is replaced.
    Forever,
    /// A wall-clock duration, from when the step began.
    For(#[serde(with = "millis")] Duration),
    /// A number of probe hits.
    Hits(u32),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub action: Action,
    pub span: Span,
}

/// A parsed script. Build one with [`Script::parse`] or [`Script::always`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Script {
    pub steps: Vec<Step>,
    pub repeat: bool,
    /// The text it was parsed from, kept so `GET /scripts` shows what the user wrote.
    pub source: String,
}

/// A parse error that points at the offending token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("script error at column {column} ({found}): expected {expected}")]
pub struct ScriptError {
    /// 1-based character column of the bad token in the script text.
    pub column: usize,
    /// The token found there, or `end of script`.
    pub found: String,
    pub expected: &'static str,
}

/// Where a script is: which step, how many hits it has taken, and when it began.
///
/// Serializable so that the target can keep its place across container restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cursor {
    pub step: usize,
    pub hits_in_step: u32,
    pub step_started_ms: u64,
}

#[derive(Debug, Clone)]
struct Token<'a> {
    text: &'a str,
    column: usize,
}

fn tokenize(src: &str) -> Vec<Token<'_>> {
    // Commas are tokens of their own; everything else splits on whitespace. Columns are
    // counted as the characters go by, so the whole pass stays linear in the script's length.
    let mut tokens = Vec::new();
    let mut start: Option<(usize, usize)> = None;
    for (column, (i, ch)) in (1..).zip(src.char_indices()) {
        if ch.is_whitespace() || ch == ',' {
            if let Some((s, c)) = start.take() {
                tokens.push(Token { text: &src[s..i], column: c });
            }
            if ch == ',' {
                tokens.push(Token { text: &src[i..=i], column });
            }
        } else if start.is_none() {
            start = Some((i, column));
        }
    }
    if let Some((s, c)) = start {
        tokens.push(Token { text: &src[s..], column: c });
    }
    tokens
}

/// Parses `500ms`, `20s`, `1.5m`, `2h`. Zero and negative durations are rejected.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return None,
    };
    let seconds = value * scale;
    // Bounded so that arithmetic on cursors (u64 milliseconds) can never overflow.
    (seconds.is_finite() && seconds > 0.0 && seconds <= 365.0 * 86400.0).then(|| Duration::from_secs_f64(seconds))
}

struct Parser<'a> {
    tokens: Vec<Token<'a>>,
    pos: usize,
    end_column: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&Token<'a>> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token<'a>> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn error(&self, token: Option<&Token<'_>>, expected: &'static str) -> ScriptError {
        match token {
            Some(t) => ScriptError { column: t.column, found: format!("'{}'", t.text), expected },
            None => ScriptError { column: self.end_column, found: "end of script".into(), expected },
        }
    }

    fn expect_duration(&mut self, expected: &'static str) -> Result<Duration, ScriptError> {
        let t = self.next();
        t.as_ref().and_then(|t| parse_duration(t.text)).ok_or_else(|| self.error(t.as_ref(), expected))
    }

    fn action(&mut self) -> Result<Action, ScriptError> {
        const EXPECTED: &str = "an action: ok, fail, hang, slow, close or redirect";
        let t = self.next();
        let word = t.as_ref().map(|t| t.text.to_ascii_lowercase());
        match word.as_deref() {
            Some("ok") => Ok(Action::Ok),
            Some("hang") => Ok(Action::Hang),
            Some("close") => Ok(Action::Close),
            Some("slow") => Ok(Action::Slow { delay: self.expect_duration("a delay like 5s after 'slow'")? }),
            Some("redirect") => {
                let target = self.next();
                match target {
                    Some(ref t) if t.text.starts_with('/') || t.text.starts_with("http://") || t.text.starts_with("https://") => {
                        Ok(Action::Redirect { location: t.text.to_string() })
                    }
                    other => Err(self.error(other.as_ref(), "a redirect target: /path or http(s)://host/path")),
                }
            }
            Some("fail") => {
                // An optional code follows unless the next token is a count ("3 times").
                let code = match (self.tokens.get(self.pos), self.tokens.get(self.pos + 1)) {
                    (Some(n), next) if n.text.chars().all(|c| c.is_ascii_digit()) && !is_count_word(next) => {
                        let n = self.next().expect("peeked");
                        let code: u16 = n.text.parse().map_err(|_| self.error(Some(&n), "a code 1-255 or 300-599"))?;
                        if !((1..=255).contains(&code) || (300..=599).contains(&code)) {
                            return Err(self.error(Some(&n), "a code 1-255 (exit code) or 300-599 (HTTP status)"));
                        }
                        Some(code)
                    }
                    _ => None,
                };
                Ok(Action::Fail { code })
            }
            _ => Err(self.error(t.as_ref(), EXPECTED)),
        }
    }

    fn span(&mut self) -> Result<Span, ScriptError> {
        let Some(t) = self.peek() else { return Ok(Span::Forever) };
        if t.text == "," {
            return Ok(Span::Forever);
        }
        if t.text.eq_ignore_ascii_case("for") {
            self.pos += 1;
            return Ok(Span::For(self.expect_duration("a duration like 20s after 'for'")?));
        }
        let t = self.next().expect("peeked");
        let Ok(count) = t.text.parse::<u32>() else {
            return Err(self.error(Some(&t), "'for DURATION', 'N times' or ','"));
        };
        if count == 0 {
            return Err(self.error(Some(&t), "a count of at least 1"));
        }
        let word = self.next();
        if !is_count_word(word.as_ref()) {
            return Err(self.error(word.as_ref(), "'times' or 'hits' after a count"));
        }
        Ok(Span::Hits(count))
    }
}

fn is_count_word(t: Option<&Token<'_>>) -> bool {
    t.is_some_and(|t| matches!(t.text.to_ascii_lowercase().as_str(), "times" | "time" | "hits" | "hit"))
}

impl Script {
    /// A script that answers `action` forever.
    #[must_use]
    pub fn always(action: Action) -> Self {
        let source = match &action {
            Action::Ok => "ok".to_string(),
            other => format!("{other:?}"),
        };
        Script { steps: vec![Step { action, span: Span::Forever }], repeat: false, source }
    }

    /// Parses the grammar in the module docs.
    ///
    /// # Errors
    /// A [`ScriptError`] naming the column and token that do not fit the grammar.
    pub fn parse(src: &str) -> Result<Self, ScriptError> {
        if src.len() > MAX_SCRIPT_BYTES {
            return Err(ScriptError { column: 1, found: format!("{} bytes", src.len()), expected: "a script of at most 16 KiB" });
        }
        let tokens = tokenize(src);
        let mut p = Parser { tokens, pos: 0, end_column: src.chars().count() + 1 };
        let mut steps = Vec::new();
        let mut repeat = false;
        loop {
            if let Some(t) = p.peek()
                && t.text.eq_ignore_ascii_case("then")
                && !steps.is_empty()
            {
                p.pos += 1;
            }
            if let Some(t) = p.peek()
                && t.text.eq_ignore_ascii_case("repeat")
                && !steps.is_empty()
            {
                p.pos += 1;
                repeat = true;
                if let Some(extra) = p.next() {
                    return Err(p.error(Some(&extra), "nothing after 'repeat'"));
                }
                break;
            }
            let action = p.action()?;
            let span = p.span()?;
            steps.push(Step { action, span });
            match p.next() {
                None => break,
                Some(t) if t.text == "," => {
                    if steps.last().is_some_and(|s| s.span == Span::Forever) {
                        return Err(p.error(Some(&t), "end of script: a step with no span lasts forever"));
                    }
                }
                Some(t) => return Err(p.error(Some(&t), "',' between steps")),
            }
        }
        if repeat && steps.iter().all(|s| matches!(s.span, Span::Forever)) {
            return Err(ScriptError { column: 1, found: src.to_string(), expected: "a step with a span before 'repeat'" });
        }
        Ok(Script { steps, repeat, source: src.trim().to_string() })
    }

    /// A cursor at the first step, beginning now.
    #[must_use]
    pub fn start(&self, now_ms: u64) -> Cursor {
        Cursor { step: 0, hits_in_step: 0, step_started_ms: now_ms }
    }

    /// Moves past steps whose time is up. Call before reading the current step.
    fn advance_by_time(&self, cursor: &mut Cursor, now_ms: u64) {
        if cursor.step >= self.steps.len() {
            // A cursor from another script (say, restored after the script changed): restart.
            *cursor = self.start(now_ms);
        }
        // A repeating, purely time-based script is periodic: skip whole cycles at once.
        if self.repeat && cursor.step == 0 {
            let cycle: Option<u64> = self.steps.iter().map(|s| if let Span::For(d) = s.span { Some(millis_of(d)) } else { None }).sum();
            if let Some(cycle) = cycle.filter(|c| *c > 0) {
                let elapsed = now_ms.saturating_sub(cursor.step_started_ms);
                cursor.step_started_ms += elapsed - elapsed % cycle;
            }
        }
        // Each pass either stops or moves one step; a full cycle without a time step stops.
        for _ in 0..=self.steps.len() * 2 {
            let step = &self.steps[cursor.step];
            let Span::For(d) = step.span else { return };
            let ends = cursor.step_started_ms.saturating_add(millis_of(d));
            if now_ms < ends {
                return;
            }
            if !self.move_to_next(cursor, ends) {
                return;
            }
        }
    }

    /// Moves to the next step; false if the script stays on its last step.
    fn move_to_next(&self, cursor: &mut Cursor, at_ms: u64) -> bool {
        let next = cursor.step + 1;
        if next < self.steps.len() {
            *cursor = Cursor { step: next, hits_in_step: 0, step_started_ms: at_ms };
            true
        } else if self.repeat {
            *cursor = Cursor { step: 0, hits_in_step: 0, step_started_ms: at_ms };
            true
        } else {
            // Stay on the last step, forever: pin it so time cannot move it again.
            *cursor = Cursor { step: cursor.step, hits_in_step: 0, step_started_ms: u64::MAX / 2 };
            false
        }
    }

    /// The action in force now, without counting a hit (TCP listeners poll this).
    #[must_use]
    pub fn current(&self, cursor: &mut Cursor, now_ms: u64) -> Action {
        self.advance_by_time(cursor, now_ms);
        self.steps[cursor.step].action.clone()
    }

    /// Answers one probe hit: the action in force now, counted against its step.
    #[must_use]
    pub fn hit(&self, cursor: &mut Cursor, now_ms: u64) -> Action {
        self.advance_by_time(cursor, now_ms);
        let step = &self.steps[cursor.step];
        let action = step.action.clone();
        if let Span::Hits(n) = step.span {
            cursor.hits_in_step += 1;
            if cursor.hits_in_step >= n {
                self.move_to_next(cursor, now_ms);
            }
        }
        action
    }
}

impl fmt::Display for Script {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn millis_of(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 4)
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(super::millis_of(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Script {
        Script::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn the_issue_example_parses_into_three_steps() {
        let s = parse("ok for 20s, then fail 3 times, then ok");
        assert_eq!(
            s.steps,
            vec![
                Step { action: Action::Ok, span: Span::For(Duration::from_secs(20)) },
                Step { action: Action::Fail { code: None }, span: Span::Hits(3) },
                Step { action: Action::Ok, span: Span::Forever },
            ]
        );
        assert!(!s.repeat);
    }

    #[test]
    fn fail_codes_are_told_apart_from_counts() {
        assert_eq!(parse("fail 500").steps[0].action, Action::Fail { code: Some(500) });
        assert_eq!(parse("fail 2 times, ok").steps[0], Step { action: Action::Fail { code: None }, span: Span::Hits(2) });
        assert_eq!(parse("fail 42 2 times, ok").steps[0], Step { action: Action::Fail { code: Some(42) }, span: Span::Hits(2) });
    }

    #[test]
    fn every_action_parses() {
        let s = parse(
            "hang 1 hit, slow 1500ms for 1m, close for 2s, redirect /status/503 2 hits, redirect http://10.255.255.1/x for 1s, repeat",
        );
        let actions: Vec<_> = s.steps.iter().map(|s| s.action.label()).collect();
        assert_eq!(actions, ["hang", "slow", "close", "redirect", "redirect"]);
        assert_eq!(s.steps[1].action, Action::Slow { delay: Duration::from_millis(1500) });
        assert!(s.repeat);
    }

    #[test]
    fn errors_point_at_the_bad_token() {
        let e = Script::parse("ok for 20s, then fial 3 times").unwrap_err();
        assert_eq!((e.column, e.found.as_str()), (18, "'fial'"));
        let e = Script::parse("ok for twenty").unwrap_err();
        assert_eq!(e.column, 8);
        assert!(e.to_string().contains("duration"), "{e}");
        let e = Script::parse("ok for 5s,").unwrap_err();
        assert_eq!(e.found, "end of script");
        let e = Script::parse("fail 99999").unwrap_err();
        assert_eq!(e.column, 6);
        let e = Script::parse("ok, fail").unwrap_err();
        assert!(e.expected.contains("lasts forever"), "{e}");
        let e = Script::parse("redirect ftp://x").unwrap_err();
        assert_eq!(e.column, 10);
        assert!(Script::parse("").is_err());
        assert!(Script::parse("ok, repeat").is_err());
        assert!(Script::parse("ok for 0s, fail").is_err());
        assert!(Script::parse("ok 0 times, fail").is_err());
        assert!(Script::parse("fail 2 times repeat").is_err());
    }

    #[test]
    fn time_steps_advance_by_wall_clock_and_count_steps_by_hits() {
        let s = parse("ok for 20s, then fail 3 times, then ok");
        let mut c = s.start(1_000);
        assert_eq!(s.hit(&mut c, 1_000), Action::Ok);
        assert_eq!(s.hit(&mut c, 20_999), Action::Ok);
        // 20 s after the start the count step begins; it takes exactly three hits.
        for _ in 0..3 {
            assert_eq!(s.hit(&mut c, 21_000), Action::Fail { code: None });
        }
        assert_eq!(s.hit(&mut c, 21_000), Action::Ok);
        assert_eq!(s.hit(&mut c, 10_000_000), Action::Ok);
    }

    #[test]
    fn a_finished_script_stays_on_its_last_step() {
        let s = parse("fail for 1s, ok for 1s");
        let mut c = s.start(0);
        assert!(!s.hit(&mut c, 500).is_healthy());
        assert!(s.hit(&mut c, 1_500).is_healthy());
        assert!(s.hit(&mut c, 1_000_000).is_healthy());
    }

    #[test]
    fn repeat_cycles_and_skips_whole_periods() {
        let s = parse("ok for 1s, fail for 1s, repeat");
        let mut c = s.start(0);
        assert!(s.current(&mut c, 100).is_healthy());
        assert!(!s.current(&mut c, 1_100).is_healthy());
        assert!(s.current(&mut c, 2_100).is_healthy());
        // Far in the future: the answer follows the period, computed without stepping.
        assert!(s.current(&mut c, 86_400_000_000 + 100).is_healthy());
        assert!(!s.current(&mut c, 86_400_000_000 + 1_100).is_healthy());
    }

    #[test]
    fn exit_codes_and_http_statuses() {
        assert_eq!(Action::Fail { code: Some(3) }.exit_code(), 3);
        assert_eq!(Action::Fail { code: Some(3) }.http_status(), Some(503));
        assert_eq!(Action::Fail { code: Some(500) }.exit_code(), 1);
        assert_eq!(Action::Fail { code: Some(500) }.http_status(), Some(500));
        assert_eq!(Action::Hang.http_status(), None);
        assert_eq!(Action::Ok.exit_code(), 0);
    }

    #[test]
    fn a_cursor_survives_serialization() {
        let s = parse("fail 2 times, ok");
        let mut c = s.start(0);
        let _ = s.hit(&mut c, 0);
        let json = serde_json::to_string(&c).unwrap();
        let mut restored: Cursor = serde_json::from_str(&json).unwrap();
        assert_eq!(s.hit(&mut restored, 10), Action::Fail { code: None });
        assert_eq!(s.hit(&mut restored, 10), Action::Ok);
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #[test]
            fn parsing_arbitrary_text_never_panics(s in "\\PC{0,80}") {
                let _ = Script::parse(&s);
            }

            #[test]
            fn parsing_token_soup_never_panics(words in proptest::collection::vec(
                prop_oneof!["ok", "fail", "hang", "slow", "close", "redirect", "for", "then", "times", "repeat",
                            ",", "3", "0", "500", "20s", "0.5ms", "/x", "http://a", "99999999999"], 0..12)) {
                let _ = Script::parse(&words.join(" "));
            }

            #[test]
            fn stepping_never_panics_and_time_never_moves_backwards(
                src in prop_oneof!["ok for 1s, fail 2 times, repeat", "fail 3 times, ok", "ok for 10ms, hang for 5ms, repeat", "slow 1s"],
                times in proptest::collection::vec(0u64..10_000_000, 1..50),
            ) {
                let s = Script::parse(&src).unwrap();
                let mut c = s.start(0);
                let mut sorted = times.clone();
                sorted.sort_unstable();
                for t in sorted {
                    let _ = s.hit(&mut c, t);
                    prop_assert!(c.step < s.steps.len());
                }
            }
        }
    }
}
