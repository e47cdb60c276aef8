//! Where the pass-through proxy's route starts: a leaf, so that the request gates (Cloudflare
//! Access, the API's dispatch) can tell a proxy path without depending on the proxy itself.

/// The path prefix of the route.
pub const PREFIX: &str = "/proxy/";

/// Whether a request path is the proxy's.
pub fn is_proxy_path(path: &str) -> bool {
    path.starts_with(PREFIX)
}
