//! Ports: everything the core needs from the outside world, and nothing else.
//!
//! Each method's doc carries a `# Behavior` section: the contract every implementation keeps. The
//! conformance suites in the `testkit` module (feature `testkit`) check exactly those sentences
//! against every implementation (memory and file KV, the Workers KV adapter, memory and Durable
//! Object session stores).
//!
//! Futures are `Send` on native targets and not on wasm32, where JS futures are `!Send`; the
//! [`MaybeSend`]/[`MaybeSync`] markers and the `async_trait` attributes below do that once.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::audit::filter::AuditFilter;
use crate::body::Body;
use crate::error::{Code, Error, ErrorKind, Result};

pub use crate::maybe_send::{MaybeSend, MaybeSync};

// ---------------------------------------------------------------------------------------------
// The ports of one deployment
// ---------------------------------------------------------------------------------------------

/// The outside world of one deployment, as ports: what
/// [`App::open`](crate::app::App::open) is given. Each concern borrows it (`&Ports`) and uses
/// only the ports it needs.
#[derive(Clone)]
pub struct Ports {
    pub kv: Arc<dyn KvStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub fetcher: Arc<dyn Fetcher>,
    pub clock: Arc<dyn Clock>,
    /// Where every audit event also goes, besides the KV store (a log file, a collector, the
    /// Workers log and Analytics Engine); `None`: nowhere else. See [`AuditSink`].
    pub audit_sink: Option<Arc<dyn AuditSink>>,
    /// Where audit events are stored and queried ([`AuditStore`]); `None`: in the KV store
    /// under `audit:` keys (the local stores' format; `Ports::audit_store`, in `audit.rs`,
    /// picks). The worker sets its Durable Object store (docs/decisions/0100).
    pub audit: Option<Arc<dyn AuditStore>>,
}

impl Ports {
    /// Now, by the deployment's clock.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }
}

// ---------------------------------------------------------------------------------------------
// KvStore
// ---------------------------------------------------------------------------------------------

/// Workers KV limits, enforced identically by every implementation.
pub mod kv_limits {
    /// Longest key, in bytes (UTF-8).
    pub const MAX_KEY_BYTES: usize = 512;
    /// Largest value, in bytes.
    pub const MAX_VALUE_BYTES: usize = 25 * 1024 * 1024;
    /// Largest metadata, in bytes of its JSON serialization.
    pub const MAX_METADATA_BYTES: usize = 1024;
    /// Smallest `expiration_ttl`, in seconds.
    pub const MIN_TTL_SECS: u64 = 60;
    /// Largest (and default) `limit` of one `list` call.
    pub const MAX_LIST_LIMIT: usize = 1000;
}

/// Options of [`KvStore::put`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PutOptions {
    /// Seconds until the entry expires; at least [`kv_limits::MIN_TTL_SECS`].
    pub expiration_ttl: Option<u64>,
    /// Cleartext JSON metadata stored beside the value, at most [`kv_limits::MAX_METADATA_BYTES`]
    /// when serialized. Never secret.
    pub metadata: Option<serde_json::Value>,
}

/// Options of [`KvStore::list`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Only keys starting with this prefix.
    pub prefix: Option<String>,
    /// Opaque cursor from a previous page.
    pub cursor: Option<String>,
    /// Page size, 1..=1000; `None` means 1000.
    pub limit: Option<usize>,
}

/// One key of a [`ListPage`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListKey {
    pub name: String,
    /// Absolute expiry, seconds since the epoch, when the key has a TTL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
}

/// One page of [`KvStore::list`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ListPage {
    /// Keys in lexicographic (byte) order.
    pub keys: Vec<ListKey>,
    /// `None` when this is the last page; otherwise pass it back to get the next page.
    pub cursor: Option<String>,
}

/// A value with its metadata, from [`KvStore::get_with_metadata`].
#[derive(Debug, Clone, PartialEq)]
pub struct KvEntry {
    pub value: Bytes,
    pub metadata: Option<serde_json::Value>,
}

