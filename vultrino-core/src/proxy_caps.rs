//! How many `/proxy/` exchanges may be in flight at once: per server process (per isolate on
//! Workers) and per API key (docs/decisions/0068-proxy-concurrency-caps-and-refusal-audit.md).
//!
//! An exchange takes a [`Slot`] before anything is sent upstream and holds it until its reply's
//! stream ends or is dropped (the slot travels in the reply's audit [`Finish`](super::reply)).
//! Past a cap the request is refused, 429 `proxy_busy` with `Retry-After`, and nothing is sent.
//! The cost per request: one atomic add and one short `Mutex<HashMap>` section on take and on
//! release (std only: wasm-clean).
//!
//! The same counters bound the requests an approval holds with `Prefer: wait=N` per key
//! ([`crate::approvals::settings::MAX_WAITERS_PER_KEY`], a counter set of its own).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::{Code, Error, ErrorKind};

/// Seconds a refused client is asked to wait (`Retry-After`).
pub const BUSY_RETRY_AFTER_SECS: u64 = 1;

/// The counters of one process (isolate).
#[derive(Debug, Default)]
pub(crate) struct ProxyCaps {
    total: AtomicUsize,
    per_key: Mutex<HashMap<Arc<str>, usize>>,
}

/// One exchange in flight; released when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    caps: Arc<ProxyCaps>,
    /// The map's own key (shared: a key already in flight costs no allocation).
    key: Arc<str>,
}

impl ProxyCaps {
    /// Take a slot for `key`, or refuse (`proxy_busy`) when `max_total` exchanges are in flight
    /// in this process or `max_per_key` for this key.
    pub(crate) fn take(
        self: &Arc<Self>,
        key: &str,
        max_total: usize,
        max_per_key: usize,
    ) -> Result<Slot, Error> {
        let before = self.total.fetch_add(1, Ordering::AcqRel);
        if before >= max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(busy("too many proxied requests in flight on this server"));
        }
        let mut map = self.per_key.lock().unwrap_or_else(PoisonError::into_inner);
        let held = map.get_key_value(key).map(|(k, &n)| (k.clone(), n));
        let (shared, n) = held.unwrap_or_else(|| (Arc::from(key), 0));
        if n >= max_per_key {
            drop(map);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(busy("too many proxied requests in flight for this key"));
        }
        map.insert(shared.clone(), n + 1);
        Ok(Slot {
            caps: self.clone(),
            key: shared,
        })
    }

    /// Keys with a slot taken (an entry each).
    pub(crate) fn keys_len(&self) -> usize {
        self.per_key
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Exchanges in flight (all keys).
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        {
            let mut map = self
                .caps
                .per_key
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(n) = map.get_mut(&*self.key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(&*self.key);
                }
            }
        }
        self.caps.total.fetch_sub(1, Ordering::AcqRel);
    }
}

fn busy(message: &str) -> Error {
    Error::new(ErrorKind::RateLimited, message.to_string())
        .with_code(Code::ProxyBusy)
        .with_retry_after(BUSY_RETRY_AFTER_SECS)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_key_past_its_cap_is_refused_until_a_slot_is_released() {
        let caps = Arc::new(ProxyCaps::default());
        let a1 = caps.take("key:a", 10, 2).unwrap();
        let _a2 = caps.take("key:a", 10, 2).unwrap();
        let e = caps.take("key:a", 10, 2).unwrap_err();
        assert_eq!(e.code(), Code::ProxyBusy);
        assert_eq!(e.retry_after_secs(), Some(BUSY_RETRY_AFTER_SECS));
        // Another key is not affected.
        let _b = caps.take("key:b", 10, 2).unwrap();
        assert_eq!(caps.in_flight(), 3);
        drop(a1);
        let _a3 = caps.take("key:a", 10, 2).unwrap();
        assert_eq!(caps.in_flight(), 3);
    }

    #[test]
    fn the_process_cap_holds_across_keys_and_refusals_leak_nothing() {
        let caps = Arc::new(ProxyCaps::default());
        let slots: Vec<_> = (0..3)
            .map(|i| caps.take(&format!("key:{i}"), 3, 5).unwrap())
            .collect();
        for _ in 0..10 {
            assert_eq!(
                caps.take("key:new", 3, 5).unwrap_err().code(),
                Code::ProxyBusy
            );
        }
        assert_eq!(caps.in_flight(), 3);
        drop(slots);
        assert_eq!(caps.in_flight(), 0);
        assert!(caps.per_key.lock().unwrap().is_empty());
        let _ = caps.take("key:new", 3, 5).unwrap();
    }
}
