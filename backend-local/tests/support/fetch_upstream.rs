//! The upstream of the core's Fetcher conformance suite: the route table of
//! `vultrino_core::testkit::fetcher`, on 127.0.0.1, as a raw HTTP/1.1 server (every byte of a
//! reply is under the test's control: declared lengths that are never sent, bodies that never
//! end, headers in a given order). Keep-alive; counts accepted connections for the local-only
//! tests (loopback refusal, connection reuse).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long a `hang=1` reply keeps its connection open (the suite's deadlines are far shorter).
const HANG: Duration = Duration::from_secs(60);

/// The running upstream. Its tasks end with the test's runtime.
pub struct SuiteUpstream {
    pub port: u16,
    connections: Arc<AtomicUsize>,
    landings: Arc<Mutex<HashMap<String, usize>>>,
    request_lines: Arc<Mutex<Vec<String>>>,
}

impl SuiteUpstream {
    /// Start on 127.0.0.1:0.
    pub async fn start() -> SuiteUpstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the suite upstream");
        let port = listener.local_addr().expect("upstream address").port();
        let connections = Arc::new(AtomicUsize::new(0));
        let landings = Arc::new(Mutex::new(HashMap::new()));
        let request_lines = Arc::new(Mutex::new(Vec::new()));
        let (count, hits, lines) = (connections.clone(), landings.clone(), request_lines.clone());
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(sock, hits.clone(), lines.clone()));
            }
        });
        SuiteUpstream {
            port,
            connections,
            landings,
            request_lines,
        }
    }

    /// `http://127.0.0.1:<port>`, the suite's `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// The request lines received so far (`METHOD target HTTP/x.y`), in order.
    pub fn request_lines(&self) -> Vec<String> {
        self.request_lines
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// Requests to `/landing/<id>` so far.
    pub fn landings(&self, id: &str) -> usize {
        self.landings
            .lock()
            .map(|m| m.get(id).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

/// `http://127.0.0.1:<port>` with nothing listening: a listener is bound, its port noted, and
/// the listener closed.
pub async fn refused_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a port to close");
    let port = listener.local_addr().expect("closed port").port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// One parsed request.
struct Req {
    /// `METHOD target HTTP/x.y`, as received.
    line: String,
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Req {
    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    fn param(&self, name: &str) -> Option<&str> {
        let query = self.target.split_once('?')?.1;
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }

    fn number(&self, name: &str) -> usize {
        self.param(name).and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What to write back.
#[derive(Default)]
struct Reply {
    /// Status line and headers, each line ending in CRLF, without the blank line.
    head: String,
    body: Vec<u8>,
    delay: Duration,
    /// After writing, keep the connection open without another byte.
    hang: bool,
}

fn reply(status: &str, headers: &[(&str, String)], body: impl Into<Vec<u8>>) -> Reply {
    let mut head = format!("HTTP/1.1 {status}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    Reply {
        head,
        body: body.into(),
        ..Reply::default()
    }
}

fn with_length(status: &str, headers: &[(&str, String)], body: impl Into<Vec<u8>>) -> Reply {
    let body = body.into();
    let mut all = headers.to_vec();
    all.push(("Content-Length", body.len().to_string()));
    reply(status, &all, body)
}

/// `body` in chunks of at most 1024 bytes, with the final chunk unless `hang`.
fn chunked(status: &str, headers: &[(&str, String)], body: &[u8], hang: bool) -> Reply {
    let mut all = headers.to_vec();
    all.push(("Transfer-Encoding", "chunked".to_string()));
    let mut out = Vec::new();
    for chunk in body.chunks(1024) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    if !hang {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    Reply {
        hang,
        ..reply(status, &all, out)
    }
}

fn route(req: &Req, landings: &Mutex<HashMap<String, usize>>) -> Reply {
    let path = req.path();
    if let Some(id) = path.strip_prefix("/redirect/") {
        let status = req.number("status");
        return reply(
            &format!("{status} Redirect"),
            &[
                ("Location", format!("/landing/{id}")),
                ("Content-Length", "0".into()),
            ],
            Vec::new(),
        );
    }
    if let Some(id) = path.strip_prefix("/landing/") {
        if let Ok(mut m) = landings.lock() {
            *m.entry(id.to_string()).or_default() += 1;
        }
        return with_length("200 OK", &[], "landed");
    }
    if let Some(id) = path.strip_prefix("/hits/") {
        let n = landings
            .lock()
            .map(|m| m.get(id).copied().unwrap_or(0))
            .unwrap_or(0);
        return with_length("200 OK", &[], n.to_string());
    }
    let hang = req.param("hang") == Some("1");
    match path {
        "/ok" => with_length("200 OK", &[], "hello"),
        "/slow" => Reply {
            delay: Duration::from_millis(req.number("ms") as u64),
            ..with_length("200 OK", &[], "late")
        },
        "/big" => {
            let n = req.number("n");
            let sent = if hang { n.min(3) } else { n };
            Reply {
                hang,
                ..reply(
                    "200 OK",
                    &[("Content-Length", n.to_string())],
                    vec![b'x'; sent],
                )
            }
        }
        "/big-chunked" => chunked("200 OK", &[], &vec![b'x'; req.number("n")], hang),
        "/encoded" => {
            let coding = req.param("ce").unwrap_or("").to_string();
            let headers = [("Content-Encoding", coding)];
            if req.param("chunked") == Some("1") {
                chunked("200 OK", &headers, &req.body, false)
            } else {
                with_length("200 OK", &headers, req.body.clone())
            }
        }
        "/echo" => {
            let json = serde_json::json!({
                "method": req.method,
                "target": req.target,
                "headers": req.headers.iter().map(|(n, v)| [n, v]).collect::<Vec<_>>(),
                "body_base64": base64::engine::general_purpose::STANDARD.encode(&req.body),
            });
            with_length(
                "200 OK",
                &[("Content-Type", "application/json".into())],
                json.to_string(),
            )
        }
        "/multi-header" => with_length(
            "201 Created",
            &[
                ("Set-Cookie", "a=1".into()),
                ("X-Multi", "one".into()),
                ("Set-Cookie", "b=2".into()),
                ("X-Multi", "two".into()),
            ],
            "ok",
        ),
        "/empty-204" => reply("204 No Content", &[], Vec::new()),
        "/not-modified" => reply(
            "304 Not Modified",
            &[
                ("Content-Length", "10000000".into()),
                ("ETag", "\"v1\"".into()),
            ],
            Vec::new(),
        ),
        _ => with_length("404 Not Found", &[], "no such route"),
    }
}

/// Read one request from `buf` + `sock`; `None` when the connection ends or is not HTTP/1.1 as
/// this server understands it.
async fn read_request(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Req> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if sock.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let line = lines.next()?.to_string();
    let mut first = line.split(' ');
    let (method, target) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    buf.drain(..head_end);
    let mut req = Req {
        line,
        method,
        target,
        headers,
        body: Vec::new(),
    };
    if req
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        // Chunked request body: size line, data, CRLF … until a zero-size chunk.
        loop {
            let line_end = loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                if sock.read_buf(buf).await.ok()? == 0 {
                    return None;
                }
            };
            let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            while buf.len() < line_end + 2 + size + 2 {
                if sock.read_buf(buf).await.ok()? == 0 {
                    return None;
                }
            }
            req.body
                .extend_from_slice(&buf[line_end + 2..line_end + 2 + size]);
            buf.drain(..line_end + 2 + size + 2);
            if size == 0 {
                return Some(req); // (no trailers are sent by the clients under test)
            }
        }
    }
    let len: usize = req
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < len {
        if sock.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    }
    req.body = buf.drain(..len).collect();
    Some(req)
}

async fn serve(
    mut sock: TcpStream,
    landings: Arc<Mutex<HashMap<String, usize>>>,
    request_lines: Arc<Mutex<Vec<String>>>,
) {
    let mut buf = Vec::new();
    while let Some(req) = read_request(&mut sock, &mut buf).await {
        if let Ok(mut lines) = request_lines.lock() {
            lines.push(req.line.clone());
        }
        let r = route(&req, &landings);
        tokio::time::sleep(r.delay).await;
        let mut out = r.head.into_bytes();
        out.extend_from_slice(b"\r\n");
        if req.method != "HEAD" {
            out.extend_from_slice(&r.body);
        }
        if sock.write_all(&out).await.is_err() {
            return;
        }
        if r.hang {
            tokio::time::sleep(HANG).await;
            return;
        }
    }
}
