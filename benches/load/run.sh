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
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk" >&2; exit 1; }

cargo build --release -q -p vultrino-local -p vultrino-benches --bin vultrino --bin bench-upstream --bin bench-proxy
BIN=target/release
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

wait_line() { # file pattern
  for _ in $(seq 1 200); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
  echo "timed out waiting for '$2' in $1" >&2; cat "$1" >&2; exit 1
}

"$BIN/bench-upstream" 127.0.0.1:0 >"$WORK/up.out" & UPPID=$!; PIDS+=($UPPID)
wait_line "$WORK/up.out" "listening on"
UP="http://$(sed -n 's/listening on //p' "$WORK/up.out")"

PROXY_RUNTIME=per-core UPSTREAM="$UP" "$BIN/bench-proxy" 127.0.0.1:0 >"$WORK/px.out" & PXPID=$!; PIDS+=($PXPID)
wait_line "$WORK/px.out" "listening on"
PX="http://$(sed -n 's/listening on //p' "$WORK/px.out")"

PW=bench-admin-password
HASH=$("$BIN/vultrino" hash-password --iterations 1000 --allow-weak-password-hash-for-tests <<<"$PW")
# start_vultrino NAME [SERVE_FLAG...]: a server with one api_key credential and an executor key;
# sets V_NAME (base URL), VPID_NAME and VK_NAME (the key).
start_vultrino() {
  local name=$1 store_args=(--store memory) url token key pid
  shift
  [ "$STORE" = file ] && store_args=(--store file --data-dir "$WORK/data-$name")
  env -u VULTRINO_MASTER_KEY VULTRINO_ADMIN_PASSWORD_HASH="$HASH" RUST_LOG=warn \
    VULTRINO_ALLOW_WEAK_PASSWORD_HASH_FOR_TESTS=true \
    "$BIN/vultrino" "${store_args[@]}" serve --listen 127.0.0.1:0 --allow-loopback-upstreams \
    "$@" >"$WORK/v-$name.out" 2>"$WORK/v-$name.err" & pid=$!; PIDS+=($pid)
  wait_line "$WORK/v-$name.out" "listening on"
  url=$(sed -n 's/Vultrino listening on //p' "$WORK/v-$name.out")
  token=$(curl -sf "$url/login" -H 'content-type: application/json' \
    -d "{\"username\":\"admin\",\"password\":\"$PW\"}" | sed -E 's/.*"token":"([^"]+)".*/\1/')
  curl -sf "$url/v1/credentials" -H "authorization: Bearer $token" -H 'content-type: application/json' \
    -d '{"alias":"bench","type":"api_key","data":{"key":"bench-secret-value-0123456789"},"policy":{"allowed_hosts":["127.0.0.1"]}}' >/dev/null
  key=$(curl -sf "$url/v1/keys" -H "authorization: Bearer $token" -H 'content-type: application/json' \
    -d '{"name":"bench","role":"executor"}' | sed -E 's/.*"key":"([^"]+)".*/\1/')
  # Sanity: one execute works and comes back 200 from the upstream.
  curl -sf "$url/v1/execute" -H "authorization: Bearer $key" -H 'content-type: application/json' \
    -d "{\"credential\":\"bench\",\"method\":\"GET\",\"url\":\"$UP/user\"}" | grep -q '"status":200'
  declare -g "V_$name=$url" "VPID_$name=$pid" "VK_$name=$key"
}
# As shipped (default busy polling), and with busy polling off for comparison.
start_vultrino on
start_vultrino off --busy-poll-us 0
V=$V_on VPID=$VPID_on
export VK=$VK_on UPSTREAM="$UP"

run() { wrk -t2 -c"$1" -d"${DURATION}s" --latency "${@:2}"; }
rps() { sed -n 's/^Requests\/sec: *//p'; }
p50() { awk '$1=="50%"{print $2}'; }
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); print v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v); print v} else {sub(/s$/,"",v); print v*1000}}'; }

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
