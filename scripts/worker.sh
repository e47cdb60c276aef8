#!/usr/bin/env bash
# The worker's own entry points (backend-cloudflare/package.json runs them as `npm run build`,
# `npm run dev`, `npm run check`, `npm run deploy`). Each sets everything it needs itself, so it
# works the same from a new shell (docs/deploy-cloudflare.md; decision 0088):
#
#   scripts/worker.sh build [--test]   the deployable worker → backend-cloudflare/build
#                                      (--test: the test worker, feature testkit, no wasm-opt →
#                                      backend-cloudflare/test-build). Skipped when up to date.
#   scripts/worker.sh dev [ARGS...]    `wrangler dev --local` (http://localhost:8787); ARGS go to
#                                      wrangler, e.g. --var ALLOW_LOOPBACK_UPSTREAMS:true
#   scripts/worker.sh check            the pre-deploy check, no account needed: build, `wrangler
#                                      deploy --dry-run`, the bundle size against the budget, and
#                                      wrangler.toml's KV namespace id and secrets list
#   scripts/worker.sh deploy [ARGS...] the check, then `wrangler deploy` (needs an account)
#   scripts/worker.sh check-config [FILE]  only the wrangler.toml part of the check
#   scripts/worker.sh check-size [FILE]    only the size part of the check, on the built wasm (or
#                                      FILE); scripts/test.sh runs it after building the worker
#
# Tools come from this checkout only — the wasm-bindgen CLI and worker-build from target/tools/bin,
# wasm-opt (binaryen), esbuild and wrangler from backend-cloudflare/node_modules (all installed by
# scripts/setup-workers.sh). A missing tool is an error naming that script: worker-build is never
# left to download one.
#
# "Up to date": cargo builds the wasm (a no-op when nothing changed), and the rest of
# worker-build (wasm-bindgen, wasm-opt, esbuild: most of its time) is skipped when that wasm, the
# tool versions and the arguments are those of the build already in the output folder (a stamp
# file there, .vultrino-build). The test worker builds in a target folder of its own
# (target/worker-testkit): with its other features, sharing target/ would rebuild the crate each
# time one build follows the other.
#
# Environment: WORKER_FORCE_BUILD=1 rebuilds even when up to date. Defaults that keep wrangler
# off the network where it is not needed (each can be overridden by setting it):
#   WRANGLER_SEND_METRICS=false, WRANGLER_HIDE_BANNER=true (no update check),
#   CLOUDFLARE_CF_FETCH_ENABLED=false (dev: no download of the `request.cf` data; the worker does
#   not read it)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CF=$ROOT/backend-cloudflare
TOOLS=$ROOT/target/tools/bin

# The gzipped size budget of the deployable wasm (decision 0086: Workers' free plan allows 3 MiB
# compressed for the whole upload; the project holds the wasm to 1 MiB).
BUDGET_GZ=$((1024 * 1024))
# The secrets the worker cannot start without (backend-cloudflare/src/settings.rs).
REQUIRED_SECRETS=(VULTRINO_MASTER_KEY ADMIN_PASSWORD_HASH)
PLACEHOLDER_ID=REPLACE_WITH_YOUR_KV_NAMESPACE_ID

die() { printf 'error: %s\n' "$*" >&2; exit 1; }
say() { printf '%s\n' "$*" >&2; }

export PATH=$TOOLS:$CF/node_modules/.bin:$PATH
# rustup's cargo, for a shell whose profile did not put it on PATH (e.g. started by an editor).
command -v cargo >/dev/null || PATH=$PATH:${CARGO_HOME:-$HOME/.cargo}/bin
export WASM_BINDGEN_BIN=$TOOLS/wasm-bindgen
export WASM_OPT_BIN=$CF/node_modules/.bin/wasm-opt
export ESBUILD_BIN=$CF/node_modules/.bin/esbuild
export WRANGLER_SEND_METRICS=${WRANGLER_SEND_METRICS:-false}
export WRANGLER_HIDE_BANNER=${WRANGLER_HIDE_BANNER:-true}

# The wasm-bindgen CLI must be the version of the wasm-bindgen crate in Cargo.lock.
lock_version() {
  awk -v n="$1" '$0 == "name = \"" n "\"" {getline; gsub(/version = |"/, ""); print; exit}' "$ROOT/Cargo.lock"
}

