// The deployable worker in workerd when its secrets are missing or wrong: a 503 JSON error that
// names the setting, never a crash — and the worker recovers once the setting is right.
import { test } from "node:test";
import assert from "node:assert/strict";
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
