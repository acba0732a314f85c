//! podlife-target against the real kubelet: for each transport, a scripted failure must make
//! the kubelet do what it really does.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStatus, Event, Pod};
use kube::Api;
use kube::api::ListParams;
use serde_json::{Value, json};

use crate::support::{TARGET_IMAGE, TestNs, with_namespace};

/// Covers container start, a failureThreshold of probes at 1 s and the kill; generous for a
/// busy 2-core CI machine.
const LIMIT: Duration = Duration::from_secs(90);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    Http,
    Tcp,
    Grpc,
    Exec,
}

impl Transport {
    /// A failing TCP step closes the listener, so refused connections never reach the target
    /// and only the kubelet's Unhealthy events show them.
    fn target_sees_failures(self) -> bool {
        self != Transport::Tcp
    }
}

fn probe(transport: Transport, kind: &str, failure_threshold: u32) -> Value {
    let handler = match transport {
        Transport::Http => {
            let path = match kind {
                "liveness" => "/healthz",
                "readiness" => "/readyz",
                _ => "/startupz",
            };
            json!({"httpGet": {"path": path, "port": 8080}})
        }
        Transport::Tcp => {
            let port = match kind {
                "liveness" => 8081,
                "readiness" => 8082,
                _ => 8083,
            };
            json!({"tcpSocket": {"port": port}})
        }
        Transport::Grpc => json!({"grpc": {"port": 9000, "service": kind}}),
        Transport::Exec => json!({"exec": {"command": ["/usr/local/bin/podlife-target", "probe", kind]}}),
    };
    let mut p = handler;
    p["periodSeconds"] = json!(1);
    p["timeoutSeconds"] = json!(1);
    p["failureThreshold"] = json!(failure_threshold);
    p
}

fn pod(name: &str, args: &[&str], probes: &[(&str, Value)]) -> Value {
    let mut container = json!({
        "name": "target", "image": TARGET_IMAGE, "imagePullPolicy": "Never", "args": args,
    });
    for (field, p) in probes {
        container[*field] = p.clone();
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"terminationGracePeriodSeconds": 5, "containers": [container]}
    })
}

fn status(pod: &Pod, container: &str) -> Option<ContainerStatus> {
    pod.status.as_ref()?.container_statuses.as_ref()?.iter().find(|c| c.name == container).cloned()
}

fn restarts(pod: Option<&Pod>, container: &str) -> i32 {
    pod.and_then(|p| status(p, container)).map_or(0, |c| c.restart_count)
}

/// At least `n` restarts and the previous run's termination published. The kubelet can publish
/// the restarted run first, with lastState empty, and fill lastState in a later status (seen on
/// our v1.34 node under load, 2026-11-23), so a test waits for both.
fn restarted(pod: Option<&Pod>, container: &str, n: i32) -> bool {
    pod.and_then(|p| status(p, container))
        .is_some_and(|c| c.restart_count >= n && c.last_state.as_ref().is_some_and(|s| s.terminated.is_some()))
}

fn ready(pod: Option<&Pod>) -> bool {
    pod.and_then(|p| p.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready").cloned())
        .is_some_and(|c| c.status == "True")
}

async fn events_for(ns: &TestNs, pod: &str) -> Vec<(String, String)> {
    let events: Api<Event> = Api::namespaced(ns.client.clone(), &ns.name);
    let list = events.list(&ListParams::default().fields(&format!("involvedObject.name={pod}"))).await.expect("list events");
    list.items.into_iter().map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default())).collect()
}

async fn hits(ns: &TestNs, pod: &str) -> Value {
    serde_json::from_str(&ns.target_call(pod, 9090, "GET", "/hits").await).expect("hits JSON")
}

async fn liveness_failure_restarts(transport: Transport, test_name: &str) {
    with_namespace(test_name, |ns| async move {
        let p = pod("live", &["--liveness", "ok for 3s, then fail"], &[("livenessProbe", probe(transport, "liveness", 2))]);
        ns.create_pod(p).await;
        let pod = ns.wait_pod("live", "a liveness restart", LIMIT, |p: Option<&Pod>| restarted(p, "target", 1)).await;
        let c = status(&pod, "target").unwrap();
        let last = c.last_state.and_then(|s| s.terminated).expect("lastState.terminated after a liveness kill");
        // The kubelet stops the container with SIGTERM; the target's default is to exit 0 at once.
        assert_eq!(last.exit_code, 0, "{last:?}");
        assert!(last.message.unwrap_or_default().contains("SIGTERM"), "termination message names SIGTERM");
        let events = events_for(&ns, "live").await;
        assert!(events.iter().any(|(r, m)| r == "Unhealthy" && m.starts_with("Liveness probe failed")), "{events:?}");
        assert!(events.iter().any(|(r, m)| r == "Killing" && m.contains("failed liveness probe")), "{events:?}");
    })
    .await;
}

