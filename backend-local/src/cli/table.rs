//! How management commands print what they read: JSON (`--json`, or whenever stdout is not a
//! terminal — what scripts got before, unchanged) or, on a terminal, readable tables with times
//! as RFC 3339 local time (docs/decisions/0097-cli-output-and-status.md).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;

static JSON: AtomicBool = AtomicBool::new(false);

/// Record the global `--json` flag (once, before any output).
pub(crate) fn set_json(json: bool) {
    JSON.store(json, Ordering::Relaxed);
}

/// Whether to print JSON: `--json`, or stdout is not a terminal.
pub(crate) fn json() -> bool {
    JSON.load(Ordering::Relaxed) || !std::io::stdout().is_terminal()
}

/// The local time zone's offset from UTC at `ms`, in seconds (the OS's zone data; 0 when it
/// cannot be known).
fn local_offset_secs(ms: u64) -> i64 {
    use chrono::{Local, Offset, TimeZone};
    let Ok(ms) = i64::try_from(ms) else { return 0 };
    match Local.timestamp_millis_opt(ms) {
        chrono::LocalResult::Single(t) => i64::from(t.offset().fix().local_minus_utc()),
        _ => 0,
    }
}

/// `ms` since the epoch as RFC 3339 in the local time zone, to the second, e.g.
/// `2026-12-06T07:09:52+01:00` (`Z` when local time is UTC).
pub(crate) fn local_time(ms: u64) -> String {
    with_offset(ms, local_offset_secs(ms))
}

/// `ms` as RFC 3339 at a fixed `offset` (seconds east of UTC), to the second.
fn with_offset(ms: u64, offset: i64) -> String {
    let shifted = (i128::from(ms) + i128::from(offset) * 1000).max(0);
    let utc = vultrino_core::time::rfc3339(u64::try_from(shifted).unwrap_or(0));
    // `YYYY-MM-DDTHH:MM:SS.mmmZ` → drop the milliseconds and the `Z`.
    let base = &utc[..19];
    if offset == 0 {
        return format!("{base}Z");
    }
    let sign = if offset < 0 { '-' } else { '+' };
    let a = offset.unsigned_abs();
    format!("{base}{sign}{:02}:{:02}", a / 3600, a % 3600 / 60)
}

/// A time field of a JSON object for a table: local time, or `-` when absent.
pub(crate) fn time_of(v: &Value) -> String {
    v.as_u64().map_or_else(|| "-".to_string(), local_time)
}

/// A JSON field as table text: strings bare, lists comma-joined, absent as `-`; control
/// characters (a name from a server) shown escaped, never sent to the terminal.
pub(crate) fn text(v: &Value) -> String {
    let s = match v {
        Value::Null => return "-".into(),
        Value::String(s) if s.is_empty() => return "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => return "-".into(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    };
    crate::remote::printable(&s)
}

/// Rows under a header, columns aligned.
pub(crate) fn rows(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| -> String {
        let mut out = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i + 1 == widths.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_string()
    };
    let mut out = line(&mut headers.iter().copied()) + "\n";
    for row in rows {
        out += &(line(&mut row.iter().map(String::as_str)) + "\n");
    }
    if rows.is_empty() {
        out += "(none)\n";
    }
    out
}

/// `key: value` lines, keys aligned.
pub(crate) fn fields(fields: &[(&str, String)]) -> String {
    let w = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    fields
        .iter()
        .map(|(k, v)| format!("{:<w$}  {v}\n", format!("{k}:")))
        .collect()
}

/// Write `text` to stdout.
pub(crate) fn out(text: &str) -> anyhow::Result<()> {
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}

/// What a listing or detail is, for [`show`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Credentials,
    Credential,
    Keys,
    Roles,
    Tokens,
}

/// Print `v` (the API's JSON for `kind`) as JSON or as a table (see [`json`]).
pub(crate) fn show(kind: Kind, v: &Value) -> anyhow::Result<()> {
    if json() {
        return super::print_json(v);
    }
    out(&render(kind, v))?;
    refused_note(v);
    Ok(())
}

