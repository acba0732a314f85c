//! Who owns a pod: its owner chain, from the pod's controller up to the workload a user
//! manages (Pod → ReplicaSet → Deployment, Pod → Job → CronJob, Pod → StatefulSet, ...).
//!
//! The pod names only its direct controller. The rest of the chain is looked up by the
//! operator (a ReplicaSet's or a Job's own controller); this module decides what to look up,
//! folds the answers in, and names the workload and its labels.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Labels every report of a workload's pods carries, so `kubectl get podlifecycles -l
/// podlife.io/workload=web` finds them.
pub const WORKLOAD_KIND_LABEL: &str = "podlife.io/workload-kind";
pub const WORKLOAD_LABEL: &str = "podlife.io/workload";
/// The exact one, where a long name had to be shortened in [`WORKLOAD_LABEL`].
pub const WORKLOAD_UID_LABEL: &str = "podlife.io/workload-uid";

/// Longest chain followed. Built-in chains have at most 2 links (Job → CronJob); only a
/// ReplicaSet or Job is looked up, so longer ones need owners that are themselves such (a
/// ReplicaSet owned by a ReplicaSet): a bound against loops, not a real case.
const MAX_CHAIN: usize = 4;

/// One owner: a controller `ownerReference`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OwnerLink {
    pub kind: String,
    pub name: String,
    pub uid: String,
    /// The owner's API version as the reference gave it (`apps/v1`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
}

impl OwnerLink {
    /// Whether the operator looks up this owner's own controller. Only the two built-in kinds
    /// that are usually owned by another workload: a ReplicaSet by its Deployment, a Job by its
    /// CronJob. Everything else (StatefulSet, DaemonSet, ReplicationController, Deployment,
    /// CronJob, custom kinds) is taken as the workload.
    #[must_use]
    pub fn is_intermediate(&self) -> bool {
        matches!((self.api_version.as_str(), self.kind.as_str()), ("apps/v1", "ReplicaSet") | ("batch/v1", "Job"))
    }
}

impl std::fmt::Display for OwnerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

/// What a lookup of one owner's own controller found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parent {
    /// The owner has this controller.
    Owner(OwnerLink),
    /// The owner exists and has no controller: it is the workload.
    None,
    /// The owner is gone, or may not be read: the chain stops where it is.
    Unknowable,
}

/// A pod's owner chain as recorded at first sight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Owners {
    /// The pod's controller first, the workload last.
    pub chain: Vec<OwnerLink>,
    /// Every link was followed as far as it goes. False while the top one waits for a lookup.
    pub complete: bool,
}

impl Owners {
    /// The chain as the pod itself tells it; `None` for a bare pod.
    #[must_use]
    pub fn from_controller(controller: Option<OwnerLink>) -> Option<Owners> {
        let link = controller?;
        let complete = !link.is_intermediate();
        Some(Owners { chain: vec![link], complete })
    }

    /// The owner whose own controller must be looked up next, if any.
    #[must_use]
    pub fn needs_lookup(&self) -> Option<&OwnerLink> {
        if self.complete { None } else { self.chain.last() }
    }

    /// Folds in the answer for [`Owners::needs_lookup`].
    pub fn extend(&mut self, parent: Parent) {
        match parent {
            Parent::Owner(link) if !self.chain.contains(&link) && self.chain.len() < MAX_CHAIN => {
                self.complete = !link.is_intermediate() || self.chain.len() + 1 >= MAX_CHAIN;
                self.chain.push(link);
            }
            _ => self.complete = true,
        }
    }

    /// The workload: the top of the chain. Before the chain is complete it is the owner known
    /// so far (a ReplicaSet, until its Deployment is found).
    #[must_use]
    pub fn workload(&self) -> Option<&OwnerLink> {
        self.chain.last()
    }

    /// The labels a report of this pod carries; none until the chain is complete, so that a
    /// selector never matches a report under a half-known workload.
    #[must_use]
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        if let (true, Some(w)) = (self.complete, self.workload()) {
            labels.insert(WORKLOAD_KIND_LABEL.to_string(), label_value(&w.kind));
            labels.insert(WORKLOAD_LABEL.to_string(), label_value(&w.name));
            labels.insert(WORKLOAD_UID_LABEL.to_string(), label_value(&w.uid));
        }
        labels
    }
}

/// A label value: at most 63 characters, starting and ending with an alphanumeric one.
#[must_use]
pub fn label_value(value: &str) -> String {
    let cut: String = value.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')).take(63).collect();
    cut.trim_matches(['-', '.', '_']).to_string()
}

/// The workload kinds `report KIND/NAME` takes (kubectl's short forms work too).
pub const KINDS: [&str; 7] = ["deployment", "statefulset", "daemonset", "job", "cronjob", "replicaset", "replicationcontroller"];

