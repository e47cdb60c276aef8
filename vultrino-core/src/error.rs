//! The one error type of the core.
//!
//! An [`Error`] is a small [`ErrorKind`] plus a stable machine-readable [`Code`] and a human
//! message. Kinds map to HTTP statuses in exactly one place ([`ErrorKind::status`]), codes to
//! their wire names in exactly one place ([`Code::as_str`]), and the JSON body
//! `{"error": {"code", "message"}}` is produced in exactly one place ([`Error::to_json`]). Code
//! that decides something from an error compares [`Code`] values, never strings.
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
    /// The client did not send its request (body) in time (408).
    RequestTimeout,
    /// Conflicts with existing state, e.g. alias taken, built-in role (409).
    Conflict,
    /// Request or value larger than allowed (413).
    PayloadTooLarge,
    /// A request body in a media type the route does not take (415).
    UnsupportedMediaType,
    /// Too many requests or login attempts (429, with `Retry-After`).
    RateLimited,
    /// The upstream could not be reached or answered unusably (502).
    UpstreamFailed,
    /// The upstream did not answer in time (504).
    UpstreamTimeout,
    /// The service is not usable: missing or wrong configuration, store locked (503).
    Unavailable,
    /// Not a failure: the request waits for a person's approval and nothing was sent (202,
    /// body `{approval_id, status, expires_at}`; see [`Error::pending_approval`]).
    ApprovalPending,
    /// The thing asked for existed and is gone for good: an expired approval (410).
    Gone,
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
            ErrorKind::RequestTimeout => S::REQUEST_TIMEOUT,
            ErrorKind::Conflict => S::CONFLICT,
            ErrorKind::PayloadTooLarge => S::PAYLOAD_TOO_LARGE,
            ErrorKind::UnsupportedMediaType => S::UNSUPPORTED_MEDIA_TYPE,
            ErrorKind::RateLimited => S::TOO_MANY_REQUESTS,
            ErrorKind::UpstreamFailed => S::BAD_GATEWAY,
            ErrorKind::UpstreamTimeout => S::GATEWAY_TIMEOUT,
            ErrorKind::Unavailable => S::SERVICE_UNAVAILABLE,
            ErrorKind::ApprovalPending => S::ACCEPTED,
            ErrorKind::Gone => S::GONE,
            ErrorKind::Internal => S::INTERNAL_SERVER_ERROR,
        }
    }

    /// The code of an error of this kind that names nothing more specific.
    pub fn default_code(self) -> Code {
        match self {
            ErrorKind::BadRequest => Code::BadRequest,
            ErrorKind::Unauthorized => Code::Unauthorized,
            ErrorKind::Forbidden => Code::Forbidden,
            ErrorKind::NotFound => Code::NotFound,
            ErrorKind::MethodNotAllowed => Code::MethodNotAllowed,
            ErrorKind::RequestTimeout => Code::BodyTimeout,
            ErrorKind::Conflict => Code::Conflict,
            ErrorKind::PayloadTooLarge => Code::PayloadTooLarge,
            ErrorKind::UnsupportedMediaType => Code::UnsupportedMediaType,
            ErrorKind::RateLimited => Code::RateLimited,
            ErrorKind::UpstreamFailed => Code::UpstreamError,
            ErrorKind::UpstreamTimeout => Code::UpstreamTimeout,
            ErrorKind::Unavailable => Code::Unavailable,
            ErrorKind::ApprovalPending => Code::ApprovalPending,
            ErrorKind::Gone => Code::ApprovalExpired,
            ErrorKind::Internal => Code::Internal,
        }
    }
}

/// Declares [`Code`] with the wire name of each variant, so the two cannot drift apart.
macro_rules! codes {
    ($( $(#[$doc:meta])* $variant:ident = $wire:literal, )*) => {
        /// Every error code on the wire (`{"error": {"code": …}}`), as a closed set. The wire
        /// names are a contract with clients: never rename one.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $( $(#[$doc])* $variant, )*
        }

        impl Code {
            /// Every code, in declaration order.
            pub const ALL: &'static [Code] = &[$(Code::$variant),*];

            /// The code's wire name (snake_case).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $wire,)*
                }
            }
        }
    };
}

