//! Fault-injecting wrappers for every port (feature `testkit`): [`FaultyKv`],
//! [`FaultySessions`], [`FaultyFetcher`] and [`FaultyClock`] wrap any implementation and, by a
//! **seeded** schedule ([`FaultSchedule`]), make some of its calls misbehave the way a real
//! dependency does: errors, delays, hangs past the caller's timeout, stale reads (KV), replies
//! lost after the side effect happened (the write landed, the caller saw an error) and clock
//! jumps. Decision 0107 (docs/decisions/0107-fault-injecting-ports.md) says what the core
//! promises under these faults; [`fault_property`](super::fault_property) checks it, over the
//! native stores (`backend-local/tests/faults.rs`) and inside workerd (decision 0116).
//!
//! - One schedule is shared by all the wrappers of a deployment: the same seed gives the same
//!   faults for the same sequence of port calls, so a failing case replays.
//! - Every fault injected is logged ([`FaultSchedule::take_log`]): a test can tell which
//!   request met which fault (and on which key), and so which answers are allowed.
//! - [`FaultSchedule::set_enabled`] turns faults off ("the fault clears") without losing the
//!   wrapped state: a test then reads back what was acknowledged.
//! - Time: delays and hangs wait on a [`Sleeper`] (tokio's paused clock in tests, so a
//!   30-second hang costs no wall time). Without one they are skipped and a hang is an error at
//!   once. A hang is bounded: after `hang_ms` the call fails as the platform's own timeout would
//!   (Workers KV and Durable Object calls do end); the core has no store timeout of its own.
//!
//! Wasm-clean: no tokio, no threads, no `std::time`.

// On wasm32 the ports are not `Send` (one isolate, one thread: `MaybeSend`), yet `Ports` holds
// them in `Arc`s like everywhere else in the core.
#![cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use crate::body::Body;
use crate::error::{Code, Error, ErrorKind, Result};
use crate::ports::{
    approval_rules, Clock, FetchOptions, Fetcher, Hit, KvEntry, KvStore, ListOptions, ListPage,
    PutOptions, SessionRecord, SessionStore, Sleeper, StreamOptions,
};

/// Which port a fault was injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPort {
    Kv,
    Sessions,
    Fetcher,
    Clock,
}

/// One misbehaviour of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The call fails at once and has no effect (503 of the store, connection refused upstream).
    Error,
    /// The call works, after this many milliseconds.
    Delay(u64),
    /// The call does not answer before the caller's (or the platform's) timeout: it fails
    /// after [`FaultConfig::hang_ms`] (a fetch: after its own `timeout_ms`), with no effect.
    Hang,
    /// The side effect happens, then the caller sees an error (a write that landed, a request
    /// the upstream received and answered, whose reply was lost).
    LostReply,
    /// A KV read returns the value the key had before its last write (another location's
    /// copy that has not caught up).
    StaleRead,
    /// The clock jumps forward by this many milliseconds (and stays there).
    ClockJump(u64),
}

/// One fault that was injected: where, on what, which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injected {
    pub port: FaultPort,
    /// The port method (`get`, `put`, `touch_session`, `fetch`, `now_ms`, …).
    pub op: &'static str,
    /// The KV key, session id, counter or marker key, or upstream authority (empty for the
    /// clock).
    pub key: String,
    pub fault: Fault,
}

impl Injected {
    /// Whether the caller saw this call fail (error, hang, lost reply).
    pub fn failed(&self) -> bool {
        matches!(self.fault, Fault::Error | Fault::Hang | Fault::LostReply)
    }
}

/// How often each fault happens, in calls per 1000 of the port's calls, and how big.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultConfig {
    pub seed: u64,
    pub error_per_mille: u32,
    pub delay_per_mille: u32,
    pub hang_per_mille: u32,
    pub lost_reply_per_mille: u32,
    /// KV reads only.
    pub stale_read_per_mille: u32,
    /// Per clock reading.
    pub clock_jump_per_mille: u32,
    /// Longest injected delay.
    pub max_delay_ms: u64,
    /// How long a hung store call lasts before it fails.
    pub hang_ms: u64,
    /// Largest clock jump.
    pub max_clock_jump_ms: u64,
    /// How long after a write a stale read may still return the value before it (Workers KV:
    /// up to a minute, decision 0034).
    pub stale_window_ms: u64,
}

