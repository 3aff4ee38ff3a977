//! The Sessions view (`S`): our rented GPUs, each with its owner run or why it is an orphan,
//! its live cost, and `x` destroy (asks first), `+` extend (asks for hours), `Esc` back.

use crossterm::event::{KeyCode, KeyEvent};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Borders, Clear, Paragraph};

use super::view::ViewCtx;
use crate::protocol::{Command, RentedSession, SessionOwner, ShopperHealth, ShopperStatus};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionsView {
    pub selected: usize,
    /// Typing the hours to extend the selected session by.
    pub extend_hours: Option<String>,
}

/// What a key in the view asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionsOutcome {
    Stay,
    Close,
    /// Destroy this session (after the question).
    AskDestroy(String),
    Send(Command),
}

impl SessionsView {
    pub fn on_key(&mut self, key: KeyEvent, shopper: &ShopperStatus) -> SessionsOutcome {
        let sessions: Vec<&RentedSession> = shopper.sessions.iter().collect();
        self.selected = self.selected.min(sessions.len().saturating_sub(1));
        let current = sessions.get(self.selected).map(|s| s.id.clone());
        if let Some(hours) = &mut self.extend_hours {
            match key.code {
                KeyCode::Char(c) if c.is_ascii_digit() && hours.len() < 2 => hours.push(c),
                KeyCode::Backspace => {
                    hours.pop();
                }
                KeyCode::Enter => {
                    let n = hours.parse::<u32>().unwrap_or(0);
                    self.extend_hours = None;
                    if let (Some(session), true) = (current, n > 0) {
                        return SessionsOutcome::Send(Command::ExtendSession { session, hours: n });
                    }
                }
                KeyCode::Esc => self.extend_hours = None,
                _ => {}
            }
            return SessionsOutcome::Stay;
        }
        match key.code {
            KeyCode::Esc | KeyCode::Char('q') | KeyCode::Char('S') => SessionsOutcome::Close,
            KeyCode::Char('j') | KeyCode::Down => {
                self.selected = (self.selected + 1).min(sessions.len().saturating_sub(1));
                SessionsOutcome::Stay
            }
            KeyCode::Char('k') | KeyCode::Up => {
                self.selected = self.selected.saturating_sub(1);
                SessionsOutcome::Stay
            }
            KeyCode::Char('x') => current.map_or(SessionsOutcome::Stay, SessionsOutcome::AskDestroy),
            KeyCode::Char('+') if current.is_some() => {
                self.extend_hours = Some(String::new());
                SessionsOutcome::Stay
            }
            _ => SessionsOutcome::Stay,
        }
    }
}

