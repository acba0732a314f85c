//! podlife-operator: watches pods and their events, feeds them to the lifecycle model, and
//! writes each tracked pod's history into its `PodLifecycle` report.
//!
//! # Expected flow
//! 1. With leader election: wait as a standby until this replica holds the Lease.
//! 2. Read the existing reports page by page, so histories continue where they stopped.
//! 3. List and watch pods (by selection); once every pod list is in, watch their events.
//! 4. Every quarter of a write window, apply the status of each changed report not written
//!    within the last window (server-side apply), while the lease's fence is open.
//! 5. On losing the lease, stop writing at once, drop everything and become a standby again.
//!
//! # Guarantees
//! - At most one write per pod per window, whatever the churn.
//! - After a restart, a watch expiry (410), an apiserver restart or a fail-over, histories
//!   resume from the reports and the pods' status; rebuilt entries are marked and nothing is
//!   recorded twice (events are de-duplicated by resourceVersion, runs by container id).
//! - A relist judges only its own scope (one namespace, or the cluster).
//! - A deleted pod's report stays for the configured TTL after its stored `deletedAt`.

mod deployment;
mod experiment;
mod health;
mod http;
mod leader;
mod lean_pod;
mod metrics;
mod owners;
pub mod pod_proto;
pub mod pod_watch;
mod shards;
mod store;
mod writer;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Event;
use kube::api::{DynamicObject, ListParams};
use kube::core::ApiResource;
use kube::runtime::watcher::{self, watcher};
use kube::{Api, Client};
use tokio::sync::watch;

pub use experiment::ExperimentSettings;
pub use health::WatchHealth;
pub use leader::{ConfigError as LeaseConfigError, LeaseConfig};
pub use metrics::Metrics;
use pod_proto::PodWatchEvent;
use pod_watch::PodSource;
pub use pod_watch::PodWire;
pub use shards::{ShardConfig, shard_of};
use store::Store;
pub use store::{Scope, parse_report};

use crate::crd::PodLifecycle;
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
    #[error("unsafe leader election settings")]
    Lease(#[from] leader::ConfigError),
    #[error("sharding and {0} cannot be combined")]
    ShardingWith(&'static str),
    #[error("sharding needs 1 to 1024 shards, not {0}")]
    ShardCount(u32),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

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
    /// How long a deleted pod's report is kept, counted from its stored `deletedAt`.
    pub deleted_ttl: Duration,
    pub budget_bytes: usize,
    /// All reports together: the largest are trimmed to a fair share beyond it.
    pub total_budget_bytes: usize,
    pub listen: SocketAddr,
    pub lease: Option<LeaseConfig>,
    /// Split the pods across replicas by Lease-held shards (instead of `lease`).
    pub shards: Option<ShardConfig>,
    /// `/readyz` turns false once a watch has been failing for this long.
    pub watch_stale_after: Duration,
    /// Run ProbeExperiments too.
    pub experiments: Option<ExperimentSettings>,
    /// How pods are read from the apiserver.
    pub pod_wire: PodWire,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        OperatorConfig {
            selection: Selection::Labelled(format!("{}=true", crate::crd::TRACK_LABEL)),
            profile: BackoffProfile::default(),
            write_window: Duration::from_secs(1),
            deleted_ttl: Duration::from_secs(3600),
            budget_bytes: crate::lifecycle::history::DEFAULT_BUDGET_BYTES,
            total_budget_bytes: crate::lifecycle::budget::DEFAULT_TOTAL_BUDGET_BYTES,
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            lease: None,
            shards: None,
            watch_stale_after: Duration::from_secs(60),
            experiments: None,
            pod_wire: PodWire::default(),
        }
    }
}

/// How a term of leadership (or the one term without election) ended.
enum TermEnd {
    Shutdown,
    /// The lease was lost, or (sharded) the held shards are to change.
    LostLease,
}

