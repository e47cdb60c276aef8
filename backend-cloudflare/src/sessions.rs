//! Sessions, counters and markers in Durable Objects: the [`SessionDO`] class (binding
//! `SESSIONS`, SQLite-backed) and [`DoSessions`], the core's [`SessionStore`] over it.
//!
//! Sharded by name: one object per session hash (`session:<id>`), per counter key
//! (`counter:<key>`), per marker key (`marker:<key>`) — never one global object. A Durable Object
//! runs one event at a time, and [`SessionDO`] keeps its item in memory after the first load and
//! changes it synchronously, so counters and markers are exact under any concurrency; the write
//! to storage is covered by the object's output gate (the reply waits for it).
//!
//! What an object does with an operation is the core's
//! [`session_rules::apply`](vultrino_core::ports::session_rules::apply), the same rules the
//! memory store runs; this file is transport and storage. Time is the caller's (`now_ms` travels
//! in the operation), as the port requires. Storage is reclaimed by an alarm a day after an item
//! is dead by the real clock.
//!
//! Approvals are the exception to one item per object: every approval of the deployment lives in
//! ONE object, `approvals`, which keeps the core's
//! [`approval_rules::Book`](vultrino_core::ports::approval_rules::Book) in memory (loaded once
//! from its storage, one key per approval) and applies each operation without an await in
//! between — so the compare-and-set of a consume is exact — then writes what changed. KV never
//! holds approvals (docs/decisions/0090-approvals.md).

use std::cell::{Cell, RefCell};

use crate::cleanup_alarm::{after_alarm, alarm_for, AfterAlarm, GRACE_MS};

use vultrino_core::approvals::Approval;
use vultrino_core::error::{Code, Error, Result};
use vultrino_core::ports::approval_rules::{self, Book};
use vultrino_core::ports::session_rules::{apply, Change, Item, Op, Reply};
use vultrino_core::ports::{Hit, SessionRecord, SessionStore};
use worker::wasm_bindgen::prelude::wasm_bindgen;
use worker::wasm_bindgen::JsValue;
use worker::{web_sys, Env, ObjectNamespace, State};

use crate::objects;

/// Storage key of the object's item.
const ITEM_KEY: &str = "item";
/// Storage key prefix of approvals in the `approvals` object.
const APPROVAL_PREFIX: &str = "ap:";
/// The one object that holds every approval.
const APPROVALS_OBJECT: &str = "approvals";
/// The path of approval operations (item operations use any other).
const APPROVAL_PATH: &str = "/approval";

/// The Durable Object class behind [`DoSessions`]. Holds one item (see [`Item`]).
///
/// Its JS-facing methods (the constructor, `fetch`, `alarm`) are exported here, not by
/// workers-rs's `#[durable_object]` macro, which would convert each request and reply through
/// workers-rs's types ([`crate::objects`], decision 0128).
#[wasm_bindgen(wasm_bindgen = ::worker::wasm_bindgen)]
pub struct SessionDO {
    state: State,
    /// `None`: not loaded from storage yet; `Some(None)`: loaded, empty.
    item: RefCell<Option<Option<Item>>>,
    /// The `approvals` object's approvals; `None`: not loaded from storage yet.
    book: RefCell<Option<Book>>,
    /// When the alarm set by this instance fires (epoch ms), if it set one: an item written again
    /// before then needs no new alarm, since the alarm re-arms itself while the item lives.
    alarm_at: Cell<Option<u64>>,
}

#[wasm_bindgen(
    wasm_bindgen = ::worker::wasm_bindgen,
    wasm_bindgen_futures = ::worker::wasm_bindgen_futures,
    js_sys = ::worker::js_sys
)]
impl SessionDO {
    #[wasm_bindgen(constructor)]
    pub fn new(state: worker::worker_sys::DurableObjectState, _env: Env) -> SessionDO {
        SessionDO {
            state: State::from(state),
            item: RefCell::new(None),
            book: RefCell::new(None),
            alarm_at: Cell::new(None),
        }
    }

    /// One operation: on the item (any path but [`APPROVAL_PATH`]) or on the approvals.
    #[wasm_bindgen(js_name = fetch)]
    pub async fn fetch(&self, req: web_sys::Request) -> Result<JsValue, JsValue> {
        let result = if objects::path(&req) == APPROVAL_PATH {
            self.approval(req).await
        } else {
            self.item_op(req).await
        };
        objects::to_js(result)
    }

    /// Deletes the item once it has been dead for [`GRACE_MS`], else sets the alarm again.
    #[wasm_bindgen(js_name = alarm)]
    pub async fn alarm(&self) -> Result<JsValue, JsValue> {
        objects::to_js(self.on_alarm().await.map(|()| JsValue::UNDEFINED))
    }
}

