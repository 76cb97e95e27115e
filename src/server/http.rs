//! HTTP on the WebSocket port (server layer), with hyper: `POST /api/publish`, `GET
//! /health`, precise answers to faulty upgrade requests, and upgrades that arrive on a
//! kept-alive HTTP connection (after which the raw socket is taken back from hyper and
//! served by [`super::conn`]). A connection's first request, when it is a WebSocket
//! upgrade, never reaches hyper: see [`super::handshake`].

use std::convert::Infallible;
use std::rc::Rc;

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

use super::conn;
use super::handshake::{Prefixed, HEADER_TIMEOUT};
use super::peer::Peer;
use super::runtime::{ConnectionGuard, ShardCtx};
use crate::engine::shard::PubReply;
use crate::protocol::op::parse_http_publish;
use crate::protocol::Format;

type Resp = Response<Full<Bytes>>;

/// Serves HTTP on a socket (with its first bytes replayed) until it closes or upgrades.
pub fn serve(ctx: Rc<ShardCtx>, stream: Prefixed, guard: ConnectionGuard) {
    let io = TokioIo::new(stream);
    let svc_ctx = ctx.clone();
    let fut = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(16 * 1024)
        .serve_connection(io, service_fn(move |req| handle(svc_ctx.clone(), req)))
        .with_upgrades();
    tokio::task::spawn_local(async move {
        let _guard = guard;
        if let Err(e) = fut.await {
            tracing::trace!(error = %e, "http connection ended");
        }
    });
}

async fn handle(ctx: Rc<ShardCtx>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    let path = req.uri().path();
    Ok(match (req.method(), path) {
        (&Method::GET, "/ws") => upgrade(ctx, req),
        (&Method::POST, "/api/publish") => publish(ctx, req).await,
        (&Method::GET, "/health") => text(StatusCode::OK, "ok\n"),
        (_, "/ws") | (_, "/api/publish") | (_, "/health") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
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

fn json_error(status: StatusCode, code: &str, message: &str) -> Resp {
    json(
        status,
        &ErrBody {
            error: ErrInner { code, message },
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
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then_some(v)
    })
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
        let cfg = &ctx.shared.config;
        let peer = Rc::new(Peer::new(
            ctx.next_conn_id(),
            format,
            stream,
            ctx.shared.engine.queue,
            cfg.max_message_bytes,
        ));
        conn::run(ctx, peer, Bytes::from(leftover)).await;
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

async fn publish(ctx: Rc<ShardCtx>, req: Request<Incoming>) -> Resp {
    let max = ctx.shared.config.max_message_bytes;
    let body = match Limited::new(req.into_body(), max).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
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
    let (events, single) = match parse_http_publish(&body) {
        Ok(v) => v,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e.code(), &e.to_string()),
    };
    for ev in &events {
        if ctx.shared.engine.rules.resolve(&ev.channel).is_none() {
            let msg = format!("no channel pattern accepts `{}`", ev.channel);
            return json_error(StatusCode::BAD_REQUEST, "unknown_channel", &msg);
        }
    }
    let first_channel = events[0].channel.clone();
    let total = events.len();
    let mut waits: Vec<oneshot::Receiver<Vec<(u16, u64)>>> = Vec::new();
    let result = {
        let mut shard = ctx.shard.borrow_mut();
        let r = shard.publish(events, |idx| {
            let (tx, rx) = oneshot::channel();
            waits.push(rx);
            PubReply::Http { tx, idx }
        });
        shard.commit();
        r
    };
    if let Err(e) = result {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            &e.to_string(),
        );
    }
    let mut seqs = vec![0u64; total];
    for rx in waits {
        match rx.await {
            Ok(parts) => {
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
