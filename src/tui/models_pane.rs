//! The Models pane: a table of supervised models, the newest bad news under it, and the detail
//! overlay.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Borders, Cell, Clear, Paragraph, Row, Table, TableState, Wrap};

use super::app::{App, Confirm, Overlay, Reaction};
use super::keymap::Action;
use super::theme::Theme;
use super::view::ViewCtx;
use super::widgets::{Selection, spinner};
use crate::logs::LogSource;
use crate::protocol::{Command, HealthMode, ModelState, ModelStatus, State};
use crate::util::fmt_duration_ms;

/// The pane's own state: which model is selected.
#[derive(Debug, Clone, Default)]
pub struct ModelsPane {
    pub selection: Selection,
}

impl ModelsPane {
    pub fn selected<'a>(&self, state: &'a State) -> Option<&'a ModelStatus> {
        state.models.get(self.selection.index(state.models.len()))
    }

    /// The pane's own keys; `None` if it has none for `action`.
    pub fn on_action(&mut self, action: Action, state: &State) -> Option<Reaction> {
        if self.selection.apply(action, state.models.len()) {
            return Some(Reaction::Nothing);
        }
        let id = self.selected(state).map(|m| m.id.clone());
        let reaction = match action {
            Action::Detail => Reaction::Overlay(Overlay::ModelDetail(id?)),
            Action::StartModel => Reaction::Send(Command::StartModel { model: id? }),
            Action::StopModel => Reaction::Overlay(Overlay::Confirm(Confirm::Stop(id?))),
            Action::RestartModel => Reaction::Overlay(Overlay::Confirm(Confirm::Restart(id?))),
            Action::ShowLogs => Reaction::ShowLogs(LogSource::Model(id?)),
            _ => return None,
        };
        Some(reaction)
    }
}

/// Symbol, word and style of a state: readable without colour.
pub fn state_look(m: &ModelStatus, theme: &Theme, tick: usize) -> (&'static str, &'static str, Style) {
    match m.state {
        ModelState::Ready => ("●", "ready", theme.good()),
        ModelState::Starting => (spinner(tick), "starting", theme.warn()),
        ModelState::Unhealthy => ("▲", "unhealthy", theme.warn()),
        ModelState::Backoff => ("↻", "backoff", theme.warn()),
        ModelState::Crashed => ("✖", "crashed", theme.bad()),
        ModelState::Failed => ("✖", "failed", theme.bad()),
        ModelState::Stopping => ("◌", "stopping", theme.warn()),
        ModelState::Stopped => ("○", "stopped", theme.dim()),
    }
}

fn state_text(m: &ModelStatus, app: &App, ctx: &ViewCtx) -> (String, Style) {
    let (symbol, word, style) = state_look(m, &ctx.theme, ctx.spinner);
    let extra = match m.state {
        ModelState::Backoff => {
            let elapsed = elapsed_ms(app, m, ctx);
            let left = m.backoff_delay_ms.unwrap_or(0).saturating_sub(elapsed);
            format!(" {}", fmt_countdown(left))
        }
        ModelState::Failed if m.last_exit.as_ref().is_some_and(|e| e.oom) => " OOM".into(),
        _ => String::new(),
    };
    (format!("{symbol} {word}{extra}"), style)
}

/// Backoff countdowns in whole seconds, rounded up, so "0s" never shows while still waiting.
fn fmt_countdown(ms: u64) -> String {
    format!("{}s", ms.div_ceil(1000))
}

fn elapsed_ms(app: &App, m: &ModelStatus, ctx: &ViewCtx) -> u64 {
    app.clocks.state_age(&m.id, ctx.now).map_or(0, |d| d.as_millis() as u64)
}

/// How long the current process has been up: a ready/unhealthy flap does not reset it.
fn uptime(app: &App, m: &ModelStatus, ctx: &ViewCtx) -> String {
    match (m.state, app.clocks.uptime(&m.id, ctx.now)) {
        (ModelState::Ready | ModelState::Unhealthy | ModelState::Starting, Some(up)) => {
            format_uptime(up.as_millis() as u64)
        }
        _ => "—".into(),
    }
}

/// Whole seconds: `0s`, `41s`, `2m05s`.
fn format_uptime(ms: u64) -> String {
    if ms < 1000 { "0s".into() } else { fmt_duration_ms(ms / 1000 * 1000) }
}

fn last_exit(m: &ModelStatus) -> String {
    match &m.last_exit {
        None => "—".into(),
        Some(e) if e.oom => "OOM".into(),
        Some(e) => match (e.exit_code, e.signal) {
            (Some(code), _) => format!("exit {code}"),
            (None, Some(sig)) => format!("sig {sig}"),
            _ => "?".into(),
        },
    }
}

pub fn fmt_bytes_g(bytes: u64) -> String {
    format!("{}G", crate::util::fmt_gib(bytes))
}

