//! The Tests pane: the configured tests, their last verdict, and the live probe figures of the
//! one running.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table, TableState, Wrap};

use super::app::App;
use super::theme::Theme;
use super::view::ViewCtx;
use crate::config::TestKind;
use crate::engine::{TestStatus, TestSummary, TestVerdict};

const SPINNER: [&str; 4] = ["◐", "◓", "◑", "◒"];

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
    let selected = app.tests_selected.min(tests.len() - 1);
    let detail = detail_lines(&tests[selected], ctx);
    let detail_height = (detail.len() as u16).min(area.height.saturating_sub(3));
    let [table_area, _, detail_area] =
        Layout::vertical([Constraint::Fill(1), Constraint::Length(1), Constraint::Length(detail_height)]).areas(area);

    let rows = tests.iter().map(|test| {
        let kind = match test.kind {
            TestKind::Deploy => "deploy",
            TestKind::Local => "local",
        };
        let (last, style) = verdict(test, t, ctx.spinner);
        let when = test.last.as_ref().filter(|_| test.running.is_none()).map(|r| {
            // The time today, the date before that: six columns either way.
            let local = ctx.local(r.ts);
            let format = if local.date_naive() == ctx.wall.date_naive() { "%H:%M" } else { "%b %d" };
            local.format(format).to_string()
        });
        Row::new([
            Cell::from(test.name.clone()),
            Cell::from(kind),
            Cell::from(test.model.clone()),
            Cell::from(Span::styled(last, style)),
            Cell::from(when.unwrap_or_default()),
        ])
    });
    let widths = [
        Constraint::Fill(2),
        Constraint::Length(6),
        Constraint::Fill(2),
        Constraint::Length(15),
        Constraint::Length(6),
    ];
    let table = Table::new(rows, widths)
        .header(Row::new(["TEST", "KIND", "MODEL", "LAST", "WHEN"]).style(t.header()))
        .row_highlight_style(if focused { t.selected() } else { Style::new() })
        .column_spacing(1);
    let mut state = TableState::default().with_selected(Some(selected));
    frame.render_stateful_widget(table, table_area, &mut state);
    frame.render_widget(Paragraph::new(detail).wrap(Wrap { trim: true }), detail_area);
}

/// Symbol and word of a test's state, readable without colour.
fn verdict(test: &TestStatus, t: &Theme, spinner: usize) -> (String, Style) {
    if let Some(run) = &test.running {
        let progress = run.progress.as_ref().map(|p| match p.planned {
            Some(n) => format!(" {}/{n}", p.done),
            None => format!(" {}", p.done),
        });
        return (format!("{} run{}", SPINNER[spinner % SPINNER.len()], progress.unwrap_or_default()), t.warn());
    }
    match test.last.as_ref().map(|r| r.verdict) {
        None => ("— not run".into(), t.dim()),
        Some(TestVerdict::Pass) => ("✔ pass".into(), t.good()),
        Some(TestVerdict::Fail) => ("✖ fail".into(), t.bad()),
        Some(TestVerdict::Cancelled) => ("◌ cancelled".into(), t.warn()),
    }
}

/// Under the table: the running test's live figures, or the selected test's last result.
fn detail_lines(test: &TestStatus, ctx: &ViewCtx) -> Vec<Line<'static>> {
    let t = &ctx.theme;
    if let Some(run) = &test.running {
        let Some(p) = &run.progress else {
            return vec![Line::from(format!("▶ {} · probing {}…", test.name, run.target))];
        };
        let failures: u64 = p.outcomes.iter().filter(|(o, _)| o.name() != "success").map(|(_, n)| n).sum();
        return vec![Line::from(vec![
            Span::raw(format!("▶ {} · {} in flight · ", test.name, p.in_flight)),
            Span::raw(p.ttft_p50_ms.map(|v| format!("TTFT p50 {v:.0} ms · ")).unwrap_or_default()),
            Span::raw(format!("{:.0} tok/s · {:.1} req/s · ", p.output_tokens_per_s, p.requests_per_s)),
            Span::styled(format!("{failures} failed"), if failures > 0 { t.bad() } else { Style::new() }),
        ])];
    }
    let Some(last) = &test.last else {
        return vec![Line::styled(format!("{}: Enter runs it against {}", test.name, test.model), t.dim())];
    };
    let mut lines = Vec::new();
    if let Some(s) = &last.summary {
        lines.push(Line::from(summary_text(&test.name, s)));
    }
    if let Some(reason) = &last.reason {
        lines.push(Line::styled(format!("{}: {reason}", test.name), t.bad()));
    }
    if let Some(file) = last.summary.as_ref().and_then(|s| s.report_file.as_ref()) {
        lines.push(Line::styled(format!("report: {file}"), t.dim()));
    }
    lines
}

fn summary_text(name: &str, s: &TestSummary) -> String {
    let mut parts = vec![format!("{name}: {}/{} ok", s.succeeded, s.requests)];
    if let Some(v) = s.latency_p50_ms {
        parts.push(format!("p50 {v:.0} ms"));
    }
    if let Some(v) = s.ttft_p50_ms {
        parts.push(format!("TTFT p50 {v:.0} ms"));
    }
    parts.push(format!("{:.0} tok/s", s.output_tokens_per_s));
    if let Some(rate) = s.expected_answer_rate {
        parts.push(format!("answers {:.0}% right", rate * 100.0));
    }
    parts.join(" · ")
}
