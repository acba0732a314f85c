//! The chaos suite: faults injected into the local cluster and into podlife itself while a
//! workload keeps the kubelet restarting containers, and every report audited against an
//! independent recording of the same pods. Run through `e2e/chaos` (all faults, 3 times,
//! both selection modes) or `e2e/test` (the short profile).
//!
//! For each fault it reports the transitions the reference saw in the fault's window and how
//! many of them the reports lost, duplicated or mis-measured, and the recovery time: from the
//! component being back to every pod's report covering the pod's status at that moment.
//! It exits 0 only if nothing was lost, duplicated or mis-measured and every report was current
//! again within 10 s.

mod cluster;
mod operators;
mod proxy;
mod recorder;
mod workload;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use podlife::audit::{Kind, audit_pod};
use podlife::crd::PodLifecycle;
use podlife::lifecycle::PodHistory;
use serde_json::json;

/// The recovery bound the suite holds podlife to: reports current again within this long of
/// the component being back.
const RECOVERY_BOUND: Duration = Duration::from_secs(10);

/// Faults injected into the local cluster and podlife while restarts are under way.
#[derive(Debug, Parser)]
#[command(about = "Injects faults while a workload runs and audits every PodLifecycle report against an independent recording")]
struct Args {
    /// `full`: every fault --runs times, in both selection modes. `short`: CI's run, under 10
    /// minutes: namespaces mode, operator SIGKILL, one forced 410, one leader fail-over, and
    /// one sharded replica killed and one joining.
    #[arg(long, default_value = "full", value_parser = ["full", "short"])]
    profile: String,
    /// Injections per fault (default: 3 in full, 1 in short).
    #[arg(long)]
    runs: Option<u32>,
    /// Selection modes to run: namespaces, label (default: both in full).
    #[arg(long, value_delimiter = ',')]
    modes: Vec<String>,
    /// Only these faults (names as in the table: operator-kill, apiserver, etcd, containerd,
    /// kubelet, watch-expiry, leader-kill, lease-takeover, shard-kill, shard-join).
    #[arg(long, value_delimiter = ',')]
    faults: Vec<String>,
    /// Seconds from one injection to the next: each fault's window.
    #[arg(long, default_value_t = 30)]
    spacing: u64,
    /// Where to write the table.
    #[arg(long, default_value = "CHAOS.md")]
    out: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    OperatorKill,
    WatchExpiry,
    Apiserver,
    Etcd,
    Containerd,
    Kubelet,
    LeaderKill,
    LeaseTakeover,
    ShardKill,
    ShardJoin,
    /// Not a fault: the graceful hand-over from one replica to two elected ones, measured
    /// like one so that what happens meanwhile is not charged to the fault before it.
    Switch,
    /// Not a fault either: the hand-over to three sharded replicas.
    ShardSwitch,
}

impl Fault {
    const ALL: [Fault; 10] = [
        Fault::OperatorKill,
        Fault::WatchExpiry,
        Fault::Apiserver,
        Fault::Etcd,
        Fault::Containerd,
        Fault::Kubelet,
        Fault::LeaderKill,
        Fault::LeaseTakeover,
        Fault::ShardKill,
        Fault::ShardJoin,
    ];

    fn key(self) -> &'static str {
        match self {
            Fault::OperatorKill => "operator-kill",
            Fault::WatchExpiry => "watch-expiry",
            Fault::Apiserver => "apiserver",
            Fault::Etcd => "etcd",
            Fault::Containerd => "containerd",
            Fault::Kubelet => "kubelet",
            Fault::LeaderKill => "leader-kill",
            Fault::LeaseTakeover => "lease-takeover",
            Fault::ShardKill => "shard-kill",
            Fault::ShardJoin => "shard-join",
            Fault::Switch => "switch",
            Fault::ShardSwitch => "shard-switch",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Fault::OperatorKill => "SIGKILL the operator",
            Fault::WatchExpiry => "forced watch expiry (410)",
            Fault::Apiserver => "restart kube-apiserver",
            Fault::Etcd => "restart etcd",
            Fault::Containerd => "restart containerd",
            Fault::Kubelet => "restart the kubelet",
            Fault::LeaderKill => "SIGKILL the leader (2 replicas)",
            Fault::LeaseTakeover => "lease taken over by hand",
            Fault::ShardKill => "SIGKILL one of three sharded replicas",
            Fault::ShardJoin => "a replica joins the sharded ones (live re-shard)",
            Fault::Switch => "(hand-over: one replica stopped, two elected started)",
            Fault::ShardSwitch => "(hand-over: the replicas stopped, three sharded started)",
        }
    }

    /// How podlife must run for this fault.
    fn needs(self) -> Setup {
        match self {
            Fault::LeaderKill | Fault::LeaseTakeover => Setup::Elected,
            Fault::ShardKill | Fault::ShardJoin => Setup::Sharded,
            _ => Setup::Single,
        }
    }
}

