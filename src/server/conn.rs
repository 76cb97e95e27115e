//! The connection loop (server layer): one task per WebSocket that reads client frames and
//! decodes them into messages, answers control frames (ping, close), hands each op to
//! [`super::ops`] (which decides what it means), waits for writability when the socket is
//! full, releases `max_hz` slots on their timer, and runs the close handshake and linger.
//! Writes of fan-out frames and replies are done by the shard's commit, not here, so a
//! publish reaches many sockets without waking their tasks.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use std::pin::Pin;

use tokio::time::{sleep_until, Sleep};

use super::ops;
use super::peer::Peer;
use super::runtime::ShardCtx;
use crate::engine::session::SessionState as PeerState;
use crate::protocol::dialect::Reply;
use crate::protocol::encode::Welcome;
use crate::protocol::frame::{close_frame, frame, Message, OpCode};
use crate::protocol::{CloseCode, Format};

/// How long a closing connection may take to flush its close frame and say goodbye.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Size of the per-shard read buffer every connection reads into.
pub const SCRATCH_LEN: usize = 64 * 1024;
/// Reads per readiness event before yielding to other connections.
const MAX_READS_PER_WAKE: usize = 4;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0u8; SCRATCH_LEN]);
}

/// Registers an upgraded connection, answers or refuses it, and processes any bytes that
/// arrived with the upgrade request. Synchronous.
pub fn open(
    ctx: &Rc<ShardCtx>,
    peer: &Rc<Peer>,
    leftover: Bytes,
    reject: Option<(CloseCode, String)>,
) -> Option<std::net::SocketAddr> {
    ctx.shard.borrow_mut().add_peer(peer.clone());
    if let Some((code, reason)) = reject {
        // Refused after the upgrade so that a browser can read the reason in the close frame.
        let mut shard = ctx.shard.borrow_mut();
        shard.close_peer(peer, code, &reason, false);
        shard.commit();
    }
    let user = peer.identity.borrow().user.clone();
    let welcome = if peer.format == Format::Pusher {
        crate::pusher::ws::welcome(peer)
    } else {
        peer.format.reply(&Reply::Welcome(Welcome {
            kind: "welcome",
            protocol: 1,
            conn_id: &peer.conn_id(),
            user: user.as_deref(),
            heartbeat_ms: ctx.shared.config.heartbeat.as_millis() as u64,
            format: peer.format.as_str(),
            server: concat!("quotecast/", env!("CARGO_PKG_VERSION")),
        }))
    };
    peer.out.borrow_mut().push_control(welcome);
    if !leftover.is_empty() && !peer.is_closing() {
        let mut buf = leftover.to_vec();
        process_input(ctx, peer, &mut buf);
    }
    // `leftover` may be a slice of a larger read buffer and would pin all of it.
    drop(leftover);
    {
        let mut shard = ctx.shard.borrow_mut();
        shard.mark_dirty(peer);
        shard.commit();
    }
    // Captured now: once the peer has gone, the socket no longer knows its address.
    let remote = peer.stream.peer_addr().ok();
    ctx.shard.borrow_mut().stats.connects += 1;
    tracing::info!(
        conn = %peer.conn_id(),
        user = user.as_deref().unwrap_or("-"),
        remote = %DisplayOpt(remote),
        format = peer.format.as_str(),
        "connection open"
    );
    remote
}

