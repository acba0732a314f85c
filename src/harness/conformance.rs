//! The built-in conformance suite: the kubelet's own upstream probe and lifecycle checks as
//! ProbeExperiments (manifests/conformance/), embedded so the CLI needs no checkout.

use crate::crd::ProbeExperiment;

/// Every case: its name and its YAML.
pub const CONFORMANCE: &[(&str, &str)] = &[
    ("backoff-curve", include_str!("../../manifests/conformance/backoff-curve.yaml")),
    ("backoff-curve-and-cap", include_str!("../../manifests/conformance/backoff-curve-and-cap.yaml")),
    ("backoff-reset-after-long-run", include_str!("../../manifests/conformance/backoff-reset-after-long-run.yaml")),
    ("grace-period-reduced-at-delete", include_str!("../../manifests/conformance/grace-period-reduced-at-delete.yaml")),
    ("graceful-delete-within-grace", include_str!("../../manifests/conformance/graceful-delete-within-grace.yaml")),
    ("hooks-order", include_str!("../../manifests/conformance/hooks-order.yaml")),
    ("job-completions-parallelism", include_str!("../../manifests/conformance/job-completions-parallelism.yaml")),
    ("job-onfailure-retries-in-place", include_str!("../../manifests/conformance/job-onfailure-retries-in-place.yaml")),
    ("liveness-after-startup-restarts", include_str!("../../manifests/conformance/liveness-after-startup-restarts.yaml")),
    ("liveness-disabled-while-terminating", include_str!("../../manifests/conformance/liveness-disabled-while-terminating.yaml")),
    ("liveness-exec-no-restart", include_str!("../../manifests/conformance/liveness-exec-no-restart.yaml")),
    ("liveness-exec-restart", include_str!("../../manifests/conformance/liveness-exec-restart.yaml")),
    ("liveness-exec-slow-past-timeout-restart", include_str!("../../manifests/conformance/liveness-exec-slow-past-timeout-restart.yaml")),
    ("liveness-exec-timeout-restart", include_str!("../../manifests/conformance/liveness-exec-timeout-restart.yaml")),
    ("liveness-grpc-no-restart", include_str!("../../manifests/conformance/liveness-grpc-no-restart.yaml")),
    ("liveness-grpc-restart", include_str!("../../manifests/conformance/liveness-grpc-restart.yaml")),
    ("liveness-http-no-restart", include_str!("../../manifests/conformance/liveness-http-no-restart.yaml")),
    ("liveness-http-restart", include_str!("../../manifests/conformance/liveness-http-restart.yaml")),
    ("liveness-local-redirect-restart", include_str!("../../manifests/conformance/liveness-local-redirect-restart.yaml")),
    ("liveness-nonlocal-redirect-no-restart", include_str!("../../manifests/conformance/liveness-nonlocal-redirect-no-restart.yaml")),
    (
        "liveness-probe-grace-period-overrides-pod",
        include_str!("../../manifests/conformance/liveness-probe-grace-period-overrides-pod.yaml"),
    ),
    ("liveness-restart-count-increases", include_str!("../../manifests/conformance/liveness-restart-count-increases.yaml")),
    ("liveness-tcp-no-restart", include_str!("../../manifests/conformance/liveness-tcp-no-restart.yaml")),
    ("liveness-tcp-restart", include_str!("../../manifests/conformance/liveness-tcp-restart.yaml")),
    ("poststart-failing-restarts", include_str!("../../manifests/conformance/poststart-failing-restarts.yaml")),
    ("prestop-exec-failing-event", include_str!("../../manifests/conformance/prestop-exec-failing-event.yaml")),
    ("prestop-http-500-is-not-a-failure", include_str!("../../manifests/conformance/prestop-http-500-is-not-a-failure.yaml")),
    ("prestop-sleep", include_str!("../../manifests/conformance/prestop-sleep.yaml")),
    ("readiness-exec-failing-never-ready", include_str!("../../manifests/conformance/readiness-exec-failing-never-ready.yaml")),
    ("readiness-exec-timeout-never-ready", include_str!("../../manifests/conformance/readiness-exec-timeout-never-ready.yaml")),
    ("readiness-false-while-terminating", include_str!("../../manifests/conformance/readiness-false-while-terminating.yaml")),
    ("readiness-initial-delay", include_str!("../../manifests/conformance/readiness-initial-delay.yaml")),
    ("restart-always-exit-0-restarts", include_str!("../../manifests/conformance/restart-always-exit-0-restarts.yaml")),
    ("restart-always-exit-1-restarts", include_str!("../../manifests/conformance/restart-always-exit-1-restarts.yaml")),
    ("restart-never-exit-0-succeeded", include_str!("../../manifests/conformance/restart-never-exit-0-succeeded.yaml")),
    ("restart-never-exit-1-failed", include_str!("../../manifests/conformance/restart-never-exit-1-failed.yaml")),
    ("restart-onfailure-exit-0-succeeded", include_str!("../../manifests/conformance/restart-onfailure-exit-0-succeeded.yaml")),
    ("restart-onfailure-exit-1-restarts", include_str!("../../manifests/conformance/restart-onfailure-exit-1-restarts.yaml")),
    ("sidecar-liveness-exec-restart", include_str!("../../manifests/conformance/sidecar-liveness-exec-restart.yaml")),
    ("sidecar-liveness-http-no-restart", include_str!("../../manifests/conformance/sidecar-liveness-http-no-restart.yaml")),
    ("sidecar-liveness-http-restart", include_str!("../../manifests/conformance/sidecar-liveness-http-restart.yaml")),
    ("sidecar-readiness-failing-never-ready", include_str!("../../manifests/conformance/sidecar-readiness-failing-never-ready.yaml")),
    ("sidecar-startup-delays-liveness", include_str!("../../manifests/conformance/sidecar-startup-delays-liveness.yaml")),
    ("sidecar-startup-failing-restarts", include_str!("../../manifests/conformance/sidecar-startup-failing-restarts.yaml")),
    ("startup-delays-liveness", include_str!("../../manifests/conformance/startup-delays-liveness.yaml")),
    ("startup-failing-restarts", include_str!("../../manifests/conformance/startup-failing-restarts.yaml")),
    ("startup-probe-grace-period-overrides-pod", include_str!("../../manifests/conformance/startup-probe-grace-period-overrides-pod.yaml")),
    ("startup-then-ready", include_str!("../../manifests/conformance/startup-then-ready.yaml")),
];

