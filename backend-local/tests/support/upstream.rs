//! A loopback upstream for the HTTP suite: echoes requests (so a test can see what Vultrino
//! sent and what comes back scrubbed), issues OAuth2 tokens, redirects, and counts hits.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;

/// One request the upstream received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: BTreeMap<String, String>,
    /// The body, when it arrived whole (empty when it was cut).
    pub body: Vec<u8>,
    /// Every body byte that arrived, also of a body cut before its end.
    pub received: Vec<u8>,
}

#[derive(Default)]
pub struct State {
    pub seen: Vec<Seen>,
    pub tokens_issued: u32,
    /// `/hold` replies end once this is set ([`Upstream::release_holds`]).
    pub holds_released: bool,
    /// `/slow` requests answered (their delay over).
    pub answered_slow: usize,
}

/// Wakes `/hold` replies when [`Upstream::release_holds`] is called.
static HOLDS: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// The running upstream.
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
}

pub const OAUTH_CLIENT_ID: &str = "client-abc";
pub const OAUTH_CLIENT_SECRET: &str = "oauth-client-secret-Zq81";
pub const OAUTH_REFRESH_TOKEN: &str = "refresh-token-Pm47";
/// The session cookie `/set-cookie` hands out (a credential derived from the injected secret).
pub const SESSION_COOKIE: &str = "sid=upstream-session-Qw12";

impl Upstream {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state
            .lock()
            .map(|s| s.seen.clone())
            .unwrap_or_default()
    }

    pub fn hits(&self, path: &str) -> usize {
        self.seen().iter().filter(|s| s.path == path).count()
    }

    /// How many `/slow` requests were answered (their reply's head sent), not only received.
    pub fn answered_slow(&self) -> usize {
        self.state.lock().map(|s| s.answered_slow).unwrap_or(0)
    }

    pub fn tokens_issued(&self) -> u32 {
        self.state.lock().map(|s| s.tokens_issued).unwrap_or(0)
    }

    /// End every `/hold` reply (those held now and those to come).
    pub fn release_holds(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.holds_released = true;
        }
        HOLDS.notify_waiters();
    }

    /// Start on 127.0.0.1:0.
    pub async fn start() -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let state = Arc::new(Mutex::new(State::default()));
        let up = Upstream {
            addr,
            state: state.clone(),
        };
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| respond(state.clone(), addr, req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        up
    }
}

