#!/usr/bin/env bash
# Builds the worker twice, after installing the Workers toolchain where it is missing
# (scripts/install-prereqs.sh rust workers: the wasm32 target, worker-build and wasm-bindgen-cli
# under target/tools/bin, npm ci in backend-cloudflare):
#   backend-cloudflare/build       the deployable worker (`scripts/worker.sh build`)
#   backend-cloudflare/test-build  the test worker with the conformance route (feature testkit,
#                                  `scripts/worker.sh build --test`, in target/worker-testkit)
#
# scripts/worker.sh points worker-build at the installed tools (it downloads wasm-bindgen, wasm-opt
# and esbuild from GitHub unless given them) and skips a build that is up to date, so a second
# run with nothing changed takes seconds. `npm run dev|check|deploy` go through the same script
# (docs/deploy-cloudflare.md).
#
# --no-install: skip the install step (scripts/test.sh has already run scripts/install-prereqs.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

if [ "${1:-}" != --no-install ]; then
  scripts/install-prereqs.sh rust workers
fi

step "the deployable worker → backend-cloudflare/build"
scripts/worker.sh build

# The test worker skips wasm-opt (size does not matter for it, and wasm-opt is a large share of
# the build time: benches/README.md, "Workers"): same code, same worker profile, plus the
# testkit route.
step "the test worker (--features testkit, no wasm-opt) → backend-cloudflare/test-build"
scripts/worker.sh build --test

raw=$(wc -c < backend-cloudflare/build/index_bg.wasm)
gz=$(gzip -9 -c backend-cloudflare/build/index_bg.wasm | wc -c)
echo "deployable wasm: $raw bytes raw, $gz bytes gzipped"
