//! Writes reports: server-side apply of the spec once, then of the status subresource, at
//! most once per pod per write window. Deletes reports whose pod's TTL has run out.
//!
//! # Guarantees
//! - Nothing is written while the leader's fence (or the pod's shard's) is closed, and every write is bounded in
//!   time so that it ends before another replica may take the lease over.
//! - When the apiserver cannot be reached, the window's writes not yet started are put back, and
//!   the writer as a whole backs off ([`Reachability`]): one probing write at a time, 250 ms
//!   after the failure, then doubling up to 4 s, until one is answered. Writes already in
//!   flight (up to [`WRITE_CONCURRENCY`] - 1) run to their own timeout. The first failure is
//!   logged as a warning, the recovery once; the failures between are debug lines.

use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use std::sync::Arc;

use super::leader::Fence;
use super::owners::OwnerLookup;
use super::shards::Ownership;
use super::store::{Batch, DirtyReport, Store, WriteOutcome, doubled};
use crate::crd::PodLifecycle;
use crate::lifecycle::PodHistory;
use crate::lifecycle::workload::label_value;

const FIELD_MANAGER: &str = "podlife-operator";

/// Report writes in flight at once. Bounded so that a window of 10k changed pods does not
/// open 10k requests, and within the apiserver's default share for one client's flows
/// (a ServiceAccount's requests fall in workload-low, with hundreds of seats). Each write waits
/// on the apiserver (135-180 ms each on a busy 2-core machine), so the bound sets throughput:
/// 16 carried only ~118 writes/s. Measured back to back at 10k pods and ~117 changes/s
/// (`e2e/bench/scale --pods 10000 --replicas 0`), change to write p50/p99 went from
/// 2.8 s / 5.4 s at 16 to 0.7 s / 2.2 s at 32.
pub const WRITE_CONCURRENCY: usize = 32;

/// What must hold for a report to be written.
pub enum WriteGate {
    /// No election: always.
    Open,
    /// The leader's fence is open.
    Leader(Arc<Fence>),
    /// The fence of the pod's shard is open.
    Shards(Arc<Ownership>),
}

impl WriteGate {
    /// `uid` `None`: whether any write may start at all.
    fn allows(&self, uid: Option<&str>, now: Instant) -> bool {
        match (self, uid) {
            (WriteGate::Open, _) | (WriteGate::Shards(_), None) => true,
            (WriteGate::Leader(fence), _) => fence.allows(now),
            (WriteGate::Shards(ownership), Some(uid)) => ownership.allows(uid, now),
        }
    }
}

/// First wait after the apiserver could not be reached, before one write probes it again.
pub const PROBE_BACKOFF_FIRST: Duration = Duration::from_millis(250);
/// Longest wait between probes: a report is current within about this long after the
/// apiserver comes back, as with each report's own retry (`WRITE_RETRY_UNREACHABLE_MAX`).
pub const PROBE_BACKOFF_MAX: Duration = Duration::from_secs(4);

/// Whether the writer can reach the apiserver, and so how many writes it may start.
///
/// Without it each report backed off on its own, so every tick started up to
/// [`WRITE_CONCURRENCY`] other reports against a server that was down: a 1k-pod operator tried
/// about 130 writes and logged about 260 lines a second for as long as the apiserver was gone.
/// Pure: the caller passes the time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reachability {
    Reachable,
    /// Since `since`; `failed_probes` probes failed after the first failure. The next probe
    /// may start at `next_probe`.
    Unreachable {
        since: Instant,
        failed_probes: u32,
        failed_writes: u64,
        next_probe: Instant,
    },
}

/// How many writes may start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Up to [`WRITE_CONCURRENCY`].
    Full,
    /// One write, to find out whether the apiserver is back.
    Probe,
    /// None yet: the writer is backing off.
    Wait,
}

