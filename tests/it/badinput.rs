//! Every malformed, oversized, unknown or out-of-place input gets its documented answer, and
//! the connection (or the server, for protocol violations) keeps working.

use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

use crate::util::*;
use quotecast::engine::channel::{ChannelPolicy, ChannelRule, ChannelRules};
use quotecast::protocol::frame::client_frame;

async fn expect_error(c: &mut Client, code: &str) -> serde_json::Value {
    let v = c.expect_type("error").await;
    assert_eq!(v["code"], code, "{v}");
    assert!(!v["message"].as_str().unwrap().is_empty());
    v
}

#[tokio::test]
async fn bad_ops_get_error_frames_and_the_connection_lives_on() {
    let srv = TestServer::start(|c| {
        c.max_message_bytes = 4096;
        c.rules = ChannelRules::new(vec![
            ChannelRule::new("quotes.*", ChannelPolicy::conflated()).unwrap(),
            ChannelRule::new("trades.*", ChannelPolicy::stream(10)).unwrap(),
        ]);
    });
    let mut c = Client::connect(&srv).await;
    let cases: Vec<(Message, &str)> = vec![
        (Message::Text("hello".into()), "bad_frame"),
        (Message::Text("[1,2,3]".into()), "bad_frame"),
        (Message::Text("{\"op\":".into()), "bad_frame"),
        (
            Message::Text(r#"{"op":"teleport","id":5}"#.into()),
            "unknown_op",
        ),
        (
            Message::Text(r#"{"op":"subscribe","id":6}"#.into()),
            "bad_request",
        ),
        (
            Message::Text(r#"{"op":"subscribe","channels":"trades.A"}"#.into()),
            "bad_request",
        ),
        (
            Message::Text(r#"{"op":"subscribe","channels":[]}"#.into()),
            "bad_request",
        ),
        (
            Message::Text(r#"{"op":"publish","channel":"trades.A","event":"e"}"#.into()),
            "bad_request",
        ),
        (
            Message::Text(r#"{"op":"publish","channel":"trades..A","event":"e","data":1}"#.into()),
            "bad_channel",
        ),
        (
            Message::Text(
                r#"{"op":"publish","channel":"trades.A","event":"bad event","data":1}"#.into(),
            ),
            "bad_event",
        ),
        (
            Message::Text(r#"{"op":"publish","channel":"other.A","event":"e","data":1}"#.into()),
            "unknown_channel",
        ),
        (
            Message::Text(r#"{"op":"auth","token":"x"}"#.into()),
            "unsupported",
        ),
        (
            Message::Text(format!(
                r#"{{"op":"publish","channel":"trades.A","event":"e","data":{}1{}}}"#,
                "[".repeat(500),
                "]".repeat(500)
            )),
            "bad_request",
        ),
        (Message::Text("x".repeat(10_000)), "too_large"),
        (Message::Binary(vec![0xc1, 0x00]), "bad_frame"),
        (
            Message::Binary(vec![0x81, 0xa2, b'o', b'p', 0xa4, b'n', b'o', b'p', b'e']),
            "unknown_op",
        ),
    ];
    for (m, code) in cases {
        let shown = format!("{m:?}").chars().take(80).collect::<String>();
        c.send_raw(m).await;
        let v = c.expect_type("error").await;
        assert_eq!(v["code"], code, "{shown} -> {v}");
    }
    // The id is echoed when it could be read.
    c.send_raw(Message::Text(r#"{"op":"teleport","id":"abc"}"#.into()))
        .await;
    assert_eq!(expect_error(&mut c, "unknown_op").await["id"], "abc");

    // Per-channel errors in a subscribe; the good channel still subscribes.
    c.send(json!({"op":"subscribe","id":8,"channels":["trades.OK","bad..name","nope.X","user.4２.orders"]})).await;
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(c.recv().await);
    }
    let find = |ch: &str| got.iter().find(|v| v["channel"] == ch).cloned().unwrap();
    assert_eq!(find("trades.OK")["type"], "subscribed");
    assert_eq!(find("bad..name")["code"], "bad_channel");
    assert_eq!(find("nope.X")["code"], "unknown_channel");
    assert_eq!(find("user.4２.orders")["code"], "bad_channel");
    c.send(json!({"op":"subscribe","channels":["trades.OK2"],"max_hz":5}))
        .await;
    assert_eq!(
        expect_error(&mut c, "bad_request").await["channel"],
        "trades.OK2"
    );
    // A huge channel name inside a small enough message.
    c.send(json!({"op":"subscribe","channels":["a".repeat(3000)]}))
        .await;
    expect_error(&mut c, "bad_channel").await;

    // Still alive and serving.
    c.send(json!({"op":"ping","id":1})).await;
    assert_eq!(c.expect_type("pong").await["id"], 1);
    publish_http(srv.addr, &[ev("trades.OK", "t", json!(1))]).await;
    assert_eq!(c.expect_type("event").await["seq"], 1);
}

#[tokio::test]
async fn protocol_violations_close_with_documented_codes_and_others_are_unharmed() {
    let srv = TestServer::default();
    let mut bystander = Client::connect(&srv).await;
    bystander.subscribe(&["trades.X"]).await;

    let cases: Vec<(Vec<u8>, u16)> = vec![
        (vec![0x81, 0x02, b'h', b'i'], 1002), // unmasked client frame
        (
            client_frame(true, 1, &[0xff, 0xfe, 0xfd], [1, 2, 3, 4]),
            1007,
        ), // invalid UTF-8
        (client_frame(true, 0x3, b"", [1, 2, 3, 4]), 1002), // reserved opcode
        (client_frame(false, 0x9, b"", [1, 2, 3, 4]), 1002), // fragmented ping
        (client_frame(true, 0x0, b"x", [1, 2, 3, 4]), 1002), // orphan continuation
        (vec![0x82, 0xFF, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4], 1009), // 4 GiB length prefix
    ];
    for (bytes, code) in cases {
        let (mut s, rest) = raw_connect(srv.addr, "").await;
        s.write_all(&bytes).await.unwrap();
        let got = raw_read_until_close(&mut s, rest, TIMEOUT).await;
        assert_eq!(got, Some(code), "{bytes:?}");
    }
    // Interleaved ping inside a fragmented message is fine.
    let (mut s, _) = raw_connect(srv.addr, "").await;
    let mut w = client_frame(false, 1, br#"{"op":"pi"#, [9, 9, 9, 9]);
    w.extend(client_frame(true, 9, b"hb", [1, 1, 1, 1]));
    w.extend(client_frame(true, 0, br#"ng","id":4}"#, [2, 2, 2, 2]));
    s.write_all(&w).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("\"pong\"") {
        let n = tokio::time::timeout(TIMEOUT, tokio::io::AsyncReadExt::read(&mut s, &mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        seen.extend_from_slice(&buf[..n]);
    }

    publish_http(srv.addr, &[ev("trades.X", "t", json!(1))]).await;
    assert_eq!(bystander.expect_type("event").await["seq"], 1);
}

#[tokio::test]
async fn slow_loris_and_bad_handshakes_are_refused() {
    let srv = TestServer::default();
    let (st, _) = http(srv.addr, "GET", "/ws", "").await;
    assert_eq!(st, 426, "plain GET on /ws");
    // A client that connects and sends half a request head gets dropped by the header
    // deadline; meanwhile others are served.
    let mut loris = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    loris
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut c = Client::connect(&srv).await;
    c.send(json!({"op":"ping"})).await;
    c.expect_type("pong").await;
}

#[tokio::test]
async fn subscriptions_per_connection_are_capped() {
    let srv = TestServer::start(|c| c.max_subscriptions = 3);
    let mut c = Client::connect(&srv).await;
    c.send(json!({"op":"subscribe","channels":["a.1","a.2","a.3","a.4"]}))
        .await;
    let got = c.sync().await;
    let acks = got.iter().filter(|v| v["type"] == "subscribed").count();
    let refused: Vec<_> = got
        .iter()
        .filter(|v| v["code"] == "too_many_subscriptions")
        .collect();
    assert_eq!((acks, refused.len()), (3, 1), "{got:?}");
    assert_eq!(refused[0]["channel"], "a.4");
    // Re-subscribing to a held channel is not a new subscription.
    c.send(json!({"op":"subscribe","channels":["a.1"]})).await;
    assert_eq!(c.expect_type("subscribed").await["channel"], "a.1");
}

/// MessagePack map header, then `op: publish, id: 7, channel: trades.A, event: e, data:`
/// with `data` left for the caller (the map has `pairs` pairs in all).
fn msgpack_publish_head(pairs: u32) -> Vec<u8> {
    let mut m = Vec::new();
    rmp::encode::write_map_len(&mut m, pairs).unwrap();
    for (k, v) in [("op", "publish"), ("channel", "trades.A"), ("event", "e")] {
        rmp::encode::write_str(&mut m, k).unwrap();
        rmp::encode::write_str(&mut m, v).unwrap();
    }
    rmp::encode::write_str(&mut m, "id").unwrap();
    rmp::encode::write_uint(&mut m, 7).unwrap();
    rmp::encode::write_str(&mut m, "data").unwrap();
    m
}

/// Regression: `bin`, ext values and non-string map keys in MessagePack ops were converted
/// to JSON (`{1:"a","1":"b"}` became an object with a duplicate key) and published, though
/// the protocol rejects them.
#[tokio::test]
async fn msgpack_bin_ext_and_non_string_keys_are_bad_frame() {
    let srv = TestServer::default();
    let mut sub = Client::connect(&srv).await;
    sub.subscribe(&["trades.A"]).await;
    let mut c = Client::connect_msgpack(&srv).await;
    let with_data = |data: &[u8]| [msgpack_publish_head(5), data.to_vec()].concat();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("bin", with_data(&[0xc4, 0x02, 0x01, 0x02])),
        ("ext", with_data(&[0xd6, 0x01, 0, 0, 0, 0])),
        (
            "integer and string key 1",
            with_data(&[0x82, 0x01, 0xa1, b'a', 0xa1, b'1', 0xa1, b'b']),
        ),
        (
            "bin nested in data",
            with_data(&[0x81, 0xa1, b'k', 0x92, 0x01, 0xc4, 0x00]),
        ),
        (
            "integer key beside the op's fields",
            [msgpack_publish_head(6), vec![0x01, 0x00, 0x01]].concat(),
        ),
    ];
    for (what, msg) in cases {
        c.send_raw(Message::Binary(msg)).await;
        let v = c.expect_type("error").await;
        assert_eq!(v["code"], "bad_frame", "{what}: {v}");
        assert!(!v["message"].as_str().unwrap().is_empty(), "{what}: {v}");
    }
    // Nothing was published: the first event the subscriber sees is the next good one.
    c.send_raw(Message::Binary(with_data(&[0xa2, b'o', b'k'])))
        .await;
    assert_eq!(c.expect_type("published").await["seq"], 1);
    let e = sub.expect_type("event").await;
    assert_eq!((&e["seq"], &e["data"]), (&json!(1), &json!("ok")));
}

/// Regression: JSON data MessagePack cannot carry (`1e400`, a lone surrogate) was
/// published, and MessagePack subscribers were sent a JSON text frame.
#[tokio::test]
async fn data_msgpack_cannot_carry_is_refused_at_publish() {
    let srv = TestServer::default();
    let mut sub = Client::connect_msgpack(&srv).await;
    sub.subscribe(&["trades.A"]).await;
    let mut c = Client::connect(&srv).await;
    for data in [r#"1e400"#, r#"{"s":"\ud800"}"#, r#"[1,"a\udfffb"]"#] {
        let op =
            format!(r#"{{"op":"publish","id":3,"channel":"trades.A","event":"e","data":{data}}}"#);
        c.send_raw(Message::Text(op)).await;
        let v = expect_error(&mut c, "bad_data").await;
        assert_eq!(v["id"], 3, "{v}");
        let body = format!(r#"{{"channel":"trades.A","event":"e","data":{data}}}"#);
        let (status, body) = http(srv.addr, "POST", "/api/publish", &body).await;
        assert_eq!(status, 400, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], "bad_data", "{v}");
    }
    // What can be carried still goes through, as MessagePack (`next` asserts the frame kind).
    c.send_raw(Message::Text(
        r#"{"op":"publish","id":4,"channel":"trades.A","event":"e","data":["\ud83d\ude00",1e300]}"#
            .into(),
    ))
    .await;
    assert_eq!(c.expect_type("published").await["seq"], 1);
    let e = sub.expect_type("event").await;
    assert_eq!(e["seq"], 1);
    assert_eq!(e["data"], json!(["😀", 1e300]));
}

/// Regression: a close frame with a code a client may not send was echoed back; RFC 6455
/// requires failing the connection (1002). A close reason that is not UTF-8 is 1007.
#[tokio::test]
async fn invalid_close_codes_are_answered_with_1002() {
    let srv = TestServer::default();
    let close = |payload: &[u8]| client_frame(true, 0x8, payload, [7, 7, 7, 7]);
    let mut cases: Vec<(Vec<u8>, u16)> = [999u16, 1004, 1005, 1006, 1015, 1016, 2999, 5000]
        .iter()
        .map(|c| (close(&c.to_be_bytes()), 1002))
        .collect();
    cases.push((close(&[0x03]), 1002)); // 1-byte payload
    cases.push((close(&[0x03, 0xe8, 0xc3, 0x28]), 1007)); // reason not UTF-8
    for code in [1000u16, 1001, 1012, 3000, 4999] {
        cases.push((close(&code.to_be_bytes()), code)); // valid codes are echoed
    }
    cases.push((close(b""), 1000)); // no code: 1000
    for (bytes, want) in cases {
        let (mut s, rest) = raw_connect(srv.addr, "").await;
        s.write_all(&bytes).await.unwrap();
        let got = raw_read_until_close(&mut s, rest, std::time::Duration::from_secs(5)).await;
        assert_eq!(got, Some(want), "{bytes:?}");
    }
}

/// Regression: an error repeating a ~1 MB channel name overflowed the sender's own outbound
/// queue, which closed it with 4008 instead of answering `bad_channel`.
#[tokio::test]
async fn error_for_a_huge_channel_name_is_cut_and_the_connection_lives() {
    let srv = TestServer::start(|c| c.max_message_bytes = 2 << 20);
    for msgpack in [false, true] {
        let mut c = if msgpack {
            Client::connect_msgpack(&srv).await
        } else {
            Client::connect(&srv).await
        };
        let huge = "q".repeat(1 << 20);
        c.send(json!({"op":"subscribe","id":1,"channels":[huge]}))
            .await;
        let v = expect_error(&mut c, "bad_channel").await;
        let echoed = v["channel"].as_str().unwrap();
        assert!(echoed.len() <= 210 && echoed.ends_with('…'), "{echoed}");
        assert!(huge.starts_with(echoed.trim_end_matches('…')));
        // A huge string in the wrong place: the serde message that quotes it is cut too.
        c.send(json!({"op":"subscribe","id":2,"channels":huge}))
            .await;
        let v = expect_error(&mut c, "bad_request").await;
        assert!(v["message"].as_str().unwrap().len() <= 210, "{v}");
        c.send(json!({"op":"ping","id":3})).await;
        assert_eq!(c.expect_type("pong").await["id"], 3);
    }
}

/// One admission for both transports (`server::ops::admit_publish`): a batch with a channel
/// no pattern accepts is refused whole, as an error frame naming the channel in its field on
/// WebSocket and as 400 naming it in the message over HTTP.
#[tokio::test]
async fn publish_to_an_unknown_channel_is_refused_whole_on_both_transports() {
    let srv = TestServer::start(|c| {
        c.rules = ChannelRules::new(vec![ChannelRule::new(
            "trades.*",
            ChannelPolicy::stream(10),
        )
        .unwrap()]);
    });
    let mut sub = Client::connect(&srv).await;
    sub.subscribe(&["trades.A"]).await;
    let mut c = Client::connect(&srv).await;
    c.send(json!({"op":"publish","id":7,"events":[
        {"channel":"trades.A","event":"e","data":1},
        {"channel":"other.B","event":"e","data":2}]}))
        .await;
    let v = expect_error(&mut c, "unknown_channel").await;
    assert_eq!(
        (&v["id"], &v["channel"], &v["message"]),
        (
            &json!(7),
            &json!("other.B"),
            &json!("no channel pattern accepts this name")
        ),
        "{v}"
    );
    let body = json!({"events":[
        {"channel":"trades.A","event":"e","data":1},
        {"channel":"other.B","event":"e","data":2}]})
    .to_string();
    let (status, body) = http(srv.addr, "POST", "/api/publish", &body).await;
    assert_eq!(status, 400, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["error"],
        json!({"code":"unknown_channel","message":"no channel pattern accepts `other.B`"})
    );
    // Nothing of either batch went out: the next event on trades.A is its first.
    c.send(json!({"op":"publish","id":8,"channel":"trades.A","event":"e","data":3}))
        .await;
    assert_eq!(c.expect_type("published").await["seq"], 1);
    let e = sub.expect_type("event").await;
    assert_eq!((&e["seq"], &e["data"]), (&json!(1), &json!(3)));
}
