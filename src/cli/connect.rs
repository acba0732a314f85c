//! How kubectl-podlife reaches a cluster: kubectl's own flags, with kubectl's defaults.

use std::path::PathBuf;

use kube::Client;
use kube::config::{Config, KubeConfigOptions, Kubeconfig};

/// `--kubeconfig`, `--context` and `-n/--namespace`, as kubectl takes them. kubectl passes a
/// plugin's arguments through unchanged, so `kubectl podlife --context kind-kind ...` works.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ConnectArgs {
    /// The kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true, value_hint = clap::ValueHint::FilePath)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: the current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// The namespace (default: the context's namespace, else "default").
    #[arg(short = 'n', long, global = true, env = "PODLIFE_NAMESPACE")]
    pub namespace: Option<String>,
}

/// A client, the namespace commands default to, and a name for the cluster in messages.
pub struct Connection {
    pub client: Client,
    pub namespace: String,
    pub cluster: String,
}

/// Errors reaching the cluster; each says which kubeconfig or context.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read kubeconfig {path}")]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("cannot use {what}")]
    Config {
        what: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("no usable cluster configuration (from $KUBECONFIG, ~/.kube/config, or the pod's service account)")]
    Infer(#[source] kube::config::InferConfigError),
    #[error("cannot build a client for {cluster}")]
    Client {
        cluster: String,
        #[source]
        source: kube::Error,
    },
}

impl ConnectArgs {
    /// Connects as kubectl would with the same flags.
    ///
    /// # Errors
    /// The kubeconfig cannot be read, the context does not exist, or no cluster is configured.
    pub async fn connect(&self) -> Result<Connection, Error> {
        let options = KubeConfigOptions { context: self.context.clone(), ..KubeConfigOptions::default() };
        let what = || match (&self.kubeconfig, &self.context) {
            (Some(p), Some(c)) => format!("context {c} of kubeconfig {}", p.display()),
            (Some(p), None) => format!("the current context of kubeconfig {}", p.display()),
            (None, Some(c)) => format!("context {c}"),
            (None, None) => "the current context".to_string(),
        };
        let config = match &self.kubeconfig {
            Some(path) => {
                let kubeconfig =
                    Kubeconfig::read_from(path).map_err(|source| Error::Kubeconfig { path: path.display().to_string(), source })?;
                Config::from_custom_kubeconfig(kubeconfig, &options).await.map_err(|source| Error::Config { what: what(), source })?
            }
            None if self.context.is_some() => {
                Config::from_kubeconfig(&options).await.map_err(|source| Error::Config { what: what(), source })?
            }
            None => Config::infer().await.map_err(Error::Infer)?,
        };
        let cluster = match &self.context {
            Some(c) => format!("context {c} ({})", config.cluster_url),
            None => config.cluster_url.to_string(),
        };
        let namespace = self.namespace.clone().unwrap_or_else(|| config.default_namespace.clone());
        // Every request is bounded: a stalled connection fails instead of hanging a wait.
        let mut config = config;
        config.read_timeout = Some(std::time::Duration::from_secs(30));
        config.connect_timeout = Some(std::time::Duration::from_secs(10));
        let client = Client::try_from(config).map_err(|source| Error::Client { cluster: cluster.clone(), source })?;
        Ok(Connection { client, namespace, cluster })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECONFIG: &str = "apiVersion: v1\nkind: Config\ncurrent-context: one\n\
        clusters:\n- name: c1\n  cluster: {server: 'https://10.0.0.1:6443'}\n- name: c2\n  cluster: {server: 'https://10.0.0.2:6443'}\n\
        users:\n- name: u\n  user: {token: t}\n\
        contexts:\n- name: one\n  context: {cluster: c1, user: u, namespace: team-a}\n- name: two\n  context: {cluster: c2, user: u}\n";

    #[tokio::test]
    async fn the_context_and_its_namespace_are_honoured() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, KUBECONFIG).unwrap();
        let args = |context: Option<&str>, namespace: Option<&str>| ConnectArgs {
            kubeconfig: Some(path.clone()),
            context: context.map(str::to_string),
            namespace: namespace.map(str::to_string),
        };
        let current = args(None, None).connect().await.unwrap();
        assert_eq!((current.namespace.as_str(), current.cluster.as_str()), ("team-a", "https://10.0.0.1:6443/"), "the context's namespace");
        let two = args(Some("two"), None).connect().await.unwrap();
        assert_eq!((two.namespace.as_str(), two.cluster.as_str()), ("default", "context two (https://10.0.0.2:6443/)"));
        assert_eq!(args(Some("one"), Some("mine")).connect().await.unwrap().namespace, "mine", "-n wins");
        let missing = args(Some("three"), None).connect().await.err().unwrap();
        assert!(missing.to_string().contains("context three of kubeconfig"), "{missing}");
    }
}
