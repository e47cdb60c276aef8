//! The MCP tools and their input schemas, run by [`AppTools`] through the same [`App`]
//! operations as the HTTP API — `http_request` is [`App::execute`] (authorization, policy, SSRF
//! guard, injection, scrubbing, audit), the listing tools read KV metadata only — so an agent
//! gets exactly what its API key allows on `POST /v1/execute`, and never a secret.

use serde_json::{json, Map, Value};

use super::{ToolHost, ToolOutcome};
use crate::app::App;
use crate::approvals::Status;
use crate::auth::Principal;
use crate::credential::CredentialMeta;
use crate::error::{Code, Error, ErrorKind, PendingApproval};
use crate::execute::ExecuteRequest;

pub const LIST_CREDENTIALS: &str = "list_credentials";
pub const GET_CREDENTIAL_INFO: &str = "get_credential_info";
pub const HTTP_REQUEST: &str = "http_request";
pub const APPROVAL_STATUS: &str = "approval_status";

/// The tool definitions for `tools/list`, shaped for `version` (`title` and `outputSchema` exist
/// from 2025-06-18 on).
pub fn definitions(version: &str) -> Value {
    let modern = version != "2025-03-26";
    let credential_item = json!({
        "type": "object",
        "properties": {
            "alias": {"type": "string"},
            "type": {"type": "string", "enum": ["api_key", "basic_auth", "query_param", "oauth2"]},
            "description": {"type": "string"},
            "allowed_hosts": {"type": "array", "items": {"type": "string"}}
        },
        "required": ["alias", "type", "description", "allowed_hosts"]
    });
    let mut tools = vec![
        json!({
            "name": LIST_CREDENTIALS,
            "title": "List credentials",
            "description": "List the credentials this API key may use: alias, type, description and the \
                hosts each may be sent to. Never returns secret values.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "cursor": {"type": "string", "description": "Continue a previous listing (its `cursor`)."}
                },
                "additionalProperties": false
            },
            "outputSchema": {
                "type": "object",
                "properties": {
                    "credentials": {"type": "array", "items": credential_item},
                    "cursor": {"type": ["string", "null"]}
                },
                "required": ["credentials"]
            },
            "annotations": {"readOnlyHint": true, "openWorldHint": false}
        }),
        json!({
            "name": GET_CREDENTIAL_INFO,
            "title": "Describe a credential",
            "description": "Metadata of one credential (type, description, allowed hosts, timestamps). \
                Never returns the secret value.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "alias": {"type": "string", "description": "The credential alias, e.g. \"github\"."}
                },
                "required": ["alias"],
                "additionalProperties": false
            },
            "annotations": {"readOnlyHint": true, "openWorldHint": false}
        }),
        json!({
            "name": HTTP_REQUEST,
            "title": "HTTP request with a credential",
            "description": "Make an HTTPS request with a stored credential. Vultrino injects the secret \
                (you never see it), enforces the credential's policy (hosts, methods, paths, rate \
                limit) and removes the secret from the reply. Do not put secrets or Authorization \
                headers in the arguments. Some requests wait for a person's approval: the result \
                then has status 202 and an `approval` object (approval_id, expires_at); nothing was \
                sent. Once a person approved it (check with approval_status), call http_request \
                again with exactly the same arguments plus approval_id; it then runs once. Give a \
                short `reason` so the person knows why.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "credential": {"type": "string", "description": "Alias of the credential to use."},
                    "method": {"type": "string", "description": "HTTP method (default GET).", "default": "GET"},
                    "url": {"type": "string", "description": "Absolute https:// URL on one of the credential's allowed hosts."},
                    "headers": {
                        "type": "object",
                        "additionalProperties": {"type": "string"},
                        "description": "Extra request headers. Authentication headers are dropped."
                    },
                    "query": {
                        "type": "object",
                        "additionalProperties": {"type": ["string", "number", "boolean"]},
                        "description": "Query parameters added to the URL."
                    },
                    "body": {
                        "description": "Request body: a string is sent as is; an object or array as JSON."
                    },
                    "reason": {
                        "type": "string",
                        "maxLength": 500,
                        "description": "Why you make this request, shown to the person who approves it (when the request needs approval)."
                    },
                    "approval_id": {
                        "type": "string",
                        "description": "The approval_id of an approved request, when you send that same request again."
                    }
                },
                "required": ["credential", "url"],
                "additionalProperties": false
            },
            "outputSchema": {
                "type": "object",
                "properties": {
                    "status": {"type": "integer"},
                    "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                    "body": {"type": "string"},
                    "body_encoding": {"type": "string", "enum": ["utf8", "base64"]}
                },
                "required": ["status", "headers", "body", "body_encoding"]
            },
            "annotations": {"readOnlyHint": false, "destructiveHint": true, "openWorldHint": true}
        }),
        json!({
            "name": APPROVAL_STATUS,
            "title": "Check an approval",
            "description": "Where a request that waits for a person's approval stands: pending, \
                approved (call http_request again with the same arguments plus approval_id), \
                denied, executed (it ran already) or expired (ask again). Only your own approvals.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "approval_id": {"type": "string", "description": "The approval_id an http_request result gave."}
                },
                "required": ["approval_id"],
                "additionalProperties": false
            },
            "outputSchema": {
                "type": "object",
                "properties": {
                    "approval_id": {"type": "string"},
                    "status": {"type": "string", "enum": ["pending", "approved", "denied", "executed", "expired"]},
                    "credential": {"type": "string"},
                    "method": {"type": "string"},
                    "url": {"type": "string"},
                    "expires_at": {"type": "integer"},
                    "next": {"type": "string"}
                },
                "required": ["approval_id", "status", "expires_at", "next"]
            },
            "annotations": {"readOnlyHint": true, "openWorldHint": false}
        }),
    ];
    if !modern {
        for t in &mut tools {
            if let Some(o) = t.as_object_mut() {
                o.remove("title");
                o.remove("outputSchema");
            }
        }
    }
    Value::Array(tools)
}

