//! podlife-operator: watches pods and their events, feeds them to the lifecycle model, and
//! writes each tracked pod's history into its `PodLifecycle` report.
//!
//! # Expected flow
//! 1. (With leader election) wait for the Lease.
//! 2. List the existing reports, so histories continue where they stopped.
//! 3. Watch pods (by selection) and pod events; every observation goes into the model.
//! 4. Every write window, apply the status of each changed report (server-side apply).
//!
//! # Guarantees
//! - At most one write per pod per window, whatever the churn.
//! - After a restart, a watch expiry (410) or an apiserver restart, histories are rebuilt
//!   from the reports and the pods' status; rebuilt entries are marked and none duplicated.
//! - A deleted pod's report stays for the configured TTL, then is removed.

mod experiment;
mod http;
mod leader;
mod metrics;
mod store;
mod writer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, watcher};
use kube::{Api, Client};
use tokio::sync::watch;

pub use leader::LeaseConfig;
pub use metrics::Metrics;
use store::Store;

use crate::lifecycle::BackoffProfile;

/// Errors of the operator's own loops; watch errors are retried with back-off, not returned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {context}")]
    Kube {
        context: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot serve health and metrics on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("lost the leader lease {0}; exiting so a standby can take over")]
    LostLease(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn kube_err(context: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let context = context.into();
    move |source| Error::Kube { context, source }
}

/// Which pods get a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Pods matching a label selector, in every namespace (default `podlife.io/track=true`).
    Labelled(String),
    /// Every pod in these namespaces.
    Namespaces(Vec<String>),
    /// Every pod in the cluster.
    All,
}

#[derive(Debug, Clone)]
pub struct OperatorConfig {
    pub selection: Selection,
    pub profile: BackoffProfile,
    /// Changes to one pod within this window are written together.
    pub write_window: Duration,
    /// How long a deleted pod's report is kept.
    pub deleted_ttl: Duration,
    pub budget_bytes: usize,
    pub listen: SocketAddr,
    pub lease: Option<LeaseConfig>,
    /// Run ProbeExperiments too, with this image for containers that name none.
    pub experiments_target_image: Option<String>,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        OperatorConfig {
            selection: Selection::Labelled(format!("{}=true", crate::crd::TRACK_LABEL)),
            profile: BackoffProfile::default(),
            write_window: Duration::from_secs(1),
            deleted_ttl: Duration::from_secs(3600),
            budget_bytes: crate::lifecycle::history::DEFAULT_BUDGET_BYTES,
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            lease: None,
            experiments_target_image: None,
        }
    }
}

/// Runs the operator until `shutdown` turns true, then flushes pending writes and returns.
///
/// # Errors
/// The health/metrics port cannot be bound, the reports cannot be listed at start, or the
/// leader lease is lost.
pub async fn run(client: Client, config: OperatorConfig, mut shutdown: watch::Receiver<bool>) -> Result<()> {
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    http::spawn(config.listen, Arc::clone(&metrics), Arc::clone(&ready)).await?;

    let lease = match &config.lease {
        Some(lc) => Some(leader::acquire(client.clone(), lc.clone(), &mut shutdown, &ready).await?),
        None => None,
    };
    if *shutdown.borrow() {
        return Ok(());
    }

    let store = Arc::new(Store::new(config.clone(), Arc::clone(&metrics)));
    store.load_reports(&client).await?;
    let (lost_tx, mut lost_rx) = watch::channel(false);
    if let Some(lease) = lease.clone() {
        tokio::spawn(leader::renew(client.clone(), lease, lost_tx));
    }

    let pods = tokio::spawn(watch_pods(client.clone(), Arc::clone(&store), config.selection.clone(), Arc::clone(&ready)));
    let events = tokio::spawn(watch_events(client.clone(), Arc::clone(&store), config.selection.clone()));
    let experiments = config.experiments_target_image.clone().map(|image| {
        let namespaces = match &config.selection {
            Selection::Namespaces(nss) => nss.clone(),
            _ => Vec::new(),
        };
        tokio::spawn(experiment::run_experiments(client.clone(), namespaces, image, config.profile))
    });
    let mut writes = tokio::time::interval(config.write_window);
    let mut janitor = tokio::time::interval(Duration::from_secs(10).min(config.deleted_ttl));
    let outcome = loop {
        tokio::select! {
            _ = writes.tick() => writer::flush(&client, &store).await,
            _ = janitor.tick() => writer::expire_deleted(&client, &store).await,
            _ = shutdown.changed() => if *shutdown.borrow() { break Ok(()) },
            _ = lost_rx.changed() => if *lost_rx.borrow() {
                break Err(Error::LostLease(config.lease.as_ref().map(|l| l.name.clone()).unwrap_or_default()));
            },
        }
    };
    pods.abort();
    events.abort();
    if let Some(e) = experiments {
        e.abort();
    }
    tracing::info!("shutting down: writing pending reports");
    writer::flush(&client, &store).await;
    if let Some(lease) = lease {
        leader::release(&client, &lease).await;
    }
    outcome
}

