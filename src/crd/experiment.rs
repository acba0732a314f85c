//! `ProbeExperiment`: "what does the kubelet do when my probe does this?" as one resource.
//! The operator runs it: it creates the pod, performs the actions, watches the real kubelet,
//! and writes a verdict per expectation with the observed value next to the expected one.

use std::collections::BTreeMap;

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
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.job) || !has(self.actions) || size(self.actions) == 0", "message": "actions act on one pod; an experiment with a job takes none"},
    {"rule": "!has(self.job) || !has(self.deployment)", "message": "an experiment runs a pod, a job or a deployment, not both"},
    {"rule": "!has(self.deployment) || !has(self.actions) || self.actions.all(a, has(a.rollout) || has(a.scale))", "message": "a deployment experiment's actions are rollout or scale"},
    {"rule": "has(self.deployment) || !has(self.actions) || self.actions.all(a, !has(a.rollout) && !has(a.scale))", "message": "rollout and scale need spec.deployment"},
    {"rule": "!has(self.deployment) || !has(self.actions) || self.actions.all(a, !has(a.when) || a.when == 'Ready')", "message": "a deployment experiment's actions run atSeconds or when: Ready (every replica Ready)"},
    {"rule": "has(self.deployment) || self.expectations.all(e, !has(e.maxUnready) && !has(e.rolloutSeconds) && !has(e.endpointRemovedBeforeSigterm))", "message": "maxUnready, rolloutSeconds and endpointRemovedBeforeSigterm need spec.deployment"},
    {"rule": "!has(self.deployment) || self.deployment.maxSurge + self.deployment.maxUnavailable > 0", "message": "maxSurge and maxUnavailable cannot both be 0 (the Deployment could never roll out)"},
    {"rule": "!has(self.deployment) || !has(self.pod.restartPolicy) || self.pod.restartPolicy == 'Always'", "message": "a Deployment's pods restart Always"}
]))]
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
    /// Run the pod as a Deployment's template, with a ClusterIP Service in front of it. Actions
    /// are then `rollout` and `scale`; pod-level expectations are checked on every pod the
    /// Deployment had; `maxUnready`, `rolloutSeconds` and `endpointRemovedBeforeSigterm` check
    /// the workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<DeploymentSettings>,
}

/// The apps/v1 Deployment (and Service) of an experiment that runs one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentSettings {
    #[schemars(range(min = 1, max = 10))]
    pub replicas: i32,
    /// The RollingUpdate strategy's maxSurge (default 1). With maxUnavailable, not both 0.
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 10))]
    pub max_surge: i32,
    /// The RollingUpdate strategy's maxUnavailable (default 0).
    #[serde(default)]
    #[schemars(range(min = 0, max = 10))]
    pub max_unavailable: i32,
    /// The pods' port the Service sends to (podlife-target's probe port is 8080).
    #[serde(default = "default_service_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

fn one() -> i32 {
    1
}

fn default_service_port() -> i32 {
    8080
}

/// Reads a ProbeExperiment from one YAML document as users write it. Expectations are one-key
/// maps (`- restarts: {…}`), which serde_yaml would read only as `!restarts` tags, so the
/// document goes through JSON's data model (as it does on its way to the apiserver).
///
/// # Errors
/// The document is not a ProbeExperiment; the message names the field, e.g.
/// `spec.expectations[1]: unknown variant `restart`, expected one of …`.
pub fn experiment_from_yaml(document: serde_yaml::Value) -> Result<ProbeExperiment, String> {
    let json: serde_json::Value = serde_yaml::from_value(document).map_err(|e| e.to_string())?;
    serde_path_to_error::deserialize(json).map_err(|e| {
        let hint = if e.inner().to_string().contains("expected map with a single key") {
            " (an expectation checks exactly one thing: one key per list item)"
        } else {
            ""
        };
        format!("{}: {}{hint}", e.path(), e.inner())
    })
}

