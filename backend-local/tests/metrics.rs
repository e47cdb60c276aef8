//! `GET /metrics` (Prometheus text format) on the local server's own metrics listener
//! (`serve --metrics-listen`, docs/decisions/0105-audit-view-and-metrics.md): off by default,
//! never on the API listener, and a scrape after N executes and proxied calls shows them — by
//! outcome, in the upstream latency histogram, in the scrubbed replies — with no secret, alias
//! or actor in any label.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{json, Value};
use support::upstream::Upstream;
use support::{expect, Client, Server, ServerOptions};

const SECRET: &str = "sk-live-Metr1csXq8";

async fn scrape(http: &reqwest::Client, url: &str) -> (u16, String, String) {
    let r = http.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ct, r.text().await.unwrap())
}

/// The value of the one sample `series` (name and labels, exactly as exposed).
fn sample(text: &str, series: &str) -> f64 {
    let found: Vec<f64> = text
        .lines()
        .filter_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .collect();
    assert_eq!(found.len(), 1, "{series} in:\n{text}");
    found[0]
}

/// The text format's grammar, strictly: `# HELP name text`, `# TYPE name kind` once per family
/// and before its samples, then `name{label="value",…} number` lines of that family.
fn assert_well_formed(text: &str) {
    assert!(text.ends_with('\n'));
    let mut families: Vec<String> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap().to_string();
            assert!(!families.contains(&name), "{name} announced twice");
            families.push(name);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert_eq!(Some(name), families.last().map(String::as_str));
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
        } else {
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
            let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
            assert!(
                name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                "{line}"
            );
            let family = families.last().unwrap();
            let suffix = &name[family.len().min(name.len())..];
            assert!(
                name.starts_with(family.as_str())
                    && ["", "_bucket", "_sum", "_count"].contains(&suffix),
                "{line} outside {family}"
            );
            let labels = labels.strip_suffix('}').unwrap();
            for pair in labels.split(',').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap();
                assert!(
                    k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                    "{line}"
                );
                assert!(
                    v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                    "{line}"
                );
            }
        }
    }
}

#[tokio::test]
async fn metrics_are_off_by_default_and_never_on_the_api_listener() {
    let server = Server::start_local(ServerOptions::default()).await;
    assert_eq!(server.metrics, None, "no metrics listener unless asked for");
    let c = Client::new(server.target());
    let r = c.send("GET", "/metrics", None, None).await;
    expect(&r, 404, "not_found");
    let admin = c.login().await;
    let r = c.send("GET", "/metrics", Some(&admin), None).await;
    expect(&r, 404, "not_found");
}

