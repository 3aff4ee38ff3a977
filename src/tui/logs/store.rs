//! The lines this viewer holds: one bounded lane across all sources and one per source, each
//! with an index of the lines every level filter keeps, and the counters.

use super::*;

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

    pub(super) fn slot(self) -> Option<usize> {
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

    pub(super) fn raised(self) -> Self {
        match self {
            LevelFilter::All => LevelFilter::Info,
            LevelFilter::Info => LevelFilter::Warn,
            LevelFilter::Warn => LevelFilter::Error,
            LevelFilter::Error => LevelFilter::All,
        }
    }

    pub(super) fn lowered(self) -> Self {
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

/// What one held line costs beside its text (the entry, the lane slots, the indices).
const ENTRY_OVERHEAD_BYTES: usize = 160;

/// One held line. Shared between the "all" lane and its source's lane.
#[derive(Debug)]
pub(super) struct Entry {
    /// Arrival order in this viewer, across sources: maps positions between lanes and filters.
    pub(super) seq: u64,
    pub(super) source: Arc<LogSource>,
    pub(super) line: LogLine,
}

/// A bounded ring of lines plus, for each level filter, the indices of the lines it keeps.
#[derive(Debug)]
pub(super) struct Lane {
    pub(super) lines: Ring<Arc<Entry>>,
    pub(super) kept: [Ring<u64>; 3],
    pub(super) counters: LogCounters,
}

impl Lane {
    pub(super) fn new(cap: usize) -> Self {
        Self {
            lines: Ring::new(cap),
            kept: [Ring::new(cap), Ring::new(cap), Ring::new(cap)],
            counters: LogCounters::default(),
        }
    }

    /// Adds a line; the one that had to make room, if any.
    pub(super) fn push(&mut self, entry: Arc<Entry>) -> Option<Arc<Entry>> {
        let index = self.lines.end();
        for (kept, filter) in self.kept.iter_mut().zip(LevelFilter::INDEXED) {
            if filter.passes(&entry.line) {
                kept.push(index);
            }
        }
        let evicted = self.lines.push(entry);
        self.forget_evicted_indices();
        evicted
    }

    /// Removes the oldest line (for the byte budget).
    pub(super) fn pop_oldest(&mut self) -> Option<Arc<Entry>> {
        let evicted = self.lines.pop_front();
        self.forget_evicted_indices();
        evicted
    }

    fn forget_evicted_indices(&mut self) {
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
pub(super) struct Visible<'a> {
    pub(super) lane: &'a Lane,
    pub(super) kept: Option<&'a Ring<u64>>,
}

impl<'a> Visible<'a> {
    pub(super) fn new(lane: &'a Lane, filter: LevelFilter) -> Self {
        let kept = filter.slot().map(|slot| &lane.kept[slot]);
        Self { lane, kept }
    }

    pub(super) fn start(&self) -> u64 {
        self.kept.map_or(self.lane.lines.start(), Ring::start)
    }

    pub(super) fn end(&self) -> u64 {
        self.kept.map_or(self.lane.lines.end(), Ring::end)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.start() == self.end()
    }

    pub(super) fn get(&self, i: u64) -> Option<&'a Entry> {
        let index = match self.kept {
            Some(kept) => *kept.get_abs(i)?,
            None => i,
        };
        self.lane.lines.get_abs(index).map(|e| &**e)
    }

    /// The index of the last line that arrived at or before `seq`.
    pub(super) fn at_or_before(&self, seq: u64) -> Option<u64> {
        let lines = &self.lane.lines;
        let after = match self.kept {
            Some(kept) => kept.partition_point(|&i| lines.get_abs(i).is_some_and(|e| e.seq <= seq)),
            None => lines.partition_point(|e| e.seq <= seq),
        };
        (after > self.start()).then(|| after - 1)
    }
}

#[derive(Debug)]
pub(super) struct SourceLane {
    pub(super) source: Arc<LogSource>,
    pub(super) lane: Lane,
}

/// The Logs pane component.
/// Every lane and the counters.
#[derive(Debug)]
pub(super) struct Store {
    pub(super) cap: usize,
    pub(super) all: Lane,
    pub(super) by_source: BTreeMap<LogSource, SourceLane>,
    /// Stands in for a filtered source that has no lane (never pushed to).
    pub(super) empty: Lane,
    pub(super) totals: LogCounters,
    /// Lines this viewer missed because it fell behind the engine (part of `totals.dropped`).
    pub(super) lagged: u64,
    pub(super) next_seq: u64,
    pub(super) source_width: usize,
    /// What the held lines cost (text and overhead), across every lane, each line once.
    pub(super) bytes_held: usize,
    /// The most they may cost: past it the oldest lines go, whatever the line counts.
    pub(super) budget_bytes: usize,
}

impl Store {
    pub(super) fn new(ring_lines: usize) -> Self {
        Self {
            cap: ring_lines.max(1),
            all: Lane::new(ring_lines),
            by_source: BTreeMap::new(),
            empty: Lane::new(1),
            totals: LogCounters::default(),
            lagged: 0,
            next_seq: 0,
            source_width: 0,
            bytes_held: 0,
            budget_bytes: DEFAULT_MEMORY_BYTES,
        }
    }

    /// A line left a lane: when no lane holds it any more, its bytes are free.
    fn release(&mut self, evicted: Option<Arc<Entry>>) {
        if let Some(entry) = evicted
            && Arc::strong_count(&entry) == 1
        {
            self.bytes_held = self.bytes_held.saturating_sub(entry_cost(&entry));
        }
    }

    /// Drops the oldest lines (by arrival, across lanes) until the held ones fit the budget.
    fn fit_budget(&mut self) {
        while self.bytes_held > self.budget_bytes {
            let oldest = std::iter::once(&self.all)
                .chain(self.by_source.values().map(|s| &s.lane))
                .filter_map(|lane| lane.lines.front().map(|e| e.seq))
                .min();
            let Some(oldest) = oldest else { return };
            let evicted =
                self.all.lines.front().is_some_and(|e| e.seq == oldest).then(|| self.all.pop_oldest()).flatten();
            self.release(evicted);
            let fronts: Vec<LogSource> = self
                .by_source
                .iter()
                .filter(|(_, s)| s.lane.lines.front().is_some_and(|e| e.seq == oldest))
                .map(|(source, _)| source.clone())
                .collect();
            for source in fronts {
                let evicted = self.by_source.get_mut(&source).and_then(|s| s.lane.pop_oldest());
                self.release(evicted);
            }
        }
    }
}

/// What the Logs pane may hold in memory, unless configured (`logs.memory_mb`).
pub const DEFAULT_MEMORY_BYTES: usize = 128 << 20;

fn entry_cost(entry: &Entry) -> usize {
    entry.line.text.len() + ENTRY_OVERHEAD_BYTES
}

impl LogView {
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
        self.store.lagged += n;
        self.store.totals.dropped += n;
    }

    /// Starts again from a snapshot's tail (the last lines of each source): earlier lines and
    /// counters are forgotten, lines are merged by time, and the view follows again.
    pub fn seed(&mut self, tail: &BTreeMap<LogSource, Vec<LogLine>>) {
        self.store.all = Lane::new(self.store.cap);
        self.store.by_source.clear();
        self.store.bytes_held = 0;
        self.store.totals = LogCounters::default();
        self.store.lagged = 0;
        self.nav.position = Position::Follow;
        self.nav.drawn_top = None;
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

    pub(super) fn ensure_source(&mut self, source: &LogSource) {
        if !self.store.by_source.contains_key(source) {
            let lane = SourceLane { source: Arc::new(source.clone()), lane: Lane::new(self.store.cap) };
            self.store.by_source.insert(source.clone(), lane);
            let width = source.name().chars().count().min(MAX_SOURCE_WIDTH);
            self.store.source_width = self.store.source_width.max(width);
        }
    }

    pub(super) fn ingest(&mut self, source: &LogSource, dropped_before: u64, lines: impl IntoIterator<Item = LogLine>) {
        self.ensure_source(source);
        let store = &mut self.store;
        let Some(shared_source) = store.by_source.get(source).map(|s| Arc::clone(&s.source)) else {
            return;
        };
        store.totals.dropped += dropped_before;
        if let Some(lane) = store.by_source.get_mut(source) {
            lane.lane.counters.dropped += dropped_before;
        }
        for line in lines {
            let errors = u64::from(line.is_error());
            let entry = Arc::new(Entry { seq: store.next_seq, source: Arc::clone(&shared_source), line });
            store.next_seq += 1;
            store.bytes_held += entry_cost(&entry);
            let from_source = store.by_source.get_mut(source).and_then(|SourceLane { lane, .. }| {
                lane.counters.lines += 1;
                lane.counters.errors += errors;
                lane.push(Arc::clone(&entry))
            });
            store.totals.lines += 1;
            store.totals.errors += errors;
            let from_all = store.all.push(entry);
            store.release(from_source);
            store.release(from_all);
            store.fit_budget();
        }
    }

    /// Caps what the held lines may cost in memory (`logs.memory_mb`), across every source.
    pub fn set_memory_budget(&mut self, bytes: usize) {
        self.store.budget_bytes = bytes.max(1);
        self.store.fit_budget();
    }

    /// What the held lines cost now (bytes, each line once).
    pub fn bytes_held(&self) -> usize {
        self.store.bytes_held
    }

    // ----- reading ---------------------------------------------------------------------------

    /// Counters of the source shown (or of all sources, including lines this viewer lagged on).
    pub fn counters(&self) -> LogCounters {
        match &self.source_filter {
            None => self.store.totals,
            Some(source) => self.counters_of(source),
        }
    }

    /// Counters of one source as this viewer saw it (zero if never seen).
    pub fn counters_of(&self, source: &LogSource) -> LogCounters {
        self.store.by_source.get(source).map(|s| s.lane.counters).unwrap_or_default()
    }

    pub fn totals(&self) -> LogCounters {
        self.store.totals
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
        self.nav.position == Position::Follow
    }

    /// The selected line's text (the newest one shown while following).
    pub fn selected_text(&self) -> Option<&str> {
        self.current().map(|e| e.line.text.as_str())
    }

    /// While a search is typed or the source picker is open, every key belongs to the pane.
    pub fn is_capturing_input(&self) -> bool {
        self.find.input.is_some() || self.picker.is_some()
    }

    /// For the pane title: `all · follow`, `qwen-7b · warn+ · paused · /oom`.
    pub fn title_suffix(&self) -> String {
        let mut parts = vec![self.source_filter.as_ref().map_or("all", LogSource::name).to_owned()];
        if self.level_filter != LevelFilter::All {
            parts.push(self.level_filter.label().to_owned());
        }
        parts.push(if self.is_following() { "follow" } else { "paused" }.to_owned());
        if let Some(m) = &self.find.search {
            let pattern: String = m.pattern().chars().take(24).collect();
            let regex = if m.is_regex() { " (re)" } else { "" };
            parts.push(format!("/{pattern}{regex}"));
        }
        if !self.display.compact {
            parts.push("raw".to_owned());
        }
        if self.display.wrap {
            parts.push("wrap".to_owned());
        }
        parts.join(" · ")
    }

    /// Key hints for the footer, for the pane's current mode.
    pub fn footer_keys(&self) -> Vec<&'static str> {
        if self.find.input.is_some() {
            return vec!["Enter find", "Esc cancel", "Ctrl-R regex", "↑ last search"];
        }
        if self.picker.is_some() {
            return vec!["j/k move", "Enter pick", "Esc cancel"];
        }
        let mut keys = vec!["/ search"];
        if self.find.search.is_some() {
            keys.push("n/N older/newer match");
        }
        keys.extend(["e/E older/newer error", "s source", "v level"]);
        if !self.is_following() {
            keys.push("F follow");
        }
        keys.extend(["w wrap", "t time", "c raw/compact", "y copy", "o pager"]);
        keys
    }

    pub(super) fn lane(&self) -> &Lane {
        match &self.source_filter {
            None => &self.store.all,
            Some(source) => self.store.by_source.get(source).map_or(&self.store.empty, |s| &s.lane),
        }
    }

    pub(super) fn visible(&self) -> Visible<'_> {
        Visible::new(self.lane(), self.level_filter)
    }

    pub(super) fn current(&self) -> Option<&Entry> {
        let visible = self.visible();
        match self.nav.position {
            Position::Follow => visible.end().checked_sub(1).and_then(|i| visible.get(i)),
            Position::Paused { sel, .. } => visible.get(sel),
        }
    }
}
