//! The rpc hook (server layer): a client op the server does not know, from an authenticated
//! connection, is forwarded to `[hooks] rpc_url` (seeds/001's `join_challenge`):
//!
//! ```json
//! → {"user":"42","conn_id":"0-3","op":"join_challenge","params":{"op":"join_challenge","id":7,"challenge_id":7}}
//! ← {"result":{"joined":true},"subscribe":["challenge_7"],"unsubscribe":[]}
//! ← {"error":{"code":"forbidden","message":"Access denied"}}
//! ```
//!
//! The client gets `{"type":"rpc","id":7,"op":"join_challenge","result":{...}}`, or an
//! `error` frame with the backend's code (`rpc_` prefixed unless it is `forbidden`) and
//! message; the channels in `subscribe` are subscribed as the backend says (each must fall
//! in a namespace), those in `unsubscribe` removed. Runs as a shard task like every hook.

use std::rc::Rc;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::ops::{admit, send, send_error};
use super::peer::Peer;
use super::runtime::ShardCtx;
use crate::protocol::dialect::Reply;
use crate::protocol::encode::{RpcResult, Unsubscribed};
use crate::protocol::op::Id;

/// Most channels one rpc answer may subscribe or unsubscribe.
pub const MAX_CHANNELS: usize = 64;

/// Forwards the op `op` (a JSON object with an unknown `op`) to the rpc hook.
pub(crate) fn start(ctx: &Rc<ShardCtx>, peer: &Rc<Peer>, op: Map<String, Value>) {
    let id: Option<Id> = op
        .get("id")
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    if !admit(ctx, peer, id.as_ref()) {
        return;
    }
    let name: String = op
        .get("op")
        .and_then(Value::as_str)
        .unwrap_or("")
        .chars()
        .take(64)
        .collect();
    let Some(user) = peer.identity.borrow().user.clone() else {
        let msg = "authenticate first: only an authenticated connection may use backend ops";
        send_error(ctx, peer, id.as_ref(), "unauthorized", None, msg);
        return;
    };
    let Some(url) = ctx.shared.config.hooks.rpc.clone() else {
        return;
    };
    let ctx = ctx.clone();
    let peer = peer.clone();
    tokio::task::spawn_local(async move {
        let body = serde_json::json!({
            "user": &*user,
            "conn_id": peer.conn_id().to_string(),
            "op": &name,
            "params": Value::Object(op),
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
            Ok(answer) => apply(&ctx, &peer, id, &name, &answer),
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

fn names(answer: &Value, key: &str) -> Vec<String> {
    answer
        .get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .take(MAX_CHANNELS)
                .collect()
        })
        .unwrap_or_default()
}

fn apply(ctx: &Rc<ShardCtx>, peer: &Rc<Peer>, id: Option<Id>, op: &str, answer: &Value) {
    if let Some(err) = answer.get("error") {
        let code = err.get("code").and_then(Value::as_str).unwrap_or("failed");
        let code: String = code
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(32)
            .collect();
        let code = if code == "forbidden" {
            code
        } else {
            format!("rpc_{code}")
        };
        let msg = err
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("the backend refused the op");
        send_error(ctx, peer, id.as_ref(), &code, None, msg);
        return;
    }
    let removed: Vec<Arc<str>> = {
        let mut shard = ctx.shard.borrow_mut();
        names(answer, "unsubscribe")
            .into_iter()
            .filter(|c| shard.unsubscribe(peer, c))
            .map(Arc::from)
            .collect()
    };
    if !removed.is_empty() {
        let list: Vec<&str> = removed.iter().map(|c| &**c).collect();
        let f = peer.format.reply(&Reply::Unsubscribed(Unsubscribed {
            kind: "unsubscribed",
            id: None,
            channels: list,
        }));
        send(ctx, peer, f);
    }
    let result = answer.get("result").cloned().unwrap_or(Value::Null);
    let f = peer.format.reply(&Reply::Rpc(RpcResult {
        kind: "rpc",
        id: id.as_ref(),
        op,
        result: &result,
    }));
    send(ctx, peer, f);
    super::connect_hook::subscribe_as_backend_says(ctx, peer, names(answer, "subscribe"));
}