/// Runs the operator until `shutdown` turns true, then flushes pending writes, releases the
/// lease if it holds it, and returns. A lost lease sends it back to standby, not out.
///
/// # Errors
/// The health/metrics port cannot be bound, or the leader election settings are unsafe.
pub async fn run(client: Client, config: OperatorConfig, mut shutdown: watch::Receiver<bool>) -> Result<()> {
    if let Some(lc) = &config.lease {
        lc.validate()?;
    }
    if let Some(sc) = &config.shards {
        sc.lease.validate()?;
        if config.lease.is_some() {
            return Err(Error::ShardingWith("leader election"));
        }
        if config.experiments.is_some() {
            return Err(Error::ShardingWith("experiments (run them with one elected operator)"));
        }
        if !(1..=1024).contains(&sc.shards) {
            return Err(Error::ShardCount(sc.shards));
        }
    }
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(WatchHealth::new(config.watch_stale_after));
    http::spawn(config.listen, Arc::clone(&metrics), Arc::clone(&health)).await?;
    if let Some(sc) = config.shards.clone() {
        run_sharded(&client, &config, sc, &metrics, &health, &mut shutdown).await;
        return Ok(());
    }
    let mut candidate = config.lease.clone().map(|lc| leader::Candidate::new(client.clone(), lc));
    loop {
        let fence = match candidate.as_mut() {
            Some(c) => {
                // A standby is ready: it must not hold up a rolling update.
                health.set_synced(true);
                let Some(sent) = wait_for_lease(c, &metrics, &mut shutdown).await else {
                    return Ok(());
                };
                // The fence opens from when the winning write was sent, not from its answer.
                let fence = Arc::new(leader::Fence::new(c.config().renew_deadline));
                fence.renewed(sent);
                Some(fence)
            }
            None => None,
        };
        health.set_synced(false);
        metrics.leader.set(1);
        let end = match (candidate.as_mut(), fence) {
            (Some(c), Some(fence)) => {
                let (lost_tx, lost_rx) = watch::channel(false);
                let (stop_tx, stop_rx) = watch::channel(false);
                let term = Term {
                    client: &client,
                    config: &config,
                    metrics: &metrics,
                    health: &health,
                    fence: Some(&fence),
                    ownership: None,
                    publish: None,
                };
                // Both run to their end: the term stops on a lost lease, the renewals when the
                // term is over. Cancelling the term midway would leave its watchers running.
                let leading = async {
                    let end = term.lead(&mut shutdown, lost_rx).await;
                    let _ = stop_tx.send(true);
                    end
                };
                tokio::join!(leading, keep_renewing(c, &fence, &metrics, lost_tx, stop_rx)).0
            }
            _ => {
                let term = Term {
                    client: &client,
                    config: &config,
                    metrics: &metrics,
                    health: &health,
                    fence: None,
                    ownership: None,
                    publish: None,
                };
                // Without election the lease can never be lost: the sender stays alive.
                let (_never_lost, not_lost) = watch::channel(false);
                term.lead(&mut shutdown, not_lost).await
            }
        };
        metrics.leader.set(0);
        match end {
            TermEnd::Shutdown => {
                if let Some(c) = candidate.as_mut() {
                    c.release().await;
                }
                return Ok(());
            }
            TermEnd::LostLease => {
                metrics.lease("lost");
                tracing::warn!("lost the leader lease: stopped writing; back to standby");
            }
        }
    }
}

/// Sharded: converge on this replica's share of the shards, record them for a term, and start
/// a new term whenever the share changes (see [`shards`]).
async fn run_sharded(
    client: &Client,
    config: &OperatorConfig,
    sc: ShardConfig,
    metrics: &Arc<Metrics>,
    health: &Arc<WatchHealth>,
    shutdown: &mut watch::Receiver<bool>,
) {
    let retry = sc.lease.retry_period;
    let mut keeper = shards::Keeper::new(client.clone(), sc);
    loop {
        // Between terms: no shard is written. Give back the excess, take what is free, and
        // while shards keep coming free (others giving theirs back) wait a few rounds more
        // so that one re-shard is one new term, not several.
        health.set_synced(true);
        let mut rounds_here = 0;
        loop {
            match tokio::time::timeout(retry, keeper.round()).await.unwrap_or_else(|_| Err(shards::Error::TimedOut)) {
                Ok(outcome) => {
                    keeper.release(&outcome.excess).await;
                    let held = keeper.held_count();
                    metrics.shards_held.set(i64::try_from(held).unwrap_or(i64::MAX));
                    let still_coming = !outcome.gained.is_empty() && held < outcome.target && rounds_here < 3;
                    if held > 0 && !still_coming {
                        tracing::info!(held, members = outcome.members, target = outcome.target, "recording shards");
                        break;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "shard round failed; retrying"),
            }
            rounds_here += 1;
            tokio::select! {
                () = tokio::time::sleep(retry) => {}
                // A dropped sender counts as shutdown too; otherwise this would spin.
                changed = shutdown.changed() => if changed.is_err() || *shutdown.borrow() {
                    leave(&mut keeper, retry).await;
                    return;
                },
            }
        }
        let ownership = Arc::new(keeper.start_term());
        let (reshard_tx, reshard_rx) = watch::channel(false);
        let (stop_tx, stop_rx) = watch::channel(false);
        let term = Term { client, config, metrics, health, fence: None, ownership: Some(ownership), publish: Some(keeper.publisher()) };
        metrics.leader.set(1);
        let leading = async {
            let end = term.lead(shutdown, reshard_rx).await;
            let _ = stop_tx.send(true);
            end
        };
        let (end, ()) = tokio::join!(leading, keep_sharding(&mut keeper, metrics, reshard_tx, stop_rx));
        metrics.leader.set(0);
        keeper.end_term();
        if matches!(end, TermEnd::Shutdown) {
            leave(&mut keeper, retry).await;
            metrics.shards_held.set(0);
            return;
        }
        metrics.lease("resharded");
    }
}

/// Gives every shard and the membership back, bounded: a slow apiserver must not hold the
/// shutdown past the pod's grace period (the Leases then expire by themselves).
async fn leave(keeper: &mut shards::Keeper, retry: Duration) {
    if tokio::time::timeout(retry * 3, keeper.leave()).await.is_err() {
        tracing::warn!("could not give the shards back in time: they expire by themselves");
    }
}

/// Renews the shards every retry period while a term records them; returns (asking the term
/// to end) once the shards held should change.
async fn keep_sharding(keeper: &mut shards::Keeper, metrics: &Metrics, reshard: watch::Sender<bool>, mut stop: watch::Receiver<bool>) {
    let retry = keeper.config().lease.retry_period;
    loop {
        tokio::select! {
            () = tokio::time::sleep(retry) => {}
            _ = stop.changed() => return,
        }
        // One round may take at most a retry period, so the deadlines are checked in time.
        let lost = match tokio::time::timeout(retry, keeper.round()).await {
            Ok(Ok(outcome)) if outcome.reshard() => {
                tracing::info!(gained = ?outcome.gained, lost = ?outcome.lost, excess = ?outcome.excess, members = outcome.members, "re-sharding");
                true
            }
            Ok(Ok(_)) => false,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "shard renewal failed; retrying");
                !keeper.expire_fences(Instant::now()).is_empty()
            }
            Err(_) => {
                tracing::warn!("shard renewal timed out; retrying");
                !keeper.expire_fences(Instant::now()).is_empty()
            }
        };
        metrics.shards_held.set(i64::try_from(keeper.held_count()).unwrap_or(i64::MAX));
        if lost {
            let _ = reshard.send(true);
            // Wait for the term to end before the next round may release anything.
            let _ = stop.wait_for(|s| *s).await;
            return;
        }
    }
}

