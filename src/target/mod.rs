//! podlife-target: a companion test container whose health, timing and exit are scripted,
//! and which records every probe hit, so that a test can drive and observe the real kubelet.
//!
//! Layout: [`script`] and [`record`] are pure; [`Target`] holds the shared state and decides
//! each answer; [`serve`] wires the transports (HTTP, TCP, gRPC, exec) and the control API.

mod control;
pub use control::{MAX_BODY_BYTES, TOKEN_HEADER};
pub mod record;
pub mod script;
pub use control::router as control_router;
mod exec;
mod grpc;
mod http;
mod process;
mod state;
mod tcp;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::lock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use exec::{ExecRequest, exec_client};
pub use process::{SigtermMode, sigterm_from_termination_message};
use record::{Hit, HookKind, LifecycleEvent, ProbeKind, Record, Transport};
use script::{Action, Cursor, Script};

/// Errors of the target. Request-level problems are answered as HTTP 400s, not errors here.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr} for {what}")]
    Listen {
        what: &'static str,
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("state directory {path}")]
    State {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("gRPC server")]
    Grpc(#[source] tonic::transport::Error),
    #[error("exec socket: {0}")]
    Exec(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the target is told at start. Each field can be changed at runtime through the
/// control API, except the ports.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    pub listen: IpAddr,
    pub probe_port: u16,
    pub control_port: u16,
    pub grpc_port: u16,
    /// TCP probe listeners, one per probe type: liveness, readiness, startup.
    pub tcp_ports: [u16; 3],
    pub scripts: BTreeMap<ProbeKind, Script>,
    pub hooks: BTreeMap<HookKind, Script>,
    /// Evaluated once per boot: `fail 1 2 times, then ok` fails the first two starts.
    pub boot_script: Option<Script>,
    pub sigterm: SigtermMode,
    pub ready_while_terminating: bool,
    pub live_while_terminating: bool,
    /// Start-up mode "not listening": probe listeners open only after this long.
    pub not_listening_for: Option<Duration>,
    /// Exit on its own after this long with this code.
    pub exit_after: Option<(Duration, i32)>,
    pub state_dir: Option<PathBuf>,
    pub termination_log: PathBuf,
    pub control_token: Option<String>,
}

impl Default for TargetConfig {
    fn default() -> Self {
        TargetConfig {
            listen: IpAddr::from([0, 0, 0, 0]),
            probe_port: 8080,
            control_port: 9090,
            grpc_port: 9000,
            tcp_ports: [8081, 8082, 8083],
            scripts: BTreeMap::new(),
            hooks: BTreeMap::new(),
            boot_script: None,
            sigterm: SigtermMode::Exit,
            ready_while_terminating: false,
            live_while_terminating: true,
            not_listening_for: None,
            exit_after: None,
            state_dir: None,
            termination_log: PathBuf::from("/dev/termination-log"),
            control_token: None,
        }
    }
}

/// Whether a TCP probe listener follows its script or is forced open or closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TcpMode {
    /// Open while the script's current step is healthy, closed otherwise.
    Auto,
    Open,
    Closed,
}

#[derive(Debug)]
struct Scripted {
    script: Script,
    cursor: Cursor,
    /// True while the script is the one given at start, whose cursor persists across restarts.
    from_start: bool,
}

#[derive(Debug)]
struct Mutable {
    probes: BTreeMap<ProbeKind, Scripted>,
    hooks: BTreeMap<HookKind, Scripted>,
    tcp_modes: BTreeMap<ProbeKind, TcpMode>,
    sigterm: SigtermMode,
    ready_while_terminating: bool,
    live_while_terminating: bool,
}

/// The shared state of one running target.
#[derive(Debug)]
pub struct Target {
    config: TargetConfig,
    boot: u64,
    terminating: AtomicBool,
    mutable: Mutex<Mutable>,
    record: Mutex<Record>,
    store: Option<state::Store>,
    pub(crate) metrics: control::Metrics,
}

