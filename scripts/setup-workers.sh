#!/usr/bin/env bash
# Builds the worker twice, after installing the Workers toolchain where it is missing
# (scripts/install-prereqs.sh rust workers: the wasm32 target, worker-build and wasm-bindgen-cli
# under target/tools/bin, npm ci in backend-cloudflare):
#   backend-cloudflare/build       the deployable worker (`worker-build --profile worker`)
#   backend-cloudflare/test-build  the test worker with the conformance route (feature testkit)
#
# worker-build downloads wasm-bindgen, wasm-opt and esbuild from GitHub unless it is given them:
# WASM_BINDGEN_BIN, WASM_OPT_BIN and ESBUILD_BIN below point it at the installed ones (the
# wasm-bindgen CLI from target/tools, wasm-opt from the binaryen npm package, esbuild from npm),
# so nothing but the package registries is needed. `wrangler dev`/`wrangler deploy` run the same
# `worker-build --profile worker` and need the same variables (docs/deploy-cloudflare.md).
#
# --no-install: skip the install step (scripts/test.sh has already run scripts/install-prereqs.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

step() { printf '\n==> %s\n' "$*"; }

if [ "${1:-}" != --no-install ]; then
  scripts/install-prereqs.sh rust workers
fi

export PATH=$ROOT/target/tools/bin:$PATH
cd backend-cloudflare
export WASM_BINDGEN_BIN=$ROOT/target/tools/bin/wasm-bindgen
export WASM_OPT_BIN=$PWD/node_modules/.bin/wasm-opt
export ESBUILD_BIN=$PWD/node_modules/.bin/esbuild
export WRANGLER_SEND_METRICS=false

step "worker-build --profile worker (deployable worker → backend-cloudflare/build)"
worker-build --profile worker

# The test worker skips wasm-opt (size does not matter for it, and wasm-opt is a large share of
# the build time: benches/README.md, "Workers"): same code, same worker profile, plus the
# testkit route.
step "worker-build --profile worker --no-opt --features testkit (test worker → backend-cloudflare/test-build)"
worker-build --profile worker --no-opt --out-dir test-build --features testkit

raw=$(wc -c < build/index_bg.wasm)
gz=$(gzip -9 -c build/index_bg.wasm | wc -c)
echo "deployable wasm: $raw bytes raw, $gz bytes gzipped"
cd "$ROOT"