/// Tries for the lease every retry period until it is held (`Some(when the winning write was
/// sent)`) or shutdown (`None`).
async fn wait_for_lease(c: &mut leader::Candidate, metrics: &Metrics, shutdown: &mut watch::Receiver<bool>) -> Option<Instant> {
    let retry = c.config().retry_period;
    loop {
        match c.try_acquire_or_renew().await {
            Ok(leader::Round::Held { sent }) => {
                tracing::info!(lease = %c.config().name, identity = %c.config().identity, "became leader");
                metrics.lease("acquired");
                return Some(sent);
            }
            Ok(leader::Round::Elsewhere { holder }) => tracing::debug!(%holder, "standby: lease held elsewhere"),
            Ok(leader::Round::Conflict) => tracing::debug!("standby: another replica wrote the lease first"),
            Err(e) => tracing::warn!(error = %e, "lease check failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(retry) => {}
            _ = shutdown.changed() => if *shutdown.borrow() { return None },
        }
    }
}

/// Renews every retry period; returns (closing the fence) when another replica holds the lease
/// or no renewal has succeeded within the renew deadline.
async fn keep_renewing(
    c: &mut leader::Candidate,
    fence: &leader::Fence,
    metrics: &Metrics,
    lost: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let retry = c.config().retry_period;
    loop {
        tokio::select! {
            () = tokio::time::sleep(retry) => {}
            _ = stop.changed() => return,
        }
        // One attempt may take at most a retry period, so the deadline is checked in time.
        match tokio::time::timeout(retry, c.try_acquire_or_renew()).await {
            Ok(Ok(leader::Round::Held { sent })) => fence.renewed(sent),
            Ok(Ok(leader::Round::Elsewhere { holder })) => {
                tracing::error!(%holder, "the lease was taken over");
                break;
            }
            Ok(Ok(leader::Round::Conflict)) => tracing::warn!("lease renewal conflicted; retrying"),
            Ok(Err(e)) => tracing::warn!(error = %e, "lease renewal failed; retrying"),
            Err(_) => tracing::warn!("lease renewal timed out; retrying"),
        }
        if !fence.allows(Instant::now()) {
            tracing::error!("no renewal within the renew deadline");
            break;
        }
    }
    fence.close();
    metrics.leader.set(0);
    let _ = lost.send(true);
}

/// One term of leading: everything that exists only while this replica writes.
struct Term<'a> {
    client: &'a Client,
    config: &'a OperatorConfig,
    metrics: &'a Arc<Metrics>,
    health: &'a Arc<WatchHealth>,
    fence: Option<&'a Arc<leader::Fence>>,
    /// Sharded: the shards this term records.
    ownership: Option<Arc<shards::Ownership>>,
    /// Sharded: where each complete write window's positions go, for the shard Leases.
    publish: Option<Arc<std::sync::Mutex<shards::Positions>>>,
}

