//! Channel namespaces over real sockets: the default configuration has no public catch-all
//! (every seed's private naming scheme is refused), namespaces written for the seeds' names
//! keep each user to their own rooms, and the hardening of issue 14 (operator-only presence
//! and status names, conflicting credentials, the pre-auth message cap, the publish body
//! deadline, the demo's throwaway secret).

use std::time::{Duration, Instant};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::util::*;
use quotecast::auth::unix_now;
use quotecast::config::{AccessConfig, Config, RawConfig};
use quotecast::engine::channel::{ChannelAccess, ChannelPolicy, ChannelRule, ChannelRules};

const SECRET: &str = "namespaces-test-secret";
const API_KEY: &str = "namespaces-api-key";

/// Every private naming scheme of the seeds (000 Laravel, 001 challenge rooms, 002 session
/// rooms, 004 topics) and the strategy rooms of the issue.
const SEED_PRIVATE_NAMES: &[&str] = &[
    "private-App.Models.User.1",
    "App.Models.User.1",
    "challenge_7",
    "user_42",
    "user:42",
    "user:42:orders",
    "user:42:positions",
    "strategy:9",
    "strategy:9:orders",
];

fn token(claims: Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn user(sub: &str) -> String {
    token(json!({"sub": sub, "exp": unix_now() + 600}))
}

/// Anonymous subscribers allowed, publishing by API key, tokens by [`SECRET`], and the
/// channel rules given (the real default configuration's when `None`).
fn server(rules: Option<ChannelRules>) -> TestServer {
    let defaults = RawConfig::default().into_config().unwrap().rules;
    TestServer::start(move |c: &mut Config| {
        let mut a = AccessConfig {
            allow_anonymous: true,
            api_keys: vec![API_KEY.into()],
            ..AccessConfig::default()
        };
        a.jwt.hs256_secret = Some(SECRET.as_bytes().to_vec());
        c.access = a;
        c.rules = rules.unwrap_or(defaults);
    })
}

async fn publish_key(addr: std::net::SocketAddr, channel: &str, n: u64) -> (u16, String) {
    let body = json!({"channel": channel, "event": "e", "data": {"n": n}}).to_string();
    http_with(
        addr,
        "POST",
        "/api/publish",
        &[("X-Api-Key", API_KEY)],
        &body,
    )
    .await
}

async fn connect_token(srv: &TestServer, tok: &str) -> Client {
    Client::connect_url(&srv.url(&format!("?token={tok}")), false).await
}

/// The error codes a subscribe of `names` gets, by channel.
async fn subscribe_codes(c: &mut Client, names: &[&str]) -> Vec<(String, String)> {
    c.send(json!({"op":"subscribe","channels":names})).await;
    let mut out = Vec::new();
    for v in c.sync().await {
        let ch = v["channel"].as_str().unwrap_or("").to_string();
        match v["type"].as_str() {
            Some("error") => out.push((ch, v["code"].as_str().unwrap().to_string())),
            Some("subscribed") => out.push((ch, "subscribed".into())),
            _ => {}
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn default_config_refuses_every_seed_private_name_to_readers_and_publishers() {
    let srv = server(None);
    let mut anon = Client::connect(&srv).await;
    let mut u42 = connect_token(&srv, &user("42")).await;
    let mut want: Vec<(String, String)> = SEED_PRIVATE_NAMES
        .iter()
        .map(|n| (n.to_string(), "unknown_channel".to_string()))
        .collect();
    want.sort();
    assert_eq!(subscribe_codes(&mut anon, SEED_PRIVATE_NAMES).await, want);
    assert_eq!(subscribe_codes(&mut u42, SEED_PRIVATE_NAMES).await, want);
    for n in SEED_PRIVATE_NAMES {
        let (st, body) = publish_key(srv.addr, n, 1).await;
        assert_eq!(st, 400, "{n}: {body}");
        assert!(body.contains("unknown_channel"), "{body}");
    }
    // The public namespaces still work, and a marker published after everything arrives
    // alone: nothing private slipped through before it.
    anon.subscribe(&["trades.MARK"]).await;
    let (st, _) = publish_key(srv.addr, "trades.MARK", 1).await;
    assert_eq!(st, 200);
    let ev = anon.expect_type("event").await;
    assert_eq!(ev["channel"], "trades.MARK");
}

fn owner(p: &str) -> ChannelRule {
    ChannelRule::new(
        p,
        ChannelPolicy::stream(100).with_access(ChannelAccess::Owner),
    )
    .unwrap()
}

fn grant(p: &str) -> ChannelRule {
    ChannelRule::new(
        p,
        ChannelPolicy::stream(100).with_access(ChannelAccess::Grant),
    )
    .unwrap()
}

/// The seeds' namespaces: each user reads their own rooms only; a grant opens exactly the
/// rooms it names; an anonymous client reads none; tricks on the id (leading zeros, case,
/// trailing separators, a longer id with the same prefix) open nothing.
#[tokio::test]
async fn seed_namespaces_keep_each_user_to_their_own_rooms() {
    let rules = ChannelRules::new(vec![
        owner("user:{user}:*"),                  // seeds/004
        owner("user:{user}"),                    // seeds/002
        owner("user_{user}"),                    // seeds/001
        owner("private-App.Models.User.{user}"), // seeds/000
        grant("challenge_{id}"),                 // seeds/001
        grant("strategy:{id}:*"),                // seeds/004
        grant("strategy:{id}"),
        ChannelRule::new("trades.*", ChannelPolicy::stream(10)).unwrap(),
    ]);
    let srv = server(Some(rules));
    let mut u42 = connect_token(
        &srv,
        &token(json!({"sub":"42","exp":unix_now()+600,"channels":["challenge_7","strategy:9:*"]})),
    )
    .await;
    let mut u1 = connect_token(&srv, &user("1")).await;
    let mut anon = Client::connect(&srv).await;
    let own42 = [
        "user:42:orders",
        "user:42",
        "user_42",
        "challenge_7",
        "strategy:9:orders",
    ];
    let codes = subscribe_codes(&mut u42, &own42).await;
    assert!(codes.iter().all(|(_, c)| c == "subscribed"), "{codes:?}");
    let others = [
        "user:43:orders",
        "user:042:orders",
        "user:4:orders",
        "user:420",
        "user_1",
        "private-App.Models.User.1",
        "challenge_8",
        "challenge_70",
        "strategy:9",
        "strategy:90:orders",
    ];
    let codes = subscribe_codes(&mut u42, &others).await;
    assert!(codes.iter().all(|(_, c)| c == "forbidden"), "{codes:?}");
    let codes = subscribe_codes(&mut u42, &["user:42:", "User:42:orders", "user:42:a.b"]).await;
    assert!(
        codes
            .iter()
            .all(|(_, c)| c == "unknown_channel" || c == "bad_channel"),
        "{codes:?}"
    );
    assert_eq!(
        subscribe_codes(&mut u1, &["private-App.Models.User.1"]).await,
        vec![("private-App.Models.User.1".into(), "subscribed".into())]
    );
    let codes = subscribe_codes(&mut anon, &own42).await;
    assert!(codes.iter().all(|(_, c)| c == "unauthorized"), "{codes:?}");
    // Delivery: user 42 receives its order, user 1 and the anonymous client nothing (each
    // gets its own marker next, proving the private event never came before it).
    anon.subscribe(&["trades.M"]).await;
    u1.subscribe(&["trades.M"]).await;
    assert_eq!(publish_key(srv.addr, "user:42:orders", 7).await.0, 200);
    assert_eq!(publish_key(srv.addr, "trades.M", 8).await.0, 200);
    let ev = u42.expect_type("event").await;
    assert_eq!(
        (ev["channel"].as_str(), ev["data"]["n"].as_u64()),
        (Some("user:42:orders"), Some(7))
    );
    for c in [&mut anon, &mut u1] {
        let ev = c.expect_type("event").await;
        assert_eq!(ev["channel"], "trades.M");
    }
}

/// A token whose grant is 60 `*` against 128-byte names: the subscribe answers at once and
/// another client on the server keeps receiving (the old matcher stalled the shard ~9 s).
#[tokio::test]
async fn a_star_heavy_grant_does_not_stall_the_server() {
    let srv = server(None);
    let g = format!("challenge.{}b", "*a".repeat(58));
    let mut c = connect_token(
        &srv,
        &token(json!({"sub":"42","exp":unix_now()+600,"channels":[g]})),
    )
    .await;
    let name = format!("challenge.{}", "a".repeat(118));
    let t0 = Instant::now();
    let codes = subscribe_codes(&mut c, &[name.as_str()]).await;
    assert_eq!(codes, vec![(name.clone(), "forbidden".to_string())]);
    // Bounded by the client's own timeout (10 s), which the old matcher's ~9 s per name
    // would exceed with a handful of names; here a batch of 50 is answered in one go.
    let many: Vec<String> = (0..50)
        .map(|i| format!("{name}{i}").chars().take(128).collect())
        .collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    c.send(json!({"op":"subscribe","channels":refs})).await;
    let answers = c.sync().await;
    assert!(answers.iter().filter(|v| v["type"] == "error").count() >= 1);
    assert!(t0.elapsed() < TIMEOUT, "{:?}", t0.elapsed());
}

#[tokio::test]
async fn presence_and_private_status_names_need_operator_credentials() {
    let srv = server(None);
    let mut u42 = connect_token(&srv, &user("42")).await;
    u42.subscribe(&["user.42.orders", "trades.PUB"]).await;
    for path in [
        "/api/presence?user=42",
        "/api/presence?channel=user.42.orders",
    ] {
        let (st, body) = http(srv.addr, "GET", path, "").await;
        assert_eq!(st, 401, "{path}: {body}");
        let (st, body) = http_with(
            srv.addr,
            "GET",
            path,
            &[("Authorization", &format!("Bearer {}", user("42")))],
            "",
        )
        .await;
        assert_eq!(st, 403, "a subscriber token is not an operator: {body}");
        let (st, body) = http_with(srv.addr, "GET", path, &[("X-Api-Key", API_KEY)], "").await;
        assert_eq!(st, 200, "{path}: {body}");
        let admin = token(json!({"sub":"ops","exp":unix_now()+600,"role":"admin"}));
        let (st, _) = http_with(
            srv.addr,
            "GET",
            path,
            &[("Authorization", &format!("Bearer {admin}"))],
            "",
        )
        .await;
        assert_eq!(st, 200);
    }
    let (_, body) = http_with(
        srv.addr,
        "GET",
        "/api/presence?user=42",
        &[("X-Api-Key", API_KEY)],
        "",
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["connections"],
        1
    );
    let (_, anon) = http(srv.addr, "GET", "/ws/status", "").await;
    assert!(
        anon.contains("trades.PUB") && !anon.contains("user.42"),
        "{anon}"
    );
    let (_, op) = http_with(srv.addr, "GET", "/ws/status", &[("X-Api-Key", API_KEY)], "").await;
    assert!(
        op.contains("trades.PUB") && op.contains("user.42.orders"),
        "{op}"
    );
}

async fn closed_with(req: tokio_tungstenite::tungstenite::handshake::client::Request) -> Closed {
    let mut c = Client::upgrade(req).await;
    let (seen, closed) = c.until_close().await;
    assert!(seen.iter().all(|v| v["type"] != "welcome"), "{seen:?}");
    closed
}

#[tokio::test]
async fn conflicting_or_empty_credentials_are_refused_with_a_reason() {
    let srv = server(None);
    let good = user("42");
    let mut req = srv
        .url(&format!("?token={}", user("43")))
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Authorization", format!("Bearer {good}").parse().unwrap());
    let c = closed_with(req).await;
    assert_eq!(c.code, 4001);
    assert!(c.reason.contains("conflicting credentials"), "{}", c.reason);
    let mut req = srv.url("?token=").into_client_request().unwrap();
    req.headers_mut()
        .insert("Authorization", format!("Bearer {good}").parse().unwrap());
    let c = closed_with(req).await;
    assert_eq!(c.code, 4001);
    assert!(c.reason.contains("empty ?token="), "{}", c.reason);
    // The same token both ways is fine.
    let mut req = srv
        .url(&format!("?token={good}"))
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Authorization", format!("Bearer {good}").parse().unwrap());
    let mut c = Client::upgrade(req).await;
    assert_eq!(c.expect_type("welcome").await["user"], "42");
}

/// Before `auth`, a message over 16 KiB is refused (skipped, or 1009 past 16x that): a crowd
/// of unauthenticated sockets cannot each park a 256 KiB partial frame.
#[tokio::test]
async fn unauthenticated_connections_may_only_send_small_messages() {
    let srv = TestServer::start(|c| {
        let mut a = AccessConfig::default();
        a.jwt.hs256_secret = Some(SECRET.as_bytes().to_vec());
        c.access = a;
    });
    let mut c = Client::upgrade(srv.url("")).await;
    c.expect_type("welcome").await;
    c.send_raw(Message::Text("x".repeat(20_000))).await;
    let e = c.expect_type("error").await;
    assert_eq!(e["code"], "too_large");
    assert!(e["message"].as_str().unwrap().contains("16384"), "{e}");
    c.send(json!({"op":"auth","id":1,"token":user("42")})).await;
    c.expect_type("authenticated").await;
    // Authenticated: a 20 KB message is read (and answered for what it is).
    c.send_raw(Message::Text(format!(
        "{{\"op\":\"ping\",\"pad\":\"{}\"}}",
        "x".repeat(20_000)
    )))
    .await;
    let v = c.next().await.unwrap();
    assert_ne!(v["code"], "too_large", "{v}");
    // A frame announcing 300 KB before auth: closed at once with 1009.
    let (mut s, rest) = raw_connect(srv.addr, "").await;
    let mut f = vec![0x81, 0xFF];
    f.extend_from_slice(&(300_000u64).to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(&[b'x'; 1000]);
    s.write_all(&f).await.unwrap();
    let code = raw_read_until_close(&mut s, rest, TIMEOUT).await;
    assert_eq!(code, Some(1009));
}

/// A publish body that never finishes is answered 408 after the body deadline.
#[tokio::test]
async fn a_publish_body_that_never_finishes_times_out() {
    let srv = server(None);
    let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let head = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nX-Api-Key: {API_KEY}\r\nContent-Length: 100\r\n\r\n{{\"chan"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let t0 = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server must answer and close");
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body_timeout"), "{text}");
    let waited = t0.elapsed();
    assert!(
        waited >= quotecast::server::http::BODY_TIMEOUT - Duration::from_millis(100),
        "{waited:?}"
    );
}

/// `--demo` with a real secret is refused; the demo's tokens say what they are.
#[tokio::test]
async fn demo_refuses_a_real_secret_and_its_tokens_are_described() {
    let out = ServerProcess::command(&[
        "serve",
        "--demo",
        "--listen",
        "127.0.0.1:0",
        "--jwt-secret",
        "real",
    ])
    .stderr(std::process::Stdio::piped())
    .output()
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("demo.enabled") && err.contains("jwt_secret"),
        "{err}"
    );
    let srv = ServerProcess::start(&mut ServerProcess::command(&[
        "serve",
        "--demo",
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "1",
    ]));
    let (st, body) = http(srv.addr, "GET", "/demo/token?user=42", "").await;
    assert_eq!(st, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["user"].as_str(), v["channels"].as_str()),
        (Some("42"), Some("user.42.**"))
    );
    let exp = v["exp"].as_u64().unwrap();
    assert!(
        exp > unix_now() + 23 * 3600 && exp <= unix_now() + 24 * 3600 + 5,
        "{exp}"
    );
    let (st, body) = http(srv.addr, "GET", "/demo/token?user=999", "").await;
    assert_eq!(st, 404);
    assert!(body.contains("demo users: "), "{body}");
}

/// `[[rate_limits]]`: subscribes in one namespace and publishes in another are limited per
/// connection, with the channel and the wait in the error; other namespaces are not.
#[tokio::test]
async fn per_namespace_op_limits() {
    let raw = RawConfig::parse(
        "[[rate_limits]]\nop = \"subscribe\"\nnamespace = \"trades.**\"\ncount = 2\nper_secs = 60\n\n\
         [[rate_limits]]\nop = \"publish\"\nnamespace = \"signals.**\"\ncount = 1\nper_secs = 60\n",
        "limits",
    )
    .unwrap();
    let limits = raw.into_config().unwrap().rate_limits;
    let srv = TestServer::start(move |c| c.rate_limits = limits);
    let mut c = Client::connect(&srv).await;
    c.subscribe(&["trades.A", "trades.B"]).await;
    c.send(json!({"op":"subscribe","id":3,"channels":["trades.C","quotes.C"]}))
        .await;
    let got = c.sync().await;
    let err = got.iter().find(|v| v["type"] == "error").unwrap();
    assert_eq!(
        (err["code"].as_str(), err["channel"].as_str()),
        (Some("rate_limited"), Some("trades.C"))
    );
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.starts_with("at most 2 subscribe per 60 s in namespace `trades.**`; retry in "),
        "{msg}"
    );
    assert!(got
        .iter()
        .any(|v| v["type"] == "subscribed" && v["channel"] == "quotes.C"));
    // Publishing: one per minute on signals.**, trades unaffected.
    c.send(json!({"op":"publish","id":4,"channel":"signals.X","event":"e","data":1}))
        .await;
    c.expect_type("published").await;
    c.send(json!({"op":"publish","id":5,"channel":"signals.X","event":"e","data":2}))
        .await;
    let e = c.expect_type("error").await;
    assert_eq!(
        (e["code"].as_str(), e["id"].as_i64()),
        (Some("rate_limited"), Some(5))
    );
    c.send(json!({"op":"publish","id":6,"channel":"trades.X","event":"e","data":3}))
        .await;
    c.expect_type("published").await;
    // A rule naming no namespace of the configuration is refused at start.
    let bad = RawConfig::parse(
        "[[rate_limits]]\nop = \"subscribe\"\nnamespace = \"nope.*\"\ncount = 1\nper_secs = 1\n",
        "bad",
    )
    .unwrap();
    assert!(bad
        .into_config()
        .unwrap_err()
        .to_string()
        .contains("rate_limits[0].namespace"));
}

/// `quotecast channels explain` and the start-up log of namespaces, from the real binary.
#[tokio::test]
async fn channels_explain_and_the_namespace_log() {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_quotecast"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["channels", "explain", "user.42.orders", "--user", "43"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("pattern \"user.{user}.**\"") && text.contains("user 43:   no (forbidden)"),
        "{text}"
    );
    let out = run(&["channels", "explain", "private-App.Models.User.1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("unknown_channel"));
    let out = run(&["config", "--print-default"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("pattern = \"**\"") && text.contains("DELIBERATELY"),
        "catch-all how-to"
    );
    // The server names every namespace with who may subscribe and publish when it starts.
    let log = std::env::temp_dir().join(format!("qc-ns-log-{}", std::process::id()));
    let mut cmd = ServerProcess::command(&["serve", "--listen", "127.0.0.1:0", "--shards", "1"]);
    cmd.stderr(std::fs::File::create(&log).unwrap());
    let srv = ServerProcess::start(&mut cmd);
    let (st, _) = http(srv.addr, "GET", "/health", "").await;
    assert_eq!(st, 200);
    drop(srv);
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    assert!(
        text.contains("namespace #5: user.{user}.** (stream, history 1000): subscribe: only the user whose id fills {user}"),
        "{text}"
    );
    assert!(text.contains("publish: a token with role publisher or admin, or an API key"));
    assert!(text.contains("a channel name no namespace matches is refused (unknown_channel)"));
}
