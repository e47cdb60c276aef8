//! Properties of the credential policy and the alias glob.

use proptest::prelude::*;
use vultrino_core::policy::{glob_match, Policy, RateLimit};
use vultrino_core::ports::session_rules::hit;
use vultrino_core::{Error, ErrorKind};

fn policy(hosts: &[&str]) -> Policy {
    Policy {
        allowed_hosts: hosts.iter().map(|h| h.to_string()).collect(),
        methods: None,
        path_prefixes: None,
        rate_limit: None,
        pass_cookies: false,
        require_approval: None,
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
            pass_cookies: false,
            require_approval: None,
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

// ---- widening (docs/decisions/0050-policy-widening-needs-admin.md) ---------------------------

const HOSTS: [&str; 6] = [
    "api.example.com",
    "*.example.com",
    "*.api.example.com",
    "other.example.net",
    "*.amazonaws.com",
    "x.s3.amazonaws.com",
];
const METHODS: [&str; 4] = ["GET", "POST", "DELETE", "PATCH"];
const PREFIXES: [&str; 6] = ["/", "/repos", "/repos/", "/repos/a", "/user", "/repos/a/b"];

fn sub_list<T: Clone>(all: &[T], mask: u8) -> Vec<T> {
    all.iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, x)| x.clone())
        .collect()
}

/// A validated policy from masks over the lists above.
fn arb_policy() -> impl Strategy<Value = Policy> {
    (
        1u8..64,
        proptest::option::of(1u8..16),
        proptest::option::of(1u8..64),
        proptest::option::of((1u32..20, 1u32..200)),
        any::<bool>(),
    )
        .prop_map(|(h, m, p, rl, cookies)| {
            valid(Policy {
                allowed_hosts: sub_list(&HOSTS, h).into_iter().map(String::from).collect(),
                methods: m.map(|m| {
                    sub_list(&METHODS, m)
                        .into_iter()
                        .map(String::from)
                        .collect()
                }),
                path_prefixes: p.map(|p| {
                    sub_list(&PREFIXES, p)
                        .into_iter()
                        .map(String::from)
                        .collect()
                }),
                rate_limit: rl.map(|(requests, per_seconds)| RateLimit {
                    requests,
                    per_seconds,
                }),
                pass_cookies: cookies,
                require_approval: None,
            })
        })
}

/// One narrowing step of a policy (or none, when the step does not apply).
fn narrow(p: &Policy, step: u8, pick: usize) -> Policy {
    let mut n = p.clone();
    match step % 8 {
        0 if n.allowed_hosts.len() > 1 => {
            n.allowed_hosts.remove(pick % n.allowed_hosts.len());
        }
        1 => match &mut n.methods {
            None => n.methods = Some(vec![METHODS[pick % METHODS.len()].to_string()]),
            Some(m) if m.len() > 1 => {
                m.remove(pick % m.len());
            }
            Some(_) => {}
        },
        2 => match &mut n.path_prefixes {
            None => n.path_prefixes = Some(vec![PREFIXES[pick % PREFIXES.len()].to_string()]),
            Some(list) => {
                // Lengthen one prefix: a longer path under it.
                let i = pick % list.len();
                let longer = if list[i].ends_with('/') {
                    format!("{}sub", list[i])
                } else {
                    format!("{}/sub", list[i])
                };
                list[i] = longer;
            }
        },
        3 => match &mut n.rate_limit {
            None => {
                n.rate_limit = Some(RateLimit {
                    requests: 1 + (pick % 10) as u32,
                    per_seconds: 60,
                })
            }
            Some(rl) => rl.requests = rl.requests.div_ceil(2).max(1),
        },
        4 => {
            // A longer window with at most half the requests.
            if let Some(rl) = &mut n.rate_limit {
                if rl.requests >= 2 && rl.per_seconds < 80_000 {
                    rl.requests /= 2;
                    rl.per_seconds = rl.per_seconds * 2 + (pick % 7) as u32;
                }
            }
        }
        5 => n.pass_cookies = false,
        6 => {
            // A wildcard replaced by a host it matches.
            if let Some(i) = n.allowed_hosts.iter().position(|h| h == "*.example.com") {
                n.allowed_hosts[i] = "deep.api.example.com".into();
            }
        }
        _ => {}
    }
    valid(n)
}