impl Term<'_> {
    async fn lead(&self, shutdown: &mut watch::Receiver<bool>, mut lost: watch::Receiver<bool>) -> TermEnd {
        let mut store = Store::new(self.config.clone(), Arc::clone(self.metrics));
        if let Some(o) = &self.ownership {
            store = store.with_ownership(Arc::clone(o));
        }
        let store = Arc::new(store);
        let load = load_reports(self.client, &store, &self.config.selection);
        tokio::select! {
            () = load => {},
            Ok(()) = shutdown.changed() => return TermEnd::Shutdown,
            Ok(()) = lost.changed() => return TermEnd::LostLease,
        }
        let (synced_tx, synced_rx) = watch::channel(false);
        let mut tasks = AbortOnDrop(vec![
            tokio::spawn(watch_pods(
                self.client.clone(),
                Arc::clone(&store),
                self.config.selection.clone(),
                self.config.pod_wire,
                Arc::clone(self.health),
                synced_tx,
            )),
            tokio::spawn(watch_events(
                self.client.clone(),
                Arc::clone(&store),
                self.config.selection.clone(),
                Arc::clone(self.health),
                synced_rx,
            )),
        ]);
        if let Some(settings) = self.config.experiments.clone() {
            let namespaces = match &self.config.selection {
                Selection::Namespaces(nss) => nss.clone(),
                _ => Vec::new(),
            };
            tasks.0.push(tokio::spawn(experiment::run_experiments(self.client.clone(), namespaces, settings, Arc::clone(&store))));
        }
        let gate = match (&self.ownership, self.fence) {
            (Some(o), _) => writer::WriteGate::Shards(Arc::clone(o)),
            (None, Some(f)) => writer::WriteGate::Leader(Arc::clone(f)),
            (None, None) => writer::WriteGate::Open,
        };
        let lease = self.config.lease.as_ref().or(self.config.shards.as_ref().map(|s| &s.lease));
        let write_timeout = lease.map_or(Duration::from_secs(10), LeaseConfig::write_timeout);
        let mut writer = writer::Writer::new(self.client.clone(), Arc::clone(&store), gate, write_timeout);
        // The writer looks for due reports several times a window: a report is taken at most
        // once a window (Store::take_dirty), so a change to a quiet pod waits one tick, not a window.
        let mut writes = tokio::time::interval(write_tick(self.config.write_window));
        writes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut janitor = tokio::time::interval(Duration::from_secs(10).min(self.config.deleted_ttl).max(Duration::from_secs(1)));
        let end = loop {
            tokio::select! {
                _ = writes.tick() => {
                    writer.flush().await;
                    if let Some(publish) = &self.publish {
                        *crate::lock(publish) = store.clean_positions();
                    }
                    let stale = self.health.stale(Instant::now());
                    for watch in ["pods", "events"] {
                        let gauge = self.metrics.watch_stale.get_or_create(&metrics::WatchLabels { watch: watch.into() });
                        gauge.set(i64::from(stale.contains(&watch)));
                    }
                }
                _ = janitor.tick() => writer.expire_deleted().await,
                Ok(()) = shutdown.changed() => if *shutdown.borrow() { break TermEnd::Shutdown },
                Ok(()) = lost.changed() => if *lost.borrow() { break TermEnd::LostLease },
            }
        };
        drop(tasks);
        // What is pending goes out while the fences allow it (a lost lease's never does); a
        // re-shard hands over only what is written.
        tracing::info!("term over: writing pending reports");
        writer.flush_all().await;
        end
    }
}

/// How often the writer takes due reports: a quarter of the write window, and never less than
/// 10 ms (each take walks every tracked pod).
fn write_tick(window: Duration) -> Duration {
    (window / 4).max(Duration::from_millis(10))
}

/// Tasks stopped however their owner ends (a term, an experiment run).
pub(crate) struct AbortOnDrop(pub(crate) Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// The watchers' retry back-off: 250 ms doubling to 2 s, with up to as much again of jitter.
/// Short, so that reports are current within seconds of the apiserver coming back; kube's
/// default (up to 30 s) would leave them stale for half a minute.
pub(crate) fn watch_backoff() -> watcher::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(2))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .into()
}

/// Waits `backoff` after each error of a watch before polling it again, as kube's
/// `StreamBackoff` does, but starts the back-off over only on progress. kube's starts over on
/// any item, and a watcher emits `Init` before each attempt to list: while the apiserver was
/// down every relist waited only the first step, ~0.35 s apart for as long as it was down
/// (`e2e/bench/scale --outage 20`).
pub(crate) fn retry_watch<K, B>(
    stream: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    backoff: B,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send
where
    K: Send + 'static,
    B: kube::runtime::utils::Backoff + 'static,
{
    futures::stream::unfold((stream.boxed(), backoff, None), |(mut stream, mut backoff, wait)| async move {
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
        }
        let item = stream.next().await?;
        let wait = match &item {
            Err(_) => Some(backoff.next().unwrap_or(Duration::from_secs(2))),
            Ok(event) => {
                if !matches!(event, watcher::Event::Init) {
                    backoff.reset();
                }
                None
            }
        };
        Some((item, (stream, backoff, wait)))
    })
}

/// Reads every report of the selection, a page at a time. A report that cannot be read (an
/// older schema, a hand edit) is skipped, counted and logged; its pod's next write replaces
/// it. A failing list is retried with a back-off until it succeeds.
async fn load_reports(client: &Client, store: &Store, selection: &Selection) {
    let resource = ApiResource::erase::<PodLifecycle>(&());
    let apis: Vec<Api<DynamicObject>> = match selection {
        Selection::Namespaces(nss) => nss.iter().map(|ns| Api::namespaced_with(client.clone(), ns, &resource)).collect(),
        _ => vec![Api::all_with(client.clone(), &resource)],
    };
    let mut delay = Duration::from_millis(250);
    for api in apis {
        let mut continue_token: Option<String> = None;
        loop {
            // Small pages: a page is held more than once while it is parsed (bytes, objects,
            // values), and the allocator keeps that peak. At 500, with a copy more than now, a
            // cold start at 1k pods held 3.4x the RSS of a live-grown operator (e2e/bench/scale).
            let mut lp = ListParams::default().limit(REPORT_PAGE);
            lp.continue_token.clone_from(&continue_token);
            let page = match api.list(&lp).await {
                Ok(page) => page,
                Err(kube::Error::Api(e)) if e.code == 410 => {
                    // The continue token expired: start this list over.
                    continue_token = None;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not list reports; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(4));
                    continue;
                }
            };
            let mut good = Vec::with_capacity(page.items.len());
            for object in page.items {
                // A report is named by its pod's UID: another shard's is skipped unparsed.
                if !object.metadata.name.as_deref().is_some_and(|uid| store.owns(uid)) {
                    continue;
                }
                let name = format!(
                    "{}/{}",
                    object.metadata.namespace.clone().unwrap_or_default(),
                    object.metadata.name.clone().unwrap_or_default()
                );
                match report_value(object).and_then(parse_report) {
                    Ok(report) => good.push(report),
                    Err(reason) => {
                        store.metrics.reports_unreadable.inc();
                        tracing::warn!(report = %name, %reason, "skipping a report that cannot be read; its pod's next write replaces it");
                    }
                }
            }
            store.add_stored(good);
            continue_token = page.metadata.continue_.filter(|c| !c.is_empty());
            if continue_token.is_none() {
                break;
            }
        }
    }
    tracing::info!(reports = store.stored_unmatched(), "loaded existing reports");
}

