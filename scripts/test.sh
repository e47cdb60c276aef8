#!/usr/bin/env bash
# The whole test suite — the command the README gives and .ci/run runs.
#
# 0. prerequisites: scripts/install-prereqs.sh installs what is missing and says what and where
#    (skipped with --no-install, as .ci/run does after running it itself);
# 1. formatting and clippy (-D warnings) over the workspace;
# 2. cargo deny: licences, duplicate versions, sources (deny.toml) — always; advisories when the
#    RustSec database can be fetched from GitHub, else against the copy of the last fetch
#    (target/advisory-dbs), else SKIPPED with the reason printed (VULTRINO_REQUIRE_ADVISORIES=1
#    turns that skip into a failure). Never reported as passed when it did not run;
# 3. the core builds for wasm32-unknown-unknown (it runs on Cloudflare Workers);
# 4. the benchmarks run once each (criterion's test mode, dev profile: a check that they work,
#    not a measurement — benches/README.md measures with `cargo bench`, release profile);
# 5. every test, built first (with network, for crates.io) and then RUN inside a loopback-only
#    network namespace (`unshare -n`), including the cases marked #[ignore] because they aim
#    requests at metadata/private/public addresses that must be refused: there, even a broken
#    SSRF guard cannot send a packet off this machine; the official-SDK suites (tests/mcp: MCP;
#    tests/sdk: OpenAI and Anthropic through /proxy/) run there too, and in 6 against the worker;
# 6. the Cloudflare worker in the real workerd runtime (the "workerd" blocks): the worker built
#    with network (scripts/setup-workers.sh), then — inside the same kind of namespace — the HTTP
#    suite (tests/http, the sync test included) against the worker, and the KV/SessionStore conformance suites
#    inside workerd; the deployable wasm over its size budget (1 MiB gzipped) fails the run;
#    Schemathesis (tests/schemathesis) fuzzes the API from its OpenAPI document against the local
#    server (before 5) and the worker (in 6), in the same kind of namespace;
# 7. the admin web UI in a real Chromium (tests/ui, node --test + playwright-core) against the local
#    server and against the worker in workerd, inside the same kind of namespace.
#
# Leaves the machine as it found it: everything runs with TMPDIR set to a folder of this run,
# removed at the end; and at the end (on failure or Ctrl-C too) the run checks that no process it
# started is still alive — every process it starts carries TESTSH_RUN_ID=<this run> in its
# environment, and every network namespace it makes is noted — names any it finds, kills it and
# fails.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

install=1
case "${1:-}" in
  "") ;;
  --no-install) install=0 ;;
  *) echo "usage: scripts/test.sh [--no-install]" >&2; exit 2 ;;
esac

