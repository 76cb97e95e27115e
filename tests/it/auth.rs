//! Access control over real sockets: tokens (HS256, RS256, ES256), private channels,
//! grants, publisher role, API keys, per-user and rate limits, origins, refresh and expiry.

use std::time::Duration;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::util::*;
use quotecast::auth::unix_now;
use quotecast::config::AccessConfig;

const SECRET: &str = "integration-test-secret";

fn closed_server(tweak: impl FnOnce(&mut AccessConfig)) -> TestServer {
    TestServer::start(|c| {
        let mut a = AccessConfig::default();
        a.jwt.hs256_secret = Some(SECRET.as_bytes().to_vec());
        a.jwt.rs256_public_pem = Some(include_bytes!("../keys/rsa-public.pem").to_vec());
        a.jwt.es256_public_pem = Some(include_bytes!("../keys/ec-public.pem").to_vec());
        a.api_keys = vec!["backend-key-1".into()];
        tweak(&mut a);
        c.access = a;
    })
}

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

fn publisher() -> String {
    token(json!({"sub": "feed-1", "exp": unix_now() + 600, "role": "publisher"}))
}

async fn connect_with(srv: &TestServer, tok: &str) -> Client {
    Client::connect_url(&srv.url(&format!("?token={tok}")), false).await
}

/// Connects and expects the server to close right after the upgrade.
async fn refused(srv: &TestServer, query: &str) -> Closed {
    let mut c = Client::upgrade(srv.url(query)).await;
    let (seen, closed) = c.until_close().await;
    assert!(seen.iter().all(|v| v["type"] != "welcome"), "{seen:?}");
    closed
}

#[tokio::test]
async fn user_sees_only_own_private_channels_even_with_name_tricks() {
    let srv = closed_server(|_| {});
    let mut c = connect_with(&srv, &user("42")).await;
    assert_eq!(c.welcome["user"], "42");
    let tricks = [
        "user.43.orders",
        "user.420.orders",
        "user.4.orders",
        "User.42.orders",
        "user.42 .orders",
        " user.42.orders",
        "user.４２.orders",
        "user..42.orders",
        "user.42..orders",
        "user.*.orders",
        "user.42",
    ];
    let mut chans = vec!["user.42.orders", "quotes.AAPL"];
    chans.extend(tricks);
    c.send(json!({"op":"subscribe","id":1,"channels":chans}))
        .await;
    let got = c.sync().await;
    let mut acked: Vec<&str> = got
        .iter()
        .filter(|v| v["type"] == "subscribed")
        .map(|v| v["channel"].as_str().unwrap())
        .collect();
    acked.sort();
    // Names are case-sensitive: `User.42.orders` and `user.42` are other, public channels
    // (no `user.{user}.*` match), never a way into user 42's or 43's data.
    assert_eq!(
        acked,
        vec!["User.42.orders", "quotes.AAPL", "user.42", "user.42.orders"],
        "{got:?}"
    );
    for t in ["user.43.orders", "user.420.orders", "user.4.orders"] {
        let e = got.iter().find(|v| v["channel"] == t).unwrap();
        assert_eq!(e["code"], "forbidden", "{t}");
    }
    for t in [
        "user.42 .orders",
        " user.42.orders",
        "user.４２.orders",
        "user..42.orders",
        "user.42..orders",
        "user.*.orders",
    ] {
        let e = got.iter().find(|v| v["channel"] == t).unwrap();
        assert_eq!(e["code"], "bad_channel", "{t}: {e}");
    }
    // 43's events never reach 42.
    let (st, _) = http_with(srv.addr, "POST", "/api/publish", &[("X-Api-Key", "backend-key-1")],
        &json!({"events":[ev("user.43.orders","order_update",json!(1)), ev("user.42.orders","order_update",json!(2))]}).to_string()).await;
    assert_eq!(st, 200);
    let e = c.expect_type("event").await;
    assert_eq!(
        (e["channel"].as_str(), e["data"].as_i64()),
        (Some("user.42.orders"), Some(2))
    );
}

#[tokio::test]
async fn grants_in_the_token_open_extra_private_channels() {
    let srv = closed_server(|_| {});
    let t = token(json!({"sub":"7","exp":unix_now()+600,"channels":["challenge.7f3a*"]}));
    let mut c = connect_with(&srv, &t).await;
    c.send(json!({"op":"subscribe","channels":["challenge.7f3a01","challenge.8000","strategy.x"]}))
        .await;
    let got = c.sync().await;
    assert_eq!(
        got.iter()
            .find(|v| v["channel"] == "challenge.7f3a01")
            .unwrap()["type"],
        "subscribed"
    );
    assert_eq!(
        got.iter()
            .find(|v| v["channel"] == "challenge.8000")
            .unwrap()["code"],
        "forbidden"
    );
    assert_eq!(
        got.iter().find(|v| v["channel"] == "strategy.x").unwrap()["code"],
        "forbidden"
    );
}

