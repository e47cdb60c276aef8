// Vultrino admin UI. No framework, no build step, no third-party code: it is served by the core
// under a Content-Security-Policy that allows scripts from this origin only.
//
// Session: POST /login sets an HttpOnly session cookie; the CSRF token from the login reply is
// kept in sessionStorage (this tab only) and sent as X-CSRF-Token with every request — the
// server wants it on reads too, since browsers send the cookie to every port of the host. The
// bearer token in the login reply is dropped. Everything from the server is written as text, never
// as markup.
//
// Editing a credential shows its whole policy (GET /v1/credentials/{alias} returns it) and sends
// it back whole; a new secret is sent as `secret`, which replaces the secret alone and keeps the
// type's other settings (header, prefix, token URL…).
"use strict";

(() => {
  const CSRF_KEY = "vultrino.csrf";
  const AUDIT_PAGE = 50;
  const $ = (selector) => document.querySelector(selector);
  const $$ = (selector) => Array.from(document.querySelectorAll(selector));
  const words = (s) => s.split(/[\s,]+/).filter(Boolean);
  // Path prefixes may contain commas (the server allows them), never whitespace.
  const paths = (s) => s.split(/\s+/).filter(Boolean);

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  // ---- HTTP -----------------------------------------------------------------------------------

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const csrf = sessionStorage.getItem(CSRF_KEY);
    if (csrf) headers["X-CSRF-Token"] = csrf;
    let resp;
    try {
      resp = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "same-origin",
        cache: "no-store",
      });
    } catch (e) {
      throw new ApiError(0, "unreachable", `Vultrino did not answer (${e.message}).`);
    }
    if (resp.status === 204) return null;
    const text = await resp.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!resp.ok) {
      const err = (data && data.error) || {};
      let message = err.message || `HTTP ${resp.status}`;
      const retry = resp.headers.get("Retry-After");
      if (retry) message += ` (try again in ${retry} s)`;
      // 401: the session is gone; 403 csrf_failed: this tab's token is not the session's (another
      // tab signed in and replaced the cookie). Either way, sign in again.
      const lost = resp.status === 401 || (resp.status === 403 && err.code === "csrf_failed");
      // Only for a request of the session this tab still holds: a late reply to one sent before
      // this tab signed out (or in again) must not replace "Signed out." or end the new session.
      const current = csrf !== null && sessionStorage.getItem(CSRF_KEY) === csrf;
      if (lost && path !== "/login" && current) sessionLost();
      throw new ApiError(resp.status, err.code || `http_${resp.status}`, message);
    }
    return data;
  }

  // Every page of a list endpoint, bounded.
  async function listAll(path, field) {
    const items = [];
    let cursor = null;
    for (let page = 0; page < 100; page++) {
      const sep = path.includes("?") ? "&" : "?";
      const r = await api("GET", cursor ? `${path}${sep}cursor=${encodeURIComponent(cursor)}` : path);
      items.push(...(r[field] || []));
      cursor = r.cursor;
      if (!cursor) break;
    }
    return items;
  }

  // ---- small DOM helpers ----------------------------------------------------------------------

  function cell(text) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined || text === "" ? "—" : String(text);
    return td;
  }

  function button(label, action, cls) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    b.dataset.action = action;
    if (cls) b.className = cls;
    return b;
  }

  // A table row: `data-*` attributes from `data`, one text cell per entry of `texts`, then (unless
  // `actions` is null) a last cell holding `actions`: buttons, or text.
  function tableRow(data, texts, actions = []) {
    const tr = document.createElement("tr");
    Object.assign(tr.dataset, data);
    tr.append(...texts.map(cell));
    if (actions !== null) {
      const last = document.createElement("td");
      last.className = "row-actions";
      last.append(...actions);
      tr.append(last);
    }
    return tr;
  }

  // Route clicks on a table's row buttons to `handlers[data-action](row, button)`.
  function onRowButton(table, handlers) {
    $(`${table} tbody`).addEventListener("click", (ev) => {
      const b = ev.target.closest("button[data-action]");
      const handler = b && handlers[b.dataset.action];
      if (handler) handler(b.closest("tr"), b);
    });
  }

  // After a confirm(): DELETE `path`, say `done`, reload the table with `reload`.
  function deleteAfterConfirm(b, question, path, done, reload) {
    if (!confirm(question)) return;
    pressed(b, async () => {
      await api("DELETE", path);
      status(done, "ok");
      await reload();
    });
  }

  function time(ms) {
    if (!ms) return "—";
    return new Date(ms).toISOString().slice(0, 19).replace("T", " ");
  }

  function status(message, kind) {
    const s = $("#status");
    s.textContent = message;
    s.className = kind;
  }

  // A form the page itself refuses before sending anything.
  class FormError extends Error {}

  function reportError(e) {
    const known = e instanceof ApiError || e instanceof FormError;
    status(known ? e.message : `Unexpected error: ${e}`, "error");
  }

  // Run `action` with `buttons` disabled, so a second click cannot repeat it while it runs; its
  // error goes to `onError` (the status line unless said otherwise).
  async function disabledWhile(buttons, action, onError = reportError) {
    if (buttons.some((b) => b.disabled)) return;
    buttons.forEach((b) => (b.disabled = true));
    try {
      await action();
    } catch (e) {
      onError(e);
    } finally {
      buttons.forEach((b) => (b.disabled = false));
    }
  }

  const busy = (form, action, onError) =>
    disabledWhile(Array.from(form.querySelectorAll("button")), action, onError);
  const pressed = (b, action) => disabledWhile([b], action);

  // ---- session --------------------------------------------------------------------------------

  function showLogin(notice) {
    $("#app").hidden = true;
    $("#tabs").hidden = true;
    $("#login-view").hidden = false;
    $("#login-notice").textContent = notice || "";
    $("#login-error").textContent = "";
    $("#login-password").focus();
  }

  // Forget everything this tab holds of the session: its token, a key still on show, the tables.
  function forgetSession() {
    sessionStorage.removeItem(CSRF_KEY);
    resetCredentialForm();
    $("#new-key-value").textContent = "";
    $("#new-key").hidden = true;
    for (const tbody of $$("#app tbody")) tbody.replaceChildren();
    auditCursor = null;
    auditCredentialsListed = false;
    $("#audit-more").hidden = true;
    $("#audit-chart").replaceChildren();
    $("#audit-legend").replaceChildren();
    stopBadge();
    clearApproval();
    status("", "");
  }

  function sessionLost() {
    forgetSession();
    showLogin("Your session has ended. Sign in again.");
  }

  function showApp() {
    $("#login-view").hidden = true;
    $("#app").hidden = false;
    $("#tabs").hidden = false;
    route();
    startBadge();
  }

  // The page the address names: `#/approvals/<id>` (the link of an approval notification: it
  // only shows the approval), `#<tab>`, or the credentials tab.
  function route() {
    const id = approvalIdInHash();
    if (id !== null) {
      showApproval(id);
      return;
    }
    const wanted = location.hash.slice(1).split("?")[0];
    showTab(Object.hasOwn(loaders, wanted) ? wanted : "credentials");
  }

  function approvalIdInHash() {
    const m = /^#\/approvals\/([^/]+)$/.exec(location.hash);
    if (!m) return null;
    try {
      return decodeURIComponent(m[1]);
    } catch {
      return null;
    }
  }

  window.addEventListener("hashchange", () => {
    if (!$("#app").hidden) {
      status("", "");
      route();
    }
  });

  $("#login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    $("#login-error").textContent = "";
    $("#login-notice").textContent = "";
    const loginError = (e) => ($("#login-error").textContent = e.message);
    busy(ev.currentTarget, async () => {
      const r = await api("POST", "/login", {
        username: $("#login-username").value,
        password: $("#login-password").value,
      });
      sessionStorage.setItem(CSRF_KEY, r.csrf_token);
      $("#login-password").value = "";
      // The session cookie is `Secure`: browsers keep it over HTTPS and on localhost only.
      const probe = await fetch("/v1/credentials?limit=1", {
        credentials: "same-origin",
        cache: "no-store",
        headers: { "X-CSRF-Token": r.csrf_token },
      });
      if (probe.status === 401) {
        sessionStorage.removeItem(CSRF_KEY);
        throw new FormError(
          "Signed in, but this browser did not keep the session cookie (it is Secure: it needs HTTPS, or http://localhost / http://127.0.0.1).",
        );
      }
      status("", "");
      showApp();
    }, loginError);
  });

  $("#logout").addEventListener("click", (ev) =>
    pressed(ev.currentTarget, async () => {
      try {
        await api("POST", "/logout");
      } catch (e) {
        // 401: ended already (api() has shown sign-in). Anything else: the session may still be
        // alive on the server, so it is reported and the page stays.
        if (e.status === 401) return;
        throw e;
      }
      forgetSession();
      showLogin("Signed out.");
    }),
  );

  // Every session of the admin ends, this one included (POST /logout?everywhere=true).
  $("#logout-everywhere").addEventListener("click", (ev) =>
    pressed(ev.currentTarget, async () => {
      try {
        await api("POST", "/logout?everywhere=true");
      } catch (e) {
        if (e.status === 401) return;
        throw e;
      }
      forgetSession();
      showLogin("Signed out everywhere: every session of this admin has ended.");
    }),
  );

  // ---- tabs -----------------------------------------------------------------------------------

  const loaders = {
    credentials: loadCredentials,
    approvals: loadApprovals,
    keys: loadKeys,
    roles: loadRoles,
    audit: () => loadAudit(false),
  };

  function showTab(name) {
    for (const b of $$("button[data-tab]")) b.classList.toggle("active", b.dataset.tab === name);
    for (const s of $$("#app > section")) s.hidden = s.id !== `tab-${name}`;
    // The audit tab keeps its filters in the address (`#audit?…`).
    if (location.hash.split("?")[0] !== `#${name}`) history.replaceState(null, "", `#${name}`);
    loaders[name]().catch(reportError);
  }

  for (const b of $$("button[data-tab]")) {
    b.addEventListener("click", () => {
      status("", "");
      showTab(b.dataset.tab);
    });
  }

  // ---- credentials ----------------------------------------------------------------------------

  async function loadCredentials() {
    const creds = await listAll("/v1/credentials", "credentials");
    creds.sort((a, b) => a.alias.localeCompare(b.alias));
    const rows = creds.map((c) =>
      tableRow(
        { alias: c.alias },
        [c.alias, c.type, c.description, (c.allowed_hosts || []).join(", "), c.base_url, time(c.updated_at)],
        [button("Edit", "edit"), button("Delete", "delete", "danger")],
      ),
    );
    $("#credentials-table tbody").replaceChildren(...rows);
    $("#credentials-empty").hidden = rows.length > 0;
  }

  function selectedType() {
    return $("#cred-type").value;
  }

  // Adding: the chosen type's fields. Editing: none (a new secret has its own field).
  function showTypeFields() {
    for (const f of $$("fieldset[data-type]")) {
      f.hidden = editing() || f.dataset.type !== selectedType();
    }
  }
  $("#cred-type").addEventListener("change", showTypeFields);

  function editing() {
    return $("#credential-form").dataset.mode === "edit";
  }

  // Add mode (no alias) or edit mode for `alias`: everything that differs between the two.
  function credentialFormMode(alias) {
    const edit = alias !== undefined;
    $("#credential-form").dataset.mode = edit ? "edit" : "add";
    $("#cred-alias").readOnly = edit;
    $("#cred-type").disabled = edit;
    $("#cred-form-title").textContent = edit ? `Edit ${alias}` : "Add a credential";
    $("#cred-submit").textContent = edit ? "Save changes" : "Add credential";
    $("#cred-cancel").hidden = !edit;
    $("#cred-new-secret-label").hidden = !edit;
    // Where an agent points its SDK for this credential (the pass-through proxy, docs/proxy.md).
    $("#cred-proxy-hint").hidden = !edit;
    $("#cred-proxy-url").textContent = edit ? `${location.origin}/proxy/${encodeURIComponent(alias)}` : "";
    showTypeFields();
  }

  function resetCredentialForm() {
    $("#credential-form").reset();
    credentialFormMode();
  }

  async function startEdit(alias) {
    const c = await api("GET", `/v1/credentials/${encodeURIComponent(alias)}`);
    resetCredentialForm();
    $("#cred-alias").value = c.alias;
    $("#cred-type").value = c.type;
    $("#cred-description").value = c.description || "";
    $("#cred-base-url").value = c.base_url || "";
    const p = c.policy;
    $("#cred-hosts").value = p.allowed_hosts.join(", ");
    $("#cred-methods").value = (p.methods || []).join(" ");
    $("#cred-paths").value = (p.path_prefixes || []).join(" ");
    $("#cred-rate-requests").value = p.rate_limit ? p.rate_limit.requests : "";
    $("#cred-rate-seconds").value = p.rate_limit ? p.rate_limit.per_seconds : "";
    $("#cred-pass-cookies").checked = p.pass_cookies === true;
    credentialFormMode(c.alias);
    $("#credential-form").scrollIntoView({ block: "start" });
    $("#cred-description").focus();
  }

  function value(id) {
    return $(`#${id}`).value;
  }

  // Optional text fields are left out when empty, so the server's defaults apply.
  function optional(id) {
    const v = value(id);
    return v.trim() === "" ? undefined : v;
  }

  function credentialData(type) {
    switch (type) {
      case "api_key":
        return { key: value("cred-key"), header: optional("cred-header"), prefix: optional("cred-prefix") };
      case "basic_auth":
        return { username: value("cred-username"), password: value("cred-password") };
      case "query_param":
        return { name: value("cred-param-name").trim(), value: value("cred-param-value") };
      case "oauth2": {
        const scopes = words(value("cred-scopes"));
        return {
          token_url: value("cred-token-url").trim(),
          client_id: value("cred-client-id").trim(),
          client_secret: value("cred-client-secret"),
          scopes: scopes.length ? scopes : undefined,
          refresh_token: optional("cred-refresh-token"),
        };
      }
      default:
        throw new Error(`unknown credential type ${type}`);
    }
  }

  // A number field's value, or undefined when empty. Text the browser could not read as a
  // number also shows as "", so it is refused here rather than taken for "empty".
  function number(id) {
    const input = $(`#${id}`);
    if (input.validity.badInput) {
      const label = input.closest("label").firstChild.textContent.trim();
      throw new FormError(`${label}: not a number.`);
    }
    const v = input.value.trim();
    return v === "" ? undefined : Number(v);
  }

  function policy() {
    const p = { allowed_hosts: words(value("cred-hosts")) };
    const methods = words(value("cred-methods")).map((m) => m.toUpperCase());
    if (methods.length) p.methods = methods;
    const prefixes = paths(value("cred-paths"));
    if (prefixes.length) p.path_prefixes = prefixes;
    const requests = number("cred-rate-requests");
    const per = number("cred-rate-seconds");
    if ((requests === undefined) !== (per === undefined)) {
      throw new FormError("Give both numbers of the rate limit (requests per seconds), or neither.");
    }
    if (requests !== undefined) p.rate_limit = { requests, per_seconds: per };
    if ($("#cred-pass-cookies").checked) p.pass_cookies = true;
    return p;
  }

  $("#credential-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    busy(ev.currentTarget, async () => {
      const alias = value("cred-alias").trim();
      const type = selectedType();
      const description = value("cred-description");
      if (editing()) {
        // An empty base URL removes it (the server's rule for ""); the field is always sent, so
        // what the form shows is what is stored.
        const body = { description, base_url: value("cred-base-url").trim(), policy: policy() };
        const secret = value("cred-new-secret");
        if (secret !== "") body.secret = secret;
        await api("PUT", `/v1/credentials/${encodeURIComponent(alias)}`, body);
        status(`Saved ${alias}${body.secret ? " with its new secret" : ""}.`, "ok");
      } else {
        await api("POST", "/v1/credentials", {
          alias,
          type,
          description: description === "" ? undefined : description,
          base_url: optional("cred-base-url")?.trim(),
          data: credentialData(type),
          policy: policy(),
        });
        status(`Added ${alias}.`, "ok");
      }
      resetCredentialForm();
      await loadCredentials();
    });
  });

  $("#cred-cancel").addEventListener("click", () => {
    resetCredentialForm();
    status("", "");
  });

  onRowButton("#credentials-table", {
    edit: (tr) => startEdit(tr.dataset.alias).catch(reportError),
    delete: (tr, b) => {
      const alias = tr.dataset.alias;
      deleteAfterConfirm(
        b,
        `Delete the credential "${alias}"? Agents that use it will be refused.`,
        `/v1/credentials/${encodeURIComponent(alias)}`,
        `Deleted ${alias}.`,
        async () => {
          if (editing() && value("cred-alias") === alias) resetCredentialForm();
          await loadCredentials();
        },
      );
    },
  });

  // ---- keys -----------------------------------------------------------------------------------

  async function fillRoleSelect() {
    const roles = (await api("GET", "/v1/roles")).roles || [];
    const select = $("#key-role");
    // The least-privileged role that can make requests, unless the admin picked another.
    const previous = select.dataset.chosen || "executor";
    select.replaceChildren(
      ...roles.map((r) => {
        const o = document.createElement("option");
        o.value = r.name;
        o.textContent = r.name;
        return o;
      }),
    );
    if (roles.some((r) => r.name === previous)) select.value = previous;
  }

  async function loadKeys() {
    const [keys] = await Promise.all([listAll("/v1/keys", "keys"), fillRoleSelect()]);
    const rows = keys.map((k) =>
      tableRow(
        { id: k.id },
        [
          k.name,
          k.role,
          k.id,
          time(k.created_at),
          k.expires_at ? time(k.expires_at) : "never",
          k.last_used_at ? time(k.last_used_at) : "never",
        ],
        [button("Revoke", "revoke", "danger")],
      ),
    );
    $("#keys-table tbody").replaceChildren(...rows);
    $("#keys-empty").hidden = rows.length > 0;
    await loadTokens();
  }

  async function loadTokens() {
    const tokens = (await api("GET", "/v1/tokens")).tokens || [];
    const rows = tokens.map((t) =>
      tableRow(
        { id: t.id },
        [
          t.name,
          t.id,
          t.parent_key,
          t.credentials.join(", "),
          `${t.uses_left} / ${t.uses}`,
          time(t.expires_at),
        ],
        [button("Revoke", "revoke", "danger")],
      ),
    );
    $("#tokens-table tbody").replaceChildren(...rows);
    $("#tokens-empty").hidden = rows.length > 0;
  }

  $("#key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const form = ev.currentTarget;
    busy(form, async () => {
      const r = await api("POST", "/v1/keys", {
        name: value("key-name").trim(),
        role: value("key-role"),
        expires_in_days: number("key-expires"),
      });
      $("#new-key-value").textContent = r.key;
      $("#new-key").hidden = false;
      form.reset();
      delete $("#key-role").dataset.chosen;
      status(`Created key ${r.name} (${r.role}).`, "ok");
      await loadKeys();
    });
  });

  $("#key-role").addEventListener("change", (ev) => {
    ev.currentTarget.dataset.chosen = ev.currentTarget.value;
  });

  $("#new-key-dismiss").addEventListener("click", () => {
    $("#new-key-value").textContent = "";
    $("#new-key").hidden = true;
  });

  onRowButton("#keys-table", {
    revoke: (tr, b) => {
      const name = tr.cells[0].textContent;
      deleteAfterConfirm(
        b,
        `Revoke the key "${name}"? Agents using it are refused at once.`,
        `/v1/keys/${encodeURIComponent(tr.dataset.id)}`,
        `Revoked ${name}.`,
        loadKeys,
      );
    },
  });

  onRowButton("#tokens-table", {
    revoke: (tr, b) => {
      const id = tr.dataset.id;
      deleteAfterConfirm(
        b,
        `Revoke the token ${id}? Agents using it are refused at once.`,
        `/v1/tokens/${encodeURIComponent(id)}`,
        `Revoked token ${id}.`,
        loadTokens,
      );
    },
  });

  // ---- roles ----------------------------------------------------------------------------------

  async function loadRoles() {
    const roles = (await api("GET", "/v1/roles")).roles || [];
    const rows = roles.map((r) =>
      tableRow(
        { name: r.name },
        [r.name, (r.permissions || []).join(", "), (r.scopes || []).join(", "), r.description],
        [r.builtin ? "built-in" : button("Delete", "delete", "danger")],
      ),
    );
    $("#roles-table tbody").replaceChildren(...rows);
  }

  $("#role-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const form = ev.currentTarget;
    busy(form, async () => {
      const name = value("role-name").trim();
      const description = value("role-description");
      await api("POST", "/v1/roles", {
        name,
        permissions: $$("input[name=perm]:checked").map((c) => c.value),
        scopes: words(value("role-scopes")),
        description: description === "" ? undefined : description,
      });
      form.reset();
      status(`Created role ${name}.`, "ok");
      await loadRoles();
    });
  });

  onRowButton("#roles-table", {
    delete: (tr, b) => {
      const name = tr.dataset.name;
      deleteAfterConfirm(
        b,
        `Delete the role "${name}"?`,
        `/v1/roles/${encodeURIComponent(name)}`,
        `Deleted role ${name}.`,
        loadRoles,
      );
    },
  });

  // ---- approvals ------------------------------------------------------------------------------
  //
  // The list and the page of one approval only READ (GET). Approve and deny are POSTs with the
  // CSRF token, each after a confirm(): a link that opens the page, followed by a person or a
  // chat app's previewer, decides nothing.

  const BADGE_EVERY_MS = 20_000;
  let badgeTimer = null;

  function startBadge() {
    stopBadge();
    refreshBadge();
    badgeTimer = setInterval(refreshBadge, BADGE_EVERY_MS);
  }

  function stopBadge() {
    if (badgeTimer !== null) clearInterval(badgeTimer);
    badgeTimer = null;
    $("#approvals-badge").textContent = "";
    $("#approvals-badge").hidden = true;
  }

  function showBadge(count, more) {
    const badge = $("#approvals-badge");
    badge.textContent = count > 0 ? `${count}${more ? "+" : ""}` : "";
    badge.hidden = count === 0;
  }

  // The number of pending approvals, in the nav. A failure leaves the badge as it was (a lost
  // session is handled by api()).
  async function refreshBadge() {
    if (sessionStorage.getItem(CSRF_KEY) === null) return;
    try {
      const r = await api("GET", "/v1/approvals?status=pending");
      showBadge((r.approvals || []).length, Boolean(r.cursor));
    } catch {
      // shown on the Approvals tab when the admin opens it
    }
  }

  async function loadApprovals() {
    const wanted = $("#approvals-filter").value;
    const r = await api("GET", wanted ? `/v1/approvals?status=${encodeURIComponent(wanted)}` : "/v1/approvals");
    const items = r.approvals || [];
    if (wanted === "pending") showBadge(items.length, Boolean(r.cursor));
    const rows = items.map((a) => {
      const tr = tableRow(
        { id: a.id },
        [time(a.created_at), a.status, a.credential, a.method, a.url, a.requested_by, time(a.expires_at)],
        [button(a.status === "pending" ? "Review" : "Open", "open")],
      );
      if (a.status === "pending") tr.className = "pending";
      return tr;
    });
    $("#approvals-table tbody").replaceChildren(...rows);
    $("#approvals-empty").hidden = rows.length > 0;
  }

  $("#approvals-filter").addEventListener("change", () => loadApprovals().catch(reportError));
  $("#approvals-refresh").addEventListener("click", (ev) => pressed(ev.currentTarget, loadApprovals));

  onRowButton("#approvals-table", {
    open: (tr) => {
      location.hash = `#/approvals/${encodeURIComponent(tr.dataset.id)}`;
    },
  });

  // The approval on show (its id and what it binds), for the buttons' confirmations.
  let shownApproval = null;

  function clearApproval() {
    shownApproval = null;
    $("#approval-id").textContent = "";
    $("#approval-fields tbody").replaceChildren();
    $("#approval-headers tbody").replaceChildren();
    $("#approval-body").textContent = "";
    $("#approval-body-size").textContent = "";
    $("#approval-note").value = "";
    $("#approval-decide").hidden = true;
  }

  function field(name, value) {
    const tr = document.createElement("tr");
    const th = document.createElement("th");
    th.textContent = name;
    tr.append(th, cell(value));
    return tr;
  }

  // The body preview as text: a string, or {text, truncated}.
  function previewText(p) {
    if (p === null || p === undefined) return "";
    if (typeof p === "string") return p;
    const text = typeof p.text === "string" ? p.text : "";
    return p.truncated ? `${text}\n… (truncated)` : text;
  }

  function showApproval(id) {
    for (const b of $$("button[data-tab]")) b.classList.toggle("active", b.dataset.tab === "approvals");
    for (const sec of $$("#app > section")) sec.hidden = sec.id !== "tab-approval";
    clearApproval();
    $("#approval-id").textContent = id;
    loadApproval(id).catch(reportError);
  }

  async function loadApproval(id) {
    const a = await api("GET", `/v1/approvals/${encodeURIComponent(id)}`);
    // The address may have moved on while the reply came.
    if (approvalIdInHash() !== id) return;
    shownApproval = a;
    const decided = a.decided_at ? `${time(a.decided_at)} by ${a.decided_by || "—"}` : "";
    $("#approval-fields tbody").replaceChildren(
      field("Status", a.status),
      field("Credential", a.credential),
      field("Method", a.method),
      field("URL", a.url),
      field("Reason (from the agent)", a.reason),
      field("Requested by", a.requested_by),
      field("Via", a.via),
      field("Requested (UTC)", time(a.created_at)),
      field("Expires (UTC)", time(a.expires_at)),
      field("Decided (UTC)", decided),
      field("Note", a.note),
      field("Executed (UTC)", a.executed_at ? time(a.executed_at) : ""),
      field("Body SHA-256", a.body_sha256),
    );
    const headers = (a.headers || []).map((h) => tableRow({}, [h[0], h[1]], null));
    $("#approval-headers tbody").replaceChildren(...headers);
    $("#approval-headers-empty").hidden = headers.length > 0;
    const size = Number(a.body_size || 0);
    $("#approval-body-size").textContent = size === 0 ? "(empty)" : `(${size} bytes)`;
    $("#approval-body").textContent = previewText(a.body_preview) + (a.body_truncated ? "\n… (truncated: only the start is shown)" : "");
    $("#approval-decide").hidden = a.status !== "pending";
  }

  async function decideApproval(verb, b) {
    const a = shownApproval;
    if (!a) return;
    const question =
      verb === "approve"
        ? `Approve ${a.method} ${a.url} with "${a.credential}"? The agent's re-send of exactly this request will run once.`
        : `Deny ${a.method} ${a.url} with "${a.credential}"? The agent's re-send will be refused.`;
    if (!confirm(question)) return;
    const note = value("approval-note").trim();
    await pressed(b, async () => {
      try {
        await api("POST", `/v1/approvals/${encodeURIComponent(a.id)}/${verb}`, note ? { note } : undefined);
      } finally {
        // Whatever happened (decided here, or by someone else first: 409), show what it is now.
        if (approvalIdInHash() === a.id) await loadApproval(a.id).catch(() => {});
        refreshBadge();
      }
      status(
        verb === "approve"
          ? `Approved ${a.id}: the agent's re-send of this request will run once.`
          : `Denied ${a.id}.`,
        "ok",
      );
    });
  }

  $("#approval-approve").addEventListener("click", (ev) => decideApproval("approve", ev.currentTarget));
  $("#approval-deny").addEventListener("click", (ev) => decideApproval("deny", ev.currentTarget));

  // ---- audit ----------------------------------------------------------------------------------
  //
  // The filters live in the address (`#audit?credential=…&actor=…&outcome=…&range=24h`, or
  // `range=custom&since=MS&until=MS`), so a view can be bookmarked and shared. The list asks
  // GET /v1/audit with the same filters; the chart pages through the whole range (at most
  // CHART_MAX_CALLS calls of 1000, saying so when that bound cut it) and counts the requests —
  // executes and proxied calls — per hour and outcome, drawn as inline SVG by this script.

  const HOUR = 3600 * 1000;
  const RANGES = { "1h": HOUR, "24h": 24 * HOUR, "7d": 7 * 24 * HOUR, "30d": 30 * 24 * HOUR };
  const MAX_RANGE = 31 * 24 * HOUR;
  const CHART_MAX_CALLS = 20;
  const REQUEST_ACTIONS = ["execute", "proxy"];
  const OUTCOMES = ["allowed", "denied", "error", "cancelled"];
  const SVG = "http://www.w3.org/2000/svg";
  let auditCursor = null;
  let auditQuery = "";
  let auditCredentialsListed = false;

  // `YYYY-MM-DDTHH:MM:SS` (a datetime-local value, read as UTC) ↔ ms.
  const fromLocalInput = (v) => (v ? Date.parse(`${v}Z`) : NaN);
  // A time the address can carry but a date field cannot show (past year 9999, or not a date
  // at all: `#audit?since=9e15`) leaves the field empty instead of breaking the view.
  const toLocalInput = (ms) =>
    Number.isFinite(ms) && ms >= 0 && ms < 253402300800000
      ? new Date(ms).toISOString().slice(0, 19)
      : "";

  // The filters in the address, as URLSearchParams (empty when there are none).
  function hashParams() {
    const q = location.hash.indexOf("?");
    return new URLSearchParams(q < 0 ? "" : location.hash.slice(q + 1));
  }

  function showCustomRange() {
    const custom = $("#audit-range").value === "custom";
    $("#audit-since-label").hidden = !custom;
    $("#audit-until-label").hidden = !custom;
  }

  // The form from the address's filters (unknown values fall back to the defaults).
  function filtersFromHash() {
    const p = hashParams();
    $("#audit-credential").value = p.get("credential") || "";
    $("#audit-actor").value = p.get("actor") || "";
    const outcome = p.get("outcome") || "";
    $("#audit-outcome").value = Array.from($("#audit-outcome").options).some((o) => o.value === outcome) ? outcome : "";
    const range = p.get("range") || "24h";
    $("#audit-range").value = range === "custom" || Object.hasOwn(RANGES, range) ? range : "24h";
    const since = Number(p.get("since"));
    const until = Number(p.get("until"));
    $("#audit-since").value = since > 0 ? toLocalInput(since) : "";
    $("#audit-until").value = until > 0 ? toLocalInput(until) : "";
    showCustomRange();
  }

  // What the form asks: {hash: the address's query, api: GET /v1/audit's filters, from, to}.
  function filtersFromForm() {
    const hash = new URLSearchParams();
    const api = new URLSearchParams();
    for (const name of ["credential", "actor", "outcome"]) {
      const v = $(`#audit-${name}`).value.trim();
      if (v) {
        hash.set(name, v);
        api.set(name, v);
      }
    }
    const range = $("#audit-range").value;
    hash.set("range", range);
    const now = Date.now();
    let from;
    let to;
    if (range === "custom") {
      from = fromLocalInput($("#audit-since").value);
      to = $("#audit-until").value ? fromLocalInput($("#audit-until").value) : null;
      if (Number.isNaN(from)) throw new FormError("Choose when the range starts (From).");
      if (Number.isNaN(to)) throw new FormError("Until is not a valid time.");
      if (to !== null && from >= to) throw new FormError("From must be before Until.");
      if ((to ?? now) - from > MAX_RANGE) throw new FormError("Choose a range of at most 31 days.");
      hash.set("since", String(from));
      if (to !== null) hash.set("until", String(to));
    } else {
      from = now - RANGES[range];
      to = null;
    }
    api.set("since", String(from));
    if (to !== null) api.set("until", String(to));
    return { hash: hash.toString(), api: api.toString(), from, to: to ?? now };
  }

  function writeAuditHash(query) {
    const wanted = `#audit?${query}`;
    if (location.hash !== wanted) history.replaceState(null, "", wanted);
  }

  async function loadAudit(more) {
    if (more && !auditCursor) return;
    let f = null;
    if (!more) {
      if (location.hash.startsWith("#audit?")) filtersFromHash();
      f = filtersFromForm();
      writeAuditHash(f.hash);
      auditQuery = f.api;
      auditCursor = null;
      listAuditCredentials();
    }
    // A filtered page may hold fewer events than asked and still have a cursor: follow it until
    // the page is full (bounded), so "Older events" means older events.
    const events = [];
    let cursor = more ? auditCursor : null;
    for (let call = 0; call < CHART_MAX_CALLS && events.length < AUDIT_PAGE; call++) {
      let path = `/v1/audit?limit=${AUDIT_PAGE - events.length}&${auditQuery}`;
      if (cursor) path += `&cursor=${encodeURIComponent(cursor)}`;
      const r = await api("GET", path);
      events.push(...(r.events || []));
      cursor = r.cursor || null;
      if (!cursor) break;
    }
    const rows = events.map((e) => {
      const tr = tableRow(
        {},
        [
          time(e.ts),
          e.actor,
          e.action,
          e.credential,
          e.method,
          e.host,
          e.path,
          e.status,
          e.code ? `${e.outcome} (${e.code})` : e.outcome,
          e.duration_ms,
        ],
        null,
      );
      if (e.outcome && e.outcome !== "success" && e.outcome !== "allowed") tr.className = "denied";
      return tr;
    });
    const tbody = $("#audit-table tbody");
    if (more) tbody.append(...rows);
    else tbody.replaceChildren(...rows);
    $("#audit-empty").hidden = tbody.rows.length > 0;
    auditCursor = cursor;
    $("#audit-more").hidden = !auditCursor;
    if (f) await loadChart(f);
  }

  // The credentials' aliases as suggestions for the credential filter (once per sign-in).
  function listAuditCredentials() {
    if (auditCredentialsListed) return;
    auditCredentialsListed = true;
    listAll("/v1/credentials", "credentials")
      .then((creds) => {
        $("#audit-credentials").replaceChildren(
          ...creds.map((c) => {
            const o = document.createElement("option");
            o.value = c.alias;
            return o;
          }),
        );
      })
      .catch(() => (auditCredentialsListed = false));
  }

  // Every request event of the range (newest first), at most CHART_MAX_CALLS calls: {events, cut}.
  async function rangeEvents(f) {
    const events = [];
    let cursor = null;
    for (let call = 0; call < CHART_MAX_CALLS; call++) {
      let path = `/v1/audit?limit=1000&${f.api}`;
      if (cursor) path += `&cursor=${encodeURIComponent(cursor)}`;
      const r = await api("GET", path);
      events.push(...(r.events || []).filter((e) => REQUEST_ACTIONS.includes(e.action)));
      cursor = r.cursor || null;
      if (!cursor) return { events, cut: false };
    }
    return { events, cut: true };
  }

  const zero = () => Object.fromEntries(OUTCOMES.map((o) => [o, 0]));
  const totalOf = (counts) => OUTCOMES.reduce((n, o) => n + counts[o], 0);
  // An event stands for `count` requests when the audit rolled repeated refusals into one.
  const weight = (e) => (Number.isInteger(e.count) && e.count > 0 ? e.count : 1);

  async function loadChart(f) {
    const { events, cut } = await rangeEvents(f);
    // When the bound cut the range, the chart starts at the oldest event it counted.
    const oldest = events.length ? events[events.length - 1].ts : f.from;
    const start = Math.floor((cut ? oldest : f.from) / HOUR) * HOUR;
    const end = Math.max(start + HOUR, Math.ceil(f.to / HOUR) * HOUR);
    const hours = [];
    for (let t = start; t < end; t += HOUR) hours.push({ t, counts: zero() });
    const byCredential = new Map();
    for (const e of events) {
      if (!OUTCOMES.includes(e.outcome)) continue;
      const h = hours[Math.floor((e.ts - start) / HOUR)];
      if (h) h.counts[e.outcome] += weight(e);
      const alias = e.credential || "—";
      if (!byCredential.has(alias)) byCredential.set(alias, zero());
      byCredential.get(alias)[e.outcome] += weight(e);
    }
    const note = $("#audit-chart-note");
    note.hidden = !cut;
    note.textContent = cut
      ? `The range holds more events than the chart reads (${CHART_MAX_CALLS} × 1000): it counts the newest ones only, from ${time(oldest)} on. Narrow the range or the filters to see all of it.`
      : "";
    $("#audit-chart-scope").textContent = `${time(start)} to ${time(end)} UTC`;
    drawChart(hours);
    const totals = zero();
    for (const h of hours) for (const o of OUTCOMES) totals[o] += h.counts[o];
    $("#audit-legend").replaceChildren(
      ...OUTCOMES.map((o) => {
        const li = document.createElement("li");
        const swatch = document.createElement("span");
        swatch.className = `swatch o-${o}`;
        li.dataset.outcome = o;
        li.append(swatch, `${o}: ${totals[o]}`);
        return li;
      }),
    );
    $("#audit-hours tbody").replaceChildren(
      ...hours
        .filter((h) => totalOf(h.counts) > 0)
        .reverse()
        .map((h) =>
          tableRow({ hour: String(h.t) }, [time(h.t).slice(0, 13) + ":00", ...OUTCOMES.map((o) => h.counts[o]), totalOf(h.counts)], null),
        ),
    );
    const credentials = Array.from(byCredential.entries()).sort((a, b) => totalOf(b[1]) - totalOf(a[1]) || a[0].localeCompare(b[0]));
    $("#audit-by-credential tbody").replaceChildren(
      ...credentials.map(([alias, counts]) =>
        tableRow(
          { credential: alias },
          [alias, ...OUTCOMES.map((o) => counts[o]), totalOf(counts)],
          alias === "—" || $("#audit-credential").value.trim() === alias ? [] : [button("Only this one", "only")],
        ),
      ),
    );
    $("#audit-chart-empty").hidden = events.length > 0;
  }

  function svg(name, attrs) {
    const el = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
    return el;
  }

  // One stacked bar per hour (outcomes bottom to top in OUTCOMES order), a y axis with the peak,
  // a title per bar for pointer users; the table under the chart says the same in text.
  function drawChart(hours) {
    const W = 960;
    const H = 200;
    const pad = { left: 40, right: 8, top: 10, bottom: 24 };
    const plotW = W - pad.left - pad.right;
    const plotH = H - pad.top - pad.bottom;
    const peak = Math.max(1, ...hours.map((h) => totalOf(h.counts)));
    const slot = plotW / hours.length;
    const barW = Math.max(1, slot * 0.8);
    const total = hours.reduce((n, h) => n + totalOf(h.counts), 0);
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": "audit-chart-title" });
    const title = svg("title", { id: "audit-chart-title" });
    title.textContent = `Requests per hour, ${hours.length} hours from ${time(hours[0].t)} UTC: ${total} in all (${OUTCOMES.map((o) => `${hours.reduce((n, h) => n + h.counts[o], 0)} ${o}`).join(", ")}). The same figures are in the table below.`;
    root.append(title);
    root.append(svg("line", { class: "axis", x1: pad.left, y1: pad.top + plotH, x2: W - pad.right, y2: pad.top + plotH }));
    for (const [value, y] of [[peak, pad.top], [0, pad.top + plotH]]) {
      const label = svg("text", { class: "tick", x: pad.left - 4, y: y + 4, "text-anchor": "end" });
      label.textContent = String(value);
      root.append(label);
    }
    const every = Math.max(1, Math.ceil(hours.length / 8));
    hours.forEach((h, i) => {
      const x = pad.left + i * slot + (slot - barW) / 2;
      const g = svg("g", { class: "bar", "data-hour": h.t, "data-total": totalOf(h.counts) });
      const tip = svg("title", {});
      tip.textContent = `${time(h.t).slice(0, 13)}:00 UTC: ${OUTCOMES.map((o) => `${h.counts[o]} ${o}`).join(", ")}`;
      g.append(tip);
      let y = pad.top + plotH;
      for (const o of OUTCOMES) {
        const n = h.counts[o];
        if (!n) continue;
        const height = (n / peak) * plotH;
        y -= height;
        g.append(svg("rect", { class: `o-${o}`, "data-outcome": o, "data-count": n, x, y, width: barW, height }));
      }
      root.append(g);
      if (i % every === 0) {
        const label = svg("text", { class: "tick", x: pad.left + i * slot, y: H - 6 });
        label.textContent = hours.length > 48 ? time(h.t).slice(5, 10) : `${time(h.t).slice(11, 13)}h`;
        root.append(label);
      }
    });
    $("#audit-chart").replaceChildren(root);
  }

  $("#audit-range").addEventListener("change", () => {
    // A custom range starts out as the one shown, so only what changes needs typing.
    if ($("#audit-range").value === "custom" && !$("#audit-since").value) {
      $("#audit-since").value = toLocalInput(Date.now() - 24 * HOUR);
    }
    showCustomRange();
  });
  $("#audit-filters").addEventListener("submit", (ev) => {
    ev.preventDefault();
    busy(ev.currentTarget, () => {
      // The form wins over the address: drop its query before reading the form.
      history.replaceState(null, "", "#audit");
      return loadAudit(false);
    });
  });
  $("#audit-clear").addEventListener("click", (ev) =>
    pressed(ev.currentTarget, () => {
      history.replaceState(null, "", "#audit");
      $("#audit-filters").reset();
      showCustomRange();
      return loadAudit(false);
    }),
  );
  onRowButton("#audit-by-credential", {
    only: (tr, b) =>
      pressed(b, () => {
        history.replaceState(null, "", "#audit");
        $("#audit-credential").value = tr.dataset.credential;
        return loadAudit(false);
      }),
  });
  $("#audit-refresh").addEventListener("click", (ev) =>
    pressed(ev.currentTarget, () => {
      history.replaceState(null, "", "#audit");
      return loadAudit(false);
    }),
  );
  $("#audit-more").addEventListener("click", (ev) => pressed(ev.currentTarget, () => loadAudit(true)));

  // ---- start ----------------------------------------------------------------------------------

  resetCredentialForm();
  if (sessionStorage.getItem(CSRF_KEY)) {
    // The cookie may have outlived the server's session (restart, logout elsewhere): ask.
    api("GET", "/v1/credentials?limit=1")
      .then(showApp)
      .catch((e) => {
        // A lost session has shown sign-in already (see api()).
        if (e.status !== 401 && e.code !== "csrf_failed") showLogin(e.message);
      });
  } else {
    showLogin("");
  }
})();
