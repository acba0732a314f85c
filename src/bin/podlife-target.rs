//! podlife-target: the companion test container. See `podlife-target --help`.
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use podlife::target::record::{HookKind, ProbeKind};
use podlife::target::script::{Script, parse_duration};
use podlife::target::{ExecRequest, SigtermMode, TargetConfig, exec_client, serve};

/// A test container for the kubelet: scriptable liveness, readiness and startup probes over
/// HTTP, TCP, gRPC and exec, hooks, SIGTERM behaviours and exits, with every probe hit recorded.
///
/// Every option can also be set with an environment variable, shown as [env: ...].
/// Script grammar: `ok for 20s, then fail 3 times, then ok`; see the README for all of it.
#[derive(Parser, Debug)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

// Parsed once at start; boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server (the default when no subcommand is given).
    Serve(ServeArgs),
    /// Exec probe: ask the running server, wait as scripted, exit with the scripted code.
    Probe {
        #[arg(value_parser = parse_probe)]
        kind: ProbeKind,
        #[arg(long, env = "PODLIFE_CONTROL_PORT", default_value_t = 9090)]
        control_port: u16,
    },
    /// Exec hook: `hook poststart` or `hook prestop`, answered by the hook's script.
    Hook {
        #[arg(value_parser = parse_hook)]
        kind: HookKind,
        #[arg(long, env = "PODLIFE_CONTROL_PORT", default_value_t = 9090)]
        control_port: u16,
    },
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Address to listen on. In a pod, 0.0.0.0 is the pod's own address.
    #[arg(long, env = "PODLIFE_LISTEN", default_value = "0.0.0.0")]
    listen: IpAddr,
    /// HTTP probe port: /healthz, /readyz, /startupz, /hooks/*.
    #[arg(long, env = "PODLIFE_PROBE_PORT", default_value_t = 8080)]
    probe_port: u16,
    /// Control API port (also names the exec probes' local socket).
    #[arg(long, env = "PODLIFE_CONTROL_PORT", default_value_t = 9090)]
    control_port: u16,
    /// gRPC health port (grpc.health.v1.Health).
    #[arg(long, env = "PODLIFE_GRPC_PORT", default_value_t = 9000)]
    grpc_port: u16,
    /// TCP probe ports for liveness, readiness and startup (0 switches one off).
    #[arg(long, env = "PODLIFE_TCP_PORTS", default_value = "8081,8082,8083", value_parser = parse_ports)]
    tcp_ports: [u16; 3],
    /// Liveness script.
    #[arg(long, env = "PODLIFE_LIVENESS", value_parser = parse_script)]
    liveness: Option<Script>,
    /// Readiness script.
    #[arg(long, env = "PODLIFE_READINESS", value_parser = parse_script)]
    readiness: Option<Script>,
    /// Startup script.
    #[arg(long, env = "PODLIFE_STARTUP", value_parser = parse_script)]
    startup: Option<Script>,
    /// postStart hook script, e.g. `slow 5s` or `fail`.
    #[arg(long, env = "PODLIFE_POSTSTART", value_parser = parse_script)]
    poststart: Option<Script>,
    /// preStop hook script.
    #[arg(long, env = "PODLIFE_PRESTOP", value_parser = parse_script)]
    prestop: Option<Script>,
    /// Boot script, one hit per start: `fail 1 2 times, then ok` fails the first two starts
    /// with exit code 1 (needs --state-dir to count starts across restarts).
    #[arg(long, env = "PODLIFE_BOOT", value_parser = parse_script)]
    boot: Option<Script>,
    /// Start-up mode "not listening": keep probe ports closed for this long (TCP is refused).
    #[arg(long, env = "PODLIFE_NOT_LISTENING_FOR", value_parser = parse_dur)]
    not_listening_for: Option<Duration>,
    /// Start-up mode "listening but failing": every probe fails for this long, then follows its script.
    #[arg(long, env = "PODLIFE_FAILING_FOR", value_parser = parse_dur)]
    failing_for: Option<Duration>,
    /// Finish on its own: exit after DURATION with CODE (default 0), e.g. `3s` or `3s:1`. A
    /// workload for Jobs and restartPolicy cases.
    #[arg(long, env = "PODLIFE_EXIT_AFTER", value_parser = parse_exit_after)]
    exit_after: Option<(Duration, i32)>,
    /// On SIGTERM: exit, ignore, or drain:DURATION.
    #[arg(long, env = "PODLIFE_SIGTERM", default_value = "exit", value_parser = parse_sigterm)]
    sigterm: SigtermMode,
    /// Keep readiness passing while terminating (default: readiness fails after SIGTERM).
    #[arg(long, env = "PODLIFE_READY_WHILE_TERMINATING")]
    ready_while_terminating: bool,
    /// Make liveness fail while terminating (default: liveness keeps following its script).
    #[arg(long, env = "PODLIFE_UNLIVE_WHILE_TERMINATING")]
    unlive_while_terminating: bool,
    /// Directory (an emptyDir) where the boot count and script positions survive restarts.
    #[arg(long, env = "PODLIFE_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Where the termination message goes.
    #[arg(long, env = "PODLIFE_TERMINATION_LOG", default_value = "/dev/termination-log")]
    termination_log: PathBuf,
    /// Require `Authorization: Bearer TOKEN` on the control API.
    #[arg(long, env = "PODLIFE_CONTROL_TOKEN", hide_env_values = true)]
    control_token: Option<String>,
    /// Log format.
    #[arg(long, env = "PODLIFE_LOG_FORMAT", default_value = "json", value_parser = ["json", "text"])]
    log_format: String,
}

