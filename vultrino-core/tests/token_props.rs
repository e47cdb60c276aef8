//! Property: an agent token never allows what its parent key refuses. For a random parent role
//! (permissions and alias-glob scopes) and a random token request (credential globs, methods,
//! path prefixes, expiry), whenever minting's checks accept the token, the principal it
//! authenticates as allows no permission, no credential and no lifetime its parent does not.
//! Aliases are drawn both at random and from the token's own globs (each `*` replaced by random
//! text), so that the globs are exercised where they match.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use proptest::prelude::*;
use vultrino_core::auth::tokens::{checked_credentials, expiry};
use vultrino_core::auth::{Permission, Principal, Role, TokenGrant};

/// An alias glob over a small alphabet, so that scopes and requests often overlap.
fn glob() -> impl Strategy<Value = String> {
    "[ab*-]{1,6}"
}

fn alias() -> impl Strategy<Value = String> {
    "[ab-]{0,8}"
}

fn permissions() -> impl Strategy<Value = Vec<Permission>> {
    proptest::sample::subsequence(
        vec![
            Permission::Read,
            Permission::Execute,
            Permission::Write,
            Permission::Admin,
        ],
        0..=4,
    )
}

/// `glob` with each `*` replaced by one of `fills` (cycled): an alias the glob matches.
fn instance(glob: &str, fills: &[String]) -> String {
    let mut out = String::new();
    let mut i = 0;
    for c in glob.chars() {
        if c == '*' {
            out.push_str(&fills[i % fills.len()]);
            i += 1;
        } else {
            out.push(c);
        }
    }
    out
}

fn principal(role: Role, token: Option<TokenGrant>) -> Principal {
    Principal::ApiKey {
        id: "0123456789abcdef".into(),
        name: "agent".into(),
        role,
        token: token.map(Arc::new),
        access: None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn a_token_never_reaches_what_its_parent_refuses(
        scopes in proptest::collection::vec(glob(), 1..4),
        perms in permissions(),
        requested in proptest::collection::vec(glob(), 1..4),
        fills in proptest::collection::vec(alias(), 1..4),
        randoms in proptest::collection::vec(alias(), 0..8),
        now in 0u64..1_000_000,
        expires_in in proptest::option::of(0u64..100_000),
        parent_expires_at in proptest::option::of(0u64..200_000_000),
    ) {
        let role = Role {
            id: Some("fedcba9876543210".into()),
            name: "r".into(),
            permissions: perms,
            scopes,
            description: String::new(),
            builtin: false,
        };
        let Ok(credentials) = checked_credentials(requested, &role) else {
            return Ok(());
        };
        let Ok(expires_at) = expiry(now, expires_in, parent_expires_at) else {
            return Ok(());
        };
        if let Some(p) = parent_expires_at {
            prop_assert!(expires_at <= p, "the token outlives its parent");
        }
        let mut aliases = randoms;
        aliases.extend(credentials.iter().map(|g| instance(g, &fills)));
        let grant = TokenGrant {
            id: "00112233aabbccdd".into(),
            credentials,
            methods: None,
            path_prefixes: None,
            uses: 1,
            expires_at,
            require_approval: false,
        };
        let parent = principal(role.clone(), None);
        let token = principal(role, Some(grant));
        for a in &aliases {
            if token.reaches(a) {
                prop_assert!(parent.reaches(a), "the token reaches {a:?}, its parent does not");
            }
        }
        for p in [Permission::Read, Permission::Execute, Permission::Write, Permission::Admin] {
            if token.require(p).is_ok() {
                prop_assert!(parent.require(p).is_ok(), "the token has {p:?}, its parent not");
                prop_assert!(matches!(p, Permission::Read | Permission::Execute));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// The minting check itself, apart from the role check on every request: a scope said to
    /// cover a requested glob matches every alias that glob matches.
    #[test]
    fn a_covered_glob_matches_only_what_its_scope_matches(
        scope in glob(),
        requested in glob(),
        fills in proptest::collection::vec(alias(), 1..4),
    ) {
        if vultrino_core::auth::tokens::glob_covers(&scope, &requested) {
            let a = instance(&requested, &fills);
            prop_assert!(
                vultrino_core::policy::glob_match(&scope, &a),
                "{scope:?} covers {requested:?} but not its instance {a:?}"
            );
        }
    }
}