/// How podlife runs during a phase of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    /// One replica, no election.
    Single,
    /// Two replicas with leader election.
    Elected,
    /// Three replicas sharing the pods through shard Leases.
    Sharded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Namespaces,
    Label,
}

impl Mode {
    fn key(self) -> &'static str {
        match self {
            Mode::Namespaces => "namespaces",
            Mode::Label => "label",
        }
    }
}

/// One injection and what followed it.
#[derive(Debug, Clone)]
struct Injection {
    fault: Fault,
    started: Timestamp,
    back: Option<Timestamp>,
    recovery: Option<f64>,
    note: String,
}

/// One fault's row.
#[derive(Debug, Default, Clone)]
struct Row {
    runs: u32,
    observed: usize,
    lost: usize,
    duplicated: usize,
    mis_measured: usize,
    /// Dropped to a report's declared bounds (counted in its `truncated`): by design.
    dropped: usize,
    recoveries: Vec<f64>,
    failed_runs: u32,
}

struct ModeResult {
    mode: Mode,
    selection: String,
    rows: BTreeMap<Option<Fault>, Row>,
    injections: Vec<Injection>,
    findings: Vec<String>,
    gaps: Vec<String>,
    pods: usize,
    reports: usize,
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("chaos: {msg}");
    std::process::exit(2);
}

fn log(msg: impl std::fmt::Display) {
    eprintln!("[{}] {msg}", Timestamp::now().strftime("%H:%M:%S"));
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let short = args.profile == "short";
    let runs = args.runs.unwrap_or(if short { 1 } else { 3 });
    let modes: Vec<Mode> = if args.modes.is_empty() {
        if short { vec![Mode::Namespaces] } else { vec![Mode::Namespaces, Mode::Label] }
    } else {
        args.modes
            .iter()
            .map(|m| match m.as_str() {
                "namespaces" => Mode::Namespaces,
                "label" => Mode::Label,
                other => fail(format!("unknown mode {other}: namespaces or label")),
            })
            .collect()
    };
    let faults: Vec<Fault> = if args.faults.is_empty() {
        if short {
            vec![Fault::OperatorKill, Fault::WatchExpiry, Fault::LeaderKill, Fault::ShardKill, Fault::ShardJoin]
        } else {
            Fault::ALL.to_vec()
        }
    } else {
        args.faults
            .iter()
            .map(|f| Fault::ALL.into_iter().find(|x| x.key() == f).unwrap_or_else(|| fail(format!("unknown fault {f}"))))
            .collect()
    };
    let started = Timestamp::now();
    // The code under test is what was built before this started: describe it now, not after.
    let built_from = git_state();
    let client = Client::try_default().await.unwrap_or_else(|e| fail(format!("no cluster ({e}); run e2e/chaos")));
    prepare_cluster(&client, &faults).await;
    let mut results = Vec::new();
    for mode in modes {
        match run_mode(&client, mode, &faults, runs, Duration::from_secs(args.spacing)).await {
            Ok(r) => results.push(r),
            Err(e) => fail(format!("{} mode: {e}", mode.key())),
        }
    }
    let command = std::env::args().skip(1).collect::<Vec<_>>().join(" ").replace("--out CHAOS.md", "").trim().to_string();
    let markdown = render(&results, &args.profile, runs, &command, started, &built_from);
    std::fs::write(&args.out, &markdown).unwrap_or_else(|e| fail(format!("{}: {e}", args.out.display())));
    println!("{markdown}");
    let mut bad = 0;
    for r in &results {
        for (fault, row) in &r.rows {
            let slow = row.recoveries.iter().any(|s| *s > RECOVERY_BOUND.as_secs_f64());
            if row.lost + row.duplicated + row.mis_measured > 0 || slow || row.failed_runs > 0 {
                bad += 1;
                eprintln!("chaos: {} / {}: {row:?}", r.mode.key(), fault.map_or("no fault", Fault::title));
            }
        }
    }
    let total: usize = results.iter().flat_map(|r| r.rows.values()).map(|r| r.runs as usize).sum();
    println!("chaos: {} passed, {} failed", results.iter().map(|r| r.rows.len()).sum::<usize>() - bad, bad);
    eprintln!("chaos: {total} injections; table written to {}", args.out.display());
    std::process::exit(i32::from(bad > 0));
}

