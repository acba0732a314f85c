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
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(answer(Arc::clone(&target), stream));
        }
    });
    Ok(())
}

async fn answer(target: Arc<Target>, stream: tokio::net::UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    if BufReader::new(read).read_line(&mut line).await.is_err() {
        return;
    }
    let started = Instant::now();
    let mut words = line.split_whitespace();
    let (action, seq) = match (words.next(), words.next()) {
        (Some("probe"), Some(kind)) => match kind.parse::<ProbeKind>() {
            Ok(k) => {
                let (a, seq) = target.probe_hit(k, Transport::Exec, "exec".into(), None);
                (a, Some(seq))
            }
            Err(e) => return reply_error(&mut write, &e).await,
        },
        (Some("hook"), Some(kind)) => match kind.parse::<HookKind>() {
            Ok(k) => (target.hook_hit(k, "exec"), None),
            Err(e) => return reply_error(&mut write, &e).await,
        },
        _ => return reply_error(&mut write, "expected 'probe KIND' or 'hook KIND'").await,
    };
    match &action {
        Action::Hang => std::future::pending::<()>().await,
        Action::Close => return,
        Action::Slow { delay } => tokio::time::sleep(*delay).await,
        _ => {}
    }
    let _ = write.write_all(format!("exit {}\n", action.exit_code()).as_bytes()).await;
    if let Some(seq) = seq {
        target.answered(seq, started);
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
