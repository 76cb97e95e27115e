//! The Pusher Channels protocol 7 and HTTP API on quotecast's engine (`docs/pusher.md`):
//! pusher-js, Laravel Echo and the official Pusher server SDKs work unchanged.
//!
//! - [`config`]: `[[pusher.apps]]` (id, key, secret from the environment or a file, limits).
//! - [`sign`]: channel auth, user auth and API request signatures (pure).
//! - [`state`]: apps, connection counts, Pusher subscriptions, presence members,
//!   signed-in users (one mutex, off the publish path); it also builds presence
//!   subscription acks for the engine (`engine::shard::AckHook`).
//! - [`ws`]: `GET /app/{key}` connections and the `pusher:*` / `client-*` messages.
//! - [`api`]: the HTTP API under `/apps/{id}/`.
//! - [`webhook`]: webhooks to the apps' URLs (batched, signed, retried, bounded queue).
//!
//! A Pusher connection is a `Peer` of dialect `Format::Pusher` subscribed to engine
//! channels: an event published through either API reaches `/ws` and Pusher subscribers
//! alike, its Pusher frame encoded once per event (`protocol::pusher`).

pub mod api;
pub mod config;
pub mod sign;
pub mod state;
pub mod webhook;
pub mod ws;

pub use state::Registry;
