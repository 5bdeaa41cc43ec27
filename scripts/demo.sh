#!/usr/bin/env bash
# The operator's main job in one command, on this machine alone:
#
#   scripts/demo.sh        (make demo)       build what is missing, start a local cluster
#                                            and the provider simulator, install the chart,
#                                            apply examples/, wait for Ready
#   scripts/demo.sh stop   (make demo-stop)  stop what the demo started, remove its files
#
# Two ways to run the operator:
#   node     (the default, as root): a cluster with a node (testenv/node: etcd,
#            kube-apiserver, kube-controller-manager, kube-scheduler, a kubelet with
#            containerd 2 and runc), the image of `make image` imported into containerd,
#            and `helm install --wait`: the kubelet runs the chart's Deployment, the way
#            users run it. The pod uses the host network (no bridge, no iptables).
#   process  (the fallback where a node cannot run: not root, no unshare, the node's
#            pieces not built; or DEMO_MODE=process): etcd and kube-apiserver only, the
#            chart installed for its CRDs, RBAC and Secret, and the operator run next to
#            them with the Deployment's arguments as its ServiceAccount (the image's root
#            filesystem with unshare, or the release binary).
#
# Everything lives in target/demo (logs in target/demo/logs; the node's files in the
# /tmp/rh-demo-* directory target/demo/run/node.dir names). Running it again reuses what
# runs, in the mode it runs in.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
state="$root/target/demo"
logs="$state/logs"
run="$state/run"
release_ns=rentedhost-system
examples_ns=default

say() { echo "demo: $*" >&2; }
fail() { say "$*"; exit 1; }

# step NAME WHAT COMMAND...: runs a step with its output in logs/step-NAME.log; a failure
# names the step and its log.
step() {
  local name="$1" what="$2"; shift 2
  local log="$logs/step-$name.log"
  say "$what (log: $log)"
  if ! "$@" >"$log" 2>&1; then
    say "step '$name' failed; its log: $log"
    tail -n 15 "$log" | sed 's/^/  | /' >&2
    exit 1
  fi
}

alive() { [ -f "$run/$1.pid" ] && kill -0 "$(cat "$run/$1.pid")" 2>/dev/null; }

