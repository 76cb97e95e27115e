//! The publish pipeline (part of the bridge): publish batches from the shards become Lua
//! script calls on the one pipelined Redis connection; the answers go back to whoever waits.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::bridge::{new_epoch, report, Done, PubLink, PublishJob, SharedLink, SCRIPT_BATCH};
use super::wire::Keys;
use super::ClusterStatus;
use crate::engine::channel::ChannelRules;
use crate::engine::shard::{PubReply, PublishError, Remote, ShardMsg};
use crate::engine::signal::Mesh;

/// The publish pipeline: takes every waiting job, runs them as script calls of up to
/// [`SCRIPT_BATCH`] events on the one connection, and answers each job with its sequence
/// numbers. One batch in flight at a time keeps the order; batches grow with the load.
#[allow(clippy::too_many_arguments)]
pub(super) async fn publisher(
    mut rx: mpsc::Receiver<PublishJob>,
    shared: SharedLink,
    mesh: Arc<Mesh<ShardMsg>>,
    status: Arc<ClusterStatus>,
    keys: Keys,
    rules: ChannelRules,
    ttl_secs: u64,
    window_secs: u64,
    done_tx: mpsc::UnboundedSender<Done>,
) {
    let mut jobs: Vec<PublishJob> = Vec::new();
    loop {
        if rx.recv_many(&mut jobs, 64).await == 0 {
            return;
        }
        let taken: usize = jobs.iter().map(|j| j.events.len()).sum();
        status.queued_events.fetch_sub(taken, Ordering::Relaxed);
        let link = shared.borrow().clone();
        let Some(PubLink {
            gen,
            mut conn,
            sha,
            run_id,
        }) = link
        else {
            status
                .publish_failures
                .fetch_add(jobs.len() as u64, Ordering::Relaxed);
            for job in jobs.drain(..) {
                fail(&mesh, job.reply, PublishError::Unavailable).await;
            }
            continue;
        };
        let mut pipe = redis::pipe();
        let mut calls = 0usize;
        let epoch = new_epoch();
        let window = window_secs.to_string();
        let ts = crate::clock::now_ns();
        // Script calls of whole jobs (a job's idempotency key covers all its events), each
        // up to SCRIPT_BATCH events unless one job alone is larger.
        let mut start = 0;
        while start < jobs.len() {
            let mut end = start;
            let mut n = 0;
            while end < jobs.len() && (n == 0 || n + jobs[end].events.len() <= SCRIPT_BATCH) {
                n += jobs[end].events.len();
                end += 1;
            }
            let group = &jobs[start..end];
            start = end;
            let keyed: Vec<&str> = group
                .iter()
                .filter_map(|j| j.events.first().and_then(|(_, e)| e.key.as_deref()))
                .collect();
            let mut c = redis::cmd("EVALSHA");
            c.arg(&sha).arg(n * 2 + keyed.len());
            for (_, ev) in group.iter().flat_map(|j| j.events.iter()) {
                c.arg(keys.meta(&ev.channel)).arg(keys.stream(&ev.channel));
            }
            for k in &keyed {
                c.arg(keys.idempotency(k));
            }
            c.arg(ttl_secs).arg(&run_id).arg(&window).arg(n);
            for job in group {
                for (pos, (_, ev)) in job.events.iter().enumerate() {
                    let history = rules.resolve(&ev.channel).map_or(0, |r| r.policy.history);
                    c.arg(keys.pubsub(&ev.channel))
                        .arg(&epoch)
                        .arg(history)
                        .arg(&ev.event)
                        .arg(ts)
                        .arg(&ev.data[..]);
                    if pos == 0 && ev.key.is_some() {
                        c.arg(job.events.len());
                    } else {
                        c.arg("");
                    }
                }
            }
            pipe.add_command(c);
            calls += 1;
        }
        let flat_len: usize = jobs.iter().map(|j| j.events.len()).sum();
        status.in_flight.store(flat_len as u64, Ordering::Relaxed);
        let r: redis::RedisResult<Vec<Vec<u64>>> = pipe.query_async(&mut conn).await;
        status.in_flight.store(0, Ordering::Relaxed);
        match r {
            Ok(seqs) if seqs.len() == calls => {
                let mut it = seqs.into_iter().flatten();
                for job in jobs.drain(..) {
                    let got: Vec<(u16, u64)> = job
                        .events
                        .iter()
                        .map(|(i, _)| (*i, it.next().unwrap_or(0)))
                        .collect();
                    answer(&mesh, job.reply, got).await;
                }
            }
            other => {
                status
                    .publish_failures
                    .fetch_add(jobs.len() as u64, Ordering::Relaxed);
                let error = match &other {
                    Err(e) if calls == 1 && refused_unrun(e) => PublishError::Unavailable,
                    _ => PublishError::OutcomeUnknown,
                };
                for job in jobs.drain(..) {
                    fail(&mesh, job.reply, error).await;
                }
                match other {
                    Err(e) => report(&done_tx, gen, e),
                    Ok(_) => {
                        let _ = done_tx.send(Done::Failed("unexpected publish reply".into()));
                    }
                }
            }
        }
    }
}

/// Delivers a publish's sequence numbers to whoever waits for them.
async fn answer(mesh: &Mesh<ShardMsg>, reply: PubReply, seqs: Vec<(u16, u64)>) {
    match reply {
        PubReply::None => {}
        PubReply::Http { tx, .. } => {
            let _ = tx.send(Ok(seqs));
        }
        PubReply::Peer {
            shard, conn, token, ..
        } => send_retry(mesh, shard, Remote::PublishAck { conn, token, seqs }).await,
    }
}

/// Whether Redis refused a script call before running any of it (so nothing was
/// sequenced): a missing script, a read-only replica, Redis loading or busy, out of memory.
/// Any other failure after the call was sent (I/O, timeout, an error inside the script)
/// leaves the outcome unknown.
fn refused_unrun(e: &redis::RedisError) -> bool {
    use redis::ServerErrorKind as K;
    match e.kind() {
        redis::ErrorKind::Server(k) => {
            matches!(
                k,
                K::NoScript | K::ReadOnly | K::BusyLoading | K::TryAgain | K::MasterDown
            ) || e
                .code()
                .is_some_and(|c| c == "OOM" || c == "BUSY" || c == "NOPERM")
        }
        _ => false,
    }
}

/// Tells whoever waits that the publish did not happen, or may not have.
async fn fail(mesh: &Mesh<ShardMsg>, reply: PubReply, error: PublishError) {
    match reply {
        PubReply::None => {}
        PubReply::Http { tx, .. } => {
            let _ = tx.send(Err(error));
        }
        PubReply::Peer {
            shard, conn, token, ..
        } => send_retry(mesh, shard, Remote::PublishFailed { conn, token, error }).await,
    }
}

/// Sends one item to a shard, waiting while its inbox is full (backpressure on the
/// publish pipeline).
async fn send_retry(mesh: &Mesh<ShardMsg>, shard: usize, item: Remote) {
    let mut msg = ShardMsg::Batch(vec![item]);
    loop {
        match mesh.send(shard, msg) {
            Ok(()) => return,
            Err(back) => {
                msg = back;
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
    }
}
