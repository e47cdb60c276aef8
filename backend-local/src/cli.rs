//! The `vultrino` command line (clap). Every flag has a `VULTRINO_*` environment twin. Secrets
//! (credential values, passwords, master keys) are never read from arguments: they come from a
//! no-echo prompt when stdin is a terminal, otherwise one per line from stdin, or from the
//! environment variables named in the help.

use std::io::{BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use serde_json::json;
use vultrino_core::app::{App, Config, Setting};
use vultrino_core::approval_webhook::{ApprovalNotify, WebhookFormat};
use vultrino_core::auth::{AccessConfig, AccessMode, NewKey, NewRole};
use vultrino_core::auth::{Permission, Principal};
use vultrino_core::credential::NewCredential;
use vultrino_core::crypto::{self, MasterSecret};
use vultrino_core::execute::ExecuteRequest;
use vultrino_core::policy::{Policy, RateLimit};
use zeroize::Zeroizing;

use crate::remote::{Remote, Route};
use crate::setup::KeySource;
use crate::setup::{self, MasterSource, Settings, StoreKind};

mod approvals;
mod help;
mod status;
mod table;
mod tokens;

use table::Kind;

#[derive(Parser, Debug)]
#[command(
    name = "vultrino",
    version,
    about = "Vultrino Edge: a credential proxy for AI agents"
)]
struct Cli {
    /// Data directory (master key, admin hash, file store).
    #[arg(long, global = true, env = "VULTRINO_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Store backend.
    #[arg(
        long,
        global = true,
        env = "VULTRINO_STORE",
        value_enum,
        default_value = "file"
    )]
    store: StoreKind,
    /// Master key file (default: <data-dir>/master.key). Without --master-key-source,
    /// VULTRINO_MASTER_KEY / ENCRYPTION_KEY override it.
    #[arg(long, global = true, env = "VULTRINO_MASTER_KEY_FILE")]
    master_key_file: Option<PathBuf>,
    /// Where the master key comes from: `file` (the key file), `keychain` (the OS keychain entry
    /// of the data directory: Secret Service, macOS Keychain, Windows Credential Manager) or
    /// `env` (VULTRINO_MASTER_KEY). Strict when set: no fallback to another source [default:
    /// VULTRINO_MASTER_KEY when set, else the key file].
    #[arg(long, global = true, env = "VULTRINO_MASTER_KEY_SOURCE", value_enum)]
    master_key_source: Option<KeySource>,
    /// Print JSON (what scripts read) instead of tables; JSON is also what is printed whenever
    /// stdout is not a terminal. `audit`: one JSON line per event.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the HTTP server.
    Serve(Box<ServeArgs>),
    /// Say what this CLI works with: version, server (running? signed in?), store, where the
    /// master key comes from, sync. Reads no secret and opens nothing.
    Status(RemoteArgs),
    /// Manage credentials.
    Credential(CredentialArgs),
    /// Manage API keys for agents.
    Key(KeyArgs),
    /// Manage roles.
    Role(RoleArgs),
    /// Mint, list and revoke agent tokens (vt_…): short-lived subsets of an API key.
    Token(tokens::TokenArgs),
    /// List, show, approve and deny requests waiting for a person (approvals), on the running
    /// server.
    Approval(approvals::ApprovalArgs),
    /// Make one request through a credential and print the scrubbed reply.
    Request(RequestArgs),
    /// Print the audit log, oldest first: the newest events that match the filters, then, with
    /// --follow, each new one as it is written.
    Audit(AuditArgs),
    /// Sign in to the running server as the admin, for the management commands: the password
    /// is read from a no-echo prompt (or a line of stdin); the session is kept, private to this
    /// OS user, in $XDG_CONFIG_HOME/vultrino/sessions (or ~/.config/vultrino/sessions).
    Login(LoginArgs),
    /// End the session of `vultrino login` on the server and delete its file.
    Logout(RemoteArgs),
    /// Serve MCP over stdio for an agent, forwarding to a running server (or, with --direct,
    /// opening the store here); the agent's API key comes from VULTRINO_API_KEY.
    Mcp(McpArgs),
    /// Print a PHC hash of a password (read from a prompt or stdin) for ADMIN_PASSWORD_HASH.
    /// The password must be at least 15 characters; the iterations at least 100000.
    HashPassword {
        /// PBKDF2 iterations (at least 100000, the default: servers refuse weaker hashes).
        #[arg(long, env = "VULTRINO_PASSWORD_ITERATIONS", default_value_t = crypto::DEFAULT_PASSWORD_ITERATIONS)]
        iterations: u32,
        /// INSECURE, tests only: allow fewer iterations than the floor (a server takes such a
        /// hash only with the same flag).
        #[arg(long, env = "VULTRINO_ALLOW_WEAK_PASSWORD_HASH_FOR_TESTS")]
        allow_weak_password_hash_for_tests: bool,
    },
    /// Re-encrypt every record under a new master key (stop the server first). The new key
    /// replaces the old one where it is kept: the key file or the OS keychain entry; with
    /// VULTRINO_MASTER_KEY, set VULTRINO_NEW_MASTER_KEY.
    RotateMasterKey,
    /// Move the master key between its sources.
    MasterKey(MasterKeyArgs),
    /// Sign the API keys and roles stored by a version before records were signed, once, after
    /// upgrading (stop the server first). Every unsigned record present is trusted: read the
    /// list it prints (--dry-run: only print it).
    MigrateRecords {
        /// Only list what would be signed; write nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Copy credentials, keys and roles (ciphertext) from an edge deployment into this file
    /// store. Needs the edge's master key here and an admin token of the edge
    /// (VULTRINO_SYNC_TOKEN, or a no-echo prompt).
    Sync {
        /// Base URL of the edge deployment, e.g. https://vultrino.example.workers.dev
        #[arg(long = "from", env = "VULTRINO_SYNC_FROM")]
        from: String,
        /// Also delete local credentials, keys, roles and tokens the edge does not have, so that
        /// this store mirrors it (without it, sync only adds and updates).
        #[arg(long)]
        prune: bool,
    },
}

#[derive(Args, Debug)]
struct MasterKeyArgs {
    #[command(subcommand)]
    cmd: MasterKeyCmd,
}

#[derive(Subcommand, Debug)]
enum MasterKeyCmd {
    /// Move the key file into the OS keychain (stop the server first): the key is checked
    /// against the store, stored in the data directory's entry, read back and compared, and only
    /// then is the file overwritten with zeros and deleted. Afterwards run every command with
    /// --master-key-source keychain (VULTRINO_MASTER_KEY_SOURCE=keychain).
    ToKeychain,
}

