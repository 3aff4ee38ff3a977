//! The TUI's model: the engine's [`State`] as this viewer last saw it, plus what only this
//! viewer cares about (focus, selection, overlays, its own log rings). `update` never does I/O:
//! it returns [`Effect`]s for the loop to carry out.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crossterm::event::{KeyEvent, KeyEventKind};

use super::keymap::{Action, Pane, action_for};
use super::logs_view::{LogEffect, LogView, LogViewOutcome};
use crate::engine::{Command, Event, ModelClocks, ModelState, Severity, Snapshot, State};
use crate::logs::LogSource;

/// How long a message in the footer stays.
const TOAST_FOR: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overlay {
    None,
    Help,
    Confirm(Confirm),
    ModelDetail(String),
    GpuDetail(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirm {
    Stop(String),
    Restart(String),
    CancelTest(String),
    Quit { active_models: usize, running_tests: usize },
}

/// How every question is answered; shown under it (also on a too-small screen).
pub const CONFIRM_ANSWERS: &str = "y / Enter: yes    any other key: no";

impl Confirm {
    pub fn question(&self) -> String {
        match self {
            Confirm::Stop(id) => format!("Stop {id}?"),
            Confirm::Restart(id) => format!("Restart {id}?"),
            Confirm::CancelTest(name) => format!("Cancel the running test {name}?"),
            Confirm::Quit { active_models, running_tests } => {
                let mut lost = Vec::new();
                match active_models {
                    0 => {}
                    1 => lost.push("the running model will be stopped".to_owned()),
                    n => lost.push(format!("{n} running models will be stopped")),
                }
                // "… will be stopped and the running test cancelled" shares its "will be".
                let will_be = if lost.is_empty() { "will be " } else { "" };
                match running_tests {
                    0 => {}
                    1 => lost.push(format!("the running test {will_be}cancelled")),
                    n => lost.push(format!("{n} running tests {will_be}cancelled")),
                }
                format!("Quit? {}.", capitalised(&lost.join(" and ")))
            }
        }
    }
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// Work for the event loop.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Send(Command),
    Quit,
    Log(LogEffect),
}

#[derive(Debug, Clone)]
pub struct Toast {
    pub text: String,
    pub severity: Severity,
    pub at: Instant,
}

/// Where this viewer is looking from: shown in the header.
#[derive(Debug, Clone)]
pub struct Origin {
    /// `in-process`, `demo`, or the daemon's address.
    pub mode: String,
}

pub struct App {
    pub state: State,
    pub origin: Origin,
    pub focus: Pane,
    pub zoomed: bool,
    pub overlay: Overlay,
    pub models_selected: usize,
    pub gpus_selected: usize,
    pub tests_selected: usize,
    pub logs: LogView,
    pub toast: Option<Toast>,
    /// When this viewer learned of each model's current state: uptimes and countdowns count on
    /// from here, never from the engine's clock.
    pub clocks: ModelClocks,
    /// First line shown of the help overlay (it scrolls on small terminals).
    pub help_scroll: usize,
    /// Lines per source this viewer never received (it fell behind), already counted.
    log_gaps: HashMap<LogSource, u64>,
}

impl App {
    pub fn new(snapshot: Snapshot, origin: Origin, ring_lines: usize) -> Self {
        let mut logs = LogView::new(ring_lines);
        logs.seed(&snapshot.log_tail);
        let clocks = ModelClocks::from_snapshot(&snapshot);
        Self {
            state: snapshot.state,
            origin,
            focus: Pane::Models,
            zoomed: false,
            overlay: Overlay::None,
            models_selected: 0,
            gpus_selected: 0,
            tests_selected: 0,
            logs,
            toast: None,
            clocks,
            help_scroll: 0,
            log_gaps: HashMap::new(),
        }
    }

    /// Folds one engine event into this viewer.
    pub fn on_event(&mut self, event: &Event) {
        self.state.apply(event);
        match event {
            Event::Log(batch) => self.logs.push_batch(batch),
            Event::Model(m) => {
                self.clocks.on_model_event(m, Instant::now());
            }
            Event::Gpu(_) => self.clamp_selections(),
            _ => {}
        }
    }

    /// Keeps every selection on an existing row when a list got shorter (a GPU fell off the
    /// bus, a daemon restarted with fewer models).
    fn clamp_selections(&mut self) {
        let last = |len: usize| len.saturating_sub(1);
        self.models_selected = self.models_selected.min(last(self.state.models.len()));
        self.gpus_selected = self.gpus_selected.min(last(self.state.gpus.gpus.len()));
        self.tests_selected = self.tests_selected.min(last(self.state.tests.len()));
    }

    /// After falling behind: start again from a fresh snapshot, counting what was missed.
    pub fn resync(&mut self, snapshot: Snapshot) {
        let mut missed = 0;
        for (source, stats) in &snapshot.state.logs {
            let seen = self.logs.counters_of(source).lines;
            let known_gap = self.log_gaps.entry(source.clone()).or_default();
            let gap = stats.lines.saturating_sub(seen + *known_gap);
            *known_gap += gap;
            missed += gap;
        }
        self.logs.note_lagged(missed);
        self.clocks = ModelClocks::from_snapshot(&snapshot);
        self.state = snapshot.state;
        self.clamp_selections();
    }

    pub fn show_toast(&mut self, text: impl Into<String>, severity: Severity) {
        self.toast = Some(Toast { text: text.into(), severity, at: Instant::now() });
    }

    /// Drops an expired toast; true if the screen changed.
    pub fn expire_toast(&mut self) -> bool {
        if self.toast.as_ref().is_some_and(|t| t.at.elapsed() >= TOAST_FOR) {
            self.toast = None;
            return true;
        }
        false
    }

    pub fn active_models(&self) -> usize {
        self.state.models.iter().filter(|m| m.state.is_active()).count()
    }

    pub fn running_tests(&self) -> usize {
        self.state.tests.iter().filter(|t| t.running.is_some()).count()
    }

    pub fn selected_model(&self) -> Option<&crate::engine::ModelStatus> {
        self.state.models.get(self.models_selected)
    }

    pub fn on_key(&mut self, key: KeyEvent) -> Vec<Effect> {
        if key.kind == KeyEventKind::Release {
            return Vec::new();
        }
        if !matches!(self.overlay, Overlay::None) {
            return self.on_overlay_key(key);
        }
        if self.focus == Pane::Logs && (self.logs.is_capturing_input() || key.code == crossterm::event::KeyCode::Esc) {
            // Esc first clears the pane's search; only then does it close or unzoom.
            match self.logs.handle_key(key) {
                LogViewOutcome::Effect(e) => return vec![Effect::Log(e)],
                LogViewOutcome::Consumed => return Vec::new(),
                LogViewOutcome::NotConsumed => {}
            }
        }
        match action_for(key, self.focus) {
            Some(action) => self.on_action(action),
            None if self.focus == Pane::Logs => self.forward_to_logs(key),
            None => Vec::new(),
        }
    }

    fn forward_to_logs(&mut self, key: KeyEvent) -> Vec<Effect> {
        match self.logs.handle_key(key) {
            LogViewOutcome::Effect(e) => vec![Effect::Log(e)],
            LogViewOutcome::Consumed | LogViewOutcome::NotConsumed => Vec::new(),
        }
    }

    fn on_overlay_key(&mut self, key: KeyEvent) -> Vec<Effect> {
        use crossterm::event::KeyCode;
        if let Overlay::Confirm(confirm) = &self.overlay {
            let confirm = confirm.clone();
            return match key.code {
                KeyCode::Char('y') | KeyCode::Char('Y') | KeyCode::Enter => {
                    self.overlay = Overlay::None;
                    self.confirmed(confirm)
                }
                // Ctrl-C at the quit question is the impatient "yes"; at any other question it
                // asks the quit question instead.
                KeyCode::Char('c') if key.modifiers.contains(crossterm::event::KeyModifiers::CONTROL) => {
                    self.on_action(Action::ForceQuit)
                }
                _ => {
                    self.overlay = Overlay::None;
                    Vec::new()
                }
            };
        }
        if self.overlay == Overlay::Help {
            use crossterm::event::KeyCode;
            match key.code {
                KeyCode::Char('j') | KeyCode::Down => self.help_scroll += 1,
                KeyCode::Char('k') | KeyCode::Up => self.help_scroll = self.help_scroll.saturating_sub(1),
                KeyCode::PageDown => self.help_scroll += 10,
                KeyCode::PageUp => self.help_scroll = self.help_scroll.saturating_sub(10),
                _ => {}
            }
        }
        match action_for(key, self.focus) {
            Some(Action::ForceQuit) => self.on_action(Action::ForceQuit),
            Some(Action::Help) if self.overlay == Overlay::Help => {
                self.overlay = Overlay::None;
                Vec::new()
            }
            Some(Action::Close | Action::Quit) => {
                self.overlay = Overlay::None;
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn confirmed(&mut self, confirm: Confirm) -> Vec<Effect> {
        match confirm {
            Confirm::Stop(model) => vec![Effect::Send(Command::StopModel { model })],
            Confirm::Restart(model) => vec![Effect::Send(Command::RestartModel { model })],
            Confirm::CancelTest(test) => vec![Effect::Send(Command::CancelTest { test })],
            Confirm::Quit { .. } => {
                vec![Effect::Quit]
            }
        }
    }

    pub fn on_action(&mut self, action: Action) -> Vec<Effect> {
        match action {
            Action::FocusNext => self.focus = self.focus.next(),
            Action::FocusPrev => self.focus = self.focus.prev(),
            Action::Focus(p) => self.focus = p,
            Action::Zoom => self.zoomed = !self.zoomed,
            Action::Help => {
                self.help_scroll = 0;
                self.overlay = Overlay::Help;
            }
            Action::Close => {
                if self.zoomed {
                    self.zoomed = false;
                }
            }
            Action::ForceQuit if matches!(self.overlay, Overlay::Confirm(Confirm::Quit { .. })) => {
                return vec![Effect::Quit];
            }
            Action::Quit | Action::ForceQuit => {
                let (active_models, running_tests) = (self.active_models(), self.running_tests());
                if active_models + running_tests > 0 {
                    self.overlay = Overlay::Confirm(Confirm::Quit { active_models, running_tests });
                } else {
                    return vec![Effect::Quit];
                }
            }
            Action::Up | Action::Down | Action::Top | Action::Bottom | Action::PageUp | Action::PageDown => {
                self.move_selection(action)
            }
            Action::Detail => self.open_detail(),
            Action::StartModel => {
                if let Some(m) = self.selected_model() {
                    return vec![Effect::Send(Command::StartModel { model: m.id.clone() })];
                }
            }
            Action::StopModel => {
                if let Some(m) = self.selected_model() {
                    self.overlay = Overlay::Confirm(Confirm::Stop(m.id.clone()));
                }
            }
            Action::RestartModel => {
                if let Some(m) = self.selected_model() {
                    self.overlay = Overlay::Confirm(Confirm::Restart(m.id.clone()));
                }
            }
            Action::ShowLogs => self.show_logs_of_selection(),
            Action::RunTest => {
                if let Some(t) = self.state.tests.get(self.tests_selected) {
                    return vec![Effect::Send(Command::RunTest { test: t.name.clone() })];
                }
            }
            Action::CancelTest => {
                let running = self.state.tests.iter().find(|t| t.running.is_some());
                match running {
                    Some(t) => self.overlay = Overlay::Confirm(Confirm::CancelTest(t.name.clone())),
                    None => self.show_toast("no test is running", Severity::Warning),
                }
            }
        }
        Vec::new()
    }

    fn list_len(&self) -> usize {
        match self.focus {
            Pane::Models => self.state.models.len(),
            Pane::Gpus => self.state.gpus.gpus.len(),
            Pane::Tests => self.state.tests.len(),
            Pane::Logs => 0,
        }
    }

    fn move_selection(&mut self, action: Action) {
        let len = self.list_len();
        let selected = match self.focus {
            Pane::Models => &mut self.models_selected,
            Pane::Gpus => &mut self.gpus_selected,
            Pane::Tests => &mut self.tests_selected,
            Pane::Logs => return,
        };
        let last = len.saturating_sub(1);
        *selected = match action {
            Action::Up => selected.saturating_sub(1),
            Action::Down => (*selected + 1).min(last),
            Action::Top => 0,
            Action::Bottom => last,
            Action::PageUp => selected.saturating_sub(10),
            Action::PageDown => (*selected + 10).min(last),
            _ => *selected,
        };
    }

    fn open_detail(&mut self) {
        match self.focus {
            Pane::Models => {
                if let Some(m) = self.selected_model() {
                    self.overlay = Overlay::ModelDetail(m.id.clone());
                }
            }
            Pane::Gpus if !self.state.gpus.gpus.is_empty() => self.overlay = Overlay::GpuDetail(self.gpus_selected),
            _ => {}
        }
    }

    fn show_logs_of_selection(&mut self) {
        let source = match self.focus {
            Pane::Models => self.selected_model().map(|m| LogSource::Model(m.id.clone())),
            Pane::Tests => self.state.tests.get(self.tests_selected).map(|t| LogSource::Test(t.name.clone())),
            _ => None,
        };
        if let Some(source) = source {
            self.logs.set_source_filter(Some(source));
            self.logs.follow();
            self.focus = Pane::Logs;
        }
    }

    /// Anything on screen that moves by itself (spinners, countdowns)?
    pub fn has_live_timers(&self) -> bool {
        self.state
            .models
            .iter()
            .any(|m| matches!(m.state, ModelState::Starting | ModelState::Backoff | ModelState::Stopping))
            || self.state.tests.iter().any(|t| t.running.is_some())
    }
}

#[cfg(test)]
mod tests {
    use crossterm::event::{KeyCode, KeyModifiers};

    use super::*;
    use crate::engine::TestRun;

    fn app(models_running: usize, test_running: bool) -> App {
        let yaml = "models:\n  - { id: a, command: x, port: 9001 }\n  - { id: b, command: x, port: 9002 }\n\
                    tests:\n  - { name: t, kind: local, model: a }\n";
        let config = crate::config::load_str(yaml, "test").expect("config");
        let mut state = State::new(&config, None, "host".into());
        for m in state.models.iter_mut().take(models_running) {
            m.state = ModelState::Ready;
        }
        if test_running {
            state.tests[0].running = Some(TestRun::default());
        }
        App::new(Snapshot { state, log_tail: Default::default() }, Origin { mode: "test".into() }, 100)
    }

    fn press(app: &mut App, code: KeyCode) -> Vec<Effect> {
        app.on_key(KeyEvent::new(code, KeyModifiers::NONE))
    }

    fn ctrl_c(app: &mut App) -> Vec<Effect> {
        app.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL))
    }

    #[test]
    fn selections_stay_on_rows_that_exist() {
        let mut app = app(0, false);
        app.models_selected = 1;
        app.tests_selected = 5;
        let mut snapshot = Snapshot { state: app.state.clone(), log_tail: Default::default() };
        snapshot.state.models.truncate(1);
        app.resync(snapshot);
        assert_eq!((app.models_selected, app.tests_selected), (0, 0));
        assert_eq!(app.selected_model().map(|m| m.id.as_str()), Some("a"));
    }

    #[test]
    fn quitting_with_nothing_running_needs_no_question() {
        assert_eq!(press(&mut app(0, false), KeyCode::Char('q')), [Effect::Quit]);
        assert_eq!(ctrl_c(&mut app(0, false)), [Effect::Quit]);
    }

    #[test]
    fn ctrl_c_asks_like_q_and_a_second_ctrl_c_quits() {
        let mut app = app(2, false);
        assert!(ctrl_c(&mut app).is_empty());
        let Overlay::Confirm(question) = &app.overlay else { panic!("no question: {:?}", app.overlay) };
        assert_eq!(question.question(), "Quit? 2 running models will be stopped.");
        assert_eq!(ctrl_c(&mut app), [Effect::Quit]);
    }

    #[test]
    fn a_running_test_alone_is_reason_to_ask() {
        let mut app = app(0, true);
        assert!(press(&mut app, KeyCode::Char('q')).is_empty());
        let Overlay::Confirm(question) = &app.overlay else { panic!("no question") };
        assert_eq!(question.question(), "Quit? The running test will be cancelled.");
        assert!(press(&mut app, KeyCode::Char('n')).is_empty(), "any other key is no");
        assert_eq!(app.overlay, Overlay::None);
    }

    #[test]
    fn ctrl_c_at_another_question_asks_the_quit_question() {
        let mut app = app(1, true);
        assert_eq!(press(&mut app, KeyCode::Char('x')), []);
        assert!(matches!(app.overlay, Overlay::Confirm(Confirm::Stop(_))));
        assert!(ctrl_c(&mut app).is_empty());
        let Overlay::Confirm(question) = &app.overlay else { panic!("no question") };
        assert_eq!(question.question(), "Quit? The running model will be stopped and the running test cancelled.");
    }
}
