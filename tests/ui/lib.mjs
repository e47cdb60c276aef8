// Helpers for the admin UI suite (ui.test.mjs): start the server under test, a small JSON client
// for its HTTP API, and browser pages that record every console error, page error, CSP violation
// and same-origin response body, so each test can assert the page stayed clean.
//
// Environment:
//   VULTRINO_UI_BACKEND  "local" (default): the `vultrino` binary with a memory store;
//                        "workerd": the built worker in workerd (backend-cloudflare/test/harness.mjs;
//                        build it first with scripts/setup-workers.sh — and again after the UI changes,
//                        the UI files are compiled into the worker)
//   VULTRINO_BIN         the binary (default target/debug/vultrino, relative to the repo root); it is
//                        also what hashes the admin password in both modes
//   CHROMIUM             the browser (default /usr/bin/chromium)
import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
export const ADMIN_USER = "admin";
export const ADMIN_PASSWORD = "correct horse battery staple";
/** A fixed raw master key for the worker (tests only). */
const TEST_MASTER_KEY = "5d1f0c0a8e6b4f2a9c3e7d1b0a2f4e6c8b0d2f4a6c8e0b2d4f6a8c0e2b4d6f8a";

/**
 * How long one UI wait may take before the test fails (a broken UI fails, never hangs). Generous
 * because the machines that run this are small and shared; `VULTRINO_UI_WAIT_MS` overrides it.
 */
const WAIT_MS = Number(process.env.VULTRINO_UI_WAIT_MS) || 15_000;
const START_MS = 60_000;
// A response body Chromium has not handed over within this is recorded as empty: as long as
// any other wait, so a slow machine does not turn into a missing body.
const BODY_MS = WAIT_MS;

export const backend = () => (process.env.VULTRINO_UI_BACKEND || "local").toLowerCase();

function vultrinoBin() {
  return path.resolve(REPO, process.env.VULTRINO_BIN || "target/debug/vultrino");
}

/**
 * A low-cost PHC hash of ADMIN_PASSWORD, made by `vultrino hash-password` (stdin). Its 1 000
 * iterations are below the production floor: the servers take it only with the test-only switch
 * (ALLOW_WEAK_PASSWORD_HASH_FOR_TESTS).
 */
function adminHash() {
  const bin = vultrinoBin();
  if (!existsSync(bin)) {
    throw new Error(`${bin} does not exist: build it (cargo build -p vultrino-local --bin vultrino) or set VULTRINO_BIN`);
  }
  const r = spawnSync(bin, ["hash-password", "--iterations", "1000", "--allow-weak-password-hash-for-tests"], {
    input: `${ADMIN_PASSWORD}\n`,
    env: cleanEnv(),
    encoding: "utf8",
    timeout: 30_000,
  });
  const hash = (r.stdout || "").trim();
  if (r.status !== 0 || !hash.startsWith("$")) {
    throw new Error(`hash-password failed (exit ${r.status}): ${r.stderr}`);
  }
  return hash;
}

/** This environment without any setting the servers read (the test sets its own). */
function cleanEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith("VULTRINO_") || k === "ENCRYPTION_KEY" || k === "ADMIN_PASSWORD_HASH") continue;
    env[k] = v;
  }
  return { ...env, RUST_LOG: "warn", ...extra };
}

/**
 * Start the backend under test on 127.0.0.1:<random>. Returns {base, stop}. It may reach loopback
 * upstreams (a test-only switch): the echo upstream below runs in this process on 127.0.0.1. The child runs in its
 * own process group; stop() ends that group (SIGTERM, then SIGKILL after 5 s).
 */
