//! Search in log lines: plain text or a regular expression, smart-case (case-insensitive unless
//! the pattern has an upper-case letter), finding match ranges for highlighting.
//!
//! Both modes compile to a `regex::Regex` (plain text escaped), so a plain search gets the same
//! literal fast paths and correct Unicode case folding with byte ranges into the original line.

use std::ops::Range;

use regex::{Regex, RegexBuilder};

/// Compiled patterns stay small: a pasted monster pattern gets an error, not a stall.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct Matcher {
    pattern: String,
    regex_mode: bool,
    case_sensitive: bool,
    re: Regex,
}

impl Matcher {
    /// A matcher for `pattern`, as a regular expression when `regex_mode`, else as plain text.
    /// The error is one line, ready for the status bar (`invalid regex: unclosed group`).
    pub fn new(pattern: &str, regex_mode: bool) -> Result<Self, String> {
        if pattern.is_empty() {
            return Err("empty search".to_owned());
        }
        let case_sensitive = has_upper_case(pattern, regex_mode);
        let source = if regex_mode { pattern.to_owned() } else { regex::escape(pattern) };
        let re = RegexBuilder::new(&source)
            .case_insensitive(!case_sensitive)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| describe_error(&e))?;
        Ok(Self { pattern: pattern.to_owned(), regex_mode, case_sensitive, re })
    }

    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    pub fn is_regex(&self) -> bool {
        self.regex_mode
    }

    pub fn is_case_sensitive(&self) -> bool {
        self.case_sensitive
    }

    pub fn is_match(&self, line: &str) -> bool {
        self.re.is_match(line)
    }

    /// Byte ranges of the matches in `line`, in order, never empty (a regex like `a*` matches
    /// the empty string everywhere; there is nothing to highlight there).
    pub fn ranges<'a>(&'a self, line: &'a str) -> impl Iterator<Item = Range<usize>> + 'a {
        self.re.find_iter(line).filter(|m| !m.is_empty()).map(|m| m.range())
    }
}

/// Smart case: an upper-case letter makes the search case-sensitive. In a regex, letters that are
/// part of an escape (`\S`, `\W`, `\p{Lu}`) are syntax, not text, and do not count.
fn has_upper_case(pattern: &str, regex_mode: bool) -> bool {
    if !regex_mode {
        return pattern.chars().any(char::is_uppercase);
    }
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            // `\p{Greek}` names a class; `\pL` is one letter; `\S` and others are one letter.
            '\\' => {
                if matches!(chars.next(), Some('p' | 'P')) {
                    if chars.clone().next() == Some('{') {
                        chars.by_ref().find(|&c| c == '}');
                    } else {
                        chars.next();
                    }
                }
            }
            c if c.is_uppercase() => return true,
            _ => {}
        }
    }
    false
}

/// `regex` errors are multi-line (pattern, caret, message); the status bar wants the message.
fn describe_error(err: &regex::Error) -> String {
    match err {
        regex::Error::Syntax(text) => {
            let message = text
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("error: "))
                .unwrap_or_else(|| text.lines().last().unwrap_or("syntax error"));
            format!("invalid regex: {}", message.trim())
        }
        regex::Error::CompiledTooBig(_) => "invalid regex: pattern too large".to_owned(),
        other => format!("invalid regex: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(m: &Matcher, line: &str) -> Vec<Range<usize>> {
        m.ranges(line).collect()
    }

    #[test]
    fn plain_lower_case_is_case_insensitive() {
        let m = Matcher::new("oom", false).unwrap();
        assert!(!m.is_case_sensitive());
        assert!(m.is_match("CUDA OOM at step 3"));
        assert_eq!(ranges(&m, "oom OOM Oom"), vec![0..3, 4..7, 8..11]);
        assert!(!m.is_match("out of memory"));
    }

    #[test]
    fn plain_with_upper_case_is_case_sensitive() {
        let m = Matcher::new("OOM", false).unwrap();
        assert!(m.is_case_sensitive());
        assert!(m.is_match("CUDA OOM"));
        assert!(!m.is_match("cuda oom"));
    }

    #[test]
    fn plain_treats_regex_syntax_as_text() {
        let m = Matcher::new("a.b(", false).unwrap();
        assert!(m.is_match("x a.b( y"));
        assert!(!m.is_match("axb("));
        assert_eq!(ranges(&m, "x a.b( y"), vec![2..6]);
    }

    #[test]
    fn plain_folds_unicode_case_with_byte_ranges() {
        let m = Matcher::new("ärger", false).unwrap();
        let line = "kein ÄRGER hier";
        let found = ranges(&m, line);
        assert_eq!(found.len(), 1);
        assert_eq!(&line[found[0].clone()], "ÄRGER");
    }

    #[test]
    fn regex_mode() {
        let m = Matcher::new(r"alloc\w+ \d+\.\d+ gib", true).unwrap();
        assert!(m.is_regex());
        assert!(!m.is_case_sensitive(), "escapes do not make it case-sensitive");
        let line = "Tried to allocate 2.00 GiB (GPU 1)";
        assert_eq!(&line[ranges(&m, line)[0].clone()], "allocate 2.00 GiB");
        let m = Matcher::new(r"\S+Error", true).unwrap();
        assert!(m.is_case_sensitive());
        assert!(m.is_match("torch.OutOfMemoryError: x"));
        assert!(!m.is_match("torch.outofmemoryerror: x"));
        let m = Matcher::new(r"\p{Lu}x", true).unwrap();
        assert!(!m.is_case_sensitive());
    }

    #[test]
    fn empty_matches_are_not_highlighted() {
        let m = Matcher::new("a*", true).unwrap();
        assert!(m.is_match("xyz"));
        assert_eq!(ranges(&m, "xaay"), vec![1..3]);
    }

    #[test]
    fn invalid_regex_is_a_one_line_error() {
        let err = Matcher::new("a(", true).unwrap_err();
        assert!(err.starts_with("invalid regex: "), "{err}");
        assert!(!err.contains('\n'), "{err}");
        assert!(err.contains("unclosed group"), "{err}");
        // The same text as plain search is fine.
        assert!(Matcher::new("a(", false).is_ok());
        let err = Matcher::new(r"\w{1000}{1000}", true).unwrap_err();
        assert!(err.starts_with("invalid regex: "), "{err}");
    }

    #[test]
    fn empty_pattern_is_rejected() {
        assert!(Matcher::new("", false).is_err());
        assert!(Matcher::new("", true).is_err());
    }
}