/// Key-value storage with Workers KV semantics.
///
/// Workers KV is eventually consistent across locations; anything that must take effect at once
/// (logout, revocation, lockout) goes through [`SessionStore`] instead.
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
pub trait KvStore: MaybeSend + MaybeSync {
    /// Read a value.
    ///
    /// Provided: [`KvStore::get_with_metadata`] without the metadata. Override it only where a
    /// plain read is cheaper: the local stores do, to skip copying the metadata JSON on every
    /// `execute` (figures in `backend-local/src/memory_kv.rs`); Workers KV has its own call.
    ///
    /// # Behavior
    /// - Returns what `get_with_metadata` returns for the key, without the metadata: the same
    ///   presence, the same bytes, the same errors.
    /// - A key that was never written, was deleted, or whose TTL has passed returns `Ok(None)`.
    /// - A key that was written returns exactly the bytes last written.
    /// - An invalid key (empty, `.`/`..`, longer than 512 bytes) is a `BadRequest` error.
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        Ok(self.get_with_metadata(key).await?.map(|entry| entry.value))
    }

    /// Read a value and its metadata.
    ///
    /// # Behavior
    /// - Same presence rules and key validation as [`KvStore::get`].
    /// - The metadata is the JSON last written with the value (`None` if none was written);
    ///   writing a value without metadata removes earlier metadata.
    async fn get_with_metadata(&self, key: &str) -> Result<Option<KvEntry>>;

    /// Write a value, replacing any earlier value and metadata.
    ///
    /// # Behavior
    /// - After `put` returns `Ok`, `get` on the same store returns the new value (read-your-writes
    ///   locally; on the edge other locations may lag).
    /// - Invalid key → `BadRequest` (code `invalid_key`); value over 25 MiB → `PayloadTooLarge`
    ///   (code `value_too_large`); metadata over 1024 bytes serialized → `PayloadTooLarge` (code
    ///   `metadata_too_large`); `expiration_ttl` below 60 → `BadRequest` (code `invalid_ttl`).
    ///   A refused put changes nothing.
    /// - With `expiration_ttl`, the key disappears from `get` and `list` once the TTL has passed.
    async fn put(&self, key: &str, value: Bytes, options: PutOptions) -> Result<()>;

    /// Delete a key.
    ///
    /// # Behavior
    /// - Deleting a missing key succeeds.
    /// - After `delete` returns `Ok`, `get` returns `None` and `list` does not show the key.
    async fn delete(&self, key: &str) -> Result<()>;

    /// List keys (with their metadata, without values).
    ///
    /// # Behavior
    /// - Keys come in lexicographic byte order, filtered by `prefix`, expired keys excluded.
    /// - At most `limit` keys per page (default and maximum 1000; 0 or more than 1000 is a
    ///   `BadRequest` with code `invalid_limit`).
    /// - The returned `cursor` is `None` on the last page; following cursors visits every matching
    ///   key exactly once, in order.
    /// - An unknown or malformed cursor is a `BadRequest` (code `invalid_cursor`).
    async fn list(&self, options: ListOptions) -> Result<ListPage>;
}

/// Shared validation of KV arguments, so every implementation refuses the same inputs with the same
/// error kinds and codes.
pub mod kv_validate {
    use super::*;

    /// Check a key against Workers KV rules.
    pub fn key(key: &str) -> Result<()> {
        if key.is_empty() || key == "." || key == ".." {
            return Err(Error::bad_request("KV key must not be empty, '.' or '..'")
                .with_code(Code::InvalidKey));
        }
        if key.len() > kv_limits::MAX_KEY_BYTES {
            return Err(
                Error::bad_request("KV key is longer than 512 bytes").with_code(Code::InvalidKey)
            );
        }
        Ok(())
    }

