//! The deployment's approval settings, as the request pipeline carries them (kept apart from
//! the gate, so the pipeline can hold them without depending on the gate's file).

/// At most this many requests of one API key (its tokens included) are held by `Prefer:
/// wait=N` at once, per server process (per isolate on Workers); past it a request is answered
/// at once, as without `Prefer` (decision 0101).
pub const MAX_WAITERS_PER_KEY: usize = 4;
/// At most this many held requests at once, all keys together, per process (isolate).
pub const MAX_WAITERS: usize = 1000;

/// The deployment's approval settings, as the pipeline carries them.
#[derive(Clone, Copy, Default)]
pub(crate) struct Settings<'a> {
    pub ttl_ms: u64,
    pub sleeper: Option<&'a dyn crate::ports::Sleeper>,
    pub poll_ms: u64,
    /// The requests held by `Prefer: wait=N` now, per key ([`MAX_WAITERS_PER_KEY`]); the same
    /// counters as the proxy's concurrency caps. `None`: nothing is held.
    pub waiters: Option<&'a std::sync::Arc<crate::proxy_caps::ProxyCaps>>,
    /// Who hears of a new approval ([`notify`](super::notify::notify)).
    pub notify: Option<&'a crate::approval_webhook::ApprovalNotify>,
    /// Loopback webhooks allowed (tests), as loopback upstreams are.
    pub allow_loopback: bool,
    /// Runs the webhook's POST after the agent's 202 is handed over (the request's
    /// [`Background`](crate::ports::Background): tokio locally, `ctx.waitUntil` on Workers);
    /// `None`: the POST is awaited before the 202.
    pub background: Option<&'a dyn crate::ports::Background>,
}
