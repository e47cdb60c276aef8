//! Approvals: a person's yes before an agent's request runs (issue 15;
//! docs/decisions/0090-approvals.md).
//!
//! - **Required** when the credential's policy says `require_approval: always` (every method)
//!   or `writes` (every method but GET, HEAD, OPTIONS), or the agent token was minted with
//!   `require_approval: true` ([`required`]). Admin principals (a logged-in admin, the offline
//!   CLI's operator) are the people who approve and are never asked.
//! - **Bound** to the exact request: credential, method, upstream URL, the forwarded headers
//!   that matter and the SHA-256 of the body, through ONE function, [`binding`], used by every
//!   entry point (execute, `/proxy/`, MCP `http_request`). The server never stores or replays
//!   the request: the agent re-sends it with `X-Vultrino-Approval: ap_…`.
//! - **Stored** in the [`SessionStore`](crate::ports::SessionStore) (memory locally, one
//!   Durable Object on the worker), whose rules are in
//!   [`approval_rules`](crate::ports::approval_rules): pending → approved|denied → executed,
//!   expiry applied lazily when read; the step approved → executed is a compare-and-set, so of N
//!   concurrent re-sends exactly one runs.
//! - **Gated** in the shared request path ([`gate`]), **served** by the API
//!   (`crate::api::approvals`), **announced** by [`notify`] right after creation.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::auth::Principal;
use crate::crypto;
use crate::error::{Code, Error, Result};
use crate::policy::RequireApproval;

pub mod gate;
pub mod notify;
pub mod settings;

/// The prefix of approval ids.
pub const ID_PREFIX: &str = "ap_";
/// How long a pending approval waits for a decision, and an approved one for its re-send, by
/// default (10 minutes).
pub const DEFAULT_TTL_SECS: u64 = 600;
/// Longest `Prefer: wait=N` honoured, in seconds (larger values are clamped to it).
pub const MAX_WAIT_SECS: u64 = 60;
/// How many bytes of the body an approval shows.
pub const BODY_PREVIEW_BYTES: usize = 2048;
/// Longest agent reason and decider note, in characters.
pub const MAX_REASON_CHARS: usize = 500;
/// The header carrying the approval id on a re-send.
pub const APPROVAL_HEADER: &str = "x-vultrino-approval";
/// The header carrying the agent's reason on the pass-through proxy.
pub const REASON_HEADER: &str = "x-vultrino-reason";

/// Forwarded request headers that an approval does NOT bind: they change between two sends of
/// the same request by the same SDK (retries, tracing, timing) or are Vultrino's own.
/// `x-vultrino-*` is matched as a prefix. Documented in docs/approvals.md.
///
/// `Prefer` is not among them: it goes upstream and upstreams act on it (PostgREST's
/// `resolution=merge-duplicates` makes an insert an upsert), so only its `wait` preference,
/// Vultrino's own, is left out of the binding ([`bound_prefer`]).
pub const VOLATILE_HEADERS: [&str; 7] = [
    "user-agent",
    "traceparent",
    "tracestate",
    "date",
    "accept-encoding",
    "content-length",
    "x-stainless-*",
];

/// What a `Prefer` value binds: its preferences but `wait=N` (unquoted digits, Vultrino's own,
/// which an agent adds or drops between two sends), in order; `None` when nothing is left. A
/// value with a quoted string is bound whole (a comma inside quotes is not a separator, and
/// this code does not parse quotes).
pub fn bound_prefer(value: &str) -> Option<String> {
    if value.contains('"') {
        return Some(value.to_string());
    }
    let is_wait = |p: &str| {
        p.split_once('=').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("wait")
                && !v.trim().is_empty()
                && v.trim().bytes().all(|b| b.is_ascii_digit())
        })
    };
    let kept: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty() && !is_wait(p))
        .collect();
    (!kept.is_empty()).then(|| kept.join(", "))
}

/// Whether a forwarded header is left out of the binding (see [`VOLATILE_HEADERS`]).
pub fn is_volatile(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.starts_with("x-vultrino-")
        || VOLATILE_HEADERS.iter().any(|v| match v.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == *v,
        })
}

/// Where an approval was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    Execute,
    Proxy,
    Mcp,
}

/// The life of an approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Approved,
    Denied,
    Executed,
    Expired,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Denied => "denied",
            Status::Executed => "executed",
            Status::Expired => "expired",
        }
    }

    /// `?status=` of `GET /v1/approvals`.
    pub fn parse(s: &str) -> Option<Status> {
        [
            Status::Pending,
            Status::Approved,
            Status::Denied,
            Status::Executed,
            Status::Expired,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    /// Whether nothing can happen to the approval any more.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Denied | Status::Executed | Status::Expired)
    }
}

