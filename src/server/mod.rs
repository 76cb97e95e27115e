//! The server layer: sockets, HTTP, the connection loop, what client ops mean (`ops`, shared
//! by WebSocket and HTTP publish) and the thread-per-core runtime. Everything that touches the network lives here; the engine and protocol layers are pure.

pub mod api;
pub mod assets;
pub mod conn;
pub mod connect_hook;
pub mod demo;
pub mod handshake;
pub mod hooks;
pub mod http;
pub mod ops;
pub mod peer;
pub mod rpc_hook;
pub mod runtime;
pub mod status;

pub use runtime::{Server, ShardReport};
