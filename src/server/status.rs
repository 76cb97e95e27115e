//! Operations endpoints (server layer): readiness, the JSON status and the Prometheus
//! metrics. Each asks every shard for a [`ShardSnapshot`] through the shard inboxes
//! (`ShardMsg::Stats`, answered by the shard's own driver between batches), waits at most
//! [`SHARD_ANSWER_TIMEOUT`], and merges what came back; a shard that does not answer in
//! time is reported as down rather than making the scrape hang.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::oneshot;

use super::runtime::ShardCtx;
use crate::cluster::{Control, PresenceQuery};
use crate::engine::shard::ShardMsg;
use crate::metrics::{self, ProcessFigures, ServerFigures, ShardSnapshot};

/// How long a shard may take to answer before readiness fails and metrics mark it down. A
/// healthy shard answers within one inbox drain (microseconds to a few milliseconds).
pub const SHARD_ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

/// Default and largest `?top=` of `/ws/status`.
const DEFAULT_TOP: usize = 20;
const MAX_TOP: usize = 1000;

/// Asks every shard for its snapshot; `result[i]` is shard `i`'s, or `None` if it did not
/// answer within [`SHARD_ANSWER_TIMEOUT`].
pub async fn gather(ctx: &ShardCtx, top: usize) -> Vec<Option<ShardSnapshot>> {
    let deadline = tokio::time::Instant::now() + SHARD_ANSWER_TIMEOUT;
    let mesh = &ctx.shared.mesh;
    let mut waits = Vec::with_capacity(mesh.len());
    for shard in 0..mesh.len() {
        let (tx, rx) = oneshot::channel();
        let mut msg = ShardMsg::Stats { top, reply: tx };
        let sent = loop {
            match mesh.send(shard, msg) {
                Ok(()) => break true,
                // A full inbox: the shard is busy; retry until the deadline.
                Err(back) if tokio::time::Instant::now() < deadline => {
                    msg = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(_) => break false,
            }
        };
        waits.push(sent.then_some(rx));
    }
    let mut out = Vec::with_capacity(waits.len());
    for w in waits {
        let snap = match w {
            Some(rx) => tokio::time::timeout_at(deadline, rx)
                .await
                .ok()
                .and_then(Result::ok),
            None => None,
        };
        out.push(snap);
    }
    out
}

/// Server-wide figures that no shard holds.
pub fn figures(ctx: &ShardCtx, process: bool) -> ServerFigures {
    let sh = &ctx.shared;
    let unique_users = sh
        .users
        .lock()
        .map(|u| u.len())
        .unwrap_or_else(|p| p.into_inner().len());
    ServerFigures {
        uptime_secs: sh.started.elapsed().as_secs_f64(),
        open_sockets: sh.open_sockets.load(Ordering::Relaxed),
        unique_users,
        shutting_down: sh.shutting_down.load(Ordering::Relaxed),
        process: if process {
            ProcessFigures::read()
        } else {
            None
        },
    }
}

/// `GET /ready`: whether this node should get traffic. Not while shutting down, only when
/// every shard answers within [`SHARD_ANSWER_TIMEOUT`], and in cluster mode not before the
/// first connection to Redis.
pub async fn ready(ctx: &ShardCtx) -> Result<(), &'static str> {
    if ctx.shared.shutting_down.load(Ordering::Relaxed) {
        return Err("shutting down\n");
    }
    if gather(ctx, 0).await.iter().any(Option::is_none) {
        return Err("a shard is not answering\n");
    }
    // A node that has not reached Redis yet would answer subscribes without history; once
    // it has, a later Redis outage keeps it ready (it still serves its connections), unless
    // `cluster.ready_requires_redis` says that readiness means publishes can be sequenced.
    if let Some(cl) = &ctx.shared.cluster {
        if !cl.status.ever_up.load(Ordering::Relaxed) {
            return Err("connecting to Redis\n");
        }
        if cl.cfg.ready_requires_redis && !cl.is_up() {
            return Err("Redis is unreachable: publishes cannot be sequenced\n");
        }
    }
    if ctx.shared.shutting_down.load(Ordering::Relaxed) {
        return Err("shutting down\n");
    }
    Ok(())
}

/// `GET /metrics`: the Prometheus text exposition.
pub async fn metrics(ctx: &ShardCtx) -> String {
    let snaps = gather(ctx, 0).await;
    let mut text = metrics::render(&figures(ctx, true), &snaps);
    ctx.shared.hook_stats.render(&mut text);
    if !ctx.shared.pusher.apps.is_empty() {
        ctx.shared.pusher.webhooks.stats.render(&mut text);
    }
    if let Some(cl) = &ctx.shared.cluster {
        crate::cluster::render_metrics(&mut text, &cl.status);
    }
    text
}

/// The `/health/websocket` shape (the seeds' monitoring contract), which `/ws/status`
/// extends.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// `healthy`, `degraded` (a shard did not answer) or `shutting_down`.
    pub status: &'static str,
    /// Open WebSocket connections.
    pub active_connections: usize,
    /// Distinct authenticated users connected (anonymous connections are not users).
    pub unique_users: usize,
    /// Seconds since start.
    pub uptime: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    #[serde(flatten)]
    health: Health,
    version: &'static str,
    open_sockets: usize,
    subscriptions: u64,
    channels: usize,
    published: u64,
    delivered: u64,
    conflated: u64,
    slow_consumer_closes: u64,
    shards: Vec<ShardStatus>,
    top_channels: Vec<ChannelStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<ClusterInfo>,
}

