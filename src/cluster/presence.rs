//! Presence (part of the bridge): this node's connections per user and subscribers per
//! channel, written to hashes of its own that expire unless the heartbeat renews them, and
//! the cluster-wide counts read across the live nodes.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::bridge::{report, Bridge, Done};
use super::wire::Keys;
use super::PresenceQuery;

impl Bridge {
    /// A connection of `user` was admitted on this node: count it, then check the
    /// cluster-wide limit in one script (this node's count written and the live nodes'
    /// summed atomically, so two nodes admitting at once cannot both pass).
    pub(super) fn admit(
        &mut self,
        user: Arc<str>,
        shard: usize,
        conn: u64,
        done_tx: &mpsc::UnboundedSender<Done>,
    ) {
        let n = {
            let n = self.users.entry(user.clone()).or_insert(0);
            *n += 1;
            *n
        };
        self.dirty_users.remove(&user);
        let Some(link) = &self.link else {
            // Redis unreachable: the local limit alone applies; written on reconnect.
            self.dirty_users.insert(user);
            return;
        };
        let mut conn_r = link.conn.clone();
        let cmd = count_cmd(
            &link.shas.count,
            &self.keys,
            "users",
            &user,
            &self.cfg.node_id,
            n,
        );
        let gen = self.gen;
        let tx = done_tx.clone();
        tokio::task::spawn_local(async move {
            let r: redis::RedisResult<u64> = cmd.query_async(&mut conn_r).await;
            let _ = match r {
                Ok(total) => tx.send(Done::Admitted {
                    user,
                    shard,
                    conn,
                    total,
                }),
                Err(e) => {
                    report(&tx, gen, e);
                    Ok(())
                }
            };
        });
    }

    /// Answers `/api/presence` from Redis (`None` while it is unreachable).
    pub(super) fn presence(
        &mut self,
        query: PresenceQuery,
        reply: oneshot::Sender<Option<u64>>,
        done_tx: &mpsc::UnboundedSender<Done>,
    ) {
        let (kind, field) = match query {
            PresenceQuery::User(u) => ("users", u),
            PresenceQuery::Channel(c) => ("subs", c),
        };
        // Counts written since the last flush go first, on the same connection (a no-op
        // without one).
        self.flush_presence(done_tx);
        let Some(link) = &self.link else {
            let _ = reply.send(None);
            return;
        };
        let mut conn = link.conn.clone();
        let cmd = count_cmd(&link.shas.count, &self.keys, kind, &field, "", 0);
        tokio::task::spawn_local(async move {
            let r: redis::RedisResult<u64> = cmd.query_async(&mut conn).await;
            let _ = reply.send(r.ok());
        });
    }

    pub(super) fn heartbeat(&mut self, done_tx: &mpsc::UnboundedSender<Done>) {
        let Some(link) = &self.link else { return };
        let mut conn = link.conn.clone();
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&link.shas.heartbeat)
            .arg(3)
            .arg(self.keys.nodes())
            .arg(self.keys.users(&self.cfg.node_id))
            .arg(self.keys.subs(&self.cfg.node_id))
            .arg(&self.cfg.node_id)
            .arg(self.cfg.presence_ttl.as_millis() as u64);
        let gen = self.gen;
        let tx = done_tx.clone();
        tokio::task::spawn_local(async move {
            let _ = match cmd.query_async::<u64>(&mut conn).await {
                Ok(n) => tx.send(Done::LiveNodes(n)),
                Err(e) => {
                    report(&tx, gen, e);
                    Ok(())
                }
            };
        });
    }

    /// Writes this node's whole presence again (after a reconnect: Redis may have lost it).
    pub(super) fn rewrite_presence(&mut self, done_tx: &mpsc::UnboundedSender<Done>) {
        self.dirty_users = self.users.keys().cloned().collect();
        self.dirty_subs = self.subs.keys().cloned().collect();
        let Some(link) = &self.link else { return };
        let mut conn = link.conn.clone();
        let mut p = redis::pipe();
        p.del(self.keys.users(&self.cfg.node_id)).ignore();
        p.del(self.keys.subs(&self.cfg.node_id)).ignore();
        let gen = self.gen;
        let tx = done_tx.clone();
        tokio::task::spawn_local(async move {
            if let Err(e) = p.query_async::<()>(&mut conn).await {
                report(&tx, gen, e);
            }
        });
        self.flush_presence(done_tx);
    }

    pub(super) fn flush_presence(&mut self, done_tx: &mpsc::UnboundedSender<Done>) {
        if self.dirty_users.is_empty() && self.dirty_subs.is_empty() {
            return;
        }
        let Some(link) = &self.link else { return };
        let ttl = self.cfg.presence_ttl.as_millis() as u64;
        let mut p = redis::pipe();
        for (hash, dirty, map) in [
            (
                self.keys.users(&self.cfg.node_id),
                &mut self.dirty_users,
                &self.users,
            ),
            (
                self.keys.subs(&self.cfg.node_id),
                &mut self.dirty_subs,
                &self.subs,
            ),
        ] {
            if dirty.is_empty() {
                continue;
            }
            for k in dirty.drain() {
                match map.get(&k) {
                    Some(n) => p.hset(&hash, &*k, *n).ignore(),
                    None => p.hdel(&hash, &*k).ignore(),
                };
            }
            p.pexpire(&hash, ttl as i64).ignore();
        }
        let mut conn = link.conn.clone();
        let gen = self.gen;
        let tx = done_tx.clone();
        tokio::task::spawn_local(async move {
            if let Err(e) = p.query_async::<()>(&mut conn).await {
                report(&tx, gen, e);
            }
        });
    }
}

/// The COUNT script call: the cluster-wide sum of `field` in the live nodes' `kind` hashes,
/// writing `own` for `node` first when a node is given (see [`super::wire::COUNT`]).
fn count_cmd(sha: &str, keys: &Keys, kind: &str, field: &str, node: &str, own: u32) -> redis::Cmd {
    let mut c = redis::cmd("EVALSHA");
    c.arg(sha)
        .arg(1)
        .arg(keys.nodes())
        .arg(keys.prefix())
        .arg(kind)
        .arg(field)
        .arg(node)
        .arg(own);
    c
}
