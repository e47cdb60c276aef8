//! The one-time migration that signs the `key:` and `role:` records an older version wrote.
//! What a record that fails its check means is [`super::integrity`]'s; why the migration is
//! explicit, and what it trusts: docs/decisions/0049-signing-records-of-older-versions.md.

use std::collections::HashMap;

use serde::Serialize;

use super::integrity::{mark_signed, records_signed, RefusedRecord};
use super::keys::{self, ApiKeyRecord, KEY_PREFIX};
use super::principal::{builtin_role, Principal};
use super::roles::{self, ROLE_PREFIX};
use crate::audit::AuditLog;
use crate::change::{Changes, Record};
use crate::crypto::{Keys, RecordCheck};
use crate::error::{Code, Error, Result};
use crate::kv::list_all;
use crate::ports::Ports;

/// A record the migration signed (in a dry run: would sign), with what it grants, for review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigratedRecord {
    pub record: String,
    pub grants: String,
}

/// What [`migrate`] did.
#[derive(Debug, Clone, Serialize)]
pub struct Migration {
    /// Nothing was written: `signed` is what a run would sign.
    pub dry_run: bool,
    /// The unsigned records signed, with what each grants: check that they are yours.
    pub signed: Vec<MigratedRecord>,
    /// How many records were signed already (left as they are).
    pub already_signed: usize,
    /// Records that fail their check for another reason (changed since they were signed,
    /// unreadable): left as they are, and still refused.
    pub refused: Vec<RefusedRecord>,
}

/// Sign the `key:` and `role:` records an older version wrote (unsigned), once: every unsigned
/// record present is trusted, so run it right after upgrading and read what it lists. Roles get
/// a new id and keys are bound to the id of their role. With `dry_run` nothing is written.
///
/// Only an admin session (or the local operator) may run it, not an API key. Once it has run on
/// a deployment it refuses to run again (409 `records_already_signed`): an unsigned record after
/// that was not written by an older version.
pub(crate) async fn migrate(
    ports: &Ports,
    keys: &Keys,
    changes: Changes<'_>,
    audit: AuditLog<'_>,
    who: &Principal,
    dry_run: bool,
) -> Result<Migration> {
    if !matches!(who, Principal::Admin { .. }) {
        return Err(Error::forbidden(
            "signing the stored records needs an admin session (log in), not an API key",
        )
        .with_code(Code::PermissionDenied));
    }
    if records_signed(ports, keys).await? {
        return Err(Error::conflict(
            "the records of this deployment were signed already: an unsigned record now was not \
             written by an older version and is not trusted. Delete it and create it again (an \
             API key: revoke it and issue a new one)",
        )
        .with_code(Code::RecordsAlreadySigned));
    }
    let kv = &*ports.kv;
    let mut out = Migration {
        dry_run,
        signed: Vec::new(),
        already_signed: 0,
        refused: Vec::new(),
    };
    // Roles first: keys bind to their ids.
    let mut role_ids: HashMap<String, String> = HashMap::new();
    for k in list_all(kv, ROLE_PREFIX).await? {
        let name = k.name[ROLE_PREFIX.len()..].to_owned();
        let sign = async {
            let Some(check) = roles::read(kv, keys, &name).await? else {
                return Ok(None);
            };
            let signed = match check {
                RecordCheck::Signed(role) => return Ok(Some(RecordCheck::Signed(role))),
                RecordCheck::Unsigned(mut role) if role.name == name && !role.builtin => {
                    role.id = Some(roles::new_role_id());
                    if !dry_run {
                        roles::store(kv, keys, &role).await?;
                    }
                    role
                }
                _ => return Ok(Some(RecordCheck::Tampered)),
            };
            Ok(Some(RecordCheck::Unsigned(signed)))
        };
        let found = if dry_run {
            sign.await?
        } else {
            changes.exclusive(Record::Role, &name, sign).await?
        };
        match found {
            None => {}
            Some(RecordCheck::Signed(role)) => {
                out.already_signed += 1;
                role_ids.extend(role.id.map(|id| (name, id)));
            }
            Some(RecordCheck::Unsigned(role)) => {
                let grants = format!(
                    "role '{}': permissions [{}] on credentials [{}]",
                    role.name,
                    role.permissions
                        .iter()
                        .map(|p| p.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    role.scopes.join(", ")
                );
                out.signed.push(MigratedRecord {
                    record: k.name.clone(),
                    grants,
                });
                role_ids.extend(role.id.map(|id| (name, id)));
            }
            Some(RecordCheck::Tampered) => out.refused.push(RefusedRecord::new(&k.name, false)),
        }
    }
    for k in list_all(kv, KEY_PREFIX).await? {
        let Some(bytes) = kv.get(&k.name).await? else {
            continue;
        };
        match keys.open_record::<ApiKeyRecord>(&k.name, &bytes) {
            RecordCheck::Signed(r) if keys::key_of(&r.id) == k.name => out.already_signed += 1,
            RecordCheck::Unsigned(mut r) if keys::key_of(&r.id) == k.name => {
                let builtin = builtin_role(&r.role).is_some();
                r.role_id = if builtin {
                    None
                } else {
                    role_ids.get(&r.role).cloned()
                };
                let mut grants = format!("API key '{}' with role '{}'", r.name, r.role);
                if !builtin && r.role_id.is_none() {
                    grants.push_str(" (no such role: the key stays refused)");
                }
                if !dry_run {
                    keys::store(ports, keys, &r).await?;
                }
                out.signed.push(MigratedRecord {
                    record: k.name.clone(),
                    grants,
                });
            }
            _ => out.refused.push(RefusedRecord::new(&k.name, false)),
        }
    }
    if !dry_run {
        mark_signed(ports, keys).await?;
        audit.change(who, "records.migrate", None, 200).await;
    }
    Ok(out)
}
