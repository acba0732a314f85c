//! Shell completion. `kubectl-podlife completion bash|zsh|fish` prints a script that asks the
//! binary for candidates as you type (clap_complete's dynamic engine), so pod and experiment
//! names come from the cluster. `kubectl podlife <TAB>` works through kubectl's plugin
//! completion: kubectl runs `kubectl_complete-podlife`, which calls `kubectl-podlife
//! __complete ARGS`, answered here in cobra's format (candidates, then `:DIRECTIVE`).

use std::ffi::OsStr;
use std::time::Duration;

use clap_complete::engine::CompletionCandidate;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use crate::crd::{PodLifecycle, ProbeExperiment};

/// Runs a cluster lookup for a completion: at most 2 s, and nothing at all on any error
/// (a completion must never print an error into the command line).
fn lookup<T: Default>(f: impl AsyncFnOnce(kube::Client, String) -> T) -> T {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return T::default() };
    runtime.block_on(async {
        let work = async {
            // A value completer sees only its word; `flags_for_completion` put the line's
            // --kubeconfig, --context and -n where it can see them.
            let args = super::connect::ConnectArgs {
                kubeconfig: std::env::var_os("PODLIFE_COMPLETE_KUBECONFIG").map(Into::into),
                context: std::env::var("PODLIFE_COMPLETE_CONTEXT").ok(),
                namespace: std::env::var("PODLIFE_COMPLETE_NAMESPACE").or_else(|_| std::env::var("PODLIFE_NAMESPACE")).ok(),
            };
            let Ok(connection) = args.connect().await else { return T::default() };
            f(connection.client, connection.namespace).await
        };
        tokio::time::timeout(Duration::from_secs(2), work).await.unwrap_or_default()
    })
}

fn matching(names: Vec<String>, current: &OsStr) -> Vec<CompletionCandidate> {
    let prefix = current.to_string_lossy();
    let mut names: Vec<String> = names.into_iter().filter(|n| n.starts_with(prefix.as_ref())).collect();
    names.sort();
    names.dedup();
    names.into_iter().map(CompletionCandidate::new).collect()
}

/// Pods that have a report in the current namespace.
#[must_use]
pub fn report_pods(current: &OsStr) -> Vec<CompletionCandidate> {
    let names = lookup(async |client, ns| {
        let api: Api<PodLifecycle> = Api::namespaced(client, &ns);
        api.list(&ListParams::default()).await.map(|l| l.items.into_iter().map(|r| r.spec.pod_name).collect()).unwrap_or_default()
    });
    matching(names, current)
}

/// ProbeExperiments in the current namespace.
#[must_use]
pub fn experiments(current: &OsStr) -> Vec<CompletionCandidate> {
    let names = lookup(async |client, ns| {
        let api: Api<ProbeExperiment> = Api::namespaced(client, &ns);
        api.list(&ListParams::default()).await.map(|l| l.items.iter().map(ResourceExt::name_any).collect()).unwrap_or_default()
    });
    matching(names, current)
}

/// The connection flags typed on a command line being completed (`--kubeconfig`, `--context`,
/// `-n/--namespace`, in either `--flag value` or `--flag=value` form), as the environment
/// variables the completers read.
#[must_use]
pub fn flags_for_completion(words: &[String]) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for (i, word) in words.iter().enumerate() {
        for (flag, var) in [
            ("--kubeconfig", "PODLIFE_COMPLETE_KUBECONFIG"),
            ("--context", "PODLIFE_COMPLETE_CONTEXT"),
            ("--namespace", "PODLIFE_COMPLETE_NAMESPACE"),
            ("-n", "PODLIFE_COMPLETE_NAMESPACE"),
        ] {
            if word == flag
                && let Some(value) = words.get(i + 1)
            {
                out.push((var, value.clone()));
            } else if let Some(value) = word.strip_prefix(&format!("{flag}=")) {
                out.push((var, value.to_string()));
            }
        }
    }
    out
}

/// The answer to `kubectl-podlife __complete ARGS...` for kubectl's plugin completion: one
/// candidate per line (value, tab, help), then `:4` (no file completion) when there are
/// candidates, `:0` (the shell's default, files) when there are none.
#[must_use]
pub fn cobra(mut cmd: clap::Command, args: &[String]) -> String {
    let name = cmd.get_name().to_string();
    let mut words: Vec<std::ffi::OsString> = vec![name.into()];
    words.extend(args.iter().map(Into::into));
    if args.is_empty() {
        words.push("".into());
    }
    let index = words.len() - 1;
    let candidates = clap_complete::engine::complete(&mut cmd, words, index, std::env::current_dir().ok().as_deref()).unwrap_or_default();
    let mut out = String::new();
    for c in candidates.iter().filter(|c| !c.is_hide_set()) {
        out.push_str(&c.get_value().to_string_lossy());
        if let Some(help) = c.get_help() {
            out.push('\t');
            out.push_str(help.to_string().lines().next().unwrap_or_default());
        }
        out.push('\n');
    }
    out.push_str(if candidates.is_empty() { ":0\n" } else { ":4\n" });
    out
}

/// The completion script for `shell`, as `COMPLETE=SHELL kubectl-podlife` prints it.
///
/// # Errors
/// The binary cannot be run again, or the shell is not supported.
pub fn script(shell: &str) -> Result<String, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = std::process::Command::new(me).env("COMPLETE", shell).output().map_err(|e| e.to_string())?;
    if !out.status.success() || out.stdout.is_empty() {
        return Err(format!("no completion for shell {shell}: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    String::from_utf8(out.stdout).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli() -> clap::Command {
        clap::Command::new("kubectl-podlife")
            .subcommand(clap::Command::new("report").about("A pod's timeline").arg(clap::Arg::new("pod")))
            .subcommand(clap::Command::new("run").about("Run experiments"))
    }

    #[test]
    fn the_lines_connection_flags_reach_the_completers() {
        let words: Vec<String> = ["show", "--context", "prod", "-n=team", "--kubeconfig=/k"].iter().map(ToString::to_string).collect();
        assert_eq!(
            flags_for_completion(&words),
            [
                ("PODLIFE_COMPLETE_CONTEXT", "prod".to_string()),
                ("PODLIFE_COMPLETE_NAMESPACE", "team".to_string()),
                ("PODLIFE_COMPLETE_KUBECONFIG", "/k".to_string())
            ]
        );
    }

    #[test]
    fn cobra_lists_subcommands_with_their_help_then_the_directive() {
        let out = cobra(cli(), &["re".to_string()]);
        assert_eq!(out, "report\tA pod's timeline\n:4\n");
        let all = cobra(cli(), &[]);
        assert!(all.contains("report\t") && all.contains("run\t") && all.ends_with(":4\n"), "{all}");
        assert!(cobra(cli(), &["zzz".to_string()]).ends_with(":0\n"), "no candidates: let the shell complete files");
    }
}
