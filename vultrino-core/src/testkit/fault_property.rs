//! The fault property (issue 17, decisions 0107 and 0116), shared by every backend: random
//! sequences of API calls — logins and logouts, credential, key and role changes, executes,
//! revocations — go through `App::handle` (and `App::serve` for the pass-through proxy) while
//! every port misbehaves by a seeded schedule ([`faults`](super::faults): store errors, delays,
//! hangs, stale KV reads, replies lost after the write landed, clock jumps, upstreams that
//! refuse, stall or lose their reply). After each step:
//!
//! - **never fail open**: a revoked key and a logged-out session never work again, nor a key of
//!   a deleted role (but on a stale KV read of that role, as decision 0034 allows for KV); a
//!   step whose session-store check failed is not answered 2xx;
//! - **never lose or corrupt**: once the faults clear (a "heal" step), every change answered 2xx
//!   is there, a change answered with an error is there whole or not at all (listings refuse no
//!   record, the secret an execute sends is one the model allows);
//! - **never leak**: no reply carries a credential secret, an API key or session token other than
//!   the one it issues, the password, a path or internal detail;
//! - **always a clean reply**: JSON errors, no 500, 502/503/504 where a dependency failed,
//!   `Retry-After` on 503 and 429, and each request ends within a bounded (virtual) time.
//!
//! Each case runs with key-record reuse off or on ([`Setup::key_record_reuse_secs`], the
//! worker's `KEY_RECORD_REUSE_SECONDS`: a verified key's record reused without a store read,
//! decision 0117); the checks are the same either way.
//!
//! The caller brings the stores ([`run`] with any [`KvStore`] and [`SessionStore`]): the memory
//! and file stores natively (`backend-local/tests/faults.rs`, proptest picks the steps), the
//! Workers KV and Durable Object adapters inside workerd (the test worker's
//! `/__testkit/faults`, steps from [`ops_from_seed`]). The upstream is always the in-process
//! [`Recorder`], and time is virtual ([`ManualClock`] moved by [`VirtualSleeper`]): a 30-second
//! hang costs nothing, on any executor. A failure is an `Err` naming the property that broke
//! and every step so far (seed first); nothing here panics, so it can run in a wasm isolate.

// On wasm32 the ports are not `Send` (one isolate, one thread), yet `Ports` holds them in `Arc`s.
#![cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use serde_json::{json, Value};

use super::faults::{faulty_ports, Fault, FaultConfig, FaultPort, FaultSchedule, Injected};
use crate::app::{App, Config};
use crate::crypto::{self, MasterSecret};
use crate::ports::{
    Clock, FetchOptions, Fetcher, KvStore, ManualClock, Ports, SessionStore, SleepFuture, Sleeper,
    StreamOptions,
};

/// The upstream of the credentials the property makes.
pub const DEFAULT_UPSTREAM: &str = "https://api.example.com";

/// The admin password of every world.
pub const PASSWORD: &str = "correct horse battery staple 17";
/// The virtual clock's start.
pub const START_MS: u64 = 1_800_000_000_000;
/// No request may take longer than this, in virtual time (faults included).
pub const DEADLINE_MS: u64 = 10 * 60 * 1000;

// ---------------------------------------------------------------------------------------------
// Test doubles: the upstream, the virtual sleeper
// ---------------------------------------------------------------------------------------------

/// The upstream: records the `Authorization` header of every request and answers 200
/// `{"ok":true}` itself, or ([`Recorder::forwarding`]) forwards the request to a real fetcher
/// (the worker's `WorkersFetcher`, to a loopback upstream that answers the same).
#[derive(Default)]
pub struct Recorder {
    sent: Mutex<Vec<String>>,
    forward_to: Option<Arc<dyn Fetcher>>,
}

impl Recorder {
    /// A recorder that hands every request on to `fetcher` (after recording it).
    pub fn forwarding(fetcher: Arc<dyn Fetcher>) -> Self {
        Recorder {
            sent: Mutex::default(),
            forward_to: Some(fetcher),
        }
    }

