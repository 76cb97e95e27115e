//! One simulated subscriber: connect, upgrade, subscribe, then a lean read loop that parses
//! many frames per read syscall straight out of a per-connection buffer, checks per-channel
//! `seq` continuity, and records publisher-stamp → receipt latency.

use crate::config::{Dialect, Format, SlowMode};
use crate::scan::{bench_index, scan_json, scan_msgpack, scan_pusher, Kind, Msg};
use crate::stats::{lock, now_ns, LatHists, Shared};
use crate::ws::{self, apply_mask, Header, Parsed};
use anyhow::{bail, Context, Result};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// SO_RCVBUF of slow clients (the kernel doubles it); small so back-pressure reaches the server.
const SLOW_RCVBUF: u32 = 16 * 1024;
use tokio::sync::{watch, Semaphore};

/// What a client needs to know, shared by all clients of a run.
#[derive(Debug)]
pub(crate) struct ClientEnv {
    /// Servers; client `i` connects to `targets[i % targets.len()]`.
    pub(crate) targets: Vec<crate::config::Target>,
    pub(crate) format: Format,
    pub(crate) dialect: Dialect,
    pub(crate) read_buf: usize,
    /// SO_RCVBUF of normal clients, 0 for the kernel's autotuning.
    pub(crate) rcvbuf: usize,
    pub(crate) clients: u64,
    pub(crate) slow_mode: SlowMode,
    pub(crate) slow_fraction: f64,
    /// Expected events/s per channel (uniform round-robin publishing).
    pub(crate) per_channel_rate: f64,
    pub(crate) phase_start: Instant,
    pub(crate) connect_sem: Option<Arc<Semaphore>>,
    pub(crate) shared: Arc<Shared>,
}

#[derive(Debug)]
struct Sub {
    chan: u32,
    acked: bool,
    last: u64,
}

/// Per-connection state and batch-local counters (flushed after every read).
#[derive(Debug)]
struct Conn {
    slow: bool,
    subs: Vec<Sub>,
    pending_acks: usize,
    welcomed: bool,
    t0: Instant,
    events: u64,
    window: u64,
    out: Vec<u8>,
    /// Reassembly buffer, used only if the server fragments a message.
    frag: Vec<u8>,
    frag_op: u8,
    closed: bool,
}

/// Runs one client until `stop` flips or the connection ends.
pub(crate) async fn run(
    env: Arc<ClientEnv>,
    index: usize,
    chans: Vec<u32>,
    slow: bool,
    mut stop: watch::Receiver<bool>,
) {
    let sh = env.shared.clone();
    if let Err(e) = run_inner(&env, index, chans, slow, &mut stop).await {
        if !*stop.borrow() {
            sh.error(format!("client: {}", root(&e)));
        }
    }
}

fn root(e: &anyhow::Error) -> String {
    let s = format!("{e:#}");
    // Keep the map small: strip OS error numbers that vary little anyway.
    s.chars().take(120).collect()
}

