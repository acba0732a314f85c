//! The experiment's pod as the operator creates it, decided without I/O: what a pod may be on a
//! shared cluster, the restricted defaults it gets, the control token it is given, and whether
//! a same-named object may be replaced.
//!
//! # Guarantees
//! - A pod that could escape its namespace's isolation is refused with the field that does it,
//!   unless the operator was told to allow it.
//! - Everything a user did not set is filled in to meet the "restricted" Pod Security level.
//! - Only objects that a ProbeExperiment of the same name owns may be replaced.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, EnvVar, EnvVarSource, Pod, PodSpec, SecretKeySelector};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::crd::ProbeExperiment;

/// The target's control port when a container names none.
pub const DEFAULT_CONTROL_PORT: u16 = 9090;
/// The environment variable podlife-target reads its control token from.
pub const TOKEN_ENV: &str = "PODLIFE_CONTROL_TOKEN";
/// The key of the token in the experiment's Secret.
pub const TOKEN_KEY: &str = "token";

/// An experiment pod that the policy does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "spec.pod.{field} {why}: refused on a shared cluster (an operator started with --experiments-allow-unrestricted-pods, \
     chart value experiments.allowUnrestrictedPods=true, allows it)"
)]
pub struct Refused {
    /// The field's path under `spec.pod`, e.g. `containers[0].securityContext.privileged`.
    pub field: String,
    pub why: &'static str,
}

/// A same-named object that this experiment may not replace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{kind} {name} already exists and is not owned by a ProbeExperiment named {experiment}; podlife deletes only what it created \
     (delete it, or rename the experiment)"
)]
pub struct NotOwned {
    pub kind: &'static str,
    pub name: String,
    pub experiment: String,
}

/// Checks what an experiment pod asks for against what a namespace's user may get through the
/// operator's identity. Volumes are allowed by kind (what the "restricted" Pod Security level
/// allows, less Secrets); the rest is refused by field, so that the check holds in namespaces
/// that enforce no Pod Security level at all.
///
/// # Errors
/// The first field that asks for host access, privilege, added capabilities, a weaker
/// confinement, another ServiceAccount, an API token, or a Secret.
pub fn check(spec: &PodSpec) -> Result<(), Refused> {
    let refuse = |field: String, why| Err(Refused { field, why });
    for (flag, field) in [(spec.host_network, "hostNetwork"), (spec.host_pid, "hostPID"), (spec.host_ipc, "hostIPC")] {
        if flag == Some(true) {
            return refuse(field.into(), "shares the node's namespaces");
        }
    }
    if spec.node_name.as_deref().is_some_and(|n| !n.is_empty()) {
        return refuse("nodeName".into(), "bypasses the scheduler and its taints");
    }
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        if let Some(kind) = volume_kind_refused(v) {
            return refuse(format!("volumes[{i}].{kind}"), VOLUME_WHY);
        }
        for (j, source) in v.projected.iter().flat_map(|p| p.sources.iter().flatten()).enumerate() {
            if source.service_account_token.is_some() {
                return refuse(format!("volumes[{i}].projected.sources[{j}].serviceAccountToken"), "hands the pod an API token");
            }
            if source.secret.is_some() {
                return refuse(format!("volumes[{i}].projected.sources[{j}].secret"), "reads a Secret of the namespace");
            }
        }
    }
    // Both fields: an empty serviceAccountName defers to the deprecated serviceAccount.
    for (sa, field) in [(&spec.service_account_name, "serviceAccountName"), (&spec.service_account, "serviceAccount")] {
        if sa.as_deref().is_some_and(|sa| !sa.is_empty() && sa != "default") {
            return refuse(field.into(), "borrows another ServiceAccount");
        }
    }
    if spec.automount_service_account_token == Some(true) {
        return refuse("automountServiceAccountToken".into(), "hands the pod an API token");
    }
    if let Some(sc) = &spec.security_context
        && let Some(field) = weaker_confinement(sc.seccomp_profile.as_ref(), sc.app_armor_profile.as_ref(), sc.se_linux_options.as_ref())
    {
        return refuse(format!("securityContext.{field}"), CONFINEMENT_WHY);
    }
    for (list, c, i) in containers(spec) {
        for (j, p) in c.ports.iter().flatten().enumerate() {
            if p.host_port.is_some_and(|h| h != 0) {
                return refuse(format!("{list}[{i}].ports[{j}].hostPort"), "opens a port on the node");
            }
        }
        for (j, e) in c.env.iter().flatten().enumerate() {
            if e.value_from.as_ref().is_some_and(|v| v.secret_key_ref.is_some()) {
                return refuse(format!("{list}[{i}].env[{j}].valueFrom.secretKeyRef"), "reads a Secret of the namespace");
            }
        }
        for (j, e) in c.env_from.iter().flatten().enumerate() {
            if e.secret_ref.is_some() {
                return refuse(format!("{list}[{i}].envFrom[{j}].secretRef"), "reads a Secret of the namespace");
            }
        }
        let Some(sc) = &c.security_context else { continue };
        if sc.privileged == Some(true) {
            return refuse(format!("{list}[{i}].securityContext.privileged"), "gives the container the whole node");
        }
        if sc.capabilities.as_ref().and_then(|caps| caps.add.as_ref()).is_some_and(|add| !add.is_empty()) {
            return refuse(format!("{list}[{i}].securityContext.capabilities.add"), "adds kernel capabilities");
        }
        if let Some(field) = weaker_confinement(sc.seccomp_profile.as_ref(), sc.app_armor_profile.as_ref(), sc.se_linux_options.as_ref()) {
            return refuse(format!("{list}[{i}].securityContext.{field}"), CONFINEMENT_WHY);
        }
    }
    Ok(())
}