    /// The `Authorization` header of every request so far, oldest first.
    pub fn sent(&self) -> MutexGuard<'_, Vec<String>> {
        self.sent.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record<B>(&self, request: &http::Request<B>) {
        let auth = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        self.sent().push(auth);
    }
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
impl Fetcher for Recorder {
    async fn fetch(
        &self,
        request: http::Request<Bytes>,
        options: FetchOptions,
    ) -> crate::Result<http::Response<Bytes>> {
        self.record(&request);
        if let Some(f) = &self.forward_to {
            return f.fetch(request, options).await;
        }
        http::Response::builder()
            .header("content-type", "application/json")
            .body(Bytes::from_static(br#"{"ok":true}"#))
            .map_err(|_| crate::Error::internal())
    }

    async fn fetch_stream(
        &self,
        request: http::Request<crate::body::Body>,
        options: StreamOptions,
    ) -> crate::Result<http::Response<crate::body::Body>> {
        let Some(f) = &self.forward_to else {
            // the provided buffering one, through `fetch` (which records)
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
            return Ok(response.map(crate::body::Body::full));
        };
        self.record(&request);
        f.fetch_stream(request, options).await
    }
}

/// Sleeps by moving the test clock: delays and hangs take virtual time only.
pub struct VirtualSleeper(pub Arc<ManualClock>);

impl Sleeper for VirtualSleeper {
    fn sleep(&self, ms: u64) -> SleepFuture {
        self.0.advance(ms);
        Box::pin(async {})
    }
}

// ---------------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Life {
    Live,
    /// Ended by a change answered 2xx: must never work again.
    Dead,
    /// Ended by a change answered with an error: either.
    Maybe,
}

#[derive(Debug, Clone)]
pub struct Key {
    pub id: String,
    pub secret: String,
    pub life: Life,
    /// The custom role it is bound to, and how many deletions of it were acknowledged when
    /// the key was made.
    pub role: Option<(usize, u32)>,
}

#[derive(Debug, Clone)]
pub struct Session {
    pub token: String,
    pub life: Life,
}

#[derive(Debug, Default)]
pub struct Model {
    /// Per alias: every state it may be in (`None`: absent; `Some(secret)`).
    pub creds: BTreeMap<String, Vec<Option<String>>>,
    /// Per alias: the states it left while faults were on; a stale KV read may still see them
    /// (decision 0034: on Workers, a changed credential may be used elsewhere for a minute).
    pub stale_creds: BTreeMap<String, Vec<Option<String>>>,
    pub keys: Vec<Key>,
    pub sessions: Vec<Session>,
    /// Per custom role: whether it may exist, and the deletions acknowledged so far.
    pub roles: BTreeMap<usize, (Vec<bool>, u32)>,
    /// Every secret ever written (none may appear in a reply).
    pub secrets: Vec<String>,
    pub counter: u64,
}

impl Model {
    pub fn fresh(&mut self, what: &str) -> String {
        self.counter += 1;
        format!(
            "{what}-{}-{:08x}",
            self.counter,
            self.counter.wrapping_mul(0x9E37_79B9)
        )
    }

    pub fn admin(&self) -> Option<String> {
        self.sessions
            .iter()
            .rev()
            .find(|s| s.life == Life::Live)
            .map(|s| s.token.clone())
    }

    pub fn key_dead(&self, k: &Key) -> bool {
        if k.life == Life::Dead {
            return true;
        }
        match k.role {
            Some((r, deletions)) => self.roles.get(&r).map(|x| x.1).unwrap_or(0) > deletions,
            None => false,
        }
    }

