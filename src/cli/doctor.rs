//! `kubectl podlife doctor`: the preflight checks and more, one line each with its fix.
//!
//! Checks: the cluster answers; podlife's CRDs; what this user may do (RBAC); the operators
//! installed and the namespaces they run experiments in; the target image on a node; each
//! node's kubelet version and CrashLoopBackOff curve (from its configz, where allowed).

use std::io::Write;

use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use k8s_openapi::api::core::v1::Node;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, ResourceExt};

use super::preflight;
use crate::lifecycle::history::format_seconds;

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Could not tell, or fine with a caveat.
    Note,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub status: Status,
    pub text: String,
    pub fix: Option<String>,
}

fn check(status: Status, text: impl Into<String>) -> Check {
    Check { status, text: text.into(), fix: None }
}

/// The back-off curve a kubelet applies, from its `/configz`: the default (10 s doubling to
/// 5 min), `ReduceDefaultCrashLoopBackOffDecay` (1 s to 1 min), and a cap set through
/// `KubeletCrashLoopBackOffMax` and `crashLoopBackOff.maxContainerRestartPeriod`.
#[must_use]
pub fn backoff_of_configz(configz: &serde_json::Value) -> String {
    let config = &configz["kubeletconfig"];
    let gate = |name: &str| config["featureGates"][name].as_bool().unwrap_or(false);
    let (mut initial, mut max, mut named) = (10.0, 300.0, "default");
    if gate("ReduceDefaultCrashLoopBackOffDecay") {
        (initial, max, named) = (1.0, 60.0, "reduced-decay");
    }
    let period = config["crashLoopBackOff"]["maxContainerRestartPeriod"].as_str();
    if let Some(cap) = period.and_then(crate::lifecycle::backoff::parse_go_duration) {
        max = cap.as_secs_f64();
        named = "custom cap";
    }
    format!("{} doubling to {} ({named})", format_seconds(initial), format_seconds(max))
}

async fn allowed(client: &Client, verb: &str, group: &str, resource: &str, namespace: Option<&str>) -> Option<bool> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                namespace: namespace.map(str::to_string),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(client.clone()).create(&PostParams::default(), &review).await.ok()?;
    answer.status.map(|s| s.allowed)
}

