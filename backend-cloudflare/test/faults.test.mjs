// The fault property (issue 17, decisions 0107 and 0116) INSIDE workerd: the same steps, model
// and checks as backend-local/tests/faults.rs (vultrino_core::testkit::fault_property), run by
// the test worker (`test-build/`, cargo feature `testkit`, route POST /__testkit/faults) over the
// worker's own adapters — WorkersKv on a real KV binding, DoSessions on real SessionDO Durable
// Objects — wrapped in the core's fault wrappers (errors, delays, hangs, stale reads, lost
// replies, clock jumps), with the property's recording upstream and virtual clock.
//
// Each case is one request: the worker empties its KV namespace, draws `FAULTS_STEPS` steps from
// the case's seed and runs them, then heals and checks everything acknowledged is there. Half the
// cases (the odd ones) send their upstream requests through WorkersFetcher (the runtime's fetch)
// to a loopback server here that answers 200 {"ok":true}; the others use the property's
// in-process upstream, as natively. Cases 2 and 3 of every four run with key-record reuse on
// (`key_record_reuse_secs` 60, what KEY_RECORD_REUSE_SECONDS=60 sets: decision 0117), so four
// cases cover every pairing of upstream and reuse.
//
// Environment:
//   FAULTS_SEED    the first case's seed (a u64); later cases use seed+1, seed+2, … Default: random.
//   FAULTS_CASES   how many cases (default 8)
//   FAULTS_STEPS   steps per case (default 40)
//   FAULTS_UPSTREAM  "alternate" (default: odd cases through WorkersFetcher), "workers-fetch" (all),
//                  "in-process" (none)
//   FAULTS_REUSE   "alternate" (default: cases 2 and 3 of every four), "on" (all), "off" (none)
// A failure names the settings that replay it (FAULTS_SEED=<seed> FAULTS_CASES=1 …) and every step.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Miniflare } from "miniflare";
import { workerOptions } from "./harness.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const BUILD = "test-build";
const MASK = (1n << 64n) - 1n;
const firstSeed = BigInt(process.env.FAULTS_SEED ?? crypto.randomBytes(8).readBigUInt64BE()) & MASK;
const cases = Number(process.env.FAULTS_CASES ?? 8);
const steps = Number(process.env.FAULTS_STEPS ?? 40);
const upstreamMode = process.env.FAULTS_UPSTREAM ?? "alternate";
const reuseMode = process.env.FAULTS_REUSE ?? "alternate";
const REUSE_SECS = 60;
let mf;
let upstream;
let upstreamUrl;

before(async () => {
  upstream = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      res.writeHead(200, { "content-type": "application/json", "content-length": 11 });
      res.end('{"ok":true}');
    });
  });
  // Idle connections stay open (until `after`): workerd's client pools them, and a server that
  // closes one after Node's default 5 s keep-alive timeout races the next request written to
  // it — a 502 `upstream_connect` that is this upstream's doing (seen: seed
  // 3421984482789659215, the heal's execute; see decision 0116).
  upstream.keepAliveTimeout = 0;
  await new Promise((r) => upstream.listen(0, "127.0.0.1", r));
  upstreamUrl = `http://127.0.0.1:${upstream.address().port}`;
  assert.ok(
    fs.existsSync(path.join(root, BUILD, "index.js")),
    "build the test worker first: scripts/worker.sh build --test",
  );
  mf = new Miniflare(
    workerOptions(BUILD, {
      VULTRINO_MASTER_KEY: "00".repeat(32),
      // Well-formed, never checked: the property's app has its own password and master key.
      ADMIN_PASSWORD_HASH: "$pbkdf2-sha256$i=100000,l=32$c2FsdHNhbHRzYWx0c2FsdA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    }),
  );
  await mf.ready;
});

after(async () => {
  await mf?.dispose();
  upstream?.close();
  upstream?.closeAllConnections?.();
});

test(`the fault property holds over WorkersKv, the SessionDO store and WorkersFetcher in workerd (${cases} cases × ${steps} steps, first seed ${firstSeed})`, async () => {
  assert.ok(cases >= 1 && steps >= 1, "FAULTS_CASES and FAULTS_STEPS are at least 1");
  assert.ok(["alternate", "workers-fetch", "in-process"].includes(upstreamMode), `FAULTS_UPSTREAM=${upstreamMode}`);
  assert.ok(["alternate", "on", "off"].includes(reuseMode), `FAULTS_REUSE=${reuseMode}`);
  let passed = 0;
  let reused = 0;
  let fetched = 0;
  let ms = 0;
  upstream.on("request", () => (fetched += 1));
  for (let i = 0n; i < BigInt(cases); i++) {
    const seed = ((firstSeed + i) & MASK).toString();
    const viaFetch = upstreamMode === "workers-fetch" || (upstreamMode === "alternate" && i % 2n === 1n);
    const through = viaFetch ? { upstream: upstreamUrl } : {};
    const reuse = reuseMode === "on" || (reuseMode === "alternate" && i % 4n >= 2n);
    const replay =
      `seed ${seed} (replay: FAULTS_SEED=${seed} FAULTS_CASES=1 FAULTS_STEPS=${steps}` +
      ` FAULTS_UPSTREAM=${viaFetch ? "workers-fetch" : "in-process"} FAULTS_REUSE=${reuse ? "on" : "off"})`;
    const r = await mf.dispatchFetch("http://worker/__testkit/faults", {
      method: "POST",
      body: JSON.stringify({ seed, steps, ...through, key_record_reuse_secs: reuse ? REUSE_SECS : 0 }),
    });
    const text = await r.text();
    assert.equal(r.status, 200, `${replay}: ${text}`);
    const out = JSON.parse(text);
    assert.equal(out.ok, true, `${replay}:\n${out.error}`);
    assert.equal(out.steps, steps, "every step ran");
    passed += 1;
    reused += reuse ? 1 : 0;
    ms += out.ms;
  }
  assert.equal(passed, cases);
  if (upstreamMode === "workers-fetch" || (upstreamMode === "alternate" && cases >= 2)) {
    // every case ends with a heal that executes through each credential it finds (and a case
    // without one still executes with faults on): the odd cases reached the loopback upstream
    assert.ok(fetched > 0, "requests went through WorkersFetcher to the loopback upstream");
  }
  console.log(
    `fault property in workerd: ${cases} cases × ${steps} steps in ${ms} ms (${reused} with key-record reuse), ${fetched} upstream requests through WorkersFetcher (first seed ${firstSeed})`,
  );
});

test("the fault route refuses a malformed case with a 400", async () => {
  for (const body of ["{}", '{"seed": 17, "steps": 3}', '{"seed": "x", "steps": 3}', '{"seed": "1", "steps": 3, "key_record_reuse_secs": -1}']) {
    const r = await mf.dispatchFetch("http://worker/__testkit/faults", { method: "POST", body });
    assert.equal(r.status, 400, body);
  }
});
