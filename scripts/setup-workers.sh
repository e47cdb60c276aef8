#!/usr/bin/env bash
# Install the Workers toolchain (idempotent: an install whose --version already matches is
# skipped) and build the worker twice:
#   backend-cloudflare/build       the deployable worker (`worker-build --release`)
#   backend-cloudflare/test-build  the test worker with the conformance route (feature testkit)
#
# Needs the package registries (crates.io, npm); nothing else is downloaded: worker-build is
# pointed at the installed wasm-bindgen, wasm-opt and esbuild through *_BIN (see
# /work/shared/WORKERS.md: without them it tries to download each tool).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

step() { printf '\n==> %s\n' "$*"; }

# The wasm-bindgen CLI must match the wasm-bindgen crate in Cargo.lock exactly.
WASM_BINDGEN_VERSION=$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/version = |"/, ""); print; exit}' Cargo.lock)
WORKER_BUILD_VERSION=0.8.7

node_major=$(node --version 2>/dev/null | sed -E 's/^v([0-9]+).*/\1/' || true)
if [ -z "$node_major" ] || [ "$node_major" -lt 20 ]; then
  echo "error: Node.js 20 or newer is needed for wrangler/miniflare (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi

if ! rustup target list --installed 2>/dev/null | grep -q wasm32-unknown-unknown; then
  step "rustup target add wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi

if [ "$(worker-build --version 2>/dev/null || true)" != "$WORKER_BUILD_VERSION" ]; then
  step "cargo install worker-build $WORKER_BUILD_VERSION"
  cargo install worker-build --version "=$WORKER_BUILD_VERSION" --locked --debug
fi

if [ "$(wasm-bindgen --version 2>/dev/null || true)" != "wasm-bindgen $WASM_BINDGEN_VERSION" ]; then
  step "cargo install wasm-bindgen-cli $WASM_BINDGEN_VERSION"
  # No --locked: its lockfile pins a crate version the registry mirror lacks.
  cargo install wasm-bindgen-cli --version "=$WASM_BINDGEN_VERSION" --debug
fi

cd backend-cloudflare
if [ ! -x node_modules/.bin/wrangler ] || [ "$(node_modules/.bin/wrangler --version 2>/dev/null | tail -1)" != "4.86.0" ] \
   || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  step "npm ci (wrangler, miniflare, esbuild, binaryen — pinned in package-lock.json)"
  npm ci --no-audit --no-fund
fi

export WASM_BINDGEN_BIN
WASM_BINDGEN_BIN=$(command -v wasm-bindgen)
export WASM_OPT_BIN=$PWD/node_modules/.bin/wasm-opt
export ESBUILD_BIN=$PWD/node_modules/.bin/esbuild
export WRANGLER_SEND_METRICS=false

step "worker-build --release (deployable worker → backend-cloudflare/build)"
worker-build --release

# The test worker skips wasm-opt (size does not matter for it, and wasm-opt is a large share of
# the build time: benches/README.md, "Workers"): same code, same release profile, plus the
# testkit route.
step "worker-build --release --no-opt --features testkit (test worker → backend-cloudflare/test-build)"
worker-build --release --no-opt --out-dir test-build --features testkit

raw=$(wc -c < build/index_bg.wasm)
gz=$(gzip -9 -c build/index_bg.wasm | wc -c)
echo "deployable wasm: $raw bytes raw, $gz bytes gzipped"
cd "$ROOT"
