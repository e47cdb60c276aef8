//! The rules of approvals in the [`SessionStore`](super::SessionStore), written once: what
//! create, get, decide, consume and list do to the approvals of a deployment.
//!
//! Pure: no I/O and no clock (time comes in with each operation), so both stores run exactly
//! this code over their [`Book`]:
//! - the memory store (`backend-local`, `memory_sessions.rs`) keeps one `Book` behind a lock and
//!   applies each operation entirely under it;
//! - the worker keeps every approval in ONE Durable Object (`approvals`, in
//!   `backend-cloudflare/src/sessions.rs`), which runs one event at a time: its `Book` is in
//!   memory, each record stored under its own key, and each operation is applied without an
//!   await in between. Approvals are made by people's clicks, so one object is far from its
//!   limits, and listing needs no second index (docs/decisions/0090-approvals.md).
//!
//! Expiry is lazy: a read that finds a pending or approved approval past `expires_at` turns it
//! `expired` and says so once ([`Reply::expired`]), so the caller audits `approval_expired` once.
//! Final approvals (denied, executed, expired) are kept [`RETENTION_MS`] after they ended, and
//! the book holds at most [`MAX_APPROVALS`]; both are pruned when one is created.
//!
//! # Wire format
//! [`Op`] and [`Reply`] travel as JSON between the worker and its Durable Object, which also
//! stores each [`Approval`] as JSON. Pinned by tests here; reshape nothing without a migration.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::approvals::{Approval, Status};

/// How long a final approval is kept (7 days).
pub const RETENTION_MS: u64 = 7 * 86_400 * 1000;
/// Most approvals kept at once; past it, the oldest final ones go, and when only live
/// (pending or approved) ones are left a new one is refused: a live one is never evicted
/// (review of 2026-12-06, finding 3; decision 0098).
pub const MAX_APPROVALS: usize = 10_000;
/// Most approvals in one listing page.
pub const MAX_PAGE: usize = 100;
/// Most pending approvals one key may have at once: past it, a create is refused, so a key
/// cannot flood the store (and the people it notifies).
pub const MAX_PENDING_PER_KEY: usize = 100;

/// One approval operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Store a new (pending) approval.
    Create {
        approval: Box<Approval>,
        now_ms: u64,
    },
    /// Read one, applying expiry.
    Get { id: String, now_ms: u64 },
    /// pending → approved (its `expires_at` becomes `now_ms + ttl_ms`) or denied.
    Decide {
        id: String,
        approve: bool,
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
        ttl_ms: u64,
        now_ms: u64,
    },
    /// approved → executed, iff the binding matches and the caller may use it: the key that
    /// asked (itself, without a token), or the token that asked.
    Consume {
        id: String,
        key: String,
        /// The caller's token id (`None`: the key itself). A token uses only the approvals it
        /// asked for, never its key's nor its sibling tokens' (review of 2026-12-06, approvals
        /// and tokens, finding 1); the key uses its own and its tokens'.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        binding: String,
        now_ms: u64,
    },
    /// Newest first, at most `limit` (≤ [`MAX_PAGE`]), created before `before` (a previous
    /// page's last id), of the key `key` (all when `None`), of its token `token` only when
    /// set, of `status` (all when `None`).
    List {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<Status>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<String>,
        limit: usize,
        now_ms: u64,
    },
}

/// What [`Op::Consume`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Consumed {
    /// It was approved and is now executed: run the request.
    Run { approval: Box<Approval> },
    /// No such approval, or one the caller may not use (another key's; for a token, one it
    /// did not ask for).
    NotFound,
    /// The request differs from the approved one: nothing changed.
    Mismatch { approval: Box<Approval> },
    /// Not approved (pending, denied, executed or expired): nothing changed.
    NotApproved { approval: Box<Approval> },
}

/// What [`Op::Decide`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Decided {
    Done {
        approval: Box<Approval>,
    },
    NotFound,
    /// Not pending any more: nothing changed.
    NotPending {
        approval: Box<Approval>,
    },
}

