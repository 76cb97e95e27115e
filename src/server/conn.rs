//! The connection loop (server layer): one task per WebSocket that reads and decodes client
//! frames, answers ops, waits for writability when the socket is full, releases `max_hz`
//! slots, and runs the close handshake. Writes of fan-out frames are done by the shard's
//! commit, not here, so a publish reaches many sockets without waking their tasks.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use std::pin::Pin;

use tokio::time::{sleep_until, Sleep};

use super::peer::Peer;
use super::runtime::ShardCtx;
use crate::auth::{can_subscribe, Denied, Role};
use crate::engine::channel::ChannelKind;
use crate::engine::session::SessionState as PeerState;
use crate::engine::shard::PubReply;
use crate::protocol::encode::{self, reply, Authenticated, Pong, Unsubscribed, Welcome};
use crate::protocol::frame::{close_frame, frame, Message, OpCode};
use crate::protocol::names::check_channel;
use crate::protocol::op::{parse_json, parse_msgpack, Id, Op};
use crate::protocol::CloseCode;

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
    let welcome = reply(
        peer.format,
        &Welcome {
            kind: "welcome",
            protocol: 1,
            conn_id: &peer.conn_id(),
            user: user.as_deref(),
            heartbeat_ms: ctx.shared.config.heartbeat.as_millis() as u64,
            format: peer.format.as_str(),
            server: concat!("quotecast/", env!("CARGO_PKG_VERSION")),
        },
    );
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

