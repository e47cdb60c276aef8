//! `vultrino approval list|show|approve|deny`: the requests waiting for a person, through the
//! running server (or the edge, `--server`) as the signed-in admin (`vultrino login`) or an
//! admin API key (`VULTRINO_API_KEY`). Approvals live in the server (its memory locally, a
//! Durable Object on the edge), so with no server there is nothing to open here: the command
//! says to start one. Everything printed from a record is made printable (the URL, reason and
//! body preview come from the agent).

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::{print_json, seg, RemoteArgs};
use crate::remote::{printable, Remote};

#[derive(Args, Debug)]
pub(super) struct ApprovalArgs {
    #[command(flatten)]
    pub(super) remote: RemoteArgs,
    #[command(subcommand)]
    pub(super) cmd: ApprovalCmd,
}

#[derive(Subcommand, Debug)]
pub(super) enum ApprovalCmd {
    /// List approvals, newest first (pending and recent ones).
    List {
        /// Only those in this state: pending, approved, denied, executed or expired.
        #[arg(long, value_parser = ["pending", "approved", "denied", "executed", "expired"])]
        status: Option<String>,
    },
    /// Show one approval: the exact request it would let run (credential, method, URL, bound
    /// headers, body preview), the agent's reason, who asked and until when.
    Show {
        /// The approval's id (`ap_…`), as the agent's 202 or `approval list` gives it.
        id: String,
    },
    /// Approve a pending request: the agent's next re-send of exactly that request runs, once.
    Approve {
        /// The approval's id (`ap_…`).
        id: String,
        /// A note kept with the decision (at most 500 characters).
        #[arg(long)]
        note: Option<String>,
    },
    /// Deny a pending request: the agent's re-send is refused (403 approval_denied).
    Deny {
        /// The approval's id (`ap_…`).
        id: String,
        /// Why, kept with the decision (at most 500 characters).
        #[arg(long)]
        note: Option<String>,
    },
}

/// Pages of `GET /v1/approvals` followed, at most (100 each).
const MAX_PAGES: usize = 10;

/// `vultrino approval …` through the server.
pub(super) async fn remote(remote: &Remote, cmd: &ApprovalCmd) -> anyhow::Result<()> {
    match cmd {
        ApprovalCmd::List { status } => {
            let items = list(remote, status.as_deref()).await?;
            if super::table::json() {
                print_json(&json!({ "approvals": items }))
            } else {
                print!("{}", table(&items));
                Ok(())
            }
        }
        ApprovalCmd::Show { id } => {
            let a = remote
                .call("GET", &format!("/v1/approvals/{}", seg(id)), None)
                .await?;
            if super::table::json() {
                print_json(&a)
            } else {
                print!("{}", detail(&a));
                Ok(())
            }
        }
        ApprovalCmd::Approve { id, note } => {
            decide(remote, id, "approve", note.as_deref(), super::table::json()).await
        }
        ApprovalCmd::Deny { id, note } => {
            decide(remote, id, "deny", note.as_deref(), super::table::json()).await
        }
    }
}

/// With no server: approvals exist only in a running one.
pub(super) fn no_server() -> anyhow::Error {
    anyhow::anyhow!(
        "approvals live in the running server (its memory; a Durable Object on the edge), and \
         none runs on this data directory: start `vultrino serve`, or give the server's URL \
         with --server / VULTRINO_SERVER, then `vultrino login`"
    )
}

async fn list(remote: &Remote, status: Option<&str>) -> anyhow::Result<Vec<Value>> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut query = Vec::new();
        if let Some(s) = status {
            query.push(format!("status={}", seg(s)));
        }
        if let Some(c) = &cursor {
            query.push(format!("cursor={}", seg(c)));
        }
        let path = if query.is_empty() {
            "/v1/approvals".to_string()
        } else {
            format!("/v1/approvals?{}", query.join("&"))
        };
        let page = remote.call("GET", &path, None).await?;
        if let Some(a) = page["approvals"].as_array() {
            items.extend(a.iter().cloned());
        }
        cursor = page["cursor"].as_str().map(str::to_string);
        if cursor.is_none() {
            break;
        }
    }
    Ok(items)
}

async fn decide(
    remote: &Remote,
    id: &str,
    verb: &str,
    note: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    if note.is_some_and(|n| n.chars().count() > 500) {
        anyhow::bail!("--note is longer than 500 characters");
    }
    let body = note.map(|n| json!({ "note": n }));
    let a = remote
        .call(
            "POST",
            &format!("/v1/approvals/{}/{verb}", seg(id)),
            body.as_ref(),
        )
        .await?;
    if json {
        return print_json(&a);
    }
    let done = if verb == "approve" {
        "approved"
    } else {
        "denied"
    };
    println!(
        "{done} {}: {} {} with {}",
        printable(id),
        s(&a, "method"),
        s(&a, "url"),
        s(&a, "credential")
    );
    if verb == "approve" {
        eprintln!("the agent's next re-send of exactly this request runs it, once");
    }
    Ok(())
}

/// A string field made printable ("-" when absent).
fn s(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::String(t) => printable(t),
        Value::Null => "-".into(),
        other => printable(&other.to_string()),
    }
}

