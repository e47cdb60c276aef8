"""Fixtures for driving Vultrino's pass-through proxy with the official OpenAI and Anthropic SDKs.

- `provider`: the loopback fake provider (provider.py), one per session, its record cleared
  before each test.
- `target`: where the suite points. By default the real `vultrino serve` binary on 127.0.0.1:0
  with a memory store and loopback upstreams allowed. Set VULTRINO_SDK_BASE_URL (e.g. the worker
  in workerd, as scripts/mcp-workerd.sh sdk does) plus VULTRINO_SDK_ADMIN_TOKEN (a `vs_` session
  token) or VULTRINO_SDK_ADMIN_USER / VULTRINO_SDK_ADMIN_PASSWORD to run the same tests against
  another backend; it must be allowed to reach loopback upstreams. VULTRINO_SDK_BACKEND names
  that backend (`workerd`) for the few expectations that differ.
  Either way four credentials are created through the HTTP API, each with `base_url` set to the
  fake provider — `openai-…` (the default `Authorization: Bearer` injection), `anthropic-…`
  (`x-api-key`), `gemini-…` (a `query_param` `key`, base path `/v1beta`) and `github-…` (the
  default injection) — and an agent key whose role may use them all.

The SDKs are used as they ship: only `base_url` and `api_key` are given. So that nothing in the
environment changes them either, the OPENAI_*/ANTHROPIC_* variables and any HTTP proxy setting
are removed from this process's environment at start.

The binary is VULTRINO_BIN, else <repo>/target/debug/vultrino (build it first).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

import provider as fake

for _name in list(os.environ):
    if _name.upper().startswith(("OPENAI_", "ANTHROPIC_")) or _name.lower() in (
            "http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        del os.environ[_name]

REPO = Path(__file__).resolve().parents[2]
BIN = os.environ.get("VULTRINO_BIN") or str(REPO / "target" / "debug" / "vultrino")
ADMIN_PASSWORD = "correct horse battery staple"
# '+', '/' and '=' make the raw, percent-encoded and base64 forms all differ.
OPENAI_SECRET = "sk-proj+Zq9/Wx=7Hh3kP0rTmcpOAi"
ANTHROPIC_SECRET = "sk-ant-api03+Lm4/Qr=8Jj2nV5sXa"
GOOGLE_SECRET = "AIzaSy+Gg5/Tt=1Uu6wGoogleKey"
GITHUB_SECRET = "ghp_Hub+Kk2/Ll=9Mm0GithubTok"
SECRETS = (OPENAI_SECRET, ANTHROPIC_SECRET, GOOGLE_SECRET, GITHUB_SECRET)


def secret_forms(secret: str) -> list[str]:
    """Every encoding of `secret` that must not reach the agent (as tests/mcp checks)."""
    raw = secret.encode()
    forms = {
        secret,
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
        json.dumps(secret)[1:-1].replace("/", "\\/"),
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode(),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    }
    return sorted(forms)


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        for form in secret_forms(secret):
            assert form not in text, f"a secret reached the SDK in the form {form!r}: {text!r}"


# A hung request must fail its test, not the whole run: the SDKs, as shipped, wait 10 minutes
# and retry twice. The alarm interrupts the main thread's blocking read wherever it is.
TEST_TIME_LIMIT_S = 120


@pytest.fixture(autouse=True)
def _time_limit():
    def expired(signum, frame):
        raise TimeoutError(f"the test took longer than {TEST_TIME_LIMIT_S} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(TEST_TIME_LIMIT_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


# ----- the fake provider -------------------------------------------------------------------


@pytest.fixture(scope="session")
def _provider_server():
    provider, server = fake.start(OPENAI_SECRET, ANTHROPIC_SECRET)
    yield provider
    server.shutdown()
    server.server_close()


@pytest.fixture
def provider(_provider_server):
    _provider_server.reset()
    yield _provider_server
    _provider_server.gate.set()  # never leave a handler thread waiting


# ----- HTTP helpers (the admin API) --------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict  # lower-case names
    text: str

    def json(self):
        return json.loads(self.text)


def http(method: str, url: str, headers: dict | None = None, body: bytes | None = None) -> Reply:
    """One request as curl would send it (no proxy from the environment, no redirect followed)."""
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirect)
    try:
        with opener.open(req, timeout=30) as r:
            return Reply(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read().decode())
    except urllib.error.HTTPError as e:
        return Reply(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read().decode())


def api(base: str, method: str, path: str, token: str | None, payload=None) -> tuple[int, dict]:
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    body = None if payload is None else json.dumps(payload).encode()
    r = http(method, base + path, headers, body)
    return r.status, (r.json() if r.text else {})


def login(base: str, user: str, password: str) -> str:
    status, body = api(base, "POST", "/login", None, {"username": user, "password": password})
    assert status == 200, body
    return body["token"]


# ----- the target ----------------------------------------------------------------------------


@dataclass
class Target:
    base: str
    admin_token: str
    key: str  # the agent's vk_ key
    role: str  # its role: execute on both credentials
    openai_alias: str
    anthropic_alias: str
    gemini_alias: str
    github_alias: str

    def openai_base_url(self) -> str:
        return f"{self.base}/proxy/{self.openai_alias}/v1"

    def anthropic_base_url(self) -> str:
        return f"{self.base}/proxy/{self.anthropic_alias}"

    def new_key(self, name: str) -> tuple[str, str]:
        """Another agent key with the same role: (id, vk_ key)."""
        status, body = api(self.base, "POST", "/v1/keys", self.admin_token,
                           {"name": f"{name}-{uuid.uuid4().hex[:8]}", "role": self.role})
        assert status == 201, body
        return body["id"], body["key"]


def provision(base: str, admin_token: str, upstream: str) -> Target:
    suffix = uuid.uuid4().hex[:8]
    aliases = {kind: f"{kind}-{suffix}" for kind in ("openai", "anthropic", "gemini", "github")}
    role = f"sdk-{suffix}"
    for kind, kind_type, data, base_path in (
        ("openai", "api_key", {"key": OPENAI_SECRET}, ""),
        ("anthropic", "api_key", {"key": ANTHROPIC_SECRET, "header": "x-api-key"}, ""),
        ("gemini", "query_param", {"name": "key", "value": GOOGLE_SECRET}, "/v1beta"),
        ("github", "api_key", {"key": GITHUB_SECRET}, ""),
    ):
        status, body = api(base, "POST", "/v1/credentials", admin_token, {
            "alias": aliases[kind],
            "type": kind_type,
            "description": "loopback fake provider",
            "base_url": upstream + base_path,
            "data": data,
            "policy": {"allowed_hosts": ["127.0.0.1"]},
        })
        assert status == 201, body
    status, body = api(base, "POST", "/v1/roles", admin_token, {
        "name": role, "permissions": ["execute"], "scopes": list(aliases.values())})
    assert status == 201, body
    status, body = api(base, "POST", "/v1/keys", admin_token, {"name": f"sdk-{suffix}", "role": role})
    assert status == 201, body
    return Target(base=base, admin_token=admin_token, key=body["key"], role=role,
                  openai_alias=aliases["openai"], anthropic_alias=aliases["anthropic"],
                  gemini_alias=aliases["gemini"], github_alias=aliases["github"])


def clean_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("VULTRINO_") and k not in ("ENCRYPTION_KEY", "ADMIN_PASSWORD_HASH")}
    env["RUST_LOG"] = "warn"
    env.update(extra or {})
    return env


@pytest.fixture(scope="session")
def target(_provider_server):
    upstream = _provider_server.base
    base = os.environ.get("VULTRINO_SDK_BASE_URL")
    if base:
        base = base.rstrip("/")
        token = os.environ.get("VULTRINO_SDK_ADMIN_TOKEN") or login(
            base,
            os.environ.get("VULTRINO_SDK_ADMIN_USER", "admin"),
            os.environ["VULTRINO_SDK_ADMIN_PASSWORD"],
        )
        yield provision(base, token, upstream)
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
            yield provision(base, login(base, "admin", ADMIN_PASSWORD), upstream)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
