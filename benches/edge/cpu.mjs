// The worker's own CPU per warm request, I/O excluded, measured in workerd (issue 20, decision
// 0115). The deployable worker (backend-cloudflare/build) runs under Miniflare as the tests run
// it (backend-cloudflare/test/harness.mjs); N warm requests per route go one at a time to a
// loopback upstream. Two figures per route:
//
// 1. workerd's process CPU per request (/proc/PID/task/*/schedstat, ns on a CPU): real CPU, but
//    it includes what Miniflare runs in the same process (its entry worker, KV and the Durable
//    Objects' storage simulation, workerd's HTTP): an upper bound of the worker's own.
// 2. The time the isolate spends in the worker's code, measured inside it (see below), times the
//    share of its runnable time the isolate's thread actually had a CPU (schedstat again: on a
//    busy machine a wall-clock measure also counts the time another process had the CPU).
//
// Not used, and why: Date.now()/performance.now() inside a deployed Worker only advance on I/O
// (they do advance in workerd outside Cloudflare, which is what 2 relies on); tail events'
// cpuTime is filled by Cloudflare's runtime, not workerd; the V8 sampling profiler through
// workerd's inspector charged the isolate with more time than its thread spent on a CPU (its
// sample clock is the wall clock, and the attached inspector slows the isolate down).
//
//   scripts/worker.sh build && cargo build -p vultrino-local   (the worker, and the binary that
//   hashes the test password), then:
//   unshare -n bash -c 'ip link set lo up && node benches/edge/cpu.mjs'      [N=500]
//   BUILD=DIR measures another build folder (e.g. a copy of main's, for a before/after in turns);
//   CHUNKED=1 makes the upstream reply without a Content-Length (decision 0118).
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { BUILD, N, benchOptions, splitObjects, startBench, upstream } from "./setup.mjs";

let { mf, routes } = await startBench(benchOptions(BUILD));