/// The CRDs, and (for the forced 410) an apiserver that serves pods from etcd, where a
/// compaction can expire a watch at once; with its watch cache, an expiry takes 75 s or more
/// of held-back watch, during which the operator could see nothing at all.
async fn prepare_cluster(client: &Client, faults: &[Fault]) {
    let args = cluster::apiserver_args().unwrap_or_else(|e| fail(e));
    if faults.contains(&Fault::WatchExpiry) && !args.contains("pods#0") {
        log("restarting kube-apiserver with --watch-cache-sizes=pods#0 so that etcd compaction can expire watches");
        let flags = format!("{args} --watch-cache-sizes=pods#0");
        cluster::restart("kube-apiserver", &["--signal", "TERM", "--args", flags.trim()]).unwrap_or_else(|e| fail(e));
    }
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> = Api::all(client.clone());
    for crd in podlife::crd::all_crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        crds.patch(&name, &PatchParams::apply("podlife-chaos").force(), &Patch::Apply(&crd))
            .await
            .unwrap_or_else(|e| fail(format!("CRD {name}: {e}")));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
}

async fn fresh_namespace(client: &Client, name: &str) -> Result<(), String> {
    let api: Api<Namespace> = Api::all(client.clone());
    if api.get_opt(name).await.map_err(|e| e.to_string())?.is_some() {
        let _ = api.delete(name, &DeleteParams::default()).await;
        let deadline = Instant::now() + Duration::from_secs(120);
        while api.get_opt(name).await.map_err(|e| e.to_string())?.is_some() {
            if Instant::now() > deadline {
                return Err(format!("namespace {name} from an earlier run is still terminating"));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": {"podlife.io/chaos": "true"}}})).map_err(|e| e.to_string())?;
    api.create(&PostParams::default(), &ns).await.map_err(|e| e.to_string())?;
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), name);
    for _ in 0..100 {
        if sas.get_opt("default").await.ok().flatten().is_some() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("namespace {name} got no default ServiceAccount"))
}

async fn run_mode(client: &Client, mode: Mode, faults: &[Fault], runs: u32, spacing: Duration) -> Result<ModeResult, String> {
    let namespaces: Vec<String> = ["a", "b"].iter().map(|s| format!("chaos-{}-{s}", mode.key())).collect();
    for ns in &namespaces {
        fresh_namespace(client, ns).await?;
    }
    let run_id = format!("{}-{}", mode.key(), Timestamp::now().as_second());
    let selection = match mode {
        Mode::Namespaces => vec!["--namespaces".to_string(), namespaces.join(",")],
        Mode::Label => vec!["--selector".to_string(), format!("podlife.io/chaos-run={run_id}")],
    };
    log(format!("{} mode: podlife-operator {}", mode.key(), selection.join(" ")));
    let out = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/out/chaos")).join(mode.key());
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let proxy = proxy::Proxy::start(cluster::apiserver_addr()?).await.map_err(|e| e.to_string())?;
    let kubeconfig = cluster::kubeconfig_via(&format!("https://{}", proxy.addr), &out)?;
    let recorder = recorder::Recorder::start(client, &namespaces, Some(&out.join("recording.jsonl")));
    let mut workload = workload::Workload::new(client, &namespaces, ("podlife.io/chaos-run", &run_id));
    let mut ops = operators::Operators::new(selection.clone(), &kubeconfig, &out);
    let mode_started = Timestamp::now();
    ops.spawn()?;
    workload.start().await?;
    log("workload started; warming up for 40 s so that every pod has restarted at least once");
    tokio::time::sleep(Duration::from_secs(40)).await;
    let mut injections = Vec::new();
    for setup in [Setup::Single, Setup::Elected, Setup::Sharded] {
        let list: Vec<Fault> = faults.iter().copied().filter(|f| f.needs() == setup).collect();
        if list.is_empty() {
            continue;
        }
        if setup != Setup::Single {
            let started = Timestamp::now();
            ops.stop_all();
            ops.lease_namespace = Some(namespaces[0].clone());
            let back = if setup == Setup::Elected {
                log("switching to two replicas with leader election");
                ops.spawn()?;
                ops.spawn()?;
                let Some((_, back)) = ops.wait_leader(client, None, Duration::from_secs(60)).await else {
                    return Err("no replica became leader within 60 s".into());
                };
                back
            } else {
                log(format!("switching to three replicas sharing {} shards", operators::SHARDS));
                ops.shards = Some(operators::SHARDS);
                for _ in 0..3 {
                    ops.spawn()?;
                }
                ops.wait_sharded(client, &namespaces, (None, None), Duration::from_secs(90)).await?
            };
            let (recovered, note) = recovery(client, &namespaces, back).await;
            let fault = if setup == Setup::Elected { Fault::Switch } else { Fault::ShardSwitch };
            injections.push(Injection { fault, started, back: Some(back), recovery: recovered, note });
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        for _ in 0..runs {
            for fault in &list {
                let next = Instant::now() + spacing;
                let mut inj = inject(client, &proxy, &mut ops, *fault, &namespaces).await;
                if let Some(back) = inj.back {
                    let (seconds, waited) = recovery(client, &namespaces, back).await;
                    inj.recovery = seconds;
                    if !waited.is_empty() {
                        inj.note = if inj.note.is_empty() { waited } else { format!("{}; {waited}", inj.note) };
                    }
                }
                log(format!(
                    "{}: back {:?}, report current after {:?} s{}",
                    fault.title(),
                    inj.back.map(|b| b.strftime("%H:%M:%S%.3f").to_string()),
                    inj.recovery,
                    if inj.note.is_empty() { String::new() } else { format!(" ({})", inj.note) }
                ));
                injections.push(inj);
                tokio::time::sleep(next.saturating_duration_since(Instant::now())).await;
            }
        }
    }
    log("faults done; letting the last changes land");
    tokio::time::sleep(Duration::from_secs(15)).await;
    workload.stop();
    tokio::time::sleep(Duration::from_secs(10)).await;
    // The operators stop gracefully and write what they have. A change reaches the reference
    // and the operators within milliseconds of each other; whatever happened in the last 2 s
    // before the stop may have reached only one of them, so the audit ends 2 s earlier.
    let stopped = Timestamp::now();
    ops.stop_all();
    let mode_ended = stopped - jiff::SignedDuration::from_secs(2);
    let mut reports: BTreeMap<String, PodHistory> = BTreeMap::new();
    for ns in &namespaces {
        let api: Api<PodLifecycle> = Api::namespaced(client.clone(), ns);
        for r in api.list(&ListParams::default()).await.map_err(|e| e.to_string())?.items {
            if let Some(status) = r.status {
                reports.insert(r.spec.pod_uid.clone(), status);
            }
        }
    }
    drop(proxy);
    let (audits, gaps) = recorder.snapshot(|rec| {
        let audits: Vec<_> = rec
            .reference
            .pods
            .values()
            .map(|p| {
                let empty = PodHistory::new(&p.name, &p.uid);
                (p.name.clone(), p.namespace.clone(), audit_pod(p, reports.get(&p.uid).unwrap_or(&empty), 600.0))
            })
            .collect();
        let gaps: Vec<String> = rec.gaps.iter().map(|(at, what)| format!("{} {what}", at.strftime("%H:%M:%S"))).collect();
        (audits, gaps)
    });
    drop(recorder);
    // Attribute each transition and finding to the window it fell in.
    let window_of = |at: Timestamp| -> Option<Fault> { injections.iter().rev().find(|i| i.started <= at).map(|i| i.fault) };
    let mut rows: BTreeMap<Option<Fault>, Row> = BTreeMap::new();
    rows.entry(None).or_default();
    for inj in &injections {
        let row = rows.entry(Some(inj.fault)).or_default();
        row.runs += 1;
        match inj.recovery {
            Some(s) if inj.back.is_some() => row.recoveries.push(s),
            _ => row.failed_runs += 1,
        }
    }
    let mut findings = Vec::new();
    for (pod, ns, audit) in &audits {
        for (_, at) in audit.observed.iter().filter(|(_, at)| *at >= mode_started && *at <= mode_ended) {
            rows.entry(window_of(*at)).or_default().observed += 1;
        }
        for f in audit.findings.iter().filter(|f| f.at <= mode_ended) {
            let row = rows.entry(window_of(f.at)).or_default();
            match f.kind {
                Kind::Lost => row.lost += 1,
                Kind::Duplicated => row.duplicated += 1,
                Kind::MisMeasured => row.mis_measured += 1,
                Kind::Dropped => row.dropped += 1,
            }
            findings.push(format!(
                "{} {ns}/{pod}: {:?} {:?}{}: {}",
                f.at.strftime("%H:%M:%S"),
                f.kind,
                f.category,
                if audit.truncated { " (report truncated)" } else { "" },
                f.detail
            ));
        }
    }
    for ns in &namespaces {
        let _ = Api::<Namespace>::all(client.clone()).delete(ns, &DeleteParams::default()).await;
    }
    Ok(ModeResult { mode, selection: selection.join(" "), rows, injections, findings, gaps, pods: audits.len(), reports: reports.len() })
}

async fn metric(replica: &operators::Replica, name: &str) -> f64 {
    replica.metrics().await.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

async fn inject(client: &Client, proxy: &proxy::Proxy, ops: &mut operators::Operators, fault: Fault, namespaces: &[String]) -> Injection {
    let started = Timestamp::now();
    let mut inj = Injection { fault, started, back: None, recovery: None, note: String::new() };
    let component = match fault {
        Fault::Apiserver => Some("kube-apiserver"),
        Fault::Etcd => Some("etcd"),
        Fault::Containerd => Some("containerd"),
        Fault::Kubelet => Some("kubelet"),
        _ => None,
    };
    if let Some(component) = component {
        match tokio::task::spawn_blocking(move || cluster::restart(component, &[])).await {
            Ok(Ok(back)) => inj.back = Some(back),
            Ok(Err(e)) => inj.note = e,
            Err(e) => inj.note = e.to_string(),
        }
        return inj;
    }
    match fault {
        Fault::OperatorKill => {
            let Some(r) = ops.replicas.last_mut() else {
                inj.note = "no operator running".into();
                return inj;
            };
            inj.note = format!("pid {}; started again 5 s later, as a restarted container would be", r.pid());
            r.kill();
            ops.replicas.pop();
            tokio::time::sleep(Duration::from_secs(5)).await;
            match ops.spawn() {
                Ok(at) => inj.back = Some(at),
                Err(e) => inj.note = e,
            }
        }
        Fault::WatchExpiry => {
            // Hold the operator back (its watches broken, its reconnects refused), compact etcd
            // past everything it has seen, then let it reconnect: it resumes from a
            // resourceVersion that no longer exists and gets 410 Gone.
            const RELISTS: &str = "podlife_watch_relists_total{watch=\"pods\"}";
            // Longer than the watcher's back-off can grow over a 1.5 s hold, shorter than the
            // gap between faults.
            const RELIST_WAIT: Duration = Duration::from_secs(20);
            let before = match ops.replicas.last() {
                Some(r) => metric(r, RELISTS).await,
                None => 0.0,
            };
            proxy.hold(true);
            proxy.cut();
            tokio::time::sleep(Duration::from_millis(200)).await;
            let compacted = cluster::compact_etcd().await;
            proxy.hold(false);
            inj.back = Some(Timestamp::now());
            match compacted {
                Ok(revision) => {
                    // The 410 reaches the watcher on its next reconnect, and the relist follows
                    // only after the watcher's error back-off (measured 3.4 s after the 410 in one
                    // CI run): wait for the relist counter rather than a fixed time.
                    let released = std::time::Instant::now();
                    let mut after = before;
                    while released.elapsed() < RELIST_WAIT {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                        after = match ops.replicas.last() {
                            Some(r) => metric(r, RELISTS).await,
                            None => 0.0,
                        };
                        if after > before {
                            break;
                        }
                    }
                    inj.note = format!(
                        "held back {:.1} s, compacted at revision {revision}; pod watches relisted after 410: {} ({:.1} s after release)",
                        inj.back.map_or(0.0, |b| b.duration_since(started).as_secs_f64()),
                        after - before,
                        released.elapsed().as_secs_f64()
                    );
                    if after <= before {
                        inj.back = None;
                        inj.note.push_str(" (no relist: the fault did not take)");
                    }
                }
                Err(e) => {
                    inj.back = None;
                    inj.note = e;
                }
            }
        }
        Fault::LeaderKill => {
            let Some(i) = ops.leader(client).await else {
                inj.note = "no leader to kill".into();
                return inj;
            };
            let killed = ops.replicas[i].identity.clone();
            inj.note = format!("killed {killed} (pid {})", ops.replicas[i].pid());
            ops.replicas[i].kill();
            ops.replicas.remove(i);
            match ops.wait_leader(client, Some(&killed), Duration::from_secs(60)).await {
                Some((_, at)) => inj.back = Some(at),
                None => inj.note.push_str("; no standby took over within 60 s"),
            }
            // The killed replica comes back as a standby, as its Deployment would bring it.
            if let Err(e) = ops.spawn() {
                inj.note.push_str(&format!("; {e}"));
            }
        }
        Fault::ShardKill => {
            let Some(r) = ops.replicas.first_mut() else {
                inj.note = "no replica to kill".into();
                return inj;
            };
            let killed = r.identity.clone();
            inj.note = format!("killed {killed} (pid {})", r.pid());
            r.kill();
            ops.replicas.remove(0);
            match ops.wait_sharded(client, namespaces, (Some(killed.as_str()), None), Duration::from_secs(90)).await {
                Ok(at) => inj.back = Some(at),
                Err(e) => inj.note.push_str(&format!("; {e}")),
            }
        }
        Fault::ShardJoin => {
            match ops.spawn() {
                Ok(_) => inj.note = format!("{} joined", ops.replicas.last().map_or("", |r| r.identity.as_str())),
                Err(e) => {
                    inj.note = e;
                    return inj;
                }
            }
            let joined = ops.replicas.last().map(|r| r.identity.clone()).unwrap_or_default();
            match ops.wait_sharded(client, namespaces, (None, Some(joined.as_str())), Duration::from_secs(90)).await {
                Ok(at) => {
                    inj.back = Some(at);
                    inj.note.push_str(&format!("; shards now {:?}", ops.shard_holders(client).await));
                }
                Err(e) => inj.note.push_str(&format!("; {e}")),
            }
        }
        Fault::LeaseTakeover => {
            let ns = ops.lease_namespace.clone().unwrap_or_default();
            let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
            match take_over(&leases).await {
                Ok(()) => {
                    inj.note = "held by chaos-intruder, never renewed".into();
                    match ops.wait_leader(client, None, Duration::from_secs(60)).await {
                        Some((_, at)) => inj.back = Some(at),
                        None => inj.note.push_str("; none of ours took it back within 60 s"),
                    }
                }
                Err(e) => inj.note = e,
            }
        }
        _ => {}
    }
    inj
}

/// Writes the lease as another holder would (guarded by its resourceVersion), and never renews.
async fn take_over(leases: &Api<Lease>) -> Result<(), String> {
    let mut lease = leases.get(operators::LEASE).await.map_err(|e| e.to_string())?;
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(Timestamp::now());
    let spec = lease.spec.get_or_insert_with(Default::default);
    spec.holder_identity = Some("chaos-intruder".into());
    spec.acquire_time = Some(now.clone());
    spec.renew_time = Some(now);
    spec.lease_duration_seconds = Some(15);
    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    leases.replace(operators::LEASE, &PostParams::default(), &lease).await.map_err(|e| e.to_string())?;
    Ok(())
}

/// Why a report does not yet cover a pod's status (its restart counts, its current container
/// states and its conditions as they stand), or `None` if it does. Monotone: once covered,
/// later changes keep it covered.
fn uncovered(report: Option<&PodHistory>, pod: &Pod) -> Option<String> {
    let Some(status) = &pod.status else { return None };
    let Some(report) = report else { return Some("no report yet".into()) };
    let containers = status.init_container_statuses.iter().flatten().chain(status.container_statuses.iter().flatten());
    for c in containers {
        let Some(h) = report.containers.iter().find(|h| h.name == c.name) else { return Some(format!("no container {}", c.name)) };
        if h.restart_count < c.restart_count {
            return Some(format!("{}: restart count {} < {}", c.name, h.restart_count, c.restart_count));
        }
        if let Some(started) = c.state.as_ref().and_then(|s| s.running.as_ref()).and_then(|r| r.started_at.as_ref()) {
            let seen = h.states.iter().any(
                |s| matches!(s.state, podlife::lifecycle::snapshot::ContainerState::Running { started_at: Some(t) } if t == started.0),
            );
            if !seen && h.restart_count == c.restart_count {
                return Some(format!("{}: running since {} not recorded", c.name, started.0));
            }
        }
    }
    status.conditions.iter().flatten().find_map(|c| {
        let recorded = report
            .conditions
            .iter()
            .any(|r| r.type_ == c.type_ && r.status == c.status && Some(r.at) == c.last_transition_time.as_ref().map(|t| t.0));
        (!recorded)
            .then(|| format!("condition {} {} since {:?} not recorded", c.type_, c.status, c.last_transition_time.as_ref().map(|t| t.0)))
    })
}

/// Seconds from `back` until every pod's report covers the pod's status as listed at `back`,
/// with what was still missing half-way (`None` if that takes more than 60 s).
async fn recovery(client: &Client, namespaces: &[String], back: Timestamp) -> (Option<f64>, String) {
    let mut pods = Vec::new();
    for ns in namespaces {
        match Api::<Pod>::namespaced(client.clone(), ns).list(&ListParams::default()).await {
            Ok(list) => pods.extend(list.items),
            Err(e) => return (None, format!("could not list pods: {e}")),
        }
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    let mut waited_for = String::new();
    loop {
        let mut reports = BTreeMap::new();
        for ns in namespaces {
            if let Ok(list) = Api::<PodLifecycle>::namespaced(client.clone(), ns).list(&ListParams::default()).await {
                reports.extend(list.items.into_iter().filter_map(|r| Some((r.spec.pod_uid.clone(), r.status?))));
            }
        }
        let missing = pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).find_map(|p| {
            uncovered(reports.get(&p.uid().unwrap_or_default()), p)
                .map(|why| format!("{}/{}: {why}", p.namespace().unwrap_or_default(), p.name_any()))
        });
        let Some(missing) = missing else {
            return (Some(Timestamp::now().duration_since(back).as_secs_f64().max(0.0)), waited_for);
        };
        if started.elapsed() >= Duration::from_secs(2) && waited_for.is_empty() {
            waited_for = format!("waited for {missing}");
        }
        if Instant::now() > deadline {
            return (None, format!("still missing after 60 s: {missing}"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// "commit abc1234", with " with local changes" if the checkout differs from it.
fn git_state() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git").args(args).output().ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_default();
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|o| !o.is_empty());
    format!("commit {commit}{}", if dirty { " with local changes" } else { "" })
}

fn render(results: &[ModeResult], profile: &str, runs: u32, command: &str, started: Timestamp, built_from: &str) -> String {
    let mut md = String::new();
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let _ = writeln!(md, "# The record under faults\n");
    let _ = writeln!(
        md,
        "Written by the chaos suite (`tests/chaos`) on {} from {built_from}, profile `{profile}`, {runs} run(s) per fault: `e2e/chaos {command}`.\n",
        started.strftime("%Y-%m-%d %H:%M UTC"),
    );
    let _ = writeln!(
        md,
        "Machine: {cores} cores. Cluster: the project's local node (`e2e/cluster/podlife-cluster`), Kubernetes {} built from k8s.io/kubernetes, etcd 3.6, containerd 1.6 from Debian; kube-apiserver runs with `--watch-cache-sizes=pods#0` so that compacting etcd can expire a watch at once (with the cache, an expiry needs 75 s or more of held-back watch).\n",
        std::env::var("PODLIFE_K8S_VERSION").unwrap_or_else(|_| "v1.34.4".into())
    );
    let _ = writeln!(
        md,
        "Workload: in each of two namespaces, two crash loops (runs of 4 s and 7 s), a liveness kill every cycle, a readiness flap (8 s / 8 s) and a native sidecar told to `/quitquitquit` every 20 s; the oldest pod is replaced every 40 s. The reference is the suite's own pod and event watch, straight to the apiserver; each report is compared with it entry by entry (`src/audit`): a transition the reference saw that the report lacks is **lost**, one the report has twice or the reference never saw is **duplicated**, a restart gap, back-off step, exit code, finish time, condition time or event count that differs is **mis-measured**; an entry older than everything a report keeps in a list whose drops it counts (its rings and byte budget, by design) is **dropped**, shown but not a failure; pods are replaced every few minutes so that none should reach those bounds. Recovery: from the component being back (process started, health check answering, or a replica holding the lease again) until every pod's report covers the pod's status as listed at that moment; bound {} s.\n",
        RECOVERY_BOUND.as_secs()
    );
    for r in results {
        let _ = writeln!(md, "## {} mode: `podlife-operator {}`\n", r.mode.key(), r.selection);
        let _ = writeln!(md, "{} pods recorded, {} reports.\n", r.pods, r.reports);
        let _ = writeln!(
            md,
            "| fault | runs | transitions observed | lost | duplicated | mis-measured | dropped to bounds (declared) | recovery (median / max) |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
        for (fault, row) in &r.rows {
            let mut rec = row.recoveries.clone();
            rec.sort_by(f64::total_cmp);
            let recovery =
                if rec.is_empty() { "-".to_string() } else { format!("{:.1} s / {:.1} s", rec[rec.len() / 2], rec[rec.len() - 1]) };
            let failed = if row.failed_runs > 0 { format!(" ({} failed)", row.failed_runs) } else { String::new() };
            let _ = writeln!(
                md,
                "| {} | {}{failed} | {} | {} | {} | {} | {} | {recovery} |",
                fault.map_or("none (warm-up)", Fault::title),
                row.runs,
                row.observed,
                row.lost,
                row.duplicated,
                row.mis_measured,
                row.dropped
            );
        }
        let _ = writeln!(md, "\n<details><summary>Injections</summary>\n");
        for i in &r.injections {
            let _ = writeln!(
                md,
                "- {} {}: back {}, current after {}{}",
                i.started.strftime("%H:%M:%S"),
                i.fault.title(),
                i.back.map_or("never".into(), |b| format!("+{:.1} s", b.duration_since(i.started).as_secs_f64())),
                i.recovery.map_or("-".into(), |s| format!("{s:.1} s")),
                if i.note.is_empty() { String::new() } else { format!(" — {}", i.note) }
            );
        }
        let _ = writeln!(md, "\n</details>\n");
        if !r.findings.is_empty() {
            let _ = writeln!(md, "Findings:\n");
            for f in &r.findings {
                let _ = writeln!(md, "- {f}");
            }
            let _ = writeln!(md);
        }
        if !r.gaps.is_empty() {
            let _ = writeln!(md, "The reference itself relisted (a 410 of its own) at: {}.\n", r.gaps.join(", "));
        }
    }
    md
}
