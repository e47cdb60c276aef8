//! The approval gate of the shared request path: [`Pipeline::approval_gate`], called by execute
//! (and so MCP `http_request`) and by the pass-through proxy right after the credential's policy
//! and the request's cleaning, before the credential is injected and before the token's use is
//! spent.
//!
//! - No approval needed → `Ok(None)`: the request goes on.
//! - Needed, no approval id → an approval is created (audited `approval_requested`, announced
//!   by [`notify`](super::notify::notify)) and the request ends with 202 `approval_pending`;
//!   nothing is sent and no token use is spent.
//! - Needed, with an approval id → the approval is consumed (approved → executed, one step in
//!   the store) iff it is this key's and its binding is this request's: `Ok(Some(id))`, and the
//!   request goes on. Otherwise: pending → 202 again; denied → 403; expired → 410; executed →
//!   409 `approval_used`; another binding → 409 `approval_mismatch` (audited); unknown or another
//!   key's → 404.
//! - `Prefer: wait=N` on either: while pending, the request is held up to N s, the approval
//!   re-read every poll interval; approved meanwhile → consumed and run in the same exchange.
//!   At most [`MAX_WAITERS_PER_KEY`] requests of a key are held at once (per process, per
//!   isolate on Workers): past it, the answer is at once, as without `Prefer` (decision 0101).
//! - Before an approval is consumed, the checks that could refuse the request with nothing
//!   sent run first ([`ready`](crate::auth::tokens::ready)), so that such a refusal keeps the
//!   approval.

use crate::audit::AuditEvent;
use crate::auth::Principal;
use crate::credential::CredentialRecord;
use crate::error::{Code, Error, ErrorKind, PendingApproval, Result};
use crate::execute::Pipeline;
use crate::ports::approval_rules::{Consumed, Op, Reply};

use super::settings::{MAX_WAITERS, MAX_WAITERS_PER_KEY};
use super::{binding, inert, preview, required, Approval, Ask, Bound, Status, Via};

impl<'a> Pipeline<'a> {
    /// The gate (see the [module doc](self)). `host` and `path` are for the audit events.
    pub(crate) async fn approval_gate(
        &self,
        who: &Principal,
        record: &CredentialRecord,
        bound: &Bound<'_>,
        ask: &Ask,
    ) -> Result<Option<String>> {
        let method = http::Method::from_bytes(bound.method.as_bytes()).map_err(|_| {
            Error::bad_request("method is not a valid HTTP method").with_code(Code::InvalidRequest)
        })?;
        if !required(who, record.policy.require_approval, &method) {
            return Ok(None);
        }
        ask.validate()?;
        let Principal::ApiKey { id: key, .. } = who else {
            return Ok(None);
        };
        let binding = binding(bound);
        let mut wait_ms = ask.wait_secs.unwrap_or(0).saturating_mul(1000);
        let settings = self.approval_settings();
        // A request may be held only so many at once per key ([`MAX_WAITERS_PER_KEY`]): its
        // place is taken before anything else, and past the bound the request is answered at
        // once, as without `Prefer` (decision 0101). Held until the gate returns.
        let _held = match (wait_ms > 0, settings.sleeper, settings.waiters) {
            (true, Some(_), Some(waiters)) => {
                let slot = waiters.take(key, MAX_WAITERS, MAX_WAITERS_PER_KEY).ok();
                if slot.is_none() {
                    wait_ms = 0;
                }
                slot
            }
            _ => None,
        };
        let id = match &ask.approval_id {
            Some(id) => id.clone(),
            None => {
                let approval = self
                    .create_approval(who, key, bound, ask, binding.clone())
                    .await?;
                if wait_ms == 0 || settings.sleeper.is_none() {
                    return Err(pending(&approval, None));
                }
                approval.id
            }
        };
        // A refused request keeps its approval: what can refuse it with nothing sent is looked
        // at before the consume (the key's or token's revocation, the token's expiry and uses
        // left; decision 0101).
        crate::auth::tokens::ready(self.ports(), who).await?;
        let started = self.ports().now_ms();
        loop {
            let consumed = self.consume(who, &id, key, &binding).await?;
            match consumed {
                Consumed::Run { approval } => return Ok(Some(approval.id)),
                Consumed::NotFound => return Err(super::not_found()),
                Consumed::Mismatch { approval } => {
                    self.audit_approval(who, &approval, "approval_mismatch", "denied")
                        .await;
                    return Err(Error::conflict(
                        "this request differs from the approved one (method, URL, a bound \
                         header or the body): the approval is unchanged",
                    )
                    .with_code(Code::ApprovalMismatch));
                }
                Consumed::NotApproved { approval } => match approval.status {
                    Status::Denied => {
                        return Err(Error::forbidden("a person denied this request")
                            .with_code(Code::ApprovalDenied))
                    }
                    Status::Expired => {
                        return Err(Error::new(ErrorKind::Gone, "this approval has expired")
                            .with_code(Code::ApprovalExpired))
                    }
                    Status::Executed => {
                        return Err(Error::conflict(
                            "this approval was used already: a request runs once per approval",
                        )
                        .with_code(Code::ApprovalUsed))
                    }
                    Status::Pending | Status::Approved => {
                        let waited = self.ports().now_ms().saturating_sub(started);
                        let (Some(sleeper), true) = (settings.sleeper, waited < wait_ms) else {
                            let applied = (wait_ms > 0 && settings.sleeper.is_some())
                                .then_some(wait_ms / 1000);
                            return Err(pending(&approval, applied));
                        };
                        sleeper
                            .sleep(settings.poll_ms.min(wait_ms - waited).max(1))
                            .await;
                    }
                },
            }
        }
    }

