//! The one error type of the core.
//!
//! An [`Error`] is a small [`ErrorKind`] plus a stable machine-readable `code` and a human message.
//! Kinds map to HTTP statuses in exactly one place ([`ErrorKind::status`]), and the JSON body
//! `{"error": {"code", "message"}}` is produced in exactly one place ([`Error::to_json`]).
//!
//! Messages are written for the API caller. They must never contain secret material (credential
//! values, keys, tokens, passwords); internal failures are reported with a generic message and the
//! detail goes to the log only (see [`Error::internal`]).

use std::borrow::Cow;
use std::fmt;

/// What went wrong, coarsely. Each kind has one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Malformed or invalid input (400).
    BadRequest,
    /// Missing or invalid authentication (401).
    Unauthorized,
    /// Authenticated but not allowed: permission, scope, policy or SSRF refusal (403).
    Forbidden,
    /// No such resource (404).
    NotFound,
    /// Method not supported on this route (405).
    MethodNotAllowed,
    /// Conflicts with existing state, e.g. alias taken, built-in role (409).
    Conflict,
    /// Request or value larger than allowed (413).
    PayloadTooLarge,
    /// Too many requests or login attempts (429, with `Retry-After`).
    RateLimited,
    /// The upstream could not be reached or answered unusably (502).
    UpstreamFailed,
    /// The upstream did not answer in time (504).
    UpstreamTimeout,
    /// The service is not usable: missing or wrong configuration, store locked (503).
    Unavailable,
    /// A bug or an unexpected backend failure (500). The message is always generic.
    Internal,
}

impl ErrorKind {
    /// The HTTP status for this kind. The only place where kinds become statuses.
    pub fn status(self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            ErrorKind::BadRequest => S::BAD_REQUEST,
            ErrorKind::Unauthorized => S::UNAUTHORIZED,
            ErrorKind::Forbidden => S::FORBIDDEN,
            ErrorKind::NotFound => S::NOT_FOUND,
            ErrorKind::MethodNotAllowed => S::METHOD_NOT_ALLOWED,
            ErrorKind::Conflict => S::CONFLICT,
            ErrorKind::PayloadTooLarge => S::PAYLOAD_TOO_LARGE,
            ErrorKind::RateLimited => S::TOO_MANY_REQUESTS,
            ErrorKind::UpstreamFailed => S::BAD_GATEWAY,
            ErrorKind::UpstreamTimeout => S::GATEWAY_TIMEOUT,
            ErrorKind::Unavailable => S::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => S::INTERNAL_SERVER_ERROR,
        }
    }

    /// The default `code` string for this kind.
    pub fn default_code(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotFound => "not_found",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::Conflict => "conflict",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::UpstreamFailed => "upstream_error",
            ErrorKind::UpstreamTimeout => "upstream_timeout",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
        }
    }
}

/// The core's error: a kind, a stable code, a caller-facing message and, for 429, a retry delay.
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    code: &'static str,
    message: Cow<'static, str>,
    retry_after_secs: Option<u64>,
}

/// Result alias used across the core and by every port.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind` with the kind's default code.
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Error {
            kind,
            code: kind.default_code(),
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// Replace the code with a more specific one, e.g. `ssrf_blocked`.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }

    /// Attach a `Retry-After` delay in seconds (used with [`ErrorKind::RateLimited`]).
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }
    pub fn unauthorized(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Unauthorized, message)
    }
    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Forbidden, message)
    }
    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    pub fn conflict(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }
    pub fn too_large(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::PayloadTooLarge, message)
    }
    pub fn unavailable(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    /// An internal failure. `detail` is for the operator's log only and is NOT kept in the error;
    /// callers must log it themselves (without secrets) before calling this. The message a client
    /// sees is always the same generic text.
    pub fn internal() -> Self {
        Self::new(ErrorKind::Internal, "internal error")
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    pub fn code(&self) -> &'static str {
        self.code
    }
    pub fn message(&self) -> &str {
        &self.message
    }
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after_secs
    }
    pub fn status(&self) -> http::StatusCode {
        self.kind.status()
    }

    /// The JSON error body `{"error": {"code", "message"}}`.
    pub fn to_json(&self) -> serde_json::Value {
        let message = if self.kind == ErrorKind::Internal {
            "internal error"
        } else {
            &self.message
        };
        serde_json::json!({ "error": { "code": self.code, "message": message } })
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("code", &self.code)
            .field("message", &self.message)
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_never_expose_their_message() {
        let e = Error::new(ErrorKind::Internal, "disk path /secret/x failed");
        assert_eq!(e.to_json()["error"]["message"], "internal error");
        assert_eq!(e.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn specific_codes_keep_the_kind_status() {
        let e = Error::forbidden("blocked").with_code("ssrf_blocked");
        assert_eq!(e.status(), http::StatusCode::FORBIDDEN);
        assert_eq!(e.to_json()["error"]["code"], "ssrf_blocked");
    }
}