impl SessionDO {
    async fn load(&self) -> worker::Result<()> {
        if self.item.borrow().is_some() {
            return Ok(());
        }
        let stored: Option<Item> = self.state.storage().get(ITEM_KEY).await?;
        // Another event may have loaded (and changed) the item while this one awaited storage:
        // the first load wins, later ones are stale.
        let mut slot = self.item.borrow_mut();
        if slot.is_none() {
            *slot = Some(stored);
        }
        Ok(())
    }

    async fn load_book(&self) -> worker::Result<()> {
        if self.book.borrow().is_some() {
            return Ok(());
        }
        let stored = self
            .state
            .storage()
            .list_with_options(worker::durable::ListOptions::new().prefix(APPROVAL_PREFIX))
            .await?;
        let mut records = Vec::new();
        for value in stored.values() {
            // Each approval is stored as its JSON text.
            if let Some(text) = value?.as_string() {
                if let Ok(a) = serde_json::from_str::<Approval>(&text) {
                    records.push(a);
                }
            }
        }
        // As for the item: the first load wins.
        let mut slot = self.book.borrow_mut();
        if slot.is_none() {
            *slot = Some(Book::from_records(records));
        }
        Ok(())
    }

    /// One approval operation on the book (see the module doc).
    async fn approval(&self, req: web_sys::Request) -> worker::Result<JsValue> {
        let Some(op) = objects::read_op::<approval_rules::Op>(&req).await else {
            return objects::error("malformed approval operation", 400);
        };
        self.load_book().await?;
        let (writes, reply) = self
            .book
            .borrow_mut()
            .get_or_insert_with(Book::default)
            .apply(op);
        let storage = self.state.storage();
        let count = u32::try_from(writes.put.len() + usize::from(!writes.delete.is_empty()))
            .unwrap_or(u32::MAX);
        for a in &writes.put {
            let text = serde_json::to_string(a)?;
            storage
                .put(&format!("{APPROVAL_PREFIX}{}", a.id), text)
                .await?;
        }
        if !writes.delete.is_empty() {
            let keys: Vec<String> = writes
                .delete
                .iter()
                .map(|id| format!("{APPROVAL_PREFIX}{id}"))
                .collect();
            storage.delete_multiple(keys).await?;
        }
        objects::json(&reply, count)
    }

    /// One operation on the item.
    async fn item_op(&self, req: web_sys::Request) -> worker::Result<JsValue> {
        let Some(op) = objects::read_op::<Op>(&req).await else {
            return objects::error("malformed session operation", 400);
        };
        self.load().await?;
        // Read, decide and update the in-memory item without awaiting in between: exact. What
        // storage needs is copied out, so no borrow is held across the awaits below.
        let (change, reply, stored) = {
            let mut loaded = self.item.borrow_mut();
            let slot = loaded.get_or_insert(None);
            let (change, reply) = apply(slot, op);
            let stored = match change {
                Change::Put => slot.clone(),
                Change::Keep | Change::Delete => None,
            };
            (change, reply, stored)
        };
        let mut writes = 0u32;
        match (change, stored) {
            (Change::Put, Some(item)) => {
                writes += 1;
                let storage = self.state.storage();
                storage.put(ITEM_KEY, &item).await?;
                let cleanup_at = item.dead_after_ms().saturating_add(GRACE_MS);
                let now = objects::now_ms();
                if let Some(at) = alarm_for(self.alarm_at.get(), now, cleanup_at) {
                    let offset = i64::try_from(at.saturating_sub(now)).unwrap_or(i64::MAX);
                    storage.set_alarm(offset).await?;
                    self.alarm_at.set(Some(at));
                }
            }
            (Change::Delete, _) => {
                writes += 1;
                self.state.storage().delete_all().await?;
                // Whether `deleteAll` also removes the alarm depends on the compatibility date:
                // the next write sets one either way.
                self.alarm_at.set(None);
            }
            _ => {}
        }
        objects::json(&reply, writes)
    }

    async fn on_alarm(&self) -> worker::Result<()> {
        self.alarm_at.set(None);
        self.load().await?;
        let now = objects::now_ms();
        let cleanup_at = self
            .item
            .borrow()
            .as_ref()
            .and_then(|i| i.as_ref())
            .map(|i| i.dead_after_ms().saturating_add(GRACE_MS));
        match after_alarm(cleanup_at, now) {
            AfterAlarm::Rearm(at) => {
                let offset = i64::try_from(at - now).unwrap_or(i64::MAX);
                self.state.storage().set_alarm(offset).await?;
                self.alarm_at.set(Some(at));
            }
            AfterAlarm::Delete => {
                *self.item.borrow_mut() = Some(None);
                self.state.storage().delete_all().await?;
            }
        }
        Ok(())
    }
}

