#!/usr/bin/env bash
# Shell prototype of a test Kubernetes node: containerd (CRI, runc, overlayfs, the CNI
# loopback plugin only) and a kubelet registered as NODE_NAME (default testenv-node),
# every file under WORKDIR; the pause image (registry.k8s.io/pause:3.10.2) and the test
# image (docker.io/example/hello:1, "example/hello:1" in a pod) imported. Pods must use
# hostNetwork: no bridge, no iptables. Several nodes may run on one host at once (one
# WORKDIR, NODE_NAME and NODE_IP each; the same or different control planes).
#
#   testenv/node/node-up.sh WORKDIR KUBECONFIG
#
#   env NODE_NAME           default testenv-node; refused if a live node of this host has
#                           it with the same KUBECONFIG (path)
#       NODE_IP             default 198.51.100.10; an IPv4 address no other live node of
#                           this host uses (refused otherwise)
#       KUBEBUILDER_ASSETS  the control-plane binaries (default: testenv/build.sh --dir)
#   stdout: the images imported (ctr images ls -q), then `kubectl get node NODE_NAME -o wide`
#   stderr: progress, and last "node-up: NODE_NAME Ready S s after starting containerd"
#   exit 0 once the Node is Ready; non-zero otherwise (then run down.sh WORKDIR all the same:
#   whatever was started or changed is recorded from the start)
#
# WORKDIR must exist, be short (containerd's shim socket directory, WORKDIR/s, is at most
# 42 characters): e.g. mktemp -d /tmp/rh-n1-XXXXXX, and not hold a node already, not
# even one stopped with down.sh --keep (it may hold the control plane). Its name must be
# unique on the host (it names the node's cgroups). Root is required. Files written outside
# WORKDIR: /run/rh-testenv (host-state.sh), and /var/lib/kubelet and /var/log/containers
# when missing (empty, as mount points).
#
# Mount namespace: containerd (with its shims and containers) and the kubelet run in one
# private mount namespace of their own (unshare --mount --propagation private, held open
# by a `sleep infinity` in the node's cgroups, WORKDIR/pids/mntns; its id, mnt:[inode],
# in WORKDIR/mntns), where WORKDIR/ns/var-lib-kubelet is bind-mounted over
# /var/lib/kubelet and WORKDIR/ns/var-log-containers over /var/log/containers: the two
# host paths the kubelet uses whatever its flags (the device-plugin socket kubelet.sock
# and its checkpoint in /var/lib/kubelet/device-plugins; a symlink per container log in
# /var/log/containers). Every mount the node makes (overlays, tmpfs volumes, the kubelet's
# rshared bind of its root) is in that namespace only: the host's mount table does not
# change, and the namespace and its mounts vanish when its last process dies (down.sh).
# Only the two mount points are made on the host when missing (empty directories, removed
# when the last node stops).
#
# The kubelet refuses a loopback node IP (127.0.0.0/8: "nodeIP can't be loopback
# address", and then the node has no address at all and host-network pods no pod IP),
# so NODE_IP is added as a /32 to the loopback device lo (when missing, recorded in
# WORKDIR/lo-address-added; down.sh removes it): traffic to it stays on lo.
# It sets six kernel sysctls to the values the kubelet insists on, once per host: the
# first node saves their values in /run/rh-testenv/sysctl.saved, the last node's down.sh
# restores them (see host-state.sh). It makes cgroup /<WORKDIR's name> in every
# hierarchy: the namespace holder in /<name>/mntns, containerd and its shims in
# /<name>/runtime, the pods in /<name>/kubepods.
# Logs: WORKDIR/containerd.log, WORKDIR/kubelet.log; pids in WORKDIR/pids/ (mntns,
# containerd, kubelet). Stop with testenv/node/down.sh WORKDIR.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
W="$(cd "${1:?usage: $0 WORKDIR KUBECONFIG}" && pwd)"
kubeconfig="$(realpath "${2:?usage: $0 WORKDIR KUBECONFIG}")"
node_name="${NODE_NAME:-testenv-node}"
node_ip="${NODE_IP:-198.51.100.10}"
N="$("$here/../build.sh" --node-dir)"
assets="${KUBEBUILDER_ASSETS:-$("$here/../build.sh" --dir)}"
kubectl=("$assets/kubectl" --kubeconfig="$kubeconfig")
[ "${#W}" -le 40 ] || { echo "WORKDIR $W is too long (shim sockets go in WORKDIR/s, at most 42 characters)" >&2; exit 1; }
mkdir -p "$W/pids"
touch "$W/.rh-testenv" # down.sh works only on directories marked so
[ ! -e "$W/node" ] || { echo "$W holds a node already ($(cat "$W/node"))" >&2; exit 1; }

