//! GPU samples and the GPU part of the engine state.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One GPU's readings at one moment. Every reading is optional: `None` is "N/A".
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GpuSample {
    pub index: u32,
    pub name: String,
    pub uuid: String,
    pub utilization_gpu_pct: Option<u32>,
    pub utilization_memory_pct: Option<u32>,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    pub temperature_c: Option<u32>,
    pub power_draw_w: Option<f64>,
    pub power_limit_w: Option<f64>,
    pub energy_j: Option<f64>,
    pub processes: Vec<GpuProcess>,
    pub lost: bool,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GpuProcess {
    pub pid: u32,
    pub used_memory_bytes: Option<u64>,
    /// The llmdeck model whose process tree holds this PID.
    pub model: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GpuEvent {
    /// Which backend is in use, or why there is none.
    Backend { status: BackendStatus },
    Sampled {
        ts: DateTime<Utc>,
        gpus: Vec<GpuSample>,
    },
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case")]
pub enum BackendStatus {
    #[default]
    Starting,
    Nvml {
        driver_version: Option<String>,
    },
    Simulated,
    /// No GPUs to show, and why (e.g. the NVML load error).
    None {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GpuState {
    pub backend: BackendStatus,
    pub gpus: Vec<GpuSample>,
}

impl GpuState {
    pub fn apply(&mut self, event: &GpuEvent) {
        match event {
            GpuEvent::Backend { status } => self.backend = status.clone(),
            GpuEvent::Sampled { gpus, .. } => self.gpus = gpus.clone(),
        }
    }
}
