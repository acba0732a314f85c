//! The operator binary run locally, before it reaches any cluster: it refuses sharding
//! settings it could not run safely (exit code 2 and a message that names the problem), and it
//! starts without transparent huge pages.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

/// The operator with `args`, outside any pod and leader election, reaching for `kubeconfig`.
fn operator_command(args: &[&str], kubeconfig: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_podlife-operator"));
    command.args(args).env_remove("POD_NAME").env_remove("PODLIFE_LEADER_ELECT").env("KUBECONFIG", kubeconfig);
    command
}

fn operator(args: &[&str]) -> (Option<i32>, String) {
    let out = operator_command(args, "/nonexistent/podlife-test-kubeconfig".as_ref()).output().expect("run podlife-operator");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_sharding_settings_are_refused_before_any_cluster_call() {
    // Defects each line catches: a sharded replica without an identity (all replicas would
    // share one member Lease); sharding next to leader election or experiments (two ways of
    // deciding who writes); a shard count of 0 (no shard to hold, nothing recorded).
    let cases: [(&[&str], &str); 4] = [
        (&["--shards", "12"], "--identity"),
        (&["--shards", "12", "--identity", "a", "--leader-elect"], "--leader-elect"),
        (&["--shards", "12", "--identity", "a", "--experiments"], "--experiments"),
        (&["--shards", "0", "--identity", "a"], "0 is not in 1..=1024"),
    ];
    for (args, says) in cases {
        let (code, stderr) = operator(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?} should mention {says}: {stderr}");
    }
}

#[test]
fn the_operator_runs_without_transparent_huge_pages_from_its_first_allocation() {
    // Defects this catches: the operator leaving huge pages on (an idle operator then held
    // 6 MiB of them, see src/bin/podlife-operator.rs), or switching them off only in `main`,
    // after the allocator's constructor had already faulted in 4 MiB of them.
    // An apiserver that accepts and never answers keeps the operator alive, in `main`.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let kubeconfig = std::env::temp_dir().join(format!("podlife-thp-{}.kubeconfig", std::process::id()));
    let mut file = std::fs::File::create(&kubeconfig).unwrap();
    write!(
        file,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: 'https://{}', insecure-skip-tls-verify: true}}\n\
         users:\n- name: u\n  user: {{token: t}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n",
        silent.local_addr().unwrap()
    )
    .unwrap();
    // Kills the operator and removes its kubeconfig however the test ends.
    struct Running(std::process::Child, std::path::PathBuf);
    impl Drop for Running {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
            let _ = std::fs::remove_file(&self.1);
        }
    }
    let child = operator_command(&["--namespaces", "thp", "--listen", "127.0.0.1:0"], &kubeconfig)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run podlife-operator");
    let operator = Running(child, kubeconfig);
    // Its first request means it is in `main`, past every constructor.
    silent.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let _connection = loop {
        match silent.accept() {
            Ok((c, _)) => break c,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("the operator never called the apiserver: {e}"),
        }
    };
    let proc_file = |name: &str| std::fs::read_to_string(format!("/proc/{}/{name}", operator.0.id())).unwrap();
    let status = proc_file("status");
    let rollup = proc_file("smaps_rollup");
    drop(operator);
    assert!(status.lines().any(|l| l.split_whitespace().eq(["THP_enabled:", "0"])), "{status}");
    let huge = rollup.lines().find(|l| l.starts_with("AnonHugePages:")).expect("smaps_rollup lists AnonHugePages");
    assert_eq!(huge.split_whitespace().nth(1), Some("0"), "huge pages faulted in before they were switched off: {huge}");
}

#[test]
fn a_wakeup_pause_longer_than_100ms_or_not_a_duration_is_refused_and_0_is_not() {
    // Defects caught: a parser that takes any pause (a 1 s pause would hold every report write
    // a second longer), one that takes nonsense as the default, and one that refuses 0, the
    // documented way to turn the pause off.
    let refused = [("101ms", "longer than 100ms"), ("1s", "longer than 100ms"), ("soon", "not a duration"), ("0ss", "not a duration")];
    for (value, says) in refused {
        let (code, stderr) = operator(&["--coalesce-wakeups", value]);
        assert_eq!(code, Some(2), "--coalesce-wakeups {value}: {stderr}");
        assert!(stderr.contains(says), "--coalesce-wakeups {value} should say {says}: {stderr}");
    }
    for value in ["0", "0ms", "10ms", "100ms"] {
        let (code, stderr) = operator(&["--coalesce-wakeups", value]);
        // Accepted: the operator goes on and fails later, on the missing kubeconfig.
        assert_ne!(code, Some(2), "--coalesce-wakeups {value} should be accepted: {stderr}");
        assert!(stderr.contains("kubeconfig"), "--coalesce-wakeups {value} should get as far as the cluster: {stderr}");
    }
}