codes! {
    // ---- defaults, one per kind (see ErrorKind::default_code) ----
    /// 400 with nothing more specific to say.
    BadRequest = "bad_request",
    /// 401 with nothing more specific to say.
    Unauthorized = "unauthorized",
    /// 403 with nothing more specific to say.
    Forbidden = "forbidden",
    /// 404: no such route or resource.
    NotFound = "not_found",
    /// 405: the route exists, the method does not.
    MethodNotAllowed = "method_not_allowed",
    /// 409 with nothing more specific to say.
    Conflict = "conflict",
    /// 413 with nothing more specific to say.
    PayloadTooLarge = "payload_too_large",
    /// 415: the body's `Content-Type` is not one the route takes (`POST /login`: JSON only).
    UnsupportedMediaType = "unsupported_media_type",
    /// 429: a credential's rate limit is reached.
    RateLimited = "rate_limited",
    /// 429: too many `/proxy/` exchanges in flight, for this key or on this server (per isolate
    /// on Workers), with `Retry-After`; nothing was sent upstream.
    ProxyBusy = "proxy_busy",
    /// 502 with nothing more specific to say.
    UpstreamError = "upstream_error",
    /// 504: the upstream did not answer within the fetch deadline.
    UpstreamTimeout = "upstream_timeout",
    /// 503 with nothing more specific to say.
    Unavailable = "unavailable",
    /// 500: a bug or an unexpected backend failure; the message is always generic.
    Internal = "internal",

    // ---- request bodies and parameters ----
    /// The body is not JSON at all (empty, or a syntax error).
    InvalidJson = "invalid_json",
    /// The body is valid JSON that does not fit the route's schema: a missing or unknown field,
    /// a value of the wrong type.
    SchemaMismatch = "schema_mismatch",
    /// An execute request is malformed (shape, method, query values).
    InvalidRequest = "invalid_request",
    /// A request header given to execute is not valid HTTP.
    InvalidHeader = "invalid_header",
    /// A URL is not usable (unparsable, no host, …).
    InvalidUrl = "invalid_url",
    /// A `limit` is outside 1..=1000.
    InvalidLimit = "invalid_limit",
    /// A listing cursor is not one this deployment issued.
    InvalidCursor = "invalid_cursor",
    /// An MCP tool was called with arguments it does not take.
    InvalidArguments = "invalid_arguments",
    /// The request body is larger than the server accepts.
    BodyTooLarge = "body_too_large",
    /// The request body did not arrive in time (408).
    BodyTimeout = "body_timeout",
    /// The request body could not be read.
    InvalidBody = "invalid_body",

    // ---- authentication ----
    /// No usable credentials on the request.
    Unauthenticated = "unauthenticated",
    /// An API key that does not exist, was revoked, or whose secret is wrong.
    InvalidApiKey = "invalid_api_key",
    /// An API key past its expiry.
    ApiKeyExpired = "api_key_expired",
    /// A session that ended: expired, logged out, or signed out everywhere.
    SessionExpired = "session_expired",
    /// A `vs_`/`vc_` token that was never a session of this deployment as it is now: made up,
    /// mangled, or issued before the admin password changed.
    InvalidSession = "invalid_session",
    /// Wrong admin user name or password.
    InvalidLogin = "invalid_login",
    /// Too many login attempts from this client (429, `Retry-After`).
    LoginLocked = "login_locked",
    /// No admin password hash is configured.
    LoginNotConfigured = "login_not_configured",
    /// `POST /logout` by something that is not an admin session.
    NotASession = "not_a_session",
    /// A cookie request without the CSRF token or from another origin; a login from another
    /// origin.
    CsrfFailed = "csrf_failed",
    /// 403: Cloudflare Access is required on this route and the request carries no valid Access
    /// token (none, malformed, not RS256, wrong `iss`/`aud`, expired, unknown key, bad
    /// signature).
    AccessDenied = "access_denied",
    /// 503: Cloudflare Access is required on this route and the team's keys could not be
    /// fetched (and none is cached): the request is refused, never let through.
    AccessUnavailable = "access_unavailable",

    // ---- authorization and policy ----
    /// The caller's role lacks the permission the operation needs.
    PermissionDenied = "permission_denied",
    /// The credential is outside the caller's scopes.
    ScopeDenied = "scope_denied",
    /// The URL's host is not in the credential's `allowed_hosts`.
    HostNotAllowed = "host_not_allowed",
    /// The method is not in the credential's `methods`.
    MethodNotAllowedByPolicy = "method_not_allowed_by_policy",
    /// The path is outside the credential's `path_prefixes`.
    PathNotAllowed = "path_not_allowed",
    /// The SSRF guard refused the destination.
    SsrfBlocked = "ssrf_blocked",
    /// An `http://` upstream without the loopback opt-in.
    HttpsRequired = "https_required",

    // ---- credentials, keys, roles ----
    /// A credential or role name outside the allowed characters or length.
    InvalidName = "invalid_name",
    /// A credential type that does not exist.
    InvalidType = "invalid_type",
    /// A credential's `data` (or `secret`) is invalid for its type.
    InvalidData = "invalid_data",
    /// A description longer than allowed.
    InvalidDescription = "invalid_description",
    /// `allowed_hosts` is missing or empty.
    AllowedHostsRequired = "allowed_hosts_required",
    /// An `allowed_hosts` entry is not a host pattern.
    InvalidHost = "invalid_host",
    /// A policy `methods` entry is not an HTTP method.
    InvalidMethod = "invalid_method",
    /// A policy path prefix is not a path.
    InvalidPathPrefix = "invalid_path_prefix",
    /// A rate limit outside the accepted range.
    InvalidRateLimit = "invalid_rate_limit",
    /// The policy and description do not fit the record's metadata (1024 bytes).
    PolicyTooLarge = "policy_too_large",
    /// A credential of this alias exists.
    CredentialExists = "credential_exists",
    /// No credential of this alias.
    CredentialNotFound = "credential_not_found",
    /// No API key of this id.
    KeyNotFound = "key_not_found",
    /// An API key expiry outside the accepted range.
    InvalidExpiry = "invalid_expiry",
    /// A role that does not exist (at key creation, or a key whose role was deleted).
    UnknownRole = "unknown_role",
    /// A role definition that is not acceptable.
    InvalidRole = "invalid_role",
    /// A role of this name exists.
    RoleExists = "role_exists",
    /// A credential, key or role that the live sync brought from the edge: read-only here.
    SyncedRecord = "synced_record",
    /// No role of this name.
    RoleNotFound = "role_not_found",
    /// Built-in roles cannot be created, replaced or deleted.
    BuiltinRole = "builtin_role",
    // ---- agent tokens (`vt_…`) ----
    /// No agent token of this id (or not one of the calling key's).
    TokenNotFound = "token_not_found",
    /// An agent token past its expiry.
    TokenExpired = "token_expired",
    /// An agent token whose uses are all spent (403; nothing was sent upstream).
    TokenExhausted = "token_exhausted",
    /// The method is not one of the agent token's `methods`.
    TokenMethodDenied = "token_method_denied",
    /// The upstream path is outside the agent token's `path_prefixes`.
    TokenPathDenied = "token_path_denied",
    /// A token asked for more than its parent key reaches (a credential glob beyond its scopes).
    TokenWidensParent = "token_widens_parent",
    /// The parent key already has [`crate::auth::tokens::MAX_LIVE_TOKENS_PER_KEY`] live tokens
    /// (429; revoke finished ones, or wait for them to expire).
    TooManyTokens = "too_many_tokens",
    /// A token request without a usable `parent_key` (an admin must name one).
    InvalidParentKey = "invalid_parent_key",
    /// A token's `uses` outside the accepted range.
    InvalidUses = "invalid_uses",
    /// A token's `credentials` that are not a list of alias globs.
    InvalidCredentials = "invalid_credentials",
    // ---- approvals ----
    /// 202: the request waits for a person's approval; nothing was sent upstream.
    ApprovalPending = "approval_pending",
    /// 403: a person denied the approval.
    ApprovalDenied = "approval_denied",
    /// 410: the approval expired before it was decided or used.
    ApprovalExpired = "approval_expired",
    /// 409: the approval was used already (a request runs once per approval).
    ApprovalUsed = "approval_used",
    /// 409: the re-sent request differs from the approved one (method, URL, a bound header or
    /// the body); the approval is unchanged.
    ApprovalMismatch = "approval_mismatch",
    /// 404: no such approval, or one another key asked for.
    ApprovalNotFound = "approval_not_found",
    /// 409: approve or deny of an approval that is not pending.
    ApprovalNotPending = "approval_not_pending",
    /// Another change of the same record is under way (409, `Retry-After`).
    ChangeInProgress = "change_in_progress",
    /// The record changed elsewhere moments ago and this location may not see it yet (409,
    /// `Retry-After`).
    ChangeNotPropagated = "change_not_propagated",

    // ---- upstreams ----
    /// The upstream could not be connected to.
    UpstreamConnect = "upstream_connect",
    /// The upstream's body is larger than the configured cap.
    UpstreamTooLarge = "upstream_too_large",
    /// The upstream sent an encoded (compressed) body, which cannot be scrubbed.
    UpstreamEncoded = "upstream_encoded",
    /// The upstream's reply is not usable HTTP.
    UpstreamInvalid = "upstream_invalid",
    /// The OAuth2 token endpoint did not give a usable token.
    OauthTokenFailed = "oauth_token_failed",

    // ---- the pass-through proxy ----
    /// The credential has no `base_url` and its allowed hosts are not one exact host.
    NoBaseUrl = "no_base_url",
    /// A `base_url` that is not `https://host[:port][/path]` inside the allowed hosts.
    InvalidBaseUrl = "invalid_base_url",
    /// More than one different agent key in the request's key slots.
    AmbiguousKey = "ambiguous_key",
    /// The outgoing request still carried an agent key (`vk_…`): refused, nothing sent.
    AgentKeyInRequest = "agent_key_in_request",
    /// The request body is encoded (`Content-Encoding` other than `identity`): it could carry an
    /// agent key that no check can read, so it is refused and nothing is sent.
    RequestEncoded = "request_encoded",
    /// 403: a browser loading a page, frame, script, worker or service worker from `/proxy/`
    /// (`Sec-Fetch-Dest` other than `empty`, `Sec-Fetch-Mode: navigate`, a `Service-Worker`
    /// header): refused before authentication, nothing sent.
    BrowserContext = "browser_context",

    // ---- stored records, keys and the store itself ----
    /// A stored record that cannot be used as it is.
    InvalidRecord = "invalid_record",
    /// A stored `key:` or `role:` record without a signature: written by a version before
    /// records were signed (or by something without the master key); the message names the
    /// migration that signs them.
    RecordUnsigned = "record_unsigned",
    /// A stored `key:` or `role:` record whose signature does not match: changed, moved or
    /// written by something without the master key. Never used; audited.
    RecordTampered = "record_tampered",
    /// The record migration ran on this deployment already.
    RecordsAlreadySigned = "records_already_signed",
    /// A stored envelope that does not open under this deployment's keys.
    DecryptFailed = "decrypt_failed",
    /// Text that is not an envelope.
    InvalidEnvelope = "invalid_envelope",
    /// Text that is not base64.
    InvalidBase64 = "invalid_base64",
    /// The stored keyring is malformed.
    InvalidKeyring = "invalid_keyring",
    /// The store holds records but no keyring.
    KeyringMissing = "keyring_missing",
    /// Another instance is creating the keyring of this empty deployment (503, `Retry-After`).
    KeyringStarting = "keyring_starting",
    /// An import whose keyring differs from the local one.
    KeyringMismatch = "keyring_mismatch",
    /// The master key does not open this deployment's keyring.
    WrongMasterKey = "wrong_master_key",
    /// The master key text is not usable.
    InvalidMasterKey = "invalid_master_key",
    /// A PBKDF2 iteration count outside the accepted range.
    InvalidIterations = "invalid_iterations",
    /// An admin password shorter than the minimum length.
    PasswordTooShort = "password_too_short",
    /// A sync export that holds records it should not.
    InvalidExport = "invalid_export",
    /// A KV key that breaks the Workers KV rules.
    InvalidKey = "invalid_key",
    /// A KV value over 25 MiB.
    ValueTooLarge = "value_too_large",
    /// KV metadata over 1024 bytes.
    MetadataTooLarge = "metadata_too_large",
    /// A KV expiration TTL under 60 seconds.
    InvalidTtl = "invalid_ttl",
    /// Workers KV could not be reached.
    KvUnavailable = "kv_unavailable",
    /// The session store (a Durable Object on Workers) could not be reached.
    SessionStoreUnavailable = "session_store_unavailable",
    /// The audit store (Durable Objects on Workers) could not take or read events.
    AuditUnavailable = "audit_unavailable",
    /// The file store is locked by another process.
    StoreLocked = "store_locked",
    /// The file store could not be read or written.
    StoreIo = "store_io",

    // ---- configuration ----
    /// A required setting is missing.
    MissingSetting = "missing_setting",
    /// A setting has a value that is refused.
    InvalidSetting = "invalid_setting",
}