/// Unix milliseconds now.
#[must_use]
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Target {
    /// Loads persisted state (if any), counts this boot and prepares the scripts.
    ///
    /// # Errors
    /// The state directory cannot be read or written.
    pub fn new(config: TargetConfig) -> Result<Arc<Self>> {
        let now = now_ms();
        let store = config.state_dir.clone().map(state::Store::new);
        let saved = match &store {
            Some(s) => s.load()?,
            None => state::Saved::default(),
        };
        let boot = saved.boot + 1;
        let restore = |kind: &str, script: &Script| -> Cursor {
            saved.cursors.get(kind).filter(|c| c.source == script.source).map_or_else(|| script.start(now), |c| c.cursor)
        };
        let probes = ProbeKind::ALL
            .iter()
            .map(|k| {
                let script = config.scripts.get(k).cloned().unwrap_or_else(|| Script::always(Action::Ok));
                let cursor = restore(k.as_str(), &script);
                (*k, Scripted { script, cursor, from_start: true })
            })
            .collect();
        let hooks = [HookKind::PostStart, HookKind::PreStop]
            .iter()
            .map(|k| {
                let script = config.hooks.get(k).cloned().unwrap_or_else(|| Script::always(Action::Ok));
                (*k, Scripted { cursor: script.start(now), script, from_start: false })
            })
            .collect();
        let target = Arc::new(Target {
            boot,
            terminating: AtomicBool::new(false),
            mutable: Mutex::new(Mutable {
                probes,
                hooks,
                tcp_modes: ProbeKind::ALL.iter().map(|k| (*k, TcpMode::Auto)).collect(),
                sigterm: config.sigterm,
                ready_while_terminating: config.ready_while_terminating,
                live_while_terminating: config.live_while_terminating,
            }),
            record: Mutex::new(Record::new(now)),
            store,
            metrics: control::Metrics::new(),
            config,
        });
        target.metrics.boot.set(i64::try_from(boot).unwrap_or(i64::MAX));
        target.persist(saved.boot_cursor);
        target.event("start", format!("boot {boot}"));
        Ok(target)
    }

    #[must_use]
    pub fn boot(&self) -> u64 {
        self.boot
    }

    #[must_use]
    pub fn config(&self) -> &TargetConfig {
        &self.config
    }

    /// Records a lifecycle event (start, hook, sigterm, exit, script change...).
    pub fn event(&self, kind: &str, detail: impl Into<String>) {
        let detail = detail.into();
        tracing::info!(event = kind, %detail, boot = self.boot, "lifecycle");
        self.metrics.events.get_or_create(&control::EventLabels { kind: kind.to_string() }).inc();
        lock(&self.record).push_event(LifecycleEvent { at_ms: now_ms(), kind: kind.to_string(), detail, boot: self.boot });
    }

    /// Decides and records the answer to one probe hit. Returns the action and the hit's
    /// sequence number, for [`Target::answered`].
    pub fn probe_hit(&self, probe: ProbeKind, transport: Transport, peer: String, user_agent: Option<String>) -> (Action, u64) {
        let now = now_ms();
        let action = {
            let mut m = lock(&self.mutable);
            let terminating = self.terminating.load(Ordering::SeqCst);
            let forced_fail = terminating
                && match probe {
                    ProbeKind::Readiness => !m.ready_while_terminating,
                    ProbeKind::Liveness => !m.live_while_terminating,
                    ProbeKind::Startup => false,
                };
            let s = m.probes.get_mut(&probe).expect("every probe kind has a script");
            let scripted = s.script.hit(&mut s.cursor, now);
            if forced_fail { Action::Fail { code: None } } else { scripted }
        };
        self.save_cursors();
        let hit = Hit {
            seq: 0,
            at_ms: now,
            probe,
            transport,
            peer,
            user_agent,
            result: action.label().to_string(),
            latency_ms: None,
            boot: self.boot,
        };
        self.metrics.hit(probe, transport, action.label());
        let seq = lock(&self.record).push_hit(hit);
        tracing::debug!(%probe, transport = transport.as_str(), result = action.label(), seq, "probe hit");
        (action, seq)
    }

    /// Notes when the answer to hit `seq` went out.
    pub fn answered(&self, seq: u64, started: std::time::Instant) {
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        lock(&self.record).set_latency(seq, ms);
    }

    /// The action in force for a probe without counting a hit (TCP listeners and gRPC Watch).
    #[must_use]
    pub fn probe_state(&self, probe: ProbeKind) -> Action {
        let mut m = lock(&self.mutable);
        let s = m.probes.get_mut(&probe).expect("every probe kind has a script");
        s.script.current(&mut s.cursor, now_ms())
    }

    /// Whether the TCP listener of `probe` should be open right now.
    #[must_use]
    pub fn tcp_should_listen(&self, probe: ProbeKind) -> bool {
        let mode = lock(&self.mutable).tcp_modes[&probe];
        match mode {
            TcpMode::Open => true,
            TcpMode::Closed => false,
            TcpMode::Auto => !matches!(self.probe_state(probe), Action::Fail { .. } | Action::Close),
        }
    }

    /// Runs a hook's script: records the call and returns what to answer.
    pub fn hook_hit(&self, hook: HookKind, how: &str) -> Action {
        let action = {
            let mut m = lock(&self.mutable);
            let s = m.hooks.get_mut(&hook).expect("every hook has a script");
            s.script.hit(&mut s.cursor, now_ms())
        };
        self.event(hook.as_str(), format!("{how}: {}", action.label()));
        action
    }

    fn set_probe_script(&self, probe: ProbeKind, script: Script) {
        let source = script.source.clone();
        {
            let mut m = lock(&self.mutable);
            let cursor = script.start(now_ms());
            m.probes.insert(probe, Scripted { script, cursor, from_start: false });
        }
        self.save_cursors();
        self.event("script", format!("{probe}: {source}"));
    }

    fn reset_probe_script(&self, probe: ProbeKind) {
        {
            let mut m = lock(&self.mutable);
            let s = m.probes.get_mut(&probe).expect("every probe kind has a script");
            s.cursor = s.script.start(now_ms());
        }
        self.save_cursors();
        self.event("script-reset", probe.as_str());
    }

    fn set_hook_script(&self, hook: HookKind, script: Script) {
        let source = script.source.clone();
        {
            let mut m = lock(&self.mutable);
            let cursor = script.start(now_ms());
            m.hooks.insert(hook, Scripted { script, cursor, from_start: false });
        }
        self.event("hook-script", format!("{}: {source}", hook.as_str()));
    }

    /// Marks the target as terminating; readiness and liveness answers follow the settings.
    pub fn begin_termination(&self) {
        self.terminating.store(true, Ordering::SeqCst);
    }

    #[must_use]
    pub fn sigterm_mode(&self) -> SigtermMode {
        lock(&self.mutable).sigterm
    }

    #[must_use]
    pub fn is_terminating(&self) -> bool {
        self.terminating.load(Ordering::SeqCst)
    }

    fn save_cursors(&self) {
        let Some(store) = &self.store else { return };
        let cursors = {
            let m = lock(&self.mutable);
            m.probes
                .iter()
                .filter(|(_, s)| s.from_start)
                .map(|(k, s)| (k.as_str().to_string(), state::SavedCursor { source: s.script.source.clone(), cursor: s.cursor }))
                .collect()
        };
        store.update(|saved| saved.cursors = cursors);
    }

    fn persist(&self, boot_cursor: Option<state::SavedCursor>) {
        let Some(store) = &self.store else { return };
        let boot = self.boot;
        store.update(|saved| {
            saved.boot = boot;
            saved.boot_cursor = boot_cursor;
        });
        self.save_cursors();
    }

    /// Runs the boot script for this boot, if any: the action decides whether this start fails.
    pub fn boot_action(&self) -> Action {
        let Some(script) = &self.config.boot_script else { return Action::Ok };
        let now = now_ms();
        let mut cursor = self
            .store
            .as_ref()
            .and_then(|s| s.load().ok())
            .and_then(|saved| saved.boot_cursor)
            .filter(|c| c.source == script.source)
            .map_or_else(|| script.start(now), |c| c.cursor);
        let action = script.hit(&mut cursor, now);
        if let Some(store) = &self.store {
            let source = script.source.clone();
            store.update(|saved| saved.boot_cursor = Some(state::SavedCursor { source, cursor }));
        }
        action
    }

    fn snapshot(&self, since: Option<u64>) -> record::RecordSnapshot {
        lock(&self.record).snapshot(self.boot, since)
    }
}

