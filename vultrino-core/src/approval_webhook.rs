//! The approval notification: when an approval is requested, one POST to the operator's webhook
//! (`--approval-webhook` locally, `APPROVAL_WEBHOOK` on the worker), generic JSON or a
//! Slack-compatible `{text, blocks}` (docs/decisions/0093-approval-notifications.md).
//!
//! - The POST goes through the deployment's [`Fetcher`] with the upstream SSRF rules (https;
//!   loopback only when loopback upstreams are allowed), once, before the agent's 202, with a
//!   5 s deadline. A webhook that fails never fails the agent's request (a slow one delays its
//!   202 by at most that); nothing is retried (the approval stays listed in the UI and CLI).
//! - The payload carries what a person needs to decide whether to open the page: credential,
//!   method, URL, the agent's reason, who asked, the expiry and the **link**
//!   `<public_url>/ui/#/approvals/<id>`. The link only SHOWS the approval: approving needs the
//!   admin's session and a click that POSTs with the CSRF token, so a chat app's link previewer
//!   (a GET) changes nothing. Without a public URL there is no link (`"link": null`, and the
//!   Slack text says where to look instead).
//! - Never in it: the request's headers, body or body preview (they may hold personal data
//!   or tokens of the agent's own), and never a credential's secret (the approval holds none).
//! - The webhook URL itself may be a secret (a Slack incoming-webhook URL is one): `Debug`
//!   prints whether it is set, never the URL, and errors never repeat it (the Fetcher's rule).

use bytes::Bytes;
use serde_json::{json, Value};

use crate::error::{Code, Error, ErrorKind, Result};
use crate::ports::{FetchOptions, Fetcher};

/// How long the webhook may take to answer.
pub const WEBHOOK_TIMEOUT_MS: u64 = 5_000;
/// The most of the webhook's reply that is read (it is not used).
const WEBHOOK_MAX_REPLY: usize = 64 * 1024;
/// What stays as it is in the link's id (an `ap_…` id never needs escaping; anything else is).
const ID_SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
/// Slack: longest URL shown in the message (a section's text holds 3000 characters).
const SLACK_MAX_URL: usize = 1_000;

/// The payload's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WebhookFormat {
    /// `{event, approval_id, credential, method, url, reason, requested_by, expires_at, link}`.
    #[default]
    Json,
    /// A Slack incoming-webhook message, `{text, blocks}` (also taken by Mattermost and others).
    Slack,
}

impl WebhookFormat {
    /// `json` or `slack` (case-insensitive); anything else is `None`.
    pub fn parse(s: &str) -> Option<WebhookFormat> {
        match s.trim().to_ascii_lowercase().as_str() {
            "json" => Some(WebhookFormat::Json),
            "slack" => Some(WebhookFormat::Slack),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookFormat::Json => "json",
            WebhookFormat::Slack => "slack",
        }
    }
}

/// The notification settings of a deployment.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ApprovalNotify {
    /// Where to POST (`None`: no notification).
    pub webhook: Option<String>,
    pub format: WebhookFormat,
    /// The admin UI's public base URL (`https://vultrino.example.com`), for the link.
    pub public_url: Option<String>,
}

impl std::fmt::Debug for ApprovalNotify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApprovalNotify")
            .field("webhook_set", &self.webhook.is_some())
            .field("format", &self.format)
            .field("public_url", &self.public_url)
            .finish()
    }
}

/// Which notification setting [`ApprovalNotify::problem`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifySetting {
    Webhook,
    PublicUrl,
}

impl ApprovalNotify {
    /// What is wrong with these settings, if anything (never repeating a value): the webhook
    /// must be a URL the deployment may send to (the upstream SSRF rules), the public URL an
    /// absolute http(s) URL without credentials, query or fragment.
    pub fn problem(&self, allow_loopback: bool) -> Option<(NotifySetting, &'static str)> {
        if let Some(w) = &self.webhook {
            if crate::ssrf::check_url(w, allow_loopback).is_err() {
                return Some((
                    NotifySetting::Webhook,
                    "must be an https:// URL of a public host (http:// to a loopback address \
                     only where loopback upstreams are allowed, for tests)",
                ));
            }
        }
        if let Some(p) = &self.public_url {
            let ok = url::Url::parse(p).is_ok_and(|u| {
                matches!(u.scheme(), "https" | "http")
                    && u.host().is_some()
                    && u.username().is_empty()
                    && u.password().is_none()
                    && u.query().is_none()
                    && u.fragment().is_none()
            });
            if !ok {
                return Some((
                    NotifySetting::PublicUrl,
                    "must be the absolute http(s) base URL of the admin UI (no user, query or \
                     fragment), e.g. https://admin.example.com",
                ));
            }
        }
        None
    }

