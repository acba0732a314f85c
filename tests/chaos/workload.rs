//! The workload the faults hit: podlife-target pods in two namespaces that keep the kubelet
//! busy, so that every fault lands while restarts are under way.
//!
//! Per namespace: two crash loops (runs of 4 s and 7 s), a liveness kill (healthy for 15 s,
//! then failing), a readiness flap (8 s ready, 8 s not), and a pod whose native sidecar is
//! told to `/quitquitquit` every 20 s. Every 60 s the oldest crash loop is deleted and a new
//! one created, so there are always young back-off curves and deletions.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

pub const TARGET_IMAGE: &str = concat!("localhost/podlife-target:", env!("CARGO_PKG_VERSION"));

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
            "metadata": {"name": name, "labels": {self.label.0.clone(): self.label.1.clone(), "podlife.io/chaos-role": name.split('-').next().unwrap_or(name)}},
            "spec": spec,
        }))
        .map_err(|e| e.to_string())
    }

    fn crash(&self, generation: u32, run: &str, code: u32) -> Result<Pod, String> {
        self.pod(&format!("crash-{generation}"), json!({"containers": [target("app", &["--exit-after", &format!("{run}:{code}")])]}))
    }

    fn fixed(&self) -> Result<Vec<Pod>, String> {
        let mut live = target("app", &["--liveness", "ok for 15s, then fail"]);
        live["livenessProbe"] = json!({"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1, "failureThreshold": 3});
        let mut flap = target("app", &["--readiness", "ok for 8s, fail for 8s, repeat"]);
        flap["readinessProbe"] = json!({"httpGet": {"path": "/readyz", "port": 8080}, "periodSeconds": 1, "failureThreshold": 1});
        let mut sidecar =
            target("sidecar", &["--probe-port", "8180", "--control-port", "9190", "--grpc-port", "9100", "--tcp-ports", "0,0,0"]);
        sidecar["restartPolicy"] = json!("Always");
        sidecar["readinessProbe"] = json!({"httpGet": {"path": "/readyz", "port": 8180}, "periodSeconds": 1});
        Ok(vec![
            self.pod("liveness", json!({"containers": [live]}))?,
            self.pod("flap", json!({"containers": [flap]}))?,
            self.pod("sidecar", json!({"initContainers": [sidecar], "containers": [target("app", &[])]}))?,
        ])
    }

    /// Creates every pod, then keeps the churn going in the background.
    pub async fn start(&mut self) -> Result<(), String> {
        for ns in &self.namespaces {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
            let mut pods = self.fixed()?;
            for (run, code) in [("4s", 1), ("7s", 2)] {
                pods.push(self.crash(self.generation.fetch_add(1, Ordering::SeqCst), run, code)?);
            }
            for pod in pods {
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
                let path = format!("/api/v1/namespaces/{ns}/pods/sidecar:9190/proxy/quitquitquit");
                if let Ok(req) = http::Request::builder().method("POST").uri(path).body(Vec::new()) {
                    let _ = self.client.request_text(req).await;
                }
                if tick.is_multiple_of(3) {
                    let _ = self.replace_oldest_crash(ns).await;
                }
            }
        }
    }

    async fn replace_oldest_crash(&self, ns: &str) -> Result<(), String> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let crashes = api.list(&ListParams::default().labels("podlife.io/chaos-role=crash")).await.map_err(|e| e.to_string())?;
        let Some(oldest) = crashes.items.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).min_by_key(|p| p.creation_timestamp())
        else {
            return Ok(());
        };
        let run = oldest
            .spec
            .as_ref()
            .and_then(|s| s.containers[0].args.as_ref())
            .and_then(|a| a.get(1))
            .cloned()
            .unwrap_or_else(|| "4s:1".into());
        let (run, code) = run.split_once(':').unwrap_or(("4s", "1"));
        api.delete(&oldest.name_any(), &DeleteParams::default()).await.map_err(|e| e.to_string())?;
        let pod = self.crash(self.generation.fetch_add(1, Ordering::SeqCst), run, code.parse().unwrap_or(1))?;
        api.create(&PostParams::default(), &pod).await.map_err(|e| e.to_string())?;
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