/// Requests to try a policy on: every host, method and path the lists above can tell apart.
fn probes() -> Vec<(&'static str, &'static str, &'static str)> {
    let hosts = [
        "api.example.com",
        "a.example.com",
        "b.api.example.com",
        "deep.api.example.com",
        "example.com",
        "other.example.net",
        "ec2.amazonaws.com",
        "x.s3.amazonaws.com",
        "y.s3.amazonaws.com",
        "evil.example.org",
    ];
    let paths = [
        "/",
        "/repos",
        "/repos/",
        "/repos/a",
        "/repos/a/b",
        "/repos/a/sub",
        "/repos/b",
        "/reposX",
        "/user",
        "/user/sub",
        "/users",
        "/sub",
        "/repos/sub",
    ];
    let mut out = Vec::new();
    for h in hosts {
        for m in METHODS.iter().chain(&["PUT"]) {
            for p in paths {
                out.push((*m, h, p));
            }
        }
    }
    out
}

proptest! {
    /// Any chain of narrowing steps is never a widening, and lets through no request the
    /// original refused.
    #[test]
    fn narrowing_is_never_widening(old in arb_policy(),
                                   steps in proptest::collection::vec((any::<u8>(), any::<usize>()), 1..6)) {
        let mut new = old.clone();
        for (step, pick) in steps {
            new = narrow(&new, step, pick);
        }
        prop_assert_eq!(old.widening(&new), None, "{:?} -> {:?}", old, new);
        for (m, h, p) in probes() {
            if new.check(m, h, p).is_ok() {
                prop_assert!(old.check(m, h, p).is_ok(), "{} {} {} under {:?}, not {:?}", m, h, p, new, old);
            }
        }
    }

    /// Whatever `widening` says is not a widening lets through no request the old policy
    /// refused: the function agrees with what `check` does.
    #[test]
    fn what_is_not_widening_lets_nothing_new_through(old in arb_policy(), new in arb_policy()) {
        if !old.widens(&new) {
            for (m, h, p) in probes() {
                if new.check(m, h, p).is_ok() {
                    prop_assert!(old.check(m, h, p).is_ok(), "{} {} {} under {:?}, not {:?}", m, h, p, new, old);
                }
            }
            prop_assert!(!new.pass_cookies || old.pass_cookies);
        }
    }

    /// Removing a restriction, adding a host or turning cookies on always widens.
    #[test]
    fn removing_a_restriction_always_widens(old in arb_policy(), host in "[a-z]{1,8}\\.example\\.org") {
        if old.methods.is_some() {
            let wider = Policy { methods: None, ..old.clone() };
            prop_assert!(old.widens(&wider), "{:?}", wider);
        }
        if old.path_prefixes.is_some() {
            let wider = Policy { path_prefixes: None, ..old.clone() };
            prop_assert!(old.widens(&wider), "{:?}", wider);
        }
        if old.rate_limit.is_some() {
            let wider = Policy { rate_limit: None, ..old.clone() };
            prop_assert!(old.widens(&wider), "{:?}", wider);
        }
        if !old.pass_cookies {
            let wider = Policy { pass_cookies: true, ..old.clone() };
            prop_assert!(old.widens(&wider), "{:?}", wider);
        }
        let mut more = old.clone();
        more.allowed_hosts.push(host);
        prop_assert!(old.widens(&valid(more)));
    }

    /// A rate limit that `admits_more_than` says is no wider never lets through, in any stream
    /// of requests, a set of requests that the old limit would refuse any of, were they sent
    /// alone. Both limits run on the real limiter rules (`session_rules::hit`).
    #[test]
    fn a_rate_limit_that_is_no_wider_admits_nothing_the_old_one_refuses(
        old in (1u32..8, 1u32..8), new in (1u32..8, 1u32..8),
        gaps in proptest::collection::vec(0u64..4000, 1..60),
    ) {
        let old = RateLimit { requests: old.0, per_seconds: old.1 };
        let new = RateLimit { requests: new.0, per_seconds: new.1 };
        let run = |rl: &RateLimit, times: &[u64]| -> Vec<u64> {
            let mut slot = None;
            times
                .iter()
                .copied()
                .filter(|&t| hit(&mut slot, u64::from(rl.per_seconds) * 1000, rl.requests, t).1.allowed)
                .collect()
        };
        let mut t = 1_000_000u64;
        let times: Vec<u64> = gaps.iter().map(|g| { t += g; t }).collect();
        let admitted = run(&new, &times);
        if !new.admits_more_than(&old) {
            prop_assert_eq!(run(&old, &admitted), admitted.clone(), "{:?} after {:?}", new, old);
        }
        if new.per_seconds == old.per_seconds && new.requests > old.requests {
            prop_assert!(new.admits_more_than(&old));
        }
    }
}

