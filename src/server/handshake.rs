//! The WebSocket upgrade fast path (server layer): reads a connection's first request head
//! into a small buffer and, when it is a `GET /ws` upgrade, answers `101` itself and starts
//! the connection loop, so a WebSocket never allocates hyper's per-connection state (an
//! 8 KiB read buffer, a write buffer, the service future). Anything else (the HTTP API,
//! health, a malformed head) goes to hyper with the bytes already read replayed in front.
//!
//! Measured: with hyper doing every upgrade, 10,000 idle subscribed connections cost 5.1 KB
//! of server RSS each; see perf/README.md for the figure with this path.

use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::conn;
use super::http;
use super::peer::Peer;
use super::runtime::{ConnectionGuard, ShardCtx};
use crate::auth::{Role, TokenBucket};
use crate::protocol::{CloseCode, Format};

/// How long a client may take to send its request head (slow-loris bound).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head accepted on the fast path; larger heads go to hyper, which applies
/// its own limit.
const MAX_HEAD: usize = 8 * 1024;
/// First read size: a browser's upgrade request is 400-700 bytes.
const FIRST_READ: usize = 1024;

/// Serves a freshly accepted socket.
pub fn accept(ctx: Rc<ShardCtx>, stream: TcpStream) {
    let guard = ctx.connection_guard();
    tokio::task::spawn_local(async move {
        let deadline = tokio::time::Instant::now() + HEADER_TIMEOUT;
        match tokio::time::timeout_at(deadline, read_head(&stream)).await {
            Ok(Ok(Head::Upgrade { buf, head_len, req })) => {
                upgrade(ctx, stream, guard, buf, head_len, req).await
            }
            Ok(Ok(Head::Other(buf))) => http::serve(ctx, Prefixed::new(buf, stream), guard),
            Ok(Err(_)) | Err(_) => {} // closed, failed, or too slow: drop the socket
        }
    });
}

enum Head {
    /// A valid WebSocket upgrade for `/ws`.
    Upgrade {
        buf: Vec<u8>,
        head_len: usize,
        req: UpgradeReq,
    },
    /// Anything else, for hyper.
    Other(Vec<u8>),
}

async fn read_head(stream: &TcpStream) -> io::Result<Head> {
    let mut buf = Vec::with_capacity(FIRST_READ);
    loop {
        stream.readable().await?;
        match stream.try_read_buf(&mut buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let decision = classify(&req);
                return Ok(match decision {
                    Some(req) => Head::Upgrade { buf, head_len, req },
                    None => Head::Other(buf),
                });
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {
                if buf.len() == buf.capacity() {
                    buf.reserve(buf.len());
                }
            }
            _ => return Ok(Head::Other(buf)),
        }
    }
}

fn header<'a>(
    req: &'a httparse::Request<'_, '_>,
    name: &str,
) -> impl Iterator<Item = &'a str> + 'a {
    let name = name.to_string();
    req.headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(&name))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
}

