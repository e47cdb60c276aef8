//! `GET /v1/approvals`, `GET /v1/approvals/{id}`, `POST /v1/approvals/{id}/approve|deny`
//! ([`crate::approvals`]).
//!
//! Who sees what: an admin (a session, or an API key whose role has `admin`) every approval;
//! any other key only those it and its tokens asked for, and an agent token only those it
//! asked for itself — another's is 404, as an unknown one. Deciding takes an admin, and never the key that asked (nor its tokens,
//! which never have `admin`).

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::reply::json_response;
use crate::app::App;
use crate::approvals::{self, check_text, is_id, Approval, Status};
use crate::auth::{Permission, Principal};
use crate::error::{Code, Error, ErrorKind, Result};
use crate::input::parse_json;
use crate::ports::approval_rules::{Decided, Op, Reply, MAX_PAGE};

/// The optional body of approve and deny.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Decision {
    #[serde(default)]
    note: Option<String>,
}

/// The key whose approvals `who` is limited to; `None` for an admin (all).
fn own_key(who: &Principal) -> Option<&str> {
    match who {
        Principal::Admin { .. } => None,
        Principal::ApiKey { token: None, .. } if who.require(Permission::Admin).is_ok() => None,
        Principal::ApiKey { id, .. } => Some(id),
    }
}

/// The token whose approvals `who` is limited to: an agent token sees only the approvals it
/// asked for itself, never those of its key or of the key's other tokens (which may be for
/// other credentials and other tasks; review of 2026-12-06, approvals and tokens, finding 1).
fn own_token(who: &Principal) -> Option<&str> {
    who.token().map(|t| t.id.as_str())
}

/// Whether `who` may see approval `a`.
fn may_see(who: &Principal, a: &Approval) -> bool {
    own_key(who).is_none_or(|key| key == a.requested_by_key)
        && own_token(who).is_none_or(|t| a.requested_by_token.as_deref() == Some(t))
}

