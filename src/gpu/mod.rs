//! GPUs: the `GpuSource` backends (NVML, simulated, none), the sampler thread with its
//! watchdog, history, and the `gpus` command.

pub mod cli;
mod types;

pub use types::*;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::engine::{EngineOptions, Event, EventSink};
use crate::supervisor::ModelProcesses;

/// Starts the GPU sampler for the engine (backend per config, or the override).
pub fn spawn_sampler(
    _opts: &EngineOptions,
    sink: EventSink,
    _processes: ModelProcesses,
    _cancel: CancellationToken,
    tasks: &mut JoinSet<()>,
) {
    tasks.spawn(async move {
        let status = BackendStatus::None {
            reason: "GPU monitoring is not built yet".into(),
        };
        let _ = sink.send(Event::Gpu(GpuEvent::Backend { status })).await;
    });
}
