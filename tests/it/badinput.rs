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
