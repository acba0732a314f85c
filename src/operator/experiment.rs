//! Runs ProbeExperiments: creates the pod, performs the actions (through the apiserver's pod
//! proxy, so no network path to pods is needed), watches the real kubelet with the same
//! lifecycle model the reports use, and writes a verdict per expectation.
//!
//! # Guarantees
//! - An experiment always ends: Passed, Failed, or Error with a reason (its timeout bounds it).
//! - An experiment found Running after an operator restart ends in Error: its actions cannot
//!   be resumed faithfully.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{AttachParams, DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use super::deployment;
use super::store::{ReportState, Store};
use crate::crd::PodLifecycle;
use crate::crd::experiment::{
    DeploymentObserved, Evidence, ExperimentPhase, ExperimentStatus, JobObserved, ProbeExperiment, ReplicasAt, TargetRecord,
};
use crate::harness::evidence::{due_actions, merge_read, ports_to_read};
use crate::harness::pod as experiment_pod;
use crate::harness::verdict::evaluate;
use crate::lifecycle::PodHistory;
use crate::lock;
use crate::operator::{keep_watching, retry_watch};
use crate::target::record::RecordSnapshot;

const TICK: Duration = Duration::from_millis(200);

/// How experiments are run.
#[derive(Debug, Clone)]
pub struct ExperimentSettings {
    /// The image of containers that name none.
    pub target_image: String,
    /// Skip [`experiment_pod::check`]: pods may be privileged, use the host, and so on.
    pub allow_unrestricted_pods: bool,
}

/// Watches ProbeExperiments in `namespaces` (all if empty) and runs each new one once, judging
/// it on the reports of `store` (the recorder of the same term).
pub async fn run_experiments(client: Client, namespaces: Vec<String>, settings: ExperimentSettings, store: Arc<Store>) {
    let apis: Vec<Api<ProbeExperiment>> = if namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        namespaces.iter().map(|ns| Api::namespaced(client.clone(), ns)).collect()
    };
    let started: Arc<Mutex<HashSet<String>>> = Arc::default();
    // Every run belongs to this call: when the term that started it ends (a lost lease), the
    // set is dropped and its runs are aborted, so a former leader stops touching experiments.
    let runs: Arc<Mutex<tokio::task::JoinSet<()>>> = Arc::default();
    let streams = apis.into_iter().map(|api| {
        let client = client.clone();
        let started = Arc::clone(&started);
        let settings = settings.clone();
        let runs = Arc::clone(&runs);
        let store = Arc::clone(&store);
        let experiments = retry_watch(watcher(api, watcher::Config::default()), watcher::DefaultBackoff::default());
        keep_watching(experiments, "experiments", move |event| {
            let exp: ProbeExperiment = match event {
                watcher::Event::Apply(exp) | watcher::Event::InitApply(exp) => exp,
                // Forgotten once deleted, so the set holds only experiments that still exist.
                watcher::Event::Delete(exp) => {
                    lock(&started).remove(&exp.uid().unwrap_or_default());
                    return;
                }
                watcher::Event::Init | watcher::Event::InitDone => return,
            };
            let uid = exp.uid().unwrap_or_default();
            let phase = exp.status.as_ref().map(|s| s.phase).unwrap_or_default();
            // A finished one is never run again, so it need not be remembered either.
            if !phase.is_final() && lock(&started).insert(uid) {
                let (client, settings, store) = (client.clone(), settings.clone(), Arc::clone(&store));
                let mut runs = lock(&runs);
                while runs.try_join_next().is_some() {}
                runs.spawn(async move {
                    if phase == ExperimentPhase::Running {
                        let status = ExperimentStatus {
                            phase: ExperimentPhase::Error,
                            reason: Some("the operator restarted while this experiment ran; its actions cannot be resumed".into()),
                            finished_at: Some(Timestamp::now()),
                            ..exp.status.clone().unwrap_or_default()
                        };
                        write_status(&client, &exp, &status).await;
                    } else {
                        run_one(client, exp, settings, store).await;
                    }
                });
            }
        })
    });
    let elsewhere = (!namespaces.is_empty()).then(|| refuse_uncovered(client.clone(), namespaces.clone(), Arc::clone(&runs)));
    let _ = futures::future::join(futures::future::join_all(streams), async {
        if let Some(elsewhere) = elsewhere {
            elsewhere.await;
        }
    })
    .await;
}

