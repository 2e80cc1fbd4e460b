//! The storm: every route of the wallet and WaveGate, hit with bodies, headers, queries and
//! methods malformed in the ways an attacker (or a broken client) sends them. Deterministic:
//! the same requests every run, each named for the failure message.

use reqwest::header::HeaderValue;
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};

use crate::support::Hub;
use crate::wallet::RECONCILIATION_TOKEN;
use crate::wavegate::{ADMIN_TOKEN, PARTNERS};

/// Bodies that are not what any route takes.
fn raw_bodies() -> Vec<(String, Vec<u8>)> {
    let mut bodies: Vec<(String, Vec<u8>)> = [
        "",
        "{",
        "}",
        "null",
        "[]",
        "[1,2,3]",
        "\"text\"",
        "1e999",
        "-0",
        "true",
        r#"{"a":1,"a":2}"#,
        r#"{"player_id":"p1","amount":1,"currency":"EUR","amount":2}"#,
        r#"{"player_id":"p\u0000","amount":1,"currency":"EUR"}"#,
        r#"{"name":"\u001b[31mred"}"#,
        r#"{"amount":18446744073709551616}"#,
        r#"{"amount":1.5e308}"#,
        r#"{"\u0000":1}"#,
        r#""\ud800""#,
        r#"{"x":"\u202e\u2066"}"#,
        "{\"a\":1}garbage",
        "\u{feff}{}",
    ]
    .iter()
    .map(|b| (format!("body {b:?}"), b.as_bytes().to_vec()))
    .collect();
    bodies.push(("bytes ff fe".into(), vec![0xff, 0xfe, b'{', b'}']));
    bodies.push((
        "nesting 5000 deep".into(),
        [vec![b'['; 5000], vec![b']'; 5000]].concat(),
    ));
    bodies.push((
        "a 200 KB string".into(),
        format!("{{\"player_id\":\"{}\"}}", "p".repeat(200_000)).into_bytes(),
    ));
    bodies.push(("300 KB".into(), vec![b'{'; 300 * 1024]));
    bodies
}

/// Wallet requests that are valid JSON, validly signed, and wrong in one field.
fn wallet_values() -> Vec<Value> {
    let good = json!({"player_id": "p1", "amount": 100, "currency": "EUR"});
    let mut values = Vec::new();
    let variants: Vec<(&str, Vec<Value>)> = vec![
        (
            "player_id",
            vec![
                json!(""),
                json!(" "),
                json!("p 1"),
                json!("\u{200b}"),
                json!("p\u{202e}1"),
                json!("../x"),
                json!("x".repeat(129)),
                json!(1),
                json!(null),
                json!(["p"]),
                json!({"id": "p"}),
            ],
        ),
        (
            "amount",
            vec![
                json!(0),
                json!(-1),
                json!(1.5),
                json!("100"),
                json!(null),
                json!(i64::MAX),
                json!(u64::MAX),
                json!(9_007_199_254_740_992u64),
                json!([100]),
            ],
        ),
        (
            "currency",
            vec![
                json!("eur"),
                json!("EURO"),
                json!("XXX"),
                json!(""),
                json!("E\u{0}R"),
                json!(978),
            ],
        ),
        (
            "round_id",
            vec![json!(""), json!("r 1"), json!(7), json!("r".repeat(300))],
        ),
        ("bonus", vec![json!(true)]),
    ];
    for (field, wrongs) in variants {
        for wrong in wrongs {
            let mut value = good.clone();
            value[field] = wrong;
            values.push(value);
        }
    }
    values
}

