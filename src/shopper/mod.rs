//! The GPU shopper: a typed client of its HTTP API (`shopper-api.md`), with one error type whose
//! variants a caller can act on. A plain library: no engine, no TUI.

pub mod client;
pub mod error;
pub mod types;

pub use client::ShopperClient;
pub use error::ShopperError;
pub use types::*;
