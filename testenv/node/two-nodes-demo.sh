#!/usr/bin/env bash
# Proof that two test nodes run at once on one host (root; builds with testenv/build.sh
# first):
#
#   testenv/node/two-nodes-demo.sh      (KEEP=1 to leave everything running for a look)
#
#   env NODE1_IP, NODE2_IP  the nodes' addresses (default 198.51.100.10, 198.51.100.11)
#       PORT            the host port the pods listen on (default 8080)
#   exit 0 when every check passed, the teardown included
#
# The control plane in /tmp/rh-cp-XXXXXX, nodes testenv-node-1 and testenv-node-2 in
# /tmp/rh-n1-XXXXXX and /tmp/rh-n2-XXXXXX (started at once, each in its own mount
# namespace with its own containerd). Then: a 2-replica host-network Deployment of
# docker.io/example/hello:1 on PORT (one pod per node: for a host-network pod the
# containerPort is a host port); a PodDisruptionBudget (minAvailable 1) and evictions
# through the Eviction API (one allowed, the next refused); `kubectl drain` of node 1
# (completes; the replacement stays Pending: node 2's port is taken, node 1 cordoned) and
# of node 2 (blocked by the budget); uncordon; a rolling update (maxSurge 1,
# maxUnavailable 0) of a 1-replica host-network Deployment, twice, the surge pod landing
# on the other node each time. Then down.sh for each WORKDIR and a check that nothing is
# left: processes, mount namespaces, mounts, cgroups, addresses on lo, sysctls,
# /var/lib/kubelet, /var/log/containers, /run/rh-testenv/nodes.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$here/../build.sh" >/dev/null
D="$("$here/../build.sh" --dir)"
ip1="${NODE1_IP:-198.51.100.10}" ip2="${NODE2_IP:-198.51.100.11}" port="${PORT:-8080}"
n1=testenv-node-1 n2=testenv-node-2
k() { "$D/kubectl" --kubeconfig="$CP/kubeconfig" "$@"; }
now() { date +%s.%N; }
since() { python3 -c "print(f'{$(now) - $1:.1f}')"; }
step() { echo; echo "=== $* ($(since "$t0") s)"; }
fail() { echo "FAILED: $*"; exit 1; }

sysctl_keys="vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes"
sysctls() { for s in $sysctl_keys; do echo "$s=$(sysctl -n "$s")"; done; }
host_dirs() { for d in /var/lib/kubelet /var/log/containers; do [ -e "$d" ] && echo "$d: $(ls -A "$d" | wc -l) entries" || echo "$d: absent"; done; }
mounts_before="$(sort /proc/self/mounts)"
lo_before="$(ip -o addr show dev lo)"
sysctls_before="$(sysctls)"
dirs_before="$(host_dirs)"
echo "before: $(echo "$mounts_before" | wc -l) mounts; sysctls: $(echo $sysctls_before)"
echo "before: $(echo $dirs_before)"

