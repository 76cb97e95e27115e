//! The wire protocol v1 (see `docs/protocol.md`): names, RFC 6455 framing, client ops and
//! server message encoding. Pure code: no sockets, no clocks.

pub mod close;
pub mod compat;
pub mod dialect;
pub mod encode;
pub mod frame;
pub mod names;
pub mod op;
pub mod pusher;

pub use close::CloseCode;
pub use encode::Format;