# --- host-wide state (host-state.sh): register this node, refuse a NODE_IP another live
# node has, save the sysctls if first, make the two mount points if missing ---
. "$here/host-state.sh"
hs_lock
entry="$HS/nodes/$(basename "$W")"
for e in "$HS"/nodes/*; do
  [ -f "$e" ] || continue
  read -r ew ename eip ekc _ <"$e" || true
  if ! hs_entry_live "$e"; then
    echo "node-up: left over (its down.sh never ran): $ew ($ename, $eip)" >&2; continue
  fi
  [ "$e" != "$entry" ] || { echo "another live node uses a WORKDIR named $(basename "$W"): $ew" >&2; exit 1; }
  [ "$eip" != "$node_ip" ] || { echo "NODE_IP $node_ip is taken by node $ename ($ew)" >&2; exit 1; }
  [ "$ename" != "$node_name" ] || [ "$ekc" != "$kubeconfig" ] ||
    { echo "NODE_NAME $node_name is taken by $ew (same KUBECONFIG $kubeconfig)" >&2; exit 1; }
done
echo "$W $node_name $node_ip $kubeconfig $$" >"$entry"
echo "$node_name $node_ip" >"$W/node"
# Kernel settings the kubelet wants (protectKernelDefaults: true makes it check, not
# write). Saved once, before the first node changes them.
sysctls="vm.overcommit_memory=1 vm.panic_on_oom=0 kernel.panic=10 kernel.panic_on_oops=1"
sysctls+=" kernel.keys.root_maxkeys=1000000 kernel.keys.root_maxbytes=25000000"
if [ ! -f "$HS/sysctl.saved" ]; then
  for kv in $sysctls; do echo "${kv%%=*}=$(sysctl -n "${kv%%=*}")"; done >"$HS/sysctl.saved.tmp"
  mv "$HS/sysctl.saved.tmp" "$HS/sysctl.saved"
fi
for kv in $sysctls; do
  [ "$(sysctl -n "${kv%%=*}")" = "${kv#*=}" ] || sysctl -q -w "$kv"
done
for d in /var/lib/kubelet /var/log/containers; do
  if [ ! -d "$d" ]; then
    mkdir -p "$d"
    grep -qx "$d" "$HS/host-dirs-created" 2>/dev/null || echo "$d" >>"$HS/host-dirs-created"
  fi
done
hs_unlock

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
spawn() { # name program args...: in its own session, logs and pid in WORKDIR
  local name="$1"; shift
  setsid "$@" </dev/null >>"$W/$name.log" 2>&1 &
  echo $! >"$W/pids/$name"
}
start=$(date +%s.%N)

# --- cgroups: one root in every hierarchy for all the node's processes but the kubelet:
# the mount namespace's holder (ROOT/mntns), containerd (ROOT/runtime, where the shims it
# starts stay too) and the kubelet's pods (ROOT/kubepods/...). Whatever happens, down.sh
# finds every process left in there.
cgroot="/$(basename "$W")"
echo "$cgroot" >"$W/cgroup-root"
cgprocs=()
for h in /sys/fs/cgroup/*/; do
  case "$(stat -f -c %T "$h")" in
    cgroupfs|cgroup2fs) mkdir -p "$h${cgroot#/}/mntns"; cgprocs+=("$h${cgroot#/}/mntns/cgroup.procs") ;;
  esac
done

# --- the node's mount namespace (see the top): a process holds it open, in ROOT/mntns
# (moved there before it unshares, so nothing of it is ever outside); containerd and the
# kubelet enter it with nsenter (which execs: their pids are the programs').
mkdir -p "$W/ns/var-lib-kubelet" "$W/ns/var-log-containers"
spawn mntns sh -c 'for f; do echo $$ >"$f"; done; exec unshare --mount --propagation private sleep infinity' \
  sh "${cgprocs[@]}"
