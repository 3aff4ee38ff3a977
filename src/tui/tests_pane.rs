//! The Tests pane: the configured tests with their last verdict; under them the running test's
//! steps, probe figures and session cost, or the selected test's last result. `h` lists a
//! test's last runs; `Enter` on one opens its report.

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
use crate::config::TestKind;
use crate::logs::LogSource;
use crate::protocol::{
    Clocks, Command, Outcome, Run, Severity, State, Step, StepStatus, TestStatus, TestSummary, VerdictOutcome,
};
use crate::util::fmt_duration_ms;

/// The pane's own state: the selected test, and the run list when `h` shows it.
#[derive(Debug, Clone, Default)]
pub struct TestsPane {
    pub selection: Selection,
    /// Showing the selected test's last runs, newest first, with this one selected.
    pub history: Option<Selection>,
}

impl TestsPane {
    pub fn selected<'a>(&self, state: &'a State) -> Option<&'a TestStatus> {
        state.tests.get(self.selection.index(state.tests.len()))
    }

    /// The pane's own keys; `None` if it has none for `action`.
    pub fn on_action(&mut self, action: Action, state: &State) -> Option<Reaction> {
        let test = self.selected(state)?;
        if let Some(history) = &mut self.history {
            let runs = test.history.len();
            if history.apply(action, runs) {
                return Some(Reaction::Nothing);
            }
            return match action {
                Action::RunTest | Action::Detail => {
                    let run = test.history.iter().rev().nth(history.index(runs))?;
                    Some(Reaction::Overlay(Overlay::RunDetail(test.name.clone(), run.id.clone())))
                }
                Action::History | Action::Close => {
                    self.history = None;
                    Some(Reaction::Nothing)
                }
                _ => None,
            };
        }
        if self.selection.apply(action, state.tests.len()) {
            return Some(Reaction::Nothing);
        }
        let reaction = match action {
            Action::RunTest => Reaction::Send(Command::RunTest { test: test.name.clone() }),
            Action::CancelTest => match state.tests.iter().find(|t| t.current.is_some()) {
                Some(t) => Reaction::Overlay(Overlay::Confirm(Confirm::CancelTest(t.name.clone()))),
                None => Reaction::Toast("no test is running".into(), Severity::Warning),
            },
            Action::ShowLogs => Reaction::ShowLogs(LogSource::Test(test.name.clone())),
            Action::History if test.history.is_empty() => {
                Reaction::Toast(format!("{} has not run yet", test.name), Severity::Info)
            }
            Action::History => {
                self.history = Some(Selection::default());
                Reaction::Nothing
            }
            _ => return None,
        };
        Some(reaction)
    }
}

pub fn render(frame: &mut Frame, area: Rect, app: &App, ctx: &ViewCtx, focused: bool) {
    let t = &ctx.theme;
    let tests = &app.state.tests;
    if tests.is_empty() {
        let text = vec![
            Line::from("No tests configured."),
            Line::styled("Add `local` or `deploy` tests under `tests:` in the config.", t.dim()),
        ];
        frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), area);
        return;
    }
    let selected = app.tests.selection.index(tests.len());
    if let Some(history) = app.tests.history {
        render_history(frame, area, &tests[selected], history, ctx, focused);
        return;
    }
    let detail = detail_lines(&tests[selected], &app.clocks, ctx, usize::from(area.width));
    // Lines wrap in the pane: count the rows they take, not the lines.
    let width = usize::from(area.width.max(1));
    let rows: usize = detail.iter().map(|l| l.width().div_ceil(width).max(1)).sum();
    let detail_height = u16::try_from(rows).unwrap_or(u16::MAX).min(area.height.saturating_sub(3));
    let [table_area, _, detail_area] =
        Layout::vertical([Constraint::Fill(1), Constraint::Length(1), Constraint::Length(detail_height)]).areas(area);

    // Narrow panes drop the model column: the name and the verdict matter most.
    let wide = area.width >= 60;
    let rows = tests.iter().map(|test| {
        let (last, style) = verdict(test, t, ctx.spinner);
        let when = test.last().filter(|_| test.current.is_none()).and_then(|r| r.finished).map(|ts| {
            // The time today, the date before that: six columns either way.
            let local = ctx.local(ts);
            let format = if local.date_naive() == ctx.wall.date_naive() { "%H:%M" } else { "%b %d" };
            local.format(format).to_string()
        });
        let mut cells = vec![Cell::from(test.name.clone()), Cell::from(kind_word(test.kind))];
        if wide {
            cells.push(Cell::from(test.model.clone()));
        }
        cells.extend([Cell::from(Span::styled(last, style)), Cell::from(when.unwrap_or_default())]);
        Row::new(cells)
    });
    let (header, widths) = if wide {
        (
            vec!["TEST", "KIND", "MODEL", "LAST", "WHEN"],
            vec![
                Constraint::Fill(2),
                Constraint::Length(6),
                Constraint::Fill(2),
                Constraint::Length(16),
                Constraint::Length(6),
            ],
        )
    } else {
        (
            vec!["TEST", "KIND", "LAST", "WHEN"],
            vec![Constraint::Fill(1), Constraint::Length(6), Constraint::Length(16), Constraint::Length(6)],
        )
    };
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(t.header()))
        .row_highlight_style(if focused { t.selected() } else { Style::new() })
        .column_spacing(1);
    let mut state = TableState::default().with_selected(Some(selected));
    frame.render_stateful_widget(table, table_area, &mut state);
    frame.render_widget(Paragraph::new(detail).wrap(Wrap { trim: true }), detail_area);
}

