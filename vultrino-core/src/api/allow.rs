//! The routes of [`App::route`](crate::app::App) and the methods each serves, in one table:
//! the `Allow` header of every 405 comes from it (RFC 9110 §15.5.6; `/mcp` sets its own), and
//! the OpenAPI document (`GET /openapi.json`, [`super::openapi`]) must list exactly these
//! routes with these methods.
//!
//! A route added to the router gets its line here; `tests/http/health_ui.rs`
//! (`every_405_names_the_allowed_methods`) checks each route's 405 on both backends, and
//! `tests/http/openapi.rs` that the document lists each route with its methods.

/// Every route as a path template (`{name}` stands for one path segment) with the methods it
/// serves, as an `Allow` value. Not here: `/proxy/{alias}/…` (any method, the upstream's) and
/// the CORS preflight (`OPTIONS` on any path).
pub const ROUTES: &[(&str, &str)] = &[
    ("/", "GET"),
    ("/ui", "GET"),
    ("/ui/{name}", "GET"),
    ("/healthz", "GET"),
    ("/openapi.json", "GET"),
    ("/mcp", "POST"),
    ("/login", "POST"),
    ("/logout", "POST"),
    ("/v1/execute", "POST"),
    ("/api/v1/execute", "POST"),
    ("/v1/credentials", "GET, POST"),
    ("/v1/credentials/{alias}", "GET, PUT, DELETE"),
    ("/v1/keys", "GET, POST"),
    ("/v1/keys/{id}", "DELETE"),
    ("/v1/tokens", "GET, POST"),
    ("/v1/tokens/{id}", "DELETE"),
    ("/v1/roles", "GET, POST"),
    ("/v1/roles/{name}", "DELETE"),
    ("/v1/audit", "GET"),
    ("/v1/audit/sinks", "GET"),
    ("/v1/sync/export", "GET"),
    ("/v1/admin/migrate-records", "POST"),
    ("/v1/approvals", "GET"),
    ("/v1/approvals/{id}", "GET"),
    ("/v1/approvals/{id}/approve", "POST"),
    ("/v1/approvals/{id}/deny", "POST"),
];

/// The segments of a path as the router sees them (it ignores a trailing `/`): none for `/`.
fn segments(path: &str) -> Vec<&str> {
    let path = path.trim_end_matches('/');
    if path.is_empty() {
        return Vec::new();
    }
    path.split('/').skip(1).collect()
}

/// The methods the route of `path` serves, as an `Allow` value; `None` for no such route.
pub(super) fn allowed_methods(path: &str) -> Option<&'static str> {
    let segs = segments(path);
    ROUTES.iter().find_map(|(template, allow)| {
        let pattern = segments(template);
        let fits = pattern.len() == segs.len()
            && pattern
                .iter()
                .zip(&segs)
                .all(|(p, s)| p.starts_with('{') || p == s);
        fits.then_some(*allow)
    })
}

#[cfg(test)]
mod tests {
    use super::allowed_methods;

    #[test]
    fn each_route_names_its_methods() {
        assert_eq!(allowed_methods("/"), Some("GET"));
        assert_eq!(allowed_methods(""), Some("GET"));
        assert_eq!(allowed_methods("/ui"), Some("GET"));
        assert_eq!(allowed_methods("/openapi.json"), Some("GET"));
        assert_eq!(allowed_methods("/v1/credentials/"), Some("GET, POST"));
        assert_eq!(
            allowed_methods("/v1/credentials/gh"),
            Some("GET, PUT, DELETE")
        );
        assert_eq!(allowed_methods("/v1/keys/abc"), Some("DELETE"));
        assert_eq!(allowed_methods("/v1/approvals/ap_1/deny"), Some("POST"));
        assert_eq!(allowed_methods("/v1/approvals/ap_1/undo"), None);
        assert_eq!(allowed_methods("/v1/nothing"), None);
        assert_eq!(allowed_methods("/v1/keys/a/b"), None);
    }
}
