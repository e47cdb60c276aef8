#!/usr/bin/env bash
# Load benchmark: POST /v1/execute through the local server to a fast loopback upstream, beside
# the same upstream hit directly and through a bare pass-through proxy on the same stack
# (`bench-proxy`: hyper server + hyper-util client, one runtime per core, the same busy polling,
# no logic at all — the floor any proxy built this way pays for two HTTP exchanges per request),
# and through a second Vultrino with busy polling off (`--busy-poll-us 0`), in one run. It also
# reports the CPU each process (Vultrino, the upstream, wrk) spends per request in the 16-connection
# execute run: on one 2-core machine they share, that is what bounds the rate. Prints a report;
# `--save` also writes it to benches/results/load-<store>.txt. Needs wrk (Debian package `wrk`).
#
#   benches/load/run.sh [memory|file] [--save]
#
# Everything talks to 127.0.0.1 only. Bounded: each wrk run lasts DURATION seconds.
set -euo pipefail
cd "$(dirname "$0")/../.."
STORE=${1:-memory}
SAVE=${2:-}
DURATION=${DURATION:-10}
CONNS=${CONNS:-16}
source benches/load/common.sh

# As shipped (default busy polling), and with busy polling off for comparison.
start_vultrino on
start_vultrino off --busy-poll-us 0
V=$V_on VPID=$VPID_on
export VK=$VK_on UPSTREAM="$UP"

# Server CPU (user + system) spent per request during a run: less noisy than req/s on a shared
# machine, and what a proxy's cost really is.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
sys_ticks() { awk '{print $15}' "/proc/$1/stat"; }
# wrk itself, timed: its CPU seconds (user + sys) go to $WORK/wrk.cpu.
timed_run() { local TIMEFORMAT='%U %S'; { time run "$@"; } 2>"$WORK/wrk.time"; tail -1 "$WORK/wrk.time" | awk '{print $1 + $2}' >"$WORK/wrk.cpu"; }
us_per_req_s() { awk -v s="$1" -v n="$2" 'BEGIN{printf "%.1f", s / n * 1e6}'; }
reqs() { sed -n 's/^ *\([0-9]*\) requests in.*/\1/p'; }
us_per_req() { awk -v t="$1" -v n="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.1f", t / hz / n * 1e6}'; }

D16=$(run "$CONNS" "$UP/user")
T0=$(cpu_ticks "$VPID"); S0=$(sys_ticks "$VPID"); U0=$(cpu_ticks "$UPPID")
timed_run "$CONNS" -s benches/load/execute.lua "$V/v1/execute" >"$WORK/e16.out"; E16=$(cat "$WORK/e16.out")
ET=$(( $(cpu_ticks "$VPID") - T0 )); EST=$(( $(sys_ticks "$VPID") - S0 )); EUT=$(( $(cpu_ticks "$UPPID") - U0 )); EWS=$(cat "$WORK/wrk.cpu")
T0=$(cpu_ticks "$PXPID"); B16=$(run "$CONNS" -s benches/load/execute.lua "$PX/v1/execute"); BT=$(( $(cpu_ticks "$PXPID") - T0 ))
RSS_KB=$(awk '/VmHWM/{print $2}' /proc/$VPID/status)
O16=$(VK=$VK_off run "$CONNS" -s benches/load/execute.lua "$V_off/v1/execute")
D1=$(wrk -t1 -c1 -d"${DURATION}s" --latency "$UP/user"); E1=$(wrk -t1 -c1 -d"${DURATION}s" --latency -s benches/load/execute.lua "$V/v1/execute")
B1=$(wrk -t1 -c1 -d"${DURATION}s" --latency -s benches/load/execute.lua "$PX/v1/execute")
O1=$(VK=$VK_off wrk -t1 -c1 -d"${DURATION}s" --latency -s benches/load/execute.lua "$V_off/v1/execute")
# The same at one connection with every process (wrk, upstream, proxy, Vultrino) on one core. On a
# VM a request that hops between vCPUs pays for waking an idle vCPU at each hop (an IPI and the
# hypervisor rescheduling it, with cold caches), and the scheduler spreads the three processes over
# both vCPUs when the machine is idle: that cost, not the proxy's own work, dominates the figures
# above. On one core, every wake-up is a plain context switch, so the added latency is the proxy's.
for p in "${PIDS[@]}"; do taskset -a -p -c 0 "$p" >/dev/null; done
D1C=$(taskset -c 0 wrk -t1 -c1 -d"${DURATION}s" --latency "$UP/user")
E1C=$(taskset -c 0 wrk -t1 -c1 -d"${DURATION}s" --latency -s benches/load/execute.lua "$V/v1/execute")
B1C=$(taskset -c 0 wrk -t1 -c1 -d"${DURATION}s" --latency -s benches/load/execute.lua "$PX/v1/execute")

