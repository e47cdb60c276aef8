// Which functions the worker's isolate spends its time in per warm request (issue 20, decision
// 0128): the V8 sampling profiler through workerd's inspector (Miniflare's `inspectorPort`, CDP
// `Profiler.start`/`stop`), self time summed by function name — the wasm's functions by their
// names (the deployable build keeps its name section), JS glue and the runtime's built-ins by
// theirs. Decision 0115 says why this is not the CPU figure: the samples are spaced by the wall
// clock, so on a shared machine the isolate is charged with time it spent descheduled (the
// "busy" total comes out several times `cpu.mjs`'s in-worker figure) and an attached inspector
// slows it. Read the SPLIT between functions, not the milliseconds; `cpu.mjs` gives the figure.
//
//   scripts/worker.sh build && cargo build -p vultrino-local, then:
//   unshare -n bash -c 'ip link set lo up && node benches/edge/profile.mjs'   [N=500 TOP=40]
//   ROUTE="GET /proxy/up/items" another route; BUILD=DIR another build folder;
//   INTERVAL=µs the sampling interval asked for (default 50; the machine decides what it gets);
//   SPLIT=1 hosts the Durable Objects in an isolate of their own (setup.mjs, splitObjects) and
//   profiles the worker's isolate only — what Cloudflare bills as the Worker's CPU.
import net from "node:net";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { BUILD, N, benchOptions, cf, splitObjects, startBench, upstream } from "./setup.mjs";

const options = benchOptions(BUILD);
// A port of its own, picked free, not the well-known 9229: the inspector has full control of
// the isolate, which holds the bench's master key (on 127.0.0.1 only; review of 0128, F4).
const inspectorPort = await new Promise((resolve, reject) => {
  const probe = net.createServer();
  probe.once("error", reject);
  probe.listen(0, "127.0.0.1", () => {
    const { port } = probe.address();
    probe.close(() => resolve(port));
  });
});
options.inspectorPort = inspectorPort;
const { mf, routes } = await startBench(process.env.SPLIT ? splitObjects(options) : options);

// ---- The V8 sampling profiler through workerd's inspector: self time by function --------------
const { default: WebSocket } = await import(pathToFileURL(path.join(cf, "node_modules/ws/index.js")));
const ROUTE = process.env.ROUTE || "POST /v1/execute";
for (let i = 0; i < 200; i++) await routes[ROUTE]();
const targets = await (await fetch(`http://127.0.0.1:${inspectorPort}/json`)).json();
// Miniflare's inspector lists a target per workerd worker (its entry worker, its KV and cache
// simulations...): the worker's own is `core:user:<name>`.
const target = targets.find((t) => /core:user:vultrino$/.test(t.title)) || targets.find((t) => /core:user:/.test(t.title));
if (!target) throw new Error(`no core:user: inspector target among ${JSON.stringify(targets.map((t) => t.title))}`);
const ws = new WebSocket(target.webSocketDebuggerUrl);
await new Promise((r) => ws.on("open", r));
let id = 0;
const pending = new Map();
ws.on("message", (m) => { const d = JSON.parse(m); if (d.id && pending.has(d.id)) { pending.get(d.id)(d); pending.delete(d.id); } });
const cdp = (method, params = {}) => new Promise((r) => { const i = ++id; pending.set(i, r); ws.send(JSON.stringify({ id: i, method, params })); });
await cdp("Profiler.enable");
await cdp("Profiler.setSamplingInterval", { interval: Number(process.env.INTERVAL || 50) });
// Warmed up above (200 requests) before the profiler starts.
await cdp("Profiler.start");
for (let i = 0; i < N; i++) await routes[ROUTE]();
const { result } = await cdp("Profiler.stop");
const p = result.profile;
const dt = (p.endTime - p.startTime) / p.samples.length; // µs per sample
// Self time by name; "(idle)" is the isolate waiting, left out of the total.
const self = new Map();
let total = 0;
for (const n of p.nodes) {
  const name = n.callFrame.functionName || `(anonymous ${n.callFrame.url.split("/").pop()})`;
  if (name === "(idle)") continue;
  self.set(name, (self.get(name) || 0) + n.hitCount);
  total += n.hitCount;
}
console.log(`${ROUTE}: ${p.samples.length} samples, ${dt.toFixed(0)} µs apart on average; not idle: ${(total * dt / 1000 / N).toFixed(3)} ms/req (wall clock, see the top of this file)`);
// A coarse split: the wasm's own functions (Rust names), wasm-bindgen's JS glue (its import
// shims, its minified helpers, the JS↔wasm trampolines), V8 itself, and the rest (the
// runtime's built-ins — fetch, Headers, Request, SQL, queueMicrotask... — and code V8 names no
// function for, such as worker-build's shim).
const kind = (name) =>
  /::|^</.test(name) ? "wasm (Rust)"
  : /^__wbg|^__wbindgen|^wasm-to-js|^js-to-wasm|^[A-Za-z_$]{1,2}$/.test(name) ? "wasm-bindgen glue"
  : /^\((program|garbage collector)\)$/.test(name) ? "V8 (program, gc)"
  : "built-ins and unnamed";
const kinds = new Map();
for (const [name, hits] of self) kinds.set(kind(name), (kinds.get(kind(name)) || 0) + hits);
console.log([...kinds.entries()].sort((a, b) => b[1] - a[1]).map(([k, h]) => `${k} ${(100 * h / total).toFixed(0)} %`).join(", "));
console.log("self time ms/req | share of the not-idle samples | function");
const top = [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, Number(process.env.TOP || 40));
for (const [name, hits] of top) console.log(`${(hits * dt / 1000 / N).toFixed(4)} | ${(100 * hits / total).toFixed(1)} % | ${name.slice(0, 140)}`);
ws.close();
await mf.dispose();
upstream.close();
