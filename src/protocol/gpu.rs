//! GPU samples, GPU events, and the GPU part of the state with its reducer.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One GPU's readings at one moment. Every reading is optional: `None` is "N/A" (the driver does
/// not support it on this GPU, or the GPU is lost).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GpuSample {
    pub index: u32,
    pub name: String,
    pub uuid: String,
    pub utilization_gpu_pct: Option<u32>,
    pub utilization_memory_pct: Option<u32>,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    /// Memory the driver keeps for itself (NVML's `reserved`), where given.
    pub memory_reserved_bytes: Option<u64>,
    pub temperature_c: Option<u32>,
    /// The temperature at which the GPU starts slowing down.
    pub temperature_slowdown_c: Option<u32>,
    pub power_draw_w: Option<f64>,
    /// The enforced power limit.
    pub power_limit_w: Option<f64>,
    /// Energy in joules: the driver's counter (since the driver loaded) where supported, else
    /// the integral of the power draw since sampling started; see `energy_source`.
    pub energy_j: Option<f64>,
    pub energy_source: Option<EnergySource>,
    pub sm_clock_mhz: Option<u32>,
    pub memory_clock_mhz: Option<u32>,
    pub fan_pct: Option<u32>,
    /// Why the clocks are held down, in words (`power cap`, `hw thermal slowdown`, ...);
    /// empty when nothing holds them.
    pub throttle_reasons: Option<Vec<String>>,
    /// Performance state: 0 (P0, maximum) to 15 (P15, minimum).
    pub performance_state: Option<u32>,
    pub processes: Vec<GpuProcess>,
    /// The driver cannot list this GPU's processes (then `processes` is empty).
    #[serde(default)]
    pub processes_na: bool,
    /// The GPU fell off the bus or stopped answering (NVML `GPU_IS_LOST`); it is not asked again.
    pub lost: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnergySource {
    /// NVML's total-energy counter.
    Counter,
    /// Power draw integrated over time by llmdeck.
    Integrated,
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
    /// Which backend is in use, or why there is none; and how history is kept.
    Backend {
        status: BackendStatus,
        /// Sampling interval.
        #[serde(default)]
        sample_ms: u64,
        /// Samples of history kept per GPU (`history_s` / interval).
        #[serde(default)]
        history_len: usize,
    },
    Sampled {
        ts: DateTime<Utc>,
        gpus: Vec<GpuSample>,
    },
    /// An NVML call has not returned for two sampling intervals: the readings are old. Sent
    /// again every interval while it lasts; the next `Sampled` ends it.
    Stale {
        /// Time since the last completed sample, measured by the engine when it sent this.
        stale_ms: u64,
        /// The call that has not returned, e.g. `nvmlDeviceGetPowerUsage (GPU 1)`.
        call: Option<String>,
    },
    /// A critical driver error (Xid) reported through NVML events.
    Xid {
        ts: DateTime<Utc>,
        gpu: u32,
        xid: u64,
        meaning: String,
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
    /// The configuration turned monitoring off (`gpu.backend: none`).
    Off,
    /// No GPUs to show, and why (e.g. the NVML load error).
    None {
        reason: String,
    },
}

impl BackendStatus {
    pub fn name(&self) -> &'static str {
        match self {
            BackendStatus::Starting => "starting",
            BackendStatus::Nvml { .. } => "nvml",
            BackendStatus::Simulated => "simulated",
            BackendStatus::Off => "off",
            BackendStatus::None { .. } => "none",
        }
    }
}

/// How many Xid events the state keeps.
pub const XID_LEN: usize = 16;
/// History length used until the sampler says otherwise (10 minutes at 1 Hz).
pub const DEFAULT_HISTORY_LEN: usize = 600;
/// Upper bound on history per GPU, whatever the configuration says (keeps snapshots small).
pub const MAX_HISTORY_LEN: usize = 3600;

/// The readings' recent past, one ring per series, oldest first. Compact integer units keep an
/// 8-GPU snapshot small.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GpuHistory {
    pub util_pct: VecDeque<Option<u8>>,
    pub memory_mib: VecDeque<Option<u32>>,
    pub power_w: VecDeque<Option<u16>>,
    pub temperature_c: VecDeque<Option<u8>>,
    /// The energy reading when the GPU was first seen (for "energy since start").
    pub energy_start_j: Option<f64>,
}

impl GpuHistory {
    fn push(&mut self, s: &GpuSample, cap: usize) {
        let mib = |b: u64| u32::try_from(b / (1024 * 1024)).unwrap_or(u32::MAX);
        push_capped(&mut self.util_pct, s.utilization_gpu_pct.map(|v| v.min(100) as u8), cap);
        push_capped(&mut self.memory_mib, s.memory_used_bytes.map(mib), cap);
        push_capped(&mut self.power_w, s.power_draw_w.map(|w| w.round().clamp(0.0, f64::from(u16::MAX)) as u16), cap);
        push_capped(&mut self.temperature_c, s.temperature_c.map(|t| t.min(255) as u8), cap);
        if self.energy_start_j.is_none() {
            self.energy_start_j = s.energy_j;
        }
    }