CP="$(mktemp -d /tmp/rh-cp-XXXXXX)" W1="$(mktemp -d /tmp/rh-n1-XXXXXX)" W2="$(mktemp -d /tmp/rh-n2-XXXXXX)"
echo "control plane $CP, $n1 $W1 ($ip1), $n2 $W2 ($ip2)"
namespaces=()
cleanup() {
  local rc=$? w c0 left
  trap - EXIT
  set +e
  if [ "${KEEP:-}" = 1 ]; then echo "kept: stop with: $here/down.sh $W2; $here/down.sh $W1; $here/down.sh $CP"; return; fi
  echo; echo "=== teardown (rc so far $rc)"
  [ "${#namespaces[@]}" -gt 0 ] || for w in "$W1" "$W2"; do [ -f "$w/mntns" ] && namespaces+=("$(cat "$w/mntns")"); done
  for w in "$W2" "$W1" "$CP"; do
    [ -e "$w" ] || continue
    c0=$(now)
    "$here/down.sh" "$w" || rc=1
    echo "down.sh $w: $(since "$c0") s, $([ -e "$w" ] && echo "WORKDIR LEFT" || echo "WORKDIR removed")"
    [ -e "$w" ] && rc=1
  done
  echo "--- what is left:"
  left="$(pgrep -af -- "$CP|$W1|$W2" || true)"
  [ -z "$left" ] && echo "processes naming a WORKDIR: none" || { echo "PROCESSES LEFT: $left"; rc=1; }
  left=""
  for p in /proc/[0-9]*; do
    n="$(readlink "$p/ns/mnt" 2>/dev/null)" || continue
    for ns in "${namespaces[@]}"; do [ "$n" = "$ns" ] && left+=" ${p#/proc/}"; done
  done
  [ -z "$left" ] && echo "processes in the nodes' mount namespaces (${namespaces[*]}): none" || { echo "PROCESSES IN THE NODES' NAMESPACES:$left"; rc=1; }
  [ "$(sort /proc/self/mounts)" = "$mounts_before" ] && echo "mounts: the same $(wc -l </proc/self/mounts) as before" ||
    { echo "MOUNTS CHANGED:"; diff <(echo "$mounts_before") <(sort /proc/self/mounts); rc=1; }
  left="$(ls -d /sys/fs/cgroup/*/"$(basename "$W1")" /sys/fs/cgroup/*/"$(basename "$W2")" 2>/dev/null || true)"
  [ -z "$left" ] && echo "cgroups: none left" || { echo "CGROUPS LEFT: $left"; rc=1; }
  [ "$(ip -o addr show dev lo)" = "$lo_before" ] && echo "lo: the same addresses as before: $(ip -4 -o addr show dev lo | awk '{print $4}')" ||
    { echo "LO CHANGED: $(ip -o addr show dev lo)"; rc=1; }
  [ "$(sysctls)" = "$sysctls_before" ] && echo "sysctls: restored: $(echo $(sysctls))" || { echo "SYSCTLS NOT RESTORED: $(echo $(sysctls))"; rc=1; }
  [ "$(host_dirs)" = "$dirs_before" ] && echo "host dirs as before: $(echo $(host_dirs))" || { echo "HOST DIRS CHANGED: $(echo $(host_dirs))"; rc=1; }
  left="$(ls -A /run/rh-testenv/nodes 2>/dev/null; ls /run/rh-testenv/sysctl.saved /run/rh-testenv/host-dirs-created 2>/dev/null || true)"
  [ -z "$left" ] && echo "/run/rh-testenv: no node registered ($(ls -A /run/rh-testenv | tr '\n' ' '))" || { echo "REGISTRY LEFT: $left"; rc=1; }
  echo; [ "$rc" = 0 ] && echo "=== all good" || echo "=== FAILED (rc $rc)"
  exit "$rc"
}
trap cleanup EXIT

t0=$(now)
step "control plane"
"$here/control-plane.sh" "$CP" >/dev/null
step "control plane up; both nodes at once"
ready_line() { grep -h 'node-up:.*Ready' "$1" || true; }
( t=$(now); NODE_NAME=$n1 NODE_IP=$ip1 "$here/node-up.sh" "$W1" "$CP/kubeconfig" >"$W1/node-up.out" 2>"$W1/node-up.err"
  echo "$n1: node-up.sh done in $(since "$t") s" ) &
up1=$!
( t=$(now); NODE_NAME=$n2 NODE_IP=$ip2 "$here/node-up.sh" "$W2" "$CP/kubeconfig" >"$W2/node-up.out" 2>"$W2/node-up.err"
  echo "$n2: node-up.sh done in $(since "$t") s" ) &
up2=$!
rc1=0 rc2=0
wait "$up1" || rc1=$?
wait "$up2" || rc2=$?
ready_line "$W1/node-up.err"; ready_line "$W2/node-up.err"
[ "$rc1" = 0 ] || { grep -v DEPRECATION "$W1/node-up.err"; fail "node-up $n1"; }
[ "$rc2" = 0 ] || { grep -v DEPRECATION "$W2/node-up.err"; fail "node-up $n2"; }
step "both nodes Ready"
namespaces=("$(cat "$W1/mntns")" "$(cat "$W2/mntns")")
k get nodes -o wide
echo "--- the host's mount table: $(wc -l </proc/self/mounts) entries, none under a WORKDIR: $(grep -c -e "$W1" -e "$W2" /proc/self/mounts || true)"
for w in "$W1" "$W2"; do
  h="$(cat "$w/pids/mntns")"
  echo "--- $(cut -d' ' -f1 "$w/node"): mount namespace $(cat "$w/mntns") (holder pid $h; containerd $(readlink "/proc/$(cat "$w/pids/containerd")/ns/mnt"), kubelet $(readlink "/proc/$(cat "$w/pids/kubelet")/ns/mnt")): $(wc -l <"/proc/$h/mounts") mounts, among them"
  awk '$2 ~ /^\/var\/(lib\/kubelet|log\/containers)$/ { print "   ", $2, "<-", $1, $3 }' "/proc/$h/mounts"
  echo "    device-plugins: $(ls "$w/ns/var-lib-kubelet/device-plugins" | tr '\n' ' ')"
