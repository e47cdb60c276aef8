//! The HTTP API: routing, and JSON in and out. [`App::handle`] is the single entry point every
//! backend calls; what each route does lives in the module of its concern (credentials, auth,
//! execute, audit, sync, MCP, UI), and replies are built by [`reply`].

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use serde_json::json;

use crate::app::App;
use crate::approvals::{Ask, Via};
use crate::auth::token::clear_cookie;
use crate::auth::{csrf, token, NewKey, NewRole};
use crate::body::Body;
use crate::cors;
use crate::credential::{CredentialUpdate, NewCredential};
use crate::error::{Code, Error, ErrorKind, Result};
use crate::execute::ExecuteRequest;
use crate::input::parse_json;
use crate::ports::Background;

mod allow;
mod approvals;
pub mod openapi;
pub mod reply;
mod tokens;

pub use allow::ROUTES;
use reply::empty;
pub use reply::{error_response, json_body, json_response, security_headers};

fn query_param(req: &Request<Bytes>, name: &str) -> Option<String> {
    let q = req.uri().query()?;
    url::form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn limit_param(req: &Request<Bytes>) -> Result<Option<usize>> {
    match query_param(req, "limit") {
        None => Ok(None),
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .map(Some)
            .ok_or_else(|| {
                Error::bad_request("limit must be an integer from 1 to 1000")
                    .with_code(Code::InvalidLimit)
            }),
    }
}

fn header_str<'a>(req: &'a Request<Bytes>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Whether a `Content-Type` is `application/json` (parameters such as `charset` allowed).
fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|v| {
        v.split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
    })
}

