//! HTTP on the WebSocket port (server layer), with hyper: `POST /api/publish` (credentials
//! here, admission by [`super::ops::admit_publish`] as for the WebSocket `publish` op, its
//! refusals answered as HTTP statuses), `GET /health` (liveness), the operations endpoints
//! of [`super::status`] (`GET /ready`, `GET /ws/status`, `GET /health/websocket`, `GET
//! /metrics`), precise answers to faulty upgrade requests, and upgrades that arrive on a
//! kept-alive HTTP connection (after which the raw socket is taken back from hyper and
//! served by [`super::conn`]). A connection's first request, when it is a WebSocket
//! upgrade, never reaches hyper: see [`super::handshake`].

use std::convert::Infallible;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::sync::oneshot;

use super::handshake::{self, Prefixed, HEADER_TIMEOUT};
use super::ops::{self, PublishRefused};
use super::runtime::{ConnectionGuard, ShardCtx};
use super::status;
use crate::auth::{Identity, Role};
use crate::cluster::PresenceQuery;
use crate::engine::shard::{PubReply, PublishResult};
use crate::protocol::op::{check_key, parse_http_publish, set_key};
use crate::protocol::{encode, Format};

type Resp = Response<Full<Bytes>>;

/// A request body (publish) must arrive completely within this, like the head within
/// [`HEADER_TIMEOUT`]: a body sent at 1 byte/s or a chunked body that never ends would
/// otherwise hold the connection forever. 10 s carries a full 256 KiB body at 26 KB/s.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves HTTP on a socket (with its first bytes replayed) until it closes or upgrades.
/// When the shard drains (SIGTERM), the request in flight is finished and answered (a
/// publish waiting for Redis included), then the connection closes; the shard's drain
/// waits for that, up to `shutdown.drain_ms`.
pub fn serve(ctx: Rc<ShardCtx>, stream: Prefixed, guard: ConnectionGuard) {
    let io = TokioIo::new(stream);
    let svc_ctx = ctx.clone();
    let fut = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(16 * 1024)
        .serve_connection(io, service_fn(move |req| handle(svc_ctx.clone(), req)))
        .with_upgrades();
    let busy = ctx.http_conn();
    tokio::task::spawn_local(async move {
        let _guard = guard;
        let mut fut = std::pin::pin!(fut);
        let done = tokio::select! {
            r = fut.as_mut() => Some(r),
            _ = busy.drained() => None,
        };
        let r = match done {
            Some(r) => r,
            None => {
                fut.as_mut().graceful_shutdown();
                fut.await
            }
        };
        if let Err(e) = r {
            tracing::trace!(error = %e, "http connection ended");
        }
        drop(busy);
    });
}