#[tokio::test]
async fn bad_tokens_are_refused_with_4001_and_a_reason() {
    let srv = closed_server(|_| {});
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let none = format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(format!(r#"{{"sub":"42","exp":{}}}"#, unix_now() + 600))
    );
    let wrong_key = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub":"42","exp":unix_now()+600}),
        &EncodingKey::from_secret(b"nope"),
    )
    .unwrap();
    // Algorithm confusion: an HS256 token whose HMAC key is the server's RSA public key.
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub":"42","exp":unix_now()+600}),
        &EncodingKey::from_secret(include_bytes!("../keys/rsa-public.pem")),
    )
    .unwrap();
    let cases = [
        (
            token(json!({"sub":"42","exp":unix_now()-60})),
            "token expired",
        ),
        (
            token(json!({"sub":"42","exp":unix_now()+600,"nbf":unix_now()+300})),
            "token not yet valid",
        ),
        (token(json!({"sub":"42"})), "token claims invalid"),
        (none, "token algorithm not accepted"),
        (wrong_key, "invalid token signature"),
        (confused, "invalid token signature"),
        ("garbage".to_string(), "malformed token"),
    ];
    for (t, reason) in cases {
        let closed = refused(&srv, &format!("?token={t}")).await;
        assert_eq!(closed.code, 4001, "{reason}");
        assert!(closed.reason.starts_with(reason), "{reason}: {closed:?}");
    }
}

#[tokio::test]
async fn rs256_and_es256_tokens_and_the_bearer_header() {
    let srv = closed_server(|_| {});
    let claims = json!({"sub":"9","exp":unix_now()+600});
    let rs = encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(include_bytes!("../keys/rsa-private.pem")).unwrap(),
    )
    .unwrap();
    let es = encode(
        &Header::new(Algorithm::ES256),
        &claims,
        &EncodingKey::from_ec_pem(include_bytes!("../keys/ec-private.pem")).unwrap(),
    )
    .unwrap();
    for t in [rs, es] {
        let c = connect_with(&srv, &t).await;
        assert_eq!(c.welcome["user"], "9");
    }
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = srv.url("").into_client_request().unwrap();
    req.headers_mut().insert(
        "Authorization",
        format!("Bearer {}", user("11")).parse().unwrap(),
    );
    let mut c = Client::upgrade(req).await;
    assert_eq!(c.expect_type("welcome").await["user"], "11");
}

#[tokio::test]
async fn auth_frame_within_the_deadline_then_refresh_then_expiry() {
    // The default auth deadline (10 s) only bounds a hang here; the deadline itself is tested
    // below on a server of its own.
    let srv = closed_server(|_| {});
    // The first token outlives the steps up to the refresh by seconds, however slow the
    // machine; the refreshed one expires two seconds after it.
    let exp1 = unix_now() + 5;
    // Without a token nothing but auth/ping is allowed.
    let mut c = Client::connect(&srv).await;
    assert_eq!(c.welcome["user"], Value::Null);
    c.send(json!({"op":"subscribe","id":1,"channels":["quotes.AAPL"]}))
        .await;
    assert_eq!(c.expect_type("error").await["code"], "unauthorized");
    c.send(json!({"op":"auth","id":2,"token":token(json!({"sub":"42","exp":exp1}))}))
        .await;
    let a = c.expect_type("authenticated").await;
    assert_eq!(
        (a["id"].as_i64(), a["user"].as_str()),
        (Some(2), Some("42"))
    );
    c.subscribe(&["user.42.orders"]).await;
    // Refresh with a later expiry; a token for another user is refused and changes nothing.
    c.send(json!({"op":"auth","id":3,"token":user("43")})).await;
    assert_eq!(c.expect_type("error").await["code"], "auth_failed");
    c.send(json!({"op":"auth","id":4,"token":"bad"})).await;
    assert_eq!(c.expect_type("error").await["code"], "auth_failed");
    c.send(json!({"op":"auth","id":5,"token":token(json!({"sub":"42","exp":exp1+2}))}))
        .await;
    let a = c.expect_type("authenticated").await;
    let exp = a["exp"].as_u64().unwrap();
    assert_eq!(exp, exp1 + 2, "{a}");
    // Expiry without refresh closes the connection with 4002.
    let (_, closed) = c.until_close().await;
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (4002, "token expired")
    );
    assert!(unix_now() >= exp);

    // Never authenticating: closed with 4003 after the deadline (never before it).
    let deadline = Duration::from_millis(300);
    let srv = closed_server(|a| a.auth_timeout = deadline);
    let t0 = std::time::Instant::now();
    let mut d = Client::connect(&srv).await;
    let (_, closed) = d.until_close().await;
    assert_eq!(closed.code, 4003);
    assert!(t0.elapsed() >= deadline, "{:?}", t0.elapsed());
}

