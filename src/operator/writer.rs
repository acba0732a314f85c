//! Writes reports: server-side apply of the spec once, then of the status subresource, at
//! most once per pod per write window. Deletes reports whose pod's TTL has run out.
//!
//! # Guarantees
//! - Nothing is written while the leader's fence (or the pod's shard's) is closed, and every write is bounded in
//!   time so that it ends before another replica may take the lease over.
//! - When the apiserver cannot be reached, the window's writes not yet started are put back and
//!   retried within seconds, not fired at a server that is down. Those already in flight (up
//!   to [`WRITE_CONCURRENCY`] - 1) run to their own timeout and back off like any failure.

use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use std::sync::Arc;

use super::leader::Fence;
use super::owners::OwnerLookup;
use super::shards::Ownership;
use super::store::{Batch, DirtyReport, Store, WriteOutcome};
use crate::crd::PodLifecycle;
use crate::lifecycle::PodHistory;
use crate::lifecycle::workload::label_value;

const FIELD_MANAGER: &str = "podlife-operator";

/// Report writes in flight at once. Bounded so that a window of 10k changed pods does not
/// open 10k requests, and within the apiserver's default share for one client's flows
/// (a ServiceAccount's requests fall in workload-low, with hundreds of seats). Each write waits
/// on the apiserver (135-180 ms each on a busy 2-core machine), so the bound sets throughput:
/// 16 carried only ~118 writes/s. Measured back to back at 10k pods and ~117 changes/s
/// (`e2e/bench/scale --pods 10000 --replicas 0`), change to write p50/p99 went from
/// 2.8 s / 5.4 s at 16 to 0.7 s / 2.2 s at 32.
pub const WRITE_CONCURRENCY: usize = 32;

/// What must hold for a report to be written.
pub enum WriteGate {
    /// No election: always.
    Open,
    /// The leader's fence is open.
    Leader(Arc<Fence>),
    /// The fence of the pod's shard is open.
    Shards(Arc<Ownership>),
}

impl WriteGate {
    /// `uid` `None`: whether any write may start at all.
    fn allows(&self, uid: Option<&str>, now: Instant) -> bool {
        match (self, uid) {
            (WriteGate::Open, _) | (WriteGate::Shards(_), None) => true,
            (WriteGate::Leader(fence), _) => fence.allows(now),
            (WriteGate::Shards(ownership), Some(uid)) => ownership.allows(uid, now),
        }
    }
}

pub struct Writer {
    client: Client,
    store: Arc<Store>,
    gate: WriteGate,
    timeout: Duration,
    fenced_logged: bool,
    owners: OwnerLookup,
}

/// Why a write did not happen.
#[derive(Debug)]
enum WriteError {
    Api(kube::Error),
    TimedOut,
}

impl Writer {
    pub fn new(client: Client, store: Arc<Store>, gate: WriteGate, timeout: Duration) -> Self {
        let owners = OwnerLookup::new(client.clone(), timeout);
        Writer { client, store, gate, timeout, fenced_logged: false, owners }
    }

    fn may_write(&mut self, uid: Option<&str>) -> bool {
        let open = self.gate.allows(uid, Instant::now());
        if !open && !std::mem::replace(&mut self.fenced_logged, true) {
            tracing::warn!("the lease fence is closed: not writing until it is renewed");
        }
        if open {
            self.fenced_logged = false;
        }
        open
    }

    /// Writes every report due, up to [`WRITE_CONCURRENCY`] at a time. One write is one
    /// apiserver round trip (two for a new report); one at a time, 1k pods changing every 5 s already outran the
    /// window (66 writes/s, p99 from change to write 16 s, `e2e/bench/scale`).
    pub async fn flush(&mut self) {
        self.flush_taken(Store::take_dirty).await;
    }

    /// Writes every changed report, even one written less than a window ago: at the end of a
    /// term, what is not written now is handed over unwritten.
    pub async fn flush_all(&mut self) {
        self.flush_taken(Store::take_all_dirty).await;
    }

    async fn flush_taken(&mut self, take: fn(&Store, Instant) -> Batch) {
        if !self.may_write(None) {
            return;
        }
        let mut batch = take(&self.store, Instant::now());
        self.owners.complete(&mut batch.reports, &self.store).await;
        let mut waiting = std::mem::take(&mut batch.reports).into_iter();
        let mut in_flight = FuturesUnordered::new();
        let mut all_written = true;
        let mut stopped = false;
        loop {
            while !stopped && in_flight.len() < WRITE_CONCURRENCY {
                let Some(report) = waiting.next() else { break };
                if !self.may_write(Some(&report.uid)) {
                    self.store.requeue([report.uid]);
                    all_written = false;
                    // A closed shard fence holds back only its own pods.
                    if matches!(self.gate, WriteGate::Shards(_)) {
                        continue;
                    }
                    stopped = true;
                    break;
                }
                let (client, timeout) = (self.client.clone(), self.timeout);
                in_flight.push(async move {
                    let started = Instant::now();
                    let result = match tokio::time::timeout(timeout, write_one(&client, &report)).await {
                        Ok(r) => r.map_err(WriteError::Api),
                        Err(_) => Err(WriteError::TimedOut),
                    };
                    (report, result, started.elapsed())
                });
            }
            let Some((report, result, elapsed)) = in_flight.next().await else { break };
            self.store.metrics.write_latency.observe(elapsed.as_secs_f64());
            let outcome = match &result {
                Ok(()) => WriteOutcome::Written,
                Err(WriteError::Api(kube::Error::Api(e))) if e.code == 404 => WriteOutcome::Missing,
                // The apiserver itself is struggling (restarting, overloaded): retry soon.
                Err(WriteError::Api(kube::Error::Api(e))) if e.code >= 500 || e.code == 429 => WriteOutcome::Unreachable,
                Err(WriteError::Api(kube::Error::Api(_))) => WriteOutcome::Refused,
                Err(_) => WriteOutcome::Unreachable,
            };
            match (&result, outcome) {
                (Ok(()), _) => {
                    self.store.metrics.write("ok");
                    if labels_due(&report) {
                        self.store.labelled(&report.uid);
                    }
                }
                (Err(e), WriteOutcome::Unreachable) => {
                    self.store.metrics.write("unreachable");
                    tracing::warn!(pod = %report.history.pod, namespace = %report.namespace, error = ?e, "apiserver unreachable; retrying soon");
                    // The rest would fail the same way: start no more; they go back below.
                    stopped = true;
                }
                (Err(e), _) => {
                    self.store.metrics.write("error");
                    tracing::warn!(pod = %report.history.pod, namespace = %report.namespace, error = ?e, "report write failed; will retry with back-off");
                }
            }
            all_written &= outcome == WriteOutcome::Written;
            self.store.written(&report.uid, outcome, Instant::now());
        }
        if stopped {
            // Not attempted: put back for the next window.
            self.store.requeue(waiting.map(|r| r.uid));
        } else if all_written {
            self.store.written_all(&batch);
        }
    }

