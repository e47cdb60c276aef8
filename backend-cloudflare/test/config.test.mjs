// The deployable worker in workerd when its secrets are missing or wrong: a 503 JSON error that
// names the setting, never a crash — and the worker recovers once the setting is right. And its
// first start: isolates that start together on an empty store agree on one keyring.
import { test } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Miniflare } from "miniflare";
import { workerOptions } from "./harness.mjs";

// Well-formed at the iteration floor (never checked: no login here).
const HASH = "$pbkdf2-sha256$i=100000,l=32$c2FsdHNhbHRzYWx0c2FsdA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
// The same below the floor: 10 000 iterations, the old free-plan advice.
const WEAK_HASH = HASH.replace("i=100000", "i=10000");

async function get(mf, p = "/healthz") {
  const r = await mf.dispatchFetch(`http://worker${p}`);
  return { status: r.status, body: await r.json() };
}

test("missing secrets answer 503 JSON naming each setting", async () => {
  const cases = [
    [{ ADMIN_PASSWORD_HASH: HASH }, "VULTRINO_MASTER_KEY"],
    [{ VULTRINO_MASTER_KEY: "ab".repeat(32) }, "ADMIN_PASSWORD_HASH"],
    [{ VULTRINO_MASTER_KEY: "ab".repeat(32), ADMIN_PASSWORD_HASH: HASH, LOGIN_MAX_ATTEMPTS: "lots" }, "LOGIN_MAX_ATTEMPTS"],
  ];
  for (const [bindings, name] of cases) {
    const mf = new Miniflare(workerOptions("build", bindings));
    try {
      const r = await get(mf);
      assert.equal(r.status, 503, name);
      assert.match(r.body.error.message, new RegExp(name));
      assert.match(r.body.error.code, /^(missing|invalid)_setting$/);
      if (r.body.error.code === "missing_setting") {
        // Both fixes: the deployed worker's secret, and .dev.vars for `wrangler dev`.
        assert.match(r.body.error.message, new RegExp(`wrangler secret put ${name}`));
        assert.match(r.body.error.message, /backend-cloudflare\/\.dev\.vars/);
      }
    } finally {
      await mf.dispose();
    }
  }
});

test("an admin hash below the iteration floor answers 503 naming the secret and the fix", async () => {
  const mf = new Miniflare(workerOptions("build", { VULTRINO_MASTER_KEY: "ab".repeat(32), ADMIN_PASSWORD_HASH: WEAK_HASH }));
  try {
    const r = await get(mf);
    assert.equal(r.status, 503);
    assert.equal(r.body.error.code, "invalid_setting");
    assert.match(r.body.error.message, /ADMIN_PASSWORD_HASH/);
    assert.match(r.body.error.message, /vultrino hash-password/);
    assert.ok(!r.body.error.message.includes(WEAK_HASH), "the hash leaked into the error");
  } finally {
    await mf.dispose();
  }
  // The test-only switch lets it through.
  const allowed = new Miniflare(
    workerOptions("build", { VULTRINO_MASTER_KEY: "ab".repeat(32), ADMIN_PASSWORD_HASH: WEAK_HASH, ALLOW_WEAK_PASSWORD_HASH_FOR_TESTS: "true" }),
  );
  try {
    assert.equal((await get(allowed)).status, 200);
  } finally {
    await allowed.dispose();
  }
});

