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
#    conformance suites inside workerd.
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
cargo bench -p vultrino-benches -- --test >/dev/null

# ---- workerd: toolchain + worker builds (needs crates.io/npm, so outside the namespace) ------
step "workerd: clippy for the worker on wasm32 (-D warnings)"
cargo clippy -p vultrino-cloudflare --target wasm32-unknown-unknown --features testkit -- -D warnings
step "workerd: install the Workers toolchain and build the worker"
scripts/setup-workers.sh
# ---- end workerd -----------------------------------------------------------------------------

if unshare -n true 2>/dev/null; then
  step "run tests inside a loopback-only network namespace"
  unshare -n bash -c 'ip link set lo up && cargo test --workspace --offline -- --include-ignored'
  # ---- workerd: the same HTTP suite and the sync test against the worker in workerd; the port
  # conformance suites inside workerd (node --test drives the testkit-only test worker) ---------
  step "workerd: HTTP suite + sync against the worker, conformance suites inside workerd"
  unshare -n bash -c 'ip link set lo up \
    && VULTRINO_TEST_BACKEND=workerd cargo test -p vultrino-local --offline --test http_api --test sync -- --include-ignored \
    && cd backend-cloudflare && node --test test/conformance.test.mjs test/config.test.mjs'
  # ---- end workerd ---------------------------------------------------------------------------
else
  echo "error: cannot create a network namespace (unshare -n needs root or user namespaces)." >&2
  echo "The SSRF cases need one; run this script as root." >&2
  exit 1
fi
