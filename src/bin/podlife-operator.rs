//! podlife-operator: records every tracked pod's life into a PodLifecycle report.
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use podlife::lifecycle::BackoffProfile;
use podlife::operator::{ExperimentSettings, LeaseConfig, OperatorConfig, PodWire, Selection, ShardConfig, run};

/// See Cargo.toml: a cold start's list pages go back to the OS once processed.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Watches pods and records each tracked pod's phases, conditions, container states, every
/// termination and the CrashLoopBackOff delays the kubelet applied into a PodLifecycle report.
///
/// Selection: by default pods labelled podlife.io/track=true; or --namespaces; or --all-pods.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Label selector of the pods to track.
    #[arg(long, env = "PODLIFE_SELECTOR", default_value = "podlife.io/track=true", conflicts_with_all = ["namespaces", "all_pods"])]
    selector: String,
    /// Track every pod in these namespaces (comma-separated) instead.
    #[arg(long, env = "PODLIFE_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Track every pod in the cluster.
    #[arg(long, env = "PODLIFE_ALL_PODS")]
    all_pods: bool,
    /// The node's back-off curve: `default` (10 s doubling to 300 s) or `reduced-decay` (1 s to 60 s).
    #[arg(long, env = "PODLIFE_BACKOFF_PROFILE", default_value = "default", value_parser = parse_profile)]
    backoff_profile: BackoffProfile,
    /// Override the profile's cap, for clusters with KubeletCrashLoopBackOffMax (seconds).
    #[arg(long, env = "PODLIFE_BACKOFF_MAX_SECONDS")]
    backoff_max_seconds: Option<f64>,
    /// A pod's report is written at most once per window (e.g. 1s, 500ms); a change to a pod
    /// not written within the last window goes out within a quarter of it.
    #[arg(long, env = "PODLIFE_WRITE_WINDOW", default_value = "1s", value_parser = parse_dur)]
    write_window: Duration,
    /// Before its one thread waits for the network, the operator first pauses this long, so
    /// that the watch events and write responses that arrive meanwhile are handled in one
    /// wake-up rather than one each (e.g. 10ms; 0 wakes for each). Each step of the way from a
    /// pod change to its report write can wait up to this much longer. At most 100ms.
    #[arg(long, env = "PODLIFE_COALESCE_WAKEUPS", default_value = "10ms", value_parser = parse_wakeup_pause)]
    coalesce_wakeups: Duration,
    /// How long a deleted pod's report is kept (e.g. 1h).
    #[arg(long, env = "PODLIFE_DELETED_TTL", default_value = "1h", value_parser = parse_dur)]
    deleted_ttl: Duration,
    /// Largest report, in bytes; older entries are dropped and counted beyond it.
    #[arg(long, env = "PODLIFE_BUDGET_BYTES", default_value_t = 256 * 1024)]
    budget_bytes: usize,
    /// All reports together, in bytes (default 100 MiB, 5% of etcd's default quota). Beyond
    /// it the largest reports are trimmed to a fair share, raw transitions first.
    #[arg(long, env = "PODLIFE_TOTAL_BUDGET_BYTES", default_value_t = podlife::lifecycle::budget::DEFAULT_TOTAL_BUDGET_BYTES)]
    total_budget_bytes: usize,
    /// Address for /healthz, /readyz and /metrics.
    #[arg(long, env = "PODLIFE_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Run with leader election, so several replicas can run with one active.
    #[arg(long, env = "PODLIFE_LEADER_ELECT")]
    leader_elect: bool,
    /// Split the pods across all replicas into this many shards, held through Leases (named
    /// after --lease-name in --lease-namespace): each replica records only the pods whose UID
    /// hashes into its shards, and replicas joining or leaving re-shard the others live. Every
    /// replica must use the same count. Instead of --leader-elect; needs --identity.
    #[arg(long, env = "PODLIFE_SHARDS", requires = "identity", conflicts_with_all = ["leader_elect", "experiments"],
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    shards: Option<u32>,
    #[arg(long, env = "PODLIFE_LEASE_NAMESPACE", default_value = "podlife-system")]
    lease_namespace: String,
    #[arg(long, env = "PODLIFE_LEASE_NAME", default_value = "podlife-operator")]
    lease_name: String,
    /// This replica's identity in the lease; must be unique per replica (the chart passes the
    /// pod name). Required with --leader-elect.
    #[arg(long, env = "POD_NAME", required_if_eq("leader_elect", "true"))]
    identity: Option<String>,
    /// Seconds without a renewal before a held lease may be taken over.
    #[arg(long, env = "PODLIFE_LEASE_DURATION", default_value = "15s", value_parser = parse_dur)]
    lease_duration: Duration,
    /// The leader stops writing when no renewal has succeeded for this long (shorter than the
    /// lease duration).
    #[arg(long, env = "PODLIFE_RENEW_DEADLINE", default_value = "10s", value_parser = parse_dur)]
    renew_deadline: Duration,
    /// How often a standby tries for the lease and the leader renews it.
    #[arg(long, env = "PODLIFE_RETRY_PERIOD", default_value = "2s", value_parser = parse_dur)]
    retry_period: Duration,
    /// /readyz turns false once a watch has been failing for this long.
    #[arg(long, env = "PODLIFE_WATCH_STALE_AFTER", default_value = "60s", value_parser = parse_dur)]
    watch_stale_after: Duration,
    /// Also run ProbeExperiments (needs RBAC to create and delete pods and use pods/proxy).
    #[arg(long, env = "PODLIFE_EXPERIMENTS")]
    experiments: bool,
    /// Image for experiment containers that name none.
    #[arg(long, env = "PODLIFE_TARGET_IMAGE", default_value = concat!("localhost/podlife-target:", env!("CARGO_PKG_VERSION")))]
    target_image: String,
    /// Let experiment pods be privileged, use host namespaces or hostPath, add capabilities,
    /// or run as another ServiceAccount. Off: on a shared cluster anyone who may create a
    /// ProbeExperiment would borrow the operator's identity for such pods.
    #[arg(long, env = "PODLIFE_EXPERIMENTS_ALLOW_UNRESTRICTED_PODS")]
    experiments_allow_unrestricted_pods: bool,
    /// How pods are read from the apiserver: protobuf (about a third of JSON's bytes, and
    /// cheaper to decode), or json for an apiserver or proxy that does not serve protobuf.
    #[arg(long, env = "PODLIFE_POD_WIRE", value_enum, default_value_t = PodWire::Protobuf)]
    pod_wire: PodWire,
    /// Log format.
    #[arg(long, env = "PODLIFE_LOG_FORMAT", default_value = "json", value_parser = ["json", "text"])]
    log_format: String,
}