#[tokio::test]
async fn a_scrape_after_executes_and_proxied_calls_counts_them_and_names_no_secret() {
    let up = Upstream::start().await;
    let server = Server::start_local(ServerOptions {
        extra_env: vec![("VULTRINO_METRICS_LISTEN".into(), "127.0.0.1:0".into())],
        ..ServerOptions::default()
    })
    .await;
    let url = server
        .metrics
        .clone()
        .expect("the metrics listener's address");
    let c = Client::new(server.target());
    let admin = c.login().await;
    let r = c
        .send(
            "POST",
            "/v1/credentials",
            Some(&admin),
            Some(&json!({
                "alias": "metrics-cred", "type": "api_key", "data": {"key": SECRET},
                "base_url": up.url(""),
                "policy": {"allowed_hosts": ["127.0.0.1"]}
            })),
        )
        .await;
    expect(&r, 201, None);
    let r = c
        .send(
            "POST",
            "/v1/keys",
            Some(&admin),
            Some(&json!({"name": "metrics-agent", "role": "executor"})),
        )
        .await;
    expect(&r, 201, None);
    let key = r.body["key"].as_str().unwrap().to_string();
    let key_id = r.body["id"].as_str().unwrap().to_string();
    let execute = |url: String| {
        let (c, key) = (c.clone(), key.clone());
        async move {
            c.send(
                "POST",
                "/v1/execute",
                Some(&key),
                Some(
                    &json!({"credential": "metrics-cred", "action": "http.request",
                             "params": {"method": "GET", "url": url}}),
                ),
            )
            .await
        }
    };
    // 3 allowed (the upstream echoes the secret: each reply is scrubbed), 2 denied (a host the
    // policy does not allow: nothing goes upstream).
    for _ in 0..3 {
        expect(&execute(up.url("/echo")).await, 200, None);
    }
    for _ in 0..2 {
        let r = execute("http://localhost:1/echo".into()).await;
        assert_eq!(r.status, 403, "{}", r.text);
    }
    // 1 proxied call, scrubbed too.
    let r = c
        .send_raw(
            c.http
                .get(format!("{}/proxy/metrics-cred/echo", server.target().base))
                .header("X-Vultrino-Key", &key),
        )
        .await;
    expect(&r, 200, None);

    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    // No authentication on the metrics listener: scrapers have no Vultrino key. A proxied
    // call is counted when its audit event is written, in the background once its reply's
    // stream has ended — possibly just after the client read that end: scraped again until it
    // shows (bounded), then everything is asserted on that one scrape.
    let proxied = "vultrino_credential_requests_total{action=\"proxy\",outcome=\"allowed\"} 1\n";
    let mut scraped = scrape(&http, &url).await;
    for _ in 0..50 {
        if scraped.2.contains(proxied) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        scraped = scrape(&http, &url).await;
    }
    let (status, ct, text) = scraped;
    assert_eq!(status, 200, "{text}");
    assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
    assert_well_formed(&text);
    let calls = |action: &str, outcome: &str| {
        sample(
            &text,
            &format!(
                "vultrino_credential_requests_total{{action=\"{action}\",outcome=\"{outcome}\"}}"
            ),
        )
    };
    assert_eq!(calls("execute", "allowed"), 3.0);
    assert_eq!(calls("execute", "denied"), 2.0);
    assert_eq!(calls("execute", "error"), 0.0);
    assert_eq!(calls("proxy", "allowed"), 1.0);
    let routes = |route: &str, class: &str| {
        sample(
            &text,
            &format!("vultrino_http_requests_total{{route=\"{route}\",status=\"{class}\"}}"),
        )
    };
    assert_eq!(routes("execute", "2xx"), 3.0);
    assert_eq!(routes("execute", "4xx"), 2.0);
    assert_eq!(routes("proxy", "2xx"), 1.0);
    assert_eq!(routes("session", "2xx"), 1.0, "the one login");
    // Four exchanges went upstream (3 executes, 1 proxied call): each timed once.
    assert_eq!(
        sample(&text, "vultrino_upstream_latency_seconds_count"),
        4.0
    );
    assert_eq!(
        sample(
            &text,
            "vultrino_upstream_latency_seconds_bucket{le=\"+Inf\"}"
        ),
        4.0
    );
    assert_eq!(sample(&text, "vultrino_upstream_errors_total"), 0.0);
    assert_eq!(
        sample(&text, "vultrino_scrubbed_replies_total{action=\"execute\"}"),
        3.0
    );
    assert_eq!(
        sample(&text, "vultrino_scrubbed_replies_total{action=\"proxy\"}"),
        1.0
    );
    for private in [
        SECRET,
        "metrics-cred",
        "metrics-agent",
        key.as_str(),
        key_id.as_str(),
        "127.0.0.1",
    ] {
        assert!(!text.contains(private), "{private} in the metrics");
    }

    // The execute events in the audit say they were scrubbed, as the counter does.
    let r = c
        .send(
            "GET",
            "/v1/audit?outcome=allowed&credential=metrics-cred",
            Some(&admin),
            None,
        )
        .await;
    expect(&r, 200, None);
    let events: Vec<Value> = r.body["events"].as_array().unwrap().clone();
    assert_eq!(events.len(), 4, "{events:?}");
    assert!(
        events.iter().all(|e| e["scrubbed"] == json!(true)),
        "{events:?}"
    );

    // The metrics listener answers /metrics only, to GET and HEAD.
    let r = http.post(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD");
    let other = url.replace("/metrics", "/v1/credentials");
    let r = http.get(&other).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "not_found");
}
