"""Streamable HTTP at POST /mcp, driven by the official SDK client (and raw HTTP for the
transport rules). The target comes from the `http_target` fixture: the local binary by default,
any backend with VULTRINO_MCP_BASE_URL."""

from __future__ import annotations

import json

import anyio
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

import uuid

from conftest import SECRET, api, assert_no_secret, http
from scenario import exercise

pytestmark = pytest.mark.anyio


def sdk_client(target, mode: str, key: str | None = None) -> Client:
    headers = {"Authorization": f"Bearer {key or target.key}"}
    transport = streamable_http_client(
        target.mcp_url, http_client=create_mcp_http_client(headers=headers))
    return Client(transport, mode=mode)


@pytest.mark.parametrize("mode, version", [("legacy", "2025-11-25"), ("auto", "2026-07-28")])
async def test_sdk_client_uses_the_tools_over_http_without_seeing_the_secret(
        http_target, upstream, mode, version):
    with anyio.fail_after(60):
        async with sdk_client(http_target, mode) as client:
            assert client.protocol_version == version
            await exercise(client, upstream, http_target.echo_alias, http_target.private_alias)


async def test_sdk_client_with_an_invalid_key_fails_cleanly(http_target):
    with anyio.fail_after(60):
        with pytest.raises(Exception):
            async with sdk_client(http_target, "legacy", key="vk_nope_invalid") as client:
                await client.list_tools()


def post(target, body: bytes | str, key: str | None = "default", headers: dict | None = None):
    h = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    if key == "default":
        key = target.key
    if key is not None:
        h["authorization"] = f"Bearer {key}"
    h.update(headers or {})
    data = body.encode() if isinstance(body, str) else body
    return http("POST", target.mcp_url, data, h)


PING = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"})


def test_missing_or_invalid_key_is_401_with_json(http_target):
    for key in (None, "vk_nope_invalid", "not-a-key"):
        r = post(http_target, PING, key=key)
        assert r.status == 401, (key, r.text)
        assert r.headers["content-type"].startswith("application/json")
        assert "bearer" in r.headers.get("www-authenticate", "").lower()
        assert r.json()["error"]["message"]


def test_malformed_json_rpc_gets_json_rpc_errors_and_the_server_stays_up(http_target):
    cases = [
        ("{not json", -32700),
        ('{"jsonrpc": "2.0", "id": 1}', -32600),
        ('{"jsonrpc": "1.0", "id": 1, "method": "ping"}', -32600),
        ('{"jsonrpc": "2.0", "id": 1, "method": "no/such/method"}', -32601),
        ('{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"arguments": {}}}', -32602),
        ('{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "nope"}}', -32602),
    ]
    for body, code in cases:
        r = post(http_target, body, headers={"mcp-protocol-version": "2025-11-25"})
        assert r.json()["error"]["code"] == code, (body, r.status, r.text)
        assert r.status in (200, 400), (body, r.status)
    r = post(http_target, PING, headers={"mcp-protocol-version": "2025-11-25"})
    assert r.status == 200 and r.json()["result"] == {}


def test_notifications_and_responses_are_202_with_no_body(http_target):
    for body in ('{"jsonrpc": "2.0", "method": "notifications/initialized"}',
                 '{"jsonrpc": "2.0", "id": 9, "result": {}}'):
        r = post(http_target, body, headers={"mcp-protocol-version": "2025-11-25"})
        assert r.status == 202 and r.text == ""


def test_get_and_delete_are_405(http_target):
    for method in ("GET", "DELETE"):
        r = http(method, http_target.mcp_url, None, {"authorization": f"Bearer {http_target.key}",
                                                     "accept": "text/event-stream"})
        assert r.status == 405, (method, r.text)


def test_a_foreign_origin_is_403_and_no_origin_is_allowed(http_target):
    r = post(http_target, PING, headers={"origin": "https://evil.example"})
    assert r.status == 403
    assert post(http_target, PING).status == 200


def test_an_unsupported_protocol_version_header_is_400(http_target):
    r = post(http_target, PING, headers={"mcp-protocol-version": "1999-01-01"})
    assert r.status == 400
    assert r.json()["error"]["code"] == -32022