/// How long an experiment outside this operator's namespaces is left to another operator that
/// may cover it before it is told that none does (a covering one accepts within a second).
const UNCOVERED_GRACE: Duration = Duration::from_secs(10);

/// Ends experiments in namespaces this operator does not cover, and that no other operator
/// accepted within [`UNCOVERED_GRACE`], in Error with a reason that says so, instead of leaving
/// them waiting forever.
async fn refuse_uncovered(client: Client, covered: Vec<String>, runs: Arc<Mutex<tokio::task::JoinSet<()>>>) {
    let seen: Arc<Mutex<HashSet<String>>> = Arc::default();
    keep_watching(
        retry_watch(watcher(Api::<ProbeExperiment>::all(client.clone()), watcher::Config::default()), watcher::DefaultBackoff::default())
            .applied_objects(),
        "experiments elsewhere",
        move |exp: ProbeExperiment| {
            let ns = exp.namespace().unwrap_or_default();
            if exp.status.is_some() || covered.contains(&ns) || !lock(&seen).insert(exp.uid().unwrap_or_default()) {
                return;
            }
            let age = exp
                .creation_timestamp()
                .map_or(Duration::ZERO, |t| Duration::try_from(Timestamp::now().duration_since(t.0)).unwrap_or(Duration::ZERO));
            let (client, covered, seen) = (client.clone(), covered.join(", "), Arc::clone(&seen));
            let mut runs = lock(&runs);
            while runs.try_join_next().is_some() {}
            runs.spawn(async move {
                tokio::time::sleep(UNCOVERED_GRACE.saturating_sub(age)).await;
                let reason = format!(
                    "no podlife operator runs experiments in namespace {ns}: the one that answered covers only {covered} \
                     (add {ns} to the chart's selection.namespaces, or run the experiment in one of those)"
                );
                refuse_if_still_new(&client, &exp, reason).await;
                // Done with it: refused or accepted, it now has a status and is skipped; deleted,
                // it sends nothing more. So the set holds only experiments still waiting.
                lock(&seen).remove(&exp.uid().unwrap_or_default());
            });
        },
    )
    .await;
}

/// Writes Error with `reason` unless the experiment changed since `exp` was read (another
/// operator accepted it): the write carries `exp`'s resourceVersion as a precondition.
async fn refuse_if_still_new(client: &Client, exp: &ProbeExperiment, reason: String) {
    let api: Api<ProbeExperiment> = Api::namespaced(client.clone(), &exp.namespace().unwrap_or_default());
    let status =
        ExperimentStatus { phase: ExperimentPhase::Error, reason: Some(reason), finished_at: Some(Timestamp::now()), ..Default::default() };
    let patch = json!({"apiVersion": "podlife.io/v1alpha1", "kind": "ProbeExperiment",
        "metadata": {"resourceVersion": exp.resource_version()}, "status": status});
    match api.patch_status(&exp.name_any(), &PatchParams::apply("podlife-experiments").force(), &Patch::Apply(patch)).await {
        Ok(_) => {
            tracing::info!(experiment = %exp.name_any(), namespace = ?exp.namespace(), "refused an experiment in a namespace not covered")
        }
        // 409: it changed (accepted elsewhere, or deleted and recreated): not ours to end.
        Err(e) => tracing::debug!(experiment = %exp.name_any(), error = %e, "left an experiment elsewhere alone"),
    }
}