/// What an answer changed, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReachabilityChange {
    /// The first write that could not reach the apiserver.
    Lost,
    /// A probe failed; the next waits this long.
    StillDown { next_in: Duration },
    /// A write started before the back-off failed too: it changes nothing.
    Straggler,
    /// A write was answered after the apiserver was unreachable.
    Back { down_for: Duration, failed_writes: u64 },
    /// Nothing changed.
    None,
}

impl Reachability {
    #[must_use]
    pub fn admission(&self, now: Instant) -> Admission {
        match self {
            Reachability::Reachable => Admission::Full,
            Reachability::Unreachable { next_probe, .. } if now >= *next_probe => Admission::Probe,
            Reachability::Unreachable { .. } => Admission::Wait,
        }
    }

    /// A write started under `started_as` could not reach the apiserver.
    pub fn unreachable(&mut self, started_as: Admission, now: Instant) -> ReachabilityChange {
        match self {
            Reachability::Reachable => {
                *self = Reachability::Unreachable { since: now, failed_probes: 0, failed_writes: 1, next_probe: now + PROBE_BACKOFF_FIRST };
                ReachabilityChange::Lost
            }
            Reachability::Unreachable { failed_probes, failed_writes, next_probe, .. } => {
                *failed_writes += 1;
                if started_as != Admission::Probe {
                    return ReachabilityChange::Straggler;
                }
                *failed_probes = failed_probes.saturating_add(1);
                let next_in = doubled(PROBE_BACKOFF_FIRST, *failed_probes, PROBE_BACKOFF_MAX);
                *next_probe = now + next_in;
                ReachabilityChange::StillDown { next_in }
            }
        }
    }

    /// Lets the next write probe at once (a term's last flush cannot wait out the back-off).
    pub fn probe_now(&mut self, now: Instant) {
        if let Reachability::Unreachable { next_probe, .. } = self {
            *next_probe = now;
        }
    }

    /// A write was answered (written or refused: either way the apiserver is there).
    pub fn answered(&mut self, now: Instant) -> ReachabilityChange {
        match std::mem::replace(self, Reachability::Reachable) {
            Reachability::Reachable => ReachabilityChange::None,
            Reachability::Unreachable { since, failed_writes, .. } => {
                ReachabilityChange::Back { down_for: now.saturating_duration_since(since), failed_writes }
            }
        }
    }
}

pub struct Writer {
    client: Client,
    store: Arc<Store>,
    gate: WriteGate,
    timeout: Duration,
    fenced_logged: bool,
    owners: OwnerLookup,
    reachability: Reachability,
}

/// Why a write did not happen.
#[derive(Debug)]
enum WriteError {
    Api(kube::Error),
    TimedOut,
}

impl Writer {
    pub fn new(client: Client, store: Arc<Store>, gate: WriteGate, timeout: Duration) -> Self {
        let owners = OwnerLookup::new(client.clone(), timeout);
        Writer { client, store, gate, timeout, fenced_logged: false, owners, reachability: Reachability::Reachable }
    }

    /// The apiserver answered a request: if it had been unreachable, writes resume.
    fn answered(&mut self) {
        if let ReachabilityChange::Back { down_for, failed_writes } = self.reachability.answered(Instant::now()) {
            tracing::info!(?down_for, failed_writes, "apiserver reachable again: resuming report writes");
        }
    }

    fn may_write(&mut self, uid: Option<&str>) -> bool {
        let open = self.gate.allows(uid, Instant::now());
        if !open && !std::mem::replace(&mut self.fenced_logged, true) {
            tracing::warn!("the lease fence is closed: not writing until it is renewed");
        }
        if open {
            self.fenced_logged = false;
        }
        open
    }

    /// Writes every report due, up to [`WRITE_CONCURRENCY`] at a time. One write is one
    /// apiserver round trip (two for a new report); one at a time, 1k pods changing every 5 s already outran the
    /// window (66 writes/s, p99 from change to write 16 s, `e2e/bench/scale`).
    pub async fn flush(&mut self) {
        self.flush_taken(Store::take_dirty).await;
    }