# start NAME COMMAND...: a process of the demo, in its own session, outliving this script.
start() {
  local name="$1"; shift
  alive "$name" && return 0
  setsid "$@" </dev/null >"$logs/$name.log" 2>&1 &
  echo $! >"$run/$name.pid"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# port NAME: a free loopback port for NAME, the same one on every run.
port() {
  local file="$run/$1.port" p
  if [ ! -f "$file" ]; then
    while :; do p=$((20000 + RANDOM % 30000)); port_free "$p" && break; done
    echo "$p" >"$file"
  fi
  cat "$file"
}

wait_for() { # what seconds command...
  local what="$1" limit="$2"; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { say "$what: not within ${limit}s"; return 1; }
    sleep 0.5
  done
}

ours() {
  local pid="$1"
  case "$(readlink "/proc/$pid/root")" in "$state"/*) return 0 ;; esac
  local cmdline; cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline")"
  case "$cmdline" in *"$state"* | *"$root/target"*) return 0 ;; esac
  [ -n "$assets" ] && case "$cmdline" in "$assets"/*) return 0 ;; esac
  return 1
}

stop_demo() {
  [ -d "$run" ] || { say "nothing to stop"; rm -rf "$state"; return 0; }
  if [ -f "$run/node.dir" ]; then
    local dir; dir="$(cat "$run/node.dir")"
    if [ -d "$dir" ]; then
      "$root/testenv/node/down.sh" "$dir" >"$logs/down.log" 2>&1 || fail "the node and control plane in $dir did not stop cleanly: $logs/down.log"
      say "stopped the node and the control plane ($dir)"
    fi
  fi
  for name in operator kube-controller-manager simulator kube-apiserver etcd; do
    [ -f "$run/$name.pid" ] || continue
    local pid; pid="$(cat "$run/$name.pid")"
    # Only the demo's own process: its command line names the demo's files or binaries, or
    # its root is the demo's image.
    if kill -0 "$pid" 2>/dev/null && ours "$pid"; then
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -KILL -- "-$pid" 2>/dev/null || true
      say "stopped $name ($pid)"
    fi
  done
  rm -rf "$state"
  say "removed $state"
}

pki() {
  local d="$state/pki"
  [ -f "$d/admin.crt" ] && return 0
  mkdir -p "$d" && cd "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 -subj /CN=rentedhost-demo-ca
  openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj /CN=kube-apiserver
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >apiserver.ext
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 30 -extfile apiserver.ext
  openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj "/O=system:masters/CN=demo-admin"
  printf 'extendedKeyUsage=clientAuth\n' >admin.ext
  openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out admin.crt -days 30 -extfile admin.ext
  openssl genrsa -out service-account.key 2048
  openssl rsa -in service-account.key -pubout -out service-account.pub
}

control_plane() {
  local etcd api peer
  etcd="$(port etcd)"; peer="$(port etcd-peer)"; api="$(port kube-apiserver)"
  start etcd "$assets/etcd" --name=demo --data-dir="$state/etcd" \
    --listen-client-urls="http://127.0.0.1:$etcd" --advertise-client-urls="http://127.0.0.1:$etcd" \
    --listen-peer-urls="http://127.0.0.1:$peer" --initial-advertise-peer-urls="http://127.0.0.1:$peer" \
    --initial-cluster="demo=http://127.0.0.1:$peer" --unsafe-no-fsync=true --log-level=warn
  local p="$state/pki"
  start kube-apiserver "$assets/kube-apiserver" --etcd-servers="http://127.0.0.1:$etcd" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api" \
    --cert-dir="$state/certs" --tls-cert-file="$p/apiserver.crt" --tls-private-key-file="$p/apiserver.key" \
    --client-ca-file="$p/ca.crt" --service-account-key-file="$p/service-account.pub" \
    --service-account-signing-key-file="$p/service-account.key" \
    --service-account-issuer=https://127.0.0.1/demo --service-cluster-ip-range=10.0.0.0/24 \
    --disable-admission-plugins=ServiceAccount --authorization-mode=RBAC --v=1
  cat >"$kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: demo
  cluster:
    server: https://127.0.0.1:$api
    certificate-authority: $p/ca.crt
users:
- name: admin
  user:
    client-certificate: $p/admin.crt
    client-key: $p/admin.key
contexts:
- name: demo
  context: {cluster: demo, user: admin, namespace: $examples_ns}
current-context: demo
EOF
  wait_for "kube-apiserver /readyz" 90 kubectl get --raw=/readyz
}

simulator() {
  start simulator "$root/target/release/xds-simulator" --port "$(port simulator)" --transition-time 2s
  wait_for "simulator" 20 bash -c "exec 3<>/dev/tcp/127.0.0.1/$(port simulator)"
}

chart() {
  local values="credentials.uuid=demo-account,credentials.secret=demo-secret"
  values+=",provider.url=http://127.0.0.1:$(port simulator),metrics.port=$(port metrics)"
  values+=",pollInterval=10s,fastPollInterval=1s,logFormat=text"
  kubectl create namespace "$release_ns" --dry-run=client -o yaml | kubectl apply -f -
  helm upgrade --install rentedhost-operator "$root/charts/rentedhost-operator" \
    -n "$release_ns" --set "$values" --wait=false
  kubectl wait --for=condition=Established crd/rentedhosts.xuandashi.dev --timeout=30s
  # Garbage collection (connection Secrets go with their objects), once the CRD is in.
  start kube-controller-manager "$assets/kube-controller-manager" --kubeconfig="$kubeconfig" \
    --controllers=garbagecollector --leader-elect=false --secure-port=0 --v=1
}

# The operator with the Deployment's own arguments and environment, as its ServiceAccount.
operator() {
  alive operator && return 0
  local deploy=deploy/rentedhost-operator
  mapfile -t args < <(kubectl -n "$release_ns" get "$deploy" \
    -o go-template='{{range (index .spec.template.spec.containers 0).args}}{{.}}{{"\n"}}{{end}}')
  local sa token pod=rentedhost-operator-demo
  sa="$(kubectl -n "$release_ns" get "$deploy" -o 'jsonpath={.spec.template.spec.serviceAccountName}')"
  token="$(kubectl -n "$release_ns" create token "$sa" --duration=24h)"
  local api; api="$(port kube-apiserver)"
  if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null; then
    echo "the container image (target/image/oci), its root filesystem run with unshare as uid 65532"
    local fs="$state/rootfs" manifest layer
    rm -rf "$fs" && mkdir -p "$fs"
    manifest="$(sed 's/.*"digest":"sha256:\([0-9a-f]*\)".*/\1/' "$root/target/image/oci/index.json")"
    for layer in $(grep -o '"digest":"sha256:[0-9a-f]*"' "$root/target/image/oci/blobs/sha256/$manifest" | tail -n +2 | cut -d: -f3 | tr -d '"'); do
      tar -xzf "$root/target/image/oci/blobs/sha256/$layer" -C "$fs"
    done
    local sa_dir="$fs/var/run/secrets/kubernetes.io/serviceaccount"
    mkdir -p "$sa_dir" "$fs/dev"
    printf '%s' "$token" >"$sa_dir/token"
    cp "$state/pki/ca.crt" "$sa_dir/ca.crt"
    printf '%s' "$release_ns" >"$sa_dir/namespace"
    for dev in null:3 zero:5 full:7 random:8 urandom:9; do mknod -m 666 "$fs/dev/${dev%%:*}" c 1 "${dev##*:}"; done
    start operator env -i PATH=/ SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
      POD_NAME="$pod" POD_NAMESPACE="$release_ns" \
      KUBERNETES_SERVICE_HOST=127.0.0.1 KUBERNETES_SERVICE_PORT="$api" \
      "$(command -v unshare)" --root="$fs" --wd=/ --setuid=65532 --setgid=65532 /rentedhost-operator "${args[@]}"
  else
    echo "the release binary, with a kubeconfig of the ServiceAccount's token"
    cat >"$state/operator.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: demo
  cluster: {server: "https://127.0.0.1:$api", certificate-authority: "$state/pki/ca.crt"}
users:
- name: $sa
  user: {token: "$token"}
contexts:
- name: demo
  context: {cluster: demo, user: $sa, namespace: $release_ns}
current-context: demo
EOF
    start operator env KUBECONFIG="$state/operator.kubeconfig" POD_NAME="$pod" POD_NAMESPACE="$release_ns" \
      "$binary" "${args[@]}"
  fi
  wait_for "the operator's /readyz" 60 bash -c "exec 3<>/dev/tcp/127.0.0.1/$(port metrics)"
}

# --- node mode -------------------------------------------------------------------------

node_dir() { cat "$run/node.dir" 2>/dev/null; }

# The cluster with its node, reused when it still answers with the node Ready.
cluster() {
  local dir; dir="$(node_dir)"
  if [ -n "$dir" ] && [ -f "$dir/kubeconfig" ] &&
    kubectl --kubeconfig="$dir/kubeconfig" get node "$demo_node" \
      -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -q True; then
    echo "reusing $dir"
  else
    if [ -n "$dir" ] && [ -d "$dir" ]; then "$root/testenv/node/down.sh" "$dir"; fi
    # Short: containerd's shim sockets live under it (at most 42 characters).
    dir="$(mktemp -d /tmp/rh-demo-XXXXXX)"
    echo "$dir" >"$run/node.dir"
    "$root/testenv/node/control-plane.sh" "$dir"
    NODE_NAME="$demo_node" NODE_IP="$demo_node_ip" "$root/testenv/node/node-up.sh" "$dir" "$dir/kubeconfig"
  fi
  cp "$dir/kubeconfig" "$kubeconfig"
}

# The image of `make image`, named as the chart's default image resolves in the CRI.
import_image() {
  local dir; dir="$(node_dir)"
  local ctr=("$node_assets/ctr" --address "$dir/containerd/containerd.sock" -n k8s.io)
  "${ctr[@]}" images import "$root/target/image/rentedhost-operator.oci.tar"
  "${ctr[@]}" images ls -q | grep rentedhost-operator
}

# helm install --wait: done once the kubelet reports the pod Ready under its probes.
chart_on_node() {
  local api; api="$(sed -n 's#.*server: https://127.0.0.1:\([0-9]*\).*#\1#p' "$kubeconfig")"
  cat >"$state/values.yaml" <<EOF
credentials: {uuid: demo-account, secret: demo-secret}
provider: {url: "http://127.0.0.1:$(port simulator)"}
metrics: {port: $(port metrics)}
pollInterval: 10s
fastPollInterval: 1s
logFormat: text
# The node runs pods on the host network only (no CNI bridge, no kube-proxy): the operator
# binds its node's address and reaches the API server on loopback.
hostNetwork: true
extraEnv:
- {name: KUBERNETES_SERVICE_HOST, value: "127.0.0.1"}
- {name: KUBERNETES_SERVICE_PORT, value: "$api"}
EOF
  kubectl create namespace "$release_ns" --dry-run=client -o yaml | kubectl apply -f -
  helm upgrade --install rentedhost-operator "$root/charts/rentedhost-operator" \
    -n "$release_ns" -f "$state/values.yaml" --wait --timeout 120s
  kubectl -n "$release_ns" get pods -l app.kubernetes.io/name=rentedhost-operator \
    -o 'jsonpath={range .items[*]}the operator runs as pod {.metadata.name} on node {.spec.nodeName} ({.status.podIP}), image {.spec.containers[0].image}, Ready={.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}'
}

examples() {
  kubectl apply -n "$examples_ns" -f "$root/examples/"
}

# Shows the objects until every one is Ready (two minutes at most), one line a second.
wait_ready() {
  local deadline=$((SECONDS + 120)) total ready
  while :; do
    total="$(kubectl get rh -n "$examples_ns" --no-headers 2>/dev/null | wc -l)"
    ready="$(kubectl get rh -n "$examples_ns" -o 'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c '^True$' || true)"
    local phases; phases="$(kubectl get rh -n "$examples_ns" -o 'jsonpath={range .items[*]}{.metadata.name}={.status.phase} {end}')"
    say "$ready/$total Ready: $phases"
    [ "$total" -gt 0 ] && [ "$ready" = "$total" ] && return 0
    [ $SECONDS -lt $deadline ] || { say "not every object is Ready after 2 minutes; the operator's log: $operator_log"; return 1; }
    sleep 1
  done
}

usage() {
  cat <<EOF

The demo runs (control plane, provider simulator, operator). Try it:

  export KUBECONFIG=$kubeconfig
  export PATH=$assets:\$PATH
  kubectl get rh -o wide
  kubectl get rhb                      # the namespace's budget: spent, reserved, hosts
  kubectl annotate rh render-01 xuandashi.dev/reboot-requested-at="\$(date -u +%FT%TZ)" --overwrite   # reboot
  kubectl patch rh render-01 --type=merge -p '{"spec":{"powerState":"Stopped"}}'                       # power off
  kubectl describe rh render-01                                                                         # what happened
  kubectl delete rh render-01                                                                           # release the host

Logs: $logs (the operator: $operator_log)
Stop it: make demo-stop
EOF
}

assets="$("$root/testenv/build.sh" --dir 2>/dev/null || true)"
if [ "${1:-}" = stop ]; then stop_demo; exit 0; fi

mkdir -p "$logs" "$run"
kubeconfig="$state/kubeconfig"
binary="$root/target/x86_64-unknown-linux-gnu/release/rentedhost-operator"
export KUBECONFIG="$kubeconfig"

started=$SECONDS
step testenv "the test control plane and node: built from the Go module proxy the first time (minutes), then reused" "$root/testenv/build.sh"
assets="$("$root/testenv/build.sh" --dir)"
node_assets="$("$root/testenv/build.sh" --node-dir 2>/dev/null || true)"
export PATH="$assets:$PATH"
demo_node=demo-node
demo_node_ip=198.51.100.21
mode="${DEMO_MODE:-}"
if [ -f "$run/mode" ]; then
  running_mode="$(cat "$run/mode")"
  [ -z "$mode" ] || [ "$mode" = "$running_mode" ] || fail "the demo runs in $running_mode mode: make demo-stop first"
  mode="$running_mode"
fi
if [ -z "$mode" ]; then
  if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && [ -x "$node_assets/kubelet" ]; then
    mode=node
  else
    mode=process
  fi
fi
case "$mode" in node | process) ;; *) fail "DEMO_MODE=$mode: node or process" ;; esac
echo "$mode" >"$run/mode"

