//! One key map for every pane, as data: the help overlay and the footer are generated from it.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pane {
    Models,
    Gpus,
    Tests,
    Logs,
}

impl Pane {
    pub const ALL: [Pane; 4] = [Pane::Models, Pane::Gpus, Pane::Tests, Pane::Logs];

    pub fn number(self) -> usize {
        match self {
            Pane::Models => 1,
            Pane::Gpus => 2,
            Pane::Tests => 3,
            Pane::Logs => 4,
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Pane::Models => "Models",
            Pane::Gpus => "GPUs",
            Pane::Tests => "Tests",
            Pane::Logs => "Logs",
        }
    }

    pub fn next(self) -> Pane {
        Pane::ALL[self.number() % 4]
    }

    pub fn prev(self) -> Pane {
        Pane::ALL[(self.number() + 2) % 4]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    FocusNext,
    FocusPrev,
    Focus(Pane),
    Zoom,
    Help,
    Close,
    Quit,
    ForceQuit,
    Up,
    Down,
    Top,
    Bottom,
    PageUp,
    PageDown,
    Detail,
    StartModel,
    StopModel,
    RestartModel,
    ShowLogs,
    RunTest,
    CancelTest,
    /// The selected test's last runs (and back).
    History,
    /// The Sessions view: rented GPUs.
    Sessions,
}

/// Where a binding applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Global,
    /// Lists: Models, GPUs, Tests.
    Lists,
    Pane(Pane),
}

pub struct Binding {
    pub keys: &'static str,
    pub action: Option<Action>,
    pub scope: Scope,
    pub help: &'static str,
    /// Shown in the footer (short form) when the scope applies.
    pub footer: Option<&'static str>,
}

/// Every key, in the order the help overlay lists them. Bindings without an action are handled
/// by a pane's own component (the Logs pane) and are listed here so help shows them.
pub const BINDINGS: &[Binding] = &[
    Binding {
        keys: "Tab / Shift-Tab",
        action: None,
        scope: Scope::Global,
        help: "focus next / previous pane",
        footer: Some("Tab focus"),
    },
    Binding { keys: "1-4", action: None, scope: Scope::Global, help: "focus pane 1-4", footer: Some("1-4 pane") },
    Binding {
        keys: "z",
        action: Some(Action::Zoom),
        scope: Scope::Global,
        help: "zoom the focused pane and back",
        footer: Some("z zoom"),
    },
    Binding { keys: "?", action: Some(Action::Help), scope: Scope::Global, help: "this help", footer: Some("? help") },
    Binding {
        keys: "S",
        action: Some(Action::Sessions),
        scope: Scope::Global,
        help: "rented GPUs; in it x destroy, + extend, Esc back",
        footer: None,
    },
    Binding {
        keys: "Esc",
        action: Some(Action::Close),
        scope: Scope::Global,
        help: "close the overlay / detail / search",
        footer: None,
    },
    Binding {
        keys: "q",
        action: Some(Action::Quit),
        scope: Scope::Global,
        help: "quit (asks first while models or tests run)",
        footer: Some("q quit"),
    },
    Binding {
        keys: "Ctrl-C",
        action: Some(Action::ForceQuit),
        scope: Scope::Global,
        help: "quit (asks like q; Ctrl-C again quits at once)",
        footer: None,
    },
    Binding { keys: "j/k, ↓/↑", action: None, scope: Scope::Lists, help: "move in lists", footer: None },
    Binding {
        keys: "g/G, PgUp/PgDn",
        action: None,
        scope: Scope::Lists,
        help: "first / last row, page up / down",
        footer: None,
    },
    Binding {
        keys: "Enter",
        action: Some(Action::Detail),
        scope: Scope::Lists,
        help: "detail of the selected row",
        footer: Some("Enter detail"),
    },
    Binding {
        keys: "s",
        action: Some(Action::StartModel),
        scope: Scope::Pane(Pane::Models),
        help: "start the selected model",
        footer: Some("s start"),
    },
    Binding {
        keys: "x",
        action: Some(Action::StopModel),
        scope: Scope::Pane(Pane::Models),
        help: "stop the selected model (asks first)",
        footer: Some("x stop"),
    },
    Binding {
        keys: "r",
        action: Some(Action::RestartModel),
        scope: Scope::Pane(Pane::Models),
        help: "restart the selected model (asks first)",
        footer: Some("r restart"),
    },
    Binding {
        keys: "l",
        action: Some(Action::ShowLogs),
        scope: Scope::Pane(Pane::Models),
        help: "logs of the selected model",
        footer: Some("l logs"),
    },
    Binding {
        keys: "Enter",
        action: Some(Action::RunTest),
        scope: Scope::Pane(Pane::Tests),
        help: "run the selected test",
        footer: Some("Enter run"),
    },
    Binding {
        keys: "c",
        action: Some(Action::CancelTest),
        scope: Scope::Pane(Pane::Tests),
        help: "cancel the running test (asks first)",
        footer: Some("c cancel"),
    },
    Binding {
        keys: "l",
        action: Some(Action::ShowLogs),
        scope: Scope::Pane(Pane::Tests),
        help: "logs of the selected test",
        footer: Some("l logs"),
    },
    Binding {
        keys: "h",
        action: Some(Action::History),
        scope: Scope::Pane(Pane::Tests),
        help: "last runs of the selected test (Enter: report)",
        footer: Some("h history"),
    },
];

