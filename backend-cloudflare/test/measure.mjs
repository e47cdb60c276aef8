// Measurements recorded in benches/README.md ("Workers"); not a test. Runs the deployable build
// in workerd (Miniflare) and times, per request, from the client (wall time on an idle machine
// ≈ the worker's CPU time, since nothing in these requests waits on the network):
//   - the first request of an isolate with a raw master key and with a passphrase (PBKDF2 at
//     the core's default cost, run ONCE per isolate),
//   - login with the admin hash at a given PBKDF2 cost (argument list, default 1000 10000 100000;
//     costs below the production floor of 100000 are measured with the test-only switch
//     ALLOW_WEAK_PASSWORD_HASH_FOR_TESTS, for comparison only).
// Usage: node test/measure.mjs [iterations...]   (needs target/debug/vultrino for hash-password)
// MEASURE_BUILD=<dir> measures another build of the worker than `build` (e.g. one made with
// another profile, to compare).
import { Miniflare } from "miniflare";
import { execFileSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { workerOptions } from "./harness.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const vultrino = path.join(root, "../target/debug/vultrino");
const PASSWORD = "measure-admin-password";
const BUILD = process.env.MEASURE_BUILD || "build";

function hash(iterations) {
  return execFileSync(vultrino, ["hash-password", "--iterations", String(iterations), "--allow-weak-password-hash-for-tests"], {
    input: PASSWORD + "\n",
  })
    .toString()
    .trim();
}

async function timed(mf, url, init) {
  const t = performance.now();
  const r = await mf.dispatchFetch(url, init);
  await r.arrayBuffer();
  return { ms: performance.now() - t, status: r.status };
}

const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function coldStart(master, label) {
  const mf = new Miniflare(
    workerOptions(BUILD, { VULTRINO_MASTER_KEY: master, ADMIN_PASSWORD_HASH: hash(1000), ALLOW_WEAK_PASSWORD_HASH_FOR_TESTS: "true" }),
  );
  await mf.ready;
  const first = await timed(mf, "http://w/healthz");
  const second = await timed(mf, "http://w/healthz");
  console.log(`${label}: first request ${first.ms.toFixed(0)} ms (status ${first.status}), next ${second.ms.toFixed(1)} ms`);
  await mf.dispose();
}

async function login(iterations) {
  const mf = new Miniflare(
    workerOptions(BUILD, {
      VULTRINO_MASTER_KEY: "ab".repeat(32),
      ADMIN_PASSWORD_HASH: hash(iterations),
      LOGIN_MAX_ATTEMPTS: "1000",
      LOGIN_MAX_ATTEMPTS_PER_USER: "1000",
      ALLOW_WEAK_PASSWORD_HASH_FOR_TESTS: "true",
    }),
  );
  await mf.ready;
  await timed(mf, "http://w/healthz");
  const body = JSON.stringify({ username: "admin", password: PASSWORD });
  const times = [];
  for (let i = 0; i < 7; i++) {
    const r = await timed(mf, "http://w/login", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body,
    });
    if (r.status !== 200) throw new Error(`login answered ${r.status}`);
    times.push(r.ms);
  }
  console.log(`login, PBKDF2 ${iterations} iterations: median ${median(times).toFixed(1)} ms (of 7)`);
  await mf.dispose();
}

const its = process.argv.slice(2).map(Number);
await coldStart("ab".repeat(32), "raw 32-byte master key");
await coldStart("a long passphrase, not a raw key", "passphrase master key (PBKDF2 600000, once per isolate)");
for (const n of its.length ? its : [1000, 10000, 100000]) await login(n);