async fn handle(ctx: Rc<ShardCtx>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    let path = req.uri().path();
    Ok(match (req.method(), path) {
        (&Method::GET, "/ws") => upgrade(ctx, req),
        (&Method::POST, "/api/publish") => publish(ctx, req).await,
        (&Method::GET, "/health") => match status::cluster_health(&ctx) {
            Some(h) => json(StatusCode::OK, &h),
            None => text(StatusCode::OK, "ok\n"),
        },
        (&Method::GET, "/api/presence") => presence(&ctx, &req).await,
        (&Method::GET, "/ready") => match status::ready(&ctx).await {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, why),
        },
        (&Method::GET, "/ws/status") => {
            // Private channel names (user.42.orders, ...) only for an operator; others see
            // the public channels among the top ones.
            let private = operator(&ctx, &req).is_ok();
            let body = status::status(&ctx, query_param(&req, "top"), private).await;
            json(StatusCode::OK, &body)
        }
        (&Method::GET, "/health/websocket") => {
            let h = status::health_websocket(&ctx).await;
            let code = if h.status == "healthy" {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json(code, &h)
        }
        (&Method::GET, "/metrics") => {
            let mut r = Response::new(Full::new(Bytes::from(status::metrics(&ctx).await)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        (&Method::GET, "/demo/token") => demo_token(&ctx, &req),
        (&Method::POST, "/api/disconnect") => api_disconnect(&ctx, req).await,
        (&Method::POST, "/api/unsubscribe") => api_unsubscribe(&ctx, req).await,
        (&Method::GET, "/api/channels") => api_channels(&ctx, &req).await,
        (&Method::GET, "/api/history") => api_history(&ctx, &req).await,
        (_, p) if crate::pusher::api::is_api_path(p) => crate::pusher::api::handle(ctx, req).await,
        (
            _,
            "/ws" | "/api/publish" | "/health" | "/ready" | "/ws/status" | "/health/websocket"
            | "/metrics" | "/api/presence" | "/api/disconnect" | "/api/unsubscribe"
            | "/api/channels" | "/api/history",
        ) => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
        (&Method::GET, p) if crate::server::assets::get(p).is_some() => asset(p),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    })
}

fn text(status: StatusCode, body: &'static str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json<T: Serialize>(status: StatusCode, body: &T) -> Resp {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(bytes)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

#[derive(Serialize)]
struct ErrBody<'a> {
    error: ErrInner<'a>,
}
#[derive(Serialize)]
struct ErrInner<'a> {
    code: &'a str,
    message: &'a str,
}

/// An error body; `message` may repeat client input, so it is cut with [`encode::echo`].
fn json_error(status: StatusCode, code: &str, message: &str) -> Resp {
    json(
        status,
        &ErrBody {
            error: ErrInner {
                code,
                message: &encode::echo(message),
            },
        },
    )
}

fn header_has_token(req: &Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn query_param<'a>(req: &'a Request<Incoming>, key: &str) -> Option<&'a str> {
    handshake::query_param(req.uri().query()?, key)
}

fn upgrade(ctx: Rc<ShardCtx>, req: Request<Incoming>) -> Resp {
    if !header_has_token(&req, header::UPGRADE, "websocket")
        || !header_has_token(&req, header::CONNECTION, "upgrade")
    {
        let mut r = text(
            StatusCode::UPGRADE_REQUIRED,
            "this endpoint speaks WebSocket\n",
        );
        r.headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        return r;
    }
    if req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        let mut r = text(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported WebSocket version\n",
        );
        r.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return r;
    }
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n");
    };
    let format = match query_param(&req, "format") {
        None => Format::Json,
        Some(f) => match Format::parse(f) {
            Some(f) => f,
            None => return text(StatusCode::BAD_REQUEST, "format must be json or msgpack\n"),
        },
    };
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    if !handshake::origin_allowed(&ctx, origin) {
        return text(StatusCode::FORBIDDEN, "origin not allowed\n");
    }
    let bearer = req
        .headers()
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(handshake::bearer_token);
    // Picked the same way as on the fast upgrade path (`handshake::classify`).
    let token = handshake::pick_token(query_param(&req, "token"), bearer);
    let cookie = req
        .headers()
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .map(|c| c.trim().to_string());
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(req);
    tokio::task::spawn_local(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        let parts = match upgraded.downcast::<TokioIo<Prefixed>>() {
            Ok(p) => p,
            Err(_) => {
                tracing::error!("upgraded connection is not a TCP stream");
                return;
            }
        };
        let (unread, stream) = parts.io.into_inner().into_parts();
        let mut leftover = unread.to_vec();
        leftover.extend_from_slice(&parts.read_buf);
        // The hyper connection's own guard ends with it; this socket lives on as a WebSocket.
        ctx.shared
            .open_sockets
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let guard = ctx.connection_guard();
        handshake::start(
            ctx,
            stream,
            guard,
            Bytes::from(leftover),
            format,
            token,
            cookie,
        );
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    r
}

#[derive(Serialize)]
struct PublishedOne<'a> {
    channel: &'a str,
    seq: u64,
}
#[derive(Serialize)]
struct PublishedMany {
    seqs: Vec<u64>,
}