async fn write_status(client: &Client, exp: &ProbeExperiment, status: &ExperimentStatus) {
    let api: Api<ProbeExperiment> = Api::namespaced(client.clone(), &exp.namespace().unwrap_or_default());
    let patch = json!({"apiVersion": "podlife.io/v1alpha1", "kind": "ProbeExperiment", "status": status});
    if let Err(e) = api.patch_status(&exp.name_any(), &PatchParams::apply("podlife-experiments").force(), &Patch::Apply(patch)).await {
        tracing::warn!(experiment = %exp.name_any(), error = %e, "could not write experiment status");
    }
}

/// The control token's Secret: named after the experiment's UID, so an earlier run's (which
/// the garbage collector removes with its experiment) never collides.
fn token_secret_name(exp: &ProbeExperiment) -> String {
    format!("pe-token-{}", exp.uid().unwrap_or_default())
}

/// Creates the experiment's control token and its Secret, owned by the experiment.
async fn create_token(client: &Client, exp: &ProbeExperiment) -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("cannot generate a control token: {e}"))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let owner = exp.controller_owner_ref(&()).ok_or("the experiment has no uid yet")?;
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": token_secret_name(exp), "labels": {"podlife.io/experiment": exp.name_any()}, "ownerReferences": [owner]},
        "type": "Opaque",
        "stringData": {experiment_pod::TOKEN_KEY: token},
    }))
    .map_err(|e| e.to_string())?;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &exp.namespace().unwrap_or_default());
    secrets.create(&PostParams::default(), &secret).await.map_err(|e| format!("cannot create the control token's Secret: {e}"))?;
    Ok(token)
}

/// One experiment from start to verdict.
#[tracing::instrument(skip_all, fields(experiment = %exp.name_any()))]
async fn run_one(client: Client, exp: ProbeExperiment, settings: ExperimentSettings, store: Arc<Store>) {
    let ns = exp.namespace().unwrap_or_default();
    let mut status = ExperimentStatus { phase: ExperimentPhase::Running, started_at: Some(Timestamp::now()), ..Default::default() };
    write_status(&client, &exp, &status).await;
    let timeout = Duration::from_secs(u64::from(exp.spec.timeout_seconds));
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let mut created = None;
    let outcome = tokio::time::timeout(timeout, observe(&client, &exp, &settings, &store, &mut status, &mut created)).await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(reason)) => {
            status.phase = ExperimentPhase::Error;
            status.reason = Some(reason);
        }
        Err(_) => {
            status.phase = ExperimentPhase::Error;
            status.reason = Some(format!("timed out after {}s", exp.spec.timeout_seconds));
        }
    }
    status.finished_at = Some(Timestamp::now());
    tracing::info!(phase = ?status.phase, summary = %status.summary, "experiment finished");
    write_status(&client, &exp, &status).await;
    // Only what this run created: a precondition on its UID, so a same-named object made by
    // anyone else since is left alone.
    let dp = |uid: &str| DeleteParams {
        grace_period_seconds: Some(0),
        propagation_policy: Some(PropagationPolicy::Background),
        preconditions: Some(kube::api::Preconditions { uid: Some(uid.to_string()), resource_version: None }),
        ..Default::default()
    };
    match created {
        Some(Created::Job { name, uid }) => drop(Api::<Job>::namespaced(client.clone(), &ns).delete(&name, &dp(&uid)).await),
        Some(Created::Deployment { name, uid, service_uid }) => {
            drop(Api::<Deployment>::namespaced(client.clone(), &ns).delete(&name, &dp(&uid)).await);
            drop(Api::<Service>::namespaced(client.clone(), &ns).delete(&name, &dp(&service_uid)).await);
        }
        Some(Created::Pod { name, uid }) => drop(pods.delete(&name, &dp(&uid)).await),
        None => {}
    }
}

