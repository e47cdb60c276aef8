//! `vultrino audit`: the audit log on the command line — list, filter (credential, actor,
//! outcome, since) and `--follow` — through the running server's `GET /v1/audit` like every
//! management command (decisions 0072-0078), or on the store directly when none runs.
//!
//! Events are printed oldest first (like `tail`): the newest `--limit` that match, then, with
//! `--follow`, each new one as it appears (polling). Text lines are made printable (a path or an
//! actor may hold control characters); `--json` prints each event as one JSON line.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use vultrino_core::app::App;
use vultrino_core::audit::AuditFilter;
use vultrino_core::auth::Principal;

use crate::remote::{printable, Remote};

/// How far back each `--follow` poll looks again, for events written a little after their
/// instant (a proxied reply is audited when it ends, dated when it started, up to the stream
/// timeout).
const FOLLOW_LOOKBACK_MS: u64 = 10 * 60 * 1000;

/// Where the events come from.
pub enum Source {
    Server(Remote),
    Direct(Arc<App>, Principal),
}

impl Source {
    /// One page of `GET /v1/audit` (or its direct equivalent).
    async fn page(
        &self,
        filter: &AuditFilter,
        cursor: Option<String>,
        limit: usize,
    ) -> anyhow::Result<(Vec<Value>, Option<String>)> {
        match self {
            Source::Server(remote) => {
                let mut q = url::form_urlencoded::Serializer::new(String::new());
                q.append_pair("limit", &limit.to_string());
                if let Some(c) = &filter.credential {
                    q.append_pair("credential", c);
                }
                if let Some(a) = &filter.actor {
                    q.append_pair("actor", a);
                }
                if let Some(o) = &filter.outcome {
                    q.append_pair("outcome", o);
                }
                if let Some(s) = filter.since_ms {
                    q.append_pair("since", &s.to_string());
                }
                if let Some(u) = filter.until_ms {
                    q.append_pair("until", &u.to_string());
                }
                if let Some(c) = &cursor {
                    q.append_pair("cursor", c);
                }
                let reply = remote
                    .call("GET", &format!("/v1/audit?{}", q.finish()), None)
                    .await?;
                let events = reply["events"].as_array().cloned().ok_or_else(|| {
                    anyhow::anyhow!("the server's reply to GET /v1/audit holds no events")
                })?;
                let cursor = reply["cursor"].as_str().map(str::to_string);
                Ok((events, cursor))
            }
            Source::Direct(app, who) => {
                let (events, cursor) = app
                    .audit()
                    .list_filtered(who, filter, cursor, Some(limit))
                    .await
                    .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
                let events = events
                    .iter()
                    .filter_map(|e| serde_json::to_value(e).ok())
                    .collect();
                Ok((events, cursor))
            }
        }
    }

    /// The newest `limit` events that match (every page followed), newest first.
    async fn newest(&self, filter: &AuditFilter, limit: usize) -> anyhow::Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let (events, next) = self.page(filter, cursor, limit - out.len()).await?;
            out.extend(events);
            cursor = next;
            if cursor.is_none() || out.len() >= limit {
                out.truncate(limit);
                return Ok(out);
            }
        }
    }
}

/// What `vultrino audit` was asked.
pub struct Listing {
    pub filter: AuditFilter,
    pub limit: usize,
    pub follow: bool,
    pub interval: Duration,
    pub json: bool,
}

/// Run `vultrino audit`.
pub async fn run(source: &Source, l: &Listing) -> anyhow::Result<()> {
    let mut events = source.newest(&l.filter, l.limit).await?;
    events.reverse();
    // Ids printed, with their instants; forgotten once older than the lookback.
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut newest = 0u64;
    for e in &events {
        print_event(e, l.json)?;
        remember(&mut seen, &mut newest, e);
    }
    if !l.follow {
        return Ok(());
    }
    if newest == 0 {
        newest = now_ms();
    }
    loop {
        tokio::time::sleep(l.interval).await;
        let mut filter = l.filter.clone();
        let from = newest.saturating_sub(FOLLOW_LOOKBACK_MS);
        filter.since_ms = Some(filter.since_ms.map_or(from, |s| s.max(from)));
        let mut fresh: Vec<Value> = Vec::new();
        let mut cursor = None;
        loop {
            let (page, next) = source.page(&filter, cursor, 1000).await?;
            fresh.extend(
                page.into_iter()
                    .filter(|e| !seen.contains_key(e["id"].as_str().unwrap_or_default())),
            );
            cursor = next;
            if cursor.is_none() {
                break;
            }
        }
        fresh.sort_by_key(|e| e["ts"].as_u64().unwrap_or(0));
        for e in &fresh {
            print_event(e, l.json)?;
            remember(&mut seen, &mut newest, e);
        }
        let horizon = newest.saturating_sub(FOLLOW_LOOKBACK_MS);
        seen.retain(|_, ts| *ts >= horizon);
    }
}

