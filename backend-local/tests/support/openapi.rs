//! Every reply the suites receive, checked against the API's OpenAPI document
//! (`vultrino_core::api::openapi::DOCUMENT`, what `GET /openapi.json` serves): the status must be
//! documented for the route and method, the content type must be one the document names, and a
//! JSON body must fit the schema. [`Client::send_raw`](super::Client::send_raw) calls
//! [`check`] on every reply, so each case of the HTTP suite (both backends) is also a case of
//! the contract (docs/decisions/0103-openapi-document.md).
//!
//! The schema checker covers the part of JSON Schema the document uses: `$ref`, `type` (one or a
//! list), `const`, `enum`, `properties`, `required`, `additionalProperties`, `items`,
//! `minItems`/`maxItems`, `minimum`/`maximum`, `anyOf`, `oneOf`, `allOf`. A keyword it does not know
//! fails the check, so the document cannot use one that is silently ignored.

use std::sync::OnceLock;

use serde_json::Value;

use super::Reply;

fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        serde_json::from_str(vultrino_core::api::openapi::DOCUMENT).expect("the document is JSON")
    })
}

/// The segments of a path, as the router reads them (a trailing `/` ignored).
fn segments(path: &str) -> Vec<&str> {
    let path = path.trim_end_matches('/');
    if path.is_empty() {
        return Vec::new();
    }
    path.split('/').skip(1).collect()
}

/// The document's path template that `path` (no query) falls under.
pub fn template_of(path: &str) -> Option<&'static str> {
    if path.starts_with("/proxy/") {
        return Some("/proxy/{alias}/{path}");
    }
    let segs = segments(path);
    document()["paths"]
        .as_object()?
        .keys()
        .find(|template| {
            let pattern = segments(template);
            pattern.len() == segs.len()
                && pattern
                    .iter()
                    .zip(&segs)
                    .all(|(p, s)| p.starts_with('{') || p == s)
        })
        .map(String::as_str)
}

/// Follow `$ref`s to the object they name.
fn resolve(mut v: &'static Value) -> Result<&'static Value, String> {
    while let Some(r) = v.get("$ref").and_then(Value::as_str) {
        v = r
            .strip_prefix('#')
            .and_then(|p| document().pointer(p))
            .ok_or_else(|| format!("unresolved $ref {r}"))?;
    }
    Ok(v)
}

/// Check `reply` against the document. `Ok` for replies the document does not describe: a path
/// that is no route (404), a method the route does not serve (405, checked as an error), a
/// `HEAD` or `OPTIONS`.
pub fn check(reply: &Reply) -> Result<(), String> {
    let path = reply.path.split('?').next().unwrap_or_default();
    let Some(template) = template_of(path) else {
        return Ok(());
    };
    let content_type = reply
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_string());
    let method = reply.method.to_ascii_lowercase();
    let status = reply.status.to_string();
    // Vultrino's own replies on the proxy carry X-Vultrino-Error: the documented reply of that
    // status (an approval that waits), else the JSON error shape naming the same code.
    if let Some(code) = reply.headers.get("x-vultrino-error") {
        let code = code.to_str().unwrap_or_default();
        if let Some(response) = document()["paths"][template]
            .get(&method)
            .and_then(|op| op["responses"].get(&status))
        {
            let schema = &resolve(response)?["content"]["application/json"]["schema"];
            return validate(schema, &reply.body, "body");
        }
        validate(
            &document()["components"]["schemas"]["Error"],
            &reply.body,
            "body",
        )?;
        if reply.body["error"]["code"] != code {
            return Err(format!(
                "X-Vultrino-Error {code:?} is not the body's code {}",
                reply.body["error"]["code"]
            ));
        }
        return Ok(());
    }
    if template.starts_with("/proxy/") {
        // Anything else there is the upstream's reply.
        return Ok(());
    }
    let Some(operation) = document()["paths"][template].get(&method) else {
        if matches!(method.as_str(), "head" | "options") {
            return Ok(());
        }
        // A method the route does not serve: a refusal (405, or a 4xx of a layer before the
        // router) in the route's error shape (the JSON error shape; on /mcp a JSON-RPC error).
        let item = document()["paths"][template].as_object();
        let errors = item
            .and_then(|ops| ops.values().find_map(|op| op["responses"].get("4XX")))
            .ok_or_else(|| format!("{template}: no 4XX documented"))?;
        if !(400..500).contains(&reply.status) {
            return Err(format!(
                "{} on a method the route does not serve",
                reply.status
            ));
        }
        let schema = &resolve(errors)?["content"]["application/json"]["schema"];
        return validate(schema, &reply.body, "body");
    };
    let range = format!("{}XX", status.chars().next().unwrap_or('0'));
    let responses = &operation["responses"];
    let response = [status.as_str(), range.as_str(), "default"]
        .into_iter()
        .find_map(|k| responses.get(k))
        .ok_or_else(|| format!("status {status} is not documented"))?;
    let response = resolve(response)?;
    let Some(content) = response.get("content").and_then(Value::as_object) else {
        if reply.text.is_empty() {
            return Ok(());
        }
        return Err(format!("status {status} is documented without a body"));
    };
    let Some(content_type) = content_type else {
        return Err(format!("status {status}: a body without Content-Type"));
    };
    let media = content
        .get(&content_type)
        .or_else(|| content.get("*/*"))
        .ok_or_else(|| {
            format!(
                "status {status}: Content-Type {content_type} is not one the document names ({:?})",
                content.keys().collect::<Vec<_>>()
            )
        })?;
    if content_type != "application/json" {
        return Ok(());
    }
    if serde_json::from_str::<Value>(&reply.text).is_err() {
        return Err(format!("status {status}: the body is not JSON"));
    }
    match media.get("schema") {
        Some(schema) => validate(schema, &reply.body, "body"),
        None => Ok(()),
    }
}