async fn respond(
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Reply>, std::convert::Infallible> {
    let (parts, mut incoming) = req.into_parts();
    // Frame by frame, so that the bytes of a body cut before its end are seen too.
    let mut received = Vec::new();
    let mut whole = true;
    while let Some(frame) = incoming.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    received.extend_from_slice(data);
                }
            }
            Err(_) => {
                whole = false;
                break;
            }
        }
    }
    let body = if whole {
        Bytes::from(received.clone())
    } else {
        Bytes::new()
    };
    let headers: BTreeMap<String, String> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let seen = Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        headers: headers.clone(),
        body: body.to_vec(),
        received,
    };
    if let Ok(mut s) = state.lock() {
        s.seen.push(seen.clone());
    }
    // The head and a first chunk at once, the end only once the test releases it: an exchange
    // held open after its head.
    if seen.path == "/hold" {
        let released = move || state.lock().map(|s| s.holds_released).unwrap_or(true);
        let chunks = futures_util::stream::unfold(0u8, move |step| {
            let released = released.clone();
            async move {
                match step {
                    0 => Some((
                        Ok(hyper::body::Frame::data(Bytes::from_static(b"start\n"))),
                        1,
                    )),
                    1 => {
                        loop {
                            let woken = HOLDS.notified();
                            if released() {
                                break;
                            }
                            let _ =
                                tokio::time::timeout(std::time::Duration::from_millis(200), woken)
                                    .await;
                        }
                        Some((
                            Ok(hyper::body::Frame::data(Bytes::from_static(b"end\n"))),
                            2,
                        ))
                    }
                    _ => None,
                }
            }
        });
        let mut r = hyper::Response::new(http_body_util::StreamBody::new(chunks).boxed());
        r.headers_mut()
            .insert("content-type", "text/plain".parse().expect("content type"));
        return Ok(r);
    }
    let reply = |status: u16, ct: &str, body: Vec<u8>| {
        let mut r = hyper::Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
        r.headers_mut()
            .insert("content-type", ct.parse().expect("content type"));
        r
    };
    let resp = match seen.path.as_str() {
        // Echo everything, and repeat the credential in every encoding an upstream might use
        // (also under a base path: `/<anything>/echo`, for the pass-through proxy's base_url).
        p if p == "/echo" || p.ends_with("/echo") => {
            let auth = headers.get("authorization").cloned().unwrap_or_default();
            let api_key = headers.get("x-api-key").cloned().unwrap_or_default();
            let q = seen.query.clone();
            let secretish = format!("{auth}|{api_key}|{q}");
            let b64 = base64::engine::general_purpose::STANDARD.encode(&secretish);
            let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&secretish);
            let urlenc: String =
                url::form_urlencoded::byte_serialize(secretish.as_bytes()).collect();
            let v = json!({
                "method": seen.method,
                "path": seen.path,
                "query": q,
                "headers": headers,
                "body": String::from_utf8_lossy(&seen.body),
                "as_base64": b64,
                "as_base64url": b64url,
                "as_urlencoded": urlenc,
                "as_json_string": serde_json::to_string(&secretish).unwrap_or_default(),
            });
            let mut r = reply(
                200,
                "application/json",
                serde_json::to_vec(&v).unwrap_or_default(),
            );
            if let Ok(h) = auth.parse() {
                r.headers_mut().insert("x-echo-authorization", h);
            }
            r
        }
        "/redirect" => {
            let mut r = reply(302, "text/plain", b"moved".to_vec());
            r.headers_mut().insert(
                "location",
                format!("http://{addr}/landing").parse().expect("location"),
            );
            r
        }
        "/landing" => reply(200, "text/plain", b"landed".to_vec()),
        // The whole request read (and seen), the head held back for 2 s (or `?ms=`), then
        // counted as answered ([`Upstream::answered_slow`]).
        "/slow" => {
            let ms = url::form_urlencoded::parse(seen.query.as_bytes())
                .find(|(k, _)| k == "ms")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(2000);
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            if let Ok(mut s) = state.lock() {
                s.answered_slow += 1;
            }
            reply(200, "text/plain", b"slow".to_vec())
        }
        // A redirect to wherever `?to=` says (under any base path).
        p if p.ends_with("/redirect-to") => {
            let to = url::form_urlencoded::parse(seen.query.as_bytes())
                .find(|(k, _)| k == "to")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            let mut r = reply(307, "text/plain", b"moved".to_vec());
            r.headers_mut()
                .insert("location", to.parse().expect("location"));
            r
        }
        // A page a browser would run, with the headers that would let it take over the origin
        // it is served on, and an error header of Vultrino's own, forged.
        "/hostile" => {
            let mut r = reply(
                200,
                "text/html",
                b"<script>navigator.serviceWorker.register('sw.js',{scope:'/'})</script>".to_vec(),
            );
            let h = r.headers_mut();
            h.insert("service-worker-allowed", "/".parse().expect("header"));
            h.insert(
                "content-security-policy",
                "script-src *".parse().expect("header"),
            );
            h.insert("clear-site-data", "\"*\"".parse().expect("header"));
            h.insert(
                "x-vultrino-error",
                "credential_not_found".parse().expect("header"),
            );
            r
        }
        // A redirect and a header that carry the credential it received (an upstream that
        // puts a token in the next URL).
        "/redirect-leak" => {
            let auth = headers.get("authorization").cloned().unwrap_or_default();
            let token = auth.trim_start_matches("Bearer ");
            let mut r = reply(302, "text/plain", b"moved".to_vec());
            let h = r.headers_mut();
            h.insert(
                "location",
                format!("http://{addr}/landing?t={token}")
                    .parse()
                    .expect("location"),
            );
            h.insert("x-leak", auth.parse().expect("header"));
            r
        }
        // An OpenAI-style event stream that spells the credential it received out over
        // consecutive events, three characters per delta (a client joining the deltas would
        // rebuild it).
        "/sse-leak" => {
            let auth = headers.get("authorization").cloned().unwrap_or_default();
            let token: Vec<char> = auth.trim_start_matches("Bearer ").chars().collect();
            let mut text = String::new();
            for piece in token.chunks(3) {
                let piece: String = piece.iter().collect();
                let event = json!({"choices": [{"index": 0, "delta": {"content": piece}}]});
                text.push_str(&format!("data: {event}\n\n"));
            }
            text.push_str("data: [DONE]\n\n");
            reply(200, "text/event-stream", text.into_bytes())
        }
        // Hop-by-hop headers in a reply: `Connection` names one of its own.
        "/hop" => {
            let mut r = reply(200, "text/plain", b"hop".to_vec());
            let h = r.headers_mut();
            h.insert("connection", "x-resp-hop".parse().expect("connection"));
            h.insert("x-resp-hop", "1".parse().expect("header"));
            h.insert("keep-alive", "timeout=5".parse().expect("header"));
            h.insert("x-end-to-end", "kept".parse().expect("header"));
            r
        }
        // Opens a session the way many APIs do after an authenticated request: cookies derived
        // from the credential (one of them carries the Authorization header it received).
        "/set-cookie" => {
            let auth = headers.get("authorization").cloned().unwrap_or_default();
            let mut r = reply(200, "text/plain", b"cookies set".to_vec());
            let h = r.headers_mut();
            h.append(
                "set-cookie",
                format!("{SESSION_COOKIE}; Path=/; HttpOnly")
                    .parse()
                    .expect("cookie"),
            );
            h.append(
                "set-cookie",
                format!("echo={}; Path=/", auth.replace(' ', "_"))
                    .parse()
                    .expect("cookie"),
            );
            h.append(
                "set-cookie2",
                format!("{SESSION_COOKIE}; Version=1")
                    .parse()
                    .expect("cookie"),
            );
            r
        }
        // Echoes the Authorization header gzip-compressed, whatever was asked for: a body the
        // scrubber could not see into unless it is decoded first.
        "/gzip" => {
            use std::io::Write as _;
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            let auth = headers.get("authorization").cloned().unwrap_or_default();
            let _ = enc.write_all(format!("{{\"auth\":\"{auth}\"}}").as_bytes());
            let mut r = reply(200, "application/json", enc.finish().unwrap_or_default());
            r.headers_mut()
                .insert("content-encoding", "gzip".parse().expect("encoding"));
            r
        }
        "/binary" => reply(200, "application/octet-stream", vec![0, 159, 146, 150, 255]),
        "/token" => {
            let expected = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{OAUTH_CLIENT_ID}:{OAUTH_CLIENT_SECRET}"))
            );
            let form: BTreeMap<String, String> = url::form_urlencoded::parse(&seen.body)
                .into_owned()
                .collect();
            if headers.get("authorization") != Some(&expected) {
                reply(
                    401,
                    "application/json",
                    br#"{"error":"invalid_client"}"#.to_vec(),
                )
            } else if !grant_ok(&form) {
                reply(
                    400,
                    "application/json",
                    br#"{"error":"invalid_grant"}"#.to_vec(),
                )
            } else {
                let n = state
                    .lock()
                    .map(|mut s| {
                        s.tokens_issued += 1;
                        s.tokens_issued
                    })
                    .unwrap_or(0);
                let v = json!({"access_token": format!("access-token-{n}-Kx92"), "token_type": "Bearer", "expires_in": 3600});
                reply(
                    200,
                    "application/json",
                    serde_json::to_vec(&v).unwrap_or_default(),
                )
            }
        }
        _ => reply(404, "text/plain", b"no such path".to_vec()),
    };
    Ok(resp.map(BodyExt::boxed))
}

/// The body of the upstream's replies.
type Reply = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

/// Client credentials, or the refresh token this upstream issued.
fn grant_ok(form: &BTreeMap<String, String>) -> bool {
    match form.get("grant_type").map(String::as_str) {
        Some("client_credentials") => true,
        Some("refresh_token") => {
            form.get("refresh_token").map(String::as_str) == Some(OAUTH_REFRESH_TOKEN)
        }
        _ => false,
    }
}
