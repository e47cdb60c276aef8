#!/usr/bin/env bash
# Installs what scripts/test.sh needs, saying what and where as it goes. Idempotent: on a machine
# where everything is in place it installs nothing and says so. scripts/test.sh runs it first;
# .ci/run runs it, then scripts/test.sh.
#
# What it installs, and where (each only when missing or at another version):
#   apt, system-wide (root only; always --no-install-recommends, so no desktop packages, terminal
#   or default-application changes come along; `apt-get update` only when something is missing):
#       iproute2 (ip) and util-linux (unshare): the loopback-only network namespace of the tests
#       python3-venv: the venv of the MCP SDK suite
#       chromium: the admin UI suite (skipped when $CHROMIUM names another Chromium binary)
#       dbus-daemon (with dbus-send), gnome-keyring, libsecret-tools (secret-tool): the OS keychain
#       tests (backend-local/tests/keychain.rs) run a real Secret Service on a private session bus
#   rustup, the active toolchain: components rustfmt and clippy, target wasm32-unknown-unknown
#   target/tools/bin (this checkout only; ~/.cargo/bin is never touched), with
#   `cargo install --root target/tools --debug` (debug builds: minutes less, fast enough here):
#       worker-build 0.8.7 (--locked), wasm-bindgen-cli at the wasm-bindgen version of Cargo.lock,
#       cargo-deny 0.20.2 (--locked)
#   backend-cloudflare/node_modules: `npm ci` (wrangler, miniflare with workerd, esbuild, binaryen;
#       package-lock.json)
#   tests/ui/node_modules: `npm ci` (playwright-core; it downloads no browser)
#   target/mcp-venv: a python3 venv with tests/mcp/requirements.txt (the MCP Python SDK, pytest)
#   target/sdk-venv: a python3 venv with tests/sdk/requirements.txt (the openai and anthropic SDKs,
#       pytest; a venv of its own, so neither suite's pins constrain the other's)
#   target/schemathesis-venv: a python3 venv with tests/schemathesis/requirements.txt (Schemathesis,
#       the OpenAPI fuzzer; its own venv too)
# Checked, not installed: Rust with rustup, Node.js 20 or newer, python3.
#
# Usage: scripts/install-prereqs.sh [GROUP...]   (default: all groups)
#   apt      the apt packages above              rust     rustup components and target
#   workers  worker-build, wasm-bindgen-cli, npm ci in backend-cloudflare
#   deny     cargo-deny                          ui       npm ci in tests/ui
#   mcp      target/mcp-venv                     sdk      target/sdk-venv
#   schemathesis  target/schemathesis-venv
# Needs the package registries (Debian, crates.io, npm, PyPI), and only for what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TOOLS=$ROOT/target/tools

WORKER_BUILD_VERSION=0.8.7
CARGO_DENY_VERSION=0.20.2
# The wasm-bindgen CLI must match the wasm-bindgen crate in Cargo.lock exactly.
WASM_BINDGEN_VERSION=$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/version = |"/, ""); print; exit}' Cargo.lock)

installed=()
say() { printf '%s\n' "$*"; }
have() { say "  ok: $*"; }
doing() { printf '\n==> install: %s\n' "$*"; installed+=("$1"); }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

groups=("$@")
[ ${#groups[@]} -gt 0 ] || groups=(apt rust workers deny ui mcp sdk schemathesis)
for g in "${groups[@]}"; do
  case $g in apt | rust | workers | deny | ui | mcp | sdk | schemathesis) ;; *) die "unknown group '$g' (apt rust workers deny ui mcp sdk schemathesis)" ;; esac
done
want() { local g; for g in "${groups[@]}"; do [ "$g" = "$1" ] && return 0; done; return 1; }