    /// Check a put's key, value size, metadata size and TTL.
    pub fn put(key_: &str, value: &[u8], options: &PutOptions) -> Result<()> {
        key(key_)?;
        if value.len() > kv_limits::MAX_VALUE_BYTES {
            return Err(
                Error::too_large("KV value is larger than 25 MiB").with_code(Code::ValueTooLarge)
            );
        }
        if let Some(meta) = &options.metadata {
            let len = serde_json::to_vec(meta)
                .map(|v| v.len())
                .unwrap_or(usize::MAX);
            if len > kv_limits::MAX_METADATA_BYTES {
                return Err(Error::too_large("KV metadata is larger than 1024 bytes")
                    .with_code(Code::MetadataTooLarge));
            }
        }
        if let Some(ttl) = options.expiration_ttl {
            if ttl < kv_limits::MIN_TTL_SECS {
                return Err(
                    Error::bad_request("KV expiration_ttl must be at least 60 seconds")
                        .with_code(Code::InvalidTtl),
                );
            }
        }
        Ok(())
    }

    /// Resolve a list limit: `None` → 1000; 0 or > 1000 → error.
    pub fn limit(limit: Option<usize>) -> Result<usize> {
        match limit {
            None => Ok(kv_limits::MAX_LIST_LIMIT),
            Some(n) if (1..=kv_limits::MAX_LIST_LIMIT).contains(&n) => Ok(n),
            Some(_) => Err(Error::bad_request("list limit must be between 1 and 1000")
                .with_code(Code::InvalidLimit)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SessionStore
// ---------------------------------------------------------------------------------------------

/// A login session, stored under the hash of its token (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Who logged in (the admin user name).
    pub subject: String,
    /// Hex SHA-256 of the session's CSRF token.
    pub csrf_hash: String,
    pub created_at_ms: u64,
    /// Last time the session was used; idle expiry counts from here.
    pub last_seen_ms: u64,
    /// The session dies when unused for this long.
    pub idle_timeout_ms: u64,
    /// The session dies at this instant whatever its use (absolute expiry).
    pub expires_at_ms: u64,
    /// How the token is presented: `true` for the browser's session cookie (then every request,
    /// reads included, also needs the CSRF token), `false` for `Authorization: Bearer`. A token
    /// is accepted only the way it was issued, so a cookie that leaks (browsers share cookies
    /// between the ports of one host) is no bearer token.
    #[serde(default)]
    pub via_cookie: bool,
    /// The id of the other session made by the same login (the cookie's bearer twin or the
    /// reverse): logging out of either ends both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub twin: Option<String>,
}

impl SessionRecord {
    /// Whether the session is alive at `now_ms` (neither idle-expired nor past absolute expiry).
    pub fn is_alive(&self, now_ms: u64) -> bool {
        now_ms < self.expires_at_ms
            && now_ms < self.last_seen_ms.saturating_add(self.idle_timeout_ms)
    }
}

/// The outcome of [`SessionStore::hit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hit {
    /// Whether this hit is within the limit.
    pub allowed: bool,
    /// Hits counted in the current window, this one included when allowed.
    pub count: u32,
    /// When the current window ends (ms since the epoch); `Retry-After` derives from it.
    pub reset_at_ms: u64,
}

/// Short-lived, strongly consistent state: sessions, exact counters, single-use markers.
/// A Durable Object on the edge (sharded by name), memory locally.
///
/// The rules below are written once, as pure functions over one item, in [`session_rules`]:
/// both implementations run them and only add storage (locking and sweeping in memory, one
/// Durable Object per key on the edge).
///
/// Time is passed in (`now_ms`) so that the caller's [`Clock`] is the only clock.
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
pub trait SessionStore: MaybeSend + MaybeSync {
    /// Store a new session under `id` (the token's hash).
    ///
    /// # Behavior
    /// - After `Ok`, `touch_session(id, now)` returns the record, every field as written but
    ///   `last_seen_ms`, while it is alive.
    /// - Creating an `id` that exists replaces it.
    async fn create_session(&self, id: &str, record: SessionRecord) -> Result<()>;

    /// Read a live session and mark it used at `now_ms` (sets `last_seen_ms = now_ms`).
    ///
    /// # Behavior
    /// - Unknown, revoked, idle-expired (`now_ms >= last_seen_ms + idle_timeout_ms`) or absolutely
    ///   expired (`now_ms >= expires_at_ms`) sessions return `Ok(None)`.
    /// - A dead session is not revived, not even by a later call carrying an earlier `now_ms`.
    /// - Touching never moves the absolute expiry.
    /// - Touching never moves `last_seen_ms` backwards: a call with an earlier `now_ms` than the
    ///   last touch leaves it (and so the idle expiry) as it is.
    /// - Returns the record as updated; idle expiry then counts from its `last_seen_ms`.
    async fn touch_session(&self, id: &str, now_ms: u64) -> Result<Option<SessionRecord>>;

    /// Revoke a session.
    ///
    /// # Behavior
    /// - After `Ok`, `touch_session` returns `None` at once, everywhere.
    /// - Revoking an unknown session succeeds.
    async fn revoke_session(&self, id: &str) -> Result<()>;

    /// Count one hit against a fixed-window counter.
    ///
    /// # Behavior
    /// - A window starts at the first hit after the previous window ended and lasts `window_ms`.
    /// - Within a window, the first `limit` hits are allowed (`count` 1..=limit); later hits are
    ///   refused with `allowed = false` and do not increase `count` beyond `limit`.
    /// - Exact under concurrency: N concurrent hits with limit L allow exactly min(N, L).
    /// - `reset_at_ms` is the end of the current window.
    /// - A `limit` of 0 reads the counter: refused, `count` is the hits counted so far in the
    ///   current window (one is started, empty, when none runs).
    async fn hit(&self, key: &str, window_ms: u64, limit: u32, now_ms: u64) -> Result<Hit>;

    /// Forget a counter (e.g. after a successful login).
    ///
    /// # Behavior
    /// - The next `hit` on `key` starts a fresh window. Resetting an unknown counter succeeds.
    async fn reset_counter(&self, key: &str) -> Result<()>;

    /// Set a marker for `ttl_ms`.
    ///
    /// # Behavior
    /// - Returns `true` if the marker was not set (or had expired) and is now set; `false` if it
    ///   was already set — so N concurrent calls return `true` exactly once (single-use markers).
    async fn mark(&self, key: &str, ttl_ms: u64, now_ms: u64) -> Result<bool>;

    /// Whether a marker is set and unexpired.
    ///
    /// # Behavior
    /// - `true` after `mark` until `ttl_ms` has passed, `false` before any `mark` and after expiry.
    async fn is_marked(&self, key: &str, now_ms: u64) -> Result<bool>;

    /// Run one approval operation on the deployment's approvals ([`approval_rules::Op`]):
    /// the one method a store implements for approvals; the typed calls below are provided.
    ///
    /// Provided: refuses (503 `session_store_unavailable`) — for stores that keep no approvals
    /// (test doubles). Both real stores override it and run [`approval_rules::Book::apply`].
    ///
    /// # Behavior
    /// - Every operation is applied as one step: of N concurrent `consume`s of one approved
    ///   approval with its binding, exactly one finds it `Run`; the others find it executed.
    /// - What one operation wrote is what every later operation reads, everywhere.
    /// - Expiry is applied when read, and each approval turned `expired` is reported by
    ///   exactly one reply ([`approval_rules::Reply::expired`]).
    async fn approval(&self, op: approval_rules::Op) -> Result<approval_rules::Reply> {
        let _ = op;
        Err(Error::unavailable("this session store keeps no approvals")
            .with_code(Code::SessionStoreUnavailable))
    }
}

pub mod approval_rules;
pub mod session_rules;

// ---------------------------------------------------------------------------------------------
// Fetcher
// ---------------------------------------------------------------------------------------------

/// Limits of one outbound request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchOptions {
    /// Whole-request deadline (connect + send + receive the full body).
    pub timeout_ms: u64,
    /// Largest response body accepted.
    pub max_response_bytes: usize,
    /// Allow plain-http and loopback upstreams (tests only; loudly logged when configured).
    pub allow_loopback: bool,
}

/// Sends one HTTP request to an upstream.
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
pub trait Fetcher: MaybeSend + MaybeSync {
    /// Send `request` (absolute URI) and return the upstream's response.
    ///
    /// # Behavior
    /// - Redirects are NOT followed: a 3xx is returned as it is, `Location` included, and its
    ///   target receives no request.
    /// - Past `timeout_ms` → `UpstreamTimeout` (code `upstream_timeout`); the deadline covers
    ///   connect, send and the whole body.
    /// - A body larger than `max_response_bytes`, with or without `Content-Length` →
    ///   `UpstreamFailed` (code `upstream_too_large`), without reading the rest; nothing of it is
    ///   returned. A body of exactly `max_response_bytes` is returned. HEAD, 204 and 304 replies
    ///   are not measured by their `Content-Length`.
    /// - Connection failures → `UpstreamFailed` (code `upstream_connect`). Errors never repeat
    ///   the request URI.
    /// - Method, path and query, headers (repeated ones in order) and body are sent as given;
    ///   `Host` is the URI's authority; no `Accept-Encoding` is added.
    /// - The returned `Content-Encoding` describes the returned bytes: untouched (header and
    ///   bytes as the upstream sent them), or decoded by the platform (then neither
    ///   `Content-Encoding` nor the encoded `Content-Length` is returned) — never encoded bytes
    ///   without their header, which the scrubber could not see into.
    /// - Repeated response headers come back in order (each `Set-Cookie` separately; others
    ///   separately or joined by `, `).
    /// - A destination the implementation refuses (a resolved address that is private, loopback
    ///   without `allow_loopback`, metadata, …) → `Forbidden` (code `ssrf_blocked`), and no packet
    ///   is sent to it. Where the platform resolves names, every resolved address is checked and the
    ///   connection goes to a checked address.
    async fn fetch(
        &self,
        request: http::Request<Bytes>,
        options: FetchOptions,
    ) -> Result<http::Response<Bytes>>;

