//! Workloads on the real cluster: reports tied to their Deployment or CronJob through the
//! owner chain the operator looks up, a rollout's pods on one workload report, `explain` on a
//! liveness-killed pod that ignores SIGTERM, and the per-workload metrics.

use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use podlife::crd::PodLifecycle;
use podlife::lifecycle::PodHistory;
use serde_json::json;

use crate::operator::{Operator, install_crds};
use crate::support::{TARGET_IMAGE, TestNs, with_namespace};
use podlife::crd::ProbeExperiment;

fn cli(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-podlife")).args(args).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The reports matching `selector`, polled until `done` holds for them.
async fn wait_reports(
    ns: &TestNs,
    selector: &str,
    what: &str,
    limit: Duration,
    done: impl Fn(&[PodLifecycle]) -> bool,
) -> Vec<PodLifecycle> {
    let api: Api<PodLifecycle> = Api::namespaced(ns.client.clone(), &ns.name);
    let start = Instant::now();
    loop {
        // A report is created before its first status is written: only those with one count.
        let items: Vec<PodLifecycle> = api
            .list(&ListParams::default().labels(selector))
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.status.is_some())
            .collect();
        if done(&items) {
            return items;
        }
        let seen: Vec<String> = items.iter().map(|r| format!("{} {:?}", r.spec.pod_name, r.status.as_ref().map(|h| &h.summary))).collect();
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for reports -l {selector}: {what}\nseen: {seen:#?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn history(r: &PodLifecycle) -> &PodHistory {
    r.status.as_ref().expect("a report with a status")
}

fn deployment(name: &str, replicas: i32, args: &[&str], probe: serde_json::Value) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            // One new pod at a time, none down before its replacement is Ready.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 3,
                    "containers": [{"name": "app", "image": TARGET_IMAGE, "imagePullPolicy": "Never", "args": args,
                        "readinessProbe": probe, "ports": [{"containerPort": 8080}]}]
                }
            }
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn a_deployment_rollout_is_one_workload_report_with_every_pod() {
    // Defects caught: a report without its Deployment (the ReplicaSet lookup missing or never
    // retried), labels that a selector does not find, a workload report that drops deleted
    // pods or does not tie a replacement to the pod it replaced.
    with_namespace("workload_rollout", |ns| async move {
        install_crds(&ns).await;
        let _op = Operator::start(&ns);
        let deployments: Api<Deployment> = Api::namespaced(ns.client.clone(), &ns.name);
        let probe = json!({"httpGet": {"path": "/readyz", "port": 8080}, "periodSeconds": 1});
        deployments.create(&PostParams::default(), &deployment("web", 2, &["--log-format", "text"], probe)).await.unwrap();
        let selector = "podlife.io/workload-kind=Deployment,podlife.io/workload=web";
        let two_ready = |items: &[PodLifecycle]| items.len() == 2 && items.iter().all(|r| history(r).summary.ready == "1/1");
        wait_reports(&ns, selector, "2 Ready pods labelled with their Deployment", Duration::from_secs(90), two_ready).await;
        // The rollout: a changed argument makes a new ReplicaSet; each old pod goes after its
        // replacement is Ready (maxUnavailable 0).
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "args": ["--log-format", "json"]}]}}}});
        deployments.patch("web", &PatchParams::default(), &Patch::Strategic(patch)).await.unwrap();
        let rolled = |items: &[PodLifecycle]| {
            let live: Vec<&PodHistory> = items.iter().map(history).filter(|h| h.deleted_at.is_none()).collect();
            items.len() == 4 && live.len() == 2 && live.iter().all(|h| h.summary.ready == "1/1")
        };
        let reports = wait_reports(&ns, selector, "4 pods, the 2 old ones deleted", Duration::from_secs(120), rolled).await;
        for r in &reports {
            let owners = history(r).owners.as_ref().expect("an owner chain");
            let chain: Vec<String> = owners.chain.iter().map(|l| format!("{}/{}", l.kind, l.name)).collect();
            assert!(
                owners.complete && chain.len() == 2 && chain[0].starts_with("ReplicaSet/web-") && chain[1] == "Deployment/web",
                "{chain:?}"
            );
            assert_eq!(history(r).summary.owner.as_deref(), Some("Deployment/web"));
            assert!(r.metadata.labels.as_ref().unwrap().contains_key("podlife.io/workload-uid"));
        }
        let replica_sets: std::collections::BTreeSet<&str> =
            reports.iter().map(|r| history(r).owners.as_ref().unwrap().chain[0].name.as_str()).collect();
        assert_eq!(replica_sets.len(), 2, "two ReplicaSets, one per revision: {replica_sets:?}");

        // The printer column, as kubectl shows it.
        let get = Command::new("kubectl").args(["get", "podlifecycles", "-n", &ns.name, "-l", "podlife.io/workload=web"]).output().unwrap();
        let table = String::from_utf8_lossy(&get.stdout);
        assert!(table.lines().next().unwrap_or_default().contains("OWNER"), "{table}");
        assert_eq!(table.matches("Deployment/web").count(), 4, "{table}");

        // The workload report: every pod on one axis, replacements named.
        let (code, text, err) = cli(&["report", "deployment/web", "-n", &ns.name, "--width", "100"]);
        assert_eq!(code, Some(0), "{err}");
        eprintln!("kubectl podlife report deployment/web:\n{text}");
        for r in &reports {
            assert!(text.contains(&r.spec.pod_name), "{} missing from:\n{text}", r.spec.pod_name);
        }
        assert!(text.contains("Deployment/web: 4 pods (2 live), 0 restarts, 2 replacements"), "{text}");
        assert_eq!(text.matches("created, replacing ").count(), 2, "{text}");
        let (code, json_text, _) = cli(&["report", "deploy/web", "-n", &ns.name, "-o", "json"]);
        assert_eq!(code, Some(0));
        let v: serde_json::Value = serde_json::from_str(&json_text).unwrap();
        assert_eq!(v["workload"]["rows"].as_array().unwrap().len(), 4);
        let (code, by_label, _) = cli(&["report", "-l", "podlife.io/workload=web", "-n", &ns.name]);
        assert_eq!(code, Some(0));
        assert!(by_label.contains("4 pods (2 live)"), "{by_label}");
        for format in ["svg", "html"] {
            let (code, picture, _) = cli(&["report", "deployment/web", "-n", &ns.name, "-o", format]);
            assert_eq!(code, Some(0));
            assert!(picture.contains("<svg"), "{format}");
        }
        let (code, _, err) = cli(&["report", "deployment/nothing-here", "-n", &ns.name]);
        assert_eq!(code, Some(2));
        assert!(err.contains("no PodLifecycle report of Deployment/nothing-here"), "{err}");
    })
    .await;
}