#[test]
fn widening_examples() {
    let base = valid(Policy {
        allowed_hosts: vec!["api.example.com".into(), "*.example.net".into()],
        methods: Some(vec!["GET".into()]),
        path_prefixes: Some(vec!["/repos".into()]),
        rate_limit: Some(RateLimit {
            requests: 10,
            per_seconds: 60,
        }),
        pass_cookies: false,
        require_approval: None,
    });
    let with = |f: &dyn Fn(&mut Policy)| {
        let mut p = base.clone();
        f(&mut p);
        valid(p)
    };
    let widened = [
        with(&|p| p.allowed_hosts.push("evil.example.org".into())),
        with(&|p| p.allowed_hosts[0] = "*.example.com".into()),
        with(&|p| p.methods = None),
        with(&|p| p.methods = Some(vec!["GET".into(), "DELETE".into()])),
        with(&|p| p.path_prefixes = None),
        with(&|p| p.path_prefixes = Some(vec!["/".into()])),
        with(&|p| p.path_prefixes = Some(vec!["/repos".into(), "/user".into()])),
        with(&|p| p.path_prefixes = Some(vec!["/rep".into()])),
        with(&|p| p.rate_limit = None),
        with(&|p| {
            p.rate_limit = Some(RateLimit {
                requests: 11,
                per_seconds: 60,
            })
        }),
        with(&|p| {
            p.rate_limit = Some(RateLimit {
                requests: 10,
                per_seconds: 30,
            })
        }),
        with(&|p| {
            p.rate_limit = Some(RateLimit {
                requests: 10,
                per_seconds: 3600,
            })
        }),
        with(&|p| {
            p.rate_limit = Some(RateLimit {
                requests: 6,
                per_seconds: 120,
            })
        }),
        with(&|p| p.pass_cookies = true),
    ];
    for new in &widened {
        assert!(base.widens(new), "{new:?}");
    }
    let narrowed = [
        base.clone(),
        with(&|p| p.allowed_hosts = vec!["api.example.com".into()]),
        with(&|p| p.allowed_hosts[1] = "a.b.example.net".into()),
        with(&|p| p.allowed_hosts[1] = "*.eu.example.net".into()),
        with(&|p| p.path_prefixes = Some(vec!["/repos/".into()])),
        with(&|p| p.path_prefixes = Some(vec!["/repos/a".into(), "/repos/b/".into()])),
        with(&|p| {
            p.rate_limit = Some(RateLimit {
                requests: 3,
                per_seconds: 60,
            })
        }),
        with(&|p| {
            p.rate_limit = Some(RateLimit {
                requests: 5,
                per_seconds: 120,
            })
        }),
        with(&|p| {
            p.rate_limit = Some(RateLimit {
                requests: 3,
                per_seconds: 30,
            })
        }),
    ];
    for new in &narrowed {
        assert_eq!(base.widening(new), None, "{new:?}");
    }
    // An exact host under a public suffix below a wildcard's domain is not covered by it.
    let aws = valid(policy(&["*.amazonaws.com"]));
    assert!(aws.widens(&valid(policy(&["bucket.s3.amazonaws.com"]))));
    assert!(aws.widens(&valid(policy(&["*.bucket.s3.amazonaws.com"]))));
    assert!(!aws.widens(&valid(policy(&["ec2.amazonaws.com"]))));
    // A wildcard over a public suffix stored before validation refused it matches nothing, so it
    // covers nothing below it either.
    let stored = Policy {
        allowed_hosts: vec!["*.cloudfunctions.net".into()],
        ..Policy::default()
    };
    assert!(stored.widens(&valid(policy(&["*.my-project.cloudfunctions.net"]))));
    assert!(stored.widens(&valid(policy(&["x.cloudfunctions.net"]))));
}

// ---- paths as upstreams read them (docs/decisions/0051-…) ------------------------------------