fn parse_profile(s: &str) -> Result<BackoffProfile, String> {
    BackoffProfile::named(s).ok_or_else(|| format!("unknown back-off profile '{s}': expected default or reduced-decay"))
}

fn parse_wakeup_pause(s: &str) -> Result<Duration, String> {
    let pause = match s {
        "0" | "0s" | "0ms" => Duration::ZERO,
        _ => parse_dur(s)?,
    };
    // Longer pauses save no more CPU (20 ms took as much as 10 ms) and cost latency.
    if pause > Duration::from_millis(100) {
        return Err(format!("'{s}' is longer than 100ms: each pause adds to the latency of every report write"));
    }
    Ok(pause)
}

fn parse_dur(s: &str) -> Result<Duration, String> {
    podlife::target::script::parse_duration(s).ok_or_else(|| format!("'{s}' is not a duration like 1s or 1h"))
}

// One thread: the operator waits on the network and computes little (a pod event decodes in
// about 3 us, a report encodes in about 30 us). On a multi-thread runtime the writer, polled on
// the main thread, was woken across threads for every response, and much of its CPU went to
// futex and epoll wake-ups (perf: 44% of its samples in the switch after a futex or epoll
// wait, at 1k pods under churn). Measured back to back at 1k pods (e2e/bench/scale --pods 1000
// --replicas 0 --operator-bin ...): CPU per 1k pod watch events 0.21 s -> 0.17 s, cold-start
// RSS 44 -> 36 MiB (fewer allocator thread heaps).
//
// On one thread, going to sleep and waking still cost about half the operator's CPU under
// churn: each watch event and each write response woke the thread on its own. Pausing before
// each wait lets those that arrive meanwhile share one wake-up. Same binary, 1k pods under
// churn, alternating runs: CPU per 1k pod watch events 0.13-0.14 s with no pause, 0.10 s with
// 4 ms, 0.07-0.08 s with 10 ms and 0.07 s with 20 ms; p99 change to write within the runs'
// spread (BENCHMARKS.md). Timers fire up to one pause late, and a write window under about four
// pauses can no longer be looked at four times a window.
fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut runtime = tokio::runtime::Builder::new_current_thread();
    let pause = args.coalesce_wakeups;
    if !pause.is_zero() {
        // Called only when no task is ready to run, just before the thread waits on epoll.
        runtime.on_thread_park(move || std::thread::sleep(pause));
    }
    runtime.enable_all().build()?.block_on(operate(args))
}