#[tokio::test]
async fn a_cronjobs_jobs_pods_are_tied_to_the_cronjob() {
    // The real CronJob controller makes the Job at the next minute: up to 60 s, then the pod
    // runs 2 s. Defect caught: a chain that stops at the Job (no CronJob lookup).
    with_namespace("workload_cronjob", |ns| async move {
        install_crds(&ns).await;
        let _op = Operator::start(&ns);
        let cronjobs: Api<CronJob> = Api::namespaced(ns.client.clone(), &ns.name);
        let cron: CronJob = serde_json::from_value(json!({
            "metadata": {"name": "nightly"},
            "spec": {"schedule": "* * * * *", "concurrencyPolicy": "Forbid", "jobTemplate": {"spec": {"backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "app", "image": TARGET_IMAGE, "imagePullPolicy": "Never", "args": ["--exit-after", "2s:0"]}]
            }}}}}
        }))
        .unwrap();
        cronjobs.create(&PostParams::default(), &cron).await.unwrap();
        let selector = "podlife.io/workload-kind=CronJob,podlife.io/workload=nightly";
        let succeeded = |items: &[PodLifecycle]| items.iter().any(|r| history(r).summary.phase.is_some_and(|p| p.as_str() == "Succeeded"));
        let reports = wait_reports(&ns, selector, "a pod of the CronJob's Job that Succeeded", Duration::from_secs(150), succeeded).await;
        let h = reports.iter().map(history).find(|h| h.summary.phase.is_some_and(|p| p.as_str() == "Succeeded")).unwrap();
        let chain: Vec<String> = h.owners.as_ref().unwrap().chain.iter().map(ToString::to_string).collect();
        assert_eq!(chain.len(), 2, "{chain:?}");
        assert!(chain[0].starts_with("Job/nightly-") && chain[1] == "CronJob/nightly", "{chain:?}");
        let job = chain[0].trim_start_matches("Job/").to_string();
        cronjobs.delete("nightly", &Default::default()).await.unwrap();
        let (code, text, err) = cli(&["report", "cronjob/nightly", "-n", &ns.name]);
        assert_eq!(code, Some(0), "{err}");
        assert!(text.contains(&h.pod), "{text}");
        // A Job under a CronJob is found by its place in the chain, not by the labels.
        let (code, text, err) = cli(&["report", &format!("job/{job}"), "-n", &ns.name]);
        assert_eq!(code, Some(0), "{err}");
        assert!(text.contains(&h.pod) && text.contains(&format!("Job/{job}: 1 pods")), "{text}");
    })
    .await;
}

