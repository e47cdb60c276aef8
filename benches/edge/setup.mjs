// What the edge benchmarks (cpu.mjs, profile.mjs) share: the deployable worker under Miniflare
// as the tests run it (backend-cloudflare/test/harness.mjs), a loopback upstream answering a
// small JSON reply, an admin login, one `api_key` credential `up` and one executor key, and the
// three routes they time. N (default 500) and BUILD (a folder under backend-cloudflare, or an
// absolute path) come from the environment; CHUNKED=1 makes the upstream reply without a
// Content-Length (decision 0118).
import { spawnSync } from "node:child_process";
import http from "node:http";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const cf = path.join(root, "backend-cloudflare");
export const { Miniflare } = await import(pathToFileURL(path.join(cf, "node_modules/miniflare/dist/src/index.js")));
const { workerOptions } = await import(pathToFileURL(path.join(cf, "test/harness.mjs")));

export const N = Number(process.env.N || 500);
export const BUILD = path.resolve(cf, process.env.BUILD || "build");
const PASSWORD = "correct horse battery staple";
const SECRET = "sk-edge-cpu-Qx81";

// A loopback upstream: a small JSON reply, keep-alive.
export const upstream = http.createServer((req, res) => {
  req.resume();
  req.on("end", () => {
    // CHUNKED=1: no Content-Length (the reply is then read through a stream reader).
    const body = '{"ok":true,"items":[1,2,3]}';
    res.writeHead(200, {
      "content-type": "application/json",
      ...(process.env.CHUNKED ? {} : { "content-length": Buffer.byteLength(body) }),
    });
    res.end(body);
  });
});
await new Promise((r) => upstream.listen(0, "127.0.0.1", r));
const upBase = `http://127.0.0.1:${upstream.address().port}`;

const hash = spawnSync(
  path.join(root, "target/debug/vultrino"),
  ["hash-password", "--iterations", "1000", "--allow-weak-password-hash-for-tests"],
  { input: PASSWORD + "\n", encoding: "utf8" },
).stdout.trim();
if (!hash.startsWith("$")) throw new Error("build target/debug/vultrino first (cargo build -p vultrino-local)");

/// Miniflare's options for the worker built in `dir` (its bindings: a fixed master key, the
/// test password's hash, loopback upstreams allowed).
export function benchOptions(dir) {
  const options = workerOptions("build", {
    VULTRINO_MASTER_KEY: "00".repeat(32).replace(/^00/, "11"),
    ADMIN_PASSWORD_HASH: hash,
    ALLOW_WEAK_PASSWORD_HASH_FOR_TESTS: "true",
    ALLOW_LOOPBACK_UPSTREAMS: "true",
    LOGIN_MAX_ATTEMPTS: "1000",
  });
  options.workers[0].scriptPath = path.join(dir, "index.js");
  options.workers[0].modulesRoot = dir;
  return options;
}

/// `options` with the Durable Object classes hosted by a second worker ("objects", the same
/// build) that the entry worker's SESSIONS and AUDIT bindings point at: the worker and its
/// objects then run in isolates of their own, as on Cloudflare, where an object's work is an
/// invocation billed and limited apart from the Worker's (cpu.mjs, profile.mjs with SPLIT=1).
export function splitObjects(options) {
  const entry = options.workers[0];
  options.workers.push({
    ...entry,
    name: "objects",
    durableObjects: {
      SESSIONS: { className: "SessionDO", useSQLite: true },
      AUDIT: { className: "AuditDO", useSQLite: true },
    },
  });
  entry.durableObjects = {
    SESSIONS: { className: "SessionDO", scriptName: "objects", useSQLite: true },
    AUDIT: { className: "AuditDO", scriptName: "objects", useSQLite: true },
  };
  return options;
}

/// Start Miniflare with `options`, log in, make the credential and the key: `{ mf, base, call,
/// routes }`, `routes` the three timed requests by name.
export async function startBench(options) {
  const mf = new Miniflare(options);
  const base = (await mf.ready).origin;
  async function call(method, p, token, body) {
    const r = await fetch(base + p, {
      method,
      headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    return { status: r.status, body: text ? JSON.parse(text) : null };
  }
  const login = await call("POST", "/login", null, { username: "admin", password: PASSWORD });
  if (login.status !== 200) throw new Error(`login: ${login.status} ${JSON.stringify(login.body)}`);
  const admin = login.body.token;
  let r = await call("POST", "/v1/credentials", admin, {
    alias: "up", type: "api_key", data: { key: SECRET },
    policy: { allowed_hosts: ["127.0.0.1"] }, base_url: upBase,
  });
  if (r.status !== 201) throw new Error(`credential: ${r.status} ${JSON.stringify(r.body)}`);
  r = await call("POST", "/v1/keys", admin, { name: "agent", role: "executor" });
  if (r.status !== 201) throw new Error(`key: ${r.status}`);
  const key = r.body.key;
  const routes = {
    "GET /healthz": async () => {
      const res = await fetch(base + "/healthz");
      await res.arrayBuffer();
      return res.status;
    },
    "POST /v1/execute": async () => {
      const res = await call("POST", "/v1/execute", key, {
        credential: "up", method: "GET", url: `${upBase}/items`,
      });
      return res.status;
    },
    "GET /proxy/up/items": async () => {
      const res = await fetch(`${base}/proxy/up/items`, { headers: { "x-api-key": key } });
      await res.arrayBuffer();
      return res.status;
    },
  };
  return { mf, base, call, routes };
}
