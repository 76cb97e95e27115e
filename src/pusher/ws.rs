//! Pusher WebSocket connections (server layer): `GET /app/{key}?protocol=7`, the
//! `pusher:*` messages a client sends (ping, subscribe with channel auth, unsubscribe,
//! signin) and client events. A Pusher connection is an ordinary [`Peer`] of the Pusher
//! dialect: it subscribes to engine channels like a `/ws` client, so every event reaches
//! it through the same rings, conflation and encode-once fan-out (its frame is the event's
//! `Format::Pusher` frame, built once per event).

use std::borrow::Cow;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::net::TcpStream;

use super::sign;
use crate::auth::TokenBucket;
use crate::engine::channel::{ChannelAccess, ChannelPolicy};
use crate::engine::shard::PubReply;
use crate::protocol::encode::echo;
use crate::protocol::op::PubEvent;
use crate::protocol::pusher as wire;
use crate::protocol::{CloseCode, Format};
use crate::server::conn;
use crate::server::peer::Peer;
use crate::server::runtime::{ConnectionGuard, ShardCtx};

/// Seconds of silence after which pusher-js sends `pusher:ping` (Pusher's own value).
pub const ACTIVITY_TIMEOUT_SECS: u64 = 120;
/// Longest Pusher channel name (Pusher: 200 characters).
pub const MAX_CHANNEL_LEN: usize = 200;
/// Longest event name.
pub const MAX_EVENT_LEN: usize = 200;

/// What the upgrade request of `/app/{key}` carried.
#[derive(Debug)]
pub struct PusherUpgrade {
    /// The app key from the path.
    pub key: String,
    /// `?protocol=`, if sent.
    pub protocol: Option<String>,
}

/// A Pusher connection's own state (inside its [`Peer`]).
#[derive(Debug)]
pub struct PusherConn {
    /// Index of its app in the registry.
    pub app: usize,
    /// `socket_id` (`{connection}.{random}`): what channel auth signs and what API
    /// publishes name to exclude this connection.
    pub socket_id: String,
    /// The user it signed in as (`pusher:signin`).
    pub user: Option<String>,
    /// Presence channels joined, with the user id signed for each.
    pub presence: Vec<(Arc<str>, String)>,
    /// Client event rate limit.
    pub bucket: TokenBucket,
}

/// The connection id in a `socket_id` (`{id}.{random}`), if well formed.
pub fn socket_conn(socket_id: &str) -> Option<u64> {
    let (a, b) = socket_id.split_once('.')?;
    if b.is_empty() || !b.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    a.parse().ok()
}

/// Pusher's channel name rule: 1-200 of `A-Za-z0-9_-=@,.;`, and `#` for `#server-to-user-`.
pub fn channel_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_CHANNEL_LEN
        && name.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'=' | b'@' | b',' | b'.' | b';')
        })
        || name
            .strip_prefix("#server-to-user-")
            .is_some_and(|u| !u.is_empty() && channel_ok(u))
}