async fn readiness_failure_is_not_ready_without_restart(transport: Transport, test_name: &str) {
    with_namespace(test_name, |ns| async move {
        let p = pod("ready", &["--readiness", "ok for 4s, then fail"], &[("readinessProbe", probe(transport, "readiness", 1))]);
        ns.create_pod(p).await;
        ns.wait_pod("ready", "Ready", LIMIT, |p: Option<&Pod>| ready(p)).await;
        ns.wait_pod("ready", "Ready=False", LIMIT, |p: Option<&Pod>| p.is_some() && !ready(p)).await;
        // Five more failing periods must not restart anything: readiness never kills.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let pod = ns.pods().get("ready").await.unwrap();
        assert!(!ready(Some(&pod)));
        assert_eq!(restarts(Some(&pod), "target"), 0);
        let h = hits(&ns, "ready").await;
        if transport.target_sees_failures() {
            assert!(h["counters"]["readiness"]["fail"].as_u64().unwrap_or(0) >= 5, "{}", h["counters"]);
        }
        let events = events_for(&ns, "ready").await;
        assert!(events.iter().any(|(r, m)| r == "Unhealthy" && m.starts_with("Readiness probe failed")), "{events:?}");
    })
    .await;
}

async fn startup_failure_restarts_and_holds_liveness_back(transport: Transport, test_name: &str) {
    with_namespace(test_name, |ns| async move {
        let p = pod(
            "startup",
            &["--startup", "fail"],
            &[("startupProbe", probe(transport, "startup", 4)), ("livenessProbe", probe(transport, "liveness", 1))],
        );
        ns.create_pod(p).await;
        ns.wait_pod("startup", "Running", LIMIT, kube::runtime::conditions::is_pod_running()).await;
        // Until the startup probe succeeds the kubelet must not run liveness at all.
        let mut max_startup = 0;
        for _ in 0..20 {
            let pod = ns.pods().get("startup").await.unwrap();
            if restarts(Some(&pod), "target") > 0 {
                break;
            }
            if let Ok(text) = tokio::time::timeout(Duration::from_secs(2), ns.target_call("startup", 9090, "GET", "/hits")).await {
                let h: Value = serde_json::from_str(&text).unwrap_or_default();
                assert_eq!(h["counters"]["liveness"], Value::Null, "liveness probed before startup succeeded: {}", h["counters"]);
                max_startup = max_startup.max(h["counters"]["startup"]["fail"].as_u64().unwrap_or(0));
            }
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        if transport.target_sees_failures() {
            assert!(max_startup >= 1, "the target saw the startup probe fail");
        }
        ns.wait_pod("startup", "a startup-probe restart", LIMIT, |p: Option<&Pod>| restarts(p, "target") >= 1).await;
        let events = events_for(&ns, "startup").await;
        assert!(events.iter().any(|(r, m)| r == "Unhealthy" && m.starts_with("Startup probe failed")), "{events:?}");
        assert!(events.iter().any(|(r, m)| r == "Killing" && m.contains("failed startup probe")), "{events:?}");
    })
    .await;
}

macro_rules! per_transport {
    ($($t:ident: $transport:expr),*) => {$(
        mod $t {
            use super::*;
            #[tokio::test]
            async fn liveness_failure_restarts() {
                super::liveness_failure_restarts($transport, concat!(stringify!($t), "_live")).await;
            }
            #[tokio::test]
            async fn readiness_failure_is_not_ready_without_restart() {
                super::readiness_failure_is_not_ready_without_restart($transport, concat!(stringify!($t), "_ready")).await;
            }
            #[tokio::test]
            async fn startup_failure_restarts_and_holds_liveness_back() {
                super::startup_failure_restarts_and_holds_liveness_back($transport, concat!(stringify!($t), "_startup")).await;
            }
        }
    )*};
}

per_transport!(http: Transport::Http, tcp: Transport::Tcp, grpc: Transport::Grpc, exec: Transport::Exec);

#[tokio::test]
async fn quitquitquit_restarts_only_that_container() {
    with_namespace("two_containers", |ns| async move {
        let readiness = |port: u16| json!({"httpGet": {"path": "/readyz", "port": port}, "periodSeconds": 1});
        let p = json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pair"},
            "spec": {"terminationGracePeriodSeconds": 5, "containers": [
                {"name": "app", "image": TARGET_IMAGE, "imagePullPolicy": "Never", "readinessProbe": readiness(8080)},
                {"name": "envoy", "image": TARGET_IMAGE, "imagePullPolicy": "Never",
                 "args": ["--probe-port", "8180", "--control-port", "9190", "--grpc-port", "9100", "--tcp-ports", "0,0,0"],
                 "readinessProbe": readiness(8180)},
            ]}
        });
        ns.create_pod(p).await;
        ns.wait_pod("pair", "2/2 Ready", LIMIT, |p: Option<&Pod>| ready(p)).await;
        ns.target_call("pair", 9190, "POST", "/quitquitquit").await;
        let one_of_two = |p: Option<&Pod>| p.and_then(|p| status(p, "envoy")).is_some_and(|c| !c.ready);
        let pod = ns.wait_pod("pair", "1/2 ready", LIMIT, one_of_two).await;
        assert!(status(&pod, "app").unwrap().ready, "the app container stays ready");
        let pod = ns
            .wait_pod("pair", "2/2 again", LIMIT, |p: Option<&Pod>| ready(p) && restarted(p, "envoy", 1) && restarts(p, "envoy") == 1)
            .await;
        assert_eq!(restarts(Some(&pod), "app"), 0);
        let last = status(&pod, "envoy").unwrap().last_state.and_then(|s| s.terminated).unwrap();
        assert_eq!((last.exit_code, last.reason.as_deref()), (0, Some("Completed")));
    })
    .await;
}