fn query_param(req: &Request<Bytes>, name: &str) -> Option<String> {
    let q = req.uri().query()?;
    url::form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

impl App {
    /// The approval routes: `id` and `action` as in the path.
    pub(super) async fn approvals_route(
        &self,
        req: &Request<Bytes>,
        id: Option<&str>,
        action: Option<&str>,
    ) -> Result<Response<Bytes>> {
        let who = self.authenticator().principal(req).await?;
        match (req.method(), id, action) {
            (&Method::GET, None, None) => self.list_approvals(req, &who).await,
            (&Method::GET, Some(id), None) => {
                let a = self.approval_for(&who, id).await?;
                Ok(json_response(StatusCode::OK, &json!(a)))
            }
            (&Method::POST, Some(id), Some(action @ ("approve" | "deny"))) => {
                self.decide(req, &who, id, action == "approve").await
            }
            (_, Some(_), Some(a)) if a != "approve" && a != "deny" => {
                Err(Error::not_found("no such route"))
            }
            _ => Err(Error::new(
                ErrorKind::MethodNotAllowed,
                "method not allowed on this route",
            )),
        }
    }

    async fn list_approvals(
        &self,
        req: &Request<Bytes>,
        who: &Principal,
    ) -> Result<Response<Bytes>> {
        let status = match query_param(req, "status") {
            None => None,
            Some(s) => Some(Status::parse(&s).ok_or_else(|| {
                Error::bad_request("status must be pending, approved, denied, executed or expired")
                    .with_code(Code::BadRequest)
            })?),
        };
        let limit = match query_param(req, "limit") {
            None => MAX_PAGE,
            Some(s) => s
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_PAGE).contains(n))
                .ok_or_else(|| {
                    Error::bad_request(format!("limit must be an integer from 1 to {MAX_PAGE}"))
                        .with_code(Code::InvalidLimit)
                })?,
        };
        let before = match query_param(req, "cursor") {
            None => None,
            Some(c) if is_id(&c) => Some(c),
            Some(_) => {
                return Err(Error::bad_request("cursor is not one this server gave")
                    .with_code(Code::InvalidCursor))
            }
        };
        let reply = self
            .approvals_op(Op::List {
                key: own_key(who).map(str::to_string),
                token: own_token(who).map(str::to_string),
                status,
                before,
                limit,
                now_ms: self.pipeline().ports().now_ms(),
            })
            .await?;
        match reply {
            Reply::List {
                approvals, next, ..
            } => Ok(json_response(
                StatusCode::OK,
                &json!({"approvals": approvals, "cursor": next}),
            )),
            _ => Err(Error::internal()),
        }
    }

    /// The approval `id`, if `who` may see it (else 404 `approval_not_found`).
    pub async fn approval_for(&self, who: &Principal, id: &str) -> Result<Approval> {
        if !is_id(id) {
            return Err(approvals::not_found());
        }
        let reply = self
            .approvals_op(Op::Get {
                id: id.to_string(),
                now_ms: self.pipeline().ports().now_ms(),
            })
            .await?;
        let Reply::Approval {
            approval: Some(a), ..
        } = reply
        else {
            return Err(approvals::not_found());
        };
        if may_see(who, &a) {
            Ok(*a)
        } else {
            Err(approvals::not_found())
        }
    }

    async fn decide(
        &self,
        req: &Request<Bytes>,
        who: &Principal,
        id: &str,
        approve: bool,
    ) -> Result<Response<Bytes>> {
        let decision: Decision = if req.body().is_empty() {
            Decision::default()
        } else {
            parse_json(req.body())?
        };
        if let Some(note) = &decision.note {
            check_text("note", note)?;
        }
        // A key that may not decide learns no more than it may read.
        let a = self.approval_for(who, id).await?;
        who.require(Permission::Admin)?;
        if let Principal::ApiKey { id: key, .. } = who {
            if *key == a.requested_by_key {
                return Err(Error::forbidden(
                    "the key that asked for an approval cannot decide it",
                )
                .with_code(Code::PermissionDenied));
            }
        }
        let approval = self
            .decide_approval_as(id, approve, &who.actor(), decision.note)
            .await?;
        Ok(json_response(StatusCode::OK, &json!(approval)))
    }

    /// Decide the pending approval `id` (approve or deny) as `actor`, and audit it
    /// (`approval_approved` / `approval_denied` by `actor`). This is the store step of
    /// `POST /v1/approvals/{id}/approve|deny` WITHOUT its checks of who may decide: the caller
    /// has established that `actor` may. Besides that route, only `vultrino mcp --direct
    /// --approve-by-elicitation` calls it, where the operator's flag is the consent and the MCP
    /// client's user the person ([decision 0102](../../../docs/decisions/0102-approval-by-mcp-elicitation.md)).
    /// `note` must have passed [`check_text`]. Unknown id → 404 `approval_not_found`; not
    /// pending any more → 409 `approval_not_pending` (nothing changed).
    pub async fn decide_approval_as(
        &self,
        id: &str,
        approve: bool,
        actor: &str,
        note: Option<String>,
    ) -> Result<Approval> {
        let reply = self
            .approvals_op(Op::Decide {
                id: id.to_string(),
                approve,
                by: actor.to_string(),
                note,
                ttl_ms: self.config().approval_ttl_secs.saturating_mul(1000),
                now_ms: self.pipeline().ports().now_ms(),
            })
            .await?;
        let Reply::Decided { decided, .. } = reply else {
            return Err(Error::internal());
        };
        match decided {
            Decided::Done { approval } => {
                let action = if approve {
                    "approval_approved"
                } else {
                    "approval_denied"
                };
                self.pipeline()
                    .audit_approval_as(actor, &approval, action, "success")
                    .await;
                Ok(*approval)
            }
            Decided::NotFound => Err(approvals::not_found()),
            Decided::NotPending { approval } => Err(Error::conflict(format!(
                "approval is {}, not pending",
                approval.status.as_str()
            ))
            .with_code(Code::ApprovalNotPending)),
        }
    }

    /// One store operation; the approvals it turned expired are audited.
    async fn approvals_op(&self, op: Op) -> Result<Reply> {
        let reply = self.pipeline().ports().sessions.approval(op).await?;
        self.pipeline().audit_expired(&reply).await;
        Ok(reply)
    }
}
