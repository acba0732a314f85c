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

use futures::TryStreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use crate::crd::experiment::{ExperimentPhase, ExperimentStatus, ProbeExperiment};
use crate::harness::verdict::{Observed, evaluate};
use crate::lifecycle::{BackoffProfile, EventSnapshot, PodHistory, PodSnapshot, Source};

const TICK: Duration = Duration::from_millis(200);

/// Watches ProbeExperiments in `namespaces` (all if empty) and runs each new one once.
pub async fn run_experiments(client: Client, namespaces: Vec<String>, target_image: String, profile: BackoffProfile) {
    let apis: Vec<Api<ProbeExperiment>> = if namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        namespaces.iter().map(|ns| Api::namespaced(client.clone(), ns)).collect()
    };
    let started: Arc<Mutex<HashSet<String>>> = Arc::default();
    let streams = apis.into_iter().map(|api| {
        let client = client.clone();
        let started = Arc::clone(&started);
        let image = target_image.clone();
        watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .map_err(|e| tracing::warn!(error = %e, "experiment watch error"))
            .try_for_each(move |exp: ProbeExperiment| {
                let uid = exp.uid().unwrap_or_default();
                let phase = exp.status.as_ref().map(|s| s.phase).unwrap_or_default();
                let fresh = started.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(uid);
                if fresh && !phase.is_final() {
                    let (client, image) = (client.clone(), image.clone());
                    tokio::spawn(async move {
                        if phase == ExperimentPhase::Running {
                            let status = ExperimentStatus {
                                phase: ExperimentPhase::Error,
                                reason: Some("the operator restarted while this experiment ran; its actions cannot be resumed".into()),
                                finished_at: Some(Timestamp::now()),
                                ..exp.status.clone().unwrap_or_default()
                            };
                            write_status(&client, &exp, &status).await;
                        } else {
                            run_one(client, exp, image, profile).await;
                        }
                    });
                }
                futures::future::ready(Ok(()))
            })
    });
    let _ = futures::future::join_all(streams).await;
}

async fn write_status(client: &Client, exp: &ProbeExperiment, status: &ExperimentStatus) {
    let api: Api<ProbeExperiment> = Api::namespaced(client.clone(), &exp.namespace().unwrap_or_default());
    let patch = json!({"apiVersion": "podlife.io/v1alpha1", "kind": "ProbeExperiment", "status": status});
    if let Err(e) = api.patch_status(&exp.name_any(), &PatchParams::apply("podlife-experiments").force(), &Patch::Apply(patch)).await {
        tracing::warn!(experiment = %exp.name_any(), error = %e, "could not write experiment status");
    }
}

fn pod_name(exp: &str) -> String {
    let n: String = format!("pe-{exp}").chars().take(63).collect();
    n.trim_end_matches(['-', '.']).to_string()
}

fn build_pod(exp: &ProbeExperiment, image: &str) -> Result<Pod, String> {
    let mut spec = exp.spec.pod.clone();
    if spec.containers.is_empty() {
        return Err("spec.pod.containers is empty".into());
    }
    for c in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
        if c.image.as_deref().unwrap_or_default().is_empty() {
            c.image = Some(image.to_string());
        }
        c.image_pull_policy.get_or_insert_with(|| "IfNotPresent".into());
    }
    let owner = exp.controller_owner_ref(&()).ok_or("the experiment has no uid yet")?;
    let mut pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": pod_name(&exp.name_any()), "labels": {"podlife.io/experiment": exp.name_any(), "podlife.io/track": "true"}},
    }))
    .map_err(|e| e.to_string())?;
    pod.metadata.owner_references = Some(vec![owner]);
    pod.spec = Some(spec);
    Ok(pod)
}