need_tools() {
  local fix="run scripts/setup-workers.sh (it installs the Workers tools into this checkout)"
  command -v cargo >/dev/null || die "cargo is not on PATH nor in ~/.cargo/bin: install Rust with rustup"
  [ -x "$TOOLS/worker-build" ] || die "worker-build is not installed in target/tools/bin: $fix"
  [ -x "$WASM_BINDGEN_BIN" ] || die "the wasm-bindgen CLI is not installed in target/tools/bin: $fix"
  local want have
  want=$(lock_version wasm-bindgen)
  have=$("$WASM_BINDGEN_BIN" --version | awk '{print $NF}')
  [ "$have" = "$want" ] || die "target/tools/bin/wasm-bindgen is $have, Cargo.lock has wasm-bindgen $want: $fix"
  [ -x "$WASM_OPT_BIN" ] && [ -x "$ESBUILD_BIN" ] && [ -x "$CF/node_modules/.bin/wrangler" ] ||
    die "backend-cloudflare/node_modules is missing or incomplete: $fix (or: cd backend-cloudflare && npm ci)"
}

# build [--test]: see the top of this file.
build() {
  local out=build target_dir=${CARGO_TARGET_DIR:-$ROOT/target} args=(--profile worker)
  if [ "${1:-}" = --test ]; then
    out=test-build
    target_dir=$ROOT/target/worker-testkit
    args+=(--no-opt --out-dir test-build --features testkit)
  fi
  need_tools
  # The test worker's target folder starts as a copy of the deployable's (its wasm32 folder and
  # the host folder of the profile: proc macros and build scripts), so cargo reuses the
  # dependencies and compiles only what the feature changes.
  local shared=${CARGO_TARGET_DIR:-$ROOT/target}
  if [ "$out" = test-build ] && [ ! -d "$target_dir/wasm32-unknown-unknown" ] &&
    [ -d "$shared/wasm32-unknown-unknown" ] && [ -d "$shared/worker" ]; then
    mkdir -p "$target_dir"
    cp -a "$shared/wasm32-unknown-unknown" "$shared/worker" "$target_dir/"
  fi
  cd "$CF"
  # What worker-build runs first (same arguments and environment, so cargo's own fingerprints
  # stay valid for worker-build's identical call right after).
  local cargo_args=(build --lib --profile worker --target wasm32-unknown-unknown)
  [ "$out" = test-build ] && cargo_args+=(--features testkit)
  CARGO_TARGET_DIR=$target_dir WASM_BINDGEN_USE_JS_SYS=1 cargo "${cargo_args[@]}"
  local wasm=$target_dir/wasm32-unknown-unknown/worker/vultrino_cloudflare.wasm
  [ -f "$wasm" ] || die "cargo built no $wasm"
  local stamp
  stamp=$({
    sha256sum "$wasm" | cut -d' ' -f1
    echo "worker-build $("$TOOLS/worker-build" --version)"
    echo "wasm-bindgen $("$WASM_BINDGEN_BIN" --version)"
    sha256sum "$CF/package-lock.json" | cut -d' ' -f1
    echo "args ${args[*]} NO_MINIFY=${NO_MINIFY-unset} CUSTOM_SHIM=${CUSTOM_SHIM-unset} COREDUMP=${COREDUMP-unset}"
  } | sha256sum | cut -d' ' -f1)
  if [ "${WORKER_FORCE_BUILD:-0}" != 1 ] && [ -f "$out/.vultrino-build" ] &&
    [ -f "$out/index.js" ] && [ -f "$out/index_bg.wasm" ] &&
    [ "$(sed -n 1p "$out/.vultrino-build")" = "$stamp" ] &&
    [ "$(sed -n 2p "$out/.vultrino-build")" = "$(cat "$out/index.js" "$out/index_bg.wasm" | sha256sum | cut -d' ' -f1)" ]; then
    say "worker: backend-cloudflare/$out is up to date (the wasm and the tools are those it was built from); skipped worker-build"
    return 0
  fi
  rm -f "$out/.vultrino-build"
  CARGO_TARGET_DIR=$target_dir worker-build "${args[@]}"
  printf '%s\n%s\n' "$stamp" "$(cat "$out/index.js" "$out/index_bg.wasm" | sha256sum | cut -d' ' -f1)" >"$out/.vultrino-build"
}

