#!/usr/bin/env bash
# Load benchmark of the pass-through route (issue 13): the same loopback upstream GET hit
# (a) directly, (b) through the bare pass-through proxy `bench-proxy` (the reference: same stack,
# no logic), (c) through Vultrino's `GET /proxy/bench/user` (agent key in `Authorization: Bearer`,
# credential `bench` with the upstream as its `base_url`) and (d) through `POST /v1/execute`, at
# CONNS (16) connections and at 1, RUNS times (3) against the same processes. Prints each run's
# req/s and p50, the ratios of (c) and (d) to (b) at CONNS connections, the p50 (c) adds over (b)
# at 1 connection, then the median and lowest–highest of those over the runs. Memory store,
# default busy polling, wrk -t2 at CONNS connections and -t1 at 1. `--save` also writes the whole
# output to benches/results/load-proxy.txt. Needs wrk (Debian package `wrk`).
#
#   benches/load/proxy.sh [--save]
#
# Each round also times the first byte of a streamed reply (`benches/load/ttfb.py`): TTFB_N (200)
# sequential `GET /stream` on one keep-alive connection, directly, through `bench-proxy` (which
# passes that body on chunk by chunk) and through `/proxy/bench/stream`; the upstream sends one
# server-sent event with the head and the last one 20 ms later. Median per path, and the median's
# difference (c) − (b).
#
# Everything talks to 127.0.0.1 only. Bounded: 8 wrk runs of DURATION seconds per round, and
# 3 × TTFB_N requests of ~20 ms each.
set -euo pipefail
cd "$(dirname "$0")/../.."
SAVE=${1:-}
STORE=memory
DURATION=${DURATION:-10}
CONNS=${CONNS:-16}
RUNS=${RUNS:-3}
TTFB_N=${TTFB_N:-200}
source benches/load/common.sh

start_vultrino on
V=$V_on
export VK=$VK_on UPSTREAM="$UP"
# Sanity: the proxy route answers 200 with the upstream's body.
curl -sf "$V/proxy/bench/user" -H "authorization: Bearer $VK" | grep -q '"login":"octocat"'
curl -sf "$PX/user" | grep -q '"login":"octocat"'