step() { printf '\n==> [%02d:%02d] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }

# ---- this run's temp folder, process marker and end-of-run checks -----------------------------
ORIG_TMP=${TMPDIR:-/tmp}
RUN_TMP=$(mktemp -d "$ORIG_TMP/vultrino-test.XXXXXX")
export TMPDIR=$RUN_TMP
touch "$RUN_TMP/.started"
export TESTSH_NETNS_LIST=$RUN_TMP/.netns
: >"$TESTSH_NETNS_LIST"
# Not VULTRINO_*: the suites strip those from the servers they start; this one must reach them.
export TESTSH_RUN_ID="${RUN_TMP##*.}-$$"

# PIDs of live (not zombie) processes this run started: those whose environment carries this
# run's TESTSH_RUN_ID, and those in a network namespace it made. Bash builtins only, so the scan
# does not find itself.
run_leftovers() {
  local p pid line state e mine ns
  local -a envs
  local -A ours=() in_ns=()
  while read -r ns; do [ -n "$ns" ] && ours[$ns]=1; done <"$TESTSH_NETNS_LIST"
  if [ ${#ours[@]} -gt 0 ]; then
    while read -r p ns; do
      p=${p#/proc/}
      [ -n "$ns" ] && [ -n "${ours[$ns]:-}" ] && in_ns[${p%/ns}]=1
    done < <(find /proc -mindepth 3 -maxdepth 3 -path '/proc/[0-9]*/ns/net' -printf '%h %l\n' 2>/dev/null)
  fi
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    { [ "$pid" = "$$" ] || [ "$pid" = "$BASHPID" ]; } && continue
    read -r line 2>/dev/null <"$p/stat" || continue
    state=${line##*) }
    [ "${state%% *}" = Z ] && continue
    mine=${in_ns[$pid]:-}
    if [ -z "$mine" ]; then
      envs=()
      mapfile -d '' -t envs 2>/dev/null <"$p/environ" || continue
      for e in "${envs[@]}"; do
        [ "$e" = "TESTSH_RUN_ID=$TESTSH_RUN_ID" ] && { mine=1; break; }
      done
    fi
    [ -n "$mine" ] && echo "$pid"
  done
}

# Waits up to 10 s for the run's processes to be gone; names, kills and reports any left.
check_leftovers() {
  local pids=() pid
  for _ in $(seq 1 20); do
    mapfile -t pids < <(run_leftovers)
    [ ${#pids[@]} -eq 0 ] && { echo "processes: none of this run's is left"; return 0; }
    sleep 0.5
  done
  echo "error: ${#pids[@]} process(es) started by this run are still alive (now killed):" >&2
  for pid in "${pids[@]}"; do
    printf '  pid %s: %s\n' "$pid" "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-200)" >&2
  done
  kill -KILL "${pids[@]}" 2>/dev/null || true
  return 1
}

# Removes this run's temp folder (saying what the suites left in it) and checks it is gone.
cleanup_tmp() {
  local left stray
  # What the suites left, by kind (e.g. "36 vultrino-harness-*": harnesses killed with SIGKILL).
  left=$(find "$RUN_TMP" -mindepth 1 -maxdepth 1 ! -name .started ! -name .netns -printf '%f\n' \
    | sed -E 's/[-.][^-.]*$/-*/' | sort | uniq -c | awk '{printf "%s%s %s", sep, $1, $2; sep=", "}')
  stray=$(find "$ORIG_TMP" -maxdepth 1 -name 'miniflare-*' -newer "$RUN_TMP/.started" 2>/dev/null | wc -l)
  rm -rf "$RUN_TMP"
  if [ -e "$RUN_TMP" ]; then
    echo "error: could not remove this run's temp folder $RUN_TMP" >&2
    return 1
  fi
  echo "temp: removed this run's folder $RUN_TMP (left in it by the suites: ${left:-nothing})"
  if [ "$stray" -gt 0 ]; then
    echo "warning: $stray miniflare-* folder(s) appeared in $ORIG_TMP during this run, outside its temp folder (another run on this machine, or something that ignores TMPDIR)" >&2
  fi
}

finish() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  step "end of run: leftover processes and temp folders"
  check_leftovers || { [ "$rc" -eq 0 ] && rc=1; }
  cleanup_tmp || { [ "$rc" -eq 0 ] && rc=1; }
  if [ "$rc" -eq 0 ]; then
    echo "scripts/test.sh: everything passed in $((SECONDS / 60)) min $((SECONDS % 60)) s"
  else
    echo "scripts/test.sh: FAILED (exit $rc) after $((SECONDS / 60)) min $((SECONDS % 60)) s" >&2
  fi
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs the bash script $1 (with arguments $2...) in a new loopback-only network namespace,
# noted for the end-of-run check.
in_netns() {
  unshare -n bash -c 'readlink /proc/self/ns/net >>"$TESTSH_NETNS_LIST" && ip link set lo up && exec bash -c "$@"' _ "$@"
}
# ---- end of the run's bookkeeping --------------------------------------------------------------

if [ "$install" = 1 ]; then
  step "prerequisites (scripts/install-prereqs.sh)"
  scripts/install-prereqs.sh
fi
export PATH=$ROOT/target/tools/bin:$PATH
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM" ]; then
  echo "error: the admin UI suite needs Chromium at $CHROMIUM: scripts/install-prereqs.sh installs Debian's (as root), or set CHROMIUM to another Chromium binary" >&2
  exit 1
fi
if ! unshare -n true 2>/dev/null; then
  echo "error: cannot create a network namespace (unshare -n needs root or user namespaces)." >&2
  echo "The SSRF cases need one; run this script as root." >&2
  exit 1
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (-D warnings)"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo deny: licences, duplicate versions, sources (deny.toml)"
cargo-deny --locked check licenses bans sources --hide-inclusion-graph

step "cargo deny: advisories (RustSec database)"
# The most telling line of a failed fetch (git's "fatal: ...", else cargo-deny's error).
fetch_error() { { grep -m1 '^fatal:' <<<"$fetch_log" || grep -m1 ERROR <<<"$fetch_log" || echo "$fetch_log"; } | head -1 | cut -c1-200; }
if fetch_log=$(timeout 120 cargo-deny fetch db 2>&1); then
  echo "advisory database fetched"
  cargo-deny --locked --offline check advisories
elif compgen -G "target/advisory-dbs/advisory-db-*/.git" >/dev/null; then
  echo "the advisory database could not be refreshed: $(fetch_error)"
  echo "checking against the copy fetched earlier (newest commit: $(git -C "$(compgen -G 'target/advisory-dbs/advisory-db-*' | head -1)" log -1 --format=%cd --date=short); cargo-deny refuses it once older than deny.toml's maximum-db-staleness)"
  cargo-deny --locked --offline check advisories
else
  echo "SKIPPED: cargo deny check advisories: NO ADVISORY WAS CHECKED. The RustSec database could not be"
  echo "  fetched from GitHub and there is no earlier copy in target/advisory-dbs. Reason:"
  echo "  $(fetch_error)"
  if [ "${VULTRINO_REQUIRE_ADVISORIES:-0}" = 1 ]; then
    echo "error: VULTRINO_REQUIRE_ADVISORIES=1: the advisories check is required" >&2
    exit 1
  fi
fi

step "core builds for wasm32-unknown-unknown"
cargo build -p vultrino-core --target wasm32-unknown-unknown

step "build tests"
cargo test --workspace --no-run

# criterion's test mode runs each benchmark once (no timing), in the dev profile: a check that the
# benchmarks work, not a measurement (that is `cargo bench`, release profile, fat LTO:
# benches/README.md). `--workspace` keeps the test build's feature set, so only the three bench
# binaries are compiled here.
step "benchmarks run once (criterion test mode, dev profile)"
cargo test --workspace --bench '*'

# ---- workerd: the worker builds (needs crates.io/npm, so outside the namespace) ---------------
step "workerd: clippy for the worker on wasm32 (-D warnings)"
cargo clippy -p vultrino-cloudflare --target wasm32-unknown-unknown --features testkit -- -D warnings
step "workerd: build the worker (scripts/setup-workers.sh)"
scripts/setup-workers.sh --no-install
step "workerd: the deployable wasm within its size budget (1 MiB gzipped; scripts/worker.sh check-size)"
scripts/worker.sh check-size
cargo build -p vultrino-local --bin vultrino
# ---- end workerd -----------------------------------------------------------------------------

# The MCP suite drives `vultrino` with the official MCP Python SDK (tests/mcp, venv in
# target/mcp-venv). pytest exits 5 when it collected no test: a failure here, like any other
# non-zero code.
MCP_SDK_RUN='rc=0; env -u VULTRINO_MCP_BASE_URL VULTRINO_BIN=target/debug/vultrino PYTHONDONTWRITEBYTECODE=1 target/mcp-venv/bin/python -m pytest -c tests/mcp/pytest.ini -p no:cacheprovider tests/mcp || rc=$?; if [ "$rc" -eq 5 ]; then echo "error: the MCP SDK suite collected no test" >&2; fi; exit "$rc"'
# The SDK suite drives `/proxy/` with the official OpenAI and Anthropic Python SDKs against a fake
# provider (tests/sdk, venv in target/sdk-venv); exit 5 (no test collected) fails, as above.
SDK_RUN='rc=0; env -u VULTRINO_SDK_BASE_URL VULTRINO_BIN=target/debug/vultrino PYTHONDONTWRITEBYTECODE=1 target/sdk-venv/bin/python -m pytest -c tests/sdk/pytest.ini -p no:cacheprovider tests/sdk || rc=$?; if [ "$rc" -eq 5 ]; then echo "error: the OpenAI/Anthropic SDK suite collected no test" >&2; fi; exit "$rc"'
# tests/ui drives the embedded admin UI in Chromium ($CHROMIUM) with playwright-core.
UI_RUN='env VULTRINO_UI_BACKEND=local VULTRINO_BIN=target/debug/vultrino node --test tests/ui/ui.test.mjs'

# ---- Schemathesis: requests generated from GET /openapi.json, every reply checked (no 5xx, status,
# content type and body as documented), as the admin and as an agent (tests/schemathesis/run.py;
# decision 0103) — against the local server here, against the worker in the workerd blocks below.
step "Schemathesis against the local server, inside a loopback-only network namespace"
in_netns 'VULTRINO_BIN=target/debug/vultrino PYTHONDONTWRITEBYTECODE=1 target/schemathesis-venv/bin/python tests/schemathesis/run.py'
# ---- end Schemathesis ----------------------------------------------------------------------

# (--include-ignored also runs the tests that start the deployable worker built above: worker_stream,
# worker_costs, and the upstream misbehaviour matrix on the worker, upstream_faults.)
step "run tests inside a loopback-only network namespace (cargo test, the MCP SDK suite, the OpenAI/Anthropic SDK suite, the admin UI suite)"
in_netns 'cargo test --workspace --offline -- --include-ignored && echo "==> MCP SDK suite (pytest)" && bash -c "$1" && echo "==> OpenAI/Anthropic SDK suite through /proxy/ (pytest)" && bash -c "$3" && echo "==> admin UI suite (Chromium, local server)" && bash -c "$2"' _ "$MCP_SDK_RUN" "$UI_RUN" "$SDK_RUN"
# ---- workerd: the same HTTP suite and the sync test against the worker in workerd; the port
# conformance suites and the fault property (decision 0116) inside workerd (node --test drives the testkit-only test worker), and the pre-deploy check's wrangler.toml part ---------
step "workerd: the HTTP suite (tests/http, sync included) against the worker, conformance suites and the fault property inside workerd"
in_netns 'VULTRINO_TEST_BACKEND=workerd cargo test -p vultrino-local --offline --test every_backend -- --include-ignored \
    && cd backend-cloudflare && node --test test/conformance.test.mjs test/faults.test.mjs test/config.test.mjs test/check.test.mjs'
step "workerd: MCP SDK (official Python client) over Streamable HTTP against the worker"
in_netns 'scripts/mcp-workerd.sh'
step "workerd: OpenAI and Anthropic SDKs (official Python clients) through /proxy/ on the worker"
in_netns 'scripts/mcp-workerd.sh sdk'
step "workerd: Schemathesis against the worker (tests/schemathesis/run.py)"
in_netns 'scripts/mcp-workerd.sh schemathesis'
step "workerd: admin UI suite (Chromium) against the worker"
in_netns 'env VULTRINO_UI_BACKEND=workerd VULTRINO_BIN=target/debug/vultrino node --test tests/ui/ui.test.mjs'
# ---- end workerd ---------------------------------------------------------------------------