/// The Logs pane's own keys (handled by its component), for help and the footer.
pub const LOG_KEYS: &[(&str, &str)] = &[
    ("j/k ↓/↑ PgUp/PgDn ^D/^U", "scroll (scrolling up pauses follow)"),
    ("g / G", "oldest line / newest line and follow"),
    ("F", "resume follow"),
    ("/", "search; Enter keeps it, Esc clears it"),
    ("Ctrl-R (in search)", "toggle regex"),
    ("n / N", "older / newer match"),
    ("e / E", "older / newer error or OOM line"),
    ("s", "pick the source (all, or one)"),
    ("v / V", "raise / lower the minimum level"),
    ("c", "compact / raw lines"),
    ("w", "wrap long lines"),
    ("t", "show / hide timestamps"),
    ("y", "copy the selected line (OSC 52, works over SSH)"),
    ("o", "open the source's log file in $PAGER"),
];

/// Maps a key to an action, given the focused pane. `None`: not a key of the app's (the
/// focused pane's component may still want it).
pub fn action_for(key: KeyEvent, focus: Pane) -> Option<Action> {
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    let global = match key.code {
        KeyCode::Char('c') if ctrl => Some(Action::ForceQuit),
        KeyCode::Tab => Some(Action::FocusNext),
        KeyCode::BackTab => Some(Action::FocusPrev),
        KeyCode::Char(c @ '1'..='4') if !ctrl => Some(Action::Focus(Pane::ALL[(c as u8 - b'1') as usize])),
        KeyCode::Char('z') if !ctrl => Some(Action::Zoom),
        KeyCode::Char('?') => Some(Action::Help),
        KeyCode::Char('S') if !ctrl => Some(Action::Sessions),
        KeyCode::Char('q') if !ctrl => Some(Action::Quit),
        KeyCode::Esc => Some(Action::Close),
        _ => None,
    };
    if global.is_some() || focus == Pane::Logs {
        return global;
    }
    match (focus, key.code) {
        (Pane::Tests, KeyCode::Enter) => return Some(Action::RunTest),
        (Pane::Tests, KeyCode::Char('c')) if !ctrl => return Some(Action::CancelTest),
        (Pane::Tests, KeyCode::Char('h')) if !ctrl => return Some(Action::History),
        _ => {}
    }
    let list = match key.code {
        KeyCode::Char('j') | KeyCode::Down => Some(Action::Down),
        KeyCode::Char('k') | KeyCode::Up => Some(Action::Up),
        KeyCode::Char('g') | KeyCode::Home => Some(Action::Top),
        KeyCode::Char('G') | KeyCode::End => Some(Action::Bottom),
        KeyCode::PageUp => Some(Action::PageUp),
        KeyCode::PageDown => Some(Action::PageDown),
        KeyCode::Enter => Some(Action::Detail),
        KeyCode::Char('l') if matches!(focus, Pane::Models | Pane::Tests) => Some(Action::ShowLogs),
        _ => None,
    };
    if list.is_some() {
        return list;
    }
    if ctrl {
        return None;
    }
    match (focus, key.code) {
        (Pane::Models, KeyCode::Char('s')) => Some(Action::StartModel),
        (Pane::Models, KeyCode::Char('x')) => Some(Action::StopModel),
        (Pane::Models, KeyCode::Char('r')) => Some(Action::RestartModel),
        _ => None,
    }
}

/// Hints every pane's footer ends with, most useful first (the footer drops hints from the
/// end when the terminal is narrow).
pub const GLOBAL_HINTS: [&str; 5] = ["? help", "q quit", "Tab focus", "z zoom", "1-4 pane"];

/// The key hints of a list pane (the Logs pane's component gives its own).
pub fn list_hints(focus: Pane) -> Vec<&'static str> {
    BINDINGS
        .iter()
        .filter(|b| match b.scope {
            Scope::Global => false,
            Scope::Lists => !(focus == Pane::Tests && b.action == Some(Action::Detail)),
            Scope::Pane(p) => p == focus,
        })
        .filter_map(|b| b.footer)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn focus_cycles_through_all_panes() {
        let mut p = Pane::Models;
        for _ in 0..4 {
            p = p.next();
        }
        assert_eq!(p, Pane::Models);
        assert_eq!(Pane::Models.prev(), Pane::Logs);
        assert_eq!(Pane::Logs.next(), Pane::Models);
    }

    #[test]
    fn model_keys_only_apply_to_the_models_pane() {
        assert_eq!(action_for(key(KeyCode::Char('s')), Pane::Models), Some(Action::StartModel));
        assert_eq!(action_for(key(KeyCode::Char('s')), Pane::Gpus), None);
        // The Logs pane's component owns its letters.
        assert_eq!(action_for(key(KeyCode::Char('j')), Pane::Logs), None);
        assert_eq!(action_for(key(KeyCode::Char('3')), Pane::Logs), Some(Action::Focus(Pane::Tests)));
        assert_eq!(
            action_for(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL), Pane::Logs),
            Some(Action::ForceQuit)
        );
    }
}
