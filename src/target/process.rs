//! Process control: SIGTERM behaviours, exits with a termination message, self-inflicted
//! signals, and resource faults.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Target;

/// What the target does when the kubelet sends SIGTERM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "mode")]
pub enum SigtermMode {
    /// Exit 0 at once.
    Exit,
    /// Keep serving (with the terminating readiness/liveness settings), then exit 0.
    Drain {
        #[serde(rename = "drainMs")]
        drain_ms: u64,
    },
    /// Do nothing: the kubelet must SIGKILL the container after the grace period (exit 137).
    Ignore,
}

impl std::str::FromStr for SigtermMode {
    type Err = String;
    /// `exit`, `ignore`, or `drain:DURATION` (e.g. `drain:5s`).
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "exit" => Ok(SigtermMode::Exit),
            "ignore" => Ok(SigtermMode::Ignore),
            other => other
                .strip_prefix("drain:")
                .and_then(super::script::parse_duration)
                .map(|d| SigtermMode::Drain { drain_ms: u64::try_from(d.as_millis()).unwrap_or(u64::MAX) })
                .ok_or_else(|| format!("unknown SIGTERM mode '{other}': expected exit, ignore or drain:DURATION (e.g. drain:5s)")),
        }
    }
}

/// Exits the process with `code`, after recording why in the event log, in the log and in
/// the termination message file the kubelet reads into `state.terminated.message`.
pub fn exit(target: &Target, code: i32, reason: &str) -> ! {
    target.event("exit", format!("code {code}: {reason}"));
    write_termination_message(target, reason);
    std::process::exit(code)
}

fn write_termination_message(target: &Target, reason: &str) {
    let path = &target.config().termination_log;
    if let Err(e) = std::fs::write(path, reason) {
        tracing::warn!(path = %path.display(), error = %e, "could not write termination message");
    }
}

/// When the target got SIGTERM, from a termination message it wrote ("SIGTERM at
/// 2026-12-02T18:00:00.123Z; ...").
#[must_use]
pub fn sigterm_from_termination_message(message: &str) -> Option<jiff::Timestamp> {
    let rest = &message[message.find("SIGTERM at ")? + "SIGTERM at ".len()..];
    rest.split(';').next()?.trim().parse().ok()
}

/// The signals `/kill` accepts, by name or number.
pub fn parse_signal(s: &str) -> Option<i32> {
    let name = s.trim_start_matches("SIG").to_ascii_uppercase();
    let n = match name.as_str() {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ILL" => 4,
        "ABRT" => 6,
        "KILL" => 9,
        "SEGV" => 11,
        "TERM" => 15,
        "USR1" => 10,
        "USR2" => 12,
        other => other.parse().ok().filter(|n| (1..=31).contains(n))?,
    };
    Some(n)
}

/// Kills the process with `signal`.
///
/// A container's PID 1 ignores every signal it has no handler for, even from itself, so as
/// PID 1 the target exits with 128+signal instead, which is exactly what containerd reports
/// for a process killed by that signal. SIGTERM goes through the target's own handler.
pub fn kill_self(target: &Target, signal: i32) -> ! {
    let reason = format!("killed by /kill with signal {signal}");
    if signal == 15 {
        target.event("kill", "SIGTERM to self");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM);
        std::thread::sleep(Duration::from_secs(3600));
    }
    write_termination_message(target, &reason);
    target.event("kill", reason.clone());
    if std::process::id() != 1
        && let Ok(sig) = nix::sys::signal::Signal::try_from(signal)
    {
        let _ = nix::sys::signal::raise(sig);
        std::thread::sleep(Duration::from_millis(500));
    }
    std::process::exit(128 + signal)
}

/// Aborts (SIGABRT, exit code 134 as seen by the kubelet).
pub fn crash(target: &Target) -> ! {
    write_termination_message(target, "crashed by /crash (SIGABRT)");
    target.event("crash", "SIGABRT");
    if std::process::id() == 1 {
        // See kill_self: PID 1 cannot die of SIGABRT; report it as containerd would.
        std::process::exit(128 + 6);
    }
    std::process::abort()
}

/// Handles SIGTERM and SIGINT according to the current [`SigtermMode`].
pub fn spawn_signal_handler(target: Arc<Target>) {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            target.begin_termination();
            let mode = target.sigterm_mode();
            target.event("sigterm", format!("{name}; mode {mode:?}"));
            // The signal's time goes into the termination message at once, so the pod's status
            // carries it even when the target is SIGKILLed or read no more (see
            // `sigterm_from_termination_message`).
            let received = format!("{name} at {};", jiff::Timestamp::now());
            write_termination_message(&target, &received);
            match mode {
                SigtermMode::Exit => exit(&target, 0, &format!("{received} exited at once")),
                SigtermMode::Drain { drain_ms } => {
                    let t = Arc::clone(&target);
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(drain_ms)).await;
                        exit(&t, 0, &format!("{received} drained for {drain_ms}ms, then exited"));
                    });
                }
                SigtermMode::Ignore => tracing::info!("ignoring {name}; the kubelet will have to SIGKILL"),
            }
        }
    });
}

