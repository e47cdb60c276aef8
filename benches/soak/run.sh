#!/usr/bin/env bash
# Soak benchmark: `vultrino serve` (release build, file store in a scratch data directory) under
# DURATION seconds of mixed traffic at RATE_FRACTION (default 50 %) of the rate the same mix
# reaches closed-loop at its start; a report every INTERVAL seconds (throughput, p50/p99, RSS, open
# fds, threads, store size, audit count); at the end every acknowledged admin change is read back,
# live and after a restart on the same data directory. The traffic and the report are in
# benches/soak/soak.py; the faulty upstream (resets, truncated bodies, stalls; and an OAuth2 token
# endpoint) in benches/soak/faulty_upstream.py.
#
#   unshare -n bash -c 'ip link set lo up && benches/soak/run.sh [OUTPUT_FILE]'
#
# DURATION (default 1800), INTERVAL (300), WARMUP (= INTERVAL: reports before it are left out of
# the drift), CALIBRATE (20), WORKERS (4 client processes), RATE_FRACTION (0.5), LOGIN_EVERY (20 s),
# FAULT_EVERY (1 s), SEED (17), ADMIN_WEIGHT (50 admin changes per 1000 operations), SOAK_ANON=1
# (also print the RSS split: anonymous and file-backed), NO_BUILD=1 (use the release binaries as they are).
# Everything talks to 127.0.0.1 only; every process and the scratch directory go on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-}
[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p vultrino-local -p vultrino-benches --bin vultrino --bin bench-upstream
BIN=target/release
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait "${PIDS[@]}" 2>/dev/null || true
  # The restarted server (soak.py started it and stops it; this is in case it died half-way).
  [ -f "$WORK/v2.pid" ] && kill "$(cat "$WORK/v2.pid")" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

wait_line() { # file pattern
  for _ in $(seq 1 400); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
  echo "timed out waiting for '$2' in $1" >&2; cat "$1" >&2; exit 1
}

"$BIN/bench-upstream" 127.0.0.1:0 >"$WORK/up.out" & PIDS+=($!)
wait_line "$WORK/up.out" "listening on"
UP="http://$(sed -n 's/listening on //p' "$WORK/up.out")"
FETCH_TIMEOUT_MS=${FETCH_TIMEOUT_MS:-2000}
python3 benches/soak/faulty_upstream.py "$(awk -v t="$FETCH_TIMEOUT_MS" 'BEGIN{print t/1000 + 3}')" \
  >"$WORK/fault.out" & PIDS+=($!)
wait_line "$WORK/fault.out" "listening on"
FAULT="http://$(sed -n 's/listening on //p' "$WORK/fault.out")"

PW=soak-admin-password-0123
HASH=$("$BIN/vultrino" hash-password --iterations 1000 --allow-weak-password-hash-for-tests <<<"$PW")
DATA="$WORK/data"
# The login throttle is kept on, over a one-minute window, so that the login loop (one login
# every LOGIN_EVERY seconds) stays under it.
SERVE=(env -u VULTRINO_MASTER_KEY VULTRINO_ADMIN_PASSWORD_HASH="$HASH" RUST_LOG=warn
  VULTRINO_ALLOW_WEAK_PASSWORD_HASH_FOR_TESTS=true "$BIN/vultrino" --store file --data-dir "$DATA"
  serve --listen 127.0.0.1:0 --allow-loopback-upstreams --fetch-timeout-ms "$FETCH_TIMEOUT_MS"
  --login-window-secs 60)
"${SERVE[@]}" >"$WORK/v.out" 2>"$WORK/v.err" & VPID=$!; PIDS+=($VPID)
wait_line "$WORK/v.out" "listening on"
V=$(sed -n 's/Vultrino listening on //p' "$WORK/v.out")

# Setup: one credential of each type, one for the faulty upstream, an executor key.
TOKEN=$(curl -sf "$V/login" -H 'content-type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$PW\"}" | sed -E 's/.*"token":"([^"]+)".*/\1/')
cred() { curl -sf "$V/v1/credentials" -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' -d "$1" >/dev/null; }
POL='"policy":{"allowed_hosts":["127.0.0.1"]}'
cred "{\"alias\":\"soak-api-key\",\"type\":\"api_key\",\"data\":{\"key\":\"soak-api-key-secret-0123456789\"},\"base_url\":\"$UP\",$POL}"
cred "{\"alias\":\"soak-basic-auth\",\"type\":\"basic_auth\",\"data\":{\"username\":\"soak\",\"password\":\"soak-basic-secret-0123456789\"},$POL}"
cred "{\"alias\":\"soak-query-param\",\"type\":\"query_param\",\"data\":{\"name\":\"api_key\",\"value\":\"soak-query-secret-0123456789\"},$POL}"
cred "{\"alias\":\"soak-oauth2\",\"type\":\"oauth2\",\"data\":{\"token_url\":\"$FAULT/token\",\"client_id\":\"soak\",\"client_secret\":\"soak-oauth-secret-0123456789\"},$POL}"
cred "{\"alias\":\"soak-fault\",\"type\":\"api_key\",\"data\":{\"key\":\"soak-fault-secret-0123456789\"},$POL}"
KEY=$(curl -sf "$V/v1/keys" -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
  -d '{"name":"soak-agent","role":"executor"}' | sed -E 's/.*"key":"([^"]+)".*/\1/')
for c in soak-api-key soak-basic-auth soak-query-param soak-oauth2; do
  curl -sf "$V/v1/execute" -H "authorization: Bearer $KEY" -H 'content-type: application/json' \
    -d "{\"credential\":\"$c\",\"method\":\"GET\",\"url\":\"$UP/user\"}" | grep -q '"status":200' \
    || { echo "sanity execute through $c failed" >&2; exit 1; }
done

# soak.py restarts the server on the same data directory at the end (RESTART_CMD prints the
# "listening on" line; soak.py writes its pid to $WORK/v2.pid for the cleanup).
RESTART_CMD="exec $(printf '%q ' "${SERVE[@]}") 2>>$WORK/v2.err"
HEADER="Vultrino soak — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load average at start: $(cut -d' ' -f1-3 /proc/loadavg), commit $(git rev-parse --short HEAD)"
run_soak() {
  echo "$HEADER"
  V_ADDR=${V#http://} UP=$UP FAULT=$FAULT VPID=$VPID DATA_DIR=$DATA ADMIN_PW=$PW AGENT_KEY=$KEY \
    RESTART_CMD=$RESTART_CMD V2_PIDFILE=$WORK/v2.pid python3 benches/soak/soak.py
  echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
  if [ -s "$WORK/v.err" ] || [ -s "$WORK/v2.err" ]; then
    echo "server stderr (warnings and errors), last 20 lines:"; cat "$WORK/v.err" "$WORK/v2.err" 2>/dev/null | tail -20
  fi
}
if [ -n "$OUT" ]; then run_soak | tee "$OUT"; else run_soak; fi
