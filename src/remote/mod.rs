//! Remote viewers: the daemon's WebSocket server (hello, events, commands with acks),
//! Prometheus `/metrics`, the log-tail endpoint, and the attach client — a second
//! implementation of the `Link` the TUI talks to. It serves any engine through that `Link`
//! and never reaches into the engine itself. `docs/protocol.md` has the frames.

pub mod client;
pub mod metrics;
pub mod server;
pub mod token;
pub mod wire;

pub use client::{ConnectError, WsLink};
pub use server::{ServerOptions, serve};
pub use token::Token;