#[tokio::test]
async fn publishing_needs_the_role_or_an_api_key() {
    let srv = closed_server(|_| {});
    let mut sub = connect_with(&srv, &user("42")).await;
    sub.send(
        json!({"op":"publish","id":1,"channel":"quotes.AAPL","event":"quote","data":{"bid":1}}),
    )
    .await;
    let e = sub.expect_type("error").await;
    assert_eq!(
        (e["code"].as_str(), e["id"].as_i64()),
        (Some("forbidden"), Some(1))
    );
    let mut pubc = connect_with(&srv, &publisher()).await;
    pubc.send(
        json!({"op":"publish","id":2,"channel":"quotes.AAPL","event":"quote","data":{"bid":1}}),
    )
    .await;
    assert_eq!(pubc.expect_type("published").await["seq"], 1);

    let body = json!({"channel":"trades.A","event":"t","data":1}).to_string();
    assert_eq!(http(srv.addr, "POST", "/api/publish", &body).await.0, 401);
    assert_eq!(
        http_with(
            srv.addr,
            "POST",
            "/api/publish",
            &[("X-Api-Key", "wrong")],
            &body
        )
        .await
        .0,
        401
    );
    assert_eq!(
        http_with(
            srv.addr,
            "POST",
            "/api/publish",
            &[("X-Api-Key", "backend-key-1")],
            &body
        )
        .await
        .0,
        200
    );
    let bearer = format!("Bearer {}", publisher());
    assert_eq!(
        http_with(
            srv.addr,
            "POST",
            "/api/publish",
            &[("Authorization", &bearer)],
            &body
        )
        .await
        .0,
        200
    );
    let bearer = format!("Bearer {}", user("42"));
    assert_eq!(
        http_with(
            srv.addr,
            "POST",
            "/api/publish",
            &[("Authorization", &bearer)],
            &body
        )
        .await
        .0,
        403
    );
    // The role is checked before the body is read: a bad body is not looked at.
    assert_eq!(
        http_with(
            srv.addr,
            "POST",
            "/api/publish",
            &[("Authorization", &bearer)],
            "{nope"
        )
        .await
        .0,
        403
    );
}

