//! Slow readers: conflation on quote channels, slow-consumer close on stream channels, and
//! priority of private events over quotes.

use std::time::Duration;

use serde_json::{json, Value};

use crate::util::*;

fn padded(i: usize) -> Value {
    json!({"bid": i, "pad": "x".repeat(2000)})
}

#[tokio::test]
async fn a_slow_reader_gets_the_latest_quote_with_conflation_notices() {
    let srv = TestServer::start(|c| c.shards = 2);
    let mut slow = Client::connect(&srv).await;
    slow.subscribe(&["quotes.Z"]).await;
    // Do not read while ~40 MB of quotes are published: far more than socket buffers hold.
    const N: usize = 20_000;
    for chunk in (0..N).collect::<Vec<_>>().chunks(100) {
        let evs: Vec<Value> = chunk
            .iter()
            .map(|&i| ev("quotes.Z", "quote", padded(i + 1)))
            .collect();
        publish_http(srv.addr, &evs).await;
    }
    // Now read everything up to the last quote.
    let mut last_seq = 0u64;
    let mut frames = 0usize;
    let mut pending_notice: Option<(u64, u64)> = None;
    let mut notices = 0;
    while last_seq < N as u64 {
        let v = slow.recv().await;
        match v["type"].as_str().unwrap() {
            "conflated" => {
                let (from, to) = (v["from"].as_u64().unwrap(), v["to"].as_u64().unwrap());
                assert_eq!(
                    from,
                    last_seq + 1,
                    "notice starts right after the last seen seq"
                );
                assert!(to >= from);
                pending_notice = Some((from, to));
                notices += 1;
            }
            "event" => {
                let seq = v["seq"].as_u64().unwrap();
                match pending_notice.take() {
                    Some((_, to)) => assert_eq!(
                        seq,
                        to + 1,
                        "the event replaces exactly the announced range"
                    ),
                    None => assert_eq!(seq, last_seq + 1, "no silent gap"),
                }
                assert_eq!(v["data"]["bid"], seq);
                last_seq = seq;
                frames += 1;
            }
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert!(notices > 0, "the reader was slow enough to be conflated");
    assert!(
        frames < N / 2,
        "conflation dropped most intermediate quotes ({frames} of {N} delivered)"
    );
}

#[tokio::test]
async fn a_slow_consumer_on_a_stream_is_closed_and_others_are_unaffected() {
    // The lag rule alone decides: caps far above the 12 MB published, a 2 s lag. The fast
    // reader keeps up (its backlog waits milliseconds even on a loaded machine); the reader
    // that never reads is closed once its oldest event has waited 2 s, either by a later
    // publish or, once publishing ended, by the shard's once-a-second sweep.
    let lag = Duration::from_secs(2);
    let srv = TestServer::start(|c| {
        c.queue = quotecast::engine::outbound::QueueLimits {
            max_frames: 1 << 20,
            max_bytes: 256 << 20,
            max_lag: lag,
        };
    });
    let mut slow = Client::connect_small_rcvbuf(&srv).await;
    slow.subscribe(&["trades.S"]).await;
    let mut fast = Client::connect(&srv).await;
    fast.subscribe(&["trades.S"]).await;
    const N: usize = 6_000;
    let reader = tokio::spawn(async move {
        for want in 1..=N as u64 {
            let e = fast.expect_type("event").await;
            assert_eq!(e["seq"], want);
        }
        fast
    });
    // The slow reader drains its socket only once the server has counted its close (a
    // positive barrier, polled from the start): the close frame waits behind what the
    // kernel holds, and the server gives a closing connection 2 s to take it.
    let addr = srv.addr;
    let t0 = std::time::Instant::now();
    let watcher = tokio::spawn(async move {
        let lag_line = "quotecast_slow_consumer_closes_total{trigger=\"lag\"} 1";
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (_, m) = http(addr, "GET", "/metrics", "").await;
            if m.contains(lag_line) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never closed: {m}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let counted = std::time::Instant::now();
        (slow.until_close().await, counted)
    });
    for chunk in (0..N).collect::<Vec<_>>().chunks(100) {
        let evs: Vec<Value> = chunk
            .iter()
            .map(|&i| ev("trades.S", "trade", padded(i)))
            .collect();
        publish_http(srv.addr, &evs).await;
    }
    let mut fast = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .unwrap()
        .unwrap();
    let ((seen, closed), counted) = watcher.await.unwrap();
    let elapsed = counted - t0;
    assert_eq!(closed.code, 4008, "{closed:?}");
    assert_eq!(closed.reason, "slow consumer");
    // Not before the lag: the first event it missed was published after t0.
    assert!(elapsed >= lag, "closed after {elapsed:?}");
    // What it did receive before the close is a gap-free prefix.
    let seqs: Vec<u64> = seen
        .iter()
        .filter(|v| v["type"] == "event")
        .map(|v| v["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.iter().enumerate().all(|(i, &s)| s == i as u64 + 1));
    assert!(seqs.len() < N);
    fast.send(json!({"op":"ping","id":2})).await;
    fast.expect_type("pong").await;
}

#[tokio::test]
async fn a_reader_that_pauses_during_a_burst_is_not_a_slow_consumer() {
    // 4 MB arrives while the reader sleeps 300 ms: with the old size rule (256 KiB) it was
    // closed; by time it is a reader briefly behind, far inside the default 5 s lag.
    let srv = TestServer::default();
    let mut c = Client::connect_small_rcvbuf(&srv).await;
    c.subscribe(&["trades.B"]).await;
    const N: usize = 2_000;
    for chunk in (0..N).collect::<Vec<_>>().chunks(100) {
        let evs: Vec<Value> = chunk
            .iter()
            .map(|&i| ev("trades.B", "trade", padded(i)))
            .collect();
        publish_http(srv.addr, &evs).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for want in 1..=N as u64 {
        let e = c.expect_type("event").await;
        assert_eq!(e["seq"], want);
    }
    c.send(json!({"op":"ping","id":1})).await;
    c.expect_type("pong").await;
}

#[tokio::test]
async fn private_events_are_not_stuck_behind_a_quote_backlog() {
    let srv = TestServer::start(|c| c.shards = 1);
    let mut c = Client::connect_small_rcvbuf(&srv).await;
    let quotes: Vec<String> = (0..200).map(|i| format!("quotes.S{i}")).collect();
    let mut chans: Vec<&str> = quotes.iter().map(|s| s.as_str()).collect();
    chans.push("acct.42.orders");
    c.subscribe(&chans).await;
    // Fill the socket with quotes on many symbols while the client does not read.
    for round in 0..20 {
        let evs: Vec<Value> = quotes
            .iter()
            .map(|q| ev(q, "quote", json!({"r": round, "pad": "y".repeat(1500)})))
            .collect();
        for part in evs.chunks(100) {
            publish_http(srv.addr, part).await;
        }
    }
    publish_http(
        srv.addr,
        &[ev(
            "acct.42.orders",
            "order_update",
            json!({"status":"filled"}),
        )],
    )
    .await;
    // The order arrives before the bulk of pending quotes: only what the kernel buffers hold
    // (256 KiB server send buffer, 32 KiB client receive buffer, each doubled by Linux) and
    // the committed window (64 KiB) precede it: under ~800 KiB of 1.5 KiB quotes.
    let mut before = 0usize;
    loop {
        let v = c.recv().await;
        if v["channel"] == "acct.42.orders" {
            break;
        }
        before += 1;
    }
    assert!(before < 700, "{before} quote frames came first");
    // Behind it, at most one (conflated) quote per symbol is left.
    let rest = c.sync().await;
    let quotes_after = rest.iter().filter(|v| v["type"] == "event").count();
    assert!(quotes_after <= 200, "{quotes_after}");
}

#[tokio::test]
async fn max_hz_caps_the_update_rate_and_delivers_the_latest() {
    let srv = TestServer::default();
    let mut c = Client::connect(&srv).await;
    c.send(json!({"op":"subscribe","channels":["quotes.HZ"],"max_hz":5}))
        .await;
    c.expect_type("subscribed").await;
    // 40 quotes over ~1 s, 25 ms apart (longer on a slow machine: the bound below uses the
    // measured time).
    let t0 = std::time::Instant::now();
    for i in 1..=40u64 {
        publish_http(srv.addr, &[ev("quotes.HZ", "quote", json!({"bid": i}))]).await;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let publishing = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = c.sync().await;
    let events: Vec<u64> = got
        .iter()
        .filter(|v| v["type"] == "event")
        .map(|v| v["seq"].as_u64().unwrap())
        .collect();
    // At 5 Hz: at most one update per 200 ms of publishing, plus the first (sent at once)
    // and the last (released after publishing ended); far fewer than the 40 published.
    let max = (publishing * 5.0).ceil() as usize + 2;
    assert!(
        (2..=max).contains(&events.len()),
        "{} updates in {publishing:.2} s: {events:?}",
        events.len()
    );
    assert_eq!(
        *events.last().unwrap(),
        40,
        "the newest value is always delivered"
    );
    assert!(got.iter().any(|v| v["type"] == "conflated"));
}
