# Sourced by node-up.sh and down.sh (not run): the state every test node on this host
# shares, in $HS (/run/rh-testenv), changed only under the lock $HS/lock (flock):
#
#   $HS/boot_id            the boot it describes (another boot: sysctl.saved and nodes/ are
#                          stale and dropped, the kernel having reset the sysctls)
#   $HS/nodes/<name>       one line per node started and not yet stopped, <name> being its
#                          WORKDIR's name (its cgroup root too, so unique on the host):
#                          "WORKDIR NODE_NAME NODE_IP KUBECONFIG NODE_UP_PID"
#   $HS/sysctl.saved       the sysctls' values before the first node changed them (k=v lines),
#                          restored (and removed) when the last node stops
#   $HS/host-dirs-created  the mount points (/var/lib/kubelet, /var/log/containers) made
#                          on the host because they were missing, removed (when empty) then
#
# A node counts as live while its WORKDIR exists and node-up.sh (NODE_UP_PID) or one of the
# processes in WORKDIR/pids still runs; the others are left over (a run that never called
# down.sh) and neither keep the sysctls nor hold their NODE_IP.
HS=/run/rh-testenv
hs_lock() {
  mkdir -p "$HS/nodes"
  exec 9>"$HS/lock"
  flock 9
  local boot
  boot="$(cat /proc/sys/kernel/random/boot_id)"
  if [ "$(cat "$HS/boot_id" 2>/dev/null)" != "$boot" ]; then
    rm -f "$HS/sysctl.saved" "$HS"/nodes/*
    echo "$boot" >"$HS/boot_id"
  fi
}
hs_unlock() { exec 9>&-; }
hs_pid_alive() { # pid: running, not a zombie
  [ -n "$1" ] && [ -r "/proc/$1/stat" ] && [ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" != Z ]
}
hs_entry_live() { # entry-file
  local w name ip kc uppid f
  read -r w name ip kc uppid <"$1" || return 1
  [ -f "$w/.rh-testenv" ] || return 1
  hs_pid_alive "$uppid" && return 0
  for f in "$w"/pids/kubelet "$w"/pids/containerd "$w"/pids/mntns; do
    [ -f "$f" ] && hs_pid_alive "$(cat "$f")" && return 0
  done
  return 1
}