/// [`experiment_from_yaml`] from text.
///
/// # Errors
/// The text is not YAML, or not a ProbeExperiment.
pub fn experiment_from_yaml_str(text: &str) -> Result<ProbeExperiment, String> {
    experiment_from_yaml(serde_yaml::from_str(text).map_err(|e| e.to_string())?)
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
#[schemars(extend("x-kubernetes-validations" = [{"rule": "has(self.atSeconds) != has(self.when)", "message": "an action needs exactly one of atSeconds or when"}, {"rule": "(has(self.call) ? 1 : 0) + (has(self.delete) ? 1 : 0) + (has(self.exec) ? 1 : 0) + (has(self.rollout) ? 1 : 0) + (has(self.scale) ? 1 : 0) == 1", "message": "an action does exactly one thing: call, delete, exec, rollout or scale"}]))]
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
    /// Roll the Deployment out: new arguments for a container, so a new ReplicaSet replaces
    /// the pods (with `spec.deployment`; `when: Ready` means every replica Ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// Scale the Deployment (with `spec.deployment`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<Scale>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// The container; the pod's first container if unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Its new arguments.
    #[schemars(length(max = 64))]
    pub args: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Scale {
    #[schemars(range(min = 0, max = 10))]
    pub replicas: i32,
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

/// One expectation: what the kubelet must (or must not) do, written as a one-key map such as
/// `- restarts: {container: app, min: 1}`. Exactly one key: the schema's `oneOf` refuses two.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Expectation {
    /// A container's restart count, within [min, max].
    Restarts(CountRange),
    /// The last termination of a container.
    LastTermination(TerminationExpectation),
    /// An event seen (`seen: true`) or never seen.
    Event(EventExpectation),
    /// A condition's statuses, in order (consecutive repeats folded), e.g. Ready: [True, False].
    ConditionSequence(ConditionSequence),
    /// The pod's phases in order, e.g. [Pending, Running, Succeeded].
    PhaseSequence(Vec<String>),
    /// The phase the pod ends in (its last observed phase), e.g. Failed.
    FinalPhase(String),
    /// Ready never True during the first N seconds.
    NeverReadyForSeconds(f64),
    /// Every restart fits the back-off curve (see the operator's back-off profile), and the
    /// back-off the kubelet announced is the curve's.
    Backoff(BackoffExpectation),
    /// Probe hits recorded by podlife-target's /hits.
    ProbeHits(ProbeHitsExpectation),
    /// Seconds to the container's finishedAt, within [min, max]: from the delete action, or
    /// (`from: sigterm`) from the SIGTERM the target recorded, which leaves out how long the
    /// kubelet took to act on the delete.
    TerminationSeconds(SecondsRange),
    /// podlife-target's lifecycle events in this order (e.g. poststart, prestop, sigterm), as
    /// a subsequence of its /hits events.
    HookOrder(HookOrder),
    /// The pod turns Ready within N seconds after the container's startup probe succeeded
    /// (its `started` turned true), and not before.
    ReadyAfterStartup(ReadyAfterStartup),
    /// Every gap between two consecutive hits of one probe, as the target timed them.
    ProbeInterval(ProbeIntervalExpectation),
    /// The restart count only ever goes up, one restart at a time as observed, to at least `min`.
    RestartsIncrease(CountRange),
    /// The Job as a whole (only with `spec.job`).
    Job(JobExpectation),
    /// At most this many of the Deployment's replicas un-Ready at once (replicas wanted minus
    /// pods Ready and not being deleted), from the moment all were first Ready to the end.
    MaxUnready(u32),
    /// Seconds from the rollout action to the Deployment's rollout being complete (every
    /// replica updated, Ready and available; as the Deployment controller counts, old pods
    /// still terminating are not replicas).
    RolloutSeconds(RolloutSeconds),
    /// Each pod that got SIGTERM left its Service's EndpointSlice (not ready, or gone) before
    /// the SIGTERM, or at most `withinMs` after it: traffic was no longer sent its way when it
    /// began to stop.
    EndpointRemovedBeforeSigterm(EndpointTiming),
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSeconds {
    #[serde(default)]
    pub min: f64,
    pub max: f64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointTiming {
    /// How long after the SIGTERM the endpoint may still be ready (0: it must be gone first).
    #[serde(default)]
    pub within_ms: i64,
    /// At least this many terminated pods must have been measured.
    #[serde(default = "one_u32")]
    pub min_pods: u32,
}

fn one_u32() -> u32 {
    1
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
    /// Restarts that could not be measured (they came between two observed statuses) count as
    /// not fitting, unless this says why they may be left out; they are named either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmeasured_allowed_because: Option<String>,
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
    /// The Deployment (and Service) the experiment created (with `spec.deployment`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_name: Option<String>,
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
    /// What the verdicts were judged on besides the pods' PodLifecycle reports; the timeline is
    /// drawn from the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
}

/// Everything an experiment's verdicts are judged on besides the PodLifecycle reports it
/// names. One-way: a finished experiment can be re-judged and redrawn from what is stored, and
/// a conformance fixture is exactly this plus those reports.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    /// When the pod (or Job) was created: time zero of every `...Seconds` expectation.
    pub created_at: jiff::Timestamp,
    /// When the delete action ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<jiff::Timestamp>,
    /// The UIDs of the pods judged: the names of their PodLifecycle reports.
    #[serde(default)]
    pub reports: Vec<String>,
    /// Those reports as they stood when the verdicts were judged on them. A live report goes on
    /// growing (the pod's deletion at the end of the run, for one), so the verdicts and the
    /// timeline are kept with exactly what was judged. Left out (and `podsOmitted` says so) if
    /// they would make the experiment too large to store.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<crate::lifecycle::PodHistory>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods_omitted: Option<String>,
    /// What each podlife-target recorded, by control port.
    #[serde(default)]
    pub targets: Vec<TargetRecord>,
    /// The Job's final status, for experiments that run a Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobObserved>,
    /// What the Deployment and its Service's EndpointSlices did, for experiments that run one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<DeploymentObserved>,
}

/// A Deployment experiment's observations besides its pods' reports.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentObserved {
    /// The replicas wanted, from the start and after each scale action.
    pub replicas: Vec<ReplicasAt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_started_at: Option<jiff::Timestamp>,
    /// When the Deployment's status first showed the rollout complete after it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_complete_at: Option<jiff::Timestamp>,
    /// Each pod's endpoint in the Service's EndpointSlices, as the operator's watch saw it change.
    #[serde(default)]
    pub endpoints: Vec<EndpointChange>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicasAt {
    pub at: jiff::Timestamp,
    pub replicas: i32,
}

/// One pod's endpoint as it changed: `present: false` when it left every slice.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointChange {
    pub at: jiff::Timestamp,
    pub pod: String,
    pub uid: String,
    pub present: bool,
    pub ready: bool,
    pub terminating: bool,
}

impl Evidence {
    /// The record of the target whose control port is `port`.
    #[must_use]
    pub fn target(&self, port: u16) -> Option<&TargetRecord> {
        self.targets.iter().find(|t| t.port == port)
    }
}

/// One podlife-target's record, as read through the pod proxy: its probe counters, and its
/// newest lifecycle events and probe hits over all of its runs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct TargetRecord {
    pub port: u16,
    /// The container that runs this target, when the spec says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Probe hits counted by the target's latest run: `counters[probe][result]`.
    #[serde(default)]
    pub counters: BTreeMap<String, BTreeMap<String, u64>>,
    #[serde(default)]
    pub events: Vec<TargetEvent>,
    #[serde(default)]
    pub hits: Vec<HitTime>,
}