async fn run_inner(
    env: &ClientEnv,
    index: usize,
    chans: Vec<u32>,
    slow: bool,
    stop: &mut watch::Receiver<bool>,
) -> Result<()> {
    let sh = &env.shared;
    let permit = match &env.connect_sem {
        Some(s) => Some(
            s.clone()
                .acquire_owned()
                .await
                .context("semaphore closed")?,
        ),
        None => None,
    };
    let target = &env.targets[index % env.targets.len()];
    let t0 = Instant::now();
    let connect = async {
        let sock = if target.addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .context("socket")?;
        if slow {
            // A small receive buffer makes a slow client's backlog reach the server's
            // outbound queue instead of hiding in megabytes of loopback socket buffer.
            sock.set_recv_buffer_size(SLOW_RCVBUF)
                .context("SO_RCVBUF")?;
        } else if env.rcvbuf > 0 {
            let size = u32::try_from(env.rcvbuf).unwrap_or(u32::MAX);
            sock.set_recv_buffer_size(size).context("SO_RCVBUF")?;
        }
        let mut stream = sock.connect(target.addr).await.context("connect")?;
        stream.set_nodelay(true).context("nodelay")?;
        let mut buf = vec![0u8; env.read_buf];
        let path = match env.format {
            Format::Json => target.path.clone(),
            Format::Msgpack if target.path.contains('?') => {
                format!("{}&format=msgpack", target.path)
            }
            Format::Msgpack => format!("{}?format=msgpack", target.path),
        };
        let n = ws::handshake(&mut stream, &target.host, &path, &mut buf).await?;
        Ok::<_, anyhow::Error>((stream, buf, n))
    };
    let (mut stream, mut buf, mut end) =
        match tokio::time::timeout(Duration::from_secs(15), connect).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                sh.connect_failed.fetch_add(1, Relaxed);
                return Err(e);
            }
            Err(_) => {
                sh.connect_failed.fetch_add(1, Relaxed);
                bail!("connect+upgrade timed out after 15 s");
            }
        };
    let mut c = Conn {
        slow,
        subs: chans
            .iter()
            .map(|&chan| Sub {
                chan,
                acked: false,
                last: 0,
            })
            .collect(),
        pending_acks: chans.len(),
        welcomed: false,
        t0,
        events: 0,
        window: 0,
        out: Vec::with_capacity(256),
        frag: Vec::new(),
        frag_op: 0,
        closed: false,
    };
    // Subscribe right away (pipelined behind the upgrade), at most 256 channels per op;
    // Pusher has one `pusher:subscribe` per channel.
    if env.dialect == Dialect::Pusher {
        for c0 in &chans {
            let op = format!(
                "{{\"event\":\"pusher:subscribe\",\"data\":{{\"channel\":\"bench.{c0}\"}}}}"
            );
            ws::encode_frame(&mut c.out, ws::OP_TEXT, op.as_bytes());
        }
    }
    for chunk in chans.chunks(256).filter(|_| env.dialect == Dialect::V1) {
        let names: Vec<String> = chunk.iter().map(|c| format!("\"bench.{c}\"")).collect();
        let op = format!(
            "{{\"op\":\"subscribe\",\"id\":1,\"channels\":[{}]}}",
            names.join(",")
        );
        ws::encode_frame(&mut c.out, ws::OP_TEXT, op.as_bytes());
    }
    stream
        .write_all(&c.out)
        .await
        .context("sending subscribe")?;
    c.out.clear();
    let mut permit = permit;

    let mut start = 0usize;
    // Pacing for `--slow-mode fraction`: frames allowed per second.
    let pace = (slow && env.slow_mode == SlowMode::Fraction)
        .then(|| (env.per_channel_rate * chans.len() as f64 * env.slow_fraction).max(1.0));
    let (pace_t0, mut paced_frames) = (Instant::now(), 0u64);
    loop {
        // Process everything complete in buf[start..end].
        if end > start {
            let frames = process(env, &mut c, &mut buf, &mut start, end)?;
            if c.welcomed && permit.is_some() {
                permit = None;
            }
            if !c.out.is_empty() {
                stream
                    .write_all(&c.out)
                    .await
                    .context("writing control frame")?;
                c.out.clear();
            }
            if c.closed {
                return Ok(());
            }
            if let Some(rate) = pace {
                paced_frames += frames;
                let due = pace_t0 + Duration::from_secs_f64(paced_frames as f64 / rate);
                tokio::select! {
                    _ = tokio::time::sleep_until(due.into()) => {}
                    _ = stop.changed() => return close(&mut stream).await,
                }
            }
        }
        // Compact / grow so the next read has room.
        if start == end {
            start = 0;
            end = 0;
        } else if start > 0 {
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
        }
        if end == buf.len() {
            let need = match ws::parse_header(&buf[..end])? {
                Parsed::Frame(h) => h.header_len + h.payload_len,
                Parsed::NeedHeader => buf.len() + 16,
            };
            buf.resize(need.max(buf.len() * 2), 0);
        }
        if slow && env.slow_mode == SlowMode::Stop && c.pending_acks == 0 {
            // Stop reading until the run ends, then drain briefly to see how we were closed.
            let _ = stop.changed().await;
            return drain_after_stop(env, &mut c, &mut stream, &mut buf).await;
        }
        let limit = if pace.is_some() {
            (end + 4096).min(buf.len())
        } else {
            buf.len()
        };
        let n = tokio::select! {
            r = stream.read(&mut buf[end..limit]) => r.context("read")?,
            _ = stop.changed() => return close(&mut stream).await,
        };
        if n == 0 {
            if !*stop.borrow() {
                sh.close("eof without close frame".into());
            }
            return Ok(());
        }
        sh.bytes_rx.fetch_add(n as u64, Relaxed);
        end += n;
    }
}

async fn close(stream: &mut TcpStream) -> Result<()> {
    let mut out = Vec::with_capacity(8);
    ws::encode_close(&mut out, 1000);
    let _ = tokio::time::timeout(Duration::from_millis(200), stream.write_all(&out)).await;
    Ok(())
}

