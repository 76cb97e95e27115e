//! The built-in live board: `/` and the client bundle are served from the binary.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::util::{http, TestServer, TIMEOUT};

/// The response head (status line and headers, lower-cased) of a GET.
async fn head(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(TIMEOUT, s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    text.split_once("\r\n\r\n")
        .map(|(h, _)| h.to_ascii_lowercase())
        .unwrap_or_default()
}

#[tokio::test]
async fn board_and_client_bundle_are_served() {
    let srv = TestServer::default();

    let (status, body) = http(srv.addr, "GET", "/", "").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("quotecast.js"), "index.html loads the client");
    let h = head(srv.addr, "/").await;
    assert!(h.contains("content-type: text/html"), "{h}");
    assert!(h.contains("cache-control: no-cache"), "{h}");

    let (status, body) = http(srv.addr, "GET", "/quotecast.js", "").await;
    assert_eq!(status, 200);
    assert!(body.contains("QuotecastClient"), "the built client bundle");
    let h = head(srv.addr, "/quotecast.js").await;
    assert!(h.contains("content-type: text/javascript"), "{h}");
    assert!(
        h.contains("access-control-allow-origin: *"),
        "a page of any origin may import the client: {h}"
    );
    assert!(
        !head(srv.addr, "/")
            .await
            .contains("access-control-allow-origin"),
        "only the library is shared across origins"
    );

    let (status, _) = http(srv.addr, "GET", "/board.js", "").await;
    assert_eq!(status, 200);
    let (status, _) = http(srv.addr, "GET", "/nope.js", "").await;
    assert_eq!(status, 404);
    let (status, _) = http(srv.addr, "GET", "/health", "").await;
    assert_eq!(status, 200, "the other routes are untouched");
}
