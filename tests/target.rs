//! Integration tests: the real podlife-target binary, run locally on loopback, checked on every
//! endpoint, transport and exit mode. No cluster needed.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_podlife-target");

struct Target {
    child: Option<Child>,
    probe: u16,
    control: u16,
    grpc: u16,
    tcp: [u16; 3],
    dir: tempfile::TempDir,
}

/// Seven distinct free ports: all held until every one is picked, so none repeats.
///
/// A target told to leave its probe ports unbound for a while gets them from below the kernel's
/// ephemeral range (32768-60999 by default), where every other test's `:0` pick comes from:
/// otherwise another test can pick and hold that port during the window, and the late bind fails.
fn free_ports(outside_ephemeral_range: bool) -> [u16; 7] {
    let mut held: Vec<std::net::TcpListener> = Vec::new();
    let mut low = 20_000 + (std::process::id() % 1000) as u16 * 10;
    while held.len() < 7 {
        let addr = if outside_ephemeral_range && held.len() != 1 {
            low += 1;
            assert!(low < 32_000, "no free port below the ephemeral range");
            format!("127.0.0.1:{low}")
        } else {
            "127.0.0.1:0".to_string()
        };
        if let Ok(listener) = std::net::TcpListener::bind(addr) {
            held.push(listener);
        }
    }
    std::array::from_fn(|i| held[i].local_addr().unwrap().port())
}

impl Target {
    fn start(args: &[&str]) -> Target {
        Self::start_in(tempfile::tempdir().unwrap(), args)
    }

    fn start_in(dir: tempfile::TempDir, args: &[&str]) -> Target {
        // Another test may take a port between its pick and the target's bind; the target then
        // exits at start, and new ports are picked.
        let not_listening_at_first = args.iter().any(|a| a.starts_with("--not-listening"));
        for attempt in 1..=3 {
            let [probe, control, grpc, t0, t1, t2, _] = free_ports(not_listening_at_first);
            let tcp = [t0, t1, t2];
            let mut child = Command::new(BIN)
                .args(["--listen", "127.0.0.1", "--log-format", "text"])
                .args(["--probe-port", &probe.to_string(), "--control-port", &control.to_string()])
                .args(["--grpc-port", &grpc.to_string()])
                .args(["--tcp-ports", &format!("{},{},{}", tcp[0], tcp[1], tcp[2])])
                .args(["--termination-log", dir.path().join("termination-log").to_str().unwrap()])
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start podlife-target");
            let started = Instant::now();
            while std::net::TcpStream::connect(("127.0.0.1", control)).is_err() {
                if let Ok(Some(status)) = child.try_wait() {
                    let mut err = String::new();
                    let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
                    assert!(attempt < 3, "podlife-target exited at start ({status}): {err}");
                    break;
                }
                assert!(started.elapsed() < Duration::from_secs(10), "control port {control} not listening after 10 s");
                std::thread::sleep(Duration::from_millis(10));
            }
            if child.try_wait().ok().flatten().is_some() {
                continue;
            }
            let t = Target { child: Some(child), probe, control, grpc, tcp, dir };
            // The probe port binds separately: on a loaded machine it can come a little later
            // (unless it is told to stay closed for a while).
            if !not_listening_at_first {
                t.wait_listening(t.probe, Duration::from_secs(10));
            }
            return t;
        }
        unreachable!("the last attempt either returns or fails its assertion")
    }

    fn wait_listening(&self, port: u16, limit: Duration) {
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < limit, "port {port} not listening after {limit:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn url(&self, port: u16, path: &str) -> String {
        format!("http://127.0.0.1:{port}{path}")
    }

    async fn probe(&self, path: &str) -> u16 {
        reqwest::get(self.url(self.probe, path)).await.map(|r| r.status().as_u16()).unwrap_or(0)
    }

    async fn control(&self, method: reqwest::Method, path: &str, body: &str) -> (u16, String) {
        let r = reqwest::Client::new().request(method, self.url(self.control, path)).body(body.to_string()).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn hits(&self) -> Value {
        serde_json::from_str(&self.control(reqwest::Method::GET, "/hits", "").await.1).unwrap()
    }

    fn exec(&self, what: &str, kind: &str) -> i32 {
        Command::new(BIN).args([what, kind, "--control-port", &self.control.to_string()]).status().unwrap().code().unwrap_or(-1)
    }

    fn wait_exit(&mut self, limit: Duration) -> (ExitStatus, String) {
        let child = self.child.as_mut().unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let mut stderr = String::new();
                child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
                self.child = None;
                return (status, stderr);
            }
            assert!(start.elapsed() < limit, "target did not exit within {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn termination_message(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("termination-log")).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        assert!(Command::new("kill").args(["-s", sig, &pid]).status().unwrap().success());
    }

    fn alive(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn tcp_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500)).is_ok()
}

