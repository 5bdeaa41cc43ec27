#!/usr/bin/env bash
# Proof that the test node works, end to end (root; builds with testenv/build.sh first):
#
#   testenv/node/demo.sh            (KEEP=1 to leave everything running for a look)
#
# Starts the control plane and the node in a new /tmp/rh-node-XXXXXX, runs a host-network
# Deployment of docker.io/example/hello:1 with a readiness probe and the default
# service-account token, checks the token reached the container, deletes a pod
# (SIGTERM reaches it), evicts one (refused under a PodDisruptionBudget, then allowed),
# drains the node, then stops everything and checks nothing is left behind.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$here/../build.sh" >/dev/null
D="$("$here/../build.sh" --dir)"
W="$(mktemp -d /tmp/rh-node-XXXXXX)"
node_ip="${NODE_IP:-198.51.100.10}"
k() { "$D/kubectl" --kubeconfig="$W/kubeconfig" "$@"; }
now() { date +%s.%N; }
since() { python3 -c "print(f'{$(now) - $1:.1f}')"; }
step() { echo; echo "=== $* ($(since "$t0") s)"; }
links_before="$(ip -o link | awk '{print $2}' | sort)"
mounts_before="$(wc -l </proc/self/mounts)"
cleanup() {
  local rc=$?
  if [ "${KEEP:-}" = 1 ]; then echo "kept: $W (stop with $here/down.sh $W)"; return; fi
  echo; echo "=== cleanup"
  local c0; c0=$(now)
  "$here/down.sh" "$W" || rc=1
  echo "down.sh took $(since "$c0") s"
  [ ! -e "$W" ] && echo "workdir removed"
  echo "mounts: $mounts_before before, $(wc -l </proc/self/mounts) after"
  grep -q "$W" /proc/self/mounts && { echo "MOUNTS LEFT"; rc=1; }
  [ -e /var/lib/kubelet ] || [ -e /var/log/containers ] && echo "(/var/lib/kubelet or /var/log/containers exists: $(ls -d /var/lib/kubelet /var/log/containers 2>/dev/null))"
  ls -d /sys/fs/cgroup/*/"$(basename "$W")" 2>/dev/null && { echo "CGROUPS LEFT"; rc=1; }
  [ "$(ip -o link | awk '{print $2}' | sort)" = "$links_before" ] && echo "network links unchanged: $(echo $links_before)"
  ip -4 -o addr show dev lo | grep -q " $node_ip/" && { echo "NODE IP LEFT ON lo"; rc=1; }
  if command -v iptables >/dev/null; then echo "iptables rules:"; iptables -S; else echo "iptables: not installed"; fi
  if command -v nft >/dev/null; then echo "nft ruleset:"; nft list ruleset; else echo "nft: not installed"; fi
  exit $rc
}
trap cleanup EXIT

t0=$(now)
step "control plane"
"$here/control-plane.sh" "$W" >/dev/null
step "node"
"$here/node-up.sh" "$W" "$W/kubeconfig" 2> >(grep -v DEPRECATION >&2)
step "node Ready"

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cat >"$W/hello.yaml" <<EOF
apiVersion: apps/v1
kind: Deployment
metadata:
  name: hello
  namespace: default
spec:
  replicas: 1
  selector:
    matchLabels: {app: hello}
  template:
    metadata:
      labels: {app: hello}
    spec:
      hostNetwork: true
      terminationGracePeriodSeconds: 10
      containers:
      - name: hello
        image: example/hello:1
        imagePullPolicy: IfNotPresent
        args: ["-listen=\$(POD_IP):$port", "-grace=2s"]
        env:
        - name: POD_IP
          valueFrom: {fieldRef: {fieldPath: status.podIP}}
        ports:
        - containerPort: $port
        readinessProbe:
          httpGet: {path: /healthz, port: $port}
          periodSeconds: 1
        securityContext:
          runAsNonRoot: true
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {drop: [ALL]}
          seccompProfile: {type: RuntimeDefault}
EOF
t1=$(now)
k apply -f "$W/hello.yaml"
# (condition Available is True at once: with one replica, maxUnavailable 25% rounds to 0 pods
# that must be available; so wait for the available replica itself.)
wait_available() { k wait --for=jsonpath='{.status.availableReplicas}'=1 deploy/hello --timeout="$1"; }
wait_available 90s
step "Deployment available (its pod Ready) $(since "$t1") s after apply"
k get pods -o wide
pod="$(k get pods -l app=hello -o jsonpath='{.items[0].metadata.name}')"
k wait --for=condition=Ready "pod/$pod" --timeout=10s
echo "--- logs (through the API server and the kubelet):"
k logs "$pod"
k logs "$pod" | grep -q 'token: [1-9][0-9]* bytes'
echo "--- exec (API server, kubelet, containerd's stream server): the token's namespace file and the CA:"
k exec "$pod" -- /hello -cat /var/run/secrets/kubernetes.io/serviceaccount/namespace; echo
k exec "$pod" -- /hello -cat /var/run/secrets/kubernetes.io/serviceaccount/ca.crt | head -1
echo "--- volumes the ServiceAccount admission plugin added:"
k get pod "$pod" -o jsonpath='{range .spec.volumes[*]}{.name}: {.projected.sources[*]}{"\n"}{end}'
echo "--- from the host, http://$node_ip:$port/:"
python3 -c "import urllib.request; print(urllib.request.urlopen('http://$node_ip:$port/').read().decode().strip())"
echo "--- mounts under $W now, in the node's mount namespace (the host's has none):"
awk -v w="$W" 'index($2, w) == 1 { print $3, $2 }' /proc/self/mounts | sed "s|$W|\$W|"
awk -v w="$W" 'index($2, w) == 1 || $2 ~ /^\/var\/(lib\/kubelet|log\/containers)$/ { print $3, $2 }' \
  "/proc/$(cat "$W/pids/mntns")/mounts" | sed "s|$W|\$W|"

step "delete pod $pod (graceful: SIGTERM)"
k logs -f "$pod" >"$W/deleted-pod.log" 2>&1 &
follow=$!
sleep 1
t2=$(now)
k delete pod "$pod" --wait=true --timeout=60s
echo "deleted in $(since "$t2") s"
wait "$follow" || true
cat "$W/deleted-pod.log"
grep -q 'received terminated' "$W/deleted-pod.log"
wait_available 60s
k get pods -o wide

step "evictions"
pod="$(k get pods -l app=hello --field-selector=status.phase=Running -o jsonpath='{.items[0].metadata.name}')"
k apply -f - <<EOF
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: hello
  namespace: default
spec:
  minAvailable: 1
  selector:
    matchLabels: {app: hello}
EOF
for _ in $(seq 60); do
  [ "$(k get pdb hello -o jsonpath='{.status.observedGeneration}')" = 1 ] && break
  sleep 0.5
done
k get pdb hello
eviction="{\"apiVersion\":\"policy/v1\",\"kind\":\"Eviction\",\"metadata\":{\"name\":\"$pod\",\"namespace\":\"default\"}}"
echo "$eviction" >"$W/eviction.json"
if k create --raw "/api/v1/namespaces/default/pods/$pod/eviction" -f "$W/eviction.json" 2>"$W/eviction.err"; then
  echo "EVICTION NOT REFUSED"; exit 1
fi
echo "refused under the budget: $(cat "$W/eviction.err")"
k delete pdb hello
k logs -f "$pod" >"$W/evicted-pod.log" 2>&1 &
follow=$!
sleep 1
k create --raw "/api/v1/namespaces/default/pods/$pod/eviction" -f "$W/eviction.json"
echo
k wait --for=delete "pod/$pod" --timeout=60s
wait "$follow" || true
cat "$W/evicted-pod.log"
grep -q 'received terminated' "$W/evicted-pod.log"
wait_available 60s

step "drain"
k drain testenv-node --ignore-daemonsets --timeout=60s
k get pods -o wide
k uncordon testenv-node
wait_available 60s
k get pods -o wide
step "done"
