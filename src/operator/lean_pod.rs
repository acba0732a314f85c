//! Pods as the operator watches them in JSON (`--pod-wire json`; protobuf is the default, see
//! [`pod_proto`](super::pod_proto)): decoded with only the fields the model reads.
//!
//! A pod's JSON is mostly what podlife never looks at: `managedFields` (each entry a tree of
//! field names), the containers' specs, volumes, annotations. Decoding all of it into a
//! `k8s_openapi` [`Pod`] allocated for every watch event and every listed pod, only for
//! [`PodSnapshot::from_pod`](crate::lifecycle::PodSnapshot::from_pod) to drop it again. A
//! [`LeanPod`] skips those fields while parsing (serde ignores them without allocating) and
//! keeps a `Pod` holding just metadata's identity, owners and times, the init containers'
//! names and restart policies, and the whole status.

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use serde::{Deserialize, Deserializer};

/// A [`Pod`] with only the fields the operator reads; usable with `Api` and the watcher like
/// a `Pod` (same group, version, kind and path).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LeanPod(pub Pod);

impl k8s_openapi::Resource for LeanPod {
    const API_VERSION: &'static str = <Pod as k8s_openapi::Resource>::API_VERSION;
    const GROUP: &'static str = <Pod as k8s_openapi::Resource>::GROUP;
    const KIND: &'static str = <Pod as k8s_openapi::Resource>::KIND;
    const VERSION: &'static str = <Pod as k8s_openapi::Resource>::VERSION;
    const URL_PATH_SEGMENT: &'static str = <Pod as k8s_openapi::Resource>::URL_PATH_SEGMENT;
    type Scope = <Pod as k8s_openapi::Resource>::Scope;
}

impl k8s_openapi::Metadata for LeanPod {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.0.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.0.metadata
    }
}

/// The parts of a pod's JSON that are kept; every other field is skipped unparsed.
#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    metadata: WireMeta,
    #[serde(default)]
    spec: Option<WireSpec>,
    #[serde(default)]
    status: Option<PodStatus>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireMeta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    creation_timestamp: Option<Time>,
    deletion_timestamp: Option<Time>,
    owner_references: Option<Vec<OwnerReference>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireSpec {
    #[serde(default)]
    init_containers: Option<Vec<WireInitContainer>>,
}

/// An init container's name and restart policy: `Always` makes it a sidecar.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireInitContainer {
    name: String,
    restart_policy: Option<String>,
}

impl<'de> Deserialize<'de> for LeanPod {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let Wire { metadata: m, spec, status } = Wire::deserialize(deserializer)?;
        let metadata = ObjectMeta {
            name: m.name,
            namespace: m.namespace,
            uid: m.uid,
            resource_version: m.resource_version,
            creation_timestamp: m.creation_timestamp,
            deletion_timestamp: m.deletion_timestamp,
            owner_references: m.owner_references,
            ..ObjectMeta::default()
        };
        let spec = spec.map(|s| PodSpec {
            init_containers: s.init_containers.map(|cs| {
                cs.into_iter().map(|c| Container { name: c.name, restart_policy: c.restart_policy, ..Container::default() }).collect()
            }),
            ..PodSpec::default()
        });
        Ok(LeanPod(Pod { metadata, spec, status }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::PodSnapshot;
    use crate::lifecycle::recording::{Observed, Recording};

    /// Every pod object of the recorded real-kubelet watch streams, as JSON again (a `Pod`
    /// writes back every field it read, managedFields and container specs included).
    fn recorded_pods() -> Vec<serde_json::Value> {
        [include_str!("../../tests/fixtures/crashloop.jsonl"), include_str!("../../tests/fixtures/liveness.jsonl")]
            .into_iter()
            .flat_map(|jsonl| Recording::parse(jsonl).unwrap().observations)
            .filter_map(|o| match o {
                Observed::Pod { pod, .. } => Some(serde_json::to_value(&*pod).unwrap()),
                Observed::Event { .. } => None,
            })
            .collect()
    }

    /// Catches a field the model reads that the lean decoding drops or mangles: the snapshot
    /// of a lean pod must equal the snapshot of the whole pod.
    #[test]
    fn lean_pods_give_the_same_snapshots_as_whole_pods() {
        let mut pods = recorded_pods();
        assert!(pods.len() > 10, "the fixtures hold the recorded watch streams");
        // One pod with every field the model reads set: owners, deletion, sidecars.
        pods.push(serde_json::json!({
            "metadata": {"name": "p", "namespace": "n", "uid": "u", "resourceVersion": "42",
                "creationTimestamp": "2026-11-23T10:00:00Z", "deletionTimestamp": "2026-11-23T10:05:00Z",
                "labels": {"app": "x"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "r", "controller": true}],
                "managedFields": [{"manager": "m", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"initContainers": [{"name": "init", "image": "i"}, {"name": "side", "image": "i", "restartPolicy": "Always"}],
                "containers": [{"name": "app", "image": "i", "env": [{"name": "A", "value": "1"}]}]},
            "status": {"phase": "Running",
                "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady", "message": "m", "lastTransitionTime": "2026-11-23T10:01:00Z"}],
                "initContainerStatuses": [
                    {"name": "init", "ready": false, "restartCount": 0, "image": "i", "imageID": "", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                    {"name": "side", "ready": true, "restartCount": 2, "image": "i", "imageID": "", "containerID": "containerd://s", "state": {"running": {"startedAt": "2026-11-23T10:00:00Z"}}}],
                "containerStatuses": [{"name": "app", "ready": false, "started": false, "restartCount": 3, "image": "i", "imageID": "",
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "startedAt": "2026-11-23T10:02:00Z", "finishedAt": "2026-11-23T10:02:01Z"}}}]}
        }));
        for value in pods {
            let whole: Pod = serde_json::from_value(value.clone()).unwrap();
            let lean: LeanPod = serde_json::from_value(value).unwrap();
            assert_eq!(PodSnapshot::from_pod(&lean.0), PodSnapshot::from_pod(&whole));
        }
    }

    /// Catches the decoding keeping what it exists to skip.
    #[test]
    fn lean_pods_keep_no_managed_fields_nor_container_specs() {
        let value = recorded_pods().into_iter().next().unwrap();
        let whole: Pod = serde_json::from_value(value.clone()).unwrap();
        assert!(whole.metadata.managed_fields.is_some() && !whole.spec.as_ref().unwrap().containers.is_empty());
        let lean: LeanPod = serde_json::from_value(value).unwrap();
        let meta = &lean.0.metadata;
        assert!(meta.managed_fields.is_none() && meta.annotations.is_none() && meta.labels.is_none());
        assert!(lean.0.spec.unwrap().containers.is_empty());
    }

    #[test]
    fn a_bare_pod_decodes() {
        let lean: LeanPod = serde_json::from_value(serde_json::json!({"metadata": {"uid": "u"}})).unwrap();
        assert_eq!(lean.0.metadata.uid.as_deref(), Some("u"));
        assert!(lean.0.spec.is_none() && lean.0.status.is_none());
    }
}
