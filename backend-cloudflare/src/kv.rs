//! [`WorkersKv`]: the core's [`KvStore`] over a Workers KV namespace (binding `CREDENTIALS`).
//!
//! Arguments are checked with [`kv_validate`] BEFORE anything reaches KV, so the worker refuses
//! exactly what the local stores refuse, with the same error kinds and codes.
//!
//! Cursors: KV's own cursor is wrapped as `v1.<base64url>`; anything else is `invalid_cursor`
//! without a KV call, and a wrapped cursor KV rejects is `invalid_cursor` too.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use vultrino_core::error::{Code, Error, Result};
use vultrino_core::ports::{
    kv_validate, KvEntry, KvStore, ListKey, ListOptions, ListPage, PutOptions,
};

const CURSOR_TAG: &str = "v1.";

/// A [`KvStore`] over one Workers KV namespace.
pub struct WorkersKv {
    kv: worker::kv::KvStore,
}

impl WorkersKv {
    pub fn new(kv: worker::kv::KvStore) -> Self {
        WorkersKv { kv }
    }
}

fn kv_error(what: &str, e: worker::kv::KvError) -> Error {
    // The KV error text names the operation only; it never holds a value.
    worker::console_error!("KV {what} failed: {e:?}");
    Error::unavailable(format!("credential store (KV) {what} failed"))
        .with_code(Code::KvUnavailable)
}

fn invalid_cursor() -> Error {
    Error::bad_request("invalid list cursor").with_code(Code::InvalidCursor)
}

fn wrap_cursor(native: &str) -> String {
    format!("{CURSOR_TAG}{}", URL_SAFE_NO_PAD.encode(native))
}

fn unwrap_cursor(ours: &str) -> Result<String> {
    let b64 = ours.strip_prefix(CURSOR_TAG).ok_or_else(invalid_cursor)?;
    let raw = URL_SAFE_NO_PAD.decode(b64).map_err(|_| invalid_cursor())?;
    let native = String::from_utf8(raw).map_err(|_| invalid_cursor())?;
    if native.is_empty() {
        return Err(invalid_cursor());
    }
    Ok(native)
}

#[async_trait::async_trait(?Send)]
impl KvStore for WorkersKv {
    // Not the provided `get`: KV's plain `get` is its own call, which neither fetches nor
    // converts metadata from JS.
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        kv_validate::key(key)?;
        let v = self
            .kv
            .get(key)
            .bytes()
            .await
            .map_err(|e| kv_error("get", e))?;
        Ok(v.map(Bytes::from))
    }

    async fn get_with_metadata(&self, key: &str) -> Result<Option<KvEntry>> {
        kv_validate::key(key)?;
        let (value, metadata) = self
            .kv
            .get(key)
            .bytes_with_metadata::<serde_json::Value>()
            .await
            .map_err(|e| kv_error("get", e))?;
        Ok(value.map(|v| KvEntry {
            value: Bytes::from(v),
            metadata: metadata.filter(|m| !m.is_null()),
        }))
    }

    async fn put(&self, key: &str, value: Bytes, options: PutOptions) -> Result<()> {
        kv_validate::put(key, &value, &options)?;
        let mut put = self
            .kv
            .put_bytes(key, &value)
            .map_err(|e| kv_error("put", e))?;
        if let Some(meta) = options.metadata {
            put = put.metadata(meta).map_err(|e| kv_error("put", e))?;
        }
        if let Some(ttl) = options.expiration_ttl {
            put = put.expiration_ttl(ttl);
        }
        put.execute().await.map_err(|e| kv_error("put", e))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        kv_validate::key(key)?;
        self.kv.delete(key).await.map_err(|e| kv_error("delete", e))
    }

    async fn list(&self, options: ListOptions) -> Result<ListPage> {
        let limit = kv_validate::limit(options.limit)?;
        let cursor = options.cursor.as_deref().map(unwrap_cursor).transpose()?;
        let mut list = self.kv.list().limit(limit as u64);
        if let Some(p) = options.prefix.filter(|p| !p.is_empty()) {
            list = list.prefix(p);
        }
        let had_cursor = cursor.is_some();
        if let Some(c) = cursor {
            list = list.cursor(c);
        }
        let page = list.execute().await.map_err(|e| {
            if had_cursor {
                invalid_cursor()
            } else {
                kv_error("list", e)
            }
        })?;
        let keys = page
            .keys
            .into_iter()
            .map(|k| ListKey {
                name: k.name,
                expiration: k.expiration,
                metadata: k.metadata.filter(|m| !m.is_null()),
            })
            .collect();
        let cursor = match (page.list_complete, page.cursor) {
            (false, Some(c)) if !c.is_empty() => Some(wrap_cursor(&c)),
            _ => None,
        };
        Ok(ListPage { keys, cursor })
    }
}
