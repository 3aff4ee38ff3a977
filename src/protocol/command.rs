//! Commands: requests to the engine, from the TUI, the daemon's clients or the CLI. Each is
//! answered with an ack or an error, never silently dropped.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    StartModel {
        model: String,
    },
    /// An operator's stop: never restarted by policy.
    StopModel {
        model: String,
    },
    RestartModel {
        model: String,
    },
    /// Runs a configured test (one at a time).
    RunTest {
        test: String,
    },
    CancelTest {
        test: String,
    },
    /// Destroys a rented session (an orphan, or one an operator no longer wants).
    DestroySession {
        session: String,
    },
    /// Reserves a rented session for more hours (the shopper caps a session at 12 h).
    ExtendSession {
        session: String,
        hours: u32,
    },
}

/// Producers' end of the engine's event channel.
pub type EventSink = tokio::sync::mpsc::Sender<super::Event>;

/// The engine accepted the command; the outcome arrives as events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct CommandError {
    pub message: String,
}

impl CommandError {
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into() }
    }
}
