//! Integrity of the stored records that grant anything (`key:`, `role:`): what a record that
//! fails its check means for whoever meets it, and the audit event it leaves. The one-time
//! migration that signs the records an older version wrote is [`super::migrate`].
//!
//! Why records are signed, and how: docs/decisions/0046-signed-key-and-role-records.md. Why the
//! migration is explicit, and what it trusts: docs/decisions/0049-signing-records-of-older-versions.md.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::audit::{AuditEvent, AuditLog, UNAUTHENTICATED_WINDOW_MS};
use crate::crypto::{Keys, RecordCheck};
use crate::error::{Code, Error, Result};
use crate::ports::{Ports, PutOptions};

/// SessionStore marker set when a migration has signed this deployment's records. From then on
/// an unsigned record cannot come from an older version, so it is refused as tampered, and the
/// migration does not run again. In the SessionStore (a Durable Object on the edge) because
/// whoever can write KV cannot write there.
pub(crate) const SIGNED_MARKER: &str = "records-signed";
/// Ten years: longer than any deployment keeps a version.
const SIGNED_MARKER_TTL_MS: u64 = 10 * 365 * 86_400_000;
/// The same fact in the store, as a signed record: the local session store lives in memory, so
/// a local store keeps it here across restarts (and after `vultrino migrate-records`, which runs
/// in a process of its own). Deleting it (which needs no master key) only loses that memory: on
/// the edge the SessionStore marker still holds.
pub(crate) const SIGNED_MARKER_KEY: &str = "sys:records-signed";

#[derive(Serialize, Deserialize)]
struct SignedAt {
    signed_at_ms: u64,
}

/// Whether a migration signed this deployment's records.
pub(crate) async fn records_signed(ports: &Ports, keys: &Keys) -> Result<bool> {
    if ports
        .sessions
        .is_marked(SIGNED_MARKER, ports.now_ms())
        .await?
    {
        return Ok(true);
    }
    Ok(match ports.kv.get(SIGNED_MARKER_KEY).await? {
        Some(b) => matches!(
            keys.open_record::<SignedAt>(SIGNED_MARKER_KEY, &b),
            RecordCheck::Signed(_)
        ),
        None => false,
    })
}

/// How to sign the records of an older version, for the messages that send an admin there.
const HOW_TO_MIGRATE: &str = "an admin signs the records it holds once, with `vultrino \
     migrate-records` (local store, server stopped) or `POST /v1/admin/migrate-records` with an \
     admin session (docs/http-api.md)";

/// A stored record that a check refused: which one, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefusedRecord {
    /// Its KV key (`key:<id>`, `role:<name>`).
    pub record: String,
    /// `record_unsigned` or `record_tampered`.
    pub code: Code,
    /// What it means, and what fixes it.
    pub message: String,
}

impl RefusedRecord {
    pub(crate) fn new(record: &str, unsigned: bool) -> RefusedRecord {
        let (code, message) = if unsigned {
            (
                Code::RecordUnsigned,
                format!(
                    "the stored record {record} is not signed: it was written by a version of \
                     Vultrino before records were signed, or by something that does not hold the \
                     master key, and it is not used as it is. If this deployment was upgraded \
                     from such a version, {HOW_TO_MIGRATE}"
                ),
            )
        } else {
            (
                Code::RecordTampered,
                format!(
                    "the stored record {record} failed its integrity check: it was changed, or \
                     written, by something that does not hold the master key, and it is not \
                     used. Delete it and create it again (an API key: revoke it and issue a new \
                     one)"
                ),
            )
        };
        RefusedRecord {
            record: record.to_owned(),
            code,
            message,
        }
    }

    /// The refusal as an error (503: the deployment's data is unusable, not the request).
    pub fn to_error(&self) -> Error {
        Error::unavailable(self.message.clone()).with_code(self.code)
    }
}

/// A listing of stored records: those that check out, and those refused.
#[derive(Debug, Clone, Serialize)]
pub struct Listing<T> {
    pub items: Vec<T>,
    pub refused: Vec<RefusedRecord>,
}

