//! Log lines: what a line is, where it comes from, its level, and the bounded ring viewers keep.
//! Capture from child processes lives in the supervisor; files and rotation in [`file`].

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub mod app_layer;
pub mod file;
pub mod level;
pub mod oom;
pub mod ring;
pub mod search;
pub mod split;

pub use level::Level;

/// Where a line came from. Serialised as `model:<id>`, `test:<name>` or `llmdeck`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum LogSource {
    Model(String),
    Test(String),
    App,
}

impl LogSource {
    /// The short name shown in the Logs pane's source column.
    pub fn name(&self) -> &str {
        match self {
            LogSource::Model(id) | LogSource::Test(id) => id,
            LogSource::App => "llmdeck",
        }
    }
}

impl fmt::Display for LogSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogSource::Model(id) => write!(f, "model:{id}"),
            LogSource::Test(name) => write!(f, "test:{name}"),
            LogSource::App => f.write_str("llmdeck"),
        }
    }
}

impl From<LogSource> for String {
    fn from(s: LogSource) -> String {
        s.to_string()
    }
}

impl TryFrom<String> for LogSource {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s == "llmdeck" {
            Ok(LogSource::App)
        } else if let Some(id) = s.strip_prefix("model:") {
            Ok(LogSource::Model(id.to_owned()))
        } else if let Some(name) = s.strip_prefix("test:") {
            Ok(LogSource::Test(name.to_owned()))
        } else {
            Err(format!("unknown log source `{s}` (expected model:<id>, test:<name> or llmdeck)"))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Stdout,
    Stderr,
    /// Lines llmdeck writes about a source (its own tracing, or "exited 1, restart in 7s").
    Internal,
}

/// One captured line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub ts: DateTime<Utc>,
    pub stream: Stream,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<Level>,
    pub text: String,
    /// The line was longer than the cap and was cut.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// The line matched a CUDA out-of-memory pattern.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub oom: bool,
}

impl LogLine {
    /// A line llmdeck writes itself (about a model, a test, or its own work).
    pub fn internal(level: Level, text: String) -> Self {
        LogLine { ts: Utc::now(), stream: Stream::Internal, level: Some(level), text, truncated: false, oom: false }
    }

    /// An error line for the Logs pane's `e`/`E` jumps and counters.
    pub fn is_error(&self) -> bool {
        self.oom || self.level.is_some_and(|l| l >= Level::Error)
    }
}

/// Lines from one source, sent together so a flood costs one event per batch, not per line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogBatch {
    pub source: LogSource,
    pub lines: Vec<LogLine>,
    /// Lines of this source that were dropped from the in-memory view (never from the file)
    /// since the previous batch, because viewers could not keep up.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped_before: u64,
}

impl LogBatch {
    /// One line from one source.
    pub fn single(source: LogSource, line: LogLine) -> Self {
        LogBatch { source, lines: vec![line], dropped_before: 0 }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
