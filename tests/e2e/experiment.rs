//! ProbeExperiments run by the operator against the real kubelet, driven through the CLI.

use std::process::Command;
use std::time::Duration;

use crate::operator::{Operator, install_crds};
use crate::support::with_namespace;

fn cli(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-podlife")).args(args).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test]
async fn the_example_experiments_pass_and_a_wrong_expectation_fails_with_its_observation() {
    with_namespace("experiments", |ns| async move {
        install_crds(&ns).await;
        let _op = Operator::start_with(&ns, &["--experiments"]);
        let (code, junit, err) = cli(&[
            "run",
            "manifests/examples/experiments/liveness-http-restart.yaml",
            "manifests/examples/experiments/readiness-exec-never-ready.yaml",
            "-n",
            &ns.name,
            "-o",
            "junit",
        ]);
        assert_eq!(code, Some(0), "{junit}\n{err}");
        assert_eq!(junit.matches("<testcase").count(), 8, "{junit}");
        assert!(!junit.contains("<failure") && !junit.contains("<error"), "{junit}");

        // The same liveness failure with a wrong belief: "no restart". It must fail and say why.
        let wrong = std::env::temp_dir().join(format!("{}-wrong.yaml", ns.name));
        let text = std::fs::read_to_string("manifests/examples/experiments/liveness-http-restart.yaml")
            .unwrap()
            .replace("name: liveness-http-restart", "name: wrong-belief")
            .replace("restarts: {container: target, min: 1, max: 1}", "restarts: {container: target, min: 0, max: 0}");
        std::fs::write(&wrong, text).unwrap();
        let (code, out, err) = cli(&["run", wrong.to_str().unwrap(), "-n", &ns.name]);
        assert_eq!(code, Some(1), "{out}\n{err}");
        assert!(out.contains("✘ restarts of target") && out.contains("expected 0") && out.contains("observed 1"), "{out}");
        assert!(out.contains("liveness probe kill"), "the timeline is printed: {out}");
    })
    .await;
}

#[tokio::test]
async fn a_bad_spec_is_rejected_by_the_schema_with_a_message() {
    with_namespace("experiment_schema", |ns| async move {
        install_crds(&ns).await;
        let bad = std::env::temp_dir().join(format!("{}-bad.yaml", ns.name));
        std::fs::write(&bad, "apiVersion: podlife.io/v1alpha1\nkind: ProbeExperiment\nmetadata: {name: bad}\nspec:\n  durationSeconds: 5\n  pod: {containers: [{name: target}]}\n  actions: [{name: both, atSeconds: 1, when: Ready, call: {path: /x}}]\n  expectations: [{restarts: {container: target}}]\n").unwrap();
        let (code, out, err) = cli(&["run", bad.to_str().unwrap(), "-n", &ns.name]);
        assert_eq!(code, Some(2), "{out}");
        assert!(err.contains("exactly one of atSeconds or when"), "{err}");
        // Two checks in one expectation: refused before anything is sent, naming the item.
        std::fs::write(&bad, "apiVersion: podlife.io/v1alpha1\nkind: ProbeExperiment\nmetadata: {name: bad}\nspec:\n  durationSeconds: 5\n  pod: {containers: [{name: target}]}\n  expectations: [{finalPhase: Running}, {restarts: {container: target}, neverReadyForSeconds: 3}]\n").unwrap();
        let (code, out, err) = cli(&["run", bad.to_str().unwrap(), "-n", &ns.name]);
        assert_eq!(code, Some(2), "{out}");
        assert!(err.contains("spec.expectations[1]") && err.contains("an expectation checks exactly one thing"), "{err}");
        // Actions act on one pod: a Job experiment takes none (a spec-level CEL rule).
        std::fs::write(&bad, "apiVersion: podlife.io/v1alpha1\nkind: ProbeExperiment\nmetadata: {name: bad-job}\nspec:\n  durationSeconds: 5\n  job: {completions: 1, parallelism: 1}\n  pod: {restartPolicy: Never, containers: [{name: target}]}\n  actions: [{name: x, atSeconds: 1, exec: {command: [x]}}]\n  expectations: [{finalPhase: Succeeded}]\n").unwrap();
        let (code, out, err) = cli(&["run", bad.to_str().unwrap(), "-n", &ns.name]);
        assert_eq!(code, Some(2), "{out}");
        assert!(err.contains("an experiment with a job takes none"), "{err}");
        // Deployment experiments: each rule refuses what the apiserver or the operator could not
        // run, with its message (an exec action, a Deployment that could never roll out, a
        // workload expectation on a bare pod).
        for (spec, message) in [
            ("deployment: {replicas: 1}\n  pod: {containers: [{name: target}]}\n  actions: [{name: x, atSeconds: 1, exec: {command: [x]}}]\n  expectations: [{maxUnready: 0}]", "a deployment experiment's actions are rollout or scale"),
            ("deployment: {replicas: 1, maxSurge: 0, maxUnavailable: 0}\n  pod: {containers: [{name: target}]}\n  expectations: [{maxUnready: 0}]", "maxSurge and maxUnavailable cannot both be 0"),
            ("pod: {containers: [{name: target}]}\n  expectations: [{rolloutSeconds: {max: 5}}]", "need spec.deployment"),
        ] {
            let text = format!("apiVersion: podlife.io/v1alpha1\nkind: ProbeExperiment\nmetadata: {{name: bad-deployment}}\nspec:\n  durationSeconds: 5\n  {spec}\n");
            std::fs::write(&bad, text).unwrap();
            let (code, out, err) = cli(&["run", bad.to_str().unwrap(), "-n", &ns.name]);
            assert_eq!(code, Some(2), "{out}");
            assert!(err.contains(message), "{message}: {err}");
        }
        let (code, _, err) = cli(&["run", "/nonexistent.yaml"]);
        assert_eq!(code, Some(2));
        assert!(err.contains("/nonexistent.yaml"), "{err}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    })
    .await;
}

#[tokio::test]
async fn exec_actions_run_in_the_container_and_report_their_exit_code() {
    with_namespace("experiment_exec", |ns| async move {
        install_crds(&ns).await;
        let _op = Operator::start_with(&ns, &["--experiments"]);
        let file = std::env::temp_dir().join(format!("{}-exec.yaml", ns.name));
        std::fs::write(
            &file,
            r#"apiVersion: podlife.io/v1alpha1
kind: ProbeExperiment
metadata: {name: exec-actions}
spec:
  durationSeconds: 8
  pod:
    containers:
      - name: target
        args: ["--liveness", "fail 7"]
        readinessProbe: {httpGet: {path: /readyz, port: 8080}, periodSeconds: 1}
  actions:
    - {name: ask liveness, when: Ready, exec: {command: [/usr/local/bin/podlife-target, probe, liveness]}}
    - {name: ask readiness, when: Ready, delaySeconds: 1, exec: {container: target, command: [/usr/local/bin/podlife-target, probe, readiness]}}
    - {name: no such binary, when: Ready, delaySeconds: 2, exec: {command: [/nonexistent]}}
  expectations:
    - probeHits: {probe: liveness, min: 1, max: 1}
"#,
        )
        .unwrap();
        let (code, out, err) = cli(&["run", file.to_str().unwrap(), "-n", &ns.name, "-o", "json"]);
        assert_eq!(code, Some(0), "{out}\n{err}");
        let status: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        let done: Vec<&str> = status["status"]["actionsDone"].as_array().unwrap().iter().filter_map(|a| a.as_str()).collect();
        assert_eq!(done.len(), 3, "{done:?}");
        assert!(done[0].contains("ask liveness: exec") && done[0].contains("-> exit 7"), "{done:?}");
        assert!(done[1].contains("-> exit 0"), "{done:?}");
        assert!(done[2].contains("no such binary") && !done[2].contains("exit 0"), "{done:?}");
    })
    .await;
}
