//! Properties of the credential policy and the alias glob.

use proptest::prelude::*;
use vultrino_core::policy::{glob_match, Policy, RateLimit};
use vultrino_core::{Error, ErrorKind};

fn policy(hosts: &[&str]) -> Policy {
    Policy {
        allowed_hosts: hosts.iter().map(|h| h.to_string()).collect(),
        methods: None,
        path_prefixes: None,
        rate_limit: None,
    }
}

fn with_prefixes(prefixes: &[&str]) -> Policy {
    Policy {
        path_prefixes: Some(prefixes.iter().map(|p| p.to_string()).collect()),
        ..policy(&["api.example.com"])
    }
}

fn valid(p: Policy) -> Policy {
    match p.validate() {
        Ok(p) => p,
        Err(e) => panic!("expected a valid policy: {e}"),
    }
}

fn refusal_code(p: Policy) -> &'static str {
    match p.validate() {
        Ok(p) => panic!("expected a refusal, got {p:?}"),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::BadRequest);
            e.code().as_str()
        }
    }
}

fn check_code(p: &Policy, method: &str, host: &str, path: &str) -> Option<&'static str> {
    p.check(method, host, path).err().map(|e: Error| {
        assert_eq!(e.kind(), ErrorKind::Forbidden);
        e.code().as_str()
    })
}

/// Reference glob: textbook dynamic programming, obviously correct, quadratic.
fn glob_reference(pattern: &[u8], text: &[u8]) -> bool {
    let mut row = vec![false; text.len() + 1];
    row[0] = true;
    for &p in pattern {
        let mut next = vec![false; text.len() + 1];
        if p == b'*' {
            let mut seen = false;
            for j in 0..=text.len() {
                seen |= row[j];
                next[j] = seen;
            }
        } else {
            for j in 1..=text.len() {
                next[j] = row[j - 1] && text[j - 1] == p;
            }
        }
        row = next;
    }
    row[text.len()]
}

proptest! {
    #[test]
    fn glob_pattern_equal_to_text_matches(t in ".{0,40}") {
        prop_assert!(glob_match(&t, &t));
    }

    #[test]
    fn glob_star_matches_everything(t in ".{0,40}") {
        prop_assert!(glob_match("*", &t));
        prop_assert!(glob_match("**", &t));
    }

    #[test]
    fn glob_a_star_matches_exactly_what_starts_with_a(t in ".{0,40}") {
        prop_assert_eq!(glob_match("a*", &t), t.starts_with('a'));
    }

    #[test]
    fn glob_agrees_with_the_reference(pattern in "[ab*]{0,10}", text in "[ab]{0,14}") {
        prop_assert_eq!(glob_match(&pattern, &text), glob_reference(pattern.as_bytes(), text.as_bytes()));
    }

    #[test]
    fn wildcard_host_matches_subdomains_only(sub in "[a-z0-9-]{1,12}(\\.[a-z0-9-]{1,12}){0,2}",
                                             other in "[a-z0-9.-]{0,30}") {
        let p = valid(policy(&["*.example.com"]));
        let host = format!("{sub}.example.com");
        prop_assert!(p.check("GET", &host, "/").is_ok());
        let expected_ok = other.ends_with(".example.com") && other.len() > ".example.com".len();
        prop_assert_eq!(p.check("GET", &other, "/").is_ok(), expected_ok);
    }

    #[test]
    fn check_never_panics(method in ".{0,10}", host in ".{0,40}", path in ".{0,60}") {
        let p = Policy { methods: Some(vec!["GET".into()]), ..with_prefixes(&["/repos", "/v1/"]) };
        let p = valid(p);
        let _ = p.check(&method, &host, &path);
    }

    #[test]
    fn validate_never_panics_and_is_idempotent(host in ".{0,30}", method in ".{0,8}", prefix in ".{0,20}") {
        let p = Policy {
            allowed_hosts: vec![host],
            methods: Some(vec![method]),
            path_prefixes: Some(vec![prefix]),
            rate_limit: None,
        };
        if let Ok(p) = p.validate() {
            prop_assert_eq!(p.clone().validate().ok(), Some(p.clone()));
            for h in &p.allowed_hosts {
                prop_assert!(!h.chars().any(|c| c.is_ascii_uppercase() || c.is_whitespace()));
            }
        }
    }
}

#[test]
fn glob_pathological_pattern_stays_linear() {
    // Exponential backtracking would never finish; the greedy split search does ~1M steps.
    let text = "a".repeat(200_000);
    assert!(!glob_match("*a*a*a*a*a*a*a*a*a*a*b", &text));
    assert!(glob_match("*a*a*a*a*a*a*a*a*a*a*", &text));
    let hard = format!("{}b", "a*".repeat(1000));
    assert!(!glob_match(&hard, &text));
}