/// Operator callbacks, validly signed, wrong in one field.
fn callback_values() -> Vec<Value> {
    let good = json!({
        "event": "transaction.completed", "transaction_id": "op_1",
        "external_transaction_id": "x-1", "player_id": "p1", "type": "withdraw",
        "amount": "1.00", "currency": "EUR", "occurred_at": "2026-01-01T00:00:00Z"
    });
    let mut values = Vec::new();
    for (field, wrongs) in [
        (
            "transaction_id",
            vec![
                json!("a\r\nb"),
                json!("a\nb"),
                json!(""),
                json!("x".repeat(500)),
                json!(5),
            ],
        ),
        (
            "event",
            vec![json!("E\r\n"), json!(""), json!("UPPER"), json!(null)],
        ),
        (
            "amount",
            vec![
                json!("1e5"),
                json!("9".repeat(40)),
                json!("1.123456789"),
                json!(1.0),
                json!("-"),
            ],
        ),
        ("type", vec![json!("refund"), json!("")]),
        (
            "occurred_at",
            vec![json!("yesterday"), json!(""), json!("x".repeat(100))],
        ),
        ("player_id", vec![json!("p\u{0}"), json!(" ")]),
    ] {
        for wrong in wrongs {
            let mut value = good.clone();
            value[field] = wrong;
            values.push(value);
        }
    }
    values
}

/// WaveGate orders from a known partner, wrong in one place.
fn order_values(callback: &str) -> Vec<Value> {
    let good = json!({
        "external_order_id": "EXT-1", "callback_url": callback,
        "items": [{"sku": "A", "qty": 1, "unit_price_minor": 100, "currency": "THB"}],
    });
    let item = |field: &str, wrong: Value| {
        let mut value = good.clone();
        value["items"][0][field] = wrong;
        value
    };
    let mut values = Vec::new();
    for wrong in [
        json!(""),
        json!("a b"),
        json!("x".repeat(200)),
        json!("E\u{0}"),
        json!(1),
    ] {
        let mut value = good.clone();
        value["external_order_id"] = wrong;
        values.push(value);
    }
    for wrong in [
        "",
        "not a url",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "http://169.254.169.254/",
        "http://0.0.0.0:80/",
        "http://[::]/",
        "gopher://127.0.0.1:25/",
        "http://a\r\nb/",
        "http://user:pw@127.0.0.1/",
        "http://127.0.0.1:99999/",
    ] {
        let mut value = good.clone();
        value["callback_url"] = json!(wrong);
        values.push(value);
    }
    values.push(json!({"external_order_id": "EXT-2", "callback_url": callback, "items": []}));
    let mut many = good.clone();
    many["items"] = json!(vec![good["items"][0].clone(); 101]);
    values.push(many);
    for (field, wrong) in [
        ("qty", json!(0)),
        ("qty", json!(1001)),
        ("qty", json!(1.5)),
        ("qty", json!(-1)),
        ("unit_price_minor", json!(-1)),
        ("unit_price_minor", json!(u64::MAX)),
        ("unit_price_minor", json!("100")),
        ("currency", json!("thb")),
        ("sku", json!("")),
        ("sku", json!("a b")),
        ("extra", json!(1)),
    ] {
        values.push(item(field, wrong));
    }
    let mut mixed = good.clone();
    mixed["items"] = json!([
        {"sku": "A", "qty": 1, "unit_price_minor": 100, "currency": "THB"},
        {"sku": "B", "qty": 1, "unit_price_minor": 100, "currency": "EUR"}
    ]);
    values.push(mixed);
    values
}

/// NewStore events, each wrong in one place.
fn newstore_values() -> Vec<(String, Value)> {
    use ihub::integrations::newstore::domain::EventKind;
    use ihub::integrations::newstore::simulate;
    let good = simulate::event(EventKind::OrderCompleted, "ord-storm", 0);
    let mut values = Vec::new();
    let mut set = |what: &str, pointer: &str, wrong: Value| {
        let mut value = good.clone();
        *value
            .pointer_mut(pointer)
            .expect("a field of the simulated event") = wrong;
        values.push((format!("{what} {pointer}"), value));
    };
    for wrong in [
        json!("1.234"),
        json!("-1.00"),
        json!(1.5),
        json!("1e3"),
        json!("9".repeat(30)),
        json!(null),
    ] {
        set("price", "/payload/items/0/price", wrong);
    }
    for wrong in [json!(0), json!(-1), json!("1"), json!(u64::MAX)] {
        set("quantity", "/payload/items/0/quantity", wrong);
    }
    for wrong in [json!("eur"), json!("XXX"), json!(""), json!(7)] {
        set("currency", "/payload/currency", wrong);
    }
    for wrong in [
        json!(""),
        json!("a b"),
        json!("e\u{0}"),
        json!(5),
        json!("x".repeat(300)),
    ] {
        set("id", "/id", wrong);
    }
    for wrong in [json!("yesterday"), json!(""), json!(0)] {
        set("published_at", "/published_at", wrong);
    }
    for wrong in [json!(null), json!([]), json!("order"), json!({})] {
        set("payload", "/payload", wrong);
    }
    let mut ret = simulate::event(EventKind::ReturnProcessed, "ord-storm", 1);
    ret["payload"]["items"][0]["quantity"] = json!(0);
    values.push(("return quantity 0".into(), ret));
    values
}

