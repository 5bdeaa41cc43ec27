#!/usr/bin/env bash
# CI's check of the demo: `make demo` brings every example to Ready (it fails otherwise) with
# the operator running as a pod under the kubelet (node mode, when this machine can run a
# node), a second run reuses what runs, and `make demo-stop` leaves no process, no node
# and no file behind.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
state="$root/target/demo"
cd "$root"
start=$SECONDS
make demo
echo "demo-check: make demo took $((SECONDS - start)) s ($(cat "$state/run/mode") mode)"
mode="$(cat "$state/run/mode")"
node_dir=""
if [ "$mode" = node ]; then
  node_dir="$(cat "$state/run/node.dir")"
  kubectl="$(testenv/build.sh --dir)/kubectl --kubeconfig=$state/kubeconfig"
  # The operator is the chart's pod, Ready under the kubelet's probes, and it wrote the
  # examples' status (their Ready condition names its reason).
  ready="$($kubectl -n rentedhost-system get pods -l app.kubernetes.io/name=rentedhost-operator \
    -o 'jsonpath={.items[0].status.conditions[?(@.type=="Ready")].status}')"
  [ "$ready" = True ] || { echo "demo-check: the operator's pod is not Ready" >&2; exit 1; }
  $kubectl -n rentedhost-system logs deploy/rentedhost-operator | grep -q leading ||
    { echo "demo-check: the operator's pod never led" >&2; exit 1; }
  echo "demo-check: the operator runs as a pod under the kubelet and leads"
fi
start=$SECONDS
make demo >/dev/null
echo "demo-check: again, $((SECONDS - start)) s"
pids="$(cat "$state"/run/*.pid 2>/dev/null || true)"
[ -z "$node_dir" ] || pids+=" $(cat "$node_dir"/pids/* 2>/dev/null || true)"
make demo-stop
left=""
for pid in $pids; do kill -0 "$pid" 2>/dev/null && left+=" $pid"; done
[ -z "$left" ] || { echo "demo-check: still running after demo-stop:$left" >&2; exit 1; }
[ ! -e "$state" ] || { echo "demo-check: $state is still there" >&2; exit 1; }
if [ -n "$node_dir" ]; then
  [ ! -e "$node_dir" ] || { echo "demo-check: $node_dir is still there" >&2; exit 1; }
  if ip -4 -o addr show dev lo | grep -q " 198.51.100.21/"; then
    echo "demo-check: the node's address is still on lo" >&2
    exit 1
  fi
fi
echo "demo-check: demo-stop left nothing running and removed $state${node_dir:+ and $node_dir}"
