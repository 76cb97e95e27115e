//! One connection's outbound queue (engine): stream frames in order, one conflation slot
//! per conflated subscription, and the gathering of pending frames into `IoSlice`s so that
//! one `writev` carries many frames. Pure: it never touches the socket; the server layer
//! asks for slices, writes them, and reports how many bytes went out.
//!
//! Priority: stream and private events and replies go straight into the committed `wire`
//! queue; quotes wait in their slots and are committed only while less than
//! [`COMMIT_WATERMARK`] bytes are committed, so an order update is never stuck behind more
//! than that of quotes, and a subscriber that is behind keeps just the newest quote per
//! symbol.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::protocol::dialect::Reply;
use crate::protocol::encode::Conflated;
use crate::protocol::Format;

/// Quotes are moved from their slots into the wire queue only while fewer committed bytes
/// than this wait to be written: big enough to fill a socket buffer in one `writev`, small
/// enough that a private event behind it waits at most a few hundred microseconds.
pub const COMMIT_WATERMARK: usize = 64 * 1024;

/// Most frames gathered into one `writev` (Linux's IOV_MAX is 1024). The syscall's fixed
/// cost is amortised below the per-byte copy past ~64 small frames; 256 lets one call carry
/// a whole broadcast batch of small events. The array of slices lives on the stack of the
/// flush (256 × 16 bytes), not in the connection.
pub const MAX_IOV: usize = 256;

/// A time on the engine's monotonic clock, in microseconds since an origin of the caller's
/// choosing (the shard's creation). Integers, so that the slow-consumer checks on
/// every queued frame are a compare, not `Instant` arithmetic: measured on the broadcast
/// scenario, `Instant`/`Duration` arithmetic per push cost ~10% more server CPU.
pub type Micros = u64;

/// A queued frame: the encoded bytes behind a shard-local reference count. A shard wraps an
/// event's shared `Bytes` once and hands every local subscriber a plain (non-atomic)
/// reference: measured with `perf` on the broadcast scenario, the atomic increment and
/// decrement of cloning `Bytes` per subscriber cost 8% of the shard's CPU. It also makes a
/// queue entry 8 bytes instead of 32.
pub type Frame = Rc<Bytes>;

/// When a subscriber of stream channels is a slow consumer.
///
/// The rule is by time: a subscriber is slow when the oldest frame of its backlog has
/// waited longer than `max_lag`. Queue size alone cannot tell a stalled reader from one
/// that is briefly behind (descheduled for a few milliseconds during a 200 KB burst, a
/// retransmission on a mobile link); the age of the backlog can. `max_frames` and
/// `max_bytes` are hard caps for memory safety only, sized far above any burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Most frames waiting (hard cap).
    pub max_frames: usize,
    /// Most bytes waiting (hard cap).
    pub max_bytes: usize,
    /// How long the oldest unsent frame may wait.
    pub max_lag: Duration,
}

/// [`QueueLimits`] as a connection keeps them: caps saturated at `u32::MAX`, the lag in
/// microseconds (saturated at ~71 minutes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Packed {
    max_frames: u32,
    max_bytes: u32,
    max_lag_us: u32,
}

impl Packed {
    fn new(l: QueueLimits) -> Self {
        let sat = |v: u128| u32::try_from(v).unwrap_or(u32::MAX);
        Packed {
            max_frames: sat(l.max_frames as u128),
            max_bytes: sat(l.max_bytes as u128),
            max_lag_us: sat(l.max_lag.as_micros()),
        }
    }

    fn max_lag(self) -> Duration {
        Duration::from_micros(self.max_lag_us as u64)
    }
}

/// The stream queue cannot take another frame: the subscriber is a slow consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// The oldest unsent frame has waited longer than `max_lag`.
    Lagging,
    /// The queue would pass its hard frame or byte cap.
    Full,
}

impl Overflow {
    /// The label of this trigger in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Overflow::Lagging => "lag",
            Overflow::Full => "memory",
        }
    }
}

/// Most time marks kept per queue. A mark is added at most every `max_lag / MARK_SLICES`,
/// so a queue whose marks are full has waited past its lag already.
const MAX_MARKS: usize = 2 * MARK_SLICES as usize;

