//! Heartbeat, graceful shutdown and the HTTP surface.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::*;

#[tokio::test]
async fn heartbeat_drops_a_dead_peer_but_keeps_a_live_one() {
    // Long enough that a client talking every ~50 ms is never silent for two intervals, even
    // when a loaded machine stalls this test for a few hundred milliseconds.
    let hb = Duration::from_millis(500);
    let srv = TestServer::start(|c| c.heartbeat = hb);
    let mut live = Client::connect(&srv).await;
    // tungstenite answers the server's pings while we read; keep this client talking until
    // told to stop, then check it is still served.
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let live_task = tokio::spawn(async move {
        loop {
            live.send(json!({"op":"ping"})).await;
            live.expect_type("pong").await;
            tokio::select! {
                _ = &mut stopped => break,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        live.send(json!({"op":"ping","id":"last"})).await;
        assert_eq!(live.expect_type("pong").await["id"], "last");
    });
    // Taken before the connection exists: the server cannot time it out earlier than two
    // intervals after this.
    let t0 = Instant::now();
    let (mut dead, rest) = raw_connect(srv.addr, "").await;
    // The raw client never answers pings: closed with 4000 after about two intervals.
    let code = raw_read_until_close(&mut dead, rest, TIMEOUT).await;
    assert_eq!(code, Some(4000));
    let waited = t0.elapsed();
    assert!(
        waited > hb * 2,
        "closed before two silent intervals: {waited:?}"
    );
    // The live client goes through more heartbeat checks after the dead one was dropped.
    tokio::time::sleep(hb * 2).await;
    let _ = stop.send(());
    live_task.await.expect("the live client was never dropped");
}

#[tokio::test]
async fn graceful_shutdown_delivers_queued_events_then_notice_then_1012() {
    let mut srv = TestServer::default();
    let mut clients = Vec::new();
    for fmt in [false, true, false] {
        let mut c = if fmt {
            Client::connect_msgpack(&srv).await
        } else {
            Client::connect(&srv).await
        };
        c.subscribe(&["acct.5.orders"]).await;
        clients.push(c);
    }
    let evs: Vec<Value> = (1..=50)
        .map(|i| ev("acct.5.orders", "order_update", json!({"i": i})))
        .collect();
    publish_http(srv.addr, &evs).await;
    let server = srv.take();
    let stopper = std::thread::spawn(move || server.shutdown());
    for c in &mut clients {
        let (seen, closed) = c.until_close().await;
        let events: Vec<u64> = seen
            .iter()
            .filter(|v| v["type"] == "event")
            .map(|v| v["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(
            events,
            (1..=50).collect::<Vec<_>>(),
            "nothing published before the signal is lost"
        );
        let last = seen.last().unwrap();
        assert_eq!(last["type"], "server_shutdown");
        assert!(last["reconnect_ms"].as_u64().unwrap() > 0);
        assert_eq!(closed.code, 1012);
    }
    let report = stopper.join().unwrap();
    assert_eq!(report.stats.published, 50);
    assert!(
        !report.latency.is_empty(),
        "ingest -> write latency was recorded"
    );
    // The listener is gone.
    assert!(tokio::net::TcpStream::connect(srv.addr).await.is_err());
}

#[tokio::test]
async fn client_close_is_answered() {
    let srv = TestServer::default();
    let c = Client::connect(&srv).await;
    let mut ws = c.ws;
    use futures_util::{SinkExt, StreamExt};
    ws.send(tokio_tungstenite::tungstenite::Message::Close(None))
        .await
        .unwrap();
    let mut got_close = false;
    while let Some(Ok(m)) = tokio::time::timeout(TIMEOUT, ws.next()).await.unwrap() {
        if let tokio_tungstenite::tungstenite::Message::Close(f) = m {
            assert_eq!(f.map(|f| u16::from(f.code)), Some(1000));
            got_close = true;
        }
    }
    assert!(got_close);
}

#[tokio::test]
async fn http_endpoints() {
    let srv = TestServer::start(|c| c.max_message_bytes = 2048);
    assert_eq!(
        http(srv.addr, "GET", "/health", "").await,
        (200, "ok\n".to_string())
    );
    assert_eq!(http(srv.addr, "GET", "/nope", "").await.0, 404);
    assert_eq!(http(srv.addr, "GET", "/api/publish", "").await.0, 405);
    let (st, body) = http(
        srv.addr,
        "POST",
        "/api/publish",
        r#"{"channel":"acct.42.orders","event":"order_update","data":{"a":1}}"#,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"channel":"acct.42.orders","seq":1})
    );
    let (st, body) = http(srv.addr, "POST", "/api/publish", "{nope").await;
    assert_eq!(st, 400);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["code"],
        "bad_frame"
    );
    let (st, body) = http(
        srv.addr,
        "POST",
        "/api/publish",
        r#"{"channel":"a","event":"e"}"#,
    )
    .await;
    assert_eq!(
        (
            st,
            serde_json::from_str::<Value>(&body).unwrap()["error"]["code"].clone()
        ),
        (400, json!("bad_request"))
    );
    let big = format!(
        r#"{{"channel":"a","event":"e","data":"{}"}}"#,
        "x".repeat(5000)
    );
    let (st, body) = http(srv.addr, "POST", "/api/publish", &big).await;
    assert_eq!(
        (
            st,
            serde_json::from_str::<Value>(&body).unwrap()["error"]["code"].clone()
        ),
        (413, json!("too_large"))
    );
}

#[tokio::test]
async fn sigterm_on_the_binary_drains_clients_with_1012() {
    let srv = ServerProcess::start(&mut ServerProcess::command(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "2",
        "--anonymous-publish",
    ]));
    let addr = srv.addr;
    let url = format!("ws://{addr}/ws");
    let mut c = Client::connect_url(&url, false).await;
    c.subscribe(&["trades.K"]).await;
    let evs: Vec<Value> = (1..=20)
        .map(|i| ev("trades.K", "trade", json!(i)))
        .collect();
    publish_http(addr, &evs).await;
    srv.sigterm();
    let (seen, closed) = c.until_close().await;
    let seqs: Vec<u64> = seen
        .iter()
        .filter(|v| v["type"] == "event")
        .map(|v| v["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
    assert_eq!(seen.last().unwrap()["type"], "server_shutdown");
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (1012, "server restart")
    );
    let mut child = srv.take();
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test]
async fn upgrade_on_a_kept_alive_http_connection_and_pipelined_first_frame() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let srv = TestServer::default();
    let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(TIMEOUT, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Second request on the same connection: an upgrade (served by hyper's path), with a
    // ping op pipelined right behind the head.
    let mut req =
        b"GET /ws?format=json HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            .to_vec();
    req.extend(quotecast::protocol::frame::client_frame(
        true,
        1,
        br#"{"op":"ping","id":42}"#,
        [1, 2, 3, 4],
    ));
    s.write_all(&req).await.unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains(r#""id":42"#) {
        let n = tokio::time::timeout(TIMEOUT, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&seen);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    assert!(text.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    assert!(text.contains(r#""type":"welcome""#));
    // The fast path also takes a pipelined first frame.
    let (mut s2, mut rest) = raw_connect(srv.addr, "").await;
    s2.write_all(&quotecast::protocol::frame::client_frame(
        true,
        1,
        br#"{"op":"ping","id":43}"#,
        [9, 9, 9, 9],
    ))
    .await
    .unwrap();
    while !String::from_utf8_lossy(&rest).contains(r#""id":43"#) {
        let n = tokio::time::timeout(TIMEOUT, s2.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        rest.extend_from_slice(&buf[..n]);
    }
}
