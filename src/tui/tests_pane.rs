//! The Tests pane: the configured tests. Running them arrives with the test runner; until a
//! test has run, the pane says so instead of inventing results.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::Style;
use ratatui::text::Line;
use ratatui::widgets::{Cell, Paragraph, Row, Table, TableState, Wrap};

use super::app::App;
use super::view::ViewCtx;
use crate::config::TestKind;

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
    let rows = tests.iter().map(|test| {
        let kind = match test.kind {
            TestKind::Deploy => "deploy",
            TestKind::Local => "local",
        };
        Row::new([
            Cell::from(test.name.clone()),
            Cell::from(kind),
            Cell::from(test.model.clone()),
            Cell::from(ratatui::text::Span::styled("— not run", t.dim())),
        ])
    });
    let widths = [Constraint::Fill(2), Constraint::Length(7), Constraint::Fill(2), Constraint::Length(10)];
    let table = Table::new(rows, widths)
        .header(Row::new(["TEST", "KIND", "MODEL", "LAST"]).style(t.header()))
        .row_highlight_style(if focused { t.selected() } else { Style::new() })
        .column_spacing(1);
    let mut state = TableState::default().with_selected(Some(app.tests_selected.min(tests.len() - 1)));
    frame.render_stateful_widget(table, area, &mut state);
}
