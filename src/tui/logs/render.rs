//! Drawing: only the lines on screen, with wrap, timestamps, highlights and the status row.

use super::*;

/// How lines are shown.
#[derive(Debug)]
pub(super) struct Display {
    pub(super) wrap: bool,
    pub(super) timestamps: bool,
    /// Hide line headers that repeat the time and level columns (vLLM, uvicorn, tracing).
    pub(super) compact: bool,
    /// `None`: local time. Tests fix it.
    pub(super) utc_offset: Option<FixedOffset>,
}

impl Default for Display {
    fn default() -> Self {
        Self { wrap: false, timestamps: true, compact: true, utc_offset: None }
    }
}

impl LogView {
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
        self.nav.page_rows = usize::from(body.height).max(1);
        self.render_body(buf, body, theme, focused);
        self.render_status(buf, status, theme);
        if let Some(choice) = self.picker {
            self.render_picker(buf, area, theme, choice);
        }
    }

    pub(super) fn columns(&self, width: u16) -> Columns {
        let width = usize::from(width);
        let mut columns = Columns {
            time: self.display.timestamps,
            source_width: if self.source_filter.is_none() { self.store.source_width.max(3) } else { 0 },
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

    pub(super) fn render_body(&mut self, buf: &mut Buffer, body: Rect, theme: &Theme, focused: bool) {
        if body.is_empty() {
            return;
        }
        let rows = usize::from(body.height);
        let columns = self.columns(body.width);
        let text_width = columns.text_width().max(1);
        let wrap = self.display.wrap;
        if self.visible().is_empty() {
            let hint = match (&self.source_filter, self.level_filter) {
                (_, filter) if filter != LevelFilter::All && !self.lane().lines.is_empty() => {
                    format!("no lines at {} (v to change)", filter.label())
                }
                (Some(source), _) => format!("no lines from {} yet", source.name()),
                (None, _) => "no log lines yet".to_owned(),
            };
            buf.set_stringn(body.x, body.y, hint, usize::from(body.width), theme.dim());
            self.nav.drawn_top = None;
            return;
        }
        let (top, skip, selected) = self.layout(rows, text_width);
        if let Position::Paused { sel, .. } = self.nav.position {
            self.nav.position = Position::Paused { sel, top };
        }
        self.nav.recenter = false;
        self.nav.drawn_top = Some(top);
        let visible = self.visible();
        let end = visible.end();

        let mut y = body.y;
        let mut skip = skip;
        let mut i = top;
        while y < body.bottom() && i < end {
            let Some(entry) = visible.get(i) else { break };
            let is_selected = focused && selected == Some(i);
            let style = RowStyle::new(&entry.line, theme);
            let text = shown_text(&entry.line.text, self.display.compact, DISPLAY_BYTES);
            // Without colour, selection and matches are both reversed: underline matches there.
            let highlight = if is_selected && !theme.color {
                Style::new().remove_modifier(Modifier::REVERSED).add_modifier(Modifier::UNDERLINED | Modifier::BOLD)
            } else {
                theme.highlight()
            };
            let highlights: Vec<Range<usize>> =
                self.find.search.as_ref().map(|m| m.ranges(&text).collect()).unwrap_or_default();
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
    pub(super) fn layout(&self, rows: usize, text_width: usize) -> (u64, usize, Option<u64>) {
        let visible = self.visible();
        let (wrap, compact) = (self.display.wrap, self.display.compact);
        let rows_of = |i: u64| -> usize {
            match visible.get(i) {
                Some(entry) if wrap => {
                    row_starts(&shown_text(&entry.line.text, compact, DISPLAY_BYTES), text_width).len()
                }
                _ => 1,
            }
        };
        let (start, end) = (visible.start(), visible.end());
        match self.nav.position {
            Position::Follow => {
                let (top, total) = fill_back(end - 1, start, rows, rows_of);
                (top, total.saturating_sub(rows), None)
            }
            Position::Paused { sel, top } => {
                (paused_top(sel, top, start, end, rows, self.nav.recenter, rows_of), 0, Some(sel))
            }
        }
    }

    /// Draws time, source and level; returns where the text starts.
    pub(super) fn draw_prefix(
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

    pub(super) fn clock(&self, ts: DateTime<Utc>) -> String {
        let time = match self.display.utc_offset {
            Some(offset) => ts.with_timezone(&offset).time(),
            None => ts.with_timezone(&Local).time(),
        };
        format!("{:02}:{:02}:{:02}", time.hour(), time.minute(), time.second())
    }

    pub(super) fn render_status(&self, buf: &mut Buffer, row: Rect, theme: &Theme) {
        let width = usize::from(row.width);
        if let Some(input) = &self.find.input {
            let mut x = row.x;
            let mut put = |buf: &mut Buffer, text: &str, style: Style| {
                let room = usize::from(row.right().saturating_sub(x));
                x = buf.set_stringn(x, row.y, text, room, style).0;
            };
            put(buf, "/", theme.accent());
            put(buf, &input.text, Style::new());
            put(buf, " ", Style::new().add_modifier(Modifier::REVERSED));
            if self.find.regex_mode {
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

    pub(super) fn render_picker(&self, buf: &mut Buffer, area: Rect, theme: &Theme, choice: usize) {
        let items = self.picker_items();
        let labels: Vec<String> = items
            .iter()
            .map(|item| match item {
                None => format!("all  {} lines", self.store.totals.lines),
                Some(source) => {
                    let counters = self.store.by_source.get(*source).map(|s| s.lane.counters).unwrap_or_default();
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
pub(super) struct Columns {
    pub(super) time: bool,
    /// 0: no source column.
    pub(super) source_width: usize,
    pub(super) width: usize,
}

impl Columns {
    pub(super) fn prefix_width(&self) -> usize {
        let time = if self.time { TIME_WIDTH } else { 0 };
        let source = if self.source_width > 0 { self.source_width + 1 } else { 0 };
        time + source + LEVEL_WIDTH
    }

    pub(super) fn text_width(&self) -> usize {
        self.width.saturating_sub(self.prefix_width())
    }
}

pub(super) struct RowStyle {
    pub(super) text: Style,
    pub(super) level: (&'static str, Style),
}

impl RowStyle {
    pub(super) fn new(line: &LogLine, theme: &Theme) -> Self {
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
pub(super) fn fill_back(last: u64, start: u64, rows: usize, rows_of: impl Fn(u64) -> usize) -> (u64, usize) {
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
pub(super) fn paused_top(
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
pub(super) fn fill_whole(last: u64, start: u64, rows: usize, rows_of: impl Fn(u64) -> usize) -> u64 {
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
pub fn row_starts(text: &str, width: usize) -> Vec<usize> {
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
pub(super) fn draw_text(
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