#[derive(Args, Debug, Clone)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "VULTRINO_LISTEN", default_value = "127.0.0.1:7879")]
    listen: SocketAddr,
    /// Serve Prometheus metrics at GET /metrics on this address (off when unset), a listener
    /// of its own with no authentication: keep it on loopback or a private network.
    #[arg(long, env = "VULTRINO_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Worker threads serving requests, each with its own single-threaded runtime and outbound
    /// connection pool [default: the number of CPUs].
    #[arg(long, env = "VULTRINO_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
    /// After request activity, a worker with at most one request in progress keeps polling its
    /// sockets for this many microseconds before it sleeps: lower latency on a lightly loaded
    /// server, paid in CPU time (at most about two windows per request; other threads on the same
    /// CPU go first). 0 turns it off.
    #[arg(long, env = "VULTRINO_BUSY_POLL_US", default_value_t = crate::busy_poll::DEFAULT_WINDOW_US,
          value_parser = clap::value_parser!(u64).range(0..=10_000))]
    busy_poll_us: u64,
    /// Admin user name.
    #[arg(long, env = "VULTRINO_ADMIN_USER", default_value = "admin")]
    admin_user: String,
    /// INSECURE, tests only: allow http:// and loopback upstreams.
    #[arg(long, env = "VULTRINO_ALLOW_LOOPBACK_UPSTREAMS")]
    allow_loopback_upstreams: bool,
    /// INSECURE, tests only: accept an admin password hash with fewer PBKDF2 iterations than the
    /// floor (100000).
    #[arg(long, env = "VULTRINO_ALLOW_WEAK_PASSWORD_HASH_FOR_TESTS")]
    allow_weak_password_hash_for_tests: bool,
    /// Allowed CORS origins (comma-separated); CORS is off when empty.
    #[arg(long, env = "VULTRINO_CORS_ORIGINS", value_delimiter = ',')]
    cors_origin: Vec<String>,
    /// Trust the last X-Forwarded-For address, the one your proxy appended (only behind your own
    /// proxy).
    #[arg(long, env = "VULTRINO_TRUST_FORWARDED_FOR")]
    trust_forwarded_for: bool,
    /// Login attempts per client per window before 429.
    #[arg(long, env = "VULTRINO_LOGIN_MAX_ATTEMPTS", default_value_t = 5)]
    login_max_attempts: u32,
    /// Login attempts for the admin user per window, all clients together, before 429.
    #[arg(
        long,
        env = "VULTRINO_LOGIN_MAX_ATTEMPTS_PER_USER",
        default_value_t = 50
    )]
    login_max_attempts_per_user: u32,
    /// Login lockout window, seconds.
    #[arg(long, env = "VULTRINO_LOGIN_WINDOW_SECS", default_value_t = 900)]
    login_window_secs: u64,
    /// Upstream timeout, milliseconds.
    #[arg(long, env = "VULTRINO_FETCH_TIMEOUT_MS", default_value_t = 30_000)]
    fetch_timeout_ms: u64,
    /// Largest upstream response body, bytes.
    #[arg(long, env = "VULTRINO_MAX_RESPONSE_BYTES", default_value_t = 10 * 1024 * 1024)]
    max_response_bytes: usize,
    /// Session idle timeout, seconds.
    #[arg(long, env = "VULTRINO_SESSION_IDLE_SECS", default_value_t = 1800)]
    session_idle_secs: u64,
    /// Largest request body the pass-through proxy (/proxy/…) streams upstream, bytes.
    #[arg(long, env = "VULTRINO_PROXY_MAX_REQUEST_BYTES", default_value_t = 32 * 1024 * 1024)]
    proxy_max_request_bytes: usize,
    /// Pass-through proxy: requests in flight at once in this server, all keys together (past
    /// it: 429 proxy_busy, nothing sent upstream).
    #[arg(long, env = "VULTRINO_PROXY_MAX_CONCURRENT", default_value_t = 1024)]
    proxy_max_concurrent: usize,
    /// Pass-through proxy: requests in flight at once for one API key (past it: 429
    /// proxy_busy, nothing sent upstream).
    #[arg(
        long,
        env = "VULTRINO_PROXY_MAX_CONCURRENT_PER_KEY",
        default_value_t = 64
    )]
    proxy_max_concurrent_per_key: usize,
    /// Cloudflare Access (behind a Cloudflare Tunnel): the team domain,
    /// `<team>.cloudflareaccess.com`. With --access-aud, every route --access-mode names needs a
    /// valid Access token (Cf-Access-Jwt-Assertion) on top of Vultrino's own authentication.
    #[arg(long, env = "VULTRINO_ACCESS_TEAM_DOMAIN")]
    access_team_domain: Option<String>,
    /// Cloudflare Access: the Access application's AUD tag.
    #[arg(long, env = "VULTRINO_ACCESS_AUD")]
    access_aud: Option<String>,
    /// Cloudflare Access: which routes need a token — `admin` (login, admin API, UI; agents'
    /// routes exempt) or `all` (every route but /healthz).
    #[arg(long, env = "VULTRINO_ACCESS_MODE")]
    access_mode: Option<String>,
    /// TESTS / ADVANCED ONLY: fetch the Access key set from this URL instead of
    /// https://<team domain>/cdn-cgi/access/certs (tokens' iss must still be the team URL).
    #[arg(long, env = "VULTRINO_ACCESS_CERTS_URL")]
    access_certs_url: Option<String>,
    /// Pass-through proxy: how long the upstream's reply head may take once the request is
    /// sent, milliseconds.
    #[arg(
        long,
        env = "VULTRINO_STREAM_HEADERS_TIMEOUT_MS",
        default_value_t = 300_000
    )]
    stream_headers_timeout_ms: u64,
    /// Pass-through proxy: longest pause between two chunks of either body, milliseconds.
    #[arg(
        long,
        env = "VULTRINO_STREAM_IDLE_TIMEOUT_MS",
        default_value_t = 300_000
    )]
    stream_idle_timeout_ms: u64,
    /// Pass-through proxy: the whole exchange, last byte included, milliseconds.
    #[arg(
        long,
        env = "VULTRINO_STREAM_TOTAL_TIMEOUT_MS",
        default_value_t = 3_600_000
    )]
    stream_total_timeout_ms: u64,
    /// Approvals: how long a pending approval waits for a decision, and an approved one for
    /// its re-send, in seconds (approvals live in memory: a restart forgets them).
    #[arg(long, env = "VULTRINO_APPROVAL_TTL", default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    approval_ttl: u64,
    /// Also append every audit event, as one JSON line, to this file (created 0600; reopened on
    /// SIGHUP, for log rotation), or to standard output with `-`.
    #[arg(long, env = "VULTRINO_AUDIT_LOG", value_name = "PATH|-")]
    audit_log: Option<String>,
    /// Events waiting for the --audit-log writer, at most (past it they are dropped, counted).
    #[arg(long, env = "VULTRINO_AUDIT_LOG_QUEUE", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    audit_log_queue: u32,
    /// Also POST every audit event to this collector, in batches (a JSON array of at most 100
    /// events), retried with backoff: https://, or http:// to 127.0.0.1/localhost only. The
    /// collector's Authorization header, if it needs one, comes from
    /// VULTRINO_AUDIT_WEBHOOK_AUTHORIZATION (never from an argument).
    #[arg(long, env = "VULTRINO_AUDIT_WEBHOOK", value_name = "URL")]
    audit_webhook: Option<String>,
    /// Events waiting for the collector, at most (past it they are dropped, counted).
    #[arg(long, env = "VULTRINO_AUDIT_WEBHOOK_QUEUE", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    audit_webhook_queue: u32,
    /// When an agent's request waits for approval, POST a notification to this URL (once, in
    /// the background): https://, or http:// to 127.0.0.1/localhost only with
    /// --allow-loopback-upstreams. It may carry its own secret (a Slack webhook URL does): it is
    /// never printed or logged.
    #[arg(long, env = "VULTRINO_APPROVAL_WEBHOOK", value_name = "URL")]
    approval_webhook: Option<String>,
    /// The notification's shape: `json` ({event, approval_id, …, link}) or `slack`
    /// ({text, blocks}, for Slack incoming webhooks and look-alikes).
    #[arg(long, env = "VULTRINO_APPROVAL_WEBHOOK_FORMAT", value_name = "json|slack",
          default_value = "json", value_parser = parse_webhook_format)]
    approval_webhook_format: WebhookFormat,
    /// The admin UI's base URL as people reach it (e.g. https://vultrino.example.com): the
    /// approval notification links to <URL>/ui/#/approvals/<id>. Without it, no link.
    #[arg(long, env = "VULTRINO_PUBLIC_URL", value_name = "URL")]
    public_url: Option<String>,
    #[command(flatten)]
    sync: LiveSyncArgs,
}

/// The live sync from an edge (`serve`, `mcp --direct`).
#[derive(Args, Debug, Clone)]
struct LiveSyncArgs {
    /// Keep this store in step with an edge deployment (its base URL, e.g.
    /// https://vultrino.example.workers.dev): its credentials, keys and roles are pulled every
    /// --sync-interval and changes applied while serving; they are read-only here. Needs the
    /// edge's master key here and an admin API key of the edge in VULTRINO_SYNC_TOKEN.
    #[arg(long, env = "VULTRINO_SYNC_FROM", value_name = "EDGE_URL")]
    sync_from: Option<String>,
    /// How often --sync-from pulls: 30s, 5m, 1h, or a number of seconds (1s to 24h). After
    /// failures the wait doubles, up to 10 minutes.
    #[arg(long, env = "VULTRINO_SYNC_INTERVAL", value_name = "DURATION", default_value = "60s",
          value_parser = crate::edge_sync::parse_interval)]
    sync_interval: std::time::Duration,
}

impl LiveSyncArgs {
    /// The live sync these arguments ask for, prepared (see [`crate::edge_sync::LivePuller`]).
    async fn prepare(
        &self,
        s: &setup::Settings,
    ) -> anyhow::Result<Option<crate::edge_sync::LivePuller>> {
        match self.sync_from.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(from) => Ok(Some(
                crate::edge_sync::LivePuller::prepare(s, from, self.sync_interval).await?,
            )),
        }
    }
}