#[test]
fn wildcard_host_matches_any_depth_but_not_the_apex_or_lookalikes() {
    let p = valid(policy(&["*.example.com"]));
    assert!(p.check("GET", "a.example.com", "/").is_ok());
    assert!(p.check("GET", "a.b.example.com", "/").is_ok());
    assert_eq!(
        check_code(&p, "GET", "example.com", "/"),
        Some("host_not_allowed")
    );
    assert_eq!(
        check_code(&p, "GET", "evil-example.com", "/"),
        Some("host_not_allowed")
    );
    assert_eq!(
        check_code(&p, "GET", "example.com.evil.net", "/"),
        Some("host_not_allowed")
    );
    assert_eq!(
        check_code(&p, "GET", ".example.com", "/"),
        Some("host_not_allowed")
    );
}

#[test]
fn exact_host_matches_itself_only() {
    let p = valid(policy(&["api.github.com"]));
    assert!(p.check("GET", "api.github.com", "/").is_ok());
    assert!(
        p.check("GET", "api.github.com.", "/").is_ok(),
        "a trailing dot is the same host"
    );
    assert_eq!(
        check_code(&p, "GET", "github.com", "/"),
        Some("host_not_allowed")
    );
    assert_eq!(
        check_code(&p, "GET", "x.api.github.com", "/"),
        Some("host_not_allowed")
    );
}

#[test]
fn empty_allowed_hosts_are_refused() {
    assert_eq!(refusal_code(policy(&[])), "allowed_hosts_required");
}

#[test]
fn wildcards_matching_a_public_suffix_are_refused() {
    for h in [
        "*",
        "*.*",
        "*.com",
        "*.co.uk",
        "*.github.io",
        "*.workers.dev",
        "**.example.com",
    ] {
        assert_eq!(refusal_code(policy(&[h])), "invalid_host", "{h}");
    }
    assert_eq!(
        valid(policy(&["*.example.co.uk"])).allowed_hosts,
        ["*.example.co.uk"]
    );
}

#[test]
fn hosts_with_scheme_path_port_userinfo_or_misplaced_star_are_refused() {
    for h in [
        "https://api.github.com",
        "api.github.com/x",
        "api.github.com:443",
        "user@api.github.com",
        " api.github.com",
        "api .github.com",
        "api*.example.com",
        "a.*.example.com",
        "ex%61mple.com",
        "api.github.com?x",
        "",
        "a..b.com",
        "*.1.2.3.4",
        "*.[::1]",
    ] {
        assert_eq!(refusal_code(policy(&[h])), "invalid_host", "{h:?}");
    }
}

#[test]
fn hosts_with_characters_no_host_name_has_are_refused() {
    // The URL standard accepts these in a host; a policy naming one is a typo, said at once.
    for h in [
        "bad_host!",
        "api$.example.com",
        "a'b.example.com",
        "(api).example.com",
        "api+1.example.com",
        "a=b.example.com",
        "*.ex!ample.com",
    ] {
        assert_eq!(refusal_code(policy(&[h])), "invalid_host", "{h:?}");
    }
    let p = valid(policy(&[
        "my_service.example.com",
        "xn--bcher-kva.example",
        "bücher.example",
        "a-1.example.com",
    ]));
    assert_eq!(
        p.allowed_hosts,
        [
            "my_service.example.com",
            "xn--bcher-kva.example",
            "a-1.example.com"
        ]
    );
}

#[test]
fn hosts_are_normalized_like_request_hosts() {
    let p = valid(policy(&[
        "API.GitHub.com.",
        "api.github.com",
        "*.Example.COM",
        "bücher.example",
        "[2001:DB8::1]",
        "1.2.3.4",
    ]));
    assert_eq!(
        p.allowed_hosts,
        [
            "api.github.com",
            "*.example.com",
            "xn--bcher-kva.example",
            "[2001:db8::1]",
            "1.2.3.4"
        ]
    );
    // The request side: what url::Url gives for the same hosts matches.
    for u in [
        "https://API.GITHUB.COM/",
        "https://bücher.example/",
        "https://[2001:db8:0::1]/",
    ] {
        let url = url::Url::parse(u).unwrap_or_else(|e| panic!("{u}: {e}"));
        let host = url.host_str().unwrap_or_default();
        assert!(p.check("GET", host, url.path()).is_ok(), "{u} -> {host}");
    }
}

#[test]
fn methods_are_uppercased_and_must_be_tokens() {
    let p = valid(Policy {
        methods: Some(vec!["get".into(), "Post".into(), "GET".into()]),
        ..policy(&["h.example"])
    });
    assert_eq!(p.methods, Some(vec!["GET".to_string(), "POST".to_string()]));
    assert!(p.check("POST", "h.example", "/").is_ok());
    assert_eq!(
        check_code(&p, "DELETE", "h.example", "/"),
        Some("method_not_allowed_by_policy")
    );
    assert_eq!(
        check_code(&p, "get", "h.example", "/"),
        Some("method_not_allowed_by_policy")
    );
    for bad in [
        vec![],
        vec!["GE T".to_string()],
        vec!["".to_string()],
        vec!["GET\n".to_string()],
    ] {
        let p = Policy {
            methods: Some(bad),
            ..policy(&["h.example"])
        };
        assert_eq!(refusal_code(p), "invalid_method");
    }
}

