//! The kubectl plugin run locally, before it reaches any cluster: input that cannot run is
//! refused with exit code 2 and a message that names the problem, not a connection error.

use std::process::Command;

fn plugin(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-podlife"))
        .args(args)
        .env("KUBECONFIG", "/nonexistent/podlife-test-kubeconfig")
        .output()
        .expect("run kubectl-podlife");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_conformance_filter_that_can_run_nothing_is_refused_before_any_cluster_call() {
    // Defects each line catches: a typo in --only that runs no case and exits 0 (a CI reads a
    // pass), the same after --skip-slow removes every picked case, and either told only as
    // "cannot connect" because the input was checked after connecting.
    let cases: [(&[&str], &str); 2] = [
        (&["suite", "conformance", "--only", "backof-curve"], "no conformance case is named or contains \"backof-curve\""),
        (&["suite", "conformance", "--only", "backoff-reset", "--skip-slow"], "drop --skip-slow"),
    ];
    for (args, expected) in cases {
        let (code, err) = plugin(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(!err.to_lowercase().contains("kubeconfig"), "{args:?} reached for the cluster: {err}");
    }
}
