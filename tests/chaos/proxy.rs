//! A TCP proxy between the operators and the apiserver. TLS passes through untouched; the
//! suite can cut every connection at once, which breaks the operators' watches (and only
//! theirs: the reference recorder talks to the apiserver directly).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;

pub struct Proxy {
    pub addr: SocketAddr,
    cut: broadcast::Sender<()>,
    held: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on loopback and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (cut, _) = broadcast::channel(4);
        let cut_tx = cut.clone();
        let held = Arc::new(AtomicBool::new(false));
        let holding = Arc::clone(&held);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { continue };
                if holding.load(Ordering::SeqCst) {
                    // Held back: the client sees its connection closed and retries.
                    drop(inbound);
                    continue;
                }
                let mut cut_rx = cut_tx.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else { return };
                    tokio::select! {
                        _ = copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut_rx.recv() => {}
                    }
                });
            }
        });
        Ok(Proxy { addr, cut, held, task })
    }

    /// Drops every open connection; clients reconnect at once (unless held).
    pub fn cut(&self) {
        let _ = self.cut.send(());
    }

    /// While held, new connections are closed as soon as they are accepted.
    pub fn hold(&self, held: bool) {
        self.held.store(held, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}