    /// Send `request` (absolute URI) with its body streamed, and return the upstream's response
    /// head at once, its body as a stream: the pass-through proxy's exchange.
    ///
    /// Provided: a **buffering** form over [`Fetcher::fetch`] (the request body is read whole
    /// first, the response body is returned whole, at most
    /// [`StreamOptions::max_buffered_response_bytes`], under [`StreamOptions::total_timeout_ms`]),
    /// which keeps every sentence below but the ones on streaming, idle time and cancellation.
    /// Fakes in tests and platforms without streaming use it; the local backend and the worker
    /// override it.
    ///
    /// # Behavior
    /// - Everything [`Fetcher::fetch`] says of redirects (not followed), errors (typed, never
    ///   repeating the URI), connection failures, what is sent (method, path and query, headers
    ///   in order, `Host` from the URI, no `Accept-Encoding` added), `Content-Encoding`,
    ///   repeated response headers and refused destinations (SSRF: resolve once, check every
    ///   address, connect to a checked one) holds here too.
    /// - The request body is sent as it is produced: the upstream receives the first chunk
    ///   before the body stream has ended. A body whose length is known
    ///   ([`Body::len_hint`](crate::body::Body::len_hint)) is sent with that `Content-Length`;
    ///   any other, chunked.
    /// - A request body stream that yields an `Err` aborts the upload: the upstream never
    ///   receives a complete request (the connection is closed before the body ends), and, if
    ///   the response head has not come yet, `fetch_stream` returns that error (its kind and
    ///   code).
    /// - The response body is returned as it arrives: the caller gets the first chunk before
    ///   the upstream has sent the last. There is no size cap (the caller counts what it
    ///   passes on).
    /// - An upstream that closes the connection before its body is complete makes the stream
    ///   yield an `Err` (`UpstreamFailed`): a cut body never ends like a whole one.
    /// - Timeouts, each `UpstreamTimeout` (code `upstream_timeout`): the response head must
    ///   arrive within [`StreamOptions::headers_timeout_ms`] of the request's last body byte
    ///   (connecting included); no more than [`StreamOptions::idle_timeout_ms`] may pass
    ///   between two chunks of either body; the whole exchange, last response byte included,
    ///   ends by [`StreamOptions::total_timeout_ms`]. Before the head, the error is returned;
    ///   after it, the body stream yields it and ends.
    /// - Dropping the returned body (or the future, before it completes) cancels the exchange:
    ///   the connection to the upstream is closed (never returned to a pool mid-body), so the
    ///   upstream sees the client go away.
    async fn fetch_stream(
        &self,
        request: http::Request<Body>,
        options: StreamOptions,
    ) -> Result<http::Response<Body>> {
        let (parts, body) = request.into_parts();
        let body = body.collect_capped(usize::MAX).await?;
        let response = self
            .fetch(
                http::Request::from_parts(parts, body),
                FetchOptions {
                    timeout_ms: options.total_timeout_ms,
                    max_response_bytes: options.max_buffered_response_bytes,
                    allow_loopback: options.allow_loopback,
                },
            )
            .await?;
        Ok(response.map(Body::full))
    }
}

/// Limits of one streamed exchange ([`Fetcher::fetch_stream`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOptions {
    /// How long the response head may take after the request's last body byte was sent
    /// (connecting included).
    pub headers_timeout_ms: u64,
    /// Longest pause between two chunks of the request or the response body.
    pub idle_timeout_ms: u64,
    /// The whole exchange, the response's last byte included.
    pub total_timeout_ms: u64,
    /// Only for implementations that buffer (the provided [`Fetcher::fetch_stream`]): the
    /// largest response body they hold (`upstream_too_large` past it). Streaming ones have no
    /// cap.
    pub max_buffered_response_bytes: usize,
    /// Allow plain-http and loopback upstreams (tests only; loudly logged when configured).
    pub allow_loopback: bool,
}

