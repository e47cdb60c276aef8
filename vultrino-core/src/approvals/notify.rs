//! The announcement of a new approval (the contract's "Notification"; decision 0093): one POST
//! to the deployment's approval webhook, generic JSON or Slack, with a link to the UI page that
//! only shows the approval. Payloads, settings and delivery are in
//! [`crate::approval_webhook`]; this is the hook the gate calls right after an approval is
//! created and audited.
//!
//! The POST goes out through the request's [`Background`](crate::ports::Background) (tokio
//! locally, `ctx.waitUntil` on Workers), so the agent's 202 never waits for it (decision 0101);
//! without one (a caller that has none) it is awaited here, bounded by
//! [`WEBHOOK_TIMEOUT_MS`](crate::approval_webhook::WEBHOOK_TIMEOUT_MS) (5 s). Its outcome is
//! dropped: a webhook that is down or slow never fails the agent's request (the approval is
//! listed in the UI and the CLI all the same). At most [`MAX_NOTICES_PER_KEY`] notifications
//! per key every [`NOTICE_WINDOW_MS`].

use crate::approval_webhook::{ApprovalNotify, Notice};
use crate::ports::Ports;

use super::settings::Settings;
use super::Approval;

/// Announce `approval` (just created, pending) to the webhook of `settings`, if one is set.
pub(crate) async fn notify(ports: &Ports, settings: Settings<'_>, approval: &Approval) {
    let Some(n) = settings.notify.filter(|n| n.webhook.is_some()) else {
        return;
    };
    let allow_loopback = settings.allow_loopback;
    match settings.background {
        Some(background) => {
            let (ports, n, approval) = (ports.clone(), n.clone(), approval.clone());
            background.spawn(Box::pin(async move {
                deliver(&ports, &n, allow_loopback, &approval).await;
            }));
        }
        None => deliver(ports, n, allow_loopback, approval).await,
    }
}

/// At most this many notifications for the approvals of one API key (its tokens included) per
/// [`NOTICE_WINDOW_MS`]; past it the approvals are listed in the UI and the CLI but not
/// announced, so an agent cannot bury the person's channel (and the one request that matters)
/// under a hundred notifications every ten minutes (review of 2026-12-06, approvals and tokens,
/// finding 6).
pub const MAX_NOTICES_PER_KEY: u32 = 10;
/// The window of [`MAX_NOTICES_PER_KEY`] (10 minutes, the default approval TTL).
pub const NOTICE_WINDOW_MS: u64 = 600_000;

async fn deliver(ports: &Ports, n: &ApprovalNotify, allow_loopback: bool, approval: &Approval) {
    let counter = format!("approval-notices:{}", approval.requested_by_key);
    let hit = ports
        .sessions
        .hit(
            &counter,
            NOTICE_WINDOW_MS,
            MAX_NOTICES_PER_KEY,
            ports.now_ms(),
        )
        .await;
    // A counter that cannot be read does not silence the notification: it bounds a nuisance,
    // it guards nothing.
    if hit.is_ok_and(|h| !h.allowed) {
        return;
    }
    let notice = Notice {
        approval_id: &approval.id,
        credential: &approval.credential,
        method: &approval.method,
        url: &approval.url,
        reason: approval.reason.as_deref(),
        requested_by: &approval.requested_by,
        expires_at: approval.expires_at,
    };
    let _ = n.deliver(&*ports.fetcher, allow_loopback, &notice).await;
}