export async function startServer() {
  const hash = adminHash();
  let child;
  if (backend() === "workerd") {
    const dir = path.join(REPO, "backend-cloudflare");
    if (!existsSync(path.join(dir, "build", "index.js"))) {
      throw new Error("the worker is not built: run scripts/setup-workers.sh");
    }
    child = spawn(process.execPath, ["test/harness.mjs"], {
      cwd: dir,
      env: cleanEnv({
        ADMIN_PASSWORD_HASH: hash,
        VULTRINO_MASTER_KEY: TEST_MASTER_KEY,
        WORKER_BUILD: "build",
        ALLOW_LOOPBACK_UPSTREAMS: "true",
        ALLOW_WEAK_PASSWORD_HASH_FOR_TESTS: "true",
      }),
      stdio: ["pipe", "pipe", "inherit"],
      detached: true,
    });
  } else if (backend() === "local") {
    child = spawn(vultrinoBin(), ["--store", "memory", "serve", "--listen", "127.0.0.1:0", "--allow-loopback-upstreams"], {
      env: cleanEnv({ VULTRINO_ADMIN_PASSWORD_HASH: hash, VULTRINO_ALLOW_WEAK_PASSWORD_HASH_FOR_TESTS: "true" }),
      stdio: ["ignore", "pipe", "inherit"],
      detached: true,
    });
  } else {
    throw new Error(`VULTRINO_UI_BACKEND must be "local" or "workerd", not ${JSON.stringify(backend())}`);
  }
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  // Whatever ends this process (a crash included), the server's group does not outlive it.
  const reap = () => {
    try {
      process.kill(-child.pid, "SIGKILL");
    } catch {
      /* already gone */
    }
  };
  process.once("exit", reap);
  exited.then(() => process.removeListener("exit", reap));
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    try {
      process.kill(-child.pid, "SIGTERM");
    } catch {
      return;
    }
    const timer = setTimeout(() => {
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {
        /* already gone */
      }
    }, 5_000);
    await exited;
    clearTimeout(timer);
  };
  const lines = readline.createInterface({ input: child.stdout });
  try {
    const base = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the server did not start within ${START_MS / 1000} s`)), START_MS);
      lines.on("line", (line) => {
        const m = /^Vultrino listening on (\S+)/.exec(line);
        if (m) {
          clearTimeout(timer);
          resolve(m[1].replace(/\/$/, ""));
        }
      });
      exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new Error(`the server exited before listening (code ${code}, signal ${signal})`));
      });
    });
    // Keep draining stdout (the readline interface does) so the child never blocks on a full pipe.
    return { base, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

// ----- a loopback upstream that records what it received -------------------------------------

/** An HTTP server on 127.0.0.1:<random> answering 200 "ok" and recording each request's headers. */
export async function startUpstream() {
  const seen = [];
  const srv = http.createServer((req, res) => {
    seen.push({ method: req.method, url: req.url, headers: req.headers });
    req.resume();
    res.writeHead(200, { "content-type": "text/plain" });
    res.end("ok");
  });
  await new Promise((resolve) => srv.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${srv.address().port}`,
    seen,
    stop: () => new Promise((resolve) => srv.close(resolve)),
  };
}

// ----- the HTTP API from node ------------------------------------------------------------------

