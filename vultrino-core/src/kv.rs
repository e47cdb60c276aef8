//! Small helpers over the [`KvStore`] port shared by the modules that own records.

use bytes::Bytes;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::ports::{KvStore, ListKey, ListOptions, PutOptions};

/// Write `value` as JSON at `key`, with optional cleartext metadata and no expiry.
pub(crate) async fn put_json<T: Serialize>(
    kv: &dyn KvStore,
    key: &str,
    value: &T,
    metadata: Option<serde_json::Value>,
) -> Result<()> {
    let bytes = serde_json::to_vec(value).map_err(|_| Error::internal())?;
    kv.put(
        key,
        Bytes::from(bytes),
        PutOptions {
            expiration_ttl: None,
            metadata,
        },
    )
    .await
}

/// Every key under `prefix` (following cursors to the end), with metadata. For admin and sync
/// operations, whose record counts are small (keys, roles, credentials), never for audit.
pub(crate) async fn list_all(kv: &dyn KvStore, prefix: &str) -> Result<Vec<ListKey>> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = kv
            .list(ListOptions {
                prefix: Some(prefix.into()),
                cursor,
                limit: None,
            })
            .await?;
        out.extend(page.keys);
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(out),
        }
    }
}
