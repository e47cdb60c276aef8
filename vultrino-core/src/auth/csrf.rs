//! The CSRF rule of cookie-authenticated requests: every one, reads included, carries the
//! login's CSRF token, and a browser `Origin`, when sent, is this host or a configured CORS
//! origin. Browsers send a host's cookies to all its ports, so the cookie alone must open
//! nothing.

use http::HeaderMap;

use super::token::CSRF_HEADER;
use crate::cors;
use crate::crypto;
use crate::error::{Code, Error, Result};
use crate::ports::SessionRecord;

/// Check a cookie request against its session's CSRF token (403 `csrf_failed`).
pub fn check(headers: &HeaderMap, session: &SessionRecord, cors_origins: &[String]) -> Result<()> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let failed = |m: &'static str| Error::forbidden(m).with_code(Code::CsrfFailed);
    same_origin(headers, cors_origins)?;
    let token = header(CSRF_HEADER).ok_or_else(|| failed("missing X-CSRF-Token header"))?;
    let given = crypto::sha256_hex(token.as_bytes());
    if !crypto::ct_eq(given.as_bytes(), session.csrf_hash.as_bytes()) {
        return Err(failed("invalid X-CSRF-Token"));
    }
    Ok(())
}

/// The same-origin rule (403 `csrf_failed`): a browser `Origin`, when sent, is this host or a
/// configured CORS origin; without one, `Sec-Fetch-Site: cross-site` is refused. Requests that
/// carry neither (agents, CLIs) pass. Cookie requests and `POST /login` are held to it.
pub fn same_origin(headers: &HeaderMap, cors_origins: &[String]) -> Result<()> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let failed = |m: &'static str| Error::forbidden(m).with_code(Code::CsrfFailed);
    if let Some(origin) = header("origin") {
        let host = header("host").unwrap_or("");
        let same = origin
            .split_once("://")
            .is_some_and(|(_, rest)| !host.is_empty() && rest == host);
        if !same && !cors::allows(cors_origins, origin) {
            return Err(failed("cross-origin request refused"));
        }
    } else if header("sec-fetch-site").is_some_and(|s| s == "cross-site") {
        return Err(failed("cross-site request refused"));
    }
    Ok(())
}