// ---------------------------------------------------------------------------------------------
// Rs256Verifier
// ---------------------------------------------------------------------------------------------

/// Checks one RSASSA-PKCS1-v1_5 SHA-256 signature (JWT `alg: RS256`): the Cloudflare Access
/// token check ([`crate::auth::access`]). The RustCrypto `rsa` crate locally, the runtime's
/// WebCrypto (`crypto.subtle`) on Workers, so the worker's wasm carries no RSA code.
///
/// The core calls it only after the token's `alg` is RS256 and its key was found in the team's
/// key set; `n` is at most 4096 bits there. The conformance suite
/// (`testkit::rs256_suite`, feature `testkit`) checks the sentences below against both.
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
pub trait Rs256Verifier: MaybeSend + MaybeSync {
    /// Whether `signature` is a valid RS256 signature of `signing_input` under the public key
    /// (`n`, `e`), each a big-endian unsigned integer (a JWK's `n` and `e`, base64url-decoded).
    ///
    /// # Behavior
    /// - `true` only for a signature made with the private key of (`n`, `e`) over exactly
    ///   `signing_input`; a changed byte of the signature or of the input, or another key, is
    ///   `false`.
    /// - Malformed input — an empty or zero `n` or `e`, an even `n`, a signature whose length is
    ///   not `n`'s — is `false`, never a panic or an error.
    async fn verify(&self, n: &[u8], e: &[u8], signing_input: &[u8], signature: &[u8]) -> bool;
}