/// Reports per page when loading them at start.
const REPORT_PAGE: u32 = 100;

/// The report as one JSON value, moving its body rather than copying it.
fn report_value(object: DynamicObject) -> Result<serde_json::Value, String> {
    let DynamicObject { types, metadata, data } = object;
    let serde_json::Value::Object(mut fields) = data else { return Err("the report is not a JSON object".into()) };
    fields.insert("metadata".into(), serde_json::to_value(metadata).map_err(|e| e.to_string())?);
    if let Some(types) = types {
        fields.insert("apiVersion".into(), types.api_version.into());
        fields.insert("kind".into(), types.kind.into());
    }
    Ok(serde_json::Value::Object(fields))
}

/// One pod watch: its pods, and the scope its relists judge.
struct PodWatch {
    pods: PodSource,
    scope: Scope,
}

fn pod_watches(client: &Client, selection: &Selection, wire: PodWire) -> Vec<PodWatch> {
    match selection {
        Selection::Labelled(sel) => {
            vec![PodWatch { pods: PodSource::new(client.clone(), None, Some(sel.clone()), wire), scope: Scope::Cluster }]
        }
        Selection::All => vec![PodWatch { pods: PodSource::new(client.clone(), None, None, wire), scope: Scope::Cluster }],
        Selection::Namespaces(nss) => nss
            .iter()
            .map(|ns| PodWatch { pods: PodSource::new(client.clone(), Some(ns), None, wire), scope: Scope::Namespace(ns.clone()) })
            .collect(),
    }
}

/// How a catch-up ended.
enum CatchUp {
    /// Every change from the resume point up to the list was replayed.
    Done {
        replayed: usize,
    },
    /// The resume point is older than the apiserver's watch history (410): what happened in
    /// between can only be rebuilt from the list.
    Expired,
    Failed(String),
}

/// Replays a scope's pod changes from `from` up to `until` by watching from `from`: the
/// apiserver's watch cache keeps at least the last 75 s of changes, so an operator restart,
/// a fail-over or a short outage loses no intermediate status. Bounded: each round ends
/// after 1 s, the whole replay after 30 s.
async fn catch_up(w: &PodWatch, from: u64, until: u64, store: &Store) -> CatchUp {
    let replay = async {
        let mut position = from;
        let mut replayed = 0;
        loop {
            let mut stream = match w.pods.watch(&position.to_string(), 1).await {
                Ok(s) => s,
                Err(kube::Error::Api(e)) if e.code == 410 => return CatchUp::Expired,
                Err(e) => return CatchUp::Failed(e.to_string()),
            };
            let mut any = false;
            while let Some(event) = stream.next().await {
                let (pod, deleted) = match event {
                    Ok(PodWatchEvent::Added(p) | PodWatchEvent::Modified(p)) => (p, false),
                    Ok(PodWatchEvent::Deleted(p)) => (p, true),
                    Ok(PodWatchEvent::Bookmark(version)) => {
                        position = position.max(version.parse().unwrap_or(position));
                        continue;
                    }
                    Ok(PodWatchEvent::Error(e)) if e.code == 410 => return CatchUp::Expired,
                    Ok(PodWatchEvent::Error(e)) => return CatchUp::Failed(e.message.clone()),
                    Err(e) => return CatchUp::Failed(e.to_string()),
                };
                any = true;
                replayed += 1;
                position = position.max(pod.resource_version.unwrap_or(position));
                store.observe_snapshot(&pod, crate::lifecycle::Source::Rebuilt, deleted);
                if position >= until {
                    return CatchUp::Done { replayed };
                }
            }
            if !any {
                return CatchUp::Done { replayed };
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), replay).await.unwrap_or_else(|_| CatchUp::Failed("took longer than 30 s".into()))
}

/// Runs `f` on every item of a watch stream for as long as the stream lasts. A watch error is
/// logged and the watcher's own backoff retries; `try_for_each` would end the watch for good at
/// the first error and silently stop recording.
pub(crate) async fn keep_watching<T>(
    stream: impl futures::Stream<Item = Result<T, watcher::Error>>,
    what: &'static str,
    mut f: impl FnMut(T),
) {
    keep_watching_with(stream, what, None, &mut f).await;
}

async fn keep_watching_with<T>(
    stream: impl futures::Stream<Item = Result<T, watcher::Error>>,
    what: &'static str,
    health: Option<&WatchHealth>,
    f: &mut impl FnMut(T),
) {
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        match item {
            Ok(x) => {
                if let Some(h) = health {
                    h.ok(what);
                }
                f(x);
            }
            Err(e) => {
                if let Some(h) = health {
                    h.error(what, Instant::now());
                }
                tracing::warn!(error = %e, watch = what, "watch error; retrying");
            }
        }
    }
}