fn kind_word(kind: TestKind) -> &'static str {
    match kind {
        TestKind::Deploy => "deploy",
        TestKind::Local => "local",
    }
}

/// Symbol and word of a test's state, readable without colour.
fn verdict(test: &TestStatus, t: &Theme, tick: usize) -> (String, Style) {
    if let Some(run) = &test.current {
        let step = match run.current_step() {
            Some((i, s)) => format!(" {}/{} {}", i + 1, run.steps.len(), s.name),
            None => " starting".into(),
        };
        return (format!("{}{step}", spinner(tick)), t.warn());
    }
    match test.last().and_then(|r| r.verdict.as_ref()).map(|v| v.outcome) {
        None => ("— not run".into(), t.dim()),
        Some(outcome) => verdict_look(outcome, t),
    }
}

fn verdict_look(outcome: VerdictOutcome, t: &Theme) -> (String, Style) {
    match outcome {
        VerdictOutcome::Pass => ("✔ pass".into(), t.good()),
        VerdictOutcome::Fail => ("✖ fail".into(), t.bad()),
        VerdictOutcome::Cancelled => ("◌ cancelled".into(), t.warn()),
    }
}

/// Under the table: the running test's steps and live figures, or the selected test's last
/// result.
fn detail_lines(test: &TestStatus, clocks: &Clocks, ctx: &ViewCtx, width: usize) -> Vec<Line<'static>> {
    let t = &ctx.theme;
    if let Some(run) = &test.current {
        let mut lines = steps_lines(run, clocks, ctx, width);
        // What the rental costs comes before the probe's figures: it must not be cut off.
        if let Some(line) = session_line(run, clocks, ctx) {
            lines.push(line);
        }
        if let Some(line) = probe_line(run, t) {
            lines.push(line);
        }
        return lines;
    }
    let Some(last) = test.last() else {
        let hint = match test.kind {
            TestKind::Local => format!("{}: Enter runs it against {}", test.name, test.model),
            TestKind::Deploy => format!("{}: Enter rents a GPU and deploys {}", test.name, test.model),
        };
        return vec![Line::styled(hint, t.dim())];
    };
    let mut lines = Vec::new();
    // A deployment run has many steps: which one failed (its detail says why), and what the
    // rental cost, matter.
    let steps_say_why = test.kind == TestKind::Deploy;
    if steps_say_why {
        lines.extend(steps_lines(last, clocks, ctx, width));
    }
    if let Some(s) = &last.summary {
        lines.push(Line::from(summary_text(&test.name, s)));
    }
    if let Some(v) = &last.verdict
        && !v.reasons.is_empty()
        && !(steps_say_why && last.steps.iter().any(|s| s.status == crate::protocol::StepStatus::Failed))
    {
        lines.push(Line::styled(format!("{}: {}", test.name, v.reasons.join("; ")), t.bad()));
    }
    if let Some(file) = &last.report_file {
        lines.push(Line::styled(format!("report: {file} · h: last runs"), t.dim()));
    }
    lines
}

