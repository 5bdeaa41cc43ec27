#!/usr/bin/env bash
# Stops what control-plane.sh and node-up.sh started in WORKDIR and removes WORKDIR:
#
#   testenv/node/down.sh WORKDIR [--keep]     (--keep: leave the files, for a post-mortem)
#
# Exactly the one node and/or control plane of WORKDIR; other nodes on the host go on.
# Exit 0 when all is gone (WORKDIR removed, unless --keep); 1 when something is left
# (said on stderr; WORKDIR is then kept) or WORKDIR is not one of those scripts'.
#
# Order: kubelet (so it restarts nothing); every container runc knows under WORKDIR/runc
# (SIGKILL and delete, which also removes its cgroups); containerd; the shims, the mount
# namespace's holder and anything else left in the node's cgroups; then any process still
# in the node's mount namespace (WORKDIR/mntns): with the last one gone the namespace and
# every mount in it (container rootfs overlays, sandbox /dev/shm, the kubelet's tmpfs
# volumes, its rshared bind of its root, the binds over /var/lib/kubelet and
# /var/log/containers) vanish. Then the control plane. Then any mount under WORKDIR in the
# host's table (none are made there; a safety net), deepest first; the node's cgroup tree;
# the node IP on lo; its entry in /run/rh-testenv (host-state.sh), and if it was the last
# node on the host the saved sysctls and the mount points made on the host. WORKDIR goes
# last, never through a mount (rm --one-file-system, and only when no mount and no process
# of the node's namespace is left).
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Refuse anything but a directory control-plane.sh or node-up.sh made: with an empty or
# wrong WORKDIR, "the mounts under WORKDIR" would be every mount of the host.
W="$(cd "${1:?usage: $0 WORKDIR [--keep]}" 2>/dev/null && pwd)" || { echo "down: no directory $1" >&2; exit 1; }
case "$W" in /|/tmp|"") echo "down: refusing $W" >&2; exit 1 ;; esac
[ -f "$W/.rh-testenv" ] || { echo "down: $W has no .rh-testenv: not made by control-plane.sh or node-up.sh" >&2; exit 1; }
N="$("$here/../build.sh" --node-dir)"

alive() { # pid: running, not a zombie (these were started by scripts that have exited,
  # so their parent, which reaps them, is pid 1: it may take its time)
  [ -r "/proc/$1/stat" ] && [ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" != Z ]
}
stop() { # name: SIGTERM, then SIGKILL after 5 s
  local f="$W/pids/$1" pid
  [ -f "$f" ] || return 0
  pid="$(cat "$f")"
  if kill -TERM "$pid" 2>/dev/null; then
    for _ in $(seq 100); do alive "$pid" || break; sleep 0.05; done
    alive "$pid" && kill -KILL "$pid" 2>/dev/null && echo "down: $1 killed (no exit 5 s after SIGTERM)" >&2
  fi
  rm -f "$f"
}

# The node's mount namespace: runc runs in it as containerd did, while its holder lives.
mntns="$(cat "$W/mntns" 2>/dev/null)"
in_ns=() holder=""
if [ -n "$mntns" ] && [ -f "$W/pids/mntns" ]; then
  holder="$(cat "$W/pids/mntns")"
  [ "$(readlink "/proc/$holder/ns/mnt" 2>/dev/null)" = "$mntns" ] && in_ns=(nsenter --mount="/proc/$holder/ns/mnt" --)
fi
ns_pids() { # the processes in the node's mount namespace (zombies have none)
  [ -n "$mntns" ] || return 0
  local p
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/ns/mnt" 2>/dev/null)" = "$mntns" ] && echo "${p#/proc/}"
  done
}