// ---------------------------------------------------------------------------------------------
// Background
// ---------------------------------------------------------------------------------------------

/// A task that finishes work after a response has been handed over (an audit event written
/// when a streamed reply ends or its client goes away).
#[cfg(not(target_arch = "wasm32"))]
pub type BackgroundTask = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>>;
/// A task that finishes work after a response has been handed over (not `Send` on wasm32).
#[cfg(target_arch = "wasm32")]
pub type BackgroundTask = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'static>>;

/// Runs tasks that outlive the request that started them: the tokio runtime locally,
/// `ctx.waitUntil` on Workers. Given per request to [`App::serve`](crate::app::App::serve).
pub trait Background: MaybeSend + MaybeSync {
    /// Run `task` to completion, independently of the caller.
    ///
    /// # Behavior
    /// - The task is polled to completion even when every response of the request that spawned
    ///   it has been dropped (the client went away).
    fn spawn(&self, task: BackgroundTask);
}

// ---------------------------------------------------------------------------------------------
// Sleeper
// ---------------------------------------------------------------------------------------------

/// A future that completes after a delay ([`Sleeper::sleep`]).
#[cfg(not(target_arch = "wasm32"))]
pub type SleepFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>>;
/// A future that completes after a delay (not `Send` on wasm32).
#[cfg(target_arch = "wasm32")]
pub type SleepFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'static>>;

