//! The connect hook (server layer): a client authenticates with credentials only the
//! application's backend can check, `{"op":"auth","id":1,"data":{...}}` (seeds/002's
//! `{"sessionID","userId"}`), or the session cookie of its upgrade request. The data goes to
//! `[hooks] connect_url` as `{"data":{...},"cookie":null,"conn_id":"..."}` (or
//! `{"data":null,"cookie":"sid=...",...}` right after the upgrade of a connection without a
//! token); the backend answers who the user is and what the connection gets:
//!
//! ```json
//! {"user":"42","exp":1732383600,"role":"subscriber","channels":["strategy:9"],"subscribe":["user:42"]}
//! ```
//!
//! or `{"user":null,"reason":"session expired"}` to refuse (close 4001 with the reason; a
//! refused cookie closes nothing: the client may still authenticate otherwise).
//! The call runs as a task on the shard; the answer is applied there (see [`super::hooks`]).

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde_json::Value;

use super::ops::{finish_subscribe, send, send_error, Pending};
use super::peer::Peer;
use super::runtime::ShardCtx;
use crate::auth::{Identity, Role, TokenBucket};
use crate::engine::channel::ChannelRule;
use crate::protocol::dialect::Reply;
use crate::protocol::encode::Authenticated;
use crate::protocol::names::check_channel;
use crate::protocol::op::Id;
use crate::protocol::CloseCode;

/// Most channels a connect answer may subscribe the connection to.
pub const MAX_AUTO_SUBSCRIBE: usize = 64;

/// Handles `{"op":"auth","data":...}`: asks the connect hook, then applies its answer.
pub(crate) fn start(ctx: &Rc<ShardCtx>, peer: &Rc<Peer>, id: Option<Id>, data: Bytes) {
    if ctx.shared.config.hooks.connect.is_none() {
        let msg = "this server has no connect hook: authenticate with a token";
        send_error(ctx, peer, id.as_ref(), "unsupported", None, msg);
        return;
    };
    if peer.identity.borrow().user.is_some() {
        let msg = "already authenticated; refresh with a token";
        send_error(ctx, peer, id.as_ref(), "bad_request", None, msg);
        return;
    }
    let payload: Value = serde_json::from_slice(&data).unwrap_or(Value::Null);
    ask(ctx, peer, id, payload, None);
}

