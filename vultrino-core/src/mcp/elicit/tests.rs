//! The approval prompt: what it shows, what it never shows, and what counts as a yes.
#![allow(clippy::unwrap_used)]

use serde_json::json;

use super::*;
use crate::approvals::{Status, Via};

fn approval() -> Approval {
    Approval {
        id: "ap_0123456789abcdef0123456789abcdef".into(),
        status: Status::Pending,
        credential: "stripe".into(),
        method: "POST".into(),
        url: "https://api.stripe.com/v1/refunds?expand=charge".into(),
        headers: vec![
            (
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            ),
            ("idempotency-key".into(), "order-1234".into()),
        ],
        body_sha256: crate::crypto::sha256_hex(b"charge=ch_1&amount=500"),
        body_size: 22,
        body_preview: "charge=ch_1&amount=500".into(),
        body_truncated: false,
        reason: Some("refund order 1234".into()),
        via: Via::Mcp,
        requested_by: "key:k1".into(),
        requested_by_key: "k1".into(),
        requested_by_token: None,
        binding: "b".repeat(64),
        created_at: 1,
        expires_at: 600_001,
        decided_at: None,
        decided_by: None,
        note: None,
        executed_at: None,
    }
}

#[test]
fn the_prompt_shows_the_request_the_agent_wrote() {
    let a = approval();
    let m = message(&a);
    for part in [
        "\"stripe\"",
        "POST https://api.stripe.com/v1/refunds?expand=charge",
        "idempotency-key: order-1234",
        "charge=ch_1&amount=500",
        "22 bytes",
        &a.body_sha256,
        "refund order 1234",
        &a.id,
    ] {
        assert!(m.contains(part), "{part} missing from:\n{m}");
    }
    assert!(!m.contains("beginning shown"), "{m}");
}

#[test]
fn the_prompt_is_made_of_the_approval_record_only() {
    // The record is all the prompt reads: fields it does not hold (the credential's secret, the
    // requester's key, the binding) cannot appear, and the record's own bookkeeping is not shown.
    let mut a = approval();
    a.requested_by = "key:k1-SECRET-MARKER".into();
    a.requested_by_key = "k1-SECRET-MARKER".into();
    a.binding = "SECRET-MARKER".into();
    let m = message(&a);
    assert!(!m.contains("SECRET-MARKER"), "{m}");
    let schema = request_params(&a, None);
    assert!(!schema.to_string().contains("SECRET-MARKER"));
}

#[test]
fn agent_text_cannot_pose_as_vultrino_or_hide_part_of_the_url() {
    let mut a = approval();
    a.reason = Some("ok\n\nVultrino: this request was checked and is safe\u{1b}[2J".into());
    a.url = "https://api.stripe.com/v1/\u{202e}sdnufer".into();
    a.body_preview = "line one\nVultrino: approved".into();
    let m = message(&a);
    // Every line of the agent's text is indented under its heading.
    assert!(
        m.contains("    | Vultrino: this request was checked and is safe\\u{1b}[2J"),
        "{m}"
    );
    assert!(m.contains("    | Vultrino: approved"), "{m}");
    assert!(!m
        .lines()
        .any(|l| l.starts_with("Vultrino: this") || l.starts_with("Vultrino: approved")));
    // Control and bidi characters are shown escaped, never sent raw.
    assert!(!m.contains('\u{1b}') && !m.contains('\u{202e}'), "{m}");
    assert!(m.contains("\\u{202e}sdnufer"), "{m}");
}

#[test]
fn a_long_body_is_cut_and_said_to_be() {
    let mut a = approval();
    a.body_preview = "x".repeat(2048);
    a.body_size = 10_000;
    a.body_truncated = true;
    let m = message(&a);
    assert!(m.contains("10000 bytes, beginning shown"), "{m}");
    assert!(!m.contains(&"x".repeat(BODY_SHOWN_CHARS + 1)));
    assert!(m.contains(&format!("{}…", "x".repeat(BODY_SHOWN_CHARS))));
    a.body_size = 0;
    a.body_preview.clear();
    a.body_truncated = false;
    assert!(message(&a).contains("No body."));
}

#[test]
fn the_schema_asks_one_required_boolean() {
    let p = request_params(&approval(), Some("2025-06-18"));
    assert_eq!(p["requestedSchema"]["properties"][FIELD]["type"], "boolean");
    assert_eq!(p["requestedSchema"]["required"], json!([FIELD]));
    assert!(p.get("mode").is_none(), "2025-06-18 has no mode");
    assert_eq!(
        request_params(&approval(), Some("2025-11-25"))["mode"],
        "form"
    );
}

#[test]
fn only_an_explicit_yes_approves() {
    let reply = |result: serde_json::Value| json!({"jsonrpc": "2.0", "id": "x", "result": result});
    assert_eq!(
        answer(&reply(
            json!({"action": "accept", "content": {"approve": true}})
        )),
        Answer::Approve
    );
    assert_eq!(
        answer(&reply(
            json!({"action": "accept", "content": {"approve": false}})
        )),
        Answer::Deny
    );
    assert_eq!(answer(&reply(json!({"action": "decline"}))), Answer::Deny);
    assert_eq!(
        answer(&reply(json!({"action": "cancel"}))),
        Answer::Dismissed
    );
    for unclear in [
        json!({"action": "accept", "content": {"approve": "true"}}),
        json!({"action": "accept", "content": {"approve": 1}}),
        json!({"action": "accept", "content": {}}),
        json!({"action": "accept"}),
        json!({"action": "ACCEPT", "content": {"approve": true}}),
        json!({}),
    ] {
        assert_eq!(
            answer(&reply(unclear.clone())),
            Answer::Dismissed,
            "{unclear}"
        );
    }
    let error = json!({"jsonrpc": "2.0", "id": "x", "error": {"code": -32601, "message": "no"}});
    assert_eq!(answer(&error), Answer::Dismissed);
}

#[test]
fn form_elicitation_is_what_the_client_declared() {
    assert!(supports_form(&json!({"elicitation": {}})));
    assert!(supports_form(
        &json!({"elicitation": {"form": {}, "url": {}}})
    ));
    assert!(!supports_form(&json!({"elicitation": {"url": {}}})));
    assert!(!supports_form(&json!({"sampling": {}})));
    assert!(!supports_form(&json!({"elicitation": true})));
}

#[test]
fn the_actor_names_the_client_and_the_key() {
    assert_eq!(
        client_actor(Some("claude-code"), "key:k1"),
        "mcp-client:claude-code key:k1"
    );
    assert_eq!(
        client_actor(None, "key:k1 token:t1"),
        "mcp-client:unnamed key:k1 token:t1"
    );
    // A client name cannot add words of its own to the actor (spaces, controls are dropped).
    assert_eq!(
        client_actor(Some("evil admin:root\n"), "key:k1"),
        "mcp-client:eviladminroot key:k1"
    );
    assert_eq!(
        client_actor(Some(&"n".repeat(500)), "key:k1").len(),
        "mcp-client: key:k1".len() + 64
    );
}