fn type_fits(name: &str, v: &Value) -> bool {
    match name {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        _ => false,
    }
}

/// Validate `v` (at `at`, for the message) against `schema`.
fn validate(schema: &'static Value, v: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(schema)?;
    let Some(keywords) = schema.as_object() else {
        return Err(format!("{at}: the schema is not an object"));
    };
    for (k, s) in keywords {
        match k.as_str() {
            "$ref" | "description" => {}
            "type" => {
                let names: Vec<&str> = match s {
                    Value::String(one) => vec![one.as_str()],
                    Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
                    _ => return Err(format!("{at}: a type that is not a name or a list")),
                };
                if !names.iter().any(|n| type_fits(n, v)) {
                    return Err(format!("{at}: {v} is not of type {s}"));
                }
            }
            "const" if v != s => return Err(format!("{at}: {v} is not {s}")),
            "enum" if !s.as_array().is_some_and(|e| e.contains(v)) => {
                return Err(format!("{at}: {v} is not one of {s}"))
            }
            "const" | "enum" => {}
            "required" => {
                for name in s.as_array().into_iter().flatten().filter_map(Value::as_str) {
                    if v.is_object() && v.get(name).is_none() {
                        return Err(format!("{at}: {name} is missing"));
                    }
                }
            }
            "properties" => {
                if let (Some(props), Some(obj)) = (s.as_object(), v.as_object()) {
                    for (name, value) in obj {
                        if let Some(p) = props.get(name) {
                            validate(p, value, &format!("{at}.{name}"))?;
                        }
                    }
                }
            }
            "additionalProperties" => {
                let Some(obj) = v.as_object() else { continue };
                let known = schema.get("properties").and_then(Value::as_object);
                for (name, value) in obj {
                    if known.is_some_and(|p| p.contains_key(name)) {
                        continue;
                    }
                    match s {
                        Value::Bool(false) => {
                            return Err(format!("{at}: {name} is not a documented field"))
                        }
                        Value::Bool(true) => {}
                        other => validate(other, value, &format!("{at}.{name}"))?,
                    }
                }
            }
            "items" => {
                for (i, item) in v.as_array().into_iter().flatten().enumerate() {
                    validate(s, item, &format!("{at}[{i}]"))?;
                }
            }
            "minItems" | "maxItems" => {
                if let (Some(n), Some(items)) = (s.as_u64(), v.as_array()) {
                    let len = items.len() as u64;
                    if (k == "minItems" && len < n) || (k == "maxItems" && len > n) {
                        return Err(format!("{at}: {len} items breaks {k} {n}"));
                    }
                }
            }
            "minimum" | "maximum" => {
                if let (Some(limit), Some(n)) = (s.as_f64(), v.as_f64()) {
                    if (k == "minimum" && n < limit) || (k == "maximum" && n > limit) {
                        return Err(format!("{at}: {n} breaks {k} {limit}"));
                    }
                }
            }
            "anyOf" | "oneOf" | "allOf" => {
                let list = s.as_array().into_iter().flatten();
                let results: Vec<Result<(), String>> =
                    list.map(|sub| validate(sub, v, at)).collect();
                let fits = results.iter().filter(|r| r.is_ok()).count();
                let ok = match k.as_str() {
                    "anyOf" => fits >= 1,
                    "oneOf" => fits == 1,
                    _ => fits == results.len(),
                };
                if !ok {
                    let why: Vec<String> = results.into_iter().filter_map(Result::err).collect();
                    return Err(format!("{at}: fits {fits} of {k}: {}", why.join("; ")));
                }
            }
            other => return Err(format!("{at}: the checker does not know keyword {other}")),
        }
    }
    Ok(())
}
