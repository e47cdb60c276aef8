// The wrangler.toml part of the pre-deploy check (`npm run check` → scripts/worker.sh check):
// a placeholder KV namespace id or a secrets list without the worker's two secrets fails it,
// naming the fix; and the tests' worker runs with wrangler.toml's own compatibility flags (those
// of `wrangler dev` and a deployment), so what the HTTP suite shows in workerd — a loopback
// upstream refused unless ALLOW_LOOPBACK_UPSTREAMS is set — is what `wrangler dev --local` does.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { workerOptions, wranglerCompatibility } from "./harness.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const cf = path.resolve(here, "..");
const script = path.resolve(cf, "../scripts/worker.sh");
const committed = fs.readFileSync(path.join(cf, "wrangler.toml"), "utf8");
const REAL_ID = "0123456789abcdef0123456789abcdef";

/** Run `scripts/worker.sh check-config` on `text`; {status, stderr}. */
function checkConfig(text) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vultrino-check-"));
  try {
    const file = path.join(dir, "wrangler.toml");
    fs.writeFileSync(file, text);
    const r = spawnSync("bash", [script, "check-config", file], { encoding: "utf8" });
    return { status: r.status, stderr: r.stderr };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test("the committed wrangler.toml fails the check on its placeholder KV namespace id, naming the fix", () => {
  assert.match(committed, /REPLACE_WITH_YOUR_KV_NAMESPACE_ID/);
  const r = checkConfig(committed);
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /FAIL.*placeholder/);
  assert.match(r.stderr, /wrangler kv namespace create CREDENTIALS/);
  assert.match(r.stderr, /ok +wrangler\.toml: \[secrets\] required lists VULTRINO_MASTER_KEY ADMIN_PASSWORD_HASH/);
});

test("with a real namespace id and both secrets listed, the check passes", () => {
  const r = checkConfig(committed.replace("REPLACE_WITH_YOUR_KV_NAMESPACE_ID", REAL_ID));
  assert.equal(r.status, 0, r.stderr);
  assert.doesNotMatch(r.stderr, /FAIL/);
});

test("a secrets list that is missing, or lacks a secret the worker needs, fails the check", () => {
  const withId = committed.replace("REPLACE_WITH_YOUR_KV_NAMESPACE_ID", REAL_ID);
  const noList = withId.replace(/^\[secrets\]\nrequired = .*\n?/m, "");
  assert.notEqual(noList, withId);
  for (const [name, text] of [
    ["no [secrets]", noList],
    ["no ADMIN_PASSWORD_HASH", withId.replace(', "ADMIN_PASSWORD_HASH"', "")],
  ]) {
    const r = checkConfig(text);
    assert.equal(r.status, 1, `${name}: ${r.stderr}`);
    assert.match(r.stderr, /FAIL wrangler\.toml: \[secrets\] required does not list/, name);
  }
});

test("the tests' worker runs with wrangler.toml's compatibility date and flags", () => {
  const { compatibilityDate, compatibilityFlags } = wranglerCompatibility();
  assert.ok(compatibilityFlags.includes("global_fetch_strictly_public"));
  assert.ok(compatibilityFlags.includes("enable_request_signal"));
  const w = workerOptions("build", {}).workers[0];
  assert.equal(w.compatibilityDate, compatibilityDate);
  assert.deepEqual(w.compatibilityFlags, compatibilityFlags);
});

/** Run `scripts/worker.sh check-size` on a file of `bytes`; {status, stderr}. */
function checkSize(bytes) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vultrino-check-"));
  try {
    const file = path.join(dir, "index_bg.wasm");
    fs.writeFileSync(file, bytes);
    const r = spawnSync("bash", [script, "check-size", file], { encoding: "utf8" });
    return { status: r.status, stderr: r.stderr };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test("a wasm over 1 MiB gzipped fails the size check (scripts/test.sh runs it), one under passes", () => {
  // Random bytes do not compress: 1 MiB + 4 KiB of them is over the budget once gzipped.
  const over = checkSize(crypto.randomBytes(1024 * 1024 + 4096));
  assert.equal(over.status, 1, over.stderr);
  assert.match(over.stderr, /FAIL bundle: wasm \d+ B \(\d+ KiB\) gzipped is \d+ B over the budget of 1024 KiB/);
  // 4 MiB that compress well: the budget is on the gzipped size, not the raw one.
  const under = checkSize(Buffer.alloc(4 * 1024 * 1024, "wasm"));
  assert.equal(under.status, 0, under.stderr);
  assert.match(under.stderr, /ok +bundle: wasm 4194304 B \(4096 KiB\), \d+ B \(\d+ KiB\) gzipped: \d+ B under the budget/);
});