/// One experiment from start to verdict.
#[tracing::instrument(skip_all, fields(experiment = %exp.name_any()))]
async fn run_one(client: Client, exp: ProbeExperiment, image: String, profile: BackoffProfile) {
    let ns = exp.namespace().unwrap_or_default();
    let mut status = ExperimentStatus { phase: ExperimentPhase::Running, started_at: Some(Timestamp::now()), ..Default::default() };
    write_status(&client, &exp, &status).await;
    let timeout = Duration::from_secs(u64::from(exp.spec.timeout_seconds));
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let outcome = tokio::time::timeout(timeout, observe(&client, &exp, &image, &profile, &mut status)).await;
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
    let _ = pods.delete(&pod_name(&exp.name_any()), &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await;
}

async fn observe(
    client: &Client,
    exp: &ProbeExperiment,
    image: &str,
    profile: &BackoffProfile,
    status: &mut ExperimentStatus,
) -> Result<(), String> {
    let ns = exp.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let name = pod_name(&exp.name_any());
    let _ = pods.delete(&name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await;
    for _ in 0..100 {
        if pods.get_opt(&name).await.ok().flatten().is_none() {
            break;
        }
        tokio::time::sleep(TICK).await;
    }
    let created =
        pods.create(&PostParams::default(), &build_pod(exp, image)?).await.map_err(|e| format!("cannot create pod {name}: {e}"))?;
    let created_at = created.metadata.creation_timestamp.clone().map_or_else(Timestamp::now, |t| t.0);
    let uid = created.uid().unwrap_or_default();
    status.pod_name = Some(name.clone());
    status.report = Some(uid.clone());
    write_status(client, exp, status).await;

    let history = Arc::new(Mutex::new(PodHistory::new(&name, &uid)));
    let pod_watch = {
        let history = Arc::clone(&history);
        let profile = *profile;
        let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
        tokio::spawn(watcher(pods.clone(), cfg).default_backoff().applied_objects().try_for_each(move |p: Pod| {
            if p.uid().as_deref() == Some(uid.as_str()) {
                history.lock().unwrap_or_else(std::sync::PoisonError::into_inner).observe(
                    &PodSnapshot::from_pod(&p),
                    Timestamp::now(),
                    Source::Live,
                    &profile,
                );
            }
            futures::future::ready(Ok(()))
        }))
    };
    let event_watch = {
        let history = Arc::clone(&history);
        let events: Api<Event> = Api::namespaced(client.clone(), &ns);
        let cfg = watcher::Config::default().fields(&format!("involvedObject.name={name},involvedObject.kind=Pod"));
        tokio::spawn(watcher(events, cfg).default_backoff().touched_objects().try_for_each(move |e: Event| {
            if let Some(s) = EventSnapshot::from_event(&e) {
                history.lock().unwrap_or_else(std::sync::PoisonError::into_inner).observe_event(&s);
            }
            futures::future::ready(Ok(()))
        }))
    };

    let end = Duration::from_secs(u64::from(exp.spec.duration_seconds));
    let mut pending: Vec<usize> = (0..exp.spec.actions.len()).collect();
    let mut observed = Observed::default();
    let mut hit_ports: Vec<u16> = exp
        .spec
        .expectations
        .iter()
        .filter_map(|e| e.probe_hits.as_ref().map(|p| p.port).or(e.hook_order.as_ref().map(|o| o.port)))
        .collect();
    hit_ports.dedup();
    loop {
        let elapsed = Timestamp::now().duration_since(created_at).as_secs_f64();
        let mut fired = Vec::new();
        for &i in &pending {
            let action = &exp.spec.actions[i];
            let due = match (&action.at_seconds, &action.when) {
                (Some(at), _) => Some(*at),
                (None, Some(cond)) => {
                    let h = history.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    h.conditions
                        .iter()
                        .find(|c| &c.type_ == cond && c.status == "True")
                        .map(|c| c.at.duration_since(created_at).as_secs_f64())
                }
                (None, None) => Some(0.0),
            }
            .map(|t| t + action.delay_seconds.unwrap_or(0.0));
            if due.is_some_and(|d| elapsed >= d) {
                fired.push(i);
                if action.delete.is_some() {
                    observed.deleted_at = Some(Timestamp::now());
                }
                let result = perform(client, &ns, &name, action).await;
                status.actions_done.push(format!("{elapsed:.1}s {}: {result}", action.name));
            }
        }
        pending.retain(|i| !fired.contains(i));
        if !fired.is_empty() {
            write_status(client, exp, status).await;
        }
        // Read the target's counters while the pod is still there.
        for port in &hit_ports {
            if let Some((counters, events)) = fetch_hits(client, &ns, &name, *port).await {
                observed.hits.insert(*port, counters);
                // A container killed and restarted starts a new record; keep the longest view.
                let known = observed.target_events.entry(*port).or_default();
                if events.len() >= known.len() {
                    *known = events;
                }
            }
        }
        if elapsed >= end.as_secs_f64() {
            break;
        }
        tokio::time::sleep(if hit_ports.is_empty() { TICK } else { Duration::from_secs(1) }).await;
    }
    // Let the last status and events arrive before judging.
    tokio::time::sleep(Duration::from_secs(1)).await;
    pod_watch.abort();
    event_watch.abort();
    let history = history.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    status.verdicts = evaluate(&exp.spec.expectations, &history, &observed, created_at);
    let passed = status.verdicts.iter().filter(|v| v.passed).count();
    status.summary = format!("{passed}/{}", status.verdicts.len());
    status.phase = if passed == status.verdicts.len() { ExperimentPhase::Passed } else { ExperimentPhase::Failed };
    Ok(())
}

async fn perform(client: &Client, ns: &str, pod: &str, action: &crate::crd::experiment::Action) -> String {
    if let Some(call) = &action.call {
        let uri = format!("/api/v1/namespaces/{ns}/pods/{pod}:{}/proxy{}", call.port, call.path);
        let req = http::Request::builder().method(call.method.as_str()).uri(uri).body(call.body.clone().unwrap_or_default().into_bytes());
        return match req {
            Ok(req) => match client.request_text(req).await {
                Ok(text) => format!("{} {} -> {}", call.method, call.path, text.trim().chars().take(80).collect::<String>()),
                Err(e) => format!("{} {} failed: {e}", call.method, call.path),
            },
            Err(e) => format!("bad request: {e}"),
        };
    }
    if let Some(d) = &action.delete {
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        let dp = DeleteParams { grace_period_seconds: d.grace_period_seconds.and_then(|g| u32::try_from(g).ok()), ..Default::default() };
        return match pods.delete(pod, &dp).await {
            Ok(_) => format!("deleted (grace {:?})", d.grace_period_seconds),
            Err(e) => format!("delete failed: {e}"),
        };
    }
    "nothing to do".into()
}

/// The target's probe counters and its lifecycle event kinds, in order.
async fn fetch_hits(client: &Client, ns: &str, pod: &str, port: u16) -> Option<(BTreeMap<String, BTreeMap<String, u64>>, Vec<String>)> {
    let req = http::Request::get(format!("/api/v1/namespaces/{ns}/pods/{pod}:{port}/proxy/hits")).body(Vec::new()).ok()?;
    let text = tokio::time::timeout(Duration::from_secs(2), client.request_text(req)).await.ok()?.ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let counters = serde_json::from_value(v.get("counters")?.clone()).ok()?;
    let events = v.get("events")?.as_array()?.iter().filter_map(|e| e.get("kind")?.as_str().map(str::to_string)).collect();
    Some((counters, events))
}