    /// Writes every changed report, even one written less than a window ago: at the end of a
    /// term, what is not written now is handed over unwritten.
    pub async fn flush_all(&mut self) {
        // The last chance: probe now rather than wait out the back-off.
        self.reachability.probe_now(Instant::now());
        self.flush_taken(Store::take_all_dirty).await;
    }

    async fn flush_taken(&mut self, take: fn(&Store, Instant) -> Batch) {
        if self.reachability.admission(Instant::now()) == Admission::Wait || !self.may_write(None) {
            return;
        }
        let mut batch = take(&self.store, Instant::now());
        self.owners.complete(&mut batch.reports, &self.store).await;
        let mut waiting = std::mem::take(&mut batch.reports).into_iter();
        let mut in_flight = FuturesUnordered::new();
        let mut all_written = true;
        let mut stopped = false;
        loop {
            loop {
                let admission = self.reachability.admission(Instant::now());
                let limit = match admission {
                    Admission::Full => WRITE_CONCURRENCY,
                    Admission::Probe => 1,
                    // What is not started goes back below, never left marked as being written.
                    Admission::Wait => {
                        stopped = true;
                        0
                    }
                };
                if stopped || in_flight.len() >= limit {
                    break;
                }
                let Some(report) = waiting.next() else { break };
                if !self.may_write(Some(&report.uid)) {
                    self.store.requeue([report.uid]);
                    all_written = false;
                    // A closed shard fence holds back only its own pods.
                    if matches!(self.gate, WriteGate::Shards(_)) {
                        continue;
                    }
                    stopped = true;
                    break;
                }
                let (client, timeout) = (self.client.clone(), self.timeout);
                in_flight.push(async move {
                    let started = Instant::now();
                    let result = match tokio::time::timeout(timeout, write_one(&client, &report)).await {
                        Ok(r) => r.map_err(WriteError::Api),
                        Err(_) => Err(WriteError::TimedOut),
                    };
                    (report, result, started.elapsed(), admission)
                });
            }
            let Some((report, result, elapsed, admission)) = in_flight.next().await else { break };
            self.store.metrics.write_latency.observe(elapsed.as_secs_f64());
            let outcome = match &result {
                Ok(()) => WriteOutcome::Written,
                Err(WriteError::Api(kube::Error::Api(e))) if e.code == 404 => WriteOutcome::Missing,
                // The apiserver itself is struggling (restarting, overloaded), or failed this
                // one write (500): retry soon.
                Err(WriteError::Api(kube::Error::Api(e))) if e.code >= 500 || e.code == 429 => WriteOutcome::Unreachable,
                Err(WriteError::Api(kube::Error::Api(_))) => WriteOutcome::Refused,
                Err(_) => WriteOutcome::Unreachable,
            };
            let server_down = match &result {
                Ok(()) => false,
                Err(WriteError::TimedOut) => true,
                Err(WriteError::Api(e)) => apiserver_down(e),
            };
            match &result {
                Err(e) if server_down => {
                    self.store.metrics.write("unreachable");
                    let (pod, namespace) = (&report.history.pod, &report.namespace);
                    match self.reachability.unreachable(admission, Instant::now()) {
                        ReachabilityChange::Lost => {
                            tracing::warn!(%pod, %namespace, error = ?e, "apiserver unreachable: pausing report writes, probing with one write at a time");
                        }
                        ReachabilityChange::StillDown { next_in } => {
                            tracing::debug!(%pod, %namespace, error = ?e, next_probe_in = ?next_in, "apiserver still unreachable");
                        }
                        _ => {
                            tracing::debug!(%pod, %namespace, error = ?e, "a write already in flight could not reach the apiserver either")
                        }
                    }
                    // The rest would fail the same way: start no more; they go back below.
                    stopped = true;
                }
                result => {
                    self.answered();
                    match result {
                        Ok(()) => {
                            self.store.metrics.write("ok");
                            if labels_due(&report) {
                                self.store.labelled(&report.uid);
                            }
                        }
                        Err(e) => {
                            self.store.metrics.write("error");
                            tracing::warn!(pod = %report.history.pod, namespace = %report.namespace, error = ?e, "report write failed; will retry with back-off");
                        }
                    }
                }
            }
            all_written &= outcome == WriteOutcome::Written;
            self.store.written(&report.uid, outcome, Instant::now());
        }
        if stopped {
            // Not attempted: put back for the next window.
            self.store.requeue(waiting.map(|r| r.uid));
        } else if all_written {
            self.store.written_all(&batch);
        }
    }

