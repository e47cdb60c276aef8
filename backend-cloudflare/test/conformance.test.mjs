// The core's KvStore and SessionStore conformance suites (vultrino_core::testkit), run INSIDE
// workerd against WorkersKv (a real KV binding) and the SessionDO-backed store (real Durable
// Objects). The suites are compiled into the test worker (`test-build/`, cargo feature
// `testkit`) behind POST /__testkit/{kv,sessions}; the deployable build has no such route.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Miniflare } from "miniflare";
import { workerOptions } from "./harness.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const BUILD = "test-build";
let mf;

before(async () => {
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
