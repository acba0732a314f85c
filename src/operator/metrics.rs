//! The operator's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::lifecycle::Source;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    kind: String,
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchLabels {
    pub watch: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// A workload and one of its containers. Bounded by the workloads, not the pods: a bare pod
/// counts under kind "none" and no name, and a pod whose Deployment or CronJob is not known yet
/// (its first second) under its ReplicaSet or Job.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkloadLabels {
    pub namespace: String,
    pub workload_kind: String,
    pub workload: String,
    pub container: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TerminationLabels {
    pub namespace: String,
    pub workload_kind: String,
    pub workload: String,
    pub container: String,
    pub reason: String,
}

#[derive(Debug)]
pub struct Metrics {
    pub workload_restarts: Family<WorkloadLabels, Counter>,
    pub workload_backoff_step: Family<WorkloadLabels, Gauge>,
    pub workload_sync_lag: Family<WorkloadLabels, Histogram, fn() -> Histogram>,
    pub workload_terminations: Family<TerminationLabels, Counter>,
    pub registry: Registry,
    transitions: Family<TransitionLabels, Counter>,
    pub writes: Family<OutcomeLabels, Counter>,
    pub restart_delay: Histogram,
    pub write_latency: Histogram,
    pub queue_depth: Gauge,
    pub tracked_pods: Gauge,
    pub report_bytes: Gauge,
    pub report_byte_cap: Gauge,
    pub watch_errors: Family<WatchLabels, Counter>,
    pub watch_stale: Family<WatchLabels, Gauge>,
    pub pending_events: Gauge,
    pending_events_dropped: Family<ReasonLabels, Counter>,
    pub events_ignored: Counter,
    pub leader: Gauge,
    pub shards_held: Gauge,
    pub lease_transitions: Family<OutcomeLabels, Counter>,
    pub reports_unreadable: Counter,
    catch_ups: Family<OutcomeLabels, Counter>,
    relists: Family<WatchLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("podlife");
        let transitions = Family::<TransitionLabels, Counter>::default();
        let writes = Family::<OutcomeLabels, Counter>::default();
        // Restart delays span 0 s to the 300 s cap (plus sync slack).
        let restart_delay = Histogram::new([0.5, 2.0, 5.0, 10.0, 15.0, 25.0, 35.0, 50.0, 70.0, 100.0, 150.0, 200.0, 320.0, 400.0]);
        let write_latency = Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 14));
        let queue_depth = Gauge::default();
        let tracked_pods = Gauge::default();
        let report_bytes = Gauge::default();
        let report_byte_cap = Gauge::default();
        let watch_errors = Family::<WatchLabels, Counter>::default();
        let watch_stale = Family::<WatchLabels, Gauge>::default();
        let pending_events = Gauge::default();
        let pending_events_dropped = Family::<ReasonLabels, Counter>::default();
        let events_ignored = Counter::default();
        let leader = Gauge::default();
        let shards_held = Gauge::default();
        let lease_transitions = Family::<OutcomeLabels, Counter>::default();
        let reports_unreadable = Counter::default();
        let catch_ups = Family::<OutcomeLabels, Counter>::default();
        let relists = Family::<WatchLabels, Counter>::default();
        let workload_restarts = Family::<WorkloadLabels, Counter>::default();
        let workload_backoff_step = Family::<WorkloadLabels, Gauge>::default();
        // Applied minus announced back-off: the pod worker requeues 10-15 s after a back-off
        // ends (v1.34), plus 1 s truncation; a negative lag is a clock or resolution artefact.
        let workload_sync_lag: Family<WorkloadLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new([-1.0, 0.0, 1.0, 2.0, 4.0, 8.0, 12.0, 16.0, 20.0, 30.0, 60.0]));
        let workload_terminations = Family::<TerminationLabels, Counter>::default();
        registry.register(
            "workload_restarts",
            "Container restarts seen live, by workload (the top of the pod's owner chain) and container",
            workload_restarts.clone(),
        );
        registry.register(
            "workload_backoff_step",
            "The back-off step of the latest restart seen, by workload and container (1: immediate)",
            workload_backoff_step.clone(),
        );
        registry.register(
            "workload_kubelet_sync_lag_seconds",
            "Applied minus announced CrashLoopBackOff delay per restart, by workload and container",
            workload_sync_lag.clone(),
        );
        registry.register(
            "workload_terminations",
            "Container terminations seen live, by workload, container and reason (Error, Completed, OOMKilled, ...)",
            workload_terminations.clone(),
        );
        registry.register(
            "transitions",
            "Transitions recorded into reports, by kind and whether seen live or rebuilt",
            transitions.clone(),
        );
        registry.register("report_writes", "Report status writes, by outcome", writes.clone());
        registry.register(
            "restart_delay_seconds",
            "Measured restart delays (previous finishedAt to next startedAt)",
            restart_delay.clone(),
        );
        registry.register("report_write_latency_seconds", "Latency of one report write", write_latency.clone());
        registry.register("write_queue_depth", "Reports with changes found at the last write window", queue_depth.clone());
        registry.register("tracked_pods", "Pods with a history in memory", tracked_pods.clone());
        registry.register(
            "report_bytes",
            "All reports' size as last written or read (what etcd holds), against --total-budget-bytes",
            report_bytes.clone(),
        );
        registry.register(
            "report_byte_cap",
            "The size the largest reports are trimmed to while all reports outgrow --total-budget-bytes (0: no cap)",
            report_byte_cap.clone(),
        );
        registry.register("watch_errors", "Errors yielded by a watch (each is retried with a back-off)", watch_errors.clone());
        registry.register("watch_stale", "1 while a watch has been failing for longer than --watch-stale-after", watch_stale.clone());
        registry.register("pending_event_bytes", "Bytes of events waiting for their pod to be seen", pending_events.clone());
        registry.register(
            "pending_events_dropped",
            "Events dropped while waiting for their pod: untracked (never showed up) or full",
            pending_events_dropped.clone(),
        );
        registry.register("events_ignored", "Events already folded in (replays after a relist or restart)", events_ignored.clone());
        registry.register("leader", "1 while this replica holds the leader lease (or runs without election)", leader.clone());
        registry.register("shards_held", "Shards this replica holds (with --shards)", shards_held.clone());
        registry.register("lease_transitions", "Leadership gained and lost, by outcome", lease_transitions.clone());
        registry.register(
            "reports_unreadable",
            "Stored reports skipped at start because they could not be read",
            reports_unreadable.clone(),
        );
        registry.register(
            "watch_catch_ups",
            "Pod watches resumed from the last written position before a relist, by outcome (replayed, expired, failed)",
            catch_ups.clone(),
        );
        registry.register("watch_relists", "Relists after the first list (a watch that expired with 410)", relists.clone());
        Metrics {
            workload_restarts,
            workload_backoff_step,
            workload_sync_lag,
            workload_terminations,
            registry,
            transitions,
            writes,
            restart_delay,
            write_latency,
            queue_depth,
            tracked_pods,
            report_bytes,
            report_byte_cap,
            watch_errors,
            watch_stale,
            pending_events,
            pending_events_dropped,
            events_ignored,
            leader,
            shards_held,
            lease_transitions,
            reports_unreadable,
            catch_ups,
            relists,
        }
    }

    pub fn transition(&self, kind: &str, source: Source) {
        let source = match source {
            Source::Live => "live",
            Source::Rebuilt => "rebuilt",
        };
        self.transitions.get_or_create(&TransitionLabels { kind: kind.to_string(), source: source.to_string() }).inc();
    }

    pub fn pending_dropped(&self, reason: &str, events: usize) {
        self.pending_events_dropped.get_or_create(&ReasonLabels { reason: reason.to_string() }).inc_by(events as u64);
    }

    pub fn write(&self, outcome: &str) {
        self.writes.get_or_create(&OutcomeLabels { outcome: outcome.to_string() }).inc();
    }

    pub fn relist(&self, watch: &str) {
        self.relists.get_or_create(&WatchLabels { watch: watch.to_string() }).inc();
    }

    pub fn catch_up(&self, outcome: &str) {
        self.catch_ups.get_or_create(&OutcomeLabels { outcome: outcome.to_string() }).inc();
    }

    pub fn lease(&self, outcome: &str) {
        self.lease_transitions.get_or_create(&OutcomeLabels { outcome: outcome.to_string() }).inc();
    }

    #[must_use]
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chart's Grafana dashboard queries only metrics the operator registers. Defect caught:
    /// a renamed metric leaves every panel empty, and nothing else would notice.
    #[test]
    fn the_dashboard_queries_only_metrics_the_operator_exports() {
        let metrics = Metrics::new();
        // A family is encoded only once it has a series: give each one a series.
        let workload =
            WorkloadLabels { namespace: "ns".into(), workload_kind: "Deployment".into(), workload: "web".into(), container: "app".into() };
        metrics.workload_restarts.get_or_create(&workload).inc();
        metrics.workload_backoff_step.get_or_create(&workload).set(1);
        metrics.workload_sync_lag.get_or_create(&workload).observe(1.0);
        let termination = TerminationLabels {
            namespace: "ns".into(),
            workload_kind: "Deployment".into(),
            workload: "web".into(),
            container: "app".into(),
            reason: "Error".into(),
        };
        metrics.workload_terminations.get_or_create(&termination).inc();
        metrics.transition("phase", Source::Live);
        metrics.write("ok");
        metrics.relist("pods");
        metrics.catch_up("replayed");
        metrics.lease("gained");
        metrics.pending_dropped("full", 1);
        metrics.watch_errors.get_or_create(&WatchLabels { watch: "pods".into() }).inc();
        metrics.watch_stale.get_or_create(&WatchLabels { watch: "pods".into() }).set(0);
        let exported = metrics.encode();

        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../charts/podlife/dashboards/podlife-workloads.json")).unwrap();
        let mut exprs = Vec::new();
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                exprs.extend(target["expr"].as_str().map(str::to_string));
            }
        }
        for var in dashboard["templating"]["list"].as_array().into_iter().flatten() {
            exprs.extend(var["query"]["query"].as_str().or(var["query"].as_str()).map(str::to_string));
        }
        let mut checked = 0;
        for expr in &exprs {
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("podlife_")) {
                // Counters are exported as NAME_total, histograms as NAME_bucket/_sum/_count.
                let family = ["_total", "_bucket", "_sum", "_count"].iter().fold(word, |w, s| w.strip_suffix(s).unwrap_or(w));
                assert!(exported.contains(&format!("# TYPE {family} ")), "{word} (in {expr}) is not exported:\n{exported}");
                checked += 1;
            }
        }
        assert!(checked >= 8, "the dashboard's queries were read ({checked} metric names in {} queries)", exprs.len());
    }
}