const VOLUME_WHY: &str =
    "is not a volume kind an experiment may use (configMap, downwardAPI, emptyDir, ephemeral, persistentVolumeClaim, projected, csi)";
const CONFINEMENT_WHY: &str = "weakens the container's confinement";

/// The kind of a volume outside the allowed ones ("restricted" Pod Security's list without
/// `secret`), or `None` if it is allowed.
fn volume_kind_refused(v: &k8s_openapi::api::core::v1::Volume) -> Option<String> {
    let allowed = v.config_map.is_some()
        || v.downward_api.is_some()
        || v.empty_dir.is_some()
        || v.ephemeral.is_some()
        || v.persistent_volume_claim.is_some()
        || v.projected.is_some()
        || v.csi.is_some();
    if allowed {
        return None;
    }
    // The kind is the one key besides the name.
    let value = serde_json::to_value(v).ok()?;
    Some(value.as_object()?.keys().find(|k| *k != "name").cloned().unwrap_or_else(|| "unknown".into()))
}

/// Which confinement setting is weaker than the runtime's default: seccomp or AppArmor
/// `Unconfined`, or SELinux options other than the container types Pod Security allows.
fn weaker_confinement(
    seccomp: Option<&k8s_openapi::api::core::v1::SeccompProfile>,
    apparmor: Option<&k8s_openapi::api::core::v1::AppArmorProfile>,
    selinux: Option<&k8s_openapi::api::core::v1::SELinuxOptions>,
) -> Option<&'static str> {
    const CONTAINER_TYPES: [&str; 4] = ["container_t", "container_init_t", "container_kvm_t", "container_engine_t"];
    if seccomp.is_some_and(|p| p.type_ == "Unconfined") {
        return Some("seccompProfile");
    }
    if apparmor.is_some_and(|p| p.type_ == "Unconfined") {
        return Some("appArmorProfile");
    }
    let odd_type = |o: &k8s_openapi::api::core::v1::SELinuxOptions| {
        o.type_.as_deref().is_some_and(|t| !t.is_empty() && !CONTAINER_TYPES.contains(&t)) || o.user.is_some() || o.role.is_some()
    };
    if selinux.is_some_and(odd_type) {
        return Some("seLinuxOptions");
    }
    None
}