/// Time resolution of the backlog's age: `max_lag / MARK_SLICES` (an age is overstated by
/// at most that much).
const MARK_SLICES: u32 = 16;

#[derive(Debug)]
struct Slot {
    in_use: bool,
    channel: Arc<str>,
    frame: Option<Frame>,
    seq: u64,
    replaced: Option<(u64, u64)>,
    queued: bool,
    min_interval: Option<Duration>,
    next_allowed: Option<Instant>,
}

/// The queue.
#[derive(Debug)]
pub struct Outbound {
    format: Format,
    /// The limits, packed (12 bytes instead of 32: every connection holds a copy).
    limits: Packed,
    wire: VecDeque<Frame>,
    /// Bytes of `wire.front()` already written.
    /// (A frame is far below 4 GiB: frames are bounded by the message size limit.)
    head_written: u32,
    /// Bytes in `wire`, counting the head whole.
    wire_bytes: usize,
    slots: Vec<Slot>,
    free: Vec<u32>,
    ready: VecDeque<u32>,
    /// Slots holding a frame that `max_hz` holds back.
    delayed: Vec<u32>,
    /// Frames ever put in `wire` (wrapping): `pushed - wire.len()` is the head's index.
    pushed: u32,
    /// When stream frames were queued: `(index of the first frame queued at or after the
    /// time, time in µs)`, oldest first; the first mark dates the head frame from below.
    /// Empty when nothing waits.
    marks: VecDeque<(u32, Micros)>,
    closing: bool,
}

impl Outbound {
    /// An empty queue for a connection of `format`. Allocates nothing until used.
    pub fn new(format: Format, limits: QueueLimits) -> Self {
        Outbound {
            format,
            limits: Packed::new(limits),
            wire: VecDeque::new(),
            head_written: 0,
            wire_bytes: 0,
            slots: Vec::new(),
            free: Vec::new(),
            ready: VecDeque::new(),
            delayed: Vec::new(),
            pushed: 0,
            marks: VecDeque::new(),
            closing: false,
        }
    }

    /// Queues a stream event's frame at `now`: it must not be conflated or dropped. Refused
    /// when the backlog's oldest frame has waited past `max_lag`, or the queue is at a cap.
    pub fn push(&mut self, frame: impl Into<Frame>, now: Micros) -> Result<(), Overflow> {
        let frame = frame.into();
        // An empty frame is a message the connection's dialect does not have.
        if self.closing || frame.is_empty() {
            return Ok(());
        }
        self.admit(frame.len())?;
        match self.marks.back() {
            // The common case, a reader that keeps up: nothing waits, so nothing is late,
            // and this frame starts the backlog's first mark.
            _ if self.wire.is_empty() => self.marks.push_back((self.pushed, now)),
            // Marked at this very time (the rest of a fan-out batch): checked then, and a
            // backlog's age cannot grow while the time stands still.
            Some(&(_, t)) if t == now => {}
            _ => {
                if self.is_lagging(now) {
                    return Err(Overflow::Lagging);
                }
                self.mark(now);
            }
        }
        self.enqueue(frame);
        Ok(())
    }

    /// Queues a reply to an op: bounded by the caps, but not by the lag rule (a client
    /// that reads only quotes, which conflate, may pause reading and still send ops).
    pub fn push_reply(&mut self, frame: impl Into<Frame>) -> Result<(), Overflow> {
        let frame = frame.into();
        // An empty frame is a message the connection's dialect does not have.
        if self.closing || frame.is_empty() {
            return Ok(());
        }
        self.admit(frame.len())?;
        self.enqueue(frame);
        Ok(())
    }

    /// Queues a control frame (pong, ping, notice) regardless of limits.
    pub fn push_control(&mut self, frame: impl Into<Frame>) {
        let frame = frame.into();
        if !self.closing && !frame.is_empty() {
            self.enqueue(frame);
        }
    }

    fn admit(&self, len: usize) -> Result<(), Overflow> {
        if self.wire.len() + 1 > self.limits.max_frames as usize
            || self.wire_bytes + len > self.limits.max_bytes as usize
        {
            return Err(Overflow::Full);
        }
        Ok(())
    }

