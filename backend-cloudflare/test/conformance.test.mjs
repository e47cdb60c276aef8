// The core's KvStore and SessionStore conformance suites (vultrino_core::testkit), run INSIDE
// workerd against WorkersKv (a real KV binding) and the SessionDO-backed store (real Durable
// Objects). The suites are compiled into the test worker (`test-build/`, cargo feature
// `testkit`) behind POST /__testkit/{kv,sessions}; the deployable build has no such route.
import { test, before, after } from "node:test";
import http from "node:http";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Miniflare } from "miniflare";
import { workerOptions } from "./harness.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const BUILD = "test-build";
let mf;
let upstream;
let upstreamUrl;

// A loopback upstream with the answers the Fetcher contract talks about.
function startUpstream() {
  const server = http.createServer((req, res) => {
    if (req.url === "/redirect") {
      res.writeHead(302, { location: "http://127.0.0.1:1/elsewhere" });
      res.end();
    } else if (req.url === "/slow") {
      setTimeout(() => res.end("late"), 5000).unref();
    } else if (req.url === "/big") {
      res.writeHead(200, { "content-type": "application/octet-stream" });
      res.end(Buffer.alloc(64 * 1024, 1));
    } else if (req.url === "/big-chunked") {
      // No Content-Length: the cap must hold while streaming.
      res.writeHead(200, { "content-type": "application/octet-stream" });
      for (let i = 0; i < 16; i++) res.write(Buffer.alloc(4096, 2));
      res.end();
    } else {
      res.end("hello");
    }
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

async function fetchCase(path, { timeout_ms = 2000, max_response_bytes = 1 << 20 } = {}) {
  const r = await mf.dispatchFetch("http://worker/__testkit/fetch", {
    method: "POST",
    body: JSON.stringify({ url: upstreamUrl + path, timeout_ms, max_response_bytes }),
  });
  const text = await r.text();
  assert.equal(r.status, 200, text);
  return JSON.parse(text);
}

before(async () => {
  upstream = await startUpstream();
  upstreamUrl = `http://127.0.0.1:${upstream.address().port}`;
  assert.ok(
    fs.existsSync(path.join(root, BUILD, "index.js")),
    "build the test worker first: worker-build --release --out-dir test-build --features testkit",
  );
  mf = new Miniflare(
    workerOptions(BUILD, {
      VULTRINO_MASTER_KEY: "00".repeat(32),
      ADMIN_PASSWORD_HASH: "$unused",
    }),
  );
  await mf.ready;
});

after(async () => {
  await mf?.dispose();
  upstream?.close();
  upstream?.closeAllConnections?.();
});

async function suite(name) {
  const r = await mf.dispatchFetch(`http://worker/__testkit/${name}`, { method: "POST" });
  const text = await r.text();
  assert.equal(r.status, 200, text);
  return JSON.parse(text);
}

test("KvStore conformance suite passes against WorkersKv in workerd", async () => {
  const out = await suite("kv");
  assert.deepEqual(out, { ok: true }, out.error);
});

test("SessionStore conformance suite passes against the SessionDO store in workerd", async () => {
  const out = await suite("sessions");
  assert.deepEqual(out, { ok: true }, out.error);
});

test("WorkersFetcher returns a redirect as it is, Location included", async () => {
  assert.deepEqual(await fetchCase("/redirect"), {
    status: 302,
    location: "http://127.0.0.1:1/elsewhere",
    body_len: 0,
  });
});

test("WorkersFetcher returns a body within the cap whole", async () => {
  assert.deepEqual(await fetchCase("/ok"), { status: 200, location: null, body_len: 5 });
});

test("WorkersFetcher past timeout_ms is upstream_timeout", async () => {
  const t = Date.now();
  const out = await fetchCase("/slow", { timeout_ms: 300 });
  assert.deepEqual(out, { error: { kind: "UpstreamTimeout", code: "upstream_timeout" } });
  assert.ok(Date.now() - t < 4000, "the timeout did not cut the request short");
});

test("WorkersFetcher over max_response_bytes is upstream_too_large (with and without Content-Length)", async () => {
  for (const path of ["/big", "/big-chunked"]) {
    const out = await fetchCase(path, { max_response_bytes: 1000 });
    assert.deepEqual(out, { error: { kind: "UpstreamFailed", code: "upstream_too_large" } }, path);
  }
});

test("WorkersFetcher connection failure is upstream_connect", async () => {
  const closed = http.createServer();
  await new Promise((r) => closed.listen(0, "127.0.0.1", r));
  const port = closed.address().port;
  await new Promise((r) => closed.close(r));
  const r = await mf.dispatchFetch("http://worker/__testkit/fetch", {
    method: "POST",
    body: JSON.stringify({ url: `http://127.0.0.1:${port}/`, timeout_ms: 2000, max_response_bytes: 1000 }),
  });
  assert.deepEqual(await r.json(), { error: { kind: "UpstreamFailed", code: "upstream_connect" } });
});

test("the deployable build has no testkit route", async () => {
  const deployable = new Miniflare(
    workerOptions("build", { VULTRINO_MASTER_KEY: "00".repeat(32), ADMIN_PASSWORD_HASH: "$x" }),
  );
  try {
    const r = await deployable.dispatchFetch("http://worker/__testkit/kv", { method: "POST" });
    const body = await r.json();
    assert.equal(r.status, 404);
    assert.equal(body.error.code !== undefined, true);
  } finally {
    await deployable.dispose();
  }
});