pub fn render(frame: &mut Frame, area: Rect, app: &App, ctx: &ViewCtx, focused: bool) {
    let t = &ctx.theme;
    if app.state.models.is_empty() {
        let text = vec![
            Line::from("No models configured."),
            Line::styled("Add them under `models:` in the config (see config.example.yaml).", t.dim()),
        ];
        frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), area);
        return;
    }
    let bad_news = last_bad_news(app, ctx);
    let news_height = if bad_news.is_some() && area.height > 6 { 2 } else { 0 };
    let [table_area, news_area] = Layout::vertical([Constraint::Fill(1), Constraint::Length(news_height)]).areas(area);
    let columns = Columns::for_width(area.width);
    let rows = app.state.models.iter().map(|m| {
        let (state, style) = state_text(m, app, ctx);
        let mut cells = vec![
            Cell::from(m.id.clone()),
            Cell::from(Span::styled(state, style)),
            Cell::from(uptime(app, m, ctx)),
            Cell::from(m.restarts.to_string()),
            Cell::from(Span::styled(m.ooms.to_string(), if m.ooms > 0 { t.bad() } else { Style::new() })),
        ];
        if columns >= Columns::Medium {
            cells.push(Cell::from(last_exit(m)));
            cells.push(Cell::from(m.summary.port.to_string()));
        }
        if columns == Columns::Wide {
            cells.push(Cell::from(m.pid.map_or("—".into(), |p| p.to_string())));
        }
        if columns >= Columns::Medium {
            cells.push(Cell::from(m.gpu_memory_bytes.map_or("—".into(), fmt_bytes_g)));
        }
        Row::new(cells)
    });
    let (header, widths) = columns.layout();
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(t.header()))
        .row_highlight_style(if focused { t.selected() } else { Style::new() })
        .column_spacing(1);
    let mut state = TableState::default().with_selected(Some(app.models.selection.index(app.state.models.len())));
    frame.render_stateful_widget(table, table_area, &mut state);

    if let (Some(line), true) = (bad_news, news_height > 0) {
        frame.render_widget(Paragraph::new(line).wrap(Wrap { trim: true }), news_area);
    }
}

/// How many columns fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Columns {
    Narrow,
    Medium,
    Wide,
}

impl Columns {
    fn for_width(width: u16) -> Columns {
        match width {
            0..56 => Columns::Narrow,
            56..84 => Columns::Medium,
            _ => Columns::Wide,
        }
    }

    fn layout(self) -> (Vec<&'static str>, Vec<Constraint>) {
        use Constraint::{Fill, Length};
        match self {
            Columns::Narrow => {
                (vec!["MODEL", "STATE", "UP", "RST", "OOM"], vec![Fill(1), Length(13), Length(6), Length(3), Length(3)])
            }
            Columns::Medium => (
                vec!["MODEL", "STATE", "UP", "RST", "OOM", "LAST", "PORT", "GPU"],
                vec![Fill(1), Length(13), Length(6), Length(3), Length(3), Length(6), Length(5), Length(5)],
            ),
            Columns::Wide => (
                vec!["MODEL", "STATE", "UP", "RESTARTS", "OOM", "LAST", "PORT", "PID", "GPU MEM"],
                vec![Fill(2), Length(16), Length(7), Length(8), Length(3), Length(7), Length(5), Length(7), Length(7)],
            ),
        }
    }
}

/// "last: tinyllama crashed 13:58:02 — CUDA out of memory..." for the newest crash.
fn last_bad_news(app: &App, ctx: &ViewCtx) -> Option<Line<'static>> {
    let failed = |e: &crate::protocol::ExitInfo| e.oom || e.signal.is_some() || e.exit_code.is_some_and(|c| c != 0);
    let m = app
        .state
        .models
        .iter()
        .filter(|m| m.last_exit.as_ref().is_some_and(failed))
        .max_by_key(|m| m.last_exit.as_ref().map(|e| e.ts))?;
    let exit = m.last_exit.as_ref()?;
    let what = if exit.oom {
        m.last_oom_line.as_deref().map(crate::logs::level::without_header).unwrap_or("CUDA out of memory").to_owned()
    } else {
        m.timeline
            .iter()
            .rev()
            .find(|e| e.state == ModelState::Crashed)
            .map(|e| e.detail.clone())
            .unwrap_or_else(|| last_exit(m))
    };
    let when = ctx.when(exit.ts, "%H:%M:%S");
    Some(Line::from(vec![Span::raw(format!("last: {} crashed {when} — ", m.id)), Span::raw(what)]))
}

/// Width of the label column in the detail view.
const LABEL_WIDTH: usize = 14;
/// Model output shown in the detail view is cut here (a line can be 16 KiB).
const DETAIL_TEXT_BYTES: usize = 4096;