fn has_token(req: &httparse::Request<'_, '_>, name: &str, token: &str) -> bool {
    header(req, name)
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// What a valid `/ws` upgrade request carries.
pub struct UpgradeReq {
    /// `Sec-WebSocket-Key`.
    pub key: String,
    /// `?format=`.
    pub format: Format,
    /// `?token=` or `Authorization: Bearer`, or why the two cannot be used.
    pub token: Result<Option<String>, &'static str>,
    /// `Origin`, if sent.
    pub origin: Option<String>,
    /// `Cookie`, if sent (forwarded to the connect hook).
    pub cookie: Option<String>,
    /// `GET /app/{key}`: a Pusher protocol connection (`docs/pusher.md`).
    pub pusher: Option<crate::pusher::ws::PusherUpgrade>,
}

impl std::fmt::Debug for UpgradeReq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("UpgradeReq")
            .field("format", &self.format)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// `Some(..)` for a valid `/ws` upgrade.
fn classify(req: &httparse::Request<'_, '_>) -> Option<UpgradeReq> {
    let p = req.path?;
    let (path, query) = p.split_once('?').unwrap_or((p, ""));
    let pusher_key = path
        .strip_prefix("/app/")
        .filter(|k| !k.is_empty() && !k.contains('/'));
    let is_upgrade = req.method == Some("GET")
        && (path == "/ws" || pusher_key.is_some())
        && has_token(req, "upgrade", "websocket")
        && has_token(req, "connection", "upgrade");
    let version_ok = header(req, "sec-websocket-version").any(|v| v.trim() == "13");
    let key = header(req, "sec-websocket-key")
        .next()
        .map(|k| k.trim().to_string());
    let format = match query_param(query, "format") {
        None => Some(Format::Json),
        Some(f) => Format::parse(f),
    };
    let bearer = header(req, "authorization").find_map(bearer_token);
    let token = pick_token(query_param(query, "token"), bearer);
    let origin = header(req, "origin").next().map(|o| o.trim().to_string());
    let cookie = header(req, "cookie").next().map(|c| c.trim().to_string());
    match (is_upgrade, version_ok, key, format) {
        (true, true, Some(key), Some(format)) => Some(UpgradeReq {
            key,
            format,
            token,
            origin,
            cookie,
            pusher: pusher_key.map(|k| crate::pusher::ws::PusherUpgrade {
                key: percent_decode(k),
                protocol: query_param(query, "protocol").map(str::to_string),
            }),
        }),
        // Not an upgrade, or a faulty one: hyper's handler gives the precise answer.
        _ => None,
    }
}

/// The token of an `Authorization: Bearer T` header value (`None` for other schemes).
pub(crate) fn bearer_token(v: &str) -> Option<&str> {
    let v = v.trim();
    let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// The connection's token from `?token=` (raw, still percent-encoded) and the bearer header,
/// refusing what is ambiguous: an empty `?token=` or empty bearer, or two different tokens.
/// The error text is the close reason the client sees (4001).
pub(crate) fn pick_token(
    query: Option<&str>,
    bearer: Option<&str>,
) -> Result<Option<String>, &'static str> {
    let query = query.map(percent_decode);
    match (query, bearer) {
        (Some(q), _) if q.is_empty() => {
            Err("empty ?token=: send a token or leave the parameter out")
        }
        (_, Some("")) => Err("empty Authorization: Bearer token"),
        (Some(q), Some(b)) if q != b => Err(
            "conflicting credentials: ?token= and the Authorization header carry different tokens; send one",
        ),
        (Some(q), _) => Ok(Some(q)),
        (None, b) => Ok(b.map(str::to_string)),
    }
}

/// The value of `key` in a query string.
pub fn query_param<'q>(query: &'q str, key: &str) -> Option<&'q str> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then_some(v)
    })
}