    /// Deletes the reports whose TTL has run out, each while the fence is open and bounded in
    /// time like a write; a failed deletion stays for the next round.
    /// While the apiserver is unreachable, a deletion waits like a write: when a probe is due,
    /// one deletion may be it (in a quiet cluster no write may be due to probe with).
    pub async fn expire_deleted(&mut self) {
        for (uid, namespace) in self.store.take_expired(jiff::Timestamp::now()) {
            let admission = self.reachability.admission(Instant::now());
            if admission == Admission::Wait || !self.may_write(Some(&uid)) {
                return;
            }
            let api: Api<PodLifecycle> = Api::namespaced(self.client.clone(), &namespace);
            let result = tokio::time::timeout(self.timeout, api.delete(&uid, &DeleteParams::default())).await;
            let answered = match &result {
                Ok(Ok(_)) => {
                    tracing::info!(%uid, %namespace, "deleted report after its TTL");
                    self.store.expired(&uid);
                    true
                }
                Ok(Err(kube::Error::Api(e))) if e.code == 404 => {
                    self.store.expired(&uid);
                    true
                }
                Ok(Err(e)) if !apiserver_down(e) => {
                    tracing::warn!(%uid, %namespace, error = %e, "could not delete expired report; will retry");
                    true
                }
                _ => false,
            };
            if answered {
                self.answered();
                continue;
            }
            let error = match result {
                Ok(Err(e)) => e.to_string(),
                _ => "timed out".to_string(),
            };
            if self.reachability.unreachable(admission, Instant::now()) == ReachabilityChange::Lost {
                tracing::warn!(%uid, %namespace, %error, "apiserver unreachable: pausing report writes and deletions");
            }
            return;
        }
    }
}

/// Whether a failed request tells only that the apiserver is not serving: no answer, 429, or
/// 502-504. A 500 is an answer about the one request (an admission webhook that failed, say),
/// so that report or deletion backs off alone.
fn apiserver_down(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(e) => e.code == 429 || e.code > 500,
        _ => true,
    }
}

#[tracing::instrument(skip(client, report), fields(pod = %report.history.pod, namespace = %report.namespace))]
async fn write_one(client: &Client, report: &DirtyReport) -> Result<(), kube::Error> {
    let api: Api<PodLifecycle> = Api::namespaced(client.clone(), &report.namespace);
    match apply(client, &api, report, !report.report_exists || labels_due(report)).await {
        // Server-side apply must read the stored object; one written under a schema this
        // version cannot read (500 "failed to create typed live object") can only be replaced.
        Err(kube::Error::Api(e)) if e.code == 500 && e.message.contains("typed live object") => {
            tracing::warn!(uid = %report.uid, "the stored report cannot be read under this schema: replacing it");
            match api.delete(&report.uid, &DeleteParams::default()).await {
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
                Ok(_) => {}
            }
            apply(client, &api, report, true).await
        }
        other => other,
    }
}

async fn apply(client: &Client, api: &Api<PodLifecycle>, report: &DirtyReport, with_spec: bool) -> Result<(), kube::Error> {
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let uid = &report.uid;
    if with_spec {
        let object = json!({
            "apiVersion": "podlife.io/v1alpha1", "kind": "PodLifecycle",
            "metadata": {"name": uid, "labels": labels(report)},
            "spec": {"podName": report.history.pod, "podUid": uid},
        });
        api.patch(uid, &pp, &Patch::Apply(object)).await?;
    }
    apply_status(client, &report.namespace, uid, &pp, &report.history).await
}