#[tokio::test]
async fn explain_tells_a_liveness_kill_that_ignored_sigterm_and_metrics_count_it_per_workload() {
    // Liveness fails after 4 s (period 1 s, threshold 2); the target ignores SIGTERM, so the
    // kubelet SIGKILLs it when the 3 s grace period ends: exit 137.
    with_namespace("workload_explain", |ns| async move {
        install_crds(&ns).await;
        let op = Operator::start(&ns);
        let deployments: Api<Deployment> = Api::namespaced(ns.client.clone(), &ns.name);
        let mut d =
            deployment("stubborn", 1, &["--liveness", "ok for 4s, then fail", "--sigterm", "ignore"], json!({"tcpSocket": {"port": 8080}}));
        let container = &mut d.spec.as_mut().unwrap().template.spec.as_mut().unwrap().containers[0];
        container.liveness_probe = Some(
            serde_json::from_value(json!({"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1, "failureThreshold": 2}))
                .unwrap(),
        );
        deployments.create(&PostParams::default(), &d).await.unwrap();
        let selector = "podlife.io/workload=stubborn";
        let killed = |items: &[PodLifecycle]| {
            items.iter().any(|r| {
                let h = history(r);
                h.containers.first().is_some_and(|c| {
                    c.terminations.iter().any(|t| t.termination.exit_code == 137) && c.restarts.iter().any(|r| r.measured_seconds.is_some())
                })
            })
        };
        // First kill about 4 + 2 + 3 s after start; 90 s for a loaded CI node.
        let reports = wait_reports(&ns, selector, "a SIGKILLed run and its restart", Duration::from_secs(90), killed).await;
        let pod = reports[0].spec.pod_name.clone();
        let (code, text, err) = cli(&["explain", &pod, "-n", &ns.name]);
        assert_eq!(code, Some(0), "{err}");
        eprintln!("kubectl podlife explain {pod}:\n{text}");
        assert!(text.contains("(owned by Deployment/stubborn)"), "{text}");
        assert!(text.contains("The liveness probe failed: \"Liveness probe failed: HTTP probe failed with statuscode: 503\""), "{text}");
        assert!(text.contains("Then the kubelet killed the container"), "{text}");
        assert!(text.contains("SIGTERM did not stop it"), "{text}");
        // The grace period is 3 s, plus the kill's own latency (under 1 s); Killing and
        // finishedAt are truncated to the second, which shows 2..5 s (4 s when tried here).
        let grace = ["2s", "3s", "4s", "5s"].iter().any(|g| text.contains(&format!("SIGKILL ended it {g} after the kill began")));
        assert!(grace, "SIGKILL 3 s (±1 s) after Killing: {text}");
        assert!(text.contains("exit 137"), "{text}");
        // The first restart is immediate; startedAt's truncation can show it as 1 s.
        let first_restart = ["immediately", "after 1s"]
            .iter()
            .any(|w| text.contains(&format!("The kubelet restarted it {w}, the first step of the back-off")));
        assert!(first_restart, "{text}");
        let (code, json_text, _) = cli(&["explain", &pod, "-n", &ns.name, "-o", "json"]);
        assert_eq!(code, Some(0));
        let v: serde_json::Value = serde_json::from_str(&json_text).unwrap();
        assert!(!v["runs"].as_array().unwrap().is_empty());

        // Scraped from the operator's /metrics: by workload, no pod names.
        let labels = format!(r#"namespace="{}",workload_kind="Deployment",workload="stubborn",container="app""#, ns.name);
        let start = Instant::now();
        let metrics = loop {
            let m = op.metrics().await;
            if m.contains(&format!("podlife_workload_restarts_total{{{labels}}}")) || start.elapsed() > Duration::from_secs(10) {
                break m;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let value = |name: &str| -> Option<f64> {
            metrics.lines().find(|l| l.starts_with(&format!("{name}{{{labels}"))).and_then(|l| l.rsplit(' ').next()?.parse().ok())
        };
        let ours: Vec<&str> = metrics.lines().filter(|l| l.starts_with("podlife_workload_") && l.contains("stubborn")).collect();
        eprintln!("the operator's /metrics for Deployment/stubborn:\n{}", ours.join("\n"));
        assert!(value("podlife_workload_restarts_total").is_some_and(|v| v >= 1.0), "{metrics}");
        assert!(metrics.contains(&format!(r#"podlife_workload_terminations_total{{{labels},reason="Error"}}"#)), "{metrics}");
        assert!(value("podlife_workload_backoff_step").is_some_and(|v| v >= 1.0), "{metrics}");
        assert!(!metrics.contains(&pod), "no pod names in metric labels");
    })
    .await;
}

#[tokio::test]
async fn a_prestop_sleep_covers_endpoint_removal_and_without_it_sigterm_races_the_endpoint() {
    // The shipped examples, on the real cluster: a rollout of a 2-replica Deployment behind a
    // Service, with and without a 5 s preStop sleep. The operator watches the EndpointSlices;
    // each old pod's target writes its SIGTERM time into its termination message.
    with_namespace("workload_endpoints", |ns| async move {
        install_crds(&ns).await;
        let _op = Operator::start_with(&ns, &["--experiments"]);
        let (code, out, err) = cli(&[
            "run",
            "manifests/examples/workloads/prestop-covers-endpoints.yaml",
            "manifests/examples/workloads/no-prestop-endpoint-race.yaml",
            "-n",
            &ns.name,
        ]);
        eprintln!("kubectl podlife run manifests/examples/workloads/*.yaml:\n{out}");
        assert_eq!(code, Some(0), "{out}\n{err}");
        let api: Api<ProbeExperiment> = Api::namespaced(ns.client.clone(), &ns.name);
        let lags = |name: &str| {
            let api = api.clone();
            let name = name.to_string();
            async move {
                let e = api.get(&name).await.unwrap();
                let evidence = e.status.unwrap().evidence.unwrap();
                podlife::harness::rollout::endpoint_lags(&evidence.pods, evidence.deployment.as_ref().unwrap())
            }
        };
        // With the sleep: the endpoint leaves when the deletion starts, the SIGTERM 5 s later.
        // The EndpointSlice controller and the operator's watch take well under a second (4959
        // and 4974 ms before, measured here): at least 4 s before.
        let slept = lags("prestop-covers-endpoints").await;
        assert_eq!(slept.len(), 2, "{slept:?}");
        assert!(slept.iter().all(|(_, l)| l.is_some_and(|ms| ms <= -4000)), "{slept:?}");
        // Without it the two race; measured here 22 and 36 ms after the SIGTERM.
        let raced = lags("no-prestop-endpoint-race").await;
        assert_eq!(raced.len(), 2, "{raced:?}");
        assert!(raced.iter().all(|(_, l)| l.is_some_and(|ms| ms.abs() <= 2000)), "{raced:?}");
        eprintln!("endpoint leaving minus SIGTERM (ms): with a 5 s preStop sleep {slept:?}; without {raced:?}");
        assert!(out.contains("endpoint no longer ready") && out.contains("SIGTERM (the target's clock)"), "the timeline marks both: {out}");
    })
    .await;
}
