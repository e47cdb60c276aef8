"""Fixtures for driving Vultrino with the official MCP Python SDK.

- `upstream`: a loopback HTTP server whose every path echoes the request headers back (so the
  secret Vultrino injects comes back in the body, and scrubbing is what keeps it out of the
  tool result); it records what it received.
- `http_target`: where the Streamable HTTP tests point. By default the real `vultrino serve`
  binary on 127.0.0.1:0 with a memory store. Set VULTRINO_MCP_BASE_URL (e.g. the worker in
  workerd) plus VULTRINO_MCP_ADMIN_TOKEN (a `vs_` session token) or VULTRINO_MCP_ADMIN_USER /
  VULTRINO_MCP_ADMIN_PASSWORD to run the same tests against another backend; it must be allowed
  to reach loopback upstreams (the upstream runs in this process on 127.0.0.1).
- `stdio_setup`: a file store in a temp dir prepared with the CLI, for `vultrino mcp --direct`.
- `stdio_server`: another such store, served by `vultrino serve` (file store, 127.0.0.1:0), for
  `vultrino mcp` in its default mode, which forwards to a running server.

The binary is VULTRINO_BIN, else <repo>/target/debug/vultrino (build it first).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = os.environ.get("VULTRINO_BIN") or str(REPO / "target" / "debug" / "vultrino")
ADMIN_PASSWORD = "correct horse battery staple"
# '+', '/' and '=' make the raw, percent-encoded and base64 forms all differ.
SECRET = "sk_live+Zq9/Wx=7Hh3kP0rTmcp"
OTHER_SECRET = "other+Secret/Value=42xyz"


@pytest.fixture
def anyio_backend():
    return "asyncio"


def secret_forms(secret: str) -> list[str]:
    """Every encoding of `secret` that must not appear in a tool result."""
    raw = secret.encode()
    forms = {
        secret,
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode(),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        base64.b64encode(b"Bearer " + raw).decode().rstrip("="),
    }
    return sorted(forms)


def assert_no_secret(text: str, secret: str = SECRET) -> None:
    for form in secret_forms(secret):
        assert form not in text, f"the secret leaked in the form {form!r}"


# ----- the loopback upstream ---------------------------------------------------------------


@dataclass
class Upstream:
    base: str
    seen: list[dict] = field(default_factory=list)

    def url(self, path: str) -> str:
        return self.base + path


def _handler(upstream: Upstream):
    class Echo(BaseHTTPRequestHandler):
        # Keep-alive, as real APIs: workerd's client reuses even an HTTP/1.0 connection this
        # server would close after its reply (see tests/schemathesis/run.py).
        protocol_version = "HTTP/1.1"

        def _serve(self):
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            record = {
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode("utf-8", "replace"),
            }
            upstream.seen.append(record)
            out = json.dumps(record).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, *args):  # keep pytest output clean
            pass

    return Echo


@pytest.fixture(scope="session")
def upstream():
    up = Upstream(base="")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(up))
    up.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield up
    server.shutdown()


# ----- HTTP helpers ------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict
    text: str

    def json(self):
        return json.loads(self.text)


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None) -> Reply:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=30) as r:
            return Reply(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read().decode())
    except urllib.error.HTTPError as e:
        return Reply(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read().decode())


def api(base: str, method: str, path: str, token: str | None, payload=None) -> Reply:
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    body = None if payload is None else json.dumps(payload).encode()
    return http(method, base + path, body, headers)


# ----- the HTTP target ---------------------------------------------------------------------


@dataclass
class Target:
    """A server with two credentials and an agent key whose role reaches only the first."""

    base: str
    key: str
    echo_alias: str
    private_alias: str
    admin: str = ""

    @property
    def mcp_url(self) -> str:
        return self.base + "/mcp"


def provision(base: str, admin_token: str) -> Target:
    """Create the credentials, a role and an agent key through the HTTP API."""
    suffix = uuid.uuid4().hex[:8]
    echo, private, role = f"echo-{suffix}", f"private-{suffix}", f"mcp-agent-{suffix}"
    for alias, secret in ((echo, SECRET), (private, OTHER_SECRET)):
        r = api(base, "POST", "/v1/credentials", admin_token, {
            "alias": alias,
            "type": "api_key",
            "description": "loopback echo upstream",
            "data": {"key": secret},
            "policy": {"allowed_hosts": ["127.0.0.1"]},
        })
        assert r.status == 201, r.text
    r = api(base, "POST", "/v1/roles", admin_token, {
        "name": role, "permissions": ["read", "execute"], "scopes": [echo]})
    assert r.status == 201, r.text
    r = api(base, "POST", "/v1/keys", admin_token, {"name": f"mcp-{suffix}", "role": role})
    assert r.status == 201, r.text
    return Target(base=base, key=r.json()["key"], echo_alias=echo, private_alias=private,
                  admin=admin_token)


def login(base: str, user: str, password: str) -> str:
    r = api(base, "POST", "/login", None, {"username": user, "password": password})
    assert r.status == 200, r.text
    return r.json()["token"]


def clean_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("VULTRINO_") and k not in ("ENCRYPTION_KEY", "ADMIN_PASSWORD_HASH")}
    env["RUST_LOG"] = "warn"
    env.update(extra or {})
    return env


@pytest.fixture(scope="session")
def http_target():
    base = os.environ.get("VULTRINO_MCP_BASE_URL")
    if base:
        base = base.rstrip("/")
        token = os.environ.get("VULTRINO_MCP_ADMIN_TOKEN") or login(
            base,
            os.environ.get("VULTRINO_MCP_ADMIN_USER", "admin"),
            os.environ["VULTRINO_MCP_ADMIN_PASSWORD"],
        )
        yield provision(base, token)
        return
    hashed = subprocess.run(
        [BIN, "hash-password", "--iterations", "1000", "--allow-weak-password-hash-for-tests"],
        input=ADMIN_PASSWORD + "\n",
        capture_output=True, text=True, check=True, env=clean_env(), timeout=60,
    ).stdout.strip()
    with tempfile.TemporaryDirectory() as data_dir:
        proc = subprocess.Popen(
            [BIN, "--data-dir", data_dir, "--store", "memory", "serve",
             "--listen", "127.0.0.1:0", "--allow-loopback-upstreams"],
            stdout=subprocess.PIPE, stderr=None, text=True,
            env=clean_env({"VULTRINO_ADMIN_PASSWORD_HASH": hashed,
                           "VULTRINO_ALLOW_WEAK_PASSWORD_HASH_FOR_TESTS": "true"}),
        )
        try:
            base = None
            for line in proc.stdout:
                if line.startswith("Vultrino listening on "):
                    base = line.split("Vultrino listening on ", 1)[1].strip()
                    break
            assert base, "vultrino serve exited before listening"
            # Keep draining stdout so the server never blocks on a full pipe.
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            yield provision(base, login(base, "admin", ADMIN_PASSWORD))
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


# ----- the stdio setup ---------------------------------------------------------------------


@dataclass
class StdioSetup:
    data_dir: str
    key: str
    echo_alias: str
    private_alias: str

    def args(self) -> list[str]:
        """`vultrino mcp --direct` on this store (opens it in the mcp process)."""
        return ["--data-dir", self.data_dir, "--store", "file", "mcp", "--direct",
                "--allow-loopback-upstreams"]


@dataclass
class StdioServer:
    """A store served by `vultrino serve`; `vultrino mcp` forwards to `base`."""

    data_dir: str
    base: str
    key: str
    echo_alias: str
    private_alias: str

    def args(self) -> list[str]:
        return ["mcp", "--server", self.base]


def cli(data_dir: str, *args: str, stdin: str = "") -> str:
    r = subprocess.run(
        [BIN, "--data-dir", data_dir, "--store", "file", *args], input=stdin,
        capture_output=True, text=True, env=clean_env(), timeout=120,
    )
    assert r.returncode == 0, f"vultrino {' '.join(args)} failed: {r.stderr}"
    return r.stdout


def prepare_store(data_dir: str) -> str:
    """Two credentials and an agent key whose role reaches only `echo-api`; returns the key."""
    cli(data_dir, "credential", "add", "echo-api", "--host", "127.0.0.1",
        "--description", "loopback echo upstream", stdin=SECRET + "\n")
    cli(data_dir, "credential", "add", "private-api", "--host", "127.0.0.1",
        stdin=OTHER_SECRET + "\n")
    cli(data_dir, "role", "create", "mcp-agent", "--permission", "read,execute",
        "--scope", "echo-*")
    return json.loads(cli(data_dir, "key", "create", "mcp-test", "--role", "mcp-agent"))["key"]


@pytest.fixture(scope="session")
def stdio_setup():
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = str(Path(tmp) / "data")
        key = prepare_store(data_dir)
        yield StdioSetup(data_dir=data_dir, key=key, echo_alias="echo-api",
                         private_alias="private-api")


@pytest.fixture(scope="session")
def stdio_server():
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = str(Path(tmp) / "data")
        key = prepare_store(data_dir)
        proc = subprocess.Popen(
            [BIN, "--data-dir", data_dir, "--store", "file", "serve",
             "--listen", "127.0.0.1:0", "--allow-loopback-upstreams"],
            stdout=subprocess.PIPE, stderr=None, text=True, env=clean_env(),
        )
        try:
            base = None
            for line in proc.stdout:
                if line.startswith("Vultrino listening on "):
                    base = line.split("Vultrino listening on ", 1)[1].strip()
                    break
            assert base, "vultrino serve exited before listening"
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            yield StdioServer(data_dir=data_dir, base=base, key=key, echo_alias="echo-api",
                              private_alias="private-api")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
