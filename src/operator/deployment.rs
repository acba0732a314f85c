//! The Deployment side of experiments (`spec.deployment`): the Deployment and its Service,
//! rollout and scale actions, the rollout's completion, and the Service's EndpointSlices as
//! they change. What is judged of them is pure (`harness::rollout`).

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::crd::experiment::{Action, DeploymentObserved, DeploymentSettings, EndpointChange, ProbeExperiment, ReplicasAt};
use crate::harness::rollout::{EndpointState, SliceFold};
use crate::lock;

/// Creates the Deployment (the experiment's pod as its template) and a ClusterIP Service of
/// the same name in front of its pods. Both are owned by the experiment.
pub async fn create(client: &Client, exp: &ProbeExperiment, pod: Pod, settings: &DeploymentSettings) -> Result<Made, String> {
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
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let service = services.create(&PostParams::default(), &service).await.map_err(|e| format!("cannot create service {name}: {e}"))?;
    let service_uid = service.uid().unwrap_or_default();
    let created = match Api::<Deployment>::namespaced(client.clone(), &ns).create(&PostParams::default(), &deployment).await {
        Ok(d) => d,
        Err(e) => {
            // Nothing is left behind for a Deployment the apiserver refused.
            let _ = services.delete(&name, &only(&service_uid)).await;
            return Err(format!("cannot create deployment {name}: {e}"));
        }
    };
    let at = created.metadata.creation_timestamp.clone().map_or_else(Timestamp::now, |t| t.0);
    Ok(Made { name, uid: created.uid().unwrap_or_default(), service_uid, at })
}

/// What [`create`] made.
pub struct Made {
    pub name: String,
    pub uid: String,
    pub service_uid: String,
    pub at: Timestamp,
}

/// Deletes only the object of this UID: a same-named one made since is left alone.
#[must_use]
pub fn only(uid: &str) -> DeleteParams {
    DeleteParams {
        grace_period_seconds: Some(0),
        propagation_policy: Some(kube::api::PropagationPolicy::Background),
        preconditions: Some(kube::api::Preconditions { uid: Some(uid.to_string()), resource_version: None }),
        ..Default::default()
    }
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
            let mut fold = SliceFold::default();
            let mut stream = std::pin::pin!(super::retry_watch(watcher(api, config), super::watch_backoff()));
            while let Some(event) = stream.next().await {
                let news = match event {
                    Ok(watcher::Event::Apply(s)) => fold.applied(s.name_any(), endpoints_of(&s), Timestamp::now()),
                    Ok(watcher::Event::Delete(s)) => fold.deleted(&s.name_any(), Timestamp::now()),
                    Ok(watcher::Event::Init) => {
                        fold.begin_relist();
                        continue;
                    }
                    Ok(watcher::Event::InitApply(s)) => {
                        fold.relisted(s.name_any(), endpoints_of(&s));
                        continue;
                    }
                    Ok(watcher::Event::InitDone) => fold.end_relist(Timestamp::now()),
                    Err(e) => {
                        tracing::debug!(error = %e, "endpointslice watch error; retrying");
                        continue;
                    }
                };
                lock(&out).extend(news);
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

/// An experiment ended early (its timeout, a lost lease) drops its watch: it stops with it.
impl Drop for EndpointWatch {
    fn drop(&mut self) {
        self.task.abort();
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
