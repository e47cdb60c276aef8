# Shared by benches/load/run.sh and benches/load/proxy.sh (sourced, not run): builds the release
# binaries, starts the loopback upstream (`bench-upstream`, $UP, $UPPID), the bare pass-through
# proxy (`bench-proxy`, $PX, $PXPID) and defines `start_vultrino`, the wrk wrappers and the
# parsers. Expects STORE (memory|file) and runs from the repository root. Every process it starts
# is in PIDS and killed on exit, with the scratch directory $WORK.
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk" >&2; exit 1; }

# PROFILE (default release) picks the cargo profile, e.g. a faster-building one for callgrind
# comparisons; VULTRINO_WRAP (unset: none) is a command the servers are started under;
# NO_BUILD=1 measures the binaries already built for PROFILE, as they are; BIN_DIR (with
# NO_BUILD=1) takes the binaries from another directory, e.g. a copy of an earlier build for an A/B.
PROFILE=${PROFILE:-release}
[ -n "${NO_BUILD:-}" ] || cargo build --profile "$PROFILE" -q -p vultrino-local -p vultrino-benches --bin vultrino --bin bench-upstream --bin bench-proxy
BIN=${BIN_DIR:-target/$PROFILE}
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait "${PIDS[@]}" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

wait_line() { # file pattern (WAIT_TRIES polls of 50 ms, default 200)
  for _ in $(seq 1 "${WAIT_TRIES:-200}"); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
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
# start_vultrino NAME [SERVE_FLAG...]: a server with one api_key credential (`bench`, whose
# base_url is the upstream, for /proxy/bench/…) and an executor key; sets V_NAME (base URL),
# VPID_NAME and VK_NAME (the key).
start_vultrino() {
  local name=$1 store_args=(--store memory) url token key pid
  shift
  [ "$STORE" = file ] && store_args=(--store file --data-dir "$WORK/data-$name")
  env -u VULTRINO_MASTER_KEY VULTRINO_ADMIN_PASSWORD_HASH="$HASH" RUST_LOG=warn \
    VULTRINO_ALLOW_WEAK_PASSWORD_HASH_FOR_TESTS=true \
    ${VULTRINO_WRAP:-} "$BIN/vultrino" "${store_args[@]}" serve --listen 127.0.0.1:0 --allow-loopback-upstreams \
    "$@" >"$WORK/v-$name.out" 2>"$WORK/v-$name.err" & pid=$!; PIDS+=($pid)
  wait_line "$WORK/v-$name.out" "listening on"
  url=$(sed -n 's/Vultrino listening on //p' "$WORK/v-$name.out")
  token=$(curl -sf "$url/login" -H 'content-type: application/json' \
    -d "{\"username\":\"admin\",\"password\":\"$PW\"}" | sed -E 's/.*"token":"([^"]+)".*/\1/')
  curl -sf "$url/v1/credentials" -H "authorization: Bearer $token" -H 'content-type: application/json' \
    -d "{\"alias\":\"bench\",\"type\":\"api_key\",\"data\":{\"key\":\"bench-secret-value-0123456789\"},\"base_url\":\"$UP\",\"policy\":{\"allowed_hosts\":[\"127.0.0.1\"]}}" >/dev/null
  key=$(curl -sf "$url/v1/keys" -H "authorization: Bearer $token" -H 'content-type: application/json' \
    -d '{"name":"bench","role":"executor"}' | sed -E 's/.*"key":"([^"]+)".*/\1/')
  # Sanity: one execute works and comes back 200 from the upstream.
  curl -sf "$url/v1/execute" -H "authorization: Bearer $key" -H 'content-type: application/json' \
    -d "{\"credential\":\"bench\",\"method\":\"GET\",\"url\":\"$UP/user\"}" | grep -q '"status":200'
  declare -g "V_$name=$url" "VPID_$name=$pid" "VK_$name=$key"
}

run() { wrk -t2 -c"$1" -d"${DURATION}s" --latency "${@:2}"; }
rps() { sed -n 's/^Requests\/sec: *//p'; }
p50() { awk '$1=="50%"{print $2}'; }
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); print v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v); print v} else {sub(/s$/,"",v); print v*1000}}'; }