/// Asks the connect hook about `data` (an `auth` op's) or `cookie` (the upgrade request's
/// `Cookie` header, for a connection without a token) and applies the answer.
pub(crate) fn ask(
    ctx: &Rc<ShardCtx>,
    peer: &Rc<Peer>,
    id: Option<Id>,
    data: Value,
    cookie: Option<String>,
) {
    let Some(url) = ctx.shared.config.hooks.connect.clone() else {
        return;
    };
    let cookie_path = cookie.is_some();
    let ctx = ctx.clone();
    let peer = peer.clone();
    tokio::task::spawn_local(async move {
        let body = serde_json::json!({
            "data": data,
            "cookie": cookie,
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
        let from_cookie = cookie_path;
        match result {
            Ok(answer) => apply(&ctx, &peer, id, &answer, from_cookie),
            // The connection may retry within its auth deadline (or, after a cookie, use
            // a token or `auth` data).
            Err(_) if from_cookie => {}
            Err(e) => send_error(
                &ctx,
                &peer,
                id.as_ref(),
                "backend_unavailable",
                None,
                &e.to_string(),
            ),
        }
        ctx.shard.borrow_mut().commit();
    });
}

/// The user id of an answer: a string or a non-negative integer, 1-64 of
/// `A-Z a-z 0-9 _ - : @` (the token rule).
fn user_of(answer: &Value) -> Option<String> {
    let u = match answer.get("user")? {
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_u64() => n.to_string(),
        _ => return None,
    };
    let ok = !u.is_empty()
        && u.len() <= 64
        && u.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-:@".contains(&b));
    ok.then_some(u)
}

fn refuse(ctx: &Rc<ShardCtx>, peer: &Rc<Peer>, reason: &str, from_cookie: bool) {
    if from_cookie {
        // A browser sends whatever cookies it has: one the backend does not know is no
        // reason to close; the client may still authenticate with a token or `auth` data.
        tracing::debug!(conn = %peer.conn_id(), reason, "connect hook did not accept the cookie");
        return;
    }
    ctx.shard.borrow_mut().stats.auth_failures.auth_op += 1;
    tracing::info!(conn = %peer.conn_id(), reason, "connect hook refused the credentials");
    ctx.shard
        .borrow_mut()
        .close_peer(peer, CloseCode::AuthFailed, reason, false);
}

/// Applies the backend's answer: the identity, the `authenticated` reply, the channels.
fn apply(ctx: &Rc<ShardCtx>, peer: &Rc<Peer>, id: Option<Id>, answer: &Value, from_cookie: bool) {
    let Some(user) = user_of(answer) else {
        let reason = answer
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or("the backend refused the credentials");
        let reason: String = reason.chars().take(100).collect();
        refuse(ctx, peer, &reason, from_cookie);
        return;
    };
    let role = match answer.get("role").and_then(Value::as_str) {
        None | Some("subscriber") => Role::Subscriber,
        Some("publisher") => Role::Publisher,
        Some(_) => {
            return refuse(
                ctx,
                peer,
                "the backend answered an unknown role",
                from_cookie,
            )
        }
    };
    let exp = answer.get("exp").and_then(Value::as_u64);
    let list = |k: &str| -> Vec<String> {
        answer
            .get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut grants = Vec::new();
    for g in list("channels").iter().take(64) {
        match ChannelRule::grant(g, &user) {
            Ok(r) => grants.push(r),
            Err(e) => return refuse(ctx, peer, &format!("backend grant: {e}"), from_cookie),
        }
    }
    let user: Arc<str> = Arc::from(user);
    if peer.identity.borrow().user.is_some() {
        // Two data auths raced: the first one won.
        return;
    }
    match ctx.shared.reserve_user(&user) {
        Some(slot) => {
            let shard = ctx.shard.borrow().id();
            ctx.shared.admit_cluster(&slot, shard, peer.id);
            peer.set_user_slot(slot);
        }
        None => {
            let max = ctx.shared.config.access.max_connections_per_user;
            let reason = format!("too many connections for this user (limit {max})");
            ctx.shard
                .borrow_mut()
                .close_peer(peer, CloseCode::TooManyConnections, &reason, false);
            return;
        }
    }
    if role != Role::Publisher && peer.bucket.borrow().is_none() {
        let a = &ctx.shared.config.access;
        *peer.bucket.borrow_mut() =
            Some(TokenBucket::new(a.ops_per_sec, a.ops_burst, Instant::now()));
    }
    *peer.identity.borrow_mut() = Identity {
        user: Some(user.clone()),
        role,
        grants,
        exp,
        admin: false,
    };
    peer.authed.set(true);
    peer.set_auth_deadline(None);
    let f = peer.format.reply(&Reply::Authenticated(Authenticated {
        kind: "authenticated",
        id: id.as_ref(),
        user: Some(&user),
        exp,
    }));
    send(ctx, peer, f);
    // The backend's channels: subscribed as it says (it is trusted), each still needing a
    // namespace for its kind and history.
    subscribe_as_backend_says(
        ctx,
        peer,
        list("subscribe").into_iter().take(MAX_AUTO_SUBSCRIBE),
    );
}

/// Subscribes `peer` to channels a backend hook (connect or rpc) decided: the backend is
/// trusted for access, but each name must still be valid and fall in a namespace, which
/// gives its kind and history.
pub(super) fn subscribe_as_backend_says(
    ctx: &Rc<ShardCtx>,
    peer: &Rc<Peer>,
    names: impl IntoIterator<Item = String>,
) {
    for name in names {
        if let Err(e) = check_channel(&name) {
            send_error(ctx, peer, None, "bad_channel", Some(&name), &e.to_string());
            continue;
        }
        let Some(policy) = ctx
            .shared
            .engine
            .rules
            .resolve(&name)
            .map(|r| r.policy.clone())
        else {
            let msg = "no channel pattern accepts this name";
            send_error(ctx, peer, None, "unknown_channel", Some(&name), msg);
            continue;
        };
        finish_subscribe(
            ctx,
            peer,
            Arc::from(name),
            Pending {
                id: None,
                policy,
                snapshot: false,
                since: None,
                max_hz: None,
            },
        );
    }
}