#[tokio::test]
async fn sixth_connection_of_a_user_is_refused_and_a_slot_frees_on_close() {
    let srv = closed_server(|a| a.max_connections_per_user = 5);
    let t = user("42");
    let mut five = Vec::new();
    for _ in 0..5 {
        five.push(connect_with(&srv, &t).await);
    }
    let closed = refused(&srv, &format!("?token={t}")).await;
    assert_eq!(closed.code, 4010, "{closed:?}");
    // Another user is unaffected.
    connect_with(&srv, &user("43")).await;
    // Closing one frees a slot (the server learns of the close asynchronously).
    let mut first = five.remove(0);
    first.ws.close(None).await.unwrap();
    let _ = first.until_close().await;
    drop(first);
    let mut ok = false;
    let deadline = std::time::Instant::now() + TIMEOUT;
    while std::time::Instant::now() < deadline {
        let mut c = Client::upgrade(srv.url(&format!("?token={t}"))).await;
        if let Ok(v) = c.next().await {
            if v["type"] == "welcome" {
                ok = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "a slot was freed");
}

#[tokio::test]
async fn op_rate_limit_trips_and_recovers_then_abuse_closes() {
    let srv = closed_server(|a| {
        a.ops_per_sec = 20.0;
        a.ops_burst = 5.0;
        a.max_rate_violations = 30;
    });
    let mut c = connect_with(&srv, &user("42")).await;
    // One write: the server takes the ten at once, so only the burst passes, plus whatever
    // refilled (20/s) while it read them; bounded below by the time it measurably took.
    let t0 = std::time::Instant::now();
    c.send_batch((0..10).map(|i| json!({"op":"ping","id":i})))
        .await;
    let mut pongs = 0;
    let mut limited = 0;
    for _ in 0..10 {
        let v = c.recv().await;
        match v["type"].as_str() {
            Some("pong") => pongs += 1,
            Some("error") if v["code"] == "rate_limited" => limited += 1,
            _ => panic!("{v}"),
        }
    }
    let took = t0.elapsed();
    let refilled = (took.as_secs_f64() * 20.0).ceil() as usize;
    assert!(
        (5..=5 + refilled).contains(&pongs) && pongs + limited == 10,
        "{pongs} pongs, {limited} refused in {took:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.send(json!({"op":"ping","id":"again"})).await;
    assert_eq!(
        c.expect_type("pong").await["id"],
        "again",
        "the bucket refilled"
    );
    // 100 in one write: far more than 30 violations whatever the refill meanwhile.
    c.send_batch((0..100).map(|i| json!({"op":"ping","id":i})))
        .await;
    let (_, closed) = c.until_close().await;
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (4029, "rate limit exceeded")
    );
}

#[tokio::test]
async fn anonymous_is_refused_unless_allowed_and_then_only_public() {
    let srv = closed_server(|_| {});
    let mut c = Client::connect(&srv).await;
    c.send(json!({"op":"subscribe","channels":["quotes.AAPL"]}))
        .await;
    assert_eq!(c.expect_type("error").await["code"], "unauthorized");

    let srv = closed_server(|a| a.allow_anonymous = true);
    let mut c = Client::connect(&srv).await;
    c.send(json!({"op":"subscribe","channels":["quotes.AAPL","user.42.orders","challenge.1"]}))
        .await;
    let got = c.sync().await;
    assert_eq!(
        got.iter().find(|v| v["channel"] == "quotes.AAPL").unwrap()["type"],
        "subscribed"
    );
    assert_eq!(
        got.iter()
            .find(|v| v["channel"] == "user.42.orders")
            .unwrap()["code"],
        "unauthorized"
    );
    assert_eq!(
        got.iter().find(|v| v["channel"] == "challenge.1").unwrap()["code"],
        "unauthorized"
    );
    c.send(json!({"op":"publish","channel":"quotes.AAPL","event":"q","data":1}))
        .await;
    assert_eq!(c.expect_type("error").await["code"], "forbidden");

    // No keys and no anonymous access: nothing can work, and the client is told why.
    let srv = TestServer::start(|c| c.access = AccessConfig::default());
    let closed = refused(&srv, "").await;
    assert_eq!(closed.code, 4001);
}

#[tokio::test]
async fn origin_allow_list_and_per_ip_connect_limit() {
    let srv = closed_server(|a| {
        a.allow_anonymous = true;
        a.origins = vec!["https://app.example".into()];
        a.limit_loopback = true;
        a.connects_per_ip_per_sec = 0.01; // no refill within the test
        a.connects_per_ip_burst = 4.0;
    });
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut ok = srv.url("").into_client_request().unwrap();
    ok.headers_mut()
        .insert("Origin", "https://app.example".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(ok).await.is_ok());
    let mut bad = srv.url("").into_client_request().unwrap();
    bad.headers_mut()
        .insert("Origin", "https://evil.example".parse().unwrap());
    let err = tokio_tungstenite::connect_async(bad)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("403"), "{err}");
    // Two connections used so far; the burst of 4 allows two more, then 429.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
        let _ = s
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(TIMEOUT, s.read_to_end(&mut out)).await;
        statuses.push(
            String::from_utf8_lossy(&out)
                .split(' ')
                .nth(1)
                .unwrap_or("")
                .to_string(),
        );
    }
    assert_eq!(statuses, vec!["200", "200", "429", "429"]);
}

#[tokio::test]
async fn no_secret_or_token_appears_in_the_logs() {
    let secret = "s3cr3t-never-log-me";
    let mut cmd = ServerProcess::command(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "2",
        "--api-key",
        "k3y-never-log-me",
    ]);
    cmd.env("QUOTECAST_JWT_SECRET", secret)
        .env("RUST_LOG", "trace")
        .stderr(std::process::Stdio::piped());
    let srv = ServerProcess::start(&mut cmd);
    let addr = srv.addr;
    let good = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub":"42","exp":unix_now()+600}),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let expired = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub":"42","exp":unix_now()-600}),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let mut c = Client::connect_url(&format!("ws://{addr}/ws?token={good}"), false).await;
    c.send(json!({"op":"auth","token":expired})).await;
    c.expect_type("error").await;
    c.subscribe(&["user.42.orders"]).await;
    let mut bad = Client::upgrade(format!("ws://{addr}/ws?token={expired}")).await;
    let _ = bad.until_close().await;
    let _ = http_with(
        addr,
        "POST",
        "/api/publish",
        &[("X-Api-Key", "wrong-k3y-never-log-me")],
        "{}",
    )
    .await;
    let _ = http_with(
        addr,
        "POST",
        "/api/publish",
        &[("X-Api-Key", "k3y-never-log-me")],
        r#"{"channel":"a","event":"e","data":1}"#,
    )
    .await;
    srv.sigterm();
    let child = srv.take();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("token refused"),
        "the refusals were logged: {log}"
    );
    for s in [secret, "k3y-never-log-me", good.as_str(), expired.as_str()] {
        assert!(!log.contains(s), "a secret or token leaked into the log");
    }
    // Signatures alone would identify a token too.
    for t in [&good, &expired] {
        let sig = t.rsplit('.').next().unwrap();
        assert!(!log.contains(sig));
    }
}
