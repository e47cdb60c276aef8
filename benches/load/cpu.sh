#!/usr/bin/env bash
# Server CPU per request: `bench-proxy` (the logic-free reference) and Vultrino's `GET /proxy/`
# and `POST /v1/execute`, measured alternately against the same processes, ROUNDS times. Each
# figure is the process's user+system CPU time (from /proc/PID/stat, 10 ms ticks) over a
# DURATION-second wrk run at 16 connections, divided by the requests wrk completed, and its two
# parts (user: the program's own code; system: the kernel's work for it, mostly sockets). Unlike the
# request rate, CPU per request hardly moves when other work shares the machine, so it is the
# figure to compare before and after a change (`BIN_OVERRIDE=dir-of-other-build` measures another build
# with the same scripts). `--save` writes benches/results/load-cpu.txt. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/../.."
SAVE=${1:-}
STORE=memory
DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
source benches/load/common.sh
[ -n "${BIN_OVERRIDE:-}" ] && BIN=$BIN_OVERRIDE
start_vultrino on
V=$V_on
export VK=$VK_on UPSTREAM="$UP"
curl -sf "$V/proxy/bench/user" -H "authorization: Bearer $VK" | grep -q '"login":"octocat"'

# "USER SYSTEM": the clock ticks (10 ms) PID has run so far in each.
ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }
# measure NAME PID WRK-ARGS…: "NAME req/s R cpu-us/req C (user U, system S)"
measure() {
  local name=$1 pid=$2 u0 s0 u1 s1 out n r
  shift 2
  read -r u0 s0 < <(ticks "$pid")
  out=$(wrk -t2 -c16 -d"${DURATION}s" "$@")
  read -r u1 s1 < <(ticks "$pid")
  n=$(awk '/requests in/{print $1}' <<<"$out")
  r=$(awk '/Requests\/sec/{print $2}' <<<"$out")
  echo "$name req/s $r $(awk -v u0="$u0" -v s0="$s0" -v u1="$u1" -v s1="$s1" -v n="$n" 'BEGIN{
    printf "cpu-us/req %.1f (user %.1f, system %.1f)", (u1-u0+s1-s0)*10000/n, (u1-u0)*10000/n, (s1-s0)*10000/n}')"
}
OUT="Server CPU per request — memory store, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ), wrk -t2 -c16, ${DURATION}s per run, $ROUNDS rounds"$'\n'
for r in $(seq 1 "$ROUNDS"); do
  OUT+="round $r (load average $(cut -d' ' -f1-3 /proc/loadavg)):"$'\n'
  OUT+="  $(measure bench-proxy "$PXPID" "$PX/user")"$'\n'
  OUT+="  $(measure proxy "$VPID_on" -H "Authorization: Bearer $VK" "$V/proxy/bench/user")"$'\n'
  OUT+="  $(measure execute "$VPID_on" -s benches/load/execute.lua "$V/v1/execute")"$'\n'
done
echo "$OUT"
[ "$SAVE" = --save ] && echo "$OUT" > benches/results/load-cpu.txt
exit 0
