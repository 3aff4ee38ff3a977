//! Drawing: a pure function of the app and a clock. Header, the four panes (or one, zoomed),
//! footer, and overlays on top.

use std::time::Instant;

use chrono::{DateTime, FixedOffset};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Borders, Clear, Paragraph};

use super::app::{App, CONFIRM_ANSWERS, Overlay};
use super::keymap::{BINDINGS, GLOBAL_HINTS, LOG_KEYS, Pane, list_hints};
use super::theme::Theme;
use super::{gpus, models_pane, tests_pane};
use crate::protocol::{LinkStatus, Severity, ShopperHealth};

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

    /// A time of day, with the date in front when it is not today: yesterday's crash must not
    /// pass for this morning's.
    pub fn when(&self, ts: DateTime<chrono::Utc>, time_format: &str) -> String {
        let local = self.local(ts);
        if local.date_naive() == self.wall.date_naive() {
            local.format(time_format).to_string()
        } else {
            format!("{} {}", local.format("%b %d"), local.format(time_format))
        }
    }
}

pub fn draw(frame: &mut Frame, app: &mut App, ctx: &ViewCtx) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        draw_too_small(frame, area, &app.overlay);
        return;
    }
    let banner_height = u16::from(app.link != LinkStatus::Connected);
    let [header, banner, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(banner_height),
        Constraint::Fill(1),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(frame, header, app, ctx);
    draw_link_banner(frame, banner, app, ctx);
    if app.cleanup_wait.is_some() {
        draw_cleaning_up(frame, body, app, ctx);
    } else if app.zoomed {
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

/// Says when this viewer does not see the engine: what it shows is as of the last event.
fn draw_link_banner(frame: &mut Frame, area: Rect, app: &App, ctx: &ViewCtx) {
    if area.height == 0 {
        return;
    }
    let text = match &app.link {
        LinkStatus::Connected => return,
        LinkStatus::Resyncing => " resyncing with the engine…".to_owned(),
        LinkStatus::Disconnected { reason, retry_in_s: Some(s) } => {
            format!(" disconnected — {reason} · retrying in {s}s · what you see may be out of date")
        }
        LinkStatus::Disconnected { reason, retry_in_s: None } => {
            format!(" disconnected — {reason} · what you see may be out of date")
        }
    };
    frame.render_widget(Paragraph::new(Span::styled(text, ctx.theme.bad())), area);
}

/// Quitting waits for the cleanups of running tests: what each is doing, for how long.
fn draw_cleaning_up(frame: &mut Frame, area: Rect, app: &App, ctx: &ViewCtx) {
    let t = &ctx.theme;
    let waited = app.cleanup_wait.as_ref().map(|w| ctx.now.saturating_duration_since(w.since)).unwrap_or_default();
    let mut lines = vec![
        Line::styled(
            format!("cleaning up before llmdeck stops · {}", crate::util::fmt_duration_ms(waited.as_millis() as u64)),
            t.header(),
        ),
        Line::from(""),
    ];
    for run in app.state.running_runs() {
        let step = run.current_step();
        let what = match step {
            Some((i, s)) => {
                let took = app
                    .clocks
                    .step_age(&run.id, i, ctx.now)
                    .map(|d| crate::util::fmt_duration_ms(d.as_millis() as u64));
                let detail = if s.detail.is_empty() { String::new() } else { format!(" — {}", s.detail) };
                format!(
                    "{} {}{}{detail}",
                    super::widgets::spinner(ctx.spinner),
                    s.name,
                    took.map(|d| format!(" {d}")).unwrap_or_default()
                )
            }
            None => format!("{} finishing", super::widgets::spinner(ctx.spinner)),
        };
        lines.push(Line::from(vec![Span::styled(format!("  {:<20} ", run.test), t.accent()), Span::raw(what)]));
    }
    if app.state.running_runs().next().is_none() {
        lines.push(Line::styled("  done", t.good()));
    }
    lines.push(Line::from(""));
    lines.push(Line::styled(
        "The models are stopped once every cleanup is done. q or Ctrl-C: stop waiting (asks first).",
        t.dim(),
    ));
    let block = Block::default().borders(Borders::ALL).border_style(t.focused_border()).title(" cleaning up ");
    frame.render_widget(Paragraph::new(lines).block(block).wrap(ratatui::widgets::Wrap { trim: false }), area);
}

fn draw_too_small(frame: &mut Frame, area: Rect, overlay: &Overlay) {
    // A pending question still shows: keys answer it even here.
    let last = match overlay {
        Overlay::Confirm(confirm) => format!("{} {CONFIRM_ANSWERS}", confirm.question()),
        _ => "q quits".into(),
    };
    let text = vec![
        Line::from("terminal too small"),
        Line::from(format!("{}x{}, llmdeck needs {MIN_WIDTH}x{MIN_HEIGHT}", area.width, area.height)),
        Line::from(last),
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
        ShopperHealth::NotUsed => ("○", "not used", t.dim()),
        ShopperHealth::Ok => ("●", "ok", t.good()),
        ShopperHealth::Unavailable { .. } => ("✖", "unavailable", t.bad()),
    };
    let clock = ctx.wall.format("%H:%M:%S ").to_string();
    let room = usize::from(area.width).saturating_sub(clock.len() + 1);
    let config = s.config_path.as_deref().map(shorten_home).unwrap_or_else(|| "built-in".into());
    let shopper = format!("{shopper_symbol} {shopper_word}");
    // Drop the least useful parts first when the line does not fit.
    let candidates = [
        format!(" {} · {} · config {} · shopper ", s.host, app.origin.mode, config),
        format!(" {} · {} · shopper ", s.host, app.origin.mode),
        format!(" {} · ", s.host),
    ];
    let brand = " llmdeck ";
    // Rented GPUs cost money by the hour: always in sight (before the config path), red when
    // something is left running.
    let rentals = super::sessions_view::header_part(&s.shopper, ctx);
    let rentals_len = rentals.as_ref().map_or(0, |(text, _)| text.chars().count());
    let middle = candidates
        .iter()
        .find(|c| brand.len() + c.chars().count() + shopper.chars().count() + rentals_len <= room)
        .cloned()
        .unwrap_or_default();
    let mut left = vec![Span::styled(brand, t.header().patch(t.accent())), Span::raw(middle.clone())];
    if !middle.is_empty() {
        left.push(Span::styled(shopper, shopper_style));
    }
    if let Some((text, style)) = rentals
        && !middle.is_empty()
    {
        left.push(Span::styled(text, style));
    }
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
    let (border_style, border_type) =
        if focused { (t.focused_border(), BorderType::Thick) } else { (t.border(), BorderType::Plain) };
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
        Pane::Gpus => {
            let selected = app.gpus.selection.index(app.state.gpus.gpus.len());
            gpus::render(frame, inner, &app.state.gpus, &ctx.theme, focused, selected)
        }
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
    // Whole hints only: a cut-off hint is worse than a missing one.
    let mut spans = Vec::new();
    let mut used = 0usize;
    let mut hints = if app.focus == Pane::Logs { app.logs.footer_keys() } else { list_hints(app.focus) };
    hints.extend(GLOBAL_HINTS);
    for hint in hints {
        let (key, word) = hint.split_once(' ').unwrap_or((hint, ""));
        let sep = if spans.is_empty() { " " } else { " · " };
        let len = sep.chars().count() + hint.chars().count();
        if used + len > usize::from(area.width) {
            break;
        }
        used += len;
        spans.push(Span::raw(sep));
        spans.push(Span::styled(key.to_owned(), t.accent().patch(t.header())));
        spans.push(Span::raw(format!(" {word}")));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_overlay(frame: &mut Frame, area: Rect, app: &mut App, ctx: &ViewCtx) {
    match app.overlay.clone() {
        Overlay::None => {}
        Overlay::Help => draw_help(frame, area, app, ctx),
        Overlay::Confirm(confirm) => {
            let question = confirm.question();
            let widest = question.chars().count().max(CONFIRM_ANSWERS.chars().count());
            let width = (widest as u16 + 6).min(area.width);
            let rect = centered(area, width, 5);
            frame.render_widget(Clear, rect);
            let block = Block::default().borders(Borders::ALL).border_type(BorderType::Double).title(" confirm ");
            let text = vec![Line::from(question), Line::from(""), Line::from(CONFIRM_ANSWERS)];
            frame.render_widget(Paragraph::new(text).block(block).centered(), rect);
        }
        Overlay::ModelDetail(id) => models_pane::render_detail(
            frame,
            centered(area, area.width.saturating_sub(8), area.height.saturating_sub(2)),
            app,
            &id,
            ctx,
        ),
        Overlay::GpuDetail(index) => {
            let rect = centered(area, area.width.saturating_sub(8), area.height.saturating_sub(2));
            frame.render_widget(Clear, rect);
            let block = Block::default()
                .borders(Borders::ALL)
                .border_type(BorderType::Double)
                .title(" GPU detail · Esc closes ");
            let inner = block.inner(rect);
            frame.render_widget(block, rect);
            gpus::render_detail(frame, inner, &app.state.gpus, index, &ctx.theme);
        }
        Overlay::Sessions(view) => {
            let rect = centered(area, area.width.saturating_sub(4), area.height.saturating_sub(4));
            super::sessions_view::render(frame, rect, &view, &app.state.shopper, ctx);
        }
        Overlay::RunDetail(test, run) => tests_pane::render_run_detail(
            frame,
            centered(area, area.width.saturating_sub(8), area.height.saturating_sub(2)),
            app,
            &test,
            &run,
            ctx,
        ),
    }
}

fn draw_help(frame: &mut Frame, area: Rect, app: &mut App, ctx: &ViewCtx) {
    let t = &ctx.theme;
    let mut lines = vec![Line::styled("Keys (one map for every pane)", t.header()), Line::from("")];
    let key_line = |keys: &str, help: &str| {
        Line::from(vec![Span::styled(format!("  {keys:<25} "), t.accent()), Span::raw(help.to_owned())])
    };
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
    let rect = centered(area, 78.min(area.width), height);
    let visible = usize::from(height.saturating_sub(2));
    let max_scroll = lines.len().saturating_sub(visible);
    app.help_scroll = app.help_scroll.min(max_scroll);
    let title = if max_scroll > 0 { " help · j/k scroll · Esc closes " } else { " help " };
    frame.render_widget(Clear, rect);
    let block = Block::default().borders(Borders::ALL).border_type(BorderType::Double).title(title);
    let scroll = u16::try_from(app.help_scroll).unwrap_or(u16::MAX);
    frame.render_widget(Paragraph::new(lines).block(block).scroll((scroll, 0)), rect);
}

/// A rectangle of the given size centred in `area`.
pub fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect { x: area.x + (area.width - width) / 2, y: area.y + (area.height - height) / 2, width, height }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::{TimeZone, Utc};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    use super::*;
    use crate::config::Config;
    use crate::logs::{Level, LogBatch, LogLine, LogSource, Stream};
    use crate::protocol::{BackendStatus, GpuEvent, GpuProcess, GpuSample};
    use crate::protocol::{EngineEvent, EngineEventKind, Event, HealthMode, ModelChange, ModelEvent, Snapshot, State};
    use crate::tui::app::{Confirm, Origin};

    const CONFIG: &str = r#"
models:
  - { id: qwen-7b, command: vllm, args: [serve, Qwen/Qwen2.5-7B-Instruct, --api-key, sk-secret], port: 8001 }
  - { id: llama-8b, command: vllm, args: [serve, meta-llama/Llama-3.1-8B-Instruct], port: 8002 }
  - { id: embed-small, command: vllm, args: [serve, BAAI/bge-small-en], port: 8003 }
  - { id: tinyllama, command: vllm, args: [serve, TinyLlama/TinyLlama-1.1B-Chat-v1.0], port: 8004, restart: { policy: no } }
tests:
  - { name: qwen-local, kind: local, model: qwen-7b }
  - { name: tinyllama-deploy, kind: deploy, model: TinyLlama/TinyLlama-1.1B-Chat-v1.0, max_price: 0.5,
      deploy: { command: "vllm serve {model} --port {port}" } }
"#;

    fn at(secs: i64) -> chrono::DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 14, 0, 0).single().expect("valid time") + chrono::Duration::seconds(secs)
    }

    fn model(id: &str, secs: i64, change: ModelChange) -> Event {
        Event::Model(ModelEvent { ts: at(secs), model: id.into(), change })
    }

    fn crashed(oom_line: Option<&str>, code: i32) -> ModelChange {
        ModelChange::Crashed {
            exit_code: Some(code),
            signal: None,
            oom: oom_line.is_some(),
            oom_line: oom_line.map(str::to_owned),
            reason: "exited with code 1".into(),
        }
    }

    /// A busy box: one model ready, one starting, one backing off, one failed by OOM; two GPUs;
    /// a few log lines.
    fn busy_app() -> (App, ViewCtx) {
        let config: Config = crate::config::load_str(CONFIG, "test").expect("test config");
        let mut state = State::new(&config, Some("/etc/llmdeck/config.yaml".into()), "gpu-box-07".into());
        state.log_dir = Some("/var/log/llmdeck".into());
        let mut app = App::new(
            Snapshot { state, log_tail: Default::default(), seq: 0, epoch: "e".into() },
            Origin { mode: "in-process".into() },
            1000,
        );
        let oom = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 1; 79.6 GiB total)";
        let events = vec![
            Event::Engine(EngineEvent {
                ts: at(0),
                kind: EngineEventKind::Started {
                    host: "gpu-box-07".into(),
                    version: "0.1.0".into(),
                    epoch: "e".into(),
                },
            }),
            model("qwen-7b", 1, ModelChange::Starting { pid: 4101, attempt: 0 }),
            model("qwen-7b", 60, ModelChange::Ready { health: HealthMode::HealthAndModels, startup_ms: 59_000 }),
            model("llama-8b", 100, ModelChange::Starting { pid: 4202, attempt: 1 }),
            model("embed-small", 2, ModelChange::Starting { pid: 4303, attempt: 0 }),
            model("embed-small", 90, crashed(None, 1)),
            model(
                "embed-small",
                90,
                ModelChange::Backoff { attempt: 3, delay_ms: 20_000, reason: "exited with code 1".into() },
            ),
            model("tinyllama", 3, ModelChange::Starting { pid: 4404, attempt: 0 }),
            model("tinyllama", 80, crashed(Some(oom), 1)),
            model("tinyllama", 80, ModelChange::Failed { reason: "CUDA out of memory; restart policy no".into() }),
            Event::Gpu(GpuEvent::Backend { status: BackendStatus::Simulated, sample_ms: 1000, history_len: 60 }),
            Event::Gpu(GpuEvent::Sampled {
                ts: at(101),
                gpus: vec![
                    gpu(0, 83, 61.2, vec![(4101, 57.1, "qwen-7b")]),
                    gpu(1, 24, 31.0, vec![(4202, 30.2, "llama-8b")]),
                ],
            }),
            Event::Log(LogBatch {
                source: LogSource::Model("qwen-7b".into()),
                lines: vec![
                    line(99, Level::Info, "INFO 11-23 14:01:39 [loggers.py:116] Avg prompt throughput: 4.1 tokens/s"),
                    line(100, Level::Warn, "WARNING 11-23 14:01:40 [api_server.py:9] slow request"),
                ],
                dropped_before: 0,
            }),
            Event::Log(LogBatch {
                source: LogSource::Model("tinyllama".into()),
                lines: vec![line(80, Level::Error, oom)],
                dropped_before: 0,
            }),
        ];
        for e in &events {
            app.on_event(e);
        }
        let now = std::time::Instant::now();
        for (id, secs) in [("qwen-7b", 8040), ("llama-8b", 41), ("embed-small", 13), ("tinyllama", 21)] {
            let ago = Duration::from_secs(secs);
            app.clocks.set_ages(id, now, ago, Some(ago));
        }
        let ctx = ViewCtx { now, wall: at(151).fixed_offset(), theme: Theme::monochrome(), spinner: 0 };
        (app, ctx)
    }

    fn line(secs: i64, level: Level, text: &str) -> LogLine {
        LogLine {
            ts: at(secs),
            stream: Stream::Stdout,
            level: Some(level),
            text: text.into(),
            truncated: false,
            oom: text.contains("out of memory"),
        }
    }

    fn gpu(index: u32, util: u32, used_gib: f64, procs: Vec<(u32, f64, &str)>) -> GpuSample {
        let gib = |g: f64| (g * (1u64 << 30) as f64) as u64;
        GpuSample {
            index,
            name: "NVIDIA H100 80GB HBM3".into(),
            uuid: format!("GPU-{index}"),
            utilization_gpu_pct: Some(util),
            utilization_memory_pct: Some(util / 2),
            memory_used_bytes: Some(gib(used_gib)),
            memory_total_bytes: Some(gib(79.6)),
            temperature_c: Some(64),
            power_draw_w: Some(312.0),
            power_limit_w: Some(700.0),
            processes: procs
                .into_iter()
                .map(|(pid, g, m)| GpuProcess { pid, used_memory_bytes: Some(gib(g)), model: Some(m.into()) })
                .collect(),
            ..Default::default()
        }
    }

    fn render(app: &mut App, ctx: &ViewCtx, width: u16, height: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("test terminal");
        terminal.draw(|f| draw(f, app, ctx)).expect("draw");
        terminal.backend().to_string()
    }

    #[test]
    fn layout_80x24() {
        let (mut app, ctx) = busy_app();
        insta::assert_snapshot!(render(&mut app, &ctx, 80, 24));
    }

    #[test]
    fn layout_160x50() {
        let (mut app, ctx) = busy_app();
        insta::assert_snapshot!(render(&mut app, &ctx, 160, 50));
    }

    #[test]
    fn zoomed_models_80x24() {
        let (mut app, ctx) = busy_app();
        app.zoomed = true;
        insta::assert_snapshot!(render(&mut app, &ctx, 80, 24));
    }

    #[test]
    fn confirm_dialog_shows_the_whole_answer_line() {
        let (mut app, ctx) = busy_app();
        app.overlay = Overlay::Confirm(Confirm::Stop("qwen-7b".into()));
        let screen = render(&mut app, &ctx, 80, 24);
        assert!(screen.contains("any other key: no"), "{screen}");
        insta::assert_snapshot!(screen);
    }

    #[test]
    fn zoomed_logs_160x50() {
        let (mut app, ctx) = busy_app();
        app.focus = Pane::Logs;
        app.zoomed = true;
        insta::assert_snapshot!(render(&mut app, &ctx, 160, 50));
    }

    #[test]
    fn help_overlay_120x40() {
        let (mut app, ctx) = busy_app();
        app.overlay = Overlay::Help;
        insta::assert_snapshot!(render(&mut app, &ctx, 120, 40));
    }

    /// Three rentals: one a run of this llmdeck owns, an orphan, and one stuck `stopping`.
    fn with_sessions(app: &mut App) {
        use crate::protocol::{RentedSession, SessionOwner, ShopperEvent, ShopperHealth};
        let session = |id: &str, provider: &str, gpu: &str, status: &str, minutes: i64, price: f64, owner| {
            let created_at = at(101) - chrono::Duration::minutes(minutes);
            RentedSession {
                id: id.into(),
                provider: provider.into(),
                gpu_type: gpu.into(),
                status: status.into(),
                created_at,
                expires_at: created_at + chrono::Duration::hours(1),
                price_per_hour: price,
                owner,
                stuck_since: None,
                note: None,
            }
        };
        let run = SessionOwner::Run {
            test: "tinyllama-deploy".into(),
            run_id: "20261203T140000Z-3fa2c1".into(),
            this_engine: true,
        };
        let orphan = SessionOwner::Orphan { why: "owner gone (llmdeck pid 4242, test tinyllama-deploy)".into() };
        let mut stuck = session(
            "77be1c02",
            "vastai",
            "L4",
            "stopping",
            9,
            0.3,
            SessionOwner::Orphan { why: "its run is over".into() },
        );
        stuck.stuck_since = Some(at(101) - chrono::Duration::minutes(6));
        stuck.note = Some("destroy retried".into());
        let sessions = vec![
            session("3f2a9c01", "vastai", "RTX 4090", "running", 12, 0.4, run),
            {
                let mut long = session("9c01aa77", "tensordock", "H100", "running", 182, 3.5, orphan);
                long.expires_at = long.created_at + chrono::Duration::hours(12);
                long
            },
            stuck,
        ];
        app.on_event(&Event::Shopper(ShopperEvent {
            ts: at(101),
            health: ShopperHealth::Ok,
            sessions: Some(sessions),
        }));
        app.state.shopper.consumer_id = "llmdeck-gpu-box-07-3f9a1c22".into();
    }

    #[test]
    fn sessions_view_with_an_orphan_and_a_stuck_session_120x40() {
        let (mut app, ctx) = busy_app();
        with_sessions(&mut app);
        app.overlay = Overlay::Sessions(crate::tui::sessions_view::SessionsView::default());
        let screen = render(&mut app, &ctx, 120, 40);
        assert!(screen.contains("ORPHAN — owner gone") && screen.contains("STUCK stopping since"), "{screen}");
        insta::assert_snapshot!(screen);
    }

    #[test]
    fn the_header_shows_active_rentals_and_their_cost() {
        let (mut app, ctx) = busy_app();
        with_sessions(&mut app);
        let screen = render(&mut app, &ctx, 160, 40);
        let header = screen.lines().next().unwrap_or_default().to_owned();
        assert!(header.contains("shopper ● ok · 3 active · $4.20/h · S sessions"), "{header}");
        insta::assert_snapshot!(header);
    }

    /// A deployment run of `tinyllama-deploy` up to step `upto` (0-based), the last one
    /// `last_status`, with its offer, session and probe figures.
    fn deploy_run(app: &mut App, upto: usize, last_status: crate::protocol::StepStatus, last_detail: &str) {
        use crate::protocol::{OfferInfo, ProbeProgress, RunChange, RunEvent, SessionInfo, StepStatus, deploy_steps};
        let run = "20261203T140000Z-3fa2c1";
        let ev = |secs, change| {
            Event::Run(RunEvent { ts: at(secs), run: run.into(), test: "tinyllama-deploy".into(), change })
        };
        let steps: Vec<String> = deploy_steps::ALL.map(String::from).into();
        app.on_event(&ev(
            10,
            RunChange::Started { kind: crate::config::TestKind::Deploy, target: "TinyLlama".into(), steps },
        ));
        let details = [
            "healthy and ready",
            "4.0 GB GPU memory (known model (tinyllama))",
            "2 offers fit",
            "L4 24G · $0.30/h (tensordock); next: RTX 4090 $0.40/h",
            "session 3f2a9c01 · expires 15:00 UTC",
            "running after 58s",
            "root@203.0.113.7:22",
            "started in the foreground",
            "ready after 41s · /health and /v1/models",
            "20/20 ok · p50 180 ms",
        ];
        for (i, detail) in details.iter().enumerate().take(upto) {
            app.on_event(&ev(
                20,
                RunChange::Step {
                    index: i,
                    status: StepStatus::Done,
                    detail: (*detail).into(),
                    duration_ms: Some(1200),
                },
            ));
        }
        let offer = OfferInfo {
            id: "o".into(),
            provider: "tensordock".into(),
            gpu_type: "L4".into(),
            gpu_count: 1,
            vram_gb: 24,
            price_per_hour: 0.3,
        };
        app.on_event(&ev(20, RunChange::Offer { offer }));
        let session =
            SessionInfo { id: "3f2a9c01-0002".into(), status: "running".into(), price_per_hour: 0.3, rented_ms: None };
        app.on_event(&ev(20, RunChange::Session { session }));
        app.on_event(&ev(
            90,
            RunChange::Step { index: upto, status: last_status, detail: last_detail.into(), duration_ms: None },
        ));
        if upto == 9 {
            let progress = ProbeProgress {
                elapsed_ms: 4000,
                done: 12,
                planned: Some(20),
                in_flight: 2,
                outcomes: [(crate::protocol::Outcome::Success, 12)].into(),
                ttft_p50_ms: Some(121.0),
                requests_per_s: 3.0,
                output_tokens_per_s: 48.0,
                finished: false,
            };
            app.on_event(&ev(95, RunChange::Probe { progress }));
        }
        let now = std::time::Instant::now();
        app.clocks.set_run_age(run, Some(upto), now, Duration::from_secs(150));
        app.clocks.set_session_age(run, now, Duration::from_secs(600));
    }

    #[test]
    fn tests_pane_mid_deploy_run_120x40() {
        let (mut app, ctx) = busy_app();
        deploy_run(&mut app, 9, crate::protocol::StepStatus::Running, "20 requests, concurrency 2, streaming");
        app.focus = Pane::Tests;
        app.tests.selection = crate::tui::widgets::Selection::at(1);
        let screen = render(&mut app, &ctx, 120, 40);
        assert!(screen.contains("cost so far") && screen.contains("$0.05"), "{screen}");
        insta::assert_snapshot!(screen);
    }

    #[test]
    fn tests_pane_after_a_failed_deploy_run_120x40() {
        use crate::protocol::{RunChange, RunEvent, StepStatus, Verdict};
        let (mut app, ctx) = busy_app();
        let oom =
            "CUDA out of memory while loading: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB";
        deploy_run(&mut app, 8, StepStatus::Failed, oom);
        let run = "20261203T140000Z-3fa2c1";
        let ev = |secs, change| {
            Event::Run(RunEvent { ts: at(secs), run: run.into(), test: "tinyllama-deploy".into(), change })
        };
        app.on_event(&ev(
            96,
            RunChange::Step { index: 9, status: StepStatus::Skipped, detail: "not reached".into(), duration_ms: None },
        ));
        let cleanup = "session 3f2a9c01 stopped · rented 2m31s · $0.0126";
        app.on_event(&ev(
            99,
            RunChange::Step { index: 10, status: StepStatus::Done, detail: cleanup.into(), duration_ms: Some(6100) },
        ));
        let verdict = Verdict::fail(format!("wait ready: {oom}"));
        app.on_event(&ev(100, RunChange::Finished { verdict, summary: None, report_file: None }));
        app.focus = Pane::Tests;
        app.tests.selection = crate::tui::widgets::Selection::at(1);
        let screen = render(&mut app, &ctx, 120, 40);
        assert!(screen.contains("CUDA out of memory"), "{screen}");
        insta::assert_snapshot!(screen);
    }

    #[test]
    fn model_detail_shows_redacted_command_and_last_oom() {
        let (mut app, ctx) = busy_app();
        app.overlay = Overlay::ModelDetail("tinyllama".into());
        let screen = render(&mut app, &ctx, 120, 40);
        assert!(screen.contains("CUDA out of memory. Tried to allocate 2.00 GiB"), "{screen}");
        app.overlay = Overlay::ModelDetail("qwen-7b".into());
        let screen = render(&mut app, &ctx, 120, 40);
        assert!(screen.contains("--api-key ***") && !screen.contains("sk-secret"), "{screen}");
    }

    #[test]
    fn model_detail_wraps_values_under_their_column() {
        let (mut app, ctx) = busy_app();
        app.overlay = Overlay::ModelDetail("tinyllama".into());
        insta::assert_snapshot!(render(&mut app, &ctx, 100, 30));
    }

    #[test]
    fn times_from_another_day_carry_their_date() {
        let (_, ctx) = busy_app();
        assert_eq!(ctx.when(at(100), "%H:%M:%S"), ctx.local(at(100)).format("%H:%M:%S").to_string());
        let yesterday = at(100) - chrono::Duration::days(1);
        assert_eq!(
            ctx.when(yesterday, "%H:%M"),
            format!("{} {}", ctx.local(yesterday).format("%b %d"), ctx.local(yesterday).format("%H:%M"))
        );
    }

    #[test]
    fn too_small_terminal_says_so() {
        let (mut app, ctx) = busy_app();
        let screen = render(&mut app, &ctx, 79, 24);
        assert!(screen.contains("terminal too small") && screen.contains("79x24"), "{screen}");
    }
}
