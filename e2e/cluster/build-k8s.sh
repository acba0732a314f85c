#!/usr/bin/env bash
# Builds the Kubernetes components from the official k8s.io/kubernetes Go module, and etcd
# from go.etcd.io/etcd/server/v3, into a cache keyed by version. A second run is a no-op.
#
# k8s.io/kubernetes cannot be `go install`ed directly: its go.mod replaces every staging
# module with ./staging/... So, as kubernetes/kubernetes#79384 suggests, a helper module
# requires it and replaces each staging module with its published v0.X.Y twin.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/lib.sh"

components=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

build_kubernetes() {
  local stamp="$K8S_BIN/.complete"
  if [[ -f "$stamp" ]]; then log "kubernetes $K8S_VERSION cached in $K8S_BIN"; return; fi
  local staging_version="v0.${K8S_VERSION#v1.}"
  local work="$CACHE_DIR/kubernetes/$K8S_VERSION/module"
  rm -rf "$work" && mkdir -p "$work" "$K8S_BIN"
  log "downloading k8s.io/kubernetes@$K8S_VERSION (module proxy)"
  local dir
  dir="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')"
  [[ -n "$dir" && -f "$dir/go.mod" ]] || die "could not locate k8s.io/kubernetes@$K8S_VERSION in the module cache"
  # The authoritative staging list is the `=> ./staging/...` lines of that version's go.mod.
  local staging
  staging="$(sed -n 's/^\s*\(k8s\.io\/[a-z0-9-]*\) => \.\/staging\/.*/\1/p' "$dir/go.mod" | sort -u)"
  [[ -n "$staging" ]] || die "no staging replaces found in $dir/go.mod"
  log "replacing $(wc -l <<<"$staging") staging modules with $staging_version"
  {
    echo "module podlife.local/k8sbuild"
    echo
    echo "go $(sed -n 's/^go \([0-9.]*\).*/\1/p' "$dir/go.mod")"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    while read -r m; do echo "	$m => $m $staging_version"; done <<<"$staging"
    echo ")"
  } >"$work/go.mod"
  local pkgs=()
  for c in "${components[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c@$K8S_VERSION"); done
  (cd "$work" && GOFLAGS=-mod=mod go get "${pkgs[@]}")
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local ldflags="-s -w"
  ldflags+=" -X k8s.io/component-base/version.gitVersion=$K8S_VERSION"
  ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
  ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
  for c in "${components[@]}"; do
    log "go build $c"
    (cd "$work" && CGO_ENABLED=0 go build -mod=mod -trimpath -tags selinux,notest \
        -ldflags "$ldflags" -o "$K8S_BIN/$c" "k8s.io/kubernetes/cmd/$c")
  done
  "$K8S_BIN/kubelet" --version
  touch "$stamp"
}

build_etcd() {
  local stamp="$ETCD_BIN/.complete"
  if [[ -f "$stamp" ]]; then log "etcd $ETCD_VERSION cached in $ETCD_BIN"; return; fi
  local work="$CACHE_DIR/etcd/$ETCD_VERSION/module"
  rm -rf "$work" && mkdir -p "$work" "$ETCD_BIN"
  printf 'module podlife.local/etcdbuild\n\ngo 1.24\n' >"$work/go.mod"
  (cd "$work" && GOFLAGS=-mod=mod go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" \
     && CGO_ENABLED=0 go build -mod=mod -trimpath -ldflags "-s -w" -o "$ETCD_BIN/etcd" go.etcd.io/etcd/server/v3)
  "$ETCD_BIN/etcd" --version | head -1
  touch "$stamp"
}

# go_tool NAME VERSION BIN_DIR PACKAGE: `go install PACKAGE@VERSION` into BIN_DIR, once per version.
go_tool() {
  local name=$1 version=$2 dir=$3 package=$4
  if [[ -f "$dir/.complete" ]]; then log "$name $version cached in $dir"; return; fi
  mkdir -p "$dir"
  CGO_ENABLED=0 GOBIN="$dir" go install -trimpath -ldflags "-s -w" "$package@$version"
  touch "$dir/.complete"
}

build_helm() { go_tool helm "$HELM_VERSION" "$HELM_BIN" helm.sh/helm/v3/cmd/helm; }

# krew (the kubectl plugin manager) checks podlife's plugin manifest against a local archive.
build_krew() { go_tool krew "$KREW_VERSION" "$KREW_BIN" sigs.k8s.io/krew/cmd/krew; }

case "${1:-all}" in
  kubernetes) timed build_kubernetes ;;
  etcd) timed build_etcd ;;
  helm) timed build_helm ;;
  krew) timed build_krew ;;
  all) timed build_etcd; timed build_kubernetes; timed build_helm; timed build_krew ;;
  *) die "usage: $0 [all|kubernetes|etcd|helm|krew]" ;;
esac
