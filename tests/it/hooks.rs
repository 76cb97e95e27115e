//! Backend hooks against a real HTTP backend (tests/backend/hooks_backend.py, standard-library
//! Python started by each test): seeds/001's challenge rooms decided by a subscribe hook,
//! the answer cache, a backend that is down (clear error, circuit breaker) or slow (deadline,
//! and the shard keeps serving others meanwhile).

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::util::*;
use quotecast::auth::unix_now;
use quotecast::config::{AccessConfig, Config, HooksConfig};
use quotecast::engine::channel::{ChannelAccess, ChannelPolicy, ChannelRule, ChannelRules};

const SECRET: &str = "hooks-test-secret";
const API_KEY: &str = "hooks-api-key";

/// The Python backend; killed on drop.
pub(crate) struct Backend {
    child: Child,
    pub(crate) port: u16,
}

impl Backend {
    pub(crate) fn start() -> Backend {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/backend/hooks_backend.py"
        );
        let mut child = Command::new("python3")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the test backend");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("backend prints its port");
        Backend { child, port }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub(crate) async fn count(&self, path: &str) -> u64 {
        let addr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        let (_, body) = http(addr, "GET", "/count", "").await;
        let v: Value = serde_json::from_str(&body).unwrap();
        v[path].as_u64().unwrap_or(0)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn token(claims: Value) -> String {
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

/// One shard (so a slow hook would stall the very shard the other client is on), tokens by
/// [`SECRET`], publishing by API key, `challenge_{id}` decided by `url`, `trades.*` public.
fn server(url: &str, tweak: impl FnOnce(&mut HooksConfig)) -> TestServer {
    let url: Arc<str> = url.into();
    TestServer::start(move |c: &mut Config| {
        c.shards = 1;
        let mut a = AccessConfig {
            api_keys: vec![API_KEY.into()],
            ..AccessConfig::default()
        };
        a.jwt.hs256_secret = Some(SECRET.as_bytes().to_vec());
        c.access = a;
        c.rules = ChannelRules::new(vec![
            ChannelRule::new(
                "challenge_{id}",
                ChannelPolicy::stream(100).with_access(ChannelAccess::Hook),
            )
            .unwrap(),
            ChannelRule::new("trades.*", ChannelPolicy::stream(10)).unwrap(),
        ]);
        c.hooks.subscribe = vec![("challenge_{id}".into(), url)];
        tweak(&mut c.hooks);
    })
}

async fn connect(srv: &TestServer, sub: &str) -> Client {
    Client::connect_url(&srv.url(&format!("?token={}", user(sub))), false).await
}

/// The answer to subscribing `channel`: `subscribed` or the error code and message.
async fn join(c: &mut Client, channel: &str) -> (String, String) {
    c.send(json!({"op":"subscribe","id":1,"channels":[channel]}))
        .await;
    loop {
        let v = c.recv().await;
        match v["type"].as_str() {
            Some("subscribed") => return ("subscribed".into(), String::new()),
            Some("error") => {
                return (
                    v["code"].as_str().unwrap().into(),
                    v["message"].as_str().unwrap().into(),
                )
            }
            _ => {}
        }
    }
}

async fn publish(srv: &TestServer, channel: &str, n: u64) {
    let body = json!({"channel": channel, "event": "equity_updated", "data": {"n": n}});
    let (st, b) = http_with(
        srv.addr,
        "POST",
        "/api/publish",
        &[("X-Api-Key", API_KEY)],
        &body.to_string(),
    )
    .await;
    assert_eq!(st, 200, "{b}");
}

#[tokio::test]
async fn a_subscribe_hook_decides_challenge_rooms_and_answers_are_cached() {
    let backend = Backend::start();
    let srv = server(&backend.url("/subscribe"), |_| {});
    let mut u42 = connect(&srv, "42").await;
    let mut u43 = connect(&srv, "43").await;
    assert_eq!(join(&mut u42, "challenge_7").await.0, "subscribed");
    assert_eq!(
        join(&mut u42, "challenge_8").await,
        ("forbidden".into(), "Access denied".into())
    );
    assert_eq!(join(&mut u43, "challenge_7").await.0, "forbidden");
    assert_eq!(backend.count("subscribe").await, 3);
    // Only the owner receives the room's events.
    u43.subscribe(&["trades.M"]).await;
    publish(&srv, "challenge_7", 1).await;
    publish(&srv, "trades.M", 2).await;
    let ev = u42.expect_type("event").await;
    assert_eq!(ev["channel"], "challenge_7");
    assert_eq!(u43.expect_type("event").await["channel"], "trades.M");
    // A second connection of user 42 gets the cached answer: the backend is not asked.
    let mut again = connect(&srv, "42").await;
    assert_eq!(join(&mut again, "challenge_7").await.0, "subscribed");
    assert_eq!(backend.count("subscribe").await, 3);
    let (_, m) = http(srv.addr, "GET", "/metrics", "").await;
    assert!(m.contains("quotecast_hook_cache_hits_total 1"), "{m}");
    assert!(
        m.contains("quotecast_hook_calls_total{outcome=\"ok\"} 3"),
        "{m}"
    );
}

#[tokio::test]
async fn without_the_cache_every_subscribe_asks_the_backend() {
    let backend = Backend::start();
    let srv = server(&backend.url("/subscribe"), |h| h.cache_ttl = Duration::ZERO);
    let mut c = connect(&srv, "42").await;
    for _ in 0..2 {
        assert_eq!(join(&mut c, "challenge_7").await.0, "subscribed");
    }
    assert_eq!(backend.count("subscribe").await, 2);
}

#[tokio::test]
async fn a_backend_that_is_down_gives_a_clear_error_and_opens_the_breaker() {
    let backend = Backend::start();
    let url = backend.url("/subscribe");
    drop(backend);
    let srv = server(&url, |h| h.breaker_failures = 2);
    let mut c = connect(&srv, "42").await;
    for _ in 0..2 {
        assert_eq!(
            join(&mut c, "challenge_7").await,
            (
                "backend_unavailable".into(),
                "the backend could not be reached".into()
            )
        );
    }
    assert_eq!(
        join(&mut c, "challenge_7").await,
        (
            "backend_unavailable".into(),
            "the backend is failing; not asked for a few seconds".into()
        )
    );
    // The connection lives on.
    c.send(json!({"op":"ping","id":9})).await;
    c.expect_type("pong").await;
    let (_, m) = http(srv.addr, "GET", "/metrics", "").await;
    assert!(
        m.contains("quotecast_hook_calls_total{outcome=\"failed\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("quotecast_hook_calls_total{outcome=\"rejected\"} 1"),
        "{m}"
    );
}

/// The hook call waits on its own task: while the backend sleeps past the deadline, another
/// client on the same (single) shard keeps receiving events.
#[tokio::test]
async fn a_slow_backend_times_out_without_stalling_the_shard() {
    let backend = Backend::start();
    let srv = server(&backend.url("/slow"), |h| {
        h.timeout = Duration::from_millis(1500)
    });
    let mut waiting = connect(&srv, "42").await;
    let mut other = connect(&srv, "43").await;
    other.subscribe(&["trades.LIVE"]).await;
    waiting
        .send(json!({"op":"subscribe","id":1,"channels":["challenge_7"]}))
        .await;
    // The backend has the call (it counts on arrival) before we publish.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while backend.count("slow").await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hook was never called"
        );
        tokio::task::yield_now().await;
    }
    publish(&srv, "trades.LIVE", 1).await;
    assert_eq!(other.expect_type("event").await["channel"], "trades.LIVE");
    // ...while the hook call was still pending: its answer has not come yet.
    assert!(
        tokio::time::timeout(Duration::from_millis(1), waiting.next())
            .await
            .is_err(),
        "the subscribe was answered before the other client's event"
    );
    let e = waiting.expect_type("error").await;
    assert_eq!(
        (e["code"].as_str(), e["message"].as_str()),
        (
            Some("backend_unavailable"),
            Some("the backend did not answer in time")
        )
    );
}

/// seeds/001's `join_challenge` as a client op the server forwards to the rpc hook: the
/// backend's answer reaches the client and subscribes (or unsubscribes) the connection.
#[tokio::test]
async fn the_rpc_hook_forwards_unknown_ops_and_applies_the_answer() {
    let backend = Backend::start();
    let rpc: Arc<str> = backend.url("/rpc").into();
    let srv = TestServer::start(move |c: &mut Config| {
        let mut a = AccessConfig {
            api_keys: vec![API_KEY.into()],
            ..AccessConfig::default()
        };
        a.jwt.hs256_secret = Some(SECRET.as_bytes().to_vec());
        c.access = a;
        // Only the backend opens challenge rooms: no token grants them, so a direct
        // subscribe is forbidden.
        c.rules = ChannelRules::new(vec![ChannelRule::new(
            "challenge_{id}",
            ChannelPolicy::stream(100).with_access(ChannelAccess::Grant),
        )
        .unwrap()]);
        c.hooks.rpc = Some(rpc);
    });
    let mut c = connect(&srv, "42").await;
    assert_eq!(join(&mut c, "challenge_7").await.0, "forbidden");
    c.send(json!({"op":"join_challenge","id":7,"challenge_id":7}))
        .await;
    let r = c.expect_type("rpc").await;
    assert_eq!(
        r,
        json!({"type":"rpc","id":7,"op":"join_challenge","result":{"joined":"7"}})
    );
    assert_eq!(c.expect_type("subscribed").await["channel"], "challenge_7");
    c.send(json!({"op":"join_challenge","id":8,"challenge_id":8}))
        .await;
    let e = c.expect_type("error").await;
    assert_eq!(
        (e["id"].as_i64(), e["code"].as_str(), e["message"].as_str()),
        (Some(8), Some("forbidden"), Some("Access denied"))
    );
    publish(&srv, "challenge_7", 1).await;
    assert_eq!(c.expect_type("event").await["channel"], "challenge_7");
    c.send(json!({"op":"leave_challenge","id":9,"challenge_id":7}))
        .await;
    assert_eq!(
        c.expect_type("unsubscribed").await["channels"],
        json!(["challenge_7"])
    );
    assert_eq!(c.expect_type("rpc").await["id"], 9);
    c.send(json!({"op":"teleport","id":10})).await;
    let e = c.expect_type("error").await;
    assert_eq!(
        (e["code"].as_str(), e["message"].as_str()),
        (Some("rpc_unknown"), Some("no op teleport"))
    );
    // Before authenticating: refused without asking the backend.
    let calls = backend.count("rpc").await;
    let mut anon = Client::upgrade(srv.url("")).await;
    anon.expect_type("welcome").await;
    anon.send(json!({"op":"join_challenge","id":1,"challenge_id":7}))
        .await;
    assert_eq!(anon.expect_type("error").await["code"], "unauthorized");
    assert_eq!(backend.count("rpc").await, calls);
}

/// The connect hook also gets the upgrade request's cookie: a browser with a session
/// cookie is authenticated (and subscribed) without sending anything; an unknown cookie
/// closes nothing and the client can still authenticate with `auth` data.
#[tokio::test]
async fn the_connect_hook_authenticates_a_session_cookie() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let backend = Backend::start();
    let url: Arc<str> = backend.url("/connect").into();
    let srv = TestServer::start(move |c: &mut Config| {
        c.access = AccessConfig::default();
        c.rules = ChannelRules::new(vec![ChannelRule::new(
            "user:{user}",
            ChannelPolicy::stream(10).with_access(ChannelAccess::Owner),
        )
        .unwrap()]);
        c.hooks.connect = Some(url);
    });
    let mut req = srv.url("").into_client_request().unwrap();
    req.headers_mut()
        .insert("Cookie", "theme=dark; sid=s-123".parse().unwrap());
    let mut c = Client::upgrade(req).await;
    c.expect_type("welcome").await;
    assert_eq!(c.expect_type("authenticated").await["user"], "user-123");
    assert_eq!(
        c.expect_type("subscribed").await["channel"],
        "user:user-123"
    );
    let mut req = srv.url("").into_client_request().unwrap();
    req.headers_mut()
        .insert("Cookie", "sid=nope".parse().unwrap());
    let mut d = Client::upgrade(req).await;
    d.expect_type("welcome").await;
    // The refused cookie's answer has come back (the backend counted it) and closed nothing.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while backend.count("connect").await < 2 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::task::yield_now().await;
    }
    d.send(json!({"op":"auth","id":1,"data":{"sessionID":"s-456","userId":"user-456"}}))
        .await;
    assert_eq!(d.expect_type("authenticated").await["user"], "user-456");
}
