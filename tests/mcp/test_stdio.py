"""`vultrino mcp` over stdio, driven by the official SDK client (and raw pipes for the
protocol-only-stdout and malformed-input rules).

Both modes: by default `vultrino mcp` forwards every message to a running server (`stdio_server`,
a `vultrino serve` on a file store; `http_target`) and opens no store; `--direct` opens the data
directory's store in the mcp process (`stdio_setup`)."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from conftest import BIN, api, clean_env, cli
from scenario import exercise

pytestmark = pytest.mark.anyio

DEFAULT_SERVER = "http://127.0.0.1:7879"


def params(setup, key: str | None, extra_args: list[str] | None = None,
           env: dict | None = None) -> StdioServerParameters:
    full_env = {"RUST_LOG": "warn", **(env or {})}
    if key is not None:
        full_env["VULTRINO_API_KEY"] = key
    return StdioServerParameters(command=BIN, args=extra_args or setup.args(), env=full_env)


@pytest.fixture(params=["direct", "forward"])
def stdio_mode(request):
    """The store opened in the mcp process (`--direct`), or a running server forwarded to."""
    return request.getfixturevalue("stdio_setup" if request.param == "direct" else "stdio_server")


@pytest.mark.parametrize("mode, version", [("legacy", "2025-11-25"), ("auto", "2026-07-28")])
async def test_sdk_client_uses_the_tools_over_stdio_without_seeing_the_secret(
        stdio_mode, upstream, mode, version):
    with anyio.fail_after(60):
        async with Client(params(stdio_mode, stdio_mode.key), mode=mode) as client:
            assert client.protocol_version == version
            await exercise(client, upstream, stdio_mode.echo_alias, stdio_mode.private_alias)


async def test_an_agent_token_works_over_stdio_in_place_of_its_key(stdio_mode, upstream):
    # A token of the key (vt_…) in VULTRINO_API_KEY: the same tools, narrowed to its credential.
    # Direct mode mints it on the store with the CLI (the local operator names the parent key);
    # forward mode through the running server, as the key itself.
    if hasattr(stdio_mode, "base"):
        r = api(stdio_mode.base, "POST", "/v1/tokens", stdio_mode.key,
                {"credentials": [stdio_mode.echo_alias], "uses": 50})
        assert r.status == 201, r.text
        token = r.json()["token"]
    else:
        parent = stdio_mode.key.split("_")[1]
        token = json.loads(cli(stdio_mode.data_dir, "token", "mint", "--parent-key", parent,
                               "--credential", stdio_mode.echo_alias))["token"]
    assert token.startswith("vt_")
    with anyio.fail_after(60):
        async with Client(params(stdio_mode, token), mode="auto") as client:
            await exercise(client, upstream, stdio_mode.echo_alias, stdio_mode.private_alias)
    for seen in upstream.seen:
        assert token not in json.dumps(seen, default=str), "the token reached the upstream"


async def test_without_flags_mcp_forwards_to_the_server_named_by_vultrino_server(
        stdio_server, upstream):
    # No --server, no --direct: the server comes from the environment twin.
    args = ["mcp"]
    env = {"VULTRINO_SERVER": stdio_server.base}
    with anyio.fail_after(60):
        async with Client(params(None, stdio_server.key, args, env), mode="auto") as client:
            await exercise(client, upstream, stdio_server.echo_alias, stdio_server.private_alias)


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


def run_raw(args: list[str], lines: list[str], key: str | None,
            env: dict | None = None) -> subprocess.CompletedProcess:
    env = clean_env({**({"VULTRINO_API_KEY": key} if key is not None else {}), **(env or {})})
    return subprocess.run([BIN, *args], input="".join(l + "\n" for l in lines),
                          capture_output=True, text=True, env=env, timeout=60)


PING = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"})


@contextlib.contextmanager
def closed_port_url():
    """`http://127.0.0.1:<port>` with nothing listening on it, while in use: the socket stays
    bound (never listening), so a connection is refused and nothing else can take the port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


def assert_port_7879_is_free():
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", 7879))
        except OSError:
            pytest.fail("127.0.0.1:7879 is in use: run the suite in a loopback-only network "
                        "namespace, as scripts/test.sh does")


