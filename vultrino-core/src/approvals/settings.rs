//! The deployment's approval settings, as the request pipeline carries them (kept apart from
//! the gate, so the pipeline can hold them without depending on the gate's file).

/// The deployment's approval settings, as the pipeline carries them.
#[derive(Clone, Copy, Default)]
pub(crate) struct Settings<'a> {
    pub ttl_ms: u64,
    pub sleeper: Option<&'a dyn crate::ports::Sleeper>,
    pub poll_ms: u64,
    /// Who hears of a new approval ([`notify`](super::notify::notify)).
    pub notify: Option<&'a crate::approval_webhook::ApprovalNotify>,
    /// Loopback webhooks allowed (tests), as loopback upstreams are.
    pub allow_loopback: bool,
}