/// A stopped slow client: read for up to 2 s to learn whether the server closed us.
async fn drain_after_stop(
    env: &ClientEnv,
    c: &mut Conn,
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let (mut start, mut end) = (0usize, 0usize);
    loop {
        if end > start {
            process(env, c, buf, &mut start, end)?;
            if c.closed {
                return Ok(());
            }
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
        let n = match tokio::time::timeout_at(deadline, stream.read(&mut buf[end..])).await {
            Ok(Ok(0)) => {
                env.shared
                    .close("slow client: eof without close frame".into());
                return Ok(());
            }
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                env.shared.close(format!("slow client: {}", e.kind()));
                return Ok(());
            }
            Err(_) => return close(stream).await,
        };
        end += n;
    }
}

/// Handles every complete frame in `buf[*start..end]`; returns the number of frames.
fn process(
    env: &ClientEnv,
    c: &mut Conn,
    buf: &mut [u8],
    start: &mut usize,
    end: usize,
) -> Result<u64> {
    let sh = &env.shared;
    let now = now_ns();
    let (ws_start, ws_end) = (
        sh.window_start_ns.load(Relaxed),
        sh.window_end_ns.load(Relaxed),
    );
    let mut frames = 0u64;
    let slow = c.slow;
    let res = sh.with_hists(|hist| -> Result<()> {
        while *start < end {
            // Fast path: a final, unmasked text frame under 64 KiB (every event frame).
            if let Some((hl, pl)) = text_frame_len(&buf[*start..end]) {
                if end - *start < hl + pl {
                    break;
                }
                let p0 = *start + hl;
                *start = p0 + pl;
                frames += 1;
                on_message(
                    env,
                    c,
                    ws::OP_TEXT,
                    &buf[p0..p0 + pl],
                    now,
                    (ws_start, ws_end),
                    hist,
                );
                continue;
            }
            let Parsed::Frame(hd) = ws::parse_header(&buf[*start..end])? else {
                break;
            };
            let total = hd.header_len + hd.payload_len;
            if end - *start < total {
                break;
            }
            let p0 = *start + hd.header_len;
            let payload = &mut buf[p0..p0 + hd.payload_len];
            if let Some(m) = hd.mask {
                apply_mask(payload, m);
            }
            *start += total;
            frames += 1;
            on_frame(env, c, hd, payload, now, (ws_start, ws_end), hist);
            if c.closed {
                break;
            }
        }
        Ok(())
    });
    if c.events > 0 {
        let (ev, win) = if slow {
            (&sh.slow_events_rx, &sh.slow_window_rx)
        } else {
            (&sh.events_rx, &sh.window_rx)
        };
        ev.fetch_add(c.events, Relaxed);
        win.fetch_add(c.window, Relaxed);
        c.events = 0;
        c.window = 0;
    }
    res.map(|()| frames)
}

/// `(header_len, payload_len)` when `b` starts with the header of a final, unmasked text
/// frame with a 7- or 16-bit length; anything else goes through `ws::parse_header`.
#[inline]
fn text_frame_len(b: &[u8]) -> Option<(usize, usize)> {
    if b.len() < 4 || b[0] != 0x80 | ws::OP_TEXT {
        return None;
    }
    match b[1] {
        n @ 0..=125 => Some((2, n as usize)),
        126 => Some((4, usize::from(u16::from_be_bytes([b[2], b[3]])))),
        _ => None,
    }
}

fn on_frame(
    env: &ClientEnv,
    c: &mut Conn,
    hd: Header,
    payload: &[u8],
    now: u64,
    window: (u64, u64),
    hist: &mut LatHists,
) {
    let sh = &env.shared;
    match hd.opcode {
        ws::OP_TEXT | ws::OP_BINARY if hd.fin => {
            on_message(env, c, hd.opcode, payload, now, window, hist)
        }
        ws::OP_TEXT | ws::OP_BINARY => {
            c.frag_op = hd.opcode;
            c.frag.clear();
            c.frag.extend_from_slice(payload);
        }
        ws::OP_CONT => {
            c.frag.extend_from_slice(payload);
            if hd.fin {
                let msg = std::mem::take(&mut c.frag);
                let op = c.frag_op;
                on_message(env, c, op, &msg, now, window, hist);
                c.frag = msg;
            }
        }
        ws::OP_PING => {
            sh.pings_rx.fetch_add(1, Relaxed);
            ws::encode_frame(&mut c.out, ws::OP_PONG, payload);
        }
        ws::OP_PONG => {}
        ws::OP_CLOSE => {
            let code = if payload.len() >= 2 {
                u16::from_be_bytes([payload[0], payload[1]])
            } else {
                1005
            };
            let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or_default());
            let who = if c.slow { "slow client: " } else { "" };
            sh.close(format!("{who}{code} {reason}"));
            ws::encode_close(&mut c.out, code);
            c.closed = true;
        }
        op => {
            sh.error(format!("unknown opcode {op}"));
            c.closed = true;
        }
    }
}

