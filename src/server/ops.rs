//! What client ops mean (server layer): given an op decoded by the connection loop
//! ([`super::conn`]), applies the per-connection rate limit and the authentication gate, then
//! answers `subscribe`, `unsubscribe`, `publish`, `ping` and `auth` against the shard. No
//! socket reads or writes: replies are queued on the connection and written by the shard's
//! commit.
//!
//! Publish admission lives here once for both transports: [`admit_publish`] decides whether
//! an identity may publish events (role, channel rules) and [`publish`] hands admitted events
//! to the shard. The WebSocket `publish` op answers a [`PublishRefused`] with an error frame,
//! `POST /api/publish` ([`super::http`]) with an HTTP status and a JSON body.

use std::borrow::Cow;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::peer::Peer;
use super::runtime::ShardCtx;
use crate::auth::{can_subscribe, Denied, Identity, Role};
use crate::config::LimitedOp;
use crate::engine::channel::{ChannelKind, ChannelPolicy, ChannelRules};
use crate::engine::shard::{Overloaded, PubReply};
use crate::protocol::dialect::Reply;
use crate::protocol::encode::{self, Authenticated, Pong, Unsubscribed};
use crate::protocol::names::check_channel;
use crate::protocol::op::{Id, Op, OpError, PubEvent, Since};
use crate::protocol::CloseCode;

// ---- publish admission (WebSocket and HTTP) ----------------------------------------------

/// Why a publish was refused. [`code`](Self::code) is the protocol error code; each transport
/// maps the variant to its own answer (an error frame, or an HTTP status with a JSON body).
#[derive(Debug, thiserror::Error)]
pub enum PublishRefused {
    /// The identity does not have the publisher role (`forbidden`). The caller should not
    /// retry with the same credentials.
    #[error("publishing needs the publisher role")]
    NotPublisher,
    /// No channel pattern accepts an event's channel (`unknown_channel`); nothing of the
    /// batch was published. The caller should fix the channel name.
    #[error("no channel pattern accepts `{channel}`")]
    UnknownChannel {
        /// The refused channel (the first one of the batch).
        channel: String,
    },
    /// The shard cannot take more work now (`overloaded`); nothing was published. The
    /// caller may retry later.
    #[error(transparent)]
    Overloaded(#[from] Overloaded),
}

impl PublishRefused {
    /// The stable protocol error code.
    pub fn code(&self) -> &'static str {
        match self {
            PublishRefused::NotPublisher => "forbidden",
            PublishRefused::UnknownChannel { .. } => "unknown_channel",
            PublishRefused::Overloaded(_) => "overloaded",
        }
    }

    /// The channel the refusal is about, for replies with a field of their own for it.
    pub fn channel(&self) -> Option<&str> {
        match self {
            PublishRefused::UnknownChannel { channel } => Some(channel),
            _ => None,
        }
    }

    /// The message to send beside [`channel`](Self::channel) (the error frame). The
    /// `Display` text instead names the channel itself, for replies without such a field
    /// (the HTTP error body).
    pub fn detail(&self) -> Cow<'static, str> {
        match self {
            PublishRefused::UnknownChannel { .. } => {
                Cow::Borrowed("no channel pattern accepts this name")
            }
            other => Cow::Owned(other.to_string()),
        }
    }
}

/// Events that passed [`admit_publish`]; only [`publish`] takes them to the shard. A
/// wrapper around the parsed `Vec`, so admission costs no allocation.
#[derive(Debug)]
pub struct Admitted {
    events: Vec<PubEvent>,
}

impl Admitted {
    /// The admitted events, in order (1 to `MAX_EVENTS_PER_PUBLISH`, as the parsers give).
    pub fn events(&self) -> &[PubEvent] {
        &self.events
    }
}

/// Whether `who` may publish at all: the rule by role alone, which HTTP checks before it
/// reads a body (so a caller who may not publish cannot make the server buffer one).
/// [`admit_publish`] applies it too.
pub fn may_publish(who: &Identity) -> Result<(), PublishRefused> {
    if who.role != Role::Publisher {
        return Err(PublishRefused::NotPublisher);
    }
    Ok(())
}