/// Header sets a client gets wrong.
fn bad_headers() -> Vec<(String, Vec<(&'static str, HeaderValue)>)> {
    let v = |s: &'static str| HeaderValue::from_static(s);
    let bytes = |b: &'static [u8]| HeaderValue::from_bytes(b).expect("an opaque header value");
    vec![
        ("no headers".into(), vec![]),
        (
            "timestamp huge".into(),
            vec![
                ("x-timestamp", v("99999999999999999999")),
                ("x-signature", v("00")),
            ],
        ),
        (
            "timestamp negative".into(),
            vec![
                ("x-timestamp", v("-9223372036854775808")),
                ("x-signature", v("zz")),
            ],
        ),
        (
            "timestamp float".into(),
            vec![("x-timestamp", v("1.7e9")), ("x-signature", v(""))],
        ),
        (
            "signature opaque bytes".into(),
            vec![("x-timestamp", v("0")), ("x-signature", bytes(b"\xff\xfe"))],
        ),
        (
            "idempotency key opaque".into(),
            vec![("idempotency-key", bytes(b"k\xe9y"))],
        ),
        (
            "idempotency key long".into(),
            vec![(
                "idempotency-key",
                HeaderValue::from_str(&"k".repeat(4000)).unwrap(),
            )],
        ),
        (
            "prefer absurd".into(),
            vec![
                ("prefer", v("wait=18446744073709551616")),
                ("idempotency-key", v("k")),
            ],
        ),
        ("bearer junk".into(), vec![("authorization", v("Bearer"))]),
        (
            "bearer opaque".into(),
            vec![("authorization", bytes(b"Bearer \xff"))],
        ),
        (
            "partner unknown".into(),
            vec![("x-partner-id", v("nobody")), ("x-partner-token", v("x"))],
        ),
        (
            "partner id opaque".into(),
            vec![
                ("x-partner-id", bytes(b"\xffacme")),
                ("x-partner-token", v("x")),
            ],
        ),
        (
            "partner id long".into(),
            vec![(
                "x-partner-id",
                HeaderValue::from_str(&"a".repeat(5000)).unwrap(),
            )],
        ),
        (
            "forwarded junk".into(),
            vec![("x-forwarded-for", v("not-an-ip, ::::, 999.1.1.1"))],
        ),
        (
            "content type odd".into(),
            vec![("content-type", v("application/x-www-form-urlencoded"))],
        ),
        (
            "traceparent junk".into(),
            vec![("traceparent", v("00-zz-zz-zz"))],
        ),
    ]
}

const ROUTES: &[(&str, &str)] = &[
    ("POST", "/wallet/debit"),
    ("POST", "/wallet/credit"),
    ("POST", "/webhooks/incoming"),
    ("GET", "/reconciliation_data"),
    ("POST", "/orders"),
    ("GET", "/orders"),
    ("GET", "/orders/00000000-0000-0000-0000-000000000000"),
    ("GET", "/admin/orders"),
    ("POST", "/webhooks/newstore"),
    ("POST", "/webhooks/newstore/default"),
    ("POST", "/webhooks/newstore/simulate"),
    ("GET", "/newstore/events/evt_1"),
    ("GET", "/newstore/orders/ord-1"),
    ("GET", "/health"),
    ("GET", "/ready"),
];

const QUERIES: &[&str] = &[
    "limit=-1",
    "limit=abc",
    "limit=99999999999999999999",
    "before=nope",
    "stuck_secs=-5",
    "stuck_secs=18446744073709551616",
    "stuck_secs=9223372036854775807",
    "since=yesterday",
    "since=-262143-01-01T00:00:00Z",
    "status=,,,",
    "status=lost",
    "partner_id=%00",
    "a=%ff%fe",
    "limit=1&limit=2",
];

/// The whole storm, in a fixed order.
pub fn requests(hub: &Hub) -> Vec<(String, RequestBuilder)> {
    let url = |path: &str| format!("{}{path}", hub.url);
    let acme = [
        ("x-partner-id", PARTNERS[0].0),
        ("x-partner-token", PARTNERS[0].1),
    ];
    let mut storm: Vec<(String, RequestBuilder)> = Vec::new();

    // Every route × every raw body × every bad header set.
    for (method, path) in ROUTES {
        let method: Method = method.parse().unwrap();
        for (body_name, body) in raw_bodies() {
            for (header_name, headers) in bad_headers() {
                let mut request = hub
                    .http
                    .request(method.clone(), url(path))
                    .body(body.clone());
                for (name, value) in headers {
                    request = request.header(name, value);
                }
                storm.push((
                    format!("{method} {path} {body_name} {header_name}"),
                    request,
                ));
            }
        }
        // Methods the route does not take.
        for other in ["PUT", "PATCH", "DELETE", "OPTIONS"] {
            let other: Method = other.parse().unwrap();
            storm.push((
                format!("{other} {path}"),
                hub.http.request(other, url(path)),
            ));
        }
    }
    // Queries, authenticated so that they reach the parsing.
    for query in QUERIES {
        storm.push((
            format!("GET /admin/orders?{query}"),
            hub.http
                .get(url(&format!("/admin/orders?{query}")))
                .bearer_auth(ADMIN_TOKEN),
        ));
        let mut request = hub.http.get(url(&format!("/orders?{query}")));
        for (name, value) in acme {
            request = request.header(name, value);
        }
        storm.push((format!("GET /orders?{query}"), request));
        storm.push((
            format!("GET /reconciliation_data?{query}"),
            hub.http
                .get(url(&format!("/reconciliation_data?{query}")))
                .bearer_auth(RECONCILIATION_TOKEN),
        ));
    }
    for id in ["nope", "%00", "..%2F..%2Fetc", &"9".repeat(300)] {
        let mut request = hub.http.get(url(&format!("/orders/{id}")));
        for (name, value) in acme {
            request = request.header(name, value);
        }
        storm.push((format!("GET /orders/{id}"), request));
    }
    // Signed, or from a known partner, and wrong inside.
    let signed = |path: &str, value: &Value, key: &str| {
        let mut request = hub
            .http
            .post(url(path))
            .json(value)
            .header("idempotency-key", key);
        for (name, header) in hub.signer().headers_for(value) {
            request = request.header(name, header);
        }
        request
    };
    for (n, value) in wallet_values().iter().enumerate() {
        for path in ["/wallet/debit", "/wallet/credit"] {
            storm.push((
                format!("signed {path} {value}"),
                signed(path, value, &format!("storm-{n}")),
            ));
        }
    }
    for (n, value) in callback_values().iter().enumerate() {
        storm.push((
            format!("signed callback {value}"),
            signed("/webhooks/incoming", value, &format!("cb-{n}")),
        ));
    }
    // NewStore events, validly signed, wrong inside.
    for (what, value) in newstore_values() {
        let raw = serde_json::to_vec(&value).unwrap();
        let signature = ihub::integrations::newstore::signature::sign(
            &ihub::config::Secret::new(crate::newstore::SECRET),
            &raw,
        );
        storm.push((
            format!("newstore {what}"),
            hub.http
                .post(url("/webhooks/newstore"))
                .header("x-newstore-signature", signature)
                .body(raw),
        ));
    }
    let callback = format!(
        "{}/callbacks/storm",
        hub.mock::<ihub::integrations::wavegate::mocks::ota::OtaMock>()
            .url
    );
    for value in order_values(&callback) {
        let mut request = hub.http.post(url("/orders")).json(&value);
        for (name, header) in acme {
            request = request.header(name, header);
        }
        storm.push((format!("order {value}"), request));
    }
    storm
}