/// Compares without an early exit, so the time taken says nothing about where keys differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who is publishing over HTTP: anyone in open (demo) mode, a configured API key
/// (`Authorization: Bearer KEY` or `X-Api-Key: KEY`), each with the publisher role, or the
/// identity of a JWT (whose role [`ops::may_publish`] then checks). Refuses missing or bad
/// credentials (401).
#[allow(clippy::result_large_err)]
fn publisher_identity(ctx: &ShardCtx, req: &Request<Incoming>) -> Result<Identity, Resp> {
    let access = &ctx.shared.config.access;
    if access.anonymous_publish {
        return Ok(Identity::anonymous(Role::Publisher));
    }
    let Some(cred) = http_credential(req) else {
        let mut r = json_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send an API key or a publisher token",
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return Err(r);
    };
    if access
        .api_keys
        .iter()
        .any(|k| constant_time_eq(k.as_bytes(), cred.as_bytes()))
    {
        return Ok(Identity::anonymous(Role::Publisher));
    }
    match ctx.shared.verifier.verify(cred) {
        Ok(id) => Ok(id),
        Err(e) => {
            ctx.shard.borrow_mut().stats.auth_failures.http += 1;
            tracing::info!(reason = %e, "HTTP publish refused");
            Err(json_error(
                StatusCode::UNAUTHORIZED,
                "auth_failed",
                &e.to_string(),
            ))
        }
    }
}

/// The credential of an HTTP request: `X-Api-Key: K` or `Authorization: Bearer K`.
fn http_credential(req: &Request<Incoming>) -> Option<&str> {
    let h = req.headers();
    h.get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            h.get_all(header::AUTHORIZATION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(handshake::bearer_token)
        })
        .map(str::trim)
}

/// Whether the request comes from an operator: an API key, or a token with the `admin`
/// role. `Err` is the answer to send when the caller must be one (401 without or with bad
/// credentials, 403 for a valid token of another role).
#[allow(clippy::result_large_err)]
pub(crate) fn operator(ctx: &ShardCtx, req: &Request<Incoming>) -> Result<(), Resp> {
    let Some(cred) = http_credential(req) else {
        let mut r = json_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send an API key or an admin token",
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return Err(r);
    };
    let access = &ctx.shared.config.access;
    if access
        .api_keys
        .iter()
        .any(|k| constant_time_eq(k.as_bytes(), cred.as_bytes()))
    {
        return Ok(());
    }
    match ctx.shared.verifier.verify(cred) {
        Ok(id) if id.admin => Ok(()),
        Ok(_) => Err(json_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this needs an API key or a token with the admin role",
        )),
        Err(e) => {
            ctx.shard.borrow_mut().stats.auth_failures.http += 1;
            Err(json_error(
                StatusCode::UNAUTHORIZED,
                "auth_failed",
                &e.to_string(),
            ))
        }
    }
}