fn parse_webhook_format(s: &str) -> Result<WebhookFormat, String> {
    WebhookFormat::parse(s).ok_or_else(|| "must be json or slack".to_string())
}

#[derive(Args, Debug)]
struct McpArgs {
    /// Base URL of the running `vultrino serve` (or edge deployment) to forward every message to
    /// [default: http://127.0.0.1:7879]. https://, or http:// to 127.0.0.1/localhost only.
    #[arg(long, env = "VULTRINO_SERVER")]
    server: Option<String>,
    /// WEAKER: open the data directory's store in this process instead of forwarding to a
    /// server. The master key is then loaded into the agent host's process, and the data
    /// directory must be readable by the agent's OS user (see docs/security.md).
    #[arg(long, env = "VULTRINO_MCP_DIRECT", conflicts_with = "server")]
    direct: bool,
    /// INSECURE, tests only (with --direct): allow http:// and loopback upstreams.
    #[arg(long, env = "VULTRINO_ALLOW_LOOPBACK_UPSTREAMS")]
    allow_loopback_upstreams: bool,
    /// With --direct: when a request needs a person's approval and the MCP client supports
    /// elicitation, ask the client's user to approve it (their yes approves and runs it once).
    /// Only for an agent host that shows each prompt to a person: one that accepts prompts by
    /// itself makes approval meaningless (docs/decisions/0102-approval-by-mcp-elicitation.md).
    #[arg(long)]
    approve_by_elicitation: bool,
    /// With --direct: the live sync from an edge, as `serve --sync-from`.
    #[command(flatten)]
    sync: LiveSyncArgs,
}

/// Which server a management command talks to.
#[derive(Args, Debug, Clone, Default)]
struct RemoteArgs {
    /// Base URL of the Vultrino server to manage (the edge included): https://, or http:// to
    /// 127.0.0.1/localhost only [default: the `vultrino serve` running on the data directory;
    /// with none running, the store is opened in this process].
    #[arg(long, env = "VULTRINO_SERVER", global = true)]
    server: Option<String>,
}

#[derive(Args, Debug)]
struct AuditArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    /// Only events of this credential (alias).
    #[arg(long)]
    credential: Option<String>,
    /// Only events of this actor (`key:<id>`, `admin:<user>`; a trailing `*` matches a prefix,
    /// e.g. `key:*`).
    #[arg(long)]
    actor: Option<String>,
    /// Only events with this outcome (allowed, denied, error, cancelled, success, failure).
    #[arg(long)]
    outcome: Option<String>,
    /// Only events since then: a duration back from now (90s, 15m, 2h, 7d) or milliseconds
    /// since the epoch.
    #[arg(long)]
    since: Option<String>,
    /// Only events before then (exclusive), in the same forms as --since.
    #[arg(long)]
    until: Option<String>,
    /// How many of the newest matching events to print first.
    #[arg(long, default_value_t = 50,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    limit: u16,
    /// Keep printing new events as they are written (polls; stop with Ctrl-C).
    #[arg(long, short = 'f')]
    follow: bool,
    /// Seconds between two polls of --follow.
    #[arg(long, default_value_t = 2,
          value_parser = clap::value_parser!(u16).range(1..=3600))]
    interval_secs: u16,
}

#[derive(Args, Debug)]
struct LoginArgs {
    /// The admin user name.
    #[arg(long, env = "VULTRINO_ADMIN_USER", default_value = "admin")]
    user: String,
    #[command(flatten)]
    remote: RemoteArgs,
}

#[derive(Args, Debug)]
struct CredentialArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    #[command(subcommand)]
    cmd: CredentialCmd,
}

#[derive(Args, Debug)]
struct KeyArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    #[command(subcommand)]
    cmd: KeyCmd,
}

#[derive(Args, Debug)]
struct RoleArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    #[command(subcommand)]
    cmd: RoleCmd,
}

#[derive(Subcommand, Debug)]
enum CredentialCmd {
    /// Add a credential; its secret is read from a prompt or stdin.
    Add(Box<CredentialAdd>),
    /// List credentials (metadata only).
    List,
    /// Show one credential's metadata, policy and how its secret is sent (header and prefix, or
    /// query parameter); never the secret.
    Show {
        /// The credential's alias.
        alias: String,
    },
    /// Delete a credential.
    Rm {
        /// The credential's alias.
        alias: String,
    },
    /// Replace a credential's secret (read from a prompt or stdin).
    Rotate {
        /// The credential's alias.
        alias: String,
    },
}

#[derive(Args, Debug)]
struct CredentialAdd {
    /// The credential's name, used by agents (`credential` in execute, /proxy/<alias>/).
    alias: String,
    /// api_key, basic_auth, query_param or oauth2.
    #[arg(long = "type", default_value = "api_key")]
    kind: String,
    /// Hosts the credential may be sent to (required; `*.example.com` allowed).
    #[arg(long = "host", value_delimiter = ',', required = true)]
    hosts: Vec<String>,
    /// A note for people (shown in listings; never sent upstream).
    #[arg(long)]
    description: Option<String>,
    /// Where the pass-through proxy sends /proxy/<alias>/<path>: https://host[:port][/path],
    /// its host one of --host [default: https://<host> when --host is one exact host].
    #[arg(long)]
    base_url: Option<String>,
    /// api_key: header name (default Authorization).
    #[arg(long)]
    header: Option<String>,
    /// api_key: value prefix (default "Bearer " for Authorization).
    #[arg(long)]
    prefix: Option<String>,
    /// basic_auth: user name.
    #[arg(long)]
    username: Option<String>,
    /// query_param: parameter name.
    #[arg(long)]
    param: Option<String>,
    /// oauth2: token endpoint.
    #[arg(long)]
    token_url: Option<String>,
    /// oauth2: client id.
    #[arg(long)]
    client_id: Option<String>,
    /// oauth2: scopes.
    #[arg(long = "scope", value_delimiter = ',')]
    scopes: Vec<String>,
    /// oauth2: also read a refresh token (second secret line).
    #[arg(long)]
    with_refresh_token: bool,
    /// Allowed methods (default: all).
    #[arg(long = "method", value_delimiter = ',')]
    methods: Vec<String>,
    /// Allowed path prefixes (default: all).
    #[arg(long = "path-prefix", value_delimiter = ',')]
    path_prefixes: Vec<String>,
    /// Rate limit as REQUESTS/SECONDS, e.g. 100/60.
    #[arg(long)]
    rate_limit: Option<String>,
    /// A person approves each request first: `always`, or `writes` (every method but
    /// GET/HEAD/OPTIONS) (default: never).
    #[arg(long,
          value_parser = ["always", "writes"])]
    require_approval: Option<String>,
}

