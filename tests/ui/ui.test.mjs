// End-to-end tests of the embedded admin UI (vultrino-core/src/ui), in a real Chromium driven by
// playwright-core, against the real server: the local `vultrino` binary, or the worker in workerd
// with VULTRINO_UI_BACKEND=workerd. One server and one browser for the whole file; each test has a
// fresh browser context (its own cookies and sessionStorage) and ends by asserting the page logged
// no console error, threw nothing and violated no Content-Security-Policy directive.
//
//   node --test tests/ui/ui.test.mjs        (see tests/ui/README.md)
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  ADMIN_PASSWORD,
  ADMIN_USER,
  api,
  apiLogin,
  apiOk,
  backend,
  eventually,
  launchBrowser,
  openPage,
  rand,
  startServer,
  startUpstream,
} from "./lib.mjs";

let server;
let browser;
let base;
/** An admin session token for setting up and checking effects through the API. */
let admin;
/** A loopback upstream recording what Vultrino sends it (which secret is injected). */
let upstream;

const T = { timeout: 60_000 };

before(
  async () => {
    upstream = await startUpstream();
    server = await startServer();
    base = server.base;
    admin = await apiLogin(base);
    browser = await launchBrowser();
  },
  { timeout: 90_000 },
);

after(
  async () => {
    await browser?.close().catch(() => {});
    await server?.stop();
    await upstream?.stop();
  },
  { timeout: 30_000 },
);

// ----- helpers ---------------------------------------------------------------------------------

/** A fresh context + page on the UI, not logged in. */
async function freshUi() {
  const ui = await openPage(browser, base);
  await ui.page.goto("/");
  await ui.page.locator("#login-form").waitFor({ state: "visible" });
  return ui;
}

/** A fresh context + page, logged in through the login form. */
async function loggedInUi() {
  const ui = await freshUi();
  await loginThroughForm(ui.page, ADMIN_PASSWORD);
  await ui.page.locator("#app").waitFor({ state: "visible" });
  return ui;
}

async function loginThroughForm(page, password) {
  await page.fill("#login-username", ADMIN_USER);
  await page.fill("#login-password", password);
  await page.locator('#login-form [type="submit"], #login-form button:not([type])').first().click();
}

/** Close the page's context and assert the whole session stayed clean. */
async function finish(ui, allowedStatuses = [401]) {
  // Let in-flight console messages arrive.
  await ui.page.waitForTimeout(100);
  const problems = ui.problems(allowedStatuses);
  await ui.close();
  assert.deepEqual(problems, [], "console errors, page errors or CSP violations during the test");
}

async function hasHidden(page, selector) {
  return page.locator(selector).evaluate((el) => el.hasAttribute("hidden"));
}

async function openTab(page, name) {
  await page.click(`button[data-tab="${name}"]`);
  await page.locator(`section#tab-${name}`).waitFor({ state: "visible" });
}

/** A logged-in page on the credentials tab, with `alias`'s row shown. */
async function credentialsTabWith(alias) {
  const ui = await loggedInUi();
  const { page } = ui;
  await openTab(page, "credentials");
  const tr = row(page, "credentials-table", "alias", alias);
  await tr.waitFor({ state: "visible" });
  return { ui, page, tr };
}

/**
 * Clear #status before an action, so the outcome read after it is that action's (the UI must set
 * it again). Returns a function that waits for the outcome and returns {cls, text}.
 */
async function expectStatus(page) {
  await page.locator("#status").evaluate((el) => {
    el.textContent = "";
    el.classList.remove("ok", "error");
  });
  return async () => {
    await page.locator("#status.ok, #status.error").waitFor({ state: "attached" });
    return page.locator("#status").evaluate((el) => ({
      cls: el.classList.contains("error") ? "error" : "ok",
      text: el.textContent.trim(),
      role: el.getAttribute("role"),
    }));
  };
}

/** Submit a form by its submit button; fails with the reason if the browser's own validation blocks it. */
async function submit(page, formSelector, buttonSelector) {
  const invalid = await page.locator(formSelector).evaluate((form) =>
    [...form.elements]
      .filter((el) => el.willValidate && !el.checkValidity())
      .map((el) => `#${el.id}: ${el.validationMessage}`),
  );
  assert.deepEqual(invalid, [], `the browser's form validation blocks ${formSelector}`);
  await page.click(buttonSelector);
}

/** Submit the credential form; the status line it ends with ({cls, text}). */
async function saveCredential(page) {
  const outcome = await expectStatus(page);
  await submit(page, "#credential-form", "#cred-submit");
  return outcome();
}

function row(page, table, attr, value) {
  return page.locator(`table#${table} tbody tr[data-${attr}="${value}"]`);
}

async function cells(locator) {
  return locator.locator("td").evaluateAll((tds) => tds.map((td) => td.textContent.trim()));
}

/** Split a list field the way the page does (commas and/or whitespace). */
const words = (v) => v.split(/[\s,]+/).filter(Boolean);

async function credentialViaApi(alias, { type = "api_key", data = { key: `sek-${rand()}` }, hosts = ["api.example.com"], description } = {}) {
  const body = { alias, type, data, policy: { allowed_hosts: hosts } };
  if (description !== undefined) body.description = description;
  return apiOk(base, "POST", "/v1/credentials", { token: admin, body });
}

// ----- 1. security headers -----------------------------------------------------------------------

