//! `vultrino token mint|list|revoke`: agent tokens (`vt_…`), through the running server (or
//! the edge, `--server`) as the signed-in admin, or on the store opened here when no server
//! runs, as `vultrino key …` does. The admin names the parent key (`--parent-key`).

use clap::{Args, Subcommand};
use serde_json::{json, Value};
use vultrino_core::app::App;
use vultrino_core::auth::NewToken;

use super::{print_json, seg, RemoteArgs};
use crate::remote::Remote;

#[derive(Args, Debug)]
pub(super) struct TokenArgs {
    #[command(flatten)]
    pub(super) remote: RemoteArgs,
    #[command(subcommand)]
    pub(super) cmd: TokenCmd,
}

#[derive(Subcommand, Debug)]
pub(super) enum TokenCmd {
    /// Mint an agent token (printed once): a subset of the API key --parent-key.
    Mint {
        /// Id of the API key the token is a subset of.
        #[arg(long)]
        parent_key: String,
        /// Credential aliases or globs (repeat or comma-separate), each within the key's scopes.
        #[arg(long = "credential", required = true, value_delimiter = ',')]
        credentials: Vec<String>,
        /// Methods allowed (repeat or comma-separate; all if absent).
        #[arg(long = "method", value_delimiter = ',')]
        methods: Vec<String>,
        /// Upstream path prefixes allowed (repeat or comma-separate; all if absent).
        #[arg(long = "path-prefix", value_delimiter = ',')]
        path_prefixes: Vec<String>,
        /// How many requests it may make (default 100).
        #[arg(long)]
        uses: Option<u32>,
        /// Lifetime in seconds (default 3600; never past the key's expiry).
        #[arg(long)]
        expires_in: Option<u64>,
        /// A label for listings.
        #[arg(long)]
        name: Option<String>,
    },
    /// List the live tokens (never their secrets), with their uses left.
    List,
    /// Revoke a token at once.
    Revoke {
        /// The token's id (from `token list`).
        id: String,
    },
}

/// The body of `POST /v1/tokens` for `mint`.
fn mint_body(cmd: &TokenCmd) -> Option<Value> {
    let TokenCmd::Mint {
        parent_key,
        credentials,
        methods,
        path_prefixes,
        uses,
        expires_in,
        name,
    } = cmd
    else {
        return None;
    };
    let mut body = json!({"parent_key": parent_key, "credentials": credentials});
    if !methods.is_empty() {
        body["methods"] = json!(methods);
    }
    if !path_prefixes.is_empty() {
        body["path_prefixes"] = json!(path_prefixes);
    }
    if let Some(u) = uses {
        body["uses"] = json!(u);
    }
    if let Some(e) = expires_in {
        body["expires_in"] = json!(e);
    }
    if let Some(n) = name {
        body["name"] = json!(n);
    }
    Some(body)
}

/// `vultrino token …` through the server: the same output as [`direct`].
pub(super) async fn remote(remote: &Remote, cmd: &TokenCmd) -> anyhow::Result<()> {
    match cmd {
        TokenCmd::Mint { .. } => {
            let body = mint_body(cmd).unwrap_or_default();
            let created = remote.call("POST", "/v1/tokens", Some(&body)).await?;
            eprintln!("The token is shown only this once:");
            print_json(&created)
        }
        TokenCmd::List => super::table::show(
            super::Kind::Tokens,
            &remote.call("GET", "/v1/tokens", None).await?,
        ),
        TokenCmd::Revoke { id } => {
            remote
                .call("DELETE", &format!("/v1/tokens/{}", seg(id)), None)
                .await?;
            eprintln!("revoked token {id}");
            Ok(())
        }
    }
}

/// `vultrino token …` on the store opened in this process, as the local operator.
pub(super) async fn direct(app: &App, cmd: &TokenCmd) -> anyhow::Result<()> {
    let who = super::operator();
    let tokens = app.api_keys().tokens();
    match cmd {
        TokenCmd::Mint { .. } => {
            let body = mint_body(cmd).unwrap_or_default();
            let input: NewToken = serde_json::from_value(body)?;
            let created = tokens.mint(&who, input).await?;
            eprintln!("The token is shown only this once:");
            print_json(&json!(created))
        }
        TokenCmd::List => super::table::show(
            super::Kind::Tokens,
            &json!({"tokens": tokens.list(&who).await?}),
        ),
        TokenCmd::Revoke { id } => {
            tokens.revoke(&who, id).await?;
            eprintln!("revoked token {id}");
            Ok(())
        }
    }
}
