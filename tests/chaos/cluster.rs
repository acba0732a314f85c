//! The local cluster's components, reached only through what the suite itself started:
//! `podlife-cluster restart` stops a component by its recorded pid; etcd is compacted through
//! its own client port on loopback, with the cluster's etcd client certificate (curl, since
//! etcd accepts only clients with a certificate from the cluster's CA).

use std::process::Command;

use jiff::Timestamp;

pub const CLUSTER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/e2e/cluster/podlife-cluster");
const ETCD: &str = "https://127.0.0.1:2379";

/// Restarts one component (SIGKILL, then start) and returns when it answered again.
pub fn restart(component: &str, extra: &[&str]) -> Result<Timestamp, String> {
    let out = Command::new(CLUSTER).arg("restart").arg(component).args(extra).output().map_err(|e| format!("{CLUSTER}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("restart {component} failed: {}{}", stdout, String::from_utf8_lossy(&out.stderr)));
    }
    let healthy = stdout
        .split_whitespace()
        .find_map(|w| w.strip_prefix("healthy_at="))
        .and_then(|ms| ms.parse::<i64>().ok())
        .ok_or_else(|| format!("restart {component}: no healthy_at in {stdout:?}"))?;
    Timestamp::from_millisecond(healthy).map_err(|e| e.to_string())
}

/// The local cluster's state: its apiserver's extra flags, and whether it is ours at all.
pub fn apiserver_args() -> Result<String, String> {
    let dir = std::env::var("PODLIFE_STATE_DIR").unwrap_or_else(|_| "/var/lib/podlife-cluster".into());
    if std::path::Path::new(&dir).join("external-context").exists() {
        return Err(
            "the chaos suite restarts cluster components, so it needs the local cluster (podlife-cluster up), not an adopted context"
                .into(),
        );
    }
    std::fs::read_to_string(format!("{dir}/apiserver.args"))
        .map(|s| s.trim().to_string())
        .map_err(|e| format!("{dir}/apiserver.args: {e} (is the local cluster up?)"))
}

/// Compacts etcd's history up to its current revision: any watch that resumes from an older
/// resourceVersion is then refused with 410 Gone (for resources the apiserver serves from
/// etcd, not from its watch cache).
pub async fn compact_etcd() -> Result<u64, String> {
    let range = etcd_call("/v3/kv/range", &serde_json::json!({"key": "Y2hhb3M="}), 5).await?;
    let revision: u64 = range["header"]["revision"].as_str().and_then(|r| r.parse().ok()).ok_or("etcd gave no revision")?;
    etcd_call("/v3/kv/compaction", &serde_json::json!({"revision": revision.to_string(), "physical": true}), 10)
        .await
        .map_err(|e| format!("compaction at {revision}: {e}"))?;
    Ok(revision)
}

/// POSTs `body` to etcd's JSON gateway at `path` with the cluster's etcd client certificate
/// (`PODLIFE_ETCD_CLIENT`, from `podlife-cluster env`).
async fn etcd_call(path: &str, body: &serde_json::Value, seconds: u64) -> Result<serde_json::Value, String> {
    let pki = std::env::var("PODLIFE_ETCD_CLIENT").map_err(|_| "PODLIFE_ETCD_CLIENT is not set (eval \"$(podlife-cluster env)\")")?;
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--fail", "--max-time", &seconds.to_string()])
        .args([
            "--cacert",
            &format!("{pki}/ca.crt"),
            "--cert",
            &format!("{pki}/etcd-client.crt"),
            "--key",
            &format!("{pki}/etcd-client.key"),
        ])
        .args(["-H", "Content-Type: application/json", "-d", &body.to_string(), &format!("{ETCD}{path}")])
        .output()
        .await
        .map_err(|e| format!("curl: {e}"))?;
    if !out.status.success() {
        return Err(format!("{path}: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{path}: {e}"))
}

/// A copy of the admin kubeconfig whose server is `server` (the proxy): the apiserver's
/// certificate names 127.0.0.1, so TLS still verifies.
pub fn kubeconfig_via(server: &str, dir: &std::path::Path) -> Result<std::path::PathBuf, String> {
    let path = std::env::var("KUBECONFIG").map_err(|_| "KUBECONFIG is not set: eval \"$(e2e/cluster/podlife-cluster env)\"")?;
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let rewritten: String = text
        .lines()
        .map(|l| if l.trim_start().starts_with("server:") { format!("    server: {server}") } else { l.to_string() })
        .collect::<Vec<_>>()
        .join("\n");
    let out = dir.join("kubeconfig-via-proxy");
    std::fs::write(&out, rewritten).map_err(|e| e.to_string())?;
    Ok(out)
}

/// The apiserver's address from the admin kubeconfig.
pub fn apiserver_addr() -> Result<std::net::SocketAddr, String> {
    let path = std::env::var("KUBECONFIG").map_err(|_| "KUBECONFIG is not set".to_string())?;
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let server = text.lines().find_map(|l| l.trim().strip_prefix("server:")).ok_or("no server in kubeconfig")?.trim();
    server.trim_start_matches("https://").parse().map_err(|e| format!("server {server}: {e}"))
}