stop kubelet
# Containers: runc's state is WORKDIR/runc/<containerd namespace>/<id>.
for ns in "$W"/runc/*/; do
  [ -d "$ns" ] || continue
  for id in $("${in_ns[@]}" "$N/runc" --root "$ns" list -q 2>/dev/null); do
    "${in_ns[@]}" "$N/runc" --root "$ns" kill --all "$id" KILL 2>/dev/null
    "${in_ns[@]}" "$N/runc" --root "$ns" delete --force "$id" 2>/dev/null
  done
done
stop containerd
# The shims (one per pod sandbox, daemonized: children of pid 1, not of containerd, and no
# pid file), and anything else still in the node's cgroups (a container runc lost): they
# are all under the cgroup root node-up.sh made, containerd's ROOT/runtime or the pods'
# ROOT/kubepods. SIGKILL by pid.
if [ -f "$W/cgroup-root" ]; then
  cgroot="$(cat "$W/cgroup-root")"
  for _ in 1 2 3; do
    pids="$(find /sys/fs/cgroup/pids/"${cgroot#/}" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)"
    [ -n "$pids" ] || break
    # (the namespace's holder is always there: not worth a word)
    others="$(echo "$pids" | grep -vx "${holder:-none}")"
    [ -z "$others" ] || echo "down: killing what is left in $cgroot:" $(for p in $others; do echo "$p($(cat "/proc/$p/comm" 2>/dev/null))"; done) >&2
    kill -KILL $pids 2>/dev/null
    sleep 0.2
  done
fi
rm -f "$W/pids/mntns"
# Whatever else is in the namespace (nothing, normally: everything of the node is in its
# cgroups but the kubelet, stopped above). SIGKILL, until none is left.
ns_left=""
if [ -n "$mntns" ]; then
  for i in $(seq 50); do
    ns_left="$(ns_pids)"
    [ -n "$ns_left" ] || break
    [ "$i" = 1 ] && echo "down: killing what is left in mount namespace $mntns:" $ns_left >&2
    kill -KILL $ns_left 2>/dev/null
    sleep 0.1
  done
  [ -z "$ns_left" ] || echo "down: processes left in mount namespace $mntns: $ns_left" >&2
fi
for p in kube-scheduler kube-controller-manager kube-apiserver etcd; do stop "$p"; done

# Mounts under WORKDIR, deepest first (lazy, in case something still holds one).
awk -v w="$W" 'w != "" && ($2 == w || index($2, w "/") == 1) { print $2 }' /proc/self/mounts | sort -r | while read -r m; do
  umount -l "$m" 2>/dev/null || umount -l "$(printf '%b' "$m")"
done
left="$(awk -v w="$W" 'w != "" && ($2 == w || index($2, w "/") == 1)' /proc/self/mounts)"
[ -z "$left" ] || echo "down: mounts left: $left" >&2

# Cgroups: the kubelet's root in each hierarchy, leaves first (a cgroup goes with rmdir).
if [ -f "$W/cgroup-root" ]; then
  cgroot="$(cat "$W/cgroup-root")"
  for h in /sys/fs/cgroup/*/; do
    [ -d "$h${cgroot#/}" ] && find "$h${cgroot#/}" -depth -type d -exec rmdir {} + 2>/dev/null
    [ -d "$h${cgroot#/}" ] && echo "down: cgroup $h${cgroot#/} left" >&2
  done
fi
# The node's address on lo, when node-up.sh added it.
[ -f "$W/lo-address-added" ] && ip addr del "$(cat "$W/lo-address-added")" dev lo
# The host-wide state: this node's entry; the last live node's down restores the sysctls
# and removes the mount points node-up.sh made on the host (rmdir: only when empty).
. "$here/host-state.sh"
entry="$HS/nodes/$(basename "$W")"
if [ -f "$entry" ] && [ "$(cut -d' ' -f1 "$entry")" = "$W" ]; then
  hs_lock
  rm -f "$entry"
  others=0
  for e in "$HS"/nodes/*; do [ -f "$e" ] && hs_entry_live "$e" && others=$((others + 1)); done
  if [ "$others" = 0 ]; then
    if [ -f "$HS/sysctl.saved" ]; then
      while IFS= read -r kv; do sysctl -q -w "$kv"; done <"$HS/sysctl.saved"
      rm -f "$HS/sysctl.saved"
    fi
    if [ -f "$HS/host-dirs-created" ]; then
      sort -r "$HS/host-dirs-created" | while read -r d; do rmdir "$d" 2>/dev/null || echo "down: $d kept (not empty)" >&2; done
      rm -f "$HS/host-dirs-created"
    fi
    rm -f "$HS"/nodes/* # left over: WORKDIRs gone or nothing running
  else
    echo "down: $others other test node(s) on this host: sysctls kept" >&2
  fi
  hs_unlock
fi

# Never rm through a mount still there (a hostPath volume, say): the host's files.
if [ "${2:-}" != "--keep" ]; then
  if [ -z "$left" ] && [ -z "$ns_left" ]; then rm -rf --one-file-system "$W"; else echo "down: $W kept" >&2; exit 1; fi
fi
