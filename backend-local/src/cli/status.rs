//! `vultrino status`: what this CLI would work with, without a secret in sight — the version,
//! the server (the one of the data directory, or `--server`) and whether it answers, the store,
//! where the master key comes from, how this CLI authenticates to the server, and sync.
//! Nothing is opened or unlocked: no master key is read, no store is locked, no password asked.

use std::time::Duration;

use serde_json::{json, Value};

use super::table;
use crate::remote::Session;
use crate::setup::{self, KeySource, Settings, StoreKind};

/// How long `status` waits for the server.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The server: which one, found how, and what it answered on `GET /` and `GET /healthz`.
async fn server(explicit: Option<&str>, s: &Settings) -> Value {
    let (url, found) = match explicit.filter(|v| !v.trim().is_empty()) {
        Some(u) => match crate::mcp_stdio::server_base(u) {
            Ok(base) => (base, "--server / VULTRINO_SERVER"),
            Err(e) => {
                return json!({"url": u, "found_by": "--server / VULTRINO_SERVER",
                "running": false, "error": format!("{e:#}")})
            }
        },
        None if s.store == StoreKind::File => match crate::remote::route(None, &s.data_dir, true) {
            Ok(crate::remote::Route::Server(base)) => (base, "the data directory's server file"),
            Ok(crate::remote::Route::Direct) => {
                return json!({"url": null, "found_by": null, "running": false,
                    "error": null, "note": "no `vultrino serve` runs on this data directory: \
                    management commands open the store directly"})
            }
            Err(e) => {
                return json!({"url": null, "found_by": "the data directory's server file",
                "running": true, "error": format!("{e:#}")})
            }
        },
        None => {
            return json!({"url": null, "found_by": null, "running": false, "error": null,
                "note": "a memory store lives only inside `vultrino serve`"})
        }
    };
    let http = match reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(PROBE_TIMEOUT)
        .build()
    {
        Ok(h) => h,
        Err(e) => {
            return json!({"url": url, "found_by": found, "running": false, "error": e.to_string()})
        }
    };
    let get = |path: &'static str| {
        let req = http
            .get(format!("{url}{path}"))
            .header("accept", "application/json");
        async move {
            let r = req.send().await.ok()?;
            let ok = r.status().is_success();
            // reqwest's `json` feature is not enabled for this crate: decode the bytes here.
            let v: Value = serde_json::from_slice(&r.bytes().await.ok()?).ok()?;
            ok.then_some(v)
        }
    };
    let (root, health) = tokio::join!(get("/"), get("/healthz"));
    let version = root
        .as_ref()
        .and_then(|v| v["version"].as_str())
        .map(crate::remote::printable);
    let healthy = health.as_ref().is_some_and(|v| v["status"] == "ok");
    let session = if std::env::var("VULTRINO_API_KEY").is_ok_and(|k| !k.trim().is_empty()) {
        "VULTRINO_API_KEY (an API key)".to_string()
    } else {
        match Session::load(&url) {
            Ok(Some(s)) => format!(
                "the session of `vultrino login` as '{}'",
                crate::remote::printable(&s.user)
            ),
            Ok(None) => "none: run `vultrino login`".to_string(),
            Err(e) => format!("none ({e:#})"),
        }
    };
    json!({
        "url": url,
        "found_by": found,
        "running": healthy,
        "version": version,
        "auth": session,
        "error": (!healthy).then_some("the server does not answer GET /healthz"),
        // The live sync's state, when the server runs one (`serve --sync-from`).
        "sync": health.as_ref().map(|h| h["sync"].clone()).unwrap_or(Value::Null),
    })
}

/// Where the master key comes from, as the setting says — the key itself is never read.
fn master_key(s: &Settings) -> Value {
    let env_set = ["VULTRINO_MASTER_KEY", "ENCRYPTION_KEY"]
        .iter()
        .any(|n| std::env::var(n).is_ok_and(|v| !v.trim().is_empty()));
    if s.store == StoreKind::Memory {
        return json!({"source": "generated", "detail": "a memory store's key lives only as long as its `vultrino serve`"});
    }
    let file = setup::key_file(s);
    let file_detail =
        || json!({"source": "file", "path": file.display().to_string(), "exists": file.exists()});
    match s.master_key_source {
        Some(KeySource::File) => file_detail(),
        Some(KeySource::Keychain) => json!({"source": "keychain",
            "detail": "the OS keychain entry of the data directory (--master-key-source keychain)"}),
        Some(KeySource::Env) => json!({"source": "env", "set": env_set,
            "detail": "VULTRINO_MASTER_KEY or ENCRYPTION_KEY (--master-key-source env)"}),
        None if env_set => json!({"source": "env", "set": true,
            "detail": "VULTRINO_MASTER_KEY or ENCRYPTION_KEY (set, so it wins over the key file)"}),
        None => file_detail(),
    }
}

