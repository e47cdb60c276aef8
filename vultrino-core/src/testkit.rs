//! Conformance suites for the port implementations (feature `testkit`).
//!
//! Every `# Behavior` sentence of [`KvStore`], [`Rs256Verifier`](crate::ports::Rs256Verifier),
//! [`SessionStore`](crate::ports::SessionStore) and [`Fetcher`](crate::ports::Fetcher) is checked
//! here by a plain `pub async fn`, in the style of arrow-rs `object_store`'s integration
//! functions: no framework, no macros, no runtime. Each backend's tests call the umbrella function
//! ([`kv_suite`], [`session_suite`], [`fetcher_suite`]) or the individual checks they support, on
//! whatever executor they have (tokio locally, workerd on the edge).
//!
//! The core does no I/O, so the [`Fetcher`](crate::ports::Fetcher) suite needs an upstream from
//! the caller: a loopback server implementing the route table documented in [`fetcher`] (each
//! backend's test runs one), and a closed port.
//!
//! # Conventions
//! - Every check returns `Result<(), String>`; the `Err` names the check and the property that
//!   failed, with what was observed. Nothing in here panics on a store's or an upstream's answer.
//! - Every store check works under its own key prefix `testkit/<check>/<random run id>/`, so all checks
//!   can share one store, the suite can run twice (or in parallel) against a persistent store, and
//!   a check's `list` never sees another check's keys. Checks delete what they wrote when they pass.
//! - Concurrency checks start N futures with [`futures::future::join_all`] on one task: that is what
//!   a single-threaded Workers isolate can do, and it catches any store that awaits between a read
//!   and the matching write. Multi-threaded races are for the backend's own tests.
//! - Values written here are test data, never secrets, so they may appear in failure messages
//!   (shortened: a failure never prints a whole value).

mod audit;
pub mod fault_property;
pub mod faults;
mod fetch_stream;
pub mod fetcher;
mod kv;
mod kv_list;
mod rs256;
mod session;

pub use audit::*;
pub use fetch_stream::*;
pub use fetcher::*;
pub use kv::*;
pub use kv_list::*;
pub use rs256::*;
pub use session::*;

use std::fmt::Display;

use crate::error::{Code, ErrorKind, Result};
use crate::ports::{kv_limits, KvStore, ListKey, ListOptions};

/// A fresh prefix `testkit/<check>/<16 hex random>/` for one run of one check.
fn unique_prefix(check: &str) -> Result<String, String> {
    let mut nonce = [0u8; 8];
    getrandom::getrandom(&mut nonce)
        .map_err(|e| format!("{check}: no randomness for a run id: {e}"))?;
    let hex: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("testkit/{check}/{hex}/"))
}

/// `Err("<check>: <property>")` unless `cond` holds.
fn ensure(check: &str, cond: bool, property: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(format!("{check}: {}", property()))
    }
}

/// Unwrap a store call that must succeed, naming the step when it does not.
fn ok<T>(check: &str, step: &str, r: Result<T>) -> Result<T, String> {
    r.map_err(|e| {
        format!(
            "{check}: {step} failed unexpectedly with {e} (kind {:?})",
            e.kind()
        )
    })
}

/// Require a store call to fail with `kind` and `code`. The success value is not printed (it may
/// be a 25 MiB value).
fn refused<T>(
    check: &str,
    step: &str,
    r: Result<T>,
    kind: ErrorKind,
    code: Code,
) -> Result<(), String> {
    match r {
        Ok(_) => Err(format!(
            "{check}: {step} succeeded, expected {kind:?} with code {code}"
        )),
        Err(e) if e.kind() == kind && e.code() == code => Ok(()),
        Err(e) => Err(format!(
            "{check}: {step} failed with {:?}/{}, expected {kind:?} with code {code}",
            e.kind(),
            e.code()
        )),
    }
}

/// A short, printable description of bytes for failure messages.
fn show(bytes: Option<&[u8]>) -> String {
    match bytes {
        None => "None".to_string(),
        Some(b) if b.len() <= 64 => format!("Some({:?})", String::from_utf8_lossy(b)),
        Some(b) => format!("Some(<{} bytes>)", b.len()),
    }
}

/// `what` shortened to at most 200 characters (for metadata and record dumps).
fn short(what: impl Display) -> String {
    let s = what.to_string();
    if s.len() <= 200 {
        s
    } else {
        let mut end = 200;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    }
}

// ---- KV helpers shared by the KV checks ----

/// Every key under `prefix`, following cursors, with at most `limit` keys per page.
/// Fails if a page is larger than `limit` or the cursors do not end.
async fn list_all(
    check: &str,
    store: &dyn KvStore,
    prefix: &str,
    limit: Option<usize>,
) -> Result<Vec<ListKey>, String> {
    let mut keys = Vec::new();
    let mut cursor = None;
    let max_page = limit.unwrap_or(kv_limits::MAX_LIST_LIMIT);
    for _ in 0..10_000 {
        let opts = ListOptions {
            prefix: Some(prefix.to_string()),
            cursor: cursor.take(),
            limit,
        };
        let page = ok(check, "list", store.list(opts).await)?;
        ensure(check, page.keys.len() <= max_page, || {
            format!(
                "a list page holds {} keys, more than the limit {max_page}",
                page.keys.len()
            )
        })?;
        keys.extend(page.keys);
        match page.cursor {
            None => return Ok(keys),
            Some(c) => cursor = Some(c),
        }
    }
    Err(format!(
        "{check}: following list cursors never reached a page without a cursor"
    ))
}

fn names(keys: &[ListKey]) -> Vec<&str> {
    keys.iter().map(|k| k.name.as_str()).collect()
}

/// Best-effort removal of what a check wrote (only after it passed).
async fn cleanup(store: &dyn KvStore, keys: &[String]) {
    for k in keys {
        let _ = store.delete(k).await;
    }
}
