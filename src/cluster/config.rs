//! Cluster settings: the `[cluster]` table of the configuration file and its validated form.

use std::time::Duration;

use serde::Deserialize;

/// Cluster mode settings (present only when a Redis URL is configured).
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `redis://[:password@]host:port[/db]`.
    pub redis_url: String,
    /// This node's name in presence keys; unique per running node.
    pub node_id: String,
    /// Prefix of every Redis key and pub/sub channel.
    pub prefix: String,
    /// How long a node's presence entries outlive its last heartbeat.
    pub presence_ttl: Duration,
    /// How long a channel's sequence and history outlive its last publish.
    pub history_ttl: Duration,
    /// Events waiting for Redis, across all shards; beyond it publishes are refused with
    /// `overloaded`.
    pub publish_queue: usize,
    /// `/ready` fails (503) while Redis is unreachable, i.e. while publishes cannot be
    /// sequenced (otherwise a node stays ready: it still serves its connections).
    pub ready_requires_redis: bool,
    /// How long Redis remembers a publish's idempotency key (a retry with the key within
    /// it returns the original seqs instead of publishing again).
    pub idempotency_window: Duration,
    /// Redis Sentinel: the master's name, and the sentinels (`host:port`) that know where
    /// it is; empty for a Redis at a fixed address (`redis_url`).
    pub sentinel_master: String,
    /// The sentinels.
    pub sentinels: Vec<String>,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("redis_url", &redacted_url(&self.redis_url))
            .field("node_id", &self.node_id)
            .field("prefix", &self.prefix)
            .field("presence_ttl", &self.presence_ttl)
            .field("history_ttl", &self.history_ttl)
            .field("publish_queue", &self.publish_queue)
            .field("ready_requires_redis", &self.ready_requires_redis)
            .field("idempotency_window", &self.idempotency_window)
            .field("sentinel_master", &self.sentinel_master)
            .field("sentinels", &self.sentinels)
            .finish()
    }
}

/// The URL with any password replaced by `***`, for logs and status pages.
pub fn redacted_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s + 3 => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

/// `host:port` (a bracketed IPv6 host too), with a port.
pub fn parse_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().ok()?;
    (!host.is_empty() && port > 0).then(|| (host.to_string(), port))
}

/// `[cluster]` as written in the file.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawCluster {
    /// `redis`: empty for a single node.
    pub redis: String,
    /// `node_id`: empty for a random one.
    pub node_id: String,
    /// `prefix`.
    pub prefix: String,
    /// `presence_ttl_ms`.
    pub presence_ttl_ms: u64,
    /// `history_ttl_secs`.
    pub history_ttl_secs: u64,
    /// `publish_queue`.
    pub publish_queue: usize,
    /// `ready_requires_redis`.
    pub ready_requires_redis: bool,
    /// `idempotency_window_secs`.
    pub idempotency_window_secs: u64,
    /// `sentinel_master`: empty without Sentinel.
    pub sentinel_master: String,
    /// `sentinels`: `host:port` of each sentinel.
    pub sentinels: Vec<String>,
}

impl std::fmt::Debug for RawCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawCluster")
            .field("redis", &redacted_url(&self.redis))
            .field("node_id", &self.node_id)
            .field("prefix", &self.prefix)
            .field("presence_ttl_ms", &self.presence_ttl_ms)
            .field("history_ttl_secs", &self.history_ttl_secs)
            .field("publish_queue", &self.publish_queue)
            .field("ready_requires_redis", &self.ready_requires_redis)
            .field("idempotency_window_secs", &self.idempotency_window_secs)
            .field("sentinel_master", &self.sentinel_master)
            .field("sentinels", &self.sentinels)
            .finish()
    }
}

impl Default for RawCluster {
    fn default() -> Self {
        RawCluster {
            redis: String::new(),
            node_id: String::new(),
            prefix: "quotecast".into(),
            presence_ttl_ms: 10_000,
            history_ttl_secs: 86_400,
            publish_queue: 4096,
            ready_requires_redis: false,
            idempotency_window_secs: 300,
            sentinel_master: String::new(),
            sentinels: Vec::new(),
        }
    }
}