pub fn render_detail(frame: &mut Frame, area: Rect, app: &App, id: &str, ctx: &ViewCtx) {
    let t = &ctx.theme;
    let Some(m) = app.state.model(id) else { return };
    frame.render_widget(Clear, area);
    let block =
        Block::default().borders(Borders::ALL).border_type(BorderType::Double).title(format!(" {id} · Esc closes "));
    let width = usize::from(area.width.saturating_sub(2));
    let (state, style) = state_text(m, app, ctx);
    let reason = m.reason.as_ref().map(|r| format!(" — {r}")).unwrap_or_default();
    let health = match m.health {
        HealthMode::HealthAndModels => format!("{} and /v1/models", m.summary.health_path),
        HealthMode::ModelsOnly => {
            format!("no health endpoint ({} answers 404): readiness rests on /v1/models", m.summary.health_path)
        }
        HealthMode::Unknown => format!("{} and /v1/models (not ready yet)", m.summary.health_path),
    };
    let pid = m.pid.map_or("—".into(), |p| p.to_string())
        + &m.gpu_memory_bytes.map(|b| format!(" · GPU memory {}", fmt_bytes_g(b))).unwrap_or_default();
    let fields = [
        ("state", format!("{state}{reason}"), style),
        ("command", m.summary.command_line.clone(), Style::default()),
        ("endpoint", m.summary.base_url.clone(), Style::default()),
        ("health", health, Style::default()),
        (
            "restart",
            format!("policy {} · restarts {} · OOMs {}", m.summary.policy, m.restarts, m.ooms),
            Style::default(),
        ),
        ("pid", pid, Style::default()),
        ("last exit", last_exit(m), Style::default()),
    ];
    let log_file = app.state.log_dir.as_ref().map(|dir| {
        let file = crate::logs::file::log_path(std::path::Path::new(dir), &m.id);
        ("log file", file.display().to_string(), Style::default())
    });
    let mut lines = Vec::new();
    for (label, value, style) in fields.into_iter().chain(log_file) {
        lines.extend(field_lines(label, &value, style, width, t));
    }
    if let Some(oom) = &m.last_oom_line {
        lines.extend(field_lines("last OOM", oom, t.bad(), width, t));
    }
    lines.push(Line::from(""));
    lines.push(Line::styled("recent events", t.header()));
    for e in m.timeline.iter().rev() {
        let prefix = format!("{} {:<10} ", ctx.when(e.ts, "%H:%M:%S"), e.state.name());
        let room = width.saturating_sub(prefix.chars().count());
        lines.push(Line::from(vec![
            Span::styled(prefix, t.dim()),
            Span::raw(one_row(&super::logs::display_text(&e.detail, DETAIL_TEXT_BYTES), room)),
        ]));
    }
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

/// A labelled value, wrapped under its own column so the labels stay readable.
fn field_lines(label: &str, value: &str, style: Style, width: usize, t: &Theme) -> Vec<Line<'static>> {
    let value = super::logs::display_text(value, DETAIL_TEXT_BYTES);
    let room = width.saturating_sub(LABEL_WIDTH).max(8);
    word_rows(&value, room)
        .into_iter()
        .enumerate()
        .map(|(row, text)| {
            let head = if row == 0 { format!("{label:<LABEL_WIDTH$}") } else { " ".repeat(LABEL_WIDTH) };
            Line::from(vec![Span::styled(head, t.header()), Span::styled(text.to_owned(), style)])
        })
        .collect()
}

/// `text` in rows of at most `width` columns, broken after a space where a row has one, else
/// mid-word (paths and URLs have none).
fn word_rows(text: &str, width: usize) -> Vec<&str> {
    use unicode_width::UnicodeWidthChar;
    let mut rows = Vec::new();
    let mut rest = text;
    loop {
        let mut columns = 0;
        let mut cut = rest.len();
        let mut last_space = None;
        for (i, c) in rest.char_indices() {
            columns += c.width().unwrap_or(0);
            if columns > width && i > 0 {
                cut = i;
                break;
            }
            if c == ' ' {
                last_space = Some(i + 1);
            }
        }
        if cut == rest.len() {
            rows.push(rest);
            return rows;
        }
        let cut = last_space.filter(|&s| s < cut).unwrap_or(cut);
        rows.push(rest[..cut].trim_end());
        rest = rest[cut..].strip_prefix(' ').unwrap_or(&rest[cut..]);
    }
}

/// The text cut to one row of `room` columns, ending in `…` when cut.
fn one_row(text: &str, room: usize) -> String {
    use super::logs::row_starts;
    if row_starts(text, room).len() == 1 {
        return text.to_owned();
    }
    let cut = row_starts(text, room.saturating_sub(1).max(1)).get(1).copied().unwrap_or(text.len());
    format!("{}…", &text[..cut])
}

#[cfg(test)]
mod tests {
    #[test]
    fn word_rows_break_after_spaces_and_cut_long_words() {
        assert_eq!(super::word_rows("CUDA out of memory", 10), ["CUDA out", "of memory"]);
        assert_eq!(super::word_rows("/a/very/long/path x", 8), ["/a/very/", "long/pat", "h x"]);
        assert_eq!(super::word_rows("", 5), [""]);
        assert_eq!(super::word_rows("abcd efgh", 4), ["abcd", "efgh"]);
        assert_eq!(super::word_rows("日本語 text", 4), ["日本", "語", "text"]);
    }

    #[test]
    fn one_row_cuts_with_an_ellipsis_only_when_needed() {
        assert_eq!(super::one_row("abcdef", 6), "abcdef");
        assert_eq!(super::one_row("abcdefg", 6), "abcde…");
        assert_eq!(super::one_row("日本語", 4), "日…");
    }
}
