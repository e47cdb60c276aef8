"""The scenario every transport must pass, driven through an official SDK `Client`."""

from __future__ import annotations

import json

from conftest import SECRET, OTHER_SECRET, assert_no_secret

TOOLS = {"list_credentials", "get_credential_info", "http_request", "approval_status"}


def result_text(result) -> str:
    """Everything a client sees of a tool result, as one string."""
    return result.model_dump_json(by_alias=True)


async def exercise(client, upstream, echo_alias: str, private_alias: str) -> None:
    # Tools and their schemas.
    listed = await client.list_tools()
    by_name = {t.name: t for t in listed.tools}
    assert set(by_name) == TOOLS
    schema = by_name["http_request"].input_schema
    assert schema["type"] == "object"
    assert {"credential", "url"} <= set(schema["required"])

    # list_credentials shows only what the key's scopes reach, and no secret.
    listing = await client.call_tool("list_credentials", {})
    assert not listing.is_error, result_text(listing)
    aliases = {c["alias"] for c in listing.structured_content["credentials"]}
    assert echo_alias in aliases and private_alias not in aliases
    assert_no_secret(result_text(listing))

    info = await client.call_tool("get_credential_info", {"alias": echo_alias})
    assert not info.is_error, result_text(info)
    assert info.structured_content["allowed_hosts"] == ["127.0.0.1"]

    # http_request: the upstream gets the secret; the tool result never shows it.
    before = len(upstream.seen)
    result = await client.call_tool("http_request", {
        "credential": echo_alias,
        "method": "POST",
        "url": upstream.url("/echo"),
        "headers": {"X-Trace": "mcp-test"},
        "query": {"q": "1"},
        "body": {"hello": "world"},
    })
    assert not result.is_error, result_text(result)
    got = upstream.seen[before:]
    assert len(got) == 1
    assert got[0]["headers"].get("authorization") == f"Bearer {SECRET}"
    assert got[0]["path"] == "/echo?q=1"
    assert got[0]["headers"].get("x-trace") == "mcp-test"
    reply = result.structured_content
    assert reply["status"] == 200
    echoed = json.loads(reply["body"])  # the upstream's echo, scrubbed by Vultrino
    assert echoed["headers"]["x-trace"] == "mcp-test"
    assert "authorization" in echoed["headers"]
    assert_no_secret(result_text(result))
    # The text block carries the same (scrubbed) JSON for clients that ignore structuredContent.
    assert json.loads(result.content[0].text) == reply

    # A credential outside the key's scopes: a tool error, not a protocol error; no request made.
    before = len(upstream.seen)
    denied = await client.call_tool("http_request", {
        "credential": private_alias, "url": upstream.url("/echo")})
    assert denied.is_error
    assert "scope" in denied.content[0].text
    assert len(upstream.seen) == before
    assert_no_secret(result_text(denied), OTHER_SECRET)

    # Bad arguments are tool errors too (the model can correct itself).
    bad = await client.call_tool("http_request", {"credential": echo_alias})
    assert bad.is_error