/// A case observed for longer than this is slow, as upstream tags its long kubelet tests
/// `[Slow]`: the back-off's 5-minute cap and its reset after a 10-minute run. `backoff-curve`
/// checks the curve's first steps in under 3 minutes, so a run without the slow cases still
/// judges the real kubelet's back-off.
pub const SLOW_AFTER_SECONDS: u32 = 300;

/// Whether `experiment` is one of the slow cases (see [`SLOW_AFTER_SECONDS`]).
#[must_use]
pub fn is_slow(experiment: &ProbeExperiment) -> bool {
    experiment.spec.duration_seconds > SLOW_AFTER_SECONDS
}

/// Why [`cases`] has no cases to give.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no conformance case is named or contains {filter:?}; the cases are: {}", names().join(", "))]
    NoCase { filter: String },
    #[error("--only {filter:?} picks only slow cases ({}), which --skip-slow leaves out: drop --skip-slow to run them", picked.join(", "))]
    OnlySlow { filter: String, picked: Vec<&'static str> },
    #[error("embedded conformance case {name} does not parse: {reason}")]
    Parse { name: &'static str, reason: String },
}

fn names() -> Vec<&'static str> {
    CONFORMANCE.iter().map(|(name, _)| *name).collect()
}

/// The cases `filter` names (every case without one), parsed; without the slow ones if
/// `skip_slow`. A filter that is a case's whole name picks that case alone, so that
/// `backoff-curve` does not also run the 13-minute `backoff-curve-and-cap`; otherwise it picks
/// every case whose name contains it.
///
/// # Errors
/// The filter picks no case, or only slow ones with `skip_slow` (a typo must not pass as an
/// empty run), or an embedded case does not parse (a test keeps that from shipping).
pub fn cases(filter: Option<&str>, skip_slow: bool) -> Result<Vec<(&'static str, ProbeExperiment)>, Error> {
    let exact = filter.is_some_and(|f| names().contains(&f));
    let picked = |name: &str| match filter {
        None => true,
        Some(f) if exact => name == f,
        Some(f) => name.contains(f),
    };
    let parsed = CONFORMANCE
        .iter()
        .filter(|(name, _)| picked(name))
        .map(|(name, yaml)| {
            crate::crd::experiment::experiment_from_yaml_str(yaml)
                .map(|e| (*name, e))
                .map_err(|e| Error::Parse { name, reason: e.to_string() })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let (slow, kept): (Vec<_>, Vec<_>) = parsed.into_iter().partition(|(_, e)| skip_slow && is_slow(e));
    match filter {
        Some(f) if kept.is_empty() && slow.is_empty() => Err(Error::NoCase { filter: f.to_string() }),
        Some(f) if kept.is_empty() => Err(Error::OnlySlow { filter: f.to_string(), picked: slow.iter().map(|(n, _)| *n).collect() }),
        _ => Ok(kept),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_conformance_file_is_embedded_and_parses() {
        let mut on_disk: Vec<String> = std::fs::read_dir("manifests/conformance")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".yaml").map(str::to_string))
            .collect();
        on_disk.sort();
        let embedded: Vec<String> = CONFORMANCE.iter().map(|(n, _)| (*n).to_string()).collect();
        assert_eq!(embedded, on_disk, "add new cases to CONFORMANCE");
        for (name, yaml) in CONFORMANCE {
            let exp = crate::crd::experiment::experiment_from_yaml_str(yaml).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(kube::ResourceExt::name_any(&exp), *name);
            assert!(exp.spec.duration_seconds < exp.spec.timeout_seconds, "{name}: observed within its timeout");
        }
    }

    #[test]
    fn skipping_the_slow_cases_leaves_out_exactly_the_cap_and_the_reset() {
        // Defect caught: a quick run that still waits 13 minutes for the cap, or one that
        // quietly drops a fast case (or the short back-off case that stands in for the slow).
        let all = cases(None, false).unwrap();
        let quick = cases(None, true).unwrap();
        let left_out: Vec<&str> = all.iter().map(|(n, _)| *n).filter(|n| !quick.iter().any(|(q, _)| q == n)).collect();
        assert_eq!(left_out, ["backoff-curve-and-cap", "backoff-reset-after-long-run"]);
        assert!(quick.iter().any(|(n, _)| *n == "backoff-curve"));
        assert!(quick.iter().all(|(_, e)| e.spec.duration_seconds <= SLOW_AFTER_SECONDS));
    }

    #[test]
    fn a_whole_name_picks_that_case_alone_and_a_part_picks_all_that_contain_it() {
        // Defect caught: `--only backoff-curve` that also runs the 13-minute cap case (a plain
        // substring match), or a part of a name that no longer picks every case containing it.
        let names = |filter| cases(Some(filter), false).unwrap().into_iter().map(|(n, _)| n).collect::<Vec<_>>();
        assert_eq!(names("backoff-curve"), ["backoff-curve"]);
        assert_eq!(names("backoff-curve-"), ["backoff-curve-and-cap"]);
        assert_eq!(names("backoff"), ["backoff-curve", "backoff-curve-and-cap", "backoff-reset-after-long-run"]);
    }

    #[test]
    fn a_filter_that_names_no_case_is_an_error_that_lists_the_cases() {
        // Defect caught: a typo in `--only` that runs nothing and exits 0, so CI reports a pass.
        let err = cases(Some("backof-curve"), false).unwrap_err().to_string();
        assert!(err.contains("\"backof-curve\"") && err.contains("backoff-curve-and-cap"), "{err}");
    }

    #[test]
    fn a_filter_whose_every_case_is_slow_is_an_error_with_skip_slow() {
        // Defect caught: `--only backoff-reset --skip-slow` that skips the one case it picked,
        // runs nothing and exits 0.
        let err = cases(Some("backoff-reset"), true).unwrap_err();
        assert!(matches!(&err, Error::OnlySlow { picked, .. } if picked == &["backoff-reset-after-long-run"]), "{err}");
        assert_eq!(cases(Some("backoff-curve"), true).unwrap().len(), 1, "a quick case is kept");
    }
}
