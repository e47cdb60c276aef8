#!/usr/bin/env bash
# System calls per request, counted by `strace -c -f` attached to each server (all its
# threads) over N requests sent one by one on a keep-alive connection
# (`benches/load/requests.py`) after 500 warm-up requests: `bench-proxy` (the logic-free
# reference), Vultrino's `GET /proxy/bench/user` and `POST /v1/execute`, memory store, default
# busy polling (whose `epoll_wait`/`sched_yield` rounds depend on time, not on the request: read
# `writev`, `recvfrom`, `write` and the rest). A kernel exchange costs several µs on the
# development VM, so one extra system call per request shows in the rate; the instruction
# counts of `callgrind.sh` do not include the kernel. Found the eventfd `write` per `/proxy/`
# request of decision 0132 (measured there; not worth removing).
#
#   NO_BUILD=1 [BIN_DIR=dir] [N=2000] benches/load/syscalls.sh
#
# Needs strace (apt-get install -y strace). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v strace >/dev/null || { echo "strace is needed: apt-get install -y strace" >&2; exit 1; }
STORE=memory
N=${N:-2000}
source benches/load/common.sh
start_vultrino s
REQ=benches/load/requests.py
# trace NAME PID URL ARGS…: "NAME" then each system call's count per request.
trace() {
  local name=$1 pid=$2 url=$3 sp
  shift 3
  "$REQ" "$url" 500 "$@"
  strace -c -f -p "$pid" -o "$WORK/st-$name" 2>/dev/null & sp=$!
  sleep 1
  "$REQ" "$url" "$N" "$@"
  sleep 0.3
  kill -INT "$sp"
  wait "$sp" || true
  echo "$name: system calls per request (N=$N)"
  awk -v n="$N" '$NF=="total" {printf "  %-14s %6.2f\n", "all", $4/n; next}
    NR>2 && $4 ~ /^[0-9]+$/ && $4/n >= 0.005 {printf "  %-14s %6.2f\n", $NF, $4/n}' "$WORK/st-$name"
}
echo "System calls per request (strace -c -f, $PROFILE build, $(date -u +%Y-%m-%dT%H:%MZ))"
trace bench-proxy "$PXPID" "$PX/user"
trace proxy "$VPID_s" "$V_s/proxy/bench/user" "Authorization: Bearer $VK_s"
BODY="{\"credential\":\"bench\",\"action\":\"http.request\",\"params\":{\"method\":\"GET\",\"url\":\"$UP/user\"}}"
trace execute "$VPID_s" "$V_s/v1/execute" "Authorization: Bearer $VK_s" --post "$BODY"
