//! The Logs pane: this viewer's bounded rings of log lines, with follow mode, filters, search,
//! error jumps, wrap, copy (OSC 52) and "open in $PAGER".
//!
//! A self-contained component: the app forwards keys with [`LogView::handle_key`] and carries
//! out the [`LogEffect`]s it returns (the component never writes to the terminal), and calls
//! [`LogView::render`] with the area inside the pane's border.
//!
//! Positions are indices into the rings that do not change as newer lines push older ones out
//! (see [`Ring`]), and every level filter keeps its own ring of indices, so drawing a frame walks
//! only the lines on screen: its cost does not grow with the number of lines held.
//!
//! Keys: `j`/`k`/arrows, `PgUp`/`PgDn` scroll (moving up pauses follow); `g`/Home oldest;
//! `G`/End and `F` newest + follow; `/` search (Enter keeps it, Esc cancels; in the prompt
//! `Ctrl-R` toggles regex, `Ctrl-U` clears, `↑` recalls the last search); `n`/`N` older/newer
//! match; `e`/`E` older/newer error or OOM line; `s` source picker; `v`/`V` raise/lower the
//! minimum level; `w` wrap; `t` timestamps; `c` compact/raw lines (compact, the default, hides
//! headers that repeat the time and level columns, like vLLM's `INFO 11-23 14:02:11 [x.py:12]`);
//! `y` copy; `o` open in `$PAGER`; `Esc` clears the search. Searches and jumps run from the
//! newest line back, as `?` does in `less`: from follow, `n` and `e` find the most recent match,
//! pressed again they go further back. Search and highlights apply to the text shown.

mod clean;
mod input;
mod nav;
mod render;
mod store;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use base64::Engine as _;
use chrono::{DateTime, FixedOffset, Local, Timelike, Utc};
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::Frame;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::widgets::{Block, Clear, Widget};
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

use super::theme::Theme;
use crate::logs::level::redundant_header;
use crate::logs::ring::Ring;
use crate::logs::search::Matcher;
use crate::logs::{Level, LogBatch, LogLine, LogSource};

pub use clean::display_text;
use clean::*;
use input::*;
use nav::*;
pub use render::row_starts;
use render::*;
use store::*;
pub use store::{LevelFilter, LogCounters};

/// A line is shown (and highlighted) up to this many bytes: lines may be up to a megabyte, and
/// a frame must stay cheap. Copy and search use the whole line.
const DISPLAY_BYTES: usize = 16 * 1024;
/// OSC 52 payloads larger than this are refused by common terminals.
const COPY_BYTES: usize = 64 * 1024;
/// The source column never gets wider than this.
const MAX_SOURCE_WIDTH: usize = 12;
/// Below this many columns for the text, the source and then the time column are hidden.
const MIN_TEXT_WIDTH: usize = 24;
const TIME_WIDTH: usize = 9;
const LEVEL_WIDTH: usize = 6;
const TAB: &str = "    ";
const CUT_MARK: &str = "…";

/// Work for the app's loop: the component never touches the terminal or spawns anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEffect {
    /// An OSC 52 escape sequence that puts a line on the clipboard: write it to the terminal
    /// as-is (inside tmux this needs `set -g set-clipboard on`).
    Clipboard(String),
    /// Open this source's log file in `$PAGER`, suspending the TUI meanwhile.
    OpenInPager(LogSource),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogViewOutcome {
    Consumed,
    /// Not a key of the Logs pane: the app may use it.
    NotConsumed,
    Effect(LogEffect),
}

#[derive(Debug)]
struct Message {
    text: String,
    bad: bool,
}

/// The Logs pane component: its store of lines, what it shows of them, where it stands, and
/// the search.
#[derive(Debug)]
pub struct LogView {
    store: Store,
    source_filter: Option<LogSource>,
    level_filter: LevelFilter,
    nav: Nav,
    display: Display,
    find: Find,
    /// Index into the picker's list (0 = all) while the source picker is open.
    picker: Option<usize>,
    message: Option<Message>,
}

impl LogView {
    /// A view keeping up to `ring_lines` lines per source and `ring_lines` across all sources.
    pub fn new(ring_lines: usize) -> Self {
        Self {
            store: Store::new(ring_lines),
            source_filter: None,
            level_filter: LevelFilter::All,
            nav: Nav::default(),
            display: Display::default(),
            find: Find::default(),
            picker: None,
            message: None,
        }
    }

    /// Show times at this UTC offset instead of local time (`None`: local time again).
    pub fn set_utc_offset(&mut self, offset: Option<FixedOffset>) {
        self.display.utc_offset = offset;
    }
}