pub fn render(frame: &mut Frame, area: Rect, view: &SessionsView, shopper: &ShopperStatus, ctx: &ViewCtx) {
    let t = &ctx.theme;
    frame.render_widget(Clear, area);
    let health = match &shopper.health {
        ShopperHealth::Ok => "● ok".to_owned(),
        ShopperHealth::Unknown => "○ not checked".to_owned(),
        ShopperHealth::NotUsed => "○ not used".to_owned(),
        ShopperHealth::Unavailable { reason } => format!("✖ unavailable: {reason}"),
    };
    let active = shopper.active().count();
    let title = format!(
        " Sessions · shopper {health} · consumer {} · {active} active · ${:.2}/h ",
        shopper.consumer_id,
        shopper.dollars_per_hour()
    );
    let title_style = if shopper.needs_attention() { t.bad() } else { t.header() };
    let block = Block::default()
        .borders(Borders::ALL)
        .border_type(BorderType::Double)
        .title(Span::styled(title, title_style))
        .title_bottom(" x destroy · + extend · j/k move · Esc back ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let now = ctx.wall.to_utc();
    let mut lines = vec![Line::styled(
        format!(
            "{:<6} {:<10} {:<10} {:<11} {:>5} {:>7} {:>5} {:>7}  {}",
            "SESSION", "PROVIDER", "GPU", "STATUS", "AGE", "EXPIRES", "$/h", "COST", "OWNER"
        ),
        t.header(),
    )];
    if shopper.sessions.is_empty() {
        lines.push(Line::styled("  no rented sessions for this consumer", t.dim()));
    }
    for (i, s) in shopper.sessions.iter().enumerate() {
        let (owner, owner_style) = owner_text(s, ctx);
        let (symbol, status_style) = match s.status.as_str() {
            "running" => ("●", t.good()),
            "pending" | "provisioning" | "stopping" => ("◐", t.warn()),
            "failed" => ("✖", t.bad()),
            _ => ("○", t.dim()),
        };
        let expires = if s.is_active() && s.status != "stopping" { age(s.expires_at - now) } else { "—".into() };
        let row = format!("{:<6} {:<10} {:<10} ", s.short_id(), clip(&s.provider, 10), clip(&s.gpu_type, 10),);
        let rest = format!(
            " {:>5} {:>7} {:>5.2} {:>7}  ",
            age(now - s.created_at),
            expires,
            s.price_per_hour,
            format!("${:.2}", s.cost_so_far(now))
        );
        let selected = if i == view.selected { t.selected() } else { Style::new() };
        lines.push(Line::from(vec![
            Span::styled(row, selected),
            Span::styled(format!("{symbol} {:<9}", s.status), status_style.patch(selected)),
            Span::styled(rest, selected),
            Span::styled(owner, owner_style.patch(selected)),
        ]));
    }
    if let Some(hours) = &view.extend_hours {
        lines.push(Line::from(""));
        lines.push(Line::styled(
            format!("Extend by how many hours? {hours}▏ (Enter to extend, Esc to cancel)"),
            t.warn(),
        ));
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

fn owner_text(s: &RentedSession, ctx: &ViewCtx) -> (String, Style) {
    let t = &ctx.theme;
    if let Some(since) = s.stuck_since {
        let note = s.note.as_deref().unwrap_or("destroy retried");
        return (format!("STUCK stopping since {} — {note}", ctx.when(since, "%H:%M")), t.bad());
    }
    match &s.owner {
        SessionOwner::Run { test, run_id, this_engine } => {
            // Run ids end in 6 random hex digits: enough to tell runs apart here.
            let tail = run_id.rsplit('-').next().unwrap_or(run_id);
            let whose = if *this_engine { "" } else { " (another llmdeck)" };
            (format!("{test} run {tail}{whose}"), Style::new())
        }
        SessionOwner::Kept { test } => (format!("kept by {test} (keep_session) — billing"), t.warn()),
        SessionOwner::Orphan { why } => {
            let note = s.note.as_ref().map(|n| format!(" · {n}")).unwrap_or_default();
            (format!("ORPHAN — {why}{note}"), t.bad())
        }
    }
}

/// `12m`, `3h02m`, `2d04h`.
fn age(d: chrono::Duration) -> String {
    let mins = d.num_minutes().max(0);
    match mins {
        m if m < 60 => format!("{m}m"),
        m if m < 48 * 60 => format!("{}h{:02}m", m / 60, m % 60),
        m => format!("{}d{:02}h", m / (24 * 60), (m / 60) % 24),
    }
}

fn clip(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// The header's part about rentals: `· 2 active · $3.90/h`, red when something is orphaned
/// or stuck; nothing when no session is active.
pub fn header_part(shopper: &ShopperStatus, ctx: &ViewCtx) -> Option<(String, Style)> {
    let active = shopper.active().count();
    if active == 0 {
        return None;
    }
    let style = if shopper.needs_attention() { ctx.theme.bad() } else { Style::new() };
    let mut text = format!(" · {active} active · ${:.2}/h", shopper.dollars_per_hour());
    if shopper.needs_attention() {
        text.push_str(" · S sessions");
    }
    Some((text, style))
}
