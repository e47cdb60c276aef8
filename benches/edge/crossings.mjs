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
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { BUILD, N, benchOptions, startBench, upstream } from "./setup.mjs";

const TOP = Number(process.env.TOP || 25);

const copy = fs.mkdtempSync(path.join(os.tmpdir(), "edge-prof-"));
process.on("exit", () => fs.rmSync(copy, { recursive: true, force: true }));
fs.cpSync(BUILD, copy, { recursive: true });
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

const bench = await startBench(benchOptions(copy));
const { mf, base } = bench;
// Each timed request must succeed: a failure would count another path's crossings.
const routes = Object.fromEntries(Object.entries(bench.routes).map(([name, run]) => [name, async () => {
  const status = await run();
  if (status !== 200) throw new Error(`${name}: ${status}`);
}]));
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
