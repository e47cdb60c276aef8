#!/usr/bin/env bash
# File store vs memory store, in the same run: two Vultrino servers (one per store, the same
# release build, one api_key credential and one executor key each) behind the same loopback
# upstream; RUNS rounds, each a wrk run of POST /v1/execute at CONNS connections against the
# memory server and then the file server (the order alternates between rounds, so that neither
# store always runs second). Prints each round's rates and ratio, then the ratio's median and
# spread. `--save` appends the report to benches/results/load-stores.txt. Needs wrk.
#
#   benches/load/stores.sh [--save]
#
# Everything talks to 127.0.0.1 only. Bounded: 2 × RUNS wrk runs of DURATION seconds.
set -euo pipefail
cd "$(dirname "$0")/../.."
SAVE=${1:-}
DURATION=${DURATION:-10}
CONNS=${CONNS:-16}
RUNS=${RUNS:-5}
STORE=memory
source benches/load/common.sh

STORE=memory start_vultrino mem
STORE=file start_vultrino file
export UPSTREAM="$UP"
errors() { sed -n 's/^non-2xx-or-socket-errors: //p'; }
threads_of() { awk '/^Threads:/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# The file server's thread count, sampled every 0.2 s while its wrk run lasts; the peak goes to $1.
sample_threads() {
  local max=0 t
  while :; do
    t=$(threads_of "$VPID_file"); [ "${t:-0}" -gt "$max" ] && { max=$t; echo "$max" >"$1"; }
    sleep 0.2
  done
}
run_file() {
  sample_threads "$WORK/peak-$i" & local sampler=$!
  VK=$VK_file run "$CONNS" -s benches/load/execute.lua "$V_file/v1/execute"
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
}

LINES=()
RATIOS=()
RAW=
for i in $(seq 1 "$RUNS"); do
  if [ $((i % 2)) = 1 ]; then
    M=$(VK=$VK_mem run "$CONNS" -s benches/load/execute.lua "$V_mem/v1/execute")
    F=$(run_file)
  else
    F=$(run_file)
    M=$(VK=$VK_mem run "$CONNS" -s benches/load/execute.lua "$V_mem/v1/execute")
  fi
  RAW+=$'\n'"--- round $i, memory ---"$'\n'"$M"$'\n'"--- round $i, file ---"$'\n'"$F"
  MR=$(echo "$M" | rps); FR=$(echo "$F" | rps)
  R=$(awk -v f="$FR" -v m="$MR" 'BEGIN{printf "%.1f", 100*f/m}')
  RATIOS+=("$R")
  LINES+=("  round $i: memory $MR req/s, file $FR req/s — file = $R % of memory (errors: memory $(echo "$M" | errors), file $(echo "$F" | errors); file p50 $(echo "$F" | p50), p99 $(echo "$F" | awk '$1=="99%"{print $2}'); file server threads: peak $(cat "$WORK/peak-$i" 2>/dev/null || echo "?") during its run)")
done
SORTED=$(printf '%s\n' "${RATIOS[@]}" | sort -n)
MED=$(echo "$SORTED" | awk '{a[NR]=$1} END{print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}')
MIN=$(echo "$SORTED" | head -1); MAX=$(echo "$SORTED" | tail -1)
FILE_DIR_BYTES=$(du -sb "$WORK/data-file" | cut -f1)
REPORT=$(cat <<TXT
Vultrino file store vs memory store — $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ), $RUNS rounds of ${DURATION}s, wrk -t2, $CONNS conns, POST /v1/execute
$(printf '%s\n' "${LINES[@]}")
  file store's rate as a share of the memory store's: median $MED %, spread $MIN–$MAX % over $RUNS rounds (target ≥ 25 %)
  file server threads after the runs: $(threads_of "$VPID_file") (memory server: $(threads_of "$VPID_mem"))
  file store data directory after the runs: $((FILE_DIR_BYTES / 1024)) KiB ($(find "$WORK/data-file" -name 'journal-*.log' | wc -l) journal segments, $(find "$WORK/data-file" -name '*.kv' | wc -l) record files)
TXT
)
echo "$REPORT"
if [ "$SAVE" = --save ]; then
  mkdir -p benches/results
  { echo "$REPORT"; echo "raw wrk output:$RAW" | sed 's/^/    /'; echo; } >> benches/results/load-stores.txt
fi
if [ -n "${SHOW_RAW:-}" ]; then
  echo "$RAW"
fi