    /// The page of approval `id` in the admin UI, when a public URL is set.
    pub fn link(&self, id: &str) -> Option<String> {
        let base = self.public_url.as_deref()?.trim().trim_end_matches('/');
        let id: String = percent_encoding::utf8_percent_encode(id, ID_SET).collect();
        Some(format!("{base}/ui/#/approvals/{id}"))
    }

    /// The body of the POST for `notice`, in this deployment's format.
    pub fn payload(&self, notice: &Notice<'_>) -> Value {
        let link = self.link(notice.approval_id);
        match self.format {
            WebhookFormat::Json => generic_payload(notice, link.as_deref()),
            WebhookFormat::Slack => slack_payload(notice, link.as_deref()),
        }
    }

    /// POST the notification for `notice` to the webhook (nothing when none is set), once, and
    /// wait for its answer. `Ok` when the webhook answered 2xx; otherwise the error (which
    /// never repeats the URL). The caller drops the outcome.
    pub async fn deliver(
        &self,
        fetcher: &dyn Fetcher,
        allow_loopback: bool,
        notice: &Notice<'_>,
    ) -> Result<()> {
        let Some(webhook) = &self.webhook else {
            return Ok(());
        };
        let target = crate::ssrf::check_url(webhook, allow_loopback)?;
        let body = serde_json::to_vec(&self.payload(notice)).map_err(|_| Error::internal())?;
        let request = http::Request::builder()
            .method(http::Method::POST)
            .uri(target.url.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "vultrino-approvals")
            .body(Bytes::from(body))
            .map_err(|_| Error::internal())?;
        let reply = fetcher
            .fetch(
                request,
                FetchOptions {
                    timeout_ms: WEBHOOK_TIMEOUT_MS,
                    max_response_bytes: WEBHOOK_MAX_REPLY,
                    allow_loopback,
                },
            )
            .await?;
        if reply.status().is_success() {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::UpstreamFailed,
                format!("the approval webhook answered {}", reply.status().as_u16()),
            )
            .with_code(Code::UpstreamError))
        }
    }
}

/// What the notification tells of one approval (borrowed from the record).
#[derive(Debug, Clone, Copy)]
pub struct Notice<'a> {
    pub approval_id: &'a str,
    pub credential: &'a str,
    pub method: &'a str,
    pub url: &'a str,
    pub reason: Option<&'a str>,
    pub requested_by: &'a str,
    /// Epoch milliseconds.
    pub expires_at: u64,
}

fn generic_payload(n: &Notice<'_>, link: Option<&str>) -> Value {
    json!({
        "event": "approval_requested",
        "approval_id": n.approval_id,
        "credential": n.credential,
        "method": n.method,
        "url": n.url,
        "reason": n.reason,
        "requested_by": n.requested_by,
        "expires_at": n.expires_at,
        "link": link,
    })
}

/// Slack's three control characters escaped (<https://api.slack.com/reference/surfaces/formatting#escaping>),
/// so text from the agent (a reason, a URL) cannot make a link of its own (`<https://x|Approve>`),
/// mention a channel (`<!channel>`) or format the message.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `s` cut to at most `max` characters (marked with `…` when cut).
fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Backticks inside inline code would end it early: they are replaced.
fn code(s: &str) -> String {
    format!("`{}`", slack_escape(s).replace('`', "'"))
}