step image "the release binary and the container image (the first build takes minutes)" make -C "$root" image
step simulator-build "the provider simulator's binary (its own crate: not in the image)" make -C "$root" simulator
if [ "$mode" = node ]; then
  [ -x "$node_assets/kubelet" ] || fail "the node's pieces are not built (testenv/build.sh): DEMO_MODE=process runs the fallback"
  operator_log="kubectl logs -n $release_ns deploy/rentedhost-operator"
  step cluster "a control plane and a node ($demo_node, $demo_node_ip on lo): kubelet, containerd 2, runc" cluster
  step import "the image of make image, imported into the node's containerd" import_image
  step simulator "the provider simulator" simulator
  step chart "helm upgrade --install --wait: the kubelet runs the chart's Deployment" chart_on_node
  say "  $(tail -1 "$logs/step-chart.log")"
else
  operator_log="$logs/operator.log"
  say "fallback (process mode): the operator runs as a process next to the API server, not under a kubelet (a node needs root, unshare and the node's pieces of testenv/build.sh)"
  step pki "certificates for the control plane" pki
  step control-plane "etcd and kube-apiserver on loopback" control_plane
  step simulator "the provider simulator" simulator
  step chart "helm upgrade --install of the chart (CRD, RBAC, ServiceAccount, credentials Secret)" chart
  step operator "the operator, with the Deployment's arguments, as the chart's ServiceAccount" operator
  say "  as $(head -1 "$logs/step-operator.log")"
fi
step examples "kubectl apply -f examples/" examples
wait_ready
say "ready in $((SECONDS - started)) s ($mode mode)"
usage
