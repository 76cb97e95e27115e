//! Integration tests: a real server on an ephemeral port, real WebSocket clients.

mod badinput;
mod delivery;
mod lifecycle;
mod slow;
mod util;