done
echo "--- the host's: $(echo $(host_dirs))"

step "Deployment hello: 2 host-network replicas on port $port"
cat >"$CP/hello.yaml" <<EOF
apiVersion: apps/v1
kind: Deployment
metadata:
  name: hello
  namespace: default
spec:
  replicas: 2
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
        args: ["-listen=\$(POD_IP):$port", "-grace=1s"]
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
k apply -f "$CP/hello.yaml"
avail() { k wait --for=jsonpath='{.status.availableReplicas}'="$2" "deploy/$1" --timeout="$3"; }
avail hello 2 90s
echo "both Ready $(since "$t1") s after apply"
k get pods -l app=hello -o wide
pods_on() { k get pods -l "app=$1" --field-selector="spec.nodeName=$2" -o jsonpath='{range .items[*]}{.metadata.name}{" "}{end}'; }
[ -n "$(pods_on hello $n1)" ] && [ -n "$(pods_on hello $n2)" ] || fail "the two pods are not on different nodes"
echo "hostPort the API server defaulted: $(k get pods -l app=hello -o jsonpath='{.items[0].spec.containers[0].ports[0].hostPort}')"
for ip in "$ip1" "$ip2"; do
  echo "--- http://$ip:$port/ from the host: $(python3 -c "import urllib.request; print(urllib.request.urlopen('http://$ip:$port/').read().decode().strip())")"
done
for p in $(k get pods -l app=hello -o jsonpath='{.items[*].metadata.name}'); do echo "--- logs $p: $(k logs "$p" | grep listening)"; done

step "PodDisruptionBudget minAvailable 1; evictions through the Eviction API"
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
k wait --for=jsonpath='{.status.disruptionsAllowed}'=1 pdb/hello --timeout=30s
k get pdb hello
evict() { # pod: the Eviction API (policy/v1), what kubectl drain uses
  echo "{\"apiVersion\":\"policy/v1\",\"kind\":\"Eviction\",\"metadata\":{\"name\":\"$1\",\"namespace\":\"default\"}}" >"$CP/eviction.json"
  k create --raw "/api/v1/namespaces/default/pods/$1/eviction" -f "$CP/eviction.json"
}
p1="$(pods_on hello $n1)" p1="${p1% }" p2="$(pods_on hello $n2)" p2="${p2% }"
echo "--- evict $p1 (on $n1; $p2 on $n2 is Ready):"
evict "$p1"; echo
echo "--- at once, evict $p2 (on $n2) too: refused while the replacement is not Ready:"
if evict "$p2" 2>"$CP/eviction.err"; then fail "second eviction allowed"; fi
cat "$CP/eviction.err"
k get pdb hello
t1=$(now)
k wait --for=delete "pod/$p1" --timeout=60s
avail hello 2 60s
echo "replacement Ready $(since "$t1") s after the eviction"
k get pods -l app=hello -o wide
[ -n "$(pods_on hello $n1)" ] && [ -n "$(pods_on hello $n2)" ] || fail "not one pod per node"

step "drain $n1"
t1=$(now)
k drain "$n1" --ignore-daemonsets --delete-emptydir-data --timeout=60s
echo "drain $n1 completed in $(since "$t1") s"
sleep 2
k get pods -l app=hello -o wide
pending="$(k get pods -l app=hello --field-selector=status.phase=Pending -o jsonpath='{.items[*].metadata.name}')"
[ -n "$pending" ] || fail "no pending replacement"
k wait --for=jsonpath='{.status.conditions[?(@.type=="PodScheduled")].reason}'=Unschedulable "pod/$pending" --timeout=20s
echo "--- $pending stays Pending (as expected): $(k get pod "$pending" -o jsonpath='{.status.conditions[?(@.type=="PodScheduled")].message}')"
k get pdb hello
echo "--- drain $n2 as well: the budget holds (kubectl drain retries the refused eviction until its timeout):"
t1=$(now)
if k drain "$n2" --ignore-daemonsets --delete-emptydir-data --timeout=8s >"$CP/drain2.log" 2>&1; then cat "$CP/drain2.log"; fail "drain $n2 completed"; fi
grep -v '^evicting pod' "$CP/drain2.log" | uniq | sed 's/^/    /'
echo "drain $n2 gave up after $(since "$t1") s; $(pods_on hello $n2)still Running on $n2"
step "uncordon both"
t1=$(now)
k uncordon "$n1" "$n2"
avail hello 2 60s
echo "the pending replacement scheduled back and Ready $(since "$t1") s after uncordon"
k get pods -l app=hello -o wide
k delete pdb hello
k delete deploy hello --wait=true
k wait --for=delete pod -l app=hello --timeout=60s