/// The status apply's body, serialised straight from the history (no JSON value between).
#[derive(serde::Serialize)]
struct StatusApply<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    status: &'a PodHistory,
}

/// Applies a report's status without decoding the stored report the apiserver answers with:
/// nothing reads it, and decoding a whole history per write was CPU spent for nothing.
async fn apply_status(client: &Client, namespace: &str, uid: &str, pp: &PatchParams, history: &PodHistory) -> Result<(), kube::Error> {
    let body = StatusApply { api_version: "podlife.io/v1alpha1", kind: "PodLifecycle", status: history };
    let mut request = kube::core::Request::new(<PodLifecycle as kube::Resource>::url_path(&(), Some(namespace)))
        .patch_subresource("status", uid, pp, &Patch::Apply(&body))
        .map_err(kube::Error::BuildRequest)?;
    // The name kube's own `patch_status` gives the request in its traces.
    request.extensions_mut().insert("patch_status");
    // Errors (4xx, 5xx) come back as `kube::Error::Api`, as from `Api::patch_status`.
    client.request_text(request).await?;
    Ok(())
}

/// The report's workload labels are complete and not yet on the object.
fn labels_due(report: &DirtyReport) -> bool {
    !report.labelled && report.history.owners.as_ref().is_some_and(|o| o.complete)
}