/// Waits: the runtime's timer (tokio locally, a JS timer on Workers). Only `Prefer: wait=N`
/// on a request that needs an approval uses it (the server re-reads the approval between two
/// sleeps); an [`App`](crate::app::App) without one answers such a request at once.
pub trait Sleeper: MaybeSend + MaybeSync {
    /// # Behavior
    /// - The future completes no earlier than `ms` milliseconds after it is first polled.
    fn sleep(&self, ms: u64) -> SleepFuture;
}

// ---------------------------------------------------------------------------------------------
// AuditStore
// ---------------------------------------------------------------------------------------------

/// One page of [`AuditStore::query`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditPage {
    /// Matching events, newest first (by id: ids sort newest first, see `audit::new_id`).
    pub events: Vec<crate::audit::event::AuditEvent>,
    /// `None` when every stored event has been looked at; otherwise pass it back for the next
    /// page (a page may hold fewer events than asked, none even, and still have a cursor).
    pub cursor: Option<String>,
}

/// Where audit events are kept and queried: `audit:` keys of the KV store locally
/// (`audit::KvAuditStore`), a sharded SQLite-backed Durable Object on the edge (0 KV writes
/// per request, docs/decisions/0100). Only `audit::AuditLog` calls it; it caps events before
/// they get here and judges who may read them.
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
pub trait AuditStore: MaybeSend + MaybeSync {
    /// Store a batch of events, each kept at least `retention_secs` (60 at least) from now.
    ///
    /// # Behavior
    /// - After `Ok`, [`AuditStore::query`] finds every event of the batch, every field as
    ///   written.
    /// - An event whose id is already stored replaces it: one event per id, the last written
    ///   (a refusal series rewritten with a greater `count`).
    /// - An empty batch succeeds and stores nothing.
    async fn append(
        &self,
        events: &[crate::audit::event::AuditEvent],
        retention_secs: u64,
    ) -> Result<()>;

    /// Events that pass `filter` ([`AuditFilter::matches`], the one filter every store
    /// applies), newest first.
    ///
    /// # Behavior
    /// - At most `limit` events (1..=1000), in id order (newest first), each matching `filter`.
    /// - At most [`MAX_SCANNED_PER_CALL`](crate::audit::filter::MAX_SCANNED_PER_CALL) stored events
    ///   are looked at per call (per shard where the store is sharded).
    /// - Following the cursors from `None` until a page without one visits every matching
    ///   event exactly once, in order.
    /// - A cursor no call of this store returned is a `BadRequest` (code `invalid_cursor`).
    async fn query(
        &self,
        filter: &AuditFilter,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<AuditPage>;

    /// What the store counts of its own writes, shown as a row of `GET /v1/audit/sinks`:
    /// `sent` events stored, `dropped` events lost (not stored), `failed` writes that failed.
    /// `None` (the default): it counts nothing (the local KV-backed store).
    fn status(&self) -> Option<SinkStatus> {
        None
    }
}

// ---------------------------------------------------------------------------------------------
// AuditSink
// ---------------------------------------------------------------------------------------------

/// The counts of one sink, as `GET /v1/audit/sinks` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkStatus {
    /// `file`, `webhook`, `workers_log`, `analytics_engine`.
    pub name: String,
    /// Events handed over (written to the file, accepted by the collector, logged, written as
    /// a data point).
    pub sent: u64,
    /// Events given up on: the queue was full, or the collector refused them for good.
    pub dropped: u64,
    /// Failed attempts (a write that failed, a POST the collector did not accept).
    pub failed: u64,
    /// Events waiting in the sink's queue now.
    pub queued: u64,
}