/// What a run created, to delete when it ends.
enum Created {
    Pod {
        name: String,
        uid: String,
    },
    Job {
        name: String,
        uid: String,
    },
    /// With its Service of the same name.
    Deployment {
        name: String,
        uid: String,
        service_uid: String,
    },
}

/// What the experiment created: one pod, or a Job whose pods are all observed.
enum Subject {
    Pod { name: String, uid: String },
    Job { name: String },
    Deployment { name: String },
}

/// Deletes a leftover object of the same name (an earlier run of this experiment) and waits
/// until it is gone; an object that run did not own stops the experiment instead.
async fn delete_leftover<K>(api: &Api<K>, kind: &'static str, name: &str, experiment: &str) -> Result<(), String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let existing = api.get_opt(name).await.map_err(|e| format!("cannot read {kind} {name}: {e}"))?;
    let Some(existing) = existing else { return Ok(()) };
    experiment_pod::may_replace(kind, name, existing.meta().owner_references.as_deref(), experiment).map_err(|e| e.to_string())?;
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        propagation_policy: Some(PropagationPolicy::Background),
        preconditions: Some(kube::api::Preconditions { uid: existing.meta().uid.clone(), resource_version: None }),
        ..Default::default()
    };
    let _ = api.delete(name, &dp).await;
    for _ in 0..100 {
        if api.get_opt(name).await.ok().flatten().is_none() {
            return Ok(());
        }
        tokio::time::sleep(TICK).await;
    }
    Err(format!("{kind} {name} from an earlier run was still being deleted after 20 s"))
}

/// Removes an earlier run's pod or Job of this experiment's name, or refuses one it does not own.
async fn clear_leftover(client: &Client, exp: &ProbeExperiment) -> Result<(), String> {
    let ns = exp.namespace().unwrap_or_default();
    let name = experiment_pod::pod_name(&exp.name_any());
    if exp.spec.job.is_some() {
        delete_leftover(&Api::<Job>::namespaced(client.clone(), &ns), "job", &name, &exp.name_any()).await
    } else if exp.spec.deployment.is_some() {
        delete_leftover(&Api::<Deployment>::namespaced(client.clone(), &ns), "deployment", &name, &exp.name_any()).await?;
        delete_leftover(&Api::<Service>::namespaced(client.clone(), &ns), "service", &name, &exp.name_any()).await
    } else {
        delete_leftover(&Api::<Pod>::namespaced(client.clone(), &ns), "pod", &name, &exp.name_any()).await
    }
}

async fn create_subject(client: &Client, exp: &ProbeExperiment, pod: Pod) -> Result<(Subject, Created, Timestamp), String> {
    let ns = exp.namespace().unwrap_or_default();
    let name = experiment_pod::pod_name(&exp.name_any());
    if let Some(settings) = &exp.spec.deployment {
        let made = deployment::create(client, exp, pod, settings).await?;
        let subject = Subject::Deployment { name: made.name.clone() };
        return Ok((subject, Created::Deployment { name: made.name, uid: made.uid, service_uid: made.service_uid }, made.at));
    }
    let Some(settings) = &exp.spec.job else {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let created = pods.create(&PostParams::default(), &pod).await.map_err(|e| format!("cannot create pod {name}: {e}"))?;
        let at = created.metadata.creation_timestamp.clone().map_or_else(Timestamp::now, |t| t.0);
        let uid = created.uid().unwrap_or_default();
        return Ok((Subject::Pod { name: name.clone(), uid: uid.clone() }, Created::Pod { name, uid }, at));
    };
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"podlife.io/experiment": exp.name_any()}, "ownerReferences": pod.metadata.owner_references},
        "spec": {
            "completions": settings.completions,
            "parallelism": settings.parallelism,
            "backoffLimit": settings.backoff_limit,
            "template": {"metadata": {"labels": pod.metadata.labels}, "spec": pod.spec},
        },
    }))
    .map_err(|e| e.to_string())?;
    let created = jobs.create(&PostParams::default(), &job).await.map_err(|e| format!("cannot create job {name}: {e}"))?;
    let at = created.metadata.creation_timestamp.clone().map_or_else(Timestamp::now, |t| t.0);
    Ok((Subject::Job { name: name.clone() }, Created::Job { name, uid: created.uid().unwrap_or_default() }, at))
}

