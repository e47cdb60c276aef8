//! Vultrino Edge on Cloudflare Workers: a thin adapter around `vultrino-core`.
//!
//! No business logic lives here. The worker
//! - builds the core's ports over the platform: [`kv::WorkersKv`] (KV binding `CREDENTIALS`),
//!   [`sessions::DoSessions`] over the [`sessions::SessionDO`] Durable Object class (binding
//!   `SESSIONS`), [`fetch::WorkersFetcher`] (the Workers `fetch` API) and [`clock::WorkersClock`];
//! - opens the [`App`](vultrino_core::app::App) ONCE per isolate (the key derivation runs once,
//!   never per request) and caches it;
//! - converts each request to `http::Request<Bytes>` (with the client address from
//!   `CF-Connecting-IP` as [`ClientIp`](vultrino_core::auth::ClientIp)), calls `App::handle`, and
//!   converts the answer back.
//!
//! Settings are described in [`settings`]. A missing or wrong secret answers 503 JSON naming it.
//!
//! Only [`settings`] is plain Rust (the Durable Object's rules are the core's
//! [`session_rules`](vultrino_core::ports::session_rules)); everything that touches JS is compiled
//! for wasm32 only (natively this crate builds as an rlib so that `cargo test --workspace` covers
//! the pure parts). The glue is tested in workerd (`backend-cloudflare/test/`).

pub mod settings;

#[cfg(target_arch = "wasm32")]
pub mod clock;
#[cfg(target_arch = "wasm32")]
mod entry;
#[cfg(target_arch = "wasm32")]
pub mod fetch;
#[cfg(target_arch = "wasm32")]
pub mod kv;
#[cfg(target_arch = "wasm32")]
pub mod sessions;
#[cfg(all(target_arch = "wasm32", feature = "testkit"))]
mod testkit_route;
