//! The path of a request's URL, for the worker's routing (`entry`) and the Durable Objects'
//! dispatch (`objects`): apart from both, so that neither imports the other for it.

/// The path of a URL as the runtime serialises it (WHATWG): from the first `/` after the host
/// to the query or fragment, as workers-rs's `Request::path` takes it.
pub(crate) fn path_of(url: &str) -> &str {
    let Some(host_start) = url.find("://").map(|i| i + 3) else {
        return url;
    };
    match url[host_start..].find('/') {
        Some(i) => {
            let path = &url[host_start + i..];
            &path[..path.find(['?', '#']).unwrap_or(path.len())]
        }
        None => "/",
    }
}
