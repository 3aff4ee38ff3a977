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

/// Lines seen, dropped before reaching this viewer, and errors (error level or OOM).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogCounters {
    pub lines: u64,
    pub dropped: u64,
    pub errors: u64,
}

/// The minimum level shown. Lines without a level count as INFO; error and OOM lines always pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LevelFilter {
    #[default]
    All,
    Info,
    Warn,
    Error,
}

impl LevelFilter {
    /// The filters that keep an index of their lines (all but `All`), in `Lane::kept` order.
    const INDEXED: [LevelFilter; 3] = [LevelFilter::Info, LevelFilter::Warn, LevelFilter::Error];

    fn slot(self) -> Option<usize> {
        match self {
            LevelFilter::All => None,
            LevelFilter::Info => Some(0),
            LevelFilter::Warn => Some(1),
            LevelFilter::Error => Some(2),
        }
    }

    pub fn passes(self, line: &LogLine) -> bool {
        let level = line.level.unwrap_or(Level::Info);
        match self {
            LevelFilter::All => true,
            LevelFilter::Info => level >= Level::Info || line.is_error(),
            LevelFilter::Warn => level >= Level::Warn || line.is_error(),
            LevelFilter::Error => line.is_error(),
        }
    }

    fn raised(self) -> Self {
        match self {
            LevelFilter::All => LevelFilter::Info,
            LevelFilter::Info => LevelFilter::Warn,
            LevelFilter::Warn => LevelFilter::Error,
            LevelFilter::Error => LevelFilter::All,
        }
    }

    fn lowered(self) -> Self {
        match self {
            LevelFilter::All => LevelFilter::Error,
            LevelFilter::Info => LevelFilter::All,
            LevelFilter::Warn => LevelFilter::Info,
            LevelFilter::Error => LevelFilter::Warn,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            LevelFilter::All => "all levels",
            LevelFilter::Info => "info+",
            LevelFilter::Warn => "warn+",
            LevelFilter::Error => "errors",
        }
    }
}

/// One held line. Shared between the "all" lane and its source's lane.
#[derive(Debug)]
struct Entry {
    /// Arrival order in this viewer, across sources: maps positions between lanes and filters.
    seq: u64,
    source: Arc<LogSource>,
    line: LogLine,
}

/// A bounded ring of lines plus, for each level filter, the indices of the lines it keeps.
#[derive(Debug)]
struct Lane {
    lines: Ring<Arc<Entry>>,
    kept: [Ring<u64>; 3],
    counters: LogCounters,
}

impl Lane {
    fn new(cap: usize) -> Self {
        Self {
            lines: Ring::new(cap),
            kept: [Ring::new(cap), Ring::new(cap), Ring::new(cap)],
            counters: LogCounters::default(),
        }
    }

    fn push(&mut self, entry: Arc<Entry>) {
        let index = self.lines.end();
        for (kept, filter) in self.kept.iter_mut().zip(LevelFilter::INDEXED) {
            if filter.passes(&entry.line) {
                kept.push(index);
            }
        }
        self.lines.push(entry);
        let oldest = self.lines.start();
        for kept in &mut self.kept {
            while kept.front().is_some_and(|&i| i < oldest) {
                kept.pop_front();
            }
        }
    }
}

/// The lines of one lane that pass one filter, addressed by stable indices `start()..end()`.
#[derive(Clone, Copy)]
struct Visible<'a> {
    lane: &'a Lane,
    kept: Option<&'a Ring<u64>>,
}

impl<'a> Visible<'a> {
    fn new(lane: &'a Lane, filter: LevelFilter) -> Self {
        let kept = filter.slot().map(|slot| &lane.kept[slot]);
        Self { lane, kept }
    }

    fn start(&self) -> u64 {
        self.kept.map_or(self.lane.lines.start(), Ring::start)
    }

    fn end(&self) -> u64 {
        self.kept.map_or(self.lane.lines.end(), Ring::end)
    }

    fn is_empty(&self) -> bool {
        self.start() == self.end()
    }

