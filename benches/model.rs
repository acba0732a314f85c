//! What the pure lifecycle model costs per input, on watch streams recorded from the real
//! kubelet (`tests/fixtures/*.jsonl`):
//! - a status update: `PodSnapshot::from_pod` and `PodHistory::observe`, what the operator does
//!   for each pod watch event;
//! - an event: `EventSnapshot::from_event` and `PodHistory::observe_event`;
//! - a report write's encoding: the status patch body, as the writer sends it;
//! - decoding one pod watch event, JSON (`LeanPod`, then `from_pod`) against protobuf (the
//!   operator's default), on one watch recorded in both formats (`tests/fixtures/proto`).
//!
//! Two modes:
//! - `cargo bench --bench model`: criterion, time per element;
//! - `PODLIFE_MODEL_STEP=status_update PODLIFE_MODEL_LOOPS=N target/release/deps/model-…` (what
//!   `e2e/bench/model-cost` runs under callgrind): one step N times with no timing, so the
//!   instruction count of N loops minus that of 0 loops is the model's alone, stable on a noisy
//!   machine.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput};
use podlife::lifecycle::recording::{Observed, Recording};
use podlife::lifecycle::{BackoffProfile, EventSnapshot, PodHistory, PodSnapshot, Source};
use podlife::operator::pod_proto::recorded_frames;

/// One watch of a kubelet-run pod, recorded in both formats from the same resourceVersion.
const WATCH_PROTOBUF: &[u8] = include_bytes!("../tests/fixtures/proto/watch.pb");
const WATCH_JSON: &str = include_str!("../tests/fixtures/proto/watch.jsonl");

fn decode_protobuf(frames: &[&[u8]]) {
    for frame in frames {
        black_box(podlife::operator::pod_proto::decode_watch_frame(black_box(frame)).expect("the fixture decodes"));
    }
}

fn decode_json(lines: &[&str]) {
    for line in lines {
        black_box(podlife::operator::pod_watch::decode_json_watch_line(black_box(line)).expect("the fixture decodes"));
    }
}

const FIXTURES: [(&str, &str); 2] =
    [("crashloop", include_str!("../tests/fixtures/crashloop.jsonl")), ("liveness", include_str!("../tests/fixtures/liveness.jsonl"))];

/// One recording, split into what each measured step takes as input.
struct Workload {
    name: &'static str,
    pods: Vec<(jiff::Timestamp, k8s_openapi::api::core::v1::Pod)>,
    events: Vec<k8s_openapi::api::core::v1::Event>,
    /// The history after every status update and before any event: the events' starting point.
    before_events: PodHistory,
    /// The history after everything: what the last write of the report encodes.
    complete: PodHistory,
}

fn workloads() -> Vec<Workload> {
    FIXTURES
        .iter()
        .map(|(name, jsonl)| {
            let recording = Recording::parse(jsonl).expect("the fixtures parse");
            let mut pods = Vec::new();
            let mut events = Vec::new();
            for observed in &recording.observations {
                match observed {
                    Observed::Pod { at, pod, .. } => pods.push((*at, (**pod).clone())),
                    Observed::Event { event, .. } => events.push((**event).clone()),
                }
            }
            let before_events = status_updates(&pods);
            let complete = recording.replay(&BackoffProfile::default(), |_| {}).expect("the fixtures have pods");
            Workload { name, pods, events, before_events, complete }
        })
        .collect()
}

fn status_updates(pods: &[(jiff::Timestamp, k8s_openapi::api::core::v1::Pod)]) -> PodHistory {
    let profile = BackoffProfile::default();
    let mut history: Option<PodHistory> = None;
    for (at, pod) in pods {
        let snap = PodSnapshot::from_pod(black_box(pod));
        let h = history.get_or_insert_with(|| PodHistory::new(&snap.name, &snap.uid));
        black_box(h.observe(&snap, *at, Source::Live, &profile));
    }
    history.expect("the fixtures have pods")
}

