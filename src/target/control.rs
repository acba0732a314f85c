//! The control API, on its own port: scripts, process control, faults, the hit record and
//! metrics. Bad input gets a 400 with `{"error": "..."}`; only the requests whose job is to
//! end the process end it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::json;

use super::process::{self, SigtermMode};
use super::record::{HookKind, ProbeKind, Transport};
use super::script::Script;
use super::{Result, Target, TcpMode, listen_addr};
use crate::lock;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HitLabels {
    probe: String,
    transport: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub kind: String,
}

/// The target's Prometheus metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    hits: Family<HitLabels, Counter>,
    pub events: Family<EventLabels, Counter>,
    pub boot: Gauge,
    /// Exec probe and hook requests being answered (a hang holds one until its caller leaves).
    pub exec_in_flight: Gauge,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("podlife_target");
        let hits = Family::<HitLabels, Counter>::default();
        let events = Family::<EventLabels, Counter>::default();
        let boot = Gauge::default();
        registry.register("probe_hits", "Probe hits answered, by probe type, transport and scripted result", hits.clone());
        registry.register("lifecycle_events", "Lifecycle events recorded (start, hooks, signals, exit)", events.clone());
        registry.register("boot", "How many times this target has started with this state directory", boot.clone());
        let exec_in_flight = Gauge::default();
        registry.register("exec_in_flight", "Exec probe and hook requests being answered", exec_in_flight.clone());
        Metrics { registry, hits, events, boot, exec_in_flight }
    }

    pub fn hit(&self, probe: ProbeKind, transport: Transport, result: &str) {
        self.hits.get_or_create(&HitLabels { probe: probe.to_string(), transport: transport.as_str().into(), result: result.into() }).inc();
    }
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

type ApiResult<T = Response> = std::result::Result<T, ApiError>;

pub async fn bind(target: &Arc<Target>) -> Result<SocketAddr> {
    let listener = super::bind("the control port", listen_addr(target, target.config.control_port)).await?;
    let addr = listener.local_addr().expect("bound listener has an address");
    super::http::spawn_server(listener, router(target));
    Ok(addr)
}

/// The control API as a router, without a listener (the fuzz target drives it directly).
pub fn router(target: &Arc<Target>) -> Router {
    let mut router = Router::new()
        .route("/", get(index))
        .route("/hits", get(hits))
        .route("/metrics", get(metrics))
        .route("/scripts", get(scripts))
        .route("/scripts/{probe}", put(set_script).delete(clear_script))
        .route("/scripts/{probe}/reset", post(reset_script))
        .route("/hooks/{hook}", put(set_hook))
        .route("/tcp/{probe}", post(set_tcp))
        .route("/sigterm", put(set_sigterm))
        .route("/quitquitquit", post(quitquitquit))
        .route("/exit", post(exit))
        .route("/crash", post(crash))
        .route("/kill", post(kill))
        .route("/fault/memory", post(fault_memory))
        .route("/fault/cpu", post(fault_cpu))
        .with_state(Arc::clone(target));
    if let Some(token) = target.config.control_token.clone() {
        let token: Arc<[u8]> = token.into_bytes().into();
        router = router.layer(middleware::from_fn(move |req: Request, next: Next| {
            let token = Arc::clone(&token);
            async move {
                if presented_token(req.headers()).is_some_and(|t| token_matches(t, &token)) {
                    next.run(req).await
                } else {
                    ApiError(StatusCode::UNAUTHORIZED, format!("missing or wrong token (send {TOKEN_HEADER} or a bearer token)"))
                        .into_response()
                }
            }
        }));
    }
    // Scripts are at most 16 KiB; nothing else takes a body worth more.
    router = router.layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES));
    router
}

/// The largest request body read.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The header that carries the token through the apiserver's pod proxy, which removes
/// `Authorization` once it has authenticated the caller.
pub const TOKEN_HEADER: &str = "x-podlife-token";

/// The token a request presents: the podlife header, or a bearer token for direct callers.
fn presented_token(headers: &axum::http::HeaderMap) -> Option<&[u8]> {
    if let Some(v) = headers.get(TOKEN_HEADER) {
        return Some(v.as_bytes());
    }
    headers.get(header::AUTHORIZATION)?.as_bytes().strip_prefix(b"Bearer ")
}

/// Compares in time that does not depend on where the first difference is.
fn token_matches(presented: &[u8], expected: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    presented.ct_eq(expected).into()
}