impl FaultConfig {
    /// A mix of every fault at a few percent each (a clock jump of at most a minute).
    pub fn mixed(seed: u64) -> Self {
        FaultConfig {
            seed,
            error_per_mille: 40,
            delay_per_mille: 40,
            hang_per_mille: 10,
            lost_reply_per_mille: 30,
            stale_read_per_mille: 40,
            clock_jump_per_mille: 5,
            max_delay_ms: 2_000,
            hang_ms: 30_000,
            max_clock_jump_ms: 60_000,
            stale_window_ms: 60_000,
        }
    }

    /// No fault at all (a schedule that only logs nothing).
    pub fn none(seed: u64) -> Self {
        FaultConfig {
            seed,
            error_per_mille: 0,
            delay_per_mille: 0,
            hang_per_mille: 0,
            lost_reply_per_mille: 0,
            stale_read_per_mille: 0,
            clock_jump_per_mille: 0,
            max_delay_ms: 0,
            hang_ms: 0,
            max_clock_jump_ms: 0,
            stale_window_ms: 0,
        }
    }
}

struct ScheduleState {
    rng: u64,
    enabled: bool,
    log: Vec<Injected>,
    /// Forced faults for the next calls of a port, in order (regression tests name the exact
    /// fault they need instead of finding a seed).
    forced: Vec<Forced>,
}

/// A fault a test asked for ([`FaultSchedule::force`], [`FaultSchedule::force_on`]).
struct Forced {
    port: FaultPort,
    op: &'static str,
    /// Only calls on keys starting with this.
    key_prefix: String,
    /// Matching calls to let through first.
    skip: u32,
    fault: Fault,
}

/// The seeded schedule shared by the wrappers of one deployment.
pub struct FaultSchedule {
    config: FaultConfig,
    sleeper: Option<Arc<dyn Sleeper>>,
    state: Mutex<ScheduleState>,
}

/// What kind of call is asking (decides which faults apply).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Call {
    Read,
    KvRead,
    Write,
}

