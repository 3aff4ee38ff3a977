//! Keys: the pane's own, the `/` search prompt and the source picker; copy and the pager.

use super::*;

#[derive(Debug, Default)]
pub(super) struct SearchInput {
    pub(super) text: String,
    pub(super) error: Option<String>,
}

/// The search: the active matcher, the prompt while it is open, and what to restore on Esc.
#[derive(Debug, Default)]
pub(super) struct Find {
    pub(super) regex_mode: bool,
    pub(super) search: Option<Matcher>,
    /// The search active when the prompt opened, restored by Esc.
    pub(super) search_before_input: Option<Matcher>,
    pub(super) last_pattern: String,
    pub(super) input: Option<SearchInput>,
}

impl LogView {
    // ----- keys ----------------------------------------------------------------------------------

    pub fn handle_key(&mut self, key: KeyEvent) -> LogViewOutcome {
        if key.kind == KeyEventKind::Release {
            return LogViewOutcome::NotConsumed;
        }
        self.message = None;
        self.clamp_position();
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return LogViewOutcome::NotConsumed;
        }
        if self.find.input.is_some() {
            self.search_key(key);
            return LogViewOutcome::Consumed;
        }
        if let Some(choice) = self.picker {
            self.picker_key(key, choice);
            return LogViewOutcome::Consumed;
        }
        self.normal_key(key)
    }

    pub(super) fn normal_key(&mut self, key: KeyEvent) -> LogViewOutcome {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let page = self.nav.page_rows.saturating_sub(1).max(1) as i64;
        match key.code {
            KeyCode::Char('j') | KeyCode::Down if !ctrl => self.move_by(1),
            KeyCode::Char('k') | KeyCode::Up if !ctrl => self.move_by(-1),
            KeyCode::PageDown => self.move_by(page),
            KeyCode::PageUp => self.move_by(-page),
            KeyCode::Char('d') if ctrl => self.move_by(page / 2),
            KeyCode::Char('u') if ctrl => self.move_by(-(page / 2)),
            KeyCode::Char('g') | KeyCode::Home if !ctrl => {
                let start = self.visible().start();
                if !self.visible().is_empty() {
                    self.nav.position = Position::Paused { sel: start, top: start };
                }
            }
            KeyCode::Char('G' | 'F') | KeyCode::End if !ctrl => self.follow(),
            KeyCode::Char('/') if !ctrl => {
                self.find.search_before_input = self.find.search.clone();
                self.find.input = Some(SearchInput::default());
            }
            KeyCode::Char('n') if !ctrl => self.jump_to_match(Direction::Older, false),
            KeyCode::Char('N') if !ctrl => self.jump_to_match(Direction::Newer, false),
            KeyCode::Char('e') if !ctrl => self.jump_to_error(Direction::Older),
            KeyCode::Char('E') if !ctrl => self.jump_to_error(Direction::Newer),
            KeyCode::Char('w') if !ctrl => self.display.wrap = !self.display.wrap,
            KeyCode::Char('t') if !ctrl => self.display.timestamps = !self.display.timestamps,
            KeyCode::Char('c') if !ctrl => self.display.compact = !self.display.compact,
            KeyCode::Char('v') if !ctrl => {
                self.set_level_filter(self.level_filter.raised());
                self.say(format!("showing {}", self.level_filter.label()), false);
            }
            KeyCode::Char('V') if !ctrl => {
                self.set_level_filter(self.level_filter.lowered());
                self.say(format!("showing {}", self.level_filter.label()), false);
            }
            KeyCode::Char('s') if !ctrl => self.open_picker(),
            KeyCode::Char('y') if !ctrl => return self.copy_current(),
            KeyCode::Char('o') if !ctrl => return self.open_in_pager(),
            KeyCode::Esc if self.find.search.is_some() => self.find.search = None,
            _ => return LogViewOutcome::NotConsumed,
        }
        LogViewOutcome::Consumed
    }

    pub(super) fn search_key(&mut self, key: KeyEvent) {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let Some(input) = self.find.input.as_mut() else {
            return;
        };
        match key.code {
            KeyCode::Esc => {
                self.find.input = None;
                self.find.search = self.find.search_before_input.take();
                return;
            }
            KeyCode::Enter => {
                self.confirm_search();
                return;
            }
            KeyCode::Char('r') if ctrl => self.find.regex_mode = !self.find.regex_mode,
            KeyCode::Char('u') if ctrl => input.text.clear(),
            KeyCode::Up => input.text.clone_from(&self.find.last_pattern),
            KeyCode::Backspace => {
                input.text.pop();
            }
            KeyCode::Char(c) if !ctrl && !key.modifiers.contains(KeyModifiers::ALT) => {
                input.text.push(c);
            }
            _ => return,
        }
        self.preview_search();
    }

    /// Highlights matches while the pattern is typed; an invalid regex shows its error.
    pub(super) fn preview_search(&mut self) {
        let Some(input) = self.find.input.as_mut() else {
            return;
        };
        input.error = None;
        if input.text.is_empty() {
            self.find.search = None;
            return;
        }
        match Matcher::new(&input.text, self.find.regex_mode) {
            Ok(matcher) => self.find.search = Some(matcher),
            Err(error) => {
                input.error = Some(error);
                self.find.search = None;
            }
        }
    }

    pub(super) fn confirm_search(&mut self) {
        let Some(input) = self.find.input.as_ref() else {
            return;
        };
        if input.text.is_empty() {
            self.find.input = None;
            self.find.search = None;
            self.find.search_before_input = None;
            return;
        }
        if input.error.is_some() {
            return; // keep the prompt open until the regex is fixed
        }
        self.find.last_pattern.clone_from(&input.text);
        self.find.input = None;
        self.find.search_before_input = None;
        self.jump_to_match(Direction::Older, true);
    }

    pub(super) fn picker_items(&self) -> Vec<Option<&LogSource>> {
        std::iter::once(None).chain(self.store.by_source.keys().map(Some)).collect()
    }

    pub(super) fn open_picker(&mut self) {
        let items = self.picker_items();
        let current = items.iter().position(|item| *item == self.source_filter.as_ref()).unwrap_or(0);
        self.picker = Some(current);
    }

    pub(super) fn picker_key(&mut self, key: KeyEvent, choice: usize) {
        let last = self.picker_items().len().saturating_sub(1);
        match key.code {
            KeyCode::Char('j') | KeyCode::Down => self.picker = Some((choice + 1).min(last)),
            KeyCode::Char('k') | KeyCode::Up => self.picker = Some(choice.saturating_sub(1)),
            KeyCode::Char('g') | KeyCode::Home => self.picker = Some(0),
            KeyCode::Char('G') | KeyCode::End => self.picker = Some(last),
            KeyCode::Enter => {
                let source = self.picker_items().get(choice).copied().flatten().cloned();
                self.picker = None;
                self.set_source_filter(source);
            }
            KeyCode::Esc | KeyCode::Char('s' | 'q') => self.picker = None,
            _ => {}
        }
    }

    pub(super) fn copy_current(&mut self) -> LogViewOutcome {
        let Some(entry) = self.current() else {
            self.say("nothing to copy", false);
            return LogViewOutcome::Consumed;
        };
        let text = display_text(&entry.line.text, COPY_BYTES).into_owned();
        let sequence = osc52(&text);
        self.say(format!("copied {} bytes (OSC 52)", text.len()), false);
        LogViewOutcome::Effect(LogEffect::Clipboard(sequence))
    }

    pub(super) fn open_in_pager(&mut self) -> LogViewOutcome {
        let source = match &self.source_filter {
            Some(source) => Some(source.clone()),
            None => self.current().map(|e| (*e.source).clone()),
        };
        match source {
            Some(source) => LogViewOutcome::Effect(LogEffect::OpenInPager(source)),
            None => {
                self.say("no source to open: no lines yet", false);
                LogViewOutcome::Consumed
            }
        }
    }
}