async fn watch_pods(
    client: Client,
    store: Arc<Store>,
    selection: Selection,
    wire: PodWire,
    health: Arc<WatchHealth>,
    synced: watch::Sender<bool>,
) {
    let watches = pod_watches(&client, &selection, wire);
    let listed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let total = watches.len();
    let synced = Arc::new(synced);
    let streams = watches.into_iter().map(|w| {
        let (store, health, listed, synced) = (Arc::clone(&store), Arc::clone(&health), Arc::clone(&listed), Arc::clone(&synced));
        async move {
            let mut first = true;
            // Each round is one watcher; a watch failing without a break is started over.
            loop {
            let mut stream = std::pin::pin!(retry_watch(w.pods.snapshots(), watch_backoff()));
            let mut failing = health::FailingSince::default();
            // A relist's pods, trimmed, held back while a catch-up replays what came before.
            let mut relist: Option<Vec<crate::lifecycle::PodSnapshot>> = None;
            while let Some(item) = stream.next().await {
                let event = match item {
                    // `Init` only starts an attempt to list: no sign the apiserver answers, so
                    // not health. But it is a fresh list already, all that starting the watch
                    // over would do, so the failing clock starts again.
                    Ok(watcher::Event::Init) => {
                        failing.ok();
                        watcher::Event::Init
                    }
                    Ok(event) => {
                        health.ok("pods");
                        failing.ok();
                        event
                    }
                    Err(e) => {
                        health.error("pods", Instant::now());
                        tracing::warn!(error = %e, watch = "pods", "watch error; retrying");
                        if failing.failed(Instant::now()) {
                            tracing::warn!(scope = ?w.scope, "the pod watch has failed for {} s without a break: starting over with a fresh list", health::RESTART_AFTER.as_secs());
                            break;
                        }
                        continue;
                    }
                };
                match event {
                    // A (re)list of this scope: what follows is rebuilt state, not live observation.
                    watcher::Event::Init => {
                        // Once per relist, not once per attempt at it.
                        if !first && relist.is_none() {
                            store.metrics.relist("pods");
                            tracing::info!(scope = ?w.scope, "relisting the pods (the watch expired or was started over)");
                        }
                        relist = Some(Vec::new());
                    }
                    watcher::Event::InitApply(pod) => {
                        if store.owns(&pod.uid) {
                            relist.get_or_insert_with(Vec::new).push(pod);
                        }
                    }
                    watcher::Event::InitDone => {
                        let listed_pods = relist.take().unwrap_or_default();
                        // Replay up to the collection's own version, not just the newest listed
                        // pod: a pod deleted meanwhile is not listed, but its last status and its
                        // deletion are in the watch. Only at a term's first list: a relist within
                        // a term follows a 410, so the history before it is gone anyway.
                        let until = if first { w.pods.collection_version().await.ok().flatten() } else { None };
                        let until = until.or_else(|| listed_pods.iter().filter_map(|p| p.resource_version).max());
                        if first
                            && let (Some(from), Some(until)) = (store.resume_point(&w.scope), until)
                            && from < until
                        {
                            match catch_up(&w, from, until, &store).await {
                                CatchUp::Done { replayed } => {
                                    store.metrics.catch_up("replayed");
                                    tracing::info!(scope = ?w.scope, from, until, replayed, "replayed the pod watch from the last written position");
                                }
                                CatchUp::Expired => {
                                    store.metrics.catch_up("expired");
                                    tracing::warn!(scope = ?w.scope, from, "the last written position is older than the apiserver's watch history: rebuilding from the list");
                                }
                                CatchUp::Failed(why) => {
                                    store.metrics.catch_up("failed");
                                    tracing::warn!(scope = ?w.scope, from, %why, "could not replay the pod watch: rebuilding from the list");
                                }
                            }
                        }
                        let seen: HashSet<String> = listed_pods.iter().map(|p| p.uid.clone()).collect();
                        for (i, pod) in listed_pods.iter().enumerate() {
                            store.observe_snapshot(pod, crate::lifecycle::Source::Rebuilt, false);
                            // One thread runs every watch, the writer and the Lease renewals
                            // (src/bin/podlife-operator.rs): a 10k-pod relist lets them in. The
                            // writer could already run between these on the multi-thread runtime.
                            if i % 500 == 499 {
                                tokio::task::yield_now().await;
                            }
                        }
                        store.mark_missing_as_gone(&w.scope, &seen);
                        if std::mem::take(&mut first) && listed.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 >= total {
                            health.set_synced(true);
                            let _ = synced.send(true);
                        }
                    }
                    watcher::Event::Apply(pod) => store.observe_snapshot(&pod, crate::lifecycle::Source::Live, false),
                    watcher::Event::Delete(pod) => store.observe_snapshot(&pod, crate::lifecycle::Source::Live, true),
                }
            }
            }
        }
    });
    let _ = futures::future::join_all(streams).await;
}

