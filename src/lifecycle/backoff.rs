//! The kubelet's CrashLoopBackOff curve, as a configurable profile, and the parser for the
//! back-off it announces in `waiting.message`.
//!
//! How the kubelet (v1.34 `doBackOff` with `flowcontrol.Backoff`) restarts a failing container:
//! the first restart is immediate; each later one waits the current back-off, which starts at
//! `initial` and doubles up to `max`. If the container ran for longer than `reset_after` (the
//! back-off entry expired), the sequence starts again with an immediate restart.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A back-off curve. [`BackoffProfile::default`] is the kubelet's default.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackoffProfile {
    /// First non-zero back-off, in seconds (kubelet default 10).
    pub initial_seconds: f64,
    /// Cap, in seconds (kubelet default 300; `KubeletCrashLoopBackOffMax` changes it).
    pub max_seconds: f64,
    /// A run longer than this resets the curve (kubelet default 600: twice the cap).
    pub reset_after_seconds: f64,
    /// How much later than the back-off a restart may come and still fit the curve. The
    /// kubelet only restarts on the pod worker's next sync after the back-off expires; measured
    /// here at 2-13 s beyond the announced back-off, so 15 s by default.
    pub sync_slack_seconds: f64,
}

impl Default for BackoffProfile {
    fn default() -> Self {
        BackoffProfile { initial_seconds: 10.0, max_seconds: 300.0, reset_after_seconds: 600.0, sync_slack_seconds: 15.0 }
    }
}

impl BackoffProfile {
    /// `ReduceDefaultCrashLoopBackOffDecay` (alpha since 1.33): 1 s initial, 60 s cap.
    #[must_use]
    pub fn reduced_decay() -> Self {
        BackoffProfile { initial_seconds: 1.0, max_seconds: 60.0, reset_after_seconds: 120.0, ..Self::default() }
    }

    /// The named profiles the operator accepts: `default` and `reduced-decay`.
    #[must_use]
    pub fn named(name: &str) -> Option<Self> {
        match name {
            "default" => Some(Self::default()),
            "reduced-decay" => Some(Self::reduced_decay()),
            _ => None,
        }
    }

    /// The back-off before the `step`-th restart of a sequence (1-based): 0 for the first, then
    /// `initial`, doubling, capped at `max`.
    #[must_use]
    pub fn expected_seconds(&self, step: u32) -> f64 {
        if step <= 1 {
            return 0.0;
        }
        let doublings = i32::try_from(step - 2).unwrap_or(i32::MAX).min(64);
        (self.initial_seconds * 2f64.powi(doublings)).min(self.max_seconds)
    }

    /// Whether a measured delay fits the expected one: not earlier (timestamps have 1 s
    /// resolution, hence the 1 s allowance) and not later than the sync slack.
    #[must_use]
    pub fn fits(&self, expected: f64, measured: f64) -> bool {
        measured >= expected - 1.0 && measured <= expected + self.sync_slack_seconds
    }
}

/// Parses the kubelet's `back-off 1m20s restarting failed container=NAME pod=NS_POD(UID)`,
/// returning the announced back-off in seconds.
#[must_use]
pub fn parse_announced(message: &str) -> Option<f64> {
    let rest = message.strip_prefix("back-off ")?;
    let token = rest.split_whitespace().next()?;
    parse_go_duration(token).map(|d| d.as_secs_f64())
}

/// Parses Go's `time.Duration` string form: `10s`, `1m20s`, `2m40s`, `5m0s`, `1h0m0s`, `500ms`.
#[must_use]
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    if s == "0s" || s == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    let mut any = false;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        if num_len == 0 {
            return None;
        }
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * scale;
        any = true;
    }
    (any && total.is_finite() && total < 1e12).then(|| Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_curve_matches_the_kubelet() {
        let p = BackoffProfile::default();
        let curve: Vec<f64> = (1..=9).map(|n| p.expected_seconds(n)).collect();
        assert_eq!(curve, [0.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0, 300.0]);
        assert_eq!(p.expected_seconds(1000), 300.0);
        let r = BackoffProfile::reduced_decay();
        assert_eq!((r.expected_seconds(2), r.expected_seconds(9)), (1.0, 60.0));
    }

    #[test]
    fn measured_restarts_from_the_real_kubelet_fit_the_curve() {
        // Two runs measured on the real kubelet (shared/notes/local-cluster.md).
        let p = BackoffProfile::default();
        for run in [[0.40, 13.86, 25.99, 42.99, 85.02], [1.06, 12.97, 25.97, 42.00, 93.01]] {
            for (i, measured) in run.iter().enumerate() {
                let expected = p.expected_seconds(u32::try_from(i).unwrap() + 1);
                assert!(p.fits(expected, *measured), "restart {} measured {measured} expected {expected}", i + 1);
            }
        }
        assert!(!p.fits(40.0, 20.0), "a restart 20 s early does not fit");
        assert!(!p.fits(10.0, 40.0), "a restart 30 s late does not fit");
    }

    #[test]
    fn announced_back_off_is_parsed_from_the_kubelet_message() {
        let m = |s: &str| parse_announced(&format!("back-off {s} restarting failed container=app pod=ns_p(uid)"));
        assert_eq!(m("10s"), Some(10.0));
        assert_eq!(m("1m20s"), Some(80.0));
        assert_eq!(m("2m40s"), Some(160.0));
        assert_eq!(m("5m0s"), Some(300.0));
        assert_eq!(parse_announced("Back-off pulling image"), None);
        assert_eq!(parse_announced("back-off soon restarting"), None);
        assert_eq!(parse_go_duration("1h0m0s"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("s"), None);
        assert_eq!(parse_go_duration("10x"), None);
    }
}
