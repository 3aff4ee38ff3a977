//! Small pieces several panes share: the spinner and a list selection.

use super::keymap::Action;

const SPINNER: [&str; 4] = ["◐", "◓", "◑", "◒"];

/// The spinner frame for `tick` (it advances while something on screen is in progress).
pub fn spinner(tick: usize) -> &'static str {
    SPINNER[tick % SPINNER.len()]
}

/// The selected row of a list; kept on an existing row when the list shrinks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Selection(usize);

impl Selection {
    pub fn at(index: usize) -> Self {
        Self(index)
    }

    /// The selected row of a list of `len` rows (0 for an empty list).
    pub fn index(self, len: usize) -> usize {
        self.0.min(len.saturating_sub(1))
    }

    pub fn clamp(&mut self, len: usize) {
        self.0 = self.index(len);
    }

    /// Moves for a navigation action; false if `action` is not one.
    pub fn apply(&mut self, action: Action, len: usize) -> bool {
        let last = len.saturating_sub(1);
        let current = self.index(len);
        self.0 = match action {
            Action::Up => current.saturating_sub(1),
            Action::Down => (current + 1).min(last),
            Action::Top => 0,
            Action::Bottom => last,
            Action::PageUp => current.saturating_sub(10),
            Action::PageDown => (current + 10).min(last),
            _ => return false,
        };
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selections_move_within_the_list() {
        let mut s = Selection::default();
        assert!(s.apply(Action::Down, 3));
        assert!(s.apply(Action::PageDown, 3));
        assert_eq!(s.index(3), 2);
        assert_eq!(s.index(1), 0, "a shorter list keeps it on a row");
        assert!(!s.apply(Action::Detail, 3));
        s.apply(Action::Top, 3);
        assert_eq!(s, Selection::at(0));
    }
}
