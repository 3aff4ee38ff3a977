//! llmdeck: a terminal control panel for LLM servers on GPU machines.
//!
//! The engine (supervisor, GPU sampler, probe) emits [`engine::Event`]s that a pure reducer folds
//! into [`engine::State`]; the TUI, the headless daemon and `--json` output are views of that one
//! model. See `DESIGN.md` in the shared folder for the shape.

#[macro_use]
mod macros;

pub mod cli;
pub mod cmd;
pub mod config;
pub mod engine;
pub mod exit;
pub mod fakes;
pub mod gpu;
pub mod logs;
pub mod probe;
pub mod supervisor;
pub mod tui;
pub mod util;
