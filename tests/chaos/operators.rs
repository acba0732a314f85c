//! podlife-operator processes started by the suite: one without election, or two with it.
//! They reach the apiserver through the suite's proxy. Faults stop them by their own pid.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};

pub const LEASE: &str = "podlife-chaos";

pub struct Replica {
    pub identity: String,
    child: Child,
    pub port: u16,
}

impl Replica {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn metrics(&self) -> String {
        match reqwest::get(format!("http://127.0.0.1:{}/metrics", self.port)).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// SIGKILL: no flush, no lease release, as in a crash.
    pub fn kill(&mut self) {
        // std's kill is SIGKILL, sent to this child's own pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM: the graceful path; waits for the process to end.
    pub fn stop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.kill();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

pub struct Operators {
    pub selection: Vec<String>,
    pub kubeconfig: PathBuf,
    pub logs: PathBuf,
    /// With election: the namespace of the lease.
    pub lease_namespace: Option<String>,
    pub replicas: Vec<Replica>,
    started: u32,
}

impl Operators {
    pub fn new(selection: Vec<String>, kubeconfig: &Path, logs: &Path) -> Operators {
        Operators { selection, kubeconfig: kubeconfig.into(), logs: logs.into(), lease_namespace: None, replicas: Vec::new(), started: 0 }
    }

    /// Starts one more replica (elected if `lease_namespace` is set).
    pub fn spawn(&mut self) -> Result<Timestamp, String> {
        self.started += 1;
        let identity = format!("chaos-{}", self.started);
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
        std::fs::create_dir_all(&self.logs).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(self.logs.join(format!("operator-{identity}.log"))).map_err(|e| e.to_string())?;
        // PODLIFE_OPERATOR_BIN runs another build (an older release, say) under the same faults.
        let bin = std::env::var_os("PODLIFE_OPERATOR_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_podlife-operator").into());
        let mut cmd = Command::new(bin);
        cmd.args(&self.selection).args(["--listen", &format!("127.0.0.1:{port}"), "--log-format", "text"]);
        if let Some(ns) = &self.lease_namespace {
            cmd.args(["--leader-elect", "--lease-namespace", ns, "--lease-name", LEASE, "--identity", &identity]);
        }
        let child = cmd
            .env("KUBECONFIG", &self.kubeconfig)
            .env("PODLIFE_LOG", "info,podlife=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("start podlife-operator: {e}"))?;
        let at = Timestamp::now();
        self.replicas.push(Replica { identity, child, port });
        Ok(at)
    }

    pub fn stop_all(&mut self) {
        for r in &mut self.replicas {
            r.stop();
        }
        self.replicas.clear();
    }

    /// The replica holding the lease now, if any of ours does.
    pub async fn leader(&self, client: &Client) -> Option<usize> {
        let ns = self.lease_namespace.as_ref()?;
        let lease = Api::<Lease>::namespaced(client.clone(), ns).get_opt(LEASE).await.ok()??;
        let holder = lease.spec?.holder_identity?;
        self.replicas.iter().position(|r| r.identity == holder)
    }

    /// Waits until one of ours holds the lease (other than `not`), up to `limit`.
    pub async fn wait_leader(&self, client: &Client, not: Option<&str>, limit: Duration) -> Option<(usize, Timestamp)> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(i) = self.leader(client).await
                && Some(self.replicas[i].identity.as_str()) != not
            {
                return Some((i, Timestamp::now()));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    }
}
