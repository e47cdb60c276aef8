//! A `vultrino serve` on a loopback address is reachable by any web page the admin visits
//! through DNS rebinding: the page's own name (`rebind.attacker.example`) is made to resolve to
//! 127.0.0.1, so the browser sends the page's requests to the local server as same-origin ones
//! — `Origin` and `Host` agree, `Sec-Fetch-Site: same-origin`, and a JSON body needs no
//! preflight. The same-origin rule of `POST /login` (issue 18) cannot tell such a request from
//! the admin's own: only the `Host` can, since no name of the attacker's is a name of this
//! server. Talks only to 127.0.0.1 (review of issue 18).

#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use support::{Server, ServerOptions, ADMIN_PASSWORD};

/// POST a JSON login to the server at `addr` with the given `Host` (and the `Origin` a page
/// served under that host sends); returns the status code.
fn login_as_page(addr: &str, host: &str, password: &str) -> u16 {
    let body = format!(r#"{{"username":"admin","password":"{password}"}}"#);
    let request = format!(
        "POST /login HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\n\
         Sec-Fetch-Site: same-origin\r\nSec-Fetch-Mode: cors\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {reply:?}"))
}

/// A page under a rebound name spends none of the login attempts of the admin's browser (whose
/// client, 127.0.0.1, it shares) nor of the admin user, and is refused before it can guess: the
/// admin still logs in, from `127.0.0.1:<port>` and from `localhost:<port>`.
#[tokio::test]
async fn a_dns_rebinding_page_cannot_lock_the_local_admin_out() {
    let server = Server::start_local(ServerOptions {
        login_max_attempts: 3,
        ..ServerOptions::default()
    })
    .await;
    let addr = server.base.trim_start_matches("http://").to_string();
    let port = addr.rsplit(':').next().unwrap().to_string();
    let page = format!("rebind.attacker.example:{port}");
    let statuses = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || {
            (0..5)
                .map(|_| login_as_page(&addr, &page, "wrong"))
                .collect::<Vec<_>>()
        }
    })
    .await
    .unwrap();
    for status in &statuses {
        assert!(
            *status != 401 && *status != 429 && *status != 200,
            "a rebound page reached the login: {statuses:?}"
        );
    }
    for host in [addr.clone(), format!("localhost:{port}")] {
        let status = tokio::task::spawn_blocking({
            let addr = addr.clone();
            move || login_as_page(&addr, &host, ADMIN_PASSWORD)
        })
        .await
        .unwrap();
        assert_eq!(status, 200, "the admin is not locked out");
    }
    server.stop().await;
}

/// The pass-through proxy is behind the same guard: a rebound page cannot use a key it finds
/// (or guesses) through the local server, and the refusal is marked as Vultrino's own.
#[tokio::test]
async fn a_dns_rebinding_page_cannot_reach_the_proxy() {
    let server = Server::start_local(ServerOptions::default()).await;
    let addr = server.base.trim_start_matches("http://").to_string();
    let port = addr.rsplit(':').next().unwrap().to_string();
    let reply = tokio::task::spawn_blocking(move || {
        let request = format!(
            "GET /proxy/any/v1/models HTTP/1.1\r\nHost: rebind.attacker.example:{port}\r\n\
             X-Vultrino-Key: vk_0123456789abcdef_x\r\nConnection: close\r\n\r\n"
        );
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        reply
    })
    .await
    .unwrap();
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
    assert!(
        reply
            .to_ascii_lowercase()
            .contains("x-vultrino-error: csrf_failed"),
        "{reply}"
    );
    server.stop().await;
}