# The KV namespace id and the secrets list of the wrangler config $1 (default wrangler.toml);
# prints every problem, fails on any.
check_config() {
  local bad=0 s file=${1:-$CF/wrangler.toml}
  [ -f "$file" ] || die "no wrangler config $file"
  if grep -Eq "^[[:space:]]*id[[:space:]]*=[[:space:]]*\"$PLACEHOLDER_ID\"" "$file"; then
    say "check: FAIL wrangler.toml: [[kv_namespaces]] id is still the placeholder $PLACEHOLDER_ID;"
    say "       run \`wrangler kv namespace create CREDENTIALS\` and put the id it prints there"
    bad=1
  else
    say "check: ok   wrangler.toml: the KV namespace id is set"
  fi
  local listed=1
  for s in "${REQUIRED_SECRETS[@]}"; do
    if ! sed -n '/^\[secrets\]/,/^\[/p' "$file" | grep -Eq "^required[[:space:]]*=.*\"$s\""; then
      say "check: FAIL wrangler.toml: [secrets] required does not list $s (the worker answers 503"
      say "       without it; listed, \`wrangler deploy\` refuses to deploy until it is set)"
      listed=0
      bad=1
    fi
  done
  [ "$listed" = 0 ] || say "check: ok   wrangler.toml: [secrets] required lists ${REQUIRED_SECRETS[*]}"
  return "$bad"
}

# The gzipped size of the deployable wasm $1 (default backend-cloudflare/build/index_bg.wasm)
# against the budget; fails over it.
check_size() {
  local file=${1:-$CF/build/index_bg.wasm} raw gz
  [ -f "$file" ] || die "no $file: build the worker first (scripts/worker.sh build)"
  raw=$(wc -c <"$file")
  gz=$(gzip -9 -c "$file" | wc -c)
  if [ "$gz" -le "$BUDGET_GZ" ]; then
    say "check: ok   bundle: wasm $raw B ($((raw / 1024)) KiB), $gz B ($((gz / 1024)) KiB) gzipped: $((BUDGET_GZ - gz)) B under the budget of $((BUDGET_GZ / 1024)) KiB gzipped"
    return 0
  fi
  say "check: FAIL bundle: wasm $gz B ($((gz / 1024)) KiB) gzipped is $((gz - BUDGET_GZ)) B over the budget of $((BUDGET_GZ / 1024)) KiB gzipped (decisions 0086, 0099)"
  return 1
}

check() {
  local config_ok=0
  build
  cd "$CF"
  # Global, not local, and removed on EXIT, not RETURN: a failed check leaves through `die` (or
  # set -e), never through a return, and a passed one after the function has returned.
  DRY_OUT=$(mktemp -d "${TMPDIR:-/tmp}/vultrino-dry-run.XXXXXX")
  trap 'rm -rf "$DRY_OUT"' EXIT
  say "check: wrangler deploy --dry-run (bundles as a deployment would; needs no account)"
  wrangler deploy --dry-run --outdir "$DRY_OUT"
  check_size || config_ok=1
  check_config || config_ok=1
  [ "$config_ok" = 0 ] || die "the pre-deploy check failed (see FAIL above)"
  say "check: passed"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
  build) build "$@" ;;
  dev)
    need_tools
    export CLOUDFLARE_CF_FETCH_ENABLED=${CLOUDFLARE_CF_FETCH_ENABLED:-false}
    cd "$CF"
    [ -f .dev.vars ] || say "note: no backend-cloudflare/.dev.vars: every request answers 503 missing_setting until it has VULTRINO_MASTER_KEY and ADMIN_PASSWORD_HASH (docs/deploy-cloudflare.md, \"Running locally\")"
    exec wrangler dev --local "$@"
    ;;
  check) check ;;
  check-config) check_config "$@" ;;
  check-size) check_size "$@" ;;
  deploy)
    check
    cd "$CF"
    exec wrangler deploy "$@"
    ;;
  *) die "usage: scripts/worker.sh build [--test] | dev [ARGS...] | check | deploy [ARGS...] | check-config [FILE] | check-size [FILE]" ;;
esac
