//! The server API (server layer): operator endpoints over HTTP, each needing an API key or a
//! token with the `admin` role ([`super::http::operator`]).
//!
//! * `POST /api/disconnect {"user","reason"?}`: closes the user's connections (4012, with
//!   the reason the client sees).
//! * `POST /api/unsubscribe {"user","channel"}`: removes the user's connections from a
//!   channel; each gets an `unsubscribed` frame.
//! * `GET /api/channels?limit=N`: active channels with subscriber counts, most first.
//! * `GET /api/history?channel=C&since=S&limit=N`: a channel's retained events.
//!
//! Commands to connections go to every shard as [`ShardMsg::Admin`] through the same
//! inboxes that carry events; each shard applies them to its own connections between
//! batches ([`apply`]) and answers how many it touched. On this node only: in cluster mode,
//! call each node (or let clients reconnect elsewhere).

use std::any::Any;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::oneshot;

use super::runtime::ShardCtx;
use super::status::SHARD_ANSWER_TIMEOUT;
use crate::engine::shard::{home_of, History, ShardMsg};
use crate::protocol::dialect::Reply;
use crate::protocol::encode::Unsubscribed;
use crate::protocol::CloseCode;

/// Longest disconnect reason (bytes): a WebSocket close reason holds at most 123.
pub const MAX_REASON: usize = 100;
/// Most events one history request returns.
pub const MAX_HISTORY_LIMIT: usize = 1000;

/// A command to a shard's connections.
#[derive(Debug)]
pub(crate) enum AdminCmd {
    /// Close every connection of `user` with 4012 and `reason`.
    Disconnect { user: Arc<str>, reason: String },
    /// Remove every connection of `user` from `channel`.
    Unsubscribe { user: Arc<str>, channel: Arc<str> },
}

/// Applies a command on this shard (its driver calls this); answers the connections touched.
pub(crate) fn apply(ctx: &Rc<ShardCtx>, cmd: Box<dyn Any + Send>) -> u64 {
    let Ok(cmd) = cmd.downcast::<AdminCmd>() else {
        return 0;
    };
    let user_of = |p: &Rc<super::peer::Peer>| p.identity.borrow().user.clone();
    let mut shard = ctx.shard.borrow_mut();
    shard.tick();
    let mut n = 0;
    match *cmd {
        AdminCmd::Disconnect { user, reason } => {
            let peers: Vec<_> = shard
                .peers()
                .filter(|p| !p.is_closing() && user_of(p).as_deref() == Some(&*user))
                .cloned()
                .collect();
            for p in peers {
                tracing::info!(conn = %p.conn_id(), user = %user, reason = %reason, "disconnected by the server API");
                shard.close_peer(&p, CloseCode::Disconnected, &reason, false);
                n += 1;
            }
        }
        AdminCmd::Unsubscribe { user, channel } => {
            let peers: Vec<_> = shard
                .peers()
                .filter(|p| !p.is_closing() && user_of(p).as_deref() == Some(&*user))
                .cloned()
                .collect();
            for p in peers {
                if shard.unsubscribe(&p, &channel) {
                    let f = p.format.reply(&Reply::Unsubscribed(Unsubscribed {
                        kind: "unsubscribed",
                        id: None,
                        channels: vec![&channel],
                    }));
                    match p.reply(f) {
                        Ok(()) => shard.mark_dirty(&p),
                        Err(why) => shard.close_slow(&p, why),
                    }
                    n += 1;
                }
            }
        }
    }
    shard.commit();
    n
}

/// Sends `make(reply)` to `shard` and waits for the answer (retrying a full inbox) until the
/// shard answer deadline.
async fn ask<T>(
    ctx: &ShardCtx,
    shard: usize,
    make: impl Fn(oneshot::Sender<T>) -> ShardMsg,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + SHARD_ANSWER_TIMEOUT;
    let (tx, rx) = oneshot::channel();
    let mut msg = make(tx);
    loop {
        match ctx.shared.mesh.send(shard, msg) {
            Ok(()) => break,
            Err(back) if tokio::time::Instant::now() < deadline => {
                msg = back;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(_) => return None,
        }
    }
    tokio::time::timeout_at(deadline, rx).await.ok()?.ok()
}

/// Runs `cmd` on every shard; the total of connections touched.
pub(crate) async fn broadcast(ctx: &ShardCtx, cmd: impl Fn() -> AdminCmd) -> u64 {
    let mut total = 0;
    for shard in 0..ctx.shared.mesh.len() {
        total += ask(ctx, shard, |reply| ShardMsg::Admin {
            cmd: Box::new(cmd()),
            reply,
        })
        .await
        .unwrap_or(0);
    }
    total
}

/// Body of `POST /api/disconnect`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DisconnectReq {
    pub(crate) user: String,
    #[serde(default)]
    pub(crate) reason: Option<String>,
}

/// Body of `POST /api/unsubscribe`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UnsubscribeReq {
    pub(crate) user: String,
    pub(crate) channel: String,
}

/// A disconnect reason made safe for a close frame: at most [`MAX_REASON`] bytes, cut on a
/// character boundary, control characters dropped.
pub(crate) fn close_reason(r: Option<&str>) -> String {
    let r = r.unwrap_or("disconnected by the server");
    let mut out = String::new();
    for c in r.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_REASON {
            break;
        }
        out.push(c);
    }
    out
}

/// The retained events of `channel` after `since` (this node's home shard of the channel).
pub(crate) async fn history(
    ctx: &ShardCtx,
    channel: &str,
    since: u64,
    limit: usize,
) -> Option<Option<History>> {
    let home = home_of(channel, ctx.shared.mesh.len());
    ask(ctx, home, |reply| ShardMsg::History {
        channel: channel.to_string(),
        since,
        limit,
        reply,
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_cut_and_cleaned() {
        assert_eq!(close_reason(None), "disconnected by the server");
        assert_eq!(close_reason(Some("ban\nned")), "banned");
        let long = "é".repeat(80);
        let r = close_reason(Some(&long));
        assert!(r.len() <= MAX_REASON && r.chars().all(|c| c == 'é'));
    }
}
