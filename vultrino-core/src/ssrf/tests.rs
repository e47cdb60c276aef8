//! Specification of the SSRF guard. Pure functions only: nothing here opens a socket.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;
use crate::error::Code;
use crate::error::ErrorKind;

fn ip(s: &str) -> IpAddr {
    #[allow(clippy::unwrap_used)] // test table literals
    s.parse().unwrap()
}

fn assert_class(table: &[&str], expected: AddrClass) {
    for a in table {
        assert_eq!(classify_ip(ip(a)), expected, "{a}");
    }
}

#[test]
fn public_addresses_are_public() {
    assert_class(
        &[
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "2a00:1450::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ],
        AddrClass::Public,
    );
}

#[test]
fn loopback_addresses_are_loopback() {
    assert_class(
        &[
            "127.0.0.1",
            "127.255.255.254",
            "127.0.1.1",
            "::1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
        ],
        AddrClass::Loopback,
    );
}

#[test]
fn rfc1918_ula_and_site_local_are_private() {
    assert_class(
        &[
            "10.0.0.1",
            "10.255.255.255",
            "172.16.0.0",
            "172.31.255.255",
            "192.168.0.1",
            "192.168.255.255",
            "fc00::1",
            "fd12:3456::1",
            "fec0::1",
            "feff::1",
        ],
        AddrClass::Private,
    );
}

#[test]
fn link_local_addresses_are_link_local() {
    assert_class(
        &["169.254.0.1", "169.254.255.255", "fe80::1", "febf::1"],
        AddrClass::LinkLocal,
    );
}

#[test]
fn cgnat_space_is_shared() {
    assert_class(
        &["100.64.0.0", "100.127.255.255", "100.100.0.1"],
        AddrClass::SharedCgnat,
    );
}

#[test]
fn multicast_addresses_are_multicast() {
    assert_class(
        &["224.0.0.1", "239.255.255.255", "ff02::1", "ff0e::1"],
        AddrClass::Multicast,
    );
}

#[test]
fn cloud_metadata_endpoints_are_metadata() {
    assert_class(
        &[
            "169.254.169.254",
            "169.254.170.2",
            "fd00:ec2::254",
            "100.100.100.200",
            "192.0.0.192",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::",
        ],
        AddrClass::Metadata,
    );
}

#[test]
fn this_host_addresses_are_unspecified() {
    assert_class(
        &[
            "0.0.0.0",
            "0.1.2.3",
            "0.255.255.255",
            "::",
            "::ffff:0.0.0.0",
        ],
        AddrClass::Unspecified,
    );
}

#[test]
fn limited_broadcast_is_broadcast() {
    assert_class(&["255.255.255.255"], AddrClass::Broadcast);
}

#[test]
fn documentation_ranges_are_documentation() {
    assert_class(
        &[
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.255",
            "2001:db8::1",
            "3fff::1",
            "3fff:fff::1",
        ],
        AddrClass::Documentation,
    );
}

#[test]
fn reserved_benchmarking_and_teredo_are_reserved() {
    assert_class(
        &[
            "240.0.0.1",
            "254.255.255.255",
            "198.18.0.1",
            "198.19.255.255",
            "192.0.0.8",
            "192.88.99.1",
            "2001::1",             // Teredo
            "2001:0:4136:e378::1", // Teredo with a server address
            "2001:2::1",           // benchmarking
            "100::1",              // discard-only
            "4000::1",             // unallocated, outside 2000::/3
            "5f00::1",             // SRv6
        ],
        AddrClass::Reserved,
    );
}

#[test]
fn embedded_ipv4_forms_take_the_class_of_the_ipv4() {
    for (v6, class) in [
        ("::ffff:10.0.0.1", AddrClass::Private),
        ("::ffff:0:10.0.0.1", AddrClass::Private),
        ("::10.0.0.1", AddrClass::Private),
        ("64:ff9b::192.168.1.1", AddrClass::Private),
        ("64:ff9b:1::10.0.0.1", AddrClass::Private),
        ("2002:c0a8:101::1", AddrClass::Private),
        ("2002:7f00:1::", AddrClass::Loopback),
        ("::ffff:100.64.0.1", AddrClass::SharedCgnat),
    ] {
        assert_eq!(classify_ip(ip(v6)), class, "{v6}");
    }
}

#[test]
fn check_ip_allows_public_and_opt_in_loopback_only() {
    assert!(check_ip(ip("1.1.1.1"), false).is_ok());
    assert!(check_ip(ip("127.0.0.1"), true).is_ok());
    assert!(check_ip(ip("::1"), true).is_ok());
    for a in ["127.0.0.1", "::1"] {
        let e = check_ip(ip(a), false).err();
        assert_eq!(e.as_ref().map(|e| e.code()), Some(Code::SsrfBlocked), "{a}");
    }
    // The opt-in covers loopback only, never the rest of the internal network.
    for a in [
        "10.0.0.1",
        "169.254.169.254",
        "fd00:ec2::254",
        "0.0.0.0",
        "::",
        "fe80::1",
    ] {
        let e = check_ip(ip(a), true).err();
        assert_eq!(
            e.as_ref().map(|e| e.kind()),
            Some(ErrorKind::Forbidden),
            "{a}"
        );
        assert_eq!(e.as_ref().map(|e| e.code()), Some(Code::SsrfBlocked), "{a}");
    }
}

#[test]
fn refusal_message_names_the_class() {
    let e = check_ip(ip("169.254.169.254"), false).err();
    assert_eq!(
        e.as_ref().map(|e| e.message()),
        Some("destination address is link-local/metadata")
    );
}

fn url_err(raw: &str, allow_loopback: bool) -> Option<(ErrorKind, &'static str)> {
    check_url(raw, allow_loopback)
        .err()
        .map(|e| (e.kind(), e.code().as_str()))
}

const BLOCKED: Option<(ErrorKind, &str)> = Some((ErrorKind::Forbidden, "ssrf_blocked"));
const INVALID: Option<(ErrorKind, &str)> = Some((ErrorKind::BadRequest, "invalid_url"));
const HTTPS: Option<(ErrorKind, &str)> = Some((ErrorKind::Forbidden, "https_required"));

#[test]
fn public_https_urls_are_accepted_and_normalized() {
    let t = check_url("HTTPS://API.GitHub.com./repos?q=1", false);
    let t = t.as_ref().map_err(|e| e.to_string());
    assert_eq!(
        t.map(|t| (t.host.as_str(), t.port, t.https, t.ip)),
        Ok(("api.github.com", 443, true, None))
    );
    let t =
        check_url("https://[2606:4700:4700::1111]:8443/", false).map(|t| (t.host, t.ip, t.port));
    assert_eq!(
        t.ok(),
        Some((
            "2606:4700:4700::1111".to_string(),
            Some(ip("2606:4700:4700::1111")),
            8443
        ))
    );
    assert!(check_url("https://8.8.8.8/", false).is_ok());
}

#[test]
fn non_http_or_relative_urls_are_invalid() {
    for raw in [
        "",
        "/relative",
        "example.com",
        "ftp://example.com/",
        "file:///etc/passwd",
        "gopher://example.com/",
        "javascript:alert(1)",
        "https:example.com",
        "https:/example.com",
        "https:\\\\example.com",
        "https://",
        "https:///example.com",
        "https://exa\tmple.com/",
        "https://example.com/a\nb",
        "https://[::1/",
    ] {
        assert_eq!(url_err(raw, false), INVALID, "{raw:?}");
    }
}

#[test]
fn userinfo_is_refused() {
    for raw in [
        "https://user:pass@example.com/",
        "https://user@example.com/",
        "https://@example.com/",
    ] {
        assert_eq!(url_err(raw, false), INVALID, "{raw}");
    }
}

#[test]
fn plain_http_requires_opt_in_and_loopback() {
    assert_eq!(url_err("http://example.com/", false), HTTPS);
    assert_eq!(url_err("http://example.com/", true), HTTPS);
    assert_eq!(url_err("http://8.8.8.8/", true), HTTPS);
    assert_eq!(url_err("http://127.0.0.1:8080/", false), BLOCKED);
    assert_eq!(url_err("http://localhost:8080/", false), BLOCKED);
    assert!(check_url("http://127.0.0.1:8080/x", true).is_ok());
    assert!(check_url("http://[::1]:8080/x", true).is_ok());
    assert!(check_url("http://localhost:8080/x", true).is_ok());
    assert!(check_url("http://api.localhost/", true).is_ok());
}

#[test]
fn odd_numeric_hosts_are_refused_whatever_they_decode_to() {
    for raw in [
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0X7F000001/",
        "http://0177.0.0.1/",
        "http://127.1/",
        "http://127.0.1/",
        "http://0x7f.1/",
        "http://0x7f.0.0.1/",
        "http://127.0.0.01/",
        "http://127.0.0.1./",
        "https://134744072/",  // 8.8.8.8, public but still refused
        "https://0x08080808/", // idem
        "https://%31%32%37.0.0.1/",
        "https://\u{ff11}\u{ff12}\u{ff17}.0.0.1/", // full-width digits
    ] {
        for opt_in in [false, true] {
            let e = check_url(raw, opt_in).err();
            assert_eq!(
                e.as_ref().map(|e| (e.kind(), e.code().as_str())),
                BLOCKED,
                "{raw}"
            );
            assert_eq!(
                e.as_ref().map(|e| e.message()),
                Some("non-canonical numeric host"),
                "{raw}"
            );
        }
    }
}

#[test]
fn internal_ip_literals_are_refused() {
    for raw in [
        "https://10.0.0.1/",
        "https://169.254.169.254/latest/meta-data/",
        "https://[fd00:ec2::254]/",
        "https://100.100.100.200/",
        "https://[::ffff:169.254.169.254]/",
        "https://[::ffff:a9fe:a9fe]/",
        "https://[64:ff9b::10.0.0.1]/",
        "https://[2002:a00:1::]/",
        "https://[2001::1]/",
        "https://0.0.0.0/",
        "https://[::]/",
        "https://[fe80::1]/",
        "https://255.255.255.255/",
    ] {
        assert_eq!(url_err(raw, true), BLOCKED, "{raw}");
    }
}

#[test]
fn internal_names_are_refused_without_dns() {
    for raw in [
        "https://localhost/",
        "https://LOCALHOST./",
        "https://api.localhost/",
        "https://metadata.google.internal/computeMetadata/v1/",
        "https://instance-data.ec2.internal/",
        "https://metadata/",
        "https://instance-data/",
        "https://kubernetes/",
        "https://redis.default.svc.cluster.local/",
        "https://printer.local/",
        "https://router.home.arpa/",
        "https://nas.lan/",
        "https://%6c%6f%63alhost/",
    ] {
        assert_eq!(url_err(raw, false), BLOCKED, "{raw}");
    }
    // The loopback opt-in never opens internal names.
    for raw in [
        "https://metadata.google.internal/",
        "https://metadata/",
        "https://x.local/",
    ] {
        assert_eq!(url_err(raw, true), BLOCKED, "{raw}");
    }
}

#[test]
fn name_classes_follow_the_documented_list() {
    assert_eq!(classify_name("localhost"), NameClass::Loopback);
    assert_eq!(classify_name("a.b.localhost."), NameClass::Loopback);
    assert_eq!(
        classify_name("metadata.google.internal"),
        NameClass::Internal
    );
    assert_eq!(classify_name("metadata"), NameClass::Internal);
    assert_eq!(classify_name("api.github.com"), NameClass::Resolvable);
    assert_eq!(classify_name("internal.example.com"), NameClass::Resolvable);
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

/// IPv4 addresses in loopback or RFC 1918 space.
fn private_or_loopback_v4() -> impl Strategy<Value = u32> {
    prop_oneof![
        0x7f00_0000u32..=0x7fff_ffff,
        0x0a00_0000u32..=0x0aff_ffff,
        0xac10_0000u32..=0xac1f_ffff,
        0xc0a8_0000u32..=0xc0a8_ffff,
    ]
}

/// Any internal IPv4: the above plus link-local, CGNAT and 0/8.
fn internal_v4() -> impl Strategy<Value = Ipv4Addr> {
    prop_oneof![
        private_or_loopback_v4(),
        0xa9fe_0000u32..=0xa9fe_ffff,
        0x6440_0000u32..=0x647f_ffff,
        0x0000_0000u32..=0x00ff_ffff,
    ]
    .prop_map(Ipv4Addr::from)
}

/// Every IPv6 form that carries `v4`, with arbitrary bits where the form leaves them free.
fn embeddings(v4: Ipv4Addr, free: u128) -> Vec<Ipv6Addr> {
    let v = u128::from(u32::from(v4));
    let o = v4.octets();
    let local_nat64 = 0x0064_ff9b_0001u128 << 80;
    vec![
        Ipv6Addr::from(0xffff_0000_0000 | v),        // ::ffff:a.b.c.d
        Ipv6Addr::from((0xffffu128 << 48) | v),      // ::ffff:0:a.b.c.d
        Ipv6Addr::from(v),                           // ::a.b.c.d
        Ipv6Addr::from((0x0064_ff9bu128 << 96) | v), // 64:ff9b::/96
        Ipv6Addr::from(local_nat64 | v),             // 64:ff9b:1::/96 layout
        Ipv6Addr::from(local_nat64 | (v << 24) | (free & 0xff_ffff)), // /64 layout
        Ipv6Addr::from(
            // /48 layout
            local_nat64
                | (u128::from(o[0]) << 72)
                | (u128::from(o[1]) << 64)
                | (u128::from(o[2]) << 48)
                | (u128::from(o[3]) << 40)
                | (free & 0xff_ffff_ffff),
        ),
        Ipv6Addr::from((0x2002u128 << 112) | (v << 80) | (free & ((1u128 << 80) - 1))), // 6to4
        Ipv6Addr::from(
            (0x2001_0000u128 << 96)
                | (free & ((1u128 << 96) - 1) & !0xffff_ffff)
                | (v ^ 0xffff_ffff),
        ), // Teredo
    ]
}

proptest! {
    #[test]
    fn internal_ipv4_is_never_public_in_any_ipv6_form(v4 in internal_v4(), free in any::<u128>()) {
        prop_assert_ne!(classify_v4(v4), AddrClass::Public);
        for v6 in embeddings(v4, free) {
            prop_assert_ne!(classify_ip(IpAddr::V6(v6)), AddrClass::Public, "{} carrying {}", v6, v4);
            prop_assert!(check_ip(IpAddr::V6(v6), false).is_err());
        }
    }

    #[test]
    fn fixed_position_embeddings_classify_as_their_ipv4(v4 in any::<u32>().prop_map(Ipv4Addr::from)) {
        // Skip the two IPv4-compatible values that are `::` and `::1` themselves.
        prop_assume!(u32::from(v4) > 1);
        for v6 in embeddings(v4, 0).into_iter().take(4) {
            prop_assert_eq!(classify_ip(IpAddr::V6(v6)), classify_v4(v4), "{}", v6);
        }
    }

    #[test]
    fn check_url_never_panics_on_arbitrary_strings(s in ".{0,64}", opt_in in any::<bool>()) {
        let _ = check_url(&s, opt_in);
    }

    #[test]
    fn check_url_never_panics_on_url_like_strings(
        s in "(?i:https?)://[a-z0-9.:@\\[\\]%x\u{ff10}-\u{ff19}\\\\-]{0,24}[/?#]?.{0,8}",
        opt_in in any::<bool>(),
    ) {
        let _ = check_url(&s, opt_in);
    }

    #[test]
    fn decimal_and_hex_hosts_of_internal_addresses_are_refused(v in private_or_loopback_v4(), opt_in in any::<bool>()) {
        for raw in [format!("http://{v}/"), format!("http://0x{v:x}/"), format!("https://0x{v:X}:443/")] {
            let e = check_url(&raw, opt_in).err();
            prop_assert_eq!(e.as_ref().map(|e| (e.kind(), e.code().as_str())), BLOCKED, "{}", raw);
        }
    }

    #[test]
    fn accepted_urls_always_target_an_allowed_address(s in "https?://[0-9a-fx.:\\[\\]]{1,24}/") {
        if let Ok(t) = check_url(&s, false) {
            prop_assert!(t.https);
            if let Some(ip) = t.ip {
                prop_assert_eq!(classify_ip(ip), AddrClass::Public);
            }
        }
    }
}

fn uri_err(raw: &str, allow_loopback: bool) -> Option<(ErrorKind, &'static str)> {
    #[allow(clippy::unwrap_used)] // test table literals
    let uri: http::Uri = raw.parse().unwrap();
    check_uri(&uri, allow_loopback)
        .err()
        .map(|e| (e.kind(), e.code().as_str()))
}

#[test]
fn check_uri_refuses_what_a_connector_would_dial_unchecked() {
    let blocked = Some((ErrorKind::Forbidden, "ssrf_blocked"));
    for raw in [
        "https://127.0.0.1/",
        "https://169.254.169.254/latest/meta-data/",
        "https://10.0.0.1:8443/x",
        "https://[::1]/",
        "https://[::ffff:10.0.0.1]/",
        "https://[fd00:ec2::254]/",
        "https://0.0.0.0/",
        "https://localhost/",
        "https://metadata.google.internal/",
        "https://metadata/",
        "https://2130706433/",
        "https://0x7f000001/",
        "https://example.0177/",
    ] {
        assert_eq!(uri_err(raw, false), blocked, "{raw}");
    }
    // The loopback opt-in opens loopback and nothing else.
    assert_eq!(uri_err("http://127.0.0.1:8080/", true), None);
    assert_eq!(uri_err("http://[::1]:8080/", true), None);
    assert_eq!(uri_err("http://localhost:8080/", true), None);
    assert_eq!(uri_err("https://10.0.0.1/", true), blocked);
}

#[test]
fn check_uri_requires_https_a_host_and_no_userinfo() {
    assert_eq!(uri_err("https://api.example.com/v1?q=1", false), None);
    assert_eq!(uri_err("https://93.184.216.34/", false), None);
    assert_eq!(
        uri_err("http://api.example.com/", false),
        Some((ErrorKind::Forbidden, "https_required"))
    );
    assert_eq!(
        uri_err("http://api.example.com/", true),
        Some((ErrorKind::Forbidden, "https_required"))
    );
    let invalid = Some((ErrorKind::BadRequest, "invalid_url"));
    assert_eq!(uri_err("/relative", false), invalid);
    assert_eq!(uri_err("ftp://api.example.com/", false), invalid);
    assert_eq!(uri_err("https://user:pw@api.example.com/", false), invalid);
}

proptest! {
    /// For any address, the URI check decides exactly as the address check does.
    #[test]
    fn check_uri_agrees_with_check_ip(v4 in any::<u32>(), v6 in any::<u128>(), allow in any::<bool>()) {
        for addr in [IpAddr::V4(Ipv4Addr::from(v4)), IpAddr::V6(Ipv6Addr::from(v6))] {
            let host = match addr { IpAddr::V4(a) => a.to_string(), IpAddr::V6(a) => format!("[{a}]") };
            let uri: http::Uri = format!("https://{host}/p").parse().map_err(|_| TestCaseError::fail("uri"))?;
            prop_assert_eq!(check_uri(&uri, allow).is_ok(), check_ip(addr, allow).is_ok(), "{}", host);
        }
    }

    /// Whatever `check_url` accepts, normalized, passes `check_uri` too (the fetcher never
    /// refuses what the core allowed).
    #[test]
    fn check_uri_accepts_what_check_url_accepts(
        host in prop_oneof![
            Just("api.example.com".to_string()),
            Just("93.184.216.34".to_string()),
            Just("[2606:4700::1]".to_string()),
            Just("127.0.0.1".to_string()),
            Just("localhost".to_string()),
            "[a-z]{1,8}\\.[a-z]{2,5}",
        ],
        https in any::<bool>(),
        port in proptest::option::of(1u16..),
        path in "[a-zA-Z0-9/._~%-]{0,20}",
        allow in any::<bool>(),
    ) {
        let scheme = if https { "https" } else { "http" };
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        let raw = format!("{scheme}://{host}{port}/{path}");
        if let Ok(t) = check_url(&raw, allow) {
            let uri: http::Uri = t.url.as_str().parse().map_err(|_| TestCaseError::fail("uri"))?;
            prop_assert!(check_uri(&uri, allow).is_ok(), "{}", raw);
        }
    }
}

/// A target checked once takes another path and query without a new check, and anything that
/// changes where the request goes (scheme, host, port, user credentials) is checked in full.
#[test]
#[allow(clippy::unwrap_used)] // test literals
fn same_origin_keeps_the_check_only_for_the_same_origin() {
    let base = check_url("https://api.example.com/v1", false).unwrap();
    let joined = base
        .same_origin(
            url::Url::parse("https://api.example.com/v1/chat?x=1").unwrap(),
            false,
        )
        .unwrap();
    assert_eq!(joined.url.as_str(), "https://api.example.com/v1/chat?x=1");
    assert_eq!(
        (joined.host.as_str(), joined.port),
        ("api.example.com", 443)
    );
    for other in [
        "https://169.254.169.254/latest",
        "https://10.0.0.1/v1",
        "http://api.example.com/v1",
        "https://user:pw@api.example.com/v1",
        "https://localhost/v1",
    ] {
        let r = base.same_origin(url::Url::parse(other).unwrap(), false);
        assert!(r.is_err(), "{other} was not checked again: {r:?}");
    }
    let moved = base
        .same_origin(
            url::Url::parse("https://other.example.com:8443/x").unwrap(),
            false,
        )
        .unwrap();
    assert_eq!(
        (moved.host.as_str(), moved.port),
        ("other.example.com", 8443)
    );
}

proptest! {
    /// The hand-written dotted quad is the text `Ipv4Addr`'s `Display` gives, for every address.
    #[test]
    fn dotted_quad_is_the_display_text(n in any::<u32>()) {
        let v4 = Ipv4Addr::from(n);
        prop_assert_eq!(dotted_quad(v4), v4.to_string());
    }
}

/// URLs of every kind `check_url` answers: good and refused, names and literals, odd forms.
fn any_url() -> impl Strategy<Value = String> {
    let host = prop_oneof![
        Just("127.0.0.1".to_string()),
        Just("localhost".to_string()),
        Just("[::1]".to_string()),
        Just("10.0.0.1".to_string()),
        Just("169.254.169.254".to_string()),
        Just("0x7f.1".to_string()),
        Just("api.example.com".to_string()),
        Just("metadata.google.internal".to_string()),
        "[a-z]{1,8}\\.[a-z]{2,3}",
        "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}",
    ];
    (
        prop_oneof![
            Just("http://"),
            Just("https://"),
            Just("HTTPS://"),
            Just("ftp://"),
            Just("")
        ],
        prop_oneof![Just(""), Just("user:pw@")],
        host,
        prop_oneof![Just(""), Just(":8443"), Just(":0"), Just(":99999")],
        "(/[a-z%0-9]{0,6}){0,3}(\\?[a-z=&]{0,8})?",
    )
        .prop_map(|(scheme, user, host, port, rest)| format!("{scheme}{user}{host}{port}{rest}"))
}

proptest! {
    /// The remembered check answers what `check_url` answers, the first time and every time
    /// after: the same target (URL, host, address, port, scheme) or the same refusal.
    #[test]
    fn a_remembered_url_check_answers_as_the_check(url in any_url(), allow in any::<bool>()) {
        let want = check_url(&url, allow);
        for _ in 0..2 {
            let got = check_url_cached(&url, allow, "key:a");
            match (&want, &got) {
                (Ok(w), Ok(g)) => {
                    prop_assert_eq!(w.url.as_str(), g.url.as_str());
                    prop_assert_eq!(&w.host, &g.host);
                    prop_assert_eq!(w.ip, g.ip);
                    prop_assert_eq!(w.port, g.port);
                    prop_assert_eq!(w.https, g.https);
                }
                (Err(w), Err(g)) => {
                    prop_assert_eq!(w.code(), g.code());
                    prop_assert_eq!(w.status(), g.status());
                }
                _ => prop_assert!(false, "{url} (loopback allowed: {allow}): {want:?} against {got:?}"),
            }
        }
        // What one setting allowed is not answered for the other.
        let other = check_url_cached(&url, !allow, "key:a");
        prop_assert_eq!(other.is_ok(), check_url(&url, !allow).is_ok(), "{}", url);
    }
}

/// However many different URLs come, the memory holds at most its bound, and a URL past the
/// length bound is checked without being remembered.
#[test]
fn the_url_check_memory_stays_bounded() {
    for i in 0..(3 * CACHED_URLS_MAX) {
        let url = format!("https://host{i}.example.com/path");
        assert!(check_url_cached(&url, false, "key:bound").is_ok());
        assert!(cached_urls(false) <= CACHED_URLS_MAX);
    }
    let long = format!("https://api.example.com/{}", "a".repeat(CACHED_URL_MAX));
    assert!(check_url_cached(&long, false, "key:bound").is_ok());
    assert!(!url_check_held(&long, false, "key:bound"));
}

/// A remembered check is one caller's: another caller's look-up of the same URL does not hit it
/// (no timing probe of what others fetched); and a URL carrying an agent key is not kept.
#[test]
fn remembered_url_checks_are_per_caller_and_keep_no_agent_key() {
    let url = "https://per-caller.example.com/v1/items?page=2";
    assert!(check_url_cached(url, false, "key:first").is_ok());
    assert!(url_check_held(url, false, "key:first"));
    assert!(!url_check_held(url, false, "key:second"));
    assert!(
        !url_check_held(url, true, "key:first"),
        "one setting never answers for the other"
    );
    for carrying in [
        "https://api.example.com/items?token=vk_0123456789abcdef_secretsecret",
        "https://api.example.com/vt_0123456789abcdef_x/items",
        "https://api.example.com/items?k=%76k_0123456789abcdef",
    ] {
        let _ = check_url_cached(carrying, false, "key:first");
        assert!(!url_check_held(carrying, false, "key:first"), "{carrying}");
    }
}