step "rolling update of a 1-replica host-network Deployment (maxSurge 1, maxUnavailable 0)"
sed -e 's/name: hello$/name: roller/' -e 's/app: hello}/app: roller}/' -e 's/  replicas: 2/  replicas: 1\n  strategy:\n    type: RollingUpdate\n    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}/' \
  "$CP/hello.yaml" >"$CP/roller.yaml"
k apply -f "$CP/roller.yaml"
avail roller 1 90s
k get pods -l app=roller -o wide
for rev in 2 3; do
  old="$(k get pods -l app=roller -o jsonpath='{.items[0].metadata.name}')"
  from="$(k get pod "$old" -o jsonpath='{.spec.nodeName}')"
  echo "--- rollout $rev: change the pod template (an annotation); $old runs on $from"
  # The pods' changes as they come: the surge pod Ready before the old one is deleted.
  # (With --output-watch-events the object printed is the WatchEvent: hence .object.)
  "$D/kubectl" --kubeconfig="$CP/kubeconfig" get pods -l app=roller --watch-only --output-watch-events \
    -o custom-columns='EVENT:.type,NAME:.object.metadata.name,NODE:.object.spec.nodeName,PHASE:.object.status.phase,READY:.object.status.conditions[?(@.type=="Ready")].status,READY-SINCE:.object.status.conditions[?(@.type=="Ready")].lastTransitionTime,DELETION:.object.metadata.deletionTimestamp' \
    >"$CP/watch.log" 2>&1 &
  watch=$!
  sleep 1
  t1=$(now)
  k patch deploy roller --type=merge -p "{\"spec\":{\"template\":{\"metadata\":{\"annotations\":{\"demo/rev\":\"$rev\"}}}}}"
  k rollout status deploy/roller --timeout=90s
  echo "rollout status completed in $(since "$t1") s"
  k wait --for=delete "pod/$old" --timeout=60s
  echo "old pod $old gone $(since "$t1") s after the change"
  sleep 0.5; kill "$watch"; wait "$watch" 2>/dev/null || true
  echo "    (the watch, in order:)"; uniq "$CP/watch.log" | sed 's/^/    /'
  k get pods -l app=roller -o wide
  new="$(k get pods -l app=roller -o jsonpath='{.items[0].metadata.name}')"
  to="$(k get pod "$new" -o jsonpath='{.spec.nodeName}')"
  [ "$to" != "$from" ] || fail "the surge pod landed on $from too"
  k get events --field-selector "involvedObject.name=$new" -o jsonpath='{range .items[*]}    {.reason}: {.message}{"\n"}{end}' | grep -E 'Scheduled|Started' || true
done
k rollout history deploy/roller
k delete deploy roller --wait=true
k wait --for=delete pod -l app=roller --timeout=60s

step "stop $n2 alone (down.sh $W2): $n1 goes on"
t1=$(now)
"$here/down.sh" "$W2"
echo "down.sh $W2: $(since "$t1") s; $([ -e "$W2" ] && echo "WORKDIR LEFT" || echo "WORKDIR removed")"
[ ! -e "$W2" ] || fail "$W2 left"
echo "registered nodes: $(cat /run/rh-testenv/nodes/* | cut -d' ' -f2 | tr '\n' ' ')"
[ "$(sysctl -n kernel.panic) $(sysctl -n vm.overcommit_memory)" = "10 1" ] || fail "sysctls restored while $n1 runs"
echo "sysctls still the kubelet's: $(echo $(sysctls))"
echo "host: $(echo $(host_dirs)); lo: $(ip -4 -o addr show dev lo | awk '{print $4}' | tr '\n' ' ')"
k delete node "$n2"
sed -e 's/name: hello$/name: after/' -e 's/app: hello}/app: after}/' -e 's/  replicas: 2/  replicas: 1/' "$CP/hello.yaml" | k apply -f -
avail after 1 60s
k get pods -l app=after -o wide
[ -n "$(pods_on after $n1)" ] || fail "not on $n1"
echo "--- http://$ip1:$port/ from the host: $(python3 -c "import urllib.request; print(urllib.request.urlopen('http://$ip1:$port/').read().decode().strip())")"
step "done"