/// One approval, as stored and as `GET /v1/approvals/{id}` shows it (times in ms since the
/// epoch). It holds no secret: the headers are the agent's own, before the credential is
/// injected, and never a key slot (those are dropped before the binding is made).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub id: String,
    pub status: Status,
    pub credential: String,
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body_sha256: String,
    pub body_size: u64,
    /// The first [`BODY_PREVIEW_BYTES`] of the body, as lossy UTF-8.
    pub body_preview: String,
    /// Whether `body_preview` is shorter than the body.
    pub body_truncated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub via: Via,
    /// The actor string of the requester (`key:<id>` or `key:<id> token:<id>`).
    pub requested_by: String,
    /// The requesting API key's id.
    pub requested_by_key: String,
    /// The requesting agent token's id, when a token asked. Of the key's tokens only that one
    /// may read and use the approval; the key itself (without a token) reads and uses every
    /// approval of its own and of its tokens; a token never one of its key's or of a sibling
    /// (review of 2026-12-06, approvals and tokens, finding 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by_token: Option<String>,
    /// Hex SHA-256 of the bound request ([`binding`]).
    pub binding: String,
    pub created_at: u64,
    /// Pending: `created_at` + TTL; approved: `decided_at` + TTL.
    pub expires_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executed_at: Option<u64>,
}

/// A fresh approval id: `ap_` and 128 random bits in hex.
pub fn new_id() -> String {
    format!("{ID_PREFIX}{}", crypto::hex(&crypto::random_bytes::<16>()))
}

/// Whether `s` has the shape of an approval id (checked before any lookup).
pub fn is_id(s: &str) -> bool {
    s.strip_prefix(ID_PREFIX).is_some_and(|h| {
        h.len() == 32
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Whether the request of `who` with `method` needs a person's approval under the credential's
/// `policy` setting and the caller's token.
pub fn required(who: &Principal, policy: Option<RequireApproval>, method: &http::Method) -> bool {
    if matches!(who, Principal::Admin { .. }) {
        return false;
    }
    let by_token = who.token().is_some_and(|t| t.require_approval);
    let by_policy = match policy {
        None => false,
        Some(RequireApproval::Always) => true,
        Some(RequireApproval::Writes) => !matches!(
            *method,
            http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
        ),
    };
    by_token || by_policy
}

/// What an approval binds: the request as it goes upstream, before the credential is injected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound<'r> {
    pub credential: &'r str,
    /// Upper case.
    pub method: &'r str,
    /// The full upstream URL, query included, key slots removed.
    pub url: &'r str,
    /// The forwarded headers (lower-case names) in the order they are sent; the volatile ones
    /// are skipped by [`binding`].
    pub headers: Vec<(String, String)>,
    pub body: &'r [u8],
}

impl Bound<'_> {
    /// The headers that are bound, in a canonical order: by name, repeated ones in the order
    /// they are sent.
    pub fn bound_headers(&self) -> Vec<(String, String)> {
        let mut kept: Vec<(String, String)> = self
            .headers
            .iter()
            .filter(|(n, _)| !is_volatile(n))
            .filter_map(|(n, v)| {
                let n = n.to_ascii_lowercase();
                if n == "prefer" {
                    return bound_prefer(v).map(|v| (n, v));
                }
                Some((n, v.clone()))
            })
            .collect();
        // Stable: same-name values keep their order.
        kept.sort_by(|a, b| a.0.cmp(&b.0));
        kept
    }
}

/// THE binding of a request: hex SHA-256 over a canonical, length-prefixed encoding of the
/// credential, method, URL, bound headers and the SHA-256 of the body. Every entry point calls
/// this one function, so the request approved and the request re-sent are compared the same
/// way wherever they come in.
pub fn binding(b: &Bound<'_>) -> String {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    field(b"vultrino-approval-binding-v1");
    field(b.credential.as_bytes());
    field(b.method.as_bytes());
    field(b.url.as_bytes());
    let headers = b.bound_headers();
    field(&(headers.len() as u64).to_be_bytes());
    for (name, value) in &headers {
        field(name.as_bytes());
        field(value.as_bytes());
    }
    field(&Sha256::digest(b.body));
    crypto::hex(&h.finalize())
}

/// The part of a request that asks about approvals: the id of a re-send, the agent's reason,
/// `Prefer: wait=N`, and where it came in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ask {
    pub approval_id: Option<String>,
    pub reason: Option<String>,
    /// Seconds to hold the request while the approval is pending (already clamped).
    pub wait_secs: Option<u64>,
    pub via: Option<Via>,
}