impl serde::Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The core's error: a kind, a stable code, a caller-facing message and, for 429/409, a retry
/// delay.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    kind: ErrorKind,
    code: Code,
    message: Cow<'static, str>,
    retry_after_secs: Option<u64>,
    /// The approval a 202 [`ErrorKind::ApprovalPending`] is about.
    pending: Option<Box<PendingApproval>>,
}

/// The approval a request waits for: what its 202 says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingApproval {
    pub approval_id: String,
    pub expires_at: u64,
    /// The `Prefer: wait=N` the server honoured (`Preference-Applied`), if any.
    pub waited_secs: Option<u64>,
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
            pending: None,
        }
    }

    /// 202 `approval_pending`: the request waits for a person (nothing was sent).
    pub fn pending_approval(p: PendingApproval) -> Self {
        let message = format!(
            "approval {} is pending: poll GET /v1/approvals/{} and, once it is approved, send \
             the same request again with X-Vultrino-Approval: {} (MCP: approval_id)",
            p.approval_id, p.approval_id, p.approval_id
        );
        let mut e = Self::new(ErrorKind::ApprovalPending, message);
        e.pending = Some(Box::new(p));
        e
    }

    /// The approval of a 202 `approval_pending`.
    pub fn pending(&self) -> Option<&PendingApproval> {
        self.pending.as_deref()
    }

    /// Replace the code with a more specific one, e.g. [`Code::SsrfBlocked`].
    pub fn with_code(mut self, code: Code) -> Self {
        self.code = code;
        self
    }

    /// Attach a `Retry-After` delay in seconds (429 rate limits and lockouts, 409
    /// `change_in_progress` and `change_not_propagated`).
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

    /// An internal failure. Any detail is for the operator's log only and is NOT kept in the
    /// error: callers log it themselves (without secrets) before calling this. The message a
    /// client sees is always the same generic text.
    pub fn internal() -> Self {
        Self::new(ErrorKind::Internal, "internal error")
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    pub fn code(&self) -> Code {
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
        if let Some(p) = &self.pending {
            return serde_json::json!({
                "approval_id": p.approval_id,
                "status": "pending",
                "expires_at": p.expires_at,
                "message": self.message,
            });
        }
        let message = if self.kind == ErrorKind::Internal {
            "internal error"
        } else {
            &self.message
        };
        serde_json::json!({ "error": { "code": self.code.as_str(), "message": message } })
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

/// Seconds until `reset_at_ms`, at least 1 (a `Retry-After` of 0 invites a busy loop).
pub fn retry_after_secs(reset_at_ms: u64, now_ms: u64) -> u64 {
    reset_at_ms.saturating_sub(now_ms).div_ceil(1000).max(1)
}

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
        let e = Error::forbidden("blocked").with_code(Code::SsrfBlocked);
        assert_eq!(e.status(), http::StatusCode::FORBIDDEN);
        assert_eq!(e.to_json()["error"]["code"], "ssrf_blocked");
    }

    /// Wire names are what clients match on: each is snake_case and names one code only.
    #[test]
    fn every_code_has_one_distinct_snake_case_wire_name() {
        let mut seen = std::collections::HashSet::new();
        for code in Code::ALL {
            let name = code.as_str();
            assert!(seen.insert(name), "{name} is used twice");
            assert!(
                !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{name} is not snake_case"
            );
        }
    }
}