/// `✔ wait ready 0.2s  ◓ probe 3.1s  · verdict`, wrapped at whole steps.
fn steps_lines(run: &Run, clocks: &Clocks, ctx: &ViewCtx, width: usize) -> Vec<Line<'static>> {
    let t = &ctx.theme;
    let mut lines = Vec::new();
    let mut spans: Vec<Span<'static>> = Vec::new();
    let mut used = 0;
    for (i, step) in run.steps.iter().enumerate() {
        let (symbol, style) = step_look(step.status, t, ctx.spinner);
        let took = step_time(run, i, step, clocks, ctx).map(|d| format!(" {d}")).unwrap_or_default();
        let text = format!("{symbol} {}{took}", step.name);
        let len = text.chars().count() + 2;
        if used > 0 && used + len > width {
            lines.push(Line::from(std::mem::take(&mut spans)));
            used = 0;
        }
        spans.push(Span::styled(text, style));
        spans.push(Span::raw("  "));
        used += len;
    }
    if !spans.is_empty() {
        lines.push(Line::from(spans));
    }
    if let Some((_, step)) = run.current_step()
        && !step.detail.is_empty()
    {
        lines.push(Line::styled(format!("  {}: {}", step.name, step.detail), t.dim()));
    } else if let Some(failed) = run.steps.iter().find(|s| s.status == StepStatus::Failed) {
        lines.push(Line::styled(format!("  {}: {}", failed.name, failed.detail), t.bad()));
    }
    lines
}

fn step_look(status: StepStatus, t: &Theme, tick: usize) -> (&'static str, Style) {
    match status {
        StepStatus::Pending => ("·", t.dim()),
        StepStatus::Running => (spinner(tick), t.warn()),
        StepStatus::Done => ("✔", t.good()),
        StepStatus::Failed => ("✖", t.bad()),
        StepStatus::Skipped => ("–", t.dim()),
    }
}

/// A finished step's duration, or how long the running one has been going.
fn step_time(run: &Run, index: usize, step: &Step, clocks: &Clocks, ctx: &ViewCtx) -> Option<String> {
    match step.status {
        StepStatus::Running => clocks.step_age(&run.id, index, ctx.now).map(|d| fmt_duration_ms(d.as_millis() as u64)),
        _ => step.duration_ms.filter(|ms| *ms >= 100).map(fmt_duration_ms),
    }
}

fn probe_line(run: &Run, t: &Theme) -> Option<Line<'static>> {
    let p = run.probe.as_ref().filter(|_| run.current_step().is_some_and(|(_, s)| s.name == "probe"))?;
    let failures: u64 = p.outcomes.iter().filter(|(o, _)| **o != Outcome::Success).map(|(_, n)| n).sum();
    let done = match p.planned {
        Some(n) => format!("{}/{n}", p.done),
        None => p.done.to_string(),
    };
    Some(Line::from(vec![
        Span::raw(format!("▶ {done} · {} in flight · ", p.in_flight)),
        Span::raw(p.ttft_p50_ms.map(|v| format!("TTFT p50 {} · ", crate::util::fmt_ms(v))).unwrap_or_default()),
        Span::raw(format!("{:.0} tok/s · {:.1} req/s · ", p.output_tokens_per_s, p.requests_per_s)),
        Span::styled(format!("{failures} failed"), if failures > 0 { t.bad() } else { Style::new() }),
    ]))
}

/// `RTX 4090 · $0.40/h · session 3f2a… · cost so far $0.02`.
fn session_line(run: &Run, clocks: &Clocks, ctx: &ViewCtx) -> Option<Line<'static>> {
    let session = run.session.as_ref()?;
    let rented = clocks.session_age(&run.id, ctx.now).unwrap_or_default();
    let cost = session.price_per_hour * rented.as_secs_f64() / 3600.0;
    let gpu = run.offer.as_ref().map(|o| format!("{} · ", o.gpu_type)).unwrap_or_default();
    Some(Line::from(format!(
        "{gpu}${:.2}/h · session {} ({}) · cost so far ${cost:.2}",
        session.price_per_hour,
        super::app::short_id(&session.id),
        session.status
    )))
}