    fn get(&self, i: u64) -> Option<&'a Entry> {
        let index = match self.kept {
            Some(kept) => *kept.get_abs(i)?,
            None => i,
        };
        self.lane.lines.get_abs(index).map(|e| &**e)
    }

    /// The index of the last line that arrived at or before `seq`.
    fn at_or_before(&self, seq: u64) -> Option<u64> {
        let lines = &self.lane.lines;
        let after = match self.kept {
            Some(kept) => kept.partition_point(|&i| lines.get_abs(i).is_some_and(|e| e.seq <= seq)),
            None => lines.partition_point(|e| e.seq <= seq),
        };
        (after > self.start()).then(|| after - 1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// Show the newest lines as they come.
    Follow,
    /// Stay put: `sel` is the selected line, `top` the first line drawn.
    Paused { sel: u64, top: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Older,
    Newer,
}

#[derive(Debug, Default)]
struct SearchInput {
    text: String,
    error: Option<String>,
}

#[derive(Debug)]
struct Message {
    text: String,
    bad: bool,
}

#[derive(Debug)]
struct SourceLane {
    source: Arc<LogSource>,
    lane: Lane,
}

/// The Logs pane component.
#[derive(Debug)]
pub struct LogView {
    cap: usize,
    all: Lane,
    by_source: BTreeMap<LogSource, SourceLane>,
    /// Stands in for a filtered source that has no lane (never pushed to).
    empty: Lane,
    totals: LogCounters,
    /// Lines this viewer missed because it fell behind the engine (part of `totals.dropped`).
    lagged: u64,
    next_seq: u64,
    source_width: usize,

    source_filter: Option<LogSource>,
    level_filter: LevelFilter,
    position: Position,
    /// First line drawn in the last frame, so pausing keeps the screen still.
    drawn_top: Option<u64>,
    /// The next frame puts the selection mid-screen if it is off-screen (after a jump).
    recenter: bool,
    page_rows: usize,
    wrap: bool,
    timestamps: bool,
    /// Hide line headers that repeat the time and level columns (vLLM, uvicorn, tracing).
    compact: bool,
    regex_mode: bool,
    search: Option<Matcher>,
    /// The search active when the prompt opened, restored by Esc.
    search_before_input: Option<Matcher>,
    last_pattern: String,
    input: Option<SearchInput>,
    /// Index into the picker's list (0 = all) while the source picker is open.
    picker: Option<usize>,
    message: Option<Message>,
    /// `None`: local time. Tests fix it.
    utc_offset: Option<FixedOffset>,
}

impl LogView {
    /// A view keeping up to `ring_lines` lines per source and `ring_lines` across all sources.
    pub fn new(ring_lines: usize) -> Self {
        Self {
            cap: ring_lines.max(1),
            all: Lane::new(ring_lines),
            by_source: BTreeMap::new(),
            empty: Lane::new(1),
            totals: LogCounters::default(),
            lagged: 0,
            next_seq: 0,
            source_width: 0,
            source_filter: None,
            level_filter: LevelFilter::All,
            position: Position::Follow,
            drawn_top: None,
            recenter: false,
            page_rows: 10,
            wrap: false,
            timestamps: true,
            compact: true,
            regex_mode: false,
            search: None,
            search_before_input: None,
            last_pattern: String::new(),
            input: None,
            picker: None,
            message: None,
            utc_offset: None,
        }
    }

    /// Show times at this UTC offset instead of local time (`None`: local time again).
    pub fn set_utc_offset(&mut self, offset: Option<FixedOffset>) {
        self.utc_offset = offset;
    }

    // ----- feeding -------------------------------------------------------------------------

    /// Takes one batch of lines (cloned; see [`LogView::push_owned`]).
    pub fn push_batch(&mut self, batch: &LogBatch) {
        self.ingest(&batch.source, batch.dropped_before, batch.lines.iter().cloned());
    }

    /// Takes one batch of lines without copying them.
    pub fn push_owned(&mut self, batch: LogBatch) {
        self.ingest(&batch.source, batch.dropped_before, batch.lines);
    }

    /// This viewer fell behind the engine and missed `n` events; counted as dropped.
    pub fn note_lagged(&mut self, n: u64) {
        self.lagged += n;
        self.totals.dropped += n;
    }

    /// Starts again from a snapshot's tail (the last lines of each source): earlier lines and
    /// counters are forgotten, lines are merged by time, and the view follows again.
    pub fn seed(&mut self, tail: &BTreeMap<LogSource, Vec<LogLine>>) {
        self.all = Lane::new(self.cap);
        self.by_source.clear();
        self.totals = LogCounters::default();
        self.lagged = 0;
        self.position = Position::Follow;
        self.drawn_top = None;
        let mut merged: Vec<(&LogSource, &LogLine)> =
            tail.iter().flat_map(|(source, lines)| lines.iter().map(move |l| (source, l))).collect();
        merged.sort_by_key(|(_, line)| line.ts);
        for (source, line) in merged {
            self.ingest(source, 0, [line.clone()]);
        }
        for source in tail.keys().chain(self.source_filter.clone().as_ref()) {
            self.ensure_source(source);
        }
    }

    fn ensure_source(&mut self, source: &LogSource) {
        if !self.by_source.contains_key(source) {
            let lane = SourceLane { source: Arc::new(source.clone()), lane: Lane::new(self.cap) };
            self.by_source.insert(source.clone(), lane);
            let width = source.name().chars().count().min(MAX_SOURCE_WIDTH);
            self.source_width = self.source_width.max(width);
        }
    }

    fn ingest(&mut self, source: &LogSource, dropped_before: u64, lines: impl IntoIterator<Item = LogLine>) {
        self.ensure_source(source);
        let Some(SourceLane { source, lane }) = self.by_source.get_mut(source) else {
            return;
        };
        lane.counters.dropped += dropped_before;
        self.totals.dropped += dropped_before;
        for line in lines {
            let errors = u64::from(line.is_error());
            for counters in [&mut lane.counters, &mut self.totals] {
                counters.lines += 1;
                counters.errors += errors;
            }
            let entry = Arc::new(Entry { seq: self.next_seq, source: Arc::clone(source), line });
            self.next_seq += 1;
            lane.push(Arc::clone(&entry));
            self.all.push(entry);
        }
    }

    // ----- reading ---------------------------------------------------------------------------

    /// Counters of the source shown (or of all sources, including lines this viewer lagged on).
    pub fn counters(&self) -> LogCounters {
        match &self.source_filter {
            None => self.totals,
            Some(source) => self.counters_of(source),
        }
    }

    /// Counters of one source as this viewer saw it (zero if never seen).
    pub fn counters_of(&self, source: &LogSource) -> LogCounters {
        self.by_source.get(source).map(|s| s.lane.counters).unwrap_or_default()
    }

    pub fn totals(&self) -> LogCounters {
        self.totals
    }

    /// Lines held for the source shown (all levels).
    pub fn held(&self) -> usize {
        self.lane().lines.len()
    }

    pub fn source_filter(&self) -> Option<&LogSource> {
        self.source_filter.as_ref()
    }

    pub fn level_filter(&self) -> LevelFilter {
        self.level_filter
    }

    pub fn is_following(&self) -> bool {
        self.position == Position::Follow
    }

    /// The selected line's text (the newest one shown while following).
    pub fn selected_text(&self) -> Option<&str> {
        self.current().map(|e| e.line.text.as_str())
    }

    /// While a search is typed or the source picker is open, every key belongs to the pane.
    pub fn is_capturing_input(&self) -> bool {
        self.input.is_some() || self.picker.is_some()
    }

    /// For the pane title: `all · follow`, `qwen-7b · warn+ · paused · /oom`.
    pub fn title_suffix(&self) -> String {
        let mut parts = vec![self.source_filter.as_ref().map_or("all", LogSource::name).to_owned()];
        if self.level_filter != LevelFilter::All {
            parts.push(self.level_filter.label().to_owned());
        }
        parts.push(if self.is_following() { "follow" } else { "paused" }.to_owned());
        if let Some(m) = &self.search {
            let pattern: String = m.pattern().chars().take(24).collect();
            let regex = if m.is_regex() { " (re)" } else { "" };
            parts.push(format!("/{pattern}{regex}"));
        }
        if !self.compact {
            parts.push("raw".to_owned());
        }
        if self.wrap {
            parts.push("wrap".to_owned());
        }
        parts.join(" · ")
    }

    /// Key hints for the footer, for the pane's current mode.
    pub fn footer_keys(&self) -> Vec<&'static str> {
        if self.input.is_some() {
            return vec!["Enter find", "Esc cancel", "Ctrl-R regex", "↑ last search"];
        }
        if self.picker.is_some() {
            return vec!["j/k move", "Enter pick", "Esc cancel"];
        }
        let mut keys = vec!["/ search"];
        if self.search.is_some() {
            keys.push("n/N older/newer match");
        }
        keys.extend(["e/E older/newer error", "s source", "v level"]);
        if !self.is_following() {
            keys.push("F follow");
        }
        keys.extend(["w wrap", "t time", "c raw/compact", "y copy", "o pager"]);
        keys
    }

    fn lane(&self) -> &Lane {
        match &self.source_filter {
            None => &self.all,
            Some(source) => self.by_source.get(source).map_or(&self.empty, |s| &s.lane),
        }
    }

    fn visible(&self) -> Visible<'_> {
        Visible::new(self.lane(), self.level_filter)
    }

    fn current(&self) -> Option<&Entry> {
        let visible = self.visible();
        match self.position {
            Position::Follow => visible.end().checked_sub(1).and_then(|i| visible.get(i)),
            Position::Paused { sel, .. } => visible.get(sel),
        }
    }

    // ----- filters and position ----------------------------------------------------------------

    /// Shows one source (or all). While paused the view stays at the same moment; call
    /// [`LogView::follow`] as well to show the newest lines.
    pub fn set_source_filter(&mut self, source: Option<LogSource>) {
        if let Some(source) = &source {
            self.ensure_source(source);
        }
        self.change_view(|view| view.source_filter = source);
    }

    pub fn set_level_filter(&mut self, filter: LevelFilter) {
        self.change_view(|view| view.level_filter = filter);
    }

    /// Back to following the newest lines.
    pub fn follow(&mut self) {
        self.position = Position::Follow;
    }

    /// Applies a filter change, keeping a paused view at the same moment.
    fn change_view(&mut self, change: impl FnOnce(&mut Self)) {
        let anchor = match self.position {
            Position::Follow => None,
            Position::Paused { sel, top } => {
                let visible = self.visible();
                let seq_of = |i| visible.get(i).map(|e| e.seq);
                seq_of(sel).zip(seq_of(top))
            }
        };
        change(self);
        self.drawn_top = None;
        let Some((sel_seq, top_seq)) = anchor else {
            self.position = Position::Follow;
            return;
        };
        let visible = self.visible();
        if visible.is_empty() {
            self.position = Position::Follow;
            return;
        }
        let sel = visible.at_or_before(sel_seq).unwrap_or(visible.start());
        let top = visible.at_or_before(top_seq).unwrap_or(visible.start()).min(sel);
        self.position = Position::Paused { sel, top };
    }

    /// Keeps a paused position inside what is still held (old lines leave the ring).
    fn clamp_position(&mut self) {
        let visible = self.visible();
        let (start, end) = (visible.start(), visible.end());
        if let Position::Paused { sel, top } = self.position {
            if start == end {
                self.position = Position::Follow;
            } else {
                let sel = sel.clamp(start, end - 1);
                self.position = Position::Paused { sel, top: top.clamp(start, sel) };
            }
        }
    }

    /// Selects line `i`, pausing; the screen stays where it was drawn.
    fn select(&mut self, i: u64) {
        let top = match self.position {
            Position::Paused { top, .. } => top,
            Position::Follow => self.drawn_top.unwrap_or(i),
        };
        self.position = Position::Paused { sel: i, top };
    }

    fn move_by(&mut self, delta: i64) {
        let visible = self.visible();
        let (start, end) = (visible.start(), visible.end());
        if start == end {
            return;
        }
        let from = match self.position {
            // Following is already at the newest line: only a move up pauses.
            Position::Follow if delta >= 0 => return,
            Position::Follow => end - 1,
            Position::Paused { sel, .. } => sel,
        };
        let to = from.saturating_add_signed(delta).clamp(start, end - 1);
        if delta > 0 && to == end - 1 {
            // Scrolling back down to the newest line picks up following again.
            self.position = Position::Follow;
            return;
        }
        self.select(to);
    }

    /// Finds the nearest line satisfying `pred` in `direction`, starting next to the selection
    /// (or at the newest line while following, when looking older), and selects it.
    fn jump(&mut self, direction: Direction, include_current: bool, pred: impl Fn(&Entry) -> bool) -> bool {
        let visible = self.visible();
        let (start, end) = (visible.start(), visible.end());
        if start == end {
            return false;
        }
        let from = match (self.position, direction) {
            (Position::Follow, Direction::Older) => Some(end - 1),
            (Position::Follow, Direction::Newer) => None,
            (Position::Paused { sel, .. }, _) if include_current => Some(sel),
            (Position::Paused { sel, .. }, Direction::Older) => sel.checked_sub(1).filter(|&i| i >= start),
            (Position::Paused { sel, .. }, Direction::Newer) => Some(sel + 1).filter(|&i| i < end),
        };
        let found = from.and_then(|from| match direction {
            Direction::Older => (start..=from).rev().find(|&i| visible.get(i).is_some_and(&pred)),
            Direction::Newer => (from..end).find(|&i| visible.get(i).is_some_and(&pred)),
        });
        match found {
            Some(i) => {
                self.select(i);
                self.recenter = true;
                true
            }
            None => false,
        }
    }

    fn jump_to_match(&mut self, direction: Direction, include_current: bool) {
        let compact = self.compact;
        let Some(matcher) = self.search.take() else {
            self.say("no search: press / to search", false);
            return;
        };
        let found =
            self.jump(direction, include_current, |e| matcher.is_match(&shown_text(&e.line.text, compact, usize::MAX)));
        if !found {
            let which = match direction {
                Direction::Older => "older",
                Direction::Newer => "newer",
            };
            self.say(format!("no {which} match for /{}", matcher.pattern()), false);
        }
        self.search = Some(matcher);
    }

    fn jump_to_error(&mut self, direction: Direction) {
        if !self.jump(direction, false, |e| e.line.is_error()) {
            let which = match direction {
                Direction::Older => "older",
                Direction::Newer => "newer",
            };
            self.say(format!("no {which} error line"), false);
        }
    }

    fn say(&mut self, text: impl Into<String>, bad: bool) {
        self.message = Some(Message { text: text.into(), bad });
    }

    // ----- keys ----------------------------------------------------------------------------------

    pub fn handle_key(&mut self, key: KeyEvent) -> LogViewOutcome {
        if key.kind == KeyEventKind::Release {
            return LogViewOutcome::NotConsumed;
        }
        self.message = None;
        self.clamp_position();
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return LogViewOutcome::NotConsumed;
        }
        if self.input.is_some() {
            self.search_key(key);
            return LogViewOutcome::Consumed;
        }
        if let Some(choice) = self.picker {
            self.picker_key(key, choice);
            return LogViewOutcome::Consumed;
        }
        self.normal_key(key)
    }

    fn normal_key(&mut self, key: KeyEvent) -> LogViewOutcome {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let page = self.page_rows.saturating_sub(1).max(1) as i64;
        match key.code {
            KeyCode::Char('j') | KeyCode::Down if !ctrl => self.move_by(1),
            KeyCode::Char('k') | KeyCode::Up if !ctrl => self.move_by(-1),
            KeyCode::PageDown => self.move_by(page),
            KeyCode::PageUp => self.move_by(-page),
            KeyCode::Char('d') if ctrl => self.move_by(page / 2),
            KeyCode::Char('u') if ctrl => self.move_by(-(page / 2)),
            KeyCode::Char('g') | KeyCode::Home if !ctrl => {
                let start = self.visible().start();
                if !self.visible().is_empty() {
                    self.position = Position::Paused { sel: start, top: start };
                }
            }
            KeyCode::Char('G' | 'F') | KeyCode::End if !ctrl => self.follow(),
            KeyCode::Char('/') if !ctrl => {
                self.search_before_input = self.search.clone();
                self.input = Some(SearchInput::default());
            }
            KeyCode::Char('n') if !ctrl => self.jump_to_match(Direction::Older, false),
            KeyCode::Char('N') if !ctrl => self.jump_to_match(Direction::Newer, false),
            KeyCode::Char('e') if !ctrl => self.jump_to_error(Direction::Older),
            KeyCode::Char('E') if !ctrl => self.jump_to_error(Direction::Newer),
            KeyCode::Char('w') if !ctrl => self.wrap = !self.wrap,
            KeyCode::Char('t') if !ctrl => self.timestamps = !self.timestamps,
            KeyCode::Char('c') if !ctrl => self.compact = !self.compact,
            KeyCode::Char('v') if !ctrl => {
                self.set_level_filter(self.level_filter.raised());
                self.say(format!("showing {}", self.level_filter.label()), false);
            }
            KeyCode::Char('V') if !ctrl => {
                self.set_level_filter(self.level_filter.lowered());
                self.say(format!("showing {}", self.level_filter.label()), false);
            }
            KeyCode::Char('s') if !ctrl => self.open_picker(),
            KeyCode::Char('y') if !ctrl => return self.copy_current(),
            KeyCode::Char('o') if !ctrl => return self.open_in_pager(),
            KeyCode::Esc if self.search.is_some() => self.search = None,
            _ => return LogViewOutcome::NotConsumed,
        }
        LogViewOutcome::Consumed
    }

    fn search_key(&mut self, key: KeyEvent) {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let Some(input) = self.input.as_mut() else {
            return;
        };
        match key.code {
            KeyCode::Esc => {
                self.input = None;
                self.search = self.search_before_input.take();
                return;
            }
            KeyCode::Enter => {
                self.confirm_search();
                return;
            }
            KeyCode::Char('r') if ctrl => self.regex_mode = !self.regex_mode,
            KeyCode::Char('u') if ctrl => input.text.clear(),
            KeyCode::Up => input.text.clone_from(&self.last_pattern),
            KeyCode::Backspace => {
                input.text.pop();
            }
            KeyCode::Char(c) if !ctrl && !key.modifiers.contains(KeyModifiers::ALT) => {
                input.text.push(c);
            }
            _ => return,
        }
        self.preview_search();
    }

    /// Highlights matches while the pattern is typed; an invalid regex shows its error.
    fn preview_search(&mut self) {
        let Some(input) = self.input.as_mut() else {
            return;
        };
        input.error = None;
        if input.text.is_empty() {
            self.search = None;
            return;
        }
        match Matcher::new(&input.text, self.regex_mode) {
            Ok(matcher) => self.search = Some(matcher),
            Err(error) => {
                input.error = Some(error);
                self.search = None;
            }
        }
    }

    fn confirm_search(&mut self) {
        let Some(input) = self.input.as_ref() else {
            return;
        };
        if input.text.is_empty() {
            self.input = None;
            self.search = None;
            self.search_before_input = None;
            return;
        }
        if input.error.is_some() {
            return; // keep the prompt open until the regex is fixed
        }
        self.last_pattern.clone_from(&input.text);
        self.input = None;
        self.search_before_input = None;
        self.jump_to_match(Direction::Older, true);
    }

    fn picker_items(&self) -> Vec<Option<&LogSource>> {
        std::iter::once(None).chain(self.by_source.keys().map(Some)).collect()
    }

    fn open_picker(&mut self) {
        let items = self.picker_items();
        let current = items.iter().position(|item| *item == self.source_filter.as_ref()).unwrap_or(0);
        self.picker = Some(current);
    }

    fn picker_key(&mut self, key: KeyEvent, choice: usize) {
        let last = self.picker_items().len().saturating_sub(1);
        match key.code {
            KeyCode::Char('j') | KeyCode::Down => self.picker = Some((choice + 1).min(last)),
            KeyCode::Char('k') | KeyCode::Up => self.picker = Some(choice.saturating_sub(1)),
            KeyCode::Char('g') | KeyCode::Home => self.picker = Some(0),
            KeyCode::Char('G') | KeyCode::End => self.picker = Some(last),
            KeyCode::Enter => {
                let source = self.picker_items().get(choice).copied().flatten().cloned();
                self.picker = None;
                self.set_source_filter(source);
            }
            KeyCode::Esc | KeyCode::Char('s' | 'q') => self.picker = None,
            _ => {}
        }
    }

    fn copy_current(&mut self) -> LogViewOutcome {
        let Some(entry) = self.current() else {
            self.say("nothing to copy", false);
            return LogViewOutcome::Consumed;
        };
        let text = display_text(&entry.line.text, COPY_BYTES).into_owned();
        let sequence = osc52(&text);
        self.say(format!("copied {} bytes (OSC 52)", text.len()), false);
        LogViewOutcome::Effect(LogEffect::Clipboard(sequence))
    }

    fn open_in_pager(&mut self) -> LogViewOutcome {
        let source = match &self.source_filter {
            Some(source) => Some(source.clone()),
            None => self.current().map(|e| (*e.source).clone()),
        };
        match source {
            Some(source) => LogViewOutcome::Effect(LogEffect::OpenInPager(source)),
            None => {
                self.say("no source to open: no lines yet", false);
                LogViewOutcome::Consumed
            }
        }
    }

    // ----- drawing -------------------------------------------------------------------------------

    /// Draws inside `area` (the app draws the border and title): the lines, then a status row.
    pub fn render(&mut self, frame: &mut Frame, area: Rect, theme: &Theme, focused: bool) {
        self.render_to(frame.buffer_mut(), area, theme, focused);
    }

    /// [`LogView::render`] on a bare buffer.
    pub fn render_to(&mut self, buf: &mut Buffer, area: Rect, theme: &Theme, focused: bool) {
        let area = area.intersection(buf.area);
        if area.is_empty() {
            return;
        }
        self.clamp_position();
        let body = Rect { height: area.height - 1, ..area };
        let status = Rect { y: area.bottom() - 1, height: 1, ..area };
        self.page_rows = usize::from(body.height).max(1);
        self.render_body(buf, body, theme, focused);
        self.render_status(buf, status, theme);
        if let Some(choice) = self.picker {
            self.render_picker(buf, area, theme, choice);
        }
    }

    fn columns(&self, width: u16) -> Columns {
        let width = usize::from(width);
        let mut columns = Columns {
            time: self.timestamps,
            source_width: if self.source_filter.is_none() { self.source_width.max(3) } else { 0 },
            width,
        };
        if columns.text_width() < MIN_TEXT_WIDTH {
            columns.source_width = 0;
        }
        if columns.text_width() < MIN_TEXT_WIDTH {
            columns.time = false;
        }
        columns
    }

    fn render_body(&mut self, buf: &mut Buffer, body: Rect, theme: &Theme, focused: bool) {
        if body.is_empty() {
            return;
        }
        let rows = usize::from(body.height);
        let columns = self.columns(body.width);
        let text_width = columns.text_width().max(1);
        let wrap = self.wrap;
        if self.visible().is_empty() {
            let hint = match (&self.source_filter, self.level_filter) {
                (_, filter) if filter != LevelFilter::All && !self.lane().lines.is_empty() => {
                    format!("no lines at {} (v to change)", filter.label())
                }
                (Some(source), _) => format!("no lines from {} yet", source.name()),
                (None, _) => "no log lines yet".to_owned(),
            };
            buf.set_stringn(body.x, body.y, hint, usize::from(body.width), theme.dim());
            self.drawn_top = None;
            return;
        }
        let (top, skip, selected) = self.layout(rows, text_width);
        if let Position::Paused { sel, .. } = self.position {
            self.position = Position::Paused { sel, top };
        }
        self.recenter = false;
        self.drawn_top = Some(top);
        let visible = self.visible();
        let end = visible.end();

        let mut y = body.y;
        let mut skip = skip;
        let mut i = top;
        while y < body.bottom() && i < end {
            let Some(entry) = visible.get(i) else { break };
            let is_selected = focused && selected == Some(i);
            let style = RowStyle::new(&entry.line, theme);
            let text = shown_text(&entry.line.text, self.compact, DISPLAY_BYTES);
            // Without colour, selection and matches are both reversed: underline matches there.
            let highlight = if is_selected && !theme.color {
                Style::new().remove_modifier(Modifier::REVERSED).add_modifier(Modifier::UNDERLINED | Modifier::BOLD)
            } else {
                theme.highlight()
            };
            let highlights: Vec<Range<usize>> =
                self.search.as_ref().map(|m| m.ranges(&text).collect()).unwrap_or_default();
            let starts = if wrap { row_starts(&text, text_width) } else { vec![0] };
            for (row, &row_start) in starts.iter().enumerate() {
                if skip > 0 {
                    skip -= 1;
                    continue;
                }
                if y >= body.bottom() {
                    break;
                }
                let row_rect = Rect { y, height: 1, ..body };
                if is_selected {
                    buf.set_style(row_rect, theme.selected());
                }
                let text_x = if row == 0 {
                    self.draw_prefix(buf, row_rect, &columns, entry, &style, theme)
                } else {
                    row_rect.x + columns.prefix_width() as u16
                };
                let row_end = starts.get(row + 1).copied().unwrap_or(text.len());
                let text_area = Rect { x: text_x, width: row_rect.right().saturating_sub(text_x), ..row_rect };
                draw_text(buf, text_area, &text, row_start..row_end, style.text, &highlights, highlight);
                y += 1;
            }
            i += 1;
        }
    }

    /// The first line to draw, how many of its rows to skip (following, wrapped), and the
    /// selected line.
    fn layout(&self, rows: usize, text_width: usize) -> (u64, usize, Option<u64>) {
        let visible = self.visible();
        let (wrap, compact) = (self.wrap, self.compact);
        let rows_of = |i: u64| -> usize {
            match visible.get(i) {
                Some(entry) if wrap => {
                    row_starts(&shown_text(&entry.line.text, compact, DISPLAY_BYTES), text_width).len()
                }
                _ => 1,
            }
        };
        let (start, end) = (visible.start(), visible.end());
        match self.position {
            Position::Follow => {
                let (top, total) = fill_back(end - 1, start, rows, rows_of);
                (top, total.saturating_sub(rows), None)
            }
            Position::Paused { sel, top } => {
                (paused_top(sel, top, start, end, rows, self.recenter, rows_of), 0, Some(sel))
            }
        }
    }

    /// Draws time, source and level; returns where the text starts.
    fn draw_prefix(
        &self,
        buf: &mut Buffer,
        row: Rect,
        columns: &Columns,
        entry: &Entry,
        style: &RowStyle,
        theme: &Theme,
    ) -> u16 {
        let mut x = row.x;
        let right = usize::from(row.right());
        let room = |x: u16| right.saturating_sub(usize::from(x));
        if columns.time {
            let clock = self.clock(entry.line.ts);
            buf.set_stringn(x, row.y, &clock, room(x), theme.dim());
            x = x.saturating_add(TIME_WIDTH as u16);
        }
        if columns.source_width > 0 {
            let name: String = entry.source.name().chars().take(columns.source_width).collect();
            buf.set_stringn(x, row.y, &name, room(x), theme.accent());
            x = x.saturating_add(columns.source_width as u16 + 1);
        }
        let (label, level_style) = style.level;
        buf.set_stringn(x, row.y, label, room(x), level_style);
        x.saturating_add(LEVEL_WIDTH as u16).min(row.right())
    }

    fn clock(&self, ts: DateTime<Utc>) -> String {
        let time = match self.utc_offset {
            Some(offset) => ts.with_timezone(&offset).time(),
            None => ts.with_timezone(&Local).time(),
        };
        format!("{:02}:{:02}:{:02}", time.hour(), time.minute(), time.second())
    }

    fn render_status(&self, buf: &mut Buffer, row: Rect, theme: &Theme) {
        let width = usize::from(row.width);
        if let Some(input) = &self.input {
            let mut x = row.x;
            let mut put = |buf: &mut Buffer, text: &str, style: Style| {
                let room = usize::from(row.right().saturating_sub(x));
                x = buf.set_stringn(x, row.y, text, room, style).0;
            };
            put(buf, "/", theme.accent());
            put(buf, &input.text, Style::new());
            put(buf, " ", Style::new().add_modifier(Modifier::REVERSED));
            if self.regex_mode {
                put(buf, "  regex", theme.accent());
            }
            match &input.error {
                Some(error) => put(buf, &format!("  {error}"), theme.bad()),
                None => put(buf, "  Enter find · Esc cancel · ^R regex", theme.dim()),
            }
            return;
        }
        let counters = self.counters();
        let errors = match counters.errors {
            1 => "1 error".to_owned(),
            n => format!("{n} errors"),
        };
        let error_style = if counters.errors > 0 { theme.bad() } else { theme.dim() };
        let dropped = format!(" · {} dropped", counters.dropped);
        let dropped_style = if counters.dropped > 0 { theme.warn() } else { theme.dim() };
        let (x, _) = buf.set_stringn(row.x, row.y, &errors, width, error_style);
        let (x, _) = buf.set_stringn(x, row.y, &dropped, usize::from(row.right().saturating_sub(x)), dropped_style);
        let (right, right_style) = match &self.message {
            Some(message) if message.bad => (message.text.clone(), theme.bad()),
            Some(message) => (message.text.clone(), theme.accent()),
            None if self.is_following() => ("/ search  e next err".to_owned(), theme.dim()),
            None => ("F follow  / search  e next err".to_owned(), theme.dim()),
        };
        let used = usize::from(x - row.x) + 2;
        let right_width = right.width().min(width.saturating_sub(used));
        if right_width > 0 {
            let right_x = row.right() - right_width as u16;
            buf.set_stringn(right_x, row.y, &right, right_width, right_style);
        }
    }

    fn render_picker(&self, buf: &mut Buffer, area: Rect, theme: &Theme, choice: usize) {
        let items = self.picker_items();
        let labels: Vec<String> = items
            .iter()
            .map(|item| match item {
                None => format!("all  {} lines", self.totals.lines),
                Some(source) => {
                    let counters = self.by_source.get(*source).map(|s| s.lane.counters).unwrap_or_default();
                    let errors =
                        if counters.errors > 0 { format!(" · {} err", counters.errors) } else { String::new() };
                    format!("{source}  {} lines{errors}", counters.lines)
                }
            })
            .collect();
        let inner_width = labels.iter().map(|l| l.width()).max().unwrap_or(0) + 2;
        let width = (inner_width as u16 + 2).min(area.width);
        let height = (labels.len() as u16 + 2).min(area.height);
        let popup =
            Rect { x: area.x + (area.width - width) / 2, y: area.y + (area.height - height) / 2, width, height };
        Clear.render(popup, buf);
        let block = Block::bordered().title(" source ").border_style(theme.focused_border());
        let inner = block.inner(popup);
        block.render(popup, buf);
        let shown = usize::from(inner.height);
        if shown == 0 {
            return;
        }
        let first = choice.saturating_sub(shown - 1);
        for (row, (i, label)) in labels.iter().enumerate().skip(first).take(shown).enumerate() {
            let line = Rect { y: inner.y + row as u16, height: 1, ..inner };
            let style = if i == choice { theme.selected() } else { Style::new() };
            buf.set_style(line, style);
            buf.set_stringn(line.x + 1, line.y, label, usize::from(line.width.saturating_sub(1)), style);
        }
    }
}