/// One probe hit's time, keyed by the target process's run (its start time) and sequence
/// number so that repeated reads of `/hits` merge without duplicates.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HitTime {
    pub run: u64,
    pub seq: u64,
    pub probe: String,
    pub at_ms: u64,
    /// The scripted answer: ok, fail, hang, slow, close, redirect.
    pub result: String,
}

/// One lifecycle event of podlife-target (start, poststart, prestop, prestop-done, sigterm,
/// exit, ...).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetEvent {
    pub kind: String,
    pub at_ms: u64,
    /// The run (process start, Unix ms) that recorded it.
    pub run: u64,
}

impl TargetRecord {
    /// When the target last recorded a SIGTERM.
    #[must_use]
    pub fn last_sigterm(&self) -> Option<jiff::Timestamp> {
        self.events.iter().rev().find(|e| e.kind == "sigterm").and_then(TargetEvent::at)
    }
}

impl HitTime {
    /// When the hit arrived, by the target's clock.
    #[must_use]
    pub fn at(&self) -> Option<jiff::Timestamp> {
        from_unix_ms(self.at_ms)
    }
}

impl TargetEvent {
    /// When the event happened, by the target's clock.
    #[must_use]
    pub fn at(&self) -> Option<jiff::Timestamp> {
        from_unix_ms(self.at_ms)
    }
}

fn from_unix_ms(ms: u64) -> Option<jiff::Timestamp> {
    jiff::Timestamp::from_millisecond(i64::try_from(ms).ok()?).ok()
}

/// A Job's status as the experiment last read it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct JobObserved {
    pub succeeded: i32,
    pub failed: i32,
    /// Condition types whose status is True (Complete, Failed, SuccessCriteriaMet, ...).
    #[serde(default)]
    pub true_conditions: Vec<String>,
}