fn summary_text(name: &str, s: &TestSummary) -> String {
    let mut parts = vec![format!("{name}: {}/{} ok", s.succeeded, s.requests)];
    if let Some(v) = s.latency_p50_ms {
        parts.push(format!("p50 {}", crate::util::fmt_ms(v)));
    }
    if let Some(v) = s.ttft_p50_ms {
        parts.push(format!("TTFT p50 {}", crate::util::fmt_ms(v)));
    }
    parts.push(format!("{:.0} tok/s", s.output_tokens_per_s));
    if let Some(rate) = s.expected_answer_rate {
        parts.push(format!("answers {:.0}% right", rate * 100.0));
    }
    parts.join(" · ")
}

/// The selected test's last runs, newest first.
fn render_history(frame: &mut Frame, area: Rect, test: &TestStatus, history: Selection, ctx: &ViewCtx, focused: bool) {
    let t = &ctx.theme;
    let [title, table_area] = Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]).areas(area);
    frame.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled(format!("{} · last {} runs", test.name, test.history.len()), t.header()),
            Span::styled(" · Enter report · h/Esc back", t.dim()),
        ])),
        title,
    );
    let rows = test.history.iter().rev().map(|run| {
        let (word, style) = run.verdict.as_ref().map_or_else(|| ("?".into(), t.dim()), |v| verdict_look(v.outcome, t));
        let took = run
            .finished
            .map(|f| fmt_duration_ms(u64::try_from((f - run.started).num_milliseconds()).unwrap_or(0)))
            .unwrap_or_default();
        let summary = run
            .summary
            .as_ref()
            .map(|s| format!("{}/{} ok", s.succeeded, s.requests))
            .or_else(|| run.verdict.as_ref().and_then(|v| v.reasons.first().cloned()))
            .unwrap_or_default();
        Row::new([
            Cell::from(ctx.when(run.started, "%H:%M")),
            Cell::from(Span::styled(word, style)),
            Cell::from(took),
            Cell::from(summary),
        ])
    });
    let widths = [Constraint::Length(12), Constraint::Length(11), Constraint::Length(7), Constraint::Fill(1)];
    let table = Table::new(rows, widths)
        .header(Row::new(["WHEN", "VERDICT", "TOOK", "RESULT"]).style(t.header()))
        .row_highlight_style(if focused { t.selected() } else { Style::new() })
        .column_spacing(1);
    let mut state = TableState::default().with_selected(Some(history.index(test.history.len())));
    frame.render_stateful_widget(table, table_area, &mut state);
}

/// A finished run's report: every step with its duration and detail, the verdict and its
/// reasons, the figures, and where the full report is.
pub fn render_run_detail(frame: &mut Frame, area: Rect, app: &App, test: &str, run_id: &str, ctx: &ViewCtx) {
    let t = &ctx.theme;
    let run = app.state.test(test).and_then(|s| s.history.iter().find(|r| r.id == run_id));
    frame.render_widget(Clear, area);
    let block = Block::default()
        .borders(Borders::ALL)
        .border_type(BorderType::Double)
        .title(format!(" {test} · run {run_id} · Esc closes "));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let Some(run) = run else {
        frame.render_widget(Paragraph::new("This run is no longer in the history."), inner);
        return;
    };
    let mut lines = Vec::new();
    let (word, style) = run.verdict.as_ref().map_or_else(|| ("?".into(), t.dim()), |v| verdict_look(v.outcome, t));
    lines.push(Line::from(vec![
        Span::styled(word, style),
        Span::raw(format!("  started {} · target {}", ctx.when(run.started, "%H:%M:%S"), run.target)),
    ]));
    for reason in run.verdict.iter().flat_map(|v| v.reasons.iter()) {
        lines.push(Line::styled(format!("  {reason}"), t.bad()));
    }
    lines.push(Line::from(""));
    for step in &run.steps {
        let (symbol, style) = step_look(step.status, t, 0);
        let took = step.duration_ms.map(fmt_duration_ms).unwrap_or_default();
        lines.push(Line::from(vec![
            Span::styled(format!("{symbol} {:<16}", step.name), style),
            Span::raw(format!("{took:>8}  ")),
            Span::styled(step.detail.clone(), t.dim()),
        ]));
    }
    if let Some(s) = &run.summary {
        lines.push(Line::from(""));
        lines.push(Line::from(summary_text(test, s)));
    }
    if let Some(file) = &run.report_file {
        lines.push(Line::from(""));
        lines.push(Line::styled(format!("full report: {file}"), t.dim()));
    }
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), inner);
}
