//! llmdeck: a terminal control panel for LLM servers on GPU machines.
//!
//! The engine (supervisor, GPU sampler, test runs) emits [`protocol::Event`]s that a pure reducer
//! folds into [`protocol::State`]; the TUI, the headless daemon and `--json` output are views of
//! that one model. `docs/ARCHITECTURE.md` has the module map and the arrows allowed between
//! modules (enforced by `tests/architecture.rs`).

#[macro_use]
mod macros;

pub mod cmd;
pub mod config;
pub mod deploy;
pub mod engine;
pub mod exit;
pub mod fakes;
pub mod gpu;
pub mod logs;
pub mod probe;
pub mod protocol;
pub mod remote;
pub mod shopper;
pub mod supervisor;
pub mod tui;
pub mod util;
