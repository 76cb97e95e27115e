//! The Redis bridge's decisions about one watched channel, without any I/O: for each live
//! pub/sub message and each read of the channel from Redis, whether the event is the next
//! one (pass it on), a duplicate (drop it), after a gap or of a new epoch (read the channel
//! again), or whether the channel's history was lost (reset its subscribers). The bridge
//! ([`super::bridge`]) feeds a [`Tracker`] what Redis said and does what it answers: send to
//! the home shard, start a read. Unit tested here as tables, without Redis.
//!
//! The life of a channel: created wanting a read; a read is begun with a token (only the
//! latest read's result counts); its result is the join answer the first time, then a fill,
//! nothing, or a reset. While a read is in flight or due, live messages are not passed on
//! (the read covers them); the newest one is noted, and if it is beyond what the read
//! returned, the channel is read again.

use std::sync::Arc;

use super::wire::RawEvent;
use crate::engine::channel::ChannelKind;

/// A channel's state in Redis as one read returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Snapshot {
    /// The channel's epoch.
    pub(super) epoch: Arc<str>,
    /// Its last sequence number.
    pub(super) seq: u64,
    /// History, oldest first: after the tracker's position when Redis still had that epoch
    /// (a fill), else the channel's last events (a join or a reset).
    pub(super) events: Vec<RawEvent>,
}

/// What to do with a live pub/sub message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Live {
    /// The next event: pass it to the home shard.
    Deliver,
    /// Already passed on (or older): drop it.
    Duplicate,
    /// A read is in flight or due, and covers it: drop it (noted, see [`Read::again`]).
    Held,
    /// Events are missing before it (a stream channel): drop it and read the channel.
    Gap,
    /// Of another epoch than the one passed on: drop it and read the channel.
    NewEpoch,
    /// The next event, but the home shard is too far behind: drop it and read the channel
    /// once the shard has caught up.
    Starved,
}

/// Why a channel's subscribers must be told that events may have been lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lost {
    /// Redis has another epoch for the channel (it lost its data, or the channel expired),
    /// or the join was answered without Redis (epoch "").
    NewEpoch,
    /// The events after the last passed on are no longer in the history stream.
    Trimmed,
    /// Same epoch, but Redis is behind what was passed on: the events beyond its position
    /// are gone. (The SYNC script mints a new epoch in that case, so this is the fallback
    /// should a read ever return it.)
    Rewound,
}

/// What to do with the result of a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ReadAction {
    /// The first read after the join: the home shard's join answer.
    Answer(Snapshot),
    /// The events after the last passed on, contiguous with it: pass them on in order.
    Fill(Vec<RawEvent>),
    /// A gap on a conflated channel, where only the latest value matters: pass it on (if
    /// history held one).
    Latest(Option<RawEvent>),
    /// Nothing new.
    UpToDate,
    /// History was lost: the home shard resets the channel to this snapshot and tells its
    /// subscribers (`resync`).
    Reset(Snapshot, Lost),
}

/// The answer to a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Read {
    /// What to send to the home shard.
    pub(super) action: ReadAction,
    /// A live message beyond the read went by while it was in flight: read again.
    pub(super) again: bool,
}

/// The bridge's view of one watched channel: the epoch and last sequence number passed on
/// to the home shard, and the state of its reads.
#[derive(Debug)]
pub(super) struct Tracker {
    /// A stream must not skip a sequence number; a conflated channel may.
    kind: ChannelKind,
    /// Epoch of the events passed on ("" before the first read, or after a join answered
    /// without Redis).
    epoch: Arc<str>,
    /// Last sequence number passed on.
    last: u64,
    /// The home shard has had its join answer.
    announced: bool,
    /// A read is in flight; its token (results of older reads are ignored).
    reading: Option<u64>,
    /// Another read is needed (after the current one, once Redis is back, or once the home
    /// shard caught up).
    want_read: bool,
    /// The newest live message seen while a read was in flight or due.
    seen: Option<(Arc<str>, u64)>,
}

impl Tracker {
    /// A channel just joined: it wants its first read.
    pub(super) fn new(kind: ChannelKind) -> Tracker {
        Tracker {
            kind,
            epoch: Arc::from(""),
            last: 0,
            announced: false,
            reading: None,
            want_read: true,
            seen: None,
        }
    }