/** One API call: {status, headers, text, json}. `token` becomes `Authorization: Bearer`. */
export async function api(base, method, p, { token, body, headers = {} } = {}) {
  const h = { ...headers };
  if (token) h.authorization = `Bearer ${token}`;
  if (body !== undefined) h["content-type"] = "application/json";
  const r = await fetch(base + p, {
    method,
    headers: h,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
  const text = await r.text();
  let json;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  return { status: r.status, headers: r.headers, text, json };
}

/** Like api(), but fails unless the status is `expected`. Returns the JSON body. */
export async function apiOk(base, method, p, opts, expected) {
  const r = await api(base, method, p, opts);
  const want = expected ?? (method === "POST" ? 201 : method === "DELETE" ? 204 : 200);
  if (r.status !== want) {
    throw new Error(`${method} ${p}: expected ${want}, got ${r.status}: ${r.text}`);
  }
  return r.json;
}

/** An admin session token (`vs_…`) from POST /login. */
export async function apiLogin(base) {
  const r = await api(base, "POST", "/login", { body: { username: ADMIN_USER, password: ADMIN_PASSWORD } });
  if (r.status !== 200) throw new Error(`login failed: ${r.status} ${r.text}`);
  return r.json.token;
}

// ----- the browser -----------------------------------------------------------------------------

export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    chromiumSandbox: false,
    timeout: 30_000,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

const FAILED_LOAD = /^Failed to load resource: the server responded with a status of (\d{3}) \(/;

/**
 * A page in a fresh browser context that records, for the whole session (across reloads):
 * console errors, uncaught page errors, CSP violations (a `securitypolicyviolation` listener
 * installed before any page script) and the bodies of same-origin responses.
 */
export async function openPage(browser, base) {
  const context = await browser.newContext({ baseURL: base });
  context.setDefaultTimeout(WAIT_MS);
  context.setDefaultNavigationTimeout(WAIT_MS);
  const rec = { consoleErrors: [], pageErrors: [], csp: [], responses: [], statuses: [], dialogs: [] };
  await context.exposeBinding("__vultrinoTestCsp", (_source, v) => {
    rec.csp.push(v);
  });
  await context.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (e) => {
      window.__vultrinoTestCsp({
        directive: e.violatedDirective,
        blocked: e.blockedURI,
        sample: e.sample,
        source: `${e.sourceFile}:${e.lineNumber}`,
      });
    });
  });
  const page = await context.newPage();
  const origin = new URL(base).origin;
  page.on("console", (m) => {
    if (m.type() === "error") rec.consoleErrors.push({ text: m.text(), url: m.location()?.url || "" });
  });
  page.on("pageerror", (e) => rec.pageErrors.push(String(e?.stack || e)));
  page.on("response", (r) => {
    if (new URL(r.url()).origin !== origin) return;
    rec.statuses.push({ url: r.url(), status: r.status() });
    // Chromium does not hand out every body (the tab's icon, a reply the page never reads): a
    // body not read within BODY_MS is recorded as unread (body null) instead of hanging the test.
    let timer;
    const unread = new Promise((resolve) => {
      timer = setTimeout(() => resolve(null), BODY_MS);
    });
    rec.responses.push(
      Promise.race([r.text().catch(() => null), unread]).then((body) => {
        clearTimeout(timer);
        return { url: r.url(), status: r.status(), body };
      }),
    );
  });
  // Dialogs: answered by the test that expects one (ui.confirm), else recorded and dismissed.
  let onDialog = null;
  page.on("dialog", (d) => {
    if (onDialog) {
      const handler = onDialog;
      onDialog = null;
      handler(d);
      return;
    }
    rec.dialogs.push({ type: d.type(), message: d.message(), unexpected: true });
    d.dismiss().catch(() => {});
  });
  return {
    page,
    context,
    rec,
    close: () => context.close(),
    /**
     * Run `action` expecting it to show one confirm() dialog, answered with `accept`; returns the
     * dialog's message.
     */
    async confirm(accept, action) {
      let seen;
      const handled = new Promise((resolve) => {
        onDialog = (d) => {
          seen = { type: d.type(), message: d.message() };
          (accept ? d.accept() : d.dismiss()).catch(() => {}).then(resolve);
        };
      });
      await action();
      let timer;
      await Promise.race([
        handled,
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error("no confirm() dialog was shown")), WAIT_MS);
        }),
      ]).finally(() => {
        clearTimeout(timer);
        onDialog = null;
      });
      if (seen.type !== "confirm") throw new Error(`expected a confirm() dialog, got ${seen.type}()`);
      return seen.message;
    },
    /** Every same-origin response received so far: {url, status, body} (body null: unreadable). */
    responseBodies: () => Promise.all(rec.responses),
    /**
     * Fail on any CSP violation, uncaught page error, unexpected dialog or console error — except
     * Chromium's own "Failed to load resource: … status of N" lines for same-origin API replies
     * whose status N the test provoked on purpose (`allowedStatuses`, default [401]).
     */
    problems(allowedStatuses = [401]) {
      const out = [];
      for (const v of rec.csp) out.push(`CSP violation: ${JSON.stringify(v)}`);
      for (const e of rec.pageErrors) out.push(`page error: ${e}`);
      for (const d of rec.dialogs.filter((d) => d.unexpected)) out.push(`unexpected ${d.type} dialog: ${d.message}`);
      for (const c of rec.consoleErrors) {
        const m = FAILED_LOAD.exec(c.text);
        const sameOrigin = c.url.startsWith(`${origin}/`);
        if (m && sameOrigin && allowedStatuses.includes(Number(m[1]))) continue;
        out.push(`console error: ${c.text} (${c.url})`);
      }
      return out;
    },
  };
}

/** Poll `fn` (async, returns truthy when done) until it holds or WAIT_MS passes; returns its value. */
export async function eventually(fn, what, timeout = WAIT_MS) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what}${last instanceof Error ? `: ${last.message}` : ""}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

export const rand = () => Math.random().toString(36).slice(2, 10);

