//! podlife-operator processes started by the suite: one without election, two with it, or
//! three sharing the pods through shard Leases.
//! They reach the apiserver through the suite's proxy. Faults stop them by their own pid.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};
use podlife::crd::PodLifecycle;

pub const LEASE: &str = "podlife-chaos";
/// Shards when sharded: 12 splits evenly among 2, 3 and 4 replicas.
pub const SHARDS: u32 = 12;

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
    /// With election or sharding: the namespace of the leases.
    pub lease_namespace: Option<String>,
    /// Sharded (instead of elected) with this many shards.
    pub shards: Option<u32>,
    pub replicas: Vec<Replica>,
    started: u32,
}

impl Operators {
    pub fn new(selection: Vec<String>, kubeconfig: &Path, logs: &Path) -> Operators {
        Operators {
            selection,
            kubeconfig: kubeconfig.into(),
            logs: logs.into(),
            lease_namespace: None,
            shards: None,
            replicas: Vec::new(),
            started: 0,
        }
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
            match self.shards {
                Some(n) => cmd.args(["--shards", &n.to_string()]),
                None => cmd.arg("--leader-elect"),
            };
            cmd.args(["--lease-namespace", ns, "--lease-name", LEASE, "--identity", &identity]);
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

    /// Shards held, by holder, as the shard Leases say.
    pub async fn shard_holders(&self, client: &Client) -> BTreeMap<String, usize> {
        let mut holders = BTreeMap::new();
        let Some(ns) = &self.lease_namespace else { return holders };
        let lp = ListParams::default().labels(&format!("podlife.io/lease-group={LEASE},podlife.io/lease-role=shard"));
        for lease in Api::<Lease>::namespaced(client.clone(), ns).list(&lp).await.map(|l| l.items).unwrap_or_default() {
            if let Some(holder) = lease.spec.and_then(|s| s.holder_identity).filter(|h| !h.is_empty()) {
                *holders.entry(holder).or_insert(0) += 1;
            }
        }
        holders
    }

    /// Waits until every shard is held by one of the running replicas (never by `gone`, and
    /// some by `joined`), and every pod is tracked by exactly one of them: the replicas'
    /// tracked pods add up to the pods and reports there are. The time it first held, or why
    /// not within `limit`.
    pub async fn wait_sharded(
        &self,
        client: &Client,
        namespaces: &[String],
        (gone, joined): (Option<&str>, Option<&str>),
        limit: Duration,
    ) -> Result<Timestamp, String> {
        let deadline = Instant::now() + limit;
        let shards = usize::try_from(self.shards.unwrap_or(0)).unwrap_or(0);
        let mut last = String::new();
        while Instant::now() < deadline {
            let holders = self.shard_holders(client).await;
            let ours = holders.iter().filter(|(h, _)| self.replicas.iter().any(|r| &r.identity == *h) && Some(h.as_str()) != gone);
            let held: usize = ours.map(|(_, n)| n).sum();
            let mut uids = BTreeSet::new();
            for ns in namespaces {
                let pods = Api::<Pod>::namespaced(client.clone(), ns).list_metadata(&ListParams::default()).await;
                let reports = Api::<PodLifecycle>::namespaced(client.clone(), ns).list_metadata(&ListParams::default()).await;
                uids.extend(pods.map(|l| l.items).unwrap_or_default().into_iter().filter_map(|p| p.metadata.uid));
                uids.extend(reports.map(|l| l.items).unwrap_or_default().into_iter().filter_map(|r| r.metadata.name));
            }
            let mut tracked = 0.0;
            for r in &self.replicas {
                tracked += r
                    .metrics()
                    .await
                    .lines()
                    .filter(|l| l.starts_with("podlife_tracked_pods "))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum::<f64>();
            }
            let newcomer_holds = joined.is_none_or(|j| holders.contains_key(j));
            if held == shards && newcomer_holds && tracked == uids.len() as f64 {
                return Ok(Timestamp::now());
            }
            last = format!("shards held by running replicas {held} of {shards} ({holders:?}); pods tracked {tracked} of {}", uids.len());
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(format!("not sharded within {} s: {last}", limit.as_secs()))
    }
}
