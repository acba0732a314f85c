//! kubectl-podlife: a kubectl plugin for podlife's reports. See `kubectl podlife --help`.
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use podlife::cli::{Format, RunFormat, RunOptions, load_experiments, report, run, suite};

/// Reads what podlife recorded about your pods.
#[derive(Parser, Debug)]
#[command(name = "kubectl-podlife", version)]
struct Cli {
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
}

impl Results {
    fn options(self, parallel: usize) -> (RunFormat, RunOptions) {
        (self.output, RunOptions { parallel, junit: self.junit, html: self.html })
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run ProbeExperiments from YAML files against the cluster (the operator must run with
    /// experiments enabled). Shows progress, then verdicts and timelines. Exit 0 if all passed,
    /// 1 if any failed, 2 if they could not run.
    Run {
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
        #[arg(short, long, default_value = "default", env = "PODLIFE_NAMESPACE")]
        namespace: String,
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
    /// e2e checks against your cluster, one namespace per case, in parallel. Exit 0 if all passed.
    Suite {
        #[arg(value_parser = ["conformance"])]
        name: String,
        /// Only cases whose name contains this.
        #[arg(long)]
        only: Option<String>,
        /// Run at most this many cases at once, longest first (0: all at once). Bounded by
        /// default: dozens of pods starting together on a small node delay every probe and
        /// every reaction of the kubelet, which is not what the cases measure.
        #[arg(long, default_value_t = 12)]
        parallel: usize,
        #[command(flatten)]
        results: Results,
    },
    /// A pod's timeline: phases, conditions, container states, restarts with measured vs
    /// expected back-off, probe kills and events.
    Report {
        /// The pod's name.
        pod: String,
        #[arg(short, long, default_value = "default", env = "PODLIFE_NAMESPACE")]
        namespace: String,
        #[arg(short, long, value_enum, default_value_t = Format::Human)]
        output: Format,
        /// Width of the terminal timeline.
        #[arg(long, default_value_t = 100)]
        width: usize,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Run { files, .. } = &cli.command
        && let Err(e) = load_experiments(files)
    {
        eprintln!("kubectl-podlife: {e}");
        return ExitCode::from(2);
    }
    let result = async {
        let client = kube::Client::try_default().await.map_err(|e| anyhow::anyhow!("cannot reach the cluster ({e}); check KUBECONFIG"))?;
        match cli.command {
            Command::Report { pod, namespace, output, width } => {
                report(&client, &namespace, &pod, output, width, &mut std::io::stdout().lock()).await?
            }
            Command::Suite { name: _, only, parallel, results } => {
                let (output, options) = results.options(parallel);
                let (_, failed) = suite(&client, only.as_deref(), output, &options, &mut std::io::stdout().lock()).await?;
                return anyhow::Ok(failed == 0);
            }
            Command::Run { files, namespace, width, parallel, results } => {
                let experiments = load_experiments(&files).map_err(anyhow::Error::msg)?;
                let (output, options) = results.options(parallel);
                return anyhow::Ok(run(&client, &namespace, experiments, output, width, &options, &mut std::io::stdout().lock()).await?);
            }
        }
        anyhow::Ok(true)
    }
    .await;
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("kubectl-podlife: {e:#}");
            ExitCode::from(2)
        }
    }
}