/// Starts a Pusher connection after its upgrade: finds the app, checks the protocol
/// version and the app's quota, then opens it like any connection (`conn::open`), with
/// `pusher:connection_established` as its welcome, or `pusher:error` and a close.
pub fn start(
    ctx: Rc<ShardCtx>,
    stream: TcpStream,
    guard: ConnectionGuard,
    leftover: Bytes,
    up: PusherUpgrade,
) {
    let cfg = &ctx.shared.config;
    let peer = Rc::new(Peer::new(
        ctx.next_conn_id(),
        Format::Pusher,
        stream,
        ctx.shared.engine.queue,
        cfg.max_message_bytes,
    ));
    peer.authed.set(true);
    let reg = &ctx.shared.pusher;
    let protocol_ok = up
        .protocol
        .as_deref()
        .map(|p| p.parse::<u32>().is_ok_and(|v| wire::PROTOCOLS.contains(&v)));
    let refusal: Option<(u16, String)> = match reg.by_key(&up.key) {
        None => Some((
            4001,
            format!("App key {} not in this cluster", echo(&up.key)),
        )),
        Some((_, app)) if !app.enabled => Some((4003, "App is disabled".into())),
        Some(_) if protocol_ok.is_none() => Some((4008, "No protocol version supplied".into())),
        Some(_) if protocol_ok == Some(false) => Some((
            4007,
            "Unsupported protocol version: use protocol 5 to 7".into(),
        )),
        Some((i, app)) => {
            if reg.connect(i) {
                let now = Instant::now();
                let rate = app.client_events_per_sec;
                peer.set_pusher(PusherConn {
                    app: i,
                    socket_id: format!("{}.{}", peer.id, rand::random::<u32>()),
                    user: None,
                    presence: Vec::new(),
                    bucket: TokenBucket::new(rate, rate.max(1.0), now),
                });
                None
            } else {
                Some((4004, "Over connection quota".into()))
            }
        }
    };
    let reject = refusal.map(|(code, msg)| {
        peer.out
            .borrow_mut()
            .push_control(wire::error(Some(code), &msg));
        (CloseCode::Other(code), msg)
    });
    let remote = conn::open(&ctx, &peer, leftover, reject);
    tokio::task::spawn_local(async move {
        conn::serve(ctx, peer, remote).await;
        drop(guard);
    });
}

/// The welcome of a Pusher connection (`conn::open`): `pusher:connection_established`.
pub fn welcome(peer: &Peer) -> Bytes {
    match peer.pusher().as_deref() {
        Some(p) => wire::connection_established(&p.socket_id, ACTIVITY_TIMEOUT_SECS),
        None => Bytes::new(),
    }
}

#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct SubscribeData {
    channel: String,
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    channel_data: Option<String>,
}

#[derive(Deserialize)]
struct SigninData {
    auth: String,
    user_data: String,
}

/// `data` as an object of type `T`: sent as an object, or as a string holding one.
fn data_of<T: for<'de> Deserialize<'de>>(data: Option<&RawValue>) -> Option<T> {
    let raw = data?.get();
    if raw.starts_with('"') {
        let s: String = serde_json::from_str(raw).ok()?;
        serde_json::from_str(&s).ok()
    } else {
        serde_json::from_str(raw).ok()
    }
}

fn send(ctx: &ShardCtx, peer: &Rc<Peer>, f: Bytes) {
    crate::server::ops::send(ctx, peer, f);
}

/// One text message from a Pusher client.
pub fn handle(ctx: &Rc<ShardCtx>, peer: &Rc<Peer>, text: &[u8]) {
    peer.last_op.set(Instant::now());
    let Ok(msg) = serde_json::from_slice::<Incoming<'_>>(text) else {
        send(ctx, peer, wire::error(None, "Invalid JSON message"));
        return;
    };
    match &*msg.event {
        "pusher:ping" => send(ctx, peer, wire::pong()),
        "pusher:pong" => {}
        "pusher:subscribe" => match data_of::<SubscribeData>(msg.data) {
            Some(d) => subscribe(ctx, peer, d),
            None => send(ctx, peer, wire::error(None, "Invalid subscribe data")),
        },
        "pusher:unsubscribe" => {
            #[derive(Deserialize)]
            struct U {
                channel: String,
            }
            if let Some(u) = data_of::<U>(msg.data) {
                unsubscribe(ctx, peer, &u.channel);
            }
        }
        "pusher:signin" => match data_of::<SigninData>(msg.data) {
            Some(d) => signin(ctx, peer, d),
            None => send(ctx, peer, wire::error(None, "Invalid signin data")),
        },
        e if e.starts_with("client-") => client_event(ctx, peer, &msg),
        _ => {} // Pusher ignores other events from clients.
    }
}

fn sub_error(ctx: &ShardCtx, peer: &Rc<Peer>, channel: &str, kind: &str, text: &str, status: u16) {
    let ch = echo(channel);
    send(ctx, peer, wire::subscription_error(&ch, kind, text, status));
}