/// The answer to an [`Op`]; `expired` lists the approvals this operation found past their
/// expiry and turned `expired` (each reported once, by the operation that did it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Created {
        /// The key has [`MAX_PENDING_PER_KEY`] pending approvals: nothing was stored.
        #[serde(default)]
        refused: bool,
        #[serde(default)]
        expired: Vec<Approval>,
    },
    Approval {
        approval: Option<Box<Approval>>,
        #[serde(default)]
        expired: Vec<Approval>,
    },
    Decided {
        decided: Decided,
        #[serde(default)]
        expired: Vec<Approval>,
    },
    Consumed {
        consumed: Consumed,
        #[serde(default)]
        expired: Vec<Approval>,
    },
    List {
        approvals: Vec<Approval>,
        /// The last id of this page when there may be more.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<String>,
        #[serde(default)]
        expired: Vec<Approval>,
    },
}

impl Reply {
    /// The approvals this operation turned `expired`.
    pub fn expired(&self) -> &[Approval] {
        match self {
            Reply::Created { expired, .. }
            | Reply::Approval { expired, .. }
            | Reply::Decided { expired, .. }
            | Reply::Consumed { expired, .. }
            | Reply::List { expired, .. } => expired,
        }
    }
}

/// What the store must persist after an operation: the records to write and the ids to delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use = "changed approvals must be persisted"]
pub struct Writes {
    pub put: Vec<Approval>,
    pub delete: Vec<String>,
}

/// Every approval of a deployment, by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Book {
    items: BTreeMap<String, Approval>,
}