#[tokio::test]
async fn http_probes_follow_their_own_scripts() {
    let t = Target::start(&["--liveness", "ok 2 times, then fail 500", "--readiness", "fail for 300ms, then ok", "--startup", "fail 404"]);
    assert_eq!(t.probe("/healthz").await, 200);
    assert_eq!(t.probe("/healthz").await, 200);
    assert_eq!(t.probe("/healthz").await, 500);
    assert_eq!(t.probe("/readyz").await, 503);
    assert_eq!(t.probe("/startupz").await, 404);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(t.probe("/readyz").await, 200);
    let hits = t.hits().await;
    assert_eq!(hits["counters"]["liveness"]["ok"], 2);
    assert_eq!(hits["counters"]["liveness"]["fail"], 1);
    let first = &hits["hits"][0];
    assert_eq!((first["probe"].as_str(), first["transport"].as_str()), (Some("liveness"), Some("http")));
    assert!(first["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(first["latencyMs"].is_u64());
}

#[tokio::test]
async fn scripts_change_and_reset_at_runtime_and_bad_ones_get_a_pointed_400() {
    let t = Target::start(&[]);
    let (code, body) = t.control(reqwest::Method::PUT, "/scripts/liveness", "ok for 1s, then fial").await;
    assert_eq!(code, 400);
    let err: Value = serde_json::from_str(&body).unwrap();
    assert!(err["error"].as_str().unwrap().contains("column 17 ('fial')"), "{body}");
    assert_eq!(t.control(reqwest::Method::PUT, "/scripts/bogus", "ok").await.0, 400);
    assert_eq!(t.control(reqwest::Method::PUT, "/scripts/liveness", "fail 1 time, then ok").await.0, 200);
    assert_eq!(t.probe("/healthz").await, 503);
    assert_eq!(t.probe("/healthz").await, 200);
    assert_eq!(t.control(reqwest::Method::POST, "/scripts/liveness/reset", "").await.0, 204);
    assert_eq!(t.probe("/healthz").await, 503);
    assert_eq!(t.control(reqwest::Method::DELETE, "/scripts/liveness", "").await.0, 204);
    assert_eq!(t.probe("/healthz").await, 200);
}

#[tokio::test]
async fn hang_slow_close_and_redirect_do_what_they_say() {
    let t = Target::start(&["--liveness", "hang", "--readiness", "slow 400ms", "--startup", "close 1 time, then redirect /status/418"]);
    let client = reqwest::Client::builder().timeout(Duration::from_millis(300)).build().unwrap();
    let hung = client.get(t.url(t.probe, "/healthz")).send().await;
    assert!(hung.unwrap_err().is_timeout());
    let started = Instant::now();
    assert_eq!(t.probe("/readyz").await, 200);
    assert!(started.elapsed() >= Duration::from_millis(400));
    let closed = reqwest::get(t.url(t.probe, "/startupz")).await;
    assert!(closed.is_err(), "close answers nothing: {closed:?}");
    // reqwest follows the local redirect to /status/418, as the kubelet would.
    assert_eq!(t.probe("/startupz").await, 418);
    let no_follow = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = no_follow.get(t.url(t.probe, "/startupz")).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["location"].to_str().unwrap()), (302, "/status/418"));
}

#[tokio::test]
async fn tcp_listeners_open_and_close_with_the_script_and_on_command() {
    let t = Target::start(&["--liveness", "fail for 600ms, then ok"]);
    t.wait_listening(t.tcp[1], Duration::from_secs(2));
    assert!(!tcp_open(t.tcp[0]), "liveness listener is closed while failing");
    assert!(tcp_open(t.tcp[1]) && tcp_open(t.tcp[2]));
    t.wait_listening(t.tcp[0], Duration::from_secs(2));
    assert_eq!(t.control(reqwest::Method::POST, "/tcp/readiness?state=closed", "").await.0, 204);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!tcp_open(t.tcp[1]));
    assert_eq!(t.control(reqwest::Method::POST, "/tcp/readiness?state=sideways", "").await.0, 400);
    let hits = t.hits().await;
    assert!(hits["hits"].as_array().unwrap().iter().any(|h| h["transport"] == "tcp" && h["probe"] == "readiness"));
}