/// Which columns a row has at a given pane width.
struct Columns {
    time: bool,
    /// 0: no source column.
    source_width: usize,
    width: usize,
}

impl Columns {
    fn prefix_width(&self) -> usize {
        let time = if self.time { TIME_WIDTH } else { 0 };
        let source = if self.source_width > 0 { self.source_width + 1 } else { 0 };
        time + source + LEVEL_WIDTH
    }

    fn text_width(&self) -> usize {
        self.width.saturating_sub(self.prefix_width())
    }
}

struct RowStyle {
    text: Style,
    level: (&'static str, Style),
}

impl RowStyle {
    fn new(line: &LogLine, theme: &Theme) -> Self {
        let level = if line.oom {
            ("OOM", theme.bad())
        } else {
            match line.level {
                None => ("", Style::new()),
                Some(l @ (Level::Trace | Level::Debug)) => (l.label(), theme.dim()),
                Some(l @ Level::Info) => (l.label(), Style::new()),
                Some(l @ Level::Warn) => (l.label(), theme.warn()),
                Some(l @ (Level::Error | Level::Critical)) => (l.label(), theme.bad()),
            }
        };
        let text = if line.is_error() {
            theme.bad()
        } else if matches!(line.level, Some(Level::Trace | Level::Debug)) {
            theme.dim()
        } else {
            Style::new()
        };
        Self { text, level }
    }
}

/// From `last` back towards `start`, the first line to draw so that lines `top..=last` fill
/// `rows` rows (or everything down to `start`). Returns the line and the rows they take, which
/// may exceed `rows` by part of the top line.
fn fill_back(last: u64, start: u64, rows: usize, rows_of: impl Fn(u64) -> usize) -> (u64, usize) {
    let mut top = last;
    let mut total = rows_of(last);
    while total < rows && top > start {
        top -= 1;
        total += rows_of(top);
    }
    (top, total)
}

/// The first line to draw while paused: the previous top if the selection is still fully on
/// screen, else scrolled just enough (or centred on the selection after a jump); and never
/// leaving empty rows at the bottom while older lines exist.
fn paused_top(
    sel: u64,
    top: u64,
    start: u64,
    end: u64,
    rows: usize,
    recenter: bool,
    rows_of: impl Fn(u64) -> usize,
) -> u64 {
    let mut top = top.clamp(start, sel);
    let on_screen = sel - top < rows as u64 && {
        let taken: usize = (top..=sel).map(&rows_of).sum();
        taken <= rows
    };
    if !on_screen {
        top = if recenter {
            fill_whole(sel, start, rows.div_ceil(2), &rows_of)
        } else {
            fill_whole(sel, start, rows, &rows_of)
        };
    } else if sel < top {
        top = sel;
    }
    // Pull older lines in if the newest ones do not fill the screen.
    let mut below = 0;
    let mut i = top;
    while i < end && below < rows {
        below += rows_of(i);
        i += 1;
    }
    if below < rows && top > start {
        top = fill_whole(end - 1, start, rows, &rows_of).min(top);
    }
    top
}

/// Like [`fill_back`], but only lines that fit whole (at least `last` itself).
fn fill_whole(last: u64, start: u64, rows: usize, rows_of: impl Fn(u64) -> usize) -> u64 {
    let mut top = last;
    let mut total = rows_of(last);
    while top > start {
        let more = rows_of(top - 1);
        if total + more > rows {
            break;
        }
        total += more;
        top -= 1;
    }
    top
}

/// Byte offsets where each screen row of `text` starts when wrapped at `width` columns.
pub(super) fn row_starts(text: &str, width: usize) -> Vec<usize> {
    let mut starts = vec![0];
    let mut column = 0;
    for (i, c) in text.char_indices() {
        let w = c.width().unwrap_or(0);
        if column + w > width && column > 0 {
            starts.push(i);
            column = 0;
        }
        column += w;
    }
    starts
}

/// Draws `text[range]` in `area` (one row), with `highlights` (byte ranges into `text`) patched
/// with `highlight`.
fn draw_text(
    buf: &mut Buffer,
    area: Rect,
    text: &str,
    range: Range<usize>,
    base: Style,
    highlights: &[Range<usize>],
    highlight: Style,
) {
    let mut x = area.x;
    let right = area.right();
    let mut put = |buf: &mut Buffer, part: &str, style: Style| {
        if !part.is_empty() && x < right {
            x = buf.set_stringn(x, area.y, part, usize::from(right - x), style).0;
        }
    };
    let mut pos = range.start;
    for hl in highlights {
        if hl.end <= pos {
            continue;
        }
        if hl.start >= range.end {
            break;
        }
        let from = hl.start.max(pos);
        let to = hl.end.min(range.end);
        put(buf, &text[pos..from], base);
        put(buf, &text[from..to], base.patch(highlight));
        pos = to;
    }
    put(buf, &text[pos..range.end], base);
}

/// What a line looks like on screen: what a terminal would show after carriage returns
/// (progress bars), without escape sequences or other control characters, tabs as spaces, at
/// most `max_bytes` (then cut with `…`). Borrowed when nothing needs changing.
pub(super) fn display_text(raw: &str, max_bytes: usize) -> Cow<'_, str> {
    let raw = raw.strip_suffix('\r').unwrap_or(raw);
    let raw = raw.rfind('\r').map_or(raw, |i| &raw[i + 1..]);
    let (raw, cut) = if raw.len() > max_bytes {
        let mut end = max_bytes;
        while !raw.is_char_boundary(end) {
            end -= 1;
        }
        (&raw[..end], true)
    } else {
        (raw, false)
    };
    // 0xC2 starts the C1 controls (U+0080..U+009F); it also starts harmless Latin-1 letters,
    // which only cost the slow path.
    let needs_cleaning = raw.bytes().any(|b| b < 0x20 || b == 0x7f || b == 0xc2);
    if !needs_cleaning && !cut {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len() + CUT_MARK.len());
    if needs_cleaning {
        clean_into(raw, &mut out);
    } else {
        out.push_str(raw);
    }
    if cut {
        out.push_str(CUT_MARK);
    }
    Cow::Owned(out)
}

