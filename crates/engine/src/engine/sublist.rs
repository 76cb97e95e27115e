//! A connection's subscriptions (engine): a vector sorted by channel name, sized to fit.
//!
//! An idle subscribed connection is mostly its subscriptions, so this is kept small: one
//! pointer per subscription (the name lives in the [`Sub`] itself) instead of a hash map's
//! buckets of name + pointer with spare capacity. At 10 subscriptions that is 80 bytes
//! instead of ~450. Lookups are binary searches; inserts and removes move pointers, and
//! happen only on subscribe and unsubscribe, which are rate limited (at most
//! `max_subscriptions`, 1,024 by default).

use std::rc::Rc;
use std::sync::Arc;

use super::shard::Sub;

/// Subscriptions of one connection, sorted by channel.
#[derive(Debug)]
pub struct SubList<C> {
    subs: Vec<Rc<Sub<C>>>,
}

impl<C> Default for SubList<C> {
    fn default() -> Self {
        SubList { subs: Vec::new() }
    }
}

impl<C> SubList<C> {
    fn find(&self, channel: &str) -> Result<usize, usize> {
        self.subs.binary_search_by(|s| (*s.channel).cmp(channel))
    }

    /// The subscription to `channel`.
    pub fn get(&self, channel: &str) -> Option<&Rc<Sub<C>>> {
        self.find(channel).ok().map(|i| &self.subs[i])
    }

    /// Whether `channel` is subscribed.
    pub fn contains(&self, channel: &str) -> bool {
        self.find(channel).is_ok()
    }

    /// Adds `sub` (replacing one to the same channel, which the caller never holds).
    pub fn insert(&mut self, sub: Rc<Sub<C>>) {
        match self.find(&sub.channel) {
            Ok(i) => self.subs[i] = sub,
            Err(i) => {
                // Grow by a quarter, not double: subscription lists are long-lived.
                if self.subs.len() == self.subs.capacity() {
                    self.subs.reserve_exact((self.subs.len() / 4).max(2));
                }
                self.subs.insert(i, sub);
            }
        }
    }

    /// Removes and returns the subscription to `channel`.
    pub fn remove(&mut self, channel: &str) -> Option<Rc<Sub<C>>> {
        let i = self.find(channel).ok()?;
        let sub = self.subs.remove(i);
        if self.subs.is_empty() {
            self.subs = Vec::new();
        }
        Some(sub)
    }

    /// Takes every subscription out.
    pub fn drain(&mut self) -> Vec<Rc<Sub<C>>> {
        std::mem::take(&mut self.subs)
    }

    /// Number of subscriptions.
    pub fn len(&self) -> usize {
        self.subs.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    /// Whether any subscription is to a stream (non-conflated) channel.
    pub fn has_stream(&self) -> bool {
        self.subs.iter().any(|s| s.slot.is_none())
    }

    /// The subscribed channels, in name order.
    pub fn channels(&self) -> impl Iterator<Item = &Arc<str>> {
        self.subs.iter().map(|s| &s.channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscription_stays_within_48_bytes() {
        // With its `Rc` counts that is 64 bytes: one allocator size class, not two.
        assert!(
            std::mem::size_of::<Sub<()>>() <= 48,
            "{}",
            std::mem::size_of::<Sub<()>>()
        );
    }
}