    #[inline]
    fn enqueue(&mut self, frame: Frame) {
        self.wire_bytes += frame.len();
        self.wire.push_back(frame);
        self.pushed = self.pushed.wrapping_add(1);
    }

    /// Dates the frame about to be queued: a new mark when the backlog was empty or the
    /// last mark is older than the resolution.
    #[inline]
    fn mark(&mut self, now: Micros) {
        let fresh = match self.marks.back() {
            None => true,
            Some(&(_, t)) => {
                self.marks.len() < MAX_MARKS
                    && now.saturating_sub(t) >= (self.limits.max_lag_us / MARK_SLICES) as u64
            }
        };
        if fresh {
            self.marks.push_back((self.pushed, now));
        }
    }

    /// How long the oldest unsent stream frame has waited (overstated by at most
    /// `max_lag / 16`); zero when none waits.
    pub fn lag(&self, now: Micros) -> Duration {
        Duration::from_micros(self.lag_us(now))
    }

    #[inline]
    fn lag_us(&self, now: Micros) -> u64 {
        match self.marks.front() {
            Some(&(_, t)) if !self.wire.is_empty() => now.saturating_sub(t),
            _ => 0,
        }
    }

    /// Whether the oldest unsent stream frame has waited past `max_lag`.
    pub fn is_lagging(&self, now: Micros) -> bool {
        self.lag_us(now) > self.limits.max_lag_us as u64
    }