/// One way an upstream framework may read a raw path before it routes it.
#[derive(Debug, Clone, Copy)]
struct Reading {
    /// Percent-decoding rounds before routing (0 to 3).
    decodes: u8,
    /// `;` path parameters cut from each segment (Tomcat, Jetty, Spring).
    cut_parameters: bool,
    /// `\` read as `/` (IIS, some Java containers).
    backslash: bool,
    /// Unicode NFKC folding of the full-width and small dots into `.`, of the dot leaders into
    /// `..` and `...`, and of the full-width and small solidi into `/` and `\`.
    fold_dots: bool,
    /// A segment cut at its first NUL, and trailing blanks dropped (C servers, Windows).
    trim: bool,
    /// Overlong UTF-8 forms of ASCII characters read as the character (`%c0%ae` as `.`, `%c0%af`
    /// as `/`: old IIS, Tomcat before 6.0.18).
    overlong: bool,
}

fn arb_reading() -> impl Strategy<Value = Reading> {
    (
        0u8..4,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(decodes, cut_parameters, backslash, fold_dots, trim, overlong)| Reading {
                decodes,
                cut_parameters,
                backslash,
                fold_dots,
                trim,
                overlong,
            },
        )
}

/// Overlong UTF-8 forms of ASCII characters (2, 3 and 4 bytes) replaced by the character.
fn fold_overlong(input: &[u8]) -> Vec<u8> {
    let cont = |b: Option<&u8>| {
        b.filter(|&&b| b & 0xC0 == 0x80)
            .map(|&b| u32::from(b & 0x3F))
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < input.len() {
        let b0 = u32::from(input[i]);
        let (c1, c2, c3) = (
            cont(input.get(i + 1)),
            cont(input.get(i + 2)),
            cont(input.get(i + 3)),
        );
        let folded = match (b0, c1, c2, c3) {
            (0xC0 | 0xC1, Some(c1), _, _) => Some((((b0 & 0x1F) << 6) | c1, 2)),
            (0xE0, Some(c1), Some(c2), _) => Some(((c1 << 6) | c2, 3)),
            (0xF0, Some(c1), Some(c2), Some(c3)) => Some(((c1 << 12) | (c2 << 6) | c3, 4)),
            _ => None,
        };
        match folded {
            Some((c, len)) if c < 0x80 => {
                out.push(c as u8);
                i += len;
            }
            _ => {
                out.push(input[i]);
                i += 1;
            }
        }
    }
    out
}

fn decode_once(input: &[u8]) -> Vec<u8> {
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::new();
    let mut i = 0;
    while i < input.len() {
        match (
            input.get(i + 1).and_then(|&b| hex(b)),
            input.get(i + 2).and_then(|&b| hex(b)),
        ) {
            (Some(h), Some(l)) if input[i] == b'%' => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            _ => {
                out.push(input[i]);
                i += 1;
            }
        }
    }
    out
}

/// The path an upstream reading `raw` this way routes: decoded, its segments cleaned, and its
/// dot segments resolved (RFC 3986 §5.2.4).
fn upstream_reads(raw: &str, r: Reading) -> String {
    let mut bytes = raw.as_bytes().to_vec();
    for _ in 0..r.decodes {
        bytes = decode_once(&bytes);
    }
    if r.overlong {
        bytes = fold_overlong(&bytes);
    }
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    if r.fold_dots {
        text = text
            .replace(['\u{FF0E}', '\u{FE52}', '\u{2024}'], ".")
            .replace('\u{2025}', "..")
            .replace('\u{2026}', "...")
            .replace('\u{FF0F}', "/")
            .replace(['\u{FF3C}', '\u{FE68}'], "\\");
    }
    if r.backslash {
        text = text.replace('\\', "/");
    }
    let mut out: Vec<String> = Vec::new();
    let segments: Vec<&str> = text.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, seg) in segments.into_iter().enumerate() {
        let mut seg = seg.to_string();
        if r.cut_parameters {
            seg = seg.split(';').next().unwrap_or_default().to_string();
        }
        if r.trim {
            seg = seg.split('\0').next().unwrap_or_default().to_string();
            seg = seg.trim_end_matches([' ', '\t']).to_string();
        }
        match seg.as_str() {
            "." => {
                if i == last {
                    out.push(String::new());
                }
            }
            ".." => {
                out.pop();
                if i == last {
                    out.push(String::new());
                }
            }
            _ => out.push(seg),
        }
    }
    format!("/{}", out.join("/"))
}

