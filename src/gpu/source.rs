//! The `GpuSource` trait every backend implements, the call tracker the watchdog reads, and the
//! pieces of a sample every backend shares (energy integration, process → model mapping).

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::protocol::{BackendStatus, EnergySource, GpuSample};
use crate::util::procfs::ModelProcesses;

/// A critical driver error on one GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XidEvent {
    pub gpu: u32,
    pub xid: u64,
}

/// A backend. Runs on the sampler's own OS thread: calls may block (a hung driver); they must
/// report what they are doing through the [`CallTracker`] so the watchdog can say so.
pub trait GpuSource {
    fn status(&self) -> BackendStatus;
    /// One reading of every GPU.
    fn sample(&mut self, tracker: &CallTracker) -> Vec<GpuSample>;
    /// Critical driver events (Xid) since the last call.
    fn driver_events(&mut self, tracker: &CallTracker) -> Vec<XidEvent>;
}

/// A driver call, for the watchdog's "stuck in ..." message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Call {
    Init = 1,
    DeviceCount,
    DeviceHandle,
    Name,
    Uuid,
    Utilization,
    Memory,
    MemoryV1,
    Temperature,
    TemperatureThreshold,
    Power,
    PowerLimit,
    Energy,
    SmClock,
    MemoryClock,
    Fan,
    Throttle,
    PerformanceState,
    Processes,
    EventSetup,
    EventWait,
    Simulated,
}

impl Call {
    const ALL: [Call; 22] = [
        Call::Init,
        Call::DeviceCount,
        Call::DeviceHandle,
        Call::Name,
        Call::Uuid,
        Call::Utilization,
        Call::Memory,
        Call::MemoryV1,
        Call::Temperature,
        Call::TemperatureThreshold,
        Call::Power,
        Call::PowerLimit,
        Call::Energy,
        Call::SmClock,
        Call::MemoryClock,
        Call::Fan,
        Call::Throttle,
        Call::PerformanceState,
        Call::Processes,
        Call::EventSetup,
        Call::EventWait,
        Call::Simulated,
    ];

    /// The NVML function behind the call.
    pub fn symbol(self) -> &'static str {
        match self {
            Call::Init => "nvmlInit_v2",
            Call::DeviceCount => "nvmlDeviceGetCount_v2",
            Call::DeviceHandle => "nvmlDeviceGetHandleByIndex_v2",
            Call::Name => "nvmlDeviceGetName",
            Call::Uuid => "nvmlDeviceGetUUID",
            Call::Utilization => "nvmlDeviceGetUtilizationRates",
            Call::Memory => "nvmlDeviceGetMemoryInfo_v2",
            Call::MemoryV1 => "nvmlDeviceGetMemoryInfo",
            Call::Temperature => "nvmlDeviceGetTemperature",
            Call::TemperatureThreshold => "nvmlDeviceGetTemperatureThreshold",
            Call::Power => "nvmlDeviceGetPowerUsage",
            Call::PowerLimit => "nvmlDeviceGetEnforcedPowerLimit",
            Call::Energy => "nvmlDeviceGetTotalEnergyConsumption",
            Call::SmClock | Call::MemoryClock => "nvmlDeviceGetClockInfo",
            Call::Fan => "nvmlDeviceGetFanSpeed_v2",
            Call::Throttle => "nvmlDeviceGetCurrentClocksThrottleReasons",
            Call::PerformanceState => "nvmlDeviceGetPerformanceState",
            Call::Processes => "nvmlDeviceGetComputeRunningProcesses_v3",
            Call::EventSetup => "nvmlDeviceRegisterEvents",
            Call::EventWait => "nvmlEventSetWait_v2",
            Call::Simulated => "simulated sample",
        }
    }

    fn from_u8(v: u8) -> Option<Call> {
        Call::ALL.iter().copied().find(|c| *c as u8 == v)
    }
}

const NO_GPU: u32 = u32::MAX;

/// What the sampler thread is doing right now, readable from any thread without locks.
#[derive(Debug)]
pub struct CallTracker {
    base: Instant,
    /// Nanoseconds since `base` + 1 when the current call started; 0 when idle.
    call_started: AtomicU64,
    call: AtomicU8,
    gpu: AtomicU32,
    /// Nanoseconds since `base` + 1 when the last sample completed; 0 before the first.
    last_sample: AtomicU64,
}

