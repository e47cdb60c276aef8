//! The `Allow` header of a 405: the methods each route of [`App::route`](crate::app::App) serves,
//! in one table, so every 405 names them (RFC 9110 §15.5.6). `/mcp` sets its own.
//!
//! A route added to the router gets its line here; `tests/http/health_ui.rs`
//! (`every_405_names_the_allowed_methods`) checks each route's 405 on both backends.

/// The methods the route of `path` serves, as an `Allow` value; `None` for no such route.
pub(super) fn allowed_methods(path: &str) -> Option<&'static str> {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    Some(match segs.as_slice() {
        [] | [""] | ["ui", _] | ["healthz"] => "GET",
        ["mcp"] | ["login"] | ["logout"] => "POST",
        ["v1", "execute"] | ["api", "v1", "execute"] => "POST",
        ["v1", "credentials"] | ["v1", "keys"] | ["v1", "tokens"] | ["v1", "roles"] => "GET, POST",
        ["v1", "credentials", _] => "GET, PUT, DELETE",
        ["v1", "keys", _] | ["v1", "tokens", _] | ["v1", "roles", _] => "DELETE",
        ["v1", "audit"] | ["v1", "audit", "sinks"] | ["v1", "sync", "export"] => "GET",
        ["v1", "admin", "migrate-records"] => "POST",
        ["v1", "approvals"] | ["v1", "approvals", _] => "GET",
        ["v1", "approvals", _, "approve" | "deny"] => "POST",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::allowed_methods;

    #[test]
    fn each_route_names_its_methods() {
        assert_eq!(allowed_methods("/"), Some("GET"));
        assert_eq!(allowed_methods("/v1/credentials/"), Some("GET, POST"));
        assert_eq!(
            allowed_methods("/v1/credentials/gh"),
            Some("GET, PUT, DELETE")
        );
        assert_eq!(allowed_methods("/v1/keys/abc"), Some("DELETE"));
        assert_eq!(allowed_methods("/v1/nothing"), None);
    }
}
