//! A publisher through Pusher's HTTP API: signed `POST /apps/{id}/batch_events` requests
//! over 8 keep-alive HTTP/1.1 connections, one request in flight on each, paced like the WebSocket
//! publisher (`publisher.rs`) and stamping each event's data with the send time. The data
//! is a JSON string (`"{\"t\":<ns>,\"p\":\"xx…\"}"`), as Pusher's SDKs send an object.

use crate::publisher::PubPlan;
use crate::stats::{now_ns, Shared};
use anyhow::{bail, Context, Result};
use md5::{Digest, Md5};
use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The app the requests are signed for.
#[derive(Debug)]
pub(crate) struct App {
    pub(crate) id: String,
    pub(crate) key: String,
    pub(crate) secret: String,
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Request line target (path and signed query) for `body`, per Pusher's HTTP API
/// authentication: HMAC-SHA256 over `POST\nPATH\nQUERY`, parameters sorted by key.
pub(crate) fn signed_target(app: &App, path: &str, body: &[u8], timestamp: u64) -> String {
    let md5 = hex(&Md5::digest(body));
    let query = format!(
        "auth_key={}&auth_timestamp={timestamp}&auth_version=1.0&body_md5={md5}",
        app.key
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, app.secret.as_bytes());
    let sig = ring::hmac::sign(&key, format!("POST\n{path}\n{query}").as_bytes());
    format!("{path}?{query}&auth_signature={}", hex(sig.as_ref()))
}

/// Reads one HTTP/1.1 response (Content-Length or chunked body); returns the status and
/// the first bytes of the body. `buf` keeps whatever follows for the next response.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(u16, String)> {
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = memchr::memmem::find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            bail!("HTTP response head over 64 KiB");
        }
        let n = stream.read(&mut chunk).await.context("reading response")?;
        if n == 0 {
            bail!("server closed the HTTP connection");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("bad HTTP status line")?;
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
    };
    let body_end = if let Some(len) = header("content-length:") {
        let len: usize = len.parse().context("bad content-length")?;
        while buf.len() < head_end + len {
            let n = stream.read(&mut chunk).await.context("reading body")?;
            if n == 0 {
                bail!("server closed the HTTP connection mid-body");
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        head_end + len
    } else if header("transfer-encoding:").is_some_and(|v| v.contains("chunked")) {
        loop {
            if let Some(i) = memchr::memmem::find(&buf[head_end..], b"0\r\n\r\n") {
                break head_end + i + 5;
            }
            if buf.len() > 1024 * 1024 {
                bail!("chunked HTTP body over 1 MiB");
            }
            let n = stream.read(&mut chunk).await.context("reading body")?;
            if n == 0 {
                bail!("server closed the HTTP connection mid-body");
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    } else {
        head_end
    };
    let body: String = String::from_utf8_lossy(&buf[head_end..body_end])
        .chars()
        .take(100)
        .collect();
    buf.drain(..body_end);
    Ok((status, body))
}

/// Connections per publisher, each with one request in flight: requests are handed to
/// whichever is free, so a slow round trip on a loaded machine does not cap the rate.
const CONNS: usize = 8;

/// One keep-alive connection: sends each request it is handed and reads its answer.
async fn conn_task(
    plan_target: crate::config::Target,
    rx: Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Vec<u8>>>>,
    sh: Arc<Shared>,
) -> Result<()> {
    let mut stream = TcpStream::connect(plan_target.addr)
        .await
        .context("HTTP publisher connect")?;
    stream.set_nodelay(true)?;
    let mut rbuf = Vec::with_capacity(8 * 1024);
    loop {
        let next = rx.lock().await.recv().await;
        let Some(req) = next else { return Ok(()) };
        stream
            .write_all(&req)
            .await
            .context("HTTP publisher write")?;
        let (status, text) = read_response(&mut stream, &mut rbuf).await?;
        if !(200..300).contains(&status) {
            sh.error(format!("publisher HTTP {status}: {text}"));
        }
    }
}

pub(crate) async fn run(plan: PubPlan, app: Arc<App>, sh: Arc<Shared>) -> Result<()> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(CONNS);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let conns: Vec<_> = (0..CONNS)
        .map(|_| tokio::spawn(conn_task(plan.target.clone(), rx.clone(), sh.clone())))
        .collect();
    let path = format!("/apps/{}/batch_events", app.id);
    let pad = "x".repeat(plan.payload_bytes.saturating_sub(32));
    let mut body = String::with_capacity(plan.batch * (plan.payload_bytes + 80) + 16);
    let (mut sent, mut rr) = (0u64, 0usize);
    while Instant::now() < plan.end {
        let due = (plan.start.elapsed().as_secs_f64() * plan.rate) as u64;
        while sent + plan.batch as u64 <= due.max(plan.batch as u64) && Instant::now() < plan.end {
            let t = now_ns();
            let in_window =
                t >= sh.window_start_ns.load(Relaxed) && t < sh.window_end_ns.load(Relaxed);
            body.clear();
            body.push_str("{\"batch\":[");
            for i in 0..plan.batch {
                let ch = plan.chans[rr % plan.chans.len()];
                rr += 1;
                if i > 0 {
                    body.push(',');
                }
                let _ = write!(
                    body,
                    "{{\"name\":\"tick\",\"channel\":\"bench.{ch}\",\"data\":\"{{\\\"t\\\":{t},\\\"p\\\":\\\"{pad}\\\"}}\"}}"
                );
                sh.published_total[ch as usize].fetch_add(1, Relaxed);
                if in_window {
                    sh.published_window[ch as usize].fetch_add(1, Relaxed);
                }
            }
            body.push_str("]}");
            let ts = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let target = signed_target(&app, &path, body.as_bytes(), ts);
            let mut req = Vec::with_capacity(body.len() + 512);
            let _ = write!(
                StrBuf(&mut req),
                "POST {target} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                plan.target.host,
                body.len()
            );
            req.extend_from_slice(body.as_bytes());
            // Waits while every connection is busy (bounded: CONNS queued at most).
            if tx.send(req).await.is_err() {
                bail!("every HTTP publisher connection failed");
            }
            sent += plan.batch as u64;
            sh.published_events.fetch_add(plan.batch as u64, Relaxed);
            sh.published_ops.fetch_add(1, Relaxed);
        }
        let next =
            plan.start + Duration::from_secs_f64((sent + plan.batch as u64) as f64 / plan.rate);
        tokio::time::sleep_until(next.min(plan.end).into()).await;
    }
    drop(tx);
    for c in conns {
        match tokio::time::timeout(Duration::from_secs(5), c).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => sh.error(format!("publisher: {e:#}")),
            Ok(Err(e)) => sh.error(format!("publisher task: {e}")),
            Err(_) => sh.error("publisher: HTTP answer not received within 5 s".into()),
        }
    }
    Ok(())
}

/// `fmt::Write` into a byte vector.
struct StrBuf<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for StrBuf<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_pushers_documented_example() {
        // Pusher's documentation example (HTTP API reference, "Generating authentication
        // signatures"): key 278d425bdf160c739803, secret 7ad3773142a6692b25b8.
        let app = App {
            id: "3".into(),
            key: "278d425bdf160c739803".into(),
            secret: "7ad3773142a6692b25b8".into(),
        };
        let body = br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        let t = signed_target(&app, "/apps/3/events", body, 1353088179);
        assert_eq!(
            t,
            "/apps/3/events?auth_key=278d425bdf160c739803&auth_timestamp=1353088179\
             &auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f\
             &auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
        );
    }
}
