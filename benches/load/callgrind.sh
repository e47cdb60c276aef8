#!/usr/bin/env bash
# Instructions per request, counted by valgrind (`--tool=callgrind`): exact and repeatable however
# loaded the machine is, unlike a rate or a CPU time. The same three paths as cpu.sh and proxy.sh
# — `bench-proxy` (the logic-free reference), Vultrino's `GET /proxy/bench/user` and `POST
# /v1/execute` — each server under callgrind (busy polling off: spinning would be counted), the
# upstream native. Per path: WARM requests (200), a callgrind dump, N requests (2000) on one
# keep-alive connection (`benches/load/requests.py`), a second dump; the second dump's
# instruction count over N is the figure (the whole server process: hyper, tokio, the
# allocator, the core — not the kernel). The dumps stay in CG_KEEP (a directory) when it is set,
# for `callgrind_annotate`.
#
#   PROFILE=profiling benches/load/callgrind.sh      # any cargo profile; default release
#   ATOMICS=1 benches/load/callgrind.sh              # also atomic read-modify-writes per request
#
# ATOMICS=1 dumps per instruction (`--dump-instr=yes`) and counts, per path, the locked
# instructions the server ran per request, by function (benches/load/atomics.py): the writes
# that move a cache line between cores when the data is shared, which an instruction count
# does not weigh.
#
# Valgrind hides SHA extensions from the program, so SHA-256 takes its portable path and counts
# more than it costs natively (benches/README.md, "criterion and instruction counts").
# Loopback only. Bounded: WARM + N + 2 requests per path, a few ms each under valgrind.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v valgrind >/dev/null || { echo "valgrind is needed: apt-get install -y valgrind" >&2; exit 1; }
STORE=memory
N=${N:-2000}
WARM=${WARM:-10200}
# Valgrind starts a server in seconds, not milliseconds.
WAIT_TRIES=${WAIT_TRIES:-2400}
source benches/load/common.sh
CG=(valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.%p")
[ "${ATOMICS:-}" = 1 ] && CG+=(--dump-instr=yes)
REQ=benches/load/requests.py

VULTRINO_WRAP="${CG[*]}" start_vultrino cg --busy-poll-us 0 --threads 1
V=$V_cg
PROXY_RUNTIME=per-core PROXY_BUSY_POLL_US=0 UPSTREAM="$UP" "${CG[@]}" "$BIN/bench-proxy" 127.0.0.1:0 \
  >"$WORK/cgpx.out" 2>"$WORK/cgpx.err" & CGPX=$!; PIDS+=($CGPX)
wait_line "$WORK/cgpx.out" "listening on"
CGPXURL="http://$(sed -n 's/listening on //p' "$WORK/cgpx.out")"

# dump PID URL ARGS…: a callgrind dump of PID, triggered by one request (callgrind reads its
# control file only while the program runs).
dump() {
  local pid=$1
  shift
  callgrind_control -d "$pid" >/dev/null & local ctl=$!
  sleep 0.5
  "$REQ" "$@"
  wait "$ctl"
}
# measure NAME PID URL ARGS…: "NAME instructions per request I"
measure() {
  local name=$1 pid=$2 url=$3 last
  shift 3
  "$REQ" "$url" "$WARM" "$@"
  dump "$pid" "$url" 1 "$@"
  "$REQ" "$url" "$N" "$@"
  dump "$pid" "$url" 1 "$@"
  last=$(ls -t "$WORK"/cg."$pid".* | head -1)
  [ -n "${CG_KEEP:-}" ] && mkdir -p "$CG_KEEP" && cp "$last" "$CG_KEEP/$name.callgrind"
  echo "$name instructions per request $(awk -v n="$N" '/^(summary|totals):/{printf "%.0f", $2/n; exit}' "$last")"
  if [ "${ATOMICS:-}" = 1 ]; then
    local bin="$BIN/vultrino"
    [ "$name" = bench-proxy ] && bin="$BIN/bench-proxy"
    echo "$name $(benches/load/atomics.py "$last" "$bin" "$N" "${ATOMICS_TOP:-12}")"
  fi
}
BODY="{\"credential\":\"bench\",\"action\":\"http.request\",\"params\":{\"method\":\"GET\",\"url\":\"$UP/user\"}}"
echo "Instructions per request (callgrind, $PROFILE build, 1 connection, $N requests after $WARM, $(date -u +%Y-%m-%dT%H:%MZ))"
measure bench-proxy "$CGPX" "$CGPXURL/user"
measure proxy "$VPID_cg" "$V/proxy/bench/user" "Authorization: Bearer $VK_cg"
measure execute "$VPID_cg" "$V/v1/execute" "Authorization: Bearer $VK_cg" --post "$BODY"