/// The numeric resourceVersion of an event (0 if it has none or it is not a number).
fn version_of(e: &Event) -> u64 {
    e.metadata.resource_version.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// What the event watch hands on to be folded.
#[derive(Debug)]
pub(crate) enum EventWatchItem {
    /// An attempt to list began. No sign that the apiserver answers, but a fresh list is all
    /// that starting the watch over would do, so it stops the clock towards a restart.
    ListStarted,
    Event(Box<Event>),
}

/// Turns a watch of Events into the events to fold, in resourceVersion order: a relist's
/// items (in key order from the apiserver) are held until the list is complete and sorted;
/// deletions (an event's TTL running out) are dropped, as they say nothing new.
pub(crate) fn events_in_order(
    stream: impl Stream<Item = Result<watcher::Event<Event>, watcher::Error>>,
) -> impl Stream<Item = Result<EventWatchItem, watcher::Error>> {
    stream
        .scan(None::<Vec<Event>>, |relist, item| {
            let out: Vec<Result<EventWatchItem, watcher::Error>> = match item {
                Err(e) => vec![Err(e)],
                Ok(watcher::Event::Init) => {
                    *relist = Some(Vec::new());
                    vec![Ok(EventWatchItem::ListStarted)]
                }
                Ok(watcher::Event::InitApply(e)) => {
                    relist.get_or_insert_with(Vec::new).push(e);
                    Vec::new()
                }
                Ok(watcher::Event::InitDone) => {
                    let mut listed = relist.take().unwrap_or_default();
                    listed.sort_by_key(version_of);
                    listed.into_iter().map(|e| Ok(EventWatchItem::Event(Box::new(e)))).collect()
                }
                Ok(watcher::Event::Apply(e)) => vec![Ok(EventWatchItem::Event(Box::new(e)))],
                Ok(watcher::Event::Delete(_)) => Vec::new(),
            };
            futures::future::ready(Some(futures::stream::iter(out)))
        })
        .flatten()
}

async fn watch_events(
    client: Client,
    store: Arc<Store>,
    selection: Selection,
    health: Arc<WatchHealth>,
    mut synced: watch::Receiver<bool>,
) {
    // Only once every pod list is in: an event whose pod is unknown after that is for an
    // untracked pod (or one created a moment ago), not for one still being listed.
    let _ = synced.wait_for(|s| *s).await;
    let cfg = watcher::Config::default().fields("involvedObject.kind=Pod");
    let apis: Vec<Api<Event>> = match &selection {
        Selection::Namespaces(nss) => nss.iter().map(|ns| Api::namespaced(client.clone(), ns)).collect(),
        _ => vec![Api::all(client.clone())],
    };
    let streams = apis.into_iter().map(|api| {
        let store = Arc::clone(&store);
        let health = Arc::clone(&health);
        let cfg = cfg.clone();
        async move {
            // Each round is one watcher; a watch failing without a break is started over.
            loop {
                let mut stream = std::pin::pin!(events_in_order(retry_watch(watcher(api.clone(), cfg.clone()), watch_backoff())));
                let mut failing = health::FailingSince::default();
                while let Some(item) = stream.next().await {
                    match item {
                        // Without this, a watch whose lists kept failing (the apiserver down)
                        // was started over every 10 s, its back-off from the first step.
                        Ok(EventWatchItem::ListStarted) => failing.ok(),
                        Ok(EventWatchItem::Event(event)) => {
                            health.ok("events");
                            failing.ok();
                            store.observe_event(&event);
                        }
                        Err(e) => {
                            health.error("events", Instant::now());
                            tracing::warn!(error = %e, watch = "events", "watch error; retrying");
                            if failing.failed(Instant::now()) {
                                tracing::warn!(
                                    "the event watch has failed for {} s without a break: starting over with a fresh list",
                                    health::RESTART_AFTER.as_secs()
                                );
                                break;
                            }
                        }
                    }
                }
            }
        }
    });
    let _ = futures::future::join_all(streams).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Defect caught: a writer that looks for due reports once a window, so that a change to a
    /// quiet pod waits up to a whole window (p99 over 1 s at the default); or a zero window
    /// making a zero interval (a panic in tokio) or a busy loop over every pod.
    #[test]
    fn the_writer_ticks_four_times_a_window_and_never_faster_than_10_ms() {
        assert_eq!(write_tick(Duration::from_secs(1)), Duration::from_millis(250));
        assert_eq!(write_tick(Duration::from_millis(20)), Duration::from_millis(10));
        assert_eq!(write_tick(Duration::ZERO), Duration::from_millis(10));
    }

    /// A back-off that notes the step of each wait it hands out.
    struct Steps {
        step: u32,
        waits: Arc<std::sync::Mutex<Vec<u32>>>,
    }

    impl Iterator for Steps {
        type Item = Duration;
        fn next(&mut self) -> Option<Duration> {
            self.step += 1;
            self.waits.lock().unwrap().push(self.step);
            Some(Duration::from_millis(u64::from(self.step) * 10))
        }
    }

    impl kube::runtime::utils::Backoff for Steps {
        fn reset(&mut self) {
            self.step = 0;
        }
    }

    #[tokio::test]
    async fn a_watch_that_keeps_failing_to_relist_keeps_backing_off() {
        // Defect caught: starting the back-off over on the `Init` that comes before each
        // attempt to list (kube's StreamBackoff), so a watch whose lists kept failing retried
        // at the first step, ~0.35 s apart, for as long as the apiserver was down.
        let fail = || Err(watcher::Error::NoResourceVersion);
        let items: Vec<Result<watcher::Event<u8>, watcher::Error>> = vec![
            fail(),
            Ok(watcher::Event::Init),
            fail(),
            Ok(watcher::Event::Init),
            fail(),
            // A list that gets through: progress, so the next failure starts over.
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(1)),
            Ok(watcher::Event::InitDone),
            fail(),
        ];
        let waits = Arc::new(std::sync::Mutex::new(Vec::new()));
        let backoff = Steps { step: 0, waits: Arc::clone(&waits) };
        let started = Instant::now();
        let passed: Vec<_> = retry_watch(futures::stream::iter(items), backoff).collect().await;
        assert_eq!(passed.len(), 9, "every item passes through");
        assert_eq!(*waits.lock().unwrap(), [1, 2, 3, 1]);
        // The waits are slept, not only chosen: 10 + 20 + 30 + 10 ms, each before the poll
        // after an error (the last one before the stream's end is found).
        assert!(started.elapsed() >= Duration::from_millis(70), "{:?}", started.elapsed());
    }

    #[test]
    fn a_listed_report_reads_back_whole_without_a_copy() {
        // A stored report as a list page carries it: a history with a restart in its status.
        let mut history = crate::lifecycle::PodHistory::new("p", "u");
        history.summary.restarts = 3;
        let stored = serde_json::json!({"apiVersion": "podlife.io/v1alpha1", "kind": "PodLifecycle",
            "metadata": {"name": "u", "namespace": "n", "labels": {"podlife.io/pod-name": "p"}},
            "spec": {"podName": "p", "podUid": "u"}, "status": history});
        let object: DynamicObject = serde_json::from_value(stored.clone()).unwrap();
        let value = report_value(object).unwrap();
        assert_eq!(value, stored, "moved, the value is the stored object itself");
        let (uid, report) = store::parse_report(value).unwrap();
        assert_eq!((uid.as_str(), report.namespace.as_str(), report.history.summary.restarts), ("u", "n", 3));
        let not_an_object = DynamicObject { types: None, metadata: Default::default(), data: serde_json::json!([1]) };
        assert!(report_value(not_an_object).is_err());
    }

    #[tokio::test]
    async fn a_watch_error_does_not_end_the_watch() {
        // What kube-runtime's watcher yields around a dropped connection: an error, then more.
        let items = vec![Ok(1), Err(watcher::Error::NoResourceVersion), Ok(2), Ok(3)];
        let mut seen = Vec::new();
        keep_watching(futures::stream::iter(items), "test", |n| seen.push(n)).await;
        assert_eq!(seen, [1, 2, 3]);
    }

    fn ev(version: &str) -> Event {
        serde_json::from_value(serde_json::json!({"metadata": {"name": version, "resourceVersion": version}, "involvedObject": {}}))
            .unwrap()
    }

    #[tokio::test]
    async fn a_relists_events_come_out_in_resource_version_order_and_deletions_are_dropped() {
        // The apiserver lists in key order; folding 30 before 12 would make 12 look like a
        // replay and lose it.
        let items = vec![
            Ok(watcher::Event::Apply(ev("5"))),
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(ev("30"))),
            Ok(watcher::Event::InitApply(ev("12"))),
            Ok(watcher::Event::InitApply(ev("21"))),
            Ok(watcher::Event::InitDone),
            Ok(watcher::Event::Delete(ev("31"))),
            Ok(watcher::Event::Apply(ev("32"))),
        ];
        let out: Vec<String> = events_in_order(futures::stream::iter(items))
            .filter_map(|item| async move {
                match item.unwrap() {
                    EventWatchItem::Event(e) => e.metadata.resource_version,
                    EventWatchItem::ListStarted => None,
                }
            })
            .collect()
            .await;
        assert_eq!(out, ["5", "12", "21", "30", "32"]);
    }

    #[tokio::test]
    async fn each_attempt_to_list_events_is_handed_on() {
        // Defect caught: hiding the watcher's `Init`, so the event watch could not tell a list
        // being retried from a watch failing for good, and while the apiserver was down it was
        // started over every 10 s (`e2e/bench/scale --outage 20`), its back-off from the start.
        let fail = || Err(watcher::Error::NoResourceVersion);
        let items = vec![
            fail(),
            Ok(watcher::Event::Init),
            fail(),
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(ev("7"))),
            Ok(watcher::Event::InitDone),
        ];
        let out: Vec<&str> = events_in_order(futures::stream::iter(items))
            .map(|item| match item {
                Err(_) => "error",
                Ok(EventWatchItem::ListStarted) => "list",
                Ok(EventWatchItem::Event(_)) => "event",
            })
            .collect()
            .await;
        assert_eq!(out, ["error", "list", "error", "list", "event"]);
    }
}
