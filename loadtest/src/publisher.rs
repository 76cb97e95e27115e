//! One publisher connection: sends `{"op":"publish","events":[...]}` batches without an
//! `id` (no ack traffic) at a paced rate, round-robin over the channels it owns, stamping
//! each event's `data.t` with the send time. A reader task answers pings and records
//! errors and closes.

use crate::stats::{now_ns, Shared};
use crate::ws;
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

#[derive(Debug)]
pub(crate) struct PubPlan {
    pub(crate) target: crate::config::Target,
    /// Channels owned by this publisher (so per-channel order is one publisher's order).
    pub(crate) chans: Vec<u32>,
    /// Events per second for this publisher.
    pub(crate) rate: f64,
    pub(crate) batch: usize,
    pub(crate) payload_bytes: usize,
    pub(crate) start: Instant,
    pub(crate) end: Instant,
}

/// Connects a publisher; returns once upgraded so the caller can start all at once.
pub(crate) async fn connect(plan: &PubPlan) -> Result<(TcpStream, Vec<u8>, usize)> {
    let mut stream = TcpStream::connect(plan.target.addr)
        .await
        .context("publisher connect")?;
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; 64 * 1024];
    let n = ws::handshake(&mut stream, &plan.target.host, &plan.target.path, &mut buf).await?;
    Ok((stream, buf, n))
}

pub(crate) async fn run(
    plan: PubPlan,
    conn: (TcpStream, Vec<u8>, usize),
    sh: Arc<Shared>,
) -> Result<()> {
    let (stream, buf, pre) = conn;
    let (mut rd, mut wr) = stream.into_split();
    let (pong_tx, mut pong_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let sh_r = sh.clone();
    // Set once we send our close, so the server's answer is not reported as a close.
    let closing = Arc::new(AtomicBool::new(false));
    let closing_r = closing.clone();
    let reader = tokio::spawn(async move {
        let mut buf = buf;
        let (mut start, mut end) = (0usize, pre);
        loop {
            while let Ok(ws::Parsed::Frame(h)) = ws::parse_header(&buf[start..end]) {
                let total = h.header_len + h.payload_len;
                if end - start < total {
                    break;
                }
                let p = &mut buf[start + h.header_len..start + total];
                if let Some(m) = h.mask {
                    ws::apply_mask(p, m);
                }
                match h.opcode {
                    ws::OP_PING => {
                        let mut out = Vec::new();
                        ws::encode_frame(&mut out, ws::OP_PONG, p);
                        let _ = pong_tx.send(out);
                    }
                    ws::OP_CLOSE => {
                        let code = if p.len() >= 2 {
                            u16::from_be_bytes([p[0], p[1]])
                        } else {
                            1005
                        };
                        let reason = String::from_utf8_lossy(p.get(2..).unwrap_or_default());
                        if !closing_r.load(Relaxed) {
                            sh_r.close(format!("publisher: {code} {reason}"));
                        }
                        return;
                    }
                    ws::OP_TEXT | ws::OP_BINARY => {
                        let m = crate::scan::scan_json(p);
                        if m.kind == crate::scan::Kind::Error {
                            let code = m.code.map_or_else(
                                || "?".into(),
                                |c| String::from_utf8_lossy(c).into_owned(),
                            );
                            sh_r.error(format!("publisher error frame: {code}"));
                        }
                    }
                    _ => {}
                }
                start += total;
            }
            if start == end {
                (start, end) = (0, 0);
            } else if start > 0 {
                buf.copy_within(start..end, 0);
                end -= start;
                start = 0;
            }
            if end == buf.len() {
                buf.resize(buf.len() * 2, 0);
            }
            match rd.read(&mut buf[end..]).await {
                Ok(0) | Err(_) => return,
                Ok(n) => end += n,
            }
        }
    });

    let pad = "x".repeat(plan.payload_bytes.saturating_sub(32));
    let mut op = String::with_capacity(plan.batch * (plan.payload_bytes + 64) + 64);
    let mut out = Vec::with_capacity(op.capacity() + 16);
    let mut sent: u64 = 0;
    let mut rr = 0usize;
    let result = async {
        while Instant::now() < plan.end {
            // Send every batch that is due by now, then sleep until the next one.
            let due = (plan.start.elapsed().as_secs_f64() * plan.rate) as u64;
            while sent + plan.batch as u64 <= due.max(plan.batch as u64) && Instant::now() < plan.end {
                let t = now_ns();
                let in_window = t >= sh.window_start_ns.load(Relaxed) && t < sh.window_end_ns.load(Relaxed);
                op.clear();
                op.push_str("{\"op\":\"publish\",\"events\":[");
                for i in 0..plan.batch {
                    let ch = plan.chans[rr % plan.chans.len()];
                    rr += 1;
                    if i > 0 {
                        op.push(',');
                    }
                    // Writing to a String cannot fail.
                    let _ = write!(
                        op,
                        "{{\"channel\":\"bench.{ch}\",\"event\":\"tick\",\"data\":{{\"t\":{t},\"p\":\"{pad}\"}}}}"
                    );
                    sh.published_total[ch as usize].fetch_add(1, Relaxed);
                    if in_window {
                        sh.published_window[ch as usize].fetch_add(1, Relaxed);
                    }
                }
                op.push_str("]}");
                out.clear();
                while let Ok(p) = pong_rx.try_recv() {
                    out.extend_from_slice(&p);
                }
                ws::encode_frame(&mut out, ws::OP_TEXT, op.as_bytes());
                wr.write_all(&out).await.context("publisher write")?;
                sent += plan.batch as u64;
                sh.published_events.fetch_add(plan.batch as u64, Relaxed);
                sh.published_ops.fetch_add(1, Relaxed);
            }
            let next = plan.start + Duration::from_secs_f64((sent + plan.batch as u64) as f64 / plan.rate);
            tokio::time::sleep_until(next.min(plan.end).into()).await;
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    // Say goodbye; the reader ends when the server closes.
    closing.store(true, Relaxed);
    let mut bye = Vec::new();
    ws::encode_close(&mut bye, 1000);
    let _ = tokio::time::timeout(Duration::from_millis(500), wr.write_all(&bye)).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), reader).await;
    result
}