/// The reply of `GET /v1/sync/export`: the export with an `ETag` (the digest of its body), or
/// 304 with no body when `If-None-Match` names that tag — so a live sync's pull of an unchanged
/// edge costs one request and an empty reply (docs/decisions/0104-live-hybrid-sync.md).
fn export_reply(export: &crate::sync::Export, if_none_match: Option<&str>) -> Response<Bytes> {
    let Ok(body) = serde_json::to_vec(export) else {
        return error_response(&Error::internal());
    };
    let etag = format!("\"{}\"", crate::sync::live::digest(&body));
    let unchanged = if_none_match.is_some_and(|v| {
        v.split(',')
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == etag)
    });
    let mut resp = if unchanged {
        empty(StatusCode::NOT_MODIFIED)
    } else {
        let mut r = Response::new(Bytes::from(body));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    };
    if let Ok(v) = HeaderValue::from_str(&etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

fn not_allowed<T>() -> Result<T> {
    Err(Error::new(
        ErrorKind::MethodNotAllowed,
        "method not allowed on this route",
    ))
}

impl App {
    /// Serve one HTTP request whose body may be a stream: the entry point of backends that
    /// stream (both do). Never panics on input; every failure is a JSON error.
    ///
    /// `/proxy/{alias}/…` (the pass-through proxy) streams both ways. Every other route reads
    /// the body whole first — at most [`Config::max_request_bytes`](crate::app::Config), 413
    /// `body_too_large` past it, without reading more than one chunk beyond the cap — and is
    /// answered by [`App::handle`], its reply a whole body.
    ///
    /// `background` runs what must finish after the reply is handed over: the audit event of a
    /// streamed reply is written when the stream ends or is dropped (the client went away).
    /// Without one, an event is written at the end of the stream, before it reports its end,
    /// and the event of a stream dropped before its end is lost.
    pub async fn serve(
        &self,
        req: Request<Body>,
        background: Option<Arc<dyn Background>>,
    ) -> Response<Body> {
        let class = self.route_class(req.uri().path());
        let resp = self.serve_in(req, background).await;
        self.observe_reply(class, resp.status());
        resp
    }

    async fn serve_in(
        &self,
        mut req: Request<Body>,
        background: Option<Arc<dyn Background>>,
    ) -> Response<Body> {
        // Cloudflare Access first, before the body is read or anything else is looked at.
        if let Err(refused) = self.admit(&mut req).await {
            return refused.map(Body::full);
        }
        if crate::proxy::is_proxy_path(req.uri().path()) {
            return self.proxy(req, background).await;
        }
        let (parts, body) = req.into_parts();
        match body.collect_capped(self.config().max_request_bytes).await {
            Ok(bytes) => self
                .handle_in(Request::from_parts(parts, bytes), background)
                .await
                .map(Body::full),
            Err(e) => {
                let origin = parts.headers.get("origin").and_then(|v| v.to_str().ok());
                let mut resp = error_response(&e);
                cors::grant(&self.config().cors_origins, origin, resp.headers_mut());
                resp.map(Body::full)
            }
        }
    }

    /// Serve one HTTP request with a whole body. Never panics on input; every failure is a JSON
    /// error. (The pass-through proxy is reached only through [`App::serve`].)
    pub async fn handle(&self, mut req: Request<Bytes>) -> Response<Bytes> {
        let class = self.route_class(req.uri().path());
        let resp = match self.admit(&mut req).await {
            Err(refused) => refused,
            Ok(()) => self.handle_in(req, None).await,
        };
        self.observe_reply(class, resp.status());
        resp
    }

    /// The Cloudflare Access check ([`crate::auth::access`]) of a request, before routing: its
    /// Access identity, if any, goes into its extensions (the principal and the audit's actor
    /// take it from there); a refusal is the reply, a JSON error with the security headers and
    /// CORS grant every reply has.
    async fn admit<B>(&self, req: &mut Request<B>) -> std::result::Result<(), Response<Bytes>> {
        match self
            .access_check(req.method(), req.uri().path(), req.headers())
            .await
        {
            Ok(Some(identity)) => {
                req.extensions_mut().insert(identity);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => {
                let origin = req.headers().get("origin").and_then(|v| v.to_str().ok());
                // `error_response` sets the security headers.
                let mut resp = error_response(&e);
                cors::grant(&self.config().cors_origins, origin, resp.headers_mut());
                Err(resp)
            }
        }
    }

    /// [`App::handle`] with the `background` of [`App::serve`], after the Access check (both
    /// run it): an execute whose client goes away before the reply is still audited
    /// (`cancelled`) through it.
    async fn handle_in(
        &self,
        req: Request<Bytes>,
        background: Option<Arc<dyn Background>>,
    ) -> Response<Bytes> {
        let origins = &self.config().cors_origins;
        let origin = header_str(&req, "origin").map(str::to_string);
        let mut resp = if req.method() == Method::OPTIONS {
            cors::preflight(origins, origin.as_deref())
        } else if req.body().len() > self.config().max_request_bytes {
            error_response(
                &Error::too_large("request body is too large").with_code(Code::BodyTooLarge),
            )
        } else {
            let path = req.uri().path().to_string();
            let mut resp = match self.route(req, background).await {
                Ok(r) => r,
                Err(e) => error_response(&e),
            };
            // Every 405 names what the route takes (`/mcp` names it itself).
            if resp.status() == StatusCode::METHOD_NOT_ALLOWED
                && !resp.headers().contains_key(header::ALLOW)
            {
                if let Some(allow) = allow::allowed_methods(&path) {
                    resp.headers_mut()
                        .insert(header::ALLOW, HeaderValue::from_static(allow));
                }
            }
            resp
        };
        security_headers(resp.headers_mut());
        cors::grant(origins, origin.as_deref(), resp.headers_mut());
        resp
    }

    async fn route(
        &self,
        req: Request<Bytes>,
        background: Option<Arc<dyn Background>>,
    ) -> Result<Response<Bytes>> {
        let path = req.uri().path().to_string();
        let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
        let m = req.method().clone();
        match segs.as_slice() {
            [] | [""] => match m {
                Method::GET if crate::ui::wants_html(header_str(&req, "accept")) => {
                    Ok(crate::ui::page())
                }
                Method::GET => Ok(json_response(
                    StatusCode::OK,
                    &json!({"name": "vultrino", "version": env!("CARGO_PKG_VERSION"), "api": "/v1"}),
                )),
                _ => not_allowed(),
            },
            // The page itself under `/ui/` too: approval notifications link to
            // `/ui/#/approvals/<id>` (the page shows it; nothing is decided by a GET).
            ["ui"] => match m {
                Method::GET => Ok(crate::ui::page()),
                _ => not_allowed(),
            },
            ["ui", name] => match m {
                Method::GET => crate::ui::file(name)
                    .ok_or_else(|| Error::not_found("no such file").with_code(Code::NotFound)),
                _ => not_allowed(),
            },
            ["healthz"] => match m {
                // The live sync's state, when this instance runs one: a failing sync does not
                // make the instance unhealthy (it serves its last good copy).
                Method::GET => Ok(json_response(
                    StatusCode::OK,
                    &match self.live_sync() {
                        Some(live) => json!({"status": "ok",
                            "sync": live.status(self.now_ms())}),
                        None => json!({"status": "ok"}),
                    },
                )),
                _ => not_allowed(),
            },
            // The API's OpenAPI document: public, it holds no secret (decision 0103).
            ["openapi.json"] => match m {
                Method::GET => Ok(openapi::response()),
                _ => not_allowed(),
            },
            // MCP over Streamable HTTP: its own auth, statuses and JSON-RPC error bodies.
            ["mcp"] => Ok(crate::mcp::http::serve(self, &req, background).await),
            ["login"] => match m {
                Method::POST => self.login(&req).await,
                _ => not_allowed(),
            },
            ["logout"] => match m {
                Method::POST => {
                    let authed = self.authenticator().authenticate(&req).await?;
                    // `?everywhere=true`: every session of the admin, not only this one.
                    match query_param(&req, "everywhere").as_deref() {
                        None | Some("false") => self.admin_sessions().logout(&authed).await?,
                        Some("true") => self.admin_sessions().sign_out_everywhere(&authed).await?,
                        Some(_) => {
                            return Err(Error::bad_request("everywhere must be true or false")
                                .with_code(Code::BadRequest))
                        }
                    }
                    let mut r = empty(StatusCode::NO_CONTENT);
                    r.headers_mut().insert(
                        header::SET_COOKIE,
                        HeaderValue::from_str(&clear_cookie()).map_err(|_| Error::internal())?,
                    );
                    Ok(r)
                }
                _ => not_allowed(),
            },
            ["v1", "execute"] | ["api", "v1", "execute"] => match m {
                Method::POST => {
                    let who = self.authenticator().principal(&req).await?;
                    let mut ask = Ask::from_headers(req.headers(), Via::Execute)?;
                    let parsed = match ExecuteRequest::from_slice(req.body()) {
                        Some(parsed) => parsed?,
                        None => {
                            let mut value = parse_json(req.body())?;
                            ask.take_fields(&mut value)?;
                            ExecuteRequest::from_json(value)?
                        }
                    };
                    let out = self
                        .pipeline()
                        .execute_in(&who, parsed, &ask, background)
                        .await?;
                    Ok(json_body(StatusCode::OK, &out))
                }
                _ => not_allowed(),
            },
            ["v1", "credentials"] => {
                let who = self.authenticator().principal(&req).await?;
                match m {
                    Method::GET => {
                        let (items, cursor) = self
                            .credentials()
                            .list(&who, query_param(&req, "cursor"), limit_param(&req)?)
                            .await?;
                        Ok(json_response(
                            StatusCode::OK,
                            &json!({"credentials": items, "cursor": cursor}),
                        ))
                    }
                    Method::POST => {
                        let input: NewCredential = parse_json(req.body())?;
                        let meta = self.credentials().create(&who, input).await?;
                        Ok(json_response(StatusCode::CREATED, &json!(meta)))
                    }
                    _ => not_allowed(),
                }
            }
            ["v1", "credentials", alias] => {
                let who = self.authenticator().principal(&req).await?;
                match m {
                    Method::GET => Ok(json_response(
                        StatusCode::OK,
                        &json!(self.credentials().detail(&who, alias).await?),
                    )),
                    Method::PUT => {
                        who.require(crate::auth::Permission::Write)?;
                        who.require_scope(alias)?;
                        self.refuse_synced(&format!("{}{alias}", crate::credential::CRED_PREFIX))?;
                        let update: CredentialUpdate = parse_json(req.body())?;
                        let meta = self.credentials().update(&who, alias, update).await?;
                        Ok(json_response(StatusCode::OK, &json!(meta)))
                    }
                    Method::DELETE => {
                        who.require(crate::auth::Permission::Write)?;
                        who.require_scope(alias)?;
                        self.refuse_synced(&format!("{}{alias}", crate::credential::CRED_PREFIX))?;
                        self.credentials().delete(&who, alias).await?;
                        Ok(empty(StatusCode::NO_CONTENT))
                    }
                    _ => not_allowed(),
                }
            }
            ["v1", "keys"] => {
                let who = self.authenticator().principal(&req).await?;
                match m {
                    Method::GET => {
                        let listed = self.api_keys().list(&who).await?;
                        Ok(json_response(
                            StatusCode::OK,
                            &json!({"keys": listed.items, "refused": listed.refused}),
                        ))
                    }
                    Method::POST => {
                        let input: NewKey = parse_json(req.body())?;
                        let created = self.api_keys().create(&who, input).await?;
                        Ok(json_response(StatusCode::CREATED, &json!(created)))
                    }
                    _ => not_allowed(),
                }
            }
            ["v1", "keys", id] => {
                let who = self.authenticator().principal(&req).await?;
                match m {
                    Method::DELETE => {
                        who.require(crate::auth::Permission::Admin)?;
                        self.refuse_synced(&format!("{}{id}", crate::auth::keys::KEY_PREFIX))?;
                        self.api_keys().revoke(&who, id).await?;
                        Ok(empty(StatusCode::NO_CONTENT))
                    }
                    _ => not_allowed(),
                }
            }
            ["v1", "approvals"] => self.approvals_route(&req, None, None).await,
            ["v1", "approvals", id] => self.approvals_route(&req, Some(id), None).await,
            ["v1", "approvals", id, action] => {
                self.approvals_route(&req, Some(id), Some(action)).await
            }
            ["v1", "tokens"] => self.tokens_route(&req, None).await,
            ["v1", "tokens", id] => self.tokens_route(&req, Some(id)).await,
            ["v1", "roles"] => {
                let who = self.authenticator().principal(&req).await?;
                match m {
                    Method::GET => {
                        let listed = self.roles().list(&who).await?;
                        Ok(json_response(
                            StatusCode::OK,
                            &json!({"roles": listed.items, "refused": listed.refused}),
                        ))
                    }
                    Method::POST => {
                        let input: NewRole = parse_json(req.body())?;
                        let role = self.roles().create(&who, input).await?;
                        Ok(json_response(StatusCode::CREATED, &json!(role)))
                    }
                    _ => not_allowed(),
                }
            }
            ["v1", "roles", name] => {
                let who = self.authenticator().principal(&req).await?;
                match m {
                    Method::DELETE => {
                        who.require(crate::auth::Permission::Admin)?;
                        self.refuse_synced(&format!("{}{name}", crate::auth::roles::ROLE_PREFIX))?;
                        self.roles().delete(&who, name).await?;
                        Ok(empty(StatusCode::NO_CONTENT))
                    }
                    _ => not_allowed(),
                }
            }
            ["v1", "audit"] => {
                let who = self.authenticator().principal(&req).await?;
                match m {
                    Method::GET => {
                        // Who may read the audit is judged before its query.
                        who.require(crate::auth::Permission::Admin)?;
                        let filter = crate::audit::AuditFilter::from_query(req.uri().query())?;
                        let (events, cursor) = self
                            .audit()
                            .list_filtered(
                                &who,
                                &filter,
                                query_param(&req, "cursor"),
                                limit_param(&req)?,
                            )
                            .await?;
                        Ok(json_response(
                            StatusCode::OK,
                            &json!({"events": events, "cursor": cursor}),
                        ))
                    }
                    _ => not_allowed(),
                }
            }
            ["v1", "audit", "sinks"] => {
                let who = self.authenticator().principal(&req).await?;
                match m {
                    Method::GET => {
                        who.require(crate::auth::Permission::Admin)?;
                        let sinks = self.audit_sink_status();
                        Ok(json_response(StatusCode::OK, &json!({"sinks": sinks})))
                    }
                    _ => not_allowed(),
                }
            }
            ["v1", "admin", "migrate-records"] => {
                let who = self.authenticator().principal(&req).await?;
                match m {
                    Method::POST => {
                        #[derive(serde::Deserialize, Default)]
                        #[serde(deny_unknown_fields)]
                        struct Run {
                            #[serde(default)]
                            dry_run: bool,
                        }
                        let run: Run = if req.body().is_empty() {
                            Run::default()
                        } else {
                            parse_json(req.body())?
                        };
                        let done = self.migrate_records(&who, run.dry_run).await?;
                        Ok(json_response(StatusCode::OK, &json!(done)))
                    }
                    _ => not_allowed(),
                }
            }
            ["v1", "sync", "export"] => {
                let who = self.authenticator().principal(&req).await?;
                match m {
                    Method::GET => {
                        let export = self.export(&who).await?;
                        Ok(export_reply(&export, header_str(&req, "if-none-match")))
                    }
                    _ => not_allowed(),
                }
            }
            _ => Err(Error::not_found("no such route")),
        }
    }

    /// `POST /login`: the bearer token and CSRF token in the body, the twin session as an
    /// HttpOnly cookie.
    ///
    /// Before anything is counted or audited, a request a browser marks as cross-site is
    /// refused (403 `csrf_failed`, the same-origin rule of cookie requests) and so is a body
    /// that is not `Content-Type: application/json` (415): a web page the admin visits can send
    /// neither (a JSON body from another origin needs a CORS preflight, which is not granted),
    /// so it cannot spend the lockout's attempts. Agents and CLIs send no `Origin` and JSON.
    /// (docs/decisions/0044-login-refuses-cross-site-requests.md)
    async fn login(&self, req: &Request<Bytes>) -> Result<Response<Bytes>> {
        csrf::same_origin(req.headers(), &self.config().cors_origins)?;
        if !is_json(header_str(req, "content-type")) {
            return Err(Error::new(
                ErrorKind::UnsupportedMediaType,
                "login takes a JSON body: send Content-Type: application/json",
            ));
        }
        let client = self.client_ip_rule().client(req);
        let sessions = self.admin_sessions();
        let access = req
            .extensions()
            .get::<crate::auth::AccessIdentity>()
            .map(|a| a.0.as_str());
        let login = sessions.login(&client, access, req.body()).await?;
        let mut r = json_response(
            StatusCode::OK,
            &json!({"token": login.token, "expires_at": login.expires_at, "csrf_token": login.csrf_token}),
        );
        if let Ok(v) = HeaderValue::from_str(&token::session_cookie(
            &login.cookie,
            sessions.cookie_max_age_secs(),
        )) {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
        Ok(r)
    }
}
