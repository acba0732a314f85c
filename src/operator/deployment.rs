//! The Deployment side of experiments (`spec.deployment`): the Deployment and its Service,
//! rollout and scale actions, the rollout's completion, and the Service's EndpointSlices as
//! they change. What is judged of them is pure (`harness::rollout`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::crd::experiment::{Action, DeploymentObserved, DeploymentSettings, EndpointChange, ProbeExperiment, ReplicasAt};
use crate::harness::rollout::{EndpointState, endpoint_changes};
use crate::lock;

/// Creates the Deployment (the experiment's pod as its template) and a ClusterIP Service of
/// the same name in front of its pods. Both are owned by the experiment.
pub async fn create(
    client: &Client,
    exp: &ProbeExperiment,
    pod: Pod,
    settings: &DeploymentSettings,
) -> Result<(String, String, Timestamp), String> {
    let ns = exp.namespace().unwrap_or_default();
    let name = crate::harness::pod::pod_name(&exp.name_any());
    let selector = json!({"podlife.io/experiment": exp.name_any()});
    let owners = pod.metadata.owner_references.clone();
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": selector, "ownerReferences": owners},
        "spec": {
            "replicas": settings.replicas,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": settings.max_surge, "maxUnavailable": settings.max_unavailable}},
            "template": {"metadata": {"labels": pod.metadata.labels}, "spec": pod.spec},
        },
    }))
    .map_err(|e| e.to_string())?;
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": selector, "ownerReferences": owners},
        "spec": {"selector": selector, "ports": [{"port": 80, "targetPort": settings.port, "protocol": "TCP"}]},
    }))
    .map_err(|e| e.to_string())?;
    Api::<Service>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &service)
        .await
        .map_err(|e| format!("cannot create service {name}: {e}"))?;
    let created = Api::<Deployment>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &deployment)
        .await
        .map_err(|e| format!("cannot create deployment {name}: {e}"))?;
    let at = created.metadata.creation_timestamp.clone().map_or_else(Timestamp::now, |t| t.0);
    Ok((name, created.uid().unwrap_or_default(), at))
}

/// Watches the Service's EndpointSlices and records each pod's endpoint as it changes, with
/// the time the operator saw it (the slices carry no times of their own).
pub struct EndpointWatch {
    changes: Arc<Mutex<Vec<EndpointChange>>>,
    task: tokio::task::JoinHandle<()>,
}

impl EndpointWatch {
    pub fn start(client: &Client, ns: &str, service: &str) -> EndpointWatch {
        let api: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
        let config = watcher::Config::default().labels(&format!("kubernetes.io/service-name={service}"));
        let changes = Arc::new(Mutex::new(Vec::new()));
        let out = Arc::clone(&changes);
        let task = tokio::spawn(async move {
            let mut slices: BTreeMap<String, Vec<(String, EndpointState)>> = BTreeMap::new();
            let mut known: BTreeMap<String, EndpointState> = BTreeMap::new();
            let mut stream = watcher(api, config).boxed();
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => {
                        slices.insert(s.name_any(), endpoints_of(&s));
                    }
                    Ok(watcher::Event::Delete(s)) => {
                        slices.remove(&s.name_any());
                    }
                    Ok(watcher::Event::Init | watcher::Event::InitDone) => continue,
                    Err(e) => {
                        tracing::debug!(error = %e, "endpointslice watch error; retrying");
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                        continue;
                    }
                }
                // A pod's endpoint across every slice: present in any, ready in any.
                let mut now: BTreeMap<String, EndpointState> = BTreeMap::new();
                for (uid, state) in slices.values().flatten() {
                    let entry = now.entry(uid.clone()).or_insert_with(|| state.clone());
                    entry.ready |= state.ready;
                    entry.terminating &= state.terminating;
                }
                lock(&out).extend(endpoint_changes(&known, &now, Timestamp::now()));
                known = now;
            }
        });
        EndpointWatch { changes, task }
    }

    /// Stops watching; what was seen.
    pub fn finish(self) -> Vec<EndpointChange> {
        self.task.abort();
        std::mem::take(&mut *lock(&self.changes))
    }
}

fn endpoints_of(slice: &EndpointSlice) -> Vec<(String, EndpointState)> {
    slice
        .endpoints
        .iter()
        .filter_map(|e| {
            let target = e.target_ref.as_ref()?;
            let conditions = e.conditions.clone().unwrap_or_default();
            Some((
                target.uid.clone()?,
                EndpointState {
                    pod: target.name.clone().unwrap_or_default(),
                    // Absent means true, for ready (the API's own default).
                    ready: conditions.ready.unwrap_or(true),
                    terminating: conditions.terminating.unwrap_or(false),
                },
            ))
        })
        .collect()
}

/// Performs a rollout or scale action; what happened, as one line.
pub async fn perform(
    client: &Client,
    ns: &str,
    name: &str,
    exp: &ProbeExperiment,
    action: &Action,
    observed: &mut DeploymentObserved,
) -> String {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    if let Some(r) = &action.rollout {
        let container = r.container.clone().or_else(|| exp.spec.pod.containers.first().map(|c| c.name.clone())).unwrap_or_default();
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": container, "args": r.args}]}}}});
        let started = Timestamp::now();
        return match api.patch(name, &PatchParams::default(), &Patch::Strategic(patch)).await {
            Ok(_) => {
                observed.rollout_started_at = Some(started);
                observed.rollout_complete_at = None;
                format!("rollout: {container} args {:?}", r.args)
            }
            Err(e) => format!("rollout failed: {e}"),
        };
    }
    if let Some(s) = &action.scale {
        let at = Timestamp::now();
        return match api.patch(name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": s.replicas}}))).await {
            Ok(_) => {
                observed.replicas.push(ReplicasAt { at, replicas: s.replicas });
                format!("scaled to {}", s.replicas)
            }
            Err(e) => format!("scale failed: {e}"),
        };
    }
    "nothing to do".into()
}

/// Reads the Deployment's status: notes when every replica was first Ready, and when a
/// started rollout completed.
pub async fn poll(client: &Client, ns: &str, name: &str, observed: &mut DeploymentObserved, all_ready_at: &mut Option<Timestamp>) {
    let Ok(Some(d)) = Api::<Deployment>::namespaced(client.clone(), ns).get_opt(name).await else { return };
    let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = d.status.unwrap_or_default();
    let settled = status.observed_generation >= d.metadata.generation
        && status.updated_replicas.unwrap_or(0) == wanted
        && status.ready_replicas.unwrap_or(0) == wanted
        && status.available_replicas.unwrap_or(0) == wanted
        && status.replicas.unwrap_or(0) == wanted;
    let now = Timestamp::now();
    if settled && all_ready_at.is_none() {
        *all_ready_at = Some(now);
    }
    if settled && observed.rollout_started_at.is_some() && observed.rollout_complete_at.is_none() {
        observed.rollout_complete_at = Some(now);
    }
}
