//! Pusher's HTTP API (server layer), signed exactly as Pusher signs it ([`super::sign`]):
//! `POST /apps/{id}/events`, `POST /apps/{id}/batch_events`, `GET /apps/{id}/channels`,
//! `GET /apps/{id}/channels/{name}`, `GET /apps/{id}/channels/{name}/users` and
//! `POST /apps/{id}/users/{user_id}/terminate_connections`. Events go to the engine like
//! any publish, so `/ws` subscribers of the same channel receive them too.

use std::rc::Rc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use tokio::sync::oneshot;

use super::config::PusherApp;
use super::sign;
use super::ws::{channel_ok, socket_conn, MAX_EVENT_LEN};
use crate::engine::shard::{PubReply, PublishResult, Remote, ShardMsg};
use crate::protocol::op::PubEvent;
use crate::server::handshake::percent_decode;
use crate::server::runtime::ShardCtx;

type Resp = Response<Full<Bytes>>;

fn text(status: StatusCode, body: String) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn ok_json(v: &Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn bad(msg: impl Into<String>) -> Resp {
    text(StatusCode::BAD_REQUEST, msg.into() + "\n")
}

/// Decoded `key=value` pairs of a query string (`+` is a space, `%XX` an escape).
pub fn query_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (
                percent_decode(&k.replace('+', " ")),
                percent_decode(&v.replace('+', " ")),
            )
        })
        .collect()
}

/// Whether this path is the Pusher API's.
pub fn is_api_path(path: &str) -> bool {
    path.starts_with("/apps/")
}

/// Serves one Pusher API request.
pub async fn handle(ctx: Rc<ShardCtx>, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let query = query_pairs(req.uri().query().unwrap_or(""));
    let rest = path.strip_prefix("/apps/").unwrap_or("");
    let (app_id, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let reg = ctx.shared.pusher.clone();
    let Some((app_i, app)) = reg.by_id(app_id) else {
        return text(StatusCode::NOT_FOUND, "Unknown app\n".to_string());
    };
    if !app.enabled {
        return text(StatusCode::FORBIDDEN, "App is disabled\n".into());
    }
    // Bodies are at most a batch of the largest events plus JSON framing.
    let max_body = (app.max_batch_events * (app.max_event_bytes + 1024))
        .max(ctx.shared.config.max_message_bytes);
    let body = if method == Method::POST {
        match Limited::new(req.into_body(), max_body).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("Request body exceeds {max_body} bytes\n"),
                )
            }
        }
    } else {
        Bytes::new()
    };
    let now = crate::auth::unix_now();
    if let Err(e) = sign::verify_api(
        &app.key,
        &app.secret,
        method.as_str(),
        &path,
        &query,
        &body,
        now,
    ) {
        ctx.shard.borrow_mut().stats.auth_failures.http += 1;
        return text(StatusCode::UNAUTHORIZED, format!("{e}\n"));
    }
    let get = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    // Path segments are percent-decoded (`%23server-to-user-1`); the signature covers the
    // path as sent.
    let decoded: Vec<String> = tail.split('/').map(percent_decode).collect();
    let segs: Vec<&str> = decoded.iter().map(String::as_str).collect();
    match (&method, segs.as_slice()) {
        (&Method::POST, ["events"]) => events(&ctx, app, &body).await,
        (&Method::POST, ["batch_events"]) => batch(&ctx, app, &body).await,
        (&Method::GET, ["channels"]) => {
            let prefix = get("filter_by_prefix").unwrap_or("");
            let info = get("info").unwrap_or("");
            let users = info.split(',').any(|i| i == "user_count");
            if users && !prefix.starts_with("presence-") {
                return bad("user_count may only be requested for presence channels (filter_by_prefix=presence-)");
            }
            let mut channels = Map::new();
            for c in reg.channels(app_i, prefix) {
                let mut o = Map::new();
                if users {
                    o.insert("user_count".into(), c.user_count.into());
                }
                if info.split(',').any(|i| i == "subscription_count") {
                    o.insert("subscription_count".into(), c.subscription_count.into());
                }
                channels.insert(c.name, Value::Object(o));
            }
            ok_json(&json!({ "channels": channels }))
        }
        (&Method::GET, ["channels", name]) => {
            if !channel_ok(name) {
                return bad("Invalid channel name");
            }
            let info = get("info").unwrap_or("");
            let c = reg.channel(&app.engine_channel(name));
            let mut o = Map::new();
            o.insert("occupied".into(), (c.subscription_count > 0).into());
            if info.split(',').any(|i| i == "user_count") {
                if !name.starts_with("presence-") {
                    return bad("user_count may only be requested for presence channels");
                }
                o.insert("user_count".into(), c.user_count.into());
            }
            if info.split(',').any(|i| i == "subscription_count") {
                o.insert("subscription_count".into(), c.subscription_count.into());
            }
            ok_json(&Value::Object(o))
        }
        (&Method::GET, ["channels", name, "users"]) => {
            if !name.starts_with("presence-") || !channel_ok(name) {
                return bad("Users may only be listed for presence channels");
            }
            let users: Vec<Value> = reg
                .users(&app.engine_channel(name))
                .into_iter()
                .map(|id| json!({ "id": id }))
                .collect();
            ok_json(&json!({ "users": users }))
        }
        (&Method::POST, ["users", user, "terminate_connections"]) => {
            for (shard, conn) in reg.user_conns(app_i, user) {
                let msg = ShardMsg::Batch(vec![Remote::Refuse {
                    conn,
                    reason: "connections terminated by the app".into(),
                }]);
                if ctx.shared.mesh.send(shard, msg).is_err() {
                    return text(StatusCode::SERVICE_UNAVAILABLE, "Over capacity\n".into());
                }
            }
            ok_json(&json!({}))
        }
        _ => text(StatusCode::NOT_FOUND, "Not found\n".into()),
    }
}