/// Decodes `%XX` escapes (JWTs are URL-safe, but clients may escape anyway).
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() && s.is_char_boundary(i + 1) && s.is_char_boundary(i + 3)
        {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a browser `Origin` is allowed.
pub fn origin_allowed(ctx: &ShardCtx, origin: Option<&str>) -> bool {
    let allowed = &ctx.shared.config.access.origins;
    match origin {
        None => true,
        Some(o) => allowed.is_empty() || allowed.iter().any(|a| a.eq_ignore_ascii_case(o)),
    }
}

async fn upgrade(
    ctx: Rc<ShardCtx>,
    mut stream: TcpStream,
    guard: ConnectionGuard,
    mut buf: Vec<u8>,
    head_len: usize,
    req: UpgradeReq,
) {
    if !origin_allowed(&ctx, req.origin.as_deref()) {
        tracing::info!(
            origin = req.origin.as_deref().unwrap_or(""),
            "upgrade refused: origin not allowed"
        );
        let _ = stream
            .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 19\r\nConnection: close\r\n\r\norigin not allowed\n")
            .await;
        return;
    }
    let accept = tungstenite::handshake::derive_accept_key(req.key.as_bytes());
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    if stream.write_all(resp.as_bytes()).await.is_err() {
        return;
    }
    let leftover = Bytes::from(buf.split_off(head_len));
    drop(buf);
    if let Some(p) = req.pusher {
        crate::pusher::ws::start(ctx, stream, guard, leftover, p);
        return;
    }
    start(
        ctx, stream, guard, leftover, req.format, req.token, req.cookie,
    );
}

/// Starts serving an upgraded WebSocket: checks its token (if any), takes its user's
/// connection slot, and spawns the connection loop in a task of its own (so the handshake's
/// state is freed now instead of staying inside the connection's future).
pub fn start(
    ctx: Rc<ShardCtx>,
    stream: TcpStream,
    guard: ConnectionGuard,
    leftover: Bytes,
    format: Format,
    token: Result<Option<String>, &'static str>,
    cookie: Option<String>,
) {
    let cfg = &ctx.shared.config;
    let access = &cfg.access;
    let peer = Rc::new(Peer::new(
        ctx.next_conn_id(),
        format,
        stream,
        ctx.shared.engine.queue,
        cfg.max_message_bytes,
    ));
    let now = std::time::Instant::now();
    let mut reject: Option<(CloseCode, String)> = None;
    match token {
        Err(why) => {
            ctx.shard.borrow_mut().stats.auth_failures.connect += 1;
            tracing::info!(reason = why, "credentials refused at connect");
            reject = Some((CloseCode::AuthFailed, why.to_string()));
        }
        Ok(Some(t)) => match ctx.shared.verifier.verify(&t) {
            Ok(identity) => {
                if let Some(user) = &identity.user {
                    match ctx.shared.reserve_user(user) {
                        Some(slot) => {
                            let shard = ctx.shard.borrow().id();
                            ctx.shared.admit_cluster(&slot, shard, peer.id);
                            peer.set_user_slot(slot)
                        }
                        None => {
                            let max = access.max_connections_per_user;
                            reject = Some((
                                CloseCode::TooManyConnections,
                                format!("too many connections for this user (limit {max})"),
                            ));
                        }
                    }
                }
                *peer.identity.borrow_mut() = identity;
                peer.authed.set(true);
            }
            Err(e) => {
                ctx.shard.borrow_mut().stats.auth_failures.connect += 1;
                tracing::info!(reason = %e, "token refused at connect");
                reject = Some((CloseCode::AuthFailed, e.to_string()));
            }
        },
        Ok(None) => {
            if access.anonymous_publish {
                peer.identity.borrow_mut().role = Role::Publisher;
            }
            if access.allow_anonymous {
                peer.authed.set(true);
            } else if ctx.shared.verifier.enabled() || cfg.hooks.connect.is_some() {
                peer.set_auth_deadline(Some(now + access.auth_timeout));
            } else {
                reject = Some((
                    CloseCode::AuthFailed,
                    "authentication required, and this server accepts no tokens".into(),
                ));
            }
        }
    }
    if peer.identity.borrow().role != Role::Publisher {
        *peer.bucket.borrow_mut() =
            Some(TokenBucket::new(access.ops_per_sec, access.ops_burst, now));
    }
    // A connection without a token whose request carried a cookie: the connect hook may know
    // the session (answered after the welcome, like an `auth` op with data).
    let ask_backend = reject.is_none() && !peer.authed.get() && cfg.hooks.connect.is_some();
    let remote = conn::open(&ctx, &peer, leftover, reject);
    if let (true, Some(c)) = (ask_backend, cookie) {
        super::connect_hook::ask(&ctx, &peer, None, serde_json::Value::Null, Some(c));
    }
    tokio::task::spawn_local(async move {
        conn::serve(ctx, peer, remote).await;
        drop(guard);
    });
}

/// A socket with bytes already read from it, replayed before further reads.
#[derive(Debug)]
pub struct Prefixed {
    prefix: Bytes,
    inner: TcpStream,
}

impl Prefixed {
    /// Wraps `inner`, replaying `prefix` first.
    pub fn new(prefix: Vec<u8>, inner: TcpStream) -> Self {
        Prefixed {
            prefix: Bytes::from(prefix),
            inner,
        }
    }

    /// The socket and any prefix bytes not yet read.
    pub fn into_parts(self) -> (Bytes, TcpStream) {
        (self.prefix, self.inner)
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(out.remaining());
            let chunk = self.prefix.split_to(n);
            out.put_slice(&chunk);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, out)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicting_or_empty_credentials_are_refused() {
        assert_eq!(pick_token(None, None), Ok(None));
        assert_eq!(pick_token(Some("a.b.c"), None), Ok(Some("a.b.c".into())));
        assert_eq!(pick_token(None, Some("a.b.c")), Ok(Some("a.b.c".into())));
        assert_eq!(
            pick_token(Some("a%2Eb.c"), Some("a.b.c")),
            Ok(Some("a.b.c".into())),
            "the same token twice is fine"
        );
        assert!(pick_token(Some(""), Some("a.b.c"))
            .unwrap_err()
            .contains("empty ?token="));
        assert!(pick_token(Some("x.y.z"), Some("a.b.c"))
            .unwrap_err()
            .contains("conflicting"));
        assert!(pick_token(None, Some("")).is_err());
        assert_eq!(bearer_token("Bearer  t "), Some("t"));
        assert_eq!(bearer_token("bearer t"), Some("t"));
        assert_eq!(bearer_token("Basic dXNlcg=="), None);
    }
}
