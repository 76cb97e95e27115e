//! Shared test helpers: a real server on 127.0.0.1:0, real WebSocket clients, a raw socket
//! client for protocol violations, and a minimal HTTP/1.1 client.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use quotecast::{Config, Server};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct TestServer {
    server: Option<Server>,
    pub(crate) addr: SocketAddr,
}

impl TestServer {
    /// A server open like the demo: anonymous publish and subscribe, and the default rules
    /// followed by the demo's public catch-all (so tests may use names like `acct.5.orders`).
    /// Tests of the default namespaces set `cfg.rules` themselves (see `namespaces.rs`).
    pub(crate) fn start(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let mut cfg = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            shards: 2,
            access: quotecast::config::AccessConfig::open(),
            ..Config::default()
        };
        cfg.rules
            .push(quotecast::engine::channel::ChannelRules::public_catch_all());
        tweak(&mut cfg);
        let server = Server::start(cfg).expect("server starts");
        let addr = server.local_addr();
        TestServer {
            server: Some(server),
            addr,
        }
    }

    pub(crate) fn default() -> TestServer {
        TestServer::start(|_| {})
    }

    pub(crate) fn url(&self, query: &str) -> String {
        format!("ws://{}/ws{}", self.addr, query)
    }

    pub(crate) fn take(&mut self) -> Server {
        self.server.take().expect("server still owned")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
    }
}

pub(crate) struct Client {
    pub(crate) ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub(crate) msgpack: bool,
    pub(crate) welcome: Value,
}

/// What a client saw when the server closed it.
#[derive(Debug, PartialEq)]
pub(crate) struct Closed {
    pub(crate) code: u16,
    pub(crate) reason: String,
}

impl Client {
    pub(crate) async fn connect(srv: &TestServer) -> Client {
        Client::connect_url(&srv.url(""), false).await
    }

    pub(crate) async fn connect_msgpack(srv: &TestServer) -> Client {
        Client::connect_url(&srv.url("?format=msgpack"), true).await
    }

    /// A JSON client whose socket receive buffer is small, so that backlog stays on the
    /// server side where it can be observed.
    pub(crate) async fn connect_small_rcvbuf(srv: &TestServer) -> Client {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.set_recv_buffer_size(32 * 1024).unwrap();
        sock.connect(&srv.addr.into()).unwrap();
        sock.set_nonblocking(true).unwrap();
        let stream = TcpStream::from_std(std::net::TcpStream::from(sock)).unwrap();
        let (ws, _) = tokio_tungstenite::client_async(srv.url(""), MaybeTlsStream::Plain(stream))
            .await
            .expect("handshake");
        let mut c = Client {
            ws,
            msgpack: false,
            welcome: Value::Null,
        };
        c.welcome = c.expect_type("welcome").await;
        c
    }

