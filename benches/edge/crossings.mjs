// Where the worker's time per warm request goes (issue 20, decision 0118): a copy of the
// deployable build whose JS glue wraps every import of the wasm instance (each JS function the
// wasm calls: Headers, Request/Response, strings, KV and Durable Object stubs, WebCrypto...) and
// every export (each call from JS into the wasm). Per route, for N warm requests one at a time:
// the calls of each import per request (exact) and the time spent in it and in the wasm's own
// code (performance.now(), which advances while code runs in workerd outside Cloudflare but moves
// in whole milliseconds here: only sums over many calls mean anything, and they are wall clock,
// the relative split is what matters).
//
//   scripts/worker.sh build && cargo build -p vultrino-local, then:
//   unshare -n bash -c 'ip link set lo up && node benches/edge/crossings.mjs'      [N=500 TOP=25]
//   BUILD=DIR another build folder; ROUTES=execute,proxy only those; CALLS=1 also by calls;
//   FULL=1 keeps each import's own name (its wasm-bindgen hash: `get` is several imports);
//   STACK=<import name prefix> counts the distinct call stacks (the wasm's function names, from
//   its name section) that reach that import (decision 0120).
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const cf = path.join(root, "backend-cloudflare");
const { Miniflare } = await import(pathToFileURL(path.join(cf, "node_modules/miniflare/dist/src/index.js")));
const { workerOptions } = await import(pathToFileURL(path.join(cf, "test/harness.mjs")));

const N = Number(process.env.N || 500);
const TOP = Number(process.env.TOP || 25);
const PASSWORD = "correct horse battery staple";
const SECRET = "sk-edge-cpu-Qx81";