describe(`admin UI (${backend()})`, () => {
  it("serves the page with a strict Content-Security-Policy, and the page stays within it", T, async () => {
    const r = await api(base, "GET", "/", { headers: { accept: "text/html,application/xhtml+xml,*/*;q=0.8" } });
    assert.equal(r.status, 200);
    assert.match(r.headers.get("content-type") || "", /^text\/html/);
    const csp = r.headers.get("content-security-policy") || "";
    const directives = new Map(
      csp
        .split(";")
        .map((d) => d.trim().split(/\s+/))
        .filter((d) => d[0])
        .map(([name, ...values]) => [name.toLowerCase(), values]),
    );
    assert.deepEqual(directives.get("default-src"), ["'none'"], `default-src in ${csp}`);
    assert.deepEqual(directives.get("script-src"), ["'self'"], `script-src in ${csp}`);
    assert.deepEqual(directives.get("frame-ancestors"), ["'none'"], `frame-ancestors in ${csp}`);
    assert.ok(!csp.includes("'unsafe-inline'"), `'unsafe-inline' in ${csp}`);
    assert.ok(!csp.includes("'unsafe-eval'"), `'unsafe-eval' in ${csp}`);
    // The page's script and style sheet are served with their real types (nosniff would refuse
    // anything else); API clients probing / still get JSON.
    const js = await api(base, "GET", "/ui/app.js");
    assert.equal(js.status, 200);
    assert.match(js.headers.get("content-type") || "", /^(text|application)\/javascript/);
    const css = await api(base, "GET", "/ui/app.css");
    assert.equal(css.status, 200);
    assert.match(css.headers.get("content-type") || "", /^text\/css/);
    const probe = await api(base, "GET", "/", { headers: { accept: "application/json" } });
    assert.doesNotMatch(probe.headers.get("content-type") || "", /text\/html/);

    // In the browser: the login view renders, the logged-in app too, without a single violation.
    const ui = await freshUi();
    assert.equal(await hasHidden(ui.page, "#app"), true, "#app is hidden before login");
    await loginThroughForm(ui.page, ADMIN_PASSWORD);
    await ui.page.locator("#app").waitFor({ state: "visible" });
    for (const tab of ["credentials", "keys", "roles", "audit"]) await openTab(ui.page, tab);
    const loaded = ui.rec.statuses.filter((r) => new URL(r.url).pathname.startsWith("/ui/"));
    assert.ok(loaded.some((r) => r.url.endsWith("/ui/app.js")) && loaded.some((r) => r.url.endsWith("/ui/app.css")), "the page loads app.js and app.css");
    assert.deepEqual(loaded.filter((r) => r.status !== 200), [], "the page's own files load");
    await finish(ui);
  });

  // ----- 2. login --------------------------------------------------------------------------------

  it("refuses a wrong password with the server's message, logs in with the right one, survives a reload", T, async () => {
    const ui = await freshUi();
    const { page } = ui;
    assert.equal(await hasHidden(page, "#app"), true);
    await loginThroughForm(page, "not the password");
    await page.locator("#login-error").filter({ hasText: "invalid username or password" }).waitFor({ state: "visible" });
    assert.equal(await hasHidden(page, "#app"), true, "#app stays hidden after a failed login");
    assert.equal(await page.locator("#app").isVisible(), false);
    assert.equal(await page.evaluate(() => sessionStorage.getItem("vultrino.csrf")), null);

    await loginThroughForm(page, ADMIN_PASSWORD);
    await page.locator("#app").waitFor({ state: "visible" });
    assert.equal(await hasHidden(page, "#login-view"), true, "#login-view is hidden once logged in");
    assert.ok(await page.evaluate(() => sessionStorage.getItem("vultrino.csrf")), "CSRF token kept in sessionStorage");
    const cookies = await ui.context.cookies();
    const session = cookies.find((c) => c.value.startsWith("vc_"));
    assert.ok(session, "a cookie-only session token (vc_) is set");
    assert.equal(session.httpOnly, true, "the session cookie is HttpOnly");
    assert.ok(!(await page.evaluate(() => document.cookie)).includes("vc_"), "the page's script cannot read the session");
    const stored = await page.evaluate(() => JSON.stringify({ ...sessionStorage, ...localStorage }));
    assert.ok(!stored.includes("vs_") && !stored.includes("vc_"), "no session token is kept in web storage");
    // The cookie alone opens nothing (another local port receives it too): reads need the token.
    assert.equal(await page.evaluate(async () => (await fetch("/v1/credentials")).status), 403);
    assert.equal((await api(base, "GET", "/v1/credentials", { token: session.value })).status, 401, "the cookie is no bearer token");

    // Tabs: exactly the chosen section is shown.
    for (const tab of ["keys", "roles", "audit", "credentials"]) {
      await openTab(page, tab);
      for (const other of ["credentials", "keys", "roles", "audit"]) {
        assert.equal(await hasHidden(page, `section#tab-${other}`), other !== tab, `section#tab-${other} with ${tab} active`);
      }
    }

    await page.reload();
    await page.locator("#app").waitFor({ state: "visible" });
    assert.equal(await hasHidden(page, "#login-view"), true, "still logged in after a reload");

    // A token that is not the session's (another tab signed in and replaced the cookie): the
    // server refuses (403 csrf_failed) and the page asks to sign in again instead of failing on.
    await page.evaluate(() => sessionStorage.setItem("vultrino.csrf", "stale-token"));
    await page.click('button[data-tab="audit"]');
    await page.locator("#login-view").waitFor({ state: "visible" });
    assert.match(await page.textContent("#login-notice"), /session has ended/i);
    assert.equal(await page.evaluate(() => sessionStorage.getItem("vultrino.csrf")), null);
    await finish(ui, [401, 403]);
  });

  // ----- 3. add a credential ---------------------------------------------------------------------

  it("adds an api_key credential; its secret is in no page, input or response afterwards", T, async () => {
    const ui = await loggedInUi();
    const { page } = ui;
    await openTab(page, "credentials");
    const alias = `ui-cred-${rand()}`;
    const secret = `sek-ui-${rand()}${rand()}`;

    // Only the selected type's fieldset is shown.
    for (const type of ["basic_auth", "query_param", "oauth2", "api_key"]) {
      await page.selectOption("#cred-type", type);
      for (const other of ["api_key", "basic_auth", "query_param", "oauth2"]) {
        assert.equal(
          await page.locator(`#credential-form fieldset[data-type="${other}"]`).isVisible(),
          other === type,
          `fieldset ${other} visible with ${type} selected`,
        );
      }
    }
    assert.equal(await page.locator("#cred-key").getAttribute("type"), "password", "#cred-key is a password input");

    await page.fill("#cred-alias", alias);
    await page.fill("#cred-description", "made in the browser");
    await page.fill("#cred-key", secret);
    await page.fill("#cred-hosts", "api.example.com, uploads.example.com  files.example.com");
    const outcome = await expectStatus(page);
    await submit(page, "#credential-form", "#cred-submit");
    const tr = row(page, "credentials-table", "alias", alias);
    await tr.waitFor({ state: "visible" });
    const s = await outcome();
    assert.equal(s.cls, "ok", `status after the save: ${s.text}`);
    assert.equal(s.role, "status");
    const c = await cells(tr);
    assert.equal(c[0], alias);
    assert.equal(c[1], "api_key");
    assert.equal(c[2], "made in the browser");
    assert.equal(c[3], "api.example.com, uploads.example.com, files.example.com");
    assert.equal(c[4], "—", "no base URL given, none shown");
    assert.ok(c[5], "updated time shown");

    const stored = await apiOk(base, "GET", `/v1/credentials/${alias}`, { token: admin });
    assert.deepEqual(stored.allowed_hosts, ["api.example.com", "uploads.example.com", "files.example.com"]);
    assert.equal(stored.type, "api_key");

    // The form reset, and the secret is nowhere: markup, input values, responses.
    assert.equal(await page.inputValue("#cred-alias"), "", "the form resets after a save");
    const html = await page.evaluate(() => document.documentElement.outerHTML);
    assert.ok(!html.includes(secret), "the secret is in the page's markup");
    const values = await page.evaluate(() => [...document.querySelectorAll("input, textarea, select")].map((e) => e.value));
    assert.ok(!values.some((v) => v.includes(secret)), "the secret is still in an input");
    const bodies = await ui.responseBodies();
    // (A reply the page never reads, like its post-login probe, may have no body to record.)
    assert.ok(
      bodies.some((b) => new URL(b.url).pathname === "/v1/credentials" && b.body?.includes(alias)),
      "the reloaded credential list was recorded",
    );
    const leaking = bodies.filter((b) => b.body?.includes(secret)).map((b) => b.url);
    assert.deepEqual(leaking, [], "responses holding the secret");
    await finish(ui);
  });

  it("adds basic_auth, query_param and oauth2 credentials with their own fields", T, async () => {
    const ui = await loggedInUi();
    const { page } = ui;
    await openTab(page, "credentials");
    const cases = [
      ["basic_auth", { "#cred-username": "svc-user", "#cred-password": `pw-${rand()}` }],
      ["query_param", { "#cred-param-name": "api_key", "#cred-param-value": `qv-${rand()}` }],
      [
        "oauth2",
        {
          "#cred-token-url": "https://auth.example.com/oauth/token",
          "#cred-client-id": "client-1",
          "#cred-client-secret": `cs-${rand()}`,
          "#cred-scopes": "read write",
        },
      ],
    ];
    for (const [type, fields] of cases) {
      const alias = `ui-${type.replace("_", "-")}-${rand()}`;
      await page.fill("#cred-alias", alias);
      await page.selectOption("#cred-type", type);
      for (const [sel, v] of Object.entries(fields)) await page.fill(sel, v);
      await page.fill("#cred-hosts", "api.example.com auth.example.com");
      const s = await saveCredential(page);
      assert.equal(s.cls, "ok", `${type}: ${s.text}`);
      const tr = row(page, "credentials-table", "alias", alias);
      await tr.waitFor({ state: "visible" });
      assert.equal((await cells(tr))[1], type);
      const stored = await apiOk(base, "GET", `/v1/credentials/${alias}`, { token: admin });
      assert.equal(stored.type, type);
      const html = await page.evaluate(() => document.documentElement.outerHTML);
      for (const v of Object.values(fields).filter((v) => /^(pw|qv|cs)-/.test(v))) {
        assert.ok(!html.includes(v), `${type}: a secret is in the page after the save`);
      }
    }
    await finish(ui);
  });

  // ----- 4. markup in user data is text ----------------------------------------------------------

  it("shows a description holding markup as text, never as HTML", T, async () => {
    const alias = `ui-xss-${rand()}`;
    const description = `<img src=x onerror="window.__pwned=1"> & <b>bold</b>`;
    await credentialViaApi(alias, { description });
    const { ui, page, tr } = await credentialsTabWith(alias);
    assert.equal((await cells(tr))[2], description);
    assert.equal(await tr.locator("img, b").count(), 0, "markup from the description became elements");
    assert.equal(await page.locator("#app img[src='x']").count(), 0);
    await page.waitForTimeout(200);
    assert.equal(await page.evaluate(() => window.__pwned), undefined);
    await finish(ui);
  });

  // ----- 5. edit ---------------------------------------------------------------------------------

  it("edits a credential: shows and keeps its whole policy, rotates the secret alone, reports refusals", T, async () => {
    const alias = `ui-edit-${rand()}`;
    const oldSecret = `sek-old-${rand()}`;
    const policy = {
      allowed_hosts: ["127.0.0.1"],
      methods: ["GET"],
      path_prefixes: ["/whoami"],
      rate_limit: { requests: 50, per_seconds: 60 },
    };
    await apiOk(base, "POST", "/v1/credentials", {
      token: admin,
      body: { alias, type: "api_key", description: "before", data: { key: oldSecret, header: "X-Api-Key", prefix: "Token " }, policy },
    });
    /** The header Vultrino injects now: what the loopback upstream receives through an execute. */
    const injected = async () => {
      const n = upstream.seen.length;
      await apiOk(base, "POST", "/v1/execute", { token: admin, body: { credential: alias, method: "GET", url: `${upstream.url}/whoami` } }, 200);
      assert.equal(upstream.seen.length, n + 1, "the upstream got the request");
      return upstream.seen[n].headers["x-api-key"];
    };
    assert.equal(await injected(), `Token ${oldSecret}`);

    const { ui, page, tr } = await credentialsTabWith(alias);

    // Edit mode: alias and type fixed, description and the WHOLE policy prefilled, no secret.
    await tr.locator('button[data-action="edit"]').click();
    await eventually(async () => page.locator("#cred-alias").evaluate((e) => e.readOnly), "#cred-alias readOnly");
    assert.equal(await page.inputValue("#cred-alias"), alias);
    assert.equal(await page.locator("#cred-type").isDisabled(), true, "#cred-type disabled in edit mode");
    assert.equal(await page.inputValue("#cred-type"), "api_key");
    assert.equal(await page.inputValue("#cred-description"), "before");
    assert.deepEqual(words(await page.inputValue("#cred-hosts")), ["127.0.0.1"]);
    assert.deepEqual(words(await page.inputValue("#cred-methods")), ["GET"]);
    assert.deepEqual(words(await page.inputValue("#cred-paths")), ["/whoami"]);
    assert.equal(await page.inputValue("#cred-rate-requests"), "50");
    assert.equal(await page.inputValue("#cred-rate-seconds"), "60");
    await page.locator("#cred-new-secret").waitFor({ state: "visible" });
    assert.equal(await page.locator("#cred-new-secret").getAttribute("type"), "password");
    assert.equal(await page.inputValue("#cred-new-secret"), "", "the secret is never prefilled");
    assert.equal(await page.locator("fieldset[data-type]:visible").count(), 0, "no data fields while editing");

    // Change the description and the hosts; everything else of the policy, and the secret, stay.
    await page.fill("#cred-hosts", "127.0.0.1, b.example.com");
    await page.fill("#cred-description", "after");
    let s = await saveCredential(page);
    assert.equal(s.cls, "ok", s.text);
    let stored = await apiOk(base, "GET", `/v1/credentials/${alias}`, { token: admin });
    assert.deepEqual(stored.policy, { ...policy, allowed_hosts: ["127.0.0.1", "b.example.com"] });
    assert.equal(stored.description, "after");
    assert.equal(await injected(), `Token ${oldSecret}`, "an edit with no new secret keeps the secret");
    await eventually(async () => (await cells(tr))[3] === "127.0.0.1, b.example.com", "the row shows the new hosts");
    assert.equal(await page.inputValue("#cred-alias"), "", "the form leaves edit mode after a save");
    assert.equal(await page.locator("#cred-alias").evaluate((e) => e.readOnly), false);
    assert.equal(await page.locator("#cred-new-secret").isVisible(), false, "#cred-new-secret only in edit mode");

    // Rotate the secret: the new one is injected with the same header and prefix; policy kept.
    await tr.locator('button[data-action="edit"]').click();
    await eventually(async () => (await page.inputValue("#cred-alias")) === alias, "edit mode");
    const newSecret = `sek-rotated-${rand()}`;
    await page.fill("#cred-new-secret", newSecret);
    s = await saveCredential(page);
    assert.equal(s.cls, "ok", s.text);
    const rotated = await apiOk(base, "GET", `/v1/credentials/${alias}`, { token: admin });
    assert.ok(rotated.updated_at > stored.updated_at, `updated_at ${rotated.updated_at} after ${stored.updated_at}`);
    assert.deepEqual(rotated.policy, stored.policy, "the policy is kept");
    assert.equal(rotated.description, "after");
    assert.equal(await injected(), `Token ${newSecret}`, "the rotated secret is injected, header and prefix kept");
    assert.equal(await page.inputValue("#cred-new-secret"), "", "the form forgets the secret after saving");
    assert.ok(!(await page.evaluate(() => document.documentElement.outerHTML)).includes(newSecret));
    stored = rotated;

    // Half a rate limit: the page says so and sends nothing.
    await tr.locator('button[data-action="edit"]').click();
    await eventually(async () => (await page.inputValue("#cred-alias")) === alias, "edit mode");
    await page.fill("#cred-rate-seconds", "");
    s = await saveCredential(page);
    assert.equal(s.cls, "error");
    assert.match(s.text, /rate limit/i);
    assert.deepEqual(await apiOk(base, "GET", `/v1/credentials/${alias}`, { token: admin }), stored);

    // A change the server refuses: the server's message, nothing lost.
    await page.fill("#cred-rate-seconds", "60");
    await page.fill("#cred-hosts", "bad..example.com");
    const refused = await api(base, "PUT", `/v1/credentials/${alias}`, {
      token: admin,
      body: { description: "after", policy: { ...stored.policy, allowed_hosts: ["bad..example.com"] } },
    });
    assert.equal(refused.status, 400);
    s = await saveCredential(page);
    assert.equal(s.cls, "error");
    assert.ok(s.text.includes(refused.json.error.message), `status "${s.text}" shows "${refused.json.error.message}"`);
    assert.equal(await tr.count(), 1, "the row is still there");
    assert.equal(await page.inputValue("#cred-hosts"), "bad..example.com", "the form keeps what was typed");
    assert.equal(await page.inputValue("#cred-alias"), alias, "still in edit mode");
    const unchanged = await apiOk(base, "GET", `/v1/credentials/${alias}`, { token: admin });
    assert.deepEqual(unchanged, stored);

    // Cancel leaves edit mode.
    await page.click("#cred-cancel");
    await eventually(async () => !(await page.locator("#cred-alias").evaluate((e) => e.readOnly)), "edit mode left");
    assert.equal(await page.locator("#cred-type").isDisabled(), false);

    // An add the server refuses (bad alias): its message, the typed fields kept.
    await page.fill("#cred-alias", "-bad-alias");
    await page.selectOption("#cred-type", "api_key");
    await page.fill("#cred-description", "keep me");
    await page.fill("#cred-key", "sek-never-stored");
    await page.fill("#cred-hosts", "api.example.com");
    const bad = await api(base, "POST", "/v1/credentials", {
      token: admin,
      body: { alias: "-bad-alias", type: "api_key", description: "keep me", data: { key: "x" }, policy: { allowed_hosts: ["api.example.com"] } },
    });
    assert.equal(bad.status, 400);
    s = await saveCredential(page);
    assert.equal(s.cls, "error");
    assert.ok(s.text.includes(bad.json.error.message), `status "${s.text}" shows "${bad.json.error.message}"`);
    assert.equal(await page.inputValue("#cred-alias"), "-bad-alias");
    assert.equal(await page.inputValue("#cred-description"), "keep me");
    assert.equal(await tr.count(), 1);
    await finish(ui, [401, 400]);
  });

  it("keeps path prefixes that contain commas through an edit of something else", T, async () => {
    const alias = `ui-paths-${rand()}`;
    const policy = { allowed_hosts: ["api.example.com"], path_prefixes: ["/a,b/", "/c"] };
    await apiOk(base, "POST", "/v1/credentials", {
      token: admin,
      body: { alias, type: "api_key", data: { key: `sek-${rand()}` }, policy },
    });
    const { ui, page, tr } = await credentialsTabWith(alias);
    await tr.locator('button[data-action="edit"]').click();
    await eventually(async () => (await page.inputValue("#cred-alias")) === alias, "edit mode");
    await page.fill("#cred-description", "only this changes");
    assert.equal((await saveCredential(page)).cls, "ok");
    const stored = await apiOk(base, "GET", `/v1/credentials/${alias}`, { token: admin });
    assert.equal(stored.description, "only this changes");
    assert.deepEqual(stored.policy.path_prefixes, ["/a,b/", "/c"]);
    await finish(ui);
  });

  it("keeps pass_cookies through an edit of something else, and turns it off when unticked", T, async () => {
    const alias = `ui-cookies-${rand()}`;
    const policy = { allowed_hosts: ["api.example.com"], pass_cookies: true };
    await apiOk(base, "POST", "/v1/credentials", {
      token: admin,
      body: { alias, type: "api_key", data: { key: `sek-${rand()}` }, policy },
    });
    const { ui, page, tr } = await credentialsTabWith(alias);
    await tr.locator('button[data-action="edit"]').click();
    await eventually(async () => (await page.inputValue("#cred-alias")) === alias, "edit mode");
    assert.equal(await page.isChecked("#cred-pass-cookies"), true, "the form shows the stored pass_cookies");
    await page.fill("#cred-description", "only this changes");
    assert.equal((await saveCredential(page)).cls, "ok");
    let stored = await apiOk(base, "GET", `/v1/credentials/${alias}`, { token: admin });
    assert.equal(stored.description, "only this changes");
    assert.equal(stored.policy.pass_cookies, true);
    await tr.locator('button[data-action="edit"]').click();
    await eventually(async () => (await page.inputValue("#cred-alias")) === alias, "edit mode");
    await page.uncheck("#cred-pass-cookies");
    assert.equal((await saveCredential(page)).cls, "ok");
    stored = await apiOk(base, "GET", `/v1/credentials/${alias}`, { token: admin });
    assert.equal(stored.policy.pass_cookies, undefined, "off is the default, not written");
    await finish(ui);
  });

  it("sets a credential's base URL for /proxy/, shows it after a reload, keeps, changes and removes it", T, async () => {
    const ui = await loggedInUi();
    const { page } = ui;
    await openTab(page, "credentials");
    const alias = `ui-base-${rand()}`;
    await page.fill("#cred-alias", alias);
    await page.fill("#cred-key", `sek-${rand()}`);
    await page.fill("#cred-hosts", "api.example.com, eu.api.example.com");
    await page.fill("#cred-base-url", "https://api.example.com/v1");
    let s = await saveCredential(page);
    assert.equal(s.cls, "ok", s.text);
    let stored = await apiOk(base, "GET", `/v1/credentials/${alias}`, { token: admin });
    assert.equal(stored.base_url, "https://api.example.com/v1");
    assert.equal(await page.inputValue("#cred-base-url"), "", "the form resets after a save");

    // After a reload: in the table, and prefilled in the edit form with the agents' URL beside it.
    await page.reload();
    await page.locator("#app").waitFor({ state: "visible" });
    await openTab(page, "credentials");
    const tr = row(page, "credentials-table", "alias", alias);
    await tr.waitFor({ state: "visible" });
    assert.equal((await cells(tr))[4], "https://api.example.com/v1");
    const edit = async () => {
      await tr.locator('button[data-action="edit"]').click();
      await eventually(async () => (await page.inputValue("#cred-alias")) === alias, "edit mode");
    };
    await edit();
    assert.equal(await page.inputValue("#cred-base-url"), "https://api.example.com/v1");
    await page.locator("#cred-proxy-hint").waitFor({ state: "visible" });
    assert.equal(await page.textContent("#cred-proxy-url"), `${base}/proxy/${alias}`);

    // An edit of something else keeps it; a new one replaces it.
    await page.fill("#cred-description", "only this changes");
    assert.equal((await saveCredential(page)).cls, "ok");
    stored = await apiOk(base, "GET", `/v1/credentials/${alias}`, { token: admin });
    assert.equal(stored.description, "only this changes");
    assert.equal(stored.base_url, "https://api.example.com/v1");
    assert.equal(await hasHidden(page, "#cred-proxy-hint"), true, "the agents' URL only in edit mode");
    await edit();
    await page.fill("#cred-base-url", "https://eu.api.example.com");
    assert.equal((await saveCredential(page)).cls, "ok");
    stored = await apiOk(base, "GET", `/v1/credentials/${alias}`, { token: admin });
    assert.equal(stored.base_url, "https://eu.api.example.com");
    await eventually(async () => (await cells(tr))[4] === "https://eu.api.example.com", "the row shows the new base URL");

    // A host outside the allowed ones: the server's message, nothing changed.
    await edit();
    await page.fill("#cred-base-url", "https://elsewhere.example.net");
    s = await saveCredential(page);
    assert.equal(s.cls, "error");
    assert.match(s.text, /base_url/);
    assert.deepEqual(await apiOk(base, "GET", `/v1/credentials/${alias}`, { token: admin }), stored);

    // Emptied: removed.
    await page.fill("#cred-base-url", "");
    assert.equal((await saveCredential(page)).cls, "ok");
    stored = await apiOk(base, "GET", `/v1/credentials/${alias}`, { token: admin });
    assert.equal(stored.base_url ?? null, null, "an emptied base URL is removed");
    await eventually(async () => (await cells(tr))[4] === "—", "the row shows no base URL");
    await finish(ui, [400, 401]);
  });

  // ----- 6. delete -------------------------------------------------------------------------------

  it("deletes a credential after a confirmation (and keeps it when the dialog is dismissed)", T, async () => {
    const alias = `ui-del-${rand()}`;
    await credentialViaApi(alias);
    const { ui, page, tr } = await credentialsTabWith(alias);

    const deletes = [];
    page.on("request", (req) => {
      if (req.method() === "DELETE") deletes.push(req.url());
    });
    await ui.confirm(false, () => tr.locator('button[data-action="delete"]').click());
    // A DELETE would be sent from the click handler right after the dialog; give it time to show.
    await page.waitForTimeout(300);
    assert.deepEqual(deletes, [], "dismissing the dialog sends no DELETE");
    assert.equal(await tr.count(), 1, "dismissing the dialog keeps the row");
    assert.equal((await api(base, "GET", `/v1/credentials/${alias}`, { token: admin })).status, 200);

    const outcome = await expectStatus(page);
    await ui.confirm(true, () => tr.locator('button[data-action="delete"]').click());
    await tr.waitFor({ state: "detached" });
    assert.equal((await outcome()).cls, "ok");
    assert.equal((await api(base, "GET", `/v1/credentials/${alias}`, { token: admin })).status, 404);
    await finish(ui);
  });

  // ----- 7. keys ---------------------------------------------------------------------------------

  it("creates an executor key shown once, which works until it is revoked", T, async () => {
    const ui = await loggedInUi();
    const { page } = ui;
    await openTab(page, "keys");
    const name = `ui-key-${rand()}`;
    await page.fill("#key-name", name);
    await page.locator('#key-role option[value="executor"]').waitFor({ state: "attached" });
    await page.selectOption("#key-role", "executor");
    await page.fill("#key-expires", "7");
    let outcome = await expectStatus(page);
    await page.locator('#key-form [type="submit"], #key-form button:not([type])').first().click();
    await page.locator("#new-key").waitFor({ state: "visible" });
    assert.equal(await hasHidden(page, "#new-key"), false);
    assert.equal((await outcome()).cls, "ok");
    const key = (await page.locator("code#new-key-value").textContent()).trim();
    assert.match(key, /^vk_[0-9a-f]+_\S+$/);
    const id = /^vk_([0-9a-f]+)_/.exec(key)[1];

    assert.equal((await api(base, "GET", "/v1/credentials", { token: key })).status, 200, "the new key works");
    const listed = (await apiOk(base, "GET", "/v1/keys", { token: admin })).keys.find((k) => k.id === id);
    assert.equal(listed?.role, "executor");
    assert.ok(listed.expires_at, "expiry set from #key-expires");

    const tr = row(page, "keys-table", "id", id);
    await tr.waitFor({ state: "visible" });
    const c = await cells(tr);
    assert.equal(c[0], name);
    assert.equal(c[1], "executor");
    assert.ok(!(await tr.evaluate((e) => e.outerHTML)).includes(key), "the full key is in the keys table");

    await page.click("#new-key-dismiss");
    await eventually(async () => hasHidden(page, "#new-key"), "#new-key hidden after dismiss");
    assert.equal(await page.locator("#new-key").isVisible(), false);
    assert.equal((await page.locator("code#new-key-value").textContent()).trim(), "");
    assert.ok(!(await page.evaluate(() => document.documentElement.outerHTML)).includes(key), "the key is still in the page");
    const secretPart = key.slice(`vk_${id}_`.length); // (base64url: may itself hold '_')
    assert.ok(secretPart.length >= 20);
    assert.ok(!(await page.evaluate(() => document.documentElement.outerHTML)).includes(secretPart));

    outcome = await expectStatus(page);
    await ui.confirm(true, () => tr.locator('button[data-action="revoke"]').click());
    await tr.waitFor({ state: "detached" });
    assert.equal((await outcome()).cls, "ok");
    assert.equal((await api(base, "GET", "/v1/credentials", { token: key })).status, 401, "the revoked key is refused");
    const after = (await apiOk(base, "GET", "/v1/keys", { token: admin })).keys;
    assert.ok(!after.some((k) => k.id === id));
    await finish(ui);
  });

  it("lists a key's agent tokens without their secrets and revokes one at once", T, async () => {
    const created = await apiOk(base, "POST", "/v1/keys", { token: admin, body: { name: `ui-tok-${rand()}`, role: "executor" } });
    const minted = await apiOk(base, "POST", "/v1/tokens", {
      token: admin,
      body: { parent_key: created.id, name: "ui task", credentials: ["*"], uses: 7 },
    });
    assert.match(minted.token, /^vt_[0-9a-f]{16}_\S+$/);
    assert.equal((await api(base, "GET", "/v1/credentials", { token: minted.token })).status, 200, "the token works");
    const ui = await loggedInUi();
    const { page } = ui;
    await openTab(page, "keys");
    const tr = row(page, "tokens-table", "id", minted.id);
    await tr.waitFor({ state: "visible" });
    const c = await cells(tr);
    assert.equal(c[0], "ui task");
    assert.equal(c[2], created.id);
    assert.equal(c[4], "7 / 7");
    const secretPart = minted.token.slice(`vt_${minted.id}_`.length);
    assert.ok(!(await page.evaluate(() => document.documentElement.outerHTML)).includes(secretPart), "the token's secret is in the page");
    const outcome = await expectStatus(page);
    await ui.confirm(true, () => tr.locator('button[data-action="revoke"]').click());
    await tr.waitFor({ state: "detached" });
    assert.equal((await outcome()).cls, "ok");
    assert.equal((await api(base, "GET", "/v1/credentials", { token: minted.token })).status, 401, "the revoked token is refused");
    await finish(ui);
  });

  // ----- 8. roles --------------------------------------------------------------------------------

  it("creates a custom role usable for keys and deletes it; built-in roles cannot be deleted", T, async () => {
    const ui = await loggedInUi();
    const { page } = ui;
    await openTab(page, "roles");
    for (const builtin of ["admin", "executor", "read-only"]) {
      const tr = row(page, "roles-table", "name", builtin);
      await tr.waitFor({ state: "visible" });
      assert.equal(await tr.locator('button[data-action="delete"]').count(), 0, `built-in ${builtin} has a delete button`);
    }
    const name = `ui-role-${rand()}`;
    await page.fill("#role-name", name);
    await page.check('input[name="perm"][value="read"]');
    await page.check('input[name="perm"][value="execute"]');
    await page.fill("#role-scopes", "github-*, gitlab-ci");
    await page.fill("#role-description", "made in the browser");
    let outcome = await expectStatus(page);
    await page.locator('#role-form [type="submit"], #role-form button:not([type])').first().click();
    const tr = row(page, "roles-table", "name", name);
    await tr.waitFor({ state: "visible" });
    assert.equal((await outcome()).cls, "ok");
    const text = (await cells(tr)).join(" | ");
    for (const want of ["read", "execute", "github-*", "gitlab-ci"]) assert.ok(text.includes(want), `${want} in row: ${text}`);
    assert.ok(!/\bwrite\b|\badmin\b/.test(text.replace(name, "")), `unchecked permissions in row: ${text}`);
    const stored = (await apiOk(base, "GET", "/v1/roles", { token: admin })).roles.find((r) => r.name === name);
    assert.deepEqual([...stored.permissions].sort(), ["execute", "read"]);
    assert.deepEqual(stored.scopes, ["github-*", "gitlab-ci"]);
    assert.equal(stored.description, "made in the browser");

    await openTab(page, "keys");
    await page.locator(`#key-role option[value="${name}"]`).waitFor({ state: "attached" });
    for (const builtin of ["admin", "executor", "read-only"]) {
      assert.equal(await page.locator(`#key-role option[value="${builtin}"]`).count(), 1, `${builtin} in #key-role`);
    }

    await openTab(page, "roles");
    outcome = await expectStatus(page);
    await ui.confirm(true, () => tr.locator('button[data-action="delete"]').click());
    await tr.waitFor({ state: "detached" });
    assert.equal((await outcome()).cls, "ok");
    const roles = (await apiOk(base, "GET", "/v1/roles", { token: admin })).roles;
    assert.ok(!roles.some((r) => r.name === name));
    await openTab(page, "keys");
    await page.locator(`#key-role option[value="${name}"]`).waitFor({ state: "detached" });
    await finish(ui);
  });

  // ----- 9. audit --------------------------------------------------------------------------------

  it("lists audit events newest first, 50 a page, with more pages on demand", { timeout: 120_000 }, async () => {
    // A credential event, then enough newer events for a second page (key creates are cheap).
    await credentialViaApi(`ui-audit-old-${rand()}`);
    for (let i = 0; i < 55; i++) {
      await apiOk(base, "POST", "/v1/keys", { token: admin, body: { name: `audit-filler-${i}`, role: "read-only" } });
    }
    const ui = await loggedInUi();
    const { page } = ui;
    await openTab(page, "audit");
    const rows = page.locator("table#audit-table tbody tr");
    await eventually(async () => (await rows.count()) > 0, "audit rows");
    const first = await apiOk(base, "GET", "/v1/audit?limit=50", { token: admin });
    assert.ok(first.cursor, "the API has a second page");
    assert.equal(await rows.count(), 50, "one page of 50");
    const actionsOf = async () => rows.evaluateAll((trs) => trs.map((tr) => tr.cells[2]?.textContent.trim()));
    assert.deepEqual(await actionsOf(), first.events.map((e) => e.action), "the first page, newest first");
    const top = await cells(rows.first());
    assert.equal(top.length, 10, `cells of an audit row: ${JSON.stringify(top)}`);
    assert.equal(top[1], first.events[0].actor);
    assert.ok(top[8].startsWith(first.events[0].outcome), `outcome cell ${top[8]}`);

    await page.locator("#audit-more").waitFor({ state: "visible" });
    const second = await apiOk(base, "GET", `/v1/audit?limit=50&cursor=${encodeURIComponent(first.cursor)}`, { token: admin });
    await page.click("#audit-more");
    await eventually(async () => (await rows.count()) > 50, "the next page appended");
    assert.equal(await rows.count(), 50 + second.events.length);
    const all = await actionsOf();
    assert.deepEqual(all, [...first.events, ...second.events].map((e) => e.action));
    for (const action of ["login", "credential.create", "key.create"]) {
      assert.ok(all.includes(action), `${action} in the audit table`);
    }
    assert.equal(await page.locator("#audit-more").isVisible(), Boolean(second.cursor), "#audit-more shown exactly when there is a next page");

    // Refresh shows a new event on top and starts again from the first page.
    const alias = `ui-audit-${rand()}`;
    await credentialViaApi(alias);
    await page.click("#audit-refresh");
    await eventually(async () => {
      const c = await cells(rows.first());
      return c[2] === "credential.create" && c[3] === alias;
    }, "the new event on top after refresh");
    assert.equal(await rows.count(), 50);
    await finish(ui);
  });

  /**
   * Seeded through the API as an agent: credential A (3 allowed executes, 2 denied) and B (1
   * allowed), by one executor key. Returns {a, b, keyId, seeded} (`seeded`: before the executes).
   */
  async function seedRequests() {
    const a = `ui-chart-a-${rand()}`;
    const b = `ui-chart-b-${rand()}`;
    await credentialViaApi(a, { hosts: ["127.0.0.1"] });
    await credentialViaApi(b, { hosts: ["127.0.0.1"] });
    const k = await apiOk(base, "POST", "/v1/keys", { token: admin, body: { name: `ui-chart-${rand()}`, role: "executor" } });
    // The instant between the credential events and the executes: a custom range ends here.
    await new Promise((r) => setTimeout(r, 5));
    const seeded = Date.now();
    await new Promise((r) => setTimeout(r, 5));
    const run = (alias, url, status) =>
      apiOk(base, "POST", "/v1/execute", { token: k.key, body: { credential: alias, method: "GET", url } }, status);
    for (let i = 0; i < 3; i++) await run(a, `${upstream.url}/chart`, 200);
    // A host the policy does not allow: denied before anything is sent.
    for (let i = 0; i < 2; i++) await run(a, "https://not-allowed.example/chart", 403);
    await run(b, `${upstream.url}/chart`, 200);
    return { a, b, keyId: k.id, seeded };
  }

  /** The audit table's rows as [action, credential, outcome cell]. */
  async function auditRows(page) {
    return page
      .locator("table#audit-table tbody tr")
      .evaluateAll((trs) => trs.map((tr) => [2, 3, 8].map((i) => tr.cells[i]?.textContent.trim())));
  }

  /** Apply the filter form and wait until the page has loaded what it asks. */
  async function applyFilters(page) {
    await page.click("#audit-apply");
    await eventually(async () => page.evaluate(() => !document.querySelector("#audit-apply").disabled), "the filters applied");
  }

  it("filters the audit by credential, actor, outcome and time range, in the address and the query", { timeout: 120_000 }, async () => {
    const { a, keyId, seeded } = await seedRequests();
    const ui = await loggedInUi();
    const { page } = ui;
    const requested = [];
    page.on("request", (r) => {
      const u = new URL(r.url());
      if (u.pathname === "/v1/audit") requested.push(u.searchParams);
    });
    await openTab(page, "audit");
    await eventually(async () => (await auditRows(page)).length > 0, "audit rows");
    assert.match(page.url(), /#audit\?range=24h$/, "the default range is in the address");

    // Credential: exactly the API's events of A (its create, 3 allowed, 2 denied), newest first.
    await page.fill("#audit-credential", a);
    requested.length = 0;
    await applyFilters(page);
    await eventually(async () => (await auditRows(page)).every((r) => r[1] === a), "only A's events");
    const ofA = await apiOk(base, "GET", `/v1/audit?credential=${encodeURIComponent(a)}`, { token: admin });
    assert.deepEqual(
      (await auditRows(page)).map((r) => r[0]),
      ofA.events.map((e) => e.action),
    );
    assert.equal(ofA.events.length, 6);
    assert.ok(requested.some((q) => q.get("credential") === a && Number(q.get("since")) > 0), "GET /v1/audit?credential=…&since=…");
    assert.equal(new URL(page.url()).hash, `#audit?credential=${encodeURIComponent(a)}&range=24h`);

    // Outcome: the two denied ones.
    await page.selectOption("#audit-outcome", "denied");
    requested.length = 0;
    await applyFilters(page);
    await eventually(async () => (await auditRows(page)).length === 2, "two denied events");
    for (const [action, credential, outcome] of await auditRows(page)) {
      assert.equal(action, "execute");
      assert.equal(credential, a);
      assert.match(outcome, /^denied/);
    }
    assert.ok(requested.some((q) => q.get("outcome") === "denied" && q.get("credential") === a));
    assert.match(page.url(), /outcome=denied/);

    // Actor: the key's five executes (the create was the admin's).
    await page.selectOption("#audit-outcome", "");
    await page.fill("#audit-actor", `key:${keyId}`);
    requested.length = 0;
    await applyFilters(page);
    await eventually(async () => (await auditRows(page)).length === 5, "the key's five events");
    assert.ok(requested.some((q) => q.get("actor") === `key:${keyId}`));

    // Time range: a custom one ending before the executes holds none of them (until is excluded).
    await page.fill("#audit-actor", "");
    await page.selectOption("#audit-range", "custom");
    await page.locator("#audit-until").waitFor({ state: "visible" });
    await page.fill("#audit-since", new Date(seeded - 3600_000).toISOString().slice(0, 19));
    await page.fill("#audit-until", new Date(seeded).toISOString().slice(0, 19));
    requested.length = 0;
    await applyFilters(page);
    const untilSecond = Math.floor(seeded / 1000) * 1000;
    await eventually(async () => requested.some((q) => q.get("until") === String(untilSecond)), "GET /v1/audit?until=…");
    await eventually(async () => (await auditRows(page)).every((r) => r[0] !== "execute"), "no execute before the seed");
    assert.match(page.url(), new RegExp(`range=custom&since=\\d+&until=${untilSecond}`));
    // A range that ends before it starts is refused by the page, with nothing asked.
    await page.fill("#audit-since", new Date(seeded + 3600_000).toISOString().slice(0, 19));
    const outcome = await expectStatus(page);
    await page.click("#audit-apply");
    const refused = await outcome();
    assert.deepEqual([refused.cls, refused.text], ["error", "From must be before Until."]);

    // The address restores the view (a bookmark): the form is filled from it.
    await page.goto(`/#audit?credential=${encodeURIComponent(a)}&outcome=allowed&range=7d`);
    await page.locator("section#tab-audit").waitFor({ state: "visible" });
    await eventually(async () => (await auditRows(page)).length === 3, "A's three allowed events from the address");
    assert.equal(await page.inputValue("#audit-credential"), a);
    assert.equal(await page.inputValue("#audit-outcome"), "allowed");
    assert.equal(await page.inputValue("#audit-range"), "7d");
    await finish(ui);
  });

  it("charts requests per hour by outcome and credential, with a text table, drawn by the page", { timeout: 120_000 }, async () => {
    const { a, b } = await seedRequests();
    const ui = await loggedInUi();
    const { page } = ui;
    await page.goto(`/#audit?credential=${encodeURIComponent(a)}&range=24h`);
    await page.locator("section#tab-audit").waitFor({ state: "visible" });
    const legend = () => page.locator("#audit-legend li").evaluateAll((lis) => lis.map((li) => li.textContent.trim()));
    await eventually(async () => (await legend()).includes("allowed: 3"), "the legend counts A's allowed requests");
    assert.deepEqual(await legend(), ["allowed: 3", "denied: 2", "error: 0", "cancelled: 0"]);
    // The bars: an inline SVG of this page, one stacked bar per hour of the range.
    const bars = await page.locator("#audit-chart svg g.bar").evaluateAll((gs) =>
      gs.map((g) => ({
        total: Number(g.dataset.total),
        rects: Array.from(g.querySelectorAll("rect")).map((r) => ({
          outcome: r.dataset.outcome,
          count: Number(r.dataset.count),
          height: Number(r.getAttribute("height")),
        })),
      })),
    );
    assert.ok(bars.length >= 24 && bars.length <= 26, `${bars.length} hourly bars in 24 hours`);
    const sum = (outcome) => bars.flatMap((b) => b.rects).filter((r) => r.outcome === outcome).reduce((n, r) => n + r.count, 0);
    assert.equal(sum("allowed"), 3);
    assert.equal(sum("denied"), 2);
    assert.ok(bars.flatMap((b) => b.rects).every((r) => r.height > 0));
    assert.equal(bars.reduce((n, b) => n + b.total, 0), 5);
    // The tallest bar reaches the top of the plot; the figures are in the SVG's accessible name.
    const name = await page.locator("#audit-chart-title").textContent();
    assert.match(name, /5 in all \(3 allowed, 2 denied, 0 error, 0 cancelled\)/);
    assert.equal(await page.locator("#audit-chart svg").getAttribute("aria-labelledby"), "audit-chart-title");
    // The same as a table: hours with requests, and totals per credential.
    const hours = await page.locator("#audit-hours tbody tr").evaluateAll((trs) => trs.map((tr) => Array.from(tr.cells).map((c) => c.textContent.trim())));
    assert.deepEqual(
      hours.reduce((t, r) => t.map((n, i) => n + Number(r[i + 1])), [0, 0, 0, 0, 0]),
      [3, 2, 0, 0, 5],
      `hour rows ${JSON.stringify(hours)}`,
    );
    assert.deepEqual(await cells(row(page, "audit-by-credential", "credential", a)), [a, "3", "2", "0", "0", "5", ""]);
    assert.ok(await page.locator("#audit-chart-note").isHidden(), "nothing cut");

    // Every credential: a row each; "Only this one" narrows the view (and the address) to B.
    await page.fill("#audit-credential", "");
    await page.click("#audit-apply");
    const rowB = row(page, "audit-by-credential", "credential", b);
    await rowB.waitFor({ state: "visible" });
    assert.deepEqual((await cells(rowB)).slice(0, 6), [b, "1", "0", "0", "0", "1"]);
    assert.deepEqual((await cells(row(page, "audit-by-credential", "credential", a))).slice(0, 6), [a, "3", "2", "0", "0", "5"]);
    await rowB.locator('button[data-action="only"]').click();
    await eventually(async () => (await legend()).join() === "allowed: 1,denied: 0,error: 0,cancelled: 0", "B's chart");
    assert.equal(new URL(page.url()).hash, `#audit?credential=${encodeURIComponent(b)}&range=24h`);
    assert.equal(await page.inputValue("#audit-credential"), b);
    await finish(ui);
  });

  // ----- 10. logout ------------------------------------------------------------------------------

  it("logs out: login view, sessionStorage cleared, and the old session is dead", T, async () => {
    const ui = await loggedInUi();
    const { page } = ui;
    const cookie = (await ui.context.cookies()).find((c) => c.value.startsWith("vc_"));
    assert.ok(cookie);
    const csrf = await page.evaluate(() => sessionStorage.getItem("vultrino.csrf"));
    assert.ok(csrf);
    await page.click("#logout");
    await page.locator("#login-view").waitFor({ state: "visible" });
    assert.equal(await hasHidden(page, "#app"), true);
    assert.equal(await page.locator("#app").isVisible(), false);
    assert.match(await page.textContent("#login-notice"), /signed out/i, "a notice, not an error");
    assert.equal(await page.textContent("#login-error"), "");
    assert.equal(await page.evaluate(() => sessionStorage.length), 0, "sessionStorage cleared");
    assert.equal(await page.evaluate(async () => (await fetch("/v1/credentials")).status), 401);
    // The old cookie itself no longer opens a session (not merely forgotten by the browser).
    const r = await api(base, "GET", "/v1/credentials", {
      headers: { cookie: `${cookie.name}=${cookie.value}`, "x-csrf-token": csrf },
    });
    assert.equal(r.status, 401);
    await page.reload();
    await page.locator("#login-form").waitFor({ state: "visible" });
    assert.equal(await hasHidden(page, "#app"), true);
    await finish(ui);
  });

  it("a reply to a request sent before signing out does not turn 'Signed out.' into 'session ended'", T, async () => {
    const ui = await loggedInUi();
    const { page } = ui;
    // Hold the next credentials list in the browser until this tab has signed out: it then
    // reaches the server with a dead session and gets 401 (a slow reply, made certain).
    let release;
    const held = new Promise((r) => (release = r));
    let sent;
    const holding = new Promise((r) => (sent = r));
    await page.route("**/v1/credentials**", async (route) => {
      sent();
      await held;
      await route.continue();
    });
    await page.click('button[data-tab="credentials"]');
    await holding;
    await page.click("#logout");
    await page.locator("#login-view").waitFor({ state: "visible" });
    const late = page.waitForResponse((r) => new URL(r.url()).pathname === "/v1/credentials");
    release();
    assert.equal((await late).status(), 401);
    await page.waitForTimeout(200);
    assert.match(await page.textContent("#login-notice"), /^signed out\.$/i);
    assert.equal(await page.textContent("#login-error"), "");
    await finish(ui);
  });

  // ----- 11. sign out everywhere -----------------------------------------------------------------

  it("signs out everywhere: another browser's session and an API session end at once", T, async () => {
    const mine = await loggedInUi();
    const other = await loggedInUi();
    const token = await apiLogin(base);
    assert.equal((await api(base, "GET", "/v1/credentials", { token })).status, 200);
    await mine.page.click("#logout-everywhere");
    await mine.page.locator("#login-view").waitFor({ state: "visible" });
    assert.match(await mine.page.textContent("#login-notice"), /signed out everywhere/i, "a notice, not an error");
    assert.equal(await mine.page.textContent("#login-error"), "");
    assert.equal(await mine.page.evaluate(() => sessionStorage.length), 0, "sessionStorage cleared");
    // The other browser, which did nothing: its next request finds its session ended.
    await other.page.click('button[data-tab="keys"]');
    await other.page.locator("#login-view").waitFor({ state: "visible" });
    assert.match(await other.page.textContent("#login-notice"), /session has ended/i);
    assert.equal((await api(base, "GET", "/v1/credentials", { token })).status, 401, "the API session ended too");
    // Signing in again works.
    await loginThroughForm(mine.page, ADMIN_PASSWORD);
    await mine.page.locator("#app").waitFor({ state: "visible" });
    await finish(mine);
    await finish(other);
    // The suite's own admin session ended as well: later tests need a new one.
    admin = await apiLogin(base);
  });
  // ----- 12. approvals ---------------------------------------------------------------------------

  /** A credential on the loopback upstream whose every request waits for a person, and an agent key. */
  async function approvalSetup() {
    const alias = `ui-ap-${rand()}`;
    await apiOk(base, "POST", "/v1/credentials", {
      token: admin,
      body: {
        alias,
        type: "api_key",
        data: { key: `ap-secret-${rand()}` },
        policy: { allowed_hosts: ["127.0.0.1"], require_approval: "always" },
      },
    });
    const key = (await apiOk(base, "POST", "/v1/keys", { token: admin, body: { name: `ui-ap-${rand()}`, role: "executor" } })).key;
    return { alias, key };
  }

  /** The agent's request: POST /v1/execute with a JSON body (and the approval id once it has one). */
  function agentSend({ alias, key }, path, approval) {
    return api(base, "POST", "/v1/execute", {
      token: key,
      headers: approval ? { "x-vultrino-approval": approval } : {},
      body: { credential: alias, method: "POST", url: `${upstream.url}${path}`, body: { title: "from the agent" }, reason: "file the bug <b>now</b>" },
    });
  }

  async function approvalStatus(id) {
    return (await apiOk(base, "GET", `/v1/approvals/${id}`, { token: admin })).status;
  }

  it("approves through the notification's link after sign-in; opening the page changes nothing; the re-send runs once", T, async () => {
    const agent = await approvalSetup();
    const path = `/ap-${rand()}`;
    const first = await agentSend(agent, path);
    assert.equal(first.status, 202, first.text);
    const id = first.json.approval_id;
    assert.match(id, /^ap_/);

    // The link of the notification, opened by someone not signed in: sign-in, nothing decided.
    const ui = await openPage(browser, base);
    const { page } = ui;
    await page.goto(`/ui/#/approvals/${id}`);
    await page.locator("#login-form").waitFor({ state: "visible" });
    assert.equal(await approvalStatus(id), "pending", "opening the link decided something");
    await loginThroughForm(page, ADMIN_PASSWORD);
    await page.locator("section#tab-approval").waitFor({ state: "visible" });
    const fields = page.locator("#approval-fields tbody");
    await eventually(async () => (await fields.textContent()).includes(agent.alias), "the approval's fields");
    const text = await fields.textContent();
    for (const want of ["pending", "POST", `${upstream.url}${path}`, "file the bug <b>now</b>"]) {
      assert.ok(text.includes(want), `${want} in ${text}`);
    }
    assert.equal(await page.locator("#approval-fields b").count(), 0, "the reason is text, not markup");
    assert.match(await page.textContent("#approval-body"), /from the agent/);
    assert.equal(await approvalStatus(id), "pending", "showing the approval decided something");
    assert.equal(upstream.seen.filter((r) => r.url === path).length, 0, "nothing ran before approval");

    // Dismissing the confirmation decides nothing; accepting it approves.
    await ui.confirm(false, () => page.click("#approval-approve"));
    await page.waitForTimeout(300);
    assert.equal(await approvalStatus(id), "pending", "a dismissed confirmation approved");
    const outcome = await expectStatus(page);
    const question = await ui.confirm(true, () => page.click("#approval-approve"));
    assert.match(question, new RegExp(`POST .*${path}`));
    assert.equal((await outcome()).cls, "ok");
    assert.equal(await approvalStatus(id), "approved");
    await eventually(async () => hasHidden(page, "#approval-decide"), "no buttons once decided");
    const posts = ui.rec.statuses.filter((r) => r.url.includes(`/v1/approvals/${id}/`));
    assert.equal(posts.length, 1, "one decision request from the page");

    // The agent's re-send of the same request runs, once.
    const again = await agentSend(agent, path, id);
    assert.equal(again.status, 200, again.text);
    assert.equal(upstream.seen.filter((r) => r.url === path).length, 1);
    assert.equal((await agentSend(agent, path, id)).status, 409, "an approval runs one request");
    await finish(ui);
  });

  it("lists pending approvals with a badge and denies one from the list; the re-send is refused", T, async () => {
    const agent = await approvalSetup();
    const path = `/deny-${rand()}`;
    const first = await agentSend(agent, path);
    assert.equal(first.status, 202, first.text);
    const id = first.json.approval_id;
    const ui = await loggedInUi();
    const { page } = ui;
    await eventually(async () => Number((await page.textContent("#approvals-badge")) || 0) >= 1, "the pending badge");
    await openTab(page, "approvals");
    const tr = row(page, "approvals-table", "id", id);
    await tr.waitFor({ state: "visible" });
    const c = await cells(tr);
    assert.equal(c[1], "pending");
    assert.equal(c[2], agent.alias);
    await tr.locator('button[data-action="open"]').click();
    await page.locator("section#tab-approval").waitFor({ state: "visible" });
    assert.equal(new URL(page.url()).hash, `#/approvals/${id}`);
    await eventually(async () => !(await hasHidden(page, "#approval-decide")), "the decision buttons");
    await page.fill("#approval-note", "not this one");
    const outcome = await expectStatus(page);
    await ui.confirm(true, () => page.click("#approval-deny"));
    assert.equal((await outcome()).cls, "ok");
    const stored = await apiOk(base, "GET", `/v1/approvals/${id}`, { token: admin });
    assert.equal(stored.status, "denied");
    assert.match(stored.decided_by || "", /admin/);
    const again = await agentSend(agent, path, id);
    assert.equal(again.status, 403, again.text);
    assert.equal(again.json?.error?.code, "approval_denied");
    assert.equal(upstream.seen.filter((r) => r.url === path).length, 0, "a denied request never ran");
    // Back to the list: it is no longer pending.
    await page.click("#approval-back");
    await page.locator("section#tab-approvals").waitFor({ state: "visible" });
    await tr.waitFor({ state: "detached" });
    await finish(ui);
  });
});
