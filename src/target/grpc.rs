//! `grpc.health.v1.Health` on the gRPC port, using tonic-health's generated service.
//! Service names `liveness`, `readiness` and `startup` follow their scripts; `""` is the
//! whole server (SERVING unless terminating); anything else is NOT_FOUND.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::Stream;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use super::record::{ProbeKind, Transport};
use super::script::Action;
use super::{Error, Result, Target, bind, listen_addr};

const HANG_LIMIT: Duration = Duration::from_secs(600);
const WATCH_POLL: Duration = Duration::from_millis(200);

struct Service {
    target: Arc<Target>,
}

fn peer_and_agent<T>(req: &Request<T>) -> (String, Option<String>) {
    let peer = req.remote_addr().map_or_else(|| "unknown".to_string(), |a| a.to_string());
    let agent = req.metadata().get("user-agent").and_then(|v| v.to_str().ok()).map(str::to_string);
    (peer, agent)
}

fn serving(healthy: bool) -> HealthCheckResponse {
    let status = if healthy { ServingStatus::Serving } else { ServingStatus::NotServing };
    HealthCheckResponse { status: status.into() }
}

fn probe_of(service: &str) -> Result<Option<ProbeKind>, Status> {
    match service {
        "" => Ok(None),
        name => name.parse().map(Some).map_err(|_| Status::not_found(format!("unknown service '{name}'"))),
    }
}

#[tonic::async_trait]
impl Health for Service {
    async fn check(&self, req: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        let (peer, agent) = peer_and_agent(&req);
        let Some(kind) = probe_of(&req.get_ref().service)? else {
            return Ok(Response::new(serving(!self.target.is_terminating())));
        };
        let started = Instant::now();
        let (action, seq) = self.target.probe_hit(kind, Transport::Grpc, peer, agent);
        let answer = match action {
            Action::Hang => {
                tokio::time::sleep(HANG_LIMIT).await;
                Err(Status::deadline_exceeded("hung by script"))
            }
            Action::Close => Err(Status::unavailable("closed by script")),
            Action::Slow { delay } => {
                tokio::time::sleep(delay).await;
                Ok(Response::new(serving(true)))
            }
            other => Ok(Response::new(serving(other.is_healthy()))),
        };
        self.target.answered(seq, started);
        answer
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    async fn watch(&self, req: Request<HealthCheckRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let kind = probe_of(&req.get_ref().service)?;
        let target = Arc::clone(&self.target);
        let state = move || match kind {
            Some(k) => target.probe_state(k).is_healthy(),
            None => !target.is_terminating(),
        };
        // Sends the status now and again each time it changes.
        let stream = futures::stream::unfold((None, state), |(last, state)| async move {
            loop {
                let now = state();
                if last != Some(now) {
                    return Some((Ok(serving(now)), (Some(now), state)));
                }
                tokio::time::sleep(WATCH_POLL).await;
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

pub async fn spawn(target: &Arc<Target>) -> Result<SocketAddr> {
    let listener = bind("the gRPC port", listen_addr(target, target.config.grpc_port)).await?;
    let addr = listener.local_addr().expect("bound listener has an address");
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let server = tonic::transport::Server::builder()
        .add_service(HealthServer::new(Service { target: Arc::clone(target) }))
        .serve_with_incoming(incoming);
    tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %Error::Grpc(e), "gRPC server stopped");
        }
    });
    Ok(addr)
}
