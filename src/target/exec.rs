//! Exec probes and hooks without a shell: `podlife-target probe liveness` (run by the kubelet
//! inside the container) asks the running server over a local socket, waits as the script
//! says, and exits with the scripted code.
//!
//! The socket is a Linux abstract Unix socket named after the control port, so it needs no
//! writable filesystem (read-only root filesystems work) and two targets in one pod, which
//! share a network namespace and so must use different ports, never collide.
//!
//! Wire format: one request line, `probe KIND` or `hook KIND`; one answer line, `exit CODE`.
//! An answer that never comes is a hang; a closed socket is a close.

use std::os::linux::net::SocketAddrExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::record::{HookKind, ProbeKind, Transport};
use super::script::Action;
use super::{Error, Result, Target};

/// What an exec client asks for.
#[derive(Debug, Clone, Copy)]
pub enum ExecRequest {
    Probe(ProbeKind),
    Hook(HookKind),
}

fn socket_name(control_port: u16) -> String {
    format!("podlife-target.{control_port}")
}

fn socket_addr(control_port: u16) -> std::io::Result<std::os::unix::net::SocketAddr> {
    std::os::unix::net::SocketAddr::from_abstract_name(socket_name(control_port).as_bytes())
}

pub fn spawn(target: Arc<Target>) -> Result<()> {
    let port = target.config.control_port;
    let listener = socket_addr(port)
        .and_then(|addr| std::os::unix::net::UnixListener::bind_addr(&addr))
        .and_then(|l| {
            l.set_nonblocking(true)?;
            tokio::net::UnixListener::from_std(l)
        })
        .map_err(|e| Error::Exec(format!("cannot listen on @{}: {e}", socket_name(port))))?;
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => drop(tokio::spawn(answer(Arc::clone(&target), stream))),
                // Out of descriptors, say: pause rather than spin on the error.
                Err(e) => {
                    tracing::warn!(error = %e, "exec socket accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                }
            }
        }
    });
    Ok(())
}

/// The longest request line read: real ones are `probe readiness` or `hook poststart`.
const MAX_REQUEST_BYTES: u64 = 64;
/// The longest a hook or probe hangs when the caller never leaves (the kubelet always does).
const HANG_LIMIT: Duration = Duration::from_secs(600);
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// Counts one request in `exec_in_flight` for as long as it lives, however it ends.
struct InFlight(Arc<Target>);

impl InFlight {
    fn new(target: &Arc<Target>) -> Self {
        target.metrics.exec_in_flight.inc();
        InFlight(Arc::clone(target))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.metrics.exec_in_flight.dec();
    }
}

async fn answer(target: Arc<Target>, stream: tokio::net::UnixStream) {
    use tokio::io::AsyncReadExt;
    let _in_flight = InFlight::new(&target);
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST_BYTES));
    if reader.read_line(&mut line).await.is_err() {
        return;
    }
    if !line.ends_with('\n') {
        return reply_error(&mut write, "expected one request line of at most 64 bytes").await;
    }
    // Whatever comes after the line is ignored; its end (EOF) means the caller left.
    let mut read = reader.into_inner().into_inner();
    let started = Instant::now();
    let mut words = line.split_whitespace();
    let (action, request, seq) = match (words.next(), words.next()) {
        (Some("probe"), Some(kind)) => match kind.parse::<ProbeKind>() {
            Ok(k) => {
                let (a, seq) = target.probe_hit(k, Transport::Exec, "exec".into(), None);
                (a, ExecRequest::Probe(k), Some(seq))
            }
            Err(e) => return reply_error(&mut write, &e).await,
        },
        (Some("hook"), Some(kind)) => match kind.parse::<HookKind>() {
            Ok(k) => (target.hook_hit(k, "exec"), ExecRequest::Hook(k), None),
            Err(e) => return reply_error(&mut write, &e).await,
        },
        _ => return reply_error(&mut write, "expected 'probe KIND' or 'hook KIND'").await,
    };
    let caller_left = async {
        let mut sink = [0u8; 64];
        while read.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    };
    match &action {
        // Until the caller (the kubelet's exec, after its timeout) goes away.
        Action::Hang => {
            let _ = tokio::time::timeout(HANG_LIMIT, caller_left).await;
            return;
        }
        Action::Close => return,
        Action::Slow { delay } => {
            tokio::select! {
                () = tokio::time::sleep(*delay) => {}
                () = caller_left => return,
            }
        }
        _ => {}
    }
    let _ = write.write_all(format!("exit {}\n", action.exit_code()).as_bytes()).await;
    match request {
        ExecRequest::Probe(_) => {
            if let Some(seq) = seq {
                target.answered(seq, started);
            }
        }
        // As the HTTP hook does: "SIGTERM only after preStop ended" needs the end recorded.
        ExecRequest::Hook(kind) => target.event(&format!("{}-done", kind.as_str()), format!("exec: {}", action.label())),
    }
}

async fn reply_error(write: &mut tokio::net::unix::OwnedWriteHalf, message: &str) {
    let _ = write.write_all(format!("error {message}\n").as_bytes()).await;
}

/// The client side, run as the exec probe or hook command. Returns the exit code to use.
/// Uses blocking I/O: it is a short-lived process and needs no runtime.
#[must_use]
pub fn exec_client(control_port: u16, request: ExecRequest, timeout: Option<Duration>) -> i32 {
    use std::io::{BufRead, Write};
    let line = match request {
        ExecRequest::Probe(k) => format!("probe {k}\n"),
        ExecRequest::Hook(k) => format!("hook {}\n", k.as_str()),
    };
    let connect = socket_addr(control_port).and_then(|a| std::os::unix::net::UnixStream::connect_addr(&a));
    let mut stream = match connect {
        Ok(s) => s,
        Err(e) => {
            eprintln!("podlife-target: no server on @{} ({e}); is the target running with this control port?", socket_name(control_port));
            return 2;
        }
    };
    let _ = stream.set_read_timeout(timeout);
    if let Err(e) = stream.write_all(line.as_bytes()) {
        eprintln!("podlife-target: cannot send request: {e}");
        return 2;
    }
    let mut answer = String::new();
    match std::io::BufReader::new(stream).read_line(&mut answer) {
        Ok(0) => {
            eprintln!("podlife-target: the server closed the connection (scripted close)");
            1
        }
        Ok(_) => match answer.trim().strip_prefix("exit ").and_then(|c| c.parse().ok()) {
            Some(code) => code,
            None => {
                eprintln!("podlife-target: {}", answer.trim());
                2
            }
        },
        Err(e) => {
            eprintln!("podlife-target: no answer: {e}");
            1
        }
    }
}
