//! Looks up the owners a pod does not name itself: a ReplicaSet's Deployment, a Job's CronJob.
//!
//! One GET (metadata only) per owner, cached by the owner's UID, so a Deployment of 1000 pods
//! costs one lookup per ReplicaSet, not one per pod. Lookups happen in the writer, just before
//! a report is written, so the pod watch never waits on them.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PartialObjectMeta;
use kube::{Api, Client};

use super::store::{DirtyReport, Store};
use crate::lifecycle::workload::{OwnerLink, Parent};

/// Owners remembered at most; past it the cache starts over (each entry is ~200 bytes).
const MAX_CACHED: usize = 4096;

pub struct OwnerLookup {
    client: Client,
    timeout: Duration,
    /// By owner UID: what its own controller is, once known for good.
    cache: HashMap<String, Parent>,
    forbidden_logged: bool,
}

impl OwnerLookup {
    pub fn new(client: Client, timeout: Duration) -> Self {
        OwnerLookup { client, timeout, cache: HashMap::new(), forbidden_logged: false }
    }

    /// Completes the owner chains of `reports` as far as the apiserver answers now, in the
    /// reports and in the store. A chain whose lookup failed for a passing reason (a timeout,
    /// a 5xx) stays incomplete, and its report is taken again `OWNER_RETRY` later to try once more.
    pub async fn complete(&mut self, reports: &mut [DirtyReport], store: &Store) {
        // After one lookup fails for a passing reason the others likely would too: each would
        // cost a timeout. They are all tried again later.
        let mut unavailable = false;
        for report in reports {
            let Some(mut owners) = report.history.owners.clone() else { continue };
            let before = owners.clone();
            while let Some(link) = owners.needs_lookup().cloned() {
                let answer = if unavailable { None } else { self.parent(&report.namespace, &link).await };
                match answer {
                    Some(parent) => owners.extend(parent),
                    None => {
                        unavailable = true;
                        store.retry_owners(&report.uid, std::time::Instant::now());
                        break;
                    }
                }
            }
            if owners != before {
                store.set_owners(&report.uid, &owners);
                report.history.set_owners(owners);
            }
        }
    }

    /// `None`: the answer is not known yet (try later).
    async fn parent(&mut self, namespace: &str, link: &OwnerLink) -> Option<Parent> {
        if let Some(known) = self.cache.get(&link.uid) {
            return Some(known.clone());
        }
        let got = match link.kind.as_str() {
            "ReplicaSet" => self.get::<ReplicaSet>(namespace, &link.name).await,
            "Job" => self.get::<Job>(namespace, &link.name).await,
            _ => Ok(None),
        };
        let parent = match got {
            // The same name can be a newer object: then the pod's owner is gone.
            Ok(Some(meta)) if meta.uid.as_deref() == Some(link.uid.as_str()) => {
                match meta.owner_references.iter().flatten().find(|o| o.controller == Some(true)) {
                    Some(o) => Parent::Owner(OwnerLink {
                        kind: o.kind.clone(),
                        name: o.name.clone(),
                        uid: o.uid.clone(),
                        api_version: o.api_version.clone(),
                    }),
                    None => Parent::None,
                }
            }
            Ok(_) => Parent::Unknowable,
            Err(kube::Error::Api(e)) if e.code == 403 => {
                if !std::mem::replace(&mut self.forbidden_logged, true) {
                    tracing::warn!(kind = %link.kind, %namespace, "may not read {}s: owner chains stop at the pod's own controller (grant get on replicasets and jobs)", link.kind);
                }
                Parent::Unknowable
            }
            Err(e) => {
                tracing::debug!(owner = %link, %namespace, error = %e, "owner lookup failed; will retry");
                return None;
            }
        };
        if self.cache.len() >= MAX_CACHED {
            self.cache.clear();
        }
        self.cache.insert(link.uid.clone(), parent.clone());
        Some(parent)
    }

    /// The owner's metadata; `Ok(None)` if it does not exist.
    async fn get<K>(&self, namespace: &str, name: &str) -> Result<Option<ObjectMeta>, kube::Error>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        match tokio::time::timeout(self.timeout, api.get_metadata_opt(name)).await {
            Ok(r) => r.map(|found| found.map(|m: PartialObjectMeta<K>| m.metadata)),
            Err(_) => Err(kube::Error::Service("owner lookup timed out".into())),
        }
    }
}