/// The publish admission check, for every transport: `who` may publish ([`may_publish`]),
/// and `rules` (the configured channel patterns, `ShardCtx::shared.engine.rules`) accept
/// every event's channel; channel and event names were checked by the parsers. Admits the
/// whole batch or refuses it whole, at the first refused channel. Pure: no shard, no I/O.
pub fn admit_publish(
    rules: &ChannelRules,
    who: &Identity,
    mut events: Vec<PubEvent>,
) -> Result<Admitted, PublishRefused> {
    may_publish(who)?;
    if let Some(i) = events
        .iter()
        .position(|ev| rules.resolve(&ev.channel).is_none())
    {
        // Moved out of the refused batch, not copied.
        let channel = events.swap_remove(i).channel;
        return Err(PublishRefused::UnknownChannel { channel });
    }
    Ok(Admitted { events })
}

/// Hands admitted events to the shard, which routes them to their home shards;
/// `make_reply` builds the reply for the events bound to one home shard (see
/// `Shard::publish`). The caller commits the shard when it is done.
pub fn publish(
    ctx: &ShardCtx,
    admitted: Admitted,
    make_reply: impl FnMut(Vec<u16>) -> PubReply,
) -> Result<(), PublishRefused> {
    ctx.shard
        .borrow_mut()
        .publish(admitted.events, make_reply)
        .map_err(PublishRefused::from)
}

// ---- WebSocket ops ---------------------------------------------------------------------

/// Answers one decoded client message: the op, or the reason it is not one (an error frame
/// with the parser's code, echoing the op's `id` when it could be read).
pub fn handle(ctx: &Rc<ShardCtx>, peer: &Rc<Peer>, parsed: Result<Op, (Option<Id>, OpError)>) {
    match parsed {
        Ok(op) => handle_op(ctx, peer, op),
        Err((id, e)) => send_error(ctx, peer, id.as_ref(), e.code(), None, &e.to_string()),
    }
}

/// Answers one op: rate limit, authentication gate, then the op itself.
pub fn handle_op(ctx: &Rc<ShardCtx>, peer: &Rc<Peer>, op: Op) {
    if !admit_op(ctx, peer, &op) {
        return;
    }
    if !peer.authed.get() && !matches!(op, Op::Auth { .. } | Op::AuthData { .. } | Op::Ping { .. })
    {
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
        } => subscribe(ctx, peer, id, channels, snapshot, &since, max_hz),
        Op::Unsubscribe { id, channels } => unsubscribe(ctx, peer, id.as_ref(), &channels),
        Op::Publish { id, events, single } => publish_op(ctx, peer, id, events, single),
        Op::Ping { id } => {
            let f = peer.format.reply(&Reply::Pong(Pong {
                kind: "pong",
                id: id.as_ref(),
                ts: crate::clock::now_ns(),
            }));
            send(ctx, peer, f);
        }
        Op::Auth { id, token } => authenticate(ctx, peer, id.as_ref(), &token),
        Op::AuthData { id, data } => super::connect_hook::start(ctx, peer, id, data),
    }
}

/// Queues a reply frame; a connection whose queue is full is a slow consumer.
pub fn send(ctx: &ShardCtx, peer: &Rc<Peer>, f: Bytes) {
    let queued = peer.reply(f);
    let mut shard = ctx.shard.borrow_mut();
    match queued {
        Ok(()) => shard.mark_dirty(peer),
        Err(why) => shard.close_slow(peer, why),
    }
}

/// Queues an error frame (see [`send`]).
pub fn send_error(
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

/// The op's `id`, for errors raised before the op is looked at.
fn op_id(op: &Op) -> Option<&Id> {
    match op {
        Op::Subscribe { id, .. }
        | Op::Unsubscribe { id, .. }
        | Op::Publish { id, .. }
        | Op::Ping { id }
        | Op::Auth { id, .. }
        | Op::AuthData { id, .. } => id.as_ref(),
    }
}

/// Applies the per-connection op rate limit; false when the op must be refused.
fn admit_op(ctx: &Rc<ShardCtx>, peer: &Rc<Peer>, op: &Op) -> bool {
    admit(ctx, peer, op_id(op))
}

/// The per-connection op rate limit (see `[limits] ops_per_sec`): false when the op must be
/// dropped (an error or the 4029 close was queued).
pub(crate) fn admit(ctx: &Rc<ShardCtx>, peer: &Rc<Peer>, id: Option<&Id>) -> bool {
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
        send_error(ctx, peer, id, "rate_limited", None, &msg);
    }
    false
}

