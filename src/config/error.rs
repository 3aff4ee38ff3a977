//! Configuration errors: each names the file, line and column, and a fix where there is one.

use std::fmt;

/// A position in the configuration text; both numbers start at 1, columns count characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    pub const START: Pos = Pos { line: 1, column: 1 };

    pub fn new(line: usize, column: usize) -> Self {
        Self { line, column }
    }
}

/// What went wrong, for callers that react differently (e.g. "no config yet" vs "bad config").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The file does not exist.
    NotFound,
    /// The file exists but could not be read.
    Io,
    /// The file is over the size limit.
    TooLarge,
    /// The file is not UTF-8 text.
    NotUtf8,
    /// Not valid YAML.
    Syntax,
    /// Valid YAML over a resource limit: alias bombs, deep nesting, several documents.
    Limit,
    /// A key the schema does not know.
    UnknownKey,
    /// A required key is missing.
    MissingKey,
    /// The same key twice in one mapping.
    DuplicateKey,
    /// A value of the wrong type or an unknown choice.
    Type,
    /// A `${VAR}` reference that cannot be expanded.
    Env,
    /// A value that parses but breaks a rule (range, uniqueness, reference).
    Invalid,
}

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file name as shown to the user (or `<demo>`-style origins for embedded text).
    pub origin: String,
    /// Where the problem is; `None` only for problems with the file as a whole (not found).
    pub pos: Option<Pos>,
    pub kind: ErrorKind,
    pub message: String,
    /// How to fix it, when there is something to say.
    pub hint: Option<String>,
}

impl ConfigError {
    pub(crate) fn new(origin: &str, pos: Option<Pos>, kind: ErrorKind, message: String) -> Self {
        Self { origin: origin.to_owned(), pos, kind, message, hint: None }
    }

    pub(crate) fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pos {
            Some(p) => write!(f, "{}:{}:{}: {}", self.origin, p.line, p.column, self.message)?,
            None => write!(f, "{}: {}", self.origin, self.message)?,
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in one configuration file, in file order. Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    errors: Vec<ConfigError>,
}

impl ConfigErrors {
    /// Sorts by position so the output reads top to bottom. `errors` must not be empty.
    pub(crate) fn new(mut errors: Vec<ConfigError>) -> Self {
        debug_assert!(!errors.is_empty(), "ConfigErrors without errors");
        errors.sort_by_key(|e| e.pos);
        errors.dedup();
        Self { errors }
    }

    pub(crate) fn one(error: ConfigError) -> Self {
        Self { errors: vec![error] }
    }

    pub fn errors(&self) -> &[ConfigError] {
        &self.errors
    }

    pub fn into_vec(self) -> Vec<ConfigError> {
        self.errors
    }

    pub fn len(&self) -> usize {
        self.errors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// True when the only problem is that the file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self.errors.as_slice(), [e] if e.kind == ErrorKind::NotFound)
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.errors.into_iter()
    }
}

/// Shows user-supplied text inside a message: control characters escaped (no terminal escape
/// injection from a config file), long text cut.
pub(crate) fn shown(text: &str) -> String {
    const MAX_CHARS: usize = 60;
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == MAX_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_has_file_line_column_and_hint() {
        let e = ConfigError::new("c.yaml", Some(Pos::new(3, 7)), ErrorKind::UnknownKey, "unknown key `restrat`".into())
            .with_hint("did you mean `restart`?");
        assert_eq!(e.to_string(), "c.yaml:3:7: unknown key `restrat`\n  hint: did you mean `restart`?");
    }

    #[test]
    fn errors_sort_by_position() {
        let at = |l, c| ConfigError::new("f", Some(Pos::new(l, c)), ErrorKind::Invalid, format!("{l}:{c}"));
        let all = ConfigErrors::new(vec![at(9, 1), at(2, 5), at(2, 1)]);
        let lines: Vec<_> = all.to_string().lines().map(str::to_owned).collect();
        assert_eq!(lines, ["f:2:1: 2:1", "f:2:5: 2:5", "f:9:1: 9:1"]);
    }

    #[test]
    fn shown_escapes_control_characters_and_cuts() {
        assert_eq!(shown("a\u{1b}[31mb"), "a\\u{1b}[31mb");
        assert_eq!(shown(&"x".repeat(100)).chars().count(), 61);
    }
}

/// A problem at a known position, before the file's name is attached (from scanning or parsing).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LocatedFailure {
    pub pos: Pos,
    pub kind: ErrorKind,
    pub message: String,
    pub hint: Option<String>,
}

impl LocatedFailure {
    /// The failure as the one error of the file `origin`.
    pub(crate) fn in_file(self, origin: &str) -> ConfigErrors {
        ConfigErrors::one(ConfigError {
            origin: origin.to_owned(),
            pos: Some(self.pos),
            kind: self.kind,
            message: self.message,
            hint: self.hint,
        })
    }
}