fn events(mut history: PodHistory, events: &[k8s_openapi::api::core::v1::Event]) -> PodHistory {
    for e in events {
        if let Some(snap) = EventSnapshot::from_event(black_box(e)) {
            black_box(history.observe_event(&snap));
        }
    }
    history
}

/// The status patch body, encoded as the writer's request sends it.
fn encode_report(history: &PodHistory) -> Vec<u8> {
    let body = serde_json::json!({"apiVersion": "podlife.io/v1alpha1", "kind": "PodLifecycle", "status": history});
    serde_json::to_vec(&body).expect("a history encodes")
}

fn criterion_benches(c: &mut Criterion, workloads: &[Workload]) {
    let (frames, lines): (Vec<&[u8]>, Vec<&str>) = (recorded_frames(WATCH_PROTOBUF), WATCH_JSON.lines().collect());
    let mut group = c.benchmark_group("wire");
    group.throughput(Throughput::Elements(lines.len() as u64));
    group.bench_function("decode_json", |b| b.iter(|| decode_json(&lines)));
    group.throughput(Throughput::Elements(frames.len() as u64));
    group.bench_function("decode_protobuf", |b| b.iter(|| decode_protobuf(&frames)));
    group.finish();
    for w in workloads {
        let mut group = c.benchmark_group(format!("model/{}", w.name));
        group.throughput(Throughput::Elements(w.pods.len() as u64));
        group.bench_function("status_update", |b| b.iter(|| status_updates(&w.pods)));
        group.throughput(Throughput::Elements(w.events.len() as u64));
        group.bench_function("event", |b| {
            b.iter_batched(|| w.before_events.clone(), |h| events(h, &w.events), BatchSize::SmallInput);
        });
        group.throughput(Throughput::Elements(1));
        group.bench_function("encode_report", |b| b.iter(|| encode_report(&w.complete)));
        group.bench_function("size_report", |b| b.iter(|| w.complete.serialized_len()));
        group.finish();
    }
}

/// Runs one step `loops` times, untimed, and prints how many inputs that was, so that an
/// instruction count can be divided per input. `event_setup` is the events step's clone of its
/// starting history alone, to subtract.
fn fixed_loops(step: &str, loops: u64, workloads: &[Workload]) -> Result<(), String> {
    let mut inputs = 0u64;
    let (frames, lines): (Vec<&[u8]>, Vec<&str>) = (recorded_frames(WATCH_PROTOBUF), WATCH_JSON.lines().collect());
    for _ in 0..loops {
        match step {
            "decode_json" => {
                decode_json(&lines);
                inputs += lines.len() as u64;
                continue;
            }
            "decode_protobuf" => {
                decode_protobuf(&frames);
                inputs += frames.len() as u64;
                continue;
            }
            _ => {}
        }
        for w in workloads {
            inputs += match step {
                "status_update" => {
                    black_box(status_updates(&w.pods));
                    w.pods.len()
                }
                "event" => {
                    black_box(events(w.before_events.clone(), &w.events));
                    w.events.len()
                }
                "event_setup" => {
                    black_box(w.before_events.clone());
                    w.events.len()
                }
                "encode_report" => {
                    black_box(encode_report(&w.complete));
                    1
                }
                "size_report" => {
                    black_box(w.complete.serialized_len());
                    1
                }
                _ => {
                    return Err(format!(
                        "unknown step {step:?}: status_update, event, event_setup, encode_report, size_report, decode_json or decode_protobuf"
                    ));
                }
            } as u64;
        }
    }
    println!("step={step} loops={loops} inputs={inputs}");
    Ok(())
}

fn main() {
    let workloads = workloads();
    if let Ok(loops) = std::env::var("PODLIFE_MODEL_LOOPS") {
        let step = std::env::var("PODLIFE_MODEL_STEP").unwrap_or_default();
        let outcome =
            loops.parse().map_err(|e| format!("PODLIFE_MODEL_LOOPS={loops:?}: {e}")).and_then(|n| fixed_loops(&step, n, &workloads));
        if let Err(e) = outcome {
            eprintln!("{e}");
            std::process::exit(2);
        }
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    criterion_benches(&mut c, &workloads);
    c.final_summary();
}