impl Ask {
    /// From the headers of a request: `X-Vultrino-Approval`, `X-Vultrino-Reason`, `Prefer`.
    pub fn from_headers(headers: &http::HeaderMap, via: Via) -> Result<Ask> {
        // By constant names: a look-up by text parses the name each time (docs/decisions/0113).
        const APPROVAL: http::HeaderName = http::HeaderName::from_static(APPROVAL_HEADER);
        const REASON: http::HeaderName = http::HeaderName::from_static(REASON_HEADER);
        let text = |name: &http::HeaderName| {
            headers
                .get(name)
                .map(|v| {
                    v.to_str().map(str::to_string).map_err(|_| {
                        Error::bad_request(format!("{name} must be visible ASCII"))
                            .with_code(Code::InvalidHeader)
                    })
                })
                .transpose()
        };
        Ok(Ask {
            approval_id: text(&APPROVAL)?,
            reason: text(&REASON)?,
            wait_secs: prefer_wait(headers),
            via: Some(via),
        })
    }

    /// Take execute's (and MCP `http_request`'s) own fields out of its JSON body:
    /// `approval_id` and `reason` (strings), which win over the headers.
    pub fn take_fields(&mut self, value: &mut serde_json::Value) -> Result<()> {
        let Some(fields) = value.as_object_mut() else {
            return Ok(());
        };
        for (name, slot) in [
            ("approval_id", &mut self.approval_id),
            ("reason", &mut self.reason),
        ] {
            match fields.remove(name) {
                None | Some(serde_json::Value::Null) => {}
                Some(serde_json::Value::String(s)) => *slot = Some(s),
                Some(_) => {
                    return Err(Error::bad_request(format!("{name} must be a string"))
                        .with_code(Code::InvalidRequest))
                }
            }
        }
        Ok(())
    }

    /// Check the shape of what the agent gave: an id that is an approval id (else 404
    /// `approval_not_found`, nothing looked up), a reason of at most [`MAX_REASON_CHARS`].
    pub fn validate(&self) -> Result<()> {
        if let Some(id) = &self.approval_id {
            if !is_id(id) {
                return Err(not_found());
            }
        }
        if let Some(reason) = &self.reason {
            check_text("reason", reason)?;
        }
        Ok(())
    }
}

/// A reason or note: at most [`MAX_REASON_CHARS`] characters, no control characters but
/// newlines and tabs, and no Unicode format characters (bidirectional overrides, zero-width
/// characters), which would make the text, or the URL shown next to it, read otherwise in the
/// UI and the CLI (review of 2026-12-06, approvals and tokens, finding 4).
pub fn check_text(what: &str, s: &str) -> Result<()> {
    if s.chars().count() > MAX_REASON_CHARS
        || s.chars()
            .any(|c| (c.is_control() && c != '\n' && c != '\t') || crate::input::is_format(c))
    {
        return Err(Error::bad_request(format!(
            "{what} must be at most {MAX_REASON_CHARS} characters, without control or format \
             characters (bidirectional overrides, zero-width characters)"
        ))
        .with_code(Code::InvalidRequest));
    }
    Ok(())
}

/// Agent text as an approval shows it (a bound header's value, the body preview): every
/// Unicode bidirectional control written out as `\u{…}`, so that it cannot reorder what the
/// person reads in the UI, the CLI or an MCP prompt (a body preview that shows `"amount": 10`
/// while the bytes say otherwise). The binding is over the bytes as sent, never this text
/// (review of 2026-12-06, approvals and tokens, finding 4).
pub fn inert(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if is_bidi_control(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// The Unicode bidirectional controls (Bidi_Control).
fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

/// `Prefer: wait=N` (RFC 7240): N seconds, clamped to [`MAX_WAIT_SECS`]; an invalid value is
/// ignored, as the RFC asks of preferences a server does not understand.
pub fn prefer_wait(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get_all(http::header::HeaderName::from_static("prefer"))
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("wait")
                .then(|| v.trim().trim_matches('"').parse::<u64>().ok())?
        })
        .next()
        .map(|n| n.min(MAX_WAIT_SECS))
}

/// The preview of a body: its first [`BODY_PREVIEW_BYTES`] as lossy UTF-8, bidirectional
/// controls written out ([`inert`]), and whether it was cut.
pub fn preview(body: &[u8]) -> (String, bool) {
    let cut = body.len() > BODY_PREVIEW_BYTES;
    let shown = &body[..body.len().min(BODY_PREVIEW_BYTES)];
    (inert(&String::from_utf8_lossy(shown)), cut)
}

/// 404 `approval_not_found`: unknown id, or one another key asked for (the same answer, so a
/// key learns nothing of other keys' approvals).
pub fn not_found() -> Error {
    Error::not_found("no such approval for this key").with_code(Code::ApprovalNotFound)
}

#[cfg(test)]
mod tests;