impl FaultSchedule {
    /// A schedule from `config`; `sleeper` times delays and hangs (see the module doc).
    pub fn new(config: FaultConfig, sleeper: Option<Arc<dyn Sleeper>>) -> Arc<Self> {
        Arc::new(FaultSchedule {
            config,
            sleeper,
            state: Mutex::new(ScheduleState {
                // splitmix64 of the seed, so seeds 0, 1, 2 … start far apart
                rng: config.seed ^ 0x9E37_79B9_7F4A_7C15,
                enabled: true,
                log: Vec::new(),
                forced: Vec::new(),
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, ScheduleState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Turn faults on or off. Off: every call goes straight through (forced faults too wait).
    pub fn set_enabled(&self, enabled: bool) {
        self.state().enabled = enabled;
    }

    /// Every fault injected since the last call, oldest first.
    pub fn take_log(&self) -> Vec<Injected> {
        std::mem::take(&mut self.state().log)
    }

    /// Make the next call of `op` on `port` (whatever the dice say) meet `fault`.
    pub fn force(&self, port: FaultPort, op: &'static str, fault: Fault) {
        self.force_on(port, op, "", 0, fault);
    }

    /// Make a call of `op` on `port` on a key starting with `key_prefix` meet `fault`, after
    /// `skip` such calls went through.
    pub fn force_on(
        &self,
        port: FaultPort,
        op: &'static str,
        key_prefix: &str,
        skip: u32,
        fault: Fault,
    ) {
        self.state().forced.push(Forced {
            port,
            op,
            key_prefix: key_prefix.to_string(),
            skip,
            fault,
        });
    }

    fn next(state: &mut ScheduleState) -> u64 {
        // splitmix64
        state.rng = state.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Roll the dice for one call; log and return the fault, if any.
    fn roll(&self, port: FaultPort, op: &'static str, key: &str, call: Call) -> Option<Fault> {
        let c = self.config;
        let mut state = self.state();
        if !state.enabled {
            return None;
        }
        let forced = state
            .forced
            .iter()
            .position(|f| f.port == port && f.op == op && key.starts_with(&f.key_prefix));
        let fault = if let Some(i) = forced {
            if state.forced[i].skip > 0 {
                state.forced[i].skip -= 1;
                None
            } else {
                Some(state.forced.remove(i).fault)
            }
        } else {
            let dice = (Self::next(&mut state) % 1000) as u32;
            let size = Self::next(&mut state);
            let mut edge = 0u32;
            let mut pick = |per_mille: u32, applies: bool| {
                if !applies {
                    return false;
                }
                let hit = dice >= edge && dice < edge.saturating_add(per_mille);
                edge = edge.saturating_add(per_mille);
                hit
            };
            if pick(c.error_per_mille, true) {
                Some(Fault::Error)
            } else if pick(c.delay_per_mille, true) {
                Some(Fault::Delay(1 + size % c.max_delay_ms.max(1)))
            } else if pick(c.hang_per_mille, true) {
                Some(Fault::Hang)
            } else if pick(c.lost_reply_per_mille, call == Call::Write) {
                Some(Fault::LostReply)
            } else if pick(c.stale_read_per_mille, call == Call::KvRead) {
                Some(Fault::StaleRead)
            } else {
                None
            }
        };
        if let Some(fault) = fault {
            state.log.push(Injected {
                port,
                op,
                key: key.to_string(),
                fault,
            });
        }
        fault
    }

    /// A clock reading: maybe a jump forward.
    fn roll_clock(&self) -> Option<u64> {
        let c = self.config;
        let mut state = self.state();
        if !state.enabled || c.clock_jump_per_mille == 0 {
            return None;
        }
        let dice = (Self::next(&mut state) % 1000) as u32;
        if dice >= c.clock_jump_per_mille {
            return None;
        }
        let jump = 1 + Self::next(&mut state) % c.max_clock_jump_ms.max(1);
        state.log.push(Injected {
            port: FaultPort::Clock,
            op: "now_ms",
            key: String::new(),
            fault: Fault::ClockJump(jump),
        });
        Some(jump)
    }

    async fn sleep(&self, ms: u64) {
        if let Some(s) = &self.sleeper {
            s.sleep(ms).await;
        }
    }

    /// Run the faults that come before a call: `Err` for an error or a hang (after the hang),
    /// `Ok(Some(fault))` for the ones applied after the call (lost reply, stale read).
    async fn before(
        &self,
        port: FaultPort,
        op: &'static str,
        key: &str,
        call: Call,
        hang_ms: u64,
    ) -> Result<Option<Fault>> {
        match self.roll(port, op, key, call) {
            None => Ok(None),
            Some(Fault::Error) => Err(injected_error(port, false)),
            Some(Fault::Delay(ms)) => {
                self.sleep(ms).await;
                Ok(None)
            }
            Some(Fault::Hang) => {
                self.sleep(hang_ms).await;
                Err(injected_error(port, true))
            }
            Some(f) => Ok(Some(f)),
        }
    }
}

/// The error a faulty port returns: what the real adapters return (no detail, no path).
fn injected_error(port: FaultPort, timed_out: bool) -> Error {
    match (port, timed_out) {
        (FaultPort::Fetcher, false) => {
            Error::new(ErrorKind::UpstreamFailed, "could not reach the upstream")
                .with_code(Code::UpstreamConnect)
        }
        (FaultPort::Fetcher, true) => Error::new(
            ErrorKind::UpstreamTimeout,
            "the upstream did not answer in time",
        ),
        (FaultPort::Sessions, _) => {
            Error::unavailable("session store (Durable Object) unavailable")
                .with_code(Code::SessionStoreUnavailable)
        }
        (_, _) => {
            Error::unavailable("credential store (KV) unavailable").with_code(Code::KvUnavailable)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// KvStore
// ---------------------------------------------------------------------------------------------

/// What a key held before its last write, and when that write was.
type Previous = HashMap<String, (Option<KvEntry>, u64)>;

/// A [`KvStore`] that misbehaves by a [`FaultSchedule`]. A stale read returns the entry a key
/// had before its last write through this wrapper, if that write is less than
/// [`FaultConfig::stale_window_ms`] old by `clock` (otherwise the current entry).
pub struct FaultyKv {
    inner: Arc<dyn KvStore>,
    schedule: Arc<FaultSchedule>,
    clock: Arc<dyn Clock>,
    previous: Mutex<Previous>,
}

impl FaultyKv {
    pub fn new(
        inner: Arc<dyn KvStore>,
        schedule: Arc<FaultSchedule>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        FaultyKv {
            inner,
            schedule,
            clock,
            previous: Mutex::new(HashMap::new()),
        }
    }

    fn previous(&self) -> MutexGuard<'_, Previous> {
        self.previous.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remember what `key` held before a write (for later stale reads).
    async fn remember(&self, key: &str) {
        if let Ok(before) = self.inner.get_with_metadata(key).await {
            let now = self.clock.now_ms();
            self.previous().insert(key.to_string(), (before, now));
        }
    }

    async fn read(&self, op: &'static str, key: &str) -> Result<Option<KvEntry>> {
        let hang = self.schedule.config.hang_ms;
        let after = self
            .schedule
            .before(FaultPort::Kv, op, key, Call::KvRead, hang)
            .await?;
        if after == Some(Fault::StaleRead) {
            crate::ports::kv_validate::key(key)?;
            let now = self.clock.now_ms();
            let window = self.schedule.config.stale_window_ms;
            if let Some((old, at)) = self.previous().get(key) {
                if now.saturating_sub(*at) < window {
                    return Ok(old.clone());
                }
            }
        }
        self.inner.get_with_metadata(key).await
    }
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
impl KvStore for FaultyKv {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        Ok(self.read("get", key).await?.map(|e| e.value))
    }

    async fn get_with_metadata(&self, key: &str) -> Result<Option<KvEntry>> {
        self.read("get_with_metadata", key).await
    }

    async fn put(&self, key: &str, value: Bytes, options: PutOptions) -> Result<()> {
        let hang = self.schedule.config.hang_ms;
        let after = self
            .schedule
            .before(FaultPort::Kv, "put", key, Call::Write, hang)
            .await?;
        self.remember(key).await;
        self.inner.put(key, value, options).await?;
        match after {
            Some(Fault::LostReply) => Err(injected_error(FaultPort::Kv, false)),
            _ => Ok(()),
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let hang = self.schedule.config.hang_ms;
        let after = self
            .schedule
            .before(FaultPort::Kv, "delete", key, Call::Write, hang)
            .await?;
        self.remember(key).await;
        self.inner.delete(key).await?;
        match after {
            Some(Fault::LostReply) => Err(injected_error(FaultPort::Kv, false)),
            _ => Ok(()),
        }
    }

    async fn list(&self, options: ListOptions) -> Result<ListPage> {
        let hang = self.schedule.config.hang_ms;
        let prefix = options.prefix.clone().unwrap_or_default();
        self.schedule
            .before(FaultPort::Kv, "list", &prefix, Call::Read, hang)
            .await?;
        self.inner.list(options).await
    }
}

// ---------------------------------------------------------------------------------------------
// SessionStore
// ---------------------------------------------------------------------------------------------

/// A [`SessionStore`] that misbehaves by a [`FaultSchedule`]. Every method can fail, be slow or
/// hang; the ones that change state can also lose their reply after the change.
pub struct FaultySessions {
    inner: Arc<dyn SessionStore>,
    schedule: Arc<FaultSchedule>,
}

impl FaultySessions {
    pub fn new(inner: Arc<dyn SessionStore>, schedule: Arc<FaultSchedule>) -> Self {
        FaultySessions { inner, schedule }
    }

    async fn before(&self, op: &'static str, key: &str, write: bool) -> Result<Option<Fault>> {
        let call = if write { Call::Write } else { Call::Read };
        let hang = self.schedule.config.hang_ms;
        self.schedule
            .before(FaultPort::Sessions, op, key, call, hang)
            .await
    }
}

/// The inner call's result, or the injected error once the inner call has happened.
fn lost<T>(after: Option<Fault>, port: FaultPort, result: Result<T>) -> Result<T> {
    let value = result?;
    match after {
        Some(Fault::LostReply) => Err(injected_error(port, false)),
        _ => Ok(value),
    }
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
impl SessionStore for FaultySessions {
    async fn create_session(&self, id: &str, record: SessionRecord) -> Result<()> {
        let after = self.before("create_session", id, true).await?;
        let r = self.inner.create_session(id, record).await;
        lost(after, FaultPort::Sessions, r)
    }

    async fn touch_session(&self, id: &str, now_ms: u64) -> Result<Option<SessionRecord>> {
        // a touch writes `last_seen_ms`: its reply can be lost too
        let after = self.before("touch_session", id, true).await?;
        let r = self.inner.touch_session(id, now_ms).await;
        lost(after, FaultPort::Sessions, r)
    }

    async fn revoke_session(&self, id: &str) -> Result<()> {
        let after = self.before("revoke_session", id, true).await?;
        let r = self.inner.revoke_session(id).await;
        lost(after, FaultPort::Sessions, r)
    }

    async fn hit(&self, key: &str, window_ms: u64, limit: u32, now_ms: u64) -> Result<Hit> {
        let after = self.before("hit", key, true).await?;
        let r = self.inner.hit(key, window_ms, limit, now_ms).await;
        lost(after, FaultPort::Sessions, r)
    }

    async fn reset_counter(&self, key: &str) -> Result<()> {
        let after = self.before("reset_counter", key, true).await?;
        let r = self.inner.reset_counter(key).await;
        lost(after, FaultPort::Sessions, r)
    }

    async fn mark(&self, key: &str, ttl_ms: u64, now_ms: u64) -> Result<bool> {
        let after = self.before("mark", key, true).await?;
        let r = self.inner.mark(key, ttl_ms, now_ms).await;
        lost(after, FaultPort::Sessions, r)
    }

    async fn is_marked(&self, key: &str, now_ms: u64) -> Result<bool> {
        self.before("is_marked", key, false).await?;
        self.inner.is_marked(key, now_ms).await
    }

    async fn approval(&self, op: approval_rules::Op) -> Result<approval_rules::Reply> {
        use approval_rules::Op;
        let write = !matches!(op, Op::Get { .. } | Op::List { .. });
        let after = self.before("approval", "", write).await?;
        let r = self.inner.approval(op).await;
        lost(after, FaultPort::Sessions, r)
    }
}

// ---------------------------------------------------------------------------------------------
// Fetcher
// ---------------------------------------------------------------------------------------------

/// A [`Fetcher`] that misbehaves by a [`FaultSchedule`]: connection refused (`Error`), a slow
/// upstream (`Delay`), one that never answers (`Hang`: the fetch fails with
/// `upstream_timeout` after its own timeout, as a real fetcher's does), and one that received
/// the request and acted on it but whose reply was lost (`LostReply`: `upstream_failed`).
pub struct FaultyFetcher {
    inner: Arc<dyn Fetcher>,
    schedule: Arc<FaultSchedule>,
}

impl FaultyFetcher {
    pub fn new(inner: Arc<dyn Fetcher>, schedule: Arc<FaultSchedule>) -> Self {
        FaultyFetcher { inner, schedule }
    }
}

fn authority<B>(request: &http::Request<B>) -> String {
    request
        .uri()
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_default()
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
impl Fetcher for FaultyFetcher {
    async fn fetch(
        &self,
        request: http::Request<Bytes>,
        options: FetchOptions,
    ) -> Result<http::Response<Bytes>> {
        let host = authority(&request);
        let after = self
            .schedule
            .before(
                FaultPort::Fetcher,
                "fetch",
                &host,
                Call::Write,
                options.timeout_ms,
            )
            .await?;
        let r = self.inner.fetch(request, options).await;
        lost(after, FaultPort::Fetcher, r)
    }

    async fn fetch_stream(
        &self,
        request: http::Request<Body>,
        options: StreamOptions,
    ) -> Result<http::Response<Body>> {
        let host = authority(&request);
        let after = self
            .schedule
            .before(
                FaultPort::Fetcher,
                "fetch_stream",
                &host,
                Call::Write,
                options.headers_timeout_ms,
            )
            .await?;
        let r = self.inner.fetch_stream(request, options).await;
        lost(after, FaultPort::Fetcher, r)
    }
}

// ---------------------------------------------------------------------------------------------
// Clock
// ---------------------------------------------------------------------------------------------

/// A [`Clock`] that jumps forward by a [`FaultSchedule`] (a host clock stepped by NTP, a
/// suspended VM waking up). It never goes back, so it keeps the `Clock` contract.
pub struct FaultyClock {
    inner: Arc<dyn Clock>,
    schedule: Arc<FaultSchedule>,
    offset_ms: AtomicU64,
}

impl FaultyClock {
    pub fn new(inner: Arc<dyn Clock>, schedule: Arc<FaultSchedule>) -> Self {
        FaultyClock {
            inner,
            schedule,
            offset_ms: AtomicU64::new(0),
        }
    }

    /// The sum of the jumps so far.
    pub fn jumped_ms(&self) -> u64 {
        self.offset_ms.load(Ordering::SeqCst)
    }
}

impl Clock for FaultyClock {
    fn now_ms(&self) -> u64 {
        if let Some(jump) = self.schedule.roll_clock() {
            self.offset_ms.fetch_add(jump, Ordering::SeqCst);
        }
        self.inner
            .now_ms()
            .saturating_add(self.offset_ms.load(Ordering::SeqCst))
    }
}

// ---------------------------------------------------------------------------------------------
// All four
// ---------------------------------------------------------------------------------------------

/// The four faulty ports of one deployment, sharing `schedule`.
pub fn faulty_ports(
    ports: crate::ports::Ports,
    schedule: &Arc<FaultSchedule>,
) -> crate::ports::Ports {
    crate::ports::Ports {
        kv: Arc::new(FaultyKv::new(
            ports.kv,
            schedule.clone(),
            ports.clock.clone(),
        )),
        sessions: Arc::new(FaultySessions::new(ports.sessions, schedule.clone())),
        fetcher: Arc::new(FaultyFetcher::new(ports.fetcher, schedule.clone())),
        clock: Arc::new(FaultyClock::new(ports.clock, schedule.clone())),
        audit_sink: ports.audit_sink,
        // `None` keeps the events in the (faulty) KV store; a store of its own is not wrapped.
        audit: ports.audit,
    }
}
