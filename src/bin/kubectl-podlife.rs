//! kubectl-podlife: a kubectl plugin for podlife's reports and experiments. See `kubectl podlife --help`.
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use clap_complete::engine::ArgValueCompleter;
use podlife::cli::connect::ConnectArgs;
use podlife::cli::{
    Created, Format, Outcome, RunFormat, RunOptions, Subject, complete, doctor, explain, list, load_experiments, report, report_workload,
    run, show, suite,
};

/// What podlife recorded about your pods, and experiments that prove what the kubelet does.
///
/// Takes kubectl's --kubeconfig, --context and -n/--namespace (default: the context's
/// namespace). Exit codes: 0 ok; 1 an experiment failed (the kubelet did not do what it
/// claimed) or doctor found a problem; 2 it could not run (bad input, nothing installed, no
/// operator accepting experiments, a wait ran out); 130 interrupted (what it created is
/// deleted first).
#[derive(Parser, Debug)]
#[command(name = "kubectl-podlife", version, after_help = "Shell completion: source <(kubectl-podlife completion bash)")]
struct Cli {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(subcommand)]
    command: Command,
}

/// Where `run` and `suite` put their verdicts.
#[derive(clap::Args, Debug)]
struct Results {
    #[arg(short, long, value_enum, default_value_t = RunFormat::Human)]
    output: RunFormat,
    /// Also write JUnit XML here.
    #[arg(long)]
    junit: Option<std::path::PathBuf>,
    /// Also write an HTML page with every verdict and timeline picture here.
    #[arg(long)]
    html: Option<std::path::PathBuf>,
    /// Also write each experiment's evidence, with the PodLifecycle reports it was judged on,
    /// as DIR/NAME.json: enough to judge it again offline or attach it to a bug report.
    #[arg(long, value_name = "DIR", value_hint = clap::ValueHint::DirPath)]
    evidence: Option<std::path::PathBuf>,
    /// Do not check that the target image is on a node first.
    #[arg(long)]
    skip_image_check: bool,
}

