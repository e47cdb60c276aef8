//! The audit log: allowed and denied executes, logins and changes are recorded, newest first,
//! without secrets or query strings; every event is bounded in size, and what unauthenticated
//! requests cause is bounded in number and never pushes the rest out.

use serde_json::{json, Value};

use crate::support::{expect, expect_for, ServerOptions, ADMIN_PASSWORD};
use crate::{assert_scrubbed, env, env_with, API_SECRET};

#[tokio::test]
async fn audit_records_allowed_and_denied_executes_without_secrets() {
    let e = env().await;
    e.api_key_cred("github").await;
    let agent = e.key("executor").await;
    let r = e
        .execute(
            &agent,
            "github",
            &(e.up.url("/echo") + "?token=querysecret"),
        )
        .await;
    expect_for("an allowed execute", &r, 200, None);
    let r = e
        .execute(&agent, "github", "https://not-allowed.example/x")
        .await;
    expect_for("a denied execute", &r, 403, None);
    let r =
        e.c.send("GET", "/v1/audit?limit=50", Some(&e.admin), None)
            .await;
    expect(&r, 200, None);
    let events = r.body["events"].as_array().unwrap();
    let execs: Vec<&Value> = events
        .iter()
        .filter(|ev| ev["action"] == "execute")
        .collect();
    assert_eq!(execs.len(), 2, "{}", r.text);
    // Newest first (events of one millisecond may come in either order, so compare timestamps
    // and find each event by its outcome).
    assert!(execs[0]["ts"].as_u64().unwrap() >= execs[1]["ts"].as_u64().unwrap());
    let find = |outcome: &str| *execs.iter().find(|ev| ev["outcome"] == outcome).unwrap();
    let (denied, allowed) = (find("denied"), find("allowed"));
    assert_eq!(denied["host"], "not-allowed.example");
    assert_eq!(allowed["status"], 200);
    assert_eq!(allowed["path"], "/echo");
    assert_eq!(allowed["credential"], "github");
    assert!(allowed["actor"].as_str().unwrap().starts_with("key:"));
    assert!(events
        .iter()
        .any(|ev| ev["action"] == "login" && ev["outcome"] == "success"));
    assert!(events.iter().any(|ev| ev["action"] == "credential.create"));
    assert_scrubbed(&r.text, API_SECRET);
    assert!(
        !r.text.contains("querysecret"),
        "query strings must not be audited"
    );
    assert!(!r.text.contains(ADMIN_PASSWORD));
}

/// Every event of the audit log, newest first (all pages).
async fn all_events(e: &crate::Env) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/audit?limit=1000&cursor={c}"),
            None => "/v1/audit?limit=1000".to_string(),
        };
        let r = e.c.send("GET", &path, Some(&e.admin), None).await;
        expect(&r, 200, None);
        out.extend(r.body["events"].as_array().unwrap().iter().cloned());
        match r.body["cursor"].as_str() {
            Some(c) => cursor = Some(url::form_urlencoded::byte_serialize(c.as_bytes()).collect()),
            None => return out,
        }
    }
}

/// Events are recorded before the permission check, from what the caller sent: a key that may
/// not even execute must not be able to store a 900 KB path per request. Every string an event
/// carries is capped, and the cut is marked.
#[tokio::test]
async fn a_read_only_keys_execute_with_a_huge_path_stores_a_bounded_event() {
    let e = env().await;
    e.api_key_cred("github").await;
    let ro = e.key("read-only").await;
    let long_path = format!("/{}", "a".repeat(900_000));
    let r = e.execute(&ro, "github", &e.up.url(&long_path)).await;
    expect_for("a read-only key may not execute", &r, 403, None);
    let r =
        e.c.send("GET", "/v1/audit?limit=10", Some(&e.admin), None)
            .await;
    expect(&r, 200, None);
    let events = r.body["events"].as_array().unwrap();
    let ev = events
        .iter()
        .find(|ev| ev["action"] == "execute")
        .unwrap_or_else(|| panic!("the denied execute is audited: {}", r.text));
    assert_eq!(ev["outcome"], "denied");
    let size = serde_json::to_vec(ev).unwrap().len();
    assert!(
        size <= vultrino_core::audit::MAX_EVENT_JSON_BYTES,
        "a {size}-byte event"
    );
    let path = ev["path"].as_str().unwrap();
    assert!(
        path.starts_with("/aaaa") && path.ends_with('…') && path.len() <= 512,
        "the path is cut and marked: {} bytes",
        path.len()
    );
    assert!(
        ev["truncated"]
            .as_array()
            .is_some_and(|t| t.iter().any(|f| f == "path")),
        "{ev}"
    );
    assert!(r.text.len() < 64 * 1024, "{} bytes listed", r.text.len());
}