/// The Job's counts and True conditions; `None` if it cannot be read.
async fn read_job(jobs: &Api<Job>, name: &str) -> Option<JobObserved> {
    let status = jobs.get_opt(name).await.ok().flatten()?.status.unwrap_or_default();
    Some(JobObserved {
        succeeded: status.succeeded.unwrap_or(0),
        failed: status.failed.unwrap_or(0),
        true_conditions: status.conditions.unwrap_or_default().into_iter().filter(|c| c.status == "True").map(|c| c.type_).collect(),
    })
}

/// How long the end of a run waits for the recorder to have written everything it observed
/// of the experiment's pods (its write window is a second; a retried write takes longer).
const REPORT_WAIT: Duration = Duration::from_secs(30);

async fn observe(
    client: &Client,
    exp: &ProbeExperiment,
    settings: &ExperimentSettings,
    store: &Store,
    status: &mut ExperimentStatus,
    created: &mut Option<Created>,
) -> Result<(), String> {
    let ns = exp.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    // Checked before anything is created: a refused pod, or a same-named object the experiment
    // does not own, leaves nothing behind.
    let pod = experiment_pod::build(exp, &settings.target_image, settings.allow_unrestricted_pods, &token_secret_name(exp))?;
    clear_leftover(client, exp).await?;
    let token = create_token(client, exp).await?;
    let (subject, made, created_at) = create_subject(client, exp, pod).await?;
    *created = Some(made);
    let mut evidence = Evidence { created_at, ..Default::default() };
    match &subject {
        Subject::Pod { name, uid } => {
            status.pod_name = Some(name.clone());
            status.report = Some(uid.clone());
            evidence.reports.push(uid.clone());
        }
        Subject::Job { name } => status.job_name = Some(name.clone()),
        Subject::Deployment { name } => {
            status.deployment_name = Some(name.clone());
            let replicas = exp.spec.deployment.as_ref().map_or(1, |d| d.replicas);
            evidence.deployment =
                Some(DeploymentObserved { replicas: vec![ReplicasAt { at: created_at, replicas }], ..Default::default() });
        }
    }
    write_status(client, exp, status).await;
    let endpoints = match &subject {
        Subject::Deployment { name } => Some(deployment::EndpointWatch::start(client, &ns, name)),
        _ => None,
    };
    // When every replica of the Deployment was first Ready: `when: Ready` of its actions.
    let mut all_ready_at: Option<Timestamp> = None;

    let end = Duration::from_secs(u64::from(exp.spec.duration_seconds));
    let mut pending: Vec<usize> = (0..exp.spec.actions.len()).collect();
    let ports = ports_to_read(&exp.spec);
    // A port enters the evidence with its first answer: one never read is "not reachable".
    let mut records: BTreeMap<u16, TargetRecord> = BTreeMap::new();
    let mut last_poll = std::time::Instant::now() - Duration::from_secs(1);
    loop {
        let elapsed = Timestamp::now().duration_since(created_at).as_secs_f64();
        if let Subject::Pod { name, uid } = &subject {
            let since_created = |at: Timestamp| at.duration_since(created_at).as_secs_f64();
            let due = due_actions(&exp.spec.actions, &pending, elapsed, |c| store.first_true(uid, c).map(since_created));
            for &i in &due {
                let action = &exp.spec.actions[i];
                if action.delete.is_some() {
                    evidence.deleted_at = Some(Timestamp::now());
                }
                let result = perform(client, &ns, name, exp, action, &token).await;
                status.actions_done.push(format!("{elapsed:.1}s {}: {result}", action.name));
            }
            pending.retain(|i| !due.contains(i));
            if !due.is_empty() {
                write_status(client, exp, status).await;
            }
        }
        if let (Subject::Deployment { name }, Some(observed)) = (&subject, evidence.deployment.as_mut()) {
            let since_created = |at: Timestamp| at.duration_since(created_at).as_secs_f64();
            let due =
                due_actions(&exp.spec.actions, &pending, elapsed, |c| (c == "Ready").then_some(all_ready_at.map(since_created)).flatten());
            for &i in &due {
                let action = &exp.spec.actions[i];
                let result = deployment::perform(client, &ns, name, exp, action, observed).await;
                status.actions_done.push(format!("{elapsed:.1}s {}: {result}", action.name));
            }
            pending.retain(|i| !due.contains(i));
            if !due.is_empty() {
                write_status(client, exp, status).await;
            }
        }
        // Once a second: read the target's record while the pod is still there, and the Job.
        if last_poll.elapsed() >= Duration::from_secs(1) {
            last_poll = std::time::Instant::now();
            match &subject {
                Subject::Pod { name, .. } => {
                    for (port, container) in &ports {
                        if let Some(read) = fetch_hits(client, &ns, name, *port, &token).await {
                            let record = records.entry(*port).or_insert_with(|| TargetRecord {
                                port: *port,
                                container: container.clone(),
                                ..Default::default()
                            });
                            merge_read(record, read);
                        }
                    }
                }
                Subject::Deployment { name } => {
                    if let Some(observed) = evidence.deployment.as_mut() {
                        deployment::poll(client, &ns, name, observed, &mut all_ready_at).await;
                    }
                    note_pods(&pods, &format!("podlife.io/experiment={}", exp.name_any()), &mut evidence.reports).await;
                }
                Subject::Job { name } => {
                    evidence.job = read_job(&jobs, name).await.or(evidence.job.take());
                    note_pods(&pods, &job_pods(name), &mut evidence.reports).await;
                    // A finished Job has nothing more to show: judge it now.
                    if evidence.job.as_ref().is_some_and(|j| j.true_conditions.iter().any(|c| c == "Complete" || c == "Failed")) {
                        break;
                    }
                }
            }
        }
        if elapsed >= end.as_secs_f64() {
            break;
        }
        tokio::time::sleep(TICK).await;
    }
    match &subject {
        Subject::Job { name } => note_pods(&pods, &job_pods(name), &mut evidence.reports).await,
        Subject::Deployment { .. } => note_pods(&pods, &format!("podlife.io/experiment={}", exp.name_any()), &mut evidence.reports).await,
        Subject::Pod { .. } => {}
    }
    // Let the last status and events reach the recorder before its reports are read.
    tokio::time::sleep(Duration::from_secs(1)).await;
    if let (Some(watch), Some(observed)) = (endpoints, evidence.deployment.as_mut()) {
        observed.endpoints = watch.finish();
    }
    evidence.pods = read_reports(client, store, &ns, &evidence.reports).await?;
    evidence.targets = records.into_values().collect();
    status.report = evidence.reports.first().cloned();
    status.verdicts = evaluate(&exp.spec.expectations, &evidence.pods, &evidence);
    keep_within_size(&mut evidence);
    status.evidence = Some(evidence);
    let passed = status.verdicts.iter().filter(|v| v.passed).count();
    status.summary = format!("{passed}/{}", status.verdicts.len());
    status.phase = if passed == status.verdicts.len() { ExperimentPhase::Passed } else { ExperimentPhase::Failed };
    Ok(())
}

