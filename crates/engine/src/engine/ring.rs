//! Per-channel ring buffer of recent events (engine): snapshot on subscribe and gap-free
//! recovery from a sequence number. Lives on the channel's home shard only.

use std::collections::VecDeque;
use std::sync::Arc;

use super::event::Event;

/// The last `cap` events of one channel, with contiguous sequence numbers.
#[derive(Debug)]
pub struct Ring {
    cap: usize,
    buf: VecDeque<Arc<Event>>,
}

/// The outcome of a `since` request.
#[derive(Debug)]
pub enum Recovery<'a> {
    /// Every event after `since` is retained: these, in order (maybe none).
    Complete(Vec<&'a Arc<Event>>),
    /// Some events after `since` are gone (or `since` is from the future / another epoch).
    Incomplete,
}

impl Ring {
    /// A ring retaining `cap` events.
    pub fn new(cap: usize) -> Self {
        Ring {
            cap,
            buf: VecDeque::new(),
        }
    }

    /// Appends the next event (its seq must follow the previous one).
    pub fn push(&mut self, ev: Arc<Event>) {
        debug_assert!(self.buf.back().is_none_or(|b| b.seq + 1 == ev.seq));
        if self.cap == 0 {
            return;
        }
        if self.buf.len() == self.cap {
            self.buf.pop_front();
        }
        self.buf.push_back(ev);
    }

    /// Events retained, oldest first.
    pub fn snapshot(&self) -> impl Iterator<Item = &Arc<Event>> {
        self.buf.iter()
    }

    /// Events with `seq > since`, given the channel's current sequence number `current`.
    pub fn since(&self, since: u64, current: u64) -> Recovery<'_> {
        if since > current {
            return Recovery::Incomplete;
        }
        if since == current {
            return Recovery::Complete(Vec::new());
        }
        match self.buf.front() {
            Some(first) if first.seq <= since + 1 => {
                let skip = (since + 1 - first.seq) as usize;
                Recovery::Complete(self.buf.iter().skip(skip).collect())
            }
            _ => Recovery::Incomplete,
        }
    }

    /// Forgets every event (the channel's sequence restarted or skipped).
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// How many events the ring retains at most.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Number of events retained.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn ev(seq: u64) -> Arc<Event> {
        Arc::new(Event::new(
            "c".into(),
            "e".into(),
            seq,
            0,
            std::time::Instant::now(),
            Bytes::from_static(b"1"),
            crate::protocol::dialect::FormatSet::EMPTY,
        ))
    }

    fn seqs(r: Recovery<'_>) -> Option<Vec<u64>> {
        match r {
            Recovery::Complete(v) => Some(v.iter().map(|e| e.seq).collect()),
            Recovery::Incomplete => None,
        }
    }

    #[test]
    fn keeps_last_cap_and_recovers_exactly() {
        let mut r = Ring::new(3);
        for s in 1..=5 {
            r.push(ev(s));
        }
        assert_eq!(
            r.snapshot().map(|e| e.seq).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        assert_eq!(seqs(r.since(2, 5)), Some(vec![3, 4, 5]));
        assert_eq!(seqs(r.since(4, 5)), Some(vec![5]));
        assert_eq!(seqs(r.since(5, 5)), Some(vec![]));
        assert_eq!(seqs(r.since(1, 5)), None, "seq 2 is gone");
        assert_eq!(seqs(r.since(9, 5)), None, "from the future");
    }

    #[test]
    fn empty_and_zero_capacity() {
        let r = Ring::new(4);
        assert_eq!(seqs(r.since(0, 0)), Some(vec![]));
        let mut z = Ring::new(0);
        z.push(ev(1));
        assert!(z.is_empty());
        assert_eq!(seqs(z.since(0, 1)), None);
        assert_eq!(seqs(z.since(1, 1)), Some(vec![]));
    }
}