/// Runs every check against the cluster, for `namespace`.
pub async fn checks(client: &Client, cluster: &str, namespace: &str) -> Vec<Check> {
    let mut out = Vec::new();
    match client.apiserver_version().await {
        Ok(v) => out.push(check(Status::Ok, format!("cluster {cluster} answers: Kubernetes {}", v.git_version))),
        Err(e) => {
            out.push(Check {
                status: Status::Failed,
                text: format!("cluster {cluster} does not answer: {e}"),
                fix: Some("check --context/--kubeconfig".into()),
            });
            return out;
        }
    }
    match preflight::crds(client, namespace).await {
        Ok(()) => out.push(check(Status::Ok, "podlife's CRDs are installed")),
        Err(m) => out.push(Check { status: Status::Failed, text: m.what, fix: Some(m.fix) }),
    }
    for (verb, group, resource, ns, why) in [
        ("create", "podlife.io", "probeexperiments", Some(namespace), "to run experiments"),
        ("list", "podlife.io", "podlifecycles", Some(namespace), "to read reports"),
        ("list", "", "nodes", None, "to check images and kubelets"),
        ("get", "", "nodes/proxy", None, "to read the kubelets' back-off curve"),
    ] {
        let where_ = ns.map_or("cluster-wide".to_string(), |n| format!("in {n}"));
        match allowed(client, verb, group, resource, ns).await {
            Some(true) => out.push(check(Status::Ok, format!("you may {verb} {resource} {where_}"))),
            Some(false) => out.push(Check {
                status: if resource.starts_with("nodes") { Status::Note } else { Status::Failed },
                text: format!("you may not {verb} {resource} {where_} ({why})"),
                fix: Some(format!(
                    "kubectl auth can-i {verb} {resource}{}   (ask for that permission)",
                    ns.map_or(String::new(), |n| format!(" -n {n}"))
                )),
            }),
            None => out.push(check(Status::Note, format!("cannot tell whether you may {verb} {resource} {where_}"))),
        }
    }
    let installs = preflight::installs(client).await;
    match &installs {
        None => out.push(check(Status::Note, "cannot list Deployments, so installed operators cannot be seen")),
        Some(list) if list.is_empty() => out.push(check(
            Status::Note,
            "no podlife operator Deployment found; one running outside the cluster cannot be seen (run and suite check that an operator accepts their experiments within seconds)",
        )),
        Some(list) => {
            for i in list {
                let scope = match (i.experiments, &i.namespaces) {
                    (false, _) => "experiments off".to_string(),
                    (true, None) => "experiments in every namespace".to_string(),
                    (true, Some(nss)) => format!("experiments in {}", nss.join(", ")),
                };
                let status = if i.ready { Status::Ok } else { Status::Failed };
                out.push(check(status, format!("operator {}/{} (release {}): {}, {scope}", i.namespace, i.deployment, i.release, if i.ready { "ready" } else { "not ready" })));
            }
            match preflight::coverage(list, namespace) {
                Ok(()) => out.push(check(Status::Ok, format!("experiments in {namespace} would run"))),
                Err(m) => out.push(Check { status: Status::Failed, text: m.what, fix: Some(m.fix) }),
            }
        }
    }
    let image = installs.iter().flatten().find_map(|i| i.target_image.clone()).unwrap_or_else(preflight::default_target_image);
    match preflight::image(client, &image).await {
        Ok(()) => out.push(check(Status::Ok, format!("target image {image}: on a node, pullable, or not checkable"))),
        Err(m) => out.push(Check { status: Status::Failed, text: m.what, fix: Some(m.fix) }),
    }
    if let Ok(nodes) = Api::<Node>::all(client.clone()).list(&ListParams::default()).await {
        for node in nodes.items {
            let name = node.name_any();
            let version = node.status.as_ref().and_then(|s| s.node_info.as_ref()).map_or("?".to_string(), |i| i.kubelet_version.clone());
            let req = http::Request::get(format!("/api/v1/nodes/{name}/proxy/configz")).body(Vec::new());
            let configz = match req {
                Ok(r) => client.request::<serde_json::Value>(r).await.ok(),
                Err(_) => None,
            };
            match configz {
                Some(c) => out.push(check(Status::Ok, format!("node {name}: kubelet {version}, back-off {}", backoff_of_configz(&c)))),
                None => out.push(check(
                    Status::Note,
                    format!("node {name}: kubelet {version}; its back-off curve is unreadable (needs get nodes/proxy), assume the default"),
                )),
            }
        }
    }
    out
}

/// Prints the checks, one line each, with the fix under a failed one.
///
/// # Errors
/// Output fails.
pub fn print(checks: &[Check], out: &mut impl Write) -> std::io::Result<()> {
    for c in checks {
        let mark = match c.status {
            Status::Ok => "✔",
            Status::Note => "·",
            Status::Failed => "✘",
        };
        writeln!(out, "{mark} {}", c.text)?;
        if let (Status::Failed | Status::Note, Some(fix)) = (c.status, &c.fix) {
            writeln!(out, "    fix: {fix}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_back_off_curve_is_read_from_the_kubelets_configz() {
        let default = serde_json::json!({"kubeletconfig": {"featureGates": {}}});
        assert_eq!(backoff_of_configz(&default), "10s doubling to 5m0s (default)");
        let reduced = serde_json::json!({"kubeletconfig": {"featureGates": {"ReduceDefaultCrashLoopBackOffDecay": true}}});
        assert_eq!(backoff_of_configz(&reduced), "1s doubling to 1m0s (reduced-decay)");
        let capped = serde_json::json!({"kubeletconfig": {"featureGates": {"KubeletCrashLoopBackOffMax": true}, "crashLoopBackOff": {"maxContainerRestartPeriod": "1m30s"}}});
        assert_eq!(backoff_of_configz(&capped), "10s doubling to 1m30s (custom cap)");
    }

    #[test]
    fn a_failed_check_prints_its_fix() {
        let mut out = Vec::new();
        print(&[check(Status::Ok, "fine"), Check { status: Status::Failed, text: "broken".into(), fix: Some("do this".into()) }], &mut out)
            .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "✔ fine\n✘ broken\n    fix: do this\n");
    }
}
