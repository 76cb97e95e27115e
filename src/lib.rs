//! quotecast: a sharded, encode-once market-data fan-out server speaking WebSocket.
//!
//! Feed handlers and backends publish events (quotes, trades, orders, positions, risk
//! alerts) over WebSocket or `POST /api/publish`; trading UIs subscribe to channels over
//! `GET /ws` and receive them in order, with snapshots, gap-free recovery by sequence
//! number, and per-subscriber conflation of quotes. The wire protocol is in
//! `docs/protocol.md`.
//!
//! # Layout
//! Two crates. `crates/engine` (`quotecast-engine`) is the sans-IO core: it opens no
//! socket, reads no clock and spawns no thread, and it cannot reach tokio's networking (its
//! only tokio feature is `sync`; `scripts/test.sh` checks that it builds alone). This crate
//! re-exports its two modules and adds the I/O around them. Imports only go down this list
//! (for the core, the compiler enforces it: the layers above are another crate):
//! - [`protocol`] (core): the wire. Channel/event name rules, RFC 6455 framing (server
//!   frames built once into shared `Bytes`; a strict in-place decoder for client frames),
//!   close codes, client op parsing for JSON and MessagePack, what both formats can carry
//!   (`protocol::compat`), reply and event encoding, and the dialect seam
//!   (`protocol::dialect`: how each wire frames events, says replies and parses ops; a new
//!   wire protocol is a new `Format` with an arm there).
//! - [`engine`] (core): channel policies by pattern, per-channel ring buffers and sequence
//!   numbers, encode-once events, per-connection outbound queues with conflation and the
//!   slow-consumer rule, sessions (`engine::session`: a connection as the engine sees it),
//!   lock-free inboxes between shards, the [`engine::shard::Shard`] state machine that
//!   sequences, fans out and hands off (time is an input, `set_now`; output is handed to
//!   the caller's flush, `commit_with`), the port it needs from cluster mode
//!   (`engine::port`), statistics (`engine::stats`), and a deterministic multi-shard
//!   harness with fake connections (`engine::harness`).
//! - [`auth`]: identities, JWT verification, channel authorization and token buckets. Pure.
//! - [`demo`]: the simulated market behind `quotecast serve --demo`. Pure (time is an
//!   input); `server::demo` runs it.
//! - [`metrics`]: merging shard snapshots, the Prometheus exposition served at `/metrics`,
//!   process figures. Pure apart from reading `/proc`.
//! - [`cluster`]: cluster mode on Redis (`--redis`), implementing `engine::port`: the bridge
//!   thread that has Redis sequence publishes, delivers them to the home shards in order,
//!   fills gaps from Redis history, and keeps cluster-wide presence. Its decisions per
//!   channel are pure (`cluster::tracker`); the rest is I/O.
//! - [`pusher`]: the Pusher protocol 7 endpoint (`/app/{key}`) and HTTP API
//!   (`/apps/{id}/...`) on the same engine: apps, signatures, presence, client events.
//! - [`config`]: the validated configuration, its defaults, and the TOML file it is read
//!   from; `config::explain` says what a channel name gets (`channels explain`).
//! - [`clock`]: wall-clock time, for the layers that do I/O.
//! - [`server`]: all the I/O: the thread-per-core runtime (one `current_thread` tokio
//!   runtime per shard, `server::runtime::ServerShard` giving the engine its clock and its
//!   socket writes), the acceptor, HTTP via hyper (upgrade, publish API, health), the
//!   connection loop (`server::conn`: reads, frame decoding, deadlines, close handshake;
//!   `server::peer::Peer` embeds the engine's session beside its socket), what client ops
//!   mean (`server::ops`: rate limit, auth, subscribe, publish admission shared by
//!   WebSocket and HTTP), vectored writes, heartbeat and graceful shutdown; backend hooks
//!   (`server::hooks`: HTTP calls with deadline, breaker and cache, run as shard tasks;
//!   `server::connect_hook`, `server::rpc_hook`, and the subscribe hook in `server::ops`),
//!   and the operator API (`server::api`: disconnect, unsubscribe, channels, history).
//!
//! A new client op goes in `protocol::op` (parsing) and `server::ops` (what it means;
//! `server::conn` only decodes frames and hands ops over); a new rule on who may publish
//! what in `server::ops::admit_publish`, which WebSocket and HTTP publishes both pass; a
//! new channel behaviour in `engine::channel` and `engine::shard` (tested with
//! `engine::harness`, no sockets); a new endpoint in `server::http`; a new counter in
//! `engine::stats::ShardStats` and `metrics::render` (operations: `docs/operations.md`).
#![warn(missing_docs)]

pub mod auth;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod metrics;
pub mod pusher;
pub mod server;

pub use quotecast_engine::{engine, protocol};

pub use config::Config;
pub use server::Server;
