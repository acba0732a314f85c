//! The probe port: `/healthz`, `/readyz`, `/startupz`, the HTTP hooks, and `/status/N` as a
//! redirect destination. Served by our own accept loop so a scripted `close` can drop the
//! connection without answering, which a plain router cannot do.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Extension, Router};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tower::ServiceExt;

use super::record::{HookKind, ProbeKind, Transport};
use super::script::Action;
use super::{Result, Target, bind, listen_addr};

/// Longest a `hang` holds a request, so hung requests cannot pile up forever.
const HANG_LIMIT: Duration = Duration::from_secs(600);

/// Per-connection handles a handler may use.
#[derive(Clone)]
pub struct Conn {
    pub peer: SocketAddr,
    /// Notified to drop the connection at once, with no answer.
    pub closer: Arc<Notify>,
}

/// Serves `router` on `listener`, inserting a [`Conn`] into every request.
pub fn spawn_server(listener: TcpListener, router: Router) {
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let router = router.clone();
            tokio::spawn(async move {
                let closer = Arc::new(Notify::new());
                let conn = Conn { peer, closer: Arc::clone(&closer) };
                let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(conn.clone());
                    router.clone().oneshot(req)
                });
                let serving = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    result = serving => if let Err(e) = result { tracing::debug!(%peer, error = %e, "connection ended") },
                    () = closer.notified() => tracing::debug!(%peer, "closed by script"),
                }
            });
        }
    });
}

pub async fn bind_probe(target: &Arc<Target>) -> Result<SocketAddr> {
    let listener = bind("the probe port", listen_addr(target, target.config.probe_port)).await?;
    let addr = listener.local_addr().expect("bound listener has an address");
    let router = Router::new()
        .route("/healthz", get(liveness))
        .route("/readyz", get(readiness))
        .route("/startupz", get(startup))
        .route("/hooks/{hook}", any(hook))
        .route("/status/{code}", any(status))
        .with_state(Arc::clone(target));
    spawn_server(listener, router);
    Ok(addr)
}

fn user_agent(headers: &HeaderMap) -> Option<String> {
    headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_string)
}

async fn liveness(s: State<Arc<Target>>, c: Extension<Conn>, h: HeaderMap) -> Response {
    probe(s, c, h, ProbeKind::Liveness).await
}

async fn readiness(s: State<Arc<Target>>, c: Extension<Conn>, h: HeaderMap) -> Response {
    probe(s, c, h, ProbeKind::Readiness).await
}

async fn startup(s: State<Arc<Target>>, c: Extension<Conn>, h: HeaderMap) -> Response {
    probe(s, c, h, ProbeKind::Startup).await
}

async fn probe(State(target): State<Arc<Target>>, Extension(conn): Extension<Conn>, headers: HeaderMap, kind: ProbeKind) -> Response {
    let started = Instant::now();
    let (action, seq) = target.probe_hit(kind, Transport::Http, conn.peer.to_string(), user_agent(&headers));
    let response = respond(&action, &conn, &format!("{kind}")).await;
    target.answered(seq, started);
    response
}

/// Turns a scripted action into an HTTP answer, waiting or dropping the connection as told.
pub async fn respond(action: &Action, conn: &Conn, what: &str) -> Response {
    match action {
        Action::Hang => {
            tokio::time::sleep(HANG_LIMIT).await;
            conn.closer.notify_one();
            std::future::pending().await
        }
        Action::Close => {
            conn.closer.notify_one();
            std::future::pending().await
        }
        Action::Slow { delay } => {
            tokio::time::sleep(*delay).await;
            (StatusCode::OK, format!("{what}: ok (after {}ms)\n", delay.as_millis())).into_response()
        }
        Action::Redirect { location } => {
            (StatusCode::FOUND, [(header::LOCATION, location.clone())], format!("{what}: redirect\n")).into_response()
        }
        Action::Ok | Action::Fail { .. } => {
            let status = action.http_status().and_then(|s| StatusCode::from_u16(s).ok()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            (status, format!("{what}: {}\n", action.label())).into_response()
        }
    }
}

async fn hook(State(target): State<Arc<Target>>, Extension(conn): Extension<Conn>, Path(hook): Path<String>) -> Response {
    let kind: HookKind = match hook.parse() {
        Ok(k) => k,
        Err(e) => return (StatusCode::NOT_FOUND, e).into_response(),
    };
    let action = target.hook_hit(kind, "http");
    let response = respond(&action, &conn, kind.as_str()).await;
    target.event(&format!("{}-done", kind.as_str()), format!("http: {}", action.label()));
    response
}

/// A fixed answer, used as the destination of local redirects: `redirect /status/503`.
async fn status(State(target): State<Arc<Target>>, Path(code): Path<u16>, headers: HeaderMap) -> Response {
    target.event("redirect-followed", format!("/status/{code} from {}", user_agent(&headers).unwrap_or_default()));
    match StatusCode::from_u16(code) {
        Ok(s) => (s, format!("status {code}\n")).into_response(),
        Err(_) => (StatusCode::BAD_REQUEST, "status must be 100-999\n").into_response(),
    }
}
