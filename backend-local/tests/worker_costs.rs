//! What a request costs the worker in platform operations, and what it does when audit storage
//! is unavailable — checked in workerd on the TEST worker (`backend-cloudflare/test-build`,
//! feature `testkit`), whose ports count every KV read, write, delete and list, every Durable
//! Object request (per namespace) and every upstream subrequest (`backend-cloudflare/src/
//! counting.rs`; the deployable build has no such counters nor their route):
//!
//! - an execute, a `/proxy/` call, an MCP tool call and a login (failed or not) write, delete
//!   and list nothing in KV: their audit events go to the `AUDIT` Durable Objects
//!   (docs/decisions/0100); the one KV write left is a key's `last_used_at`, on its first use
//!   in an hour (docs/decisions/0109); every route's counts are printed (`--nocapture`) — the figures of
//!   docs/deploy-cloudflare.md, "What a request costs";
//! - `AUDIT_REQUIRED=true`: with the audit store down, an execute and a proxy call are refused
//!   with 503 `audit_unavailable` and nothing reaches the upstream; back up, they are served and
//!   each leaves one event (its final outcome, not `started`);
//! - a warm call reads the key's revocation marker once (one session-object request) and two
//!   KV records; with `KEY_RECORD_REUSE_SECONDS`, one (the key's is reused), and a revoked key
//!   is still refused on its next request (docs/decisions/0117);
//! - by default, with the audit store down, the request is served and the loss is counted in
//!   `GET /v1/audit/sinks` (row `audit_store`), never silent (docs/decisions/0109).
//!
//! `#[ignore]`d because they need the test worker built first (`scripts/setup-workers.sh`);
//! `scripts/test.sh` builds it and runs these with `--include-ignored` in its loopback-only
//! namespace. Alone:
//!
//! ```sh
//! scripts/worker.sh build --test
//! unshare -n bash -c 'ip link set lo up && cargo test -p vultrino-local --test worker_costs -- --include-ignored --nocapture'
//! ```
#![allow(clippy::unwrap_used)] // test setup: a failed bind or parse is a broken test machine

mod support;

use serde_json::{json, Value};
use support::upstream::Upstream;
use support::{expect, expect_for, Client, Server, ServerOptions};

const SECRET: &str = "sk-costs-Lq93vXz2";

struct Edge {
    server: Server,
    c: Client,
    up: Upstream,
    admin: String,
    agent: String,
}

/// The test worker in workerd (with `env` settings), a credential `api` (base URL the loopback
/// upstream) and an agent key.
async fn edge(env: &[(&str, &str)]) -> Edge {
    let up = Upstream::start().await;
    let mut extra_env = vec![("WORKER_BUILD".to_string(), "test-build".to_string())];
    extra_env.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let server = Server::start_workerd(ServerOptions {
        extra_env,
        ..ServerOptions::default()
    })
    .await;
    let c = Client::new(server.target());
    let admin = c.login().await;
    let r = c
        .send(
            "POST",
            "/v1/credentials",
            Some(&admin),
            Some(&json!({
                "alias": "api", "type": "api_key", "description": "costs",
                "data": {"key": SECRET},
                "policy": {"allowed_hosts": ["127.0.0.1"]},
                "base_url": up.url(""),
            })),
        )
        .await;
    expect(&r, 201, None);
    let r = c
        .send(
            "POST",
            "/v1/keys",
            Some(&admin),
            Some(&json!({"name": "agent", "role": "executor"})),
        )
        .await;
    expect(&r, 201, None);
    let agent = r.body["key"].as_str().unwrap().to_string();
    Edge {
        server,
        c,
        up,
        admin,
        agent,
    }
}

impl Edge {
    /// The counts since the last call (and zeroes them).
    async fn counts(&self) -> Value {
        let r = self.c.send("POST", "/__testkit/counts", None, None).await;
        expect_for("the test worker's counters", &r, 200, None);
        r.body
    }

