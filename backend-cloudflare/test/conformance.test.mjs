// The core's KvStore, SessionStore, AuditStore and Fetcher conformance suites
// (vultrino_core::testkit), run INSIDE workerd against WorkersKv (a real KV binding), the
// SessionDO- and AuditDO-backed stores (real Durable
// Objects) and WorkersFetcher (the runtime's fetch, against a node upstream on 127.0.0.1). The
// suites are compiled into the test worker (`test-build/`, cargo feature `testkit`) behind
// /__testkit/{kv,sessions,audit,audit-checks,rs256,fetch-suite}; the deployable build has no such route. The
// Rs256Verifier suite runs WebCryptoVerifier (crypto.subtle) on the core's fixed test vectors.
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
let refusedUrl;

// The upstream of the core's Fetcher conformance suite: exactly the route table documented in
// vultrino-core/src/testkit/fetcher.rs (the local backend's twin is
// backend-local/tests/support/fetch_upstream.rs). Replies that never finish stay open until
// `after` closes every connection.
function startUpstream() {
  const landings = new Map();
  const text = (res, status, body, headers = {}) => {
    const buf = Buffer.from(body);
    res.writeHead(status, { ...headers, "content-length": buf.length });
    res.end(buf);
  };
  const server = http.createServer(async (req, res) => {
    const chunks = [];
    try {
      for await (const c of req) chunks.push(c);
    } catch {
      // The client aborted its upload (fetch_stream_aborts_the_upload_on_a_body_error): the
      // request is not whole, so it gets no answer.
      return;
    }
    const body = Buffer.concat(chunks);
    const url = new URL(req.url, "http://upstream");
    const path = url.pathname;
    const q = url.searchParams;
    const n = Number(q.get("n") ?? 0);
    const hang = q.get("hang") === "1";
    let m;
    if ((m = path.match(/^\/redirect\/(.+)$/))) {
      res.writeHead(Number(q.get("status")), { location: `/landing/${m[1]}`, "content-length": 0 });
      res.end();
    } else if ((m = path.match(/^\/landing\/(.+)$/))) {
      landings.set(m[1], (landings.get(m[1]) ?? 0) + 1);
      text(res, 200, "landed");
    } else if ((m = path.match(/^\/hits\/(.+)$/))) {
      text(res, 200, String(landings.get(m[1]) ?? 0));
    } else if (path === "/ok") {
      text(res, 200, "hello");
    } else if (path === "/slow") {
      setTimeout(() => text(res, 200, "late"), Number(q.get("ms"))).unref();
    } else if (path === "/big") {
      res.writeHead(200, { "content-length": n });
      if (req.method === "HEAD") res.end();
      else if (hang) res.write(Buffer.alloc(Math.min(n, 3), "x"));
      else res.end(Buffer.alloc(n, "x"));
    } else if (path === "/big-chunked") {
      res.writeHead(200); // no Content-Length: chunked
      for (let sent = 0; sent < n; sent += 1024) res.write(Buffer.alloc(Math.min(1024, n - sent), "x"));
      if (!hang) res.end();
    } else if (path === "/encoded") {
      const headers = { "content-encoding": q.get("ce") };
      if (q.get("chunked") !== "1") headers["content-length"] = body.length;
      res.writeHead(200, headers);
      res.end(body);
    } else if (path === "/echo") {
      const headers = [];
      for (let i = 0; i < req.rawHeaders.length; i += 2) {
        headers.push([req.rawHeaders[i].toLowerCase(), req.rawHeaders[i + 1]]);
      }
      const json = { method: req.method, target: req.url, headers, body_base64: body.toString("base64") };
      text(res, 200, JSON.stringify(json), { "content-type": "application/json" });
    } else if (path === "/multi-header") {
      res.writeHead(201, [
        ["Set-Cookie", "a=1"],
        ["X-Multi", "one"],
        ["Set-Cookie", "b=2"],
        ["X-Multi", "two"],
        ["Content-Length", "2"],
      ]);
      res.end("ok");
    } else if (path === "/empty-204") {
      res.writeHead(204);
      res.end();
    } else if (path === "/not-modified") {
      res.writeHead(304, { "content-length": "10000000", etag: '"v1"' });
      res.end();
    } else {
      text(res, 404, "no such route");
    }
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

/** `http://127.0.0.1:<port>` with nothing listening on it. */
async function closedPortUrl() {
  const closed = http.createServer();
  await new Promise((r) => closed.listen(0, "127.0.0.1", r));
  const { port } = closed.address();
  await new Promise((r) => closed.close(r));
  return `http://127.0.0.1:${port}`;
}

before(async () => {
  upstream = await startUpstream();
  upstreamUrl = `http://127.0.0.1:${upstream.address().port}`;
  assert.ok(
    fs.existsSync(path.join(root, BUILD, "index.js")),
    "build the test worker first: worker-build --profile worker --out-dir test-build --features testkit",
  );
  mf = new Miniflare(
    workerOptions(BUILD, {
      VULTRINO_MASTER_KEY: "00".repeat(32),
      // Well-formed at the iteration floor; never checked (no login here).
      ADMIN_PASSWORD_HASH: "$pbkdf2-sha256$i=100000,l=32$c2FsdHNhbHRzYWx0c2FsdA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    }),
  );
  await mf.ready;
  // Picked once Miniflare and workerd have bound their ports, so neither can be given it.
  refusedUrl = await closedPortUrl();
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

test("AuditStore conformance suite passes against the sharded AuditDO store in workerd", async () => {
  const out = await suite("audit");
  assert.deepEqual(out, { ok: true }, out.error);
});

// Decision 0121: shards written before it (table `events`) page as one with the new table,
// their old table is pruned and dropped once empty, and the prune runs every N-th append.
test("AuditDO: old-format shards stay readable, drain and drop; pruning every N-th append", async () => {
  const out = await suite("audit-checks");
  assert.deepEqual(out, { ok: true }, out.error);
});

test("Rs256Verifier conformance suite passes against WebCrypto in workerd", async () => {
  const out = await suite("rs256");
  assert.deepEqual(out, { ok: true }, out.error);
});

test("Fetcher conformance suite passes against WorkersFetcher in workerd", async (t) => {
  const list = await mf.dispatchFetch("http://worker/__testkit/fetch-suite");
  const { checks } = await list.json();
  assert.ok(checks.length >= 12, JSON.stringify(checks));
  // One subtest per check, so that a failure names its check and the others still run.
  for (const check of checks) {
    await t.test(check, async () => {
      const r = await mf.dispatchFetch("http://worker/__testkit/fetch-suite", {
        method: "POST",
        body: JSON.stringify({ base_url: upstreamUrl, refused_url: refusedUrl, check }),
      });
      const text = await r.text();
      assert.equal(r.status, 200, text);
      const out = JSON.parse(text);
      assert.deepEqual(out, { ok: true }, out.error);
    });
  }
});

test("fetch_stream conformance checks pass against WorkersFetcher in workerd", async (t) => {
  const list = await mf.dispatchFetch("http://worker/__testkit/fetch-stream-suite");
  const { checks } = await list.json();
  // Every check, the streaming-only ones (first chunk before the end, idle and total time) too.
  assert.ok(checks.length >= 8, JSON.stringify(checks));
  for (const check of checks) {
    await t.test(check, async () => {
      const r = await mf.dispatchFetch("http://worker/__testkit/fetch-stream-suite", {
        method: "POST",
        body: JSON.stringify({ base_url: upstreamUrl, refused_url: refusedUrl, check }),
      });
      const text = await r.text();
      assert.equal(r.status, 200, text);
      const out = JSON.parse(text);
      assert.deepEqual(out, { ok: true }, out.error);
    });
  }
});

test("the deployable build has no testkit route", async () => {
  const deployable = new Miniflare(
    workerOptions("build", {
      VULTRINO_MASTER_KEY: "00".repeat(32),
      ADMIN_PASSWORD_HASH: "$pbkdf2-sha256$i=100000,l=32$c2FsdHNhbHRzYWx0c2FsdA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    }),
  );
  try {
    for (const route of ["kv", "sessions", "audit", "audit-checks", "rs256", "fetch-suite", "fetch-stream-suite", "counts", "audit-down", "faults"]) {
      const r = await deployable.dispatchFetch(`http://worker/__testkit/${route}`, { method: "POST" });
      const body = await r.json();
      assert.equal(r.status, 404, route);
      assert.equal(body.error.code !== undefined, true);
    }
  } finally {
    await deployable.dispose();
  }
});