    /// The epoch passed on, for the read (Redis returns the events after this position
    /// when it still has this epoch).
    pub(super) fn epoch(&self) -> &Arc<str> {
        &self.epoch
    }

    /// The last sequence number passed on.
    pub(super) fn last(&self) -> u64 {
        self.last
    }

    /// The home shard has had its join answer.
    pub(super) fn announced(&self) -> bool {
        self.announced
    }

    /// A read is wanted and none is in flight: start one when Redis can take it.
    pub(super) fn read_due(&self) -> bool {
        self.reading.is_none() && self.want_read
    }

    /// A read with this token was sent; it supersedes any read in flight.
    pub(super) fn begin_read(&mut self, token: u64) {
        self.reading = Some(token);
        self.want_read = false;
        self.seen = None;
    }

    /// A read is needed but cannot be sent now (no link, or the home shard is behind).
    pub(super) fn want_read(&mut self) {
        self.want_read = true;
    }

    /// The link to Redis was lost or replaced: the read in flight will not answer; read
    /// again on the new link.
    pub(super) fn abandon_read(&mut self) {
        self.reading = None;
        self.want_read = true;
    }

    /// The join was answered without Redis (unreachable): the first read will be a reset
    /// (its epoch differs from "").
    pub(super) fn announce_unknown(&mut self) {
        self.announced = true;
        self.want_read = true;
    }

    /// The read `token` failed: false if it was not the current one (ignore the failure),
    /// else the channel wants another read.
    pub(super) fn read_failed(&mut self, token: u64) -> bool {
        if self.reading != Some(token) {
            return false;
        }
        self.reading = None;
        self.want_read = true;
        true
    }

    /// A live pub/sub message of `epoch` numbered `seq`; `room` says whether the home shard
    /// can take more events now.
    pub(super) fn on_live(&mut self, epoch: &Arc<str>, seq: u64, room: bool) -> Live {
        if self.reading.is_some() || self.want_read {
            self.seen = Some((epoch.clone(), seq));
            return Live::Held;
        }
        if *epoch != self.epoch {
            return Live::NewEpoch;
        }
        if seq <= self.last {
            return Live::Duplicate;
        }
        if seq != self.last + 1 && self.kind == ChannelKind::Stream {
            return Live::Gap;
        }
        if !room {
            self.want_read = true;
            return Live::Starved;
        }
        self.last = seq;
        Live::Deliver
    }

    /// The read `token` returned `snap`; `None` when it was not the current read (a newer
    /// one was begun, or the link was lost meanwhile).
    pub(super) fn on_read(&mut self, token: u64, snap: Snapshot) -> Option<Read> {
        if self.reading != Some(token) {
            return None;
        }
        self.reading = None;
        let (epoch, seq) = (snap.epoch.clone(), snap.seq);
        let action = if !self.announced {
            self.announced = true;
            ReadAction::Answer(snap)
        } else if epoch != self.epoch {
            ReadAction::Reset(snap, Lost::NewEpoch)
        } else if seq < self.last {
            ReadAction::Reset(snap, Lost::Rewound)
        } else if seq == self.last {
            ReadAction::UpToDate
        } else if snap.events.first().is_some_and(|e| e.seq == self.last + 1) {
            let last = self.last;
            ReadAction::Fill(snap.events.into_iter().filter(|e| e.seq > last).collect())
        } else if self.kind == ChannelKind::Conflated {
            ReadAction::Latest(snap.events.into_iter().last())
        } else {
            ReadAction::Reset(snap, Lost::Trimmed)
        };
        self.epoch = epoch;
        self.last = seq;
        let again = match self.seen.take() {
            Some((e, s)) => e != self.epoch || s > self.last,
            None => false,
        };
        Some(Read { action, again })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    use ChannelKind::{Conflated, Stream};

    fn ev(epoch: &str, seq: u64) -> RawEvent {
        RawEvent {
            channel: Arc::from("c"),
            epoch: Arc::from(epoch),
            seq,
            ts: 0,
            event: "tick".into(),
            data: Bytes::from_static(b"{}"),
        }
    }

    fn snap(epoch: &str, seq: u64, events: &[u64]) -> Snapshot {
        Snapshot {
            epoch: Arc::from(epoch),
            seq,
            events: events.iter().map(|&s| ev(epoch, s)).collect(),
        }
    }

    /// A table row: case, channel kind, last passed on (epoch "e1"), message (epoch, seq),
    /// room in the home shard, action, last passed on afterwards.
    type LiveRow = (
        &'static str,
        ChannelKind,
        u64,
        (&'static str, u64),
        bool,
        Live,
        u64,
    );
    /// A table row: case, channel kind, position passed on, read result, action.
    type ReadRow = (
        &'static str,
        ChannelKind,
        (&'static str, u64),
        Snapshot,
        &'static str,
    );
    /// A table row: case, messages during the read, read result, action, read again.
    type HeldRow<'a> = (
        &'static str,
        &'a [(&'a Arc<str>, u64)],
        Snapshot,
        &'static str,
        bool,
    );

