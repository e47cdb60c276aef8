#!/usr/bin/env bash
# Runs the MCP SDK HTTP tests (tests/mcp/test_http.py) against the worker in workerd: starts the
# deployable build under Miniflare on 127.0.0.1 (backend-cloudflare/test/harness.mjs) with a fresh
# master key, a known admin password and loopback upstreams allowed (the echo upstream lives inside
# pytest), then points the suite at it. Called by scripts/test.sh inside the loopback-only namespace.
set -euo pipefail
cd "$(dirname "$0")/.."
MCP_VENV=${MCP_VENV:-target/mcp-venv}
work=$(mktemp -d)
harness_pid=
cleanup() {
  [ -n "$harness_pid" ] && kill "$harness_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

password="mcp-workerd-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
hash=$(target/debug/vultrino hash-password --iterations 1000 <<<"$password")
master=$(head -c 32 /dev/urandom | base64 -w0)
mkfifo "$work/stdin"
# The harness stops when its stdin closes: hold the fifo open for the run.
exec 3<>"$work/stdin"
(cd backend-cloudflare && VULTRINO_MASTER_KEY="$master" ADMIN_PASSWORD_HASH="$hash" ALLOW_LOOPBACK_UPSTREAMS=true \
  node test/harness.mjs <"$work/stdin" >"$work/out" 2>"$work/err") &
harness_pid=$!
for _ in $(seq 1 300); do
  grep -q "Vultrino listening on" "$work/out" 2>/dev/null && break
  kill -0 "$harness_pid" 2>/dev/null || { cat "$work/err" >&2; exit 1; }
  sleep 0.1
done
base=$(sed -n 's/^Vultrino listening on //p' "$work/out" | head -1)
[ -n "$base" ] || { echo "workerd harness did not start" >&2; cat "$work/err" >&2; exit 1; }
echo "worker in workerd at $base"
rc=0
VULTRINO_MCP_BASE_URL="$base" VULTRINO_MCP_ADMIN_USER=admin VULTRINO_MCP_ADMIN_PASSWORD="$password" \
  VULTRINO_BIN=target/debug/vultrino PYTHONDONTWRITEBYTECODE=1 \
  "$MCP_VENV/bin/python" -m pytest -c tests/mcp/pytest.ini -p no:cacheprovider tests/mcp/test_http.py || rc=$?
[ "$rc" -eq 5 ] && echo "error: the workerd MCP run collected no test" >&2
exit "$rc"
