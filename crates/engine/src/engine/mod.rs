//! The engine: channel policies, per-channel rings and sequence numbers, encode-once
//! events, per-connection outbound queues with conflation, and the shards that own them.

pub mod channel;
pub mod event;
pub mod harness;
pub mod outbound;
pub mod port;
pub mod ring;
pub mod session;
pub mod shard;
pub mod signal;
pub mod stats;
pub mod sublist;
