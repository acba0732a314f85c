//! The model's inputs: trimmed snapshots of a pod's status and of its events.
//!
//! The operator keeps these, not whole Pod objects, so 10k tracked pods stay small. Building
//! them from the Kubernetes types is pure and lives here too.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ContainerState as K8sState, ContainerStatus, Event, Pod};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::workload::OwnerLink;

/// A pod's phase, as the kubelet reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

impl Phase {
    #[must_use]
    pub fn parse(s: Option<&str>) -> Phase {
        match s {
            Some("Pending") => Phase::Pending,
            Some("Running") => Phase::Running,
            Some("Succeeded") => Phase::Succeeded,
            Some("Failed") => Phase::Failed,
            _ => Phase::Unknown,
        }
    }

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
            Phase::Unknown => "Unknown",
        }
    }
}

/// Which list of the pod spec a container comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ContainerKind {
    /// An init container that runs to completion before the app containers.
    Init,
    /// An init container with `restartPolicy: Always`: a native sidecar.
    Sidecar,
    App,
    Ephemeral,
}

/// One container state, as in `status.containerStatuses[].state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase", tag = "state")]
pub enum ContainerState {
    Waiting {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    Running {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        started_at: Option<Timestamp>,
    },
    Terminated(Termination),
}

/// Which of the three container states.
#[derive(JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // Only its schema is used.
enum StateKind {
    Waiting,
    Running,
    Terminated,
}

/// The schema of [`ContainerState`] as serde writes it: a `state` tag and the fields of that
/// state. Kubernetes needs structural schemas, which internally tagged enums do not give.
#[derive(JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // Only its schema is used.
struct ContainerStateSchema {
    state: StateKind,
    reason: Option<String>,
    message: Option<String>,
    started_at: Option<Timestamp>,
    finished_at: Option<Timestamp>,
    exit_code: Option<i32>,
    signal: Option<i32>,
    container_id: Option<String>,
}

impl JsonSchema for ContainerState {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ContainerState".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        ContainerStateSchema::json_schema(generator)
    }
}

/// One finished run of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct Termination {
    pub exit_code: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// The runtime's id of the run; unique per run, so it identifies a termination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
}

