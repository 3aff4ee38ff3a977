//! GPUs: the `GpuSource` backends (NVML, simulated, none), the sampler thread with its
//! watchdog, history, and the `gpus` command.
//!
//! - [`nvml`]: NVML through `nvml-wrapper`, loaded at run time (`gpu.nvml_library`, else
//!   `$LLMDECK_NVML_LIB`, else the system's `libnvidia-ml.so.1`).
//! - [`simulated`]: plausible readings that follow the running models (for `demo`).
//! - none: `BackendStatus::None` with the reason (the NVML load error in one line).
//!
//! The engine calls [`spawn_sampler`]; its events ([`GpuEvent`] inside `Event::Gpu`, plus
//! alerts) are folded into [`GpuState`] by [`GpuState::apply`].

pub mod cli;
pub mod nvml;
mod sampler;
pub mod simulated;
mod source;
mod types;

pub use sampler::{MIN_INTERVAL, SamplerConfig, spawn_sampler, start};
pub use source::{
    Call, CallTracker, EnergyIntegrator, GpuSource, InFlight, XidEvent, map_models, throttle_words, xid_meaning,
};
pub use types::*;

/// The reason shown when the config turned GPU monitoring off.
pub const MONITORING_OFF: &str = "GPU monitoring is off (gpu.backend: none; `auto` uses NVML when the driver is there)";
