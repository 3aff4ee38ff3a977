//! The terminal UI: event loop, panes, keymap, theme, help. Components only draw and handle
//! keys; all work happens in the engine.

pub mod theme;
