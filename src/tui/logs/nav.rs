//! Where the view stands (following the newest line, or paused on one), the filters, and
//! moving: lines, pages, jumps to matches and errors.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Position {
    /// Show the newest lines as they come.
    Follow,
    /// Stay put: `sel` is the selected line, `top` the first line drawn.
    Paused { sel: u64, top: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Direction {
    Older,
    Newer,
}

/// Where the view stands and how the last frame was laid out.
#[derive(Debug)]
pub(super) struct Nav {
    pub(super) position: Position,
    /// First line drawn in the last frame, so pausing keeps the screen still.
    pub(super) drawn_top: Option<u64>,
    /// The next frame puts the selection mid-screen if it is off-screen (after a jump).
    pub(super) recenter: bool,
    pub(super) page_rows: usize,
}

impl Default for Nav {
    fn default() -> Self {
        Self { position: Position::Follow, drawn_top: None, recenter: false, page_rows: 10 }
    }
}

impl LogView {
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
        self.nav.position = Position::Follow;
    }

    /// Applies a filter change, keeping a paused view at the same moment.
    pub(super) fn change_view(&mut self, change: impl FnOnce(&mut Self)) {
        let anchor = match self.nav.position {
            Position::Follow => None,
            Position::Paused { sel, top } => {
                let visible = self.visible();
                let seq_of = |i| visible.get(i).map(|e| e.seq);
                seq_of(sel).zip(seq_of(top))
            }
        };
        change(self);
        self.nav.drawn_top = None;
        let Some((sel_seq, top_seq)) = anchor else {
            self.nav.position = Position::Follow;
            return;
        };
        let visible = self.visible();
        if visible.is_empty() {
            self.nav.position = Position::Follow;
            return;
        }
        let sel = visible.at_or_before(sel_seq).unwrap_or(visible.start());
        let top = visible.at_or_before(top_seq).unwrap_or(visible.start()).min(sel);
        self.nav.position = Position::Paused { sel, top };
    }

    /// Keeps a paused position inside what is still held (old lines leave the ring).
    pub(super) fn clamp_position(&mut self) {
        let visible = self.visible();
        let (start, end) = (visible.start(), visible.end());
        if let Position::Paused { sel, top } = self.nav.position {
            if start == end {
                self.nav.position = Position::Follow;
            } else {
                let sel = sel.clamp(start, end - 1);
                self.nav.position = Position::Paused { sel, top: top.clamp(start, sel) };
            }
        }
    }

    /// Selects line `i`, pausing; the screen stays where it was drawn.
    pub(super) fn select(&mut self, i: u64) {
        let top = match self.nav.position {
            Position::Paused { top, .. } => top,
            Position::Follow => self.nav.drawn_top.unwrap_or(i),
        };
        self.nav.position = Position::Paused { sel: i, top };
    }

    pub(super) fn move_by(&mut self, delta: i64) {
        let visible = self.visible();
        let (start, end) = (visible.start(), visible.end());
        if start == end {
            return;
        }
        let from = match self.nav.position {
            // Following is already at the newest line: only a move up pauses.
            Position::Follow if delta >= 0 => return,
            Position::Follow => end - 1,
            Position::Paused { sel, .. } => sel,
        };
        let to = from.saturating_add_signed(delta).clamp(start, end - 1);
        if delta > 0 && to == end - 1 {
            // Scrolling back down to the newest line picks up following again.
            self.nav.position = Position::Follow;
            return;
        }
        self.select(to);
    }

    /// Finds the nearest line satisfying `pred` in `direction`, starting next to the selection
    /// (or at the newest line while following, when looking older), and selects it.
    pub(super) fn jump(&mut self, direction: Direction, include_current: bool, pred: impl Fn(&Entry) -> bool) -> bool {
        let visible = self.visible();
        let (start, end) = (visible.start(), visible.end());
        if start == end {
            return false;
        }
        let from = match (self.nav.position, direction) {
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
                self.nav.recenter = true;
                true
            }
            None => false,
        }
    }

    pub(super) fn jump_to_match(&mut self, direction: Direction, include_current: bool) {
        let compact = self.display.compact;
        let Some(matcher) = self.find.search.take() else {
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
        self.find.search = Some(matcher);
    }

    pub(super) fn jump_to_error(&mut self, direction: Direction) {
        if !self.jump(direction, false, |e| e.line.is_error()) {
            let which = match direction {
                Direction::Older => "older",
                Direction::Newer => "newer",
            };
            self.say(format!("no {which} error line"), false);
        }
    }

    pub(super) fn say(&mut self, text: impl Into<String>, bad: bool) {
        self.message = Some(Message { text: text.into(), bad });
    }
}