/// A failed tool call as an `isError` outcome. Internal errors keep their generic message.
pub fn failure(e: &Error) -> ToolOutcome {
    let message = if e.kind() == ErrorKind::Internal {
        "internal error"
    } else {
        e.message()
    };
    ToolOutcome {
        value: json!({"error": {"code": e.code(), "message": message, "status": e.status().as_u16()}}),
        is_error: true,
    }
}

fn success(value: Value) -> ToolOutcome {
    ToolOutcome {
        value,
        is_error: false,
    }
}

fn listing_item(m: &CredentialMeta) -> Value {
    json!({
        "alias": m.alias,
        "type": m.kind.as_str(),
        "description": m.description,
        "allowed_hosts": m.allowed_hosts,
    })
}

fn invalid_arguments(tool: &str, message: impl std::fmt::Display) -> Error {
    Error::bad_request(format!("invalid arguments for {tool}: {message}"))
        .with_code(Code::InvalidArguments)
}

/// Only the named string argument, refusing unknown ones (the schemas say
/// `additionalProperties: false`, and a typo should not pass silently).
fn string_arg(
    tool: &str,
    args: &Map<String, Value>,
    name: &str,
    allowed: &[&str],
) -> Result<Option<String>, Error> {
    if let Some(k) = args.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(invalid_arguments(
            tool,
            format!(
                "unknown argument '{}'",
                k.chars().take(64).collect::<String>()
            ),
        ));
    }
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid_arguments(tool, format!("{name} must be a string"))),
    }
}

/// The tools of one caller: the app plus the principal its API key authenticated.
pub struct AppTools<'a> {
    pub app: &'a App,
    pub who: &'a Principal,
    /// Runs what must finish after the caller went away: an `http_request` whose client leaves
    /// while the upstream holds the request is still audited, `cancelled`, through it
    /// (decision 0065; `None` where nothing outlives the call, as over stdio in-process).
    pub background: Option<std::sync::Arc<dyn crate::ports::Background>>,
}

