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

#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    transitions: Family<TransitionLabels, Counter>,
    pub writes: Family<OutcomeLabels, Counter>,
    pub restart_delay: Histogram,
    pub write_latency: Histogram,
    pub queue_depth: Gauge,
    pub tracked_pods: Gauge,
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
        Metrics { registry, transitions, writes, restart_delay, write_latency, queue_depth, tracked_pods }
    }

    pub fn transition(&self, kind: &str, source: Source) {
        let source = match source {
            Source::Live => "live",
            Source::Rebuilt => "rebuilt",
        };
        self.transitions.get_or_create(&TransitionLabels { kind: kind.to_string(), source: source.to_string() }).inc();
    }

    #[must_use]
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