/// One event of `/events` or of a batch.
#[derive(Deserialize)]
struct ApiEvent<'a> {
    name: String,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    socket_id: Option<String>,
    #[serde(default)]
    info: Option<String>,
}

/// The engine's data for a Pusher `data`: a string holding JSON becomes that JSON (so `/ws`
/// clients see objects, and Pusher clients get the same string back); other text stays a
/// JSON string.
fn engine_data(raw: &RawValue) -> Result<(Bytes, usize), String> {
    let r = raw.get();
    if !r.starts_with('"') {
        return Ok((Bytes::copy_from_slice(r.as_bytes()), r.len()));
    }
    let s: String = serde_json::from_str(r).map_err(|_| "Invalid data".to_string())?;
    let len = s.len();
    if serde_json::from_str::<&RawValue>(&s).is_ok() && !s.trim_start().starts_with('"') {
        Ok((Bytes::from(s.trim().to_string()), len))
    } else {
        Ok((Bytes::copy_from_slice(r.as_bytes()), len))
    }
}

/// Checks one API event against the app's limits and makes its engine events.
#[allow(clippy::result_large_err)] // answered at once, not propagated
fn prepare(app: &PusherApp, e: &ApiEvent<'_>) -> Result<Vec<PubEvent>, Resp> {
    if e.name.is_empty() || e.name.len() > MAX_EVENT_LEN {
        return Err(bad(format!(
            "Event name must have 1 to {MAX_EVENT_LEN} characters"
        )));
    }
    let channels: Vec<&String> = match (&e.channels, &e.channel) {
        (Some(c), _) => c.iter().collect(),
        (None, Some(c)) => vec![c],
        (None, None) => return Err(bad("Missing channels")),
    };
    if channels.is_empty() {
        return Err(bad("Missing channels"));
    }
    if channels.len() > app.max_channels_per_event {
        return Err(bad(format!(
            "Too many channels: an event may be sent to at most {} channels",
            app.max_channels_per_event
        )));
    }
    if let Some(c) = channels.iter().find(|c| !channel_ok(c)) {
        return Err(bad(format!(
            "Invalid channel name: {}",
            crate::protocol::encode::echo(c)
        )));
    }
    let (data, len) = engine_data(e.data).map_err(bad)?;
    if len > app.max_event_bytes {
        return Err(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "Event data exceeds the limit of {} bytes\n",
                app.max_event_bytes
            ),
        ));
    }
    let exclude = match e.socket_id.as_deref() {
        None => 0,
        Some(s) => socket_conn(s).ok_or_else(|| bad("Invalid socket_id"))?,
    };
    Ok(channels
        .into_iter()
        .map(|c| PubEvent {
            channel: app.engine_channel(c),
            event: e.name.clone(),
            data: data.clone(),
            exclude,
            key: None,
        })
        .collect())
}

/// The `info` of a publish answer for `channels` (only the attributes asked for).
fn info_of(ctx: &ShardCtx, app: &PusherApp, channels: &[String], info: &str) -> Value {
    let subs = info.split(',').any(|i| i == "subscription_count");
    let users = info.split(',').any(|i| i == "user_count");
    let mut m = Map::new();
    for c in channels {
        let ci = ctx.shared.pusher.channel(&app.engine_channel(c));
        let mut o = Map::new();
        if subs {
            o.insert("subscription_count".into(), ci.subscription_count.into());
        }
        if users && c.starts_with("presence-") {
            o.insert("user_count".into(), ci.user_count.into());
        }
        m.insert(c.clone(), Value::Object(o));
    }
    Value::Object(m)
}