/// The whole status as JSON (the `--json` output).
pub(super) async fn status(explicit_server: Option<&str>, s: &Settings) -> Value {
    let store_dir = s.data_dir.join(setup::STORE_DIR);
    let store = match s.store {
        StoreKind::File => json!({
            "kind": "file",
            "path": store_dir.display().to_string(),
            "exists": store_dir.exists(),
            "held_by_a_server": crate::file_kv::FileKv::is_locked(&store_dir),
        }),
        StoreKind::Memory => json!({"kind": "memory"}),
    };
    let mut server = server(explicit_server, s).await;
    let sync = match server.get_mut("sync").map(Value::take) {
        Some(live) if live.is_object() => {
            let detail = sync_detail(&live);
            json!({"live": true, "detail": detail, "state": live})
        }
        _ => json!({
            "live": false,
            "detail": "one-shot: `vultrino sync --from <edge-url>` copies the edge's records into \
                this store; `vultrino serve --sync-from <edge-url>` keeps it in step",
        }),
    };
    if let Some(o) = server.as_object_mut() {
        o.remove("sync");
    }
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "data_dir": s.data_dir.display().to_string(),
        "server": server,
        "store": store,
        "master_key": master_key(s),
        "sync": sync,
    })
}

/// One line on the server's live sync (its `/healthz` `sync` object): the edge, the state, the
/// last success and how long ago, the last error.
fn sync_detail(live: &Value) -> String {
    let t = |v: &Value| table::text(v);
    let when = |v: &Value| match v.as_u64() {
        Some(ms) => table::local_time(ms),
        None => "never".into(),
    };
    let mut line = format!(
        "live from {} every {} s: {}, last success {}",
        crate::remote::printable(live["edge"].as_str().unwrap_or("?")),
        live["interval_ms"].as_u64().unwrap_or(0) / 1000,
        t(&live["state"]),
        when(&live["last_success_ms"]),
    );
    if let Some(lag) = live["lag_ms"].as_u64() {
        line.push_str(&format!(" ({} s ago)", lag / 1000));
    }
    if let Some(records) = live["records"].as_u64() {
        line.push_str(&format!(", {records} records from the edge"));
    }
    if live["last_error"].is_object() {
        line.push_str(&format!(
            "; failing {} times in a row: {} ({})",
            live["consecutive_failures"].as_u64().unwrap_or(0),
            crate::remote::printable(live["last_error"]["message"].as_str().unwrap_or("")),
            t(&live["last_error"]["code"]),
        ));
    }
    line
}

/// Print the status: JSON, or readable lines on a terminal.
pub(super) fn print(v: &Value) -> anyhow::Result<()> {
    if table::json() {
        return super::print_json(v);
    }
    let t = |v: &Value| table::text(v);
    let srv = &v["server"];
    let server_line = match (srv["url"].as_str(), srv["running"].as_bool()) {
        (Some(url), Some(true)) => format!(
            "{} — running, version {} (found by {})",
            crate::remote::printable(url),
            t(&srv["version"]),
            t(&srv["found_by"])
        ),
        (Some(url), _) => format!(
            "{} — not answering: {}",
            crate::remote::printable(url),
            t(&srv["error"])
        ),
        (None, _) => match srv["error"].as_str() {
            Some(e) => format!("unusable: {}", crate::remote::printable(e)),
            None => format!("none ({})", t(&srv["note"])),
        },
    };
    let st = &v["store"];
    let store_line = match st["kind"].as_str() {
        Some("file") => format!(
            "file store {}{}",
            t(&st["path"]),
            match (st["exists"].as_bool(), st["held_by_a_server"].as_bool()) {
                (Some(false), _) => " (not created yet: the first `vultrino serve` creates it)",
                (_, Some(true)) => " (held by the running server)",
                _ => "",
            }
        ),
        _ => "memory (inside `vultrino serve` only)".into(),
    };
    let mk = &v["master_key"];
    let key_line = match mk["source"].as_str() {
        Some("file") => format!(
            "key file {}{}",
            t(&mk["path"]),
            if mk["exists"] == Value::Bool(false) {
                " (does not exist yet)"
            } else {
                ""
            }
        ),
        _ => format!("{}: {}", t(&mk["source"]), t(&mk["detail"])),
    };
    let mut fields = vec![
        ("vultrino", t(&v["version"])),
        ("data dir", t(&v["data_dir"])),
        ("server", server_line),
    ];
    if srv["auth"].is_string() {
        fields.push(("signed in", t(&srv["auth"])));
    }
    fields.extend([
        ("store", store_line),
        ("master key", key_line),
        ("sync", t(&v["sync"]["detail"])),
    ]);
    table::out(&table::fields(&fields))
}