/// Fault threads alive at once (memory hog and CPU burners together), so that repeated calls
/// cannot exhaust the process's threads. Enough to saturate any node a test runs on.
pub const MAX_FAULT_THREADS: u32 = 16;
/// The memory fault's bound when no limit is given and the container has no memory limit.
pub const DEFAULT_MEMORY_FAULT_MIB: u32 = 512;
/// Above the container's memory limit, so that a fault without `limitMib` still ends in
/// OOMKilled where there is a limit to hit.
const OVER_CGROUP_LIMIT_MIB: u32 = 64;

static FAULT_THREADS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
static MEMORY_FAULT_RUNNING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Why a fault was not started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultRefused {
    #[error("a memory fault is already running; it holds what it took until the process ends")]
    MemoryFaultRunning,
    #[error("{running} fault threads already run; at most {MAX_FAULT_THREADS} at once")]
    TooManyThreads { running: u32 },
}

/// A fault thread's place in [`FAULT_THREADS`], given back when the thread ends.
struct FaultThread;

impl FaultThread {
    fn reserve(n: u32) -> Result<Vec<FaultThread>, FaultRefused> {
        use std::sync::atomic::Ordering;
        FAULT_THREADS
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |running| running.checked_add(n).filter(|t| *t <= MAX_FAULT_THREADS))
            .map_err(|running| FaultRefused::TooManyThreads { running })?;
        Ok((0..n).map(|_| FaultThread).collect())
    }
}

impl Drop for FaultThread {
    fn drop(&mut self) {
        FAULT_THREADS.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The memory limit of the container's cgroup (v2) in MiB, if it has one.
fn cgroup_memory_limit_mib() -> Option<u32> {
    let text = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok()?;
    let bytes: u64 = text.trim().parse().ok()?;
    u32::try_from(bytes >> 20).ok()
}

/// How far a memory fault grows: the given limit, or just past the container's memory limit
/// (so the kernel's OOM killer ends it, which is what the fault is for), or a fixed bound.
#[must_use]
pub fn memory_fault_limit_mib(limit_mib: Option<u32>, cgroup_limit_mib: Option<u32>) -> u32 {
    limit_mib.unwrap_or_else(|| cgroup_limit_mib.map_or(DEFAULT_MEMORY_FAULT_MIB, |l| l.saturating_add(OVER_CGROUP_LIMIT_MIB)))
}

/// Allocates and touches memory at `mib_per_sec` up to [`memory_fault_limit_mib`], then holds
/// it. One at a time.
///
/// # Errors
/// A memory fault already runs, or the fault threads are all taken.
pub fn spawn_memory_hog(target: &Target, mib_per_sec: u32, limit_mib: Option<u32>) -> Result<u32, FaultRefused> {
    use std::sync::atomic::Ordering;
    let limit = memory_fault_limit_mib(limit_mib, cgroup_memory_limit_mib());
    if MEMORY_FAULT_RUNNING.swap(true, Ordering::SeqCst) {
        return Err(FaultRefused::MemoryFaultRunning);
    }
    let slot = FaultThread::reserve(1).inspect_err(|_| MEMORY_FAULT_RUNNING.store(false, Ordering::SeqCst))?;
    target.event("fault-memory", format!("{mib_per_sec} MiB/s up to {limit} MiB"));
    std::thread::spawn(move || {
        let _slot = slot;
        let mut held: Vec<Vec<u8>> = Vec::new();
        let pause = Duration::from_secs_f64(1.0 / f64::from(mib_per_sec.max(1)));
        while held.len() < limit as usize {
            // Filled with ones so every page is really committed, not just reserved.
            held.push(vec![1u8; 1 << 20]);
            std::thread::sleep(pause);
        }
        tracing::info!(mib = held.len(), "memory fault reached its limit; holding");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    });
    Ok(limit)
}

/// Spins `threads` threads for `seconds`.
///
/// # Errors
/// That many more would exceed [`MAX_FAULT_THREADS`].
pub fn spawn_cpu_burn(target: &Target, threads: u32, seconds: u64) -> Result<(), FaultRefused> {
    let slots = FaultThread::reserve(threads)?;
    target.event("fault-cpu", format!("{threads} threads for {seconds}s"));
    let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
    for slot in slots {
        std::thread::spawn(move || {
            let _slot = slot;
            let mut x: u64 = 1;
            while std::time::Instant::now() < deadline {
                x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
            }
        });
    }
    Ok(())
}
