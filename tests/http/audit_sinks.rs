//! The audit log's filters (`GET /v1/audit?credential&actor&outcome&since`), the sinks' status
//! (`GET /v1/audit/sinks`), and every event reaching the backend's log as stored: the local
//! server's `--audit-log -` lines, the worker's `{"vultrino_audit": …}` console lines and its
//! Analytics Engine data points (a recording binding of the harness, `HARNESS_AUDIT_RECORDER`:
//! Miniflare's own Analytics Engine binding keeps nothing). None holds a secret or query value.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{self, expect, expect_for, ServerOptions, ADMIN_PASSWORD};
use crate::{assert_scrubbed, env, env_with, API_SECRET};

/// `GET /v1/audit` with `query`, every page; the events, newest first.
async fn listed(e: &crate::Env, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/audit?{query}&cursor={c}"),
            None => format!("/v1/audit?{query}"),
        };
        let r = e.c.send("GET", &path, Some(&e.admin), None).await;
        expect_for(&path, &r, 200, None);
        out.extend(r.body["events"].as_array().unwrap().iter().cloned());
        match r.body["cursor"].as_str() {
            Some(c) => cursor = Some(url::form_urlencoded::byte_serialize(c.as_bytes()).collect()),
            None => return out,
        }
    }
}

#[tokio::test]
async fn audit_filters_select_by_credential_actor_outcome_and_since() {
    let e = env().await;
    e.api_key_cred("github").await;
    e.api_key_cred("stripe").await;
    let agent = e.key("executor").await;
    let r = e.execute(&agent, "github", &e.up.url("/echo")).await;
    expect_for("an allowed execute", &r, 200, None);
    let r = e
        .execute(&agent, "github", "https://not-allowed.example/x")
        .await;
    expect_for("a denied execute", &r, 403, None);
    let r = e.execute(&agent, "stripe", &e.up.url("/echo")).await;
    expect_for("an allowed execute of another credential", &r, 200, None);

    let all = listed(&e, "limit=1000").await;
    let github = listed(&e, "credential=github&limit=2").await;
    assert!(!github.is_empty() && github.iter().all(|ev| ev["credential"] == "github"));
    let expected: Vec<&Value> = all
        .iter()
        .filter(|ev| ev["credential"] == "github")
        .collect();
    assert_eq!(
        github.iter().collect::<Vec<_>>(),
        expected,
        "the filter keeps exactly the credential's events, in order, across pages of 2"
    );
    assert!(github
        .iter()
        .any(|ev| ev["action"] == "execute" && ev["outcome"] == "denied"));
    assert!(github.iter().any(|ev| ev["action"] == "credential.create"));

    let denied = listed(&e, "outcome=denied").await;
    assert!(!denied.is_empty() && denied.iter().all(|ev| ev["outcome"] == "denied"));
    assert!(denied.iter().any(|ev| ev["host"] == "not-allowed.example"));

    let keys = listed(&e, "actor=key%3A*").await;
    assert_eq!(keys.len(), 3, "the three executes: {keys:?}");
    let actor = keys[0]["actor"].as_str().unwrap().to_string();
    let one = listed(
        &e,
        &format!(
            "actor={}&credential=stripe&outcome=allowed",
            url::form_urlencoded::byte_serialize(actor.as_bytes()).collect::<String>()
        ),
    )
    .await;
    assert_eq!(one.len(), 1, "{one:?}");
    assert_eq!(one[0]["action"], "execute");

    // `since`: from the denied execute on (inclusive), and nothing after the newest event.
    let denied_ts = denied[0]["ts"].as_u64().unwrap();
    let recent = listed(&e, &format!("since={denied_ts}")).await;
    assert!(recent
        .iter()
        .all(|ev| ev["ts"].as_u64().unwrap() >= denied_ts));
    assert!(recent.iter().any(|ev| ev["id"] == denied[0]["id"]));
    assert_eq!(
        recent.len(),
        all.iter()
            .filter(|ev| ev["ts"].as_u64().unwrap() >= denied_ts)
            .count()
    );
    let newest = all
        .iter()
        .map(|ev| ev["ts"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(listed(&e, &format!("since={}", newest + 1))
        .await
        .is_empty());

    for bad in ["since=yesterday", "since=-1", "credential=", "outcome="] {
        let r =
            e.c.send("GET", &format!("/v1/audit?{bad}"), Some(&e.admin), None)
                .await;
        expect_for(bad, &r, 400, None);
    }
    let r =
        e.c.send("GET", "/v1/audit?actor=key%3A*", Some(&agent), None)
            .await;
    expect_for("an executor key may not read the audit", &r, 403, None);
}

#[tokio::test]
async fn the_sinks_status_is_for_admins() {
    let e = env().await;
    let r =
        e.c.send("GET", "/v1/audit/sinks", Some(&e.admin), None)
            .await;
    expect(&r, 200, None);
    let sinks = r.body["sinks"].as_array().unwrap();
    if support::workerd_backend() {
        // The worker always logs each event.
        let log = sinks.iter().find(|s| s["name"] == "workers_log").unwrap();
        assert!(
            log["sent"].as_u64().unwrap() >= 1,
            "the login at least: {log}"
        );
    } else {
        assert!(sinks.is_empty(), "no sink configured: {}", r.text);
    }
    let agent = e.key("executor").await;
    let r = e.c.send("GET", "/v1/audit/sinks", Some(&agent), None).await;
    expect(&r, 403, None);
    let r = e.c.send("GET", "/v1/audit/sinks", None, None).await;
    expect(&r, 401, None);
}

/// The events of the backend's log output: `--audit-log -` lines (local), the worker's
/// `{"vultrino_audit": …}` lines.
fn logged_events(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|l| {
            let start = l.find('{')?;
            serde_json::from_str::<Value>(&l[start..]).ok()
        })
        .filter_map(|v| {
            if support::workerd_backend() {
                v.get("vultrino_audit").cloned()
            } else {
                v.get("action").is_some().then_some(v)
            }
        })
        .collect()
}

/// The data points the harness's recording Analytics Engine binding printed.
fn data_points(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|l| {
            let at = l.find("vultrino_test_data_point ")?;
            serde_json::from_str(&l[at + "vultrino_test_data_point ".len()..]).ok()
        })
        .collect()
}

