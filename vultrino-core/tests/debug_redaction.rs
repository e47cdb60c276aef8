//! Secrets never reach `Debug` output, also through the public types the core's restructuring
//! introduced (the outgoing request being prepared, the parsed `Authorization` header, the
//! session settings): a `{:?}` in a log line, a panic message or an `assert_eq!` failure must not
//! print a credential, a presented token or the admin password hash.

use std::collections::BTreeMap;

use vultrino_core::auth::session::SessionSettings;
use vultrino_core::auth::token::bearer;
use vultrino_core::credential::{CredentialData, CredentialType};
use vultrino_core::upstream::Outbound;

/// A `query_param` credential injected into an outgoing request: the value is in the request
/// (that is the point), but not in the request's `Debug`.
#[test]
fn an_injected_query_param_secret_is_not_in_the_outbound_debug() {
    const SECRET: &str = "qp-secret-Tz81xQ";
    let data = CredentialData::parse(
        CredentialType::QueryParam,
        serde_json::json!({"name": "api_key", "value": SECRET}),
    )
    .expect("valid query_param data");
    let url = url::Url::parse("https://api.example.com/v1/items?page=2").expect("url");
    let mut out =
        Outbound::new(http::Method::GET, url, &BTreeMap::new(), Vec::new()).expect("clean request");
    let _derived = data.inject(&mut out, None).expect("injected");
    assert!(
        out.query.iter().any(|(_, v)| v == SECRET),
        "the secret is in the request to send"
    );
    let printed = format!("{out:?}");
    assert!(
        !printed.contains(SECRET),
        "Outbound's Debug prints the injected secret: {printed}"
    );
}

/// The same for a header-injected secret (api_key): header values are marked sensitive, so this
/// one holds today; kept beside the query case so that both forms stay covered.
#[test]
fn an_injected_header_secret_is_not_in_the_outbound_debug() {
    const SECRET: &str = "sk-live-Hd72pQ";
    let data = CredentialData::parse(CredentialType::ApiKey, serde_json::json!({"key": SECRET}))
        .expect("valid api_key data");
    let url = url::Url::parse("https://api.example.com/v1/items").expect("url");
    let mut out =
        Outbound::new(http::Method::GET, url, &BTreeMap::new(), Vec::new()).expect("clean request");
    let _derived = data.inject(&mut out, None).expect("injected");
    let printed = format!("{out:?}");
    assert!(!printed.contains(SECRET), "{printed}");
}

/// What `Authorization: Bearer …` was read as: an API key (`vk_<id>_<secret>`) or a session
/// token is a live credential of its holder and must not be printed.
#[test]
fn a_presented_bearer_token_is_not_in_the_debug_of_its_parse() {
    for token in [
        "vk_0123456789abcdef_SeCrEtPaRtOfTheKey0123456789",
        "vs_SessionTokenBase64urlText0123456789abcdef",
    ] {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
        );
        let parsed = bearer(&headers);
        let printed = format!("{parsed:?}");
        assert!(
            !printed.contains(token),
            "the parsed Authorization header prints the token: {printed}"
        );
    }
}

/// `Config`'s `Debug` shows only whether a login is configured, never the admin password hash;
/// the session settings built from it keep that rule.
#[test]
fn the_admin_password_hash_is_not_in_the_session_settings_debug() {
    const HASH: &str =
        "$pbkdf2-sha256$i=100000,l=32$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGg";
    let settings = SessionSettings {
        admin_username: "admin",
        password_hash: Some(HASH),
        idle_secs: 1800,
        absolute_secs: 43_200,
        max_attempts: 5,
        max_attempts_per_user: 50,
        window_secs: 900,
    };
    let printed = format!("{settings:?}");
    assert!(
        !printed.contains("aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGg"),
        "SessionSettings' Debug prints the admin password hash: {printed}"
    );
    let config = vultrino_core::app::Config {
        admin_password_hash: Some(HASH.into()),
        ..vultrino_core::app::Config::default()
    };
    assert!(
        !format!("{config:?}").contains("aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGg"),
        "the rule Config already follows"
    );
}