/// The table of `v` (the API's JSON for `kind`).
pub(crate) fn render(kind: Kind, v: &Value) -> String {
    let list = |field: &str| v[field].as_array().cloned().unwrap_or_default();
    match kind {
        Kind::Credentials => rows(
            &["ALIAS", "TYPE", "HOSTS", "BASE URL", "UPDATED"],
            &list("credentials")
                .iter()
                .map(|c| {
                    vec![
                        text(&c["alias"]),
                        text(&c["type"]),
                        text(&c["allowed_hosts"]),
                        text(&c["base_url"]),
                        time_of(&c["updated_at"]),
                    ]
                })
                .collect::<Vec<_>>(),
        ),
        Kind::Credential => {
            let p = &v["policy"];
            let s = &v["sent_as"];
            let sent_as = match (s["header"].as_str(), s["query_param"].as_str()) {
                (Some(h), _) => format!(
                    "header {}: {}<secret>",
                    crate::remote::printable(h),
                    crate::remote::printable(s["prefix"].as_str().unwrap_or(""))
                ),
                (None, Some(q)) => {
                    format!("query parameter {}=<secret>", crate::remote::printable(q))
                }
                (None, None) => "-".into(),
            };
            let rate = match (
                p["rate_limit"]["requests"].as_u64(),
                p["rate_limit"]["per_seconds"].as_u64(),
            ) {
                (Some(r), Some(s)) => format!("{r} per {s} s"),
                _ => "-".into(),
            };
            fields(&[
                ("alias", text(&v["alias"])),
                ("type", text(&v["type"])),
                ("description", text(&v["description"])),
                ("sent as", sent_as),
                ("hosts", text(&p["allowed_hosts"])),
                ("methods", text(&p["methods"])),
                ("path prefixes", text(&p["path_prefixes"])),
                ("rate limit", rate),
                ("base url", text(&v["base_url"])),
                ("created", time_of(&v["created_at"])),
                ("updated", time_of(&v["updated_at"])),
            ])
        }
        Kind::Keys => rows(
            &["ID", "NAME", "ROLE", "CREATED", "EXPIRES", "LAST USED"],
            &list("keys")
                .iter()
                .map(|k| {
                    vec![
                        text(&k["id"]),
                        text(&k["name"]),
                        text(&k["role"]),
                        time_of(&k["created_at"]),
                        time_of(&k["expires_at"]),
                        time_of(&k["last_used_at"]),
                    ]
                })
                .collect::<Vec<_>>(),
        ),
        Kind::Roles => rows(
            &["NAME", "PERMISSIONS", "SCOPES", "BUILT-IN", "DESCRIPTION"],
            &list("roles")
                .iter()
                .map(|r| {
                    vec![
                        text(&r["name"]),
                        text(&r["permissions"]),
                        text(&r["scopes"]),
                        if r["builtin"] == Value::Bool(true) {
                            "yes"
                        } else {
                            "no"
                        }
                        .into(),
                        text(&r["description"]),
                    ]
                })
                .collect::<Vec<_>>(),
        ),
        Kind::Tokens => rows(
            &[
                "ID",
                "NAME",
                "PARENT KEY",
                "CREDENTIALS",
                "USES LEFT",
                "EXPIRES",
            ],
            &list("tokens")
                .iter()
                .map(|t| {
                    vec![
                        text(&t["id"]),
                        text(&t["name"]),
                        text(&t["parent_key"]),
                        text(&t["credentials"]),
                        format!("{}/{}", text(&t["uses_left"]), text(&t["uses"])),
                        time_of(&t["expires_at"]),
                    ]
                })
                .collect::<Vec<_>>(),
        ),
    }
}

/// Records a listing refused (failed integrity checks) are said on stderr, under the table.
fn refused_note(v: &Value) {
    let n = v["refused"].as_array().map_or(0, Vec::len);
    if n > 0 {
        eprintln!("{n} stored record(s) refused (failed their integrity check); see --json");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_rfc3339_with_the_offset() {
        assert_eq!(with_offset(1_700_000_000_123, 0), "2023-11-14T22:13:20Z");
        assert_eq!(
            with_offset(1_700_000_000_123, 3600),
            "2023-11-14T23:13:20+01:00"
        );
        assert_eq!(
            with_offset(1_700_000_000_123, -(5 * 3600 + 1800)),
            "2023-11-14T16:43:20-05:30"
        );
        // Whatever the machine's zone, the local form names an offset or Z.
        let local = local_time(1_700_000_000_123);
        assert!(local.ends_with('Z') || local[19..].len() == 6, "{local}");
    }

    #[test]
    fn listings_are_aligned_tables_with_local_times() {
        let v = serde_json::json!({"keys": [
            {"id": "k1", "name": "agent", "role": "executor", "created_at": 1_700_000_000_000u64,
             "expires_at": null, "last_used_at": null},
            {"id": "k22", "name": "ci", "role": "read-only", "created_at": 1_700_000_060_000u64,
             "expires_at": 1_800_000_000_000u64, "last_used_at": null},
        ], "refused": []});
        let t = render(Kind::Keys, &v);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].starts_with("ID   NAME   ROLE"), "{t}");
        assert!(lines[1].starts_with("k1   agent  executor"), "{t}");
        assert!(lines[1].contains(&local_time(1_700_000_000_000)), "{t}");
        assert!(lines[1].ends_with("-  -") || lines[1].ends_with('-'), "{t}");
        assert!(lines[2].contains(&local_time(1_800_000_000_000)), "{t}");
        assert_eq!(
            render(Kind::Tokens, &serde_json::json!({"tokens": []}))
                .lines()
                .nth(1),
            Some("(none)")
        );
    }

    #[test]
    fn a_credential_shows_where_its_secret_goes() {
        let v = serde_json::json!({"alias": "gh", "type": "api_key", "description": "",
            "policy": {"allowed_hosts": ["api.github.com"]},
            "sent_as": {"header": "X-Api-Key", "prefix": "Token "},
            "created_at": 1_700_000_000_000u64, "updated_at": 1_700_000_000_000u64});
        let t = render(Kind::Credential, &v);
        assert!(
            t.contains("sent as:        header X-Api-Key: Token <secret>"),
            "{t}"
        );
        assert!(t.contains("hosts:          api.github.com"), "{t}");
        let v = serde_json::json!({"sent_as": {"query_param": "key"}, "policy": {}});
        assert!(render(Kind::Credential, &v).contains("query parameter key=<secret>"));
    }

    #[test]
    fn table_text_is_printable() {
        assert_eq!(text(&serde_json::json!(null)), "-");
        assert_eq!(text(&serde_json::json!(["a", "b"])), "a,b");
        assert!(!text(&serde_json::json!("x\u{1b}[31my")).contains('\u{1b}'));
    }
}
