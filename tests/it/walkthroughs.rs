//! The docs/walkthroughs, run: each loads the configuration file its walkthrough shows
//! (docs/examples/*.toml, checked to be the text in the walkthrough) and plays the seed's
//! access rules against it over real sockets.

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::hooks::Backend;
use crate::util::*;
use quotecast::auth::unix_now;
use quotecast::config::{Config, RawConfig};

const SECRET: &str = "walkthrough-secret";
const API_KEY: &str = "walkthrough-key";

fn doc(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// The example file, checked to appear verbatim in its walkthrough, as a server config
/// (secret and API key as the environment would give them, an ephemeral port).
fn config(example: &str, walkthrough: &str, edit: impl Fn(String) -> String) -> Config {
    let text = doc(&format!("docs/examples/{example}"));
    assert!(
        doc(&format!("docs/walkthroughs/{walkthrough}")).contains(&text),
        "{walkthrough} must show {example} as it is"
    );
    let mut raw = RawConfig::parse(&edit(text), example).unwrap();
    raw.listen = "127.0.0.1:0".parse().unwrap();
    raw.shards = 2;
    raw.auth.jwt_secret = Some(SECRET.into());
    raw.auth.api_keys = vec![API_KEY.into()];
    raw.into_config().unwrap()
}

fn token(claims: Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

async fn connect(srv: &TestServer, claims: Value) -> Client {
    Client::connect_url(&srv.url(&format!("?token={}", token(claims))), false).await
}

/// `channel -> "subscribed" | error code` for one subscribe op.
async fn answers(c: &mut Client, channels: &[&str]) -> Vec<(String, String)> {
    c.send(json!({"op":"subscribe","channels":channels})).await;
    let mut out = Vec::new();
    while out.len() < channels.len() {
        let v = c.recv().await;
        let ch = v["channel"].as_str().unwrap_or("").to_string();
        match v["type"].as_str() {
            Some("subscribed") => out.push((ch, "subscribed".to_string())),
            Some("error") => out.push((ch, v["code"].as_str().unwrap().to_string())),
            _ => {}
        }
    }
    out.sort();
    out
}

fn want(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<_> = pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    v.sort();
    v
}

async fn publish(srv: &TestServer, channel: &str, event: &str) {
    let body = json!({"channel": channel, "event": event, "data": {"x": 1}});
    let (st, b) = http_with(
        srv.addr,
        "POST",
        "/api/publish",
        &[("X-Api-Key", API_KEY)],
        &body.to_string(),
    )
    .await;
    assert_eq!(st, 200, "{channel}: {b}");
}

#[tokio::test]
async fn seed_001_challenge_rooms() {
    let backend = Backend::start();
    let url = backend.url("/subscribe");
    let cfg = config(
        "seed-001-challenge-rooms.toml",
        "seed-001-challenge-rooms.md",
        |t| t.replace("http://127.0.0.1:5000/quotecast/subscribe", &url),
    );
    let srv = TestServer::start(move |c| *c = cfg);
    // Tokens as the Flask app mints them: the user is `user_id`, a number.
    let exp = unix_now() + 600;
    let mut owner = connect(&srv, json!({"user_id": 42, "exp": exp})).await;
    let mut other = connect(&srv, json!({"user_id": 43, "exp": exp})).await;
    assert_eq!(
        answers(&mut owner, &["challenge_7", "challenge_8"]).await,
        want(&[("challenge_7", "subscribed"), ("challenge_8", "forbidden")])
    );
    assert_eq!(
        answers(&mut other, &["challenge_7", "challenge_8", "user_42"]).await,
        want(&[
            ("challenge_7", "forbidden"),
            ("challenge_8", "subscribed"),
            ("user_42", "unknown_channel")
        ])
    );
    publish(&srv, "challenge_7", "equity_updated").await;
    publish(&srv, "challenge_8", "challenge_status_changed").await;
    let ev = owner.expect_type("event").await;
    assert_eq!(
        (ev["channel"].as_str(), ev["event"].as_str()),
        (Some("challenge_7"), Some("equity_updated"))
    );
    let ev = other.expect_type("event").await;
    assert_eq!(ev["channel"], "challenge_8");
    // No anonymous connections.
    let mut anon = Client::upgrade(srv.url("")).await;
    anon.expect_type("welcome").await;
    anon.send(json!({"op":"subscribe","channels":["challenge_7"]}))
        .await;
    assert_eq!(anon.expect_type("error").await["code"], "unauthorized");
}

#[tokio::test]
async fn seed_004_topics() {
    let cfg = config("seed-004-topics.toml", "seed-004-topics.md", |t| t);
    let srv = TestServer::start(move |c| *c = cfg);
    let exp = unix_now() + 600;
    let mut u42 = connect(
        &srv,
        json!({"sub": "42", "exp": exp, "channels": ["strategy:9", "strategy:9:*"]}),
    )
    .await;
    let mut ops = connect(
        &srv,
        json!({"sub": "ops-1", "exp": exp, "channels": ["orders", "positions", "strategies"]}),
    )
    .await;
    assert_eq!(
        answers(
            &mut u42,
            &[
                "user:42:orders",
                "user:42:positions",
                "strategy:9",
                "strategy:9:orders",
                "quotes.AAPL"
            ]
        )
        .await,
        want(&[
            ("quotes.AAPL", "subscribed"),
            ("strategy:9", "subscribed"),
            ("strategy:9:orders", "subscribed"),
            ("user:42:orders", "subscribed"),
            ("user:42:positions", "subscribed"),
        ])
    );
    assert_eq!(
        answers(
            &mut u42,
            &[
                "user:43:orders",
                "user:042:orders",
                "strategy:10",
                "orders",
                "user:42",
                "misc"
            ]
        )
        .await,
        want(&[
            ("misc", "unknown_channel"),
            ("orders", "forbidden"),
            ("strategy:10", "forbidden"),
            ("user:042:orders", "forbidden"),
            ("user:42", "unknown_channel"),
            ("user:43:orders", "forbidden"),
        ])
    );
    assert_eq!(
        answers(
            &mut ops,
            &["orders", "positions", "strategies", "user:42:orders"]
        )
        .await,
        want(&[
            ("orders", "subscribed"),
            ("positions", "subscribed"),
            ("strategies", "subscribed"),
            ("user:42:orders", "forbidden"),
        ])
    );
    publish(&srv, "user:42:orders", "ORDER_UPDATE").await;
    publish(&srv, "orders", "ORDER_UPDATE").await;
    assert_eq!(u42.expect_type("event").await["channel"], "user:42:orders");
    assert_eq!(ops.expect_type("event").await["channel"], "orders");
}

#[tokio::test]
async fn seed_002_session_rooms() {
    let backend = Backend::start();
    let url = backend.url("/connect");
    let text = doc("docs/examples/seed-002-session-rooms.toml");
    assert!(doc("docs/walkthroughs/seed-002-session-rooms.md").contains(&text));
    let mut raw = RawConfig::parse(
        &text.replace("http://127.0.0.1:3000/quotecast/connect", &url),
        "seed-002",
    )
    .unwrap();
    raw.listen = "127.0.0.1:0".parse().unwrap();
    raw.auth.api_keys = vec![API_KEY.into()];
    let cfg = raw.into_config().unwrap();
    let srv = TestServer::start(move |c| *c = cfg);
    let mut c = Client::upgrade(srv.url("")).await;
    c.expect_type("welcome").await;
    c.send(json!({"op":"auth","id":1,"data":{"sessionID":"s-123","userId":"user-123"}}))
        .await;
    let a = c.expect_type("authenticated").await;
    assert_eq!(
        (a["id"].as_i64(), a["user"].as_str()),
        (Some(1), Some("user-123"))
    );
    assert_eq!(
        c.expect_type("subscribed").await["channel"],
        "user:user-123"
    );
    assert_eq!(
        answers(&mut c, &["user:user-456", "user:user-123x"]).await,
        want(&[
            ("user:user-123x", "forbidden"),
            ("user:user-456", "forbidden")
        ])
    );
    publish(&srv, "user:user-456", "trade_update").await;
    publish(&srv, "user:user-123", "trade_update").await;
    assert_eq!(c.expect_type("event").await["channel"], "user:user-123");
    // A session that is not this user's: refused with the backend's reason.
    let mut bad = Client::upgrade(srv.url("")).await;
    bad.expect_type("welcome").await;
    bad.send(json!({"op":"auth","data":{"sessionID":"s-123","userId":"user-456"}}))
        .await;
    let (_, closed) = bad.until_close().await;
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (4001, "invalid session")
    );
    // Nothing before authenticating.
    let mut early = Client::upgrade(srv.url("")).await;
    early.expect_type("welcome").await;
    early
        .send(json!({"op":"subscribe","channels":["user:user-123"]}))
        .await;
    assert_eq!(early.expect_type("error").await["code"], "unauthorized");
}
