//! GPUs: the `GpuSource` backends (NVML, simulated, none), the sampler thread with its
//! watchdog, and reading which model a GPU process belongs to. The samples, events and the GPU
//! state they fold into are shared vocabulary (`protocol`).
//!
//! - [`nvml`]: NVML through `nvml-wrapper`, loaded at run time (`gpu.nvml_library`, else
//!   `$LLMDECK_NVML_LIB`, else the system's `libnvidia-ml.so.1`).
//! - [`simulated`]: plausible readings that follow the running models (for `demo`).
//! - none: `BackendStatus::None` with the reason (the NVML load error in one line).
//!
//! The engine calls [`spawn_sampler`]; its events (`GpuEvent` inside `Event::Gpu`, plus
//! alerts) are folded into `GpuState` by its reducer.

pub mod nvml;
mod sampler;
pub mod simulated;
mod source;

pub use sampler::{MIN_INTERVAL, SamplerConfig, start};
pub use source::{
    Call, CallTracker, EnergyIntegrator, GpuSource, InFlight, XidEvent, map_models, throttle_reason_words, xid_meaning,
};