    fn truncate_front(&mut self, cap: usize) {
        trim(&mut self.util_pct, cap);
        trim(&mut self.memory_mib, cap);
        trim(&mut self.power_w, cap);
        trim(&mut self.temperature_c, cap);
    }

    pub fn len(&self) -> usize {
        self.util_pct.len()
    }

    pub fn is_empty(&self) -> bool {
        self.util_pct.is_empty()
    }
}

fn push_capped<T>(q: &mut VecDeque<T>, v: T, cap: usize) {
    while q.len() >= cap.max(1) {
        q.pop_front();
    }
    q.push_back(v);
}

fn trim<T>(q: &mut VecDeque<T>, cap: usize) {
    while q.len() > cap {
        q.pop_front();
    }
}

/// The readings are old because an NVML call hangs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Staleness {
    pub stale_ms: u64,
    pub call: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct XidRecord {
    pub ts: DateTime<Utc>,
    pub gpu: u32,
    pub xid: u64,
    pub meaning: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GpuState {
    pub backend: BackendStatus,
    /// The latest sample of every GPU, by index.
    pub gpus: Vec<GpuSample>,
    /// When the latest sample was taken (display only).
    pub sampled_at: Option<DateTime<Utc>>,
    pub sample_ms: u64,
    pub history_len: usize,
    /// One per entry of `gpus`, same order.
    pub history: Vec<GpuHistory>,
    /// Set while an NVML call hangs.
    pub stale: Option<Staleness>,
    /// The most recent critical Xid events, oldest first.
    pub xids: VecDeque<XidRecord>,
    /// Every Xid event seen, including those no longer in `xids`.
    pub xid_count: u64,
}

impl GpuState {
    /// The GPU part of the reducer.
    pub fn apply(&mut self, event: &GpuEvent) {
        match event {
            GpuEvent::Backend { status, sample_ms, history_len } => {
                self.backend = status.clone();
                self.sample_ms = *sample_ms;
                self.history_len = (*history_len).min(MAX_HISTORY_LEN);
                let cap = self.history_cap();
                for h in &mut self.history {
                    h.truncate_front(cap);
                }
                if matches!(status, BackendStatus::None { .. } | BackendStatus::Off) {
                    self.gpus.clear();
                    self.history.clear();
                    self.stale = None;
                }
            }
            GpuEvent::Sampled { ts, gpus } => self.apply_sample(*ts, gpus),
            GpuEvent::Stale { stale_ms, call } => {
                self.stale = Some(Staleness { stale_ms: *stale_ms, call: call.clone() });
            }
            GpuEvent::Xid { ts, gpu, xid, meaning } => {
                self.xid_count += 1;
                push_capped(
                    &mut self.xids,
                    XidRecord { ts: *ts, gpu: *gpu, xid: *xid, meaning: meaning.clone() },
                    XID_LEN,
                );
            }
        }
    }

    fn history_cap(&self) -> usize {
        if self.history_len == 0 { DEFAULT_HISTORY_LEN } else { self.history_len }
    }

    fn apply_sample(&mut self, ts: DateTime<Utc>, gpus: &[GpuSample]) {
        let cap = self.history_cap();
        let mut old: Vec<(u32, GpuHistory)> =
            self.gpus.iter().map(|g| g.index).zip(std::mem::take(&mut self.history)).collect();
        self.history = gpus
            .iter()
            .map(|g| {
                let mut h =
                    old.iter().position(|(i, _)| *i == g.index).map(|p| old.swap_remove(p).1).unwrap_or_default();
                h.push(g, cap);
                h
            })
            .collect();
        self.gpus = gpus.to_vec();
        self.sampled_at = Some(ts);
        self.stale = None;
    }

    /// A copy with only the newest `n` samples of every series (a snapshot's bounded copy,
    /// made without cloning the whole history first).
    pub fn clone_recent(&self, n: usize) -> Self {
        fn recent<T: Copy>(q: &VecDeque<T>, n: usize) -> VecDeque<T> {
            q.iter().skip(q.len().saturating_sub(n)).copied().collect()
        }
        Self {
            backend: self.backend.clone(),
            gpus: self.gpus.clone(),
            sampled_at: self.sampled_at,
            sample_ms: self.sample_ms,
            history_len: self.history_len,
            history: self
                .history
                .iter()
                .map(|h| GpuHistory {
                    util_pct: recent(&h.util_pct, n),
                    memory_mib: recent(&h.memory_mib, n),
                    power_w: recent(&h.power_w, n),
                    temperature_c: recent(&h.temperature_c, n),
                    energy_start_j: h.energy_start_j,
                })
                .collect(),
            stale: self.stale.clone(),
            xids: self.xids.clone(),
            xid_count: self.xid_count,
        }
    }

    /// The history of the GPU at `pos` in `gpus`.
    pub fn history_of(&self, pos: usize) -> Option<&GpuHistory> {
        self.history.get(pos)
    }

    /// Xid events of one GPU, newest first.
    pub fn xids_of(&self, gpu: u32) -> impl Iterator<Item = &XidRecord> {
        self.xids.iter().rev().filter(move |x| x.gpu == gpu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(index: u32, util: u32) -> GpuSample {
        GpuSample {
            index,
            name: format!("gpu{index}"),
            utilization_gpu_pct: Some(util),
            memory_used_bytes: Some(2 * 1024 * 1024 * 1024),
            power_draw_w: Some(100.4),
            temperature_c: Some(50),
            energy_j: Some(10.0 + f64::from(util)),
            ..Default::default()
        }
    }

    fn sampled(gpus: Vec<GpuSample>) -> GpuEvent {
        GpuEvent::Sampled { ts: Utc::now(), gpus }
    }

    #[test]
    fn history_is_bounded_by_the_announced_length() {
        let mut s = GpuState::default();
        s.apply(&GpuEvent::Backend { status: BackendStatus::Simulated, sample_ms: 1000, history_len: 3 });
        for u in 0..5 {
            s.apply(&sampled(vec![sample(0, u), sample(1, 10 + u)]));
        }
        let h = &s.history[1];
        assert_eq!(h.util_pct, [Some(12), Some(13), Some(14)]);
        assert_eq!(h.memory_mib, [Some(2048); 3]);
        assert_eq!(h.power_w, [Some(100); 3]);
        assert_eq!(h.energy_start_j, Some(20.0), "the first reading is kept");
    }

    #[test]
    fn history_follows_the_gpu_index_when_the_list_changes() {
        let mut s = GpuState::default();
        s.apply(&sampled(vec![sample(0, 1), sample(1, 2)]));
        s.apply(&sampled(vec![sample(1, 3)]));
        assert_eq!(s.history.len(), 1);
        assert_eq!(s.history[0].util_pct, [Some(2), Some(3)]);
    }

    #[test]
    fn a_sample_ends_staleness_and_none_backend_clears_gpus() {
        let mut s = GpuState::default();
        s.apply(&sampled(vec![sample(0, 1)]));
        s.apply(&GpuEvent::Stale { stale_ms: 2500, call: Some("nvmlDeviceGetPowerUsage (GPU 0)".into()) });
        assert_eq!(s.stale.as_ref().map(|x| x.stale_ms), Some(2500));
        s.apply(&sampled(vec![sample(0, 1)]));
        assert_eq!(s.stale, None);
        s.apply(&GpuEvent::Backend {
            status: BackendStatus::None { reason: "x".into() },
            sample_ms: 1000,
            history_len: 10,
        });
        assert!(s.gpus.is_empty() && s.history.is_empty());
    }

    #[test]
    fn xids_are_counted_and_bounded() {
        let mut s = GpuState::default();
        for n in 0..(XID_LEN as u64 + 4) {
            s.apply(&GpuEvent::Xid {
                ts: Utc::now(),
                gpu: (n % 2) as u32,
                xid: 79,
                meaning: "GPU has fallen off the bus".into(),
            });
        }
        assert_eq!(s.xid_count, XID_LEN as u64 + 4);
        assert_eq!(s.xids.len(), XID_LEN);
        assert!(s.xids_of(1).all(|x| x.gpu == 1));
    }

    #[test]
    fn an_eight_gpu_snapshot_with_full_history_is_well_under_a_megabyte() {
        let mut s = GpuState::default();
        s.apply(&GpuEvent::Backend { status: BackendStatus::Simulated, sample_ms: 1000, history_len: 600 });
        for u in 0..600 {
            let gpus = (0..8)
                .map(|i| {
                    let mut g = sample(i, u % 101);
                    g.memory_used_bytes = Some(80_000_000_000);
                    g.power_draw_w = Some(699.0);
                    g.processes = vec![GpuProcess {
                        pid: 123_456,
                        used_memory_bytes: Some(70_000_000_000),
                        model: Some("llama-3.1-70b-instruct".into()),
                    }];
                    g
                })
                .collect();
            s.apply(&sampled(gpus));
        }
        let bytes = serde_json::to_vec(&s).map(|v| v.len()).unwrap_or(usize::MAX);
        assert!(bytes < 250_000, "8 GPUs × 600 samples: {bytes} bytes");
    }
}
