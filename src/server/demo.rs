//! The demo market's task (server layer): ticks [`crate::demo::DemoMarket`] every 10 ms on
//! shard 0 and publishes its events through the ordinary publish path.

use std::rc::Rc;
use std::time::{Duration, Instant};

use super::runtime::ShardCtx;
use crate::demo::{DemoConfig, DemoMarket};
use crate::engine::shard::PubReply;
use crate::protocol::op::PubEvent;

/// How often the demo market ticks.
const TICK: Duration = Duration::from_millis(10);

/// Runs the demo market on this shard until shutdown.
pub(crate) async fn run(ctx: Rc<ShardCtx>, cfg: DemoConfig) {
    let mut market = DemoMarket::new(cfg);
    let start = Instant::now();
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut out = Vec::new();
    loop {
        interval.tick().await;
        if ctx
            .shared
            .shutting_down
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        market.tick(start.elapsed(), &mut out);
        if out.is_empty() {
            continue;
        }
        let events: Vec<PubEvent> = out
            .drain(..)
            .map(|e| PubEvent {
                channel: e.channel,
                event: e.event.to_string(),
                data: e.data.into(),
                key: None,
                exclude: 0,
            })
            .collect();
        let mut shard = ctx.shard.borrow_mut();
        shard.tick();
        for chunk in events.chunks(crate::protocol::op::MAX_EVENTS_PER_PUBLISH) {
            if shard.publish(chunk.to_vec(), |_| PubReply::None).is_err() {
                tracing::warn!("demo market: server overloaded, dropping a tick");
            }
        }
        shard.commit();
    }
}