    /// Store a new pending approval for this request; audit and announce it.
    async fn create_approval(
        &self,
        who: &Principal,
        key: &str,
        bound: &Bound<'_>,
        ask: &Ask,
        binding: String,
    ) -> Result<Approval> {
        let headers = showable(bound)?;
        let now = self.ports().now_ms();
        let (body_preview, body_truncated) = preview(bound.body);
        let approval = Approval {
            id: super::new_id(),
            status: Status::Pending,
            credential: bound.credential.to_string(),
            method: bound.method.to_string(),
            url: bound.url.to_string(),
            headers: headers.into_iter().map(|(n, v)| (n, inert(&v))).collect(),
            body_sha256: crate::crypto::sha256_hex(bound.body),
            body_size: bound.body.len() as u64,
            body_preview,
            body_truncated,
            reason: ask.reason.clone(),
            via: ask.via.unwrap_or(Via::Execute),
            requested_by: who.actor(),
            requested_by_key: key.to_string(),
            requested_by_token: who.token().map(|t| t.id.clone()),
            binding,
            created_at: now,
            expires_at: now.saturating_add(self.approval_settings().ttl_ms),
            decided_at: None,
            decided_by: None,
            note: None,
            executed_at: None,
        };
        let reply = self
            .ports()
            .sessions
            .approval(Op::Create {
                approval: Box::new(approval.clone()),
                now_ms: now,
            })
            .await?;
        self.audit_expired(&reply).await;
        if matches!(reply, Reply::Created { refused: true, .. }) {
            return Err(Error::new(
                ErrorKind::RateLimited,
                "this key has too many pending approvals: wait for decisions or their expiry",
            )
            .with_code(Code::RateLimited)
            .with_retry_after(60));
        }
        self.audit_approval(who, &approval, "approval_requested", "success")
            .await;
        super::notify::notify(self.ports(), self.approval_settings(), &approval).await;
        Ok(approval)
    }

    async fn consume(
        &self,
        who: &Principal,
        id: &str,
        key: &str,
        binding: &str,
    ) -> Result<Consumed> {
        let reply = self
            .ports()
            .sessions
            .approval(Op::Consume {
                id: id.to_string(),
                key: key.to_string(),
                token: who.token().map(|t| t.id.clone()),
                binding: binding.to_string(),
                now_ms: self.ports().now_ms(),
            })
            .await?;
        self.audit_expired(&reply).await;
        match reply {
            Reply::Consumed { consumed, .. } => Ok(consumed),
            _ => Err(Error::internal()),
        }
    }