/// A call in progress, as the watchdog sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    pub running_for: Duration,
    /// e.g. `nvmlDeviceGetPowerUsage (GPU 1)`.
    pub call: String,
}

impl Default for CallTracker {
    fn default() -> Self {
        Self {
            base: Instant::now(),
            call_started: AtomicU64::new(0),
            call: AtomicU8::new(0),
            gpu: AtomicU32::new(NO_GPU),
            last_sample: AtomicU64::new(0),
        }
    }
}

impl CallTracker {
    fn now_mark(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX - 1).saturating_add(1)
    }

    /// Runs `f` as the named call (on `gpu`, if any), visible to the watchdog while it runs.
    pub fn track<T>(&self, call: Call, gpu: Option<u32>, f: impl FnOnce() -> T) -> T {
        self.call.store(call as u8, Ordering::Relaxed);
        self.gpu.store(gpu.unwrap_or(NO_GPU), Ordering::Relaxed);
        self.call_started.store(self.now_mark(), Ordering::Release);
        let out = f();
        self.call_started.store(0, Ordering::Release);
        out
    }

    pub fn sample_done(&self) {
        self.last_sample.store(self.now_mark(), Ordering::Release);
    }

    /// The call in progress, if any.
    pub fn in_flight(&self) -> Option<InFlight> {
        let started = self.call_started.load(Ordering::Acquire);
        if started == 0 {
            return None;
        }
        let call = Call::from_u8(self.call.load(Ordering::Relaxed)).map_or("NVML", Call::symbol);
        let gpu = self.gpu.load(Ordering::Relaxed);
        Some(InFlight {
            running_for: Duration::from_nanos(self.now_mark().saturating_sub(started)),
            call: if gpu == NO_GPU { call.to_owned() } else { format!("{call} (GPU {gpu})") },
        })
    }

    /// Time since the last completed sample (or since the tracker was made, before the first).
    pub fn since_last_sample(&self) -> Duration {
        let last = self.last_sample.load(Ordering::Acquire);
        let now = self.now_mark();
        Duration::from_nanos(now.saturating_sub(last.max(1)))
    }
}

/// Integrates power draw into energy for GPUs without an energy counter.
#[derive(Debug, Default)]
pub struct EnergyIntegrator {
    /// Per GPU index: (joules so far, last power in watts, when).
    state: Vec<(u32, f64, f64, Instant)>,
}

impl EnergyIntegrator {
    /// Fills `energy_j` from the power draw where the driver gave no counter (trapezoids).
    pub fn apply(&mut self, gpus: &mut [GpuSample], now: Instant) {
        for g in gpus.iter_mut() {
            if g.energy_j.is_some() {
                g.energy_source = Some(EnergySource::Counter);
                continue;
            }
            let Some(watts) = g.power_draw_w else {
                continue;
            };
            let joules = match self.state.iter_mut().find(|s| s.0 == g.index) {
                Some(s) => {
                    let dt = now.saturating_duration_since(s.3).as_secs_f64();
                    s.1 += (s.2 + watts) / 2.0 * dt;
                    s.2 = watts;
                    s.3 = now;
                    s.1
                }
                None => {
                    self.state.push((g.index, 0.0, watts, now));
                    0.0
                }
            };
            g.energy_j = Some(joules);
            g.energy_source = Some(EnergySource::Integrated);
        }
    }
}

/// Names the llmdeck model holding each process that has none yet.
pub fn map_models(gpus: &mut [GpuSample], processes: &ModelProcesses) {
    for p in gpus.iter_mut().flat_map(|g| g.processes.iter_mut()) {
        if p.model.is_none() {
            p.model = processes.model_of(p.pid);
        }
    }
}