fn clean_into(raw: &str, out: &mut String) {
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                // CSI: parameters up to a final byte in @..~ (colours, cursor moves).
                Some('[') => {
                    chars.by_ref().find(|c| ('@'..='~').contains(c));
                }
                // OSC: up to BEL or ESC \ (titles, hyperlinks).
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\t' => out.push_str(TAB),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
}

/// What the pane shows of a line: [`display_text`], without the header that repeats the time
/// and level columns when `compact`.
fn shown_text(raw: &str, compact: bool, max_bytes: usize) -> Cow<'_, str> {
    let text = display_text(raw, max_bytes);
    let Some(header) = compact.then(|| redundant_header(&text)).flatten() else {
        return text;
    };
    match text {
        Cow::Borrowed(text) if header.start == 0 => Cow::Borrowed(&text[header.end..]),
        text => Cow::Owned(format!("{}{}", &text[..header.start], &text[header.end..])),
    }
}

/// The OSC 52 sequence that sets the clipboard ("c") to `text`.
fn osc52(text: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(text);
    format!("\x1b]52;c;{encoded}\x07")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::Stream;
    use chrono::TimeZone;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use ratatui::style::Color;

    fn line(sec: u32, level: Option<Level>, text: &str) -> LogLine {
        LogLine {
            ts: Utc.with_ymd_and_hms(2024, 11, 23, 14, 2, sec % 60).single().unwrap_or_default(),
            stream: Stream::Stdout,
            level,
            text: text.to_owned(),
            truncated: false,
            oom: false,
        }
    }

    fn oom_line(sec: u32, text: &str) -> LogLine {
        LogLine { oom: true, ..line(sec, Some(Level::Error), text) }
    }

    fn model(id: &str) -> LogSource {
        LogSource::Model(id.to_owned())
    }

    fn batch(source: &LogSource, lines: Vec<LogLine>) -> LogBatch {
        LogBatch { source: source.clone(), lines, dropped_before: 0 }
    }

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn ch(c: char) -> KeyEvent {
        key(KeyCode::Char(c))
    }

    fn ctrl(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
    }

    fn view_with_lines(n: u32, cap: usize) -> LogView {
        let mut view = LogView::new(cap);
        view.set_utc_offset(FixedOffset::east_opt(0));
        let src = model("m");
        for i in 0..n {
            view.push_batch(&batch(&src, vec![line(i, Some(Level::Info), &format!("line {i}"))]));
        }
        view
    }

    /// The demo screen's sources: a flood of INFO, some warnings, an OOM, a traceback.
    fn demo_view() -> LogView {
        let mut view = LogView::new(1000);
        view.set_utc_offset(FixedOffset::east_opt(0));
        let qwen = model("qwen-7b");
        let llama = model("llama-8b");
        let embed = model("embed-small");
        let test = LogSource::Test("tiny-deploy".into());
        view.push_batch(&batch(
            &qwen,
            vec![
                line(1, Some(Level::Info), "INFO 11-23 14:02:01 [api_server.py:12] Started server process"),
                line(2, Some(Level::Info), "INFO 11-23 14:02:02 [metrics.py:3] Avg prompt throughput: 4.1 tokens/s"),
            ],
        ));
        view.push_batch(&batch(
            &llama,
            vec![
                line(3, Some(Level::Info), "Loading safetensors checkpoint shards 3/4"),
                line(
                    4,
                    Some(Level::Warn),
                    "WARNING 11-23 14:02:04 [config.py:1] Casting torch.bfloat16 to torch.float16",
                ),
            ],
        ));
        view.push_batch(&batch(&test, vec![line(5, Some(Level::Error), "ssh: connection refused, retrying in 2s")]));
        view.push_batch(&batch(
            &embed,
            vec![
                line(6, Some(Level::Error), "Traceback (most recent call last):"),
                line(6, None, "  File \"server.py\", line 12, in <module>"),
                oom_line(7, "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"),
            ],
        ));
        view.push_batch(&batch(
            &qwen,
            vec![
                line(8, Some(Level::Info), "INFO 11-23 14:02:08 [metrics.py:3] Avg prompt throughput: 3.9 tokens/s"),
                line(9, Some(Level::Debug), "DEBUG 11-23 14:02:09 [scheduler.py:7] running: 2 waiting: 0"),
            ],
        ));
        view.push_batch(&batch(
            &llama,
            vec![line(
                10,
                Some(Level::Info),
                "Loading safetensors checkpoint shards 4/4, about to allocate the KV cache",
            )],
        ));
        view
    }

    fn draw(view: &mut LogView, width: u16, height: u16, focused: bool) -> Terminal<TestBackend> {
        let backend = TestBackend::new(width, height);
        let Ok(mut terminal) = Terminal::new(backend);
        let theme = Theme::new(true);
        let Ok(_) = terminal.draw(|f| view.render(f, f.area(), &theme, focused));
        terminal
    }

    /// The screen, each row followed by a marker row where styles matter: `^` search match,
    /// `=` selected row, `!` error style (red).
    fn dump(terminal: &Terminal<TestBackend>) -> String {
        let buf = terminal.backend().buffer();
        let mut out = String::new();
        for y in 0..buf.area.height {
            let mut text = String::new();
            let mut marks = String::new();
            for x in 0..buf.area.width {
                let cell = &buf[(x, y)];
                text.push_str(cell.symbol());
                marks.push(if cell.bg == Color::Yellow {
                    '^'
                } else if cell.bg == Color::DarkGray {
                    '='
                } else if cell.fg == Color::Red {
                    '!'
                } else {
                    ' '
                });
            }
            out.push_str(text.trim_end());
            out.push('\n');
            if !marks.trim().is_empty() {
                out.push_str(marks.trim_end());
                out.push('\n');
            }
        }
        out
    }

    fn row_text(terminal: &Terminal<TestBackend>, y: u16) -> String {
        let buf = terminal.backend().buffer();
        (0..buf.area.width).map(|x| buf[(x, y)].symbol()).collect::<String>().trim_end().to_owned()
    }

    #[test]
    fn snapshot_follow() {
        let mut view = demo_view();
        let terminal = draw(&mut view, 100, 12, true);
        assert_eq!(view.title_suffix(), "all · follow");
        insta::assert_snapshot!(dump(&terminal));
    }

    #[test]
    fn snapshot_paused_with_search_highlights() {
        let mut view = demo_view();
        for c in "/alloc".chars() {
            view.handle_key(ch(c));
        }
        assert!(view.is_capturing_input());
        view.handle_key(key(KeyCode::Enter));
        assert!(!view.is_capturing_input());
        assert!(!view.is_following(), "a search jump pauses");
        assert_eq!(view.title_suffix(), "all · paused · /alloc");
        assert!(view.selected_text().is_some_and(|t| t.ends_with("allocate the KV cache")));
        view.handle_key(ch('n'));
        assert!(view.selected_text().is_some_and(|t| t.starts_with("torch.OutOfMemoryError")));
        let terminal = draw(&mut view, 100, 12, true);
        insta::assert_snapshot!(dump(&terminal));
    }

    #[test]
    fn snapshot_filtered_to_one_source() {
        let mut view = demo_view();
        view.set_source_filter(Some(model("qwen-7b")));
        assert_eq!(view.title_suffix(), "qwen-7b · follow");
        let terminal = draw(&mut view, 100, 8, true);
        insta::assert_snapshot!(dump(&terminal));
    }

    #[test]
    fn snapshot_search_prompt_and_regex_error() {
        let mut view = demo_view();
        view.handle_key(ch('/'));
        view.handle_key(ctrl('r'));
        for c in "shards (".chars() {
            view.handle_key(ch(c));
        }
        let terminal = draw(&mut view, 100, 5, true);
        insta::assert_snapshot!(dump(&terminal));
        // Enter on an invalid regex keeps the prompt open; fixing it finds the line.
        view.handle_key(key(KeyCode::Enter));
        assert!(view.is_capturing_input());
        view.handle_key(ch('3'));
        view.handle_key(ch(')'));
        view.handle_key(key(KeyCode::Enter));
        assert!(!view.is_capturing_input());
        assert_eq!(view.selected_text(), Some("Loading safetensors checkpoint shards 3/4"));
    }

    #[test]
    fn snapshot_wrap_and_source_picker() {
        let mut view = demo_view();
        view.handle_key(ch('w'));
        let terminal = draw(&mut view, 60, 10, true);
        insta::assert_snapshot!("wrap", dump(&terminal));
        view.handle_key(ch('s'));
        assert!(view.is_capturing_input());
        let terminal = draw(&mut view, 60, 10, true);
        insta::assert_snapshot!("picker", dump(&terminal));
        view.handle_key(ch('j'));
        view.handle_key(ch('j'));
        view.handle_key(key(KeyCode::Enter));
        assert_eq!(view.source_filter(), Some(&model("llama-8b")));
        assert!(!view.is_capturing_input());
    }

    #[test]
    fn ring_bounds_and_drop_counter() {
        let mut view = LogView::new(100);
        let a = model("a");
        let b = model("b");
        for i in 0..50 {
            let lines = (0..10).map(|j| line(j, None, &format!("a {i} {j}"))).collect();
            view.push_owned(LogBatch { source: a.clone(), lines, dropped_before: 3 });
        }
        view.push_batch(&batch(&b, vec![line(0, Some(Level::Error), "b")]));
        view.note_lagged(7);
        assert_eq!(view.held(), 100, "the all ring stays at its bound");
        let totals = view.totals();
        assert_eq!(totals.lines, 501);
        assert_eq!(totals.dropped, 50 * 3 + 7);
        assert_eq!(totals.errors, 1);
        view.set_source_filter(Some(a.clone()));
        assert_eq!(view.held(), 100);
        assert_eq!(view.counters().dropped, 150, "lag is not any one source's");
        view.set_source_filter(Some(b.clone()));
        assert_eq!(view.held(), 1, "b's ring keeps its line however much a prints");
        assert_eq!(view.counters().errors, 1);
        let terminal = draw(&mut view, 80, 3, true);
        assert!(row_text(&terminal, 2).starts_with("1 error · 0 dropped"));
        view.set_source_filter(None);
        let terminal = draw(&mut view, 80, 3, true);
        assert!(row_text(&terminal, 2).starts_with("1 error · 157 dropped"), "{}", row_text(&terminal, 2));
    }

    #[test]
    fn level_filter_indices_stay_bounded_and_in_step() {
        let mut view = LogView::new(10);
        let src = model("m");
        for i in 0..1000 {
            let level = if i % 7 == 0 { Level::Warn } else { Level::Debug };
            view.push_batch(&batch(&src, vec![line(i, Some(level), &format!("{i}"))]));
        }
        for kept in &view.all.kept {
            assert!(kept.len() <= 10);
            assert!(kept.front().is_none_or(|&i| i >= view.all.lines.start()));
        }
        view.set_level_filter(LevelFilter::Warn);
        let visible = view.visible();
        let shown: Vec<&str> =
            (visible.start()..visible.end()).filter_map(|i| visible.get(i)).map(|e| e.line.text.as_str()).collect();
        // The last 10 lines are 990..=999; of those only 994 is a warning.
        assert_eq!(shown, vec!["994"]);
    }

    #[test]
    fn follow_pause_and_resume() {
        let mut view = view_with_lines(100, 1000);
        let terminal = draw(&mut view, 60, 6, true);
        assert!(row_text(&terminal, 4).ends_with("line 99"));
        assert!(view.is_following());
        view.handle_key(ch('k'));
        assert!(!view.is_following(), "scrolling up pauses");
        assert_eq!(view.selected_text(), Some("line 98"));
        let src = model("m");
        view.push_batch(&batch(&src, vec![line(0, None, "new line")]));
        let terminal = draw(&mut view, 60, 6, true);
        assert!(row_text(&terminal, 4).ends_with("line 99"), "paused: the screen stays");
        assert_eq!(view.selected_text(), Some("line 98"));
        view.handle_key(ch('F'));
        assert!(view.is_following());
        let terminal = draw(&mut view, 60, 6, true);
        assert!(row_text(&terminal, 4).ends_with("new line"));
        view.handle_key(ch('g'));
        assert_eq!(view.selected_text(), Some("line 0"));
        view.handle_key(key(KeyCode::PageDown));
        let terminal = draw(&mut view, 60, 6, true);
        assert_eq!(view.selected_text(), Some("line 4"), "a page is the rows shown, less one");
        assert!(row_text(&terminal, 0).ends_with("line 0"));
        view.handle_key(ch('G'));
        assert!(view.is_following());
    }

    #[test]
    fn moving_down_never_pauses_and_reaching_the_newest_line_follows_again() {
        let mut view = view_with_lines(10, 100);
        view.handle_key(ch('j'));
        view.handle_key(key(KeyCode::PageDown));
        assert!(view.is_following(), "down at the newest line keeps following");
        view.handle_key(ch('k'));
        view.handle_key(ch('k'));
        assert_eq!(view.selected_text(), Some("line 7"));
        view.handle_key(ch('j'));
        assert_eq!(view.selected_text(), Some("line 8"), "still paused one line short of the newest");
        view.handle_key(ch('j'));
        assert!(view.is_following(), "back at the newest line: following again");
    }

    #[test]
    fn paused_selection_survives_eviction() {
        let mut view = view_with_lines(10, 10);
        view.handle_key(ch('g'));
        assert_eq!(view.selected_text(), Some("line 0"));
        let src = model("m");
        for i in 0..5 {
            view.push_batch(&batch(&src, vec![line(i, None, &format!("more {i}"))]));
        }
        view.handle_key(ch('j'));
        assert_eq!(view.selected_text(), Some("line 6"), "clamped to the oldest held, then moved");
    }

    #[test]
    fn error_jumps_go_back_from_the_newest() {
        let mut view = demo_view();
        view.handle_key(ch('e'));
        assert!(view.selected_text().is_some_and(|t| t.starts_with("torch.OutOfMemoryError")));
        view.handle_key(ch('e'));
        assert_eq!(view.selected_text(), Some("Traceback (most recent call last):"));
        view.handle_key(ch('e'));
        assert_eq!(view.selected_text(), Some("ssh: connection refused, retrying in 2s"));
        view.handle_key(ch('e'));
        assert_eq!(view.selected_text(), Some("ssh: connection refused, retrying in 2s"), "none older: stays");
        let terminal = draw(&mut view, 80, 4, true);
        assert!(row_text(&terminal, 3).ends_with("no older error line"));
        view.handle_key(ch('E'));
        assert_eq!(view.selected_text(), Some("Traceback (most recent call last):"));
    }

    #[test]
    fn search_next_and_previous() {
        let mut view = demo_view();
        for c in "/throughput".chars() {
            view.handle_key(ch(c));
        }
        view.handle_key(key(KeyCode::Enter));
        assert!(view.selected_text().is_some_and(|t| t.contains("3.9 tokens/s")));
        view.handle_key(ch('n'));
        assert!(view.selected_text().is_some_and(|t| t.contains("4.1 tokens/s")));
        view.handle_key(ch('n'));
        assert!(view.selected_text().is_some_and(|t| t.contains("4.1 tokens/s")));
        view.handle_key(ch('N'));
        assert!(view.selected_text().is_some_and(|t| t.contains("3.9 tokens/s")));
        // Esc clears the search; `/` then Esc restores it.
        view.handle_key(ch('/'));
        view.handle_key(ch('x'));
        view.handle_key(key(KeyCode::Esc));
        assert!(view.title_suffix().ends_with("/throughput"));
        assert_eq!(view.handle_key(key(KeyCode::Esc)), LogViewOutcome::Consumed);
        assert!(!view.title_suffix().contains('/'));
        assert_eq!(view.handle_key(key(KeyCode::Esc)), LogViewOutcome::NotConsumed);
        // ↑ recalls the last pattern.
        view.handle_key(ch('/'));
        view.handle_key(key(KeyCode::Up));
        view.handle_key(key(KeyCode::Enter));
        assert!(view.title_suffix().ends_with("/throughput"));
    }

    #[test]
    fn filters_keep_a_paused_position_in_time() {
        let mut view = demo_view();
        view.handle_key(ch('e'));
        view.handle_key(ch('e')); // the traceback
        view.handle_key(ch('j'));
        assert_eq!(view.selected_text(), Some("  File \"server.py\", line 12, in <module>"));
        view.handle_key(ch('v'));
        view.handle_key(ch('v'));
        assert_eq!(view.level_filter(), LevelFilter::Warn);
        // That line has no level (counts as INFO): the nearest older kept line is selected.
        assert_eq!(view.selected_text(), Some("Traceback (most recent call last):"));
        view.handle_key(ch('V'));
        view.handle_key(ch('V'));
        assert_eq!(view.level_filter(), LevelFilter::All);
        view.set_source_filter(Some(model("llama-8b")));
        assert!(view.selected_text().is_some_and(|t| t.starts_with("WARNING")));
        view.follow();
        assert!(view.selected_text().is_some_and(|t| t.ends_with("KV cache")));
    }

    #[test]
    fn copy_gives_an_osc52_sequence() {
        let mut view = demo_view();
        let outcome = view.handle_key(ch('y'));
        let expected = osc52("Loading safetensors checkpoint shards 4/4, about to allocate the KV cache");
        assert_eq!(outcome, LogViewOutcome::Effect(LogEffect::Clipboard(expected.clone())));
        assert!(expected.starts_with("\x1b]52;c;TG9hZGluZy"));
        assert!(expected.ends_with('\x07'));
    }

    #[test]
    fn pager_opens_the_source_shown_or_selected() {
        let mut view = demo_view();
        assert_eq!(view.handle_key(ch('o')), LogViewOutcome::Effect(LogEffect::OpenInPager(model("llama-8b"))));
        view.handle_key(ch('e'));
        assert_eq!(view.handle_key(ch('o')), LogViewOutcome::Effect(LogEffect::OpenInPager(model("embed-small"))));
        let mut empty = LogView::new(10);
        assert_eq!(empty.handle_key(ch('o')), LogViewOutcome::Consumed);
    }

    #[test]
    fn global_keys_are_not_consumed() {
        let mut view = demo_view();
        for k in [ch('q'), ch('1'), ch('?'), ch('z'), ch('l'), key(KeyCode::Tab), ctrl('c')] {
            assert_eq!(view.handle_key(k), LogViewOutcome::NotConsumed, "{k:?}");
        }
        view.handle_key(ch('/'));
        assert_eq!(view.handle_key(ch('q')), LogViewOutcome::Consumed, "typing a search");
        assert_eq!(view.handle_key(ctrl('c')), LogViewOutcome::NotConsumed);
    }

    #[test]
    fn seed_merges_sources_by_time_and_resets() {
        let mut view = view_with_lines(5, 100);
        view.set_source_filter(Some(model("shown")));
        view.set_source_filter(None);
        let mut tail = BTreeMap::new();
        tail.insert(model("b"), vec![line(2, None, "b2"), line(4, None, "b4")]);
        tail.insert(model("a"), vec![line(1, None, "a1"), line(3, Some(Level::Error), "a3")]);
        tail.insert(model("idle"), vec![]);
        view.seed(&tail);
        let order: Vec<&str> = view.all.lines.iter().map(|e| e.line.text.as_str()).collect();
        assert_eq!(order, vec!["a1", "b2", "a3", "b4"]);
        assert_eq!(view.totals(), LogCounters { lines: 4, dropped: 0, errors: 1 });
        assert!(view.by_source.contains_key(&model("idle")), "known sources are pickable");
        assert!(!view.by_source.contains_key(&model("m")));
        assert!(!view.by_source.contains_key(&model("shown")));
        view.set_source_filter(Some(model("a")));
        view.seed(&tail);
        assert_eq!(view.source_filter(), Some(&model("a")), "the filter survives a resync");
        assert_eq!(view.held(), 2);
    }

    #[test]
    fn frame_draws_only_visible_lines_even_with_filters() {
        let mut view = LogView::new(50_000);
        let src = model("m");
        let lines = (0..50_000).map(|i| line(i, Some(Level::Debug), "debug noise")).collect();
        view.push_owned(batch(&src, lines));
        view.push_batch(&batch(&src, vec![line(0, Some(Level::Error), "the one")]));
        view.set_level_filter(LevelFilter::Error);
        let terminal = draw(&mut view, 60, 4, true);
        assert!(row_text(&terminal, 0).ends_with("the one"));
    }

    #[test]
    fn compact_hides_repeated_headers_and_c_shows_raw_lines() {
        let mut view = demo_view();
        view.set_source_filter(Some(model("qwen-7b")));
        let terminal = draw(&mut view, 80, 3, true);
        assert_eq!(row_text(&terminal, 1), "14:02:09 DEBUG running: 2 waiting: 0");
        view.handle_key(ch('c'));
        assert_eq!(view.title_suffix(), "qwen-7b · follow · raw");
        let terminal = draw(&mut view, 80, 3, true);
        assert_eq!(
            row_text(&terminal, 1),
            "14:02:09 DEBUG DEBUG 11-23 14:02:09 [scheduler.py:7] running: 2 waiting: 0"
        );
        // Search looks at what is shown.
        for c in "/scheduler.py\n".chars() {
            view.handle_key(if c == '\n' { key(KeyCode::Enter) } else { ch(c) });
        }
        assert!(view.selected_text().is_some_and(|t| t.contains("scheduler.py")));
        view.handle_key(ch('c'));
        view.handle_key(ch('n'));
        assert!(view.message.as_ref().is_some_and(|m| m.text.starts_with("no older match")));
    }

    #[test]
    fn display_text_makes_lines_safe_to_draw() {
        assert_eq!(display_text("plain", 100), Cow::Borrowed("plain"));
        assert_eq!(display_text("\x1b[31mred\x1b[0m text", 100), "red text");
        assert_eq!(display_text("a\tb", 100), "a    b");
        assert_eq!(display_text("10%\r50%\r100% done", 100), "100% done");
        assert_eq!(display_text("line\r", 100), "line");
        assert_eq!(display_text("bell\x07 c1\u{9b}x", 100), "bell\u{fffd} c1\u{fffd}x");
        assert_eq!(display_text("\x1b]8;;http://x\x1b\\link\x1b]8;;\x07", 100), "link");
        assert_eq!(display_text("héllo wörld", 100), "héllo wörld");
        assert_eq!(display_text("ééé", 3), "é…", "cut at a character boundary");
    }

    #[test]
    fn wrapping_splits_at_the_width_and_respects_wide_characters() {
        assert_eq!(row_starts("abcdef", 3), vec![0, 3]);
        assert_eq!(row_starts("", 3), vec![0]);
        assert_eq!(row_starts("ab日本", 3), vec![0, 2, 5]);
    }

    #[test]
    fn narrow_panes_drop_columns_before_text() {
        let mut view = demo_view();
        let terminal = draw(&mut view, 40, 3, true);
        let row = row_text(&terminal, 1);
        assert!(row.starts_with("14:02:10 INFO  Loading"), "{row}");
        let terminal = draw(&mut view, 28, 3, true);
        assert!(row_text(&terminal, 1).starts_with("INFO  Loading"));
        view.handle_key(ch('t'));
        let terminal = draw(&mut view, 80, 3, true);
        assert!(row_text(&terminal, 1).starts_with("llama-8b    INFO  Loading"));
    }
}