    /// Completes the upgrade (JSON format) without reading anything: for connections the
    /// server may refuse right after the upgrade, or whose welcome the test checks itself.
    pub(crate) async fn upgrade(
        req: impl tokio_tungstenite::tungstenite::client::IntoClientRequest + Unpin,
    ) -> Client {
        let (ws, _) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(req))
            .await
            .expect("upgrade in time")
            .expect("upgrade");
        Client {
            ws,
            msgpack: false,
            welcome: Value::Null,
        }
    }

    pub(crate) async fn connect_url(url: &str, msgpack: bool) -> Client {
        let (ws, _) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect in time")
            .expect("connect");
        let mut c = Client {
            ws,
            msgpack,
            welcome: Value::Null,
        };
        let w = c.recv().await;
        assert_eq!(w["type"], "welcome", "{w}");
        c.welcome = w;
        c
    }

    pub(crate) async fn send(&mut self, v: Value) {
        let msg = if self.msgpack {
            Message::Binary(rmp_serde::to_vec_named(&v).unwrap())
        } else {
            Message::Text(v.to_string())
        };
        self.ws.send(msg).await.expect("send");
    }

    /// Sends several ops in one write (buffered, then one flush): the server reads them
    /// together, so a rate limit or a queue sees them at once however slow this machine is.
    pub(crate) async fn send_batch(&mut self, ops: impl IntoIterator<Item = Value>) {
        for v in ops {
            let msg = if self.msgpack {
                Message::Binary(rmp_serde::to_vec_named(&v).unwrap())
            } else {
                Message::Text(v.to_string())
            };
            self.ws.feed(msg).await.expect("send");
        }
        self.ws.flush().await.expect("send");
    }

    pub(crate) async fn send_raw(&mut self, m: Message) {
        self.ws.send(m).await.expect("send");
    }

    /// Next data message as JSON (MessagePack decoded), skipping pings/pongs.
    pub(crate) async fn recv(&mut self) -> Value {
        match self.next().await {
            Ok(v) => v,
            Err(c) => panic!("connection closed while waiting for a message: {c:?}"),
        }
    }

    /// Next data message, or the close.
    pub(crate) async fn next(&mut self) -> Result<Value, Closed> {
        loop {
            let m = tokio::time::timeout(TIMEOUT, self.ws.next())
                .await
                .expect("message in time");
            match m {
                Some(Ok(Message::Text(t))) => {
                    assert!(!self.msgpack, "text frame on a msgpack connection: {t}");
                    return Ok(serde_json::from_str(&t).expect("server sends JSON"));
                }
                Some(Ok(Message::Binary(b))) => {
                    assert!(self.msgpack, "binary frame on a JSON connection");
                    return Ok(rmp_serde::from_slice(&b).expect("server sends MessagePack"));
                }
                Some(Ok(Message::Close(Some(f)))) => {
                    return Err(Closed {
                        code: u16::from(f.code),
                        reason: f.reason.to_string(),
                    })
                }
                Some(Ok(Message::Close(None))) => {
                    return Err(Closed {
                        code: 1005,
                        reason: String::new(),
                    })
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    return Err(Closed {
                        code: 1006,
                        reason: e.to_string(),
                    })
                }
                None => {
                    return Err(Closed {
                        code: 1006,
                        reason: "eof".into(),
                    })
                }
            }
        }
    }

    /// Reads until the server closes; returns the close and everything before it.
    pub(crate) async fn until_close(&mut self) -> (Vec<Value>, Closed) {
        let mut seen = Vec::new();
        loop {
            match self.next().await {
                Ok(v) => seen.push(v),
                Err(c) => return (seen, c),
            }
        }
    }

    pub(crate) async fn expect_type(&mut self, ty: &str) -> Value {
        let v = self.recv().await;
        assert_eq!(v["type"], ty, "expected {ty}, got {v}");
        v
    }

    pub(crate) async fn subscribe(&mut self, channels: &[&str]) -> Vec<Value> {
        self.send(json!({"op":"subscribe","channels":channels}))
            .await;
        let mut acks = Vec::new();
        for _ in channels {
            acks.push(self.expect_type("subscribed").await);
        }
        acks
    }

    /// A ping/pong round trip: everything the server queued before the pong has arrived.
    pub(crate) async fn sync(&mut self) -> Vec<Value> {
        self.send(json!({"op":"ping","id":"sync"})).await;
        let mut before = Vec::new();
        loop {
            let v = self.recv().await;
            if v["type"] == "pong" && v["id"] == "sync" {
                return before;
            }
            before.push(v);
        }
    }
}

/// A hand-made WebSocket connection over a raw socket, for sending what no client library
/// will (unmasked frames, bad UTF-8) and for not answering pings.
pub(crate) async fn raw_connect(addr: SocketAddr, query: &str) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /ws{query} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(TIMEOUT, s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "server closed during handshake");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            assert!(head.starts_with("HTTP/1.1 101"), "{head}");
            assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
            return (s, buf[end + 4..].to_vec());
        }
    }
}

