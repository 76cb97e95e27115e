//! quotecast: a sharded, encode-once market-data fan-out server speaking WebSocket.
//!
//! Feed handlers and backends publish events (quotes, trades, orders, positions, risk
//! alerts) over WebSocket or `POST /api/publish`; trading UIs subscribe to channels over
//! `GET /ws` and receive them in order, with snapshots, gap-free recovery by sequence
//! number, and per-subscriber conflation of quotes. The wire protocol is in
//! `docs/protocol.md`.
//!
//! # Layout
//! The modules follow the pipeline, publish → socket:
//! - [`protocol`]: the wire. Channel/event name rules, RFC 6455 framing (server frames built
//!   once into shared `Bytes`; a strict in-place decoder for client frames), client op
//!   parsing for JSON and MessagePack, what both formats can carry (`protocol::compat`),
//!   reply and event encoding. Pure, no I/O.
//! - [`engine`]: channel policies by pattern, per-channel ring buffers and sequence
//!   numbers, encode-once events, per-connection outbound queues with conflation slots,
//!   lock-free inboxes between shards, and the [`engine::shard::Shard`] state machine that
//!   sequences, fans out and hands off. No sockets except the flush it asks peers to do.
//! - [`server`]: the thread-per-core runtime (one `current_thread` tokio runtime per
//!   shard), the acceptor, HTTP via hyper (upgrade, publish API, health), the connection
//!   loop (`server::conn`: reads, frame decoding, deadlines, close handshake), what client
//!   ops mean (`server::ops`: rate limit, auth, subscribe, publish admission shared by
//!   WebSocket and HTTP), vectored writes, heartbeat and graceful shutdown.
//! - [`auth`]: identities, JWT verification, channel authorization and token buckets. Pure.
//! - [`demo`]: the simulated market behind `quotecast serve --demo`.
//! - [`config`]: the validated configuration, its defaults, and the TOML file it is read
//!   from.
//! - [`cluster`]: cluster mode on Redis (`--redis`): the bridge thread that has Redis
//!   sequence publishes, delivers them to the home shards in order, fills gaps from Redis
//!   history, and keeps cluster-wide presence.
//! - [`metrics`]: operational statistics: per-shard snapshots merged on demand, the
//!   Prometheus exposition served at `/metrics`, process figures. Pure.
//!
//! A new client op goes in `protocol::op` (parsing) and `server::ops` (what it means;
//! `server::conn` only decodes frames and hands ops over); a new rule on who may publish
//! what in `server::ops::admit_publish`, which WebSocket and HTTP publishes both pass; a
//! new channel behaviour in `engine::channel` and `engine::shard`; a new endpoint in
//! `server::http`; a new counter in `engine::shard::ShardStats` and `metrics::render`
//! (operations: `docs/operations.md`).
#![warn(missing_docs)]

pub mod auth;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod engine;
pub mod metrics;
pub mod protocol;
pub mod server;

pub use config::Config;
pub use server::Server;
