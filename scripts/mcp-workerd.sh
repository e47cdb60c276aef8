#!/usr/bin/env bash
# Runs a Python SDK suite against the worker in workerd: starts the deployable build under
# Miniflare on 127.0.0.1 (backend-cloudflare/test/harness.mjs) with a fresh master key, a known
# admin password and loopback upstreams allowed (the upstreams live inside pytest), then points the
# suite at it. Called by scripts/test.sh inside the loopback-only namespace.
#
#   scripts/mcp-workerd.sh        the MCP SDK HTTP tests (tests/mcp/test_http.py)
#   scripts/mcp-workerd.sh sdk    the OpenAI/Anthropic SDK suite through /proxy/ (tests/sdk)
#   scripts/mcp-workerd.sh schemathesis
#                                 Schemathesis against the worker (tests/schemathesis/run.py)
#
# The harness (node, and the workerd it starts) runs in its own process group and session. At
# exit, whatever the outcome, this script closes the harness's input (it then disposes Miniflare
# and removes its temp folder), gives it 5 s, then SIGTERMs and, 5 s later, SIGKILLs the group.
set -euo pipefail
cd "$(dirname "$0")/.."
suite=${1:-mcp}
case $suite in mcp | sdk | schemathesis) ;; *) echo "usage: scripts/mcp-workerd.sh [mcp|sdk|schemathesis]" >&2; exit 2 ;; esac
MCP_VENV=${MCP_VENV:-target/mcp-venv}
SDK_VENV=${SDK_VENV:-target/sdk-venv}
SCHEMATHESIS_VENV=${SCHEMATHESIS_VENV:-target/schemathesis-venv}
work=$(mktemp -d)
harness_pid=

# Whether a process other than a zombie is left in process group $1.
group_alive() {
  ps -A -o pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ { found = 1 } END { exit !found }'
}
stop_harness() {
  local g=$harness_pid sig
  exec 3>&- # end of input: the harness shuts down by itself
  for sig in TERM KILL; do
    for _ in $(seq 1 50); do
      group_alive "$g" || break 2
      sleep 0.1
    done
    kill "-$sig" -- "-$g" 2>/dev/null || true
  done
  wait "$g" 2>/dev/null || true
}
cleanup() {
  if [ -n "$harness_pid" ]; then stop_harness; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

password="mcp-workerd-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
hash=$(target/debug/vultrino hash-password --iterations 1000 --allow-weak-password-hash-for-tests <<<"$password")
master=$(head -c 32 /dev/urandom | base64 -w0)
mkfifo "$work/stdin"
# The harness stops when its stdin reaches end of input: this script holds the fifo's write end
# (fd 3) for the run; the harness must not inherit it (3>&-), or its input would never end.
exec 3<>"$work/stdin"
# setsid: node leads a new session and process group (pgid = its pid), which workerd joins.
(cd backend-cloudflare && VULTRINO_MASTER_KEY="$master" ADMIN_PASSWORD_HASH="$hash" ALLOW_LOOPBACK_UPSTREAMS=true ALLOW_WEAK_PASSWORD_HASH_FOR_TESTS=true \
  exec setsid node test/harness.mjs <"$work/stdin" >"$work/out" 2>"$work/err" 3>&-) &
harness_pid=$!
for _ in $(seq 1 600); do
  grep -q "Vultrino listening on" "$work/out" 2>/dev/null && break
  kill -0 "$harness_pid" 2>/dev/null || { cat "$work/err" >&2; exit 1; }
  sleep 0.1
done
base=$(sed -n 's/^Vultrino listening on //p' "$work/out" | head -1)
[ -n "$base" ] || { echo "workerd harness did not start" >&2; cat "$work/err" >&2; exit 1; }
[ "$(ps -o pgid= -p "$harness_pid" | tr -d ' ')" = "$harness_pid" ] \
  || { echo "error: the harness is not in a process group of its own" >&2; exit 1; }
echo "worker in workerd at $base"
rc=0
if [ "$suite" = schemathesis ]; then
  "$SCHEMATHESIS_VENV/bin/python" tests/schemathesis/run.py --base "$base" --password "$password" || rc=$?
elif [ "$suite" = sdk ]; then
  VULTRINO_SDK_BACKEND=workerd VULTRINO_SDK_BASE_URL="$base" VULTRINO_SDK_ADMIN_USER=admin VULTRINO_SDK_ADMIN_PASSWORD="$password" \
    PYTHONDONTWRITEBYTECODE=1 \
    "$SDK_VENV/bin/python" -m pytest -c tests/sdk/pytest.ini -p no:cacheprovider tests/sdk || rc=$?
else
  VULTRINO_MCP_BASE_URL="$base" VULTRINO_MCP_ADMIN_USER=admin VULTRINO_MCP_ADMIN_PASSWORD="$password" \
    VULTRINO_BIN=target/debug/vultrino PYTHONDONTWRITEBYTECODE=1 \
    "$MCP_VENV/bin/python" -m pytest -c tests/mcp/pytest.ini -p no:cacheprovider tests/mcp/test_http.py || rc=$?
fi
[ "$suite" != schemathesis ] && [ "$rc" -eq 5 ] && echo "error: the workerd $suite run collected no test" >&2
exit "$rc"
