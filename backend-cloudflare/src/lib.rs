//! Vultrino Edge on Cloudflare Workers: a thin adapter around `vultrino-core`.
//!
//! No business logic lives here. The worker
//! - builds the core's ports over the platform: [`kv::WorkersKv`] (KV binding `CREDENTIALS`),
//!   [`sessions::DoSessions`] over the [`sessions::SessionDO`] Durable Object class (binding
//!   `SESSIONS`), [`fetch::WorkersFetcher`] (the Workers `fetch` API), [`clock::WorkersClock`]
//!   and, for Cloudflare Access tokens, [`rs256::WebCryptoVerifier`] (`crypto.subtle`);
//! - opens the [`App`](vultrino_core::app::App) ONCE per isolate (the key derivation runs once,
//!   never per request) and caches it;
//! - converts each request to `http::Request<Body>` (the body the runtime's stream, never read
//!   whole; the client address from `CF-Connecting-IP` as
//!   [`ClientIp`](vultrino_core::auth::ClientIp)), calls `App::serve` with `ctx.waitUntil` as
//!   its [`Background`](vultrino_core::ports::Background), and converts the answer back — a
//!   streamed body (the pass-through proxy's) as a JS stream the client's reading paces
//!   (`streams`; decision 0080).
//!
//! Settings are described in [`settings`]. A missing or wrong secret answers 503 JSON naming it.
//!
//! Only [`settings`] is plain Rust (the Durable Object's rules are the core's
//! [`session_rules`](vultrino_core::ports::session_rules)); everything that touches JS is compiled
//! for wasm32 only (natively this crate builds as an rlib so that `cargo test --workspace` covers
//! the pure parts). The glue is tested in workerd (`backend-cloudflare/test/`).

pub mod audit_point;
pub mod audit_shards;
// Used by the session objects (wasm only); compiled natively too, for its tests.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod cleanup_alarm;
pub mod settings;

#[cfg(target_arch = "wasm32")]
mod audit_sink;
#[cfg(target_arch = "wasm32")]
pub mod audit_store;

#[cfg(target_arch = "wasm32")]
pub mod clock;
#[cfg(all(target_arch = "wasm32", feature = "testkit"))]
mod counting;
#[cfg(target_arch = "wasm32")]
mod entry;
#[cfg(target_arch = "wasm32")]
pub mod fetch;
#[cfg(target_arch = "wasm32")]
mod headers;
#[cfg(target_arch = "wasm32")]
pub mod kv;
#[cfg(target_arch = "wasm32")]
mod objects;
#[cfg(target_arch = "wasm32")]
mod request_path;
#[cfg(target_arch = "wasm32")]
pub mod rs256;
#[cfg(target_arch = "wasm32")]
pub mod sessions;
#[cfg(target_arch = "wasm32")]
mod streams;
#[cfg(all(target_arch = "wasm32", feature = "testkit"))]
mod testkit_route;