impl Book {
    /// A book of stored approvals.
    pub fn from_records(records: impl IntoIterator<Item = Approval>) -> Book {
        Book {
            items: records.into_iter().map(|a| (a.id.clone(), a)).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Run one operation.
    pub fn apply(&mut self, op: Op) -> (Writes, Reply) {
        let mut w = Writes::default();
        let reply = match op {
            Op::Create { approval, now_ms } => {
                let expired = self.prune(now_ms, &mut w);
                let approval = *approval;
                let pending = self
                    .items
                    .values()
                    .filter(|a| {
                        a.status == Status::Pending
                            && a.requested_by_key == approval.requested_by_key
                    })
                    .count();
                let refused = pending >= MAX_PENDING_PER_KEY || self.items.len() >= MAX_APPROVALS;
                if !refused {
                    self.items.insert(approval.id.clone(), approval.clone());
                    w.put.push(approval);
                }
                Reply::Created { refused, expired }
            }
            Op::Get { id, now_ms } => {
                let expired = self.expire(&id, now_ms, &mut w);
                Reply::Approval {
                    approval: self.items.get(&id).cloned().map(Box::new),
                    expired,
                }
            }
            Op::Decide {
                id,
                approve,
                by,
                note,
                ttl_ms,
                now_ms,
            } => {
                let expired = self.expire(&id, now_ms, &mut w);
                let decided = match self.items.get_mut(&id) {
                    None => Decided::NotFound,
                    Some(a) if a.status != Status::Pending => Decided::NotPending {
                        approval: Box::new(a.clone()),
                    },
                    Some(a) => {
                        a.status = if approve {
                            Status::Approved
                        } else {
                            Status::Denied
                        };
                        a.decided_at = Some(now_ms);
                        a.decided_by = Some(by);
                        a.note = note;
                        if approve {
                            a.expires_at = now_ms.saturating_add(ttl_ms);
                        }
                        w.put.push(a.clone());
                        Decided::Done {
                            approval: Box::new(a.clone()),
                        }
                    }
                };
                Reply::Decided { decided, expired }
            }
            Op::Consume {
                id,
                key,
                token,
                binding,
                now_ms,
            } => {
                let expired = self.expire(&id, now_ms, &mut w);
                let consumed = match self.items.get_mut(&id) {
                    Some(a)
                        if a.requested_by_key == key
                            && token.is_none_or(|t| a.requested_by_token.as_ref() == Some(&t)) =>
                    {
                        if !crate::crypto::ct_eq(a.binding.as_bytes(), binding.as_bytes()) {
                            Consumed::Mismatch {
                                approval: Box::new(a.clone()),
                            }
                        } else if a.status == Status::Approved {
                            a.status = Status::Executed;
                            a.executed_at = Some(now_ms);
                            w.put.push(a.clone());
                            Consumed::Run {
                                approval: Box::new(a.clone()),
                            }
                        } else {
                            Consumed::NotApproved {
                                approval: Box::new(a.clone()),
                            }
                        }
                    }
                    _ => Consumed::NotFound,
                };
                Reply::Consumed { consumed, expired }
            }
            Op::List {
                key,
                token,
                status,
                before,
                limit,
                now_ms,
            } => {
                let ids: Vec<String> = self.items.keys().cloned().collect();
                let mut expired = Vec::new();
                for id in &ids {
                    expired.extend(self.expire(id, now_ms, &mut w));
                }
                let limit = limit.clamp(1, MAX_PAGE);
                let mut all: Vec<&Approval> = self
                    .items
                    .values()
                    .filter(|a| key.as_deref().is_none_or(|k| a.requested_by_key == k))
                    .filter(|a| token.is_none() || a.requested_by_token == token)
                    .filter(|a| status.is_none_or(|s| a.status == s))
                    .collect();
                // Newest first; ids break ties so that pages never skip or repeat one.
                all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
                let start = match &before {
                    Some(cursor) => all
                        .iter()
                        .position(|a| &a.id == cursor)
                        .map_or(all.len(), |i| i + 1),
                    None => 0,
                };
                let page: Vec<Approval> = all
                    .iter()
                    .skip(start)
                    .take(limit)
                    .map(|a| (*a).clone())
                    .collect();
                let next = (start + page.len() < all.len())
                    .then(|| page.last().map(|a| a.id.clone()))
                    .flatten();
                Reply::List {
                    approvals: page,
                    next,
                    expired,
                }
            }
        };
        (w, reply)
    }

    /// Turn approval `id` expired if it is pending or approved and past `expires_at`.
    fn expire(&mut self, id: &str, now_ms: u64, w: &mut Writes) -> Vec<Approval> {
        match self.items.get_mut(id) {
            Some(a)
                if matches!(a.status, Status::Pending | Status::Approved)
                    && now_ms >= a.expires_at =>
            {
                a.status = Status::Expired;
                w.put.push(a.clone());
                vec![a.clone()]
            }
            _ => Vec::new(),
        }
    }

    /// Before a create: expire what is due, drop final approvals past retention, then keep the
    /// book under [`MAX_APPROVALS`] (oldest final first, then oldest).
    fn prune(&mut self, now_ms: u64, w: &mut Writes) -> Vec<Approval> {
        let ids: Vec<String> = self.items.keys().cloned().collect();
        let mut expired = Vec::new();
        for id in &ids {
            expired.extend(self.expire(id, now_ms, w));
        }
        let gone: Vec<String> = self
            .items
            .values()
            .filter(|a| a.status.is_final() && now_ms >= ended_at(a).saturating_add(RETENTION_MS))
            .map(|a| a.id.clone())
            .collect();
        for id in gone {
            self.items.remove(&id);
            w.delete.push(id);
        }
        if self.items.len() >= MAX_APPROVALS {
            // Only final ones: a pending or approved approval is never evicted (another agent's
            // re-send would find it gone); with none left, the create is refused (review of
            // 2026-12-06, finding 3; decision 0098).
            let mut order: Vec<(u64, String)> = self
                .items
                .values()
                .filter(|a| a.status.is_final())
                .map(|a| (a.created_at, a.id.clone()))
                .collect();
            order.sort();
            let excess = self.items.len() + 1 - MAX_APPROVALS;
            for (_, id) in order.into_iter().take(excess) {
                self.items.remove(&id);
                w.delete.push(id);
            }
        }
        // A record written and then deleted by the same prune is only deleted.
        w.put.retain(|a| !w.delete.contains(&a.id));
        expired
    }
}

/// When a final approval ended.
fn ended_at(a: &Approval) -> u64 {
    match a.status {
        Status::Executed => a.executed_at.unwrap_or(a.expires_at),
        Status::Denied => a.decided_at.unwrap_or(a.created_at),
        _ => a.expires_at,
    }
}

#[cfg(test)]
mod tests;
