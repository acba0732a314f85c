//! What `run`, `suite` and `doctor` check before waiting on anything: podlife's CRDs, an
//! operator with experiments enabled that covers the namespace, and the target image where the
//! cluster can use it. Each failure is one sentence and the command that fixes it.
//!
//! # Guarantees
//! - No check has a side effect.
//! - A check that cannot look (RBAC forbids it) passes. Operators are judged by what they do:
//!   `run` and `suite` stop when none accepts their experiments within `ACCEPT_TIMEOUT`, and
//!   then [`coverage`] says which installed operator does not cover the namespace and how to
//!   change that (an operator running outside the cluster cannot be seen, and may cover it).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Node;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use crate::crd::ProbeExperiment;

/// A check that failed: what is missing, and the command that fixes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}\n  fix: {fix}")]
pub struct Missing {
    pub what: String,
    pub fix: String,
}

/// The kubelet lists at most this many images in a node's status (`nodeStatusMaxImages`);
/// an image missing from a shorter list is not on that node.
const NODE_STATUS_MAX_IMAGES: usize = 50;

const INSTALL: &str = "helm install podlife charts/podlife --namespace podlife-system --create-namespace --set experiments.enabled=true";

/// The default image of experiment containers that name none.
#[must_use]
pub fn default_target_image() -> String {
    concat!("localhost/podlife-target:", env!("CARGO_PKG_VERSION")).to_string()
}

/// podlife's CRDs are installed.
///
/// # Errors
/// They are not (the API has no such resource).
pub async fn crds(client: &Client, namespace: &str) -> Result<(), Missing> {
    let api: Api<ProbeExperiment> = Api::namespaced(client.clone(), namespace);
    match api.list(&ListParams::default().limit(1)).await {
        Err(kube::Error::Api(e)) if e.code == 404 => Err(Missing {
            what: "podlife's CRDs (ProbeExperiment, PodLifecycle) are not installed on this cluster".into(),
            fix: format!("{INSTALL}   (or just the CRDs: kubectl apply --server-side -f manifests/crds.yaml)"),
        }),
        _ => Ok(()),
    }
}

/// An operator installed in the cluster (a Deployment of the chart), as its arguments say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Install {
    pub namespace: String,
    /// The Helm release (the `app.kubernetes.io/instance` label).
    pub release: String,
    /// The Deployment's name.
    pub deployment: String,
    pub ready: bool,
    pub experiments: bool,
    /// `--namespaces`: experiments run only there. `None`: everywhere.
    pub namespaces: Option<Vec<String>>,
    pub target_image: Option<String>,
}

impl Install {
    fn from_deployment(d: &Deployment) -> Option<Install> {
        let spec = d.spec.as_ref()?.template.spec.as_ref()?;
        let container = spec.containers.iter().find(|c| c.name == "operator").or(spec.containers.first())?;
        let args = container.args.clone().unwrap_or_default();
        let value = |flag: &str| args.iter().find_map(|a| a.strip_prefix(&format!("{flag}=")).map(str::to_string));
        Some(Install {
            namespace: d.namespace().unwrap_or_default(),
            release: d.labels().get("app.kubernetes.io/instance").cloned().unwrap_or_else(|| d.name_any()),
            deployment: d.name_any(),
            ready: d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0) > 0,
            experiments: args.iter().any(|a| a == "--experiments"),
            namespaces: value("--namespaces").map(|v| v.split(',').map(str::to_string).collect()),
            target_image: value("--target-image"),
        })
    }

    /// Whether it runs experiments in `namespace`.
    #[must_use]
    pub fn covers(&self, namespace: &str) -> bool {
        self.experiments && self.namespaces.as_ref().is_none_or(|nss| nss.iter().any(|n| n == namespace))
    }

    fn upgrade(&self, set: &str) -> String {
        format!("helm upgrade {} charts/podlife --namespace {} --reuse-values {set}", self.release, self.namespace)
    }
}

/// The operators installed by the chart, if this user may list Deployments (`None` if not);
/// the documented install (release podlife in podlife-system) first, as fixes name it.
pub async fn installs(client: &Client) -> Option<Vec<Install>> {
    let api: Api<Deployment> = Api::all(client.clone());
    let lp = ListParams::default().labels("app.kubernetes.io/name=podlife,app.kubernetes.io/component=operator");
    let list = api.list(&lp).await.ok()?;
    let mut installs: Vec<Install> = list.items.iter().filter_map(Install::from_deployment).collect();
    installs.sort_by_key(|i| (i.namespace != "podlife-system", i.release != "podlife", i.namespace.clone()));
    Some(installs)
}