/// The most the judged reports may take in an experiment's status: etcd refuses objects over
/// 1.5 MiB, and the target's record and verdicts need room too.
const MAX_JUDGED_REPORT_BYTES: usize = 768 * 1024;

/// Leaves the judged reports out of the evidence if they would make the status too large; the
/// live reports remain, and the evidence says why they are missing.
fn keep_within_size(evidence: &mut Evidence) {
    let bytes: usize = evidence.pods.iter().map(|p| serde_json::to_vec(p).map_or(usize::MAX / 64, |v| v.len())).sum();
    if bytes > MAX_JUDGED_REPORT_BYTES {
        evidence.pods.clear();
        evidence.pods_omitted = Some(format!(
            "the judged reports took {} KiB, more than the {} KiB an experiment keeps; the live PodLifecycle reports remain",
            bytes / 1024,
            MAX_JUDGED_REPORT_BYTES / 1024
        ));
    }
}

fn job_pods(job: &str) -> String {
    format!("batch.kubernetes.io/job-name={job}")
}

/// Adds the UIDs of the pods matching `selector` not yet known, oldest first.
async fn note_pods(pods: &Api<Pod>, selector: &str, uids: &mut Vec<String>) {
    let Ok(list) = pods.list(&ListParams::default().labels(selector)).await else { return };
    let mut found: Vec<&Pod> = list.items.iter().collect();
    found.sort_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0));
    for uid in found.into_iter().filter_map(|p| p.uid()) {
        if !uids.contains(&uid) {
            uids.push(uid);
        }
    }
}

