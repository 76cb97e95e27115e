//! The engine without sockets: several shards pumped by the test, fake connections that
//! read at a chosen speed, and time as an input (`quotecast_engine::engine::harness`). Each test is
//! deterministic: no sleeps, no threads, no kernel.

use std::sync::Arc;
use std::time::Duration;

use quotecast_engine::engine::channel::ChannelKind;
use quotecast_engine::engine::harness::Harness;
use quotecast_engine::engine::outbound::{QueueLimits, COMMIT_WATERMARK};
use quotecast_engine::engine::shard::{Remote, ShardMsg};
use serde_json::Value;

fn events(msgs: &[Value]) -> Vec<u64> {
    msgs.iter()
        .filter(|m| m["type"] == "event")
        .map(|m| m["seq"].as_u64().unwrap())
        .collect()
}

fn pad(n: usize) -> String {
    format!(r#"{{"pad":"{}"}}"#, "x".repeat(n))
}

#[test]
fn one_channel_published_from_every_shard_keeps_one_order_everywhere() {
    let mut h = Harness::new(3);
    let readers: Vec<_> = (0..3).map(|s| h.connect(s)).collect();
    for r in &readers {
        h.subscribe(r, "trades.O", None);
        r.take_messages();
    }
    // Publishers on all three shards, interleaved, with no pump in between: the events
    // cross the hand-off queues in every order the shards allow.
    for i in 0..300 {
        h.publish_no_pump(i % 3, "trades.O", "trade", &format!(r#"{{"i":{i}}}"#));
        if i % 7 == 0 {
            h.pump();
        }
    }
    h.pump();
    let mut orders = Vec::new();
    for r in &readers {
        let got = h.read_all(r);
        assert_eq!(events(&got), (1..=300).collect::<Vec<_>>());
        orders.push(
            got.iter()
                .map(|m| m["data"]["i"].clone())
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(orders[0], orders[1]);
    assert_eq!(orders[1], orders[2]);
}

#[test]
fn since_replay_and_live_events_meet_without_gap_or_duplicate() {
    let mut h = Harness::new(2);
    for i in 1..=50 {
        h.publish(i % 2, "trades.R", "trade", &format!(r#"{{"i":{i}}}"#));
    }
    let r = h.connect(1);
    // The subscribe (with since=20) and ten more publishes race across the seam.
    h.subscribe_no_pump(&r, "trades.R", Some((20, "harness")), None);
    for i in 51..=60 {
        h.publish_no_pump(i % 2, "trades.R", "trade", &format!(r#"{{"i":{i}}}"#));
    }
    let got = h.read_all(&r);
    assert_eq!(got[0]["type"], "subscribed", "{got:?}");
    assert_eq!(got[0]["recovered"], true);
    assert_eq!(events(&got), (21..=60).collect::<Vec<_>>());
    // From another epoch nothing can be recovered, and the client is told.
    let late = h.connect(0);
    h.subscribe(&late, "trades.R", Some((20, "other-epoch")));
    let got = h.read_all(&late);
    assert_eq!(got[0]["recovered"], false);
    assert!(events(&got).is_empty());
}

#[test]
fn a_resync_tells_every_subscriber_and_restarts_its_position() {
    let mut h = Harness::new(2);
    let a = h.connect(0);
    let b = h.connect(1);
    for c in [&a, &b] {
        h.subscribe(c, "trades.Y", None);
    }
    h.publish(0, "trades.Y", "trade", "1");
    for s in 0..2 {
        h.inject(
            s,
            ShardMsg::Batch(vec![Remote::Resync {
                channel: Arc::from("trades.Y"),
                epoch: Arc::from("e2"),
                seq: 0,
                kind: ChannelKind::Stream,
            }]),
        );
    }
    h.pump();
    for c in [&a, &b] {
        let got = h.read_all(c);
        let notice = got.last().unwrap();
        assert_eq!(notice["type"], "subscribed", "{got:?}");
        assert_eq!(notice["resync"], true);
        assert_eq!(notice["recovered"], false);
        assert_eq!(notice["epoch"], "e2");
    }
}

#[test]
fn a_stalled_quote_reader_gets_the_latest_with_the_replaced_range() {
    let mut h = Harness::new(2);
    let r = h.connect(1);
    h.subscribe(&r, "quotes.C", None);
    r.take_messages();
    r.allowance.set(0);
    // 10 KB quotes: the first fill the committed window (64 KiB), the rest wait in the
    // subscription's slot, where each replaces the one before.
    for i in 1..=20 {
        let data = format!(r#"{{"bid":{i},"pad":"{}"}}"#, "x".repeat(10_000));
        h.publish(0, "quotes.C", "quote", &data);
    }
    let got = h.read_all(&r);
    // Every seq is either delivered or inside an announced range, in order, and the newest
    // always arrives.
    let mut next = 1;
    for m in &got {
        match m["type"].as_str().unwrap() {
            "conflated" => {
                assert_eq!(m["from"], next, "{got:?}");
                next = m["to"].as_u64().unwrap() + 1;
            }
            "event" => {
                assert_eq!(m["seq"], next, "{got:?}");
                next += 1;
            }
            t => panic!("{t}"),
        }
    }
    assert_eq!(next, 21);
    assert!(got.iter().any(|m| m["type"] == "conflated"));
    assert!(events(&got).len() < 20);
}

#[test]
fn a_private_event_overtakes_the_quote_backlog() {
    let mut h = Harness::new(1);
    let r = h.connect(0);
    let quotes: Vec<String> = (0..200).map(|i| format!("quotes.S{i}")).collect();
    for q in &quotes {
        h.subscribe(&r, q, None);
    }
    h.subscribe(&r, "user.42.orders", None);
    r.take_messages();
    r.allowance.set(0);
    for _round in 0..20 {
        for q in &quotes {
            h.publish_no_pump(0, q, "quote", &pad(1500));
        }
    }
    h.publish(
        0,
        "user.42.orders",
        "order_update",
        r#"{"status":"filled"}"#,
    );
    let got = h.read_all(&r);
    let before = got
        .iter()
        .position(|m| m["channel"] == "user.42.orders")
        .expect("the order arrives");
    // Only the committed window of quotes (64 KiB) precedes it.
    assert!(
        before * 1500 <= COMMIT_WATERMARK + 1600,
        "{before} quotes first"
    );
    // Behind it, at most one (conflated) quote per symbol.
    assert!(events(&got[before + 1..]).len() <= 200);
}

/// Limits for the slow-consumer tests: a 50 ms lag, caps far above the bursts.
fn lag_limits() -> QueueLimits {
    QueueLimits {
        max_frames: 1 << 20,
        max_bytes: 1 << 20,
        max_lag: Duration::from_millis(50),
    }
}

#[test]
fn a_200_kb_burst_drained_in_5_ms_is_not_a_slow_consumer() {
    let mut h = Harness::with_limits(2, lag_limits());
    let r = h.connect(1);
    h.subscribe(&r, "trades.B", None);
    r.take_messages();
    r.allowance.set(0);
    for _ in 0..200 {
        h.publish_no_pump(0, "trades.B", "trade", &pad(1000));
    }
    h.pump();
    assert!(r.backlog() > 200_000, "{}", r.backlog());
    // The reader drains 41 KB a millisecond while more events arrive.
    for ms in 0..5 {
        h.advance(Duration::from_millis(1));
        h.publish_no_pump(0, "trades.B", "trade", &format!(r#"{{"ms":{ms}}}"#));
        h.read(&r, 41_000);
        h.check_lag(1);
    }
    let got = h.read_all(&r);
    assert!(got.iter().all(|m| m["type"] == "event"), "no close");
    assert_eq!(events(&got), (1..=205).collect::<Vec<_>>());
    assert_eq!(h.shards[1].stats.slow_closes.total(), 0);
}

#[test]
fn a_reader_stalled_past_the_lag_is_closed_by_the_next_event_or_the_check() {
    for by_check in [false, true] {
        let mut h = Harness::with_limits(2, lag_limits());
        let r = h.connect(1);
        h.subscribe(&r, "trades.L", None);
        r.take_messages();
        r.allowance.set(0);
        h.publish(0, "trades.L", "trade", "1");
        h.advance(Duration::from_millis(50));
        // At exactly the lag: still fine.
        h.publish(0, "trades.L", "trade", "2");
        h.check_lag(1);
        assert!(!r.is_closing());
        h.advance(Duration::from_millis(5));
        if by_check {
            h.check_lag(1);
        } else {
            h.publish(0, "trades.L", "trade", "3");
        }
        assert!(r.is_closing(), "closed once the oldest event waited 55 ms");
        let got = h.read_all(&r);
        let close = got.last().unwrap();
        assert_eq!(close["close"], 4008, "{got:?}");
        assert_eq!(close["reason"], "slow consumer");
        // The unsent backlog is dropped: nothing but the close.
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(h.shards[1].stats.slow_closes.lag, 1);
    }
}

#[test]
fn a_reader_too_slow_for_its_stream_is_closed_although_it_reads() {
    let mut h = Harness::with_limits(1, lag_limits());
    let r = h.connect(0);
    h.subscribe(&r, "trades.H", None);
    r.take_messages();
    // One event's frame, measured.
    h.publish(0, "trades.H", "trade", &pad(100));
    let frame = r.received.borrow().len();
    r.take_messages();
    r.allowance.set(0);
    let mut closed_at = None;
    for ms in 1..=1000u64 {
        h.advance(Duration::from_millis(1));
        h.publish(0, "trades.H", "trade", &pad(100));
        // Half an event's frame per millisecond: half the publish rate.
        h.read(&r, frame / 2);
        if r.is_closing() {
            closed_at = Some(ms);
            break;
        }
    }
    let ms = closed_at.expect("a reader at half the rate lags out");
    // The oldest frame waits half the elapsed time: past 50 ms after ~100 ms (the age is
    // overstated by at most lag / 16, about 3 ms).
    assert!((90..=105).contains(&ms), "{ms}");
    assert_eq!(h.shards[0].stats.slow_closes.lag, 1);
}

#[test]
fn the_memory_cap_closes_before_the_lag_when_a_stream_outruns_it() {
    let mut h = Harness::with_limits(1, lag_limits());
    let r = h.connect(0);
    h.subscribe(&r, "trades.M", None);
    r.take_messages();
    r.allowance.set(0);
    for _ in 0..1200 {
        h.publish_no_pump(0, "trades.M", "trade", &pad(1000));
    }
    h.pump();
    assert!(r.is_closing());
    assert_eq!(h.shards[0].stats.slow_closes.memory, 1);
    assert_eq!(h.shards[0].stats.slow_closes.lag, 0);
}

#[test]
fn quotes_alone_never_make_a_reader_slow() {
    let mut h = Harness::with_limits(1, lag_limits());
    let r = h.connect(0);
    h.subscribe(&r, "quotes.Q", None);
    r.take_messages();
    r.allowance.set(0);
    for i in 0..100 {
        h.advance(Duration::from_millis(10));
        h.publish(0, "quotes.Q", "quote", &format!(r#"{{"bid":{i}}}"#));
        h.check_lag(0);
    }
    assert!(!r.is_closing());
    let got = h.read_all(&r);
    assert_eq!(events(&got).last(), Some(&100));
}

#[test]
fn heartbeat_pings_the_live_and_closes_the_silent() {
    let mut h = Harness::new(1);
    let silent = h.connect(0);
    let live = h.connect(0);
    h.advance(Duration::from_secs(25));
    live.last_rx.set(h.now);
    h.heartbeat(0, Duration::from_secs(10));
    let got = silent.take_messages();
    assert_eq!(got.last().unwrap()["close"], 4000, "{got:?}");
    let frames = live.take_frames();
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].0, 0x9, "a ping");
    assert!(!live.is_closing());
}

/// Pusher and v1 subscribers share one channel: each gets its dialect's frame (Pusher's
/// `data` is a JSON string), and an excluded connection (a client event's sender) gets
/// nothing while everyone else, on every shard, gets the event.
#[test]
fn pusher_and_v1_subscribers_share_a_channel_and_exclusion_skips_one_connection() {
    use quotecast_engine::protocol::Format;
    let mut h = Harness::new(2);
    // (The harness subscribes through the engine, not the access check: any covered name.)
    let sender = h.connect_with(0, Format::Pusher);
    let other = h.connect_with(1, Format::Pusher);
    let v1 = h.connect_with(1, Format::Json);
    for c in [&sender, &other, &v1] {
        h.subscribe(c, "private.room", None);
        c.take_messages();
    }
    h.publish_excluding(0, "private.room", r#"{"typing":true}"#, sender.id);
    assert!(h.read_all(&sender).is_empty(), "the sender is excluded");
    let got = h.read_all(&other);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["channel"], "private.room");
    assert_eq!(
        got[0]["data"], r#"{"typing":true}"#,
        "Pusher data is a JSON string"
    );
    let got = h.read_all(&v1);
    assert_eq!(got[0]["data"]["typing"], true);
    // Without exclusion the sender gets the next one.
    h.publish(1, "private.room", "e", r#""text""#);
    let got = h.read_all(&sender);
    assert_eq!(got[0]["data"], "text");
}