/// A refused publish as HTTP: 403 without the publisher role, 400 for a channel no pattern
/// accepts, 503 when overloaded; the body names the channel in its message.
fn publish_refused(r: &PublishRefused) -> Resp {
    let status = match r {
        PublishRefused::NotPublisher => StatusCode::FORBIDDEN,
        PublishRefused::UnknownChannel { .. } => StatusCode::BAD_REQUEST,
        PublishRefused::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    json_error(status, r.code(), &r.to_string())
}

/// `POST /api/publish`: credentials, role (before the body is read), body, parse, the
/// shared admission ([`ops::admit_publish`]), then the answer once every home shard has
/// the events in its inbox.
async fn publish(ctx: Rc<ShardCtx>, req: Request<Incoming>) -> Resp {
    let who = match publisher_identity(&ctx, &req) {
        Ok(who) => who,
        Err(r) => return r,
    };
    if let Err(r) = ops::may_publish(&who) {
        return publish_refused(&r);
    }
    // `Idempotency-Key` (the IETF draft's header), or `idempotency_key` in the body.
    let header_key: Option<Option<String>> = req
        .headers()
        .get("idempotency-key")
        .map(|v| v.to_str().ok().map(String::from));
    let max = ctx.shared.config.max_message_bytes;
    let read = tokio::time::timeout(BODY_TIMEOUT, Limited::new(req.into_body(), max).collect());
    let body = match read.await {
        Err(_) => {
            // hyper closes the connection after this answer: the body was not read to its end.
            tracing::info!("publish body not received within the deadline");
            return json_error(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                &format!(
                    "the body did not arrive within {} s",
                    BODY_TIMEOUT.as_secs()
                ),
            );
        }
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return json_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    &format!("body exceeds {max} bytes"),
                );
            }
            return json_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "could not read the body",
            );
        }
    };
    let (mut events, single) = match parse_http_publish(&body) {
        Ok(v) => v,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e.code(), &e.to_string()),
    };
    if let Some(h) = header_key {
        let key = match h.as_deref().map(check_key) {
            Some(Ok(k)) => k,
            Some(Err(e)) => return json_error(StatusCode::BAD_REQUEST, e.code(), &e.to_string()),
            None => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "`Idempotency-Key` must be printable ASCII",
                )
            }
        };
        if events[0].key.as_ref().is_some_and(|k| *k != key) {
            return json_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "`Idempotency-Key` and `idempotency_key` differ",
            );
        }
        set_key(&mut events, &key);
    }
    let admitted = match ops::admit_publish(&ctx.shared.engine.rules, &who, events) {
        Ok(a) => a,
        Err(r) => return publish_refused(&r),
    };
    // The parsers give at least one event.
    let first_channel = admitted.events()[0].channel.clone();
    let total = admitted.events().len();
    let mut waits: Vec<oneshot::Receiver<PublishResult>> = Vec::new();
    ctx.shard.borrow_mut().tick();
    let result = ops::publish(&ctx, admitted, |idx| {
        let (tx, rx) = oneshot::channel();
        waits.push(rx);
        PubReply::Http { tx, idx }
    });
    ctx.shard.borrow_mut().commit();
    if let Err(r) = result {
        return publish_refused(&r);
    }
    let mut seqs = vec![0u64; total];
    for rx in waits {
        match rx.await {
            Ok(Err(e)) => {
                return json_error(StatusCode::SERVICE_UNAVAILABLE, e.code(), &e.to_string())
            }
            Ok(Ok(parts)) => {
                for (i, s) in parts {
                    if let Some(slot) = seqs.get_mut(i as usize) {
                        *slot = s;
                    }
                }
            }
            Err(_) => {
                return json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    "the server is shutting down",
                )
            }
        }
    }
    if single {
        json(
            StatusCode::OK,
            &PublishedOne {
                channel: &first_channel,
                seq: seqs[0],
            },
        )
    } else {
        json(StatusCode::OK, &PublishedMany { seqs })
    }
}

/// `GET /api/presence?user=U` / `?channel=C`.
async fn presence(ctx: &ShardCtx, req: &Request<Incoming>) -> Resp {
    // Who is online and who listens where is private: operators only.
    if let Err(r) = operator(ctx, req) {
        return r;
    }
    #[derive(Serialize)]
    struct UserCount<'a> {
        user: &'a str,
        connections: u64,
    }
    #[derive(Serialize)]
    struct ChannelCount<'a> {
        channel: &'a str,
        subscribers: u64,
    }
    let decode = handshake::percent_decode;
    let (query, name) = match (query_param(req, "user"), query_param(req, "channel")) {
        (Some(u), None) => {
            let u = decode(u);
            (PresenceQuery::User(Arc::from(u.as_str())), u)
        }
        (None, Some(c)) => {
            let c = decode(c);
            if let Err(e) = crate::protocol::names::check_channel(&c) {
                return json_error(StatusCode::BAD_REQUEST, "bad_channel", &e.to_string());
            }
            (PresenceQuery::Channel(Arc::from(c.as_str())), c)
        }
        _ => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "give exactly one of ?user= and ?channel=",
            )
        }
    };
    let is_user = matches!(query, PresenceQuery::User(_));
    match status::presence(ctx, query).await {
        Some(n) if is_user => json(
            StatusCode::OK,
            &UserCount {
                user: &name,
                connections: n,
            },
        ),
        Some(n) => json(
            StatusCode::OK,
            &ChannelCount {
                channel: &name,
                subscribers: n,
            },
        ),
        None => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "presence needs Redis, which is unreachable",
        ),
    }
}

