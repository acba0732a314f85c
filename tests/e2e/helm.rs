//! The Helm chart on the real cluster: lint, install into a namespace that enforces the
//! "restricted" Pod Security level, the operator running in-cluster, upgrade, uninstall.

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use podlife::crd::PodLifecycle;
use serde_json::json;

use crate::operator::wait_report;
use crate::support::{TARGET_IMAGE, with_namespace};

fn helm(args: &[&str]) -> (bool, String) {
    let bin = std::env::var("PODLIFE_HELM").unwrap_or_else(|_| "helm".into());
    let out = Command::new(&bin).args(args).output().unwrap_or_else(|e| panic!("cannot run {bin}: {e} (e2e/test puts helm on PATH)"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Uninstalls the release even when the test fails, so a rerun does not trip over it.
struct Release {
    name: String,
    namespace: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = helm(&["uninstall", &self.name, "-n", &self.namespace, "--ignore-not-found"]);
    }
}

fn restarts(h: &podlife::lifecycle::PodHistory) -> i32 {
    h.containers.first().map_or(0, |c| c.restart_count)
}

#[tokio::test]
async fn helm_installs_upgrades_and_uninstalls_the_in_cluster_operator() {
    with_namespace("helm", |ns| async move {
        let (ok, out) = helm(&["lint", "charts/podlife"]);
        assert!(ok, "helm lint: {out}");
        let (ok, out) = helm(&["lint", "charts/podlife", "--set", "backoffProfile=fast"]);
        assert!(!ok && out.contains("backoffProfile"), "bad values fail with a clear message: {out}");
        // The wake-up pause: `--set coalesceWakeups=0` (an integer) is the documented way to turn
        // it off, and a pause the operator would refuse (over 100ms) must fail here, not crash-loop.
        for (value, valid) in [("0", true), ("10ms", true), ("100ms", true), ("101ms", false), ("1s", false), ("0.0ms", false)] {
            let (ok, out) = helm(&["lint", "charts/podlife", "--set", &format!("coalesceWakeups={value}")]);
            assert_eq!(ok, valid, "coalesceWakeups={value}: {out}");
            assert!(valid || out.contains("coalesceWakeups"), "coalesceWakeups={value} should be named: {out}");
        }

        let release_ns = format!("{}-sys", ns.name);
        let namespaces: Api<Namespace> = Api::all(ns.client.clone());
        let restricted: Namespace = serde_json::from_value(json!({"metadata": {"name": release_ns, "labels": {
            "pod-security.kubernetes.io/enforce": "restricted", "podlife.io/e2e": "true"}}}))
        .unwrap();
        namespaces.create(&PostParams::default(), &restricted).await.unwrap();
        let selection = format!("selection.namespaces={{{}}}", ns.name);
        // Unique per run: the chart's ClusterRole is cluster-scoped and named after the release.
        let release = format!("podlife-{}", ns.name.rsplit('-').next().unwrap());
        let _guard = Release { name: release.clone(), namespace: release_ns.clone() };
        let install = [
            "install",
            release.as_str(),
            "charts/podlife",
            "-n",
            &release_ns,
            "--set",
            "image.pullPolicy=Never",
            "--set",
            &selection,
            "--set",
            "logging.format=text",
            "--set",
            "writeWindow=500ms",
            "--set",
            "experiments.enabled=true",
            "--wait",
            "--timeout",
            "120s",
        ];
        let (ok, out) = helm(&install);
        assert!(ok, "helm install: {out}");
        assert!(out.contains("kubectl get podlifecycles"), "NOTES tell how to start: {out}");

        // In-cluster: the operator pod runs in the restricted namespace and reaches the
        // apiserver through the `kubernetes` Service; a tracked pod gets its report.
        let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &release_ns);
        let operator_pods = pods.list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={release}"))).await.unwrap();
        assert_eq!(operator_pods.items.len(), 1);
        let env_host = operator_pods.items[0].spec.as_ref().unwrap().containers[0].env.clone().unwrap_or_default();
        assert!(!env_host.iter().any(|e| e.name == "KUBERNETES_SERVICE_HOST"), "no apiserver shortcut: it uses the Service");
        let tracked = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "tracked", "labels": {"podlife.io/track": "true"}},
            "spec": {"terminationGracePeriodSeconds": 5, "containers": [{"name": "app", "image": TARGET_IMAGE, "imagePullPolicy": "Never",
                "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}, "periodSeconds": 1}}]}
        });
        ns.create_pod(tracked).await;
        wait_report(&ns, "tracked", "Ready via the in-cluster operator", Duration::from_secs(90), |h| h.summary.ready == "1/1").await;
        ns.target_call("tracked", 9090, "POST", "/quitquitquit?code=2").await;
        let before = wait_report(&ns, "tracked", "restart 1", Duration::from_secs(60), |h| restarts(h) == 1).await;

        // ProbeExperiments pass through the installed operator with the chart's least-privilege
        // RBAC: an exec action (pods/exec) and a Job experiment (batch jobs).
        let out = Command::new(env!("CARGO_BIN_EXE_kubectl-podlife"))
            .args(["run", "manifests/examples/experiments/readiness-exec-never-ready.yaml"])
            .args(["manifests/conformance/job-completions-parallelism.yaml", "-n", &ns.name, "-o", "json"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("ask readiness by exec: exec") && stdout.contains("-> exit 1"), "the exec action ran: {stdout}");

        // Upgrade with changed values: the operator rolls, the report keeps its history.
        let mut upgrade = install.to_vec();
        upgrade[0] = "upgrade";
        upgrade.extend(["--set", "replicaCount=2", "--set", "logging.filter=debug"]);
        let (ok, out) = helm(&upgrade);
        assert!(ok, "helm upgrade: {out}");
        let deployments: Api<Deployment> = Api::namespaced(ns.client.clone(), &release_ns);
        let d = deployments.get(&release).await.unwrap();
        assert_eq!(d.spec.unwrap().replicas, Some(2));
        ns.wait_pod("tracked", "Ready again", Duration::from_secs(60), |p: Option<&Pod>| {
            p.and_then(|p| p.status.as_ref()?.container_statuses.as_ref()?.first().map(|c| c.ready)).unwrap_or(false)
        })
        .await;
        ns.target_call("tracked", 9090, "POST", "/quitquitquit?code=3").await;
        let after = wait_report(&ns, "tracked", "restart 2 after the upgrade", Duration::from_secs(90), |h| restarts(h) == 2).await;
        let runs: Vec<i32> = after.containers[0].terminations.iter().map(|t| t.termination.exit_code).collect();
        assert_eq!(runs, [2, 3], "both terminations, before and after the upgrade");
        assert_eq!(after.phases.front(), before.phases.front(), "history from before the upgrade is kept");

        // Uninstall: no podlife workload left; the CRD stays, as Helm does for crds/.
        let (ok, out) = helm(&["uninstall", &release, "-n", &release_ns, "--wait", "--timeout", "60s"]);
        assert!(ok, "helm uninstall: {out}");
        assert!(deployments.get_opt(&release).await.unwrap().is_none());
        let left = pods.list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={release}"))).await.unwrap();
        assert!(left.items.iter().all(|p| p.metadata.deletion_timestamp.is_some()), "operator pods are going");
        // With selection.namespaces its rights were a Role in the namespace: gone with it.
        let roles: Api<Role> = Api::namespaced(ns.client.clone(), &ns.name);
        assert!(roles.get_opt(&release).await.unwrap().is_none());
        let cluster_roles: Api<ClusterRole> = Api::all(ns.client.clone());
        assert!(cluster_roles.get_opt(&format!("{release}-experiments-elsewhere")).await.unwrap().is_none());
        let crds: Api<CustomResourceDefinition> = Api::all(ns.client.clone());
        assert!(crds.get_opt("podlifecycles.podlife.io").await.unwrap().is_some());
        // The README's uninstall story: the history outlives the recorder, until deleted.
        let reports: Api<PodLifecycle> = Api::namespaced(ns.client.clone(), &ns.name);
        assert!(!reports.list(&ListParams::default()).await.unwrap().items.is_empty(), "reports are kept after the uninstall");
        let out = Command::new("kubectl").args(["delete", "podlifecycles,probeexperiments", "--all", "-n", &ns.name]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(reports.list(&ListParams::default()).await.unwrap().items.is_empty(), "and gone once deleted");
        let _ = namespaces.delete(&release_ns, &DeleteParams::background()).await;
    })
    .await;
}
