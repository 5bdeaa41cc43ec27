#!/usr/bin/env bash
# CI's check of the demo: `make demo` brings every example to Ready (it fails otherwise), a
# second run reuses what runs, and `make demo-stop` leaves no process and no file behind.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
state="$root/target/demo"
cd "$root"
start=$SECONDS
make demo
echo "demo-check: make demo took $((SECONDS - start)) s"
start=$SECONDS
make demo >/dev/null
echo "demo-check: again, $((SECONDS - start)) s"
pids="$(cat "$state"/run/*.pid)"
make demo-stop
left=""
for pid in $pids; do kill -0 "$pid" 2>/dev/null && left+=" $pid"; done
[ -z "$left" ] || { echo "demo-check: still running after demo-stop:$left" >&2; exit 1; }
[ ! -e "$state" ] || { echo "demo-check: $state is still there" >&2; exit 1; }
echo "demo-check: demo-stop left nothing running and removed $state"
