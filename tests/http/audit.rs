//! The audit log: allowed and denied executes, logins and changes are recorded, newest first,
//! without secrets or query strings.

use serde_json::Value;

use crate::support::{expect, expect_for, ADMIN_PASSWORD};
use crate::{assert_scrubbed, env, API_SECRET};

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