#[tokio::test]
async fn grpc_health_answers_per_service() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let t = Target::start(&["--readiness", "fail"]);
    t.wait_listening(t.grpc, Duration::from_secs(2));
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", t.grpc)).unwrap().connect().await.unwrap();
    let mut client = HealthClient::new(channel);
    let check = |service: &str| HealthCheckRequest { service: service.to_string() };
    let status = |r: tonic::Response<tonic_health::pb::HealthCheckResponse>| r.into_inner().status;
    assert_eq!(status(client.check(check("liveness")).await.unwrap()), ServingStatus::Serving as i32);
    assert_eq!(status(client.check(check("readiness")).await.unwrap()), ServingStatus::NotServing as i32);
    assert_eq!(status(client.check(check("")).await.unwrap()), ServingStatus::Serving as i32);
    assert_eq!(client.check(check("nope")).await.unwrap_err().code(), tonic::Code::NotFound);
    let mut watch = client.watch(check("readiness")).await.unwrap().into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().status, ServingStatus::NotServing as i32);
    assert_eq!(t.control(reqwest::Method::PUT, "/scripts/readiness", "ok").await.0, 200);
    let next = tokio::time::timeout(Duration::from_secs(2), watch.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(next.status, ServingStatus::Serving as i32);
    assert_eq!(t.hits().await["counters"]["readiness"]["fail"], 1);
}

#[tokio::test]
async fn exec_probes_and_hooks_exit_with_the_scripted_code() {
    let t = Target::start(&["--liveness", "fail 7 1 time, then ok", "--startup", "close", "--prestop", "fail 3"]);
    assert_eq!(t.exec("probe", "liveness"), 7);
    assert_eq!(t.exec("probe", "liveness"), 0);
    assert_eq!(t.exec("probe", "startup"), 1);
    assert_eq!(t.exec("hook", "prestop"), 3);
    assert_eq!(t.exec("hook", "poststart"), 0);
    let hits = t.hits().await;
    assert_eq!(hits["counters"]["liveness"]["fail"], 1);
    let kinds: Vec<&str> = hits["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"prestop") && kinds.contains(&"poststart"), "{kinds:?}");
    // Exec hooks record their end, as HTTP ones do: "SIGTERM only after preStop ended" needs it.
    assert!(kinds.contains(&"prestop-done") && kinds.contains(&"poststart-done"), "{kinds:?}");
    // No server on that port: a clear message and exit 2, never a false success.
    let other = Command::new(BIN).args(["probe", "liveness", "--control-port", "1"]).output().unwrap();
    assert_eq!(other.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&other.stderr).contains("no server"));
}

#[tokio::test]
async fn quitquitquit_exits_with_the_code_and_a_termination_message() {
    let mut t = Target::start(&[]);
    assert_eq!(t.control(reqwest::Method::POST, "/quitquitquit?code=nope", "").await.0, 400);
    assert_eq!(t.control(reqwest::Method::POST, "/quitquitquit?code=3", "").await.0, 200);
    let (status, _) = t.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(3));
    assert_eq!(t.termination_message(), "/quitquitquit: exit code 3");
}

#[tokio::test]
async fn exit_waits_then_exits() {
    let mut t = Target::start(&[]);
    let started = Instant::now();
    assert_eq!(t.control(reqwest::Method::POST, "/exit?code=4&wait=500ms", "").await.0, 200);
    assert_eq!(t.probe("/healthz").await, 200, "still serving during the wait");
    let (status, _) = t.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(4));
    assert!(started.elapsed() >= Duration::from_millis(500));
}

#[tokio::test]
async fn kill_and_crash_die_of_the_signal() {
    let mut t = Target::start(&[]);
    assert_eq!(t.control(reqwest::Method::POST, "/kill?signal=BOGUS", "").await.0, 400);
    assert_eq!(t.control(reqwest::Method::POST, "/kill?signal=USR1", "").await.0, 200);
    let (status, _) = t.wait_exit(Duration::from_secs(5));
    assert_eq!(status.signal(), Some(10), "not PID 1 here, so a real SIGUSR1: {status:?}");
    assert!(t.termination_message().contains("signal 10"));

    let mut t = Target::start(&[]);
    assert_eq!(t.control(reqwest::Method::POST, "/crash", "").await.0, 200);
    let (status, _) = t.wait_exit(Duration::from_secs(5));
    assert_eq!(status.signal(), Some(6), "{status:?}");
}