/// The PodLifecycle reports of `uids` as the recorder wrote them, once everything it observed of
/// those pods is written (bounded by [`REPORT_WAIT`]).
async fn read_reports(client: &Client, store: &Store, ns: &str, uids: &[String]) -> Result<Vec<PodHistory>, String> {
    let deadline = tokio::time::Instant::now() + REPORT_WAIT;
    let reports: Api<PodLifecycle> = Api::namespaced(client.clone(), ns);
    let mut histories = Vec::with_capacity(uids.len());
    for uid in uids {
        loop {
            match store.report_state(uid) {
                ReportState::Written => break,
                state if tokio::time::Instant::now() >= deadline => {
                    return Err(match state {
                        ReportState::Untracked => format!(
                            "pod {uid} is not tracked by this operator's recorder, so there is no report to judge it on \
                             (the operator's pod selection must cover the experiment's pods: label podlife.io/track=true, \
                             or their namespace)"
                        ),
                        _ => format!("the report of pod {uid} was still not written after {}s", REPORT_WAIT.as_secs()),
                    });
                }
                _ => tokio::time::sleep(TICK).await,
            }
        }
        let report = reports.get(uid).await.map_err(|e| format!("cannot read the report of pod {uid}: {e}"))?;
        histories.push(report.status.ok_or_else(|| format!("the report of pod {uid} has no status yet"))?);
    }
    Ok(histories)
}

async fn perform(
    client: &Client,
    ns: &str,
    pod: &str,
    exp: &ProbeExperiment,
    action: &crate::crd::experiment::Action,
    token: &str,
) -> String {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    if let Some(call) = &action.call {
        let uri = format!("/api/v1/namespaces/{ns}/pods/{pod}:{}/proxy{}", call.port, call.path);
        let req = http::Request::builder()
            .method(call.method.as_str())
            .uri(uri)
            .header(crate::target::TOKEN_HEADER, token)
            .body(call.body.clone().unwrap_or_default().into_bytes());
        return match req {
            Ok(req) => match client.request_text(req).await {
                Ok(text) => format!("{} {} -> {}", call.method, call.path, one_line(&text)),
                Err(e) => format!("{} {} failed: {e}", call.method, call.path),
            },
            Err(e) => format!("bad request: {e}"),
        };
    }
    if let Some(d) = &action.delete {
        let dp = DeleteParams { grace_period_seconds: d.grace_period_seconds.and_then(|g| u32::try_from(g).ok()), ..Default::default() };
        return match pods.delete(pod, &dp).await {
            Ok(_) => format!("deleted (grace {:?})", d.grace_period_seconds),
            Err(e) => format!("delete failed: {e}"),
        };
    }
    if let Some(x) = &action.exec {
        let container = x.container.clone().or_else(|| exp.spec.pod.containers.first().map(|c| c.name.clone())).unwrap_or_default();
        // Bounded like every other step: a command that never ends must not stall the experiment.
        return match tokio::time::timeout(EXEC_LIMIT, exec(&pods, pod, &container, &x.command)).await {
            Ok(Ok(done)) => format!("exec {} in {container} -> {done}", x.command.join(" ")),
            Ok(Err(e)) => format!("exec {} in {container} failed: {e}", x.command.join(" ")),
            Err(_) => format!("exec {} in {container} still running after {}s; abandoned", x.command.join(" "), EXEC_LIMIT.as_secs()),
        };
    }
    "nothing to do".into()
}