const upstream = http.createServer((req, res) => {
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

// The copy: imports and exports wrapped. Time is exclusive: an import's time is not the wasm's,
// and a call back into the wasm from inside an import (a closure the import runs) is the wasm's.
const copy = fs.mkdtempSync(path.join(os.tmpdir(), "edge-prof-"));
process.on("exit", () => fs.rmSync(copy, { recursive: true, force: true }));
fs.cpSync(process.env.BUILD || path.join(cf, "build"), copy, { recursive: true });
let glue = fs.readFileSync(path.join(copy, "index.js"), "utf8");
const instAt = /new WebAssembly\.Instance\((\w+),(\w+)\(\)\)/g;
const entryAt = /(\w+)\.prototype\.fetch=function\((\w+)\)\{return (\w+)\.call\(this,\2,this\.env,this\.ctx\)\}/;
if (!instAt.test(glue) || !entryAt.test(glue)) throw new Error("the worker's JS glue changed: update benches/edge/crossings.mjs");
glue = glue
  .replace(instAt, (_, m, imp) => `__edgeProfWrap(new WebAssembly.Instance(${m},__edgeProfImports(${imp}())))`)
  .replace(entryAt, (_, q, t, rt) =>
    `${q}.prototype.fetch=function(${t}){const p=new URL(${t}.url).pathname;if(p==="/__edge_prof")return new Response(JSON.stringify(globalThis.__edgeProf));if(p==="/__edge_prof_reset"){globalThis.__edgeProf={calls:{},ms:{},stacks:{}};return new Response("{}")}return ${rt}.call(this,${t},this.env,this.ctx)}`);
glue = `globalThis.__edgeProf={calls:{},ms:{}};
const __edgeStack=[];
function __edgeEnter(name){const now=performance.now();const top=__edgeStack[__edgeStack.length-1];
if(top){const P=globalThis.__edgeProf;P.ms[top[0]]=(P.ms[top[0]]||0)+(now-top[1])}
__edgeStack.push([name,now]);const P=globalThis.__edgeProf;P.calls[name]=(P.calls[name]||0)+1}
function __edgeLeave(){const now=performance.now();const top=__edgeStack.pop();const P=globalThis.__edgeProf;
P.ms[top[0]]=(P.ms[top[0]]||0)+(now-top[1]);const up=__edgeStack[__edgeStack.length-1];if(up)up[1]=now}
function __edgeProfImports(imports){for(const mod of Object.values(imports)){for(const k of Object.keys(mod)){const f=mod[k];
if(typeof f!=="function")continue;const name="import "+(${process.env.FULL ? "true" : "false"}?k:k.replace(/_[0-9a-f]{16}$/,""));
const stack=${JSON.stringify(process.env.STACK || "")}&&k.startsWith(${JSON.stringify(process.env.STACK || "")});
mod[k]=function(...a){if(stack){const P=globalThis.__edgeProf;P.stacks=P.stacks||{};const s=new Error().stack.split("\\n").slice(2,9).map((l)=>l.trim().replace(/^at /,"").replace(/ \\(.*$/,"")).join(" < ");P.stacks[s]=(P.stacks[s]||0)+1}
__edgeEnter(name);try{return f.apply(this,a)}finally{__edgeLeave()}}}}return imports}
function __edgeProfWrap(inst){const ex=inst.exports;const out={};for(const k of Object.keys(ex)){const f=ex[k];
if(typeof f!=="function"){Object.defineProperty(out,k,{get:()=>ex[k],enumerable:true});continue}
const name="wasm "+k;out[k]=function(...a){__edgeEnter(name);try{return f.apply(this,a)}finally{__edgeLeave()}}}
return {exports:out}}
` + glue;
fs.writeFileSync(path.join(copy, "index.js"), glue);

const options = workerOptions("build", {
  VULTRINO_MASTER_KEY: "00".repeat(32).replace(/^00/, "11"),
  ADMIN_PASSWORD_HASH: hash,
  ALLOW_WEAK_PASSWORD_HASH_FOR_TESTS: "true",
  ALLOW_LOOPBACK_UPSTREAMS: "true",
  LOGIN_MAX_ATTEMPTS: "1000",
});
options.workers[0].scriptPath = path.join(copy, "index.js");
options.workers[0].modulesRoot = copy;
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
const admin = (await call("POST", "/login", null, { username: "admin", password: PASSWORD })).body.token;
let r = await call("POST", "/v1/credentials", admin, {
  alias: "up", type: "api_key", data: { key: SECRET },
  policy: { allowed_hosts: ["127.0.0.1"] }, base_url: upBase,
});
if (r.status !== 201) throw new Error(`credential: ${r.status} ${JSON.stringify(r.body)}`);
const key = (await call("POST", "/v1/keys", admin, { name: "agent", role: "executor" })).body.key;

const routes = {
  "GET /healthz": async () => (await (await fetch(base + "/healthz")).arrayBuffer(), 0),
  "POST /v1/execute": async () => {
    const res = await call("POST", "/v1/execute", key, { credential: "up", method: "GET", url: `${upBase}/items` });
    if (res.status !== 200) throw new Error(`execute: ${res.status}`);
  },
  "GET /proxy/up/items": async () => {
    const res = await fetch(`${base}/proxy/up/items`, { headers: { "x-api-key": key } });
    await res.arrayBuffer();
    if (res.status !== 200) throw new Error(`proxy: ${res.status}`);
  },
};
const only = process.env.ROUTES ? process.env.ROUTES.split(",") : null;
const out = {};
for (const [name, run] of Object.entries(routes)) {
  if (only && !only.some((o) => name.includes(o))) continue;
  for (let i = 0; i < 100; i++) await run();
  await fetch(base + "/__edge_prof_reset");
  for (let i = 0; i < N; i++) await run();
  const p = await (await fetch(base + "/__edge_prof")).json();
  const rows = Object.keys(p.calls).map((k) => ({ k, calls: p.calls[k] / N, ms: (p.ms[k] || 0) / N }));
  const total = rows.reduce((s, x) => s + x.ms, 0);
  const wasm = rows.filter((x) => x.k.startsWith("wasm ")).reduce((s, x) => s + x.ms, 0);
  const crossings = rows.reduce((s, x) => s + x.calls, 0);
  out[name] = { total, wasm, crossings };
  console.log(`\n${name}: ${total.toFixed(3)} ms/req in the isolate's code (wall clock), of which the wasm's own ${wasm.toFixed(3)}, imports ${(total - wasm).toFixed(3)}; ${crossings.toFixed(1)} crossings/req`);
  rows.sort((a, b) => b.ms - a.ms || b.calls - a.calls);
  for (const x of rows.slice(0, TOP)) console.log(`  ${x.ms.toFixed(4).padStart(8)} ms  ${x.calls.toFixed(2).padStart(7)} calls  ${x.k}`);
  for (const [s, c] of Object.entries(p.stacks || {}).sort((x, y) => y[1] - x[1])) console.log(`  ${(c / N).toFixed(2)} × ${s}`);
  if (process.env.CALLS) {
    rows.sort((a, b) => b.calls - a.calls);
    console.log("  by calls:");
    for (const x of rows.slice(0, TOP)) console.log(`  ${x.calls.toFixed(2).padStart(7)} calls  ${x.ms.toFixed(4).padStart(8)} ms  ${x.k}`);
  }
}
console.log(JSON.stringify(out));
await mf.dispose();
upstream.close();