impl Results {
    fn options(self, parallel: usize, created: &Created) -> (RunFormat, RunOptions) {
        (
            self.output,
            RunOptions {
                parallel,
                junit: self.junit,
                html: self.html,
                evidence: self.evidence,
                skip_image_check: self.skip_image_check,
                created: created.clone(),
            },
        )
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run ProbeExperiments from YAML files. First checks that the CRDs are installed, that an
    /// operator runs experiments in the namespace and that the target image is on a node; then
    /// shows progress, verdicts and timelines. Ctrl-C deletes what it created.
    Run {
        #[arg(required = true, value_hint = clap::ValueHint::FilePath)]
        files: Vec<std::path::PathBuf>,
        /// Width of the terminal timelines.
        #[arg(long, default_value_t = 100)]
        width: usize,
        /// Run at most this many experiments at once (0: all at once).
        #[arg(long, default_value_t = 0)]
        parallel: usize,
        #[command(flatten)]
        results: Results,
    },
    /// Run a built-in suite. `conformance` reproduces the kubelet's upstream probe and lifecycle
    /// e2e checks: each case in a new namespace of its own, or all in the namespace -n names
    /// (one the operator covers, such as podlife-demo after e2e/demo).
    Suite {
        #[arg(value_parser = ["conformance"])]
        name: String,
        /// Only this case, if it is a case's whole name; otherwise every case whose name
        /// contains it. A name that picks no case is an error that lists the cases.
        #[arg(long)]
        only: Option<String>,
        /// Leave out the cases observed for over 5 minutes, as upstream skips its [Slow]
        /// tests: the back-off's 5-minute cap and its reset after a 10-minute run. The suite
        /// then takes about 3 minutes instead of 13; backoff-curve still checks the curve's
        /// first steps.
        #[arg(long)]
        skip_slow: bool,
        /// Run at most this many cases at once, longest first (0: all at once). Bounded by
        /// default: dozens of pods starting together on a small node delay every probe and
        /// every reaction of the kubelet, which is not what the cases measure.
        #[arg(long, default_value_t = 12)]
        parallel: usize,
        #[command(flatten)]
        results: Results,
    },
    /// A pod's timeline: phases, conditions, container states, restarts with measured vs
    /// expected back-off, probe kills and events. For a workload (deployment/NAME,
    /// statefulset/, daemonset/, job/, cronjob/, replicaset/) or a label selector (-l): every
    /// pod it had, live and deleted, one row each on one time axis, with replacements,
    /// restarts and back-off marked, and restarts, un-Ready time and the longest back-off per pod.
    #[command(group = clap::ArgGroup::new("what").required(true).args(["pod", "selector"]))]
    Report {
        /// POD, or KIND/NAME of a workload.
        #[arg(value_name = "POD|KIND/NAME", add = ArgValueCompleter::new(complete::report_pods))]
        pod: Option<String>,
        /// The reports matching this label selector, as one workload view (e.g.
        /// podlife.io/workload=web; reports carry podlife.io/workload, podlife.io/workload-kind,
        /// podlife.io/workload-uid and podlife.io/pod-name).
        #[arg(short = 'l', long, conflicts_with = "pod")]
        selector: Option<String>,
        /// Only pods alive at some point in this last stretch (e.g. 30m, 12h) — workloads only.
        #[arg(long, value_parser = duration)]
        since: Option<Duration>,
        #[arg(short, long, value_enum, default_value_t = Format::Human)]
        output: Format,
        /// Width of the terminal timeline.
        #[arg(long, default_value_t = 100)]
        width: usize,
    },
    /// Why a pod is where it is: the causal chain of its current state and of its last three
    /// runs (probe failures, the kill, SIGTERM or SIGKILL, the exit, the back-off step of the
    /// restart), in plain sentences, then what is unusual (OOM kills, a startup probe that never
    /// passed, a changed exit code, a reset back-off, restarts off the curve).
    Explain {
        /// The pod's name.
        #[arg(add = ArgValueCompleter::new(complete::report_pods))]
        pod: String,
        #[arg(short, long, default_value = "human", value_parser = ["human", "json"])]
        output: String,
    },
    /// The verdicts and timeline of an experiment that ran (or runs).
    Show {
        #[arg(add = ArgValueCompleter::new(complete::experiments))]
        experiment: String,
        /// Width of the terminal timeline.
        #[arg(long, default_value_t = 100)]
        width: usize,
    },
    /// The reports, one line per pod, like `kubectl get`.
    List {
        /// In every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
        output: String,
    },
    /// Check the setup: CRDs, permissions, operators and the namespaces they cover, the target
    /// image, each kubelet's version and back-off curve. One line per check, with its fix.
    Doctor,
    /// Print a shell completion script: `source <(kubectl-podlife completion bash)`.
    Completion {
        #[arg(value_parser = ["bash", "zsh", "fish"])]
        shell: String,
    },
}

fn main() -> ExitCode {
    // Completions first, before any runtime: their cluster lookups run one of their own.
    let args: Vec<String> = std::env::args().collect();
    if std::env::var_os("COMPLETE").is_some() || args.get(1).map(String::as_str) == Some("__complete") {
        for (var, value) in complete::flags_for_completion(&args) {
            // SAFETY: no other thread exists yet; the completers read these.
            unsafe { std::env::set_var(var, value) };
        }
    }
    // `COMPLETE=bash kubectl-podlife ...`: the shell asking for candidates.
    clap_complete::CompleteEnv::with_factory(Cli::command).complete();
    // kubectl's plugin completion, through kubectl_complete-podlife.
    if args.get(1).map(String::as_str) == Some("__complete") {
        print!("{}", complete::cobra(Cli::command(), &args[2..]));
        return ExitCode::SUCCESS;
    }
    let cli = Cli::parse();
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(run_cli(cli)),
        Err(e) => {
            eprintln!("kubectl-podlife: cannot start: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run_cli(cli: Cli) -> ExitCode {
    if let Command::Completion { shell } = &cli.command {
        return match complete::script(shell) {
            Ok(script) => {
                print!("{script}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("kubectl-podlife: {e}");
                ExitCode::from(2)
            }
        };
    }
    if let Command::Run { files, .. } = &cli.command
        && let Err(e) = load_experiments(files)
    {
        eprintln!("kubectl-podlife: {e}");
        return ExitCode::from(2);
    }
    // Bad input is told before any cluster is asked.
    if let Command::Suite { only, skip_slow, .. } = &cli.command
        && let Err(e) = podlife::harness::conformance::cases(only.as_deref(), *skip_slow)
    {
        eprintln!("kubectl-podlife: {e}");
        return ExitCode::from(2);
    }
    if let Command::Report { pod: Some(given), selector: None, .. } = &cli.command
        && let Err(e) = Subject::parse(given)
    {
        eprintln!("kubectl-podlife: {e}");
        return ExitCode::from(2);
    }
    let connection = match cli.connect.connect().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kubectl-podlife: {}", podlife::cli::chain(&e));
            return ExitCode::from(2);
        }
    };
    let (client, namespace) = (connection.client.clone(), connection.namespace.clone());
    let created = Created::default();
    let work = async {
        let out = &mut std::io::stdout().lock();
        match cli.command {
            Command::Report { pod, selector, since, output, width } => {
                let subject = match (pod, selector) {
                    (_, Some(selector)) => Subject::Selector(selector),
                    (Some(pod), None) => Subject::parse(&pod)?,
                    (None, None) => unreachable!("clap requires one"),
                };
                match subject {
                    Subject::Pod(pod) => report(&client, &namespace, &pod, output, width, out).await,
                    workload => report_workload(&client, &namespace, &workload, since, output, width, out).await,
                }
                .map(|()| Outcome::Passed)
            }
            Command::Explain { pod, output } => explain(&client, &namespace, &pod, output == "json", out).await.map(|()| Outcome::Passed),
            Command::Show { experiment, width } => show(&client, &namespace, &experiment, width, out).await,
            Command::List { all_namespaces, output } => {
                let rows = list::rows(&client, (!all_namespaces).then_some(namespace.as_str())).await?;
                list::print(&rows, all_namespaces, output == "json", out)?;
                Ok(Outcome::Passed)
            }
            Command::Doctor => {
                let checks = doctor::checks(&client, &connection.cluster, &namespace).await;
                doctor::print(&checks, out)?;
                Ok(if checks.iter().any(|c| c.status == doctor::Status::Failed) { Outcome::Failed } else { Outcome::Passed })
            }
            Command::Suite { name: _, only, skip_slow, parallel, results } => {
                let (output, options) = results.options(parallel, &created);
                let in_namespace = cli.connect.namespace.as_deref();
                suite(&client, only.as_deref(), skip_slow, in_namespace, output, &options, out).await.map(|(_, _, outcome)| outcome)
            }
            Command::Run { files, width, parallel, results } => {
                let experiments = load_experiments(&files).map_err(|e| podlife::cli::Error::Io(std::io::Error::other(e)))?;
                let (output, options) = results.options(parallel, &created);
                run(&client, &namespace, experiments, output, width, &options, out).await
            }
            Command::Completion { .. } => unreachable!("answered above"),
        }
    };
    let result = tokio::select! {
        result = work => result,
        signal = interrupt() => return interrupted(&created, &client, signal).await,
    };
    match result {
        Ok(Outcome::Passed) => ExitCode::SUCCESS,
        Ok(Outcome::Failed) => ExitCode::from(1),
        Ok(Outcome::CouldNotRun) => ExitCode::from(2),
        Err(e) => {
            eprintln!("kubectl-podlife: {}", podlife::cli::chain(&e));
            if created.any() {
                tokio::select! {
                    said = created.clean_up(&client, Duration::from_secs(60)) => eprintln!("kubectl-podlife: {said}"),
                    signal = interrupt() => return interrupted(&created, &client, signal).await,
                }
            }
            ExitCode::from(2)
        }
    }
}

fn duration(s: &str) -> Result<Duration, String> {
    podlife::target::script::parse_duration(s).ok_or_else(|| format!("'{s}' is not a duration like 30m or 12h"))
}

/// SIGINT (Ctrl-C) or SIGTERM (a CI job's timeout, say): whichever comes first.
async fn interrupt() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else { return std::future::pending().await };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "interrupted",
        _ = term.recv() => "terminated",
    }
}

/// Deletes what this run created and says what happened; a second signal leaves it in place
/// and names it. Exit 130, as a shell reports a Ctrl-C.
async fn interrupted(created: &Created, client: &kube::Client, signal: &str) -> ExitCode {
    eprintln!("\nkubectl-podlife: {signal}; deleting what this run created (again to leave it)");
    let said = tokio::select! {
        said = created.clean_up(client, Duration::from_secs(60)) => said,
        _ = interrupt() => format!("left in place: {}", created.describe()),
    };
    eprintln!("kubectl-podlife: {signal}; {said}");
    ExitCode::from(130)
}