    /// [`Edge::counts`] once the audit object has been asked for the call's event: a `/proxy/`
    /// call's event is written when its reply body ends, which the runtime may see after the
    /// client has the whole body (the counters are read without a reset, up to 5 s, first).
    async fn counts_once_audited(&self) -> Value {
        for _ in 0..50 {
            let r = self.c.send("GET", "/__testkit/counts", None, None).await;
            expect_for("the test worker's counters", &r, 200, None);
            if r.body["do_audit"].as_u64().unwrap_or(0) >= 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        self.counts().await
    }

    async fn audit_down(&self, down: bool) {
        let r = self
            .c
            .send(
                "POST",
                "/__testkit/audit-down",
                None,
                Some(&json!({ "down": down })),
            )
            .await;
        expect_for("the audit-store switch", &r, 200, None);
    }

    async fn execute(&self, path: &str) -> support::Reply {
        self.execute_as(&self.agent, path).await
    }

    async fn execute_as(&self, who: &str, path: &str) -> support::Reply {
        self.c
            .send(
                "POST",
                "/v1/execute",
                Some(who),
                Some(&json!({"credential": "api", "method": "GET", "url": self.up.url(path)})),
            )
            .await
    }

    async fn proxy(&self, path: &str) -> support::Reply {
        self.c
            .send("GET", &format!("/proxy/api{path}"), Some(&self.agent), None)
            .await
    }

    async fn mcp_call(&self, path: &str) -> support::Reply {
        let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "http_request",
            "arguments": {"credential": "api", "method": "GET", "url": self.up.url(path)}}});
        let rb = self
            .c
            .http
            .post(format!("{}/mcp", self.server.base))
            .bearer_auth(&self.agent)
            .header("accept", "application/json")
            .header("mcp-protocol-version", "2025-11-25")
            .json(&call);
        self.c.send_raw(rb).await
    }

    /// The stored events of `action` (newest first).
    async fn events(&self, action: &str) -> Vec<Value> {
        let r = self
            .c
            .send("GET", "/v1/audit?limit=1000", Some(&self.admin), None)
            .await;
        expect(&r, 200, None);
        r.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == action)
            .cloned()
            .collect()
    }

    /// [`Edge::events`] once `done` holds for them (read again for up to 5 s): a `/proxy/`
    /// call's final event is written when its reply body ends, after the client has its reply.
    async fn events_until(&self, action: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let mut events = self.events(action).await;
        for _ in 0..50 {
            if done(&events) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            events = self.events(action).await;
        }
        events
    }
}

/// Counts of one route as a table row (printed; the figures of docs/deploy-cloudflare.md).
fn row(route: &str, c: &Value) -> String {
    format!(
        "| {route} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        c["kv_reads"],
        c["kv_writes"],
        c["kv_deletes"],
        c["kv_lists"],
        c["do_sessions"],
        c["do_audit"],
        c["subrequests"],
        c["rows_sessions"],
        c["rows_audit"]
    )
}

/// What a warm call (execute, proxy, MCP) with an API key costs at most (docs/decisions/0117):
/// `kv_reads` KV reads (the key's record and the credential's; 1 with
/// `KEY_RECORD_REUSE_SECONDS`, the key's being reused), one session-object request (the key's
/// revocation marker, read once), one audit-object request (its event), one subrequest, no
/// session-object write. (Its audit event's SQLite rows are checked over the whole run: an
/// event written in the background may be counted with the next call's.)
#[track_caller]
fn warm_costs(route: &str, c: &Value, kv_reads: u64) {
    writes_nothing_to_kv(route, c);
    assert_eq!(c["kv_reads"], kv_reads, "{route}: {c}");
    assert_eq!(
        c["do_sessions"], 1,
        "{route}: the revocation marker only: {c}"
    );
    assert_eq!(c["do_audit"], 1, "{route}: audited in the DO: {c}");
    assert_eq!(c["subrequests"], 1, "{route}: {c}");
    assert_eq!(
        c["rows_sessions"], 0,
        "{route}: no session-object write: {c}"
    );
}

#[track_caller]
fn writes_nothing_to_kv(route: &str, c: &Value) {
    assert_eq!(c["kv_writes"], 0, "{route} wrote to KV: {c}");
    assert_eq!(c["kv_deletes"], 0, "{route} deleted in KV: {c}");
    assert_eq!(c["kv_lists"], 0, "{route} listed KV: {c}");
}

