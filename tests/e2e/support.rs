//! Shared e2e plumbing: a namespace per test, waits with timeouts, pod-proxy calls, and a
//! dump of pod status, events and component logs into a folder when a test fails.
//!
//! These tests need the real cluster from `e2e/cluster/podlife-cluster up` (KUBECONFIG set).
//! They never skip: with no cluster, they fail and say so.

#![allow(dead_code)] // Each test file uses its own subset.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::Duration;

use futures::FutureExt;
use k8s_openapi::api::core::v1::{Event, Namespace, Pod};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::wait::{Condition, await_condition};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

pub const TARGET_IMAGE: &str = concat!("localhost/podlife-target:", env!("CARGO_PKG_VERSION"));

pub async fn client() -> Client {
    match Client::try_default().await {
        Ok(c) => c,
        Err(e) => panic!(
            "no Kubernetes cluster reachable ({e}). e2e tests need one: run e2e/test, or \
             `e2e/cluster/podlife-cluster up && eval \"$(e2e/cluster/podlife-cluster env)\"`"
        ),
    }
}

/// One test's namespace and client.
pub struct TestNs {
    pub client: Client,
    pub name: String,
}

impl TestNs {
    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.name)
    }

    pub async fn create_pod(&self, pod: serde_json::Value) -> Pod {
        let pod: Pod = serde_json::from_value(pod).expect("test pod is a valid Pod");
        self.pods().create(&PostParams::default(), &pod).await.expect("create pod")
    }

    /// Waits for `cond` on pod `name`, failing the test after `limit`.
    pub async fn wait_pod(&self, name: &str, what: &str, limit: Duration, cond: impl Condition<Pod>) -> Pod {
        match tokio::time::timeout(limit, await_condition(self.pods(), name, cond)).await {
            Ok(Ok(Some(pod))) => pod,
            Ok(Ok(None)) => panic!("pod {name} was deleted while waiting for {what}"),
            Ok(Err(e)) => panic!("watch failed while waiting for {what}: {e}"),
            Err(_) => panic!("timed out after {limit:?} waiting for pod {name}: {what}"),
        }
    }

    /// Calls the target's control API through the apiserver's pod proxy.
    pub async fn target_call(&self, pod: &str, port: u16, method: &str, path_and_query: &str) -> String {
        let uri = format!("/api/v1/namespaces/{}/pods/{pod}:{port}/proxy{path_and_query}", self.name);
        let req = http::Request::builder().method(method).uri(uri).body(Vec::new()).expect("request");
        self.client.request_text(req).await.unwrap_or_else(|e| panic!("{method} {path_and_query} on {pod}: {e}"))
    }
}

pub fn target_pod(name: &str, restart_policy: &str, extra_args: &[&str]) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"podlife.io/track": "true"}},
        "spec": {
            "restartPolicy": restart_policy,
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": "target", "image": TARGET_IMAGE, "imagePullPolicy": "Never",
                "args": extra_args,
                "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}, "periodSeconds": 1},
            }]
        }
    })
}

/// Runs `test` in a fresh namespace. On failure, dumps what happened and names the folder;
/// the namespace is deleted either way.
pub async fn with_namespace<F, Fut>(test_name: &str, test: F)
where
    F: FnOnce(TestNs) -> Fut,
    Fut: Future<Output = ()>,
{
    let client = client().await;
    let suffix = format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() & 0xff_ffff);
    let name = format!("e2e-{}-{suffix}", test_name.replace('_', "-"));
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name, "labels": {"podlife.io/e2e": "true"}}})).unwrap();
    namespaces.create(&PostParams::default(), &ns).await.expect("create test namespace");
    wait_for_default_service_account(&client, &name).await;
    let outcome = AssertUnwindSafe(test(TestNs { client: client.clone(), name: name.clone() })).catch_unwind().await;
    if outcome.is_err() {
        let dir = dump(&client, &name, test_name).await;
        eprintln!("e2e {test_name} failed; pod status, events and component logs are in {}", dir.display());
    }
    let _ = namespaces.delete(&name, &DeleteParams::background()).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn wait_for_default_service_account(client: &Client, ns: &str) {
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), ns);
    for _ in 0..100 {
        if sas.get_opt("default").await.ok().flatten().is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("namespace {ns} never got its default ServiceAccount (is the controller-manager running?)");
}

async fn dump(client: &Client, ns: &str, test_name: &str) -> PathBuf {
    let root = std::env::var_os("PODLIFE_E2E_ARTIFACTS").map_or_else(|| PathBuf::from("out/e2e-failures"), PathBuf::from);
    let dir = root.join(test_name);
    let _ = std::fs::create_dir_all(&dir);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    if let Ok(list) = pods.list(&ListParams::default()).await {
        let _ = std::fs::write(dir.join("pods.json"), serde_json::to_vec_pretty(&list.items).unwrap_or_default());
        for pod in &list.items {
            for c in pod.spec.iter().flat_map(|s| &s.containers) {
                for previous in [false, true] {
                    let lp = kube::api::LogParams { container: Some(c.name.clone()), previous, ..Default::default() };
                    if let Ok(log) = pods.logs(&pod.name_any(), &lp).await {
                        let suffix = if previous { ".previous" } else { "" };
                        let _ = std::fs::write(dir.join(format!("{}-{}{suffix}.log", pod.name_any(), c.name)), log);
                    }
                }
            }
        }
    }
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    if let Ok(list) = events.list(&ListParams::default()).await {
        let lines: Vec<String> = list
            .items
            .iter()
            .map(|e| {
                format!(
                    "{:?} {} {} x{}: {}",
                    e.last_timestamp.as_ref().map(|t| t.0),
                    e.involved_object.name.clone().unwrap_or_default(),
                    e.reason.clone().unwrap_or_default(),
                    e.count.unwrap_or(1),
                    e.message.clone().unwrap_or_default()
                )
            })
            .collect();
        let _ = std::fs::write(dir.join("events.txt"), lines.join("\n"));
    }
    if let Some(logs) = std::env::var_os("PODLIFE_CLUSTER_LOGS") {
        let target = dir.join("components");
        let _ = std::fs::create_dir_all(&target);
        if let Ok(entries) = std::fs::read_dir(logs) {
            for entry in entries.flatten() {
                let _ = std::fs::copy(entry.path(), target.join(entry.file_name()));
            }
        }
    }
    dir
}
