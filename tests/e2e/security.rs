//! podlife on a shared cluster, against the real apiserver and kubelet: what a tenant who may
//! only create ProbeExperiments in its own namespace can get done through the operator's
//! identity, and what the chart's RBAC grants.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use podlife::crd::ProbeExperiment;
use podlife::crd::experiment::ExperimentPhase;
use serde_json::json;

use crate::operator::{Operator, install_crds};
use crate::support::{TARGET_IMAGE, TestNs, with_namespace};

/// `kubectl` as `user` (impersonated by the admin), with `stdin`; (success, stdout + stderr).
fn kubectl_as(user: Option<&str>, args: &[&str], stdin: &str) -> (bool, String) {
    let mut cmd = Command::new("kubectl");
    if let Some(user) = user {
        cmd.arg(format!("--as={user}"));
    }
    let mut child = cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("kubectl on PATH");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// A ServiceAccount in `ns` that may only create, read and delete ProbeExperiments there.
fn tenant(ns: &str) -> String {
    let rbac = format!(
        r"apiVersion: v1
kind: ServiceAccount
metadata: {{name: tenant, namespace: {ns}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: experiments-only, namespace: {ns}}}
rules:
  - {{apiGroups: [podlife.io], resources: [probeexperiments], verbs: [create, get, list, watch, delete]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: tenant, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: experiments-only}}
subjects: [{{kind: ServiceAccount, name: tenant, namespace: {ns}}}]
"
    );
    let (ok, out) = kubectl_as(None, &["apply", "-f", "-"], &rbac);
    assert!(ok, "{out}");
    format!("system:serviceaccount:{ns}:tenant")
}

fn experiment(name: &str, pod: &serde_json::Value) -> String {
    serde_json::to_string(&json!({
        "apiVersion": "podlife.io/v1alpha1", "kind": "ProbeExperiment", "metadata": {"name": name},
        "spec": {"durationSeconds": 4, "timeoutSeconds": 60, "pod": pod, "expectations": [{"finalPhase": "Running"}]},
    }))
    .unwrap()
}

/// The experiment once its phase is final (or whatever it is after `limit`).
async fn finished(api: &Api<ProbeExperiment>, name: &str, limit: Duration) -> ProbeExperiment {
    let start = Instant::now();
    loop {
        let e = api.get(name).await.unwrap();
        if e.status.as_ref().is_some_and(|s| s.phase.is_final()) || start.elapsed() > limit {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn reason(e: &ProbeExperiment) -> String {
    e.status.as_ref().and_then(|s| s.reason.clone()).unwrap_or_default()
}

#[tokio::test]
async fn a_tenant_cannot_get_a_privileged_or_host_path_pod_and_calls_need_the_token() {
    // Before: spec.pod was created as written, under the operator's identity, and the target's
    // control API answered anyone who could reach it.
    with_namespace("security_pod_policy", |ns| async move {
        install_crds(&ns).await;
        let _op = Operator::start_with(&ns, &["--experiments"]);
        let user = tenant(&ns.name);
        let app = |extra: serde_json::Value| {
            let mut c = json!({"name": "target", "image": TARGET_IMAGE, "imagePullPolicy": "Never"});
            c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            c
        };
        let cases = [
            (
                "privileged",
                json!({"containers": [app(json!({"securityContext": {"privileged": true}}))]}),
                "containers[0].securityContext.privileged",
            ),
            (
                "host-root",
                json!({"containers": [app(json!({}))], "volumes": [{"name": "root", "hostPath": {"path": "/"}}]}),
                "volumes[0].hostPath",
            ),
            ("host-network", json!({"containers": [app(json!({}))], "hostNetwork": true}), "hostNetwork"),
            ("other-sa", json!({"containers": [app(json!({}))], "serviceAccountName": "tenant"}), "serviceAccountName"),
            ("sa-bypass", json!({"containers": [app(json!({}))], "serviceAccountName": "", "serviceAccount": "tenant"}), "serviceAccount"),
            (
                "reads-token",
                json!({"containers": [app(json!({"env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "pe-token-x", "key": "token"}}}]}))]}),
                "containers[0].env[0].valueFrom.secretKeyRef",
            ),
        ];
        for (name, pod, _) in &cases {
            let (ok, out) = kubectl_as(Some(&user), &["-n", &ns.name, "create", "-f", "-"], &experiment(name, pod));
            assert!(ok, "the tenant may create experiments: {out}");
        }
        // A harmless one alongside: it runs, and its target refuses calls without the token.
        let (ok, out) = kubectl_as(
            Some(&user),
            &["-n", &ns.name, "create", "-f", "-"],
            &experiment("harmless", &json!({"containers": [app(json!({}))]})),
        );
        assert!(ok, "{out}");
        let api: Api<ProbeExperiment> = Api::namespaced(ns.client.clone(), &ns.name);
        for (name, _, field) in &cases {
            let e = finished(&api, name, Duration::from_secs(30)).await;
            assert_eq!(e.status.as_ref().map(|s| s.phase), Some(ExperimentPhase::Error), "{name}: {:?}", e.status);
            assert!(reason(&e).starts_with(&format!("spec.pod.{field} ")), "{name}: {}", reason(&e));
        }
        let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
        let mut unauthorised = None;
        let start = Instant::now();
        while unauthorised.is_none() && start.elapsed() < Duration::from_secs(30) {
            if pods.get_opt("pe-harmless").await.unwrap().is_some_and(|p| p.status.and_then(|s| s.pod_ip).is_some()) {
                let uri = format!("/api/v1/namespaces/{}/pods/pe-harmless:9090/proxy/hits", ns.name);
                let req = http::Request::get(uri).body(kube::client::Body::empty()).unwrap();
                // 503 while the target is not listening yet; then the target's own answer.
                if let Ok(response) = ns.client.send(req).await
                    && response.status() != http::StatusCode::SERVICE_UNAVAILABLE
                {
                    unauthorised = Some(response.status().as_u16());
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert_eq!(unauthorised, Some(401), "a call without the experiment's token is refused");
        let harmless = finished(&api, "harmless", Duration::from_secs(40)).await;
        assert_eq!(harmless.status.as_ref().map(|s| s.phase), Some(ExperimentPhase::Passed), "{:?}", harmless.status);
        let names: Vec<String> = pods.list(&ListParams::default()).await.unwrap().items.iter().map(ResourceExt::name_any).collect();
        assert!(names.iter().all(|n| n == "pe-harmless"), "no refused pod was created: {names:?}");
    })
    .await;
}

#[tokio::test]
async fn a_tenant_cannot_reach_another_namespace() {
    // Before: an experiment outside the operator's namespaces waited forever, unexplained.
    with_namespace("security_scope", |ns| async move {
        install_crds(&ns).await;
        let other = format!("{}-other", ns.name);
        let namespaces: Api<Namespace> = Api::all(ns.client.clone());
        namespaces.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": other}})).unwrap()).await.unwrap();
        struct Gone(Api<Namespace>, String);
        impl Drop for Gone {
            fn drop(&mut self) {
                let (api, name) = (self.0.clone(), self.1.clone());
                tokio::spawn(async move { api.delete(&name, &DeleteParams::background()).await });
            }
        }
        let _gone = Gone(namespaces.clone(), other.clone());
        let _op = Operator::start_with(&ns, &["--experiments"]);
        let user = tenant(&ns.name);
        let pod = json!({"containers": [{"name": "target", "image": TARGET_IMAGE, "imagePullPolicy": "Never"}]});
        let (ok, out) = kubectl_as(Some(&user), &["-n", &other, "create", "-f", "-"], &experiment("elsewhere", &pod));
        assert!(!ok && out.contains("forbidden"), "the tenant's rights end at its namespace: {out}");
        // Someone allowed there creates one: the operator, which covers only the tenant's
        // namespace, ends it in Error with the reason (after 10 s left to a covering operator).
        let (ok, out) = kubectl_as(None, &["-n", &other, "create", "-f", "-"], &experiment("elsewhere", &pod));
        assert!(ok, "{out}");
        let api: Api<ProbeExperiment> = Api::namespaced(ns.client.clone(), &other);
        let e = finished(&api, "elsewhere", Duration::from_secs(25)).await;
        assert_eq!(e.status.as_ref().map(|s| s.phase), Some(ExperimentPhase::Error), "{:?}", e.status);
        assert!(
            reason(&e).contains(&format!("no podlife operator runs experiments in namespace {other}")) && reason(&e).contains(&ns.name),
            "{}",
            reason(&e)
        );
        let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &other);
        assert!(pods.list(&ListParams::default()).await.unwrap().items.is_empty(), "nothing was created there");
    })
    .await;
}

#[tokio::test]
async fn a_tenant_cannot_make_podlife_delete_a_pod_it_does_not_own() {
    // Before: any existing pod named pe-<experiment> was deleted to make room.
    with_namespace("security_owner", |ns| async move {
        install_crds(&ns).await;
        let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
        let victim: Pod = serde_json::from_value(crate::support::target_pod("pe-victim", "Always", &[])).unwrap();
        let uid = pods.create(&PostParams::default(), &victim).await.unwrap().uid();
        let _op = Operator::start_with(&ns, &["--experiments"]);
        let user = tenant(&ns.name);
        let pod = json!({"containers": [{"name": "target", "image": TARGET_IMAGE, "imagePullPolicy": "Never"}]});
        let (ok, out) = kubectl_as(Some(&user), &["-n", &ns.name, "create", "-f", "-"], &experiment("victim", &pod));
        assert!(ok, "{out}");
        let api: Api<ProbeExperiment> = Api::namespaced(ns.client.clone(), &ns.name);
        let e = finished(&api, "victim", Duration::from_secs(30)).await;
        assert_eq!(e.status.as_ref().map(|s| s.phase), Some(ExperimentPhase::Error), "{:?}", e.status);
        assert!(reason(&e).contains("pod pe-victim already exists and is not owned by a ProbeExperiment named victim"), "{}", reason(&e));
        let still = pods.get_opt("pe-victim").await.unwrap();
        assert_eq!(still.as_ref().and_then(|p| p.uid()), uid, "the pod is still there, the same one");
        assert!(still.unwrap().metadata.deletion_timestamp.is_none(), "and not being deleted");
    })
    .await;
}

/// The chart's RBAC for one set of values, applied under a unique release name, removed on drop.
struct ChartRbac {
    manifest: String,
    release: String,
    namespace: String,
}

impl ChartRbac {
    fn apply(ns: &TestNs, kube_version: &str, tag: &str, values: &[&str]) -> ChartRbac {
        let release = format!("podlife-rbac-{tag}-{}", ns.name.rsplit('-').next().unwrap());
        let mut args = vec!["template", release.as_str(), "charts/podlife", "-n", ns.name.as_str(), "--kube-version", kube_version];
        args.extend(["--show-only", "templates/rbac.yaml"]);
        args.extend(["--show-only", "templates/serviceaccount.yaml"]);
        for v in values {
            args.extend(["--set", v]);
        }
        let out = Command::new("helm").args(&args).output().expect("helm on PATH");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let manifest = String::from_utf8(out.stdout).unwrap();
        let (ok, out) = kubectl_as(None, &["apply", "-n", &ns.name, "-f", "-"], &manifest);
        assert!(ok, "{out}");
        ChartRbac { manifest, release, namespace: ns.name.clone() }
    }

    fn user(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.release)
    }

    /// What `kubectl auth can-i --list` grants in `namespace`, as (resource, verb) pairs.
    fn grants(&self, namespace: &str) -> std::collections::BTreeSet<(String, String)> {
        can_i_list(&self.user(), namespace)
    }
}

impl Drop for ChartRbac {
    fn drop(&mut self) {
        let _ = kubectl_as(None, &["delete", "-n", &self.namespace, "--ignore-not-found", "--wait=false", "-f", "-"], &self.manifest);
    }
}

/// `kubectl auth can-i --list` as `user` in `namespace`, as (resource, verb) pairs.
fn can_i_list(user: &str, namespace: &str) -> std::collections::BTreeSet<(String, String)> {
    let (ok, out) = kubectl_as(None, &["auth", "can-i", "--list", "-n", namespace, &format!("--as={user}")], "");
    assert!(ok, "{out}");
    let mut grants = std::collections::BTreeSet::new();
    for line in out.lines().skip(1) {
        // "pods   []   []   [get list watch]": resource, non-resource URLs, names, verbs.
        let Some(resource) = line.split_whitespace().next() else { continue };
        let Some(verbs) = line.rsplit_once('[').map(|(_, v)| v.trim_end_matches(']')) else { continue };
        for verb in verbs.split_whitespace() {
            grants.insert((resource.to_string(), verb.to_string()));
        }
    }
    grants
}

fn pairs(list: &[(&str, &[&str])]) -> std::collections::BTreeSet<(String, String)> {
    list.iter().flat_map(|(r, verbs)| verbs.iter().map(move |v| ((*r).to_string(), (*v).to_string()))).collect()
}

#[tokio::test]
async fn the_charts_rbac_is_the_documented_minimum() {
    // Before: the ClusterRoleBinding granted pods create/delete, pods/exec, pods/proxy and Jobs
    // in every namespace, even with selection.namespaces set.
    with_namespace("security_rbac", |ns| async move {
        // What every authenticated identity gets (discovery, self reviews): not the chart's.
        let baseline = can_i_list(&format!("system:serviceaccount:{}:nobody", ns.name), &ns.name);
        let without = |grants: std::collections::BTreeSet<(String, String)>| -> std::collections::BTreeSet<(String, String)> {
            grants.difference(&baseline).cloned().collect()
        };
        const READ: &[&str] = &["get", "list", "watch"];
        const OWN: &[&str] = &["get", "list", "watch", "create", "update", "patch", "delete"];
        // The minimum documented in the README ("What the operator may do").
        let observe = pairs(&[
            ("pods", READ),
            ("events", READ),
            ("replicasets.apps", &["get"]),
            ("jobs.batch", &["get"]),
            ("*.podlife.io", OWN),
            ("leases.coordination.k8s.io", &["get", "create", "update"]),
        ]);
        let experiments = pairs(&[
            ("pods", &["get", "list", "watch", "create", "delete"]),
            ("events", READ),
            ("replicasets.apps", &["get"]),
            ("*.podlife.io", OWN),
            ("pods/proxy", &["get", "create", "update", "delete"]),
            ("pods/exec", &["get", "create"]),
            ("jobs.batch", &["get", "create", "delete"]),
            ("secrets", &["create"]),
            ("deployments.apps", &["get", "create", "patch", "delete"]),
            ("services", &["get", "create", "delete"]),
            ("endpointslices.discovery.k8s.io", &["list", "watch"]),
            ("leases.coordination.k8s.io", &["get", "create", "update"]),
        ]);
        let elsewhere_read = pairs(&[("probeexperiments.podlife.io", READ), ("probeexperiments.podlife.io/status", &["patch"])]);
        let covered = format!("selection.namespaces={{{}}}", ns.name);
        let version = ns.client.apiserver_version().await.unwrap().git_version;

        let cluster_wide = ChartRbac::apply(&ns, &version, "cw", &[]);
        assert_eq!(without(cluster_wide.grants(&ns.name)), observe, "observing cluster-wide");
        assert_eq!(
            without(cluster_wide.grants("kube-system")),
            without(pairs(&[
                ("pods", READ),
                ("events", READ),
                ("replicasets.apps", &["get"]),
                ("jobs.batch", &["get"]),
                ("*.podlife.io", OWN)
            ]))
        );
        drop(cluster_wide);

        // Sharded: the Leases of the members and shards are listed each round, and a member
        // that left is deleted; nothing else changes.
        let sharded = ChartRbac::apply(&ns, &version, "sh", &["sharding.enabled=true", "leaderElection.enabled=false"]);
        let lease_verbs: &[&str] = &["get", "list", "create", "update", "delete"];
        let observe_sharded: std::collections::BTreeSet<(String, String)> = observe
            .iter()
            .filter(|(r, _)| r != "leases.coordination.k8s.io")
            .cloned()
            .chain(pairs(&[("leases.coordination.k8s.io", lease_verbs)]))
            .collect();
        assert_eq!(without(sharded.grants(&ns.name)), observe_sharded, "sharded");
        drop(sharded);

        let cluster_wide = ChartRbac::apply(&ns, &version, "cwx", &["experiments.enabled=true"]);
        assert_eq!(without(cluster_wide.grants(&ns.name)), experiments, "experiments cluster-wide");
        drop(cluster_wide);

        let scoped = ChartRbac::apply(&ns, &version, "ns", &[&covered]);
        assert_eq!(without(scoped.grants(&ns.name)), observe, "observing one namespace");
        assert!(without(scoped.grants("kube-system")).is_empty(), "nothing elsewhere: {:?}", without(scoped.grants("kube-system")));
        drop(scoped);

        let scoped = ChartRbac::apply(&ns, &version, "nsx", &[&covered, "experiments.enabled=true"]);
        assert_eq!(without(scoped.grants(&ns.name)), experiments.union(&elsewhere_read).cloned().collect(), "experiments in one namespace");
        assert_eq!(without(scoped.grants("kube-system")), elsewhere_read, "elsewhere only reading experiments (to refuse them)");
        let (_, answer) =
            kubectl_as(None, &["auth", "can-i", "create", "pods/exec", "-n", "kube-system", &format!("--as={}", scoped.user())], "");
        assert_eq!(answer.trim(), "no");
    })
    .await;
}
