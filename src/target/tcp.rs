//! TCP probe listeners, one per probe type. A TCP probe only learns whether a connection is
//! accepted, so a listener is open while its script's step is healthy (or forced open) and
//! closed, refusing connections, while the step fails. Every accepted connection is a hit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

use super::record::{ProbeKind, Transport};
use super::{Target, bind, listen_addr};

/// How often a listener re-reads its script: the open/close decision lags by at most this.
const POLL: Duration = Duration::from_millis(100);

pub fn spawn(target: &Arc<Target>) {
    for (kind, port) in ProbeKind::ALL.into_iter().zip(target.config.tcp_ports) {
        if port == 0 {
            continue; // 0 switches the listener off.
        }
        tokio::spawn(run(Arc::clone(target), kind, port));
    }
}

async fn run(target: Arc<Target>, kind: ProbeKind, port: u16) {
    let addr = listen_addr(&target, port);
    let mut listener: Option<TcpListener> = None;
    loop {
        let want = target.tcp_should_listen(kind);
        if want && listener.is_none() {
            match bind("a TCP probe listener", addr).await {
                Ok(l) => {
                    target.event("tcp-open", format!("{kind} on {addr}"));
                    listener = Some(l);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open TCP listener; retrying");
                    tokio::time::sleep(POLL).await;
                    continue;
                }
            }
        } else if !want && listener.is_some() {
            listener = None;
            target.event("tcp-close", format!("{kind} on {addr}"));
        }
        let Some(l) = &listener else {
            tokio::time::sleep(POLL).await;
            continue;
        };
        match tokio::time::timeout(POLL, l.accept()).await {
            Ok(Ok((stream, peer))) => {
                let started = Instant::now();
                let (_, seq) = target.probe_hit(kind, Transport::Tcp, peer.to_string(), None);
                drop(stream);
                target.answered(seq, started);
            }
            // Out of descriptors, say: pause rather than spin on the error.
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "tcp accept failed");
                tokio::time::sleep(POLL).await;
            }
            Err(_) => {}
        }
    }
}