fn pod_apis(client: &Client, selection: &Selection) -> Vec<(Api<Pod>, watcher::Config)> {
    match selection {
        Selection::Labelled(sel) => vec![(Api::all(client.clone()), watcher::Config::default().labels(sel))],
        Selection::All => vec![(Api::all(client.clone()), watcher::Config::default())],
        Selection::Namespaces(nss) => nss.iter().map(|ns| (Api::namespaced(client.clone(), ns), watcher::Config::default())).collect(),
    }
}

/// Runs `f` on every item of a watch stream for as long as the stream lasts. A watch error is
/// logged and the watcher's own backoff retries; `try_for_each` would end the watch for good at
/// the first error and silently stop recording.
pub(crate) async fn keep_watching<T>(
    stream: impl futures::Stream<Item = Result<T, watcher::Error>>,
    what: &'static str,
    mut f: impl FnMut(T),
) {
    stream
        .for_each(|item| {
            match item {
                Ok(x) => f(x),
                Err(e) => tracing::warn!(error = %e, watch = what, "watch error; retrying"),
            }
            futures::future::ready(())
        })
        .await;
}

async fn watch_pods(client: Client, store: Arc<Store>, selection: Selection, ready: Arc<std::sync::atomic::AtomicBool>) {
    let apis = pod_apis(&client, &selection);
    let synced = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let total = apis.len();
    let streams = apis.into_iter().map(|(api, cfg)| {
        let store = Arc::clone(&store);
        let synced = Arc::clone(&synced);
        let ready = Arc::clone(&ready);
        let mut seen = std::collections::HashSet::new();
        keep_watching(watcher(api, cfg).default_backoff(), "pods", move |event| {
            match event {
                // A (re)list: what follows is rebuilt state, not live observation.
                watcher::Event::Init => seen.clear(),
                watcher::Event::InitApply(pod) => {
                    seen.insert(pod.metadata.uid.clone().unwrap_or_default());
                    store.observe_pod(&pod, crate::lifecycle::Source::Rebuilt, false);
                }
                watcher::Event::InitDone => {
                    store.mark_missing_as_deleted(&seen);
                    if synced.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 >= total {
                        ready.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                }
                watcher::Event::Apply(pod) => store.observe_pod(&pod, crate::lifecycle::Source::Live, false),
                watcher::Event::Delete(pod) => store.observe_pod(&pod, crate::lifecycle::Source::Live, true),
            }
        })
    });
    let _ = futures::future::join_all(streams).await;
}

async fn watch_events(client: Client, store: Arc<Store>, selection: Selection) {
    let cfg = watcher::Config::default().fields("involvedObject.kind=Pod");
    let apis: Vec<Api<Event>> = match &selection {
        Selection::Namespaces(nss) => nss.iter().map(|ns| Api::namespaced(client.clone(), ns)).collect(),
        _ => vec![Api::all(client.clone())],
    };
    let streams = apis.into_iter().map(|api| {
        let store = Arc::clone(&store);
        keep_watching(watcher(api, cfg.clone()).default_backoff().touched_objects(), "events", move |event: Event| {
            store.observe_event(&event);
        })
    });
    let _ = futures::future::join_all(streams).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_watch_error_does_not_end_the_watch() {
        // What kube-runtime's watcher yields around a dropped connection: an error, then more.
        let items = vec![Ok(1), Err(watcher::Error::NoResourceVersion), Ok(2), Ok(3)];
        let mut seen = Vec::new();
        keep_watching(futures::stream::iter(items), "test", |n| seen.push(n)).await;
        assert_eq!(seen, [1, 2, 3]);
    }
}