#[tokio::test]
async fn sigterm_modes_exit_drain_and_ignore() {
    let mut t = Target::start(&[]);
    t.signal("TERM");
    assert_eq!(t.wait_exit(Duration::from_secs(5)).0.code(), Some(0));

    let mut t = Target::start(&["--sigterm", "drain:700ms"]);
    let started = Instant::now();
    t.signal("TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(t.probe("/readyz").await, 503, "readiness fails while terminating");
    assert_eq!(t.probe("/healthz").await, 200, "liveness keeps passing while terminating");
    assert_eq!(t.wait_exit(Duration::from_secs(5)).0.code(), Some(0));
    assert!(started.elapsed() >= Duration::from_millis(700));
    assert!(t.termination_message().contains("drained for 700ms"));

    let mut t = Target::start(&["--sigterm", "ignore"]);
    t.signal("TERM");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(t.alive(), "ignore means the kubelet has to SIGKILL");
    assert_eq!(t.control(reqwest::Method::PUT, "/sigterm?mode=drain:oops", "").await.0, 400);
}

#[tokio::test]
async fn boot_count_and_boot_script_survive_restarts() {
    let state = tempfile::tempdir().unwrap();
    let state_arg = state.path().to_str().unwrap().to_string();
    let args = ["--state-dir", state_arg.as_str(), "--boot", "fail 1 2 times, then ok"];
    for boot in 1..=2 {
        let dir = tempfile::tempdir().unwrap();
        let [probe, control, ..] = free_ports(false);
        let out = Command::new(BIN)
            .args(["--listen", "127.0.0.1", "--probe-port", &probe.to_string(), "--control-port", &control.to_string()])
            .args(["--grpc-port", "0", "--tcp-ports", "0,0,0"])
            .args(["--termination-log", dir.path().join("t").to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "boot {boot} fails");
        let msg = std::fs::read_to_string(dir.path().join("t")).unwrap();
        assert!(msg.contains(&format!("failed boot {boot}")), "{msg}");
    }
    let t = Target::start(&args);
    let hits = t.hits().await;
    assert_eq!(hits["boot"], 3, "third start runs");
}

#[tokio::test]
async fn probe_script_positions_survive_a_restart() {
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().to_str().unwrap().to_string();
    let args = ["--state-dir", dir.as_str(), "--liveness", "ok 2 times, then fail"];
    {
        let t = Target::start(&args);
        assert_eq!(t.probe("/healthz").await, 200);
    }
    let t = Target::start(&args);
    assert_eq!(t.probe("/healthz").await, 200, "second of two ok hits");
    assert_eq!(t.probe("/healthz").await, 503);
}

#[tokio::test]
async fn not_listening_mode_refuses_then_opens() {
    let t = Target::start(&["--not-listening-for", "800ms"]);
    assert!(!tcp_open(t.probe) && !tcp_open(t.tcp[0]), "probe ports refused during the not-listening period");
    t.wait_listening(t.probe, Duration::from_secs(3));
    assert_eq!(t.probe("/healthz").await, 200);
}

#[tokio::test]
async fn failing_mode_listens_but_fails() {
    let t = Target::start(&["--failing-for", "500ms"]);
    t.wait_listening(t.probe, Duration::from_secs(2));
    assert_eq!(t.probe("/startupz").await, 503);
    tokio::time::sleep(Duration::from_millis(550)).await;
    assert_eq!(t.probe("/startupz").await, 200);
}

#[tokio::test]
async fn the_control_api_can_require_a_token() {
    let t = Target::start(&["--control-token", "s3cret"]);
    assert_eq!(t.control(reqwest::Method::GET, "/hits", "").await.0, 401);
    let r = reqwest::Client::new().get(t.url(t.control, "/hits")).bearer_auth("s3cret").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // Through the apiserver's pod proxy, which drops Authorization, the token has its own header.
    let with = |token: &str| reqwest::Client::new().get(t.url(t.control, "/hits")).header("X-Podlife-Token", token).send();
    assert_eq!(with("s3cret").await.unwrap().status().as_u16(), 200);
    assert_eq!(with("s3creT").await.unwrap().status().as_u16(), 401);
    assert_eq!(with("s3cret-and-more").await.unwrap().status().as_u16(), 401);
    assert_eq!(t.probe("/healthz").await, 200, "probe port stays open to the kubelet");
}

#[tokio::test]
async fn metrics_count_hits_by_probe_transport_and_result() {
    let t = Target::start(&["--readiness", "fail"]);
    t.probe("/readyz").await;
    let (code, body) = t.control(reqwest::Method::GET, "/metrics", "").await;
    assert_eq!(code, 200);
    assert!(body.contains(r#"podlife_target_probe_hits_total{probe="readiness",transport="http",result="fail"} 1"#), "{body}");
    assert!(body.contains("podlife_target_boot 1"));
}

#[tokio::test]
async fn a_2_mib_script_is_refused_at_once_and_the_probes_stay_fast() {
    // Before: the script's tokenizer was quadratic, so a 2 MiB script held a runtime worker,
    // and the probes with it, for minutes.
    let t = Target::start(&[]);
    let huge = "ok for 1s, ".repeat(2 * 1024 * 1024 / 11);
    let put = async {
        let started = Instant::now();
        let sent = reqwest::Client::new().put(t.url(t.control, "/scripts/liveness")).body(huge.clone()).send().await;
        // The 413 comes after the first 64 KiB; the server then closes the connection, and
        // the client may see that (a reset while still sending) before it reads the answer.
        (sent.map(|r| r.status().as_u16()), started.elapsed())
    };
    let healthz = async {
        // Probes while the upload is handled; the worst answer time is what the kubelet sees.
        let mut worst = Duration::ZERO;
        for _ in 0..20 {
            let started = Instant::now();
            assert_eq!(t.probe("/healthz").await, 200);
            worst = worst.max(started.elapsed());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        worst
    };
    let ((answer, took), worst) = tokio::join!(put, healthz);
    assert!(answer.as_ref().is_err() || answer.as_ref().is_ok_and(|c| *c == 413), "{answer:?}");
    // Bounds from the issue: the answer within 1 s, probes within 200 ms (measured: a few ms).
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert!(worst < Duration::from_millis(200), "{worst:?}");
    // A body just over the limit fits the socket buffers: the 413 is always read.
    let (code, text) = t.control(reqwest::Method::PUT, "/scripts/liveness", &"x".repeat(64 * 1024 + 1)).await;
    assert_eq!(code, 413, "{text}");
    // Just under the script limit, the body passes and the parser names the bound.
    let (code, text) = t.control(reqwest::Method::PUT, "/scripts/liveness", &"ok for 1s, ".repeat(2000)).await;
    assert_eq!(code, 400);
    assert!(text.contains("at most 16 KiB"), "{text}");
}

#[tokio::test]
async fn faults_are_bounded_one_memory_fault_and_16_threads() {
    // Before: /fault/memory without limitMib grew until the OOM killer, and every call started
    // more threads.
    let t = Target::start(&[]);
    let (code, text) = t.control(reqwest::Method::POST, "/fault/memory?mibPerSec=1", "").await;
    assert_eq!(code, 202, "{text}");
    let limit: Value = serde_json::from_str(&text).unwrap();
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok().and_then(|m| m.trim().parse::<u64>().ok());
    let expected = cgroup.map_or(512, |bytes| (bytes >> 20) + 64);
    assert_eq!(limit["limitMib"], expected, "the container's limit + 64 MiB, or 512 MiB without one");
    let (code, text) = t.control(reqwest::Method::POST, "/fault/memory?mibPerSec=1&limitMib=2", "").await;
    assert_eq!(code, 409, "{text}");
    let (code, _) = t.control(reqwest::Method::POST, "/fault/memory?mibPerSec=1&limitMib=70000", "").await;
    assert_eq!(code, 400);
    // The memory fault holds one of the 16 thread places. Burners are few and short: this
    // test shares 2 cores with the others.
    let (code, text) = t.control(reqwest::Method::POST, "/fault/cpu?threads=16&seconds=1", "").await;
    assert_eq!(code, 409, "{text}");
    assert!(text.contains("at most 16"), "{text}");
    let (code, _) = t.control(reqwest::Method::POST, "/fault/cpu?threads=17&seconds=1", "").await;
    assert_eq!(code, 400);
    let (code, _) = t.control(reqwest::Method::POST, "/fault/cpu?threads=2&seconds=1", "").await;
    assert_eq!(code, 202);
    let (code, _) = t.control(reqwest::Method::POST, "/fault/cpu?threads=14&seconds=1", "").await;
    assert_eq!(code, 409, "2 burning + 1 memory + 14 > 16");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (code, _) = t.control(reqwest::Method::POST, "/fault/cpu?threads=14&seconds=1", "").await;
    assert_eq!(code, 202, "ended burners give their places back");
    assert_eq!(t.probe("/healthz").await, 200);
}

#[tokio::test]
async fn the_exec_socket_reads_one_short_line_only() {
    // Before: a request line was read with no size bound.
    use std::io::{BufRead, Write};
    use std::os::linux::net::SocketAddrExt;
    let t = Target::start(&[]);
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(format!("podlife-target.{}", t.control).as_bytes()).unwrap();
    let mut stream = std::os::unix::net::UnixStream::connect_addr(&addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // Far more than fits the bound, with no newline: answered without waiting for the end.
    let _ = stream.write_all(&vec![b'x'; 1 << 20]);
    let mut answer = String::new();
    std::io::BufReader::new(stream).read_line(&mut answer).unwrap();
    assert!(answer.starts_with("error expected one request line of at most 64 bytes"), "{answer}");
    assert_eq!(t.exec("probe", "liveness"), 0, "still answering");
}

#[tokio::test]
async fn a_hanging_exec_answer_ends_when_its_caller_leaves() {
    // Before: a `hang` answer awaited forever, so every timed-out exec probe left a task behind.
    let t = Target::start(&["--liveness", "hang"]);
    let in_flight = || async {
        let (_, body) = t.control(reqwest::Method::GET, "/metrics", "").await;
        body.lines().find_map(|l| l.strip_prefix("podlife_target_exec_in_flight ")).map(|v| v.trim().to_string())
    };
    let mut caller = Command::new(BIN).args(["probe", "liveness", "--control-port", &t.control.to_string()]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while in_flight().await.as_deref() != Some("1") {
        assert!(Instant::now() < deadline, "the hanging request is counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // As the kubelet does at the probe's timeout: the caller goes away.
    caller.kill().unwrap();
    caller.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while in_flight().await.as_deref() != Some("0") {
        assert!(Instant::now() < deadline, "the answer ends once its caller has left: {:?}", in_flight().await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn nonsense_requests_never_crash_the_server() {
    let t = Target::start(&[]);
    for (method, path, body) in [
        (reqwest::Method::PUT, "/scripts/liveness", "\u{0}\u{ffff}"),
        (reqwest::Method::PUT, "/hooks/prestop", "slow"),
        (reqwest::Method::PUT, "/hooks/neither", "ok"),
        (reqwest::Method::POST, "/fault/memory?mibPerSec=0", ""),
        (reqwest::Method::POST, "/fault/cpu?threads=x", ""),
        (reqwest::Method::POST, "/exit?wait=forever", ""),
        (reqwest::Method::GET, "/hits?since=-1", ""),
        (reqwest::Method::PUT, "/sigterm?ready=maybe", ""),
    ] {
        let (code, text) = t.control(method.clone(), path, body).await;
        assert!((400..500).contains(&code), "{method} {path} -> {code} {text}");
    }
    assert_eq!(t.probe("/healthz").await, 200);
}

#[test]
fn help_explains_the_script_grammar_and_env() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(help.contains("ok for 20s, then fail 3 times, then ok") && help.contains("PODLIFE_LIVENESS"), "{help}");
    let bad = Command::new(BIN).args(["--liveness", "ok for ever"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("column 8"));
}

#[tokio::test]
async fn exit_after_finishes_on_its_own_with_the_given_code() {
    let started = Instant::now();
    let mut t = Target::start(&["--exit-after", "600ms:3"]);
    assert_eq!(t.probe("/healthz").await, 200, "serves until then");
    let (status, _) = t.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(3));
    assert!(started.elapsed() >= Duration::from_millis(600), "not before the time: {:?}", started.elapsed());
    let message = t.termination_message();
    assert!(message.contains("exit-after"), "termination message says why: {message}");
    let bad = Command::new(BIN).args(["--exit-after", "3s:999"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not an exit code"), "{}", String::from_utf8_lossy(&bad.stderr));
}
