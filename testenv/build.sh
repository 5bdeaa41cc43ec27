#!/usr/bin/env bash
# Builds (or reuses) the test control plane: etcd, kube-apiserver, kube-controller-manager
# (for garbage collection), kubectl, helm, kube-score (a chart checker) and promtool (the
# chart's alerts), from
# the Go module proxy through the wrapper modules beside this script, into a cache
# directory keyed by their versions and laid out as KUBEBUILDER_ASSETS expects.
# Then the test node, in a subdirectory keyed by the node's own versions: kubelet and
# kube-scheduler (same Kubernetes), containerd, ctr, containerd-shim-runc-v2, runc, the CNI
# loopback plugin (cni/loopback) and two OCI image archives built here from
# testenv/node/images (pause.oci.tar, the pod sandbox; hello.oci.tar, a test HTTP server).
# runc needs cgo with libseccomp (Debian: apt-get install gcc pkg-config libseccomp-dev).
#
#   testenv/build.sh             build what is missing, print the control-plane directory
#   testenv/build.sh --no-node   the same without the test node
#   testenv/build.sh --dir       print the control-plane directory only (builds nothing)
#   testenv/build.sh --node-dir  print the test node's directory only (builds nothing)
#
# The cache root is $RENTEDHOST_TESTENV_CACHE (default ~/.cache/rentedhost-operator/testenv).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if ! command -v go >/dev/null 2>&1; then
  echo "testenv: the Go toolchain is required to build the test control plane (install Go >= 1.26 from go.dev or your distribution, then run 'make testenv')" >&2
  exit 1
fi

modver() { (cd "$here/$1" && go list -m -f '{{.Version}}' "$2"); }
k8s="$(modver kubernetes k8s.io/kubernetes)"
etcd="$(modver etcd go.etcd.io/etcd/server/v3)"
helm="$(modver helm helm.sh/helm/v3)"
score="$(modver kube-score github.com/zegl/kube-score)"
prom="$(modver promtool github.com/prometheus/prometheus)"
# The recipe's version: a change to how something is built here changes the directory.
recipe=2
root="${RENTEDHOST_TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rentedhost-operator/testenv}"
dir="$root/k8s-$k8s-etcd-$etcd-helm-$helm-kube-score-$score-r$recipe"
containerd="$(modver node/containerd github.com/containerd/containerd/v2)"
runc="$(modver node/runc github.com/opencontainers/runc)"
cni="$(modver node/cni github.com/containernetworking/plugins)"
# The node's recipe version, as above; its images are rebuilt when their sources change.
node_recipe=1
node="$dir/node-containerd-$containerd-runc-$runc-cni-$cni-r$node_recipe"
# The images' names are what the CRI looks up: fully qualified, as it normalizes a pod's
# image (example/hello:1 is docker.io/example/hello:1).
pause_ref=registry.k8s.io/pause:3.10.2
hello_ref=docker.io/example/hello:1
images_sum="$( (echo "$pause_ref $hello_ref"; cd "$here/node" && cat image.sh images/go.mod images/*/*.go) | sha256sum | cut -d' ' -f1)"

case "${1:-}" in
  --dir) echo "$dir"; exit 0 ;;
  --node-dir) echo "$node"; exit 0 ;;
  --no-node) with_node=false ;;
  "") with_node=true ;;
  *) echo "usage: $0 [--no-node | --dir | --node-dir]" >&2; exit 2 ;;
esac

complete() {
  for b in etcd kube-apiserver kube-controller-manager kubectl helm kube-score; do [ -x "$dir/$b" ] || return 1; done
  [ -f "$dir/.complete" ]
}
node_complete() {
  for b in kubelet kube-scheduler containerd ctr containerd-shim-runc-v2 runc cni/loopback; do [ -x "$node/$b" ] || return 1; done
  [ -f "$node/pause.oci.tar" ] && [ -f "$node/hello.oci.tar" ] &&
    [ "$(cat "$node/.complete" 2>/dev/null)" = "$images_sum" ]
}
# promtool (tests the chart's PrometheusRule) beside the control plane, by its own version.
promtool_complete() { [ "$(cat "$dir/.promtool" 2>/dev/null)" = "$prom" ] && [ -x "$dir/promtool" ]; }
if complete && promtool_complete && { ! $with_node || node_complete; }; then echo "$dir"; exit 0; fi

export CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false"
build() { # module-dir output package ldflags [go build flags...]
  local module="$1" out="$2" package="$3" ldflags="$4"
  shift 4
  echo "testenv: building $out from $package" >&2
  mkdir -p "$(dirname "$out")"
  (cd "$here/$module" && go build -trimpath "$@" -ldflags "-s -w $ldflags" -o "$out.tmp" "$package")
  mv "$out.tmp" "$out"
}

minor="${k8s#v1.}"; minor="${minor%%.*}"
kver=""
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  kver+=" -X '$pkg.gitVersion=$k8s' -X '$pkg.gitMajor=1' -X '$pkg.gitMinor=$minor'"
  kver+=" -X '$pkg.gitTreeState=clean' -X '$pkg.buildDate=1970-01-01T00:00:00Z'"