/// A time field in local time, as the other CLI tables print it (decision 0097).
fn time(v: &Value, key: &str) -> String {
    super::table::time_of(&v[key])
}

/// `text` cut to `max` characters, `…` marking the cut.
fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max.saturating_sub(1)) {
        Some((i, _)) if text.chars().count() > max => format!("{}…", &text[..i]),
        _ => text.to_string(),
    }
}

/// The listing as an aligned table (header line included), one approval a line.
pub fn table(items: &[Value]) -> String {
    if items.is_empty() {
        return "no approvals\n".into();
    }
    let head = [
        "ID",
        "STATUS",
        "CREDENTIAL",
        "METHOD",
        "URL",
        "REQUESTED BY",
        "EXPIRES",
    ];
    let rows: Vec<[String; 7]> = items
        .iter()
        .map(|a| {
            [
                s(a, "id"),
                s(a, "status"),
                s(a, "credential"),
                s(a, "method"),
                cut(&s(a, "url"), 60),
                s(a, "requested_by"),
                time(a, "expires_at"),
            ]
        })
        .collect();
    let mut width = head.map(|h| h.chars().count());
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(width).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  "));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(&head.map(String::from));
    for r in &rows {
        out.push_str(&line(r));
    }
    out
}

/// One approval, a field a line, then its bound headers and body preview.
pub fn detail(a: &Value) -> String {
    let mut out = String::new();
    let mut field = |name: &str, value: String| out.push_str(&format!("{name:<13} {value}\n"));
    field("id", s(a, "id"));
    field("status", s(a, "status"));
    field("credential", s(a, "credential"));
    field("method", s(a, "method"));
    field("url", s(a, "url"));
    field("via", s(a, "via"));
    field("requested by", s(a, "requested_by"));
    field("reason", s(a, "reason"));
    field("created", time(a, "created_at"));
    field("expires", time(a, "expires_at"));
    if !a["decided_at"].is_null() {
        field(
            "decided",
            format!("{} by {}", time(a, "decided_at"), s(a, "decided_by")),
        );
    }
    if !a["note"].is_null() {
        field("note", s(a, "note"));
    }
    if !a["executed_at"].is_null() {
        field("executed", time(a, "executed_at"));
    }
    field(
        "body",
        format!(
            "{} bytes, sha256 {}",
            a["body_size"].as_u64().unwrap_or(0),
            s(a, "body_sha256")
        ),
    );
    let headers = a["headers"].as_array().cloned().unwrap_or_default();
    out.push_str(&format!("headers       {}\n", headers.len()));
    for h in &headers {
        let name = h[0].as_str().map(printable).unwrap_or_default();
        let value = h[1].as_str().map(printable).unwrap_or_default();
        out.push_str(&format!("  {name}: {value}\n"));
    }
    if let Some(p) = preview_text(&a["body_preview"]) {
        out.push_str("body preview\n");
        for l in p.lines() {
            out.push_str(&format!("  {}\n", printable(l)));
        }
        if a["body_truncated"] == Value::Bool(true) {
            out.push_str("  … (truncated: only the start is shown)\n");
        }
    }
    out
}

/// The body preview as text: the contract's `body_preview` is the lossy UTF-8 text (or an
/// object `{text, truncated}`).
fn preview_text(v: &Value) -> Option<String> {
    match v {
        Value::String(t) if !t.is_empty() => Some(t.clone()),
        Value::Object(o) => {
            let text = o.get("text").and_then(Value::as_str)?.to_string();
            let truncated = o.get("truncated").and_then(Value::as_bool) == Some(true);
            Some(if truncated {
                format!("{text}\n… (truncated)")
            } else {
                text
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn approval() -> Value {
        json!({
            "id": "ap_1", "status": "pending", "credential": "gh", "method": "POST",
            "url": "https://api.github.com/repos/o/r/issues\u{1b}[2J", "via": "execute",
            "requested_by": "key:k1", "reason": "file the bug\u{7}", "created_at": 0,
            "expires_at": 600_000, "headers": [["content-type", "application/json"]],
            "body_sha256": "ab", "body_size": 12, "body_preview": "{\"title\":\"x\"}"
        })
    }

    #[test]
    fn the_table_has_a_header_and_one_printable_line_per_approval() {
        let t = table(&[approval(), approval()]);
        assert_eq!(t.lines().count(), 3, "{t}");
        assert!(t.starts_with("ID"));
        assert!(t.contains("ap_1") && t.contains("pending") && t.contains("POST"));
        assert!(!t.chars().any(|c| c.is_control() && c != '\n'), "{t:?}");
        assert_eq!(table(&[]), "no approvals\n");
    }

    #[test]
    fn the_detail_shows_the_bound_request_printably() {
        let d = detail(&approval());
        // Times as the other tables print them (local time, RFC 3339).
        let expires = super::super::table::time_of(&json!(600_000));
        for want in [
            "credential    gh",
            "content-type: application/json",
            "{\"title\":\"x\"}",
            "file the bug",
            expires.as_str(),
        ] {
            assert!(d.contains(want), "{want}: {d}");
        }
        assert!(!d.chars().any(|c| c.is_control() && c != '\n'), "{d:?}");
    }
}