    /// A change answered `ok` (2xx) sets `alias` to `state`; answered with an error, it may
    /// have.
    pub fn cred_change(&mut self, alias: &str, state: Option<String>, ok: bool) {
        let states = self.creds.entry(alias.to_string()).or_insert(vec![None]);
        self.stale_creds
            .entry(alias.to_string())
            .or_default()
            .extend(states.iter().cloned());
        if ok {
            *states = vec![state];
        } else if !states.contains(&state) {
            states.push(state);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub enum Op {
    Login,
    Logout,
    /// Use a session that was logged out (or the oldest one).
    UseOldSession,
    CreateCred(usize),
    UpdateCred(usize),
    DeleteCred(usize),
    CreateRole(usize),
    DeleteRole(usize),
    /// Create a key of `executor` (`None`) or of a custom role.
    CreateKey(Option<usize>),
    RevokeKey(usize),
    Execute(usize, usize),
    /// The same through the pass-through proxy (`/proxy/{alias}/…`, a streamed exchange).
    Proxy(usize, usize),
    /// Execute with a key that must not work (revoked, role deleted), if there is one.
    ExecuteDead(usize),
    Tick(u64),
    Heal,
}

/// Each operation and its weight: the mix [`ops_from_seed`] draws from (the native test's
/// proptest strategy uses the same weights).
pub const OP_WEIGHTS: [(&str, u32); 15] = [
    ("login", 1),
    ("logout", 1),
    ("use_old_session", 1),
    ("create_cred", 3),
    ("update_cred", 2),
    ("delete_cred", 1),
    ("create_role", 1),
    ("delete_role", 1),
    ("create_key", 3),
    ("revoke_key", 2),
    ("execute", 5),
    ("proxy", 2),
    ("execute_dead", 2),
    ("tick", 1),
    ("heal", 1),
];

/// splitmix64: the steps of a seed are the same on every platform.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// `steps` operations drawn from `seed` with [`OP_WEIGHTS`] (for executors without proptest:
/// the worker's test route). Deterministic: a printed seed replays.
pub fn ops_from_seed(seed: u64, steps: usize) -> Vec<Op> {
    let mut d = Dice(seed ^ 0x5EED_F417);
    let total: u32 = OP_WEIGHTS.iter().map(|w| w.1).sum();
    (0..steps)
        .map(|_| {
            let mut pick = d.below(u64::from(total)) as u32;
            let mut name = "heal";
            for (n, w) in OP_WEIGHTS {
                if pick < w {
                    name = n;
                    break;
                }
                pick -= w;
            }
            let (k, a, r) = (
                d.below(8) as usize,
                d.below(3) as usize,
                d.below(2) as usize,
            );
            match name {
                "login" => Op::Login,
                "logout" => Op::Logout,
                "use_old_session" => Op::UseOldSession,
                "create_cred" => Op::CreateCred(a),
                "update_cred" => Op::UpdateCred(a),
                "delete_cred" => Op::DeleteCred(a),
                "create_role" => Op::CreateRole(r),
                "delete_role" => Op::DeleteRole(r),
                "create_key" => Op::CreateKey((d.below(2) == 0).then_some(r)),
                "revoke_key" => Op::RevokeKey(k),
                "execute" => Op::Execute(k, a),
                "proxy" => Op::Proxy(k, a),
                "execute_dead" => Op::ExecuteDead(k),
                "tick" => Op::Tick(1 + d.below(119_999)),
                _ => Op::Heal,
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The world
// ---------------------------------------------------------------------------------------------

/// The app settings a case varies (the rest are fixed by [`World::with_upstream`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Setup {
    /// [`Config::key_record_reuse_secs`]: 0 (the default) reads a key's record on every
    /// request; more reuses a verified key's record, unread, that long (the worker's
    /// `KEY_RECORD_REUSE_SECONDS`, decision 0117) — revocation, expiry and a custom role are
    /// still checked on every request.
    pub key_record_reuse_secs: u64,
}

/// One case of the property: what it runs, and on what.
#[derive(Clone, Copy, Debug)]
pub struct Case<'a> {
    /// Names the stores in the failure message.
    pub label: &'a str,
    /// The faults' seed ([`FaultConfig::mixed`]).
    pub seed: u64,
    pub ops: &'a [Op],
    pub setup: Setup,
}

/// One deployment under faults, and the model of what it may hold.
pub struct World {
    pub app: App,
    pub schedule: Arc<FaultSchedule>,
    pub clock: Arc<ManualClock>,
    pub upstream: Arc<Recorder>,
    /// The credentials' `base_url` (scheme and authority, no path).
    pub base_url: String,
    pub model: Model,
    /// What happened, for the failure message.
    pub trail: Vec<String>,
}

/// One reply, with the faults its request met.
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
    pub json: Value,
    pub faults: Vec<Injected>,
}

impl World {
    /// A deployment over `kv` and `sessions` (empty), the faults of `config` between it and
    /// them, logged in once (faults off for that login). `clock` is the app's (virtual) time,
    /// starting at [`START_MS`]; stores that keep time of their own (TTLs) should share it
    /// where they can (the native ones do; Workers KV cannot).
    pub async fn new(
        kv: Arc<dyn KvStore>,
        sessions: Arc<dyn SessionStore>,
        clock: Arc<ManualClock>,
        config: FaultConfig,
    ) -> Result<World, String> {
        let upstream = Arc::new(Recorder::default());
        World::with_upstream(
            kv,
            sessions,
            clock,
            (upstream, DEFAULT_UPSTREAM),
            config,
            Setup::default(),
        )
        .await
    }

    /// [`World::new`] with the upstream `upstream` at `base_url` (a forwarding [`Recorder`] and
    /// a loopback server: `http://127.0.0.1:<port>`, which turns on
    /// `allow_loopback_upstreams`) and the app settings of `setup`.
    pub async fn with_upstream(
        kv: Arc<dyn KvStore>,
        sessions: Arc<dyn SessionStore>,
        clock: Arc<ManualClock>,
        (upstream, base_url): (Arc<Recorder>, &str),
        config: FaultConfig,
        setup: Setup,
    ) -> Result<World, String> {
        let schedule = FaultSchedule::new(config, Some(Arc::new(VirtualSleeper(clock.clone()))));
        schedule.set_enabled(false);
        let ports = faulty_ports(
            Ports {
                kv,
                sessions,
                fetcher: upstream.clone(),
                clock: clock.clone(),
                audit_sink: None,
                audit: None,
            },
            &schedule,
        );
        let config = Config {
            admin_password_hash: Some(
                crypto::hash_password(PASSWORD, 1000).map_err(|e| format!("hash: {e}"))?,
            ),
            allow_weak_password_hash_for_tests: true,
            login_max_attempts: 1_000_000,
            login_max_attempts_per_user: 1_000_000,
            allow_loopback_upstreams: base_url.starts_with("http://"),
            key_record_reuse_secs: setup.key_record_reuse_secs,
            ..Config::default()
        };
        let (master, _) = MasterSecret::generate_raw();
        let app = App::open(config, ports, &master)
            .await
            .map_err(|e| format!("App::open: {e}"))?;
        let mut world = World {
            app,
            schedule,
            clock,
            upstream,
            base_url: base_url.trim_end_matches('/').to_string(),
            model: Model::default(),
            trail: Vec::new(),
        };
        world.login().await?;
        if world.model.admin().is_none() {
            return Err(world.fail("the first login failed".into()));
        }
        world.schedule.take_log();
        world.schedule.set_enabled(true);
        Ok(world)
    }

    /// One request through the app (`/proxy/…` streamed through `App::serve`, the rest
    /// through `App::handle`); every reply is checked clean.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> Result<Reply, String> {
        let mut request = http::Request::builder().method(method).uri(path);
        if let Some(t) = token {
            request = request.header("authorization", format!("Bearer {t}"));
        }
        let body = if body.is_null() {
            Bytes::new()
        } else {
            request = request.header("content-type", "application/json");
            Bytes::from(body.to_string())
        };
        let request = request
            .body(body)
            .map_err(|e| format!("request {method} {path}: {e}"))?;
        let started = self.clock.now_ms();
        let (status, headers, body) = if path.starts_with("/proxy/") {
            // the pass-through proxy is served streamed (`App::serve`), read whole here
            let request = request.map(crate::body::Body::full);
            let response = self.app.serve(request, None).await;
            let (parts, body) = response.into_parts();
            let body = body.collect_capped(usize::MAX).await;
            (parts.status, parts.headers, body.map(|b| b.to_vec()))
        } else {
            let response = self.app.handle(request).await;
            let (parts, body) = response.into_parts();
            (parts.status, parts.headers, Ok(body.to_vec()))
        };
        let took = self.clock.now_ms() - started;
        let faults = self.schedule.take_log();
        let status = status.as_u16();
        // a streamed body cut by a failure: what the client got, marked
        let body = body.unwrap_or_else(|_| b"<body cut>".to_vec());
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        self.trail.push(format!(
            "{method} {path} -> {status} {} faults {:?}",
            json["error"]["code"],
            faults
                .iter()
                .map(|f| format!("{:?}.{}({}):{:?}", f.port, f.op, f.key, f.fault))
                .collect::<Vec<_>>()
        ));
        let reply = Reply {
            status,
            headers,
            body,
            json,
            faults,
        };
        self.check_clean(&reply, took)?;
        Ok(reply)
    }

    /// A failed property: `what`, then the steps so far (the seed is the first line).
    pub fn fail(&self, what: String) -> String {
        format!("{what}\n steps:\n  {}", self.trail.join("\n  "))
    }

    /// Every reply: clean, bounded, leaks nothing.
    fn check_clean(&self, r: &Reply, took: u64) -> Result<(), String> {
        if took > DEADLINE_MS {
            return Err(self.fail(format!("a request took {took} ms of virtual time")));
        }
        if r.status == 500 || (r.status >= 500 && ![502, 503, 504].contains(&r.status)) {
            return Err(self.fail(format!("status {} is not a dependency failure", r.status)));
        }
        if r.status >= 400 && !r.json["error"]["code"].is_string() {
            return Err(self.fail(format!(
                "error reply {} is not a JSON error: {:?}",
                r.status,
                String::from_utf8_lossy(&r.body)
            )));
        }
        if (r.status == 503 || r.status == 429) && !r.headers.contains_key("retry-after") {
            return Err(self.fail(format!(
                "{} {} without Retry-After",
                r.status, r.json["error"]["code"]
            )));
        }
        let text = String::from_utf8_lossy(&r.body);
        for secret in &self.model.secrets {
            if text.contains(secret.as_str()) {
                return Err(self.fail(format!("a reply carries the secret {secret}")));
            }
        }
        for k in &self.model.keys {
            if text.contains(k.secret.as_str()) {
                return Err(self.fail("a reply carries an API key it did not issue".into()));
            }
        }
        for s in &self.model.sessions {
            if text.contains(s.token.as_str()) {
                return Err(self.fail("a reply carries a session token it did not issue".into()));
            }
        }
        if r.status >= 400 {
            for detail in [
                PASSWORD,
                "/tmp",
                "faults17-",
                "panicked",
                "src/",
                ".rs:",
                "Error {",
                "io error",
            ] {
                if text.contains(detail) {
                    return Err(self.fail(format!("an error reply carries {detail:?}: {text}")));
                }
            }
        }
        Ok(())
    }

    /// The session-store checks this step met that failed (error, hang, lost reply).
    fn failed_checks(r: &Reply) -> Vec<&Injected> {
        r.faults
            .iter()
            .filter(|f| {
                f.port == FaultPort::Sessions
                    && f.failed()
                    && ["touch_session", "hit", "is_marked"].contains(&f.op)
            })
            .collect()
    }

    pub async fn login(&mut self) -> Result<(), String> {
        let r = self
            .send(
                "POST",
                "/login",
                None,
                json!({"username": "admin", "password": PASSWORD}),
            )
            .await?;
        if r.status == 200 {
            let token = self.text(&r.json, "token")?;
            self.model.sessions.push(Session {
                token,
                life: Life::Live,
            });
        }
        Ok(())
    }

    /// The admin token; logs in first when no session is alive.
    async fn admin(&mut self) -> Result<Option<String>, String> {
        if self.model.admin().is_none() {
            self.login().await?;
        }
        Ok(self.model.admin())
    }

    /// An admin request; a 401 on a live session must be explained by a fault.
    async fn admin_send(
        &mut self,
        method: &str,
        path: &str,
        body: Value,
    ) -> Result<Option<Reply>, String> {
        let Some(token) = self.admin().await? else {
            return Ok(None);
        };
        let r = self.send(method, path, Some(&token), body).await?;
        if r.status == 401 && r.faults.is_empty() {
            return Err(self.fail(format!("a live admin session got 401 on {method} {path}")));
        }
        if (200..300).contains(&r.status) && !Self::failed_checks(&r).is_empty() {
            return Err(self.fail(format!(
                "{method} {path} answered {} although its session check failed",
                r.status
            )));
        }
        Ok(Some(r))
    }

    /// One step of the property, checked.
    pub async fn step(&mut self, op: &Op) -> Result<(), String> {
        match op {
            Op::Login => self.login().await?,
            Op::Logout => {
                let Some(token) = self.model.admin() else {
                    return Ok(());
                };
                let r = self
                    .send("POST", "/logout", Some(&token), Value::Null)
                    .await?;
                let s = self
                    .model
                    .sessions
                    .iter_mut()
                    .find(|s| s.token == token)
                    .ok_or("the logged-out session is in the model")?;
                s.life = if (200..300).contains(&r.status) {
                    Life::Dead
                } else {
                    Life::Maybe
                };
            }
            Op::UseOldSession => {
                let Some(old) = self
                    .model
                    .sessions
                    .iter()
                    .find(|s| s.life == Life::Dead)
                    .cloned()
                else {
                    return Ok(());
                };
                let r = self
                    .send("GET", "/v1/credentials", Some(&old.token), Value::Null)
                    .await?;
                if (200..300).contains(&r.status) {
                    return Err(self.fail("a logged-out session worked again".into()));
                }
            }
            Op::CreateCred(a) | Op::UpdateCred(a) => {
                let alias = format!("c{a}");
                let secret = self.model.fresh("SECRET");
                self.model.secrets.push(secret.clone());
                let Some(r) = (if matches!(op, Op::CreateCred(_)) {
                    self.admin_send(
                        "POST",
                        "/v1/credentials",
                        json!({"alias": alias, "type": "api_key", "data": {"key": secret},
                               "policy": {"allowed_hosts": [self.upstream_host()]},
                               "base_url": self.base_url}),
                    )
                    .await?
                } else {
                    self.admin_send(
                        "PUT",
                        &format!("/v1/credentials/{alias}"),
                        json!({"secret": secret}),
                    )
                    .await?
                }) else {
                    return Ok(());
                };
                let ok = (200..300).contains(&r.status);
                // a 409 (alias taken) or 404 (no such credential) changes nothing
                if ok || r.status >= 500 || r.faults.iter().any(|f| f.failed()) {
                    self.model.cred_change(&alias, Some(secret), ok);
                }
            }
            Op::DeleteCred(a) => {
                let alias = format!("c{a}");
                let Some(r) = self
                    .admin_send("DELETE", &format!("/v1/credentials/{alias}"), Value::Null)
                    .await?
                else {
                    return Ok(());
                };
                let ok = (200..300).contains(&r.status);
                if ok || r.status >= 500 || r.faults.iter().any(|f| f.failed()) {
                    self.model.cred_change(&alias, None, ok);
                }
            }
            Op::CreateRole(i) => {
                let Some(r) = self.admin_send(
                    "POST",
                    "/v1/roles",
                    json!({"name": format!("r{i}"), "permissions": ["execute"], "scopes": ["c*"]}),
                ).await? else {
                    return Ok(());
                };
                let ok = (200..300).contains(&r.status);
                let entry = self.model.roles.entry(*i).or_insert((vec![false], 0));
                if ok {
                    entry.0 = vec![true];
                } else if (r.status >= 500 || r.faults.iter().any(|f| f.failed()))
                    && !entry.0.contains(&true)
                {
                    entry.0.push(true);
                }
            }
            Op::DeleteRole(i) => {
                let Some(r) = self
                    .admin_send("DELETE", &format!("/v1/roles/r{i}"), Value::Null)
                    .await?
                else {
                    return Ok(());
                };
                let ok = (200..300).contains(&r.status);
                let entry = self.model.roles.entry(*i).or_insert((vec![false], 0));
                if ok {
                    entry.0 = vec![false];
                    entry.1 += 1;
                } else if (r.status >= 500 || r.faults.iter().any(|f| f.failed()))
                    && !entry.0.contains(&false)
                {
                    entry.0.push(false);
                }
            }
            Op::CreateKey(role) => {
                let name = self.model.fresh("k");
                let role_name = role.map_or("executor".to_string(), |i| format!("r{i}"));
                let Some(r) = self
                    .admin_send("POST", "/v1/keys", json!({"name": name, "role": role_name}))
                    .await?
                else {
                    return Ok(());
                };
                if r.status == 201 {
                    let deletions =
                        role.map(|i| (i, self.model.roles.get(&i).map(|x| x.1).unwrap_or(0)));
                    self.model.keys.push(Key {
                        id: self.text(&r.json, "id")?,
                        secret: self.text(&r.json, "key")?,
                        life: Life::Live,
                        role: deletions,
                    });
                }
            }
            Op::RevokeKey(k) => {
                let live: Vec<usize> = (0..self.model.keys.len())
                    .filter(|&i| self.model.keys[i].life != Life::Dead)
                    .collect();
                if live.is_empty() {
                    return Ok(());
                }
                let i = live[k % live.len()];
                let id = self.model.keys[i].id.clone();
                let Some(r) = self
                    .admin_send("DELETE", &format!("/v1/keys/{id}"), Value::Null)
                    .await?
                else {
                    return Ok(());
                };
                let key = &mut self.model.keys[i];
                if (200..300).contains(&r.status) {
                    key.life = Life::Dead;
                } else if r.status >= 500 || r.faults.iter().any(|f| f.failed()) {
                    key.life = Life::Maybe;
                }
            }
            Op::Execute(k, a) => {
                if self.model.keys.is_empty() {
                    return Ok(());
                }
                let key = self.model.keys[k % self.model.keys.len()].clone();
                self.execute(&key, &format!("c{a}")).await?;
            }
            Op::Proxy(k, a) => {
                if self.model.keys.is_empty() {
                    return Ok(());
                }
                let key = self.model.keys[k % self.model.keys.len()].clone();
                self.call(&key, &format!("c{a}"), true).await?;
            }
            Op::ExecuteDead(k) => {
                let dead: Vec<Key> = self
                    .model
                    .keys
                    .iter()
                    .filter(|key| self.model.key_dead(key))
                    .cloned()
                    .collect();
                if dead.is_empty() {
                    return Ok(());
                }
                let key = dead[k % dead.len()].clone();
                self.execute(&key, "c0").await?;
            }
            Op::Tick(ms) => self.clock.advance(*ms),
            Op::Heal => self.heal().await?,
        }
        Ok(())
    }

    /// Execute through `alias` with `key`, and check the answer against the model.
    pub async fn execute(&mut self, key: &Key, alias: &str) -> Result<u16, String> {
        self.call(key, alias, false).await
    }

    /// An execute (or a proxied request) with `key` through `alias`, checked against the model.
    async fn call(&mut self, key: &Key, alias: &str, proxy: bool) -> Result<u16, String> {
        let seen = self.upstream.sent().len();
        let r = if proxy {
            self.send(
                "GET",
                &format!("/proxy/{alias}/x"),
                Some(&key.secret),
                Value::Null,
            )
            .await?
        } else {
            self.send(
                "POST",
                "/v1/execute",
                Some(&key.secret),
                json!({"credential": alias, "method": "GET", "url": format!("{}/x", self.base_url)}),
            )
            .await?
        };
        let sent: Vec<String> = self.upstream.sent()[seen..].to_vec();
        // A deleted role reaches other locations as KV does (up to a minute, like a credential
        // change: decision 0034; only key and session revocations are immediate): a key of a
        // deleted role may work on a stale read of its role record, never otherwise.
        let stale_role = key.life != Life::Dead
            && r.faults
                .iter()
                .any(|f| f.fault == Fault::StaleRead && f.key.starts_with("role:"));
        if self.model.key_dead(key)
            && !stale_role
            && (!sent.is_empty() || (200..300).contains(&r.status))
        {
            return Err(self.fail(format!(
                "a revoked key (or one of a deleted role) was used: {} and {} upstream call(s)",
                r.status,
                sent.len()
            )));
        }
        if (200..300).contains(&r.status) && !Self::failed_checks(&r).is_empty() {
            return Err(self.fail(format!(
                "execute answered {} although its session-store check failed",
                r.status
            )));
        }
        let mut allowed = self.model.creds.get(alias).cloned().unwrap_or(vec![None]);
        allowed.extend(
            self.model
                .stale_creds
                .get(alias)
                .cloned()
                .unwrap_or_default(),
        );
        for auth in &sent {
            let secret = auth.strip_prefix("Bearer ").unwrap_or(auth);
            if !allowed.contains(&Some(secret.to_string())) {
                return Err(self.fail(format!(
                    "execute through {alias} sent {secret:?}; the model allows {allowed:?}"
                )));
            }
        }
        if r.status == 200 && sent.len() != 1 {
            return Err(self.fail(format!(
                "execute answered 200 after {} upstream calls",
                sent.len()
            )));
        }
        if (200..300).contains(&r.status) && key.life == Life::Maybe {
            // the revocation did not land: the key is live
            if let Some(k) = self.model.keys.iter_mut().find(|k| k.id == key.id) {
                k.life = Life::Live;
            }
        }
        Ok(r.status)
    }

    /// Faults off: every acknowledged change is there, every errored one whole or absent.
    pub async fn heal(&mut self) -> Result<(), String> {
        self.schedule.set_enabled(false);
        self.schedule.take_log();
        // the faults clear and KV has propagated everywhere (a stale read is at most a minute
        // old, FaultConfig::stale_window_ms)
        self.clock.advance(FaultConfig::mixed(0).stale_window_ms);
        self.model.stale_creds.clear();
        let Some(_) = self.admin().await? else {
            return Err(self.fail("no login with faults off".into()));
        };
        // sessions: a live one works, a dead one does not, a maybe one is decided
        for i in 0..self.model.sessions.len() {
            let s = self.model.sessions[i].clone();
            let r = self
                .send("GET", "/v1/credentials", Some(&s.token), Value::Null)
                .await?;
            let works = r.status == 200;
            match (s.life, works) {
                (Life::Live, false) => {
                    return Err(self.fail(format!("a live session got {}", r.status)))
                }
                (Life::Dead, true) => return Err(self.fail("a logged-out session works".into())),
                (Life::Maybe, _) => {
                    self.model.sessions[i].life = if works { Life::Live } else { Life::Dead }
                }
                _ => {}
            }
        }
        let Some(admin) = self.admin().await? else {
            return Err(self.fail("no login with faults off".into()));
        };
        // credentials: the listing is whole and agrees with the model
        let r = self
            .send("GET", "/v1/credentials", Some(&admin), Value::Null)
            .await?;
        if r.status != 200 {
            return Err(self.fail(format!("listing credentials with faults off: {}", r.status)));
        }
        let listed: Vec<String> = self
            .array(&r.json, "credentials")?
            .iter()
            .map(|c| self.text(c, "alias"))
            .collect::<Result<_, _>>()?;
        // a key that can use every credential, to read each one's secret back
        let name = self.model.fresh("heal");
        let r = self
            .send(
                "POST",
                "/v1/keys",
                Some(&admin),
                json!({"name": name, "role": "executor"}),
            )
            .await?;
        if r.status != 201 {
            return Err(self.fail(format!("creating a key with faults off: {}", r.status)));
        }
        let probe = Key {
            id: self.text(&r.json, "id")?,
            secret: self.text(&r.json, "key")?,
            life: Life::Live,
            role: None,
        };
        self.model.keys.push(probe.clone());
        for a in 0..3 {
            let alias = format!("c{a}");
            let states = self.model.creds.get(&alias).cloned().unwrap_or(vec![None]);
            let present = listed.contains(&alias);
            if present && !states.iter().any(|s| s.is_some()) {
                return Err(self.fail(format!("{alias} is listed; the model says it was deleted")));
            }
            if !present && !states.contains(&None) {
                return Err(self.fail(format!("{alias} is missing; it was created (2xx)")));
            }
            if present {
                let seen = self.upstream.sent().len();
                let status = self.execute(&probe, &alias).await?;
                if status != 200 {
                    return Err(self.fail(format!(
                        "execute through listed {alias} with faults off: {status}"
                    )));
                }
                let auth = self.upstream.sent().get(seen).cloned().unwrap_or_default();
                let secret = auth.strip_prefix("Bearer ").unwrap_or(&auth).to_string();
                self.model.creds.insert(alias, vec![Some(secret)]);
            } else {
                let r = self
                    .send(
                        "GET",
                        &format!("/v1/credentials/{alias}"),
                        Some(&admin),
                        Value::Null,
                    )
                    .await?;
                if r.status != 404 {
                    return Err(self.fail(format!(
                        "{alias} is not listed but its detail is {}",
                        r.status
                    )));
                }
                self.model.creds.insert(alias, vec![None]);
            }
        }
        // roles and keys: no record refused (nothing half-written), the model agrees
        let r = self
            .send("GET", "/v1/roles", Some(&admin), Value::Null)
            .await?;
        if r.status != 200 || r.json["refused"].as_array().is_some_and(|a| !a.is_empty()) {
            return Err(self.fail(format!("roles with faults off: {} {}", r.status, r.json)));
        }
        let roles: Vec<String> = self
            .array(&r.json, "roles")?
            .iter()
            .filter_map(|x| x["name"].as_str().map(str::to_string))
            .collect();
        let model_roles: Vec<(usize, Vec<bool>)> = self
            .model
            .roles
            .iter()
            .map(|(i, (states, _))| (*i, states.clone()))
            .collect();
        for (i, states) in model_roles {
            let present = roles.contains(&format!("r{i}"));
            if !states.contains(&present) {
                return Err(self.fail(format!(
                    "role r{i} present={present}; the model allows {states:?}"
                )));
            }
            if let Some(entry) = self.model.roles.get_mut(&i) {
                entry.0 = vec![present];
            }
        }
        let r = self
            .send("GET", "/v1/keys", Some(&admin), Value::Null)
            .await?;
        if r.status != 200 || r.json["refused"].as_array().is_some_and(|a| !a.is_empty()) {
            return Err(self.fail(format!("keys with faults off: {} {}", r.status, r.json)));
        }
        let ids: Vec<String> = self
            .array(&r.json, "keys")?
            .iter()
            .map(|k| self.text(k, "id"))
            .collect::<Result<_, _>>()?;
        // every key: listed iff it works; a live one works where its role allows, a dead one
        // never
        for i in 0..self.model.keys.len() {
            let key = self.model.keys[i].clone();
            let alias = if listed.is_empty() {
                "c0".to_string()
            } else {
                listed[i % listed.len()].clone()
            };
            let status = self.execute(&key, &alias).await?;
            let dead = self.model.key_dead(&key);
            let role_gone = key
                .role
                .is_some_and(|(r, _)| !roles.contains(&format!("r{r}")));
            if key.life == Life::Live && !dead && !role_gone && !listed.is_empty() && status != 200
            {
                return Err(self.fail(format!("a live key got {status} with faults off")));
            }
            let is_listed = ids.contains(&key.id);
            if key.life == Life::Dead && is_listed {
                return Err(self.fail("a revoked key is still listed".into()));
            }
            if key.life == Life::Live && !is_listed {
                return Err(self.fail("a live key is not listed".into()));
            }
            if key.life == Life::Maybe {
                // a revocation answered with an error: the key works (and is listed) or it is
                // refused for good; a record left behind is removed by a retry of the DELETE
                if status == 200 {
                    if !is_listed {
                        return Err(self.fail("a key that is not listed works".into()));
                    }
                    self.model.keys[i].life = Life::Live;
                } else {
                    self.model.keys[i].life = Life::Dead;
                    if is_listed {
                        let r = self
                            .send(
                                "DELETE",
                                &format!("/v1/keys/{}", key.id),
                                Some(&admin),
                                Value::Null,
                            )
                            .await?;
                        if r.status != 204 && r.status != 404 {
                            return Err(self.fail(format!("retrying a revocation: {}", r.status)));
                        }
                    }
                }
            }
        }
        self.schedule.take_log();
        self.schedule.set_enabled(true);
        Ok(())
    }

    /// The host of [`World::base_url`] (what a credential's policy allows).
    fn upstream_host(&self) -> String {
        let authority = self
            .base_url
            .split_once("://")
            .map_or(self.base_url.as_str(), |x| x.1);
        authority
            .rsplit_once(':')
            .map_or(authority, |x| x.0)
            .to_string()
    }

    /// `v[field]` as a string, or a failure naming it.
    fn text(&self, v: &Value, field: &str) -> Result<String, String> {
        v[field]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| self.fail(format!("no string {field:?} in {v}")))
    }

    /// `v[field]` as an array, or a failure naming it.
    fn array<'v>(&self, v: &'v Value, field: &str) -> Result<&'v Vec<Value>, String> {
        v[field]
            .as_array()
            .ok_or_else(|| self.fail(format!("no array {field:?} in {v}")))
    }
}

/// One case: a fresh world over `kv` and `sessions` (empty stores) and `clock` (see
/// [`World::new`]) with the app settings of `case.setup`, the faults of
/// [`FaultConfig::mixed`]`(case.seed)`, every step of `case.ops` checked, then a final heal.
pub async fn run(
    kv: Arc<dyn KvStore>,
    sessions: Arc<dyn SessionStore>,
    clock: Arc<ManualClock>,
    case: Case<'_>,
) -> Result<(), String> {
    let upstream = Arc::new(Recorder::default());
    run_with_upstream(kv, sessions, clock, (upstream, DEFAULT_UPSTREAM), case).await
}

/// [`run`] with an upstream of the caller's: a forwarding [`Recorder`] and its base URL (see
/// [`World::with_upstream`]).
pub async fn run_with_upstream(
    kv: Arc<dyn KvStore>,
    sessions: Arc<dyn SessionStore>,
    clock: Arc<ManualClock>,
    upstream: (Arc<Recorder>, &str),
    case: Case<'_>,
) -> Result<(), String> {
    let config = FaultConfig::mixed(case.seed);
    let mut world = World::with_upstream(kv, sessions, clock, upstream, config, case.setup).await?;
    world.trail.push(format!(
        "store {}, seed {}, key record reuse {} s",
        case.label, case.seed, case.setup.key_record_reuse_secs
    ));
    for op in case.ops {
        world.trail.push(format!("# {op:?}"));
        world.step(op).await?;
    }
    world.heal().await
}