/// Cluster mode's part of `/ws/status` and `/health`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterInfo {
    node: String,
    redis: &'static str,
    redis_url: String,
    live_nodes: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    last_error: String,
}

/// This node's cluster state, `None` on a single node.
pub fn cluster_info(ctx: &ShardCtx) -> Option<ClusterInfo> {
    let cl = ctx.shared.cluster.as_ref()?;
    Some(ClusterInfo {
        node: cl.cfg.node_id.clone(),
        redis: if cl.is_up() { "up" } else { "down" },
        redis_url: cl.redis_url(),
        live_nodes: cl.status.live_nodes.load(Ordering::Relaxed),
        last_error: cl
            .status
            .last_error
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default(),
    })
}

/// `GET /health` in cluster mode: the node serves its connections either way (200), and
/// says whether Redis is reachable (`degraded` when not: publishes are refused).
#[derive(Debug, Serialize)]
pub struct ClusterHealth {
    status: &'static str,
    #[serde(flatten)]
    cluster: ClusterInfo,
}

/// The cluster health body, `None` on a single node.
pub fn cluster_health(ctx: &ShardCtx) -> Option<ClusterHealth> {
    let cluster = cluster_info(ctx)?;
    Some(ClusterHealth {
        status: if cluster.redis == "up" {
            "ok"
        } else {
            "degraded"
        },
        cluster,
    })
}

/// `GET /api/presence?user=U` or `?channel=C`: connections of a user or subscribers of a
/// channel, across the cluster in cluster mode (`None`: Redis unreachable).
pub async fn presence(ctx: &ShardCtx, query: PresenceQuery) -> Option<u64> {
    if let Some(cl) = &ctx.shared.cluster {
        let (tx, rx) = oneshot::channel();
        cl.control(Control::Presence { query, reply: tx });
        return tokio::time::timeout(SHARD_ANSWER_TIMEOUT * 3, rx)
            .await
            .ok()
            .and_then(Result::ok)
            .flatten();
    }
    match query {
        PresenceQuery::User(u) => {
            let users = ctx.shared.users.lock().unwrap_or_else(|p| p.into_inner());
            Some(users.get(&u).copied().unwrap_or(0) as u64)
        }
        PresenceQuery::Channel(c) => {
            let mesh = &ctx.shared.mesh;
            let home = crate::engine::shard::home_of(&c, mesh.len());
            let (tx, rx) = oneshot::channel();
            let msg = ShardMsg::Subscribers {
                channel: c.to_string(),
                reply: tx,
            };
            mesh.send(home, msg).ok()?;
            tokio::time::timeout(SHARD_ANSWER_TIMEOUT, rx)
                .await
                .ok()?
                .ok()
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ShardStatus {
    shard: usize,
    up: bool,
    connections: usize,
    inbox_depth: usize,
    channels: usize,
}

#[derive(Debug, Serialize)]
struct ChannelStatus {
    channel: String,
    subscribers: u64,
}

fn health(fig: &ServerFigures, snaps: &[Option<ShardSnapshot>], connections: usize) -> Health {
    let status = if fig.shutting_down {
        "shutting_down"
    } else if snaps.iter().any(Option::is_none) {
        "degraded"
    } else {
        "healthy"
    };
    Health {
        status,
        active_connections: connections,
        unique_users: fig.unique_users,
        uptime: fig.uptime_secs as u64,
    }
}

/// `GET /health/websocket`.
pub async fn health_websocket(ctx: &ShardCtx) -> Health {
    let snaps = gather(ctx, 0).await;
    let m = metrics::merge(&snaps);
    health(&figures(ctx, false), &snaps, m.connections)
}

/// `GET /ws/status?top=N`: connections, users, uptime, shard balance and the `N` channels
/// with the most subscribers (default 20, at most 1,000). Without `private` (the caller is
/// not an operator), channels whose namespace is not public are left out of the list.
pub async fn status(ctx: &ShardCtx, top: Option<&str>, private: bool) -> impl Serialize {
    let top = top
        .and_then(|t| t.parse::<usize>().ok())
        .unwrap_or(DEFAULT_TOP)
        .min(MAX_TOP);
    let snaps = gather(ctx, top).await;
    let fig = figures(ctx, false);
    let m = metrics::merge(&snaps);
    let shards = snaps
        .iter()
        .enumerate()
        .map(|(i, s)| ShardStatus {
            shard: i,
            up: s.is_some(),
            connections: s.as_ref().map_or(0, |s| s.connections),
            inbox_depth: s.as_ref().map_or(0, |s| s.inbox_depth),
            channels: s.as_ref().map_or(0, |s| s.channels),
        })
        .collect();
    let rules = &ctx.shared.engine.rules;
    let top_channels = m
        .top_channels
        .iter()
        .filter(|(c, _)| {
            private
                || rules.resolve(c).is_some_and(|r| {
                    r.policy.access == crate::engine::channel::ChannelAccess::Public
                })
        })
        .take(top)
        .map(|(c, n)| ChannelStatus {
            channel: c.to_string(),
            subscribers: *n,
        })
        .collect();
    Status {
        health: health(&fig, &snaps, m.connections),
        version: env!("CARGO_PKG_VERSION"),
        open_sockets: fig.open_sockets,
        subscriptions: m.subscriptions,
        channels: m.channels,
        published: m.stats.published,
        delivered: m.stats.delivered,
        conflated: m.stats.conflated,
        slow_consumer_closes: m.stats.slow_closes.total(),
        shards,
        top_channels,
        cluster: cluster_info(ctx),
    }
}
