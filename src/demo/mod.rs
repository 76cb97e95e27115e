//! The built-in demo market (`quotecast serve --demo`): a simulated market of quotes,
//! trades, signals, market status and private order/position/equity/risk events. Pure: the
//! server's demo task (`server::demo`) ticks it and publishes what it returns through the
//! same path as the HTTP API, so a newcomer sees the engine move.

mod market;

pub use market::{DemoConfig, DemoEvent, DemoMarket};