/// Runs the target until it is told to exit.
///
/// # Errors
/// A listener cannot be bound, or the state directory is unusable.
pub async fn serve(config: TargetConfig) -> Result<()> {
    let target = Target::new(config)?;
    match target.boot_action() {
        Action::Ok | Action::Redirect { .. } => {}
        Action::Slow { delay } => {
            target.event("boot-delay", format!("{}ms", delay.as_millis()));
            tokio::time::sleep(delay).await;
        }
        Action::Hang => {
            target.event("boot-hang", "boot script says hang: not starting");
            process::spawn_signal_handler(Arc::clone(&target));
            std::future::pending::<()>().await;
        }
        fail @ (Action::Fail { .. } | Action::Close) => {
            let code = fail.exit_code();
            process::exit(&target, code, &format!("boot script failed boot {} with exit code {code}", target.boot()));
        }
    }
    let control = control::bind(&target).await?;
    process::spawn_signal_handler(Arc::clone(&target));
    if let Some((after, code)) = target.config.exit_after {
        let target = Arc::clone(&target);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            process::exit(&target, code, &format!("exit-after: done after {}ms with exit code {code}", after.as_millis()));
        });
    }
    exec::spawn(Arc::clone(&target))?;
    if let Some(delay) = target.config.not_listening_for {
        target.event("not-listening", format!("probe listeners open in {}ms", delay.as_millis()));
        tokio::time::sleep(delay).await;
    }
    let probe = http::bind_probe(&target).await?;
    let grpc = grpc::spawn(&target).await?;
    tcp::spawn(&target);
    target.event("listening", format!("probe {probe}, control {control}, grpc {grpc}"));
    std::future::pending::<()>().await;
    Ok(())
}

fn listen_addr(target: &Target, port: u16) -> SocketAddr {
    SocketAddr::new(target.config.listen, port)
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|source| Error::Listen { what, addr: addr.to_string(), source })
}
