# Shared settings for podlife's local-cluster tooling. Sourced, never run.
# Everything that names a version or a path lives here so that up/down/build agree.

K8S_VERSION="${PODLIFE_K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${PODLIFE_ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${PODLIFE_HELM_VERSION:-v3.22.0}"
KREW_VERSION="${PODLIFE_KREW_VERSION:-v0.4.3}"

# Heavy builds are cached by version under a stable directory that survives checkouts.
CACHE_DIR="${PODLIFE_CACHE_DIR:-/var/cache/podlife}"
K8S_BIN="$CACHE_DIR/kubernetes/$K8S_VERSION/bin"
ETCD_BIN="$CACHE_DIR/etcd/$ETCD_VERSION/bin"
HELM_BIN="$CACHE_DIR/helm/$HELM_VERSION/bin"
KREW_BIN="$CACHE_DIR/krew/$KREW_VERSION/bin"

# Runtime state of the one local cluster: pids, logs, certs, configs, data.
STATE_DIR="${PODLIFE_STATE_DIR:-/var/lib/podlife-cluster}"

log()  { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die()  { printf 'error: %s\n' "$*" >&2; exit 1; }

# Runs "$@" and prints how long it took, so long steps show progress and cost.
timed() {
  local start=$SECONDS
  "$@"
  local rc=$?
  log "$1 took $((SECONDS - start))s (exit $rc)"
  return $rc
}

# manifests/install.yaml: the chart rendered with its defaults, for plain-YAML users, with its
# namespace first so that `kubectl apply -f` works from any current namespace.
render_install_yaml() {
  printf -- '---\n# The namespace every namespaced object below names.\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: podlife-system\n'
  "$HELM_BIN/helm" template podlife charts/podlife --namespace podlife-system --include-crds --kube-version "${K8S_VERSION#v}"
}
