//! kubectl-podlife: reads podlife's reports and runs experiments. `report POD` prints a pod's
//! timeline (`report`); `run` and `suite` run experiments after a preflight (`run`); `doctor`
//! checks the setup. What is drawn or written (HTML, JUnit) and the conformance catalogue live
//! in the harness; this module only talks to the cluster and the terminal.

pub mod complete;
pub mod connect;
pub mod doctor;
pub mod list;
pub mod preflight;
mod report;
mod run;

pub use crate::harness::conformance::CONFORMANCE;
pub use report::{Format, Subject, explain, find_report, report, report_workload};
pub use run::{Created, Outcome, RunFormat, RunOptions, experiment_timeline, load_experiments, run, show, suite, write_html};

use std::time::Duration;

/// Errors of the CLI. Each says which pod and what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no PodLifecycle report for pod {pod} in namespace {namespace}; is the pod tracked (label podlife.io/track=true) and the operator running?"
    )]
    NoReport { pod: String, namespace: String },
    #[error(
        "no PodLifecycle report of {workload} in namespace {namespace}{}; reports carry their owner once the operator has seen the pod (podlife 0.x reports of older operators do not)",
        if *selector { "" } else { " (by label podlife.io/workload-kind and podlife.io/workload)" }
    )]
    NoWorkloadReports { workload: String, namespace: String, selector: bool },
    #[error("{given:?} is not POD, KIND/NAME or a kind podlife knows: {}", crate::lifecycle::workload::KINDS.join(", "))]
    BadSubject { given: String },
    #[error("kubernetes API")]
    Kube(#[from] kube::Error),
    #[error("writing output")]
    Io(#[from] std::io::Error),
    #[error("encoding JSON")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Preflight(#[from] preflight::Missing),
    #[error(transparent)]
    Conformance(#[from] crate::harness::conformance::Error),
    #[error(
        "no podlife operator with experiments enabled picked up experiment {name} in namespace {namespace} within {seconds} s{}",
        why_not_accepted(namespace, hint.as_ref())
    )]
    NotAccepted { namespace: String, name: String, seconds: u64, hint: Option<preflight::Missing> },
    #[error(
        "experiment {name} in {namespace} did not finish within its timeout ({seconds} s) and a minute more; is the operator still running?"
    )]
    Unfinished { namespace: String, name: String, seconds: u64 },
    #[error("{what} was still being deleted after {seconds} s")]
    StillDeleting { what: String, seconds: u64 },
}

fn why_not_accepted(namespace: &str, hint: Option<&preflight::Missing>) -> String {
    // `hint` says what the installs showed: one not covering the namespace, or a covering one
    // that stayed silent.
    match hint {
        Some(m) => format!(": {}\n  fix: {}", m.what, m.fix),
        None => format!(
            "\n  fix: install the operator with experiments for {namespace}: helm install podlife charts/podlife --namespace podlife-system --create-namespace --set experiments.enabled=true (or run podlife-operator --experiments)"
        ),
    }
}

/// An error and its causes, as one line: "what failed: why: why".
#[must_use]
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// How long `run` and `suite` wait for the operator to accept the first experiments they
/// create before concluding that no operator covers the namespace, counted from the start of
/// the checks (slow checks on a busy apiserver must not stretch what the user waits). The
/// operator accepts one by writing its status as soon as its watch delivers it (well under a
/// second here).
pub const ACCEPT_TIMEOUT: Duration = Duration::from_secs(3);
/// However slow the checks were, the operator gets at least this long after an experiment's
/// creation to accept it.
const MIN_ACCEPT_AFTER_CREATE: Duration = Duration::from_secs(2);
/// The same for experiments started later (a suite's queue): the operator is known to be there,
/// so this only bounds the wait.
const LATER_ACCEPT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait when an installed, ready operator covers the namespace: it may be a standby
/// taking over a lease its predecessor could not release (15 s), as after `helm uninstall`
/// removes the operator's permissions together with its pod.
const COVERED_ACCEPT_TIMEOUT: Duration = Duration::from_secs(20);
/// The longest wait for something being deleted (an earlier run's experiment, a namespace).
const DELETE_TIMEOUT: Duration = Duration::from_secs(120);

pub type Result<T, E = Error> = std::result::Result<T, E>;