/// An embedded file of the built-in board (see [`super::assets`]).
fn asset(path: &str) -> Resp {
    let Some((content_type, body)) = super::assets::get(path) else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    let mut r = Response::new(Full::new(Bytes::from_static(body)));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if path == "/quotecast.js" {
        // The client library, public and without credentials: a page of any origin may
        // load it with <script type="module"> (module scripts are fetched with CORS).
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
    }
    r
}

#[derive(Serialize)]
struct DemoToken<'a> {
    user: &'a str,
    token: &'a str,
    /// When the token expires (seconds since the epoch).
    exp: u64,
    /// What the token opens: the demo user's own private channels.
    channels: String,
    /// The truth about it: signed with a throwaway secret of this demo process.
    note: &'static str,
}

/// `GET /demo/token?user=42`: in demo mode only, a token for a demo user, so the built-in
/// board can show that user's private channels. The tokens are signed with a secret made up
/// at start (the demo refuses a configured `jwt_secret`), so they open nothing elsewhere.
fn demo_token(ctx: &ShardCtx, req: &Request<Incoming>) -> Resp {
    let tokens = &ctx.shared.config.demo_tokens;
    if tokens.is_empty() {
        return json_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no demo token: the server is not in demo mode",
        );
    }
    let want = query_param(req, "user");
    match tokens.iter().find(|(u, _)| want.is_none_or(|w| w == u)) {
        Some((user, token)) => json(
            StatusCode::OK,
            &DemoToken {
                user,
                token,
                exp: token_exp(token).unwrap_or(0),
                channels: format!("user.{user}.**"),
                note: "demo token signed with a throwaway secret made at start; subscriber role",
            },
        ),
        None => {
            let users: Vec<&str> = tokens.iter().map(|(u, _)| u.as_str()).collect();
            json_error(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!(
                    "no demo user `{}`; demo users: {}",
                    want.unwrap_or(""),
                    users.join(", ")
                ),
            )
        }
    }
}

/// The `exp` claim of a token this process signed (read without verifying).
fn token_exp(token: &str) -> Option<u64> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()?
        .get("exp")?
        .as_u64()
}

// ---- server API (operators) ----------------------------------------------------------------

/// Largest server-API request body (bytes).
const API_BODY_MAX: usize = 16 * 1024;

/// Reads and parses a small JSON body under the body deadline.
#[allow(clippy::result_large_err)]
async fn api_body<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, Resp> {
    let read = tokio::time::timeout(
        BODY_TIMEOUT,
        Limited::new(req.into_body(), API_BODY_MAX).collect(),
    );
    let body = match read.await {
        Err(_) => {
            return Err(json_error(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "the body did not arrive in time",
            ))
        }
        Ok(Err(_)) => {
            return Err(json_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "could not read the body (at most 16 KiB)",
            ))
        }
        Ok(Ok(b)) => b.to_bytes(),
    };
    serde_json::from_slice(&body)
        .map_err(|e| json_error(StatusCode::BAD_REQUEST, "bad_request", &e.to_string()))
}

