//! How admin sessions end and what a login or a request may cost: a change of the admin password
//! ends every session made before it, signing out everywhere ends every other session at once,
//! the admin user is throttled across clients, and an over-size body is refused before it is read.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{expect, expect_for, session_cookie, Client, Server, ServerOptions};
use crate::{env, env_with};

/// A deployment whose admin password hash changes (locally: `serve` started again on the same
/// data directory with a new `VULTRINO_ADMIN_PASSWORD_HASH`; on Workers: the same KV and Durable
/// Objects with a new `ADMIN_PASSWORD_HASH` secret) refuses every session made before the
/// change, bearer token and cookie, and the old password.
#[tokio::test]
async fn a_session_made_before_a_password_change_is_refused_after_it() {
    let state = tempfile::tempdir().unwrap();
    let before = Server::start(ServerOptions {
        data_dir: Some(state.path().join("state")),
        ..ServerOptions::default()
    })
    .await;
    let c = Client::new(before.target());
    let r = c
        .send(
            "POST",
            "/login",
            None,
            Some(&json!({"username": "admin", "password": c.target.admin_password})),
        )
        .await;
    expect(&r, 200, None);
    let token = r.body["token"].as_str().unwrap().to_string();
    let csrf = r.body["csrf_token"].as_str().unwrap().to_string();
    let cookie = session_cookie(&r);
    let r = c.send("GET", "/v1/credentials", Some(&token), None).await;
    expect(&r, 200, None);
    let old_password = c.target.admin_password.clone();
    before.stop().await;

    let after = Server::start(ServerOptions {
        data_dir: Some(state.path().join("state")),
        admin_password: "a brand new admin passphrase".into(),
        ..ServerOptions::default()
    })
    .await;
    let c = Client::new(after.target());
    let r = c.send("GET", "/v1/credentials", Some(&token), None).await;
    expect_for(
        "a bearer session made before the password change",
        &r,
        401,
        "invalid_session",
    );
    let r = c
        .send_cookie("GET", "/v1/credentials", &cookie, Some(&csrf), None)
        .await;
    expect_for(
        "a cookie session made before the password change",
        &r,
        401,
        "invalid_session",
    );
    let r = c
        .send(
            "POST",
            "/login",
            None,
            Some(&json!({"username": "admin", "password": old_password})),
        )
        .await;
    expect_for("the old password", &r, 401, "invalid_login");
    let fresh = c.login().await;
    let r = c.send("GET", "/v1/credentials", Some(&fresh), None).await;
    expect(&r, 200, None);
}

/// `POST /logout?everywhere=true` from one session ends another live session (its bearer token
/// and its cookie) at once, and the caller's own; a new login works.
#[tokio::test]
async fn signing_out_everywhere_kills_a_second_live_session_at_once() {
    let e = env().await;
    let login = |c: Client| async move {
        let r = c
            .send(
                "POST",
                "/login",
                None,
                Some(&json!({"username": "admin", "password": c.target.admin_password})),
            )
            .await;
        expect(&r, 200, None);
        (
            r.body["token"].as_str().unwrap().to_string(),
            session_cookie(&r),
            r.body["csrf_token"].as_str().unwrap().to_string(),
        )
    };
    let (other_token, other_cookie, other_csrf) = login(e.c.clone()).await;
    let r =
        e.c.send("GET", "/v1/credentials", Some(&other_token), None)
            .await;
    expect(&r, 200, None);

    let r =
        e.c.send("POST", "/logout?everywhere=true", Some(&e.admin), None)
            .await;
    expect(&r, 204, None);
    assert!(
        r.headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0"),
        "the caller's cookie is cleared"
    );
    let r =
        e.c.send("GET", "/v1/credentials", Some(&other_token), None)
            .await;
    expect_for("the other login's bearer token", &r, 401, "session_expired");
    let r =
        e.c.send_cookie(
            "GET",
            "/v1/credentials",
            &other_cookie,
            Some(&other_csrf),
            None,
        )
        .await;
    expect_for("the other login's cookie", &r, 401, "session_expired");
    let r =
        e.c.send("GET", "/v1/credentials", Some(&e.admin), None)
            .await;
    expect_for("the caller's own session", &r, 401, "session_expired");

    let (token, cookie, csrf) = login(e.c.clone()).await;
    let r = e.c.send("GET", "/v1/credentials", Some(&token), None).await;
    expect(&r, 200, None);
    let r =
        e.c.send_cookie("GET", "/v1/credentials", &cookie, Some(&csrf), None)
            .await;
    expect(&r, 200, None);
    // `everywhere` takes true or false; anything else ends nothing.
    let r =
        e.c.send("POST", "/logout?everywhere=yes", Some(&token), None)
            .await;
    expect_for("everywhere takes true or false", &r, 400, "bad_request");
    let r = e.c.send("GET", "/v1/credentials", Some(&token), None).await;
    expect(&r, 200, None);
}

