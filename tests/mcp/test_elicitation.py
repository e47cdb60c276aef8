"""Approval by MCP elicitation (decision 0102): `vultrino mcp --direct --approve-by-elicitation`
asks the client's user to approve a request that needs a person, through `elicitation/create`,
and decides the approval by the answer. Driven by the official SDK client and its elicitation
callback, against a store whose credential needs approval for every request."""

from __future__ import annotations

import json
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from mcp import Client, types
from mcp.client.stdio import StdioServerParameters

from conftest import BIN, SECRET, assert_no_secret, clean_env, cli
from scenario import result_text

pytestmark = pytest.mark.anyio

CLIENT_NAME = "elicitation-test-host"


@dataclass
class Gated:
    data_dir: str
    key: str
    alias: str = "gated-api"


@pytest.fixture(scope="module")
def gated():
    """A file store with one credential whose every request needs a person's approval."""
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = str(Path(tmp) / "data")
        cli(data_dir, "credential", "add", "gated-api", "--host", "127.0.0.1",
            "--require-approval", "always", stdin=SECRET + "\n")
        cli(data_dir, "role", "create", "gated-agent", "--permission", "read,execute",
            "--scope", "gated-*")
        key = json.loads(cli(data_dir, "key", "create", "gated", "--role", "gated-agent"))["key"]
        yield Gated(data_dir=data_dir, key=key)


def params(g: Gated, elicitation_flag: bool = True) -> StdioServerParameters:
    args = ["--data-dir", g.data_dir, "--store", "file", "mcp", "--direct",
            "--allow-loopback-upstreams"]
    if elicitation_flag:
        args.append("--approve-by-elicitation")
    return StdioServerParameters(command=BIN, args=args,
                                 env={"RUST_LOG": "warn", "VULTRINO_API_KEY": g.key})


class Person:
    """An elicitation callback that answers `result` and keeps every prompt it was shown."""

    def __init__(self, result: types.ElicitResult):
        self.result = result
        self.prompts: list[types.ElicitRequestParams] = []

    async def __call__(self, context, p):
        self.prompts.append(p)
        return self.result


def yes() -> Person:
    return Person(types.ElicitResult(action="accept", content={"approve": True}))


def request_args(upstream, path: str) -> dict:
    return {"credential": "gated-api", "method": "POST", "url": upstream.url(path),
            "body": {"refund": 500}, "reason": "refund order 1234"}


def client(g: Gated, person: Person | None, flag: bool = True, mode: str = "legacy") -> Client:
    return Client(params(g, flag), mode=mode, elicitation_callback=person,
                  client_info=types.Implementation(name=CLIENT_NAME, version="1"))


def hits(upstream, path: str) -> int:
    return sum(1 for s in upstream.seen if s["path"] == path)


def audit(g: Gated) -> list[dict]:
    out = cli(g.data_dir, "--json", "audit", "--credential", g.alias, "--limit", "1000")
    return [json.loads(line) for line in out.splitlines() if line.strip()]


async def test_a_yes_in_the_client_runs_the_request_once_and_the_audit_names_who_said_it(
        gated, upstream):
    person = yes()
    path = f"/approved-{uuid.uuid4().hex[:8]}"
    args = request_args(upstream, path)
    with anyio.fail_after(60):
        async with client(gated, person) as c:
            done = await c.call_tool("http_request", args)
            assert not done.is_error, result_text(done)
            assert done.structured_content["status"] == 200, result_text(done)
            assert hits(upstream, path) == 1
            assert_no_secret(result_text(done))

            # The person saw the request the agent wrote, and never the credential's secret.
            assert len(person.prompts) == 1
            prompt = person.prompts[0]
            assert "POST " + upstream.url(path) in prompt.message, prompt.message
            assert "gated-api" in prompt.message and "refund order 1234" in prompt.message
            assert '"refund":500' in prompt.message.replace(" ", ""), prompt.message
            assert_no_secret(prompt.message)
            assert prompt.requested_schema["properties"]["approve"]["type"] == "boolean"

            # The approval is spent: the same call with its id runs nothing more.
            approval_id = [line for line in prompt.message.splitlines()
                           if line.startswith("Approval ap_")][0].split()[1].rstrip(".")
            status = await c.call_tool("approval_status", {"approval_id": approval_id})
            assert status.structured_content["status"] == "executed"
            again = await c.call_tool("http_request", {**args, "approval_id": approval_id})
            assert again.is_error and "approval_used" in result_text(again)
            assert hits(upstream, path) == 1, "an approval runs one request"
    events = [e for e in audit(gated) if e.get("approval_id") == approval_id]
    approved = [e for e in events if e["action"] == "approval_approved"]
    assert len(approved) == 1, events
    assert approved[0]["actor"].startswith(f"mcp-client:{CLIENT_NAME} key:"), approved
    assert [e["action"] for e in events].count("approval_requested") == 1


