// Runs the built worker in workerd through Miniflare (as a Node library) on 127.0.0.1:<random>
// and prints "Vultrino listening on <url>" — the line backend-local/tests/support reads, so the
// HTTP suite runs unchanged against the worker (VULTRINO_TEST_BACKEND=workerd).
//
// Environment:
//   WORKER_BUILD   build directory relative to backend-cloudflare/ (default "build": the
//                  deployable build; the conformance tests use "test-build", built with the
//                  `testkit` feature)
//   VULTRINO_MASTER_KEY / ENCRYPTION_KEY, ADMIN_PASSWORD_HASH, ADMIN_USER, CORS_ORIGINS,
//   LOGIN_MAX_ATTEMPTS, LOGIN_MAX_ATTEMPTS_PER_USER, KV_SETTLE_SECONDS, KEY_RECORD_REUSE_SECONDS, PROXY_MAX_CONCURRENT,
//   PROXY_MAX_CONCURRENT_PER_KEY, APPROVAL_TTL_SECS, STREAM_HEADERS_TIMEOUT_MS, STREAM_IDLE_TIMEOUT_MS,
//   STREAM_TOTAL_TIMEOUT_MS, FETCH_TIMEOUT_MS, MAX_RESPONSE_BYTES, ALLOW_LOOPBACK_UPSTREAMS, ACCESS_TEAM_DOMAIN, ACCESS_AUD,
//   ACCESS_MODE, ACCESS_CERTS_URL, APPROVAL_WEBHOOK, APPROVAL_WEBHOOK_FORMAT, PUBLIC_URL,
//   AUDIT_REQUIRED, ALLOW_WEAK_PASSWORD_HASH_FOR_TESTS   passed to the worker as bindings (those set)
//   HARNESS_KV_CONTROL=1   also serve raw access to the worker's KV namespace on 127.0.0.1, as
//                  someone holding a KV API token (and not the master key) has it, and print
//                  "KV control on <url>" before the listening line: GET /kv?key=K →
//                  {value, metadata} (404: absent), PUT /kv?key=K with {value, metadata} → 204,
//                  DELETE /kv?key=K → 204. For the tests of stored-record integrity only.
//   HARNESS_CANCEL_CONTROL=1   also run a second worker, "canceller", that calls the worker
//                  through a service binding and cancels that call after a delay, as Cloudflare's
//                  edge cancels a request whose client disconnected (workerd's own HTTP server
//                  does not notice a client that leaves before the reply's head: decision 0065);
//                  served on 127.0.0.1, printed as "Cancel control on <url>" before the listening
//                  line: POST /cancel with {method, path, headers, body, after_ms, stall} →
//                  {cancelled: true} or {cancelled: false, status} (`stall`: the body is sent,
//                  then kept open, never ended). For those tests only.
//   HARNESS_AUDIT_RECORDER=1   bind AUDIT_ANALYTICS (the audit's Analytics Engine dataset) to a
//                  recording stand-in: Miniflare's own Analytics Engine binding drops every data
//                  point, so this one prints each as a line "vultrino_test_data_point <json>"
//                  ({indexes, blobs, doubles}, as the worker wrote it) on the harness's output,
//                  beside the worker's own `{"vultrino_audit": …}` log lines. For the audit sink
//                  tests only.
//   HARNESS_PERSIST_DIR   when set, KV and Durable Objects are kept in this folder (made if
//                         missing), so that a harness started again on it finds them — a
//                         deployment whose settings changed
//
// Otherwise no persistence: KV and Durable Objects live in memory and die with the process.
// Stops on SIGTERM/SIGINT or when stdin closes (the test that spawned it went away).
//
// Miniflare keeps a scratch folder per instance (miniflare-<hex> in the temp dir) and removes it
// only in the background when disposed: a process that exits right after dispose() leaves it
// behind. So the harness gives Miniflare a temp dir of its own (TMPDIR for this process and
// workerd) and removes it, synchronously, on the way out. Killed with SIGKILL it cannot: that
// folder stays in the parent temp dir (scripts/test.sh runs everything with a per-run TMPDIR it
// removes at the end).
import { Miniflare } from "miniflare";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..");

