//! Approvals as people see them (issue 15; decision 0093): the CLI (`vultrino approval
//! list|show|approve|deny` through the server after `vultrino login`), and the notification
//! webhook — generic JSON and Slack — whose link only shows the approval: a GET of it (what a
//! link previewer does) decides nothing. The approval flow itself (202, re-send, binding,
//! expiry) is in `approvals`.

use serde_json::{json, Value};

use crate::support::{expect, expect_for, ServerOptions, ADMIN_PASSWORD};
use crate::{env, env_with, Env};

/// The public URL the notifications link to (never contacted: only its text is checked).
const PUBLIC_URL: &str = "https://vultrino.example.test";

impl Env {
    /// `alias`: an api_key credential on the loopback upstream whose every request waits for
    /// a person.
    async fn always_cred(&self, alias: &str) {
        let r = self
            .create(json!({
                "alias": alias, "type": "api_key", "data": {"key": crate::API_SECRET},
                "policy": {"allowed_hosts": ["127.0.0.1"], "require_approval": "always"}
            }))
            .await;
        expect(&r, 201, None);
    }

    /// The agent's POST through `alias` to `path` (re-sent with `approval` once it has one).
    async fn agent_post(
        &self,
        key: &str,
        alias: &str,
        path: &str,
        approval: Option<&str>,
    ) -> crate::Reply {
        let body = json!({
            "credential": alias, "method": "POST", "url": self.up.url(path),
            "body": {"title": "from the agent"}, "reason": "file the bug"
        });
        match approval {
            None => {
                self.c
                    .send("POST", "/v1/execute", Some(key), Some(&body))
                    .await
            }
            Some(id) => {
                let rb = self
                    .c
                    .http
                    .post(format!("{}/v1/execute", self.c.target.base))
                    .bearer_auth(key)
                    .header("x-vultrino-approval", id)
                    .json(&body);
                self.c.send_raw(rb).await
            }
        }
    }

    async fn approval_as_admin(&self, id: &str) -> Value {
        let r = self
            .c
            .send(
                "GET",
                &format!("/v1/approvals/{id}"),
                Some(&self.admin),
                None,
            )
            .await;
        expect_for("read the approval", &r, 200, None);
        r.body
    }
}