/// The admin user has a login budget of its own, shared by every client: once it is used up in
/// the window, logins from any client — the right password included — get 429 `login_locked`
/// with `Retry-After`, though each client is within its own limit.
#[tokio::test]
async fn the_admin_user_is_throttled_across_clients() {
    let e = env_with(ServerOptions {
        login_max_attempts: 5,
        extra_env: vec![
            // The local server takes the client from X-Forwarded-For only when told to; the
            // worker takes it from CF-Connecting-IP.
            ("VULTRINO_TRUST_FORWARDED_FOR".into(), "true".into()),
            ("VULTRINO_LOGIN_MAX_ATTEMPTS_PER_USER".into(), "3".into()),
            ("LOGIN_MAX_ATTEMPTS_PER_USER".into(), "3".into()),
        ],
        ..ServerOptions::default()
    })
    .await;
    let attempt = |client: u8, password: String| {
        let c = e.c.clone();
        async move {
            let ip = format!("198.51.100.{client}");
            let url = format!("{}/login", c.target.base);
            c.send_raw(
                c.http
                    .post(&url)
                    .header("x-forwarded-for", &ip)
                    .header("cf-connecting-ip", &ip)
                    .json(&json!({"username": "admin", "password": password})),
            )
            .await
        }
    };
    // The harness's own login succeeded and reset the user's count: 3 attempts remain.
    for client in 1..=3 {
        let r = attempt(client, "wrong".into()).await;
        expect_for(&format!("client {client}"), &r, 401, "invalid_login");
    }
    let r = attempt(4, "wrong".into()).await;
    expect_for("a fourth client, first attempt", &r, 429, "login_locked");
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry > 0);
    let r = attempt(5, e.c.target.admin_password.clone()).await;
    expect_for(
        "the right password, while the user is throttled",
        &r,
        429,
        "login_locked",
    );
}

/// Send `head` and then `body` on a raw connection to the server, and return the status line of
/// the reply if one comes within 10 s (a server that waits for a body it was promised gives none).
async fn raw_status(base: &str, head: String, body: Vec<u8>) -> Option<String> {
    let addr = base.trim_start_matches("http://").trim_end_matches('/');
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    // Written beside the read: a server that refuses early may stop reading at any point.
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(head.as_bytes()).await;
        let _ = wr.write_all(&body).await;
        let _ = wr.flush().await;
        // Keep the connection open (no FIN): the body is never finished.
        tokio::time::sleep(Duration::from_secs(15)).await;
        drop(wr);
    });
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        while !got.windows(2).any(|w| w == b"\r\n") {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    writer.abort();
    read.ok()?;
    let text = String::from_utf8_lossy(&got).into_owned();
    text.lines().next().map(str::to_string)
}

/// A request announcing a body over the cap (1 MiB) is refused with 413 before its body is read:
/// the answer comes although the client has sent only a few bytes of the 1 GiB it announced. A
/// chunked body (no length announced) is cut off as soon as it passes the cap, without waiting
/// for its end.
#[tokio::test]
async fn an_oversize_body_is_refused_before_it_is_read() {
    let e = env().await;
    let host = e.c.target.base.trim_start_matches("http://").to_string();
    let head = format!(
        "POST /v1/credentials HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: 1073741824\r\n\r\n"
    );
    let status = raw_status(&e.c.target.base, head, b"{\"alias\":".to_vec()).await;
    assert!(
        status.as_deref().is_some_and(|s| s.contains(" 413")),
        "a 1 GiB Content-Length must get 413 before the body is read, got {status:?}"
    );

    let head = format!(
        "POST /v1/credentials HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    );
    let len = 1024 * 1024 + 1;
    let mut chunk = format!("{len:x}\r\n").into_bytes();
    chunk.extend(std::iter::repeat_n(b'a', len));
    chunk.extend_from_slice(b"\r\n");
    let status = raw_status(&e.c.target.base, head, chunk).await;
    assert!(
        status.as_deref().is_some_and(|s| s.contains(" 413")),
        "a chunked body past the cap must get 413 without waiting for its end, got {status:?}"
    );

    // A body within the cap is read and served as before.
    let r =
        e.c.send("GET", "/v1/credentials", Some(&e.admin), None)
            .await;
    expect(&r, 200, None);
}