#[tokio::test]
#[ignore = "needs the test worker: scripts/setup-workers.sh (scripts/test.sh runs it)"]
async fn an_execute_a_proxy_call_an_mcp_call_and_a_login_write_nothing_to_kv() {
    let e = edge(&[]).await;
    let mut table = vec![
        "| route | KV reads | KV writes | KV deletes | KV lists | DO requests (sessions) | DO requests (audit) | subrequests | storage writes (sessions) | SQLite rows written (audit) |".to_string(),
        "|---|---|---|---|---|---|---|---|---|---|".to_string(),
    ];
    e.counts().await;

    // The key's first use writes its `last_used_at` (one KV write, at most once an hour per
    // key on the worker); then the warm execute writes nothing.
    let r = e.execute("/echo").await;
    expect(&r, 200, None);
    let c = e.counts().await;
    assert_eq!(c["kv_writes"], 1, "only the key's last_used_at: {c}");
    assert_eq!(c["kv_deletes"], 0, "{c}");
    table.push(row("execute (first use of the key in the hour)", &c));
    let mut audit_rows = c["rows_audit"].as_u64().unwrap();
    for label in ["execute (warm)", "execute (warm, again)"] {
        let r = e.execute("/echo").await;
        expect(&r, 200, None);
        let c = e.counts().await;
        audit_rows += c["rows_audit"].as_u64().unwrap();
        warm_costs(label, &c, 2);
        table.push(row(label, &c));
    }
    for label in ["proxy (first)", "proxy (warm)"] {
        let r = e.proxy("/echo").await;
        expect(&r, 200, None);
        let c = e.counts_once_audited().await;
        audit_rows += c["rows_audit"].as_u64().unwrap();
        warm_costs(label, &c, 2);
        table.push(row(label, &c));
    }
    let r = e.mcp_call("/echo").await;
    expect(&r, 200, None);
    assert!(r.body["result"].is_object(), "{}", r.text);
    let c = e.counts().await;
    audit_rows += c["rows_audit"].as_u64().unwrap();
    warm_costs("MCP tools/call http_request", &c, 2);
    table.push(row("MCP tools/call http_request", &c));
    // Six calls, one event each: ONE SQLite row an event (a `WITHOUT ROWID` table keyed by the
    // event id, no other index; the prune writes nothing when nothing has expired), counted by
    // SQLite (`rowsWritten`). Decision 0121; it was 3. An event written in the background
    // (after its response) is counted once its object answers: the counts are read (not
    // reset) until all six can be in, then the total must be exactly six.
    for _ in 0..100 {
        let late = e.c.send("GET", "/__testkit/counts", None, None).await;
        expect_for("the test worker's counters", &late, 200, None);
        if audit_rows + late.body["rows_audit"].as_u64().unwrap() >= 6 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    audit_rows += e.counts().await["rows_audit"].as_u64().unwrap();
    assert_eq!(audit_rows, 6, "{audit_rows} audit rows for six events");

    // An agent token (decision 0084): its record and its parent key's are read, and its
    // markers and use counter are Durable Object requests (docs/decisions/0117).
    let r =
        e.c.send(
            "POST",
            "/v1/tokens",
            Some(&e.agent),
            Some(&json!({"credentials": ["api"], "uses": 100})),
        )
        .await;
    expect(&r, 201, None);
    let token = r.body["token"].as_str().unwrap().to_string();
    e.counts().await;
    for label in [
        "execute with an agent token",
        "execute with an agent token (again)",
    ] {
        let r = e.execute_as(&token, "/echo").await;
        expect(&r, 200, None);
        let c = e.counts().await;
        writes_nothing_to_kv(label, &c);
        assert_eq!(c["subrequests"], 1, "{label}: {c}");
        table.push(row(label, &c));
    }

    // Logins: the session is a Durable Object; the event goes to the audit objects.
    let admin = e.c.login().await;
    let c = e.counts().await;
    writes_nothing_to_kv("login", &c);
    table.push(row("login", &c));
    let r =
        e.c.send(
            "POST",
            "/login",
            None,
            Some(&json!({"username": "admin", "password": "not the password"})),
        )
        .await;
    expect(&r, 401, None);
    let c = e.counts().await;
    writes_nothing_to_kv("login (wrong password)", &c);
    table.push(row("login (wrong password)", &c));

    // Admin reads and a write, for the table (a write to a record is a KV write by design).
    for (label, method, path, body) in [
        ("GET /v1/credentials", "GET", "/v1/credentials", None),
        ("GET /v1/keys", "GET", "/v1/keys", None),
        ("GET /v1/audit", "GET", "/v1/audit", None),
        (
            "POST /v1/keys (admin write)",
            "POST",
            "/v1/keys",
            Some(json!({"name": "another", "role": "executor"})),
        ),
    ] {
        let r = e.c.send(method, path, Some(&admin), body.as_ref()).await;
        assert!(r.status < 300, "{label}: {} {}", r.status, r.text);
        let c = e.counts().await;
        if label == "GET /v1/audit" {
            // The audit listing reads the audit objects (one request per shard), not KV.
            assert_eq!(c["kv_lists"], 0, "{label}: {c}");
            assert_eq!(c["do_audit"], 8, "{label}: {c}");
        }
        table.push(row(label, &c));
    }
    // Every audited call above is in the audit log, read from the Durable Objects.
    assert_eq!(e.events("execute").await.len(), 6);
    assert_eq!(e.events("proxy").await.len(), 2);
    println!("{}", table.join("\n"));
}

#[tokio::test]
#[ignore = "needs the test worker: scripts/setup-workers.sh (scripts/test.sh runs it)"]
async fn with_audit_required_nothing_is_sent_while_audit_storage_is_down() {
    let e = edge(&[("AUDIT_REQUIRED", "true")]).await;
    e.audit_down(true).await;
    let r = e.execute("/echo?n=refused").await;
    expect(&r, 503, "audit_unavailable");
    let r = e.proxy("/echo?n=refused").await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(
        r.headers
            .get("x-vultrino-error")
            .and_then(|v| v.to_str().ok()),
        Some("audit_unavailable")
    );
    let r = e.mcp_call("/echo?n=refused").await;
    assert!(
        r.text.contains("audit_unavailable"),
        "the MCP call says why: {}",
        r.text
    );
    assert_eq!(
        e.up.seen()
            .iter()
            .filter(|s| s.query.contains("refused"))
            .count(),
        0,
        "the credential was used while its use could not be recorded"
    );
    assert!(!e
        .up
        .seen()
        .iter()
        .any(|s| String::from_utf8_lossy(&s.body).contains(SECRET)));

    e.audit_down(false).await;
    let r = e.execute("/echo?n=served").await;
    expect(&r, 200, None);
    let r = e.proxy("/echo?n=served").await;
    expect(&r, 200, None);
    // One event each, the final one (the `started` record it wrote first was replaced).
    let final_only = |events: &[Value]| {
        events.iter().any(|ev| ev["status"] == 200)
            && events.iter().all(|ev| ev["outcome"] != "started")
    };
    for action in ["execute", "proxy"] {
        let events = e.events_until(action, final_only).await;
        let served: Vec<_> = events.iter().filter(|ev| ev["status"] == 200).collect();
        assert_eq!(served.len(), 1, "{action}: {events:?}");
        assert_eq!(served[0]["outcome"], "allowed", "{action}: {events:?}");
        assert!(
            events.iter().all(|ev| ev["outcome"] != "started"),
            "{action}: {events:?}"
        );
    }
}

#[tokio::test]
#[ignore = "needs the test worker: scripts/setup-workers.sh (scripts/test.sh runs it)"]
async fn by_default_a_request_is_served_while_audit_storage_is_down_and_the_loss_is_counted() {
    let e = edge(&[]).await;
    let sinks = || async {
        let r =
            e.c.send("GET", "/v1/audit/sinks", Some(&e.admin), None)
                .await;
        expect(&r, 200, None);
        r.body["sinks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "audit_store")
            .cloned()
            .unwrap_or_else(|| panic!("no audit_store row: {}", r.text))
    };
    let before = sinks().await;
    assert_eq!(before["dropped"], 0, "{before}");
    assert!(
        before["sent"].as_u64().unwrap() >= 1,
        "the login was stored: {before}"
    );

    e.audit_down(true).await;
    let r = e.execute("/echo?n=unrecorded").await;
    expect(&r, 200, None);
    assert_eq!(
        e.up.seen()
            .iter()
            .filter(|s| s.query.contains("unrecorded"))
            .count(),
        1
    );
    // The listing cannot be served from a store that is down: a clear 503, not an empty page.
    let r = e.c.send("GET", "/v1/audit", Some(&e.admin), None).await;
    expect(&r, 503, "audit_unavailable");
    let after = sinks().await;
    assert_eq!(after["dropped"], 1, "the lost event is counted: {after}");
    assert!(after["failed"].as_u64().unwrap() >= 1, "{after}");
    e.audit_down(false).await;
}

/// With `KEY_RECORD_REUSE_SECONDS` set, a warm execute, proxy call or MCP call reads one KV
/// record (the credential's): the key's is reused from the isolate's memory (decision 0117).
#[tokio::test]
#[ignore = "needs the test worker: scripts/setup-workers.sh (scripts/test.sh runs it)"]
async fn with_key_record_reuse_a_warm_call_reads_one_kv_record() {
    let e = edge(&[("KEY_RECORD_REUSE_SECONDS", "60")]).await;
    let r = e.execute("/echo").await;
    expect(&r, 200, None);
    e.counts().await;
    let mut table = Vec::new();
    for label in [
        "execute (warm, key reused)",
        "execute (warm, key reused, again)",
    ] {
        let r = e.execute("/echo").await;
        expect(&r, 200, None);
        let c = e.counts().await;
        warm_costs(label, &c, 1);
        table.push(row(label, &c));
    }
    let r = e.proxy("/echo").await;
    expect(&r, 200, None);
    let c = e.counts_once_audited().await;
    warm_costs("proxy (warm, key reused)", &c, 1);
    table.push(row("proxy (warm, key reused)", &c));
    let r = e.mcp_call("/echo").await;
    expect(&r, 200, None);
    let c = e.counts().await;
    warm_costs("MCP tools/call (key reused)", &c, 1);
    table.push(row("MCP tools/call (key reused)", &c));
    println!("{}", table.join("\n"));
}

/// A key reused from the isolate's memory (its record not read again: one KV read less per
/// call) is still refused at once when it is revoked: its revocation marker, a Durable Object,
/// is read on every request. The revocation here goes through the same isolate, which also
/// forgets the key; the marker is what every other isolate sees (backend-local/tests/
/// key_reuse.rs shows that with two isolates; docs/decisions/0117).
#[tokio::test]
#[ignore = "needs the test worker: scripts/setup-workers.sh (scripts/test.sh runs it)"]
async fn a_revoked_key_is_refused_on_its_next_request_though_the_isolate_reused_it() {
    let e = edge(&[("KEY_RECORD_REUSE_SECONDS", "60")]).await;
    for _ in 0..2 {
        let r = e.execute("/echo?n=before").await;
        expect(&r, 200, None);
    }
    let c = e.counts().await;
    let r = e.proxy("/echo?n=before").await;
    expect(&r, 200, None);
    assert_eq!(e.counts().await["kv_reads"], 1, "the key was reused: {c}");
    let r = e.c.send("GET", "/v1/keys", Some(&e.admin), None).await;
    expect(&r, 200, None);
    let id = r.body["keys"][0]["id"].as_str().unwrap().to_string();
    let r =
        e.c.send("DELETE", &format!("/v1/keys/{id}"), Some(&e.admin), None)
            .await;
    expect(&r, 204, None);
    let r = e.execute("/echo?n=after").await;
    expect(&r, 401, "invalid_api_key");
    let r = e.proxy("/echo?n=after").await;
    assert_eq!(r.status, 401, "{}", r.text);
    let r = e.mcp_call("/echo?n=after").await;
    assert!(
        r.status == 401 || r.text.contains("invalid"),
        "{} {}",
        r.status,
        r.text
    );
    assert_eq!(
        e.up.seen()
            .iter()
            .filter(|s| s.query.contains("after"))
            .count(),
        0,
        "a revoked key's request reached the upstream"
    );
}