fn slack_payload(n: &Notice<'_>, link: Option<&str>) -> Value {
    let url = code(&cut(n.url, SLACK_MAX_URL));
    let expires = crate::time::utc_for_people(n.expires_at);
    let summary = format!(
        "Approval requested: {} {} with credential {}",
        code(n.method),
        url,
        code(n.credential)
    );
    let mut details = format!(
        "*Requested by:* {}\n*Expires:* {}",
        code(n.requested_by),
        expires
    );
    // The agent's reason in inline code, on one line: Slack turns a bare URL in text into a
    // link, so a reason could otherwise add its own "approve here" link beside the page's
    // (review of 2026-12-06, approvals and tokens, finding 5).
    if let Some(r) = n.reason.filter(|r| !r.trim().is_empty()) {
        let one_line: String = r
            .chars()
            .map(|c| if c.is_whitespace() { ' ' } else { c })
            .collect();
        details.push_str(&format!(
            "\n*Reason (the agent's words):* {}",
            code(&one_line)
        ));
    }
    let open = match link {
        // The link only shows the approval: deciding takes a sign-in and a click there.
        Some(l) => format!("<{}|Review it in Vultrino> (approve or deny there)", l),
        None => format!(
            "Review it in the Vultrino admin UI (Approvals) or with `vultrino approval show {}`",
            slack_escape(n.approval_id)
        ),
    };
    let text = format!("{summary}. Expires {expires}. {open}");
    json!({
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": summary}},
            {"type": "section", "text": {"type": "mrkdwn", "text": details}},
            {"type": "section", "text": {"type": "mrkdwn", "text": open}},
            {"type": "context", "elements": [
                {"type": "mrkdwn", "text": format!("Approval {}", code(n.approval_id))}
            ]}
        ]
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn notice<'a>(reason: Option<&'a str>) -> Notice<'a> {
        Notice {
            approval_id: "ap_0123abcd",
            credential: "github",
            method: "POST",
            url: "https://api.github.com/repos/o/r/issues",
            reason,
            requested_by: "key:k_1",
            expires_at: 1_700_000_000_123,
        }
    }

    fn with(format: WebhookFormat, public_url: Option<&str>) -> ApprovalNotify {
        ApprovalNotify {
            webhook: Some("https://hooks.example.com/T/B/secret-part".into()),
            format,
            public_url: public_url.map(str::to_string),
        }
    }

    #[test]
    fn the_generic_payload_names_the_request_and_links_to_the_page() {
        let n = with(WebhookFormat::Json, Some("https://v.example.com/"));
        let p = n.payload(&notice(Some("open the issue")));
        assert_eq!(p["event"], "approval_requested");
        assert_eq!(p["approval_id"], "ap_0123abcd");
        assert_eq!(p["credential"], "github");
        assert_eq!(p["method"], "POST");
        assert_eq!(p["url"], "https://api.github.com/repos/o/r/issues");
        assert_eq!(p["reason"], "open the issue");
        assert_eq!(p["requested_by"], "key:k_1");
        assert_eq!(p["expires_at"], 1_700_000_000_123u64);
        assert_eq!(
            p["link"],
            "https://v.example.com/ui/#/approvals/ap_0123abcd"
        );
        let keys: Vec<_> = p.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys.len(),
            9,
            "nothing else (no headers, no body): {keys:?}"
        );
    }

    #[test]
    fn without_a_public_url_there_is_no_link() {
        let n = with(WebhookFormat::Json, None);
        assert!(n.payload(&notice(None))["link"].is_null());
        let s = with(WebhookFormat::Slack, None).payload(&notice(None));
        assert!(!s.to_string().contains("/ui/#/approvals/"));
        assert!(s["text"]
            .as_str()
            .unwrap()
            .contains("vultrino approval show"));
    }

    #[test]
    fn the_slack_payload_has_text_and_blocks_with_the_link() {
        let n = with(WebhookFormat::Slack, Some("https://v.example.com"));
        let p = n.payload(&notice(Some("open the issue")));
        let text = p["text"].as_str().unwrap();
        assert!(text.contains("`POST`"), "{text}");
        assert!(text.contains("api.github.com/repos/o/r/issues"), "{text}");
        assert!(text.contains("`github`"), "{text}");
        assert!(text.contains("2023-11-14 22:13:20 UTC"), "{text}");
        assert!(text.contains("<https://v.example.com/ui/#/approvals/ap_0123abcd|"));
        let blocks = p["blocks"].as_array().unwrap();
        assert!(blocks.iter().all(|b| b["type"].is_string()));
        assert!(p.to_string().contains("open the issue"));
    }

    #[test]
    fn agent_text_cannot_add_links_or_mentions_to_the_slack_message() {
        let n = with(WebhookFormat::Slack, Some("https://v.example.com"));
        let evil = "<https://evil.example|Approve now> <!channel> & `x`";
        let mut nt = notice(Some(evil));
        nt.url = "https://api.x.com/a?b=<https://evil.example|click>";
        nt.credential = "gh`<!here>";
        let p = n.payload(&nt).to_string();
        assert!(!p.contains("<https://evil"), "{p}");
        assert!(!p.contains("<!channel>"), "{p}");
        assert!(!p.contains("<!here>"), "{p}");
        assert!(
            p.contains("&lt;https://evil.example|Approve now&gt;"),
            "{p}"
        );
        // The only link is the page's.
        assert_eq!(p.matches("<https://").count(), 2, "text and block: {p}");
    }

    #[test]
    fn a_url_in_the_agents_reason_is_never_a_link_in_slack() {
        let n = with(WebhookFormat::Slack, Some("https://v.example.com"));
        let reason = "approve fast:\nhttps://evil.example/ui/#/approvals/ap_1 `x`";
        let p = n.payload(&notice(Some(reason)));
        let details = p["blocks"][1]["text"]["text"].as_str().unwrap();
        assert!(
            details.ends_with("`approve fast: https://evil.example/ui/#/approvals/ap_1 'x'`"),
            "{details}"
        );
        assert_eq!(p.to_string().matches("evil.example").count(), 1, "{p}");
    }

    #[test]
    fn long_urls_are_cut_in_slack_messages() {
        let long = format!("https://api.x.com/{}", "a".repeat(5000));
        let n = with(WebhookFormat::Slack, None);
        let mut nt = notice(None);
        nt.url = &long;
        let text = n.payload(&nt)["blocks"][0]["text"]["text"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(text.chars().count() < 1200, "{}", text.len());
        assert!(text.contains('…'));
    }

    #[test]
    fn formats_parse_and_debug_hides_the_webhook_url() {
        assert_eq!(WebhookFormat::parse("Slack"), Some(WebhookFormat::Slack));
        assert_eq!(WebhookFormat::parse("json"), Some(WebhookFormat::Json));
        assert_eq!(WebhookFormat::parse("xml"), None);
        let d = format!("{:?}", with(WebhookFormat::Slack, None));
        assert!(
            !d.contains("secret-part") && !d.contains("hooks.example.com"),
            "{d}"
        );
    }

    #[test]
    fn settings_are_checked() {
        let ok = with(WebhookFormat::Json, Some("https://v.example.com/base"));
        assert_eq!(ok.problem(false), None);
        let http_hook = ApprovalNotify {
            webhook: Some("http://127.0.0.1:9/hook".into()),
            ..ApprovalNotify::default()
        };
        assert_eq!(
            http_hook.problem(false).map(|p| p.0),
            Some(NotifySetting::Webhook)
        );
        assert_eq!(http_hook.problem(true), None);
        let private = ApprovalNotify {
            webhook: Some("https://10.0.0.1/hook".into()),
            ..ApprovalNotify::default()
        };
        assert_eq!(
            private.problem(true).map(|p| p.0),
            Some(NotifySetting::Webhook)
        );
        for bad in [
            "v.example.com",
            "ftp://v.example.com",
            "https://u:p@v.example.com",
            "https://v.example.com/?x=1",
            "https://v.example.com/#/x",
        ] {
            let n = ApprovalNotify {
                public_url: Some(bad.into()),
                ..ApprovalNotify::default()
            };
            assert_eq!(
                n.problem(false).map(|p| p.0),
                Some(NotifySetting::PublicUrl),
                "{bad}"
            );
        }
        assert_eq!(
            ok.link("ap_1").unwrap(),
            "https://v.example.com/base/ui/#/approvals/ap_1"
        );
    }
}
