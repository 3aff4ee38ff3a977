//! Log levels, parsed from the formats model servers print.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Critical,
}

impl Level {
    /// Short fixed-width label for the Logs pane.
    pub fn label(self) -> &'static str {
        match self {
            Level::Trace => "TRACE",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERR",
            Level::Critical => "CRIT",
        }
    }
}

/// The level of a line, from the common formats; `None` when no format matches.
pub fn parse_level(line: &str) -> Option<Level> {
    // Placeholder until the log hub lands: first word only.
    let word = line.split_whitespace().next()?;
    match word.trim_matches(|c: char| !c.is_ascii_alphabetic()) {
        "TRACE" => Some(Level::Trace),
        "DEBUG" => Some(Level::Debug),
        "INFO" => Some(Level::Info),
        "WARN" | "WARNING" => Some(Level::Warn),
        "ERROR" => Some(Level::Error),
        "CRITICAL" | "FATAL" => Some(Level::Critical),
        _ => None,
    }
}
