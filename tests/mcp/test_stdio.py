"""`vultrino mcp` over stdio, driven by the official SDK client (and raw pipes for the
protocol-only-stdout and malformed-input rules)."""

from __future__ import annotations

import json
import subprocess

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from conftest import BIN, clean_env
from scenario import exercise

pytestmark = pytest.mark.anyio


def params(setup, key: str | None, extra_args: list[str] | None = None) -> StdioServerParameters:
    env = {"RUST_LOG": "warn"}
    if key is not None:
        env["VULTRINO_API_KEY"] = key
    return StdioServerParameters(command=BIN, args=extra_args or setup.args(), env=env)


@pytest.mark.parametrize("mode, version", [("legacy", "2025-11-25"), ("auto", "2026-07-28")])
async def test_sdk_client_uses_the_tools_over_stdio_without_seeing_the_secret(
        stdio_setup, upstream, mode, version):
    with anyio.fail_after(60):
        async with Client(params(stdio_setup, stdio_setup.key), mode=mode) as client:
            assert client.protocol_version == version
            await exercise(client, upstream, stdio_setup.echo_alias, stdio_setup.private_alias)


async def test_forwarding_to_a_running_server_gives_the_same_tools(http_target, upstream):
    args = ["mcp", "--server", http_target.base]
    with anyio.fail_after(60):
        async with Client(params(None, http_target.key, args), mode="auto") as client:
            await exercise(client, upstream, http_target.echo_alias, http_target.private_alias)


def test_forwarding_with_an_invalid_key_is_a_json_rpc_error_for_the_request(http_target):
    init = {"jsonrpc": "2.0", "id": 7, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}}}
    r = subprocess.run([BIN, "mcp", "--server", http_target.base], input=json.dumps(init) + "\n",
                       capture_output=True, text=True, timeout=60,
                       env=clean_env({"VULTRINO_API_KEY": "vk_nope_invalid"}))
    assert r.returncode == 0, r.stderr
    [reply] = [json.loads(l) for l in r.stdout.splitlines()]
    assert reply["id"] == 7
    assert reply["error"]["code"] == -32031
    assert "API key" in reply["error"]["message"]


def run_raw(setup, lines: list[str], key: str | None) -> subprocess.CompletedProcess:
    env = clean_env({"VULTRINO_API_KEY": key} if key is not None else {})
    return subprocess.run([BIN, *setup.args()], input="".join(l + "\n" for l in lines),
                          capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize("key", [None, "", "vk_nope_invalid", "not-a-key"])
def test_missing_or_invalid_key_exits_with_a_message_and_nothing_on_stdout(stdio_setup, key):
    r = run_raw(stdio_setup, [json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"})], key)
    assert r.returncode != 0
    assert r.stdout == ""
    assert "VULTRINO_API_KEY" in r.stderr


async def test_sdk_client_with_a_missing_key_fails_cleanly(stdio_setup):
    with anyio.fail_after(60):
        with pytest.raises(Exception):
            async with Client(params(stdio_setup, None), mode="legacy") as client:
                await client.list_tools()


def test_malformed_input_gets_json_rpc_errors_and_stdout_stays_protocol_only(stdio_setup):
    lines = [
        "{not json",
        json.dumps({"jsonrpc": "2.0", "id": 1}),
        json.dumps({"jsonrpc": "2.0", "id": 2, "method": "no/such/method"}),
        json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        json.dumps({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": 5}}),
        "",
        json.dumps({"jsonrpc": "2.0", "id": 4, "method": "ping"}),
    ]
    r = run_raw(stdio_setup, lines, stdio_setup.key)
    assert r.returncode == 0, r.stderr
    replies = [json.loads(l) for l in r.stdout.splitlines()]
    assert all(m["jsonrpc"] == "2.0" for m in replies)
    by_id = {json.dumps(m["id"]): m for m in replies}
    # Replies come in completion order; the parse error has id null.
    assert by_id["null"]["error"]["code"] == -32700
    assert by_id["1"]["error"]["code"] == -32600
    assert by_id["2"]["error"]["code"] == -32601
    assert by_id["3"]["error"]["code"] == -32602
    assert by_id["4"]["result"] == {}
    # One reply per request; the notification and the blank line produced nothing.
    assert len(replies) == 5
