//! Leader election on a coordination.k8s.io Lease: one active replica, the others standby.
//!
//! The holder renews every `renew_every`; a lease not renewed for `lease_duration` may be
//! taken over. A holder that cannot renew in time exits rather than risk two writers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::watch;

use super::{Result, kube_err};

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_every: Duration,
}

fn secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

fn expired(lease: &Lease, now: Timestamp) -> bool {
    let Some(spec) = &lease.spec else { return true };
    let Some(renewed) = spec.renew_time.as_ref() else { return true };
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    now.duration_since(renewed.0).as_secs() > duration
}

/// Waits until this replica holds the lease (or shutdown). Marks the replica ready while it
/// waits, so a rolling update is not blocked by a healthy standby.
pub async fn acquire(
    client: Client,
    cfg: LeaseConfig,
    shutdown: &mut watch::Receiver<bool>,
    ready: &Arc<AtomicBool>,
) -> Result<LeaseConfig> {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    ready.store(true, Ordering::SeqCst);
    loop {
        match try_acquire(&api, &cfg).await {
            Ok(true) => {
                tracing::info!(lease = %cfg.name, identity = %cfg.identity, "became leader");
                ready.store(false, Ordering::SeqCst);
                return Ok(cfg);
            }
            Ok(false) => tracing::debug!(lease = %cfg.name, "standby: lease held elsewhere"),
            Err(e) => tracing::warn!(error = %e, "lease check failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(cfg.renew_every) => {}
            _ = shutdown.changed() => if *shutdown.borrow() { return Ok(cfg) },
        }
    }
}

async fn try_acquire(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<bool> {
    let now = Timestamp::now();
    let spec = json!({
        "holderIdentity": cfg.identity, "leaseDurationSeconds": secs(cfg.lease_duration),
        "acquireTime": MicroTime(now), "renewTime": MicroTime(now),
    });
    match api.get_opt(&cfg.name).await.map_err(kube_err("get lease"))? {
        None => {
            let lease: Lease = serde_json::from_value(json!({"metadata": {"name": cfg.name}, "spec": spec})).expect("valid lease");
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(kube_err("create lease")(e)),
            }
        }
        Some(current) => {
            let holder = current.spec.as_ref().and_then(|s| s.holder_identity.clone()).unwrap_or_default();
            if holder != cfg.identity && !holder.is_empty() && !expired(&current, now) {
                return Ok(false);
            }
            // Replace with the resourceVersion we read: if another replica got there first, 409.
            let mut lease = current.clone();
            lease.spec = Some(serde_json::from_value(spec).expect("valid lease spec"));
            match api.replace(&cfg.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(kube_err("take over lease")(e)),
            }
        }
    }
}

/// Renews until it fails for longer than the lease duration; then reports the loss.
pub async fn renew(client: Client, cfg: LeaseConfig, lost: watch::Sender<bool>) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let mut last_ok = std::time::Instant::now();
    loop {
        tokio::time::sleep(cfg.renew_every).await;
        let patch = json!({"spec": {"holderIdentity": cfg.identity, "renewTime": MicroTime(Timestamp::now())}});
        let held = match api.get(&cfg.name).await {
            Ok(l) => l.spec.and_then(|s| s.holder_identity).as_deref() == Some(cfg.identity.as_str()),
            Err(_) => true, // cannot tell; the deadline below decides
        };
        if held && api.patch(&cfg.name, &PatchParams::default(), &Patch::Merge(patch)).await.is_ok() {
            last_ok = std::time::Instant::now();
        } else if !held || last_ok.elapsed() > cfg.lease_duration {
            tracing::error!(lease = %cfg.name, "lost the lease");
            let _ = lost.send(true);
            return;
        }
    }
}

/// Gives the lease up on shutdown so a standby takes over at once.
pub async fn release(client: &Client, cfg: &LeaseConfig) {
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    let patch = json!({"spec": {"holderIdentity": null, "renewTime": null}});
    if let Err(e) = api.patch(&cfg.name, &PatchParams::default(), &Patch::Merge(patch)).await {
        tracing::warn!(error = %e, "could not release the lease");
    }
}
