//! Cluster mode: several real `quotecast` processes sharing one private `redis-server`.
//! Cross-node delivery and ordering, recovery from Redis history on a fresh node, Redis
//! outages (with and without data loss, or rewound to an older snapshot), node failover,
//! presence and the cluster-wide per-user connection limit.
//!
//! Each node's log is kept in `$CARGO_TARGET_TMPDIR/cluster-<test>-<node>.log`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::util::*;

const SECRET: &str = "cluster-test-secret";

/// Bound for waits that include Redis reconnect backoff (up to 3 s), presence TTL expiry or a
/// scenario of several phases on a loaded machine: only a hang should hit it.
const SLOW: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn log_path(test: &str, id: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cluster-{test}-{id}.log"))
}

/// The nodes' API key (presence is for operators).
const CLUSTER_API_KEY: &str = "cluster-test-key";

/// One cluster node: the real binary on an ephemeral port, anonymous subscribe and publish,
/// two shards, its stderr in [`log_path`]; returns once `/health` says it reached Redis.
async fn node(redis: &RedisServer, test: &str, id: &str, extra: &[&str]) -> ServerProcess {
    let n = spawn_node(redis, test, id, extra);
    wait_health(n.addr, "up", TIMEOUT).await;
    n
}

/// Like [`node`], but returns as soon as the node listens.
fn spawn_node(redis: &RedisServer, test: &str, id: &str, extra: &[&str]) -> ServerProcess {
    let url = redis.url();
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "2",
        "--allow-anonymous",
        "--anonymous-publish",
        "--api-key",
        CLUSTER_API_KEY,
        "--redis",
        &url,
        "--node-id",
        id,
    ];
    args.extend_from_slice(extra);
    let mut cmd = ServerProcess::command(&args);
    let log = log_path(test, id);
    cmd.stderr(std::fs::File::create(&log).expect("node log file"));
    ServerProcess::start(&mut cmd)
}

fn ws_url(n: &ServerProcess, query: &str) -> String {
    format!("ws://{}/ws{}", n.addr, query)
}

async fn connect(n: &ServerProcess) -> Client {
    Client::connect_url(&ws_url(n, ""), false).await
}

async fn connect_fmt(n: &ServerProcess, msgpack: bool) -> Client {
    if msgpack {
        Client::connect_url(&ws_url(n, "?format=msgpack"), true).await
    } else {
        connect(n).await
    }
}

/// Subscribes to one channel (optionally with a `since` position) and returns its ack.
async fn subscribe_one(c: &mut Client, channel: &str, since: Option<Value>) -> Value {
    let mut op = json!({"op":"subscribe","id":"sub","channels":[channel]});
    if let Some(s) = since {
        op["since"] = json!({ channel: s });
    }
    c.send(op).await;
    let ack = c.recv().await;
    assert_eq!(ack["type"], "subscribed", "expected an ack, got {ack}");
    assert_eq!(ack["channel"], channel, "{ack}");
    assert_eq!(ack["id"], "sub", "{ack}");
    ack
}

fn epoch_of(ack: &Value) -> String {
    ack["epoch"]
        .as_str()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| panic!("ack without an epoch: {ack}"))
        .to_string()
}

fn seq_of(v: &Value) -> u64 {
    v["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {v}"))
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(seq_of).collect()
}

/// Reads events until the one with seq `upto`; any other frame (error, resync, close) is a
/// failure.
async fn events_until(c: &mut Client, upto: u64) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let v = match c.next().await {
            Ok(v) => v,
            Err(closed) => panic!(
                "closed while waiting for seq {upto} (last {:?}): {closed:?}",
                out.last().map(seq_of)
            ),
        };
        assert_eq!(
            v["type"],
            "event",
            "unexpected frame while waiting for seq {upto} (last {:?}): {v}",
            out.last().map(seq_of)
        );
        let s = seq_of(&v);
        out.push(v);
        if s >= upto {
            return out;
        }
    }
}

/// Publishes a marker event on `channel` (through `addr`), to be published after everything
/// a test waited for; returns its seq.
async fn publish_marker(addr: std::net::SocketAddr, channel: &str) -> u64 {
    let seqs = publish_http(addr, &[ev(channel, "tick", json!({"marker": true}))]).await;
    assert_eq!(seqs.len(), 1, "{seqs:?}");
    seqs[0]
}

/// Nothing more was pending (no late duplicate, no stray frame): the next frame is the marker
/// event `marker`, which went the same way as the events before it, and nothing is queued
/// behind it. A positive barrier, where a pause would only hope to be long enough.
async fn assert_quiet(c: &mut Client, who: &str, marker: u64) {
    let v = c.recv().await;
    assert!(
        v["type"] == "event" && v["data"]["marker"] == true && seq_of(&v) == marker,
        "{who}: expected the marker event (seq {marker}) next, got {v}"
    );
    let extra = c.sync().await;
    assert!(
        extra.is_empty(),
        "{who}: unexpected extra frames: {extra:?}"
    );
}

/// One WS publish with an id; returns the cluster seq from the ack.
async fn publish_ws(c: &mut Client, channel: &str, data: Value) -> u64 {
    c.send(json!({"op":"publish","id":"p","channel":channel,"event":"tick","data":data}))
        .await;
    let v = c.recv().await;
    assert_eq!(v["type"], "published", "{v}");
    seq_of(&v)
}

/// `"up"`/`"down"` from the node's `/health` JSON, or None when the body has no `redis` key.
async fn health_redis(addr: std::net::SocketAddr) -> (u16, Option<String>, String) {
    let (st, body) = http(addr, "GET", "/health", "").await;
    let state = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["redis"].as_str().map(String::from));
    (st, state, body)
}