fn labels(report: &DirtyReport) -> std::collections::BTreeMap<String, String> {
    let mut labels = report.history.owners.as_ref().map(crate::lifecycle::workload::Owners::labels).unwrap_or_default();
    labels.insert("podlife.io/pod-name".into(), label_value(&report.history.pod));
    labels
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::Source;
    use crate::operator::store::{WRITE_RETRY_UNREACHABLE_MAX, WriteOutcome};
    use crate::operator::{Metrics, OperatorConfig};

    #[test]
    fn one_probe_at_a_time_after_the_apiserver_is_lost_backing_off_to_a_cap() {
        // Defects caught: starting full rounds again on the next tick (the retry storm); a
        // failure of a write started before the back-off (a straggler) doubling the wait; no
        // cap, so a long outage leaves reports stale for minutes after the apiserver is back.
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut r = Reachability::Reachable;
        assert_eq!(r.admission(t0), Admission::Full);
        assert_eq!(r.unreachable(Admission::Full, t0), ReachabilityChange::Lost);
        assert_eq!(r.unreachable(Admission::Full, t0 + ms(5)), ReachabilityChange::Straggler);
        assert_eq!(r.admission(t0 + ms(249)), Admission::Wait);
        assert_eq!(r.admission(t0 + ms(250)), Admission::Probe);
        let mut now = t0 + ms(250);
        let mut waits = Vec::new();
        for _ in 0..6 {
            let ReachabilityChange::StillDown { next_in } = r.unreachable(Admission::Probe, now) else { panic!("{r:?}") };
            assert_eq!(r.admission(now + next_in - ms(1)), Admission::Wait);
            now += next_in;
            assert_eq!(r.admission(now), Admission::Probe);
            waits.push(next_in.as_millis());
        }
        assert_eq!(waits, [500, 1000, 2000, 4000, 4000, 4000]);
        assert_eq!(r.answered(now + ms(10)), ReachabilityChange::Back { down_for: now + ms(10) - t0, failed_writes: 8 });
        assert_eq!(r.admission(now + ms(10)), Admission::Full);
        assert_eq!(r.answered(now + ms(20)), ReachabilityChange::None);
        // A term's last flush probes without waiting.
        r.unreachable(Admission::Probe, now);
        r.probe_now(now + ms(1));
        assert_eq!(r.admission(now + ms(1)), Admission::Probe);
        r.answered(now + ms(2));
        // Lost again: the back-off starts over from its first step.
        assert_eq!(r.unreachable(Admission::Full, now), ReachabilityChange::Lost);
        assert_eq!(r.admission(now + ms(250)), Admission::Probe);
    }

    fn unreachable_writes(metrics: &Metrics) -> u64 {
        let text = metrics.encode();
        let line = text.lines().find(|l| l.starts_with("podlife_report_writes_total{") && l.contains(r#"outcome="unreachable""#));
        line.and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0)
    }

    /// A real client against a port nothing listens on, so each request fails at once as it
    /// does while the apiserver restarts.
    fn refused_client() -> Client {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Client::try_from(kube::Config::new(format!("http://127.0.0.1:{port}").parse().unwrap())).unwrap()
    }

    #[tokio::test]
    async fn an_expired_report_s_deletion_probes_when_no_write_is_due() {
        // Defect caught: deletions waiting for a write to probe with, which in a quiet cluster
        // never comes: no report expired until some pod changed.
        let store = Store::new(OperatorConfig { deleted_ttl: Duration::ZERO, ..OperatorConfig::default() }, Arc::new(Metrics::new()));
        let pod = serde_json::from_value(serde_json::json!({"metadata": {"name": "p", "namespace": "n", "uid": "u"}})).unwrap();
        store.observe_pod(&pod, Source::Live, true);
        let now = Instant::now();
        assert_eq!(store.take_dirty(now).reports.len(), 1);
        store.written("u", WriteOutcome::Written, now);
        let mut writer = Writer::new(refused_client(), Arc::new(store), WriteGate::Open, Duration::from_secs(2));
        writer.reachability = Reachability::Unreachable { since: now, failed_probes: 0, failed_writes: 1, next_probe: now };
        writer.expire_deleted().await;
        assert!(matches!(writer.reachability, Reachability::Unreachable { failed_probes: 1, .. }), "{:?}", writer.reachability);
        // The back-off holds the next deletion back.
        writer.expire_deleted().await;
        assert!(matches!(writer.reachability, Reachability::Unreachable { failed_probes: 1, .. }), "{:?}", writer.reachability);
    }

    #[tokio::test]
    async fn a_writer_that_cannot_reach_the_apiserver_probes_instead_of_storming_and_keeps_every_report() {
        // Defect caught: each report backing off on its own, so every 250 ms tick started
        // WRITE_CONCURRENCY other reports (measured before: ~130 writes/s at 1k pods).
        let client = refused_client();
        let store = Arc::new(Store::new(OperatorConfig::default(), Arc::new(Metrics::new())));
        let pods = 200;
        for i in 0..pods {
            let pod = serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("p{i}"), "namespace": "n", "uid": format!("u{i}"), "resourceVersion": "1"},
                "status": {"phase": "Pending"}
            }))
            .unwrap();
            store.observe_pod(&pod, Source::Live, false);
        }
        let mut writer = Writer::new(client, Arc::clone(&store), WriteGate::Open, Duration::from_secs(2));
        // 2.1 s of the operator's 250 ms ticks (a 1 s window). Before, that was 9 rounds of 32.
        let started = Instant::now();
        let mut ticks = tokio::time::interval(Duration::from_millis(250));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while started.elapsed() < Duration::from_millis(2100) {
            ticks.tick().await;
            writer.flush().await;
        }
        let attempts = unreachable_writes(&store.metrics);
        // Nothing lost: once their own retries are due, every report is taken again (one
        // taken and never put back would stay marked as being written).
        let later = store.take_all_dirty(Instant::now() + WRITE_RETRY_UNREACHABLE_MAX);
        assert_eq!(later.reports.len(), pods, "reports still to write after {attempts} attempts");
        // The first round's 32, then probes on the first tick at or after their time: the
        // first at 0.5 s (the 0.25 s tick comes a few ms before its time), then 1 or 1.25 s,
        // then 2.25 s or later, past the end: 34 or 35. One fewer is allowed for a slow machine;
        // the old rule made about 290.
        assert!((WRITE_CONCURRENCY as u64 + 1..=WRITE_CONCURRENCY as u64 + 4).contains(&attempts), "{attempts} attempts in 2.1 s");
    }
}