/// Reads raw server frames until a close frame; returns its code. Pings are ignored (not
/// answered). Gives up after `limit`.
pub(crate) async fn raw_read_until_close(
    s: &mut TcpStream,
    mut buf: Vec<u8>,
    limit: Duration,
) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        // Parse complete frames in buf.
        while buf.len() >= 2 {
            let len7 = (buf[1] & 0x7f) as usize;
            let (len, hl) = match len7 {
                126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
                127 if buf.len() >= 10 => (
                    u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                126 | 127 => break,
                n => (n, 2),
            };
            if buf.len() < hl + len {
                break;
            }
            let op = buf[0] & 0x0f;
            if op == 8 {
                let p = &buf[hl..hl + len];
                return Some(if p.len() >= 2 {
                    u16::from_be_bytes([p[0], p[1]])
                } else {
                    1005
                });
            }
            buf.drain(..hl + len);
        }
        let mut chunk = [0u8; 65536];
        let n = match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return None,
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// One HTTP/1.1 request with `Connection: close`; returns status and body.
pub(crate) async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    http_with(addr, method, path, &[], body).await
}

/// Like [`http`], with extra headers.
pub(crate) async fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\n\
         {extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(TIMEOUT, s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

pub(crate) async fn publish_http(addr: SocketAddr, events: &[Value]) -> Vec<u64> {
    let (status, body) = http(
        addr,
        "POST",
        "/api/publish",
        &json!({ "events": events }).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["seqs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_u64().unwrap())
        .collect()
}

pub(crate) fn ev(channel: &str, event: &str, data: Value) -> Value {
    json!({"channel": channel, "event": event, "data": data})
}

/// The real `quotecast` binary as a child process: started from `cmd` (stdout is taken over
/// to read the `listening on ADDR` line), killed on drop unless taken.
pub(crate) struct ServerProcess {
    child: Option<std::process::Child>,
    pub(crate) addr: SocketAddr,
}

impl ServerProcess {
    /// `quotecast` with `args`, stderr discarded.
    pub(crate) fn command(args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_quotecast"));
        cmd.args(args).stderr(std::process::Stdio::null());
        cmd
    }

    /// Starts `cmd` and waits for its listening line.
    pub(crate) fn start(cmd: &mut std::process::Command) -> ServerProcess {
        use std::io::BufRead;
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn quotecast");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("no listening line: {line:?}"))
            .parse()
            .unwrap();
        ServerProcess {
            child: Some(child),
            addr,
        }
    }

    /// Sends SIGTERM (graceful drain).
    pub(crate) fn sigterm(&self) {
        let pid = self.child.as_ref().expect("still owned").id().to_string();
        assert!(std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
    }

    /// Takes the child, to wait for it.
    pub(crate) fn take(mut self) -> std::process::Child {
        self.child.take().expect("still owned")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A private `redis-server` child on a free loopback port, without persistence (a restart
/// loses everything). Killed on drop.
pub(crate) struct RedisServer {
    child: Option<std::process::Child>,
    pub(crate) port: u16,
    /// With [`RedisServer::start_in`]: where `SAVE` writes `dump.rdb` and a restart loads it.
    dir: Option<std::path::PathBuf>,
    /// More arguments (e.g. `--replicaof`).
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts redis-server on a free port and waits until it answers `PING`.
    pub(crate) fn start() -> RedisServer {
        RedisServer::start_with(None)
    }

    /// Like [`RedisServer::start`], with RDB snapshots in `dir` (`dump.rdb`) taken only by an
    /// explicit `SAVE`; a [`RedisServer::restart`] loads the last one, as a Redis with RDB
    /// persistence does after a crash.
    pub(crate) fn start_in(dir: &std::path::Path) -> RedisServer {
        RedisServer::start_with(Some(dir.to_path_buf()))
    }

    /// Like [`RedisServer::start`], as a replica of the Redis on `master`.
    pub(crate) fn start_replica_of(master: u16) -> RedisServer {
        RedisServer::start_with_extra(
            None,
            vec!["--replicaof".into(), "127.0.0.1".into(), master.to_string()],
        )
    }

    /// `redis-server --sentinel` on a free port, monitoring the master on `master` as
    /// `name` with quorum 1 and quick failure detection (500 ms) and failover; its config
    /// file (which Sentinel rewrites) lives in `dir`.
    pub(crate) fn start_sentinel(dir: &std::path::Path, name: &str, master: u16) -> RedisServer {
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "sentinel monitor {name} 127.0.0.1 {master} 1\n\
                 sentinel down-after-milliseconds {name} 500\n\
                 sentinel failover-timeout {name} 2000\n\
                 sentinel parallel-syncs {name} 1\n"
            ),
        )
        .unwrap();
        RedisServer::start_with_extra(
            None,
            vec![conf.to_string_lossy().into_owned(), "--sentinel".into()],
        )
    }

    fn start_with(dir: Option<std::path::PathBuf>) -> RedisServer {
        RedisServer::start_with_extra(dir, Vec::new())
    }

    fn start_with_extra(dir: Option<std::path::PathBuf>, extra: Vec<String>) -> RedisServer {
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut r = RedisServer {
                child: None,
                port,
                dir: dir.clone(),
                extra: extra.clone(),
            };
            if r.spawn() {
                return r;
            }
        }
        panic!("could not start redis-server");
    }

    /// Spawns on `self.port`; false if the process died before answering (port taken).
    fn spawn(&mut self) -> bool {
        let port = self.port.to_string();
        let mut cmd = std::process::Command::new("redis-server");
        // A config file (Sentinel) must come first.
        let (file, rest): (Vec<&String>, Vec<&String>) =
            self.extra.iter().partition(|a| a.ends_with(".conf"));
        cmd.args(file);
        if let Some(dir) = &self.dir {
            cmd.arg("--dir").arg(dir).args(["--dbfilename", "dump.rdb"]);
        }
        let mut child = cmd
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ])
            .args(rest)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn redis-server (is it installed?)");
        let deadline = std::time::Instant::now() + TIMEOUT;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            if matches!(redis_cmd(self.port, &["PING"]), Ok(RespValue::Simple(s)) if s == "PONG") {
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL) and waits for it: everything it held is gone.
    pub(crate) fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal (`STOP`, `CONT`, ...) to the server process.
    pub(crate) fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        assert!(std::process::Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status()
            .unwrap()
            .success());
    }

    /// A new server on the same port: empty, or with [`RedisServer::start_in`] loaded from
    /// the last snapshot.
    pub(crate) fn restart(&mut self) {
        self.stop();
        for _ in 0..50 {
            if self.spawn() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("could not restart redis-server on port {}", self.port);
    }

    /// Runs one command on a fresh connection.
    pub(crate) fn cmd(&self, args: &[&str]) -> RespValue {
        redis_cmd(self.port, args).unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A RESP reply.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RespValue {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<RespValue>>),
}

/// Sends one command to the Redis on `port` (blocking, fresh connection) and reads its reply.
pub(crate) fn redis_cmd(port: u16, args: &[&str]) -> std::io::Result<RespValue> {
    use std::io::{BufRead, BufReader, Write};
    fn read(r: &mut impl BufRead) -> std::io::Result<RespValue> {
        let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "eof",
            ));
        }
        let line = line.trim_end_matches("\r\n");
        let (kind, rest) = line.split_at(1.min(line.len()));
        let num = || rest.parse::<i64>().map_err(|_| bad(line));
        Ok(match kind {
            "+" => RespValue::Simple(rest.to_string()),
            "-" => RespValue::Error(rest.to_string()),
            ":" => RespValue::Int(num()?),
            "$" => match num()? {
                n if n < 0 => RespValue::Bulk(None),
                n => {
                    let mut b = vec![0u8; n as usize + 2];
                    r.read_exact(&mut b)?;
                    b.truncate(n as usize);
                    RespValue::Bulk(Some(b))
                }
            },
            "*" => match num()? {
                n if n < 0 => RespValue::Array(None),
                n => RespValue::Array(Some(
                    (0..n).map(|_| read(r)).collect::<std::io::Result<_>>()?,
                )),
            },
            _ => return Err(bad(line)),
        })
    }
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(TIMEOUT))?;
    let mut req = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        req.extend_from_slice(a.as_bytes());
        req.extend_from_slice(b"\r\n");
    }
    s.write_all(&req)?;
    read(&mut BufReader::new(s))
}

impl ServerProcess {
    /// SIGKILL: the process dies without draining or deregistering anything.
    pub(crate) fn sigkill(self) {
        let mut c = self.take();
        let _ = c.kill();
        let _ = c.wait();
    }
}
