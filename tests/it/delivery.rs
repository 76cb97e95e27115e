//! Subscribe, publish, fan-out, formats, snapshot, recovery and ordering.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::util::*;
use quotecast::engine::channel::{ChannelPolicy, ChannelRule, ChannelRules};

#[tokio::test]
async fn welcome_subscribe_publish_ack_and_event() {
    let srv = TestServer::default();
    let mut sub = Client::connect(&srv).await;
    assert_eq!(sub.welcome["protocol"], 1);
    assert_eq!(sub.welcome["format"], "json");
    assert!(sub.welcome["heartbeat_ms"].as_u64().unwrap() > 0);
    sub.send(json!({"op":"subscribe","id":1,"channels":["trades.AAPL"]}))
        .await;
    let ack = sub.expect_type("subscribed").await;
    assert_eq!(ack["id"], 1);
    assert_eq!(ack["channel"], "trades.AAPL");
    assert_eq!(ack["kind"], "stream");
    assert_eq!(ack["seq"], 0);
    assert!(ack.get("recovered").is_none());

    let mut publ = Client::connect(&srv).await;
    publ.send(json!({"op":"publish","id":"p1","channel":"trades.AAPL","event":"trade_executed","data":{"price":187.5,"quantity":100}})).await;
    let pack = publ.expect_type("published").await;
    assert_eq!(
        pack,
        json!({"type":"published","id":"p1","channel":"trades.AAPL","seq":1})
    );

    let e = sub.expect_type("event").await;
    assert_eq!(e["channel"], "trades.AAPL");
    assert_eq!(e["event"], "trade_executed");
    assert_eq!(e["seq"], 1);
    assert_eq!(e["data"], json!({"price":187.5,"quantity":100}));
    let ts = e["ts"].as_u64().unwrap();
    assert!(
        ts > 1_600_000_000_000_000_000,
        "ts is ns since the epoch: {ts}"
    );
}

#[tokio::test]
async fn msgpack_subscriber_gets_binary_frames_from_json_publisher() {
    let srv = TestServer::default();
    let mut sub = Client::connect_msgpack(&srv).await;
    assert_eq!(sub.welcome["format"], "msgpack");
    let acks = sub.subscribe(&["acct.42.orders"]).await;
    assert_eq!(acks[0]["seq"], 0);
    let mut json_sub = Client::connect(&srv).await;
    json_sub.subscribe(&["acct.42.orders"]).await;
    let data = json!({"order_id":"ORD_1","status":"filled","price":1.08503,"volume":0.1,"tags":["a",null,true]});
    let seqs = publish_http(
        srv.addr,
        &[ev("acct.42.orders", "order_update", data.clone())],
    )
    .await;
    assert_eq!(seqs, vec![1]);
    let e = sub.expect_type("event").await;
    assert_eq!(e["data"], data);
    assert_eq!(e["seq"], 1);
    let e2 = json_sub.expect_type("event").await;
    assert_eq!(e2["data"], data);

    // A msgpack publisher, too; JSON subscribers get the transcoded payload.
    sub.send(json!({"op":"publish","id":9,"events":[{"channel":"acct.42.orders","event":"order_update","data":{"n":-3,"s":"x"}}]})).await;
    let mut got = Vec::new();
    while got.len() < 2 {
        got.push(sub.recv().await);
    }
    assert!(
        got.iter()
            .any(|v| v["type"] == "published" && v["seqs"] == json!([2])),
        "{got:?}"
    );
    let e3 = json_sub.expect_type("event").await;
    assert_eq!(e3["data"], json!({"n":-3,"s":"x"}));
}