/// NVML's throttle ("clocks event") reason bits in words, in bit order.
pub fn throttle_reason_words(bits: u64) -> Vec<String> {
    const WORDS: [(u64, &str); 10] = [
        (0x1, "idle"),
        (0x2, "app clocks"),
        (0x4, "power cap"),
        (0x8, "hw slowdown"),
        (0x10, "sync boost"),
        (0x20, "sw thermal slowdown"),
        (0x40, "hw thermal slowdown"),
        (0x80, "power brake"),
        (0x100, "display clocks"),
        (0x200, "user clocks"),
    ];
    WORDS.iter().filter(|(bit, _)| bits & bit != 0).map(|(_, w)| (*w).to_owned()).collect()
}

/// What a critical Xid means, for the pane and the alert.
pub fn xid_meaning(xid: u64) -> String {
    match xid {
        79 => "GPU has fallen off the bus".into(),
        48 => "double-bit ECC error".into(),
        31 => "GPU memory page fault (MMU fault)".into(),
        43 => "GPU stopped processing".into(),
        13 => "graphics engine exception".into(),
        45 => "preemptive cleanup after an earlier error".into(),
        63 | 64 => "ECC page retirement or row remapping event".into(),
        74 => "NVLink error".into(),
        92 => "high single-bit ECC error rate".into(),
        94 => "contained ECC error".into(),
        95 => "uncontained ECC error".into(),
        119 | 120 => "GSP firmware error".into(),
        999 => "unknown Xid".into(),
        other => format!("driver error Xid {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_bits_become_words() {
        assert_eq!(throttle_reason_words(0x4), ["power cap"]);
        assert_eq!(throttle_reason_words(0x20 | 0x40), ["sw thermal slowdown", "hw thermal slowdown"]);
        assert!(throttle_reason_words(0).is_empty());
    }

    #[test]
    fn xid_meanings_cover_the_critical_ones() {
        assert_eq!(xid_meaning(79), "GPU has fallen off the bus");
        assert_eq!(xid_meaning(48), "double-bit ECC error");
        assert!(xid_meaning(31).contains("MMU fault"));
        assert_eq!(xid_meaning(43), "GPU stopped processing");
        assert_eq!(xid_meaning(7), "driver error Xid 7");
    }

    #[test]
    fn power_is_integrated_only_without_a_counter() {
        let mut integ = EnergyIntegrator::default();
        let t0 = Instant::now();
        let mut gpus = vec![
            GpuSample { index: 0, power_draw_w: Some(100.0), ..Default::default() },
            GpuSample { index: 1, power_draw_w: Some(100.0), energy_j: Some(5.0), ..Default::default() },
        ];
        integ.apply(&mut gpus, t0);
        assert_eq!(gpus[0].energy_j, Some(0.0));
        let mut next = gpus.clone();
        next[0].energy_j = None;
        next[0].power_draw_w = Some(300.0);
        integ.apply(&mut next, t0 + Duration::from_secs(2));
        assert_eq!(next[0].energy_j, Some(400.0), "(100 + 300) / 2 × 2 s");
        assert_eq!(next[0].energy_source, Some(EnergySource::Integrated));
        assert_eq!(next[1].energy_j, Some(5.0));
        assert_eq!(next[1].energy_source, Some(EnergySource::Counter));
    }

    #[test]
    fn tracker_reports_the_call_in_flight() {
        let t = CallTracker::default();
        assert_eq!(t.in_flight(), None);
        let seen = t.track(Call::Power, Some(1), || t.in_flight());
        assert_eq!(seen.map(|f| f.call).as_deref(), Some("nvmlDeviceGetPowerUsage (GPU 1)"));
        assert_eq!(t.in_flight(), None);
    }

    #[test]
    fn processes_of_a_model_group_are_named() {
        let me = std::process::id();
        let pgid = nix::unistd::getpgrp().as_raw() as u32;
        let reg = ModelProcesses::default();
        reg.set("qwen-7b", pgid);
        let mut gpus = vec![GpuSample {
            processes: vec![
                crate::protocol::GpuProcess { pid: me, used_memory_bytes: Some(1), model: None },
                crate::protocol::GpuProcess { pid: u32::MAX - 7, used_memory_bytes: Some(1), model: None },
            ],
            ..Default::default()
        }];
        map_models(&mut gpus, &reg);
        assert_eq!(gpus[0].processes[0].model.as_deref(), Some("qwen-7b"));
        assert_eq!(gpus[0].processes[1].model, None, "not a running process");
    }
}