/// Every container with the name of its list and its index there.
fn containers(spec: &PodSpec) -> impl Iterator<Item = (&'static str, &Container, usize)> {
    let init = spec.init_containers.iter().flatten().enumerate().map(|(i, c)| ("initContainers", c, i));
    init.chain(spec.containers.iter().enumerate().map(|(i, c)| ("containers", c, i)))
}

/// Fills in what the "restricted" Pod Security level requires wherever the user left it unset,
/// and keeps the API token out of the pod unless asked for. Values the user set are kept.
pub fn restrict(spec: &mut PodSpec) {
    use k8s_openapi::api::core::v1::{Capabilities, PodSecurityContext, SeccompProfile, SecurityContext};
    spec.automount_service_account_token.get_or_insert(false);
    let pod = spec.security_context.get_or_insert_with(PodSecurityContext::default);
    pod.run_as_non_root.get_or_insert(true);
    pod.seccomp_profile.get_or_insert_with(|| SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() });
    for c in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
        let sc = c.security_context.get_or_insert_with(SecurityContext::default);
        sc.allow_privilege_escalation.get_or_insert(false);
        let caps = sc.capabilities.get_or_insert_with(Capabilities::default);
        caps.drop.get_or_insert_with(|| vec!["ALL".into()]);
    }
}

/// The containers that run podlife-target (no image, or the podlife-target image), by control
/// port: `--control-port N`, `--control-port=N`, `PODLIFE_CONTROL_PORT`, or the default 9090.
#[must_use]
pub fn target_control_ports(pod: &PodSpec) -> BTreeMap<u16, String> {
    let all = pod.init_containers.iter().flatten().chain(pod.containers.iter());
    all.filter(|c| runs_target(c))
        .map(|c| {
            let args = c.args.clone().unwrap_or_default();
            let from_args = args.iter().enumerate().find_map(|(i, a)| match a.strip_prefix("--control-port") {
                Some("") => args.get(i + 1)?.parse().ok(),
                Some(v) => v.strip_prefix('=')?.parse().ok(),
                None => None,
            });
            let from_env =
                || c.env.iter().flatten().find(|e| e.name == "PODLIFE_CONTROL_PORT").and_then(|e| e.value.as_deref()?.parse().ok());
            (from_args.or_else(from_env).unwrap_or(DEFAULT_CONTROL_PORT), c.name.clone())
        })
        .collect()
}

fn runs_target(c: &Container) -> bool {
    c.image.as_deref().is_none_or(|i| i.is_empty() || i.contains("podlife-target"))
}

/// Gives every podlife-target container the control token from `secret`, replacing a token
/// the user set there (the operator must know the token it sends).
pub fn give_token(spec: &mut PodSpec, secret: &str) {
    let from_secret = EnvVar {
        name: TOKEN_ENV.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector { name: secret.into(), key: TOKEN_KEY.into(), optional: Some(false) }),
            ..Default::default()
        }),
        ..Default::default()
    };
    for c in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()).filter(|c| runs_target(c)) {
        let env = c.env.get_or_insert_with(Vec::new);
        env.retain(|e| e.name != TOKEN_ENV);
        env.push(from_secret.clone());
    }
}

/// Whether an existing object may be deleted to make room for this experiment's: only if a
/// ProbeExperiment of the same name owns it (an earlier run of it).
///
/// # Errors
/// Anything else owns it, or nothing does.
pub fn may_replace(kind: &'static str, name: &str, owners: Option<&[OwnerReference]>, experiment: &str) -> Result<(), NotOwned> {
    let ours = owners
        .unwrap_or_default()
        .iter()
        .any(|o| o.kind == "ProbeExperiment" && o.api_version.starts_with("podlife.io/") && o.name == experiment);
    if ours { Ok(()) } else { Err(NotOwned { kind, name: name.into(), experiment: experiment.into() }) }
}

