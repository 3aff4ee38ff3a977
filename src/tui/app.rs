//! The TUI's model: the engine's [`State`] as this viewer last saw it, plus what only this
//! viewer cares about (focus, selection, overlays, its own log rings). `update` never does I/O:
//! it returns [`Effect`]s for the loop to carry out.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crossterm::event::{KeyEvent, KeyEventKind};

use super::Exit;
use super::gpus::GpusPane;
use super::keymap::{Action, Pane, action_for};
use super::logs::{LogEffect, LogView, LogViewOutcome};
use super::models_pane::ModelsPane;
use super::tests_pane::TestsPane;
use crate::logs::LogSource;
use crate::protocol::{Clocks, Command, Event, LinkStatus, ModelState, Severity, Snapshot, State};

/// How long a message in the footer stays.
const TOAST_FOR: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overlay {
    None,
    Help,
    Confirm(Confirm),
    ModelDetail(String),
    GpuDetail(usize),
    /// A finished run of a test, from its history: (test, run id).
    RunDetail(String, String),
    /// Rented GPUs (`S`).
    Sessions(super::sessions_view::SessionsView),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirm {
    Stop(String),
    Restart(String),
    CancelTest(String),
    /// Destroy a rented session (back to the Sessions view after).
    DestroySession(String),
    Quit {
        active_models: usize,
        running_tests: usize,
    },
    /// Shutdown waits for cleanups; `what` keeps running if the operator stops waiting.
    AbandonCleanups {
        what: String,
    },
}

/// How every question is answered; shown under it (also on a too-small screen).
pub const CONFIRM_ANSWERS: &str = "y / Enter: yes    any other key: no";

impl Confirm {
    pub fn question(&self) -> String {
        match self {
            Confirm::Stop(id) => format!("Stop {id}?"),
            Confirm::Restart(id) => format!("Restart {id}?"),
            Confirm::CancelTest(name) => format!("Cancel the running test {name}?"),
            Confirm::DestroySession(id) => format!("Destroy session {}? What runs on it is lost.", short_id(id)),
            Confirm::AbandonCleanups { what } => format!("Stop waiting for the cleanup? {what}"),
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

/// The first 8 characters of an id, with an ellipsis if cut.
pub fn short_id(id: &str) -> String {
    match id.char_indices().nth(8) {
        Some((at, _)) => format!("{}…", &id[..at]),
        None => id.to_owned(),
    }
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// What a pane asks the app to do after one of its keys.
#[derive(Debug, Clone, PartialEq)]
pub enum Reaction {
    Nothing,
    Send(Command),
    Overlay(Overlay),
    ShowLogs(LogSource),
    Toast(String, Severity),
}

/// Work for the event loop.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Send(Command),
    /// End the TUI (after the cleanups of running tests, when the engine is in this process).
    Quit(Exit),
    /// Stop waiting for the cleanups still running.
    AbandonCleanups,
    Log(LogEffect),
}

/// Quitting, waiting on screen for the cleanups of the runs that were going.
#[derive(Debug, Clone)]
pub struct CleanupWait {
    pub exit: Exit,
    pub since: Instant,
    /// The operator stopped waiting.
    pub abandoned: bool,
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
    pub models: ModelsPane,
    pub gpus: GpusPane,
    pub tests: TestsPane,
    pub logs: LogView,
    pub toast: Option<Toast>,
    /// When this viewer learned of each model's current state and each run's steps: uptimes,
    /// countdowns and durations count on from here, never from the engine's clock.
    pub clocks: Clocks,
    /// Whether this viewer sees the engine (a banner says when it does not).
    pub link: LinkStatus,
    /// Set once quitting waits for cleanups.
    pub cleanup_wait: Option<CleanupWait>,
    /// Quitting stops the engine (in-process) rather than detaching from a daemon.
    pub quitting_stops_engine: bool,
    /// First line shown of the help overlay (it scrolls on small terminals).
    pub help_scroll: usize,
    /// Lines per source this viewer never received (it fell behind), already counted.
    log_gaps: HashMap<LogSource, u64>,
}

impl App {
    pub fn new(snapshot: Snapshot, origin: Origin, ring_lines: usize) -> Self {
        let mut logs = LogView::new(ring_lines);
        logs.seed(&snapshot.log_tail);
        let clocks = Clocks::from_state(&snapshot.state);
        Self {
            state: snapshot.state,
            origin,
            focus: Pane::Models,
            zoomed: false,
            overlay: Overlay::None,
            models: ModelsPane::default(),
            gpus: GpusPane::default(),
            tests: TestsPane::default(),
            logs,
            toast: None,
            clocks,
            link: LinkStatus::Connected,
            cleanup_wait: None,
            quitting_stops_engine: true,
            help_scroll: 0,
            log_gaps: HashMap::new(),
        }
    }

    /// Folds one engine event into this viewer.
    pub fn on_event(&mut self, event: &Event) {
        self.state.apply(event);
        self.clocks.on_event(event, Instant::now());
        match event {
            Event::Log(batch) => self.logs.push_batch(batch),
            Event::Gpu(_) => self.clamp_selections(),
            _ => {}
        }
    }

    /// Keeps every selection on an existing row when a list got shorter (a GPU fell off the
    /// bus, a daemon restarted with fewer models).
    fn clamp_selections(&mut self) {
        self.models.selection.clamp(self.state.models.len());
        self.gpus.selection.clamp(self.state.gpus.gpus.len());
        self.tests.selection.clamp(self.state.tests.len());
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
        self.clocks = Clocks::from_state(&snapshot.state);
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
        self.state.running_runs().count()
    }

    /// Quitting waits for the cleanups of the runs going now.
    pub fn wait_for_cleanups(&mut self, exit: Exit) {
        self.cleanup_wait = Some(CleanupWait { exit, since: Instant::now(), abandoned: false });
        self.overlay = Overlay::None;
        self.zoomed = false;
    }

    /// How the TUI ends once the cleanups it waits for are over (or given up on).
    pub fn finished_shutdown(&self) -> Option<Exit> {
        let wait = self.cleanup_wait.as_ref()?;
        (wait.abandoned || self.running_tests() == 0 || self.link != LinkStatus::Connected).then(|| wait.exit.clone())
    }

    /// A signal to stop: the TUI's exit, or `None` if it asks first (a second signal while
    /// cleanups run asks before giving up on them).
    pub fn on_signal(&mut self, name: &'static str) -> Option<Exit> {
        if self.cleanup_wait.is_some() {
            self.ask_to_abandon();
            return None;
        }
        Some(Exit::Signal(name))
    }

    fn ask_to_abandon(&mut self) {
        self.overlay = Overlay::Confirm(Confirm::AbandonCleanups { what: self.what_keeps_running() });
    }

    /// What stays behind if the cleanups are given up on, with its price where known.
    pub fn what_keeps_running(&self) -> String {
        let mut parts = Vec::new();
        for run in self.state.running_runs() {
            let step = run.current_step().map(|(_, s)| s.name.clone()).unwrap_or_else(|| "its cleanup".into());
            match &run.session {
                Some(session) => parts.push(format!(
                    "{}: session {} keeps running at ${:.2}/h",
                    run.test,
                    short_id(&session.id),
                    session.price_per_hour
                )),
                None => parts.push(format!("{}: {step} keeps running", run.test)),
            }
        }
        if parts.is_empty() { "Nothing is left running.".into() } else { format!("{}.", parts.join("; ")) }
    }

    pub fn selected_model(&self) -> Option<&crate::protocol::ModelStatus> {
        self.models.selected(&self.state)
    }

    pub fn on_key(&mut self, key: KeyEvent) -> Vec<Effect> {
        if key.kind == KeyEventKind::Release {
            return Vec::new();
        }
        if self.cleanup_wait.is_some() {
            return self.on_key_while_cleaning_up(key);
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

    /// Only one question is left while shutdown waits: stop waiting?
    fn on_key_while_cleaning_up(&mut self, key: KeyEvent) -> Vec<Effect> {
        use crossterm::event::KeyCode;
        if let Overlay::Confirm(Confirm::AbandonCleanups { .. }) = &self.overlay {
            self.overlay = Overlay::None;
            if matches!(key.code, KeyCode::Char('y') | KeyCode::Char('Y') | KeyCode::Enter) {
                if let Some(wait) = &mut self.cleanup_wait {
                    wait.abandoned = true;
                }
                return vec![Effect::AbandonCleanups];
            }
            return Vec::new();
        }
        if matches!(action_for(key, self.focus), Some(Action::Quit | Action::ForceQuit)) {
            self.ask_to_abandon();
        }
        Vec::new()
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
        if let Overlay::Sessions(view) = &mut self.overlay {
            use super::sessions_view::SessionsOutcome;
            if let Some(Action::ForceQuit) = action_for(key, self.focus) {
                return self.on_action(Action::ForceQuit);
            }
            match view.on_key(key, &self.state.shopper) {
                SessionsOutcome::Stay => {}
                SessionsOutcome::Close => self.overlay = Overlay::None,
                SessionsOutcome::AskDestroy(id) => self.overlay = Overlay::Confirm(Confirm::DestroySession(id)),
                SessionsOutcome::Send(command) => return vec![Effect::Send(command)],
            }
            return Vec::new();
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
            Confirm::DestroySession(session) => {
                self.overlay = Overlay::Sessions(super::sessions_view::SessionsView::default());
                vec![Effect::Send(Command::DestroySession { session })]
            }
            Confirm::Quit { .. } => vec![Effect::Quit(Exit::Quit)],
            Confirm::AbandonCleanups { .. } => vec![Effect::AbandonCleanups],
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
            Action::Sessions => self.overlay = Overlay::Sessions(super::sessions_view::SessionsView::default()),
            Action::Close if self.focus == Pane::Tests && self.tests.history.is_some() => {
                self.tests.history = None;
            }
            Action::Close => {
                if self.zoomed {
                    self.zoomed = false;
                }
            }
            Action::ForceQuit if matches!(self.overlay, Overlay::Confirm(Confirm::Quit { .. })) => {
                return vec![Effect::Quit(Exit::Quit)];
            }
            Action::Quit | Action::ForceQuit => {
                let (active_models, running_tests) = (self.active_models(), self.running_tests());
                // Detaching from a daemon stops nothing: no question.
                if self.quitting_stops_engine && active_models + running_tests > 0 {
                    self.overlay = Overlay::Confirm(Confirm::Quit { active_models, running_tests });
                } else {
                    return vec![Effect::Quit(Exit::Quit)];
                }
            }
            other => return self.on_pane_action(other),
        }
        Vec::new()
    }

    /// Actions the focused pane handles itself (moving, detail, its own commands).
    fn on_pane_action(&mut self, action: Action) -> Vec<Effect> {
        let reaction = match self.focus {
            Pane::Models => self.models.on_action(action, &self.state),
            Pane::Gpus => self.gpus.on_action(action, &self.state),
            Pane::Tests => self.tests.on_action(action, &self.state),
            Pane::Logs => None,
        };
        match reaction.unwrap_or(Reaction::Nothing) {
            Reaction::Nothing => {}
            Reaction::Send(command) => return vec![Effect::Send(command)],
            Reaction::Overlay(overlay) => self.overlay = overlay,
            Reaction::ShowLogs(source) => {
                self.logs.set_source_filter(Some(source));
                self.logs.follow();
                self.focus = Pane::Logs;
            }
            Reaction::Toast(text, severity) => self.show_toast(text, severity),
        }
        Vec::new()
    }

    /// Anything on screen that moves by itself (spinners, countdowns)?
    pub fn has_live_timers(&self) -> bool {
        self.state
            .models
            .iter()
            .any(|m| matches!(m.state, ModelState::Starting | ModelState::Backoff | ModelState::Stopping))
            || self.running_tests() > 0
            || self.cleanup_wait.is_some()
    }
}

#[cfg(test)]
mod tests {
    use crossterm::event::{KeyCode, KeyModifiers};

    use super::*;
    use crate::tui::widgets::Selection;

    fn app(models_running: usize, test_running: bool) -> App {
        let yaml = "models:\n  - { id: a, command: x, port: 9001 }\n  - { id: b, command: x, port: 9002 }\n\
                    tests:\n  - { name: t, kind: local, model: a }\n";
        let config = crate::config::load_str(yaml, "test").expect("config");
        let mut state = State::new(&config, None, "host".into());
        for m in state.models.iter_mut().take(models_running) {
            m.state = ModelState::Ready;
        }
        if test_running {
            state.tests[0].current = Some(crate::protocol::Run::new(
                "r1".into(),
                "t".into(),
                crate::config::TestKind::Local,
                chrono::Utc::now(),
                "http://127.0.0.1:9001".into(),
                &["probe".into()],
            ));
        }
        App::new(snapshot(state), Origin { mode: "test".into() }, 100)
    }

    fn snapshot(state: State) -> Snapshot {
        Snapshot { state, log_tail: Default::default(), seq: 0, epoch: "e".into() }
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
        app.models.selection = crate::tui::widgets::Selection::at(1);
        app.tests.selection = crate::tui::widgets::Selection::at(5);
        let mut snapshot = snapshot(app.state.clone());
        snapshot.state.models.truncate(1);
        app.resync(snapshot);
        assert_eq!((app.models.selection, app.tests.selection), (Selection::at(0), Selection::at(0)));
        assert_eq!(app.selected_model().map(|m| m.id.as_str()), Some("a"));
    }

    #[test]
    fn quitting_with_nothing_running_needs_no_question() {
        assert_eq!(press(&mut app(0, false), KeyCode::Char('q')), [Effect::Quit(Exit::Quit)]);
        assert_eq!(ctrl_c(&mut app(0, false)), [Effect::Quit(Exit::Quit)]);
    }

    #[test]
    fn ctrl_c_asks_like_q_and_a_second_ctrl_c_quits() {
        let mut app = app(2, false);
        assert!(ctrl_c(&mut app).is_empty());
        let Overlay::Confirm(question) = &app.overlay else { panic!("no question: {:?}", app.overlay) };
        assert_eq!(question.question(), "Quit? 2 running models will be stopped.");
        assert_eq!(ctrl_c(&mut app), [Effect::Quit(Exit::Quit)]);
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