    /// One `approval_expired` event per approval a store reply turned expired.
    pub(crate) async fn audit_expired(&self, reply: &Reply) {
        for a in reply.expired() {
            let mut event = AuditEvent::new(
                self.ports().now_ms(),
                "vultrino",
                "approval_expired",
                "success",
            );
            fill(&mut event, a);
            self.audit().record(event).await;
        }
    }

    /// An `approval_*` event about `a` by `who`.
    pub(crate) async fn audit_approval(
        &self,
        who: &Principal,
        a: &Approval,
        action: &str,
        outcome: &str,
    ) {
        self.audit_approval_as(&who.actor(), a, action, outcome)
            .await;
    }

    /// An `approval_*` event about `a` by the actor string `actor`.
    pub(crate) async fn audit_approval_as(
        &self,
        actor: &str,
        a: &Approval,
        action: &str,
        outcome: &str,
    ) {
        let mut event = AuditEvent::new(self.ports().now_ms(), actor, action, outcome);
        fill(&mut event, a);
        self.audit().record(event).await;
    }
}

/// The event's fields from the approval: credential, method, host, path (no query) and id.
fn fill(event: &mut AuditEvent, a: &Approval) {
    event.credential = Some(a.credential.clone());
    event.method = Some(a.method.clone());
    if let Ok(u) = url::Url::parse(&a.url) {
        event.host = u.host_str().map(str::to_string);
        event.path = Some(crate::agent_key::audit_path(u.path()));
    }
    event.approval_id = Some(a.id.clone());
}

/// What an approval shows of a request is bounded, so that a key cannot make records (memory
/// locally, Durable Object storage on the worker) arbitrarily large.
pub const MAX_URL_SHOWN: usize = 4096;
pub const MAX_HEADERS_SHOWN: usize = 64;
pub const MAX_HEADER_SHOWN: usize = 1024;

/// The bound headers of `bound`, if the approval can show everything the binding covers but
/// the body (whose preview says when it is cut): a URL of at most [`MAX_URL_SHOWN`] bytes, at
/// most [`MAX_HEADERS_SHOWN`] bound headers of at most [`MAX_HEADER_SHOWN`] bytes each. Anything
/// longer is refused before an approval is made, 400 `invalid_url` / `invalid_header`: cut or
/// left out silently, a bound header or query parameter the person never saw (the 65th header,
/// `Prefer: resolution=merge-duplicates` behind 64 padding ones) would ride the approval
/// (review of 2026-12-06, approvals and tokens, finding 3).
fn showable(bound: &Bound<'_>) -> Result<Vec<(String, String)>> {
    if bound.url.len() > MAX_URL_SHOWN {
        return Err(Error::bad_request(format!(
            "a request that needs approval must have a URL of at most {MAX_URL_SHOWN} bytes, so \
             that the person sees all of it"
        ))
        .with_code(Code::InvalidUrl));
    }
    let headers = bound.bound_headers();
    let too_long =
        |(n, v): &(String, String)| n.len() > MAX_HEADER_SHOWN || v.len() > MAX_HEADER_SHOWN;
    if headers.len() > MAX_HEADERS_SHOWN || headers.iter().any(too_long) {
        return Err(Error::bad_request(format!(
            "a request that needs approval must have at most {MAX_HEADERS_SHOWN} headers (but \
             user-agent, tracing and x-vultrino-*), each at most {MAX_HEADER_SHOWN} bytes, so \
             that the person sees all of them"
        ))
        .with_code(Code::InvalidHeader));
    }
    Ok(headers)
}

/// 202 for `a`.
fn pending(a: &Approval, waited_secs: Option<u64>) -> Error {
    Error::pending_approval(PendingApproval {
        approval_id: a.id.clone(),
        expires_at: a.expires_at,
        waited_secs,
    })
}