fn remember(seen: &mut HashMap<String, u64>, newest: &mut u64, e: &Value) {
    let ts = e["ts"].as_u64().unwrap_or(0);
    if let Some(id) = e["id"].as_str() {
        seen.insert(id.to_string(), ts);
    }
    *newest = (*newest).max(ts);
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn print_event(e: &Value, json: bool) -> anyhow::Result<()> {
    use std::io::Write;
    let line = if json {
        serde_json::to_string(e)?
    } else {
        text_line(e)
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// One event as a text line: time, actor, action, outcome, then what is known of credential,
/// request, status, code and count.
pub fn text_line(e: &Value) -> String {
    let s = |k: &str| e[k].as_str().map(printable);
    let mut parts = vec![
        vultrino_core::time::rfc3339(e["ts"].as_u64().unwrap_or(0)),
        s("actor").unwrap_or_default(),
        s("action").unwrap_or_default(),
        s("outcome").unwrap_or_default(),
    ];
    if let Some(c) = s("credential") {
        parts.push(format!("credential={c}"));
    }
    if let Some(r) = s("record") {
        parts.push(format!("record={r}"));
    }
    match (s("method"), s("host"), s("path")) {
        (m, Some(h), p) => parts.push(format!(
            "{}{h}{}",
            m.map(|m| m + " ").unwrap_or_default(),
            p.unwrap_or_default()
        )),
        (Some(m), None, Some(p)) => parts.push(format!("{m} {p}")),
        _ => {}
    }
    if let Some(st) = e["status"].as_u64() {
        parts.push(format!("status={st}"));
    }
    if let Some(c) = s("code") {
        parts.push(format!("code={c}"));
    }
    if let Some(n) = e["count"].as_u64() {
        parts.push(format!("count={n}"));
    }
    parts.join("  ")
}

/// `--since`: a duration back from now (`90s`, `15m`, `2h`, `7d`) or an instant in
/// milliseconds since the epoch.
pub fn parse_since(s: &str, now_ms: u64) -> anyhow::Result<u64> {
    let s = s.trim();
    let bad = || {
        anyhow::anyhow!(
            "--since takes a duration back from now (90s, 15m, 2h, 7d) or milliseconds since \
             the epoch, not '{}'",
            printable(s)
        )
    };
    let unit = match s.chars().last() {
        Some('s') => 1_000u64,
        Some('m') => 60_000,
        Some('h') => 3_600_000,
        Some('d') => 86_400_000,
        Some(c) if c.is_ascii_digit() => return s.parse::<u64>().map_err(|_| bad()),
        _ => return Err(bad()),
    };
    let n: u64 = s[..s.len() - 1].parse().map_err(|_| bad())?;
    Ok(now_ms.saturating_sub(n.saturating_mul(unit)))
}

/// Now, for `--since`.
pub fn now() -> u64 {
    now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_and_instants() {
        let now = 10_000_000;
        assert_eq!(parse_since("90s", now).ok(), Some(now - 90_000));
        assert_eq!(parse_since("2h", now).ok(), Some(now - 7_200_000));
        assert_eq!(parse_since("1d", now).ok(), Some(0));
        assert_eq!(
            parse_since("1700000000000", now).ok(),
            Some(1_700_000_000_000)
        );
        assert!(parse_since("soon", now).is_err());
        assert!(parse_since("h", now).is_err());
        assert!(parse_since("", now).is_err());
    }

    #[test]
    fn text_lines_are_printable() {
        let e = serde_json::json!({"ts": 0, "actor": "key:k\u{1b}[31m", "action": "proxy",
            "outcome": "denied", "credential": "gh", "method": "GET", "host": "api.x", "path": "/a\nb",
            "status": 403, "code": "policy_denied"});
        let line = text_line(&e);
        assert!(!line.chars().any(char::is_control), "{line}");
        assert!(
            line.contains("credential=gh") && line.contains("GET api.x/a\\nb"),
            "{line}"
        );
    }
}
