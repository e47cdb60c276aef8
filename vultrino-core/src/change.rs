//! Changes of named records (a credential, a role) that never interleave and never act on a
//! stale read: the change lock ([`Changes::exclusive`]) and version claims
//! ([`Changes::claim_version`]), both in the strongly consistent [`SessionStore`](crate::ports::SessionStore).

use crate::crypto::{self, Keys, MacPurpose};
use crate::error::{Code, Error, Result};
use crate::ports::Ports;

/// Longest a change lock ([`Changes::exclusive`]) is held by a holder that never released it.
pub const CHANGE_LOCK_MS: u64 = 30_000;
/// A change lock is released only if at least this long is left of its window: after that it may
/// have lapsed (clocks of edge isolates differ a little) and another change may hold it.
const CHANGE_LOCK_RELEASE_MARGIN_MS: u64 = 5_000;

/// The kinds of record whose changes are serialized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    Credential,
    Role,
}

impl Record {
    fn as_str(self) -> &'static str {
        match self {
            Record::Credential => "credential",
            Record::Role => "role",
        }
    }
}

/// Change locks and version claims over the session store.
#[derive(Clone, Copy)]
pub struct Changes<'a> {
    ports: &'a Ports,
    keys: &'a Keys,
    settle_ms: u64,
}

impl<'a> Changes<'a> {
    /// `settle_ms`: how long a KV write may take to reach every reader
    /// ([`Config::kv_settle_ms`](crate::app::Config::kv_settle_ms)).
    pub fn new(ports: &'a Ports, keys: &'a Keys, settle_ms: u64) -> Self {
        Changes {
            ports,
            keys,
            settle_ms,
        }
    }

    /// Run `change` holding the change lock of one named record (`kind` `name`, e.g. credential
    /// `github`), so two changes of one record never interleave: of two simultaneous creates of
    /// one alias exactly one is acknowledged and the other gets 409 — without the lock both could
    /// see the alias free and the later write would silently replace an acknowledged one. A
    /// change that finds the lock held fails at once with 409 `change_in_progress` (the holder
    /// takes milliseconds; retrying is safe).
    ///
    /// The lock is an exact [`SessionStore::hit`](crate::ports::SessionStore::hit) counter with limit 1 (a Durable Object on the
    /// edge, so it holds across isolates and locations), released with
    /// [`SessionStore::reset_counter`](crate::ports::SessionStore::reset_counter) whatever the outcome. A holder that never releases it (a
    /// crashed process, a request dropped mid-change) blocks changes of that one record for at
    /// most [`CHANGE_LOCK_MS`]. A change that outlives the lock (slower than [`CHANGE_LOCK_MS`]
    /// minus a margin for clock differences) does not release it: by then another change may
    /// hold it, and releasing would let a third one run beside that one.
    ///
    /// It separates overlapping changes only. Where KV reads can lag writes made elsewhere, a
    /// later change can still read a replaced version: [`Changes::claim_version`] covers that.
    pub async fn exclusive<T>(
        &self,
        kind: Record,
        name: &str,
        change: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let kind = kind.as_str();
        let key = format!("change:{kind}:{name}");
        let hit = self
            .ports
            .sessions
            .hit(&key, CHANGE_LOCK_MS, 1, self.ports.now_ms())
            .await?;
        if !hit.allowed {
            return Err(Error::conflict(format!(
                "another change to {kind} '{name}' is in progress; retry"
            ))
            .with_code(Code::ChangeInProgress)
            .with_retry_after(1));
        }
        let result = change.await;
        // Release only a lock that is still ours (see above); a lapsed one is left alone.
        if self
            .ports
            .now_ms()
            .saturating_add(CHANGE_LOCK_RELEASE_MARGIN_MS)
            < hit.reset_at_ms
        {
            // Best effort: if the release fails, the lock lapses after CHANGE_LOCK_MS.
            let _ = self.ports.sessions.reset_counter(&key).await;
        }
        result
    }

    /// Claim the change of record `kind` `name` away from the version this change read from
    /// the store (`read`: its stored bytes, `None` if it was absent). Call it inside
    /// [`Changes::exclusive`], after every check, right before writing: a claimed change that
    /// then fails leaves the record unchangeable for `settle_ms`.
    ///
    /// The change lock keeps overlapping changes apart, but on a store whose reads may lag
    /// writes made elsewhere (`settle_ms` > 0: Workers KV between locations) a
    /// change can start after another has finished and still read the version that one
    /// replaced. Acting on it would undo the newer change: bring back a deleted credential or an
    /// old secret, or replace a credential created elsewhere. So each change claims its starting
    /// version with a single-use [`SessionStore::mark`](crate::ports::SessionStore::mark) (strongly consistent) that lives
    /// `settle_ms`: a second change from the same version within that time is a change from a
    /// stale read and gets 409 `change_not_propagated`, with `Retry-After`; once the newer
    /// version has reached every reader, the retry works. Every stored envelope has a fresh
    /// nonce, so its bytes name one version. Absence is one version per record: on such a
    /// store, a record created (or re-created) less than `settle_ms` ago cannot be created again
    /// before that time even if it was deleted in between — refused, never lost. With
    /// `settle_ms` 0 nothing is claimed. Why, and the alternative rejected:
    /// docs/decisions/0033-changes-claim-the-version-they-read.md.
    pub async fn claim_version(&self, kind: Record, name: &str, read: Option<&[u8]>) -> Result<()> {
        if self.settle_ms == 0 {
            return Ok(());
        }
        let kind = kind.as_str();
        let from = match read {
            Some(bytes) => crypto::hex(&self.keys.mac(MacPurpose::VersionClaim, bytes)[..16]),
            None => "absent".to_owned(),
        };
        let key = format!("claim:{kind}:{name}:{from}");
        if self
            .ports
            .sessions
            .mark(&key, self.settle_ms, self.ports.now_ms())
            .await?
        {
            return Ok(());
        }
        let secs = self.settle_ms.div_ceil(1000);
        Err(Error::conflict(format!(
            "{kind} '{name}' was changed moments ago and this location may not see that change \
             yet; retry in {secs} s"
        ))
        .with_code(Code::ChangeNotPropagated)
        .with_retry_after(secs))
    }
}
