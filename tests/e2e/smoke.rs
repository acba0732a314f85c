//! The smoke test: proves the cluster's kubelet is real by making it do what only a kubelet does.

use std::time::Duration;

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::conditions::is_pod_running;
use kube::runtime::{WatchStreamExt, watcher};

use crate::support::{target_pod, with_namespace};

/// Image already on the node, so start-up is seconds; 60 s leaves room for a busy 2-core CI box.
const START_LIMIT: Duration = Duration::from_secs(60);

fn condition_status(pod: &Pod, kind: &str) -> Option<String> {
    pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == kind).map(|c| c.status.clone())
}

fn is_ready(pod: Option<&Pod>) -> bool {
    pod.is_some_and(|p| condition_status(p, "Ready").as_deref() == Some("True"))
}

#[tokio::test]
async fn a_pod_goes_pending_to_running_with_every_condition_true() {
    with_namespace("smoke_running", |ns| async move {
        // Watch before creating, so the Pending phase cannot be missed.
        let cfg = watcher::Config::default().fields("metadata.name=smoke");
        let mut phases = Box::pin(watcher(ns.pods(), cfg).applied_objects().map_ok(|p: Pod| p.status.and_then(|s| s.phase)));
        ns.create_pod(target_pod("smoke", "Always", &[])).await;
        let mut seen: Vec<String> = Vec::new();
        tokio::time::timeout(START_LIMIT, async {
            while let Some(phase) = phases.try_next().await.expect("watch pods") {
                if let Some(p) = phase
                    && seen.last() != Some(&p)
                {
                    seen.push(p.clone());
                }
                if seen.last().map(String::as_str) == Some("Running") {
                    break;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("pod never reached Running; phases seen: {seen:?}"));
        assert_eq!(seen, ["Pending", "Running"], "phase sequence");
        let pod = ns.wait_pod("smoke", "Ready", START_LIMIT, |p: Option<&Pod>| is_ready(p)).await;
        for kind in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
            assert_eq!(condition_status(&pod, kind).as_deref(), Some("True"), "condition {kind}");
        }
        // The kubelet, not anything else, ran our readiness probe: the target saw its hits.
        let hits: serde_json::Value = serde_json::from_str(&ns.target_call("smoke", 9090, "GET", "/hits").await).unwrap();
        let ua = hits["hits"][0]["userAgent"].as_str().unwrap_or_default();
        assert!(ua.starts_with("kube-probe/1."), "first probe hit came from {ua:?}");
    })
    .await;
}

#[tokio::test]
async fn the_kubelet_restarts_a_killed_container() {
    with_namespace("smoke_restart", |ns| async move {
        ns.create_pod(target_pod("victim", "Always", &[])).await;
        ns.wait_pod("victim", "Ready", START_LIMIT, |p: Option<&Pod>| is_ready(p)).await;
        ns.target_call("victim", 9090, "POST", "/kill?signal=KILL").await;
        let restarted = |p: Option<&Pod>| {
            p.and_then(|p| p.status.as_ref()?.container_statuses.as_ref()?.first().cloned())
                // lastState may follow the restarted run in a later status (seen under load).
                .is_some_and(|c| c.restart_count >= 1 && c.ready && c.last_state.as_ref().is_some_and(|s| s.terminated.is_some()))
        };
        // First restart after a crash is immediate, then readiness (period 1 s) must pass.
        let pod = ns.wait_pod("victim", "restart and Ready again", START_LIMIT, restarted).await;
        let status = &pod.status.unwrap().container_statuses.unwrap()[0];
        assert_eq!(status.restart_count, 1);
        let last = status.last_state.as_ref().and_then(|s| s.terminated.as_ref()).expect("lastState.terminated is filled in");
        assert_eq!(last.exit_code, 137, "SIGKILL shows as 128+9");
        assert!(last.finished_at.is_some() && last.started_at.is_some());
        let message = last.message.as_deref().unwrap_or_default();
        assert!(message.contains("signal 9"), "termination message: {message:?}");
    })
    .await;
}

#[tokio::test]
async fn exit_zero_under_restart_policy_never_ends_succeeded() {
    with_namespace("smoke_succeeded", |ns| async move {
        ns.create_pod(target_pod("oneshot", "Never", &[])).await;
        ns.wait_pod("oneshot", "Running", START_LIMIT, is_pod_running()).await;
        ns.wait_pod("oneshot", "Ready", START_LIMIT, |p: Option<&Pod>| is_ready(p)).await;
        ns.target_call("oneshot", 9090, "POST", "/quitquitquit").await;
        let done = |p: Option<&Pod>| p.and_then(|p| p.status.as_ref()?.phase.clone()).is_some_and(|ph| ph == "Succeeded" || ph == "Failed");
        let pod = ns.wait_pod("oneshot", "a terminal phase", START_LIMIT, done).await;
        let status = pod.status.unwrap();
        assert_eq!(status.phase.as_deref(), Some("Succeeded"));
        let term = status.container_statuses.unwrap()[0].state.as_ref().unwrap().terminated.clone().unwrap();
        assert_eq!((term.exit_code, term.reason.as_deref()), (0, Some("Completed")));
    })
    .await;
}

/// `curl` against etcd's client port with `extra` flags; whether it answered healthy.
fn etcd_answers(url: &str, extra: &[&str]) -> bool {
    let out = std::process::Command::new("curl").args(["-sS", "--fail", "--max-time", "5"]).args(extra).arg(url).output().unwrap();
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("\"health\":\"true\"")
}

#[tokio::test]
async fn the_local_clusters_etcd_serves_only_certified_clients_on_loopback() {
    // Before: etcd served plain HTTP to anyone on this machine, so any local process could
    // read or rewrite the whole cluster, and keys were as readable as the umask made them.
    let state = std::env::var("PODLIFE_STATE_DIR").unwrap_or_else(|_| "/var/lib/podlife-cluster".into());
    assert!(
        !std::path::Path::new(&state).join("external-context").exists(),
        "this test checks the local cluster that e2e/test brings up; with --context it is not run by e2e/test"
    );
    let pki = std::env::var("PODLIFE_ETCD_CLIENT").expect("PODLIFE_ETCD_CLIENT from podlife-cluster env");
    let (ca, cert, key) = (format!("{pki}/ca.crt"), format!("{pki}/etcd-client.crt"), format!("{pki}/etcd-client.key"));
    let url = "https://127.0.0.1:2379/health";
    assert!(etcd_answers(url, &["--cacert", &ca, "--cert", &cert, "--key", &key]), "a client with the cluster's certificate is served");
    assert!(!etcd_answers(url, &["--cacert", &ca]), "a client without a certificate is refused");
    assert!(!etcd_answers("http://127.0.0.1:2379/health", &[]), "no plain HTTP");
    // Not on the host's address (the node's InternalIP): only loopback.
    let client = kube::Client::try_default().await.unwrap();
    let nodes = kube::Api::<k8s_openapi::api::core::v1::Node>::all(client).list(&Default::default()).await.unwrap();
    let addresses = nodes.items[0].status.as_ref().and_then(|s| s.addresses.clone()).unwrap_or_default();
    let ip: std::net::IpAddr = addresses.iter().find(|a| a.type_ == "InternalIP").unwrap().address.parse().unwrap();
    assert!(std::net::TcpStream::connect_timeout(&(ip, 2379).into(), Duration::from_secs(2)).is_err(), "etcd listens on {ip}");
    for entry in std::fs::read_dir(&pki).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "key") {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", path.display());
        }
    }
}