/// Polls `/health` until it reports `redis: want`; panics with the last body after `within`.
async fn wait_health(addr: std::net::SocketAddr, want: &str, within: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        let (st, state, body) = health_redis(addr).await;
        if state.as_deref() == Some(want) {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < within,
            "{addr}: /health never said redis {want:?} within {within:?}; last: {st} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of `quotecast_redis_up` on the node's `/metrics`.
async fn redis_up_metric(addr: std::net::SocketAddr) -> f64 {
    let (st, body) = http(addr, "GET", "/metrics", "").await;
    assert_eq!(st, 200, "{body}");
    let samples = quotecast::metrics::parse_exposition(&body).unwrap_or_else(|e| panic!("{e}"));
    let s: Vec<_> = samples
        .iter()
        .filter(|s| s.name == "quotecast_redis_up")
        .collect();
    assert_eq!(s.len(), 1, "one quotecast_redis_up sample in:\n{body}");
    s[0].value
}

async fn presence(addr: std::net::SocketAddr, query: &str) -> Value {
    let path = format!("/api/presence?{query}");
    let (st, body) = http_with(addr, "GET", &path, &[("X-Api-Key", CLUSTER_API_KEY)], "").await;
    assert_eq!(st, 200, "GET /api/presence?{query}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Polls `/api/presence?{query}` until `field` is `want`; returns how long that took.
async fn wait_presence(
    addr: std::net::SocketAddr,
    query: &str,
    field: &str,
    want: u64,
    within: Duration,
) -> Duration {
    let t0 = Instant::now();
    loop {
        let v = presence(addr, query).await;
        if v[field].as_u64() == Some(want) {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < within,
            "{addr}: presence?{query} never had {field} = {want} within {within:?}; last {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `cond` until it holds; panics, naming `what`, after `within`.
async fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn user_token(sub: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": sub, "exp": quotecast::auth::unix_now() + 600}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// A connection that must be refused by the per-user limit: closed with 4010, at most a
/// welcome before the close.
async fn expect_refused_4010(n: &ServerProcess, query: &str) {
    let mut c = Client::upgrade(ws_url(n, query)).await;
    let (seen, closed) = c.until_close().await;
    assert_eq!(closed.code, 4010, "{closed:?} after {seen:?}");
    assert!(
        seen.iter().all(|v| v["type"] == "welcome"),
        "only a welcome may precede the 4010: {seen:?}"
    );
}

/// A connection that the per-user limit accepted: welcomed, and still open once the
/// cluster-wide check has run (the node's presence for `user` reached `total`, which the
/// admission script writes before it compares against the limit).
async fn expect_accepted(n: &ServerProcess, query: &str, user: &str, total: u64) -> Client {
    let mut c = Client::connect_url(&ws_url(n, query), false).await;
    wait_presence(n.addr, &format!("user={user}"), "connections", total, SLOW).await;
    c.send(json!({"op":"ping","id":"alive"})).await;
    match c.next().await {
        Ok(v) => assert_eq!(v["type"], "pong", "{v}"),
        Err(closed) => panic!("an allowed connection was closed: {closed:?}"),
    }
    c
}

/// Reads frames until an event whose data has `"final": true`; quiet stretches (an outage)
/// are fine, a close is not.
async fn collect_until_final(
    mut c: Client,
    who: String,
    limit: Duration,
    events_seen: Arc<AtomicU64>,
) -> Vec<Value> {
    let deadline = Instant::now() + limit;
    let mut seen: Vec<Value> = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{who}: no final event within {limit:?}; last frames {:?}",
            &seen[seen.len().saturating_sub(5)..]
        );
        // Shorter than Client::next's own timeout, so that silence is not a failure.
        match tokio::time::timeout(left.min(Duration::from_secs(5)), c.next()).await {
            Err(_) => continue,
            Ok(Err(closed)) => panic!(
                "{who}: connection closed: {closed:?}; last frames {:?}",
                &seen[seen.len().saturating_sub(5)..]
            ),
            Ok(Ok(v)) => {
                if v["type"] == "event" {
                    events_seen.fetch_add(1, Ordering::SeqCst);
                }
                let fin = v["type"] == "event" && v["data"]["final"] == true;
                seen.push(v);
                if fin {
                    return seen;
                }
            }
        }
    }
}

/// One event as a subscriber saw it: the epoch it belongs to (from the last ack or resync),
/// its seq and the publisher's counter `i`.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    epoch: String,
    seq: u64,
    i: u64,
}

/// Checks one subscriber's frames on `channel`: events are contiguous within an epoch, and
/// every epoch change is announced by an unsolicited `subscribed` frame with `resync: true`
/// (and `recovered: false`, a new epoch, no id) before any event of the new epoch.
fn walk_stream(
    who: &str,
    channel: &str,
    frames: &[Value],
    epoch0: &str,
    seq0: u64,
) -> (Vec<Seen>, Vec<Value>) {
    let mut epoch = epoch0.to_string();
    let mut last = seq0;
    let mut events = Vec::new();
    let mut resyncs = Vec::new();
    for f in frames {
        match f["type"].as_str() {
            Some("event") => {
                assert_eq!(f["channel"], channel, "{who}: {f}");
                let s = seq_of(f);
                assert_eq!(
                    s,
                    last + 1,
                    "{who}: seq not contiguous in epoch {epoch} (last {last}): {f}"
                );
                last = s;
                events.push(Seen {
                    epoch: epoch.clone(),
                    seq: s,
                    i: f["data"]["i"]
                        .as_u64()
                        .unwrap_or_else(|| panic!("{who}: {f}")),
                });
            }
            Some("subscribed") => {
                assert_eq!(f["channel"], channel, "{who}: {f}");
                assert_eq!(
                    f["resync"], true,
                    "{who}: unsolicited ack without resync: {f}"
                );
                assert_eq!(f["recovered"], false, "{who}: {f}");
                assert!(f.get("id").is_none(), "{who}: a resync has no id: {f}");
                assert_eq!(f["kind"], "stream", "{who}: {f}");
                let e = epoch_of(f);
                assert_ne!(e, epoch, "{who}: resync without a new epoch: {f}");
                epoch = e;
                last = seq_of(f);
                resyncs.push(f.clone());
            }
            _ => panic!("{who}: unexpected frame {f}"),
        }
    }
    (events, resyncs)
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn cluster_cross_node_delivery() {
    const T: &str = "cross_node_delivery";
    let redis = RedisServer::start();
    let mut nodes = Vec::new();
    for id in ["a", "b", "c"] {
        nodes.push(node(&redis, T, id, &[]).await);
    }
    let ch = "trades.XN";
    let mut subs = Vec::new();
    let mut epochs = Vec::new();
    for (k, n) in nodes.iter().enumerate() {
        for mp in [false, true] {
            let mut c = connect_fmt(n, mp).await;
            let ack = subscribe_one(&mut c, ch, None).await;
            assert_eq!(ack["seq"], 0, "{ack}");
            assert_eq!(ack["kind"], "stream", "{ack}");
            epochs.push(epoch_of(&ack));
            subs.push((format!("node {k} msgpack={mp}"), c));
        }
    }
    assert!(
        epochs.iter().all(|e| *e == epochs[0]),
        "one epoch per channel on every node: {epochs:?}"
    );

    // 30 single WS publishes on a, one HTTP batch of 30 on b, one msgpack WS batch on c: one
    // sequence across the cluster.
    let mut p = connect(&nodes[0]).await;
    for i in 0..30u64 {
        assert_eq!(publish_ws(&mut p, ch, json!({ "i": i })).await, i + 1);
    }
    let evs: Vec<Value> = (30..60u64)
        .map(|i| ev(ch, "tick", json!({ "i": i })))
        .collect();
    assert_eq!(
        publish_http(nodes[1].addr, &evs).await,
        (31..=60).collect::<Vec<u64>>()
    );
    let mut pc = connect_fmt(&nodes[2], true).await;
    let evs: Vec<Value> = (60..90u64)
        .map(|i| ev(ch, "tick", json!({ "i": i })))
        .collect();
    pc.send(json!({"op":"publish","id":7,"events":evs})).await;
    let ack = pc.expect_type("published").await;
    assert_eq!(ack["seqs"], json!((61..=90).collect::<Vec<u64>>()), "{ack}");

    let mut reference: Option<Vec<Value>> = None;
    for (who, c) in &mut subs {
        let evs = events_until(c, 90).await;
        assert_eq!(seqs(&evs), (1..=90).collect::<Vec<u64>>(), "{who}");
        for e in &evs {
            assert_eq!(e["channel"], ch, "{who}: {e}");
            assert_eq!(e["event"], "tick", "{who}: {e}");
            assert_eq!(e["data"]["i"], seq_of(e) - 1, "{who}: {e}");
            assert!(e["ts"].as_u64().is_some(), "{who}: {e}");
        }
        // Same (seq, event, data) everywhere.
        let stripped: Vec<Value> = evs
            .iter()
            .map(|e| json!([e["seq"], e["event"], e["data"]]))
            .collect();
        match &reference {
            None => reference = Some(stripped),
            Some(r) => assert_eq!(&stripped, r, "{who}"),
        }
    }
    let marker = publish_marker(nodes[1].addr, ch).await;
    assert_eq!(marker, 91);
    for (who, c) in &mut subs {
        assert_quiet(c, who, marker).await;
    }

    // A late subscriber on any node sees the cluster seq and the same epoch.
    for n in &nodes {
        let mut c = connect(n).await;
        let ack = subscribe_one(&mut c, ch, None).await;
        assert_eq!(ack["seq"], marker, "{ack}");
        assert_eq!(epoch_of(&ack), epochs[0], "{ack}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_ordering_with_concurrent_publishers() {
    const T: &str = "ordering";
    const PER: u64 = 500;
    let redis = RedisServer::start();
    let mut nodes = Vec::new();
    for id in ["a", "b", "c"] {
        nodes.push(node(&redis, T, id, &[]).await);
    }
    let ch = "trades.ORD";
    let mut subs = Vec::new();
    let mut epochs = Vec::new();
    for (k, mp) in [(0, false), (1, false), (2, false), (2, true)] {
        let mut c = connect_fmt(&nodes[k], mp).await;
        let ack = subscribe_one(&mut c, ch, None).await;
        assert_eq!(ack["seq"], 0, "{ack}");
        epochs.push(epoch_of(&ack));
        subs.push((format!("node {k} msgpack={mp}"), c));
    }
    assert!(epochs.iter().all(|e| *e == epochs[0]), "{epochs:?}");

    // Publisher a: PER single publishes on node a, pipelined (acks read afterwards).
    let mut pa = connect(&nodes[0]).await;
    let ta = tokio::spawn(async move {
        for i in 0..PER {
            pa.send(
                json!({"op":"publish","id":i,"channel":ch,"event":"tick","data":{"p":"a","i":i}}),
            )
            .await;
        }
        let mut out = Vec::new();
        for i in 0..PER {
            let v = pa.recv().await;
            assert_eq!(v["type"], "published", "publisher a: {v}");
            assert_eq!(v["id"], i, "publisher a: acks in op order: {v}");
            out.push(seq_of(&v));
        }
        out
    });
    // Publisher b: the same number of events on node b, in batches of 10.
    let mut pb = connect(&nodes[1]).await;
    let tb = tokio::spawn(async move {
        for b in 0..PER / 10 {
            let evs: Vec<Value> = (0..10)
                .map(|k| ev(ch, "tick", json!({"p":"b","i": b * 10 + k})))
                .collect();
            pb.send(json!({"op":"publish","id":b,"events":evs})).await;
        }
        let mut out = Vec::new();
        for b in 0..PER / 10 {
            let v = pb.recv().await;
            assert_eq!(v["type"], "published", "publisher b: {v}");
            assert_eq!(v["id"], b, "publisher b: acks in op order: {v}");
            let s = v["seqs"].as_array().expect("seqs");
            assert_eq!(s.len(), 10, "{v}");
            out.extend(s.iter().map(|s| s.as_u64().unwrap()));
        }
        out
    });
    let (sa, sb) = (ta.await.unwrap(), tb.await.unwrap());

    // Each publisher's events got increasing seqs, and together they are 1..=2*PER.
    assert!(sa.windows(2).all(|w| w[0] < w[1]), "publisher a: {sa:?}");
    assert!(sb.windows(2).all(|w| w[0] < w[1]), "publisher b: {sb:?}");
    let mut by_seq: HashMap<u64, (&str, u64)> = HashMap::new();
    for (i, s) in sa.iter().enumerate() {
        assert!(
            by_seq.insert(*s, ("a", i as u64)).is_none(),
            "seq {s} twice"
        );
    }
    for (i, s) in sb.iter().enumerate() {
        assert!(
            by_seq.insert(*s, ("b", i as u64)).is_none(),
            "seq {s} twice"
        );
    }
    let mut all: Vec<u64> = by_seq.keys().copied().collect();
    all.sort_unstable();
    assert_eq!(all, (1..=2 * PER).collect::<Vec<u64>>());
    let interleaved = sa.iter().filter(|s| **s > sb[0]).count();
    eprintln!("ordering: {interleaved} of publisher a's events came after publisher b's first");

    // Every subscriber, on every node, sees 1..=2*PER with exactly the acked event at each
    // seq: the same order everywhere.
    for (who, c) in &mut subs {
        let evs = events_until(c, 2 * PER).await;
        assert_eq!(seqs(&evs), (1..=2 * PER).collect::<Vec<u64>>(), "{who}");
        for e in &evs {
            let (p, i) = by_seq[&seq_of(e)];
            assert_eq!(
                (e["data"]["p"].as_str(), e["data"]["i"].as_u64()),
                (Some(p), Some(i)),
                "{who}: {e}"
            );
        }
    }
    let marker = publish_marker(nodes[1].addr, ch).await;
    assert_eq!(marker, 2 * PER + 1);
    for (who, c) in &mut subs {
        assert_quiet(c, who, marker).await;
    }
}

#[tokio::test]
async fn cluster_recovery_on_fresh_node() {
    const T: &str = "recovery";
    let redis = RedisServer::start();
    let a = node(&redis, T, "a", &[]).await;
    let ch = "trades.REC";
    let long = "trades.LONG";

    let mut sa = connect(&a).await;
    let ack = subscribe_one(&mut sa, ch, None).await;
    let epoch = epoch_of(&ack);
    let evs: Vec<Value> = (0..20u64)
        .map(|i| ev(ch, "tick", json!({ "i": i })))
        .collect();
    assert_eq!(
        publish_http(a.addr, &evs).await,
        (1..=20).collect::<Vec<u64>>()
    );
    // A channel past its history window (trades.*: 1000 events).
    for (from, to) in [(0u64, 1000u64), (1000, 1500)] {
        let evs: Vec<Value> = (from..to)
            .map(|i| ev(long, "tick", json!({ "i": i })))
            .collect();
        assert_eq!(
            publish_http(a.addr, &evs).await,
            (from + 1..=to).collect::<Vec<u64>>()
        );
    }
    assert_eq!(
        seqs(&events_until(&mut sa, 20).await),
        (1..=20).collect::<Vec<u64>>()
    );

    // The history lives in Redis.
    match redis.cmd(&["DBSIZE"]) {
        RespValue::Int(n) => assert!(n > 0, "nothing stored in redis"),
        r => panic!("DBSIZE: {r:?}"),
    }
    // Node b starts after all of that: it knows the channel only from Redis.
    let b = node(&redis, T, "b", &[]).await;
    let mut c = connect(&b).await;
    let ack = subscribe_one(&mut c, ch, Some(json!({"seq":5,"epoch":epoch}))).await;
    assert_eq!(ack["recovered"], true, "{ack}");
    assert_eq!(ack["seq"], 20, "{ack}");
    assert_eq!(ack["kind"], "stream", "{ack}");
    assert_eq!(epoch_of(&ack), epoch, "{ack}");
    let replay = events_until(&mut c, 20).await;
    assert_eq!(seqs(&replay), (6..=20).collect::<Vec<u64>>());
    for e in &replay {
        assert_eq!(e["data"]["i"], seq_of(e) - 1, "{e}");
        assert_eq!(e["event"], "tick", "{e}");
    }
    // No late duplicate: the next event c sees is the live seq 21, checked below.

    // The wrong epoch is never mistaken for a position: no replay.
    let mut w = connect(&b).await;
    let ack = subscribe_one(
        &mut w,
        ch,
        Some(json!({"seq":5,"epoch":"0123456789abcdef"})),
    )
    .await;
    assert_eq!(ack["recovered"], false, "{ack}");
    assert_eq!(ack["seq"], 20, "{ack}");
    assert_eq!(epoch_of(&ack), epoch, "{ack}");
    assert!(w.sync().await.is_empty(), "no replay after recovered:false");

    // A bare seq (no epoch) and an up-to-date position.
    let mut plain = connect(&b).await;
    let ack = subscribe_one(&mut plain, ch, Some(json!(18))).await;
    assert_eq!(ack["recovered"], true, "{ack}");
    assert_eq!(seqs(&events_until(&mut plain, 20).await), vec![19, 20]);
    let mut current = connect(&b).await;
    let ack = subscribe_one(&mut current, ch, Some(json!({"seq":20,"epoch":epoch}))).await;
    assert_eq!(ack["recovered"], true, "{ack}");
    assert!(current.sync().await.is_empty());

    // The history window on a fresh node: 600 is inside the last 1000, 10 is not.
    let mut l0 = connect(&b).await;
    let ack = subscribe_one(&mut l0, long, None).await;
    assert_eq!(ack["seq"], 1500, "{ack}");
    let long_epoch = epoch_of(&ack);
    let mut l1 = connect(&b).await;
    let ack = subscribe_one(&mut l1, long, Some(json!({"seq":600,"epoch":long_epoch}))).await;
    assert_eq!(ack["recovered"], true, "{ack}");
    let replay = events_until(&mut l1, 1500).await;
    assert_eq!(seqs(&replay), (601..=1500).collect::<Vec<u64>>());
    assert!(replay.iter().all(|e| e["data"]["i"] == seq_of(e) - 1));
    let mut l2 = connect(&b).await;
    let ack = subscribe_one(&mut l2, long, Some(json!({"seq":10,"epoch":long_epoch}))).await;
    assert_eq!(ack["recovered"], false, "{ack}");
    assert_eq!(ack["seq"], 1500, "{ack}");
    assert!(
        l2.sync().await.is_empty(),
        "no replay after recovered:false"
    );

    // Live events continue on b after the replay, published on a.
    let mut p = connect(&a).await;
    assert_eq!(publish_ws(&mut p, ch, json!({"i": 20})).await, 21);
    for (who, cl) in [
        ("since", &mut c),
        ("wrong epoch", &mut w),
        ("plain", &mut plain),
        ("current", &mut current),
        ("a", &mut sa),
    ] {
        let e = events_until(cl, 21).await;
        assert_eq!(seqs(&e), vec![21], "{who}");
        assert_eq!(e[0]["data"]["i"], 20, "{who}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_redis_restart_mid_stream() {
    const T: &str = "redis_restart";
    let mut redis = RedisServer::start();
    let a = node(&redis, T, "a", &[]).await;
    let b = node(&redis, T, "b", &[]).await;
    let ch = "trades.RR";
    assert_eq!(health_redis(a.addr).await.1.as_deref(), Some("up"));
    assert_eq!(redis_up_metric(b.addr).await, 1.0);

    let mut e1 = None;
    let mut readers = Vec::new();
    let mut reader_events = Vec::new();
    for (who, n, mp) in [
        ("a json", &a, false),
        ("b json", &b, false),
        ("b msgpack", &b, true),
    ] {
        let mut c = connect_fmt(n, mp).await;
        let ack = subscribe_one(&mut c, ch, None).await;
        assert_eq!(ack["seq"], 0, "{ack}");
        let e = epoch_of(&ack);
        assert_eq!(e1.get_or_insert_with(|| e.clone()), &e, "{who}");
        let seen = Arc::new(AtomicU64::new(0));
        reader_events.push(seen.clone());
        readers.push((
            who,
            // Bounds the whole scenario, only against a hang.
            tokio::spawn(collect_until_final(c, who.to_string(), SLOW * 4, seen)),
        ));
    }
    let e1 = e1.unwrap();
    // A channel that is quiet after the restart: its subscribers must still learn that its
    // history is gone, at the latest with its next event.
    let idle = "trades.IDLE";
    let mut idle_subs = Vec::new();
    for n in [&a, &b] {
        let mut c = connect(n).await;
        subscribe_one(&mut c, idle, None).await;
        idle_subs.push(c);
    }
    let evs: Vec<Value> = (0..3u64)
        .map(|i| ev(idle, "tick", json!({ "i": i })))
        .collect();
    assert_eq!(publish_http(a.addr, &evs).await, vec![1, 2, 3]);
    let mut idle_epoch = String::new();
    for c in &mut idle_subs {
        assert_eq!(seqs(&events_until(c, 3).await), vec![1, 2, 3]);
        let mut probe = connect(&a).await;
        idle_epoch = epoch_of(&subscribe_one(&mut probe, idle, None).await);
    }

    // The publisher (on a) publishes one event every 10 ms, retrying the same event on
    // `unavailable`, until told to stop; then a final marker.
    let stop = Arc::new(AtomicBool::new(false));
    let ok_after_outage = Arc::new(AtomicU64::new(0));
    let unavailable_seen = Arc::new(AtomicU64::new(0));
    let mut p = connect(&a).await;
    let publisher = {
        let stop = stop.clone();
        let ok_after = ok_after_outage.clone();
        let unavailable_seen = unavailable_seen.clone();
        tokio::spawn(async move {
            let mut acks: Vec<(u64, u64, bool)> = Vec::new(); // (i, seq, after an outage)
            let mut unavailable = 0u64;
            let mut i = 0u64;
            loop {
                let last = stop.load(Ordering::SeqCst);
                let data = if last {
                    json!({"i": i, "final": true})
                } else {
                    json!({ "i": i })
                };
                p.send(json!({"op":"publish","id":i,"channel":ch,"event":"tick","data":data}))
                    .await;
                let v = p.recv().await;
                match (v["type"].as_str(), v["code"].as_str()) {
                    (Some("published"), _) => {
                        assert_eq!(v["id"], i, "{v}");
                        acks.push((i, seq_of(&v), unavailable > 0));
                        if unavailable > 0 {
                            ok_after.fetch_add(1, Ordering::SeqCst);
                        }
                        i += 1;
                        if last {
                            return (acks, unavailable);
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    // `outcome_unknown`: sent on the connection to the killed Redis. It
                    // may have been sequenced before the crash (then it repeats across the
                    // epochs, which the checks below allow).
                    (Some("error"), Some("unavailable" | "outcome_unknown")) => {
                        assert_eq!(v["id"], i, "{v}");
                        unavailable += 1;
                        unavailable_seen.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    _ => panic!("publisher: unexpected reply {v}"),
                }
            }
        })
    };

    // Every reader has events of the first epoch before the outage.
    wait_until("events before the outage", SLOW, || {
        reader_events.iter().all(|n| n.load(Ordering::SeqCst) >= 5)
    })
    .await;
    redis.stop();
    let t_stop = Instant::now();
    for n in [&a, &b] {
        let took = wait_health(n.addr, "down", SLOW).await;
        eprintln!("redis_restart: {} saw redis down after {took:?}", n.addr);
    }
    assert_eq!(redis_up_metric(a.addr).await, 0.0);
    assert_eq!(redis_up_metric(b.addr).await, 0.0);
    let (st, body) = http(
        b.addr,
        "POST",
        "/api/publish",
        &ev("trades.RR2", "tick", json!(1)).to_string(),
    )
    .await;
    assert_eq!(st, 503, "HTTP publish while redis is down: {body}");
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    // `outcome_unknown` when it went out on b's connection to the killed Redis before b
    // saw that connection fail; never a success.
    assert!(
        v["error"]["code"] == "unavailable" || v["error"]["code"] == "outcome_unknown",
        "{body}"
    );
    // Subscribers' connections stay open through the outage.
    let mut bystander = connect(&b).await;
    bystander.send(json!({"op":"ping","id":1})).await;
    bystander.expect_type("pong").await;

    // An outage of at least 2 s, and long enough that the publisher was refused.
    tokio::time::sleep_until(t_stop + Duration::from_secs(2)).await;
    wait_until("the publisher sees `unavailable`", SLOW, || {
        unavailable_seen.load(Ordering::SeqCst) > 0
    })
    .await;
    redis.restart(); // empty: every channel's history and seq are gone
    let t_back = Instant::now();
    for n in [&a, &b] {
        let took = wait_health(n.addr, "up", SLOW).await;
        eprintln!("redis_restart: {} saw redis up after {took:?}", n.addr);
    }
    assert_eq!(redis_up_metric(a.addr).await, 1.0);
    assert_eq!(redis_up_metric(b.addr).await, 1.0);
    while ok_after_outage.load(Ordering::SeqCst) < 30 {
        assert!(
            t_back.elapsed() < SLOW,
            "publishing did not resume within {SLOW:?} of redis coming back ({} events)",
            ok_after_outage.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // HTTP publish works again too (another channel, so as not to disturb the stream).
    let (st, body) = http(
        b.addr,
        "POST",
        "/api/publish",
        &ev("trades.RR2", "tick", json!(2)).to_string(),
    )
    .await;
    assert_eq!(st, 200, "HTTP publish after the restart: {body}");
    stop.store(true, Ordering::SeqCst);
    let (acks, unavailable) = publisher.await.unwrap();
    assert!(
        unavailable > 0,
        "the publisher never saw `unavailable` during the outage"
    );
    let before: HashMap<u64, u64> = acks.iter().filter(|a| !a.2).map(|a| (a.1, a.0)).collect();
    let after: Vec<(u64, u64)> = acks.iter().filter(|a| a.2).map(|a| (a.1, a.0)).collect();
    let after_map: HashMap<u64, u64> = after.iter().copied().collect();
    assert!(
        after.windows(2).all(|w| w[0].0 < w[1].0),
        "seqs after the restart increase: {after:?}"
    );

    let mut final_epochs = Vec::new();
    for (who, h) in readers {
        let frames = h.await.unwrap();
        let (events, resyncs) = walk_stream(who, ch, &frames, &e1, 0);
        assert!(
            !resyncs.is_empty(),
            "{who}: redis lost everything, yet no resync frame arrived"
        );
        let last_epoch = events.last().unwrap().epoch.clone();
        assert_ne!(last_epoch, e1, "{who}: still in the old epoch");
        assert!(
            events.iter().any(|e| e.epoch == e1),
            "{who}: nothing arrived before the outage"
        );
        // The publisher's events in its order, never reordered; only a retry of an event
        // whose ack was lost in the crash may repeat, and only across epochs.
        for w in events.windows(2) {
            if w[0].epoch == w[1].epoch {
                assert!(w[0].i < w[1].i, "{who}: {w:?}");
            } else {
                assert!(w[0].i <= w[1].i, "{who}: {w:?}");
            }
        }
        for e in &events {
            if e.epoch == e1 {
                if let Some(i) = before.get(&e.seq) {
                    assert_eq!(*i, e.i, "{who}: old epoch event {e:?}");
                }
            } else if e.epoch == last_epoch {
                assert_eq!(
                    after_map.get(&e.seq),
                    Some(&e.i),
                    "{who}: a new-epoch event that was not acked so: {e:?}"
                );
            }
        }
        // Every event acked in the new epoch after this subscriber's resync point arrived.
        let resync_seq = seq_of(resyncs.last().unwrap());
        let got: Vec<(u64, u64)> = events
            .iter()
            .filter(|e| e.epoch == last_epoch)
            .map(|e| (e.seq, e.i))
            .collect();
        let want: Vec<(u64, u64)> = after
            .iter()
            .copied()
            .filter(|(s, _)| *s > resync_seq)
            .collect();
        assert_eq!(got, want, "{who}: events of the new epoch");
        eprintln!(
            "redis_restart: {who}: {} events, {} resyncs {:?}",
            events.len(),
            resyncs.len(),
            resyncs
        );
        final_epochs.push(last_epoch);
    }
    assert!(
        final_epochs.iter().all(|e| *e == final_epochs[0]),
        "every node agrees on the new epoch: {final_epochs:?}"
    );
    // The quiet channel: one event after the restart comes after a resync, never as if
    // nothing had happened.
    let (st, body) = http(
        a.addr,
        "POST",
        "/api/publish",
        &ev(idle, "tick", json!({"i": 3})).to_string(),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    for (k, c) in idle_subs.iter_mut().enumerate() {
        let mut frames = Vec::new();
        loop {
            let v = c.recv().await;
            let done = v["type"] == "event";
            frames.push(v);
            if done {
                break;
            }
        }
        let (events, resyncs) = walk_stream(&format!("idle {k}"), idle, &frames, &idle_epoch, 3);
        assert_eq!(resyncs.len(), 1, "idle {k}: {frames:?}");
        assert_eq!(events.len(), 1, "idle {k}: {frames:?}");
        assert_eq!(events[0].i, 3, "idle {k}: {frames:?}");
    }

    // A new subscriber on either node gets the new epoch.
    for n in [&a, &b] {
        let mut c = connect(n).await;
        let ack = subscribe_one(&mut c, ch, None).await;
        assert_eq!(epoch_of(&ack), final_epochs[0], "{ack}");
        assert_eq!(ack["seq"], after.last().unwrap().0, "{ack}");
    }
}

/// `quotecast_cluster_gap_fills_total` summed over `nodes`.
async fn gap_fills(nodes: &[&ServerProcess]) -> f64 {
    let mut fills = 0.0;
    for n in nodes {
        let (_, body) = http(n.addr, "GET", "/metrics", "").await;
        let samples = quotecast::metrics::parse_exposition(&body).unwrap();
        fills += samples
            .iter()
            .filter(|s| s.name == "quotecast_cluster_gap_fills_total")
            .map(|s| s.value)
            .sum::<f64>();
    }
    fills
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_pubsub_disconnect_is_filled_from_history() {
    const T: &str = "pubsub_disconnect";
    const N: u64 = 400;
    let redis = RedisServer::start();
    let a = node(&redis, T, "a", &[]).await;
    let b = node(&redis, T, "b", &[]).await;
    // The publisher's node has no subscribers: its link to Redis is not a pub/sub one, so it
    // keeps publishing while a and b resubscribe, and they miss events.
    let c = node(&redis, T, "c", &[]).await;
    let ch = "trades.PS";
    let mut subs = Vec::new();
    let mut epochs = Vec::new();
    for (who, n) in [("a", &a), ("b", &b)] {
        let mut c = connect(n).await;
        let ack = subscribe_one(&mut c, ch, None).await;
        epochs.push(epoch_of(&ack));
        subs.push((who, c));
    }
    assert_eq!(epochs[0], epochs[1]);

    // The publisher keeps going (at least N events) until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let mut p = connect(&c).await;
    let publisher = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut acks = Vec::new();
            let mut unavailable = 0;
            let mut i = 0u64;
            while i < N || !stop.load(Ordering::SeqCst) {
                p.send(json!({"op":"publish","id":i,"channel":ch,"event":"tick","data":{"i":i}}))
                    .await;
                let v = p.recv().await;
                match (v["type"].as_str(), v["code"].as_str()) {
                    (Some("published"), _) => {
                        acks.push((seq_of(&v), i));
                        i += 1;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    // `outcome_unknown`: sent on the connection to the killed Redis. It
                    // may have been sequenced before the crash (then it repeats across the
                    // epochs, which the checks below allow).
                    (Some("error"), Some("unavailable" | "outcome_unknown")) => {
                        unavailable += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    _ => panic!("publisher: unexpected reply {v}"),
                }
            }
            (acks, unavailable)
        }
    });
    // Drop the nodes' pub/sub connections at least five times while events flow, and until
    // a node had to fill a gap from history (events were published while it was cut off);
    // the data stays.
    let t0 = Instant::now();
    let mut killed = 0;
    let mut rounds = 0;
    while rounds < 5 || gap_fills(&[&a, &b]).await == 0.0 {
        assert!(
            t0.elapsed() < SLOW,
            "no gap was filled from history after {rounds} rounds ({killed} pub/sub connections killed)"
        );
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(120)).await;
        let port = redis.port;
        let r = tokio::task::spawn_blocking(move || {
            redis_cmd(port, &["CLIENT", "KILL", "TYPE", "pubsub"])
        })
        .await
        .unwrap()
        .expect("CLIENT KILL");
        if let RespValue::Int(k) = r {
            killed += k;
        }
    }
    stop.store(true, Ordering::SeqCst);
    let (acks, unavailable) = publisher.await.unwrap();
    eprintln!(
        "pubsub_disconnect: killed {killed} pub/sub connections in {rounds} rounds; publisher saw {unavailable} unavailable"
    );
    let last = acks.last().unwrap().0;
    let by_seq: HashMap<u64, u64> = acks.iter().copied().collect();
    // A publish refused with `unavailable` while its script was in flight may still have
    // been applied; the publisher's retry then publishes the event a second time.
    eprintln!(
        "pubsub_disconnect: {} of {last} events were published although their publish was answered `unavailable`",
        last - acks.len() as u64
    );
    for (who, c) in &mut subs {
        // No resync (nothing was lost), no gap, no duplicate.
        let evs = events_until(c, last).await;
        assert_eq!(seqs(&evs), (1..=last).collect::<Vec<u64>>(), "{who}");
        for e in &evs {
            if let Some(i) = by_seq.get(&seq_of(e)) {
                assert_eq!(e["data"]["i"], *i, "{who}: {e}");
            }
        }
    }
    let marker = publish_marker(c.addr, ch).await;
    assert_eq!(marker, last + 1);
    for (who, c) in &mut subs {
        assert_quiet(c, who, marker).await;
    }
    // The fill path was taken (else nothing was missed and this test proved little).
    let fills = gap_fills(&[&a, &b]).await;
    eprintln!("pubsub_disconnect: {fills} gap fills on a and b");
    assert!(killed > 0, "no pub/sub connection was killed");
    assert!(fills > 0.0, "no gap was filled from history");
}

/// Regression: Redis holds the channel at a lower seq than the node passed on, in the same
/// epoch and the same Redis process (older data loaded into a running Redis). The node's
/// read used to ignore that and drop the new events numbered 3..=5 as duplicates, so
/// subscribers silently lost them; then it reset them but kept the epoch, so the seqs 3..=5
/// were given a second time within one epoch. Now the read mints a new epoch in Redis: the
/// subscribers get a `resync` to it, and the new events are numbered in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_redis_rewound_in_same_epoch_resyncs() {
    const T: &str = "rewound";
    let redis = RedisServer::start();
    let a = node(&redis, T, "a", &[]).await;
    let ch = "trades.RW";
    let mut sub = connect(&a).await;
    let epoch = epoch_of(&subscribe_one(&mut sub, ch, None).await);
    let mut p = connect(&a).await;
    for i in 1..=5u64 {
        assert_eq!(publish_ws(&mut p, ch, json!({"i": i})).await, i);
    }
    assert_eq!(seqs(&events_until(&mut sub, 5).await), vec![1, 2, 3, 4, 5]);

    // What an older snapshot holds: the channel at seq 2, same epoch. Then the node's
    // pub/sub connection drops, so it re-reads the channel.
    let meta = format!("quotecast:{{{ch}}}:m");
    redis.cmd(&["HSET", &meta, "s", "2"]);
    let stream = format!("quotecast:{{{ch}}}:x");
    redis.cmd(&["XDEL", &stream, "3-0", "4-0", "5-0"]);
    // A stream remembers its top id across XDEL; the snapshot's stream ended at 2.
    assert_eq!(
        redis.cmd(&["XSETID", &stream, "2-0"]),
        RespValue::Simple("OK".into())
    );
    assert!(
        matches!(redis.cmd(&["CLIENT", "KILL", "TYPE", "pubsub"]), RespValue::Int(k) if k > 0),
        "no pub/sub connection to kill"
    );

    let f = sub.recv().await;
    assert_eq!(f["type"], "subscribed", "{f}");
    assert_eq!(f["resync"], true, "{f}");
    assert_eq!(f["recovered"], false, "{f}");
    let e2 = epoch_of(&f);
    assert_ne!(e2, epoch, "a rewind must not keep the epoch: {f}");
    assert_eq!(seq_of(&f), 2, "{f}");
    assert_eq!(
        redis.cmd(&["HGET", &meta, "e"]),
        RespValue::Bulk(Some(e2.clone().into_bytes())),
        "the new epoch is Redis's, so every node and resuming client sees it"
    );
    assert_eq!(publish_ws(&mut p, ch, json!({"i": "new 3"})).await, 3);
    let evs = events_until(&mut sub, 3).await;
    assert_eq!(seqs(&evs), vec![3]);
    assert_eq!(evs[0]["data"]["i"], "new 3");
    let marker = publish_marker(a.addr, ch).await;
    assert_eq!(marker, 4);
    assert_quiet(&mut sub, "subscriber", marker).await;
}

/// Regression (issue #15, defect 1): Redis with RDB snapshots is killed (`kill -9`) and
/// restarts from its last snapshot, which holds the channel at seq 5 while 10 events were
/// acknowledged and delivered. On b47d4eb publishing resumed in the same epoch, acks reused
/// seqs 6.. for other events and subscribers dropped those as duplicates, silently. Now the
/// restarted Redis (another `run_id`) gives the channel a new epoch at its first touch:
/// subscribers get a `resync`, new acks are numbered in the new epoch, and a client resuming
/// from one of the lost events is told `recovered: false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_redis_restart_from_older_snapshot_gets_a_new_epoch() {
    const T: &str = "snapshot";
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cluster-snapshot-redis");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut redis = RedisServer::start_in(&dir);
    let a = node(&redis, T, "a", &[]).await;
    let ch = "trades.SNAP";
    let meta = format!("quotecast:{{{ch}}}:m");
    let mut sub = connect(&a).await;
    let e1 = epoch_of(&subscribe_one(&mut sub, ch, None).await);
    let mut p = connect(&a).await;
    for i in 1..=5u64 {
        assert_eq!(publish_ws(&mut p, ch, json!({"i": i})).await, i);
    }
    assert_eq!(seqs(&events_until(&mut sub, 5).await), vec![1, 2, 3, 4, 5]);
    assert_eq!(redis.cmd(&["SAVE"]), RespValue::Simple("OK".into()));
    for i in 6..=10u64 {
        assert_eq!(publish_ws(&mut p, ch, json!({"i": i})).await, i);
    }
    assert_eq!(
        seqs(&events_until(&mut sub, 10).await),
        vec![6, 7, 8, 9, 10]
    );

    // The crash: SIGKILL, then Redis starts again from the snapshot (seq 5, epoch e1).
    redis.restart();
    let f = sub.recv().await;
    assert_eq!(f["type"], "subscribed", "{f}");
    assert_eq!(f["resync"], true, "{f}");
    assert_eq!(f["recovered"], false, "{f}");
    let e2 = epoch_of(&f);
    assert_ne!(e2, e1, "events 6..=10 are lost: the epoch must change: {f}");
    assert_eq!(seq_of(&f), 5, "{f}");
    assert_eq!(
        redis.cmd(&["HGET", &meta, "e"]),
        RespValue::Bulk(Some(e2.clone().into_bytes())),
        "the new epoch was minted in Redis"
    );

    // New events are numbered in the new epoch (an ack of 6 now means e2's 6, not e1's).
    assert_eq!(publish_ws(&mut p, ch, json!({"i": "after"})).await, 6);
    let evs = events_until(&mut sub, 6).await;
    assert_eq!(seqs(&evs), vec![6]);
    assert_eq!(evs[0]["data"]["i"], "after");

    // A client that saw e1's event 8 resumes on another node: it cannot recover.
    let b = node(&redis, T, "b", &[]).await;
    let mut late = connect(&b).await;
    let ack = subscribe_one(&mut late, ch, Some(json!({"seq": 8, "epoch": e1}))).await;
    assert_eq!(ack["recovered"], false, "{ack}");
    assert_eq!(epoch_of(&ack), e2, "{ack}");
    assert_eq!(seq_of(&ack), 6, "{ack}");
    assert!(
        late.sync().await.is_empty(),
        "no replay after recovered:false"
    );
    let marker = publish_marker(a.addr, ch).await;
    assert_eq!(marker, 7);
    assert_quiet(&mut sub, "subscriber", marker).await;
    assert_quiet(&mut late, "late subscriber", marker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_node_kill_failover() {
    const T: &str = "failover";
    let redis = RedisServer::start();
    let a = node(&redis, T, "a", &[]).await;
    let b = node(&redis, T, "b", &[]).await;
    let c = node(&redis, T, "c", &[]).await;
    let ch = "trades.FO";
    let mut s = connect(&a).await;
    let ack = subscribe_one(&mut s, ch, None).await;
    let epoch = epoch_of(&ack);

    // The publisher on c keeps going through the failover.
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0)); // the last acked seq
    let mut p = connect(&c).await;
    let publisher = {
        let stop = stop.clone();
        let published = published.clone();
        tokio::spawn(async move {
            let mut acks = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let seq = publish_ws(&mut p, ch, json!({ "i": i })).await;
                acks.push(seq);
                published.store(seq, Ordering::SeqCst);
                i += 1;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            acks
        })
    };

    let first = events_until(&mut s, 50).await;
    assert_eq!(seqs(&first), (1..=50).collect::<Vec<u64>>());
    let mut last = 50;
    a.sigkill();
    // Whatever was already on the wire counts as seen.
    while let Ok(v) = s.next().await {
        assert_eq!(v["type"], "event", "{v}");
        assert_eq!(seq_of(&v), last + 1, "{v}");
        last += 1;
    }
    drop(s);
    // The client's reconnect delay: events keep flowing meanwhile (some to replay on b).
    wait_until("events published while reconnecting", SLOW, || {
        published.load(Ordering::SeqCst) >= last + 20
    })
    .await;

    let mut r = connect(&b).await;
    let ack = subscribe_one(&mut r, ch, Some(json!({"seq":last,"epoch":epoch}))).await;
    assert_eq!(ack["recovered"], true, "{ack}");
    assert_eq!(epoch_of(&ack), epoch, "{ack}");
    assert!(seq_of(&ack) >= last, "{ack}");
    eprintln!(
        "failover: killed at seq {last}; {} events to replay on b",
        seq_of(&ack) - last
    );
    // Live events after the resubscription.
    let resumed_at = seq_of(&ack);
    wait_until("live events after the failover", SLOW, || {
        published.load(Ordering::SeqCst) >= resumed_at + 20
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let acks = publisher.await.unwrap();
    let end = *acks.last().unwrap();
    assert_eq!(acks, (1..=end).collect::<Vec<u64>>(), "one publisher: 1..");
    assert!(end > seq_of(&ack), "live events after the failover");
    let rest = events_until(&mut r, end).await;
    assert_eq!(
        seqs(&rest),
        (last + 1..=end).collect::<Vec<u64>>(),
        "replay then live, no gap, no duplicate (killed at {last})"
    );
    assert!(rest.iter().all(|e| e["data"]["i"] == seq_of(e) - 1));
    let marker = publish_marker(b.addr, ch).await;
    assert_eq!(marker, end + 1);
    assert_quiet(&mut r, "after failover", marker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_presence_and_user_limit() {
    const T: &str = "presence";
    let redis = RedisServer::start();
    let extra = [
        "--jwt-secret",
        SECRET,
        "--presence-ttl-ms",
        "1500",
        "--max-connections-per-user",
        "5",
    ];
    let a = node(&redis, T, "a", &extra).await;
    let b = node(&redis, T, "b", &extra).await;
    let ch = "trades.P";
    let q = format!("?token={}", user_token("u1"));
    let within = SLOW;

    let mut on_a = Vec::new();
    for _ in 0..3 {
        let c = Client::connect_url(&ws_url(&a, &q), false).await;
        assert_eq!(c.welcome["user"], "u1");
        on_a.push(c);
    }
    let mut on_b = Vec::new();
    for _ in 0..2 {
        on_b.push(Client::connect_url(&ws_url(&b, &q), false).await);
    }
    subscribe_one(&mut on_a[0], ch, None).await;
    subscribe_one(&mut on_a[1], ch, None).await;
    subscribe_one(&mut on_b[0], ch, None).await;
    // Not counted: another channel, an anonymous connection.
    let mut anon = connect(&b).await;
    subscribe_one(&mut anon, "trades.Q", None).await;

    for n in [&a, &b] {
        wait_presence(n.addr, "user=u1", "connections", 5, within).await;
        wait_presence(n.addr, &format!("channel={ch}"), "subscribers", 3, within).await;
    }
    let v = presence(a.addr, "user=u1").await;
    assert_eq!(v, json!({"user":"u1","connections":5}));
    let v = presence(b.addr, &format!("channel={ch}")).await;
    assert_eq!(v, json!({"channel":ch,"subscribers":3}));
    assert_eq!(presence(a.addr, "channel=trades.Q").await["subscribers"], 1);
    assert_eq!(presence(a.addr, "user=nobody").await["connections"], 0);

    // The sixth connection is refused on either node, although neither holds five.
    expect_refused_4010(&a, &q).await;
    expect_refused_4010(&b, &q).await;
    // Refusals leave no trace, and the five stay open.
    for n in [&a, &b] {
        wait_presence(n.addr, "user=u1", "connections", 5, within).await;
    }
    for c in on_a.iter_mut().chain(on_b.iter_mut()) {
        assert!(c.sync().await.is_empty());
    }
    // Another user is not affected.
    expect_accepted(&a, &format!("?token={}", user_token("u2")), "u2", 1).await;

    // SIGKILL a: its three connections and two subscriptions vanish after the presence TTL.
    a.sigkill();
    drop(on_a);
    let took = wait_presence(b.addr, "user=u1", "connections", 2, within).await;
    eprintln!("presence: user entries of the killed node gone after {took:?}");
    wait_presence(b.addr, &format!("channel={ch}"), "subscribers", 1, within).await;

    // The freed slots can be used again; the limit still holds.
    for total in 3..=5 {
        on_b.push(expect_accepted(&b, &q, "u1", total).await);
    }
    wait_presence(b.addr, "user=u1", "connections", 5, within).await;
    expect_refused_4010(&b, &q).await;

    // Closing and unsubscribing count down.
    on_b[0]
        .send(json!({"op":"unsubscribe","id":1,"channels":[ch]}))
        .await;
    let v = on_b[0].expect_type("unsubscribed").await;
    assert_eq!(v["channels"], json!([ch]));
    wait_presence(b.addr, &format!("channel={ch}"), "subscribers", 0, within).await;
    let mut gone = on_b.pop().unwrap();
    gone.ws.close(None).await.unwrap();
    let _ = gone.until_close().await;
    wait_presence(b.addr, "user=u1", "connections", 4, within).await;
}

/// A node that has just started (say, replacing a crashed one) and takes reconnecting clients
/// before its Redis link is up: `since` must still recover from Redis history and acks must
/// carry the channel's real epoch, either by waiting for Redis or by not being `/ready`
/// until then. Redis is paused (`CLIENT PAUSE`) for 500 ms to hold the link back.
#[tokio::test]
async fn cluster_since_right_after_node_start() {
    const T: &str = "early";
    let redis = RedisServer::start();
    let a = node(&redis, T, "a", &[]).await;
    let ch = "trades.EARLY";
    let mut sa = connect(&a).await;
    let epoch = epoch_of(&subscribe_one(&mut sa, ch, None).await);
    let evs: Vec<Value> = (0..20u64)
        .map(|i| ev(ch, "tick", json!({ "i": i })))
        .collect();
    publish_http(a.addr, &evs).await;

    redis.cmd(&["CLIENT", "PAUSE", "500", "ALL"]);
    let b = spawn_node(&redis, T, "b", &[]);
    // As a load balancer would: traffic only once the node is ready.
    let t0 = Instant::now();
    loop {
        if http(b.addr, "GET", "/ready", "").await.0 == 200 {
            break;
        }
        assert!(t0.elapsed() < TIMEOUT, "node b never became ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut c = connect(&b).await;
    let ack = subscribe_one(&mut c, ch, Some(json!({"seq":5,"epoch":epoch}))).await;
    let mut fresh = connect(&b).await;
    let ack2 = subscribe_one(&mut fresh, "trades.NEVER", None).await;
    assert_eq!(
        (
            ack["recovered"].as_bool(),
            ack["seq"].as_u64(),
            ack["epoch"].as_str()
        ),
        (Some(true), Some(20), Some(epoch.as_str())),
        "since on a just-started node: {ack}"
    );
    assert_eq!(
        seqs(&events_until(&mut c, 20).await),
        (6..=20).collect::<Vec<u64>>()
    );
    epoch_of(&ack2);
    let marker = publish_marker(a.addr, ch).await;
    assert_eq!(marker, 21);
    assert_quiet(&mut c, "since on b", marker).await;
}

/// Clients join channels while events flow: the node's first subscriber of a channel makes
/// it subscribe in Redis and read the channel's state, racing the live events. Every
/// subscriber's stream continues exactly after its ack (or its `since`), with no gap and no
/// duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_join_while_publishing() {
    const T: &str = "join";
    const CHANNELS: usize = 10;
    let redis = RedisServer::start();
    let a = node(&redis, T, "a", &[]).await;
    let b = node(&redis, T, "b", &[]).await;
    let names: Vec<String> = (0..CHANNELS).map(|k| format!("trades.J{k}")).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0)); // acked publishes
    let mut p = connect(&a).await;
    let publisher = {
        let stop = stop.clone();
        let published = published.clone();
        let names = names.clone();
        tokio::spawn(async move {
            // Per channel: seq -> i.
            let mut acks: Vec<HashMap<u64, u64>> = vec![HashMap::new(); CHANNELS];
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let k = (i as usize) % CHANNELS;
                let s = publish_ws(&mut p, &names[k], json!({ "i": i })).await;
                assert!(acks[k].insert(s, i).is_none(), "seq {s} twice on {k}");
                i += 1;
                published.store(i, Ordering::SeqCst);
                if i.is_multiple_of(4) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            acks
        })
    };

    let mut subs = Vec::new();
    for (k, name) in names.iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(40)).await;
        let n = if k % 2 == 0 { &a } else { &b };
        // Each channel's first subscriber on its node; odd ones ask for the history too.
        let mut c = connect(n).await;
        let since = (k % 4 >= 2).then(|| json!(1));
        let ack = subscribe_one(&mut c, name, since.clone()).await;
        let from = match since {
            Some(_) => {
                assert_eq!(ack["recovered"], true, "{ack}");
                2
            }
            None => seq_of(&ack) + 1,
        };
        subs.push((k, from, c));
    }
    // Every channel gets events after its subscriber joined: publish i+1 and later are sent
    // after publish i was acked, so after every subscribe above; two rounds over the channels.
    let now = published.load(Ordering::SeqCst);
    wait_until("events after the last join", SLOW, || {
        published.load(Ordering::SeqCst) > now + 2 * CHANNELS as u64
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let acks = publisher.await.unwrap();
    for (k, from, c) in &mut subs {
        let last = *acks[*k].keys().max().unwrap();
        assert_eq!(acks[*k].len() as u64, last, "channel {k}: acked 1..=last");
        let evs = events_until(c, last).await;
        assert_eq!(
            seqs(&evs),
            (*from..=last).collect::<Vec<u64>>(),
            "channel {k}"
        );
        for e in &evs {
            assert_eq!(e["data"]["i"], acks[*k][&seq_of(e)], "channel {k}: {e}");
        }
        let marker = publish_marker(b.addr, &names[*k]).await;
        assert_eq!(marker, last + 1, "channel {k}");
        assert_quiet(c, &format!("channel {k}"), marker).await;
    }
}

/// The cluster alert rules in `deploy/` use only metrics a cluster node exports, and the
/// cluster block of `/ws/status` is there.
#[tokio::test]
async fn cluster_alerts_use_only_exported_metrics() {
    let redis = RedisServer::start();
    let a = node(&redis, "alerts", "a", &[]).await;
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let rules = std::fs::read_to_string(root.join("prometheus/cluster-alerts.yml")).unwrap();
    let mut used = std::collections::BTreeSet::new();
    for e in crate::ops::check_alert_rules(&rules) {
        used.extend(crate::ops::metric_names(&e));
    }
    assert!(used.len() >= 5, "{used:?}");
    let (_, body) = http(a.addr, "GET", "/metrics", "").await;
    let exported: std::collections::BTreeSet<String> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|t| t.split(' ').next().unwrap().to_string())
        .collect();
    for name in &used {
        assert!(
            exported.contains(name),
            "{name} is used in deploy/ but not exported"
        );
    }
    let (_, status) = http(a.addr, "GET", "/ws/status", "").await;
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["cluster"]["node"], "a", "{status}");
    assert_eq!(status["cluster"]["redis"], "up", "{status}");
}

/// While Redis stalls, at most `publish_queue` events wait for it: further publishes are
/// refused with `overloaded` at once (not queued without bound), and the accepted ones are
/// acked once Redis answers again.
#[tokio::test]
async fn cluster_publish_queue_is_bounded_in_events() {
    let redis = RedisServer::start();
    let cfg = std::env::temp_dir().join(format!("qc-cluster-queue-{}.toml", std::process::id()));
    std::fs::write(&cfg, "[cluster]\npublish_queue = 100\n").unwrap();
    let a = node(&redis, "queue", "a", &["--config", cfg.to_str().unwrap()]).await;
    let mut p = connect(&a).await;
    // Scripts wait while Redis is paused for writes (shorter than the 2 s reply timeout).
    // The 40 publishes go in one write, so that the node takes them all in well within the
    // pause however slow this machine is. (The pause cannot be made longer: the node gives up
    // on a Redis reply after a fixed 2 s.)
    const OPS: usize = 40;
    let ops: Vec<Value> = (0..OPS)
        .map(|i| {
            let events: Vec<Value> = (0..10)
                .map(|k| json!({"channel":"trades.Q","event":"tick","data":{"i":i,"k":k}}))
                .collect();
            json!({"op":"publish","id":i,"events":events})
        })
        .collect();
    // In effect once the command returns.
    redis.cmd(&["CLIENT", "PAUSE", "1200", "WRITE"]);
    p.send_batch(ops).await;
    let (mut acked, mut refused) = (0usize, 0usize);
    while acked + refused < OPS {
        let v = tokio::time::timeout(TIMEOUT, p.recv())
            .await
            .expect("every publish is answered");
        match v["type"].as_str() {
            Some("published") => acked += 1,
            Some("error") if v["code"] == "overloaded" => refused += 1,
            _ => panic!("unexpected {v}"),
        }
    }
    let _ = std::fs::remove_file(&cfg);
    // 100 queued events are 10 ops, plus at most the ops already taken into the pipeline.
    assert!(refused >= 10, "acked {acked}, refused {refused}");
    assert!(acked >= 10, "acked {acked}, refused {refused}");
}

/// The value of one sample on the node's `/metrics`.
async fn metric(addr: std::net::SocketAddr, name: &str) -> f64 {
    let (st, body) = http(addr, "GET", "/metrics", "").await;
    assert_eq!(st, 200, "{body}");
    let samples = quotecast::metrics::parse_exposition(&body).unwrap_or_else(|e| panic!("{e}"));
    samples
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no {name} in:\n{body}"))
        .value
}

/// Polls the node's log until it contains `needle`.
async fn wait_log(test: &str, id: &str, needle: &str) {
    let path = log_path(test, id);
    let t0 = Instant::now();
    loop {
        if std::fs::read_to_string(&path).is_ok_and(|l| l.contains(needle)) {
            return;
        }
        assert!(t0.elapsed() < SLOW, "{path:?} never said {needle:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Regression (issue #15, defect 3): a node exited 2-10 ms after SIGTERM without answering
/// the HTTP publishes it had sent to Redis, which were then delivered anyway. Now the drain
/// waits for them: with Redis hung (SIGSTOP), SIGTERM, then Redis resumes; the publish is
/// answered (200 with its seq, delivered to a subscriber on another node, or `503
/// outcome_unknown` if Redis's answer missed the 2 s response timeout), then the node exits
/// cleanly. A WebSocket publish waiting behind it is answered before its 1012 close too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_sigterm_answers_http_publishes_in_flight() {
    const T: &str = "drain";
    let redis = RedisServer::start();
    let a = node(&redis, T, "a", &["--drain-ms", "10000"]).await;
    let b = node(&redis, T, "b", &[]).await;
    let ch = "trades.DRAIN";
    let mut sub = connect(&b).await;
    subscribe_one(&mut sub, ch, None).await;

    redis.signal("STOP");
    let addr = a.addr;
    let body = json!({"channel": ch, "event": "tick", "data": {"i": 1}}).to_string();
    let pending = tokio::spawn(async move { http(addr, "POST", "/api/publish", &body).await });
    wait_until_async("the publish is in flight at Redis", || async {
        metric(addr, "quotecast_cluster_publishes_in_flight").await >= 1.0
    })
    .await;
    // A WebSocket publish queued behind it (the pong proves the node has taken the op).
    let mut wp = connect(&a).await;
    wp.send(json!({"op":"publish","id":"w","channel":ch,"event":"tick","data":{"i":2}}))
        .await;
    wp.send(json!({"op":"ping","id":"pg"})).await;
    wp.expect_type("pong").await;
    a.sigterm();
    wait_log(T, "a", "SIGTERM: draining").await;
    redis.signal("CONT");
    // The WebSocket publisher gets the notice, then its answer, then the 1012 close.
    let (frames, closed) = wp.until_close().await;
    assert_eq!(closed.code, 1012, "{closed:?} after {frames:?}");
    assert_eq!(frames[0]["type"], "server_shutdown", "{frames:?}");
    let answer = frames
        .iter()
        .find(|f| f["id"] == "w")
        .unwrap_or_else(|| panic!("no answer to the WebSocket publish: {frames:?}"));
    assert!(
        answer["type"] == "published"
            || matches!(
                answer["code"].as_str(),
                Some("outcome_unknown" | "unavailable")
            ),
        "{answer}"
    );
    let (st, body) = pending.await.unwrap();
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {st} {body}"));
    if st == 200 {
        let seq = seq_of(&v);
        let evs = events_until(&mut sub, seq).await;
        assert_eq!(evs.last().unwrap()["data"]["i"], 1, "{evs:?}");
    } else {
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (503, Some("outcome_unknown")),
            "{body}"
        );
    }
    let status = a.take().wait().unwrap();
    assert!(status.success(), "node a exited with {status}");
}

/// Polls an async condition until it holds; panics, naming `what`, after [`SLOW`].
async fn wait_until_async<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = Instant::now();
    while !cond().await {
        assert!(t0.elapsed() < SLOW, "{what}: not within {SLOW:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `/ready` until it answers `want`; returns the body.
async fn wait_ready(addr: std::net::SocketAddr, want: u16) -> String {
    let t0 = Instant::now();
    loop {
        let (st, body) = http(addr, "GET", "/ready", "").await;
        if st == want {
            return body;
        }
        assert!(
            t0.elapsed() < SLOW,
            "{addr}: /ready never answered {want}; last {st} {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Readiness modes (issue #15): by default a node stays ready through a Redis outage (it
/// still serves its connections); with `--ready-requires-redis` its `/ready` fails while
/// publishes cannot be sequenced and recovers when Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_readiness_can_require_redis() {
    const T: &str = "ready";
    let mut redis = RedisServer::start();
    let strict = node(&redis, T, "strict", &["--ready-requires-redis"]).await;
    let lenient = node(&redis, T, "lenient", &[]).await;
    wait_ready(strict.addr, 200).await;
    wait_ready(lenient.addr, 200).await;

    redis.stop();
    let why = wait_ready(strict.addr, 503).await;
    assert!(why.contains("Redis is unreachable"), "{why}");
    wait_health(lenient.addr, "down", SLOW).await;
    let (st, body) = http(lenient.addr, "GET", "/ready", "").await;
    assert_eq!(st, 200, "the default mode stays ready: {body}");
    // What the strict node's balancer spares publishers: a publish now is not sequenced.
    let (st, body) = http(
        strict.addr,
        "POST",
        "/api/publish",
        &json!({"channel": "trades.R", "event": "tick", "data": {}}).to_string(),
    )
    .await;
    assert_eq!(st, 503, "{body}");
    // `outcome_unknown` when it went out on the dying connection before the node saw it fail.
    assert!(
        body.contains("\"unavailable\"") || body.contains("\"outcome_unknown\""),
        "{body}"
    );
    // Once the node has seen its connection fail, publishes are refused unsent: `unavailable`
    // (safe to retry), never `outcome_unknown` again while Redis is down.
    let t0 = Instant::now();
    loop {
        let (st, body) = http(
            strict.addr,
            "POST",
            "/api/publish",
            &json!({"channel": "trades.R", "event": "tick", "data": {}}).to_string(),
        )
        .await;
        assert_eq!(st, 503, "{body}");
        if body.contains("\"unavailable\"") {
            break;
        }
        assert!(body.contains("\"outcome_unknown\""), "{body}");
        assert!(t0.elapsed() < SLOW, "never `unavailable`: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..3 {
        let (st, body) = http(
            strict.addr,
            "POST",
            "/api/publish",
            &json!({"channel": "trades.R", "event": "tick", "data": {}}).to_string(),
        )
        .await;
        assert_eq!(st, 503, "{body}");
        assert!(body.contains("\"unavailable\""), "{body}");
    }

    redis.restart();
    wait_ready(strict.addr, 200).await;
}

/// Regression (issue #15, defect 2): with Redis hung (SIGSTOP), a publish already sent to
/// Redis was answered `unavailable` ("not sequenced; retry") and then delivered after
/// SIGCONT, so a retry made a duplicate. Now such a publish is answered `outcome_unknown`,
/// and a retry with the same idempotency key returns the original seq instead of a second
/// event (HTTP `Idempotency-Key` header and WebSocket `idempotency_key`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_idempotency_key_makes_retries_after_outcome_unknown_safe() {
    const T: &str = "idem";
    let redis = RedisServer::start();
    let a = node(&redis, T, "a", &[]).await;
    let b = node(&redis, T, "b", &[]).await;
    let ch = "trades.IDEM";
    let mut sub = connect(&b).await;
    subscribe_one(&mut sub, ch, None).await;
    let body = json!({"channel": ch, "event": "tick", "data": {"i": 1}}).to_string();
    let keyed = |body: String| async move {
        http_with(
            a.addr,
            "POST",
            "/api/publish",
            &[("Idempotency-Key", "order-7f3a")],
            &body,
        )
        .await
    };

    redis.signal("STOP");
    let addr = a.addr;
    let first = tokio::spawn({
        let body = body.clone();
        async move {
            http_with(
                addr,
                "POST",
                "/api/publish",
                &[("Idempotency-Key", "order-7f3a")],
                &body,
            )
            .await
        }
    });
    wait_until_async("the publish is in flight at Redis", || async {
        metric(addr, "quotecast_cluster_publishes_in_flight").await >= 1.0
    })
    .await;
    // Redis stays hung past the node's 2 s response timeout.
    let (st, resp) = first.await.unwrap();
    assert_eq!(st, 503, "{resp}");
    assert!(resp.contains("\"outcome_unknown\""), "{resp}");
    redis.signal("CONT");
    // It did happen: Redis ran it once resumed.
    let evs = events_until(&mut sub, 1).await;
    assert_eq!(evs[0]["data"]["i"], 1, "{evs:?}");

    // The retry with the key returns the original seq and publishes nothing.
    wait_health(a.addr, "up", SLOW).await;
    let (st, resp) = keyed(body.clone()).await;
    assert_eq!(st, 200, "{resp}");
    let v: Value = serde_json::from_str(&resp).unwrap();
    assert_eq!(v["seq"], 1, "{resp}");

    // The same over WebSocket: two publishes with one key, one event.
    let mut p = connect(&a).await;
    let op = json!({"op":"publish","id":"w","channel":ch,"event":"tick","data":{"i":2},
        "idempotency_key":"ws-2"});
    p.send(op.clone()).await;
    let ack1 = p.recv().await;
    p.send(op).await;
    let ack2 = p.recv().await;
    assert_eq!(ack1["type"], "published", "{ack1}");
    assert_eq!((seq_of(&ack1), seq_of(&ack2)), (2, 2), "{ack1} {ack2}");
    let evs = events_until(&mut sub, 2).await;
    assert_eq!(evs[0]["data"]["i"], 2, "{evs:?}");

    // A bad key is refused before anything happens.
    let (st, resp) = http_with(
        a.addr,
        "POST",
        "/api/publish",
        &[("Idempotency-Key", "has space")],
        &body,
    )
    .await;
    assert_eq!(st, 400, "{resp}");
    let marker = publish_marker(a.addr, ch).await;
    assert_eq!(marker, 3, "no duplicate was sequenced");
    assert_quiet(&mut sub, "subscriber", marker).await;
}

/// Redis Sentinel (issue #15): a node finds the master through a sentinel, and when the
/// master is killed and the sentinel promotes its replica, the node reconnects to the new
/// master by itself. The new master is another Redis process, so the channel gets a new
/// epoch: its subscribers get a `resync` (never a silent loss, even if the replica had not
/// received the last events), and publishing resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_sentinel_failover() {
    const T: &str = "sentinel";
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cluster-sentinel");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut master = RedisServer::start();
    let replica = RedisServer::start_replica_of(master.port);
    let linked = || {
        matches!(replica.cmd(&["INFO", "replication"]),
            RespValue::Bulk(Some(b)) if String::from_utf8_lossy(&b).contains("master_link_status:up"))
    };
    wait_until("the replica is in sync", SLOW, linked).await;
    let sentinel = RedisServer::start_sentinel(&dir, "qc", master.port);
    let knows_replica = || {
        matches!(sentinel.cmd(&["SENTINEL", "replicas", "qc"]),
            RespValue::Array(Some(r)) if !r.is_empty())
    };
    wait_until("the sentinel knows the replica", SLOW, knows_replica).await;

    // The node is given only the sentinel; the URL's host and port are not used.
    let sentinel_addr = format!("127.0.0.1:{}", sentinel.port);
    let mut cmd = ServerProcess::command(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "2",
        "--allow-anonymous",
        "--anonymous-publish",
        "--redis",
        "redis://unused.invalid:1",
        "--sentinel-master",
        "qc",
        "--sentinel",
        &sentinel_addr,
        "--node-id",
        "a",
    ]);
    cmd.stderr(std::fs::File::create(log_path(T, "a")).unwrap());
    let a = ServerProcess::start(&mut cmd);
    wait_health(a.addr, "up", SLOW).await;

    let ch = "trades.SENT";
    let meta = format!("quotecast:{{{ch}}}:m");
    let mut sub = connect(&a).await;
    let e1 = epoch_of(&subscribe_one(&mut sub, ch, None).await);
    let mut p = connect(&a).await;
    for i in 1..=3u64 {
        assert_eq!(publish_ws(&mut p, ch, json!({"i": i})).await, i);
    }
    assert_eq!(seqs(&events_until(&mut sub, 3).await), vec![1, 2, 3]);

    master.stop();
    let promoted = format!("{}", replica.port);
    wait_until("the sentinel promotes the replica", SLOW, || {
        matches!(sentinel.cmd(&["SENTINEL", "get-master-addr-by-name", "qc"]),
            RespValue::Array(Some(a)) if a.get(1) == Some(&RespValue::Bulk(Some(promoted.clone().into_bytes()))))
    })
    .await;
    wait_health(a.addr, "up", SLOW).await;
    let f = tokio::time::timeout(SLOW, sub.next())
        .await
        .expect("a resync after the failover")
        .expect("the subscriber stays connected");
    assert_eq!(f["type"], "subscribed", "{f}");
    assert_eq!(f["resync"], true, "{f}");
    assert_eq!(f["recovered"], false, "{f}");
    let e2 = epoch_of(&f);
    assert_ne!(e2, e1, "another Redis process: a new epoch: {f}");
    let s = seq_of(&f);
    assert!(s <= 3, "{f}");
    assert_eq!(
        replica.cmd(&["HGET", &meta, "e"]),
        RespValue::Bulk(Some(e2.clone().into_bytes())),
        "the new epoch lives in the new master"
    );
    assert_eq!(publish_ws(&mut p, ch, json!({"i": "after"})).await, s + 1);
    let evs = events_until(&mut sub, s + 1).await;
    assert_eq!(evs.last().unwrap()["data"]["i"], "after");
    let marker = publish_marker(a.addr, ch).await;
    assert_quiet(&mut sub, "subscriber", marker).await;
}