export const SETTINGS = [
  "VULTRINO_MASTER_KEY",
  "ENCRYPTION_KEY",
  "ADMIN_PASSWORD_HASH",
  "ADMIN_USER",
  "CORS_ORIGINS",
  "LOGIN_MAX_ATTEMPTS",
  "LOGIN_MAX_ATTEMPTS_PER_USER",
  "KV_SETTLE_SECONDS",
  "KEY_RECORD_REUSE_SECONDS",
  "PROXY_MAX_CONCURRENT",
  "PROXY_MAX_CONCURRENT_PER_KEY",
  "APPROVAL_TTL_SECS",
  "STREAM_HEADERS_TIMEOUT_MS",
  "STREAM_IDLE_TIMEOUT_MS",
  "STREAM_TOTAL_TIMEOUT_MS",
  "FETCH_TIMEOUT_MS",
  "MAX_RESPONSE_BYTES",
  "ALLOW_LOOPBACK_UPSTREAMS",
  "ALLOW_WEAK_PASSWORD_HASH_FOR_TESTS",
  "ACCESS_TEAM_DOMAIN",
  "ACCESS_AUD",
  "ACCESS_MODE",
  "ACCESS_CERTS_URL",
  "APPROVAL_WEBHOOK",
  "APPROVAL_WEBHOOK_FORMAT",
  "PUBLIC_URL",
  "AUDIT_REQUIRED",
];

/**
 * The compatibility date and flags of wrangler.toml, the ones `wrangler dev` and a deployment
 * run with — `global_fetch_strictly_public` included: in workerd on this machine (as under
 * `wrangler dev --local`) it does not stop a fetch to a loopback address; there the core's address
 * check is the only guard, which refuses loopback upstreams unless ALLOW_LOOPBACK_UPSTREAMS is
 * set (tests/http/ssrf.rs checks both; on Cloudflare the flag refuses them as well).
 */
export function wranglerCompatibility(file = path.join(root, "wrangler.toml")) {
  const text = fs.readFileSync(file, "utf8");
  const date = /^compatibility_date\s*=\s*"([^"]+)"/m.exec(text);
  const flags = /^compatibility_flags\s*=\s*\[([^\]]*)\]/m.exec(text);
  if (!date || !flags) throw new Error(`${file}: no compatibility_date or compatibility_flags`);
  return {
    compatibilityDate: date[1],
    compatibilityFlags: [...flags[1].matchAll(/"([^"]+)"/g)].map((m) => m[1]),
  };
}

/** Miniflare options for the worker in `buildDir` with `bindings`. */
export function workerOptions(buildDir, bindings) {
  const { compatibilityDate, compatibilityFlags } = wranglerCompatibility();
  return {
    host: "127.0.0.1",
    port: 0,
    cf: false, // no download of the cf object
    kvPersist: false,
    durableObjectsPersist: false,
    workers: [
      {
        name: "vultrino",
        // As in wrangler.toml (see wranglerCompatibility above).
        compatibilityDate,
        compatibilityFlags,
        modules: true,
        scriptPath: path.join(root, buildDir, "index.js"),
        modulesRules: [{ type: "CompiledWasm", include: ["**/*.wasm"], fallthrough: true }],
        kvNamespaces: ["CREDENTIALS"],
        durableObjects: {
          SESSIONS: { className: "SessionDO", useSQLite: true },
          AUDIT: { className: "AuditDO", useSQLite: true },
        },
        bindings,
      },
    ],
  };
}

/** Bindings from this process's environment (only the settings that are set). */
export function bindingsFromEnv(env = process.env) {
  const out = {};
  for (const name of SETTINGS) {
    if (env[name] !== undefined) out[name] = env[name];
  }
  return out;
}

/** A fresh temp dir that becomes this process's TMPDIR and is removed when it exits. */
function ownTmpDir() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vultrino-harness-"));
  process.env.TMPDIR = dir; // os.tmpdir() reads it on each call; workerd inherits it
  process.on("exit", () => {
    try {
      fs.rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 });
    } catch (e) {
      console.error(`harness: could not remove ${dir}: ${e.message}`);
    }
  });
  return dir;
}