/// The `subscribe` op: each channel is checked on its own (name, rules, access, `max_hz`,
/// subscription cap), so one bad name does not sink the others.
fn subscribe(
    ctx: &Rc<ShardCtx>,
    peer: &Rc<Peer>,
    id: Option<Id>,
    channels: Vec<String>,
    snapshot: bool,
    since: &[(String, Since)],
    max_hz: Option<f64>,
) {
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
        if ctx.shared.pusher.is_pusher_private(&name) {
            // A Pusher app's private, presence and server-to-user channels are served to
            // Pusher connections with the app's signature only (`docs/pusher.md`).
            let msg = "a Pusher private or presence channel: connect with a Pusher client";
            send_error(ctx, peer, id.as_ref(), "forbidden", Some(&name), msg);
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
        if let Err(msg) = op_limited(ctx, peer, LimitedOp::Subscribe, resolved.pattern) {
            send_error(ctx, peer, id.as_ref(), "rate_limited", Some(&name), &msg);
            continue;
        }
        let denied = can_subscribe(&peer.identity.borrow(), &resolved, &name);
        let mut asks_backend = false;
        match denied {
            Ok(()) => {}
            Err(Denied::AskBackend) => asks_backend = true,
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
        let policy = resolved.policy.clone();
        let s = since
            .iter()
            .find(|(c, _)| *c == name)
            .map(|(_, s)| s.clone());
        if asks_backend {
            let url = ctx
                .shared
                .config
                .hooks
                .subscribe_url(resolved.pattern)
                .cloned();
            match url {
                Some(url) => {
                    let req = Pending {
                        id: id.clone(),
                        policy,
                        snapshot,
                        since: s,
                        max_hz,
                    };
                    ask_backend(ctx, peer, Arc::from(name), url, req);
                }
                None => {
                    send_error(
                        ctx,
                        peer,
                        id.as_ref(),
                        "forbidden",
                        Some(&name),
                        "no subscribe hook for this namespace",
                    );
                }
            }
            continue;
        }
        finish_subscribe(
            ctx,
            peer,
            Arc::from(name),
            Pending {
                id: id.clone(),
                policy,
                snapshot,
                since: s,
                max_hz,
            },
        );
    }
}

/// A subscribe whose access check passed (or is waiting for the backend).
pub(crate) struct Pending {
    pub(crate) id: Option<Id>,
    pub(crate) policy: ChannelPolicy,
    pub(crate) snapshot: bool,
    pub(crate) since: Option<Since>,
    pub(crate) max_hz: Option<f64>,
}

/// The checks after access (`max_hz` fits the kind, the subscription cap), then the shard's
/// subscribe.
pub(crate) fn finish_subscribe(ctx: &Rc<ShardCtx>, peer: &Rc<Peer>, channel: Arc<str>, p: Pending) {
    let name: &str = &channel;
    if p.max_hz.is_some() && p.policy.kind == ChannelKind::Stream {
        let msg = "max_hz applies to conflated channels only; stream channels deliver every event";
        send_error(ctx, peer, p.id.as_ref(), "bad_request", Some(name), msg);
        return;
    }
    let max_subs = ctx.shared.config.max_subscriptions;
    if peer.subs.borrow().len() >= max_subs && !peer.subs.borrow().contains(name) {
        let msg = format!("a connection may hold at most {max_subs} subscriptions");
        send_error(
            ctx,
            peer,
            p.id.as_ref(),
            "too_many_subscriptions",
            Some(name),
            &msg,
        );
        return;
    }
    ctx.shard.borrow_mut().subscribe(
        peer,
        channel.clone(),
        &p.policy,
        p.id.clone(),
        p.snapshot,
        p.since,
        p.max_hz,
    );
}

/// Applies the backend's subscribe answer: `{"allow": true}` subscribes; anything else is
/// `forbidden` with the backend's `reason` when it gave one.
fn apply_backend_answer(
    ctx: &Rc<ShardCtx>,
    peer: &Rc<Peer>,
    channel: Arc<str>,
    answer: &serde_json::Value,
    p: Pending,
) {
    if answer.get("allow").and_then(|a| a.as_bool()) == Some(true) {
        finish_subscribe(ctx, peer, channel, p);
    } else {
        let reason = answer
            .get("reason")
            .and_then(|r| r.as_str())
            .unwrap_or("the backend refused this subscription");
        tracing::info!(conn = %peer.conn_id(), channel = %channel, "subscribe refused by the backend");
        send_error(
            ctx,
            peer,
            p.id.as_ref(),
            "forbidden",
            Some(&channel),
            reason,
        );
    }
}

/// Asks the namespace's subscribe hook whether this connection's user may join `channel`
/// (from the cache when a fresh answer is there). The call runs as a task on this shard; the
/// answer is applied here when it arrives, so the shard never waits on the backend.
fn ask_backend(ctx: &Rc<ShardCtx>, peer: &Rc<Peer>, channel: Arc<str>, url: Arc<str>, p: Pending) {
    // Only authenticated users reach here (`can_subscribe` answers `Unauthenticated` first).
    let Some(user) = peer.identity.borrow().user.clone() else {
        return;
    };
    if let Some(answer) = ctx.hooks.cached(&user, &channel, Instant::now()) {
        ctx.shared
            .hook_stats
            .cache_hits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        apply_backend_answer(ctx, peer, channel, &answer, p);
        return;
    }
    let ctx = ctx.clone();
    let peer = peer.clone();
    tokio::task::spawn_local(async move {
        let body = serde_json::json!({
            "user": &*user,
            "channel": &*channel,
            "conn_id": peer.conn_id().to_string(),
        });
        let hooks = &ctx.shared.config.hooks;
        let result = ctx
            .hooks
            .call(hooks, &ctx.shared.hook_stats, &url, &body)
            .await;
        if peer.is_closing() {
            return;
        }
        ctx.shard.borrow_mut().tick();
        match result {
            Ok(answer) => {
                if !hooks.cache_ttl.is_zero() {
                    let until = Instant::now() + hooks.cache_ttl;
                    ctx.hooks
                        .remember(user, channel.clone(), answer.clone(), until);
                }
                apply_backend_answer(&ctx, &peer, channel, &answer, p);
            }
            Err(e) => send_error(
                &ctx,
                &peer,
                p.id.as_ref(),
                "backend_unavailable",
                Some(&channel),
                &e.to_string(),
            ),
        }
        ctx.shard.borrow_mut().commit();
    });
}

/// Takes one token of every `[[rate_limits]]` rule for `op` on a channel of the namespace
/// `pattern`; `Err` is the error message (code `rate_limited`). Rules are checked in file
/// order; a refusal by a later rule leaves the earlier rules' tokens spent.
fn op_limited(ctx: &ShardCtx, peer: &Peer, op: LimitedOp, pattern: &str) -> Result<(), String> {
    let rules = &ctx.shared.config.rate_limits;
    if rules.is_empty() {
        return Ok(());
    }
    let now = Instant::now();
    for (i, r) in rules.iter().enumerate() {
        if r.op != op || r.namespace.as_deref().is_some_and(|n| n != pattern) {
            continue;
        }
        let rate = f64::from(r.count) / r.per.as_secs_f64();
        if let Err(wait) = peer.take_op_limit(i, rate, f64::from(r.count), now) {
            return Err(format!(
                "at most {} {} per {} s in namespace `{}`; retry in {:.1} s",
                r.count,
                op.as_str(),
                r.per.as_secs(),
                r.namespace.as_deref().unwrap_or(pattern),
                wait.as_secs_f64()
            ));
        }
    }
    Ok(())
}

/// The `unsubscribe` op: answers with the channels that were subscribed.
fn unsubscribe(ctx: &Rc<ShardCtx>, peer: &Rc<Peer>, id: Option<&Id>, channels: &[String]) {
    let mut removed = Vec::new();
    {
        for c in channels {
            let pattern = ctx.shared.engine.rules.resolve(c).map(|r| r.pattern);
            if let Some(p) = pattern {
                if let Err(msg) = op_limited(ctx, peer, LimitedOp::Unsubscribe, p) {
                    send_error(ctx, peer, id, "rate_limited", Some(c), &msg);
                    continue;
                }
            }
            let mut shard = ctx.shard.borrow_mut();
            if shard.unsubscribe(peer, c) {
                removed.push(c.as_str());
            }
        }
    }
    let f = peer.format.reply(&Reply::Unsubscribed(Unsubscribed {
        kind: "unsubscribed",
        id,
        channels: removed,
    }));
    send(ctx, peer, f);
}

/// The `publish` op: [`admit_publish`], then [`publish`] with an ack (when the op has an
/// `id`) that the home shards complete.
fn publish_op(
    ctx: &Rc<ShardCtx>,
    peer: &Rc<Peer>,
    id: Option<Id>,
    events: Vec<PubEvent>,
    single: bool,
) {
    if !ctx.shared.config.rate_limits.is_empty() {
        for ev in &events {
            let Some(r) = ctx.shared.engine.rules.resolve(&ev.channel) else {
                continue; // refused below as unknown_channel
            };
            if let Err(msg) = op_limited(ctx, peer, LimitedOp::Publish, r.pattern) {
                send_error(
                    ctx,
                    peer,
                    id.as_ref(),
                    "rate_limited",
                    Some(&ev.channel),
                    &msg,
                );
                return;
            }
        }
    }
    let admitted = admit_publish(&ctx.shared.engine.rules, &peer.identity.borrow(), events);
    let admitted = match admitted {
        Ok(a) => a,
        Err(r) => {
            send_error(ctx, peer, id.as_ref(), r.code(), r.channel(), &r.detail());
            return;
        }
    };
    let me = ctx.shard.borrow().id();
    let token = id.clone().map(|i| {
        let events = admitted.events();
        // `single` is a one-event publish, so `events[0]` exists.
        let single_ch = single.then(|| Arc::from(events[0].channel.as_str()));
        peer.new_ack(i, single_ch, events.len())
    });
    let conn = peer.id;
    let result = publish(ctx, admitted, |idx| match token {
        Some(token) => PubReply::Peer {
            shard: me,
            conn,
            token,
            idx,
        },
        None => PubReply::None,
    });
    if let Err(r) = result {
        if let Some(t) = token {
            peer.cancel_ack(t);
        }
        send_error(ctx, peer, id.as_ref(), r.code(), r.channel(), &r.detail());
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
            // `auth_failed` like every refused token (docs/auth.md); the connection keeps its
            // current identity.
            send_error(
                ctx,
                peer,
                id,
                "auth_failed",
                None,
                &crate::auth::AuthError::UserChanged.to_string(),
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
            // A hook channel stays: the backend accepted this user, who cannot change on a
            // refresh.
            let allowed = rules.resolve(n).is_some_and(|r| {
                matches!(can_subscribe(&who, &r, n), Ok(()) | Err(Denied::AskBackend))
            });
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
            peer.format.reply(&Reply::Unsubscribed(Unsubscribed {
                kind: "unsubscribed",
                id: None,
                channels: list,
            })),
        );
    }
    let f = peer.format.reply(&Reply::Authenticated(Authenticated {
        kind: "authenticated",
        id,
        user: user.as_deref(),
        exp,
    }));
    send(ctx, peer, f);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::channel::{ChannelPolicy, ChannelRule};

    /// `trades.*` and `quotes.*` only: no catch-all, so other names are unknown.
    fn rules() -> ChannelRules {
        let rule = |p: &str, pol| ChannelRule::new(p, pol).unwrap();
        ChannelRules::new(vec![
            rule("trades.*", ChannelPolicy::stream(10)),
            rule("quotes.*", ChannelPolicy::conflated()),
        ])
    }

    fn ev(channel: &str) -> PubEvent {
        PubEvent {
            channel: channel.into(),
            event: "e".into(),
            data: Bytes::from_static(b"1"),
            key: None,
            exclude: 0,
        }
    }

    #[test]
    fn a_publisher_is_admitted_with_its_batch_in_order() {
        let rules = rules();
        let who = Identity::anonymous(Role::Publisher);
        let a = admit_publish(&rules, &who, vec![ev("trades.A"), ev("quotes.B")]).unwrap();
        let names: Vec<&str> = a.events().iter().map(|e| e.channel.as_str()).collect();
        assert_eq!(names, ["trades.A", "quotes.B"]);
    }

    #[test]
    fn a_subscriber_is_forbidden_before_channels_are_looked_at() {
        let rules = rules();
        let who = Identity::anonymous(Role::Subscriber);
        let r = admit_publish(&rules, &who, vec![ev("nope.A")]).unwrap_err();
        assert!(matches!(r, PublishRefused::NotPublisher));
        assert_eq!(r.code(), "forbidden");
        assert_eq!(r.channel(), None);
        assert_eq!(r.detail(), "publishing needs the publisher role");
        assert_eq!(r.to_string(), "publishing needs the publisher role");
    }

    #[test]
    fn the_first_unknown_channel_refuses_the_whole_batch() {
        let rules = rules();
        let who = Identity::anonymous(Role::Publisher);
        let batch = vec![ev("trades.A"), ev("nope.B"), ev("nope.C"), ev("trades.D")];
        let r = admit_publish(&rules, &who, batch).unwrap_err();
        assert_eq!(r.code(), "unknown_channel");
        assert_eq!(r.channel(), Some("nope.B"));
        // The error frame carries the channel in a field; the HTTP body names it in the text.
        assert_eq!(r.detail(), "no channel pattern accepts this name");
        assert_eq!(r.to_string(), "no channel pattern accepts `nope.B`");
    }

    #[test]
    fn overloaded_keeps_the_engine_message() {
        let r = PublishRefused::from(Overloaded);
        assert_eq!(r.code(), "overloaded");
        assert_eq!(r.detail(), Overloaded.to_string());
        assert_eq!(r.to_string(), Overloaded.to_string());
    }
}
