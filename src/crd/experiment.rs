//! `ProbeExperiment`: "what does the kubelet do when my probe does this?" as one resource.
//! The operator runs it: it creates the pod, performs the actions, watches the real kubelet,
//! and writes a verdict per expectation with the observed value next to the expected one.

use k8s_openapi::api::core::v1::PodSpec;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A declarative probe experiment.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "podlife.io",
    version = "v1alpha1",
    kind = "ProbeExperiment",
    plural = "probeexperiments",
    shortname = "pe",
    namespaced,
    status = "ExperimentStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Passed","type":"string","jsonPath":".status.summary"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{"rule": "!has(self.job) || !has(self.actions) || size(self.actions) == 0", "message": "actions act on one pod; an experiment with a job takes none"}]))]
pub struct ProbeExperimentSpec {
    /// The pod to run. A container without an image runs podlife-target.
    pub pod: PodSpec,
    /// What to do to the pod, and when.
    #[serde(default)]
    #[schemars(length(max = 32))]
    pub actions: Vec<Action>,
    /// What the kubelet must (or must not) do.
    #[schemars(length(min = 1, max = 32))]
    pub expectations: Vec<Expectation>,
    /// How long to observe after the pod is created, in seconds.
    #[schemars(range(min = 1, max = 3600))]
    pub duration_seconds: u32,
    /// Hard limit for the whole experiment; past it the experiment ends in Error.
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 10, max = 7200))]
    pub timeout_seconds: u32,
    /// Run the pod as a Job's template instead of a bare pod. Pod-level expectations are then
    /// checked on every pod the Job created; `job` expectations check the Job as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobSettings>,
}

/// The batch/v1 Job settings of an experiment that runs a Job.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobSettings {
    #[schemars(range(min = 1, max = 32))]
    pub completions: i32,
    #[schemars(range(min = 1, max = 32))]
    pub parallelism: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 32))]
    pub backoff_limit: Option<i32>,
}

fn default_timeout() -> u32 {
    600
}