def test_without_flags_mcp_opens_no_store_and_names_both_fixes_when_no_server_answers(
        stdio_setup):
    """The default is forwarding: with a readable store next to it and a valid key, but no server
    at the default address, `vultrino mcp` does not open the store; it exits with a message
    that names the server address, how to start or name a server, and --direct."""
    assert_port_7879_is_free()
    r = run_raw(["--data-dir", stdio_setup.data_dir, "--store", "file", "mcp"], [PING],
                stdio_setup.key)
    assert r.returncode != 0, r.stdout
    assert r.stdout == ""
    for part in (DEFAULT_SERVER, "vultrino serve", "--server", "VULTRINO_SERVER", "--direct"):
        assert part in r.stderr, f"{part!r} not in: {r.stderr}"


def test_a_server_that_does_not_answer_is_a_clear_error_at_start(stdio_server):
    with closed_port_url() as url:
        for args, env in ((["mcp", "--server", url], {}), (["mcp"], {"VULTRINO_SERVER": url})):
            r = run_raw(args, [PING], stdio_server.key, env)
            assert r.returncode != 0, r.stdout
            assert r.stdout == ""
            assert url in r.stderr and "--direct" in r.stderr, r.stderr


@pytest.mark.parametrize("url", ["http://192.0.2.10:7879", "http://vultrino.example.com",
                                 "http://[2001:db8::1]:7879", "ftp://127.0.0.1:7879"])
def test_a_server_url_that_would_send_the_key_in_clear_over_a_network_is_refused(
        stdio_server, url):
    """Like `vultrino sync --from`: https, or http to a loopback address only."""
    r = run_raw(["mcp", "--server", url], [PING], stdio_server.key)
    assert r.returncode != 0, r.stdout
    assert r.stdout == ""
    assert "https://" in r.stderr and "127.0.0.1" in r.stderr, r.stderr


def test_direct_and_server_together_are_refused(stdio_setup):
    r = run_raw([*stdio_setup.args(), "--server", "http://127.0.0.1:7879"], [PING],
                stdio_setup.key)
    assert r.returncode != 0
    assert r.stdout == ""
    assert "--direct" in r.stderr and "--server" in r.stderr, r.stderr


def test_direct_mode_on_a_served_store_says_to_drop_direct(stdio_server):
    """The server holds the file store's lock; the message says how to reach the store instead."""
    args = ["--data-dir", stdio_server.data_dir, "--store", "file", "mcp", "--direct"]
    r = run_raw(args, [PING], stdio_server.key)
    assert r.returncode != 0
    assert r.stdout == ""
    assert "drop --direct" in r.stderr, r.stderr


@pytest.mark.parametrize("key", [None, "", "vk_nope_invalid", "not-a-key"])
def test_missing_or_invalid_key_exits_with_a_message_and_nothing_on_stdout(stdio_setup, key):
    r = run_raw(stdio_setup.args(), [PING], key)
    assert r.returncode != 0
    assert r.stdout == ""
    assert "VULTRINO_API_KEY" in r.stderr


@pytest.mark.parametrize("key", [None, "", "not-a-key"])
def test_forwarding_without_a_usable_key_exits_with_a_message_and_nothing_on_stdout(
        stdio_server, key):
    r = run_raw(stdio_server.args(), [PING], key)
    assert r.returncode != 0
    assert r.stdout == ""
    assert "VULTRINO_API_KEY" in r.stderr


async def test_sdk_client_with_a_missing_key_fails_cleanly(stdio_mode):
    with anyio.fail_after(60):
        with pytest.raises(Exception):
            async with Client(params(stdio_mode, None), mode="legacy") as client:
                await client.list_tools()


def test_malformed_input_gets_json_rpc_errors_and_stdout_stays_protocol_only(stdio_mode):
    lines = [
        "{not json",
        json.dumps({"jsonrpc": "2.0", "id": 1}),
        json.dumps({"jsonrpc": "2.0", "id": 2, "method": "no/such/method"}),
        json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        json.dumps({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": 5}}),
        "",
        json.dumps({"jsonrpc": "2.0", "id": 4, "method": "ping"}),
    ]
    r = run_raw(stdio_mode.args(), lines, stdio_mode.key)
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
