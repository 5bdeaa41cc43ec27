#!/usr/bin/env bash
# Builds (or reuses) the test control plane: etcd, kube-apiserver, kube-controller-manager
# (for garbage collection), kubectl, helm and kube-score (a chart checker), from
# the Go module proxy through the wrapper modules beside this script, into a cache
# directory keyed by their versions and laid out as KUBEBUILDER_ASSETS expects.
#
#   testenv/build.sh          build when missing, print the directory
#   testenv/build.sh --dir    print the directory only (builds nothing)
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
# The recipe's version: a change to how something is built here changes the directory.
recipe=2
root="${RENTEDHOST_TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rentedhost-operator/testenv}"
dir="$root/k8s-$k8s-etcd-$etcd-helm-$helm-kube-score-$score-r$recipe"

if [ "${1:-}" = "--dir" ]; then echo "$dir"; exit 0; fi

complete() {
  for b in etcd kube-apiserver kube-controller-manager kubectl helm kube-score; do [ -x "$dir/$b" ] || return 1; done
  [ -f "$dir/.complete" ]
}
if complete; then echo "$dir"; exit 0; fi

mkdir -p "$dir"
rm -f "$dir/.complete"
start=$(date +%s)
export CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false"
build() { # module-dir output package ldflags
  echo "testenv: building $2 from $3" >&2
  (cd "$here/$1" && go build -trimpath -ldflags "-s -w $4" -o "$dir/$2.tmp" "$3")
  mv "$dir/$2.tmp" "$dir/$2"
}

minor="${k8s#v1.}"; minor="${minor%%.*}"
kver=""
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  kver+=" -X '$pkg.gitVersion=$k8s' -X '$pkg.gitMajor=1' -X '$pkg.gitMinor=$minor'"
  kver+=" -X '$pkg.gitTreeState=clean' -X '$pkg.buildDate=1970-01-01T00:00:00Z'"
done
build etcd etcd go.etcd.io/etcd/server/v3 "-X 'go.etcd.io/etcd/api/v3/version.GitSHA=module-$etcd'"
build kubernetes kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$kver"
build kubernetes kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager "$kver"
build kubernetes kubectl k8s.io/kubernetes/cmd/kubectl "$kver"
# helm's own Kubernetes version (what `helm template` and `helm lint` assume without a
# cluster) comes from its client-go, as helm's Makefile sets it.
hminor="$(modver helm k8s.io/client-go)"; hminor="${hminor#v0.}"; hminor="${hminor%%.*}"
hver="-X 'helm.sh/helm/v3/internal/version.version=$helm' -X 'helm.sh/helm/v3/internal/version.gitTreeState=clean'"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  hver+=" -X '$pkg.k8sVersionMajor=1' -X '$pkg.k8sVersionMinor=$hminor'"
done
build helm helm helm.sh/helm/v3/cmd/helm "$hver"
build kube-score kube-score github.com/zegl/kube-score/cmd/kube-score "-X 'main.version=$score'"

touch "$dir/.complete"
echo "testenv: built in $(( $(date +%s) - start )) s into $dir" >&2
echo "$dir"
