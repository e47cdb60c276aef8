"""Schemathesis against one backend: requests generated from the API's OpenAPI document
(`GET /openapi.json`), every reply checked for a 5xx, an undocumented status, an undocumented
content type and a body that breaks the document's schema (decision 0103).

    target/schemathesis-venv/bin/python tests/schemathesis/run.py
        starts `vultrino serve` (memory store, 127.0.0.1:0, loopback upstreams allowed) from
        VULTRINO_BIN (default target/debug/vultrino) and fuzzes it;
    ... run.py --base URL --password PASSWORD
        fuzzes a running backend (scripts/mcp-workerd.sh schemathesis: the worker in workerd).

scripts/test.sh runs both inside a loopback-only network namespace, so no generated URL can
reach another machine. Two passes, each with its own credentials:

1. as the admin (a session token, `Authorization: Bearer vs_…`): every operation but
   `POST /logout` (it would end the very session the pass uses; its `everywhere=true` every
   session of the admin);
2. as an agent (an API key of the built-in `executor` role): the agents' operations — execute,
   `/mcp`, agent tokens, approvals, and the pass-through proxy.

Between them the driver creates the agent's key and stores a credential `echo`, allowed on
127.0.0.1, whose base_url is a loopback upstream run here (it answers every request with a small
JSON body), so that execute and the proxy have something real to reach (made after the admin's
pass, whose stateful phase follows listings to deletions and would revoke or delete them). Deterministic (`--seed`, `--generation-deterministic`)
and bounded (`--max-examples`, one worker); the exit code is Schemathesis's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ADMIN_PASSWORD = "schemathesis-admin-password"
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
MAX_EXAMPLES = os.environ.get("VULTRINO_SCHEMATHESIS_MAX_EXAMPLES", "8")
SEED = "20261206"


def api(base: str, method: str, path: str, token: str | None, body: object | None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")


class Echo(BaseHTTPRequestHandler):
    """A loopback upstream: every method and path gets a small JSON reply."""

    # HTTP/1.1 with keep-alive, as real APIs. Under HTTP/1.0 this server closes the connection
    # after each reply, but workerd's client keeps an HTTP/1.0 connection in its pool (seen: three
    # requests on one connection to a server answering `HTTP/1.0 200`), so a later POST could be
    # written to a connection the server had closed: a 502 `upstream_connect` that was this
    # upstream's fault, not the proxy's (CI, two POSTs of one workerd run).
    protocol_version = "HTTP/1.1"

    def _serve(self):
        # The whole request is read before the reply, chunked bodies too: a reply (and this
        # HTTP/1.0 server's close) while the proxy still uploads resets the upload, which the
        # proxy rightly reports as 502 — a failure of this upstream, not of the proxy.
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                self.rfile.read(size + 2) if size else self.rfile.readline()
                if not size:
                    break
        else:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
        body = json.dumps({"ok": True, "path": self.path.split("?")[0]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def __getattr__(self, name):
        # Every method, QUERY and the like too: an upstream that refused one with a 5xx would
        # be reported as the proxy's server error.
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def log_message(self, *args):
        pass


def schemathesis(base: str, auth: str, include: str | None, exclude: str | None, config: str) -> int:
    """One Schemathesis run over the operations whose path matches `include` and not `exclude`
    (regular expressions), with `config` as its schemathesis.toml."""
    cmd = [
        os.path.join(os.path.dirname(sys.executable), "schemathesis"),
        "--config-file", "CONFIG",
        "run", f"{base}/openapi.json",
        "--url", base,
        "-H", f"Authorization: Bearer {auth}",
        "--checks", CHECKS,
        "--max-examples", MAX_EXAMPLES,
        "--seed", SEED,
        "--generation-deterministic",
        "--generation-with-security-parameters", "false",
        "--workers", "1",
        "--request-timeout", "20",
        "--no-color",
        "--output-sanitize", "true",
    ]
    if include:
        cmd += ["--include-path-regex", include]
    if exclude:
        cmd += ["--exclude-path-regex", exclude]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    with tempfile.TemporaryDirectory() as work:
        config_file = os.path.join(work, "schemathesis.toml")
        with open(config_file, "w") as f:
            f.write(config)
        cmd[cmd.index("CONFIG")] = config_file
        har = os.environ.get("VULTRINO_SCHEMATHESIS_HAR")
        if har:
            # Every exchange of the pass, for reading what failed.
            cmd += ["--report", "har", "--report-har-path", f"{har}.{len(include or '')}.har"]
        return subprocess.run(cmd, cwd=work, env=env).returncode


def fuzz(base: str, password: str) -> int:
    base = base.rstrip("/")
    token = api(base, "POST", "/login", None, {"username": "admin", "password": password})["token"]
    print(f"==> schemathesis as the admin against {base}", flush=True)
    rc = schemathesis(base, token, None, "^/logout$", "")
    # Made after the admin's pass, whose stateful phase follows listings to deletions: the
    # agent's key and the credential its pass uses are the admin pass's to revoke otherwise.
    agent = api(base, "POST", "/v1/keys", token, {"name": "schemathesis-agent", "role": "executor"})["key"]
    up = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=up.serve_forever, daemon=True).start()
    try:
        api(base, "POST", "/v1/credentials", token, {
            "alias": "echo", "type": "api_key", "description": "the fuzzer's loopback upstream",
            "data": {"key": "sk-schemathesis-upstream"},
            "policy": {"allowed_hosts": ["127.0.0.1"]},
            "base_url": f"http://127.0.0.1:{up.server_address[1]}",
        })
        print(f"==> schemathesis as an agent (executor key) against {base}", flush=True)
        # The proxy's alias is the stored one, so its requests reach the loopback upstream.
        rc2 = schemathesis(base, agent,
                           "^(/v1/execute|/api/v1/execute|/mcp|/v1/tokens.*|/v1/approvals.*|/proxy/.*)$",
                           None, '[parameters]\n"path.alias" = "echo"\n')
        return rc or rc2
    finally:
        up.shutdown()


def clean_env(extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("VULTRINO_") and k not in ("ENCRYPTION_KEY", "ADMIN_PASSWORD_HASH")}
    env["RUST_LOG"] = "warn"
    env.update(extra)
    return env


def local() -> int:
    binary = os.environ.get("VULTRINO_BIN", os.path.join(ROOT, "target/debug/vultrino"))
    hashed = subprocess.run(
        [binary, "hash-password", "--iterations", "1000", "--allow-weak-password-hash-for-tests"],
        input=ADMIN_PASSWORD + "\n", capture_output=True, text=True, check=True,
        env=clean_env({}), timeout=60,
    ).stdout.strip()
    with tempfile.TemporaryDirectory() as data_dir:
        proc = subprocess.Popen(
            [binary, "--data-dir", data_dir, "--store", "memory", "serve",
             "--listen", "127.0.0.1:0", "--allow-loopback-upstreams"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env=clean_env({"VULTRINO_ADMIN_PASSWORD_HASH": hashed,
                           "VULTRINO_ALLOW_WEAK_PASSWORD_HASH_FOR_TESTS": "true"}),
        )
        try:
            base = None
            for line in proc.stdout:
                if line.startswith("Vultrino listening on "):
                    base = line.split("Vultrino listening on ", 1)[1].strip()
                    break
            if not base:
                print("error: vultrino serve exited before listening", file=sys.stderr)
                return 1
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return fuzz(base, ADMIN_PASSWORD)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", help="a running backend's URL (default: start vultrino serve)")
    p.add_argument("--password", help="its admin password (user admin)")
    a = p.parse_args()
    if a.base:
        if not a.password:
            p.error("--base needs --password")
        return fuzz(a.base, a.password)
    return local()


if __name__ == "__main__":
    sys.exit(main())