fn under(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

fn arb_segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("repos".to_string()),
        Just("a".to_string()),
        Just("admin".to_string()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just("...".to_string()),
        Just("..;".to_string()),
        Just(".;".to_string()),
        Just("..;x=1".to_string()),
        Just("%2e%2e".to_string()),
        Just("%2E%2e;".to_string()),
        Just(".%2e".to_string()),
        Just("%252e%252e".to_string()),
        Just("%25252e.".to_string()),
        Just("..%3b".to_string()),
        Just("..%253b".to_string()),
        Just("..%00".to_string()),
        Just("..%20".to_string()),
        Just("..%5c..".to_string()),
        Just("a%2f..".to_string()),
        Just("a%252f..%252f".to_string()),
        Just("\u{FF0E}\u{FF0E}".to_string()),
        Just("%EF%BC%8E%EF%BC%8E".to_string()),
        Just("\u{2025}".to_string()),
        Just("%E2%80%A6".to_string()),
        Just("..\u{FF0F}..".to_string()),
        Just("a%EF%BC%8F..".to_string()),
        Just("..%EF%BC%BC..".to_string()),
        Just("%C0%AE%C0%AE".to_string()),
        Just("a%C0%AF..".to_string()),
        Just("..%C1%9C..".to_string()),
        Just("%E0%80%AE.".to_string()),
        Just("a;b".to_string()),
        Just("v1.2".to_string()),
        Just("file%2ejson".to_string()),
        "[a-z.;%0-9]{0,6}",
    ]
}

proptest! {
    /// No path `check` accepts under a prefix can, read by an upstream in any of the ways above,
    /// land outside that prefix.
    #[test]
    fn no_accepted_path_lands_outside_its_prefix(
        prefix in prop_oneof![Just("/repos/"), Just("/repos"), Just("/repos/a")],
        segments in proptest::collection::vec(arb_segment(), 0..6),
        reading in arb_reading(),
    ) {
        let p = valid(with_prefixes(&[prefix]));
        let raw = format!("https://api.example.com/{}", segments.join("/"));
        let Ok(url) = url::Url::parse(&raw) else { return Ok(()) };
        if p.check("GET", "api.example.com", url.path()).is_ok() {
            let routed = upstream_reads(url.path(), reading);
            prop_assert!(under(prefix, &routed), "{} accepted as {}, routed as {} ({:?})", raw, url.path(), routed, reading);
        }
    }
}

#[test]
fn dot_segments_with_parameters_and_encoded_dots_are_refused() {
    let p = valid(with_prefixes(&["/repos/"]));
    for raw in [
        "https://api.example.com/repos/..;/admin",
        "https://api.example.com/repos/..;jsessionid=x/admin",
        "https://api.example.com/repos/.;/admin",
        "https://api.example.com/repos/%2e%2e;/admin",
        "https://api.example.com/repos/%2E%2E;/admin",
        "https://api.example.com/repos/..%3b/admin",
        "https://api.example.com/repos/.../admin",
        "https://api.example.com/repos/..%00/admin",
        "https://api.example.com/repos/..%20/admin",
        "https://api.example.com/repos/%EF%BC%8E%EF%BC%8E/admin",
        "https://api.example.com/repos/x%2ejson",
        "https://api.example.com/repos/x%252Ejson",
    ] {
        let url = url::Url::parse(raw).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            check_code(&p, "GET", "api.example.com", url.path()),
            Some("path_not_allowed"),
            "{raw} ({})",
            url.path()
        );
    }
    for ok in [
        "/repos/a;v=1/b",
        "/repos/v1.2/x",
        "/repos/.well-known",
        "/repos/a..b",
    ] {
        assert!(p.check("GET", "api.example.com", ok).is_ok(), "{ok}");
    }
    for bad in ["/a/..;/b", "/a/%2e/", "/a/.;x/"] {
        let q = Policy {
            path_prefixes: Some(vec![bad.to_string()]),
            ..policy(&["h.example"])
        };
        assert_eq!(refusal_code(q), "invalid_path_prefix", "{bad}");
    }
}

