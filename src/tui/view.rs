//! Drawing: a pure function of the app and a clock. Header, the four panes (or one, zoomed),
//! footer, and overlays on top.

use std::time::Instant;

use chrono::{DateTime, FixedOffset};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Borders, Clear, Paragraph, Wrap};

use super::app::{App, Overlay};
use super::keymap::{BINDINGS, LOG_KEYS, Pane, footer_hints};
use super::theme::Theme;
use super::{gpus_pane, models_pane, tests_pane};
use crate::engine::{Severity, ShopperHealth};

/// Smallest terminal the layout is drawn for.
pub const MIN_WIDTH: u16 = 80;
pub const MIN_HEIGHT: u16 = 24;

/// What the view needs besides the app: the time, so snapshots can fix it.
#[derive(Debug, Clone, Copy)]
pub struct ViewCtx {
    pub now: Instant,
    /// Wall-clock time in the viewer's time zone (fixed in snapshot tests).
    pub wall: DateTime<FixedOffset>,
    pub theme: Theme,
    /// Advances while something on screen is in progress.
    pub spinner: usize,
}

impl ViewCtx {
    /// A UTC timestamp from an event, in the viewer's time zone.
    pub fn local(&self, ts: DateTime<chrono::Utc>) -> DateTime<FixedOffset> {
        ts.with_timezone(self.wall.offset())
    }
}

pub fn draw(frame: &mut Frame, app: &mut App, ctx: &ViewCtx) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        draw_too_small(frame, area);
        return;
    }
    let [header, body, footer] = Layout::vertical([Constraint::Length(1), Constraint::Fill(1), Constraint::Length(1)]).areas(area);
    draw_header(frame, header, app, ctx);
    if app.zoomed {
        draw_pane(frame, body, app, app.focus, ctx);
    } else {
        let [top, bottom] = Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(body);
        let [models, gpus] = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(top);
        let [tests, logs] = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(bottom);
        for (pane, rect) in [(Pane::Models, models), (Pane::Gpus, gpus), (Pane::Tests, tests), (Pane::Logs, logs)] {
            draw_pane(frame, rect, app, pane, ctx);
        }
    }
    draw_footer(frame, footer, app, ctx);
    draw_overlay(frame, body, app, ctx);
}

fn draw_too_small(frame: &mut Frame, area: Rect) {
    let text = vec![
        Line::from("terminal too small"),
        Line::from(format!("{}x{}, llmdeck needs {MIN_WIDTH}x{MIN_HEIGHT}", area.width, area.height)),
        Line::from("q quits"),
    ];
    let y = area.height.saturating_sub(3) / 2;
    let rect = Rect { x: area.x, y: area.y + y, width: area.width, height: area.height.min(3) };
    frame.render_widget(Paragraph::new(text).centered(), rect);
}

fn draw_header(frame: &mut Frame, area: Rect, app: &App, ctx: &ViewCtx) {
    let t = &ctx.theme;
    let s = &app.state;
    let (shopper_symbol, shopper_word, shopper_style) = match &s.shopper.health {
        ShopperHealth::Unknown => ("○", "not checked", t.dim()),
        ShopperHealth::Ok => ("●", "ok", t.good()),
        ShopperHealth::Unavailable { .. } => ("✖", "unavailable", t.bad()),
    };
    let config = s.config_path.as_deref().map(shorten_home).unwrap_or_else(|| "built-in".into());
    let left = vec![
        Span::styled(" llmdeck ", t.header().patch(t.accent())),
        Span::raw(format!(" {} · {} · config {} · shopper ", s.host, app.origin.mode, config)),
        Span::styled(format!("{shopper_symbol} {shopper_word}"), shopper_style),
    ];
    let clock = ctx.wall.format("%H:%M:%S ").to_string();
    let [l, r] = Layout::horizontal([Constraint::Fill(1), Constraint::Length(clock.len() as u16)]).areas(area);
    frame.render_widget(Paragraph::new(Line::from(left)), l);
    frame.render_widget(Paragraph::new(clock), r);
}

fn shorten_home(path: &str) -> String {
    match std::env::var("HOME") {
        Ok(home) if !home.is_empty() && path.starts_with(&home) => format!("~{}", &path[home.len()..]),
        _ => path.to_owned(),
    }
}

fn pane_block(app: &App, pane: Pane, ctx: &ViewCtx) -> Block<'static> {
    let focused = app.focus == pane;
    let t = &ctx.theme;
    let mut title = format!(" {} {} ", pane.number(), pane.title());
    if pane == Pane::Logs {
        title = format!(" 4 Logs · {} ", app.logs.title_suffix());
    }
    let (border_style, border_type) = if focused { (t.focused_border(), BorderType::Thick) } else { (t.border(), BorderType::Plain) };
    Block::default()
        .borders(Borders::ALL)
        .border_type(border_type)
        .border_style(border_style)
        .title(Span::styled(title, if focused { t.header() } else { Style::new() }))
}