/// Headers that give a login request its client address, on either backend: `X-Forwarded-For`
/// (trusted with `--trust-forwarded-for`, as behind the operator's proxy) for the local server,
/// `CF-Connecting-IP` for the worker.
fn from_client(rb: reqwest::RequestBuilder, ip: &str) -> reqwest::RequestBuilder {
    rb.header("x-forwarded-for", ip)
        .header("cf-connecting-ip", ip)
}

fn trusting_forwarded_for() -> ServerOptions {
    ServerOptions {
        extra_env: vec![("VULTRINO_TRUST_FORWARDED_FOR".into(), "true".into())],
        ..ServerOptions::default()
    }
}

async fn wrong_login(e: &crate::Env, ip: &str) -> u16 {
    let url = format!("{}/login", e.c.target.base);
    let bad = json!({"username": "admin", "password": "wrong"});
    e.c.send_raw(from_client(e.c.http.post(&url).json(&bad), ip))
        .await
        .status
}

/// A locked-out client's attempts are one event per lockout window, with their count — not one
/// write per refused request.
#[tokio::test]
async fn a_locked_out_clients_attempts_are_one_event_with_a_count() {
    let e = env_with(trusting_forwarded_for()).await;
    // 5 attempts are allowed (ServerOptions' default), then 10 are refused.
    let mut statuses = Vec::new();
    for _ in 0..15 {
        statuses.push(wrong_login(&e, "203.0.113.7").await);
    }
    assert_eq!(statuses[..5], [401; 5], "{statuses:?}");
    assert_eq!(statuses[5..], [429; 10], "{statuses:?}");
    let events = all_events(&e).await;
    let mine: Vec<&Value> = events
        .iter()
        .filter(|ev| ev["actor"] == "client:203.0.113.7")
        .collect();
    let failed = mine
        .iter()
        .filter(|ev| ev["code"] == "invalid_login")
        .count();
    let locked: Vec<&&Value> = mine
        .iter()
        .filter(|ev| ev["code"] == "login_locked")
        .collect();
    assert_eq!(failed, 5, "{mine:?}");
    assert_eq!(locked.len(), 1, "one event for the window: {mine:?}");
    // Rewritten at 1, 2, 4, 8 refusals: the last write counted 8 of the 10.
    assert_eq!(locked[0]["count"], 8, "{}", locked[0]);
    assert_eq!(locked[0]["status"], 429);
}