/// Review of issue 18: the normaliser counts the NFKC dot look-alikes as dots, but not the dot
/// leaders NFKC turns into `..` and `...`, nor the solidi it turns into `/` and `\`; and overlong
/// UTF-8 forms of `.`, `/` and `\` (read as such by old IIS and Tomcat) pass as plain bytes.
#[test]
fn nfkc_dot_leaders_and_solidi_and_overlong_utf8_are_refused() {
    let p = valid(with_prefixes(&["/public/"]));
    for raw in [
        "https://api.example.com/public/\u{2025}/admin",
        "https://api.example.com/public/%E2%80%A5/admin",
        "https://api.example.com/public/%E2%80%A6/admin",
        "https://api.example.com/public/..\u{FF0F}admin",
        "https://api.example.com/public/x%EF%BC%8F..%EF%BC%8F..%EF%BC%8Fadmin",
        "https://api.example.com/public/..%EF%BC%BCadmin",
        "https://api.example.com/public/..%EF%B9%A8admin",
        "https://api.example.com/public/%C0%AE%C0%AE/admin",
        "https://api.example.com/public/x%C0%AF..%C0%AF..%C0%AFadmin",
        "https://api.example.com/public/..%C1%9Cadmin",
        "https://api.example.com/public/%E0%80%AE%E0%80%AE/admin",
        "https://api.example.com/public/%F0%80%80%AE%F0%80%80%AE/admin",
        "https://api.example.com/public/%25C0%25AE%25C0%25AE/admin",
    ] {
        let url = url::Url::parse(raw).unwrap_or_else(|e| panic!("{e}"));
        assert!(url.path().starts_with("/public/"), "{raw}");
        assert_eq!(
            check_code(&p, "GET", "api.example.com", url.path()),
            Some("path_not_allowed"),
            "{raw} ({})",
            url.path()
        );
    }
    // Non-ASCII text and the other slashes stay allowed.
    for ok in [
        "/public/caf%C3%A9",
        "/public/%E2%80%A2",
        "/public/1%E2%81%842",
        "/public/a%E2%88%95b",
        "/public/%C3%80",
    ] {
        assert!(p.check("GET", "api.example.com", ok).is_ok(), "{ok}");
    }
}

// ---- wildcards and the Public Suffix List (docs/decisions/0053-…) ----------------------------

#[test]
fn wildcards_over_private_section_suffixes_are_refused() {
    for h in [
        "*.run.app",
        "*.cloudfunctions.net",
        "*.s3.amazonaws.com",
        "*.us-east-1.amazonaws.com",
        "*.vercel.app",
        "*.netlify.app",
        "*.pages.dev",
        "*.herokuapp.com",
        "*.blogspot.com",
        "*.azurewebsites.net",
        "*.ngrok-free.app",
        "*.trycloudflare.com",
        "*.com.au",
        "*.kawasaki.jp",
    ] {
        assert_eq!(refusal_code(policy(&[h])), "invalid_host", "{h}");
    }
    for ok in [
        "*.example.com",
        "*.api.example.co.uk",
        "*.amazonaws.com",
        "*.my-app.herokuapp.com",
        "*.corp.internal",
    ] {
        assert_eq!(valid(policy(&[ok])).allowed_hosts, [ok], "{ok}");
    }
}

#[test]
fn a_wildcard_never_matches_under_a_public_suffix_below_its_domain() {
    let p = valid(policy(&["*.amazonaws.com", "*.my-app.herokuapp.com"]));
    for host in [
        "bucket.s3.amazonaws.com",
        "a.b.s3.amazonaws.com",
        "x.us-east-1.amazonaws.com",
        "a.b.compute.amazonaws.com",
        "my-app.herokuapp.com",
        "evil.herokuapp.com",
    ] {
        assert_eq!(
            check_code(&p, "GET", host, "/"),
            Some("host_not_allowed"),
            "{host}"
        );
    }
    // A wildcard over a public suffix stored before this rule (validation refuses it now)
    // matches nothing.
    let stored = Policy {
        allowed_hosts: vec![
            "*.cloudfunctions.net".into(),
            "*.run.app".into(),
            "*.github.io".into(),
        ],
        ..Policy::default()
    };
    for host in [
        "x.cloudfunctions.net",
        "a.b.run.app",
        "evil.github.io",
        "a.b.github.io",
    ] {
        assert_eq!(
            check_code(&stored, "GET", host, "/"),
            Some("host_not_allowed"),
            "{host}"
        );
    }
    for host in [
        "ec2.amazonaws.com",
        "sts.amazonaws.com",
        "api.my-app.herokuapp.com",
        "a.b.my-app.herokuapp.com",
    ] {
        assert!(p.check("GET", host, "/").is_ok(), "{host}");
    }
}
