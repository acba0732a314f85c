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

/// A back-off curve, and how far the kubelet may stray from it. [`BackoffProfile::default`]
/// is the kubelet's default.
///
/// Why a restart comes later than its back-off (v1.34 source): a sync that finds the container
/// in back-off fails with `ErrCrashLoopBackOff`, and the pod worker requeues a failed sync after
/// `wait.Jitter(backOffPeriod = 10 s, 0.5)`, i.e. 10-15 s (`pod_workers.go` `completeWork`). No
/// other sync comes while the container sits exited, so the restart lands on the first requeue
/// after the back-off expired: less than 15 s late. The kubelet's timestamps are truncated to
/// the second, so a measured delay can be up to 1 s off either way.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackoffProfile {
    /// First non-zero back-off, in seconds (kubelet default 10).
    pub initial_seconds: f64,
    /// Cap, in seconds (kubelet default 300; `KubeletCrashLoopBackOffMax` changes it).
    pub max_seconds: f64,
    /// A run longer than this resets the curve (kubelet default 600: twice the cap).
    pub reset_after_seconds: f64,
    /// How much later than its back-off a restart may come (steps 2 and on): the pod worker's
    /// requeue (< 15 s) plus 1 s of timestamp truncation. Measured here: 2.0-13.0 s late.
    pub sync_slack_seconds: f64,
    /// How much later than the exit an immediate restart (step 1, or the first after a reset)
    /// may come: the PLEG relist (1 s) notices the exit and the sync restarts the container at
    /// once; plus starting it and 1 s of truncation. Measured here: 0.4, 1.1 and 2.0 s.
    #[serde(default = "default_immediate_slack")]
    pub immediate_slack_seconds: f64,
}

fn default_immediate_slack() -> f64 {
    4.0
}

/// Timestamps of the kubelet have 1 s resolution: a measured delay may read up to 1 s short.
const RESOLUTION_SECONDS: f64 = 1.0;

/// Why a restart does not fit its curve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CurveMiss {
    /// The kubelet announced a back-off other than the curve's for this step.
    AnnouncedOffCurve { announced: f64, expected: f64 },
    /// Restarted earlier than the back-off allows.
    Early { by: f64 },
    /// Restarted later than the profile's slack for this step.
    Late { by: f64, slack: f64 },
}

impl Default for BackoffProfile {
    fn default() -> Self {
        BackoffProfile {
            initial_seconds: 10.0,
            max_seconds: 300.0,
            reset_after_seconds: 600.0,
            sync_slack_seconds: 16.0,
            immediate_slack_seconds: default_immediate_slack(),
        }
    }
}

impl BackoffProfile {
    /// `ReduceDefaultCrashLoopBackOffDecay` (alpha since 1.33): 1 s initial, 60 s cap. The pod
    /// worker's 10-15 s requeue is unchanged, so the slack is too.
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

    /// Judges the `step`-th restart of a sequence: what the kubelet `announced` (if the status
    /// showed it) must be the curve's `expected` back-off exactly (Go prints whole seconds), and
    /// the `measured` delay may be late by at most this step's slack and early only by the
    /// timestamps' resolution.
    ///
    /// # Errors
    /// The first way the restart misses the curve.
    pub fn judge(&self, step: u32, expected: f64, announced: Option<f64>, measured: f64) -> Result<(), CurveMiss> {
        if let Some(announced) = announced
            && (announced - expected).abs() >= 0.5
        {
            return Err(CurveMiss::AnnouncedOffCurve { announced, expected });
        }
        let slack = if step <= 1 { self.immediate_slack_seconds } else { self.sync_slack_seconds };
        let late = measured - expected;
        if late < -RESOLUTION_SECONDS {
            return Err(CurveMiss::Early { by: -late });
        }
        if late > slack {
            return Err(CurveMiss::Late { by: late, slack });
        }
        Ok(())
    }

    /// Whether the restart fits the curve: see [`BackoffProfile::judge`].
    #[must_use]
    pub fn fits(&self, step: u32, expected: f64, announced: Option<f64>, measured: f64) -> bool {
        self.judge(step, expected, announced, measured).is_ok()
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
        // Two runs measured on the real kubelet (shared/notes/local-cluster.md), with what the
        // kubelet announced before restarts 2-5.
        let p = BackoffProfile::default();
        let announced = [None, Some(10.0), Some(20.0), Some(40.0), Some(80.0)];
        for run in [[0.40, 13.86, 25.99, 42.99, 85.02], [1.06, 12.97, 25.97, 42.00, 93.01]] {
            for (i, measured) in run.iter().enumerate() {
                let step = u32::try_from(i).unwrap() + 1;
                let expected = p.expected_seconds(step);
                assert_eq!(p.judge(step, expected, announced[i], *measured), Ok(()), "restart {step} measured {measured}");
            }
        }
        // A restart after a run past the reset came 2 s after the exit.
        assert!(p.fits(1, 0.0, None, 2.0));
    }

    /// Each kubelet fault the tolerance must catch, and the real measurement next to it that
    /// must still pass.
    #[test]
    fn wrong_back_off_does_not_fit() {
        let p = BackoffProfile::default();
        // The first restart is immediate: 15 s late is a back-off the kubelet should not apply.
        assert_eq!(p.judge(1, 0.0, None, 15.0), Err(CurveMiss::Late { by: 15.0, slack: 4.0 }));
        assert!(!p.fits(1, 0.0, None, 10.0), "the curve shifted by one step at restart 1");
        // Shifted by one step at restart 2: announced 20 s where the curve says 10 s.
        assert_eq!(p.judge(2, 10.0, Some(20.0), 25.0), Err(CurveMiss::AnnouncedOffCurve { announced: 20.0, expected: 10.0 }));
        // Announced right, applied far later than any sync could explain.
        assert!(!p.fits(3, 20.0, Some(20.0), 37.5));
        assert!(p.fits(3, 20.0, Some(20.0), 35.9));
        // Early: before the back-off ran out.
        assert_eq!(p.judge(4, 40.0, Some(40.0), 20.0), Err(CurveMiss::Early { by: 20.0 }));
        // Truncated timestamps may read 1 s short, no more.
        assert!(p.fits(2, 10.0, None, 9.0));
        assert!(!p.fits(2, 10.0, None, 8.9));
        // A cap at 600 s shows as an announced 10m0s where the curve holds 300 s.
        assert!(!p.fits(8, 300.0, Some(600.0), 605.0));
        let r = BackoffProfile::reduced_decay();
        assert!(!r.fits(2, 1.0, Some(10.0), 12.0), "announcing the default curve under reduced-decay");
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