/// The kinds a user can name in `report KIND/NAME`, with the short forms kubectl knows.
#[must_use]
pub fn workload_kind(word: &str) -> Option<&'static str> {
    Some(match word.to_ascii_lowercase().as_str() {
        "deployment" | "deployments" | "deploy" => "Deployment",
        "statefulset" | "statefulsets" | "sts" => "StatefulSet",
        "daemonset" | "daemonsets" | "ds" => "DaemonSet",
        "job" | "jobs" => "Job",
        "cronjob" | "cronjobs" | "cj" => "CronJob",
        "replicaset" | "replicasets" | "rs" => "ReplicaSet",
        "replicationcontroller" | "replicationcontrollers" | "rc" => "ReplicationController",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(api: &str, kind: &str, name: &str) -> OwnerLink {
        OwnerLink { kind: kind.into(), name: name.into(), uid: format!("uid-{name}"), api_version: api.into() }
    }

    #[test]
    fn a_bare_pod_has_no_owners() {
        assert_eq!(Owners::from_controller(None), None);
    }

    #[test]
    fn a_replicaset_is_followed_up_to_its_deployment() {
        let mut o = Owners::from_controller(Some(link("apps/v1", "ReplicaSet", "web-7d4"))).unwrap();
        assert!(o.labels().is_empty(), "no labels while the Deployment is not known");
        assert_eq!(o.needs_lookup().map(|l| l.name.as_str()), Some("web-7d4"));
        o.extend(Parent::Owner(link("apps/v1", "Deployment", "web")));
        assert!(o.complete);
        assert_eq!(o.needs_lookup(), None);
        assert_eq!(o.workload().unwrap().to_string(), "Deployment/web");
        assert_eq!(o.labels()[WORKLOAD_LABEL], "web");
        assert_eq!(o.labels()[WORKLOAD_KIND_LABEL], "Deployment");
        assert_eq!(o.labels()[WORKLOAD_UID_LABEL], "uid-web");
    }

    #[test]
    fn a_job_is_followed_up_to_its_cronjob_and_a_bare_job_is_the_workload() {
        let mut cron = Owners::from_controller(Some(link("batch/v1", "Job", "nightly-29"))).unwrap();
        cron.extend(Parent::Owner(link("batch/v1", "CronJob", "nightly")));
        assert_eq!(cron.chain.iter().map(ToString::to_string).collect::<Vec<_>>(), ["Job/nightly-29", "CronJob/nightly"]);
        let mut bare = Owners::from_controller(Some(link("batch/v1", "Job", "once"))).unwrap();
        bare.extend(Parent::None);
        assert!(bare.complete);
        assert_eq!(bare.workload().unwrap().to_string(), "Job/once");
    }

    #[test]
    fn direct_workloads_need_no_lookup() {
        for kind in ["StatefulSet", "DaemonSet"] {
            let o = Owners::from_controller(Some(link("apps/v1", kind, "db"))).unwrap();
            assert!(o.complete, "{kind}");
            assert_eq!(o.labels()[WORKLOAD_KIND_LABEL], kind);
        }
        let rc = Owners::from_controller(Some(link("v1", "ReplicationController", "old"))).unwrap();
        assert!(rc.complete);
        // A ReplicaSet of another API group is not the built-in one: not followed.
        assert!(Owners::from_controller(Some(link("example.com/v1", "ReplicaSet", "x"))).unwrap().complete);
    }

    #[test]
    fn a_gone_owner_ends_the_chain_where_it_is() {
        let mut o = Owners::from_controller(Some(link("apps/v1", "ReplicaSet", "orphan"))).unwrap();
        o.extend(Parent::Unknowable);
        assert!(o.complete);
        assert_eq!(o.workload().unwrap().to_string(), "ReplicaSet/orphan");
    }

    #[test]
    fn a_loop_or_a_long_chain_ends() {
        let rs = link("apps/v1", "ReplicaSet", "a");
        let mut o = Owners::from_controller(Some(rs.clone())).unwrap();
        o.extend(Parent::Owner(rs));
        assert!(o.complete, "an owner that owns itself ends the walk");
        assert_eq!(o.chain.len(), 1);
        let mut long = Owners::from_controller(Some(link("apps/v1", "ReplicaSet", "r0"))).unwrap();
        for i in 1..10 {
            if long.complete {
                break;
            }
            long.extend(Parent::Owner(link("apps/v1", "ReplicaSet", &format!("r{i}"))));
        }
        assert!(long.complete);
        assert_eq!(long.chain.len(), MAX_CHAIN);
    }

    #[test]
    fn label_values_are_valid() {
        assert_eq!(label_value(&"x".repeat(80)).len(), 63);
        assert_eq!(label_value("-web-"), "web");
        assert_eq!(label_value("a b/c"), "abc");
    }

    #[test]
    fn kubectl_short_kinds_are_known() {
        assert_eq!(workload_kind("deploy"), Some("Deployment"));
        assert_eq!(workload_kind("CronJobs"), Some("CronJob"));
        assert_eq!(workload_kind("pod"), None);
    }
}