impl Termination {
    /// Identifies one run even when the runtime gives no container id.
    #[must_use]
    pub fn run_key(&self) -> String {
        match &self.container_id {
            Some(id) => id.clone(),
            None => format!("{:?}/{:?}/{}", self.started_at, self.finished_at, self.exit_code),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSnapshot {
    pub name: String,
    pub kind: ContainerKind,
    /// `containerID`: the runtime's id of the newest run. When it equals lastState's id, the
    /// newest run has already ended and lastState describes it (the kubelet's back-off waiting
    /// state); otherwise lastState is the run before it.
    #[serde(default)]
    pub container_id: Option<String>,
    pub state: Option<ContainerState>,
    pub last_terminated: Option<Termination>,
    pub ready: bool,
    pub started: Option<bool>,
    pub restart_count: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConditionSnapshot {
    pub type_: String,
    pub status: String,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub last_transition: Option<Timestamp>,
}

/// What the model needs of one Pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodSnapshot {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The Pod's resourceVersion as a number: it rises with every update, so an older
    /// snapshot replayed after a newer one can be told apart. `None` if not a number.
    #[serde(default)]
    pub resource_version: Option<u64>,
    pub created_at: Option<Timestamp>,
    pub deleted_at: Option<Timestamp>,
    pub phase: Phase,
    pub conditions: Vec<ConditionSnapshot>,
    pub containers: Vec<ContainerSnapshot>,
    /// The pod's controller (the `ownerReference` with `controller: true`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<OwnerLink>,
}

/// What the model needs of one Event about a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventSnapshot {
    /// The Event object's uid: a count update keeps it, a new occurrence does not.
    pub uid: String,
    pub reason: String,
    pub message: String,
    pub type_: String,
    /// The container it is about, from `involvedObject.fieldPath` (`spec.containers{name}`).
    pub container: Option<String>,
    pub count: u32,
    pub first_seen: Option<Timestamp>,
    pub last_seen: Option<Timestamp>,
    /// The Event object's resourceVersion as a number: every create or count update raises it,
    /// and a relist or a restarted watch brings back the same value, which tells a replay from
    /// news. `None` where the apiserver's versions are not numbers.
    #[serde(default)]
    pub resource_version: Option<u64>,
}

fn ts(t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> Option<Timestamp> {
    t.map(|t| t.0)
}

fn state_of(s: &K8sState) -> Option<ContainerState> {
    if let Some(w) = &s.waiting {
        return Some(ContainerState::Waiting { reason: w.reason.clone(), message: w.message.clone() });
    }
    if let Some(r) = &s.running {
        return Some(ContainerState::Running { started_at: ts(r.started_at.as_ref()) });
    }
    s.terminated.as_ref().map(|t| ContainerState::Terminated(termination_of(t)))
}

fn termination_of(t: &k8s_openapi::api::core::v1::ContainerStateTerminated) -> Termination {
    Termination {
        exit_code: t.exit_code,
        signal: t.signal,
        reason: t.reason.clone(),
        message: t.message.clone(),
        started_at: ts(t.started_at.as_ref()),
        finished_at: ts(t.finished_at.as_ref()),
        container_id: t.container_id.clone(),
    }
}

fn container_of(c: &ContainerStatus, kind: ContainerKind) -> ContainerSnapshot {
    ContainerSnapshot {
        name: c.name.clone(),
        kind,
        container_id: c.container_id.clone().filter(|id| !id.is_empty()),
        state: c.state.as_ref().and_then(state_of),
        last_terminated: c.last_state.as_ref().and_then(|s| s.terminated.as_ref()).map(termination_of),
        ready: c.ready,
        started: c.started,
        restart_count: c.restart_count,
    }
}

impl PodSnapshot {
    /// Trims a Pod to what the model reads.
    #[must_use]
    pub fn from_pod(pod: &Pod) -> PodSnapshot {
        let meta = &pod.metadata;
        let status = pod.status.clone().unwrap_or_default();
        let sidecars: Vec<String> = pod
            .spec
            .iter()
            .flat_map(|s| s.init_containers.iter().flatten())
            .filter(|c| c.restart_policy.as_deref() == Some("Always"))
            .map(|c| c.name.clone())
            .collect();
        let mut containers = Vec::new();
        for c in status.init_container_statuses.iter().flatten() {
            let kind = if sidecars.contains(&c.name) { ContainerKind::Sidecar } else { ContainerKind::Init };
            containers.push(container_of(c, kind));
        }
        for c in status.container_statuses.iter().flatten() {
            containers.push(container_of(c, ContainerKind::App));
        }
        for c in status.ephemeral_container_statuses.iter().flatten() {
            containers.push(container_of(c, ContainerKind::Ephemeral));
        }
        let controller = meta.owner_references.iter().flatten().find(|o| o.controller == Some(true)).map(|o| OwnerLink {
            kind: o.kind.clone(),
            name: o.name.clone(),
            uid: o.uid.clone(),
            api_version: o.api_version.clone(),
        });
        PodSnapshot {
            controller,
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            resource_version: meta.resource_version.as_deref().and_then(|v| v.parse().ok()),
            created_at: ts(meta.creation_timestamp.as_ref()),
            deleted_at: ts(meta.deletion_timestamp.as_ref()),
            phase: Phase::parse(status.phase.as_deref()),
            conditions: status
                .conditions
                .iter()
                .flatten()
                .map(|c| ConditionSnapshot {
                    type_: c.type_.clone(),
                    status: c.status.clone(),
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                    last_transition: ts(c.last_transition_time.as_ref()),
                })
                .collect(),
            containers,
        }
    }
}

/// `spec.containers{app}` / `spec.initContainers{sidecar}` → the container's name.
#[must_use]
pub fn container_of_field_path(path: &str) -> Option<String> {
    let start = path.find('{')? + 1;
    let end = path[start..].find('}')? + start;
    Some(path[start..end].to_string())
}

impl EventSnapshot {
    /// Trims an Event; `None` for events without a uid (which cannot be deduplicated).
    #[must_use]
    pub fn from_event(e: &Event) -> Option<EventSnapshot> {
        let uid = e.metadata.uid.clone()?;
        let series_count = e.series.as_ref().and_then(|s| s.count).and_then(|c| u32::try_from(c).ok());
        Some(EventSnapshot {
            uid,
            reason: e.reason.clone().unwrap_or_default(),
            message: e.message.clone().unwrap_or_default(),
            type_: e.type_.clone().unwrap_or_default(),
            container: e.involved_object.field_path.as_deref().and_then(container_of_field_path),
            count: series_count.or_else(|| e.count.and_then(|c| u32::try_from(c).ok())).unwrap_or(1).max(1),
            first_seen: ts(e.first_timestamp.as_ref()).or_else(|| e.event_time.as_ref().map(|t| t.0)),
            last_seen: ts(e.last_timestamp.as_ref())
                .or_else(|| e.series.as_ref().and_then(|s| s.last_observed_time.as_ref()).map(|t| t.0))
                .or_else(|| e.event_time.as_ref().map(|t| t.0)),
            resource_version: e.metadata.resource_version.as_deref().and_then(|v| v.parse().ok()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_paths_name_their_container() {
        assert_eq!(container_of_field_path("spec.containers{app}").as_deref(), Some("app"));
        assert_eq!(container_of_field_path("spec.initContainers{side-car}").as_deref(), Some("side-car"));
        assert_eq!(container_of_field_path("spec"), None);
    }

    #[test]
    fn sidecars_are_told_apart_from_init_containers() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "n", "uid": "u"},
            "spec": {"initContainers": [{"name": "init"}, {"name": "side", "restartPolicy": "Always"}], "containers": [{"name": "app"}]},
            "status": {"phase": "Running",
                "initContainerStatuses": [
                    {"name": "init", "ready": false, "restartCount": 0, "image": "i", "imageID": "", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                    {"name": "side", "ready": true, "restartCount": 2, "image": "i", "imageID": "", "state": {"running": {"startedAt": "2026-11-23T10:00:00Z"}}}],
                "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "image": "i", "imageID": ""}]}
        }))
        .unwrap();
        let s = PodSnapshot::from_pod(&pod);
        let kinds: Vec<_> = s.containers.iter().map(|c| (c.name.as_str(), c.kind)).collect();
        assert_eq!(kinds, [("init", ContainerKind::Init), ("side", ContainerKind::Sidecar), ("app", ContainerKind::App)]);
        assert_eq!(s.phase, Phase::Running);
        assert_eq!(s.containers[1].restart_count, 2);
    }
}