fn draw_pane(frame: &mut Frame, area: Rect, app: &mut App, pane: Pane, ctx: &ViewCtx) {
    let block = pane_block(app, pane, ctx);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let focused = app.focus == pane;
    match pane {
        Pane::Models => models_pane::render(frame, inner, app, ctx, focused),
        Pane::Gpus => gpus_pane::render(frame, inner, &app.state.gpus, &ctx.theme, focused, app.gpus_selected),
        Pane::Tests => tests_pane::render(frame, inner, app, ctx, focused),
        Pane::Logs => app.logs.render(frame, inner, &ctx.theme, focused),
    }
}

fn draw_footer(frame: &mut Frame, area: Rect, app: &App, ctx: &ViewCtx) {
    let t = &ctx.theme;
    if let Some(toast) = &app.toast {
        let style = match toast.severity {
            Severity::Info => t.good(),
            Severity::Warning => t.warn(),
            Severity::Error => t.bad(),
        };
        frame.render_widget(Paragraph::new(Span::styled(format!(" {}", toast.text), style)), area);
        return;
    }
    let mut spans = Vec::new();
    for hint in footer_hints(app.focus) {
        let (key, word) = hint.split_once(' ').unwrap_or((hint, ""));
        spans.push(Span::raw(" "));
        spans.push(Span::styled(key.to_owned(), t.accent().patch(t.header())));
        spans.push(Span::raw(format!(" {word} ·")));
    }
    if let Some(last) = spans.last_mut() {
        *last = Span::raw(last.content.trim_end_matches(" ·").to_owned());
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_overlay(frame: &mut Frame, area: Rect, app: &mut App, ctx: &ViewCtx) {
    match app.overlay.clone() {
        Overlay::None => {}
        Overlay::Help => draw_help(frame, area, ctx),
        Overlay::Confirm(confirm) => {
            let question = confirm.question();
            let width = (question.len() as u16 + 6).clamp(30, area.width);
            let rect = centered(area, width, 5);
            frame.render_widget(Clear, rect);
            let block = Block::default().borders(Borders::ALL).border_type(BorderType::Double).title(" confirm ");
            let text = vec![Line::from(question), Line::from(""), Line::from("y / Enter: yes    any other key: no")];
            frame.render_widget(Paragraph::new(text).block(block).centered(), rect);
        }
        Overlay::ModelDetail(id) => models_pane::render_detail(frame, centered(area, area.width.saturating_sub(8), area.height.saturating_sub(2)), app, &id, ctx),
        Overlay::GpuDetail(index) => {
            let rect = centered(area, area.width.saturating_sub(8), area.height.saturating_sub(2));
            frame.render_widget(Clear, rect);
            let block = Block::default().borders(Borders::ALL).border_type(BorderType::Double).title(" GPU detail · Esc closes ");
            let inner = block.inner(rect);
            frame.render_widget(block, rect);
            gpus_pane::render_detail(frame, inner, &app.state.gpus, index, &ctx.theme);
        }
    }
}

fn draw_help(frame: &mut Frame, area: Rect, ctx: &ViewCtx) {
    let t = &ctx.theme;
    let mut lines = vec![Line::styled("Keys (one map for every pane)", t.header()), Line::from("")];
    let key_line = |keys: &str, help: &str| Line::from(vec![Span::styled(format!("  {keys:<26}"), t.accent()), Span::raw(help.to_owned())]);
    let mut last_scope = None;
    for b in BINDINGS {
        let scope = match b.scope {
            super::keymap::Scope::Global => "Everywhere",
            super::keymap::Scope::Lists => "Lists (Models, GPUs, Tests)",
            super::keymap::Scope::Pane(Pane::Models) => "Models",
            super::keymap::Scope::Pane(Pane::Tests) => "Tests",
            super::keymap::Scope::Pane(_) => "Panes",
        };
        if last_scope != Some(scope) {
            lines.push(Line::styled(scope, t.header()));
            last_scope = Some(scope);
        }
        lines.push(key_line(b.keys, b.help));
    }
    lines.push(Line::styled("Logs", t.header()));
    for (keys, help) in LOG_KEYS {
        lines.push(key_line(keys, help));
    }
    lines.push(Line::from(""));
    lines.push(Line::styled("Esc or ? closes this help", t.dim()));
    let height = (lines.len() as u16 + 2).min(area.height);
    let rect = centered(area, 76.min(area.width), height);
    frame.render_widget(Clear, rect);
    let block = Block::default().borders(Borders::ALL).border_type(BorderType::Double).title(" help ");
    frame.render_widget(Paragraph::new(lines).block(block).wrap(Wrap { trim: false }), rect);
}

/// A rectangle of the given size centred in `area`.
pub fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect { x: area.x + (area.width - width) / 2, y: area.y + (area.height - height) / 2, width, height }
}