/// Serves an opened connection (see [`open`]) until it closes, then forgets it. Kept apart
/// from `open` so that the opening's arguments and temporaries are not stored in the
/// connection's future for its whole life.
pub async fn serve(ctx: Rc<ShardCtx>, peer: Rc<Peer>, remote: Option<std::net::SocketAddr>) {
    // Boxed and created on first use: most connections never need a timer, and an inline
    // `Sleep` would sit in every connection's future.
    let mut timer: Option<Pin<Box<Sleep>>> = None;
    let mut close_deadline: Option<Instant> = None;
    loop {
        match peer.state() {
            PeerState::Dead => break,
            PeerState::Closing => {
                let deadline = *close_deadline.get_or_insert_with(|| Instant::now() + CLOSE_GRACE);
                if !peer.has_output() {
                    // Boxed: reached once per connection, it need not sit in every connection's future.
                    Box::pin(linger(&peer, deadline)).await;
                    break;
                }
                if Instant::now() >= deadline {
                    break;
                }
            }
            PeerState::Open => {}
        }
        let due = match (peer.next_due.get(), close_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(d) = due {
            match &mut timer {
                Some(t) => t.as_mut().reset(d.into()),
                None => timer = Some(Box::pin(sleep_until(d.into()))),
            }
        }
        let want_write = peer.blocked.get();
        tokio::select! {
            biased;
            _ = peer.signal.wait() => {
                if !peer.blocked.get() && peer.has_output() {
                    let mut shard = ctx.shard.borrow_mut();
                    shard.mark_dirty(&peer);
                    shard.commit();
                }
            }
            r = peer.stream.writable(), if want_write => {
                if r.is_err() {
                    peer.set_dead("socket error");
                    continue;
                }
                peer.blocked.set(false);
                let mut shard = ctx.shard.borrow_mut();
                shard.mark_dirty(&peer);
                shard.commit();
            }
            r = peer.stream.readable() => {
                if r.is_err() {
                    peer.set_dead("socket error");
                    continue;
                }
                on_readable(&ctx, &peer);
            }
            _ = async { if let Some(t) = timer.as_mut() { t.as_mut().await } }, if due.is_some() => {
                let now = Instant::now();
                if peer.next_due.get().is_some_and(|t| t <= now) {
                    peer.next_due.set(None);
                    let next = peer.out.borrow_mut().release_due(now);
                    if let Some(n) = next {
                        peer.schedule(n);
                    }
                    let mut shard = ctx.shard.borrow_mut();
                    shard.mark_dirty(&peer);
                    shard.commit();
                }
            }
        }
    }
    let (code, reason) = peer
        .close_reason()
        .unwrap_or((CloseCode::Abnormal, "gone".into()));
    // The user may have authenticated after the open line.
    let user = peer.identity.borrow().user.clone();
    tracing::info!(
        conn = %peer.conn_id(),
        user = user.as_deref().unwrap_or("-"),
        remote = %DisplayOpt(remote),
        code = code.code(),
        reason = %reason,
        "connection closed"
    );
    // A Pusher connection's presence memberships end (member_removed) and its counts go.
    crate::pusher::ws::gone(&ctx, &peer);
    {
        let mut shard = ctx.shard.borrow_mut();
        shard.stats.count_disconnect(code);
        shard.remove_peer(&peer);
        shard.commit();
    }
    // Give the user's connection slot back now, not whenever the last reference drops.
    peer.release_user_slot();
    ctx.on_peer_gone();
}

/// Prints an optional value or `-` (for log fields).
struct DisplayOpt<T>(Option<T>);

impl<T: std::fmt::Display> std::fmt::Display for DisplayOpt<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(v) => v.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// After our close frame is out: half-close and wait briefly for the client's close or EOF,
/// so unread input does not turn our FIN into a reset that could destroy the close frame.
async fn linger(peer: &Peer, deadline: Instant) {
    let _ = socket2::SockRef::from(&peer.stream).shutdown(std::net::Shutdown::Write);
    let mut buf = vec![0u8; 512];
    loop {
        tokio::select! {
            r = peer.stream.readable() => {
                if r.is_err() { return; }
                match peer.stream.try_read(&mut buf) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
            _ = sleep_until(deadline.into()) => return,
        }
    }
}

fn on_readable(ctx: &Rc<ShardCtx>, peer: &Rc<Peer>) {
    ctx.shard.borrow_mut().tick();
    SCRATCH.with(|s| {
        let mut scratch = s.borrow_mut();
        for _ in 0..MAX_READS_PER_WAKE {
            if peer.state() != PeerState::Open && peer.state() != PeerState::Closing {
                return;
            }
            match peer.stream.try_read(&mut scratch[..]) {
                Ok(0) => {
                    peer.set_dead("peer closed the connection");
                    return;
                }
                Ok(n) => {
                    peer.last_rx.set(Instant::now());
                    if peer.state() == PeerState::Open {
                        process_input(ctx, peer, &mut scratch[..n]);
                    }
                    if n < scratch.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    peer.set_dead("read failed");
                    return;
                }
            }
        }
    });
    ctx.shard.borrow_mut().commit();
}

/// Largest message accepted before a connection has authenticated (bytes). An `auth` op with
/// a token of 64 grants fits easily; a 256 KiB message from 400 idle unauthenticated sockets
/// raised the server's memory by 145 MB, this caps that at 16 KiB (then 1009 past 16 times
/// that, like any oversized frame).
pub const PRE_AUTH_MAX_MESSAGE: usize = 16 * 1024;

/// Decodes `data` (just read) together with any partial frame kept from before.
fn process_input(ctx: &Rc<ShardCtx>, peer: &Rc<Peer>, data: &mut [u8]) {
    let mut inbuf = peer.inbuf.borrow_mut();
    let mut decoder = peer.decoder.borrow_mut();
    // Until a connection has authenticated it may only send small messages (an `auth` op),
    // so a crowd of unauthenticated sockets cannot each make the server hold a full-size
    // partial frame for the whole auth deadline. Raised for the read after `auth` succeeds.
    let max = ctx.shared.config.max_message_bytes;
    decoder.set_max_message(if peer.authed.get() {
        max
    } else {
        max.min(PRE_AUTH_MAX_MESSAGE)
    });
    let on = |m: Message<'_>| handle_message(ctx, peer, m);
    if inbuf.is_empty() {
        match decoder.decode(data, on) {
            Ok(used) => inbuf.extend_from_slice(&data[used..]),
            Err(e) => protocol_close(ctx, peer, e.code, e.reason),
        }
    } else {
        inbuf.extend_from_slice(data);
        match decoder.decode(&mut inbuf[..], on) {
            Ok(used) => {
                inbuf.drain(..used);
                if inbuf.is_empty() {
                    *inbuf = Vec::new();
                }
            }
            Err(e) => protocol_close(ctx, peer, e.code, e.reason),
        }
    }
    if peer.is_closing() {
        *inbuf = Vec::new();
    }
}

fn protocol_close(ctx: &Rc<ShardCtx>, peer: &Rc<Peer>, code: CloseCode, reason: &str) {
    let text = if code == CloseCode::ProtocolError {
        format!("protocol error: {reason}")
    } else {
        reason.to_string()
    };
    ctx.shard.borrow_mut().close_peer(peer, code, &text, false);
}

/// Parses an op and answers it; an op the server does not know goes to the rpc hook when
/// one is configured (`unknown_op` otherwise).
fn dispatch(ctx: &Rc<ShardCtx>, peer: &Rc<Peer>, binary: bool, payload: &[u8]) {
    let parsed = peer.format.parse_op(binary, payload);
    if let Err((_, crate::protocol::op::OpError::UnknownOp(_))) = &parsed {
        if ctx.shared.config.hooks.rpc.is_some() {
            let value = if binary {
                rmp_serde::from_slice::<serde_json::Value>(payload).ok()
            } else {
                serde_json::from_slice::<serde_json::Value>(payload).ok()
            };
            if let Some(serde_json::Value::Object(op)) = value {
                super::rpc_hook::start(ctx, peer, op);
                return;
            }
        }
    }
    ops::handle(ctx, peer, parsed)
}

/// One decoded message: ops (text frames read as JSON, binary frames as MessagePack) go to
/// [`ops::handle`]; control frames and oversized messages are answered here. False once the
/// connection is closing, so the decoder stops.
fn handle_message(ctx: &Rc<ShardCtx>, peer: &Rc<Peer>, msg: Message<'_>) -> bool {
    if peer.is_closing() {
        return false;
    }
    match msg {
        Message::Text(t) if peer.format == Format::Pusher => {
            crate::pusher::ws::handle(ctx, peer, t)
        }
        Message::Binary(_) if peer.format == Format::Pusher => ops::send(
            ctx,
            peer,
            crate::protocol::pusher::error(None, "Binary messages are not supported"),
        ),
        Message::Text(t) => dispatch(ctx, peer, false, t),
        Message::Binary(b) => dispatch(ctx, peer, true, b),
        Message::Ping(p) => {
            peer.out.borrow_mut().push_control(frame(OpCode::Pong, p));
            ctx.shard.borrow_mut().mark_dirty(peer);
        }
        Message::Pong => {}
        Message::Close(code) => {
            let mut shard = ctx.shard.borrow_mut();
            let echo = if code == 1005 { 1000 } else { code };
            peer.begin_close(
                close_frame(echo, "bye"),
                false,
                CloseCode::from_code(code),
                "client closed",
            );
            shard.mark_dirty(peer);
            return false;
        }
        Message::TooLarge => {
            let max = if peer.authed.get() {
                ctx.shared.config.max_message_bytes
            } else {
                ctx.shared
                    .config
                    .max_message_bytes
                    .min(PRE_AUTH_MAX_MESSAGE)
            };
            ops::send_error(
                ctx,
                peer,
                None,
                "too_large",
                None,
                &format!("message exceeds {max} bytes; skipped"),
            );
        }
    }
    !peer.is_closing()
}
