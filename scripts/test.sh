#!/usr/bin/env bash
# The whole test suite — the command the README gives and .ci/run runs.
#
# 1. formatting and clippy (-D warnings) over the workspace;
# 2. the core builds for wasm32-unknown-unknown (it runs on Cloudflare Workers);
# 3. every test, built first (with network, for crates.io) and then RUN inside a loopback-only
#    network namespace (`unshare -n`), including the cases marked #[ignore] because they aim
#    requests at metadata/private/public addresses that must be refused: there, even a broken
#    SSRF guard cannot send a packet off this machine;
# 4. the Cloudflare worker in the real workerd runtime (the "workerd" blocks): tools installed
#    and the worker built with network (scripts/setup-workers.sh), then — inside the same
#    namespace — the HTTP suite and the sync test against the worker, and the KV/SessionStore
#    conformance suites inside workerd;
# 5. the admin web UI in a real Chromium (tests/ui, node --test + playwright-core) against the local
#    server and against the worker in workerd, inside the same namespace.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

if ! rustup target list --installed 2>/dev/null | grep -q wasm32-unknown-unknown; then
  step "rustup target add wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (-D warnings)"
cargo clippy --workspace --all-targets -- -D warnings

step "core builds for wasm32-unknown-unknown"
cargo build -p vultrino-core --target wasm32-unknown-unknown

step "build tests"
cargo test --workspace --no-run

# Benchmarks compile and each runs once (criterion --test mode: no timing, seconds).
step "benchmarks compile and run once"
# A smoke run, not a measurement: thin LTO keeps the build short (the bench profile is the
# release one, fat LTO in one unit, which `benches/load/run.sh` and real measurements use).
CARGO_PROFILE_BENCH_LTO=thin CARGO_PROFILE_BENCH_CODEGEN_UNITS=16 \
  cargo bench -p vultrino-benches -- --test >/dev/null

# ---- MCP SDK (setup, with network) ------------------------------------------------------------
# The MCP suite drives `vultrino` with the official MCP Python SDK (tests/mcp, pinned in
# tests/mcp/requirements.txt). Its venv is made here, outside the namespace, because pip needs
# PyPI; it is reused while requirements.txt is unchanged. The run itself is in the namespace below.
MCP_VENV=target/mcp-venv
step "MCP SDK: venv with tests/mcp/requirements.txt"
req_sum=$(sha256sum tests/mcp/requirements.txt | cut -d' ' -f1)
if [ ! -x "$MCP_VENV/bin/python" ] || [ "$(cat "$MCP_VENV/.requirements.sha256" 2>/dev/null)" != "$req_sum" ]; then
  rm -rf "$MCP_VENV"
  python3 -m venv "$MCP_VENV"
  "$MCP_VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/mcp/requirements.txt
  echo "$req_sum" >"$MCP_VENV/.requirements.sha256"
else
  echo "already installed"
fi
cargo build -p vultrino-local --bin vultrino
# pytest exits 5 when it collected no test: that is a failure here, like any other non-zero code.
MCP_SDK_RUN='rc=0; env -u VULTRINO_MCP_BASE_URL VULTRINO_BIN=target/debug/vultrino PYTHONDONTWRITEBYTECODE=1 '"$MCP_VENV"'/bin/python -m pytest -c tests/mcp/pytest.ini -p no:cacheprovider tests/mcp || rc=$?; if [ "$rc" -eq 5 ]; then echo "error: the MCP SDK suite collected no test" >&2; fi; exit "$rc"'
# ---- end MCP SDK setup -------------------------------------------------------------------------

# ---- admin UI browser suite (setup, with network) ----------------------------------------------
# tests/ui drives the embedded admin UI in Debian's Chromium with playwright-core (pinned in
# tests/ui/package-lock.json; it downloads no browser of its own). npm ci runs here, outside the
# namespace, and is skipped while node_modules was installed from the same package-lock.json.
# The runs (local binary, then the worker in workerd) are in the namespace below.
step "admin UI suite: npm ci in tests/ui, Chromium present"
ui_lock_sum=$(sha256sum tests/ui/package-lock.json | cut -d' ' -f1)
if [ "$(cat tests/ui/node_modules/.package-lock.sha256 2>/dev/null)" != "$ui_lock_sum" ]; then
  (cd tests/ui && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
  echo "$ui_lock_sum" >tests/ui/node_modules/.package-lock.sha256
else
  echo "already installed"
fi
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM" ] && [ "$CHROMIUM" = /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  step "apt-get install chromium (for the admin UI suite)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi
if [ ! -x "$CHROMIUM" ]; then
  echo "error: the admin UI suite needs Chromium at $CHROMIUM: apt-get install chromium (.ci/run installs it), or set CHROMIUM to another Chromium binary" >&2
  exit 1
fi
UI_RUN='env VULTRINO_UI_BACKEND=local VULTRINO_BIN=target/debug/vultrino node --test tests/ui/ui.test.mjs'
# ---- end admin UI setup ------------------------------------------------------------------------


# ---- workerd: toolchain + worker builds (needs crates.io/npm, so outside the namespace) ------
step "workerd: clippy for the worker on wasm32 (-D warnings)"
cargo clippy -p vultrino-cloudflare --target wasm32-unknown-unknown --features testkit -- -D warnings
step "workerd: install the Workers toolchain and build the worker"
scripts/setup-workers.sh
# ---- end workerd -----------------------------------------------------------------------------


if unshare -n true 2>/dev/null; then
  step "run tests inside a loopback-only network namespace (cargo test, the MCP SDK suite, the admin UI suite)"
  unshare -n bash -c 'ip link set lo up && cargo test --workspace --offline -- --include-ignored && echo "==> MCP SDK suite (pytest)" && bash -c "$1" && echo "==> admin UI suite (Chromium, local server)" && bash -c "$2"' _ "$MCP_SDK_RUN" "$UI_RUN"
  # ---- workerd: the same HTTP suite and the sync test against the worker in workerd; the port
  # conformance suites inside workerd (node --test drives the testkit-only test worker) ---------
  step "workerd: HTTP suite + sync against the worker, conformance suites inside workerd"
  unshare -n bash -c 'ip link set lo up \
    && VULTRINO_TEST_BACKEND=workerd cargo test -p vultrino-local --offline --test every_backend -- --include-ignored \
    && cd backend-cloudflare && node --test test/conformance.test.mjs test/config.test.mjs'
  step "workerd: MCP SDK (official Python client) over Streamable HTTP against the worker"
  unshare -n bash -c 'ip link set lo up && scripts/mcp-workerd.sh'
  step "workerd: admin UI suite (Chromium) against the worker"
  unshare -n bash -c 'ip link set lo up && env VULTRINO_UI_BACKEND=workerd VULTRINO_BIN=target/debug/vultrino node --test tests/ui/ui.test.mjs'
  # ---- end workerd ---------------------------------------------------------------------------
else
  echo "error: cannot create a network namespace (unshare -n needs root or user namespaces)." >&2
  echo "The SSRF cases need one; run this script as root." >&2
  exit 1
fi