@pytest.mark.parametrize("answer", [
    types.ElicitResult(action="decline"),
    types.ElicitResult(action="accept", content={"approve": False}),
], ids=["decline", "accept-but-no"])
async def test_a_no_in_the_client_denies_the_request_and_sends_nothing(gated, upstream, answer):
    person = Person(answer)
    path = f"/declined-{uuid.uuid4().hex[:8]}"
    with anyio.fail_after(60):
        async with client(gated, person) as c:
            denied = await c.call_tool("http_request", request_args(upstream, path))
            assert denied.is_error and "approval_denied" in result_text(denied), result_text(denied)
            assert len(person.prompts) == 1
    assert hits(upstream, path) == 0
    denials = [e for e in audit(gated) if e["action"] == "approval_denied"]
    assert any(e["actor"].startswith(f"mcp-client:{CLIENT_NAME} ") for e in denials), denials


async def test_a_dismissed_prompt_leaves_the_request_pending(gated, upstream):
    person = Person(types.ElicitResult(action="cancel"))
    path = f"/dismissed-{uuid.uuid4().hex[:8]}"
    with anyio.fail_after(60):
        async with client(gated, person) as c:
            result = await c.call_tool("http_request", request_args(upstream, path))
            assert not result.is_error, result_text(result)
            pending = result.structured_content["approval"]
            assert result.structured_content["status"] == 202 and pending["status"] == "pending"
            assert "closed the confirmation prompt" in pending["next"]
            status = await c.call_tool("approval_status",
                                       {"approval_id": pending["approval_id"]})
            assert status.structured_content["status"] == "pending"
    assert hits(upstream, path) == 0


@pytest.mark.parametrize("case", ["client-without-elicitation", "flag-off", "stateless-2026"])
async def test_otherwise_the_result_says_pending_as_before(gated, upstream, case):
    """Without the client's capability, without the operator's flag, or on a 2026-07-28
    (stateless) call: the pending result of decision 0094, and nobody is prompted."""
    person = yes()
    path = f"/pending-{case}-{uuid.uuid4().hex[:8]}"
    c = {
        "client-without-elicitation": lambda: client(gated, None),
        "flag-off": lambda: client(gated, person, flag=False),
        "stateless-2026": lambda: client(gated, person, mode="auto"),
    }[case]()
    with anyio.fail_after(60):
        async with c:
            result = await c.call_tool("http_request", request_args(upstream, path))
            assert not result.is_error, result_text(result)
            assert result.structured_content["status"] == 202
            assert result.structured_content["approval"]["status"] == "pending"
    assert person.prompts == []
    assert hits(upstream, path) == 0


def test_the_flag_needs_direct_mode(gated):
    """Forwarding, the mcp process holds only the agent's key, which may not approve its own
    requests: the flag is refused at start, saying why, with nothing on stdout."""
    r = subprocess.run([BIN, "mcp", "--approve-by-elicitation"], input="",
                       capture_output=True, text=True, timeout=60,
                       env=clean_env({"VULTRINO_API_KEY": gated.key}))
    assert r.returncode != 0
    assert r.stdout == ""
    assert "--direct" in r.stderr and "approve" in r.stderr, r.stderr