/// Whether the installed operators run experiments in `namespace`. Operators outside the
/// cluster cannot be seen, so finding none is not an error here.
///
/// # Errors
/// Operators are installed, but none runs experiments in `namespace`.
pub fn coverage(installs: &[Install], namespace: &str) -> Result<(), Missing> {
    if installs.is_empty() || installs.iter().any(|i| i.covers(namespace) && i.ready) {
        return Ok(());
    }
    if let Some(i) = installs.iter().find(|i| i.covers(namespace)) {
        return Err(Missing {
            what: format!("the podlife operator in {} that covers namespace {namespace} is not ready", i.namespace),
            fix: format!("kubectl -n {} get pods -l app.kubernetes.io/name=podlife   (and its logs)", i.namespace),
        });
    }
    let with_experiments: Vec<&Install> = installs.iter().filter(|i| i.experiments).collect();
    let Some(i) = with_experiments.first() else {
        let i = &installs[0];
        return Err(Missing {
            what: format!("the podlife operator in {} runs without experiments, so nothing would run them", i.namespace),
            fix: i.upgrade("--set experiments.enabled=true"),
        });
    };
    // Every namespace some operator covers, and the first operator's list extended.
    let covered: Vec<String> = with_experiments.iter().flat_map(|i| i.namespaces.clone().unwrap_or_default()).collect();
    let mut wanted = i.namespaces.clone().unwrap_or_default();
    wanted.push(namespace.to_string());
    Err(Missing {
        what: format!("podlife operators run experiments only in {}, not in {namespace}", covered.join(", ")),
        fix: format!(
            "{}   (or run there: -n {})",
            i.upgrade(&format!("--set 'selection.namespaces={{{}}}'", wanted.join(","))),
            covered[0]
        ),
    })
}

/// An image that cannot be pulled (`localhost/...`) is on some node, as far as the nodes'
/// status shows. Passes when nodes cannot be listed or their image lists may be cut short. The
/// kubelet refreshes that list every few seconds, so an image loaded a moment ago is waited
/// for, up to 30 s.
///
/// # Errors
/// No node has the image and every node lists all of its images, for 30 s.
pub async fn image(client: &Client, image: &str) -> Result<(), Missing> {
    if !image.starts_with("localhost/") {
        return Ok(());
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let Ok(nodes) = Api::<Node>::all(client.clone()).list(&ListParams::default()).await else { return Ok(()) };
        let images: Vec<&k8s_openapi::api::core::v1::ContainerImage> =
            nodes.items.iter().flat_map(|n| n.status.iter().flat_map(|s| s.images.iter().flatten())).collect();
        let present =
            images.iter().flat_map(|i| i.names.iter().flatten()).any(|name| name == image || name.ends_with(&format!("/{image}")));
        // The cap counts images, not names.
        let complete = !nodes.items.is_empty()
            && nodes.items.iter().all(|n| n.status.as_ref().and_then(|s| s.images.as_ref()).map_or(0, Vec::len) < NODE_STATUS_MAX_IMAGES);
        if present || !complete {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(Missing {
                what: format!("image {image} is on no node, and a localhost/ image cannot be pulled"),
                fix: "e2e/images/build --load (the local cluster), or: kind load image-archive out/images/podlife-target.tar".into(),
            });
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn install(experiments: bool, namespaces: Option<&[&str]>) -> Install {
        Install {
            namespace: "podlife-system".into(),
            release: "podlife".into(),
            deployment: "podlife".into(),
            ready: true,
            experiments,
            namespaces: namespaces.map(|n| n.iter().map(|s| (*s).to_string()).collect()),
            target_image: None,
        }
    }

    #[test]
    fn coverage_names_what_is_missing_and_the_helm_command_that_fixes_it() {
        assert_eq!(coverage(&[], "x"), Ok(()), "an operator outside the cluster cannot be seen");
        assert_eq!(coverage(&[install(true, None)], "x"), Ok(()));
        assert_eq!(coverage(&[install(true, Some(&["x"]))], "x"), Ok(()));
        let off = coverage(&[install(false, None)], "x").unwrap_err();
        assert!(off.what.contains("without experiments") && off.fix.ends_with("--reuse-values --set experiments.enabled=true"), "{off}");
        let elsewhere = coverage(&[install(true, Some(&["podlife-demo"]))], "podlife-conformance-x").unwrap_err();
        assert!(elsewhere.what.contains("only in podlife-demo, not in podlife-conformance-x"), "{elsewhere}");
        let two = coverage(&[install(true, Some(&["team-a"])), install(true, Some(&["podlife-demo"]))], "x").unwrap_err();
        assert!(two.what.contains("only in team-a, podlife-demo, not in x"), "every covered namespace is named: {two}");
        assert!(elsewhere.fix.contains("--set 'selection.namespaces={podlife-demo,podlife-conformance-x}'"), "{elsewhere}");
        assert!(elsewhere.fix.contains("or run there: -n podlife-demo"), "{elsewhere}");
        let mut down = install(true, None);
        down.ready = false;
        assert!(coverage(&[down], "x").unwrap_err().what.contains("not ready"));
    }

    #[test]
    fn an_install_is_read_from_the_charts_deployment() {
        let d: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "podlife", "namespace": "podlife-system", "labels": {"app.kubernetes.io/instance": "mine"}},
            "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "operator",
                "args": ["--listen=0.0.0.0:8080", "--namespaces=a,b", "--experiments", "--target-image=localhost/podlife-target:9"]}]}}},
            "status": {"readyReplicas": 1}
        }))
        .unwrap();
        let i = Install::from_deployment(&d).unwrap();
        assert_eq!((i.release.as_str(), i.ready, i.experiments), ("mine", true, true));
        assert_eq!(i.namespaces, Some(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(i.target_image.as_deref(), Some("localhost/podlife-target:9"));
        assert!(i.covers("b") && !i.covers("c"));
    }
}