test("a master key that does not open the stored keyring answers 503 wrong_master_key, then recovers", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vultrino-kv-"));
  const withKey = (key) => {
    const o = workerOptions("build", { VULTRINO_MASTER_KEY: key, ADMIN_PASSWORD_HASH: HASH });
    return { ...o, kvPersist: dir };
  };
  const mf = new Miniflare(withKey("ab".repeat(32)));
  try {
    assert.equal((await get(mf)).status, 200); // creates the keyring under key ab…
    await mf.setOptions(withKey("cd".repeat(32)));
    const r = await get(mf);
    assert.equal(r.status, 503);
    assert.equal(r.body.error.code, "wrong_master_key");
    assert.ok(!JSON.stringify(r.body).includes("cd".repeat(32)), "the key leaked into the error");
    await mf.setOptions(withKey("ab".repeat(32)));
    assert.equal((await get(mf)).status, 200);
  } finally {
    await mf.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/** A PHC PBKDF2-SHA256 hash of `password` (the format `vultrino hash-password` prints). */
function phc(password, iterations = 1000) {
  const b64 = (buf) => buf.toString("base64").replace(/=+$/, "");
  const salt = crypto.randomBytes(16);
  const hash = crypto.pbkdf2Sync(password, salt, iterations, 32, "sha256");
  return `$pbkdf2-sha256$i=${iterations},l=32$${b64(salt)}$${b64(hash)}`;
}

test("two isolates starting together on an empty store agree on one keyring", async () => {
  const password = "correct horse battery staple";
  const base = workerOptions("build", {
    VULTRINO_MASTER_KEY: "ab".repeat(32),
    ADMIN_PASSWORD_HASH: phc(password),
    ALLOW_WEAK_PASSWORD_HASH_FOR_TESTS: "true",
  });
  const [worker] = base.workers;
  // Two workers of one deployment: two isolates (each opens its own App) over one KV namespace
  // and one Durable Object namespace, as two cold isolates of a first deploy are.
  const mf = new Miniflare({
    ...base,
    workers: [
      { ...worker, name: "a", kvNamespaces: { CREDENTIALS: "shared" } },
      {
        ...worker,
        name: "b",
        kvNamespaces: { CREDENTIALS: "shared" },
        durableObjects: {
          SESSIONS: { className: "SessionDO", scriptName: "a", useSQLite: true },
          AUDIT: { className: "AuditDO", scriptName: "a", useSQLite: true },
        },
      },
    ],
  });
  try {
    const isolates = [await mf.getWorker("a"), await mf.getWorker("b")];
    const call = async (w, method, p, token, body) => {
      const headers = { "content-type": "application/json" };
      if (token) headers.authorization = `Bearer ${token}`;
      const r = await w.fetch(`http://worker${p}`, { method, headers, body: body && JSON.stringify(body) });
      return { status: r.status, retryAfter: r.headers.get("retry-after"), body: await r.json() };
    };
    // Both first requests at the same moment: each isolate opens the store. One that finds the
    // other creating the keyring says so (503 keyring_starting, Retry-After); it never makes its own.
    const first = await Promise.all(isolates.map((w) => call(w, "GET", "/healthz")));
    for (const r of first) {
      if (r.status !== 200) {
        assert.equal(r.status, 503, JSON.stringify(r.body));
        assert.equal(r.body.error.code, "keyring_starting");
        assert.ok(Number(r.retryAfter) >= 1, `Retry-After: ${r.retryAfter}`);
      }
    }
    assert.ok(first.some((r) => r.status === 200), "neither isolate opened the store");
    for (const w of isolates) {
      let r = await call(w, "GET", "/healthz");
      for (let i = 0; r.status !== 200 && i < 40; i++) {
        await new Promise((done) => setTimeout(done, 250));
        r = await call(w, "GET", "/healthz");
      }
      assert.equal(r.status, 200, JSON.stringify(r.body));
    }
    // One keyring: a credential stored through either isolate is readable through the other.
    const tokens = [];
    for (const w of isolates) {
      const r = await call(w, "POST", "/login", null, { username: "admin", password });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      tokens.push(r.body.token);
    }
    for (const [from, to, alias] of [[0, 1, "made-at-a"], [1, 0, "made-at-b"]]) {
      const made = await call(isolates[from], "POST", "/v1/credentials", tokens[from], {
        alias,
        type: "api_key",
        data: { key: "sk-first-start-0123456789" },
        policy: { allowed_hosts: ["api.example.com"] },
      });
      assert.equal(made.status, 201, JSON.stringify(made.body));
      const read = await call(isolates[to], "GET", `/v1/credentials/${alias}`, tokens[to]);
      assert.equal(read.status, 200, `${alias} through the other isolate: ${JSON.stringify(read.body)}`);
    }
  } finally {
    await mf.dispose();
  }
});
