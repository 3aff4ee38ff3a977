//! The shared vocabulary: what every part and every view of llmdeck speaks.
//!
//! [`Command`]s go to the engine and are answered with an [`Ack`] or a [`CommandError`];
//! [`Event`]s are facts that happened, numbered gap-free ([`Sequenced`]) by the [`Hub`], which
//! folds them into [`State`] through one pure reducer ([`State::apply`]) and fans them out. A
//! viewer gets a [`Snapshot`] (state, log tails, `seq`, `epoch`) and every event after it
//! through a [`Link`]. The TUI, the daemon's JSON lines and WebSocket clients, and `--json`
//! outputs are views of this one model.
//!
//! A leaf: it depends on nothing in the crate but `config`'s types, `logs`' line types and
//! `util`.

mod clocks;
mod command;
mod event;
mod gpu;
mod hub;
mod link;
mod probe;
mod runs;
mod sessions;
mod state;

pub use clocks::Clocks;
pub use command::{Ack, Command, CommandError, EventSink};
pub use event::*;
pub use gpu::*;
pub use hub::{FANOUT_CAPACITY, Hub, LOG_TAIL_LINES, SNAPSHOT_GPU_HISTORY, SNAPSHOT_LOG_BYTES, Snapshot, Subscription};
pub use link::{Answer, Link, LinkStatus, SharedLink, answered};
pub use probe::*;
pub use runs::*;
pub use sessions::*;
pub use state::*;