#[test]
fn path_prefix_matches_whole_segments_unless_it_ends_in_slash() {
    let p = valid(with_prefixes(&["/repos"]));
    assert!(p.check("GET", "api.example.com", "/repos").is_ok());
    assert!(p.check("GET", "api.example.com", "/repos/x").is_ok());
    assert_eq!(
        check_code(&p, "GET", "api.example.com", "/reposX"),
        Some("path_not_allowed")
    );
    assert_eq!(
        check_code(&p, "GET", "api.example.com", "/"),
        Some("path_not_allowed")
    );

    let p = valid(with_prefixes(&["/repos/", "/v1/user"]));
    assert!(p.check("GET", "api.example.com", "/repos/x").is_ok());
    assert_eq!(
        check_code(&p, "GET", "api.example.com", "/repos"),
        Some("path_not_allowed")
    );
    assert!(p.check("GET", "api.example.com", "/v1/user/keys").is_ok());
    assert_eq!(
        check_code(&p, "GET", "api.example.com", "/v1/users"),
        Some("path_not_allowed")
    );
}

#[test]
fn url_normalizes_encoded_dot_segments_and_the_check_refuses_the_result() {
    // What the execute pipeline does: parse with `url`, then check the normalized path.
    let url = url::Url::parse("https://api.example.com/repos/%2e%2e/admin")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        url.path(),
        "/admin",
        "url treats %2e%2e as a dot segment (WHATWG)"
    );
    let p = valid(with_prefixes(&["/repos/"]));
    assert_eq!(
        check_code(&p, "GET", "api.example.com", url.path()),
        Some("path_not_allowed")
    );
}

#[test]
fn dot_segments_hidden_from_the_url_parser_are_refused() {
    let p = valid(with_prefixes(&["/repos/"]));
    for raw in [
        "https://api.example.com/repos/x%2f..%2fadmin",
        "https://api.example.com/repos/x%2F..%2F..%2Fadmin",
        "https://api.example.com/repos/%252e%252e/admin",
        "https://api.example.com/repos/x%5c..%5cadmin",
    ] {
        let url = url::Url::parse(raw).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            url.path().starts_with("/repos/"),
            "url keeps {raw} under the prefix"
        );
        assert_eq!(
            check_code(&p, "GET", "api.example.com", url.path()),
            Some("path_not_allowed"),
            "{raw}"
        );
    }
    // An encoded slash on its own is fine (GitLab's `projects/group%2Fproject`).
    assert!(p
        .check("GET", "api.example.com", "/repos/group%2Fproject")
        .is_ok());
}

#[test]
fn path_prefixes_are_validated_and_normalized() {
    for bad in [
        vec![],
        vec!["repos".to_string()],
        vec!["/a/../b".to_string()],
        vec!["/a/%2e%2e/b".to_string()],
        vec!["/a?x=1".to_string()],
        vec!["/a b".to_string()],
    ] {
        let p = Policy {
            path_prefixes: Some(bad.clone()),
            ..policy(&["h.example"])
        };
        assert_eq!(refusal_code(p), "invalid_path_prefix", "{bad:?}");
    }
    let p = valid(Policy {
        path_prefixes: Some(vec!["/café/".into()]),
        ..policy(&["h.example"])
    });
    assert_eq!(p.path_prefixes, Some(vec!["/caf%C3%A9/".to_string()]));
    let url = url::Url::parse("https://h.example/café/menu").unwrap_or_else(|e| panic!("{e}"));
    assert!(p.check("GET", "h.example", url.path()).is_ok());
}

#[test]
fn rate_limit_bounds_are_enforced() {
    let rl = |requests, per_seconds| Policy {
        rate_limit: Some(RateLimit {
            requests,
            per_seconds,
        }),
        ..policy(&["h.example"])
    };
    assert!(rl(1, 1).validate().is_ok());
    assert!(rl(10, 86_400).validate().is_ok());
    for (r, s) in [(0, 60), (10, 0), (10, 86_401)] {
        assert_eq!(refusal_code(rl(r, s)), "invalid_rate_limit", "{r}/{s}");
    }
}

#[test]
fn policy_json_rejects_unknown_fields_and_omits_absent_ones() {
    let bad =
        serde_json::from_str::<Policy>(r#"{"allowed_hosts":["h.example"],"allowed_host":"x"}"#);
    assert!(bad.is_err());
    let missing = serde_json::from_str::<Policy>(r#"{"methods":["GET"]}"#);
    assert!(missing.is_err(), "allowed_hosts is required");
    let p: Policy = serde_json::from_str(r#"{"allowed_hosts":["h.example"]}"#)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        serde_json::to_string(&p).unwrap_or_default(),
        r#"{"allowed_hosts":["h.example"]}"#
    );
}