/// Hands events to the engine and waits until they are sequenced.
async fn publish(ctx: &ShardCtx, events: Vec<PubEvent>) -> Option<Resp> {
    let mut waits: Vec<oneshot::Receiver<PublishResult>> = Vec::new();
    let result = {
        let mut shard = ctx.shard.borrow_mut();
        shard.tick();
        let r = shard.publish(events, |idx| {
            let (tx, rx) = oneshot::channel();
            waits.push(rx);
            PubReply::Http { tx, idx }
        });
        shard.commit();
        r
    };
    if result.is_err() {
        return Some(text(
            StatusCode::SERVICE_UNAVAILABLE,
            "Over capacity\n".into(),
        ));
    }
    for rx in waits {
        match rx.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Some(text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n"))),
            Err(_) => {
                return Some(text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The server is shutting down\n".into(),
                ))
            }
        }
    }
    None
}

fn event_channels(e: &ApiEvent<'_>) -> Vec<String> {
    match (&e.channels, &e.channel) {
        (Some(c), _) => c.clone(),
        (None, Some(c)) => vec![c.clone()],
        _ => Vec::new(),
    }
}

async fn events(ctx: &ShardCtx, app: &PusherApp, body: &[u8]) -> Resp {
    let e: ApiEvent<'_> = match serde_json::from_slice(body) {
        Ok(e) => e,
        Err(e) => return bad(format!("Invalid JSON body: {e}")),
    };
    let evs = match prepare(app, &e) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if let Some(r) = publish(ctx, evs).await {
        return r;
    }
    match e.info.as_deref() {
        Some(info) if !info.is_empty() => {
            ok_json(&json!({ "channels": info_of(ctx, app, &event_channels(&e), info) }))
        }
        _ => ok_json(&json!({})),
    }
}

async fn batch(ctx: &ShardCtx, app: &PusherApp, body: &[u8]) -> Resp {
    #[derive(Deserialize)]
    struct Batch<'a> {
        #[serde(borrow)]
        batch: Vec<ApiEvent<'a>>,
    }
    let b: Batch<'_> = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => return bad(format!("Invalid JSON body: {e}")),
    };
    if b.batch.len() > app.max_batch_events {
        return bad(format!(
            "Batch too large: at most {} events",
            app.max_batch_events
        ));
    }
    let mut all = Vec::new();
    for e in &b.batch {
        match prepare(app, e) {
            Ok(v) => all.extend(v),
            Err(r) => return r,
        }
    }
    if all.is_empty() {
        return ok_json(&json!({ "batch": [] }));
    }
    if let Some(r) = publish(ctx, all).await {
        return r;
    }
    let any_info = b
        .batch
        .iter()
        .any(|e| e.info.as_deref().is_some_and(|i| !i.is_empty()));
    if !any_info {
        return ok_json(&json!({}));
    }
    let out: Vec<Value> = b
        .batch
        .iter()
        .map(|e| {
            let chans = event_channels(e);
            match e.info.as_deref() {
                Some(info) if !info.is_empty() => {
                    // One channel per batch event: its attributes directly.
                    info_of(ctx, app, &chans, info)
                        .get(chans.first().map_or("", String::as_str))
                        .cloned()
                        .unwrap_or(json!({}))
                }
                _ => json!({}),
            }
        })
        .collect();
    ok_json(&json!({ "batch": out }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_strings_holding_json_become_json() {
        let raw: &RawValue = serde_json::from_str(r#""{\"id\":1}""#).unwrap();
        assert_eq!(engine_data(raw).unwrap().0, &br#"{"id":1}"#[..]);
        let raw: &RawValue = serde_json::from_str(r#""hello""#).unwrap();
        assert_eq!(engine_data(raw).unwrap().0, &br#""hello""#[..]);
        let raw: &RawValue = serde_json::from_str(r#"{"a":1}"#).unwrap();
        assert_eq!(engine_data(raw).unwrap().0, &br#"{"a":1}"#[..]);
    }

    #[test]
    fn queries_are_decoded() {
        let q = query_pairs("a=1&info=user_count%2Csubscription_count&b=x+y&c");
        assert_eq!(q[1].1, "user_count,subscription_count");
        assert_eq!(q[2].1, "x y");
        assert_eq!(q[3], ("c".into(), "".into()));
    }
}