# Errors in one wrk output: non-2xx/3xx answers plus socket errors.
errs() { awk '/^ *Non-2xx or 3xx responses:/{n+=$NF} /^ *Socket errors:/{gsub(/,/,""); n+=$4+$6+$8+$10} END{print n+0}'; }
# one C: the four paths at C connections; sets R_<x>_C (req/s), P_<x>_C (p50 ms), E (errors).
one() {
  local c=$1 t=2 out x
  [ "$c" = 1 ] && t=1
  for x in a b c d; do
    case $x in
      a) out=$(wrk -t$t -c"$c" -d"${DURATION}s" --latency "$UP/user") ;;
      b) out=$(wrk -t$t -c"$c" -d"${DURATION}s" --latency "$PX/user") ;;
      c) out=$(wrk -t$t -c"$c" -d"${DURATION}s" --latency -H "Authorization: Bearer $VK" "$V/proxy/bench/user") ;;
      d) out=$(wrk -t$t -c"$c" -d"${DURATION}s" --latency -s benches/load/execute.lua "$V/v1/execute") ;;
    esac
    RAW+="--- ($x) $c conns ---"$'\n'"$out"$'\n'
    declare -g "R_${x}_$c=$(echo "$out" | rps)" "P_${x}_$c=$(echo "$out" | p50 | to_ms)"
    E=$((E + $(echo "$out" | errs)))
  done
}
val() { local n=$1; echo "${!n}"; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.1f", 100*a/b}'; }
sub3() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", a-b}'; }
# median and range of a list of numbers
stat() { tr ' ' '\n' | sort -g | awk '{v[NR]=$1} END{printf "median %s (%s–%s)", v[int((NR+1)/2)], v[1], v[NR]}'; }

OUT="Vultrino pass-through proxy benchmark — memory store, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ), ${DURATION}s per wrk run, $RUNS runs"$'\n'
RAW=""
C_PCT=() D_PCT=() ADD=() ADDX=() ADDB=() TT=()
for r in $(seq 1 "$RUNS"); do
  E=0
  one "$CONNS"; one 1
  cp=$(pct "$(val R_c_$CONNS)" "$(val R_b_$CONNS)"); dp=$(pct "$(val R_d_$CONNS)" "$(val R_b_$CONNS)")
  add=$(sub3 "$P_c_1" "$P_b_1"); addx=$(sub3 "$P_d_1" "$P_b_1"); addb=$(sub3 "$P_b_1" "$P_a_1")
  Ta=$(benches/load/ttfb.py "$UP/stream" "$TTFB_N"); Tb=$(benches/load/ttfb.py "$PX/stream" "$TTFB_N")
  Tc=$(benches/load/ttfb.py "$V/proxy/bench/stream" "$TTFB_N" "Authorization: Bearer $VK")
  tt=$(sub3 "${Tc%% *}" "${Tb%% *}"); TT+=("$tt")
  C_PCT+=("$cp"); D_PCT+=("$dp"); ADD+=("$add"); ADDX+=("$addx"); ADDB+=("$addb")
  OUT+=$(cat <<TXT
run $r ($(date -u +%H:%M:%SZ), load average $(cut -d' ' -f1-3 /proc/loadavg)):
  $CONNS conns, req/s: (a) direct $(val R_a_$CONNS)  (b) bench-proxy $(val R_b_$CONNS)  (c) /proxy/ $(val R_c_$CONNS)  (d) /v1/execute $(val R_d_$CONNS)
  $CONNS conns, p50 ms:  (a) $(val P_a_$CONNS)  (b) $(val P_b_$CONNS)  (c) $(val P_c_$CONNS)  (d) $(val P_d_$CONNS)
  1 conn, req/s:  (a) $R_a_1  (b) $R_b_1  (c) $R_c_1  (d) $R_d_1
  1 conn, p50 ms: (a) $P_a_1  (b) $P_b_1  (c) $P_c_1  (d) $P_d_1
  (c)/(b) at $CONNS conns: $cp %   (d)/(b): $dp %   (c)/(b) at 1 conn: $(pct "$R_c_1" "$R_b_1") %
  added p50 at 1 conn over (b): (c) $add ms, (d) $addx ms; (b) over (a): $addb ms
  TTFB of a streamed reply, median and p90 ms over $TTFB_N: (a) $(echo "$Ta" | cut -d' ' -f1-2)  (b) $(echo "$Tb" | cut -d' ' -f1-2)  (c) $(echo "$Tc" | cut -d' ' -f1-2); (c) − (b): $tt ms
  errors (all 8 wrk runs): $E
TXT
)$'\n'
done
OUT+=$(cat <<TXT
over the $RUNS runs:
  (c) /proxy/ as % of (b) at $CONNS conns:     $(echo "${C_PCT[*]}" | stat)   target ≥ 90
  (d) /v1/execute as % of (b) at $CONNS conns: $(echo "${D_PCT[*]}" | stat)   target ≥ 80
  added p50 of (c) over (b) at 1 conn, ms:   $(echo "${ADD[*]}" | stat)   target ≤ 0.030
  added p50 of (d) over (b) at 1 conn, ms:   $(echo "${ADDX[*]}" | stat)
  added p50 of (b) over (a) at 1 conn, ms:   $(echo "${ADDB[*]}" | stat)
  TTFB of a streamed reply, (c) − (b), ms:    $(echo "${TT[*]}" | stat)   target ≤ 0.5
TXT
)
echo "$OUT"
if [ "$SAVE" = --save ]; then
  mkdir -p benches/results
  { echo "$OUT"; echo; echo "--- raw wrk output ---"; echo "$RAW"; } > benches/results/load-proxy.txt
fi
