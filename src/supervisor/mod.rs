//! The model supervisor: one task per model, process groups, restart policy with backoff,
//! readiness and health probes, OOM detection, log capture.

mod registry;

pub use registry::ModelProcesses;

use color_eyre::eyre::Result;

use crate::engine::{Ack, Command, CommandError, EngineOptions, EventSink};

pub struct Supervisor {}

#[derive(Clone)]
pub struct SupervisorHandle {}

impl Supervisor {
    pub async fn start(
        _opts: &EngineOptions,
        _events: EventSink,
        _processes: ModelProcesses,
    ) -> Result<Self> {
        Ok(Self {})
    }

    pub fn clone_handle(&self) -> SupervisorHandle {
        SupervisorHandle {}
    }

    pub async fn shutdown(&mut self) {}
}

impl SupervisorHandle {
    pub async fn command(&self, _command: Command) -> Result<Ack, CommandError> {
        Err(CommandError::new("not built yet"))
    }
}