/// The core's [`SessionStore`] over the `SESSIONS` Durable Object namespace.
pub struct DoSessions {
    ns: ObjectNamespace,
    /// Test worker only: a prefix of every object name, so that one test's objects are not
    /// another's (the fault property starts each case from an empty store).
    #[cfg(feature = "testkit")]
    scope: String,
}

impl DoSessions {
    pub fn new(ns: ObjectNamespace) -> Self {
        DoSessions {
            ns,
            #[cfg(feature = "testkit")]
            scope: String::new(),
        }
    }

    /// Test worker only: a store whose objects are all named `<scope><name>` (fresh, empty
    /// objects for a fresh scope).
    #[cfg(feature = "testkit")]
    pub fn scoped(ns: ObjectNamespace, scope: String) -> Self {
        DoSessions { ns, scope }
    }

    async fn call(&self, name: &str, op: &Op) -> Result<Reply> {
        self.try_call(name, op).await.map_err(|e| {
            worker::console_error!("session store call failed: {e}");
            Error::unavailable("session store (Durable Object) unavailable")
                .with_code(Code::SessionStoreUnavailable)
        })
    }

    async fn try_call(&self, name: &str, op: &Op) -> worker::Result<Reply> {
        self.post(name, "/op", op).await
    }

    /// POST `body` as JSON to object `name` at `path`; its JSON reply ([`objects::post`]).
    async fn post<B: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        name: &str,
        path: &str,
        body: &B,
    ) -> worker::Result<R> {
        #[cfg(feature = "testkit")]
        let name = &format!("{}{name}", self.scope);
        #[cfg(feature = "testkit")]
        crate::counting::do_request(crate::counting::DoKind::Sessions);
        let body = serde_json::to_string(body)?;
        let url = format!("https://session-do{path}");
        let resp = objects::post(&self.ns, name, &url, &body, "session object").await?;
        #[cfg(feature = "testkit")]
        if let Ok(Some(n)) = resp.headers().get(objects::WRITES_HEADER) {
            crate::counting::rows_written(
                crate::counting::DoKind::Sessions,
                n.parse().unwrap_or(0),
            );
        }
        objects::reply_json::<R>(&resp).await
    }

    async fn session(&self, id: &str, op: Op) -> Result<Option<SessionRecord>> {
        match self.call(&format!("session:{id}"), &op).await? {
            Reply::Session { record } => Ok(record),
            _ => Err(unexpected()),
        }
    }

    async fn marked(&self, key: &str, op: Op) -> Result<bool> {
        match self.call(&format!("marker:{key}"), &op).await? {
            Reply::Marked { value } => Ok(value),
            _ => Err(unexpected()),
        }
    }
}

fn unexpected() -> Error {
    Error::unavailable("session store gave an unexpected reply")
        .with_code(Code::SessionStoreUnavailable)
}

#[async_trait::async_trait(?Send)]
impl SessionStore for DoSessions {
    async fn create_session(&self, id: &str, record: SessionRecord) -> Result<()> {
        self.call(&format!("session:{id}"), &Op::CreateSession { record })
            .await
            .map(|_| ())
    }

    async fn touch_session(&self, id: &str, now_ms: u64) -> Result<Option<SessionRecord>> {
        self.session(id, Op::TouchSession { now_ms }).await
    }

    async fn revoke_session(&self, id: &str) -> Result<()> {
        self.call(&format!("session:{id}"), &Op::RevokeSession)
            .await
            .map(|_| ())
    }

    async fn hit(&self, key: &str, window_ms: u64, limit: u32, now_ms: u64) -> Result<Hit> {
        let op = Op::Hit {
            window_ms,
            limit,
            now_ms,
        };
        match self.call(&format!("counter:{key}"), &op).await? {
            Reply::Hit { hit } => Ok(hit),
            _ => Err(unexpected()),
        }
    }

    async fn reset_counter(&self, key: &str) -> Result<()> {
        self.call(&format!("counter:{key}"), &Op::ResetCounter)
            .await
            .map(|_| ())
    }

    async fn mark(&self, key: &str, ttl_ms: u64, now_ms: u64) -> Result<bool> {
        self.marked(key, Op::Mark { ttl_ms, now_ms }).await
    }

    async fn is_marked(&self, key: &str, now_ms: u64) -> Result<bool> {
        self.marked(key, Op::IsMarked { now_ms }).await
    }

    async fn approval(&self, op: approval_rules::Op) -> Result<approval_rules::Reply> {
        self.post(APPROVALS_OBJECT, APPROVAL_PATH, &op)
            .await
            .map_err(|e| {
                worker::console_error!("approval store call failed: {e}");
                Error::unavailable("approval store (Durable Object) unavailable")
                    .with_code(Code::SessionStoreUnavailable)
            })
    }
}
