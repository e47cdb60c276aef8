//! TEST-ONLY (feature `testkit`, never in the deployable build): what each request costs in
//! platform operations, counted inside the test worker (docs/decisions/0109).
//!
//! - [`CountingKv`] wraps the KV port: reads (`get`, `get_with_metadata`), writes, deletes,
//!   lists.
//! - [`CountingFetcher`] wraps the fetch port: upstream subrequests (`fetch`, `fetch_stream`).
//! - Durable Object requests are counted where the stubs are called ([`do_request`] from
//!   `sessions` and `audit_store`): one port call may be several requests (an audit query is
//!   one per shard), and what is billed is the request.
//! - [`audit_down`]: a switch that makes every audit-store request fail before it is sent, as
//!   an exhausted quota or an outage would (for the `AUDIT_REQUIRED` tests).
//!
//! The counts are the isolate's (workerd under Miniflare runs one). `GET /__testkit/counts`
//! reads them, `POST /__testkit/counts` reads and zeroes them, `POST /__testkit/audit-down`
//! with `{"down": bool}` sets the switch (`testkit_route`).

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use bytes::Bytes;
use vultrino_core::body::Body;
use vultrino_core::error::Result;
use vultrino_core::ports::{
    FetchOptions, Fetcher, KvEntry, KvStore, ListOptions, ListPage, PutOptions, StreamOptions,
};

/// Operations counted since the last reset.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Counts {
    pub kv_reads: u64,
    pub kv_writes: u64,
    pub kv_deletes: u64,
    pub kv_lists: u64,
    /// Requests to the `SESSIONS` Durable Objects.
    pub do_sessions: u64,
    /// Requests to the `AUDIT` Durable Objects.
    pub do_audit: u64,
    /// Fetches to upstreams.
    pub subrequests: u64,
    /// SQLite rows written by the `AUDIT` objects, as SQLite counts them (`rowsWritten`).
    pub rows_audit: u64,
    /// Storage writes (`put`, `delete_all`) by the `SESSIONS` objects (each at least one row
    /// written; their key-value API does not report rows).
    pub rows_sessions: u64,
    /// Appends whose events were stored but whose prune failed (the audit object logs it).
    pub audit_prune_failures: u64,
}

thread_local! {
    static COUNTS: RefCell<Counts> = RefCell::new(Counts::default());
    static AUDIT_DOWN: Cell<bool> = const { Cell::new(false) };
}

fn bump(f: impl FnOnce(&mut Counts)) {
    COUNTS.with(|c| f(&mut c.borrow_mut()));
}

/// The counts now; with `reset`, zeroed after reading.
pub fn counts(reset: bool) -> Counts {
    COUNTS.with(|c| {
        if reset {
            std::mem::take(&mut *c.borrow_mut())
        } else {
            c.borrow().clone()
        }
    })
}

/// Which Durable Object namespace a request went to.
#[derive(Clone, Copy)]
pub enum DoKind {
    Sessions,
    Audit,
}

/// One request to a Durable Object stub.
pub fn do_request(kind: DoKind) {
    bump(|c| match kind {
        DoKind::Sessions => c.do_sessions += 1,
        DoKind::Audit => c.do_audit += 1,
    });
}

/// `n` rows written by an object of `kind` (reported in its reply).
pub fn rows_written(kind: DoKind, n: u64) {
    bump(|c| match kind {
        DoKind::Sessions => c.rows_sessions += n,
        DoKind::Audit => c.rows_audit += n,
    });
}

/// An append stored its events but its prune failed.
pub fn audit_prune_failed() {
    bump(|c| c.audit_prune_failures += 1);
}

/// Whether audit-store requests fail (the switch of `POST /__testkit/audit-down`).
pub fn audit_down() -> bool {
    AUDIT_DOWN.with(Cell::get)
}

pub fn set_audit_down(down: bool) {
    AUDIT_DOWN.with(|d| d.set(down));
}

/// The KV port, counted.
pub struct CountingKv(pub Arc<dyn KvStore>);

#[async_trait::async_trait(?Send)]
impl KvStore for CountingKv {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        bump(|c| c.kv_reads += 1);
        self.0.get(key).await
    }

    async fn get_with_metadata(&self, key: &str) -> Result<Option<KvEntry>> {
        bump(|c| c.kv_reads += 1);
        self.0.get_with_metadata(key).await
    }

    async fn put(&self, key: &str, value: Bytes, options: PutOptions) -> Result<()> {
        bump(|c| c.kv_writes += 1);
        self.0.put(key, value, options).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        bump(|c| c.kv_deletes += 1);
        self.0.delete(key).await
    }

    async fn list(&self, options: ListOptions) -> Result<ListPage> {
        bump(|c| c.kv_lists += 1);
        self.0.list(options).await
    }
}

/// The fetch port, counted.
pub struct CountingFetcher(pub Arc<dyn Fetcher>);

#[async_trait::async_trait(?Send)]
impl Fetcher for CountingFetcher {
    async fn fetch(
        &self,
        request: http::Request<Bytes>,
        options: FetchOptions,
    ) -> Result<http::Response<Bytes>> {
        bump(|c| c.subrequests += 1);
        self.0.fetch(request, options).await
    }

    async fn fetch_stream(
        &self,
        request: http::Request<Body>,
        options: StreamOptions,
    ) -> Result<http::Response<Body>> {
        bump(|c| c.subrequests += 1);
        self.0.fetch_stream(request, options).await
    }
}