def test_batches_only_under_2025_03_26(http_target):
    batch = json.dumps([{"jsonrpc": "2.0", "id": 1, "method": "ping"},
                        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}])
    r = post(http_target, batch, headers={"mcp-protocol-version": "2025-03-26"})
    assert r.status == 200 and len(r.json()) == 2
    r = post(http_target, batch, headers={"mcp-protocol-version": "2025-06-18"})
    assert r.status == 400 and r.json()["error"]["code"] == -32600


def test_stateless_headers_must_match_the_body(http_target):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {}}}})
    ok = {"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/list"}
    r = post(http_target, body, headers=ok)
    assert r.status == 200 and r.json()["result"]["resultType"] == "complete"
    r = post(http_target, body, headers={**ok, "mcp-method": "tools/call"})
    assert r.status == 400 and r.json()["error"]["code"] == -32020


def test_no_session_id_is_issued(http_target):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"}}})
    r = post(http_target, body)
    assert r.status == 200 and r.json()["result"]["protocolVersion"] == "2025-06-18"
    assert "mcp-session-id" not in r.headers


async def test_a_request_waiting_for_approval_is_a_202_result_that_says_how_to_go_on(
        http_target, upstream):
    """A credential whose every request needs a person: the tool result is no error but a 202
    with the approval id and what to do; approval_status follows it; once an admin approved,
    the same call plus approval_id runs the request, once."""
    t = http_target
    suffix = uuid.uuid4().hex[:8]
    alias, role = f"approve-{suffix}", f"approve-agent-{suffix}"
    r = api(t.base, "POST", "/v1/credentials", t.admin, {
        "alias": alias, "type": "api_key", "data": {"key": SECRET},
        "policy": {"allowed_hosts": ["127.0.0.1"], "require_approval": "always"}})
    assert r.status == 201, r.text
    r = api(t.base, "POST", "/v1/roles", t.admin, {
        "name": role, "permissions": ["read", "execute"], "scopes": [alias]})
    assert r.status == 201, r.text
    r = api(t.base, "POST", "/v1/keys", t.admin, {"name": role, "role": role})
    assert r.status == 201, r.text
    key = r.json()["key"]
    path = f"/needs-approval-{suffix}"
    args = {"credential": alias, "method": "POST", "url": upstream.url(path),
            "body": {"n": 1}, "reason": "a test that needs a yes"}
    hits = lambda: sum(1 for s in upstream.seen if s["path"] == path)  # noqa: E731
    with anyio.fail_after(60):
        async with sdk_client(t, "legacy", key=key) as client:
            tools = {x.name: x for x in (await client.list_tools()).tools}
            assert "approval_status" in tools
            props = tools["http_request"].input_schema["properties"]
            assert "approval_id" in props and "reason" in props

            first = await client.call_tool("http_request", args)
            assert not first.is_error, first.content[0].text
            reply = first.structured_content
            assert reply["status"] == 202
            pending = reply["approval"]
            approval_id = pending["approval_id"]
            assert approval_id.startswith("ap_") and pending["status"] == "pending"
            assert pending["expires_at"] > 0
            text = first.content[0].text
            assert approval_id in text and "approval_status" in text, text
            assert hits() == 0, "nothing is sent before approval"

            status = await client.call_tool("approval_status", {"approval_id": approval_id})
            assert not status.is_error, status.content[0].text
            assert status.structured_content["status"] == "pending"

            r = api(t.base, "POST", f"/v1/approvals/{approval_id}/approve", t.admin, {})
            assert r.status == 200, r.text
            status = await client.call_tool("approval_status", {"approval_id": approval_id})
            assert status.structured_content["status"] == "approved"

            done = await client.call_tool("http_request", {**args, "approval_id": approval_id})
            assert not done.is_error, done.content[0].text
            assert done.structured_content["status"] == 200
            assert hits() == 1
            assert_no_secret(done.content[0].text)

            again = await client.call_tool("http_request", {**args, "approval_id": approval_id})
            assert again.is_error and "approval_used" in again.content[0].text
            assert hits() == 1, "an approval runs one request"

            other = await client.call_tool("approval_status", {"approval_id": "ap_" + "0" * 32})
            assert other.is_error and "approval_not_found" in other.content[0].text
