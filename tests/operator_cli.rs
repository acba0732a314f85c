//! The operator refuses sharding settings it could not run safely before it contacts any
//! cluster, with exit code 2 and a message that names the problem.

use std::process::Command;

fn operator(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_podlife-operator"))
        .args(args)
        .env_remove("POD_NAME")
        .env_remove("PODLIFE_LEADER_ELECT")
        .env("KUBECONFIG", "/nonexistent/podlife-test-kubeconfig")
        .output()
        .expect("run podlife-operator");
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