#[derive(Subcommand, Debug)]
enum KeyCmd {
    /// Create an API key (printed once).
    Create {
        /// A label for listings, e.g. the agent's name.
        name: String,
        /// The key's role: admin, executor, read-only or a custom role.
        #[arg(long, default_value = "executor")]
        role: String,
        /// Days until the key expires [default: never].
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// List the API keys (never their secrets), oldest first.
    List,
    /// Revoke an API key at once.
    Revoke {
        /// The key's id (from `key list`).
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum RoleCmd {
    /// Create a custom role: permissions over the credentials its scopes name.
    Create {
        /// The role's name.
        name: String,
        /// read, execute, write, admin.
        #[arg(long = "permission", value_delimiter = ',', required = true)]
        permissions: Vec<String>,
        /// Alias globs, e.g. github-*.
        #[arg(long = "scope", value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// A note for people.
        #[arg(long)]
        description: Option<String>,
    },
    /// List the roles, built-in and custom.
    List,
    /// Delete a custom role.
    Rm {
        /// The role's name.
        name: String,
    },
}

#[derive(Args, Debug)]
struct RequestArgs {
    /// The credential's alias.
    credential: String,
    /// The HTTP method, e.g. GET.
    method: String,
    /// The absolute https:// URL, on one of the credential's hosts.
    url: String,
    /// Extra header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_delimiter = '\n')]
    headers: Vec<String>,
    /// Request body.
    #[arg(short = 'd', long = "data")]
    data: Option<String>,
    /// INSECURE, tests only (no server running): allow http:// and loopback upstreams. A
    /// server decides for itself (its own flag).
    #[arg(long, env = "VULTRINO_ALLOW_LOOPBACK_UPSTREAMS")]
    allow_loopback_upstreams: bool,
    #[command(flatten)]
    remote: RemoteArgs,
}

/// Global flags that a command does not use (decision 0111): left out of its help. Given
/// anyway (a wrapper script that passes `--data-dir` to every command), they change nothing.
/// `json` applies everywhere it prints.
const NOT_FOR: [(&str, &[&str]); 3] = [
    (
        "hash-password",
        &["data_dir", "store", "master_key_file", "master_key_source"],
    ),
    ("login", &["store", "master_key_file", "master_key_source"]),
    ("logout", &["store", "master_key_file", "master_key_source"]),
];

/// The command line's parser: [`Cli`] with the global flags of [`NOT_FOR`] hidden where they do
/// not apply.
fn command() -> clap::Command {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    // A subcommand that has an argument of a global's id does not get the global's copy when
    // the tree is built: give those subcommands a hidden one.
    for (name, ids) in NOT_FOR {
        let hidden: Vec<clap::Arg> = ids
            .iter()
            .filter_map(|id| cmd.get_arguments().find(|a| a.get_id() == id))
            .map(|a| a.clone().hide(true))
            .collect();
        cmd = cmd.mut_subcommand(name, |sub| {
            hidden.into_iter().fold(sub, |sub, a| sub.arg(a))
        });
    }
    cmd
}

/// Parse the command line ([`command`]).
fn parse() -> Cli {
    use clap::FromArgMatches;
    let matches = command().get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only on a terminal: a log file or journal gets plain text.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn settings(cli: &Cli, config: Config) -> Settings {
    Settings {
        data_dir: cli.data_dir.clone().unwrap_or_else(setup::default_data_dir),
        store: cli.store,
        master_key_file: cli.master_key_file.clone(),
        master_key_source: cli.master_key_source,
        config,
    }
}

/// The principal of a local operator: whoever can read the data directory holds every key.
fn operator() -> Principal {
    Principal::Admin {
        subject: "cli".into(),
        session_id: String::new(),
        via_cookie: false,
        access: None,
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    table::set_json(cli.json);
    match &cli.command {
        Command::Serve(args) => serve(&cli, (**args).clone()).await,
        Command::Status(remote) => {
            let s = settings(&cli, Config::default());
            status::print(&status::status(remote.server.as_deref(), &s).await)
        }
        Command::HashPassword {
            iterations,
            allow_weak_password_hash_for_tests,
        } => {
            if *iterations < crypto::MIN_PASSWORD_ITERATIONS && !allow_weak_password_hash_for_tests
            {
                anyhow::bail!(
                    "--iterations must be at least {} (servers refuse weaker hashes); the default is {}",
                    crypto::MIN_PASSWORD_ITERATIONS,
                    crypto::DEFAULT_PASSWORD_ITERATIONS
                );
            }
            if *allow_weak_password_hash_for_tests {
                tracing::warn!(
                    "INSECURE: --allow-weak-password-hash-for-tests; this hash is for tests only"
                );
            }
            let pw = read_secret("Password: ")?;
            if std::io::stdin().is_terminal() {
                let again = read_secret("Again: ")?;
                if !crypto::ct_eq(pw.as_bytes(), again.as_bytes()) {
                    anyhow::bail!("the passwords differ");
                }
            }
            if pw.is_empty() {
                anyhow::bail!("empty password");
            }
            crypto::check_admin_password(&pw).map_err(|e| anyhow::anyhow!("{}", e.message()))?;
            println!("{}", crypto::hash_password(&pw, *iterations)?);
            Ok(())
        }
        Command::RotateMasterKey => {
            refuse_while_served(&cli, "rotate-master-key")?;
            rotate_master_key(&cli).await
        }
        Command::MasterKey(m) => match m.cmd {
            MasterKeyCmd::ToKeychain => {
                refuse_while_served(&cli, "master-key to-keychain")?;
                let s = settings(&cli, Config::default());
                let entry = crate::master_key::to_keychain(&s).await?;
                eprintln!(
                    "moved the master key into {entry}; the key file {} is overwritten and \
                     deleted. From now on run serve, mcp and the management commands with \
                     --master-key-source keychain (or VULTRINO_MASTER_KEY_SOURCE=keychain); \
                     without it a new key file would be looked for. Keep a backup of the key \
                     outside this machine.",
                    crate::setup::key_file(&s).display()
                );
                Ok(())
            }
        },
        Command::MigrateRecords { dry_run, remote } => match route(&cli, remote)? {
            Route::Server(base) => {
                let remote = Remote::connect(base)?;
                let done = remote
                    .call(
                        "POST",
                        "/v1/admin/migrate-records",
                        Some(&json!({"dry_run": dry_run})),
                    )
                    .await?;
                report_migration(&done, *dry_run)
            }
            Route::Direct => {
                let app = open_for_cli(&cli, Config::default()).await?;
                migrate_records(&app, *dry_run).await
            }
        },
        Command::Login(a) => {
            let Route::Server(base) = route(&cli, &a.remote)? else {
                anyhow::bail!(
                    "no Vultrino server runs on the data directory {}: start one (`vultrino \
                     serve`, e.g. in another terminal) or give its URL with --server / \
                     VULTRINO_SERVER. Without a server, management commands open the store \
                     directly and need no login.",
                    data_dir(&cli).display()
                );
            };
            let password = read_secret(&format!("Password for '{}' at {base}: ", a.user))?;
            if password.is_empty() {
                anyhow::bail!("empty password");
            }
            let (session, path) = crate::remote::login(&base, &a.user, &password).await?;
            if std::env::var("VULTRINO_API_KEY").is_ok_and(|k| !k.trim().is_empty()) {
                tracing::warn!(
                    "VULTRINO_API_KEY is set: management commands use that key, not this session, until it is unset"
                );
            }
            eprintln!(
                "logged in to {base} as '{}'; the session is kept in {} (this OS user only) \
                 until `vultrino logout`, 30 minutes unused or 12 hours",
                session.user,
                path.display()
            );
            Ok(())
        }
        Command::Logout(remote) => {
            let Route::Server(base) = route(&cli, remote)? else {
                anyhow::bail!(
                    "no Vultrino server runs on the data directory {}: give the server's URL \
                     with --server / VULTRINO_SERVER",
                    data_dir(&cli).display()
                );
            };
            eprintln!("{}", crate::remote::logout(&base).await?);
            Ok(())
        }
        Command::Sync { from, prune } => {
            refuse_while_served(&cli, "sync")?;
            let token = match std::env::var("VULTRINO_SYNC_TOKEN") {
                Ok(t) if !t.trim().is_empty() => Zeroizing::new(t.trim().to_string()),
                _ => read_secret("Admin token of the edge (session token or admin API key): ")?,
            };
            let s = settings(&cli, Config::default());
            crate::edge_sync::sync_from(&s, from, &token, *prune).await
        }
        Command::Credential(c) => match route(&cli, &c.remote)? {
            Route::Server(base) => remote_credential(&Remote::connect(base)?, &c.cmd).await,
            Route::Direct => {
                let app = open_for_cli(&cli, Config::default()).await?;
                credential(&app, &c.cmd).await
            }
        },
        Command::Key(k) => match route(&cli, &k.remote)? {
            Route::Server(base) => remote_key(&Remote::connect(base)?, &k.cmd).await,
            Route::Direct => {
                let app = open_for_cli(&cli, Config::default()).await?;
                key(&app, &k.cmd).await
            }
        },
        Command::Token(t) => match route(&cli, &t.remote)? {
            Route::Server(base) => tokens::remote(&Remote::connect(base)?, &t.cmd).await,
            Route::Direct => {
                let app = open_for_cli(&cli, Config::default()).await?;
                tokens::direct(&app, &t.cmd).await
            }
        },
        Command::Approval(a) => match route(&cli, &a.remote)? {
            Route::Server(base) => approvals::remote(&Remote::connect(base)?, &a.cmd).await,
            Route::Direct => Err(approvals::no_server()),
        },
        Command::Role(r) => match route(&cli, &r.remote)? {
            Route::Server(base) => remote_role(&Remote::connect(base)?, &r.cmd).await,
            Route::Direct => {
                let app = open_for_cli(&cli, Config::default()).await?;
                role(&app, &r.cmd).await
            }
        },
        Command::Mcp(a) => mcp(&cli, a).await,
        Command::Audit(a) => {
            use crate::audit_cli::{self, Listing, Source};
            let listing = Listing {
                filter: vultrino_core::audit::AuditFilter {
                    credential: a.credential.clone().filter(|v| !v.is_empty()),
                    actor: a.actor.clone().filter(|v| !v.is_empty()),
                    outcome: a.outcome.clone().filter(|v| !v.is_empty()),
                    since_ms: match a.since.as_deref().filter(|v| !v.is_empty()) {
                        Some(s) => Some(audit_cli::parse_since(s, audit_cli::now())?),
                        None => None,
                    },
                    until_ms: match a.until.as_deref().filter(|v| !v.is_empty()) {
                        Some(s) => Some(audit_cli::parse_since(s, audit_cli::now())?),
                        None => None,
                    },
                },
                limit: usize::from(a.limit),
                follow: a.follow,
                interval: std::time::Duration::from_secs(u64::from(a.interval_secs)),
                json: cli.json,
            };
            let source = match route(&cli, &a.remote)? {
                Route::Server(base) => Source::Server(Remote::connect(base)?),
                Route::Direct => {
                    Source::Direct(open_for_cli(&cli, Config::default()).await?, operator())
                }
            };
            audit_cli::run(&source, &listing).await
        }
        Command::Request(r) => match route(&cli, &r.remote)? {
            Route::Server(base) => {
                if r.allow_loopback_upstreams {
                    tracing::warn!("--allow-loopback-upstreams applies without a server only: the server decides for itself");
                }
                let remote = Remote::connect(base)?;
                let req = execute_request(r)?;
                let out = remote
                    .call(
                        "POST",
                        "/v1/execute",
                        Some(&json!({
                            "credential": req.credential,
                            "method": req.method,
                            "url": req.url,
                            "headers": req.headers,
                            "body": r.data,
                        })),
                    )
                    .await?;
                print_json(&out)
            }
            Route::Direct => {
                let config = Config {
                    allow_loopback_upstreams: r.allow_loopback_upstreams,
                    ..Config::default()
                };
                let app = open_for_cli(&cli, config).await?;
                request(&app, r).await
            }
        },
    }
}

fn data_dir(cli: &Cli) -> PathBuf {
    cli.data_dir.clone().unwrap_or_else(setup::default_data_dir)
}

/// Where a management command goes: `--server` / `VULTRINO_SERVER`, else the server running on
/// the data directory, else the store opened here (see [`crate::remote`]).
fn route(cli: &Cli, remote: &RemoteArgs) -> anyhow::Result<Route> {
    crate::remote::route(
        remote.server.as_deref(),
        &data_dir(cli),
        cli.store == StoreKind::File,
    )
}

/// A command with no HTTP route (it works on the files) refuses to start while a server holds
/// the store, naming the fix.
fn refuse_while_served(cli: &Cli, command: &str) -> anyhow::Result<()> {
    if cli.store == StoreKind::File {
        if let Some(url) = crate::remote::discover(&data_dir(cli)) {
            anyhow::bail!(
                "`vultrino serve` is running on {} (at {url}): stop it first, then run \
                 `vultrino {command}`",
                data_dir(cli).display()
            );
        }
    }
    Ok(())
}

/// `vultrino mcp`: forward to a server (the default), or open the file store here with
/// `--direct` (see [`crate::mcp_stdio`]).
async fn mcp(cli: &Cli, a: &McpArgs) -> anyhow::Result<()> {
    let key = crate::mcp_stdio::api_key_from_env()?;
    if !a.direct {
        if a.approve_by_elicitation {
            anyhow::bail!(
                "--approve-by-elicitation needs --direct: forwarding, this process holds only the \
                 agent's key, which may never approve its own requests; approve them in the web UI \
                 or with `vultrino approval approve` (docs/decisions/0102-approval-by-mcp-elicitation.md)"
            );
        }
        if a.allow_loopback_upstreams {
            tracing::warn!("--allow-loopback-upstreams applies to --direct only: the server decides for itself");
        }
        let server = a
            .server
            .as_deref()
            .unwrap_or(crate::mcp_stdio::DEFAULT_SERVER);
        if a.sync.sync_from.is_some() {
            anyhow::bail!(
                "--sync-from applies to --direct only: without it `vultrino mcp` forwards to a \
                 server, which syncs for itself (`vultrino serve --sync-from`)"
            );
        }
        return crate::mcp_stdio::forward(server, key).await;
    }
    if cli.store == StoreKind::Memory {
        anyhow::bail!(
            "`vultrino mcp --direct` opens the file store; a memory store lives only inside `vultrino serve` (drop --direct to forward to it)"
        );
    }
    let config = Config {
        allow_loopback_upstreams: a.allow_loopback_upstreams,
        ..Config::default()
    };
    let s = settings(cli, config);
    refuse_unreadable_data_dir(&s.data_dir)?;
    // Opening an empty directory would create a keyring and an admin password nobody sees.
    if !s.data_dir.join(setup::STORE_DIR).exists() {
        anyhow::bail!(
            "no Vultrino store in {}: add credentials and a key first (`vultrino credential add`, `vultrino key create`)",
            s.data_dir.display()
        );
    }
    let puller = a.sync.prepare(&s).await?;
    let app = setup::open_serving(&s, None, puller.as_ref().map(|p| p.live.clone()))
        .await
        .map_err(|e| {
            anyhow::anyhow!(
            "{e:#}\nhint: while `vultrino serve` runs on this data directory, drop --direct: `vultrino mcp` forwards to it"
        )
        })?;
    let _pulling = puller.map(|p| p.spawn(app.app.clone()));
    crate::mcp_stdio::direct(app.app, key, a.approve_by_elicitation).await
}

async fn open_for_cli(cli: &Cli, config: Config) -> anyhow::Result<Arc<App>> {
    if cli.store == StoreKind::Memory {
        anyhow::bail!("management commands need the file store (--store file); a memory store lives only inside `vultrino serve`");
    }
    let s = settings(cli, config);
    refuse_unreadable_data_dir(&s.data_dir)?;
    let opened = setup::open_for_management(&s).await?;
    Ok(opened.app)
}

/// A data directory this OS user may not read belongs to a server run as its own user (the set-up
/// docs/security.md recommends): say so, instead of an I/O error about one of its files.
fn refuse_unreadable_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => anyhow::bail!(
            "this user may not read the data directory {}: it belongs to the user that runs \
             `vultrino serve`, and only that user can open the store. Manage it through the \
             server's HTTP API: give the CLI its URL (--server or VULTRINO_SERVER, e.g. \
             {}) and run `vultrino login`, or use the admin web UI; give agents `vultrino mcp`, \
             which forwards to it (docs/security.md)",
            dir.display(),
            crate::mcp_stdio::DEFAULT_SERVER
        ),
        _ => Ok(()),
    }
}

/// The Cloudflare Access settings of `serve`: both the team domain and the AUD tag, or neither
/// (one without the other is refused: a half-configured layer must not be silently off).
fn access_config(a: &ServeArgs) -> anyhow::Result<Option<AccessConfig>> {
    let given = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let (team, aud, certs) = (
        given(&a.access_team_domain),
        given(&a.access_aud),
        given(&a.access_certs_url),
    );
    let mode = given(&a.access_mode);
    let mode = match &mode {
        None => AccessMode::default(),
        Some(m) => AccessMode::parse(m)
            .ok_or_else(|| anyhow::anyhow!("--access-mode must be admin or all"))?,
    };
    match (team, aud) {
        (None, None) => {
            if certs.is_some() || given(&a.access_mode).is_some() {
                anyhow::bail!(
                    "--access-mode and --access-certs-url need --access-team-domain and \
                     --access-aud"
                );
            }
            Ok(None)
        }
        (Some(_), None) => anyhow::bail!(
            "--access-team-domain is set but --access-aud is not: set both (the Access \
             application's AUD tag) or neither"
        ),
        (None, Some(_)) => anyhow::bail!(
            "--access-aud is set but --access-team-domain is not: set both \
             (<team>.cloudflareaccess.com) or neither"
        ),
        (Some(team), Some(aud)) => Ok(Some(AccessConfig {
            team_domain: vultrino_core::auth::access::team_domain(&team),
            aud,
            mode,
            certs_url: certs,
        })),
    }
}

async fn serve(cli: &Cli, a: ServeArgs) -> anyhow::Result<()> {
    // Refused settings stop `serve` before anything is opened.
    let sinks = AuditSinks::start(&a)?;
    let access = access_config(&a)?;
    if let Some(access) = &access {
        tracing::info!(
            team_domain = %access.team_domain,
            mode = access.mode.as_str(),
            "Cloudflare Access required"
        );
        if access.certs_url.is_some() {
            tracing::warn!(
                "--access-certs-url is set: the Access key set is fetched from it. TESTS ONLY."
            );
        }
    }
    let config = Config {
        access,
        admin_username: a.admin_user,
        allow_loopback_upstreams: a.allow_loopback_upstreams,
        allow_weak_password_hash_for_tests: a.allow_weak_password_hash_for_tests,
        cors_origins: a
            .cors_origin
            .into_iter()
            .filter(|o| !o.is_empty())
            .collect(),
        trust_forwarded_for: a.trust_forwarded_for,
        login_max_attempts: a.login_max_attempts,
        login_max_attempts_per_user: a.login_max_attempts_per_user,
        login_window_secs: a.login_window_secs,
        fetch_timeout_ms: a.fetch_timeout_ms,
        max_response_bytes: a.max_response_bytes,
        session_idle_secs: a.session_idle_secs,
        proxy_max_request_bytes: a.proxy_max_request_bytes,
        proxy_max_concurrent: a.proxy_max_concurrent,
        proxy_max_concurrent_per_key: a.proxy_max_concurrent_per_key,
        stream_headers_timeout_ms: a.stream_headers_timeout_ms,
        stream_idle_timeout_ms: a.stream_idle_timeout_ms,
        stream_total_timeout_ms: a.stream_total_timeout_ms,
        approval_notify: ApprovalNotify {
            webhook: a.approval_webhook.filter(|w| !w.trim().is_empty()),
            format: a.approval_webhook_format,
            public_url: a.public_url.filter(|u| !u.trim().is_empty()),
        },
        approval_ttl_secs: a.approval_ttl,
        ..Config::default()
    };
    // The rules every backend applies (the core's), named the way `serve` takes them.
    config.validate().map_err(|e| {
        let name = match e.setting {
            Setting::CorsOrigins => "--cors-origin",
            Setting::AdminPasswordHash => "VULTRINO_ADMIN_PASSWORD_HASH",
            Setting::LoginMaxAttempts => "--login-max-attempts",
            Setting::LoginMaxAttemptsPerUser => "--login-max-attempts-per-user",
            Setting::KvSettle => "the KV settle time",
            Setting::ProxyMaxConcurrent => "--proxy-max-concurrent",
            Setting::ProxyMaxConcurrentPerKey => "--proxy-max-concurrent-per-key",
            Setting::AccessTeamDomain => "--access-team-domain",
            Setting::AccessAud => "--access-aud",
            Setting::AccessCertsUrl => "--access-certs-url",
            Setting::ApprovalWebhook => "--approval-webhook",
            Setting::PublicUrl => "--public-url",
        };
        anyhow::anyhow!("{name} {}", e.problem)
    })?;
    let s = settings(cli, config);
    let puller = a.sync.prepare(&s).await?;
    let mut opened =
        setup::open_serving(&s, sinks.sink(), puller.as_ref().map(|p| p.live.clone())).await?;
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", a.listen))?;
    let addr = listener.local_addr()?;
    let metrics_listener = match a.metrics_listen {
        None => None,
        Some(at) => {
            let l = tokio::net::TcpListener::bind(at)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {at} (--metrics-listen): {e}"))?;
            if !at.ip().is_loopback() {
                tracing::warn!(%at, "metrics are served without authentication on a non-loopback address: keep it reachable by your scraper only");
            }
            opened = opened.with_metrics(vultrino_core::metrics::Metrics::new())?;
            Some(l)
        }
    };
    // The CLI finds this server through its data directory (file stores only: a memory store
    // has nothing to manage from outside); written before the "listening" line, so
    // whoever waits for that line finds it; removed at a graceful stop (decision 0072).
    let advertised = match s.store {
        StoreKind::File => Some(crate::remote::Advertised::write(&s.data_dir, addr)?),
        StoreKind::Memory => None,
    };
    // One write: whoever waits for the "listening on" line (a script, a test) may close the pipe
    // as soon as it has it, and a later write would then fail with EPIPE and stop the server.
    // It may hold the first-run password: wiped when dropped.
    // Sized so that it is not regrown (a regrown buffer would leave an unwiped copy behind).
    let mut banner = zeroize::Zeroizing::new(String::with_capacity(4096));
    {
        use std::fmt::Write as _;
        // Written straight into the wiped buffer: no temporary copy of the password is left.
        if let Some(pw) = &opened.generated_password {
            let _ = write!(
                banner,
                "First run: created admin user '{}' with password:\n\n    {}\n\nIt is shown only this once; its hash is stored in {}.\n",
                s.config.admin_username,
                pw.as_str(),
                if s.store == StoreKind::File {
                    s.data_dir.join(setup::ADMIN_HASH_FILE).display().to_string()
                } else {
                    "memory (this run only)".into()
                }
            );
        }
        if let Some(l) = &metrics_listener {
            if let Ok(at) = l.local_addr() {
                let _ = writeln!(banner, "Metrics listening on http://{at}/metrics");
            }
        }
        let _ = write!(
            banner,
            "Admin web UI: http://{addr}/ (user '{}')\nVultrino listening on http://{addr}\n",
            s.config.admin_username
        );
    }
    // Listening for SIGINT/SIGTERM before the banner says the server listens.
    let shutdown = crate::server::shutdown_signal();
    let mut out = std::io::stdout().lock();
    out.write_all(banner.as_bytes())?;
    out.flush()?;
    drop(out);
    drop(banner);
    let threads = a.threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        usize::from,
    );
    tracing::info!(%addr, store = ?s.store, data_dir = %s.data_dir.display(), threads, "serving");
    // The scrapes are few: answered on this runtime, not by the request workers.
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_task = metrics_listener.map(|l| {
        tokio::spawn(crate::metrics_listener::serve(
            l,
            opened.app.clone(),
            async {
                let _ = metrics_stopped.await;
            },
        ))
    });
    // The live sync runs on this (the main) runtime, beside the request workers.
    let pulling = puller.map(|p| {
        tracing::info!(edge = %p.live.edge(), interval_ms = p.live.interval_ms(), "live sync from the edge");
        p.spawn(opened.app.clone())
    });
    crate::server::serve_per_core(
        listener,
        opened.app,
        shutdown,
        threads,
        std::time::Duration::from_micros(a.busy_poll_us),
    )
    .await?;
    let _ = stop_metrics.send(());
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    if let Some(pulling) = pulling {
        pulling.abort();
    }
    // What the sinks still hold gets a short while to go out.
    sinks.flush(std::time::Duration::from_secs(2)).await;
    drop(advertised);
    Ok(())
}

/// The audit sinks of `serve` (`--audit-log`, `--audit-webhook`).
#[derive(Default)]
struct AuditSinks {
    file: Option<Arc<crate::audit_sinks::FileSink>>,
    webhook: Option<Arc<crate::audit_sinks::WebhookSink>>,
}

impl AuditSinks {
    fn start(a: &ServeArgs) -> anyhow::Result<AuditSinks> {
        use crate::audit_sinks::{webhook_url, FileSink, LogTarget, WebhookSink};
        let mut sinks = AuditSinks::default();
        if let Some(path) = a.audit_log.as_deref().filter(|p| !p.is_empty()) {
            let file = FileSink::start(LogTarget::parse(path), a.audit_log_queue as usize)?;
            reopen_on_sighup(file.clone());
            sinks.file = Some(file);
        }
        if let Some(u) = a.audit_webhook.as_deref().filter(|u| !u.is_empty()) {
            let url = webhook_url(u)?;
            let auth = std::env::var("VULTRINO_AUDIT_WEBHOOK_AUTHORIZATION")
                .ok()
                .filter(|v| !v.trim().is_empty())
                .map(Zeroizing::new);
            sinks.webhook = Some(WebhookSink::start(
                url,
                auth,
                a.audit_webhook_queue as usize,
            )?);
        }
        Ok(sinks)
    }

    /// The sinks as the one sink of the ports (`None` without any).
    fn sink(&self) -> Option<Arc<dyn vultrino_core::ports::AuditSink>> {
        let mut all: Vec<Arc<dyn vultrino_core::ports::AuditSink>> = Vec::new();
        if let Some(f) = &self.file {
            all.push(f.clone());
        }
        if let Some(w) = &self.webhook {
            all.push(w.clone());
        }
        match all.len() {
            0 => None,
            1 => all.pop(),
            _ => Some(Arc::new(vultrino_core::ports::SinkSet(all))),
        }
    }

    async fn flush(&self, bound: std::time::Duration) {
        if let Some(f) = &self.file {
            f.flush(bound).await;
        }
        if let Some(w) = &self.webhook {
            w.flush(bound).await;
        }
    }
}

/// SIGHUP reopens the audit log file (after a rotation renamed it).
fn reopen_on_sighup(file: Arc<crate::audit_sinks::FileSink>) {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    file.reopen();
                }
            });
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP: the audit log will not be reopened")
        }
    }
}

