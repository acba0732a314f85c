//! The workload the faults hit: podlife-target pods in two namespaces that keep the kubelet
//! busy, so that every fault lands while restarts are under way.
//!
//! Per namespace: two crash loops (runs of 4 s and 7 s), a liveness kill (healthy for 15 s,
//! then failing), a readiness flap (8 s ready, 8 s not), and a pod whose native sidecar is
//! told to `/quitquitquit` every 20 s. Every 40 s the oldest pod is deleted and replaced by a
//! new one of the same kind, so there are always young back-off curves and deletions, and no
//! pod lives long enough (about 3.5 minutes; a flap fills its 64 ready flips in 8.5) to fill its
//! report's rings: the suite tests that nothing is lost, not the bounds that drop the oldest
//! entries on purpose.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

pub const TARGET_IMAGE: &str = concat!("localhost/podlife-target:", env!("CARGO_PKG_VERSION"));

/// The kinds of pod in each namespace.
const KINDS: [&str; 5] = ["crash-4s", "crash-7s", "liveness", "flap", "sidecar"];

pub struct Workload {
    client: Client,
    namespaces: Vec<String>,
    label: (String, String),
    generation: Arc<AtomicU32>,
    churn: Option<tokio::task::JoinHandle<()>>,
}

fn target(name: &str, args: &[&str]) -> Value {
    json!({"name": name, "image": TARGET_IMAGE, "imagePullPolicy": "Never", "args": args})
}

impl Workload {
    pub fn new(client: &Client, namespaces: &[String], label: (&str, &str)) -> Workload {
        Workload {
            client: client.clone(),
            namespaces: namespaces.to_vec(),
            label: (label.0.into(), label.1.into()),
            generation: Arc::new(AtomicU32::new(0)),
            churn: None,
        }
    }

    fn pod(&self, name: &str, spec: Value) -> Result<Pod, String> {
        let mut spec = spec;
        spec["terminationGracePeriodSeconds"] = json!(2);
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {self.label.0.clone(): self.label.1.clone()}},
            "spec": spec,
        }))
        .map_err(|e| e.to_string())
    }

    /// One pod of a kind: `crash-4s`, `crash-7s`, `liveness`, `flap` or `sidecar`.
    fn of_kind(&self, kind: &str) -> Result<Pod, String> {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst);
        let name = format!("{kind}-{generation}");
        let spec = match kind {
            "crash-4s" => json!({"containers": [target("app", &["--exit-after", "4s:1"])]}),
            "crash-7s" => json!({"containers": [target("app", &["--exit-after", "7s:2"])]}),
            "liveness" => {
                let mut live = target("app", &["--liveness", "ok for 15s, then fail"]);
                live["livenessProbe"] = json!({"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1, "failureThreshold": 3});
                json!({"containers": [live]})
            }
            "flap" => {
                let mut flap = target("app", &["--readiness", "ok for 8s, fail for 8s, repeat"]);
                flap["readinessProbe"] = json!({"httpGet": {"path": "/readyz", "port": 8080}, "periodSeconds": 1, "failureThreshold": 1});
                json!({"containers": [flap]})
            }
            "sidecar" => {
                let mut sidecar =
                    target("sidecar", &["--probe-port", "8180", "--control-port", "9190", "--grpc-port", "9100", "--tcp-ports", "0,0,0"]);
                sidecar["restartPolicy"] = json!("Always");
                sidecar["readinessProbe"] = json!({"httpGet": {"path": "/readyz", "port": 8180}, "periodSeconds": 1});
                json!({"initContainers": [sidecar], "containers": [target("app", &[])]})
            }
            other => return Err(format!("no workload kind {other}")),
        };
        let mut pod = self.pod(&name, spec)?;
        pod.labels_mut().insert("podlife.io/chaos-role".into(), kind.into());
        Ok(pod)
    }

    /// Creates every pod, then keeps the churn going in the background.
    pub async fn start(&mut self) -> Result<(), String> {
        for ns in &self.namespaces {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
            for kind in KINDS {
                let pod = self.of_kind(kind)?;
                api.create(&PostParams::default(), &pod).await.map_err(|e| format!("create {} in {ns}: {e}", pod.name_any()))?;
            }
        }
        let this = Workload {
            churn: None,
            client: self.client.clone(),
            namespaces: self.namespaces.clone(),
            label: self.label.clone(),
            generation: Arc::clone(&self.generation),
        };
        self.churn = Some(tokio::spawn(async move { this.churn().await }));
        Ok(())
    }

    /// Best effort: during a fault the apiserver may be down, and that is fine.
    async fn churn(self) {
        let mut tick = 0u64;
        loop {
            tokio::time::sleep(Duration::from_secs(20)).await;
            tick += 1;
            for ns in &self.namespaces {
                let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
                let sidecars =
                    api.list(&ListParams::default().labels("podlife.io/chaos-role=sidecar")).await.map(|l| l.items).unwrap_or_default();
                for pod in sidecars.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
                    let path = format!("/api/v1/namespaces/{ns}/pods/{}:9190/proxy/quitquitquit", pod.name_any());
                    if let Ok(req) = http::Request::builder().method("POST").uri(path).body(Vec::new()) {
                        let _ = self.client.request_text(req).await;
                    }
                }
                if tick.is_multiple_of(2) {
                    let _ = self.replace_oldest(ns).await;
                }
            }
        }
    }

    /// Deletes the oldest pod of the namespace and creates a new one of its kind.
    async fn replace_oldest(&self, ns: &str) -> Result<(), String> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let pods = api.list(&ListParams::default().labels("podlife.io/chaos-role")).await.map_err(|e| e.to_string())?;
        let Some(oldest) = pods.items.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).min_by_key(|p| p.creation_timestamp())
        else {
            return Ok(());
        };
        let kind = oldest.labels().get("podlife.io/chaos-role").cloned().unwrap_or_default();
        api.delete(&oldest.name_any(), &DeleteParams::default()).await.map_err(|e| e.to_string())?;
        api.create(&PostParams::default(), &self.of_kind(&kind)?).await.map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Stops the churn (the pods keep running).
    pub fn stop(&mut self) {
        if let Some(t) = self.churn.take() {
            t.abort();
        }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop();
    }
}