#[tokio::test]
async fn fan_out_to_many_clients_across_shards_in_order() {
    let srv = TestServer::start(|c| c.shards = 3);
    let mut clients = Vec::new();
    for _ in 0..40 {
        let mut c = Client::connect(&srv).await;
        c.subscribe(&["trades.MSFT"]).await;
        clients.push(c);
    }
    let events: Vec<Value> = (0..100)
        .map(|i| ev("trades.MSFT", "trade", json!({"i": i})))
        .collect();
    let seqs = publish_http(srv.addr, &events).await;
    assert_eq!(seqs, (1..=100).collect::<Vec<u64>>());
    for c in &mut clients {
        for want in 1..=100u64 {
            let e = c.expect_type("event").await;
            assert_eq!(e["seq"], want);
            assert_eq!(e["data"]["i"], want - 1);
        }
    }
    let ids: std::collections::HashSet<String> = clients
        .iter()
        .map(|c| {
            c.welcome["conn_id"]
                .as_str()
                .unwrap()
                .split('-')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids.len(), 3, "connections are spread over all shards");
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let srv = TestServer::default();
    let mut c = Client::connect(&srv).await;
    c.subscribe(&["signals.EURUSD", "signals.GBPUSD"]).await;
    c.send(json!({"op":"unsubscribe","id":3,"channels":["signals.EURUSD","never.subscribed"]}))
        .await;
    let u = c.expect_type("unsubscribed").await;
    assert_eq!(
        u,
        json!({"type":"unsubscribed","id":3,"channels":["signals.EURUSD"]})
    );
    publish_http(
        srv.addr,
        &[
            ev("signals.EURUSD", "signal", json!(1)),
            ev("signals.GBPUSD", "signal", json!(2)),
        ],
    )
    .await;
    let e = c.expect_type("event").await;
    assert_eq!(e["channel"], "signals.GBPUSD");
    let rest = c.sync().await;
    assert!(rest.is_empty(), "{rest:?}");
}

#[tokio::test]
async fn snapshot_delivers_history_for_streams_and_latest_for_quotes() {
    let srv = TestServer::default();
    let evs: Vec<Value> = (1..=5)
        .map(|i| ev("trades.TSLA", "trade", json!({"i": i})))
        .collect();
    publish_http(srv.addr, &evs).await;
    let quotes: Vec<Value> = (1..=3)
        .map(|i| ev("quotes.TSLA", "quote", json!({"bid": i})))
        .collect();
    publish_http(srv.addr, &quotes).await;

    let mut c = Client::connect(&srv).await;
    c.send(json!({"op":"subscribe","channels":["trades.TSLA","quotes.TSLA"],"snapshot":true}))
        .await;
    let mut by_channel: HashMap<String, Vec<Value>> = HashMap::new();
    for v in c.sync().await {
        by_channel
            .entry(v["channel"].as_str().unwrap().to_string())
            .or_default()
            .push(v);
    }
    let t = &by_channel["trades.TSLA"];
    assert_eq!(t[0]["type"], "subscribed");
    assert_eq!(t[0]["seq"], 5);
    assert_eq!(
        t[1..]
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    let q = &by_channel["quotes.TSLA"];
    assert_eq!(q[0]["kind"], "conflated");
    assert_eq!(q.len(), 2, "ack + latest quote only: {q:?}");
    assert_eq!(q[1]["seq"], 3);
    assert_eq!(q[1]["data"]["bid"], 3);
}

fn short_history() -> ChannelRules {
    ChannelRules::new(vec![
        ChannelRule::new("quotes.*", ChannelPolicy::conflated()).unwrap(),
        ChannelRule::new("**", ChannelPolicy::stream(3)).unwrap(),
    ])
}

#[tokio::test]
async fn recovery_with_since_replays_exactly_or_says_not_recovered() {
    let srv = TestServer::start(|c| c.rules = short_history());
    let evs: Vec<Value> = (1..=6)
        .map(|i| ev("user.7.orders", "order_update", json!({"i": i})))
        .collect();
    publish_http(srv.addr, &evs).await;
    let mut c = Client::connect(&srv).await;

    // Within the ring (it holds 4..=6).
    c.send(
        json!({"op":"subscribe","id":1,"channels":["user.7.orders"],"since":{"user.7.orders":3}}),
    )
    .await;
    let got = c.sync().await;
    assert_eq!(got[0]["type"], "subscribed");
    assert_eq!(got[0]["recovered"], true);
    assert_eq!(got[0]["seq"], 6);
    let epoch = got[0]["epoch"].as_str().unwrap().to_string();
    assert_eq!(
        got[1..]
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![4, 5, 6]
    );

    // Live events continue after the replay with no gap or duplicate.
    publish_http(
        srv.addr,
        &[ev("user.7.orders", "order_update", json!({"i": 7}))],
    )
    .await;
    assert_eq!(c.expect_type("event").await["seq"], 7);

    let mut d = Client::connect(&srv).await;
    // Too old: seq 3 and 4 are gone.
    d.send(json!({"op":"subscribe","channels":["user.7.orders"],"since":{"user.7.orders":2}}))
        .await;
    let got = d.sync().await;
    assert_eq!(got.len(), 1, "no replay when the range is gone: {got:?}");
    assert_eq!(got[0]["recovered"], false);
    assert_eq!(got[0]["seq"], 7);
    d.send(json!({"op":"unsubscribe","channels":["user.7.orders"]}))
        .await;
    d.expect_type("unsubscribed").await;

    // Up to date with the right epoch: recovered, nothing to replay.
    d.send(json!({"op":"subscribe","channels":["user.7.orders"],"since":{"user.7.orders":{"seq":7,"epoch":epoch}}})).await;
    let got = d.sync().await;
    assert_eq!((got.len(), &got[0]["recovered"]), (1, &json!(true)));
    d.send(json!({"op":"unsubscribe","channels":["user.7.orders"]}))
        .await;
    d.expect_type("unsubscribed").await;

    // Another epoch (a restarted server): not recoverable.
    d.send(json!({"op":"subscribe","channels":["user.7.orders"],"since":{"user.7.orders":{"seq":6,"epoch":"0000"}}})).await;
    let got = d.sync().await;
    assert_eq!((got.len(), &got[0]["recovered"]), (1, &json!(false)));
    d.send(json!({"op":"unsubscribe","channels":["user.7.orders"]}))
        .await;
    d.expect_type("unsubscribed").await;

    // From the future.
    d.send(json!({"op":"subscribe","channels":["user.7.orders"],"since":{"user.7.orders":99}}))
        .await;
    let got = d.sync().await;
    assert_eq!(got[0]["recovered"], false);
}

#[tokio::test]
async fn per_channel_order_with_concurrent_publishers_on_several_shards() {
    let srv = TestServer::start(|c| c.shards = 3);
    let channels = ["trades.A", "trades.B", "acct.1.orders"];
    let mut subs = Vec::new();
    for _ in 0..6 {
        let mut c = Client::connect(&srv).await;
        c.subscribe(&channels).await;
        subs.push(c);
    }
    const PUBS: usize = 4;
    const EACH: usize = 150;
    let mut tasks = Vec::new();
    for p in 0..PUBS {
        let mut pc = Client::connect(&srv).await;
        tasks.push(tokio::spawn(async move {
            for i in 0..EACH {
                let ch = ["trades.A", "trades.B", "acct.1.orders"][i % 3];
                pc.send(json!({"op":"publish","channel":ch,"event":"e","data":{"p":p,"i":i}}))
                    .await;
            }
            pc.sync().await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total = PUBS * EACH;
    for c in &mut subs {
        let mut last_seq: HashMap<String, u64> = HashMap::new();
        let mut last_i: HashMap<(String, u64), i64> = HashMap::new();
        for _ in 0..total {
            let e = c.expect_type("event").await;
            let ch = e["channel"].as_str().unwrap().to_string();
            let seq = e["seq"].as_u64().unwrap();
            let prev = last_seq.insert(ch.clone(), seq).unwrap_or(0);
            assert_eq!(seq, prev + 1, "gap-free per channel");
            let p = e["data"]["p"].as_u64().unwrap();
            let i = e["data"]["i"].as_i64().unwrap();
            let pi = last_i.insert((ch, p), i).unwrap_or(-1);
            assert!(i > pi, "each publisher's order is kept");
        }
        assert_eq!(last_seq.values().sum::<u64>(), total as u64);
    }
}

#[tokio::test]
async fn websocket_batch_publish_across_shards_acks_all_seqs_in_order() {
    let srv = TestServer::start(|c| c.shards = 4);
    let mut c = Client::connect(&srv).await;
    let events: Vec<Value> = (0..20)
        .map(|i| ev(&format!("bench.{}", i % 10), "e", json!(i)))
        .collect();
    c.send(json!({"op":"publish","id":77,"events":events}))
        .await;
    let ack = c.expect_type("published").await;
    let seqs: Vec<u64> = ack["seqs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let want: Vec<u64> = (0..20).map(|i| if i < 10 { 1 } else { 2 }).collect();
    assert_eq!(seqs, want);
}

/// Subscribing and at once unsubscribing (a UI flipping symbols) on channels whose home is
/// another shard: the late subscribe answers must still release the replies held behind
/// them (`unsubscribed`, `pong`), or the connection would go silent for good.
#[tokio::test]
async fn unsubscribe_before_the_subscribe_answer_does_not_stall_replies() {
    let srv = TestServer::start(|c| c.shards = 4);
    let mut c = Client::connect(&srv).await;
    let names: Vec<String> = (0..16).map(|i| format!("trades.FLIP{i}")).collect();
    for round in 0..3 {
        for n in &names {
            c.send(json!({"op":"subscribe","channels":[n]})).await;
            c.send(json!({"op":"unsubscribe","channels":[n]})).await;
        }
        c.send(json!({"op":"ping","id":round})).await;
        // Generous (a round trip takes milliseconds), and shorter than `recv`'s own timeout
        // so that a stall is reported as such.
        let pong = tokio::time::timeout(TIMEOUT / 2, async {
            loop {
                let v = c.recv().await;
                if v["type"] == "pong" {
                    return v;
                }
            }
        })
        .await
        .expect("pong held back behind an unanswered subscribe");
        assert_eq!(pong["id"], round);
    }
}