need_node() {
  local v major
  v=$(node --version 2>/dev/null) || die "Node.js 20 or newer is needed (wrangler/miniflare, the admin UI suite): none found"
  major=${v#v}; major=${major%%.*}
  [ "$major" -ge 20 ] || die "Node.js 20 or newer is needed (wrangler/miniflare, the admin UI suite); found $v"
  have "node $v"
}

# `cargo install` into target/tools, skipped when `BIN --version` already ends in VERSION.
tool() {
  local bin=$1 crate=$2 version=$3; shift 3
  local current
  current=$("$TOOLS/bin/$bin" --version 2>/dev/null | awk '{print $NF}' || true)
  if [ "$current" = "$version" ]; then
    have "$bin $version (target/tools/bin)"
    return
  fi
  doing "$crate $version" "→ target/tools/bin/$bin (cargo install --debug; a few minutes)"
  # Its own build folder under target/ (not a cargo-install* folder in the temp dir, which a
  # failed build would leave behind); removed once the binary is in place.
  # Without debug info: a quarter of the size, and quicker to link.
  CARGO_PROFILE_DEV_DEBUG=0 CARGO_PROFILE_DEV_STRIP=debuginfo \
    cargo install "$crate" --version "=$version" --root "$TOOLS" --target-dir "$TOOLS/build" --debug "$@"
  rm -rf "$TOOLS/build"
}

# npm ci in DIR, skipped while node_modules was installed from the same package-lock.json.
npm_ci() {
  local dir=$1 what=$2 sum
  sum=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
  if [ "$(cat "$dir/node_modules/.package-lock.sha256" 2>/dev/null)" = "$sum" ]; then
    have "$dir/node_modules ($what)"
    return
  fi
  doing "npm ci in $dir" "($what, pinned in $dir/package-lock.json → $dir/node_modules)"
  (cd "$dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
  echo "$sum" >"$dir/node_modules/.package-lock.sha256"
}

say "Prerequisites of scripts/test.sh (${groups[*]}):"

if want apt; then
  pkgs=()
  if command -v ip >/dev/null 2>&1; then have "ip"; else pkgs+=(iproute2); fi
  if command -v unshare >/dev/null 2>&1; then have "unshare"; else pkgs+=(util-linux); fi
  if python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    have "python3 with venv ($(python3 --version 2>&1))"
  else
    command -v python3 >/dev/null 2>&1 || pkgs+=(python3)
    pkgs+=(python3-venv)
  fi
  if [ -n "${CHROMIUM:-}" ] && [ "$CHROMIUM" != /usr/bin/chromium ]; then
    [ -x "$CHROMIUM" ] || die "CHROMIUM=$CHROMIUM is not an executable"
    have "Chromium at \$CHROMIUM=$CHROMIUM"
  elif [ -x /usr/bin/chromium ]; then
    have "chromium (/usr/bin/chromium)"
  else
    pkgs+=(chromium)
  fi
  if command -v dbus-daemon >/dev/null 2>&1 && command -v dbus-send >/dev/null 2>&1; then
    have "dbus-daemon, dbus-send"
  else
    pkgs+=(dbus-daemon)
  fi
  if command -v gnome-keyring-daemon >/dev/null 2>&1; then have "gnome-keyring-daemon"; else pkgs+=(gnome-keyring); fi
  if command -v secret-tool >/dev/null 2>&1; then have "secret-tool"; else pkgs+=(libsecret-tools); fi
  if [ ${#pkgs[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
      die "missing system packages: ${pkgs[*]} (as root on Debian: apt-get install --no-install-recommends ${pkgs[*]})"
    fi
    doing "apt: ${pkgs[*]}" "(apt-get install --no-install-recommends, system-wide)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
  fi
fi

if want rust; then
  command -v rustup >/dev/null 2>&1 || die "rustup is needed (https://rustup.rs): the suite adds components and the wasm32 target through it"
  toolchain=$(rustup show active-toolchain | cut -d' ' -f1)
  components=$(rustup component list --installed)
  for c in rustfmt clippy; do
    if grep -q "^$c" <<<"$components"; then
      have "rustup component $c ($toolchain)"
    else
      doing "rustup component $c" "(toolchain $toolchain)"
      rustup component add "$c"
    fi
  done
  if rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    have "rustup target wasm32-unknown-unknown ($toolchain)"
  else
    doing "rustup target wasm32-unknown-unknown" "(toolchain $toolchain)"
    rustup target add wasm32-unknown-unknown
  fi
fi

if want workers; then
  need_node
  tool worker-build worker-build "$WORKER_BUILD_VERSION" --locked
  # No --locked: its lockfile pins a crate version the registry mirror lacks.
  tool wasm-bindgen wasm-bindgen-cli "$WASM_BINDGEN_VERSION"
  npm_ci backend-cloudflare "wrangler, miniflare/workerd, esbuild, binaryen"
fi

if want deny; then
  tool cargo-deny cargo-deny "$CARGO_DENY_VERSION" --locked
fi

if want ui; then
  need_node
  npm_ci tests/ui "playwright-core"
fi

# A python3 venv at $1 with the pinned requirements file $2, skipped while it was made from the
# same file.
python_venv() {
  local venv=$1 reqs=$2 what=$3 sum
  sum=$(sha256sum "$reqs" | cut -d' ' -f1)
  if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" = "$sum" ]; then
    have "$venv ($reqs)"
  else
    doing "python venv $venv" "with $reqs ($what; pip, from PyPI)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$reqs"
    echo "$sum" >"$venv/.requirements.sha256"
  fi
}

if want mcp; then
  python_venv target/mcp-venv tests/mcp/requirements.txt "the MCP Python SDK"
fi

if want sdk; then
  python_venv target/sdk-venv tests/sdk/requirements.txt "the openai and anthropic Python SDKs"
fi

if want schemathesis; then
  python_venv target/schemathesis-venv tests/schemathesis/requirements.txt "Schemathesis, the OpenAPI fuzzer"
fi

if [ ${#installed[@]} -eq 0 ]; then
  say "Nothing to install: every prerequisite was already in place."
else
  say "Installed: $(IFS=,; echo "${installed[*]}" | sed 's/,/, /g')."
fi
