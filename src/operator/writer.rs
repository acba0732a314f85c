//! Writes reports: server-side apply of the spec once, then of the status subresource, at
//! most once per pod per write window. Deletes reports whose pod's TTL has run out.

use std::time::Instant;

use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use super::store::{Store, WriteOutcome};
use crate::crd::PodLifecycle;

const FIELD_MANAGER: &str = "podlife-operator";

pub async fn flush(client: &Client, store: &Store) {
    let batch = store.take_dirty();
    for (uid, namespace, exists, history) in batch {
        let api: Api<PodLifecycle> = Api::namespaced(client.clone(), &namespace);
        let started = Instant::now();
        let result = write_one(&api, &uid, exists, &history).await;
        store.metrics.write_latency.observe(started.elapsed().as_secs_f64());
        match &result {
            Ok(()) => store.metrics.writes.get_or_create(&super::metrics::OutcomeLabels { outcome: "ok".into() }).inc(),
            Err(e) => {
                tracing::warn!(pod = %history.pod, %namespace, error = %e, "report write failed; will retry");
                store.metrics.writes.get_or_create(&super::metrics::OutcomeLabels { outcome: "error".into() }).inc()
            }
        };
        let outcome = match &result {
            Ok(()) => WriteOutcome::Written,
            Err(kube::Error::Api(e)) if e.code == 404 => WriteOutcome::Missing,
            Err(_) => WriteOutcome::Failed,
        };
        store.written(&uid, outcome);
    }
}

#[tracing::instrument(skip(api, history), fields(pod = %history.pod))]
async fn write_one(api: &Api<PodLifecycle>, uid: &str, exists: bool, history: &crate::lifecycle::PodHistory) -> Result<(), kube::Error> {
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    if !exists {
        let report = json!({
            "apiVersion": "podlife.io/v1alpha1", "kind": "PodLifecycle",
            "metadata": {"name": uid, "labels": {"podlife.io/pod-name": label_value(&history.pod)}},
            "spec": {"podName": history.pod, "podUid": uid},
        });
        api.patch(uid, &pp, &Patch::Apply(report)).await?;
    }
    let status = json!({"apiVersion": "podlife.io/v1alpha1", "kind": "PodLifecycle", "status": history});
    api.patch_status(uid, &pp, &Patch::Apply(status)).await?;
    Ok(())
}

/// Label values are at most 63 characters.
fn label_value(name: &str) -> String {
    let v: String = name.chars().take(63).collect();
    v.trim_end_matches(['-', '.', '_']).to_string()
}

pub async fn expire_deleted(client: &Client, store: &Store) {
    for (uid, namespace) in store.take_expired() {
        let api: Api<PodLifecycle> = Api::namespaced(client.clone(), &namespace);
        match api.delete(&uid, &DeleteParams::default()).await {
            Ok(_) => tracing::info!(%uid, %namespace, "deleted report after its TTL"),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => tracing::warn!(%uid, %namespace, error = %e, "could not delete expired report"),
        }
    }
}