#[tokio::test]
async fn the_cli_lists_shows_approves_and_denies_approvals() {
    let e = env().await;
    e.always_cred("cli-ap").await;
    let key = e.key("executor").await;
    let a = e.agent_post(&key, "cli-ap", "/cli-a", None).await;
    expect_for("first request", &a, 202, None);
    let b = e.agent_post(&key, "cli-ap", "/cli-b", None).await;
    expect_for("second request", &b, 202, None);
    let (ida, idb) = (
        a.body["approval_id"].as_str().unwrap().to_string(),
        b.body["approval_id"].as_str().unwrap().to_string(),
    );

    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let base = e._server.base.clone();
    let (ok, _, err) = crate::cli::cli(
        home,
        &["login", "--server", &e._server.base],
        &format!("{ADMIN_PASSWORD}\n"),
    )
    .await;
    assert!(ok, "{err}");

    // list: both pending, as JSON and as a table.
    let (ok, out, err) = cli_at(
        home,
        &base,
        &["approval", "list", "--status", "pending", "--json"],
    )
    .await;
    assert!(ok, "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    let ids: Vec<&str> = listed["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&ida.as_str()) && ids.contains(&idb.as_str()),
        "{listed}"
    );
    // Piped (not a terminal), the listing is JSON without --json too (decision 0097); the table
    // a terminal gets is checked by the CLI's unit tests.
    let (ok, out, err) = cli_at(home, &base, &["approval", "list"]).await;
    assert!(ok, "{err}");
    let piped: Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("JSON: {out}"));
    assert!(
        piped["approvals"].as_array().is_some_and(|l| l
            .iter()
            .any(|a| a["id"] == ida.as_str() && a["status"] == "pending")),
        "{out}"
    );

    // On a terminal: a table, its times in the local time zone as in every CLI table (TZ
    // fixed here at UTC+05:30), the same in show.
    let expires = listed_expiry(&piped, &ida);
    let local = at_offset(expires, 5 * 3600 + 1800, "+05:30");
    let out = cli_on_terminal(home, &base, &["approval", "list"], "IST-5:30").await;
    assert!(out.starts_with("ID"), "a table: {out}");
    assert!(out.contains(&local), "{local} in {out}");
    let out = cli_on_terminal(home, &base, &["approval", "show", &ida], "IST-5:30").await;
    assert!(
        out.contains(&format!("expires       {local}")),
        "{local} in {out}"
    );

    // show: the bound request and the agent's reason.
    let (ok, out, err) = cli_at(home, &base, &["approval", "show", &ida]).await;
    assert!(ok, "{err}");
    for want in [
        e.up.url("/cli-a").as_str(),
        "cli-ap",
        "POST",
        "file the bug",
        "from the agent",
    ] {
        assert!(out.contains(want), "{want} in {out}");
    }
    assert_eq!(e.up.hits("/cli-a"), 0, "nothing runs before approval");

    // approve one, deny the other with a note.
    let (ok, out, err) = cli_at(home, &base, &["approval", "approve", &ida]).await;
    assert!(ok, "{err}");
    assert!(out.contains("approved"), "{out}");
    let (ok, _, err) = cli_at(
        home,
        &base,
        &["approval", "deny", &idb, "--note", "not today"],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(e.approval_as_admin(&ida).await["status"], "approved");
    let denied = e.approval_as_admin(&idb).await;
    assert_eq!(denied["status"], "denied", "{denied}");
    // Deciding twice is refused with the reason.
    let (ok, _, err) = cli_at(home, &base, &["approval", "approve", &idb]).await;
    assert!(!ok && err.contains("approval_not_pending"), "{err}");
    // --status filters.
    let (ok, out, err) = cli_at(
        home,
        &base,
        &["approval", "list", "--status", "denied", "--json"],
    )
    .await;
    assert!(ok, "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert!(
        listed["approvals"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["status"] == "denied"),
        "{listed}"
    );

    // The agent's re-sends: the approved one runs once, the denied one never.
    let r = e.agent_post(&key, "cli-ap", "/cli-a", Some(&ida)).await;
    expect_for("approved re-send", &r, 200, None);
    assert_eq!(e.up.hits("/cli-a"), 1);
    let r = e.agent_post(&key, "cli-ap", "/cli-b", Some(&idb)).await;
    expect_for("denied re-send", &r, 403, "approval_denied");
    assert_eq!(e.up.hits("/cli-b"), 0);
    assert!(!home.join("data").exists(), "no local store was opened");
}