async fn index() -> &'static str {
    "podlife-target control API\n\
     GET  /hits[?since=SEQ]            probe hits, counters, lifecycle events (JSON)\n\
     GET  /metrics                     Prometheus metrics\n\
     GET  /scripts                     current scripts\n\
     PUT  /scripts/{probe}             body: a script, e.g. 'ok for 20s, then fail 3 times, then ok'\n\
     DELETE /scripts/{probe}           back to 'ok'\n\
     POST /scripts/{probe}/reset       restart the script from its first step\n\
     PUT  /hooks/{poststart|prestop}   body: a script, e.g. 'slow 5s' or 'fail'\n\
     POST /tcp/{probe}?state=open|closed|auto\n\
     PUT  /sigterm?mode=exit|ignore|drain:5s[&ready=BOOL][&live=BOOL]\n\
     POST /quitquitquit[?code=N]       exit now (default 0)\n\
     POST /exit?code=N&wait=DURATION   exit later\n\
     POST /crash                       abort (SIGABRT)\n\
     POST /kill?signal=NAME|N          die of a signal\n\
     POST /fault/memory?mibPerSec=N[&limitMib=N]   default limit: the container's + 64 MiB, else 512\n\
     POST /fault/cpu?threads=N&seconds=N\n"
}

#[derive(Deserialize)]
struct SinceQuery {
    since: Option<u64>,
}

async fn hits(State(t): State<Arc<Target>>, Query(q): Query<SinceQuery>) -> Response {
    Json(t.snapshot(q.since)).into_response()
}

async fn metrics(State(t): State<Arc<Target>>) -> ApiResult {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &t.metrics.registry)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], out).into_response())
}

async fn scripts(State(t): State<Arc<Target>>) -> Response {
    let m = lock(&t.mutable);
    let probes: BTreeMap<_, _> =
        m.probes.iter().map(|(k, s)| (k.as_str(), json!({"script": s.script.source, "cursor": s.cursor}))).collect();
    let hooks: BTreeMap<_, _> = m.hooks.iter().map(|(k, s)| (k.as_str(), s.script.source.clone())).collect();
    Json(json!({
        "probes": probes, "hooks": hooks, "tcp": m.tcp_modes, "sigterm": m.sigterm,
        "readyWhileTerminating": m.ready_while_terminating, "liveWhileTerminating": m.live_while_terminating,
        "terminating": t.is_terminating(), "boot": t.boot,
    }))
    .into_response()
}

fn probe_kind(s: &str) -> ApiResult<ProbeKind> {
    s.parse().map_err(bad)
}

fn parse_script(body: &str) -> ApiResult<Script> {
    Script::parse(body).map_err(|e| bad(e.to_string()))
}

async fn set_script(State(t): State<Arc<Target>>, Path(probe): Path<String>, body: String) -> ApiResult {
    let kind = probe_kind(&probe)?;
    let script = parse_script(&body)?;
    t.set_probe_script(kind, script);
    Ok((StatusCode::OK, Json(json!({"probe": probe, "script": body.trim()}))).into_response())
}

