//! The OpenAPI document (`GET /openapi.json`): served to anyone, the same on both backends, and
//! true to the router. Every reply of the whole suite is checked against it by the harness
//! (`support::openapi::check`, called by the client on every reply); the cases here check the
//! document itself and that the checker does refuse what breaks it.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::env;
use crate::support::openapi::{check, template_of};
use crate::support::{expect, Reply};

/// The document is public (it holds no secret), JSON, and exactly the one compiled into the
/// core; it lists every route of the router with its methods and no other route, and each
/// documented method is served (never a 405).
#[tokio::test]
async fn the_document_is_public_and_lists_every_route_with_its_methods() {
    let e = env().await;
    let r = e.c.send("GET", "/openapi.json", None, None).await;
    expect(&r, 200, None);
    assert_eq!(
        r.headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    assert_eq!(r.text, vultrino_core::api::openapi::DOCUMENT);
    assert_eq!(r.body["openapi"], "3.1.0");

    let paths = r.body["paths"].as_object().unwrap();
    let routes: BTreeSet<&str> = vultrino_core::api::ROUTES.iter().map(|(p, _)| *p).collect();
    let documented: BTreeSet<&str> = paths
        .keys()
        .map(String::as_str)
        .filter(|p| !p.starts_with("/proxy/"))
        .collect();
    assert_eq!(documented, routes, "the document's routes are the router's");
    assert!(paths.contains_key("/proxy/{alias}/{path}"));

    for (template, allow) in vultrino_core::api::ROUTES {
        let methods: BTreeSet<String> = ["get", "put", "post", "delete", "patch"]
            .into_iter()
            .filter(|m| paths[*template].get(*m).is_some())
            .map(str::to_uppercase)
            .collect();
        let allowed: BTreeSet<String> = allow.split(", ").map(str::to_string).collect();
        assert_eq!(methods, allowed, "{template}: documented methods");
        // Each documented method is served (no credentials: nothing changes, nothing ends).
        let path = template.replace('{', "x-").replace('}', "");
        assert_eq!(template_of(&path), Some(*template));
        for method in &methods {
            let r = e.c.send(method, &path, None, None).await;
            assert!(
                r.status != 405 && r.status < 500,
                "{method} {path}: {} {}",
                r.status,
                r.text
            );
        }
    }
}

fn reply(method: &str, path: &str, status: u16, body: Value) -> Reply {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("content-type", "application/json".parse().unwrap());
    Reply {
        method: method.into(),
        path: path.into(),
        status,
        headers,
        text: body.to_string(),
        body,
    }
}

/// The checker the harness runs on every reply refuses what breaks the document: an
/// undocumented status, a field the document does not name, a missing one, a wrong type, an
/// error that is not the error shape; and it accepts the replies the document describes.
#[test]
fn the_reply_checker_refuses_what_breaks_the_document() {
    let health = reply("GET", "/healthz", 200, json!({"status": "ok"}));
    assert_eq!(check(&health), Ok(()));
    let error = json!({"error": {"code": "not_found", "message": "no such credential"}});
    assert_eq!(
        check(&reply("GET", "/v1/credentials/gh", 404, error.clone())),
        Ok(())
    );
    let meta = json!({"alias": "gh", "id": "c1", "type": "api_key", "description": "",
        "allowed_hosts": ["api.github.com"], "created_at": 1, "updated_at": 1});
    assert_eq!(
        check(&reply("POST", "/v1/credentials", 201, meta.clone())),
        Ok(())
    );

    let mut extra = meta.clone();
    extra["secret"] = json!("sk-live");
    let mut missing = meta.clone();
    missing.as_object_mut().unwrap().remove("id");
    let mut wrong_type = meta.clone();
    wrong_type["created_at"] = json!("yesterday");
    for (what, r) in [
        (
            "an undocumented status",
            reply("POST", "/v1/credentials", 200, meta.clone()),
        ),
        ("a 500", reply("GET", "/v1/credentials/gh", 500, error)),
        (
            "an undocumented field",
            reply("POST", "/v1/credentials", 201, extra),
        ),
        (
            "a missing field",
            reply("POST", "/v1/credentials", 201, missing),
        ),
        (
            "a wrong type",
            reply("POST", "/v1/credentials", 201, wrong_type),
        ),
        (
            "an error of another shape",
            reply("GET", "/v1/keys", 403, json!({"error": "forbidden"})),
        ),
        (
            "a body where none is documented",
            reply("DELETE", "/v1/keys/k1", 204, json!({})),
        ),
    ] {
        assert!(check(&r).is_err(), "{what} passed the checker");
    }
}