/// Where every audit event also goes, besides the KV store: the local server's `--audit-log`
/// file and `--audit-webhook` collector, the worker's log line and Analytics Engine data point.
///
/// Called from the one place events are written (`audit::AuditLog`), right
/// after the KV put, with the event exactly as stored (capped; it holds no secret, body, header
/// or query value). Events a sync import writes into a store are not emitted (they do not go
/// through the audit log).
pub trait AuditSink: MaybeSend + MaybeSync {
    /// Take one event.
    ///
    /// # Behavior
    /// - Returns at once: it never waits for a file, a network or a full queue (what cannot be
    ///   queued is dropped and counted), and it never fails the request that caused the event.
    /// - An event rewritten under the same id (a refusal series whose `count` grew) is emitted
    ///   again; consumers keep the last one of an id.
    fn emit(&self, event: &crate::audit::event::AuditEvent);

    /// The counts of each sink behind this one.
    fn status(&self) -> Vec<SinkStatus>;
}

/// Several sinks as one: each event goes to every one of them.
pub struct SinkSet(pub Vec<Arc<dyn AuditSink>>);

impl AuditSink for SinkSet {
    fn emit(&self, event: &crate::audit::event::AuditEvent) {
        for sink in &self.0 {
            sink.emit(event);
        }
    }

    fn status(&self) -> Vec<SinkStatus> {
        self.0.iter().flat_map(|s| s.status()).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Clock
// ---------------------------------------------------------------------------------------------

/// Wall-clock time. The only source of time in the core (no `std::time` on wasm32).
pub trait Clock: MaybeSend + MaybeSync {
    /// Milliseconds since the Unix epoch.
    ///
    /// # Behavior
    /// - Never decreases between two calls on the same clock.
    fn now_ms(&self) -> u64;
}

/// A clock that tests set by hand.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: std::sync::atomic::AtomicU64,
}

impl ManualClock {
    pub fn new(now_ms: u64) -> Self {
        ManualClock {
            now: std::sync::atomic::AtomicU64::new(now_ms),
        }
    }
    pub fn set(&self, now_ms: u64) {
        self.now.store(now_ms, std::sync::atomic::Ordering::SeqCst);
    }
    pub fn advance(&self, ms: u64) {
        self.now.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Whether an error is of `kind` (handy in conformance suites).
pub fn is_kind<T>(r: &Result<T>, kind: ErrorKind) -> bool {
    matches!(r, Err(e) if e.kind() == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store with only the required methods: `get` is the provided one.
    struct OnlyRequired;

    #[async_trait::async_trait]
    impl KvStore for OnlyRequired {
        async fn get_with_metadata(&self, key: &str) -> Result<Option<KvEntry>> {
            kv_validate::key(key)?;
            Ok((key == "cred:github").then(|| KvEntry {
                value: Bytes::from_static(b"envelope"),
                metadata: Some(serde_json::json!({"alias": "github"})),
            }))
        }
        async fn put(&self, _: &str, _: Bytes, _: PutOptions) -> Result<()> {
            Ok(())
        }
        async fn delete(&self, _: &str) -> Result<()> {
            Ok(())
        }
        async fn list(&self, _: ListOptions) -> Result<ListPage> {
            Ok(ListPage::default())
        }
    }

    #[test]
    fn provided_get_is_get_with_metadata_without_the_metadata() {
        let get = |key: &str| futures::executor::block_on(OnlyRequired.get(key));
        assert_eq!(
            get("cred:github").ok(),
            Some(Some(Bytes::from_static(b"envelope")))
        );
        assert_eq!(get("cred:missing").ok(), Some(None));
        let refused = get("..");
        assert!(
            matches!(refused, Err(e) if e.kind() == ErrorKind::BadRequest && e.code() == Code::InvalidKey)
        );
    }
}