/// `POST /api/disconnect {"user","reason"?}`: closes the user's connections on this node
/// (4012 with the reason).
async fn api_disconnect(ctx: &ShardCtx, req: Request<Incoming>) -> Resp {
    if let Err(r) = operator(ctx, &req) {
        return r;
    }
    let body: super::api::DisconnectReq = match api_body(req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let user: Arc<str> = Arc::from(body.user.as_str());
    let reason = super::api::close_reason(body.reason.as_deref());
    let n = super::api::broadcast(ctx, || super::api::AdminCmd::Disconnect {
        user: user.clone(),
        reason: reason.clone(),
    })
    .await;
    json(
        StatusCode::OK,
        &serde_json::json!({"user": &*user, "disconnected": n}),
    )
}

/// `POST /api/unsubscribe {"user","channel"}`: removes the user's connections on this node
/// from the channel (each gets `unsubscribed`).
async fn api_unsubscribe(ctx: &ShardCtx, req: Request<Incoming>) -> Resp {
    if let Err(r) = operator(ctx, &req) {
        return r;
    }
    let body: super::api::UnsubscribeReq = match api_body(req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Err(e) = crate::protocol::names::check_channel(&body.channel) {
        return json_error(StatusCode::BAD_REQUEST, "bad_channel", &e.to_string());
    }
    let user: Arc<str> = Arc::from(body.user.as_str());
    let channel: Arc<str> = Arc::from(body.channel.as_str());
    let n = super::api::broadcast(ctx, || super::api::AdminCmd::Unsubscribe {
        user: user.clone(),
        channel: channel.clone(),
    })
    .await;
    json(
        StatusCode::OK,
        &serde_json::json!({"user": &*user, "channel": &*channel, "unsubscribed": n}),
    )
}

/// `GET /api/channels?limit=N`: active channels on this node with subscriber counts, most
/// first (default 100, at most 1,000).
async fn api_channels(ctx: &ShardCtx, req: &Request<Incoming>) -> Resp {
    if let Err(r) = operator(ctx, req) {
        return r;
    }
    let limit = query_param(req, "limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(100)
        .clamp(1, 1000);
    let snaps = status::gather(ctx, limit).await;
    let m = crate::metrics::merge(&snaps);
    let channels: Vec<_> = m
        .top_channels
        .iter()
        .take(limit)
        .map(|(c, n)| serde_json::json!({"channel": &**c, "subscribers": n}))
        .collect();
    json(
        StatusCode::OK,
        &serde_json::json!({"channels": channels, "total": m.channels}),
    )
}

/// `GET /api/history?channel=C&since=S&limit=N`: the channel's events retained on this node
/// after `since` (default 0), oldest first, at most `limit` (default 100, at most 1,000).
async fn api_history(ctx: &ShardCtx, req: &Request<Incoming>) -> Resp {
    if let Err(r) = operator(ctx, req) {
        return r;
    }
    let Some(channel) = query_param(req, "channel").map(handshake::percent_decode) else {
        return json_error(StatusCode::BAD_REQUEST, "bad_request", "give ?channel=");
    };
    if let Err(e) = crate::protocol::names::check_channel(&channel) {
        return json_error(StatusCode::BAD_REQUEST, "bad_channel", &e.to_string());
    }
    let num = |k: &str, default: u64| -> Option<u64> {
        match query_param(req, k) {
            None => Some(default),
            Some(v) => v.parse().ok(),
        }
    };
    let (Some(since), Some(limit)) = (num("since", 0), num("limit", 100)) else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "`since` and `limit` must be non-negative integers",
        );
    };
    let limit = (limit as usize).clamp(1, super::api::MAX_HISTORY_LIMIT);
    match super::api::history(ctx, &channel, since, limit).await {
        None => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the channel's shard did not answer",
        ),
        Some(None) => json(
            StatusCode::OK,
            &serde_json::json!({"channel": channel, "seq": 0, "complete": since == 0, "events": []}),
        ),
        Some(Some(h)) => {
            let events: Vec<serde_json::Value> = h
                .events
                .iter()
                .map(|e| {
                    let data: serde_json::Value =
                        serde_json::from_slice(&e.data).unwrap_or(serde_json::Value::Null);
                    serde_json::json!({"seq": e.seq, "ts": e.ts, "event": &*e.event, "data": data})
                })
                .collect();
            json(
                StatusCode::OK,
                &serde_json::json!({"channel": channel, "seq": h.seq, "complete": h.complete, "events": events}),
            )
        }
    }
}