DR=$(echo "$D16" | rps); ER=$(echo "$E16" | rps)
DP=$(echo "$D1" | p50 | to_ms); EP=$(echo "$E1" | p50 | to_ms)
BR=$(echo "$B16" | rps); BP=$(echo "$B1" | p50 | to_ms)
OR=$(echo "$O16" | rps); OP=$(echo "$O1" | p50 | to_ms)
DPC=$(echo "$D1C" | p50 | to_ms); EPC=$(echo "$E1C" | p50 | to_ms); BPC=$(echo "$B1C" | p50 | to_ms)
REPORT=$(cat <<TXT
Vultrino load benchmark — store: $STORE, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ), ${DURATION}s per run, wrk -t2
  direct upstream, $CONNS conns:   $DR req/s
  via /v1/execute, $CONNS conns:   $ER req/s   ($(awk -v e="$ER" -v d="$DR" 'BEGIN{printf "%.1f%%", 100*e/d}') of direct)
  bare pass-through proxy, $CONNS conns: $BR req/s   ($(awk -v e="$BR" -v d="$DR" 'BEGIN{printf "%.1f%%", 100*e/d}') of direct; Vultrino does $(awk -v e="$ER" -v b="$BR" 'BEGIN{printf "%.1f%%", 100*e/b}') of it)
  p50 at 1 conn: direct $DP ms, via Vultrino $EP ms, added $(awk -v e="$EP" -v d="$DP" 'BEGIN{printf "%.3f", e-d}') ms
  p50 at 1 conn: bare proxy $BP ms, added $(awk -v e="$BP" -v d="$DP" 'BEGIN{printf "%.3f", e-d}') ms
  Vultrino with busy polling off (--busy-poll-us 0): $OR req/s at $CONNS conns; p50 at 1 conn $OP ms, added $(awk -v e="$OP" -v d="$DP" 'BEGIN{printf "%.3f", e-d}') ms
  p50 at 1 conn, all on one core: direct $DPC ms, via Vultrino $EPC ms, added $(awk -v e="$EPC" -v d="$DPC" 'BEGIN{printf "%.3f", e-d}') ms; bare proxy $BPC ms, added $(awk -v e="$BPC" -v d="$DPC" 'BEGIN{printf "%.3f", e-d}') ms
  server CPU per request at $CONNS conns: Vultrino $(us_per_req "$ET" "$(echo "$E16" | reqs)") µs ($(us_per_req "$EST" "$(echo "$E16" | reqs)") of it in the kernel), bare proxy $(us_per_req "$BT" "$(echo "$B16" | reqs)") µs
  the other processes in the same execute run, CPU per request: upstream $(us_per_req "$EUT" "$(echo "$E16" | reqs)") µs, wrk $(us_per_req_s "$EWS" "$(echo "$E16" | reqs)") µs ($(nproc) cores give $(awk -v n="$(nproc)" 'BEGIN{printf "%.1f", n * 1e6 / 50000}') µs per request at 50 000 req/s)
  server peak RSS (VmHWM) after the $CONNS-conn run: $((RSS_KB / 1024)) MiB
  errors: $(echo "$E16" | sed -n 's/^non-2xx-or-socket-errors: //p') in the $CONNS-conn execute run, $(echo "$E1" | sed -n 's/^non-2xx-or-socket-errors: //p') at 1 conn; busy polling off: $(echo "$O16" | sed -n 's/^non-2xx-or-socket-errors: //p') and $(echo "$O1" | sed -n 's/^non-2xx-or-socket-errors: //p')
TXT
)
echo "$REPORT"
if [ "$SAVE" = --save ]; then
  mkdir -p benches/results
  { echo "$REPORT"; echo; echo "--- raw wrk output ---"; echo "$D16"; echo "$E16"; echo "$B16"; echo "$D1"; echo "$E1"; echo "$B1"; echo "--- busy polling off ---"; echo "$O16"; echo "$O1"; echo "--- one core ---"; echo "$D1C"; echo "$E1C"; echo "$B1C"; } > "benches/results/load-$STORE.txt"
fi