/// The `expires_at` of approval `id` in a listing.
fn listed_expiry(listing: &Value, id: &str) -> u64 {
    listing["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == id)
        .and_then(|a| a["expires_at"].as_u64())
        .unwrap()
}

/// `ms` as RFC 3339 to the second at `offset_secs` east of UTC, written `suffix`.
fn at_offset(ms: u64, offset_secs: u64, suffix: &str) -> String {
    let shifted = vultrino_core::time::rfc3339(ms + offset_secs * 1000);
    format!("{}{suffix}", &shifted[..19])
}

/// `vultrino args… --server base` with `home`'s session on a terminal (a pty made by
/// util-linux `script`), so that it prints tables, in the time zone `tz`: its output.
async fn cli_on_terminal(home: &std::path::Path, base: &str, args: &[&str], tz: &str) -> String {
    use std::ffi::OsStr;
    let vultrino = crate::support::vultrino_cmd(Some(&home.join("data")));
    let vultrino = vultrino.as_std();
    let quote = |s: &OsStr| format!("'{}'", s.to_string_lossy().replace('\'', r"'\''"));
    let mut line = vec![quote(vultrino.get_program())];
    line.extend(vultrino.get_args().map(quote));
    line.extend(
        args.iter()
            .chain(&["--server", base])
            .map(|a| quote(OsStr::new(a))),
    );
    let mut cmd = tokio::process::Command::new("script");
    cmd.args(["-qec", &line.join(" "), "/dev/null"]);
    for (k, v) in vultrino.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.env("XDG_CONFIG_HOME", home.join("config"))
        .env("TZ", tz)
        .stdin(std::process::Stdio::null());
    let out = cmd.output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    assert!(out.status.success(), "{text}");
    text
}

/// `vultrino args… --server base` with `home`'s session.
async fn cli_at(home: &std::path::Path, base: &str, args: &[&str]) -> (bool, String, String) {
    let mut all = args.to_vec();
    all.extend(["--server", base]);
    crate::cli::cli(home, &all, "").await
}

/// A server whose approval notifications go to the loopback upstream's `/hook`, in `format`.
async fn notifying_env(format: &str) -> Env {
    notifying_env_to(format, "/hook").await
}

/// [`notifying_env`] with the notifications going to the upstream's `hook` (a path and query).
async fn notifying_env_to(format: &str, hook: &str) -> Env {
    let up = crate::support::upstream::Upstream::start().await;
    let hook = up.url(hook);
    let mut opts = ServerOptions::default();
    for (local, worker, value) in [
        (
            "VULTRINO_APPROVAL_WEBHOOK",
            "APPROVAL_WEBHOOK",
            hook.as_str(),
        ),
        (
            "VULTRINO_APPROVAL_WEBHOOK_FORMAT",
            "APPROVAL_WEBHOOK_FORMAT",
            format,
        ),
        ("VULTRINO_PUBLIC_URL", "PUBLIC_URL", PUBLIC_URL),
    ] {
        opts.extra_env.push((local.into(), value.into()));
        opts.extra_env.push((worker.into(), value.into()));
    }
    let mut e = env_with(opts).await;
    e.up = up;
    e
}

/// The notifications the webhook received (waits up to 5 s for `count`).
async fn notifications(e: &Env, count: usize) -> Vec<Value> {
    notifications_at(e, "/hook", count).await
}

/// The notifications the webhook at `path` received (waits up to 5 s for `count`).
async fn notifications_at(e: &Env, path: &str, count: usize) -> Vec<Value> {
    for _ in 0..50 {
        let got: Vec<Value> =
            e.up.seen()
                .into_iter()
                .filter(|s| s.path == path)
                .map(|s| serde_json::from_slice(&s.body).unwrap())
                .collect();
        if got.len() >= count {
            return got;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the webhook did not receive {count} notification(s)");
}

/// What a link previewer does with the notification's link: GET it (the fragment is never
/// sent) with a browser's and a bot's Accept, and GET the decision routes it might guess.
/// Returns after checking each answered without deciding anything.
async fn preview_link(e: &Env, link: &str, id: &str) {
    let path = link.strip_prefix(PUBLIC_URL).unwrap();
    let (page, fragment) = path.split_once('#').unwrap();
    assert_eq!(page, "/ui/");
    assert_eq!(fragment, format!("/approvals/{id}"));
    for accept in ["text/html,application/xhtml+xml", "*/*"] {
        let rb =
            e.c.http
                .get(format!("{}{page}", e.c.target.base))
                .header("accept", accept);
        let r = e.c.send_raw(rb).await;
        assert_eq!(r.status, 200, "{accept}");
        assert!(
            r.text.contains("<script src=\"/ui/app.js\""),
            "the page itself"
        );
    }
    for guess in ["approve", "deny"] {
        let r =
            e.c.send(
                "GET",
                &format!("/v1/approvals/{id}/{guess}"),
                Some(&e.admin),
                None,
            )
            .await;
        assert!(
            r.status == 405 || r.status == 404,
            "GET {guess}: {}",
            r.status
        );
    }
    assert_eq!(
        e.approval_as_admin(id).await["status"],
        "pending",
        "a GET decided the approval"
    );
}

#[tokio::test]
async fn a_requested_approval_is_posted_to_the_webhook_with_a_link_that_only_shows() {
    let e = notifying_env("json").await;
    e.always_cred("hook-ap").await;
    let key = e.key("executor").await;
    let r = e.agent_post(&key, "hook-ap", "/hooked", None).await;
    expect_for("request", &r, 202, None);
    let id = r.body["approval_id"].as_str().unwrap();
    let got = notifications(&e, 1).await;
    let n = &got[0];
    assert_eq!(n["event"], "approval_requested", "{n}");
    assert_eq!(n["approval_id"], id);
    assert_eq!(n["credential"], "hook-ap");
    assert_eq!(n["method"], "POST");
    assert_eq!(n["url"], e.up.url("/hooked"));
    assert_eq!(n["reason"], "file the bug");
    assert!(
        n["requested_by"].as_str().unwrap().starts_with("key:"),
        "{n}"
    );
    assert_eq!(n["expires_at"], r.body["expires_at"]);
    let link = n["link"].as_str().unwrap();
    assert_eq!(link, format!("{PUBLIC_URL}/ui/#/approvals/{id}"));
    // Neither the request's body nor any secret is in it.
    let text = n.to_string();
    assert!(
        !text.contains("from the agent") && !text.contains(crate::API_SECRET),
        "{text}"
    );
    assert_eq!(e.up.hits("/hooked"), 0, "nothing ran");
    preview_link(&e, link, id).await;
}

#[tokio::test]
async fn the_slack_notification_has_text_blocks_and_the_link() {
    let e = notifying_env("slack").await;
    e.always_cred("slack-ap").await;
    let key = e.key("executor").await;
    let r = e.agent_post(&key, "slack-ap", "/slacked", None).await;
    expect_for("request", &r, 202, None);
    let id = r.body["approval_id"].as_str().unwrap();
    let got = notifications(&e, 1).await;
    let n = &got[0];
    let text = n["text"].as_str().unwrap();
    let link = format!("{PUBLIC_URL}/ui/#/approvals/{id}");
    assert!(text.contains(&format!("<{link}|")), "{text}");
    assert!(
        text.contains("`slack-ap`") && text.contains("`POST`"),
        "{text}"
    );
    assert!(n["blocks"].as_array().is_some_and(|b| !b.is_empty()), "{n}");
    assert!(!n.to_string().contains(crate::API_SECRET));
    preview_link(&e, &link, id).await;
}

/// The webhook's POST goes out after the agent's 202, never before it (decision 0101): a webhook
/// that takes 3 s to answer has not answered when the 202 arrives (it was awaited first, up to
/// its 5 s deadline, before), and it is notified all the same.
#[tokio::test]
async fn the_agent_gets_its_202_before_the_webhook_answers() {
    let e = notifying_env_to("json", "/slow?ms=3000").await;
    e.always_cred("slow-hook").await;
    let key = e.key("executor").await;
    let r = e.agent_post(&key, "slow-hook", "/hooked", None).await;
    expect_for("request", &r, 202, None);
    assert_eq!(
        e.up.answered_slow(),
        0,
        "the 202 came after the webhook's answer: the agent waited for it"
    );
    let got = notifications_at(&e, "/slow", 1).await;
    assert_eq!(got[0]["approval_id"], r.body["approval_id"], "{}", got[0]);
    assert_eq!(e.up.hits("/hooked"), 0, "nothing ran");
}

/// One key cannot flood the person's channel (review of 2026-12-06, approvals and tokens,
/// finding 6): of its twelve approvals in a row only the first ten are announced (all twelve
/// are listed), while another key's approval is announced still.
#[tokio::test]
async fn a_key_cannot_flood_the_approval_webhook() {
    let e = notifying_env("json").await;
    e.always_cred("hook-flood").await;
    let key = e.key("executor").await;
    let other = e.key("executor").await;
    for i in 0..12 {
        let r = e
            .agent_post(&key, "hook-flood", &format!("/n{i}"), None)
            .await;
        expect_for("request", &r, 202, None);
    }
    notifications(&e, 10).await;
    let r = e.agent_post(&other, "hook-flood", "/other", None).await;
    expect_for("another key's request", &r, 202, None);
    let got = notifications(&e, 11).await;
    let urls: Vec<&str> = got.iter().filter_map(|n| n["url"].as_str()).collect();
    assert!(urls.contains(&e.up.url("/other").as_str()), "{urls:?}");
    for late in ["/n10", "/n11"] {
        assert!(!urls.contains(&e.up.url(late).as_str()), "{urls:?}");
    }
    assert_eq!(got.len(), 11, "{urls:?}");
    let r = e.c.send("GET", "/v1/approvals", Some(&key), None).await;
    assert_eq!(r.body["approvals"].as_array().unwrap().len(), 12);
}