/// Read one secret: a no-echo prompt on a terminal, otherwise the next line of stdin.
fn read_secret(prompt: &str) -> anyhow::Result<Zeroizing<String>> {
    if std::io::stdin().is_terminal() {
        return Ok(Zeroizing::new(rpassword::prompt_password(prompt)?));
    }
    let mut line = Zeroizing::new(String::new());
    std::io::stdin().lock().read_line(&mut line)?;
    let trimmed = line.trim_end_matches(['\n', '\r']);
    Ok(Zeroizing::new(trimmed.to_string()))
}

fn print_json(v: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn secret_data(a: &CredentialAdd) -> anyhow::Result<serde_json::Value> {
    Ok(match a.kind.as_str() {
        "api_key" => {
            let key = read_secret("API key: ")?;
            let mut d = json!({"key": key.as_str()});
            if let Some(h) = &a.header {
                d["header"] = json!(h);
            }
            if let Some(p) = &a.prefix {
                d["prefix"] = json!(p);
            }
            d
        }
        "basic_auth" => {
            let user = a
                .username
                .clone()
                .ok_or_else(|| anyhow::anyhow!("basic_auth needs --username"))?;
            let pw = read_secret("Password: ")?;
            json!({"username": user, "password": pw.as_str()})
        }
        "query_param" => {
            let name = a
                .param
                .clone()
                .ok_or_else(|| anyhow::anyhow!("query_param needs --param"))?;
            let v = read_secret("Value: ")?;
            json!({"name": name, "value": v.as_str()})
        }
        "oauth2" => {
            let token_url = a
                .token_url
                .clone()
                .ok_or_else(|| anyhow::anyhow!("oauth2 needs --token-url"))?;
            let client_id = a
                .client_id
                .clone()
                .ok_or_else(|| anyhow::anyhow!("oauth2 needs --client-id"))?;
            let secret = read_secret("Client secret: ")?;
            let mut d = json!({"token_url": token_url, "client_id": client_id, "client_secret": secret.as_str()});
            if !a.scopes.is_empty() {
                d["scopes"] = json!(a.scopes);
            }
            if a.with_refresh_token {
                let r = read_secret("Refresh token: ")?;
                d["refresh_token"] = json!(r.as_str());
            }
            d
        }
        other => anyhow::bail!("unknown type '{other}' (api_key, basic_auth, query_param, oauth2)"),
    })
}

fn parse_rate_limit(s: &str) -> anyhow::Result<RateLimit> {
    let (r, p) = s
        .split_once('/')
        .ok_or_else(|| anyhow::anyhow!("--rate-limit is REQUESTS/SECONDS, e.g. 100/60"))?;
    Ok(RateLimit {
        requests: r.trim().parse()?,
        per_seconds: p.trim().parse()?,
    })
}

async fn credential(app: &App, c: &CredentialCmd) -> anyhow::Result<()> {
    let who = operator();
    match c {
        CredentialCmd::Add(a) => {
            let data = secret_data(a)?;
            let policy = Policy {
                allowed_hosts: a.hosts.clone(),
                methods: (!a.methods.is_empty()).then(|| a.methods.clone()),
                path_prefixes: (!a.path_prefixes.is_empty()).then(|| a.path_prefixes.clone()),
                rate_limit: a.rate_limit.as_deref().map(parse_rate_limit).transpose()?,
                pass_cookies: false,
                require_approval: a
                    .require_approval
                    .as_deref()
                    .map(|m| serde_json::from_value(json!(m)))
                    .transpose()?,
            };
            let input = NewCredential {
                alias: a.alias.clone(),
                kind: a.kind.clone(),
                description: a.description.clone(),
                data,
                policy,
                base_url: a.base_url.clone(),
            };
            print_json(&json!(app.credentials().create(&who, input).await?))
        }
        CredentialCmd::List => {
            let mut all = Vec::new();
            let mut cursor = None;
            loop {
                let (items, next) = app.credentials().list(&who, cursor, None).await?;
                all.extend(items);
                match next {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            table::show(Kind::Credentials, &json!({"credentials": all}))
        }
        CredentialCmd::Show { alias } => table::show(
            Kind::Credential,
            &json!(app.credentials().detail(&who, alias).await?),
        ),
        CredentialCmd::Rm { alias } => {
            app.credentials().delete(&who, alias).await?;
            eprintln!("deleted credential '{alias}'");
            Ok(())
        }
        CredentialCmd::Rotate { alias } => {
            let secret = read_secret("New secret: ")?;
            let secret = vultrino_core::secret::Secret::new(secret.as_str());
            print_json(&json!(
                app.credentials().rotate_secret(&who, alias, secret).await?
            ))
        }
    }
}

/// One path segment, percent-encoded (an alias, key id or role name in a route).
fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `vultrino credential …` through the server: the same output as [`credential`].
async fn remote_credential(remote: &Remote, c: &CredentialCmd) -> anyhow::Result<()> {
    match c {
        CredentialCmd::Add(a) => {
            // The policy is checked first: a mistake there does not cost the secret's prompt.
            let rate_limit = a.rate_limit.as_deref().map(parse_rate_limit).transpose()?;
            let data = secret_data(a)?;
            let mut policy = json!({"allowed_hosts": a.hosts});
            if !a.methods.is_empty() {
                policy["methods"] = json!(a.methods);
            }
            if !a.path_prefixes.is_empty() {
                policy["path_prefixes"] = json!(a.path_prefixes);
            }
            if let Some(r) = rate_limit {
                policy["rate_limit"] = json!(r);
            }
            if let Some(m) = &a.require_approval {
                policy["require_approval"] = json!(m);
            }
            let mut body = json!({
                "alias": a.alias,
                "type": a.kind,
                "data": data,
                "policy": policy,
            });
            if let Some(d) = &a.description {
                body["description"] = json!(d);
            }
            if let Some(b) = &a.base_url {
                body["base_url"] = json!(b);
            }
            print_json(&remote.call("POST", "/v1/credentials", Some(&body)).await?)
        }
        CredentialCmd::List => {
            let mut all = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let path = match &cursor {
                    Some(c) => format!("/v1/credentials?cursor={}", seg(c)),
                    None => "/v1/credentials".to_string(),
                };
                let mut page = remote.call("GET", &path, None).await?;
                if let Some(items) = page["credentials"].as_array_mut() {
                    all.append(items);
                }
                match page["cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_string()),
                    None => break,
                }
            }
            table::show(Kind::Credentials, &json!({"credentials": all}))
        }
        CredentialCmd::Show { alias } => table::show(
            Kind::Credential,
            &remote
                .call("GET", &format!("/v1/credentials/{}", seg(alias)), None)
                .await?,
        ),
        CredentialCmd::Rm { alias } => {
            remote
                .call("DELETE", &format!("/v1/credentials/{}", seg(alias)), None)
                .await?;
            eprintln!("deleted credential '{alias}'");
            Ok(())
        }
        CredentialCmd::Rotate { alias } => {
            let secret = read_secret("New secret: ")?;
            let body = json!({"secret": secret.as_str()});
            print_json(
                &remote
                    .call(
                        "PUT",
                        &format!("/v1/credentials/{}", seg(alias)),
                        Some(&body),
                    )
                    .await?,
            )
        }
    }
}

/// `vultrino key …` through the server: the same output as [`key`].
async fn remote_key(remote: &Remote, k: &KeyCmd) -> anyhow::Result<()> {
    match k {
        KeyCmd::Create {
            name,
            role,
            expires_in_days,
        } => {
            let mut body = json!({"name": name, "role": role});
            if let Some(d) = expires_in_days {
                body["expires_in_days"] = json!(d);
            }
            let created = remote.call("POST", "/v1/keys", Some(&body)).await?;
            eprintln!("The key is shown only this once:");
            print_json(&created)
        }
        KeyCmd::List => table::show(Kind::Keys, &remote.call("GET", "/v1/keys", None).await?),
        KeyCmd::Revoke { id } => {
            remote
                .call("DELETE", &format!("/v1/keys/{}", seg(id)), None)
                .await?;
            eprintln!("revoked key {id}");
            Ok(())
        }
    }
}

/// `vultrino role …` through the server: the same output as [`role`].
async fn remote_role(remote: &Remote, r: &RoleCmd) -> anyhow::Result<()> {
    match r {
        RoleCmd::Create {
            name,
            permissions,
            scopes,
            description,
        } => {
            let mut body = json!({"name": name, "permissions": permissions, "scopes": scopes});
            if let Some(d) = description {
                body["description"] = json!(d);
            }
            print_json(&remote.call("POST", "/v1/roles", Some(&body)).await?)
        }
        RoleCmd::List => table::show(Kind::Roles, &remote.call("GET", "/v1/roles", None).await?),
        RoleCmd::Rm { name } => {
            remote
                .call("DELETE", &format!("/v1/roles/{}", seg(name)), None)
                .await?;
            eprintln!("deleted role '{name}'");
            Ok(())
        }
    }
}

async fn key(app: &App, k: &KeyCmd) -> anyhow::Result<()> {
    let who = operator();
    match k {
        KeyCmd::Create {
            name,
            role,
            expires_in_days,
        } => {
            let created = app
                .api_keys()
                .create(
                    &who,
                    NewKey {
                        name: name.clone(),
                        role: role.clone(),
                        expires_in_days: *expires_in_days,
                    },
                )
                .await?;
            eprintln!("The key is shown only this once:");
            print_json(&json!(created))
        }
        KeyCmd::List => {
            let listed = app.api_keys().list(&who).await?;
            table::show(
                Kind::Keys,
                &json!({"keys": listed.items, "refused": listed.refused}),
            )
        }
        KeyCmd::Revoke { id } => {
            app.api_keys().revoke(&who, id).await?;
            eprintln!("revoked key {id}");
            Ok(())
        }
    }
}

async fn role(app: &App, r: &RoleCmd) -> anyhow::Result<()> {
    let who = operator();
    match r {
        RoleCmd::Create {
            name,
            permissions,
            scopes,
            description,
        } => {
            let permissions = permissions
                .iter()
                .map(|p| serde_json::from_value::<Permission>(json!(p)))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| anyhow::anyhow!("permissions are read, execute, write, admin"))?;
            let role = app
                .roles()
                .create(
                    &who,
                    NewRole {
                        name: name.clone(),
                        permissions,
                        scopes: scopes.clone(),
                        description: description.clone(),
                    },
                )
                .await?;
            print_json(&json!(role))
        }
        RoleCmd::List => {
            let listed = app.roles().list(&who).await?;
            table::show(
                Kind::Roles,
                &json!({"roles": listed.items, "refused": listed.refused}),
            )
        }
        RoleCmd::Rm { name } => {
            app.roles().delete(&who, name).await?;
            eprintln!("deleted role '{name}'");
            Ok(())
        }
    }
}

/// `vultrino migrate-records`: sign the records of an older version; the report on stdout (JSON),
/// a summary on stderr.
async fn migrate_records(app: &App, dry_run: bool) -> anyhow::Result<()> {
    let done = json!(app.migrate_records(&operator(), dry_run).await?);
    report_migration(&done, dry_run)
}

/// Print a migration's report (the JSON of `POST /v1/admin/migrate-records`), and its summary on
/// stderr.
fn report_migration(done: &serde_json::Value, dry_run: bool) -> anyhow::Result<()> {
    print_json(done)?;
    let verb = if dry_run { "would sign" } else { "signed" };
    let none = Vec::new();
    let signed = done["signed"].as_array().unwrap_or(&none);
    let refused = done["refused"].as_array().unwrap_or(&none);
    eprintln!(
        "{verb} {} records ({} were signed already){}",
        signed.len(),
        done["already_signed"].as_u64().unwrap_or(0),
        if refused.is_empty() {
            String::new()
        } else {
            format!(
                "; {} records fail their integrity check and stay refused: {}",
                refused.len(),
                refused
                    .iter()
                    .filter_map(|r| r["record"].as_str())
                    .map(crate::remote::printable)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    Ok(())
}

/// The request of `vultrino request`.
fn execute_request(r: &RequestArgs) -> anyhow::Result<ExecuteRequest> {
    let mut headers = std::collections::BTreeMap::new();
    for h in &r.headers {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("header '{h}' is not 'Name: value'"))?;
        headers.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(ExecuteRequest {
        credential: r.credential.clone(),
        method: r.method.clone(),
        url: r.url.clone(),
        headers,
        query: vec![],
        body: r.data.clone().map(bytes::Bytes::from),
        json_body: false,
    })
}

async fn request(app: &App, r: &RequestArgs) -> anyhow::Result<()> {
    let out = app.execute(&operator(), execute_request(r)?).await?;
    print_json(&json!(out))
}

async fn rotate_master_key(cli: &Cli) -> anyhow::Result<()> {
    let s = settings(cli, Config::default());
    if s.store != StoreKind::File {
        anyhow::bail!("rotate-master-key works on the file store");
    }
    let (old, source) = setup::master_secret(&s, false)?;
    let clock = crate::clock::SystemClock::new();
    let kv = setup::open_kv(&s, Arc::new(crate::clock::SystemClock::new()))?;
    use vultrino_core::ports::Clock as _;
    match source {
        MasterSource::File(path) => {
            // The new key is written next to the old one BEFORE any record changes, so an
            // interrupted rotation is finished by running the command again.
            let next_path = PathBuf::from(format!("{}.next", path.display()));
            let new = match std::fs::read_to_string(&next_path) {
                Ok(t) => MasterSecret::parse(Zeroizing::new(t).trim())?,
                Err(_) => {
                    let (k, t) = MasterSecret::generate_raw();
                    setup::write_private_file(&next_path, format!("{t}\n").as_bytes())?;
                    k
                }
            };
            let (key_id, count) =
                vultrino_core::keyring::rotate_master_key(&*kv, &old, &new, clock.now_ms()).await?;
            std::fs::rename(&next_path, &path)?;
            if let Some(parent) = path.parent() {
                if let Ok(d) = std::fs::File::open(parent) {
                    let _ = d.sync_all();
                }
            }
            eprintln!(
                "re-encrypted {count} records under key {key_id}; the new key replaced {}",
                path.display()
            );
        }
        MasterSource::Env => {
            let new = std::env::var("VULTRINO_NEW_MASTER_KEY")
                .ok()
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "the master key comes from the environment: set VULTRINO_NEW_MASTER_KEY to the new key \
                         (e.g. `openssl rand -base64 32`), run again, then switch VULTRINO_MASTER_KEY to it"
                    )
                })?;
            let new = MasterSecret::parse(&new)?;
            let (key_id, count) =
                vultrino_core::keyring::rotate_master_key(&*kv, &old, &new, clock.now_ms()).await?;
            eprintln!("re-encrypted {count} records under key {key_id}; set VULTRINO_MASTER_KEY to the new key now");
        }
        MasterSource::Keychain(entry) => {
            let (key_id, count) =
                crate::master_key::rotate_in_keychain(&*kv, &old, &entry, clock.now_ms()).await?;
            eprintln!(
                "re-encrypted {count} records under key {key_id}; the new key replaced the old one in {}",
                entry.describe()
            );
        }
        MasterSource::Ephemeral => anyhow::bail!("no master key to rotate"),
    }
    Ok(())
}
