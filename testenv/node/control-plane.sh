#!/usr/bin/env bash
# Shell prototype of the control plane a test node needs (the same as
# tests/e2e/support/control_plane.rs, with the differences marked NODE below), started in
# WORKDIR (which must exist and be empty):
#
#   testenv/node/control-plane.sh WORKDIR
#
# etcd, kube-apiserver, kube-controller-manager (the controllers pods need) and
# kube-scheduler on free loopback ports, certificates made with openssl, an admin
# kubeconfig at WORKDIR/kubeconfig (system:masters). Each process logs to
# WORKDIR/<name>.log, its pid in WORKDIR/pids/<name>. Stop with testenv/node/down.sh WORKDIR.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
W="$(cd "${1:?usage: $0 WORKDIR}" && pwd)"
assets="${KUBEBUILDER_ASSETS:-$("$here/../build.sh" --dir)}"
node_assets="$("$here/../build.sh" --node-dir)"
mkdir -p "$W/pids"
touch "$W/.rh-testenv" # down.sh works only on directories marked so

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
spawn() { # name program args...: in its own session, logs and pid in WORKDIR
  local name="$1"; shift
  setsid "$@" </dev/null >>"$W/$name.log" 2>&1 &
  echo $! >"$W/pids/$name"
}

# --- PKI (what generate_pki makes with rcgen: ECDSA P-256, one CA) ---
pki="$W"
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
key "$pki/ca.key"
openssl req -x509 -new -key "$pki/ca.key" -subj "/CN=rentedhost-testenv-ca" -days 3650 \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out "$pki/ca.crt" 2>/dev/null
leaf() { # name subject extended-key-usage [subjectAltName]
  key "$pki/$1.key"
  local ext="$W/$1.ext"
  { echo "basicConstraints=CA:FALSE"; echo "keyUsage=critical,digitalSignature"; echo "extendedKeyUsage=$3"
    [ -n "${4:-}" ] && echo "subjectAltName=$4"; } >"$ext"
  openssl req -new -key "$pki/$1.key" -subj "$2" -out "$W/$1.csr" 2>/dev/null
  openssl x509 -req -in "$W/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial -days 3650 \
    -extfile "$ext" -out "$pki/$1.crt" 2>/dev/null
  rm -f "$W/$1.csr" "$ext"
}
leaf apiserver "/CN=kube-apiserver" serverAuth "IP:127.0.0.1,DNS:localhost"
leaf admin "/O=system:masters/CN=testenv-admin" clientAuth
key "$pki/service-account.key"
openssl pkey -in "$pki/service-account.key" -pubout -out "$pki/service-account.pub" 2>/dev/null

# --- etcd ---
etcd_port="$(free_port)" peer_port="$(free_port)"
etcd_url="http://127.0.0.1:$etcd_port" peer_url="http://127.0.0.1:$peer_port"
spawn etcd "$assets/etcd" --name=testenv --data-dir="$W/etcd" \
  --listen-client-urls="$etcd_url" --advertise-client-urls="$etcd_url" \
  --listen-peer-urls="$peer_url" --initial-advertise-peer-urls="$peer_url" \
  --initial-cluster="testenv=$peer_url" --unsafe-no-fsync=true --log-level=warn

# --- kube-apiserver ---
# NODE: the ServiceAccount admission plugin stays enabled (control_plane.rs disables it):
# it sets spec.serviceAccountName and adds the projected kube-api-access-* volume
# (token, kube-root-ca.crt, namespace) that automountServiceAccountToken promises.
# NODE: --kubelet-preferred-address-types=InternalIP: the node's Hostname address
# (testenv-node) does not resolve, so logs/exec/port-forward go to its InternalIP 127.0.0.1.
port="$(free_port)"
spawn kube-apiserver "$assets/kube-apiserver" --etcd-servers="$etcd_url" \
  --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$port" \
  --cert-dir="$W/certs" --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
  --client-ca-file="$pki/ca.crt" \
  --service-account-key-file="$pki/service-account.pub" \
  --service-account-signing-key-file="$pki/service-account.key" \
  --service-account-issuer=https://127.0.0.1/testenv \
  --service-cluster-ip-range=10.0.0.0/24 --allow-privileged=true \
  --authorization-mode=RBAC \
  --kubelet-preferred-address-types=InternalIP \
  --v=1

cat >"$W/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: testenv
  cluster:
    server: https://127.0.0.1:$port
    certificate-authority: $pki/ca.crt
users:
- name: admin
  user:
    client-certificate: $pki/admin.crt
    client-key: $pki/admin.key
contexts:
- name: testenv
  context:
    cluster: testenv
    user: admin
    namespace: default
current-context: testenv
EOF
kubectl=("$assets/kubectl" --kubeconfig="$W/kubeconfig")
for _ in $(seq 360); do
  [ "$("${kubectl[@]}" get --raw=/readyz 2>/dev/null)" = ok ] && break
  sleep 0.25
done
[ "$("${kubectl[@]}" get --raw=/readyz 2>/dev/null)" = ok ] || { echo "kube-apiserver not ready" >&2; tail -20 "$W/kube-apiserver.log" >&2; exit 1; }

# --- kube-controller-manager: what Deployments, namespaces, service-account tokens and
# the node's not-ready taint need (node-lifecycle-controller removes the
# node.kubernetes.io/not-ready:NoSchedule taint the TaintNodesByCondition admission
# plugin puts on a new Node, once the node is Ready), plus the disruption controller for
# PodDisruptionBudgets (evictions).
controllers=deployment-controller,replicaset-controller,namespace-controller,garbage-collector-controller
controllers+=,serviceaccount-controller,serviceaccount-token-controller,root-ca-certificate-publisher-controller
controllers+=,node-lifecycle-controller,disruption-controller,pod-garbage-collector-controller
spawn kube-controller-manager "$assets/kube-controller-manager" --kubeconfig="$W/kubeconfig" \
  --controllers="$controllers" --leader-elect=false --secure-port=0 \
  --service-account-private-key-file="$pki/service-account.key" --root-ca-file="$pki/ca.crt" \
  --v=1

# --- kube-scheduler ---
spawn kube-scheduler "$node_assets/kube-scheduler" --kubeconfig="$W/kubeconfig" \
  --leader-elect=false --secure-port=0 --v=1

echo "$W/kubeconfig"
