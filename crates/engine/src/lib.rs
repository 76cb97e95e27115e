//! quotecast's sans-IO core: the wire protocol and the sharded fan-out engine.
//!
//! Nothing here opens a socket, reads a clock or spawns a thread; the crate does not depend
//! on tokio's networking (tokio appears for its `oneshot` channels only), and the compiler
//! keeps it that way. The `quotecast` crate re-exports both modules
//! (`quotecast::engine`, `quotecast::protocol`) and adds the I/O: sockets, HTTP, the
//! thread-per-core runtime, Redis.
//!
//! - [`protocol`]: names, RFC 6455 framing, client op parsing (JSON and MessagePack), reply
//!   and event encoding, close codes.
//! - [`engine`]: channel policies, rings, encode-once events, outbound queues with
//!   conflation and the slow-consumer rule, sessions, the shard state machine, the port
//!   it needs from cluster mode, statistics, and a deterministic multi-shard harness.
#![warn(missing_docs)]

pub mod engine;
pub mod protocol;