    /// Deletes the reports whose TTL has run out, each while the fence is open and bounded in
    /// time like a write; a failed deletion stays for the next round.
    pub async fn expire_deleted(&mut self) {
        for (uid, namespace) in self.store.take_expired(jiff::Timestamp::now()) {
            if !self.may_write(Some(&uid)) {
                return;
            }
            let api: Api<PodLifecycle> = Api::namespaced(self.client.clone(), &namespace);
            match tokio::time::timeout(self.timeout, api.delete(&uid, &DeleteParams::default())).await {
                Ok(Ok(_)) => {
                    tracing::info!(%uid, %namespace, "deleted report after its TTL");
                    self.store.expired(&uid);
                }
                Ok(Err(kube::Error::Api(e))) if e.code == 404 => self.store.expired(&uid),
                Ok(Err(e)) => tracing::warn!(%uid, %namespace, error = %e, "could not delete expired report; will retry"),
                Err(_) => tracing::warn!(%uid, %namespace, "deleting an expired report timed out; will retry"),
            }
        }
    }
}

#[tracing::instrument(skip(client, report), fields(pod = %report.history.pod, namespace = %report.namespace))]
async fn write_one(client: &Client, report: &DirtyReport) -> Result<(), kube::Error> {
    let api: Api<PodLifecycle> = Api::namespaced(client.clone(), &report.namespace);
    match apply(client, &api, report, !report.report_exists || labels_due(report)).await {
        // Server-side apply must read the stored object; one written under a schema this
        // version cannot read (500 "failed to create typed live object") can only be replaced.
        Err(kube::Error::Api(e)) if e.code == 500 && e.message.contains("typed live object") => {
            tracing::warn!(uid = %report.uid, "the stored report cannot be read under this schema: replacing it");
            match api.delete(&report.uid, &DeleteParams::default()).await {
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
                Ok(_) => {}
            }
            apply(client, &api, report, true).await
        }
        other => other,
    }
}

async fn apply(client: &Client, api: &Api<PodLifecycle>, report: &DirtyReport, with_spec: bool) -> Result<(), kube::Error> {
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let uid = &report.uid;
    if with_spec {
        let object = json!({
            "apiVersion": "podlife.io/v1alpha1", "kind": "PodLifecycle",
            "metadata": {"name": uid, "labels": labels(report)},
            "spec": {"podName": report.history.pod, "podUid": uid},
        });
        api.patch(uid, &pp, &Patch::Apply(object)).await?;
    }
    apply_status(client, &report.namespace, uid, &pp, &report.history).await
}

/// The status apply's body, serialised straight from the history (no JSON value between).
#[derive(serde::Serialize)]
struct StatusApply<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    status: &'a PodHistory,
}

/// Applies a report's status without decoding the stored report the apiserver answers with:
/// nothing reads it, and decoding a whole history per write was CPU spent for nothing.
async fn apply_status(client: &Client, namespace: &str, uid: &str, pp: &PatchParams, history: &PodHistory) -> Result<(), kube::Error> {
    let body = StatusApply { api_version: "podlife.io/v1alpha1", kind: "PodLifecycle", status: history };
    let mut request = kube::core::Request::new(<PodLifecycle as kube::Resource>::url_path(&(), Some(namespace)))
        .patch_subresource("status", uid, pp, &Patch::Apply(&body))
        .map_err(kube::Error::BuildRequest)?;
    // The name kube's own `patch_status` gives the request in its traces.
    request.extensions_mut().insert("patch_status");
    // Errors (4xx, 5xx) come back as `kube::Error::Api`, as from `Api::patch_status`.
    client.request_text(request).await?;
    Ok(())
}

/// The report's workload labels are complete and not yet on the object.
fn labels_due(report: &DirtyReport) -> bool {
    !report.labelled && report.history.owners.as_ref().is_some_and(|o| o.complete)
}

fn labels(report: &DirtyReport) -> std::collections::BTreeMap<String, String> {
    let mut labels = report.history.owners.as_ref().map(crate::lifecycle::workload::Owners::labels).unwrap_or_default();
    labels.insert("podlife.io/pod-name".into(), label_value(&report.history.pod));
    labels
}