/// When an action happens: `atSeconds` after the pod is created, or `when` a condition of
/// the pod first turns True (e.g. `Ready`), plus an optional delay.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{"rule": "has(self.atSeconds) != has(self.when)", "message": "an action needs exactly one of atSeconds or when"}, {"rule": "(has(self.call) ? 1 : 0) + (has(self.delete) ? 1 : 0) + (has(self.exec) ? 1 : 0) == 1", "message": "an action does exactly one thing: call, delete or exec"}]))]
pub struct Action {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_seconds: Option<f64>,
    /// A pod condition type, e.g. Ready or ContainersReady.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_seconds: Option<f64>,
    /// An HTTP call to a container's port through the apiserver's pod proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<Call>,
    /// Delete the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete: Option<Delete>,
    /// Run a command in a container (pods/exec through the apiserver); its exit code and
    /// output are recorded in `status.actionsDone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecCommand>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecCommand {
    /// The container; the pod's first container if unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The command and its arguments, run without a shell.
    #[schemars(length(min = 1, max = 32))]
    pub command: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Call {
    /// The port; podlife-target's control API is 9090.
    #[serde(default = "default_control_port")]
    pub port: u16,
    #[serde(default = "default_method")]
    #[schemars(regex(pattern = r"^(GET|POST|PUT|DELETE)$"))]
    pub method: String,
    /// Path and query, e.g. `/scripts/liveness` or `/quitquitquit?code=3`.
    #[schemars(regex(pattern = r"^/"))]
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

fn default_control_port() -> u16 {
    9090
}

fn default_method() -> String {
    "POST".into()
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delete {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period_seconds: Option<i64>,
}

/// One expectation: exactly one of its fields is set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
// Summed conditionals, not a filtered list: the apiserver's CEL cost estimate must stay in budget.
#[schemars(extend("x-kubernetes-validations" = [{"rule": "(has(self.restarts) ? 1 : 0) + (has(self.lastTermination) ? 1 : 0) + (has(self.event) ? 1 : 0) + (has(self.conditionSequence) ? 1 : 0) + (has(self.phaseSequence) ? 1 : 0) + (has(self.finalPhase) ? 1 : 0) + (has(self.neverReadyForSeconds) ? 1 : 0) + (has(self.backoff) ? 1 : 0) + (has(self.probeHits) ? 1 : 0) + (has(self.terminationSeconds) ? 1 : 0) + (has(self.hookOrder) ? 1 : 0) + (has(self.readyAfterStartup) ? 1 : 0) + (has(self.probeInterval) ? 1 : 0) + (has(self.job) ? 1 : 0) + (has(self.restartsIncrease) ? 1 : 0) == 1", "message": "an expectation checks exactly one thing"}]))]
pub struct Expectation {
    /// A container's restart count, within [min, max].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarts: Option<CountRange>,
    /// The last termination of a container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_termination: Option<TerminationExpectation>,
    /// An event seen (`seen: true`) or never seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<EventExpectation>,
    /// A condition's statuses, in order (consecutive repeats folded), e.g. Ready: [True, False].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition_sequence: Option<ConditionSequence>,
    /// The pod's phases in order, e.g. [Pending, Running, Succeeded].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_sequence: Option<Vec<String>>,
    /// The phase the pod ends in (its last observed phase), e.g. Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_phase: Option<String>,
    /// Ready never True during the first N seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub never_ready_for_seconds: Option<f64>,
    /// Every measured restart fits the back-off curve (the profile's tolerance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<BackoffExpectation>,
    /// Probe hits recorded by podlife-target's /hits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_hits: Option<ProbeHitsExpectation>,
    /// Seconds to the container's finishedAt, within [min, max]: from the delete action, or
    /// (`from: sigterm`) from the SIGTERM the target recorded, which leaves out how long the
    /// kubelet took to act on the delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_seconds: Option<SecondsRange>,
    /// podlife-target's lifecycle events in this order (e.g. poststart, prestop, sigterm), as
    /// a subsequence of its /hits events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_order: Option<HookOrder>,
    /// The pod turns Ready within N seconds after the container's startup probe succeeded
    /// (its `started` turned true), and not before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_after_startup: Option<ReadyAfterStartup>,
    /// Every gap between two consecutive hits of one probe, as the target timed them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_interval: Option<ProbeIntervalExpectation>,
    /// The restart count only ever goes up, one restart at a time as observed, to at least `min`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarts_increase: Option<CountRange>,
    /// The Job as a whole (only with `spec.job`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobExpectation>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadyAfterStartup {
    pub container: String,
    pub max_seconds: f64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeIntervalExpectation {
    /// liveness, readiness or startup.
    #[schemars(regex(pattern = r"^(liveness|readiness|startup)$"))]
    pub probe: String,
    pub min_seconds: f64,
    pub max_seconds: f64,
    /// At least this many gaps must have been measured.
    #[serde(default = "default_min_gaps")]
    pub min_gaps: u32,
    /// The target's control port.
    #[serde(default = "default_control_port")]
    pub port: u16,
}

fn default_min_gaps() -> u32 {
    3
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct JobExpectation {
    /// The Job's status.succeeded at the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub succeeded: Option<i32>,
    /// The Job's status.failed at the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<i32>,
    /// A condition of the Job that must be True at the end: Complete or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// The most containers ever running at once (from the kubelet's startedAt and finishedAt)
    /// must lie within [minConcurrent, maxConcurrent].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_concurrent: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecondsRange {
    pub container: String,
    #[serde(default)]
    pub min: f64,
    pub max: f64,
    #[serde(default, skip_serializing_if = "TerminationFrom::is_delete")]
    pub from: TerminationFrom,
    /// The target's control port, for `from: sigterm`.
    #[serde(default = "default_control_port")]
    pub port: u16,
}

/// Where a termination's duration is measured from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum TerminationFrom {
    /// The experiment's delete action.
    #[default]
    Delete,
    /// The SIGTERM podlife-target recorded (the last one).
    Sigterm,
}

impl TerminationFrom {
    fn is_delete(&self) -> bool {
        *self == TerminationFrom::Delete
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HookOrder {
    #[schemars(length(min = 1, max = 16))]
    pub events: Vec<String>,
    /// The target's control port.
    #[serde(default = "default_control_port")]
    pub port: u16,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CountRange {
    pub container: String,
    #[serde(default)]
    pub min: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TerminationExpectation {
    pub container: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The signal that ended it, e.g. 9 for SIGKILL: the runtime's reported signal, or an exit
    /// code of 128 + signal (how containerd reports a signal death).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub signal: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventExpectation {
    pub reason: String,
    /// A substring the message must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_contains: Option<String>,
    pub seen: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConditionSequence {
    #[serde(rename = "type")]
    pub type_: String,
    pub statuses: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackoffExpectation {
    pub container: String,
    /// At least this many measured restarts.
    #[serde(default)]
    pub min_restarts: u32,
    /// The cap: the announced back-off reaches exactly this many seconds and then stays there
    /// (seen at least twice), never above it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap_seconds: Option<f64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeHitsExpectation {
    /// liveness, readiness or startup.
    #[schemars(regex(pattern = r"^(liveness|readiness|startup)$"))]
    pub probe: String,
    #[serde(default)]
    pub min: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
    /// The target's control port.
    #[serde(default = "default_control_port")]
    pub port: u16,
}

/// Where an experiment stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum ExperimentPhase {
    #[default]
    Pending,
    Running,
    Passed,
    Failed,
    /// It could not run: the pod could not be created or the timeout passed.
    Error,
}

impl ExperimentPhase {
    #[must_use]
    pub fn is_final(self) -> bool {
        matches!(self, ExperimentPhase::Passed | ExperimentPhase::Failed | ExperimentPhase::Error)
    }
}

/// One expectation's outcome.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    pub name: String,
    pub passed: bool,
    pub expected: String,
    pub observed: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentStatus {
    pub phase: ExperimentPhase,
    /// "passed/total".
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub verdicts: Vec<Verdict>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// The Job the experiment created (with `spec.job`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// The PodLifecycle report of the experiment's pod (named after its UID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
    /// Actions performed, with their time in seconds after the pod's creation.
    #[serde(default)]
    pub actions_done: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<jiff::Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<jiff::Timestamp>,
    /// What podlife-target recorded (probe hits and lifecycle events), for the timeline
    /// picture; the newest few hundred.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_marks: Vec<TargetMark>,
}

/// One thing podlife-target recorded: a probe hit (`kind` liveness/readiness/startup with its
/// scripted `result`) or a lifecycle event (start, poststart, prestop, sigterm, exit, ...).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetMark {
    pub at: jiff::Timestamp,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// The target's control port (tells two targets in one pod apart).
    pub port: u16,
    /// The container that runs this target, when the spec says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}