fn subscribe(ctx: &Rc<ShardCtx>, peer: &Rc<Peer>, d: SubscribeData) {
    let reg = ctx.shared.pusher.clone();
    let (app_i, socket_id, user) = match peer.pusher().as_deref() {
        Some(p) => (p.app, p.socket_id.clone(), p.user.clone()),
        None => return,
    };
    let app = &reg.apps[app_i];
    let name = d.channel.as_str();
    if !channel_ok(name) {
        return sub_error(
            ctx,
            peer,
            name,
            "InvalidChannel",
            "Invalid channel name",
            400,
        );
    }
    let private = name.starts_with("private-");
    let presence = name.starts_with("presence-");
    let mut member: Option<(String, Option<String>)> = None;
    if let Some(u) = name.strip_prefix("#server-to-user-") {
        if user.as_deref() != Some(u) {
            return sub_error(
                ctx,
                peer,
                name,
                "AuthError",
                "Sign in as this user first",
                401,
            );
        }
    } else if private || presence {
        let auth = d.auth.as_deref().unwrap_or("");
        let data = if presence {
            d.channel_data.as_deref()
        } else {
            None
        };
        if presence && data.is_none() {
            return sub_error(ctx, peer, name, "AuthError", "Missing channel_data", 401);
        }
        if !sign::channel_auth_ok(&app.key, &app.secret, &socket_id, name, data, auth) {
            ctx.shard.borrow_mut().stats.auth_failures.auth_op += 1;
            return sub_error(ctx, peer, name, "AuthError", "Invalid signature", 401);
        }
        if let Some(data) = data {
            #[derive(Deserialize)]
            struct ChannelData {
                user_id: serde_json::Value,
                #[serde(default)]
                user_info: Option<Box<RawValue>>,
            }
            let parsed: Option<ChannelData> = serde_json::from_str(data).ok();
            let id = parsed.as_ref().and_then(|c| match &c.user_id {
                serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            });
            let Some(id) = id else {
                return sub_error(
                    ctx,
                    peer,
                    name,
                    "AuthError",
                    "channel_data needs a user_id",
                    400,
                );
            };
            let info = parsed
                .and_then(|c| c.user_info)
                .map(|i| i.get().to_string());
            member = Some((id, info));
        }
    }
    let engine_name = app.engine_channel(name);
    // A rule that covers the name gives its kind and history (conflation applies to Pusher
    // subscribers too); otherwise a stream with no history, as Pusher channels have.
    let rule = ctx
        .shared
        .engine
        .rules
        .resolve(&engine_name)
        .map(|r| r.policy.clone());
    let restricted = rule
        .as_ref()
        .is_some_and(|p| p.access != ChannelAccess::Public);
    if restricted && !private && !presence {
        // Public in Pusher's model, but one of quotecast's own owner/grant channels
        // (`user.{user}.*`, ...): never readable without the app's signature.
        let text = "A restricted channel: use a private- or presence- name";
        return sub_error(ctx, peer, name, "AuthError", text, 403);
    }
    if peer.subs.borrow().contains(engine_name.as_str()) {
        return; // already subscribed: Pusher answers nothing new
    }
    let max_subs = ctx.shared.config.max_subscriptions;
    if peer.subs.borrow().len() >= max_subs {
        let msg = format!("A connection may hold at most {max_subs} subscriptions");
        return sub_error(ctx, peer, name, "LimitReached", &msg, 4100);
    }
    let channel: Arc<str> = Arc::from(engine_name);
    let mut added = false;
    if let Some((id, info)) = &member {
        match reg.join(app_i, &channel, id, info.clone(), app.max_presence_members) {
            Ok(first) => added = first,
            Err(_) => {
                let msg = format!(
                    "Presence channel is full ({} members)",
                    app.max_presence_members
                );
                return sub_error(ctx, peer, name, "LimitReached", &msg, 4100);
            }
        }
        if let Some(p) = peer.pusher_mut().as_deref_mut() {
            p.presence.push((channel.clone(), id.clone()));
        }
    }
    let new_member = member.as_ref().filter(|_| added).map(|(id, _)| id.as_str());
    reg.subscribed(app_i, &channel, new_member);
    let policy = rule.unwrap_or(ChannelPolicy::stream(0));
    ctx.shard
        .borrow_mut()
        .subscribe(peer, channel.clone(), &policy, None, false, None, None);
    if added {
        if let Some((id, info)) = &member {
            let data = match info {
                Some(i) => format!(r#"{{"user_id":{},"user_info":{i}}}"#, json_str(id)),
                None => format!(r#"{{"user_id":{}}}"#, json_str(id)),
            };
            publish_internal(ctx, &channel, "pusher_internal:member_added", data, peer.id);
        }
    }
}

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// Publishes a server-made event (member added/removed) on an engine channel, not to
/// connection `exclude`.
fn publish_internal(ctx: &ShardCtx, channel: &str, event: &str, data: String, exclude: u64) {
    let ev = PubEvent {
        channel: channel.to_string(),
        event: event.to_string(),
        data: Bytes::from(data),
        exclude,
        key: None,
    };
    if ctx
        .shard
        .borrow_mut()
        .publish(vec![ev], |_| PubReply::None)
        .is_err()
    {
        tracing::warn!(channel, event, "presence event dropped: shard overloaded");
    }
}

fn unsubscribe(ctx: &Rc<ShardCtx>, peer: &Rc<Peer>, name: &str) {
    let reg = ctx.shared.pusher.clone();
    let Some(app_i) = peer.pusher().as_deref().map(|p| p.app) else {
        return;
    };
    let engine_name = reg.apps[app_i].engine_channel(name);
    if !ctx.shard.borrow_mut().unsubscribe(peer, &engine_name) {
        return;
    }
    let left = {
        let Some(mut p) = peer.pusher_mut() else {
            return;
        };
        match p.presence.iter().position(|(c, _)| **c == *engine_name) {
            Some(i) => Some(p.presence.swap_remove(i)),
            None => None,
        }
    };
    if let Some((channel, user)) = left {
        member_left(ctx, &channel, &user, peer.id);
    }
    // After `member_removed`, as Pusher orders the webhooks.
    reg.unsubscribed(&engine_name);
}

fn member_left(ctx: &ShardCtx, channel: &str, user: &str, conn: u64) {
    if ctx.shared.pusher.leave(channel, user) {
        let data = format!(r#"{{"user_id":{}}}"#, json_str(user));
        publish_internal(ctx, channel, "pusher_internal:member_removed", data, conn);
    }
}

fn signin(ctx: &Rc<ShardCtx>, peer: &Rc<Peer>, d: SigninData) {
    let reg = ctx.shared.pusher.clone();
    let (app_i, socket_id, already) = match peer.pusher().as_deref() {
        Some(p) => (p.app, p.socket_id.clone(), p.user.is_some()),
        None => return,
    };
    let app = &reg.apps[app_i];
    if already {
        send(ctx, peer, wire::error(Some(4009), "Already signed in"));
        return;
    }
    if !sign::user_auth_ok(&app.key, &app.secret, &socket_id, &d.user_data, &d.auth) {
        ctx.shard.borrow_mut().stats.auth_failures.auth_op += 1;
        send(
            ctx,
            peer,
            wire::error(Some(4009), "Invalid signature for signin"),
        );
        return;
    }
    #[derive(Deserialize)]
    struct UserData {
        id: serde_json::Value,
    }
    let id = serde_json::from_str::<UserData>(&d.user_data)
        .ok()
        .and_then(|u| match u.id {
            serde_json::Value::String(s) if !s.is_empty() => Some(s),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
    let Some(id) = id else {
        send(ctx, peer, wire::error(Some(4009), "user_data needs an id"));
        return;
    };
    if let Some(p) = peer.pusher_mut().as_deref_mut() {
        p.user = Some(id.clone());
    }
    let shard = ctx.shard.borrow().id();
    reg.signed_in(app_i, &id, shard, peer.id);
    let data = serde_json::json!({ "user_data": d.user_data }).to_string();
    send(
        ctx,
        peer,
        wire::message_str("pusher:signin_success", None, data.as_bytes()),
    );
}

fn client_event(ctx: &Rc<ShardCtx>, peer: &Rc<Peer>, msg: &Incoming<'_>) {
    let reg = ctx.shared.pusher.clone();
    let app_i = match peer.pusher().as_deref() {
        Some(p) => p.app,
        None => return,
    };
    let app = &reg.apps[app_i];
    if !app.client_events {
        let text = "To send client events, you must enable this feature in the Settings page of your dashboard.";
        send(ctx, peer, wire::error(None, text));
        return;
    }
    let Some(name) = msg.channel.as_deref() else {
        return;
    };
    let relayed = (name.starts_with("private-") && !name.starts_with("private-encrypted-"))
        || name.starts_with("presence-");
    if !relayed {
        let text = "Client event rejected - only supported on private and presence channels";
        send(ctx, peer, wire::error(None, text));
        return;
    }
    let engine_name = app.engine_channel(name);
    if !peer.subs.borrow().contains(engine_name.as_str()) {
        let text = "Client event rejected - you must be subscribed to the channel";
        send(ctx, peer, wire::error(None, text));
        return;
    }
    if msg.event.len() > MAX_EVENT_LEN {
        send(ctx, peer, wire::error(None, "Event name is too long"));
        return;
    }
    let data = msg.data.map_or("null", |d| d.get());
    if data.len() > app.max_event_bytes {
        let text = format!(
            "Client event rejected - data exceeds {} bytes",
            app.max_event_bytes
        );
        send(ctx, peer, wire::error(None, &text));
        return;
    }
    let allowed = peer
        .pusher_mut()
        .as_deref_mut()
        .is_some_and(|p| p.bucket.take(Instant::now()));
    if !allowed {
        ctx.shard.borrow_mut().stats.rate_limited_ops += 1;
        send(
            ctx,
            peer,
            wire::error(Some(4301), "Client event rejected due to rate limit"),
        );
        return;
    }
    let ev = PubEvent {
        channel: engine_name.clone(),
        event: msg.event.to_string(),
        data: Bytes::copy_from_slice(data.as_bytes()),
        exclude: peer.id,
        key: None,
    };
    if ctx
        .shard
        .borrow_mut()
        .publish(vec![ev], |_| PubReply::None)
        .is_err()
    {
        send(ctx, peer, wire::error(Some(4100), "Over capacity"));
        return;
    }
    if app.wants_webhook("client_event") {
        if let Some(p) = peer.pusher().as_deref() {
            let user = p
                .presence
                .iter()
                .find(|(c, _)| **c == *engine_name)
                .map(|(_, u)| u.as_str());
            reg.client_event(app_i, &engine_name, &msg.event, data, &p.socket_id, user);
        }
    }
}

/// A Pusher connection has ended (before the shard forgets it): its presence memberships
/// end (`member_removed` when it was the user's last connection), its counts go.
pub fn gone(ctx: &ShardCtx, peer: &Peer) {
    let Some(p) = peer.take_pusher() else {
        return;
    };
    let reg = &ctx.shared.pusher;
    for (channel, user) in &p.presence {
        member_left(ctx, channel, user, peer.id);
    }
    for c in peer.subs.borrow().channels() {
        reg.unsubscribed(c);
    }
    if let Some(u) = &p.user {
        reg.signed_out(p.app, u, peer.id);
    }
    reg.disconnect(p.app);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_pusher_rules() {
        assert!(channel_ok("private-App.Models.User.1"));
        assert!(channel_ok("presence-chat;room=1,a@b"));
        assert!(channel_ok("#server-to-user-42"));
        assert!(!channel_ok("#other"));
        assert!(!channel_ok("a:b"), "':' separates an app's namespace");
        assert!(!channel_ok(""));
        assert!(!channel_ok(&"a".repeat(201)));
        assert!(!channel_ok("a\"b"));
    }

    #[test]
    fn socket_ids_name_their_connection() {
        assert_eq!(socket_conn("281474976710657.12345"), Some(281474976710657));
        assert_eq!(socket_conn("12.x"), None);
        assert_eq!(socket_conn("12"), None);
        assert_eq!(socket_conn("a.1"), None);
    }
}