impl RawCluster {
    /// The validated settings, `None` without a Redis URL; `Err((key, reason))` when invalid.
    pub fn into_config(self) -> Result<Option<ClusterConfig>, (&'static str, String)> {
        if self.redis.is_empty() {
            return Ok(None);
        }
        if !(self.redis.starts_with("redis://") || self.redis.starts_with("redis+unix://")) {
            return Err((
                "cluster.redis",
                "must be a redis:// or redis+unix:// URL".into(),
            ));
        }
        if let Err(e) = redis::Client::open(self.redis.as_str()) {
            return Err(("cluster.redis", format!("not a valid Redis URL: {e}")));
        }
        let safe = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        };
        if !self.node_id.is_empty() && !safe(&self.node_id) {
            return Err((
                "cluster.node_id",
                "1..=64 characters of A-Z a-z 0-9 - _ .".into(),
            ));
        }
        if !safe(&self.prefix) {
            return Err((
                "cluster.prefix",
                "1..=64 characters of A-Z a-z 0-9 - _ .".into(),
            ));
        }
        if self.presence_ttl_ms < 300 {
            return Err(("cluster.presence_ttl_ms", "must be at least 300".into()));
        }
        if self.history_ttl_secs == 0 {
            return Err(("cluster.history_ttl_secs", "must be at least 1".into()));
        }
        if self.publish_queue < 16 {
            return Err(("cluster.publish_queue", "must be at least 16".into()));
        }
        if !(1..=86_400).contains(&self.idempotency_window_secs) {
            return Err((
                "cluster.idempotency_window_secs",
                "must be 1..=86400".into(),
            ));
        }
        if self.sentinel_master.is_empty() != self.sentinels.is_empty() {
            return Err((
                "cluster.sentinels",
                "give both sentinel_master and sentinels, or neither".into(),
            ));
        }
        if !self.sentinel_master.is_empty() && !safe(&self.sentinel_master) {
            return Err((
                "cluster.sentinel_master",
                "1..=64 characters of A-Z a-z 0-9 - _ .".into(),
            ));
        }
        for s in &self.sentinels {
            if parse_host_port(s).is_none() {
                return Err(("cluster.sentinels", format!("{s:?} is not host:port")));
            }
        }
        let node_id = if self.node_id.is_empty() {
            format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
        } else {
            self.node_id
        };
        Ok(Some(ClusterConfig {
            redis_url: self.redis,
            node_id,
            prefix: self.prefix,
            presence_ttl: Duration::from_millis(self.presence_ttl_ms),
            history_ttl: Duration::from_secs(self.history_ttl_secs),
            publish_queue: self.publish_queue,
            ready_requires_redis: self.ready_requires_redis,
            idempotency_window: Duration::from_secs(self.idempotency_window_secs),
            sentinel_master: self.sentinel_master,
            sentinels: self.sentinels,
        }))
    }

    /// The file form of `c` (for `config --print-default` of a configured server).
    pub fn from_config(c: Option<&ClusterConfig>) -> RawCluster {
        match c {
            None => RawCluster::default(),
            Some(c) => RawCluster {
                redis: c.redis_url.clone(),
                node_id: c.node_id.clone(),
                prefix: c.prefix.clone(),
                presence_ttl_ms: c.presence_ttl.as_millis() as u64,
                history_ttl_secs: c.history_ttl.as_secs(),
                publish_queue: c.publish_queue,
                ready_requires_redis: c.ready_requires_redis,
                idempotency_window_secs: c.idempotency_window.as_secs(),
                sentinel_master: c.sentinel_master.clone(),
                sentinels: c.sentinels.clone(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_never_shown() {
        assert_eq!(
            redacted_url("redis://:hunter2@10.0.0.1:6379/0"),
            "redis://***@10.0.0.1:6379/0"
        );
        assert_eq!(
            redacted_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        let raw = RawCluster {
            redis: "redis://user:hunter2@h:1".into(),
            ..RawCluster::default()
        };
        assert!(!format!("{raw:?}").contains("hunter2"));
        let cfg = raw.into_config().unwrap().unwrap();
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }

    #[test]
    fn off_without_url_and_checked_with_one() {
        assert_eq!(RawCluster::default().into_config(), Ok(None));
        let bad = |f: fn(&mut RawCluster)| {
            let mut r = RawCluster {
                redis: "redis://127.0.0.1:6379".into(),
                ..RawCluster::default()
            };
            f(&mut r);
            r.into_config().unwrap_err().0
        };
        assert_eq!(bad(|r| r.redis = "http://x".into()), "cluster.redis");
        assert_eq!(bad(|r| r.node_id = "a b".into()), "cluster.node_id");
        assert_eq!(bad(|r| r.prefix = String::new()), "cluster.prefix");
        assert_eq!(bad(|r| r.presence_ttl_ms = 10), "cluster.presence_ttl_ms");
        assert_eq!(
            bad(|r| r.idempotency_window_secs = 0),
            "cluster.idempotency_window_secs"
        );
        assert_eq!(bad(|r| r.sentinel_master = "m".into()), "cluster.sentinels");
        assert_eq!(
            bad(|r| {
                r.sentinel_master = "m".into();
                r.sentinels = vec!["nohost".into()];
            }),
            "cluster.sentinels"
        );
        assert_eq!(parse_host_port("[::1]:26379"), Some(("::1".into(), 26379)));
        let ok = RawCluster {
            redis: "redis://127.0.0.1:6379".into(),
            ..RawCluster::default()
        };
        let c = ok.into_config().unwrap().unwrap();
        assert_eq!(c.node_id.len(), 12, "a random node id when none is given");
    }
}