impl AppTools<'_> {
    async fn run(&self, name: &str, args: Map<String, Value>) -> Option<Result<Value, Error>> {
        Some(match name {
            LIST_CREDENTIALS => self.list(&args).await,
            GET_CREDENTIAL_INFO => self.info(&args).await,
            HTTP_REQUEST => self.request(args).await,
            APPROVAL_STATUS => self.approval_status(&args).await,
            _ => return None,
        })
    }

    async fn list(&self, args: &Map<String, Value>) -> Result<Value, Error> {
        let cursor = string_arg(LIST_CREDENTIALS, args, "cursor", &["cursor"])?;
        let (items, cursor) = self.app.credentials().list(self.who, cursor, None).await?;
        Ok(json!({
            "credentials": items.iter().map(listing_item).collect::<Vec<_>>(),
            "cursor": cursor,
        }))
    }

    async fn info(&self, args: &Map<String, Value>) -> Result<Value, Error> {
        let alias = string_arg(GET_CREDENTIAL_INFO, args, "alias", &["alias"])?
            .ok_or_else(|| invalid_arguments(GET_CREDENTIAL_INFO, "alias is required"))?;
        let meta = self.app.credentials().get(self.who, &alias).await?;
        let mut v = listing_item(&meta);
        v["created_at"] = json!(meta.created_at);
        v["updated_at"] = json!(meta.updated_at);
        Ok(v)
    }

    async fn request(&self, args: Map<String, Value>) -> Result<Value, Error> {
        const ALLOWED: [&str; 8] = [
            "credential",
            "method",
            "url",
            "headers",
            "query",
            "body",
            "approval_id",
            "reason",
        ];
        if let Some(k) = args.keys().find(|k| !ALLOWED.contains(&k.as_str())) {
            return Err(invalid_arguments(
                HTTP_REQUEST,
                format!(
                    "unknown argument '{}'",
                    k.chars().take(64).collect::<String>()
                ),
            ));
        }
        // The flat body of POST /v1/execute: one parser, one set of rules.
        // An approval's id and the agent's reason (crate::approvals) are arguments of their own.
        let mut args = Value::Object(args);
        let mut ask = crate::approvals::Ask {
            via: Some(crate::approvals::Via::Mcp),
            ..Default::default()
        };
        ask.take_fields(&mut args)
            .map_err(|e| invalid_arguments(HTTP_REQUEST, e.message()))?;
        let req = ExecuteRequest::from_json(args)
            .map_err(|e| invalid_arguments(HTTP_REQUEST, e.message()))?;
        let out = match self
            .app
            .pipeline()
            .execute_in(self.who, req, &ask, self.background.clone())
            .await
        {
            Ok(out) => out,
            // Waiting for a person is no failure: the result says so, shaped like a reply.
            Err(e) if e.kind() == ErrorKind::ApprovalPending => {
                return e.pending().map(pending_result).ok_or_else(|| e.clone());
            }
            Err(e) => return Err(e),
        };
        serde_json::to_value(out).map_err(|_| Error::internal())
    }

    async fn approval_status(&self, args: &Map<String, Value>) -> Result<Value, Error> {
        let id = string_arg(APPROVAL_STATUS, args, "approval_id", &["approval_id"])?
            .ok_or_else(|| invalid_arguments(APPROVAL_STATUS, "approval_id is required"))?;
        let a = self.app.approval_for(self.who, &id).await?;
        let next = match a.status {
            Status::Pending => "Still waiting for a person. Check again later (do not resend yet).",
            Status::Approved => {
                "Approved: call http_request again with exactly the same arguments plus \
                 approval_id. It runs once."
            }
            Status::Denied => "Denied by a person: do not send this request.",
            Status::Executed => {
                "Already used: the approved request ran. A new request needs a new approval."
            }
            Status::Expired => "Expired: send the request again (without approval_id) to ask anew.",
        };
        Ok(json!({
            "approval_id": a.id,
            "status": a.status.as_str(),
            "credential": a.credential,
            "method": a.method,
            "url": a.url,
            "expires_at": a.expires_at,
            "next": next,
        }))
    }
}

/// The result of an `http_request` that waits for approval: `status` 202 and the HTTP 202's
/// body (as `POST /v1/execute` answers), plus an `approval` object that says what to do next.
/// The reply's schema fields are all there, so a client checking `outputSchema` accepts it.
fn pending_result(p: &PendingApproval) -> Value {
    let body = json!({
        "approval_id": p.approval_id,
        "status": "pending",
        "expires_at": p.expires_at,
    });
    json!({
        "status": 202,
        "headers": {"location": format!("/v1/approvals/{}", p.approval_id)},
        "body": body.to_string(),
        "body_encoding": "utf8",
        "approval": {
            "approval_id": p.approval_id,
            "status": "pending",
            "expires_at": p.expires_at,
            "next": format!(
                "Nothing was sent: this request waits for a person's approval. Check with \
                 approval_status {{\"approval_id\": \"{id}\"}}; once approved, call http_request \
                 again with exactly the same arguments plus \"approval_id\": \"{id}\" (it runs \
                 once). It expires at {} (ms since the epoch).",
                p.expires_at,
                id = p.approval_id
            ),
        },
    })
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
impl ToolHost for AppTools<'_> {
    async fn call_tool(&self, name: &str, arguments: Map<String, Value>) -> Option<ToolOutcome> {
        Some(match self.run(name, arguments).await? {
            Ok(v) => success(v),
            Err(e) => failure(&e),
        })
    }
}
