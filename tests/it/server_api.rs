//! The operator server API over real sockets: disconnect a user (the client sees the reason),
//! unsubscribe a user from a channel, list channels, read history; credentials required.

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::util::*;
use quotecast::auth::unix_now;
use quotecast::config::{AccessConfig, Config};

const SECRET: &str = "server-api-secret";
const KEY: &str = "server-api-key";

fn server() -> TestServer {
    TestServer::start(|c: &mut Config| {
        let mut a = AccessConfig {
            allow_anonymous: true,
            api_keys: vec![KEY.into()],
            ..AccessConfig::default()
        };
        a.jwt.hs256_secret = Some(SECRET.as_bytes().to_vec());
        c.access = a;
    })
}

async fn connect(srv: &TestServer, sub: &str) -> Client {
    let t = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": sub, "exp": unix_now() + 600}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    Client::connect_url(&srv.url(&format!("?token={t}")), false).await
}

async fn api(srv: &TestServer, method: &str, path: &str, body: Value) -> (u16, Value) {
    let (st, b) = http_with(
        srv.addr,
        method,
        path,
        &[("X-Api-Key", KEY)],
        &body.to_string(),
    )
    .await;
    (st, serde_json::from_str(&b).unwrap_or(Value::Null))
}

async fn publish(srv: &TestServer, channel: &str, n: u64) {
    let (st, _) = api(
        srv,
        "POST",
        "/api/publish",
        json!({"channel": channel, "event": "e", "data": {"n": n}}),
    )
    .await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn the_server_api_needs_operator_credentials() {
    let srv = server();
    for (m, p) in [
        ("POST", "/api/disconnect"),
        ("POST", "/api/unsubscribe"),
        ("GET", "/api/channels"),
        ("GET", "/api/history?channel=trades.A"),
    ] {
        let (st, body) = http(srv.addr, m, p, "{}").await;
        assert_eq!(st, 401, "{m} {p}: {body}");
    }
}

#[tokio::test]
async fn disconnect_closes_every_connection_of_the_user_with_the_reason() {
    let srv = server();
    let mut a = connect(&srv, "42").await;
    let mut b = connect(&srv, "42").await;
    let mut other = connect(&srv, "43").await;
    let (st, v) = api(
        &srv,
        "POST",
        "/api/disconnect",
        json!({"user":"42","reason":"account suspended"}),
    )
    .await;
    assert_eq!((st, v["disconnected"].as_u64()), (200, Some(2)));
    for c in [&mut a, &mut b] {
        let (_, closed) = c.until_close().await;
        assert_eq!(
            (closed.code, closed.reason.as_str()),
            (4012, "account suspended")
        );
    }
    other.send(json!({"op":"ping","id":1})).await;
    other.expect_type("pong").await;
    let (_, v) = api(&srv, "POST", "/api/disconnect", json!({"user":"nobody"})).await;
    assert_eq!(v["disconnected"], 0);
}

#[tokio::test]
async fn unsubscribe_removes_the_user_from_a_channel_and_channels_lists_counts() {
    let srv = server();
    let mut u42 = connect(&srv, "42").await;
    u42.subscribe(&["user.42.orders", "trades.X"]).await;
    let mut anon = Client::connect(&srv).await;
    anon.subscribe(&["trades.X"]).await;
    let (st, v) = api(&srv, "GET", "/api/channels", Value::Null).await;
    assert_eq!(st, 200);
    let list = v["channels"].as_array().unwrap();
    assert_eq!(list[0], json!({"channel":"trades.X","subscribers":2}));
    assert!(
        list.contains(&json!({"channel":"user.42.orders","subscribers":1})),
        "{v}"
    );
    let (st, v) = api(
        &srv,
        "POST",
        "/api/unsubscribe",
        json!({"user":"42","channel":"user.42.orders"}),
    )
    .await;
    assert_eq!((st, v["unsubscribed"].as_u64()), (200, Some(1)));
    let u = u42.expect_type("unsubscribed").await;
    assert_eq!(u["channels"], json!(["user.42.orders"]));
    // Nothing more arrives on it: the marker after is the next event.
    publish(&srv, "user.42.orders", 1).await;
    publish(&srv, "trades.X", 2).await;
    assert_eq!(u42.expect_type("event").await["channel"], "trades.X");
}

#[tokio::test]
async fn history_reads_retained_events_since_a_sequence() {
    let srv = server();
    for n in 1..=5 {
        publish(&srv, "trades.H", n).await;
    }
    let (st, v) = api(
        &srv,
        "GET",
        "/api/history?channel=trades.H&since=2&limit=2",
        Value::Null,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["seq"].as_u64(), v["complete"].as_bool()),
        (Some(5), Some(true))
    );
    let seqs: Vec<u64> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![3, 4]);
    assert_eq!(v["events"][0]["data"], json!({"n": 3}));
    let (_, v) = api(&srv, "GET", "/api/history?channel=trades.NONE", Value::Null).await;
    assert_eq!(v["events"], json!([]));
    let (st, _) = api(
        &srv,
        "GET",
        "/api/history?channel=trades.H&since=x",
        Value::Null,
    )
    .await;
    assert_eq!(st, 400);
    let (st, _) = api(&srv, "GET", "/api/history?channel=a..b", Value::Null).await;
    assert_eq!(st, 400);
}