/** Raw access to the KV namespace CREDENTIALS (see HARNESS_KV_CONTROL above); returns its URL. */
async function kvControl(mf) {
  const kv = await mf.getKVNamespace("CREDENTIALS");
  const server = http.createServer(async (req, res) => {
    try {
      const url = new URL(req.url, "http://control");
      const key = url.searchParams.get("key");
      if (url.pathname !== "/kv" || !key) return res.writeHead(404).end();
      if (req.method === "GET") {
        const { value, metadata } = await kv.getWithMetadata(key, "text");
        if (value === null) return res.writeHead(404).end();
        res.writeHead(200, { "content-type": "application/json" });
        return res.end(JSON.stringify({ value, metadata: metadata ?? null }));
      }
      if (req.method === "PUT") {
        let body = "";
        for await (const chunk of req) body += chunk;
        const { value, metadata } = JSON.parse(body);
        await kv.put(key, value, metadata == null ? {} : { metadata });
        return res.writeHead(204).end();
      }
      if (req.method === "DELETE") {
        await kv.delete(key);
        return res.writeHead(204).end();
      }
      res.writeHead(405).end();
    } catch (e) {
      res.writeHead(500).end(String(e?.message || e));
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return `http://127.0.0.1:${server.address().port}`;
}

/** The worker behind HARNESS_CANCEL_CONTROL: its call to Vultrino is aborted after `after_ms`. */
const CANCELLER = `
export default {
  async fetch(request, env) {
    const spec = await request.json();
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), spec.after_ms);
    try {
      // With "stall": the body's bytes, then the body stays open (a client that stops
      // sending before its body ends).
      const body = spec.stall
        ? new ReadableStream({ start(c) { c.enqueue(new TextEncoder().encode(spec.body)); } })
        : spec.body ?? null;
      const r = await env.VULTRINO.fetch("http://127.0.0.1" + spec.path, {
        method: spec.method, headers: spec.headers, body, signal: ctl.signal,
      });
      await r.arrayBuffer();
      clearTimeout(timer);
      return Response.json({ cancelled: false, status: r.status });
    } catch (e) {
      return Response.json({ cancelled: ctl.signal.aborted, error: String(e) });
    }
  },
};
`;

/** The stand-in Analytics Engine dataset behind HARNESS_AUDIT_RECORDER (a wrapped binding). */
const AUDIT_RECORDER = `
export default function () {
  return {
    writeDataPoint(point) {
      console.log("vultrino_test_data_point " + JSON.stringify(point ?? null));
    },
  };
}
`;

/** The canceller's control server (see HARNESS_CANCEL_CONTROL above); returns its URL. */
async function cancelControl(mf) {
  const canceller = await mf.getWorker("canceller");
  const server = http.createServer(async (req, res) => {
    try {
      if (req.method !== "POST" || req.url !== "/cancel") return res.writeHead(404).end();
      let body = "";
      for await (const chunk of req) body += chunk;
      const r = await canceller.fetch("http://canceller/", { method: "POST", body });
      res.writeHead(200, { "content-type": "application/json" });
      res.end(await r.text());
    } catch (e) {
      res.writeHead(500).end(String(e?.message || e));
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return `http://127.0.0.1:${server.address().port}`;
}

async function main() {
  const buildDir = process.env.WORKER_BUILD || "build";
  ownTmpDir();
  const options = workerOptions(buildDir, bindingsFromEnv());
  const persist = process.env.HARNESS_PERSIST_DIR;
  if (persist) {
    fs.mkdirSync(persist, { recursive: true });
    options.kvPersist = path.join(persist, "kv");
    options.durableObjectsPersist = path.join(persist, "do");
  }
  const cancelling = process.env.HARNESS_CANCEL_CONTROL === "1";
  if (cancelling) {
    options.workers.push({
      name: "canceller",
      compatibilityDate: "2026-04-01",
      modules: true,
      script: CANCELLER,
      serviceBindings: { VULTRINO: "vultrino" },
    });
  }
  if (process.env.HARNESS_AUDIT_RECORDER === "1") {
    // A wrapped binding runs with the compatibility date of the worker that has it.
    options.workers.push({
      name: "audit-recorder",
      modules: true,
      script: AUDIT_RECORDER,
    });
    options.workers[0].wrappedBindings = { AUDIT_ANALYTICS: { scriptName: "audit-recorder" } };
  }
  const mf = new Miniflare(options);
  const url = await mf.ready;
  if (cancelling) {
    process.stdout.write(`Cancel control on ${await cancelControl(mf)}\n`);
  }
  if (process.env.HARNESS_KV_CONTROL === "1") {
    process.stdout.write(`KV control on ${await kvControl(mf)}\n`);
  }
  process.stdout.write(`Vultrino listening on ${url.origin}\n`);
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    try {
      await mf.dispose();
    } finally {
      process.exit(0);
    }
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  process.stdin.on("end", stop);
  process.stdin.on("close", stop);
  process.stdin.resume();
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((e) => {
    console.error(`harness: ${e?.stack || e}`);
    process.exit(1);
  });
}
