//! What a viewer talks to: a link to an engine. The TUI knows only this interface; the engine
//! in the same process is one implementation, a daemon reached over a WebSocket another.

use std::sync::Arc;

use tokio::sync::{oneshot, watch};

use super::command::{Ack, Command, CommandError};
use super::hub::Subscription;

/// The answer to a submitted command, to await.
pub type Answer = oneshot::Receiver<Result<Ack, CommandError>>;

/// Waits for a submitted command's answer.
pub async fn answered(answer: Answer) -> Result<Ack, CommandError> {
    answer.await.map_err(|_| CommandError::new("the engine stopped before answering"))?
}

/// Whether the viewer currently sees the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkStatus {
    Connected,
    /// Not connected; the link retries (`retry_in_s` until the next try, if known).
    Disconnected {
        reason: String,
        retry_in_s: Option<u64>,
    },
    /// Connected again; catching up from a fresh snapshot.
    Resyncing,
}

/// A viewer's connection to an engine.
pub trait Link: Send + Sync {
    /// The current snapshot plus every event after it, with no gap and no overlap. Called again
    /// after falling behind, after a `seq` gap, and when the status turns `Connected` again.
    fn subscribe(&self) -> Subscription;

    /// Queues a command; commands submitted one after another are handled in that order.
    fn submit(&self, command: Command) -> Result<Answer, CommandError>;

    /// The link's status, as it changes.
    fn status(&self) -> watch::Receiver<LinkStatus>;

    /// Where the engine is, for the header: `in-process`, `demo`, or a daemon's address.
    fn describe(&self) -> String;

    /// Whether quitting this viewer stops the engine (in-process) rather than detaching from it.
    fn quitting_stops_engine(&self) -> bool;

    /// Begins the engine's shutdown: runs are cancelled and their cleanups run; progress arrives
    /// as events (`State::shutdown`). A no-op for a link that does not own its engine.
    fn begin_shutdown(&self, reason: &str);

    /// Stops waiting for the cleanups still running (they are recorded for the next start).
    fn abandon_cleanups(&self);
}

/// A link shared between the TUI's tasks.
pub type SharedLink = Arc<dyn Link>;
