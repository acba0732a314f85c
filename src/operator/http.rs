//! `/healthz` (the process runs), `/readyz` (the first pod lists are in and no watch has been
//! failing for longer than `--watch-stale-after`, or this replica is a standby waiting for the
//! lease) and `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::{Error, Metrics, Result, WatchHealth};

pub async fn spawn(addr: SocketAddr, metrics: Arc<Metrics>, health: Arc<WatchHealth>) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| Error::Listen { addr, source })?;
    tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "serving /healthz, /readyz, /metrics");
    let router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let now = Instant::now();
                let stale = health.stale(now);
                let body = if health.ready(now) {
                    (StatusCode::OK, "ready\n".to_string())
                } else if stale.is_empty() {
                    (StatusCode::SERVICE_UNAVAILABLE, "syncing\n".to_string())
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, format!("watch failing: {}\n", stale.join(", ")))
                };
                async move { body }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let body = metrics.encode();
                async move { ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response() }
            }),
        );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "health server stopped");
        }
    });
    Ok(())
}