holder="$(cat "$W/pids/mntns")"
host_ns="$(readlink /proc/self/ns/mnt)"
for _ in $(seq 100); do
  [ "$(cat "/proc/$holder/comm" 2>/dev/null)" = sleep ] && ns="$(readlink "/proc/$holder/ns/mnt")" &&
    [ "$ns" != "$host_ns" ] && break
  ns=""; sleep 0.05
done
[ -n "$ns" ] || { echo "no mount namespace (unshare --mount failed?)" >&2; cat "$W/mntns.log" >&2; exit 1; }
echo "$ns" >"$W/mntns"
in_ns=(nsenter --mount="/proc/$holder/ns/mnt" --)
# -n: no /run/mount/utab entry (that file is the host's).
"${in_ns[@]}" mount -n --bind "$W/ns/var-lib-kubelet" /var/lib/kubelet
"${in_ns[@]}" mount -n --bind "$W/ns/var-log-containers" /var/log/containers

# --- containerd ---
C="$W/containerd"
mkdir -p "$C/root" "$C/state" "$C/opt" "$C/cdi" "$W/s" "$W/runc" "$W/cni/net.d"
# CRI requires a network config to report NetworkReady (else the node stays NotReady
# with "cni plugin not initialized"), even though host-network pods never use it: only
# the loopback plugin. A pod without hostNetwork fails (FailedCreatePodSandBox: "failed
# to find network info for sandbox": no plugin gives it an IP), and nothing is set up.
cat >"$W/cni/net.d/10-loopback.conflist" <<EOF
{"cniVersion":"1.0.0","name":"testenv-loopback","plugins":[{"type":"loopback"}]}
EOF
cat >"$C/config.toml" <<EOF
# containerd 2.4's own configuration version (3 works too, migrated at each start).
version = 4
root = '$C/root'
state = '$C/state'
temp = '$C/tmp'
# No drop-ins (imports are only those of this file; /etc/containerd/conf.d is not read).
imports = []
# Plugins that would touch the host (NRI's socket in /var/run/nri) or are not needed.
disabled_plugins = [
  'io.containerd.nri.v1.nri',
  'io.containerd.snapshotter.v1.blockfile',
  'io.containerd.snapshotter.v1.devmapper',
  'io.containerd.snapshotter.v1.zfs',
  'io.containerd.snapshotter.v1.erofs',
  'io.containerd.differ.v1.erofs',
  'io.containerd.tracing.processor.v1.otlp',
  'io.containerd.internal.v1.tracing',
]

[debug]
  level = 'info'

# containerd moves itself there; the shims it starts inherit it.
[cgroup]
  path = '$cgroot/runtime'

[plugins]
  [plugins.'io.containerd.server.v1.grpc']
    address = '$C/containerd.sock'

  [plugins.'io.containerd.server.v1.ttrpc']
    address = '$C/containerd.sock.ttrpc'

  [plugins.'io.containerd.server.v1.debug']
    address = ''

  [plugins.'io.containerd.server.v1.metrics']
    address = ''

  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = 'registry.k8s.io/pause:3.10.2'

  [plugins.'io.containerd.cri.v1.runtime']
    enable_selinux = false
    disable_apparmor = true
    # Never ask for an oom_score_adj below containerd's own: lowering it needs
    # CAP_SYS_RESOURCE (the kubelet asks -998 for every sandbox, -997 for Guaranteed
    # containers), and without that capability runc init fails with "failed to update
    # /proc/self/oom_score_adj: Permission denied".
    restrict_oom_score_adj = true
    cdi_spec_dirs = ['$C/cdi']
    netns_mounts_under_state_dir = true
    enable_criu = false
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = '$N/runc'
          Root = '$W/runc'
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ['$N/cni']
      conf_dir = '$W/cni/net.d'
      max_conf_num = 1

  [plugins.'io.containerd.grpc.v1.cri']
    disable_tcp_service = true
    stream_server_address = '127.0.0.1'
    stream_server_port = '0'

  [plugins.'io.containerd.internal.v1.opt']
    path = '$C/opt'

  [plugins.'io.containerd.image-verifier.v1.bindir']
    bin_dir = '$C/image-verifier'

  # Shim sockets (default /run/containerd/s): at most 42 characters.
  [plugins.'io.containerd.shim.v1.manager']
    socket_dir = '$W/s'