async fn clear_script(State(t): State<Arc<Target>>, Path(probe): Path<String>) -> ApiResult {
    let kind = probe_kind(&probe)?;
    t.set_probe_script(kind, Script::parse("ok").expect("'ok' is a script"));
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn reset_script(State(t): State<Arc<Target>>, Path(probe): Path<String>) -> ApiResult {
    t.reset_probe_script(probe_kind(&probe)?);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn set_hook(State(t): State<Arc<Target>>, Path(hook): Path<String>, body: String) -> ApiResult {
    let kind: HookKind = hook.parse().map_err(bad)?;
    t.set_hook_script(kind, parse_script(&body)?);
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct TcpQuery {
    state: TcpMode,
}

async fn set_tcp(
    State(t): State<Arc<Target>>,
    Path(probe): Path<String>,
    q: Result<Query<TcpQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let kind = probe_kind(&probe)?;
    let Query(q) = q.map_err(|e| bad(format!("{e}: expected ?state=open|closed|auto")))?;
    lock(&t.mutable).tcp_modes.insert(kind, q.state);
    t.event("tcp-mode", format!("{kind}: {:?}", q.state));
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct SigtermQuery {
    mode: Option<String>,
    ready: Option<bool>,
    live: Option<bool>,
}

async fn set_sigterm(State(t): State<Arc<Target>>, q: Result<Query<SigtermQuery>, axum::extract::rejection::QueryRejection>) -> ApiResult {
    let Query(q) = q.map_err(|e| bad(e.to_string()))?;
    let mode = q.mode.as_deref().map(str::parse::<SigtermMode>).transpose().map_err(bad)?;
    let mut m = lock(&t.mutable);
    if let Some(mode) = mode {
        m.sigterm = mode;
    }
    if let Some(r) = q.ready {
        m.ready_while_terminating = r;
    }
    if let Some(l) = q.live {
        m.live_while_terminating = l;
    }
    let summary =
        json!({"sigterm": m.sigterm, "readyWhileTerminating": m.ready_while_terminating, "liveWhileTerminating": m.live_while_terminating});
    drop(m);
    t.event("sigterm-mode", summary.to_string());
    Ok(Json(summary).into_response())
}

#[derive(Deserialize)]
struct ExitQuery {
    code: Option<String>,
    wait: Option<String>,
}

fn exit_code(code: Option<&str>) -> ApiResult<i32> {
    match code {
        None => Ok(0),
        Some(c) => c.parse::<i32>().ok().filter(|c| (0..=255).contains(c)).ok_or_else(|| bad(format!("code must be 0-255, got '{c}'"))),
    }
}

/// Runs `end` (which ends the process) shortly after the answer has gone out, so the caller
/// sees a 200 first. On a blocking thread: ending may sleep (kill_self waits for the signal).
fn end_after_answer(wait: Duration, end: impl FnOnce() + Send + 'static) {
    tokio::spawn(async move {
        tokio::time::sleep(wait.max(Duration::from_millis(50))).await;
        tokio::task::spawn_blocking(end);
    });
}

async fn quitquitquit(State(t): State<Arc<Target>>, q: Result<Query<ExitQuery>, axum::extract::rejection::QueryRejection>) -> ApiResult {
    let Query(q) = q.map_err(|e| bad(e.to_string()))?;
    let code = exit_code(q.code.as_deref())?;
    end_after_answer(Duration::ZERO, move || process::exit(&t, code, &format!("/quitquitquit: exit code {code}")));
    Ok((StatusCode::OK, "exiting\n").into_response())
}

async fn exit(State(t): State<Arc<Target>>, q: Result<Query<ExitQuery>, axum::extract::rejection::QueryRejection>) -> ApiResult {
    let Query(q) = q.map_err(|e| bad(e.to_string()))?;
    let code = exit_code(q.code.as_deref())?;
    let wait = match q.wait.as_deref() {
        None | Some("0") | Some("0s") => Duration::ZERO,
        Some(w) => super::script::parse_duration(w).ok_or_else(|| bad(format!("wait must be a duration like 5s, got '{w}'")))?,
    };
    end_after_answer(wait, move || process::exit(&t, code, &format!("/exit: exit code {code} after {}ms", wait.as_millis())));
    Ok((StatusCode::OK, format!("exiting with code {code} in {}ms\n", wait.as_millis())).into_response())
}

async fn crash(State(t): State<Arc<Target>>) -> Response {
    end_after_answer(Duration::ZERO, move || process::crash(&t));
    (StatusCode::OK, "crashing\n").into_response()
}

#[derive(Deserialize)]
struct KillQuery {
    signal: Option<String>,
}

async fn kill(State(t): State<Arc<Target>>, q: Result<Query<KillQuery>, axum::extract::rejection::QueryRejection>) -> ApiResult {
    let Query(q) = q.map_err(|e| bad(e.to_string()))?;
    let name = q.signal.ok_or_else(|| bad("signal is required, e.g. ?signal=KILL"))?;
    let signal = process::parse_signal(&name).ok_or_else(|| bad(format!("unknown signal '{name}'")))?;
    end_after_answer(Duration::ZERO, move || process::kill_self(&t, signal));
    Ok((StatusCode::OK, format!("killing self with signal {signal}\n")).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MemoryQuery {
    mib_per_sec: u32,
    limit_mib: Option<u32>,
}

async fn fault_memory(State(t): State<Arc<Target>>, q: Result<Query<MemoryQuery>, axum::extract::rejection::QueryRejection>) -> ApiResult {
    let Query(q) = q.map_err(|e| bad(format!("{e}: expected ?mibPerSec=N[&limitMib=N]")))?;
    if q.mib_per_sec == 0 || q.mib_per_sec > 10_000 {
        return Err(bad("mibPerSec must be 1-10000"));
    }
    if q.limit_mib.is_some_and(|l| l == 0 || l > MAX_MEMORY_FAULT_MIB) {
        return Err(bad(format!("limitMib must be 1-{MAX_MEMORY_FAULT_MIB}")));
    }
    let limit = process::spawn_memory_hog(&t, q.mib_per_sec, q.limit_mib).map_err(refused)?;
    Ok((StatusCode::ACCEPTED, Json(json!({"limitMib": limit}))).into_response())
}

/// The largest `limitMib` accepted (64 GiB).
const MAX_MEMORY_FAULT_MIB: u32 = 65_536;

fn refused(e: process::FaultRefused) -> ApiError {
    ApiError(StatusCode::CONFLICT, e.to_string())
}

#[derive(Deserialize)]
struct CpuQuery {
    threads: u32,
    seconds: u64,
}

async fn fault_cpu(State(t): State<Arc<Target>>, q: Result<Query<CpuQuery>, axum::extract::rejection::QueryRejection>) -> ApiResult {
    let Query(q) = q.map_err(|e| bad(format!("{e}: expected ?threads=N&seconds=N")))?;
    if q.threads == 0 || q.threads > process::MAX_FAULT_THREADS || q.seconds == 0 || q.seconds > 3600 {
        return Err(bad(format!("threads must be 1-{} and seconds 1-3600", process::MAX_FAULT_THREADS)));
    }
    process::spawn_cpu_burn(&t, q.threads, q.seconds).map_err(refused)?;
    Ok(StatusCode::ACCEPTED.into_response())
}