/// Failed logins can be caused by anyone: a flood of them, from many addresses, must neither
/// push the authenticated history out nor write an event each (on Workers, each is a KV write).
/// Past a deployment-wide budget per window, one `audit.suppressed` event counts the rest.
#[tokio::test]
async fn a_flood_of_failed_logins_evicts_no_history_and_writes_a_bounded_number_of_events() {
    // The admin user's own throttle (50 per window by default) would refuse most of the flood
    // before the budget is reached, and aggregates its refusals itself (the next test): lifted
    // here, so that every attempt is a failed verification the budget has to bound.
    let mut options = trusting_forwarded_for();
    options.extra_env.extend([
        (
            "VULTRINO_LOGIN_MAX_ATTEMPTS_PER_USER".into(),
            "100000".into(),
        ),
        ("LOGIN_MAX_ATTEMPTS_PER_USER".into(), "100000".into()),
    ]);
    let e = env_with(options).await;
    // Authenticated history: changes and executes.
    e.api_key_cred("github").await;
    let agent = e.key("executor").await;
    for _ in 0..5 {
        let r = e.execute(&agent, "github", &e.up.url("/echo")).await;
        expect(&r, 200, None);
    }
    let before: Vec<String> = all_events(&e)
        .await
        .iter()
        .map(|ev| ev["id"].as_str().unwrap().to_string())
        .collect();
    assert!(before.len() >= 8, "{before:?}");

    // 300 wrong passwords from 300 addresses (each within its own lockout allowance).
    let flood = 300u32;
    let mut set = tokio::task::JoinSet::new();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
    for i in 0..flood {
        let (c, sem) = (e.c.clone(), sem.clone());
        set.spawn(async move {
            let _permit = sem.acquire().await.unwrap();
            let ip = format!("198.18.{}.{}", i / 250, i % 250 + 1);
            let url = format!("{}/login", c.target.base);
            let bad = json!({"username": "admin", "password": "wrong"});
            c.send_raw(from_client(c.http.post(&url).json(&bad), &ip))
                .await
                .status
        });
    }
    while let Some(s) = set.join_next().await {
        let s = s.unwrap();
        assert!(s == 401 || s == 429, "{s}");
    }

    let after = all_events(&e).await;
    for id in &before {
        assert!(
            after.iter().any(|ev| ev["id"] == id.as_str()),
            "authenticated event {id} was pushed out by unauthenticated ones"
        );
    }
    let unauthenticated: Vec<&Value> = after
        .iter()
        .filter(|ev| {
            ev["actor"]
                .as_str()
                .is_some_and(|a| a.starts_with("client:"))
        })
        .collect();
    let budget = vultrino_core::audit::UNAUTHENTICATED_BUDGET as usize;
    assert!(
        unauthenticated.len() <= budget,
        "{} failed-login events written for {flood} attempts (budget {budget})",
        unauthenticated.len()
    );
    let suppressed: Vec<&Value> = after
        .iter()
        .filter(|ev| ev["action"] == "audit.suppressed")
        .collect();
    assert_eq!(suppressed.len(), 1, "one per window: {suppressed:?}");
    let count = suppressed[0]["count"].as_u64().unwrap();
    let missing = u64::from(flood) - unauthenticated.len() as u64;
    assert!(
        count.is_power_of_two() && count <= missing && missing < 2 * count,
        "suppressed count {count} for {missing} events not written"
    );
}

/// The admin user's throttle is shared by every client, so anyone can run it out: its refusals
/// are one event per window, with their count, whichever addresses they come from.
#[tokio::test]
async fn refusals_past_the_admin_users_throttle_are_one_event_per_window() {
    let mut options = trusting_forwarded_for();
    options.extra_env.extend([
        ("VULTRINO_LOGIN_MAX_ATTEMPTS_PER_USER".into(), "3".into()),
        ("LOGIN_MAX_ATTEMPTS_PER_USER".into(), "3".into()),
    ]);
    let e = env_with(options).await;
    // Ten clients, one attempt each: three verifications, then seven refusals.
    for i in 1..=10u8 {
        let s = wrong_login(&e, &format!("198.18.7.{i}")).await;
        assert_eq!(s, if i <= 3 { 401 } else { 429 }, "attempt {i}");
    }
    let mine: Vec<Value> = all_events(&e)
        .await
        .into_iter()
        .filter(|ev| ev["action"] == "login")
        .collect();
    let failed = mine
        .iter()
        .filter(|ev| ev["code"] == "invalid_login")
        .count();
    let locked: Vec<&Value> = mine
        .iter()
        .filter(|ev| ev["code"] == "login_locked")
        .collect();
    assert_eq!(failed, 3, "{mine:?}");
    assert_eq!(locked.len(), 1, "one event for the window: {mine:?}");
    // Rewritten at 1, 2, 4 refusals: the last write counted 4 of the 7.
    assert_eq!(locked[0]["count"], 4, "{}", locked[0]);
    assert_eq!(locked[0]["status"], 429);
}