#[tokio::test]
async fn probe_hits_arrive_every_period_seconds() {
    with_namespace("probe_period", |ns| async move {
        let p = pod("period", &[], &[("readinessProbe", json!({"httpGet": {"path": "/readyz", "port": 8080}, "periodSeconds": 2}))]);
        ns.create_pod(p).await;
        ns.wait_pod("period", "Ready", LIMIT, |p: Option<&Pod>| ready(p)).await;
        tokio::time::sleep(Duration::from_secs(13)).await;
        let h = hits(&ns, "period").await;
        let times: Vec<u64> =
            h["hits"].as_array().unwrap().iter().filter(|x| x["probe"] == "readiness").map(|x| x["atMs"].as_u64().unwrap()).collect();
        assert!(times.len() >= 6, "at least six hits in ~14 s at period 2 s: {times:?}");
        // Skip the first gap: the kubelet may probe once right after the container starts,
        // off its ticker. After that a Go ticker drives the worker; 500 ms covers scheduling
        // delays on a loaded 2-core machine.
        let gaps: Vec<i64> = times.windows(2).skip(1).map(|w| i64::try_from(w[1] - w[0]).unwrap()).collect();
        for g in &gaps {
            assert!((g - 2000).abs() <= 500, "probe gaps should be 2000±500 ms: {gaps:?}");
        }
        let ua = h["hits"][0]["userAgent"].as_str().unwrap_or_default().to_string();
        assert!(ua.starts_with("kube-probe/1.34"), "{ua}");
    })
    .await;
}

#[tokio::test]
async fn the_memory_fault_ends_in_an_oom_kill() {
    with_namespace("oom", |ns| async move {
        let mut p = pod("hog", &[], &[("readinessProbe", json!({"httpGet": {"path": "/readyz", "port": 8080}, "periodSeconds": 1}))]);
        p["spec"]["containers"][0]["resources"] = json!({"limits": {"memory": "48Mi"}, "requests": {"memory": "48Mi"}});
        ns.create_pod(p).await;
        ns.wait_pod("hog", "Ready", LIMIT, |p: Option<&Pod>| ready(p)).await;
        ns.target_call("hog", 9090, "POST", "/fault/memory?mibPerSec=64").await;
        let pod = ns.wait_pod("hog", "an OOM kill and restart", LIMIT, |p: Option<&Pod>| restarted(p, "target", 1)).await;
        let last = status(&pod, "target").unwrap().last_state.and_then(|s| s.terminated).unwrap();
        // The kernel's OOM killer sends SIGKILL; containerd reports the cgroup's OOM event.
        assert_eq!((last.reason.as_deref(), last.exit_code), (Some("OOMKilled"), 137), "{last:?}");
    })
    .await;
}