done

if ! complete; then
  mkdir -p "$dir"
  rm -f "$dir/.complete"
  start=$(date +%s)
  build etcd "$dir/etcd" go.etcd.io/etcd/server/v3 "-X 'go.etcd.io/etcd/api/v3/version.GitSHA=module-$etcd'"
  build kubernetes "$dir/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver "$kver"
  build kubernetes "$dir/kube-controller-manager" k8s.io/kubernetes/cmd/kube-controller-manager "$kver"
  build kubernetes "$dir/kubectl" k8s.io/kubernetes/cmd/kubectl "$kver"
  # helm's own Kubernetes version (what `helm template` and `helm lint` assume without a
  # cluster) comes from its client-go, as helm's Makefile sets it.
  hminor="$(modver helm k8s.io/client-go)"; hminor="${hminor#v0.}"; hminor="${hminor%%.*}"
  hver="-X 'helm.sh/helm/v3/internal/version.version=$helm' -X 'helm.sh/helm/v3/internal/version.gitTreeState=clean'"
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    hver+=" -X '$pkg.k8sVersionMajor=1' -X '$pkg.k8sVersionMinor=$hminor'"
  done
  build helm "$dir/helm" helm.sh/helm/v3/cmd/helm "$hver"
  build kube-score "$dir/kube-score" github.com/zegl/kube-score/cmd/kube-score "-X 'main.version=$score'"

  touch "$dir/.complete"
  echo "testenv: built in $(( $(date +%s) - start )) s into $dir" >&2
fi

if ! promtool_complete; then
  # Module v0.316.0 is Prometheus 3.16.0.
  pver="$(echo "$prom" | sed -E 's/^v0\.([0-9])([0-9]+)\.([0-9]+)$/\1.\2.\3/')"
  build promtool "$dir/promtool" github.com/prometheus/prometheus/cmd/promtool \
    "-X 'github.com/prometheus/common/version.Version=$pver' -X 'github.com/prometheus/common/version.Revision=module-$prom'"
  echo "$prom" >"$dir/.promtool"
fi

if $with_node && ! node_complete; then
  if ! command -v gcc >/dev/null || ! pkg-config --exists libseccomp 2>/dev/null; then
    echo "testenv: runc (for the test node) needs cgo with libseccomp: install gcc, pkg-config and libseccomp-dev (Debian: apt-get install gcc pkg-config libseccomp-dev), or run '$0 --no-node'" >&2
    exit 1
  fi
  mkdir -p "$node"
  rm -f "$node/.complete"
  start=$(date +%s)
  # The binaries (marker .binaries) depend on the versions alone, the images (marker
  # .complete, holding their sum) on their sources here too.
  if [ ! -f "$node/.binaries" ]; then
    build kubernetes "$node/kubelet" k8s.io/kubernetes/cmd/kubelet "$kver"
    build kubernetes "$node/kube-scheduler" k8s.io/kubernetes/cmd/kube-scheduler "$kver"
    # containerd as its Makefile builds it (GO_BUILDTAGS, SHIM_GO_BUILDTAGS) without cgo:
    # so without the btrfs snapshotter (cgo only); devmapper and zfs left out as well.
    cver="-X 'github.com/containerd/containerd/v2/version.Version=$containerd'"
    cver+=" -X 'github.com/containerd/containerd/v2/version.Revision=module-$containerd'"
    ctags="urfave_cli_no_docs no_btrfs no_devmapper no_zfs"
    for b in containerd ctr; do
      build node/containerd "$node/$b" "github.com/containerd/containerd/v2/cmd/$b" "$cver" -tags "$ctags"
    done
    build node/containerd "$node/containerd-shim-runc-v2" github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
      "$cver" -tags "$ctags no_grpc"
    # runc as `make static` builds it, but with pathrs-lite (pure Go) in place of libpathrs
    # (a Rust library Debian lacks): cgo for nsenter and libseccomp, a static PIE.
    CGO_ENABLED=1 build node/runc "$node/runc" github.com/opencontainers/runc \
      "-X main.gitCommit=module-$runc -linkmode external -extldflags -static-pie" \
      -buildmode=pie -tags "seccomp urfave_cli_no_docs netgo osusergo"
    build node/cni "$node/cni/loopback" github.com/containernetworking/plugins/plugins/main/loopback \
      "-X 'github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=$cni'"
    touch "$node/.binaries"
  fi
  build node/images "$node/images/pause" ./pause ""
  build node/images "$node/images/hello" ./hello ""
  "$here/node/image.sh" "$node/images/pause" "$pause_ref" 65535:65535 "$node/pause.oci.tar"
  "$here/node/image.sh" "$node/images/hello" "$hello_ref" 65532:65532 "$node/hello.oci.tar"
  echo "$images_sum" >"$node/.complete"
  echo "testenv: built the test node in $(( $(date +%s) - start )) s into $node" >&2
fi
echo "$dir"
