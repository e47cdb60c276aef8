//! Asking the MCP client's user to approve a request: MCP elicitation, form mode
//! ([decision 0102](../../../docs/decisions/0102-approval-by-mcp-elicitation.md)).
//!
//! The transport that can send requests to its client (the local stdio server, `vultrino mcp
//! --direct --approve-by-elicitation`) sends `elicitation/create` with [`request_params`] when an
//! `http_request` made an approval, reads the client's reply with [`answer`], and decides the
//! approval as [`client_actor`]. This module only shapes the messages:
//!
//! - The prompt shows the approval record ([`Approval`]): credential alias, method, URL, the
//!   bound headers, the body preview and the agent's reason — the request as the agent wrote it,
//!   before the credential is injected. An approval holds no secret (key slots are removed
//!   before it is made), so neither does the prompt.
//! - Text the agent wrote is marked as the agent's and made inert: control characters and
//!   Unicode bidirectional controls are shown escaped, and every line of it is indented, so a
//!   reason or a body cannot pose as Vultrino's own words or hide part of a URL.
//! - Only an explicit `accept` with `approve: true` approves; `accept` with `approve: false` and
//!   `decline` deny; `cancel`, an error reply or anything malformed decides nothing.

use serde_json::{json, Value};

use crate::approvals::Approval;

/// The JSON-RPC method of the request.
pub const METHOD: &str = "elicitation/create";
/// The boolean field of the requested schema.
pub const FIELD: &str = "approve";

/// How much of the body preview the prompt shows, in characters (the approval keeps more).
const BODY_SHOWN_CHARS: usize = 1000;
/// How many bound headers the prompt lists, and how long each may be.
const HEADERS_SHOWN: usize = 20;
const HEADER_SHOWN_CHARS: usize = 200;
/// Longest client name kept in the actor string.
const CLIENT_NAME_CHARS: usize = 64;

/// Whether the client's `capabilities` (from `initialize`) declare form-mode elicitation: an
/// `elicitation` object that is empty (2025-06-18, and "form only" in 2025-11-25) or has `form`.
pub fn supports_form(capabilities: &Value) -> bool {
    match capabilities.get("elicitation") {
        Some(Value::Object(m)) => m.is_empty() || m.contains_key("form"),
        _ => false,
    }
}

/// The id of the approval an `http_request` outcome waits for (its result has `status: 202`
/// and a pending `approval`, see decision 0094), if it does.
pub fn pending_approval_id(outcome: &super::ToolOutcome) -> Option<&str> {
    let approval = &outcome.value["approval"];
    (!outcome.is_error && outcome.value["status"] == 202 && approval["status"] == "pending")
        .then(|| approval["approval_id"].as_str())
        .flatten()
}

/// What the person answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// `accept` with `approve: true`.
    Approve,
    /// `decline`, or `accept` with `approve: false`.
    Deny,
    /// `cancel` (dismissed without a choice), an error reply, or a reply of another shape: the
    /// approval stays pending.
    Dismissed,
}

/// The answer in the client's JSON-RPC reply to `elicitation/create`.
pub fn answer(reply: &Value) -> Answer {
    let result = &reply["result"];
    match result["action"].as_str() {
        Some("accept") => match result["content"][FIELD] {
            Value::Bool(true) => Answer::Approve,
            Value::Bool(false) => Answer::Deny,
            _ => Answer::Dismissed,
        },
        Some("decline") => Answer::Deny,
        _ => Answer::Dismissed,
    }
}

/// The audit actor of a decision made through the MCP client: `mcp-client:<name> <key actor>`,
/// where `<name>` is the `clientInfo.name` the client gave at `initialize` (letters, digits and
/// `._-@/` only, at most 64 characters; `unnamed` without one) and `<key actor>` the actor of the
/// key the session runs with (`key:<id>`, `key:<id> token:<id>`).
pub fn client_actor(client_name: Option<&str>, key_actor: &str) -> String {
    let name: String = client_name
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "._-@/".contains(*c))
        .take(CLIENT_NAME_CHARS)
        .collect();
    let name = if name.is_empty() { "unnamed" } else { &name };
    format!("mcp-client:{name} {key_actor}")
}

/// The params of `elicitation/create` for the approval `a`: the [`message`] and a schema of one
/// required boolean, [`FIELD`]. `mode: "form"` is added for 2025-11-25, where it exists.
pub fn request_params(a: &Approval, version: Option<&str>) -> Value {
    let mut params = json!({
        "message": message(a),
        "requestedSchema": {
            "type": "object",
            "properties": {
                FIELD: {
                    "type": "boolean",
                    "title": "Approve this request",
                    "description": "Yes: Vultrino sends this request once, with the credential. \
                        No: it is denied and nothing is sent.",
                    "default": false
                }
            },
            "required": [FIELD]
        }
    });
    if version == Some("2025-11-25") {
        params["mode"] = json!("form");
    }
    params
}

/// The prompt: what would be sent, and with which credential.
pub fn message(a: &Approval) -> String {
    let mut m = format!(
        "Vultrino: an agent asks to send this request with the credential \"{}\". It is sent \
         once if you approve, never if you deny.\n\n{} {}\n",
        inert_line(&a.credential),
        inert_line(&a.method),
        inert_line(&a.url),
    );
    let headers = a.headers.iter().take(HEADERS_SHOWN);
    for (name, value) in headers {
        m.push_str(&format!(
            "    {}: {}\n",
            inert_line(&cut(name, HEADER_SHOWN_CHARS)),
            inert_line(&cut(value, HEADER_SHOWN_CHARS))
        ));
    }
    if a.headers.len() > HEADERS_SHOWN {
        m.push_str(&format!(
            "    (and {} more headers)\n",
            a.headers.len() - HEADERS_SHOWN
        ));
    }
    if a.body_size == 0 {
        m.push_str("\nNo body.\n");
    } else {
        let shown = cut(&a.body_preview, BODY_SHOWN_CHARS);
        let partial = a.body_truncated || a.body_preview.chars().count() > BODY_SHOWN_CHARS;
        m.push_str(&format!(
            "\nBody ({} bytes{}, SHA-256 {}):\n{}\n",
            a.body_size,
            if partial { ", beginning shown" } else { "" },
            a.body_sha256,
            inert_block(&shown),
        ));
    }
    match &a.reason {
        Some(r) => m.push_str(&format!(
            "\nThe agent's reason (its own words):\n{}\n",
            inert_block(r)
        )),
        None => m.push_str("\nThe agent gave no reason.\n"),
    }
    m.push_str(&format!("\nApproval {}.", a.id));
    m
}

/// Whether `c` is shown escaped: control characters and Unicode bidirectional controls (which
/// reorder how the rest of a line is displayed).
fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// One line of agent text: every hidden character escaped, newlines included.
fn inert_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if is_hidden(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A block of agent text: its lines kept, each indented, every other hidden character escaped.
fn inert_block(s: &str) -> String {
    s.split('\n')
        .map(|line| format!("    | {}", inert_line(line)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first `max` characters of `s`, with `…` when cut.
fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((end, _)) => format!("{}…", &s[..end]),
    }
}

#[cfg(test)]
mod tests;