#[tokio::test]
async fn every_audit_event_also_reaches_the_backends_log_as_stored() {
    let mut opts = ServerOptions::default();
    if support::workerd_backend() {
        opts.extra_env
            .push(("HARNESS_AUDIT_RECORDER".into(), "1".into()));
    } else {
        opts.extra_env
            .push(("VULTRINO_AUDIT_LOG".into(), "-".into()));
    }
    let e = env_with(opts).await;
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

    let stored = listed(&e, "limit=1000").await;
    assert!(
        stored.len() >= 5,
        "login, create, key, two executes: {stored:?}"
    );
    // Each stored event appears in the log exactly as stored (the log may lag a little).
    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = e._server.output.lock().unwrap().clone();
        let logged = logged_events(&lines);
        if stored.iter().all(|s| logged.contains(s)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logged = logged_events(&lines);
    for s in &stored {
        assert!(logged.contains(s), "{s} is not in the log: {lines:?}");
    }
    let everything = lines.join("\n");
    assert_scrubbed(&everything, API_SECRET);
    assert!(
        !everything.contains("querysecret"),
        "query values stay out of the log"
    );
    assert!(!everything.contains(ADMIN_PASSWORD));
    assert!(
        !everything.contains(&agent),
        "the agent's key stays out of the log"
    );

    let r =
        e.c.send("GET", "/v1/audit/sinks", Some(&e.admin), None)
            .await;
    expect(&r, 200, None);
    let status = |name: &str| {
        r.body["sinks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} sink: {}", r.text))
    };

    if !support::workerd_backend() {
        let file = status("file");
        assert!(
            file["sent"].as_u64().unwrap() >= stored.len() as u64,
            "{file}"
        );
        assert_eq!(file["dropped"], 0);
        return;
    }
    assert!(status("workers_log")["sent"].as_u64().unwrap() >= stored.len() as u64);
    assert!(status("analytics_engine")["sent"].as_u64().unwrap() >= stored.len() as u64);
    // Each event's data point, field by field (docs/deploy-cloudflare.md's table).
    let points = data_points(&lines);
    for s in &stored {
        let str_of = |k: &str| s[k].as_str().unwrap_or("").to_string();
        let num = |k: &str| s[k].as_f64().unwrap_or(0.0);
        let p = points
            .iter()
            .find(|p| p["blobs"][8] == s["id"])
            .unwrap_or_else(|| panic!("no data point for {s}: {points:?}"));
        assert_eq!(p["indexes"], json!([str_of("credential")]), "{p}");
        assert_eq!(
            p["blobs"],
            json!([
                str_of("action"),
                str_of("outcome"),
                str_of("actor"),
                str_of("credential"),
                str_of("method"),
                str_of("host"),
                str_of("path"),
                str_of("code"),
                str_of("id"),
                str_of("record")
            ]),
            "{p}"
        );
        let scrubbed = if s["scrubbed"] == true { 1.0 } else { 0.0 };
        let count = s["count"].as_f64().unwrap_or(1.0);
        let doubles: Vec<f64> = p["doubles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_f64().unwrap())
            .collect();
        assert_eq!(
            doubles,
            [
                num("status"),
                num("duration_ms"),
                count,
                num("bytes_in"),
                num("bytes_out"),
                scrubbed,
                num("ts")
            ],
            "{p}"
        );
    }
    let allowed = stored
        .iter()
        .find(|s| s["action"] == "execute" && s["outcome"] == "allowed")
        .unwrap();
    let p = points
        .iter()
        .find(|p| p["blobs"][8] == allowed["id"])
        .unwrap();
    assert_eq!(p["indexes"], json!(["github"]));
    assert_eq!(p["blobs"][6], "/echo");
    assert_eq!(p["doubles"][0].as_f64(), Some(200.0));
}
