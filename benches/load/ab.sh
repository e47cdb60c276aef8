#!/usr/bin/env bash
# A/B of two builds of `vultrino` against the same `bench-proxy` and upstream, alternating
# within each round (the machine's speed moves between minutes; a before/after taken in turns
# compares, two separate runs do not). Per round: the rate and server CPU per request (user +
# system, /proc/PID/stat) at 16 connections of `bench-proxy`, A's and B's `GET /proxy/bench/user`
# and `POST /v1/execute`, then the p50 at 1 connection of `bench-proxy` and A's and B's
# `/proxy/`. Memory store, default busy polling, wrk -t2 -c16 and -t1 -c1, DURATION (5) seconds
# per run, ROUNDS (5) rounds. Loopback only. Needs wrk.
#
#   BINA=dir-of-build-a BINB=dir-of-build-b [BIN_DIR=dir-of-bench-binaries] benches/load/ab.sh
#
# BINA and BINB each hold a `vultrino`; `bench-proxy` and `bench-upstream` come from BIN_DIR
# (default target/release). Nothing is built. Used for decision 0129's figures.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${BINA:?BINA=dir of build A}" "${BINB:?BINB=dir of build B}"
STORE=memory
DURATION=${DURATION:-5}
NO_BUILD=1
source benches/load/common.sh
BIN=$BINA start_vultrino a
BIN=$BINB start_vultrino b
export UPSTREAM="$UP"
# measure NAME PID WRK-ARGS…: the rate and CPU per request at 16 connections.
measure() {
  local name=$1 pid=$2 t0 t1 out n
  shift 2
  t0=$(awk '{print $14+$15}' "/proc/$pid/stat")
  out=$(wrk -t2 -c16 -d"${DURATION}s" "$@")
  t1=$(awk '{print $14+$15}' "/proc/$pid/stat")
  n=$(awk '/requests in/{print $1}' <<<"$out")
  awk -v n="$n" -v c=$((t1 - t0)) -v name="$name" -v r="$(rps <<<"$out")" \
    'BEGIN{printf "%-10s c16 req/s %8.0f cpu-us/req %5.1f\n", name, r, c*10000/n}'
}
# latency NAME WRK-ARGS…: the rate and p50 at 1 connection.
latency() {
  local name=$1 out
  shift
  out=$(wrk -t1 -c1 -d"${DURATION}s" --latency "$@")
  echo "$name c1 req/s $(rps <<<"$out") p50 $(p50 <<<"$out" | to_ms) ms"
}
echo "A=$BINA B=$BINB $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "${ROUNDS:-5}"); do
  echo "round $r (load $(cut -d' ' -f1-3 /proc/loadavg))"
  measure bench-proxy "$PXPID" "$PX/user"
  measure A-proxy "$VPID_a" -H "Authorization: Bearer $VK_a" "$V_a/proxy/bench/user"
  measure B-proxy "$VPID_b" -H "Authorization: Bearer $VK_b" "$V_b/proxy/bench/user"
  VK=$VK_a measure A-execute "$VPID_a" -s benches/load/execute.lua "$V_a/v1/execute"
  VK=$VK_b measure B-execute "$VPID_b" -s benches/load/execute.lua "$V_b/v1/execute"
  latency bench-proxy "$PX/user"
  latency A-proxy -H "Authorization: Bearer $VK_a" "$V_a/proxy/bench/user"
  latency B-proxy -H "Authorization: Bearer $VK_b" "$V_b/proxy/bench/user"
done