fn on_message(
    env: &ClientEnv,
    c: &mut Conn,
    opcode: u8,
    payload: &[u8],
    now: u64,
    (ws_start, ws_end): (u64, u64),
    hist: &mut LatHists,
) {
    let sh = &env.shared;
    let msg: Msg<'_> = if opcode == ws::OP_BINARY {
        match scan_msgpack(payload) {
            Some(m) => m,
            None => {
                sh.unexpected.fetch_add(1, Relaxed);
                return;
            }
        }
    } else if env.dialect == Dialect::Pusher {
        scan_pusher(payload)
    } else {
        scan_json(payload)
    };
    let chan = msg.channel.and_then(bench_index);
    match msg.kind {
        Kind::Event => {
            // Pusher events carry no `seq`: counted, order not checkable.
            let pusher = env.dialect == Dialect::Pusher;
            let (Some(ch), Some(seq)) = (chan, msg.seq.or(pusher.then_some(0))) else {
                sh.unexpected.fetch_add(1, Relaxed);
                return;
            };
            let Some(sub) = c.subs.iter_mut().find(|s| s.chan == ch && s.acked) else {
                sh.unexpected.fetch_add(1, Relaxed);
                return;
            };
            c.events += 1;
            let expect = sub.last + 1;
            if pusher || seq == expect {
                sub.last = seq;
            } else if seq > expect {
                sh.gaps.fetch_add(1, Relaxed);
                sh.missing.fetch_add(seq - expect, Relaxed);
                sub.last = seq;
            } else if seq == sub.last {
                sh.dups.fetch_add(1, Relaxed);
            } else {
                sh.out_of_order.fetch_add(1, Relaxed);
            }
            if let Some(t) = msg.t {
                let lat = now.saturating_sub(t).max(1);
                if !c.slow {
                    hist.interval.saturating_record(lat);
                }
                if t >= ws_start && t < ws_end {
                    c.window += 1;
                    let h = if c.slow {
                        &mut hist.slow
                    } else {
                        &mut hist.normal
                    };
                    h.saturating_record(lat);
                }
            }
        }
        Kind::Subscribed => {
            let Some(sub) = chan.and_then(|ch| c.subs.iter_mut().find(|s| s.chan == ch)) else {
                sh.unexpected.fetch_add(1, Relaxed);
                return;
            };
            sub.last = msg.seq.unwrap_or(0);
            if !sub.acked {
                sub.acked = true;
                c.pending_acks -= 1;
                let per = if c.slow {
                    &sh.slow_subs_acked
                } else {
                    &sh.subs_acked
                };
                if let Some(a) = per.get(sub.chan as usize) {
                    a.fetch_add(1, Relaxed);
                }
                if c.pending_acks == 0 && sh.acked_clients.fetch_add(1, Relaxed) + 1 == env.clients
                {
                    *lock(&sh.all_acked_at) = Some(env.phase_start.elapsed());
                }
            }
        }
        Kind::Welcome => {
            if !c.welcomed {
                c.welcomed = true;
                let us = c.t0.elapsed().as_micros() as u64;
                lock(&sh.connect_hist).saturating_record(us.max(1));
                if sh.connected.fetch_add(1, Relaxed) + 1 == env.clients {
                    *lock(&sh.all_connected_at) = Some(env.phase_start.elapsed());
                }
            }
        }
        Kind::Error => {
            let code = msg
                .code
                .map_or_else(|| "?".into(), |c| String::from_utf8_lossy(c).into_owned());
            sh.error(format!("error frame: {code}"));
        }
        Kind::Conflated => {
            sh.conflated.fetch_add(1, Relaxed);
            if let (Some(ch), Some(to)) = (chan, msg.to) {
                if let Some(sub) = c.subs.iter_mut().find(|s| s.chan == ch) {
                    sub.last = sub.last.max(to);
                }
            }
        }
        Kind::Shutdown => sh.close("server_shutdown frame".into()),
        Kind::Ping => ws::encode_frame(
            &mut c.out,
            ws::OP_TEXT,
            br#"{"event":"pusher:pong","data":"{}"}"#,
        ),
        Kind::Pong | Kind::Other => {}
    }
}