/// mimalloc advises its arena for transparent huge pages, so every 2 MiB of it that is touched
/// at all becomes resident whole. An idle operator (static release build) held 6.0 MiB of huge
/// pages in 6.6 MiB of anonymous memory, and 16.3 MiB in all; without them 1.1 and 10.5 MiB
/// (smaps_rollup). mimalloc sets itself up, and allocates, in its own constructor before
/// `main`, so switching them off in `main` still left 4 MiB of them. `.preinit_array` runs
/// before every constructor in `.init_array`, whatever their priorities and the compiler that
/// built mimalloc.
#[used]
#[unsafe(link_section = ".preinit_array")]
static DISABLE_HUGE_PAGES_FIRST: extern "C" fn() = disable_transparent_huge_pages;

extern "C" fn disable_transparent_huge_pages() {
    // Memory only: the operator works the same with huge pages, so a refusal is ignored.
    let _ = nix::sys::prctl::set_thp_disable(true);
}

async fn operate(args: Args) -> anyhow::Result<()> {
    podlife::telemetry::init_logging(&args.log_format, "info,kube=warn");
    let selection = if args.all_pods {
        Selection::All
    } else if !args.namespaces.is_empty() {
        Selection::Namespaces(args.namespaces)
    } else {
        Selection::Labelled(args.selector)
    };
    let mut profile = args.backoff_profile;
    if let Some(max) = args.backoff_max_seconds {
        profile.max_seconds = max;
        profile.reset_after_seconds = 2.0 * max;
    }
    let lease = LeaseConfig {
        namespace: args.lease_namespace,
        name: args.lease_name,
        identity: args.identity.unwrap_or_default(),
        lease_duration: args.lease_duration,
        renew_deadline: args.renew_deadline,
        retry_period: args.retry_period,
    };
    let config = OperatorConfig {
        selection,
        profile,
        write_window: args.write_window,
        deleted_ttl: args.deleted_ttl,
        budget_bytes: args.budget_bytes,
        total_budget_bytes: args.total_budget_bytes,
        listen: args.listen,
        watch_stale_after: args.watch_stale_after,
        experiments: args.experiments.then_some(ExperimentSettings {
            target_image: args.target_image,
            allow_unrestricted_pods: args.experiments_allow_unrestricted_pods,
        }),
        lease: args.leader_elect.then(|| lease.clone()),
        shards: args.shards.map(|shards| ShardConfig { lease, shards }),
        pod_wire: args.pod_wire,
    };
    let client = kube::Client::try_default().await?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! { _ = term.recv() => {}, _ = tokio::signal::ctrl_c() => {} }
        tracing::info!("signal received; shutting down");
        let _ = tx.send(true);
    });
    run(client, config, rx).await?;
    Ok(())
}