// The CPU time of the whole workerd process (every thread: /proc/PID/task/TID/schedstat, ns on
// a CPU), per request: real CPU whatever else the machine runs, but
// it counts what Miniflare runs in the same process too (its entry worker, the KV and Durable
// Object simulation): an upper bound of the worker's own.
function workerdPids() {
  const out = [];
  for (const d of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const comm = fs.readFileSync(`/proc/${d}/comm`, "utf8").trim();
      const stat = fs.readFileSync(`/proc/${d}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (comm === "workerd" && ppid === process.pid) out.push(d);
    } catch {}
  }
  return out;
}
let pids = workerdPids();
if (pids.length === 0) throw new Error("no workerd child found");
/// Per workerd thread: [ns on a CPU, ns waiting on a run queue] (schedstat's first two fields).
function threads() {
  const out = new Map();
  for (const pid of pids) {
    for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
      try {
        const [run, wait] = fs.readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ").map(Number);
        out.set(tid, [run, wait]);
      } catch {}
    }
  }
  return out;
}
function cpuNs() {
  let ns = 0;
  for (const pid of pids) {
    for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
      try {
        ns += Number(fs.readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]);
      } catch {}
    }
  }
  return ns;
}
const plain = {};
console.log(`workerd process CPU per warm request (${N}, one at a time):`);
for (const [name, run] of Object.entries(routes)) {
  for (let i = 0; i < 100; i++) await run();
  const c0 = cpuNs();
  const t0 = performance.now();
  for (let i = 0; i < N; i++) await run();
  const wall = (performance.now() - t0) / N;
  const cpu = (cpuNs() - c0) / 1e6 / N;
  plain[name] = { cpu, wall };
  console.log(`${name} | workerd CPU ${cpu.toFixed(3)} ms/req | wall ${wall.toFixed(3)} ms/req`);
}

// ---- In the worker: the time its wasm runs, I/O excluded ----------------------------------
// A copy of the deployable build whose JS glue wraps every export of the wasm instance: each
// outermost call from JS into the worker's wasm (the fetch handler, the callbacks and futures
// the runtime resumes it with, its Durable Objects' methods) adds its duration, measured with
// performance.now(), to a counter in the isolate. In workerd outside Cloudflare, timers advance
// while code runs (Cloudflare's docs: "Performance and timers"; deployed, they only move on
// I/O), so this is the time the isolate spent in the worker's code, JS imports it calls
// synchronously included (Response and Headers objects, console.log, WebCrypto calls), and
// every wait excluded. The copy answers GET /__edge_cpu with the counter; nothing else changes.
const copy = fs.mkdtempSync(path.join(os.tmpdir(), "edge-cpu-"));
process.on("exit", () => fs.rmSync(copy, { recursive: true, force: true }));
fs.cpSync(BUILD, copy, { recursive: true });
let glue = fs.readFileSync(path.join(copy, "index.js"), "utf8");
const wrapAt = /(\w+)=(\w+)\.exports;\1\.__wbindgen_start\(\);/;
const entryAt = /(\w+)\.prototype\.fetch=function\((\w+)\)\{return (\w+)\.call\(this,\2,this\.env,this\.ctx\)\}/;
if (!wrapAt.test(glue) || !entryAt.test(glue)) throw new Error("the worker's JS glue changed: update benches/edge/cpu.mjs");
glue = glue
  .replace(wrapAt, (_, i, v) => `${i}=__edgeCpuWrap(${v}.exports);${i}.__wbindgen_start();`)
  .replace(entryAt, (_, q, t, rt) =>
    `${q}.prototype.fetch=function(${t}){if(new URL(${t}.url).pathname==="/__edge_cpu")return new Response(JSON.stringify(globalThis.__edgeCpu));return ${rt}.call(this,${t},this.env,this.ctx)}`);
glue = `globalThis.__edgeCpu={ms:0,calls:0,by:{}};
function __edgeCpuWrap(ex){const out={};let depth=0;for(const k of Object.keys(ex)){const f=ex[k];
if(typeof f!=="function"){Object.defineProperty(out,k,{get:()=>ex[k],enumerable:true});continue}
out[k]=function(...a){if(depth>0)return f.apply(this,a);depth++;const t0=performance.now();
try{return f.apply(this,a)}finally{depth--;const d=performance.now()-t0;const c=globalThis.__edgeCpu;
c.ms+=d;c.calls++;const g=/^(auditdo|sessiondo)_/.exec(k);const n=g?g[1]:"worker";c.by[n]=(c.by[n]||0)+d}}}
return out}
` + glue;
fs.writeFileSync(path.join(copy, "index.js"), glue);
await mf.dispose();
let base;
({ mf, base, routes } = await startBench(benchOptions(copy)));
pids = workerdPids();
const counter = async () => (await (await fetch(base + "/__edge_cpu")).json());
/// Between two `threads()` readings: the busiest workerd thread's on-CPU share of its runnable
/// time (`share`), and every thread's ns on a CPU (`all`). A wall-clock measure counts the time
/// the thread sat on a run queue (another process had the CPU) while in the worker's code: the
/// isolate's thread (the workerd thread that ran the most) says how much of the time it was
/// runnable it actually ran.
function onCpu(th0, th1) {
  let main = [0, 0];
  let all = 0;
  for (const [tid, [r1, w1]] of th1) {
    const [r0, w0] = th0.get(tid) || [0, 0];
    all += r1 - r0;
    if (r1 - r0 > main[0]) main = [r1 - r0, w1 - w0];
  }
  return { share: main[0] / (main[0] + main[1]), all };
}

console.log(`in the worker's isolate: time in the worker's code per warm request (${N}, one at a time):`);
console.log("route | in-worker ms/req (wall clock) | of which Durable Objects | isolate thread on-CPU share | in-worker CPU ms/req (× share) | workerd process CPU ms/req");
const timed = {};
for (const [name, run] of Object.entries(routes)) {
  for (let i = 0; i < 100; i++) await run();
  const c0 = await counter();
  const th0 = threads();
  for (let i = 0; i < N; i++) await run();
  const th1 = threads();
  const c1 = await counter();
  const { share, all } = onCpu(th0, th1);
  const inWorker = (c1.ms - c0.ms) / N;
  const dos = ((c1.by.auditdo || 0) + (c1.by.sessiondo || 0) - (c0.by.auditdo || 0) - (c0.by.sessiondo || 0)) / N;
  timed[name] = { inWorker, dos, share, cpu: inWorker * share, process: all / 1e6 / N };
  console.log(`${name} | ${inWorker.toFixed(3)} | ${dos.toFixed(3)} | ${share.toFixed(2)} | ${(inWorker * share).toFixed(3)} | ${(all / 1e6 / N).toFixed(3)}`);
}

// ---- The worker and its Durable Objects in isolates of their own ---------------------------
// Above, the objects run in the worker's isolate (as the tests run them), so the time an object
// spends after its first await (its storage calls, its reply) is counted as the worker's: the
// wrapper sees only outermost calls, and an object's continuations come in through the same
// callbacks as the worker's. On Cloudflare an object's work is an invocation of its own,
// billed and limited apart from the Worker's. Here the same instrumented build runs twice: the
// entry worker, whose SESSIONS and AUDIT bindings point at a second worker ("objects") that
// hosts the classes (setup.mjs, splitObjects) — two isolates, two counters: the worker's own
// CPU per request, and its objects'.
await mf.dispose();
({ mf, base, routes } = await startBench(splitObjects(benchOptions(copy))));
pids = workerdPids();
const objectsWorker = await mf.getWorker("objects");
const objectsCounter = async () => (await (await objectsWorker.fetch("http://objects/__edge_cpu")).json());
console.log(`the worker and its objects in isolates of their own (${N}, one at a time):`);
console.log("route | worker ms/req (wall clock) | objects ms/req (wall clock) | busiest thread on-CPU share | worker CPU ms/req (× share) | objects CPU ms/req (× share) | workerd process CPU ms/req");
const separate = {};
for (const [name, run] of Object.entries(routes)) {
  for (let i = 0; i < 100; i++) await run();
  const c0 = await counter();
  const o0 = await objectsCounter();
  const th0 = threads();
  for (let i = 0; i < N; i++) await run();
  const th1 = threads();
  const c1 = await counter();
  const o1 = await objectsCounter();
  const { share, all } = onCpu(th0, th1);
  const worker = (c1.ms - c0.ms) / N;
  const objects = (o1.ms - o0.ms) / N;
  separate[name] = { worker, objects, share, workerCpu: worker * share, objectsCpu: objects * share, process: all / 1e6 / N };
  console.log(`${name} | ${worker.toFixed(3)} | ${objects.toFixed(3)} | ${share.toFixed(2)} | ${(worker * share).toFixed(3)} | ${(objects * share).toFixed(3)} | ${(all / 1e6 / N).toFixed(3)}`);
}
console.log(JSON.stringify({ plain, timed, separate }));
await mf.dispose();
fs.rmSync(copy, { recursive: true, force: true });
upstream.close();
