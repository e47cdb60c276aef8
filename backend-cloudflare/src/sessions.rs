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

use std::cell::RefCell;

use vultrino_core::approvals::Approval;
use vultrino_core::error::{Code, Error, Result};
use vultrino_core::ports::approval_rules::{self, Book};
use vultrino_core::ports::session_rules::{apply, Change, Item, Op, Reply};
use vultrino_core::ports::{Hit, SessionRecord, SessionStore};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::{
    durable_object, web_sys, DurableObject, Env, ObjectNamespace, Request, Response, State,
};

/// Storage key of the object's item.
const ITEM_KEY: &str = "item";
/// Dead items are deleted this long after they died (by the real clock).
const GRACE_MS: u64 = 24 * 3600 * 1000;
/// Storage key prefix of approvals in the `approvals` object.
const APPROVAL_PREFIX: &str = "ap:";
/// The one object that holds every approval.
const APPROVALS_OBJECT: &str = "approvals";
/// The path of approval operations (item operations use any other).
const APPROVAL_PATH: &str = "/approval";

/// The Durable Object class behind [`DoSessions`]. Holds one item (see [`Item`]).
#[durable_object]
pub struct SessionDO {
    state: State,
    /// `None`: not loaded from storage yet; `Some(None)`: loaded, empty.
    item: RefCell<Option<Option<Item>>>,
    /// The `approvals` object's approvals; `None`: not loaded from storage yet.
    book: RefCell<Option<Book>>,
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
    async fn approval(&self, mut req: Request) -> worker::Result<Response> {
        let Some(op) = crate::streams::json_request::<approval_rules::Op>(&mut req).await else {
            return Response::error("malformed approval operation", 400);
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
        with_writes(Response::from_json(&reply)?, count)
    }
}

/// The reply header that tells the caller how many storage writes an operation made (read by
/// the test worker's counters only: docs/decisions/0117).
const WRITES_HEADER: &str = "x-storage-writes";

fn with_writes(mut resp: Response, writes: u32) -> worker::Result<Response> {
    resp.headers_mut().set(WRITES_HEADER, &writes.to_string())?;
    Ok(resp)
}

impl DurableObject for SessionDO {
    fn new(state: State, _env: Env) -> Self {
        SessionDO {
            state,
            item: RefCell::new(None),
            book: RefCell::new(None),
        }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        if req.path() == APPROVAL_PATH {
            return self.approval(req).await;
        }
        let Some(op) = crate::streams::json_request::<Op>(&mut req).await else {
            return Response::error("malformed session operation", 400);
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
        let storage = self.state.storage();
        let mut writes = 0u32;
        match (change, stored) {
            (Change::Put, Some(item)) => {
                writes += 1;
                storage.put(ITEM_KEY, &item).await?;
                let cleanup_at = item.dead_after_ms().saturating_add(GRACE_MS);
                let now = worker::Date::now().as_millis();
                if cleanup_at > now {
                    let offset = i64::try_from(cleanup_at - now).unwrap_or(i64::MAX);
                    storage.set_alarm(offset).await?;
                }
            }
            (Change::Delete, _) => {
                writes += 1;
                storage.delete_all().await?;
            }
            _ => {}
        }
        with_writes(Response::from_json(&reply)?, writes)
    }

    async fn alarm(&self) -> worker::Result<Response> {
        self.load().await?;
        let now = worker::Date::now().as_millis();
        let cleanup_at = self
            .item
            .borrow()
            .as_ref()
            .and_then(|i| i.as_ref())
            .map(|i| i.dead_after_ms().saturating_add(GRACE_MS));
        match cleanup_at {
            Some(at) if at > now => {
                let offset = i64::try_from(at - now).unwrap_or(i64::MAX);
                self.state.storage().set_alarm(offset).await?;
            }
            _ => {
                *self.item.borrow_mut() = Some(None);
                self.state.storage().delete_all().await?;
            }
        }
        Response::empty()
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

    /// POST `body` as JSON to object `name` at `path`; its JSON reply.
    ///
    /// Through the runtime's own types (the stub's `fetch`, web-sys's `Request` and `Response`):
    /// workers-rs's `Request::new_with_init` and `Stub::fetch_with_request` read the new request's
    /// `cf`, method, URL and headers back and wrap the reply, a dozen crossings per call that
    /// nothing here uses (decision 0120).
    async fn post<B: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        name: &str,
        path: &str,
        body: &B,
    ) -> worker::Result<R> {
        #[cfg(feature = "testkit")]
        let name = &format!("{}{name}", self.scope);
        let stub: worker::worker_sys::DurableObject = self.ns.get_by_name(name)?.into_rpc();
        #[cfg(feature = "testkit")]
        crate::counting::do_request(crate::counting::DoKind::Sessions);
        let body = serde_json::to_string(body)?;
        let init = web_sys::RequestInit::new();
        init.set_method("POST");
        init.set_body(&JsValue::from_str(&body));
        let req =
            web_sys::Request::new_with_str_and_init(&format!("https://session-do{path}"), &init)?;
        let resp: web_sys::Response = JsFuture::from(stub.fetch_with_request(&req)?)
            .await?
            .dyn_into()?;
        if resp.status() != 200 {
            return Err(worker::Error::RustError(format!(
                "session object answered {}",
                resp.status()
            )));
        }
        #[cfg(feature = "testkit")]
        if let Ok(Some(n)) = resp.headers().get(WRITES_HEADER) {
            crate::counting::rows_written(
                crate::counting::DoKind::Sessions,
                n.parse().unwrap_or(0),
            );
        }
        crate::streams::json_of::<R>(&resp).await
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