EOF
# The shim (containerd-shim-runc-v2) is found on PATH.
PATH="$N:$PATH" spawn containerd "${in_ns[@]}" "$N/containerd" --config "$C/config.toml"
ctr=("$N/ctr" --address "$C/containerd.sock" -n k8s.io)
for _ in $(seq 120); do "${ctr[@]}" version >/dev/null 2>&1 && break; sleep 0.25; done
"${ctr[@]}" version >/dev/null || { echo "containerd did not start" >&2; tail -20 "$W/containerd.log" >&2; exit 1; }
# Images: imported by the name in the manifest's io.containerd.image.name annotation,
# unpacked for the default snapshotter (overlayfs).
"${ctr[@]}" images import "$N/pause.oci.tar" >/dev/null
"${ctr[@]}" images import "$N/hello.oci.tar" >/dev/null
"${ctr[@]}" images ls -q

# --- the node's IP, on lo ---
if ! ip -4 -o addr show dev lo | grep -q " $node_ip/"; then
  ip addr add "$node_ip/32" dev lo
  echo "$node_ip/32" >"$W/lo-address-added"
fi

# --- kubelet (in the node's mount namespace: /var/lib/kubelet and /var/log/containers
# are WORKDIR/ns/...) ---
K="$W/kubelet"
mkdir -p "$K/root" "$K/pki" "$K/logs" "$K/volume-plugins"
kport="$(free_port)" hport="$(free_port)"
cat >"$K/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$C/containerd.sock
# The API server connects to the node's InternalIP (NODE_IP) for logs, exec, port-forward.
address: $node_ip
port: $kport
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $hport
# Only the API server connects (logs, exec), to NODE_IP on lo; it presents no client
# certificate (no --kubelet-client-certificate), so anonymous and AlwaysAllow.
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
serverTLSBootstrap: false
rotateCertificates: false
cgroupDriver: cgroupfs
cgroupRoot: $cgroot
cgroupsPerQOS: true
enforceNodeAllocatable: []
failCgroupV1: false
failSwapOn: false
# The kubelet's own oom_score_adj (default -999; lowering it needs CAP_SYS_RESOURCE).
oomScoreAdj: 0
protectKernelDefaults: true
makeIPTablesUtilChains: false
podLogsDir: $K/logs
volumePluginDir: $K/volume-plugins
resolvConf: /etc/resolv.conf
clusterDomain: cluster.local
# No evictions because of this machine's memory or disk, no image garbage collection
# (the images cannot be pulled again).
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
  imagefs.inodesFree: "1%"
evictionPressureTransitionPeriod: 5s
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
maxPods: 50
nodeStatusUpdateFrequency: 5s
syncFrequency: 10s
fileCheckFrequency: 10s
shutdownGracePeriod: 0s
EOF
spawn kubelet "${in_ns[@]}" "$N/kubelet" --config="$K/config.yaml" --kubeconfig="$kubeconfig" \
  --root-dir="$K/root" --cert-dir="$K/pki" \
  --hostname-override="$node_name" --node-ip="$node_ip" --v=1

for _ in $(seq 240); do
  [ "$("${kubectl[@]}" get node "$node_name" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ] && break
  if ! kill -0 "$(cat "$W/pids/kubelet")" 2>/dev/null; then echo "kubelet exited" >&2; tail -30 "$W/kubelet.log" >&2; exit 1; fi
  sleep 0.5
done
"${kubectl[@]}" get node "$node_name" -o wide
[ "$("${kubectl[@]}" get node "$node_name" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ] ||
  { echo "node $node_name not Ready" >&2; "${kubectl[@]}" describe node "$node_name" >&2; exit 1; }
echo "node-up: $node_name Ready $(python3 -c "print(round($(date +%s.%N)-$start,1))") s after starting containerd" >&2