    /// Allocates a conflation slot for a subscription to `channel`.
    pub fn add_slot(&mut self, channel: Arc<str>, max_hz: Option<f64>) -> u32 {
        let min_interval = max_hz.map(|hz| Duration::from_secs_f64(1.0 / hz));
        let slot = Slot {
            in_use: true,
            channel,
            frame: None,
            seq: 0,
            replaced: None,
            queued: false,
            min_interval,
            next_allowed: None,
        };
        match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        }
    }

    /// Changes slot `id`'s rate cap (a subscribe again with another `max_hz`). A frame held
    /// back under the old cap is released by the next `release_due` if the new one allows.
    pub fn set_slot_rate(&mut self, id: u32, max_hz: Option<f64>) {
        if let Some(s) = self.slots.get_mut(id as usize).filter(|s| s.in_use) {
            let iv = max_hz.map(|hz| Duration::from_secs_f64(1.0 / hz));
            if let (Some(next), Some(old)) = (s.next_allowed, s.min_interval) {
                // Re-date the next release under the new interval (none: due now).
                s.next_allowed = iv.map(|iv| next - old + iv).or(Some(next - old));
            }
            s.min_interval = iv;
        }
    }

    /// Frees a slot; a frame still in it is dropped.
    pub fn remove_slot(&mut self, id: u32) {
        if let Some(s) = self.slots.get_mut(id as usize) {
            s.in_use = false;
            s.frame = None;
            s.replaced = None;
            self.ready.retain(|&r| r != id);
            self.delayed.retain(|&r| r != id);
            self.free.push(id);
        }
    }

    /// Whether slot `id` holds a frame not yet written: offering another replaces it (a
    /// conflated quote, counted by the shard for the metrics).
    #[inline]
    pub fn slot_is_full(&self, id: u32) -> bool {
        self.slots
            .get(id as usize)
            .is_some_and(|s| s.in_use && s.frame.is_some())
    }

    /// Offers the newest frame of a conflated channel. Returns `Some(when)` if `max_hz` holds
    /// it back until `when`.
    pub fn offer(
        &mut self,
        id: u32,
        frame: impl Into<Frame>,
        seq: u64,
        now: Instant,
    ) -> Option<Instant> {
        let frame = frame.into();
        if self.closing {
            return None;
        }
        let s = self.slots.get_mut(id as usize).filter(|s| s.in_use)?;
        if s.frame.is_some() {
            let old = s.seq;
            s.replaced = Some(match s.replaced {
                Some((from, _)) => (from, old),
                None => (old, old),
            });
        }
        s.frame = Some(frame);
        s.seq = seq;
        if s.queued {
            return None;
        }
        match s.next_allowed {
            Some(t) if t > now => {
                if !self.delayed.contains(&id) {
                    self.delayed.push(id);
                }
                Some(t)
            }
            _ => {
                s.queued = true;
                self.ready.push_back(id);
                None
            }
        }
    }

    /// Moves `max_hz`-delayed slots whose time has come to the ready list; returns the next
    /// time one becomes due, if any is still waiting.
    pub fn release_due(&mut self, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let slots = &mut self.slots;
        let ready = &mut self.ready;
        self.delayed.retain(|&id| {
            let s = &mut slots[id as usize];
            match s.next_allowed {
                Some(t) if t > now => {
                    next = Some(next.map_or(t, |n| n.min(t)));
                    true
                }
                _ => {
                    if s.frame.is_some() && !s.queued {
                        s.queued = true;
                        ready.push_back(id);
                    }
                    false
                }
            }
        });
        next
    }

    /// Commits ready quotes to the wire while it is below the watermark.
    pub fn commit(&mut self, now: Instant) {
        while self.wire_bytes - (self.head_written as usize) < COMMIT_WATERMARK {
            let Some(id) = self.ready.pop_front() else {
                break;
            };
            let s = &mut self.slots[id as usize];
            s.queued = false;
            let Some(frame) = s.frame.take() else {
                continue;
            };
            if let Some((from, to)) = s.replaced.take() {
                let notice = self.format.reply(&Reply::Conflated(Conflated {
                    kind: "conflated",
                    channel: &s.channel,
                    from,
                    to,
                }));
                // Dialects without the notice (Pusher) give an empty frame.
                if !notice.is_empty() {
                    self.wire_bytes += notice.len();
                    self.wire.push_back(Rc::new(notice));
                    self.pushed = self.pushed.wrapping_add(1);
                }
            }
            if let Some(iv) = s.min_interval {
                s.next_allowed = Some(now + iv);
            }
            self.wire_bytes += frame.len();
            self.wire.push_back(frame);
            self.pushed = self.pushed.wrapping_add(1);
        }
    }

    /// Hands what is pending to `write`, at most [`MAX_IOV`] frames per call and at most
    /// `max_writes` calls, committing ready quotes whenever the committed bytes run out.
    /// `write` returns how many bytes it took: 0 (a full socket, a reader that takes no
    /// more) ends the round, an error ends it and is returned.
    pub fn write_with<E>(
        &mut self,
        now: Instant,
        max_writes: usize,
        mut write: impl FnMut(&[IoSlice<'_>]) -> Result<usize, E>,
    ) -> Result<(), E> {
        self.commit(now);
        for _ in 0..max_writes {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let n = self.slices(&mut iov);
            if n == 0 {
                if self.has_ready() {
                    self.commit(now);
                    if self.has_wire() {
                        continue;
                    }
                }
                return Ok(());
            }
            let taken = write(&iov[..n])?;
            if taken == 0 {
                return Ok(());
            }
            self.advance(taken);
        }
        Ok(())
    }

    /// Fills `out` with the committed bytes waiting to be written; returns how many slices.
    pub fn slices<'a>(&'a self, out: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (i, f) in self.wire.iter().take(out.len()).enumerate() {
            let b: &[u8] = if i == 0 {
                &f[self.head_written as usize..]
            } else {
                f
            };
            out[i] = IoSlice::new(b);
            n += 1;
        }
        n
    }

    /// Records that `n` bytes were written.
    pub fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.wire.front() else {
                break;
            };
            let left = front.len() - self.head_written as usize;
            if n >= left {
                n -= left;
                self.wire_bytes -= front.len();
                self.head_written = 0;
                self.wire.pop_front();
            } else {
                self.head_written += n as u32;
                n = 0;
            }
        }
        // Marks dating frames already written go; the first left dates the head.
        let head = self.pushed.wrapping_sub(self.wire.len() as u32);
        while self.marks.len() >= 2 && (head.wrapping_sub(self.marks[1].0) as i32) >= 0 {
            self.marks.pop_front();
        }
        if self.wire.is_empty() {
            self.marks.clear();
            let cap = self.wire.capacity();
            if cap > 1024 {
                // A burst is over: give most of the memory back.
                self.wire.shrink_to(16);
            } else if cap <= 8 {
                // A quiet connection (welcome, acks, a ping now and then) holds no buffer at
                // all; re-allocating a small one costs far less than the write that empties it.
                self.wire = VecDeque::new();
            }
            // The time marks' buffer is kept while small (a stream subscriber's next event
            // would allocate it again: measured, freeing it cost 20% of a one-event fan-out,
            // `fanout/stream_1000` 114 vs 93 µs); after a backlog it is given back.
            if self.marks.capacity() > 4 {
                self.marks = VecDeque::new();
            }
        }
    }

    /// Whether committed bytes wait to be written.
    pub fn has_wire(&self) -> bool {
        !self.wire.is_empty()
    }

    /// Whether quotes wait to be committed.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Frames and bytes committed and not yet written.
    pub fn queued(&self) -> (usize, usize) {
        (
            self.wire.len(),
            self.wire_bytes - self.head_written as usize,
        )
    }

    /// Ends the stream with `close`: drops pending quotes and, when `discard`, every frame not
    /// yet started (a slow consumer's backlog), keeping a partly written frame so the stream
    /// stays well-formed. Nothing is queued after it.
    pub fn close(&mut self, close: Bytes, discard: bool) {
        if self.closing {
            return;
        }
        self.ready.clear();
        self.delayed.clear();
        for s in &mut self.slots {
            s.frame = None;
            s.queued = false;
        }
        if discard {
            let keep = usize::from(self.head_written > 0);
            while self.wire.len() > keep {
                if let Some(f) = self.wire.pop_back() {
                    self.wire_bytes -= f.len();
                    self.pushed = self.pushed.wrapping_sub(1);
                }
            }
        }
        self.marks.clear();
        self.enqueue(Rc::new(close));
        self.closing = true;
    }

    /// The queue's bounds.
    pub fn limits(&self) -> QueueLimits {
        QueueLimits {
            max_frames: self.limits.max_frames as usize,
            max_bytes: self.limits.max_bytes as usize,
            max_lag: self.limits.max_lag(),
        }
    }

    /// Whether a close frame has been queued.
    pub fn is_closing(&self) -> bool {
        self.closing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim() -> QueueLimits {
        QueueLimits {
            max_frames: 4,
            max_bytes: 100,
            max_lag: Duration::from_secs(5),
        }
    }

    fn drain(o: &mut Outbound) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let mut sl = [IoSlice::new(&[]); MAX_IOV];
            let n = o.slices(&mut sl);
            if n == 0 {
                break;
            }
            let total: usize = sl[..n].iter().map(|s| s.len()).sum();
            for s in &sl[..n] {
                out.extend_from_slice(s);
            }
            o.advance(total);
        }
        out
    }

    #[test]
    fn stream_frames_keep_order_and_partial_writes_resume() {
        let mut o = Outbound::new(Format::Json, lim());
        o.push(Bytes::from_static(b"aaa"), 0).unwrap();
        o.push(Bytes::from_static(b"bbb"), 0).unwrap();
        o.advance(2);
        let mut sl = [IoSlice::new(&[]); MAX_IOV];
        let n = o.slices(&mut sl);
        assert_eq!(n, 2);
        assert_eq!(&*sl[0], b"a");
        assert_eq!(drain(&mut o), b"abbb");
        assert!(!o.has_wire());
    }

    #[test]
    fn overflow_on_frames_and_bytes() {
        let mut o = Outbound::new(Format::Json, lim());
        for _ in 0..4 {
            o.push(Bytes::from_static(b"x"), 0).unwrap();
        }
        assert_eq!(o.push(Bytes::from_static(b"x"), 0), Err(Overflow::Full));
        let mut o = Outbound::new(Format::Json, lim());
        o.push(Bytes::from(vec![0u8; 90]), 0).unwrap();
        assert_eq!(o.push(Bytes::from(vec![0u8; 11]), 0), Err(Overflow::Full));
    }

    #[test]
    fn conflation_keeps_latest_and_announces_replaced_range() {
        let now = Instant::now();
        let mut o = Outbound::new(Format::Json, lim());
        let s = o.add_slot("quotes.A".into(), None);
        for seq in 1..=5u64 {
            o.offer(s, Bytes::from(format!("q{seq}")), seq, now);
        }
        o.commit(now);
        let bytes = drain(&mut o);
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.contains(r#""type":"conflated","channel":"quotes.A","from":1,"to":4"#),
            "{text}"
        );
        assert!(text.ends_with("q5"));
        // Nothing replaced next time: no notice.
        o.offer(s, Bytes::from_static(b"q6"), 6, now);
        o.commit(now);
        assert_eq!(drain(&mut o), b"q6");
    }

    #[test]
    fn stream_frames_go_before_uncommitted_quotes() {
        let now = Instant::now();
        let mut o = Outbound::new(Format::Json, lim());
        let s = o.add_slot("quotes.A".into(), None);
        o.offer(s, Bytes::from_static(b"Q"), 1, now);
        o.push(Bytes::from_static(b"O"), 0).unwrap();
        o.commit(now);
        assert_eq!(drain(&mut o), b"OQ");
    }

    #[test]
    fn commit_stops_at_watermark() {
        let now = Instant::now();
        let mut o = Outbound::new(
            Format::Json,
            QueueLimits {
                max_frames: 10,
                max_bytes: 1 << 20,
                max_lag: Duration::from_secs(5),
            },
        );
        o.push(Bytes::from(vec![0u8; COMMIT_WATERMARK]), 0).unwrap();
        let s = o.add_slot("q.A".into(), None);
        o.offer(s, Bytes::from_static(b"Q"), 1, now);
        o.commit(now);
        assert!(
            o.has_ready(),
            "quote stays conflatable while the wire is full"
        );
        o.advance(COMMIT_WATERMARK);
        o.commit(now);
        assert_eq!(drain(&mut o), b"Q");
    }

    #[test]
    fn max_hz_delays_then_releases_latest() {
        let t0 = Instant::now();
        let mut o = Outbound::new(Format::Json, lim());
        let s = o.add_slot("q.A".into(), Some(10.0));
        assert_eq!(o.offer(s, Bytes::from_static(b"1"), 1, t0), None);
        o.commit(t0);
        assert_eq!(drain(&mut o), b"1");
        let due = o.offer(
            s,
            Bytes::from_static(b"2"),
            2,
            t0 + Duration::from_millis(10),
        );
        assert_eq!(due, Some(t0 + Duration::from_millis(100)));
        o.offer(
            s,
            Bytes::from_static(b"3"),
            3,
            t0 + Duration::from_millis(20),
        );
        assert_eq!(
            o.release_due(t0 + Duration::from_millis(50)),
            Some(t0 + Duration::from_millis(100))
        );
        o.commit(t0 + Duration::from_millis(50));
        assert!(drain(&mut o).is_empty());
        assert_eq!(o.release_due(t0 + Duration::from_millis(100)), None);
        o.commit(t0 + Duration::from_millis(100));
        let out = drain(&mut o);
        assert!(
            String::from_utf8_lossy(&out).ends_with("\"from\":2,\"to\":2}3"),
            "{}",
            String::from_utf8_lossy(&out)
        );
    }

    #[test]
    fn close_discards_backlog_but_finishes_partial_frame() {
        let mut o = Outbound::new(Format::Json, lim());
        o.push(Bytes::from_static(b"abc"), 0).unwrap();
        o.push(Bytes::from_static(b"def"), 0).unwrap();
        o.advance(1);
        o.close(Bytes::from_static(b"C"), true);
        o.push(Bytes::from_static(b"late"), 0).unwrap();
        assert_eq!(drain(&mut o), b"bcC");
        assert!(o.is_closing());
    }

    fn big() -> QueueLimits {
        QueueLimits {
            max_frames: 1 << 20,
            max_bytes: 64 << 20,
            max_lag: Duration::from_millis(500),
        }
    }

    /// Writes `bytes` of the queue's head, as a socket accepting that much would.
    fn write(o: &mut Outbound, mut bytes: usize) {
        while bytes > 0 {
            let mut sl = [IoSlice::new(&[]); MAX_IOV];
            let n = o.slices(&mut sl);
            if n == 0 {
                return;
            }
            let total: usize = sl[..n].iter().map(|s| s.len()).sum::<usize>().min(bytes);
            o.advance(total);
            bytes -= total;
        }
    }

    #[test]
    fn a_burst_drained_in_milliseconds_is_never_lagging() {
        // 200 KB arrives at once; the reader takes 5 ms to drain it, in 1 KB steps, while
        // more events keep arriving. Far below the lag: never refused, whatever the size.
        let t0: Micros = 0;
        let mut o = Outbound::new(Format::Json, big());
        for _ in 0..200 {
            o.push(Bytes::from(vec![1u8; 1000]), t0).unwrap();
        }
        for step in 0..200u64 {
            let now = t0 + 25 * step;
            write(&mut o, 1000);
            o.push(Bytes::from(vec![2u8; 100]), now).unwrap();
            assert!(o.lag(now) <= Duration::from_millis(5), "{:?}", o.lag(now));
        }
        write(&mut o, usize::MAX);
        assert_eq!(o.lag(t0 + 60_000_000), Duration::ZERO);
    }

    #[test]
    fn a_reader_that_keeps_up_with_a_standing_backlog_is_not_lagging() {
        // Always ~100 frames behind, but each frame waits only ~100 ms: not slow.
        let t0: Micros = 0;
        let mut o = Outbound::new(Format::Json, big());
        for ms in 0..5_000u64 {
            let now = t0 + ms * 1000;
            o.push(Bytes::from_static(b"e"), now).unwrap();
            if ms >= 100 {
                write(&mut o, 1);
            }
            assert!(o.lag(now) <= Duration::from_millis(100) + big().max_lag / MARK_SLICES);
        }
    }

    #[test]
    fn a_stalled_reader_lags_out_and_a_slow_one_too() {
        let t0: Micros = 0;
        let lim = big();
        // Stalled: nothing written.
        let mut o = Outbound::new(Format::Json, lim);
        o.push(Bytes::from_static(b"a"), t0).unwrap();
        assert!(!o.is_lagging(t0 + lim.max_lag.as_micros() as u64));
        let late = t0 + lim.max_lag.as_micros() as u64 + 1000;
        assert!(o.is_lagging(late));
        assert_eq!(
            o.push(Bytes::from_static(b"b"), late),
            Err(Overflow::Lagging)
        );
        // Slow: reads one frame for every two queued; the oldest frame's wait grows past
        // the lag although every write makes progress.
        let mut o = Outbound::new(Format::Json, lim);
        let mut refused = None;
        for ms in 0..10_000u64 {
            let now = t0 + ms * 1000;
            if o.push(Bytes::from_static(b"e"), now).is_err() {
                refused = Some(ms);
                break;
            }
            if ms % 2 == 0 {
                write(&mut o, 1);
            }
        }
        let ms = refused.expect("a reader at half the rate is slow");
        // The oldest frame waits half the elapsed time: refused once that passes 500 ms.
        assert!((900..=1_100).contains(&ms), "{ms}");
    }

    #[test]
    fn replies_and_controls_are_not_refused_for_lag() {
        let t0: Micros = 0;
        let mut o = Outbound::new(Format::Json, big());
        o.push(Bytes::from_static(b"a"), t0).unwrap();
        assert!(o.is_lagging(t0 + 1_000_000));
        o.push_reply(Bytes::from_static(b"r")).unwrap();
        o.push_control(Bytes::from_static(b"p"));
        assert_eq!(drain(&mut o), b"arp");
        assert!(!o.is_lagging(t0 + 1_000_000));
    }

    #[test]
    fn a_new_max_hz_applies_to_an_existing_slot() {
        let t0 = Instant::now();
        let mut o = Outbound::new(Format::Json, lim());
        let s = o.add_slot("q.A".into(), Some(1.0));
        o.offer(s, Bytes::from_static(b"1"), 1, t0);
        o.commit(t0);
        assert_eq!(drain(&mut o), b"1");
        // At 1 Hz the next quote waits a second; raised to 100 Hz it is due after 10 ms.
        o.set_slot_rate(s, Some(100.0));
        let due = o.offer(
            s,
            Bytes::from_static(b"2"),
            2,
            t0 + Duration::from_millis(5),
        );
        assert_eq!(due, Some(t0 + Duration::from_millis(10)));
        // Cap removed: due at once.
        o.set_slot_rate(s, None);
        assert_eq!(o.release_due(t0 + Duration::from_millis(5)), None);
        o.commit(t0 + Duration::from_millis(5));
        assert_eq!(drain(&mut o), b"2");
    }
}