impl<T> Default for Listing<T> {
    fn default() -> Self {
        Listing {
            items: Vec::new(),
            refused: Vec::new(),
        }
    }
}

/// Refusals of records that fail their check, each audited.
#[derive(Clone, Copy)]
pub(crate) struct Integrity<'a> {
    ports: &'a Ports,
    keys: &'a Keys,
    audit: AuditLog<'a>,
}

impl<'a> Integrity<'a> {
    pub(crate) fn new(ports: &'a Ports, keys: &'a Keys, audit: AuditLog<'a>) -> Self {
        Integrity { ports, keys, audit }
    }

    /// Refuse the record at `kv_key`, which `check` found unsigned or tampered, met by `actor`:
    /// write an audit event (`record.refused`, with the record and the code) and say why.
    pub(crate) async fn refused<T>(
        &self,
        actor: &str,
        kv_key: &str,
        check: &RecordCheck<T>,
    ) -> RefusedRecord {
        let unsigned = matches!(check, RecordCheck::Unsigned(_)) && !self.records_signed().await;
        let refused = RefusedRecord::new(kv_key, unsigned);
        let mut event = AuditEvent::new(self.ports.now_ms(), actor, "record.refused", "denied");
        event.record = Some(kv_key.to_owned());
        event.code = Some(refused.code.as_str().to_owned());
        self.audit.record(event).await;
        refused
    }

    /// Audit the refusal of the key record at `kv_key` (which failed its check) to a caller who
    /// did not authenticate: the record's id with a secret that was never checked against it.
    /// Anyone who knows a key id can repeat that, so these refusals go through the
    /// unauthenticated door: one event per record and window, with a count
    /// ([`AuditLog::record_repeated`]), never one write per request into the history that
    /// authenticated callers leave (review of issue 18).
    pub(crate) async fn refused_unauthenticated(&self, actor: &str, kv_key: &str) {
        let now = self.ports.now_ms();
        let window = UNAUTHENTICATED_WINDOW_MS;
        let window_end = (now / window).saturating_add(1).saturating_mul(window);
        let mut event = AuditEvent::new(now, actor, "record.refused", "denied");
        event.record = Some(kv_key.to_owned());
        event.code = Some(Code::RecordTampered.as_str().to_owned());
        self.audit
            .record_repeated(
                &format!("record-refused:{kv_key}"),
                window_end,
                window,
                event,
            )
            .await;
    }

    /// [`Integrity::refused`] as an error.
    pub(crate) async fn refuse<T>(
        &self,
        actor: &str,
        kv_key: &str,
        check: &RecordCheck<T>,
    ) -> Error {
        self.refused(actor, kv_key, check).await.to_error()
    }

    /// Whether a migration signed this deployment's records. If the stores cannot say, the
    /// answer that trusts less (yes: an unsigned record is then refused as tampered).
    async fn records_signed(&self) -> bool {
        records_signed(self.ports, self.keys).await.unwrap_or(true)
    }
}

/// Note that every `key:` and `role:` record of this deployment is signed (both markers: the
/// SessionStore one and the signed `sys:records-signed` record). Set by the migration, and by
/// the creation of a deployment's keyring: a deployment this version created never held a record
/// of an older version, so an unsigned record there is someone else's (refused as tampered) and
/// the migration, which would sign it, does not run.
pub(crate) async fn mark_signed(ports: &Ports, keys: &Keys) -> Result<()> {
    let now = ports.now_ms();
    let marker = keys.seal_record(SIGNED_MARKER_KEY, &SignedAt { signed_at_ms: now })?;
    ports
        .kv
        .put(
            SIGNED_MARKER_KEY,
            Bytes::from(marker),
            PutOptions::default(),
        )
        .await?;
    ports
        .sessions
        .mark(SIGNED_MARKER, SIGNED_MARKER_TTL_MS, now)
        .await?;
    Ok(())
}
