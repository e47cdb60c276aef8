//! What an authenticated agent token allows on top of its parent key: the token's credential
//! globs, methods and path prefixes ([`TokenGrant`]). A leaf: the principal carries it, the token
//! store ([`super::tokens`]) makes it.

use crate::error::{Code, Error, Result};
use crate::policy::{glob_match, is_ambiguous_path, path_matches};

/// What an authenticated token allows on top of its parent key (which is checked too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    pub id: String,
    pub credentials: Vec<String>,
    pub methods: Option<Vec<String>>,
    pub path_prefixes: Option<Vec<String>>,
    pub uses: u32,
    pub expires_at: u64,
    /// Every request with the token waits for a person's approval (crate::approvals).
    pub require_approval: bool,
}

impl TokenGrant {
    /// Whether one of the token's credential globs matches `alias`.
    pub fn reaches(&self, alias: &str) -> bool {
        self.credentials.iter().any(|g| glob_match(g, alias))
    }

    /// The token's method and path limits, on the request as it will be sent: `method`
    /// (upper case) and the upstream URL's `path` (normalised by the URL parser; a path with a
    /// dot segment hidden by encoding is refused under path prefixes, as in a credential policy).
    pub fn check(&self, method: &str, path: &str) -> Result<()> {
        if let Some(methods) = &self.methods {
            if !methods.iter().any(|m| m == method) {
                return Err(Error::forbidden(format!(
                    "method {method} is not one of this token's methods"
                ))
                .with_code(Code::TokenMethodDenied));
            }
        }
        if let Some(prefixes) = &self.path_prefixes {
            let path = path.split(['?', '#']).next().unwrap_or_default();
            if is_ambiguous_path(path) || !prefixes.iter().any(|p| path_matches(p, path)) {
                return Err(Error::forbidden(
                    "the upstream path is outside this token's path_prefixes (a path with a \
                     dot segment, encoded or not, is refused under path prefixes)",
                )
                .with_code(Code::TokenPathDenied));
            }
        }
        Ok(())
    }
}