/// The name of an experiment's pod (or Job): `pe-NAME`, cut to a valid object name.
#[must_use]
pub fn pod_name(experiment: &str) -> String {
    let n: String = format!("pe-{experiment}").chars().take(63).collect();
    n.trim_end_matches(['-', '.']).to_string()
}

/// The experiment's pod: the user's spec, checked against the policy (unless
/// `allow_unrestricted`), with the default image, the restricted defaults, the control token from
/// Secret `token_secret`, its labels and its owner (the experiment) filled in.
///
/// # Errors
/// The spec has no container, the policy refuses it (the message names the field), or the
/// experiment has no UID yet.
pub fn build(exp: &ProbeExperiment, target_image: &str, allow_unrestricted: bool, token_secret: &str) -> Result<Pod, String> {
    let mut spec = exp.spec.pod.clone();
    if spec.containers.is_empty() {
        return Err("spec.pod.containers is empty".into());
    }
    if !allow_unrestricted {
        check(&spec).map_err(|e| e.to_string())?;
    }
    // Before the default image is filled in: a container without an image is a target whatever
    // the configured target image is called.
    give_token(&mut spec, token_secret);
    for c in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
        if c.image.as_deref().unwrap_or_default().is_empty() {
            c.image = Some(target_image.to_string());
        }
        c.image_pull_policy.get_or_insert_with(|| "IfNotPresent".into());
    }
    restrict(&mut spec);
    let owner = exp.controller_owner_ref(&()).ok_or("the experiment has no uid yet")?;
    let name = exp.name_any();
    let labels =
        BTreeMap::from([("podlife.io/experiment".to_string(), name.clone()), ("podlife.io/track".to_string(), "true".to_string())]);
    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(&name)),
            labels: Some(labels),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> PodSpec {
        serde_json::from_value(v).unwrap()
    }

    fn refused_field(v: serde_json::Value) -> Option<String> {
        check(&spec(v)).err().map(|r| r.field)
    }

    #[test]
    fn what_escapes_the_namespace_is_refused_with_its_field() {
        // Before: spec.pod was created as given, under the operator's identity.
        let app = json!({"name": "app"});
        assert_eq!(refused_field(json!({"containers": [app]})), None);
        assert_eq!(refused_field(json!({"containers": [app], "hostNetwork": true})).as_deref(), Some("hostNetwork"));
        assert_eq!(refused_field(json!({"containers": [app], "hostPID": true})).as_deref(), Some("hostPID"));
        assert_eq!(refused_field(json!({"containers": [app], "hostIPC": true})).as_deref(), Some("hostIPC"));
        assert_eq!(
            refused_field(
                json!({"containers": [app], "volumes": [{"name": "a", "emptyDir": {}}, {"name": "root", "hostPath": {"path": "/"}}]})
            )
            .as_deref(),
            Some("volumes[1].hostPath")
        );
        assert_eq!(
            refused_field(json!({"containers": [app, {"name": "b", "securityContext": {"privileged": true}}]})).as_deref(),
            Some("containers[1].securityContext.privileged")
        );
        assert_eq!(
            refused_field(
                json!({"containers": [app], "initContainers": [{"name": "i", "securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}}]})
            )
            .as_deref(),
            Some("initContainers[0].securityContext.capabilities.add")
        );
        assert_eq!(refused_field(json!({"containers": [app], "serviceAccountName": "admin"})).as_deref(), Some("serviceAccountName"));
        assert_eq!(refused_field(json!({"containers": [app], "serviceAccount": "admin"})).as_deref(), Some("serviceAccount"));
        // An empty serviceAccountName defers to serviceAccount: both are checked.
        assert_eq!(
            refused_field(json!({"containers": [app], "serviceAccountName": "", "serviceAccount": "admin"})).as_deref(),
            Some("serviceAccount")
        );
        assert_eq!(
            refused_field(
                json!({"containers": [app], "volumes": [{"name": "t", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}]})
            )
            .as_deref(),
            Some("volumes[0].projected.sources[0].serviceAccountToken")
        );
        assert_eq!(
            refused_field(json!({"containers": [app], "volumes": [{"name": "s", "secret": {"secretName": "pe-token-other"}}]})).as_deref(),
            Some("volumes[0].secret")
        );
        assert_eq!(
            refused_field(json!({"containers": [app], "volumes": [{"name": "n", "nfs": {"server": "x", "path": "/"}}]})).as_deref(),
            Some("volumes[0].nfs")
        );
        assert_eq!(
            refused_field(
                json!({"containers": [{"name": "a", "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}]})
            )
            .as_deref(),
            Some("containers[0].env[0].valueFrom.secretKeyRef")
        );
        assert_eq!(
            refused_field(json!({"containers": [{"name": "a", "envFrom": [{"secretRef": {"name": "s"}}]}]})).as_deref(),
            Some("containers[0].envFrom[0].secretRef")
        );
        assert_eq!(
            refused_field(json!({"containers": [{"name": "a", "ports": [{"containerPort": 80, "hostPort": 80}]}]})).as_deref(),
            Some("containers[0].ports[0].hostPort")
        );
        assert_eq!(
            refused_field(json!({"containers": [app], "securityContext": {"seccompProfile": {"type": "Unconfined"}}})).as_deref(),
            Some("securityContext.seccompProfile")
        );
        assert_eq!(
            refused_field(json!({"containers": [{"name": "a", "securityContext": {"seLinuxOptions": {"type": "spc_t"}}}]})).as_deref(),
            Some("containers[0].securityContext.seLinuxOptions")
        );
        assert_eq!(refused_field(json!({"containers": [app], "nodeName": "podlife-node"})).as_deref(), Some("nodeName"));
        assert_eq!(refused_field(json!({"containers": [app], "serviceAccountName": "default"})), None);
        assert_eq!(
            refused_field(json!({"containers": [app], "automountServiceAccountToken": true})).as_deref(),
            Some("automountServiceAccountToken")
        );
        // What is harmless stays allowed.
        assert_eq!(
            refused_field(
                json!({"containers": [{"name": "a", "securityContext": {"privileged": false, "capabilities": {"add": [], "drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"}}, "ports": [{"containerPort": 8080}]}],
                "hostNetwork": false, "automountServiceAccountToken": false,
                "volumes": [{"name": "e", "emptyDir": {}}, {"name": "c", "configMap": {"name": "x"}},
                    {"name": "p", "projected": {"sources": [{"configMap": {"name": "x"}}, {"downwardAPI": {"items": []}}]}}]})
            ),
            None
        );
        let e = check(&spec(json!({"containers": [app], "hostNetwork": true}))).unwrap_err().to_string();
        assert!(e.starts_with("spec.pod.hostNetwork shares the node's namespaces") && e.contains("allowUnrestrictedPods"), "{e}");
    }

    #[test]
    fn restricted_defaults_fill_only_what_is_unset() {
        let mut s = spec(json!({
            "containers": [{"name": "a"}, {"name": "b", "securityContext": {"allowPrivilegeEscalation": true, "capabilities": {"drop": ["NET_RAW"]}}}],
            "securityContext": {"runAsUser": 1000},
        }));
        restrict(&mut s);
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["automountServiceAccountToken"], false);
        assert_eq!(v["securityContext"], json!({"runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}}));
        assert_eq!(v["containers"][0]["securityContext"], json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}));
        assert_eq!(v["containers"][1]["securityContext"], json!({"allowPrivilegeEscalation": true, "capabilities": {"drop": ["NET_RAW"]}}));
    }

    #[test]
    fn the_token_goes_to_target_containers_only_and_replaces_a_users() {
        let mut s = spec(json!({"containers": [
            {"name": "t", "env": [{"name": "PODLIFE_CONTROL_TOKEN", "value": "mine"}, {"name": "X", "value": "1"}]},
            {"name": "busy", "image": "busybox"},
            {"name": "t2", "image": "localhost/podlife-target:0.1.0"},
        ]}));
        give_token(&mut s, "pe-token-abc");
        let v = serde_json::to_value(&s).unwrap();
        let token = json!({"name": "PODLIFE_CONTROL_TOKEN", "valueFrom": {"secretKeyRef": {"name": "pe-token-abc", "key": "token", "optional": false}}});
        assert_eq!(v["containers"][0]["env"], json!([{"name": "X", "value": "1"}, token]));
        assert!(v["containers"][1].get("env").is_none());
        assert_eq!(v["containers"][2]["env"], json!([token]));
    }

    #[test]
    fn only_a_same_named_experiments_objects_may_be_replaced() {
        // Before: any pod or Job named pe-<experiment> was deleted.
        let owner = |kind: &str, api: &str, name: &str| OwnerReference {
            api_version: api.into(),
            kind: kind.into(),
            name: name.into(),
            uid: "u".into(),
            ..Default::default()
        };
        assert!(may_replace("pod", "pe-x", Some(&[owner("ProbeExperiment", "podlife.io/v1alpha1", "x")]), "x").is_ok());
        for owners in [
            None,
            Some(vec![]),
            Some(vec![owner("ProbeExperiment", "podlife.io/v1alpha1", "y")]),
            Some(vec![owner("ReplicaSet", "apps/v1", "x")]),
            Some(vec![owner("ProbeExperiment", "evil.io/v1", "x")]),
        ] {
            let e = may_replace("pod", "pe-x", owners.as_deref(), "x").unwrap_err();
            assert!(e.to_string().contains("pod pe-x already exists and is not owned by a ProbeExperiment named x"), "{e}");
        }
    }

    #[test]
    fn target_control_ports_come_from_args_env_or_the_default() {
        let spec = spec(json!({
            "initContainers": [{"name": "envoy", "args": ["--probe-port", "8180", "--control-port", "9190"]}],
            "containers": [
                {"name": "app"},
                {"name": "eq", "args": ["--control-port=9290"]},
                {"name": "env", "env": [{"name": "PODLIFE_CONTROL_PORT", "value": "9390"}]},
                {"name": "other", "image": "busybox"},
            ],
        }));
        let ports = target_control_ports(&spec);
        let names: Vec<(u16, &str)> = ports.iter().map(|(p, n)| (*p, n.as_str())).collect();
        assert_eq!(names, [(9090, "app"), (9190, "envoy"), (9290, "eq"), (9390, "env")]);
    }

    #[test]
    fn the_built_pod_is_owned_tracked_restricted_and_given_its_token() {
        let mut exp = crate::crd::experiment::experiment_from_yaml_str(crate::harness::conformance::CONFORMANCE[0].1).unwrap();
        assert_eq!(build(&exp, "img", false, "s").unwrap_err(), "the experiment has no uid yet");
        exp.metadata.uid = Some("u-1".into());
        let pod = build(&exp, "localhost/podlife-target:1", false, "pe-token-u-1").unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("pe-backoff-curve"));
        let labels = pod.metadata.labels.clone().unwrap();
        assert_eq!(labels["podlife.io/track"], "true", "the recorder must track it: verdicts are judged on its report");
        assert_eq!(pod.metadata.owner_references.as_ref().unwrap()[0].uid, "u-1");
        let c = &pod.spec.as_ref().unwrap().containers[0];
        assert_eq!(c.image.as_deref(), Some("localhost/podlife-target:1"));
        assert!(c.env.iter().flatten().any(|e| e.name == TOKEN_ENV), "{:?}", c.env);
        assert_eq!(c.security_context.as_ref().and_then(|s| s.allow_privilege_escalation), Some(false));
        exp.spec.pod.host_network = Some(true);
        assert!(build(&exp, "img", false, "s").unwrap_err().contains("hostNetwork"));
        assert!(build(&exp, "img", true, "s").is_ok(), "allowed when the operator says so");
        exp.spec.pod.containers.clear();
        assert_eq!(build(&exp, "img", true, "s").unwrap_err(), "spec.pod.containers is empty");
        assert_eq!(pod_name(&"n".repeat(80)).len(), 63);
    }
}