fn parse_script(s: &str) -> Result<Script, String> {
    Script::parse(s).map_err(|e| e.to_string())
}
fn parse_ports(s: &str) -> Result<[u16; 3], String> {
    let ports: Vec<u16> = s.split(',').map(|p| p.trim().parse::<u16>().map_err(|e| format!("'{p}': {e}"))).collect::<Result<_, _>>()?;
    <[u16; 3]>::try_from(ports).map_err(|p| format!("expected 3 ports (liveness,readiness,startup), got {}", p.len()))
}
fn parse_dur(s: &str) -> Result<Duration, String> {
    parse_duration(s).ok_or_else(|| format!("'{s}' is not a duration like 10s"))
}
fn parse_exit_after(s: &str) -> Result<(Duration, i32), String> {
    let (d, code) = s.split_once(':').unwrap_or((s, "0"));
    let code = code.parse::<u8>().map_err(|_| format!("'{code}' is not an exit code 0-255 (in '{s}')"))?;
    Ok((parse_dur(d)?, i32::from(code)))
}
fn parse_sigterm(s: &str) -> Result<SigtermMode, String> {
    s.parse()
}
fn parse_probe(s: &str) -> Result<ProbeKind, String> {
    s.parse()
}
fn parse_hook(s: &str) -> Result<HookKind, String> {
    s.parse()
}

impl ServeArgs {
    fn into_config(self) -> TargetConfig {
        let mut scripts = BTreeMap::new();
        for (kind, script) in
            [(ProbeKind::Liveness, self.liveness), (ProbeKind::Readiness, self.readiness), (ProbeKind::Startup, self.startup)]
        {
            let script = script.unwrap_or_else(|| Script::parse("ok").expect("'ok' is a script"));
            let script = match self.failing_for {
                // "listening but failing": prepend a failing step to every probe's script.
                Some(d) => Script::parse(&format!("fail for {}ms, then {}", d.as_millis(), script.source)).unwrap_or(script),
                None => script,
            };
            scripts.insert(kind, script);
        }
        let mut hooks = BTreeMap::new();
        if let Some(s) = self.poststart {
            hooks.insert(HookKind::PostStart, s);
        }
        if let Some(s) = self.prestop {
            hooks.insert(HookKind::PreStop, s);
        }
        TargetConfig {
            listen: self.listen,
            probe_port: self.probe_port,
            control_port: self.control_port,
            grpc_port: self.grpc_port,
            tcp_ports: self.tcp_ports,
            scripts,
            hooks,
            boot_script: self.boot,
            sigterm: self.sigterm,
            ready_while_terminating: self.ready_while_terminating,
            live_while_terminating: !self.unlive_while_terminating,
            not_listening_for: self.not_listening_for,
            exit_after: self.exit_after,
            state_dir: self.state_dir,
            termination_log: self.termination_log,
            control_token: self.control_token,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let serve_args = match cli.command {
        Some(Command::Probe { kind, control_port }) => return code(exec_client(control_port, ExecRequest::Probe(kind), None)),
        Some(Command::Hook { kind, control_port }) => return code(exec_client(control_port, ExecRequest::Hook(kind), None)),
        Some(Command::Serve(args)) => args,
        None => cli.serve,
    };
    podlife::telemetry::init_logging(&serve_args.log_format, "info");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    match runtime.block_on(serve(serve_args.into_config())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %anyhow::Error::from(e), "podlife-target failed");
            ExitCode::from(2)
        }
    }
}

fn code(c: i32) -> ExitCode {
    ExitCode::from(u8::try_from(c).unwrap_or(1))
}