/// Decodes `data` (just read) together with any partial frame kept from before.
fn process_input(ctx: &Rc<ShardCtx>, peer: &Rc<Peer>, data: &mut [u8]) {
    let mut inbuf = peer.inbuf.borrow_mut();
    let mut decoder = peer.decoder.borrow_mut();
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

/// Queues a reply frame; a connection whose queue is full is a slow consumer.
fn send(ctx: &ShardCtx, peer: &Rc<Peer>, f: Bytes) {
    let queued = peer.reply(f);
    let mut shard = ctx.shard.borrow_mut();
    match queued {
        Ok(()) => shard.mark_dirty(peer),
        Err(why) => shard.close_slow(peer, why),
    }
}

fn send_error(
    ctx: &ShardCtx,
    peer: &Rc<Peer>,
    id: Option<&Id>,
    code: &str,
    channel: Option<&str>,
    msg: &str,
) {
    send(
        ctx,
        peer,
        encode::error(peer.format, id, code, channel, msg),
    );
}

fn handle_message(ctx: &Rc<ShardCtx>, peer: &Rc<Peer>, msg: Message<'_>) -> bool {
    if peer.is_closing() {
        return false;
    }
    match msg {
        Message::Text(t) => match parse_json(t) {
            Ok(op) => handle_op(ctx, peer, op),
            Err((id, e)) => send_error(ctx, peer, id.as_ref(), e.code(), None, &e.to_string()),
        },
        Message::Binary(b) => match parse_msgpack(b) {
            Ok(op) => handle_op(ctx, peer, op),
            Err((id, e)) => send_error(ctx, peer, id.as_ref(), e.code(), None, &e.to_string()),
        },
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
            let max = ctx.shared.config.max_message_bytes;
            send_error(
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

/// The op's `id`, for errors raised before the op is looked at.
fn op_id(op: &Op) -> Option<&Id> {
    match op {
        Op::Subscribe { id, .. }
        | Op::Unsubscribe { id, .. }
        | Op::Publish { id, .. }
        | Op::Ping { id }
        | Op::Auth { id, .. } => id.as_ref(),
    }
}

/// Applies the per-connection op rate limit; false when the op must be refused.
fn admit_op(ctx: &Rc<ShardCtx>, peer: &Rc<Peer>, op: &Op) -> bool {
    let now = Instant::now();
    peer.last_op.set(now);
    let allowed = match peer.bucket.borrow_mut().as_mut() {
        Some(b) => b.take(now),
        None => true,
    };
    if allowed {
        return true;
    }
    let v = peer.violations.get() + 1;
    peer.violations.set(v);
    ctx.shard.borrow_mut().stats.rate_limited_ops += 1;
    let access = &ctx.shared.config.access;
    if v > access.max_rate_violations {
        tracing::info!(conn = %peer.conn_id(), "closing: rate limit exceeded repeatedly");
        ctx.shard.borrow_mut().close_peer(
            peer,
            CloseCode::RateLimited,
            "rate limit exceeded",
            false,
        );
    } else {
        let msg = format!(
            "at most {} ops per second (burst {}); op dropped",
            access.ops_per_sec, access.ops_burst
        );
        send_error(ctx, peer, op_id(op), "rate_limited", None, &msg);
    }
    false
}

fn handle_op(ctx: &Rc<ShardCtx>, peer: &Rc<Peer>, op: Op) {
    if !admit_op(ctx, peer, &op) {
        return;
    }
    if !peer.authed.get() && !matches!(op, Op::Auth { .. } | Op::Ping { .. }) {
        let msg = r#"authenticate first: {"op":"auth","token":"<JWT>"}"#;
        send_error(ctx, peer, op_id(&op), "unauthorized", None, msg);
        return;
    }
    match op {
        Op::Subscribe {
            id,
            channels,
            snapshot,
            since,
            max_hz,
        } => {
            for name in channels {
                if let Err(e) = check_channel(&name) {
                    send_error(
                        ctx,
                        peer,
                        id.as_ref(),
                        "bad_channel",
                        Some(&name),
                        &e.to_string(),
                    );
                    continue;
                }
                let rules = &ctx.shared.engine.rules;
                let Some(resolved) = rules.resolve(&name) else {
                    send_error(
                        ctx,
                        peer,
                        id.as_ref(),
                        "unknown_channel",
                        Some(&name),
                        "no channel pattern accepts this name",
                    );
                    continue;
                };
                let denied = can_subscribe(&peer.identity.borrow(), &resolved, &name);
                match denied {
                    Ok(()) => {}
                    Err(Denied::Unauthenticated) => {
                        let msg = "this channel needs a token; authenticate with the auth op";
                        send_error(ctx, peer, id.as_ref(), "unauthorized", Some(&name), msg);
                        continue;
                    }
                    Err(Denied::Forbidden) => {
                        tracing::info!(conn = %peer.conn_id(), channel = %name, "subscribe forbidden");
                        send_error(
                            ctx,
                            peer,
                            id.as_ref(),
                            "forbidden",
                            Some(&name),
                            "not allowed for this token",
                        );
                        continue;
                    }
                }
                if max_hz.is_some() && resolved.policy.kind == ChannelKind::Stream {
                    let msg = "max_hz applies to conflated channels only; stream channels deliver every event";
                    send_error(ctx, peer, id.as_ref(), "bad_request", Some(&name), msg);
                    continue;
                }
                let max_subs = ctx.shared.config.max_subscriptions;
                if peer.subs.borrow().len() >= max_subs
                    && !peer.subs.borrow().contains(name.as_str())
                {
                    let msg = format!("a connection may hold at most {max_subs} subscriptions");
                    send_error(
                        ctx,
                        peer,
                        id.as_ref(),
                        "too_many_subscriptions",
                        Some(&name),
                        &msg,
                    );
                    continue;
                }
                let policy = resolved.policy.clone();
                let s = since
                    .iter()
                    .find(|(c, _)| *c == name)
                    .map(|(_, s)| s.clone());
                let channel: Arc<str> = Arc::from(name);
                ctx.shard.borrow_mut().subscribe(
                    peer,
                    channel,
                    &policy,
                    id.clone(),
                    snapshot,
                    s,
                    max_hz,
                );
            }
        }
        Op::Unsubscribe { id, channels } => {
            let mut removed = Vec::new();
            {
                let mut shard = ctx.shard.borrow_mut();
                for c in &channels {
                    if shard.unsubscribe(peer, c) {
                        removed.push(c.as_str());
                    }
                }
            }
            let f = reply(
                peer.format,
                &Unsubscribed {
                    kind: "unsubscribed",
                    id: id.as_ref(),
                    channels: removed,
                },
            );
            send(ctx, peer, f);
        }
        Op::Publish { id, events, single } => {
            if peer.identity.borrow().role != Role::Publisher {
                send_error(
                    ctx,
                    peer,
                    id.as_ref(),
                    "forbidden",
                    None,
                    "publishing needs the publisher role",
                );
                return;
            }
            for ev in &events {
                if ctx.shared.engine.rules.resolve(&ev.channel).is_none() {
                    send_error(
                        ctx,
                        peer,
                        id.as_ref(),
                        "unknown_channel",
                        Some(&ev.channel),
                        "no channel pattern accepts this name",
                    );
                    return;
                }
            }
            let me = ctx.shard.borrow().id();
            let token = id.clone().map(|i| {
                let single_ch = single.then(|| Arc::from(events[0].channel.as_str()));
                peer.new_ack(i, single_ch, events.len())
            });
            let conn = peer.id;
            let result = ctx.shard.borrow_mut().publish(events, |idx| match token {
                Some(token) => PubReply::Peer {
                    shard: me,
                    conn,
                    token,
                    idx,
                },
                None => PubReply::None,
            });
            if let Err(e) = result {
                if let Some(t) = token {
                    peer.cancel_ack(t);
                }
                send_error(ctx, peer, id.as_ref(), "overloaded", None, &e.to_string());
            }
        }
        Op::Ping { id } => {
            let f = reply(
                peer.format,
                &Pong {
                    kind: "pong",
                    id: id.as_ref(),
                    ts: crate::clock::now_ns(),
                },
            );
            send(ctx, peer, f);
        }
        Op::Auth { id, token } => authenticate(ctx, peer, id.as_ref(), &token),
    }
}

/// The `auth` op: present a token on a connection without one, or refresh it before expiry.
fn authenticate(ctx: &Rc<ShardCtx>, peer: &Rc<Peer>, id: Option<&Id>, token: &str) {
    if !ctx.shared.verifier.enabled() {
        let msg = "token authentication is not configured on this server";
        send_error(ctx, peer, id, "unsupported", None, msg);
        return;
    }
    let identity = match ctx.shared.verifier.verify(token) {
        Ok(i) => i,
        Err(e) => {
            ctx.shard.borrow_mut().stats.auth_failures.auth_op += 1;
            tracing::info!(conn = %peer.conn_id(), reason = %e, "token refused");
            if peer.identity.borrow().user.is_some() {
                // The current token still holds; the client may retry before it expires.
                send_error(ctx, peer, id, "auth_failed", None, &e.to_string());
            } else {
                ctx.shard.borrow_mut().close_peer(
                    peer,
                    CloseCode::AuthFailed,
                    &e.to_string(),
                    false,
                );
            }
            return;
        }
    };
    let current = peer.identity.borrow().user.clone();
    match (&current, &identity.user) {
        (Some(cur), Some(new)) if cur != new => {
            send_error(
                ctx,
                peer,
                id,
                "forbidden",
                None,
                "the token is for another user",
            );
            return;
        }
        (None, Some(new)) => match ctx.shared.reserve_user(new) {
            Some(slot) => {
                let shard = ctx.shard.borrow().id();
                ctx.shared.admit_cluster(&slot, shard, peer.id);
                peer.set_user_slot(slot)
            }
            None => {
                let max = ctx.shared.config.access.max_connections_per_user;
                let reason = format!("too many connections for this user (limit {max})");
                ctx.shard.borrow_mut().close_peer(
                    peer,
                    CloseCode::TooManyConnections,
                    &reason,
                    false,
                );
                return;
            }
        },
        _ => {}
    }
    let user = identity.user.clone();
    let exp = identity.exp;
    if identity.role != Role::Publisher && peer.bucket.borrow().is_none() {
        let a = &ctx.shared.config.access;
        *peer.bucket.borrow_mut() = Some(crate::auth::TokenBucket::new(
            a.ops_per_sec,
            a.ops_burst,
            Instant::now(),
        ));
    }
    *peer.identity.borrow_mut() = identity;
    peer.authed.set(true);
    peer.set_auth_deadline(None);
    // A refreshed token may grant less than before: drop what it no longer allows.
    let names: Vec<Arc<str>> = peer.subs.borrow().channels().cloned().collect();
    let mut revoked = Vec::new();
    {
        let rules = &ctx.shared.engine.rules;
        let who = peer.identity.borrow();
        for n in &names {
            let allowed = rules
                .resolve(n)
                .is_some_and(|r| can_subscribe(&who, &r, n).is_ok());
            if !allowed {
                revoked.push(n.clone());
            }
        }
    }
    if !revoked.is_empty() {
        let mut shard = ctx.shard.borrow_mut();
        for n in &revoked {
            shard.unsubscribe(peer, n);
        }
        drop(shard);
        let list: Vec<&str> = revoked.iter().map(|n| &**n).collect();
        send(
            ctx,
            peer,
            reply(
                peer.format,
                &Unsubscribed {
                    kind: "unsubscribed",
                    id: None,
                    channels: list,
                },
            ),
        );
    }
    let f = reply(
        peer.format,
        &Authenticated {
            kind: "authenticated",
            id,
            user: user.as_deref(),
            exp,
        },
    );
    send(ctx, peer, f);
}