    /// A tracker that has passed on `epoch` up to `last`, with no read due.
    fn at(kind: ChannelKind, epoch: &str, last: u64) -> Tracker {
        let mut t = Tracker::new(kind);
        t.begin_read(1);
        let r = t.on_read(1, snap(epoch, last, &[])).unwrap();
        assert!(matches!(r.action, ReadAction::Answer(_)));
        assert!(!r.again);
        t
    }

    /// The read's action in a few words, for the tables.
    fn brief(a: &ReadAction) -> String {
        let seqs = |evs: &[RawEvent]| {
            evs.iter()
                .map(|e| e.seq.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        match a {
            ReadAction::Answer(s) => format!("answer {}@{} [{}]", s.epoch, s.seq, seqs(&s.events)),
            ReadAction::Fill(evs) => format!("fill [{}]", seqs(evs)),
            ReadAction::Latest(e) => format!("latest {:?}", e.as_ref().map(|e| e.seq)),
            ReadAction::UpToDate => "up to date".into(),
            ReadAction::Reset(s, why) => {
                format!("reset {why:?} {}@{} [{}]", s.epoch, s.seq, seqs(&s.events))
            }
        }
    }

    #[test]
    fn live_messages() {
        let table: &[LiveRow] = &[
            ("next", Stream, 5, ("e1", 6), true, Live::Deliver, 6),
            (
                "next, conflated",
                Conflated,
                5,
                ("e1", 6),
                true,
                Live::Deliver,
                6,
            ),
            ("duplicate", Stream, 5, ("e1", 5), true, Live::Duplicate, 5),
            ("older", Stream, 5, ("e1", 2), true, Live::Duplicate, 5),
            (
                "older, conflated",
                Conflated,
                5,
                ("e1", 4),
                true,
                Live::Duplicate,
                5,
            ),
            ("gap", Stream, 5, ("e1", 8), true, Live::Gap, 5),
            (
                "gap, conflated: skips",
                Conflated,
                5,
                ("e1", 8),
                true,
                Live::Deliver,
                8,
            ),
            ("new epoch", Stream, 5, ("e2", 1), true, Live::NewEpoch, 5),
            (
                "new epoch, higher seq",
                Conflated,
                5,
                ("e2", 9),
                true,
                Live::NewEpoch,
                5,
            ),
            (
                "next, shard full",
                Stream,
                5,
                ("e1", 6),
                false,
                Live::Starved,
                5,
            ),
            (
                "duplicate, shard full",
                Stream,
                5,
                ("e1", 5),
                false,
                Live::Duplicate,
                5,
            ),
            ("gap, shard full", Stream, 5, ("e1", 7), false, Live::Gap, 5),
        ];
        for &(case, kind, last, (epoch, seq), room, want, last_after) in table {
            let mut t = at(kind, "e1", last);
            assert_eq!(t.on_live(&Arc::from(epoch), seq, room), want, "{case}");
            assert_eq!(t.last(), last_after, "{case}");
            assert_eq!(t.read_due(), want == Live::Starved, "{case}: read due");
        }
    }

    #[test]
    fn reads() {
        let table: &[ReadRow] = &[
            (
                "nothing new",
                Stream,
                ("e1", 5),
                snap("e1", 5, &[]),
                "up to date",
            ),
            (
                "fill closes the gap",
                Stream,
                ("e1", 5),
                snap("e1", 8, &[6, 7, 8]),
                "fill [6,7,8]",
            ),
            (
                "fill, conflated",
                Conflated,
                ("e1", 5),
                snap("e1", 8, &[6, 7, 8]),
                "fill [6,7,8]",
            ),
            (
                "history trimmed past the gap",
                Stream,
                ("e1", 5),
                snap("e1", 9, &[8, 9]),
                "reset Trimmed e1@9 [8,9]",
            ),
            (
                "no history kept",
                Stream,
                ("e1", 5),
                snap("e1", 9, &[]),
                "reset Trimmed e1@9 []",
            ),
            (
                "trimmed, conflated: the latest value",
                Conflated,
                ("e1", 5),
                snap("e1", 9, &[8, 9]),
                "latest Some(9)",
            ),
            (
                "no history, conflated",
                Conflated,
                ("e1", 5),
                snap("e1", 9, &[]),
                "latest None",
            ),
            (
                "epoch changed",
                Stream,
                ("e1", 5),
                snap("e2", 2, &[1, 2]),
                "reset NewEpoch e2@2 [1,2]",
            ),
            (
                "epoch changed, higher seq",
                Conflated,
                ("e1", 5),
                snap("e2", 9, &[8, 9]),
                "reset NewEpoch e2@9 [8,9]",
            ),
            (
                "same epoch, seq went down (Redis restarted from an older snapshot)",
                Stream,
                ("e1", 5),
                snap("e1", 3, &[]),
                "reset Rewound e1@3 []",
            ),
            (
                "same epoch, seq went down, conflated",
                Conflated,
                ("e1", 5),
                snap("e1", 3, &[]),
                "reset Rewound e1@3 []",
            ),
            (
                "same epoch, seq down to 0",
                Stream,
                ("e1", 5),
                snap("e1", 0, &[]),
                "reset Rewound e1@0 []",
            ),
        ];
        for (case, kind, (epoch, last), s, want) in table {
            let mut t = at(*kind, epoch, *last);
            t.begin_read(7);
            let r = t
                .on_read(7, s.clone())
                .unwrap_or_else(|| panic!("{case}: ignored"));
            assert_eq!(brief(&r.action), *want, "{case}");
            assert!(!r.again, "{case}");
            // Afterwards the tracker stands at the read's position and takes its next event.
            assert_eq!((&**t.epoch(), t.last()), (&*s.epoch, s.seq), "{case}");
            assert!(!t.read_due(), "{case}");
            assert_eq!(
                t.on_live(&s.epoch, s.seq + 1, true),
                Live::Deliver,
                "{case}: next"
            );
        }
    }

    #[test]
    fn first_read_answers_the_join() {
        let mut t = Tracker::new(Stream);
        assert!(t.read_due() && !t.announced());
        assert_eq!(t.on_live(&Arc::from("e1"), 1, true), Live::Held);
        t.begin_read(1);
        let r = t.on_read(1, snap("e1", 4, &[1, 2, 3, 4])).unwrap();
        assert_eq!(brief(&r.action), "answer e1@4 [1,2,3,4]");
        assert!(t.announced());
        assert_eq!(t.on_live(&Arc::from("e1"), 4, true), Live::Duplicate);
        assert_eq!(t.on_live(&Arc::from("e1"), 5, true), Live::Deliver);
    }

    #[test]
    fn join_answered_without_redis_is_reset_by_the_first_read() {
        let mut t = Tracker::new(Stream);
        t.announce_unknown();
        assert!(t.announced() && t.read_due());
        assert_eq!(t.on_live(&Arc::from("e1"), 3, true), Live::Held);
        t.begin_read(1);
        let r = t.on_read(1, snap("e1", 3, &[1, 2, 3])).unwrap();
        assert_eq!(brief(&r.action), "reset NewEpoch e1@3 [1,2,3]");
    }

    #[test]
    fn same_epoch_lower_seq_resets_then_delivers_reused_seqs() {
        // Regression: Redis restarted from an older snapshot kept the epoch but went back
        // from 10 to 6. The read used to be ignored and 7..=10 of the new history dropped
        // as duplicates, silently.
        let e1: Arc<str> = Arc::from("e1");
        let mut t = at(Stream, "e1", 10);
        t.abandon_read(); // The link broke (Redis went down).
        assert_eq!(t.on_live(&e1, 7, true), Live::Held);
        t.begin_read(2);
        let r = t.on_read(2, snap("e1", 6, &[])).unwrap();
        assert_eq!(brief(&r.action), "reset Rewound e1@6 []");
        assert!(
            !r.again,
            "7 arrived before the read was begun: the read covers it"
        );
        assert_eq!(t.on_live(&e1, 7, true), Live::Deliver);
        assert_eq!(t.on_live(&e1, 8, true), Live::Deliver);
    }

    #[test]
    fn messages_during_a_read_are_held_and_read_again_when_newer() {
        let e1: Arc<str> = Arc::from("e1");
        let e2: Arc<str> = Arc::from("e2");
        let table: &[HeldRow] = &[
            ("none", &[], snap("e1", 7, &[6, 7]), "fill [6,7]", false),
            (
                "covered",
                &[(&e1, 6), (&e1, 7)],
                snap("e1", 7, &[6, 7]),
                "fill [6,7]",
                false,
            ),
            (
                "newer",
                &[(&e1, 6), (&e1, 8)],
                snap("e1", 7, &[6, 7]),
                "fill [6,7]",
                true,
            ),
            (
                "newer epoch",
                &[(&e2, 1)],
                snap("e1", 7, &[6, 7]),
                "fill [6,7]",
                true,
            ),
            (
                "of the read's epoch",
                &[(&e2, 2)],
                snap("e2", 2, &[1, 2]),
                "reset NewEpoch e2@2 [1,2]",
                false,
            ),
            (
                "old epoch after reset",
                &[(&e1, 9)],
                snap("e2", 2, &[1, 2]),
                "reset NewEpoch e2@2 [1,2]",
                true,
            ),
        ];
        for (case, during, s, want, again) in table {
            let mut t = at(Stream, "e1", 5);
            assert_eq!(t.on_live(&e1, 7, true), Live::Gap, "{case}");
            t.begin_read(3);
            for (e, seq) in *during {
                assert_eq!(t.on_live(e, *seq, true), Live::Held, "{case}");
            }
            let r = t.on_read(3, s.clone()).unwrap();
            assert_eq!(brief(&r.action), *want, "{case}");
            assert_eq!(r.again, *again, "{case}");
        }
    }

    #[test]
    fn only_the_current_read_counts() {
        let mut t = at(Stream, "e1", 5);
        t.begin_read(2);
        t.begin_read(3); // Supersedes 2 (e.g. a starved channel read again).
        assert_eq!(t.on_read(2, snap("e1", 9, &[6, 7, 8, 9])), None);
        assert!(!t.read_failed(2));
        assert_eq!(t.last(), 5);
        assert!(t.read_failed(3));
        assert!(t.read_due(), "a failed read is retried");
        assert_eq!(t.on_live(&Arc::from("e1"), 6, true), Live::Held);
        t.begin_read(4);
        t.abandon_read(); // The link was lost: 4 will never answer.
        assert!(t.read_due());
        assert_eq!(t.on_read(4, snap("e1", 9, &[6, 7, 8, 9])), None);
        t.begin_read(5);
        let r = t.on_read(5, snap("e1", 9, &[6, 7, 8, 9])).unwrap();
        assert_eq!(brief(&r.action), "fill [6,7,8,9]");
    }

    #[test]
    fn starved_channel_waits_for_its_read() {
        let e1: Arc<str> = Arc::from("e1");
        let mut t = at(Stream, "e1", 5);
        assert_eq!(t.on_live(&e1, 6, false), Live::Starved);
        assert_eq!(t.on_live(&e1, 7, true), Live::Held);
        t.begin_read(2);
        let r = t.on_read(2, snap("e1", 7, &[6, 7])).unwrap();
        assert_eq!(brief(&r.action), "fill [6,7]");
        assert!(!r.again);
    }
}