const EXEC_LIMIT: Duration = Duration::from_secs(30);

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(120).collect()
}

/// Runs `command` in `container` through pods/exec; "exit N: output".
async fn exec(pods: &Api<Pod>, pod: &str, container: &str, command: &[String]) -> Result<String, kube::Error> {
    use tokio::io::AsyncReadExt;
    let params = AttachParams::default().container(container).stdin(false).stdout(true).stderr(true);
    let mut process = pods.exec(pod, command.iter().map(String::as_str), &params).await?;
    let mut output = String::new();
    if let Some(mut out) = process.stdout() {
        let _ = out.read_to_string(&mut output).await;
    }
    if let Some(mut err) = process.stderr() {
        let _ = err.read_to_string(&mut output).await;
    }
    let status = match process.take_status() {
        Some(s) => s.await,
        None => None,
    };
    let _ = process.join().await;
    Ok(format!("{}: {}", exit_of(status.as_ref()), one_line(&output)))
}

/// The exit code in a pods/exec status: Success is 0; a failure carries it as an ExitCode cause.
fn exit_of(status: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>) -> String {
    let Some(s) = status else { return "exit unknown".into() };
    if s.status.as_deref() == Some("Success") {
        return "exit 0".into();
    }
    let code = s
        .details
        .as_ref()
        .and_then(|d| d.causes.as_ref())
        .and_then(|c| c.iter().find(|c| c.reason.as_deref() == Some("ExitCode")).and_then(|c| c.message.clone()));
    match code {
        Some(c) => format!("exit {c}"),
        None => format!("failed: {}", s.message.as_deref().unwrap_or("no message")),
    }
}

/// The target's record, read through the pod proxy; `None` if it does not answer in 2 s.
async fn fetch_hits(client: &Client, ns: &str, pod: &str, port: u16, token: &str) -> Option<RecordSnapshot> {
    let req = http::Request::get(format!("/api/v1/namespaces/{ns}/pods/{pod}:{port}/proxy/hits"))
        .header(crate::target::TOKEN_HEADER, token)
        .body(Vec::new())
        .ok()?;
    let text = tokio::time::timeout(Duration::from_secs(2), client.request_text(req)).await.ok()?.ok()?;
    serde_json::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::PodHistory;

    #[test]
    fn judged_reports_too_large_to_store_are_left_out_with_a_reason() {
        let small = PodHistory::new("p", "u");
        let mut evidence = Evidence { pods: vec![small.clone()], ..Default::default() };
        keep_within_size(&mut evidence);
        assert_eq!((evidence.pods.len(), evidence.pods_omitted.as_deref()), (1, None));
        // Many copies of a report with a long pod name pass the bound: all go, and it says why.
        let mut big = small;
        big.pod = "x".repeat(64 * 1024);
        let mut evidence = Evidence { pods: vec![big; 16], ..Default::default() };
        keep_within_size(&mut evidence);
        assert!(evidence.pods.is_empty());
        assert!(evidence.pods_omitted.as_deref().is_some_and(|w| w.contains("KiB")), "{:?}", evidence.pods_omitted);
    }
}
