//! Integration tests: a real server on an ephemeral port, real WebSocket clients.

mod auth;
mod badinput;
mod board;
mod cluster;
mod delivery;
mod hooks;
mod lifecycle;
mod namespaces;
mod ops;
mod props;
mod server_api;
mod slow;
mod util;
mod walkthroughs;
