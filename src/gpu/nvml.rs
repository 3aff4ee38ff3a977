//! The NVML backend through `nvml-wrapper`, which loads libnvidia-ml at run time: llmdeck builds
//! and starts on machines without it.
//!
//! Every reading is optional. A reading the driver answers with `NotSupported`, or whose function
//! is missing (`FunctionNotFound`, or a symbol the library does not export), is N/A and never
//! asked again for that GPU. `GpuLost` marks the GPU lost; it is not asked anything again.

use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};

use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enum_wrappers::device::{Clock, PerformanceState, TemperatureSensor, TemperatureThreshold};
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, EventSet, Nvml};

use super::source::{Call, CallTracker, GpuSource, XidEvent, throttle_reason_words};
use crate::protocol::{BackendStatus, GpuProcess, GpuSample};

/// Environment variable naming the library when the configuration does not.
pub const LIBRARY_ENV: &str = "LLMDECK_NVML_LIB";

/// The library to load: `gpu.nvml_library`, else `$LLMDECK_NVML_LIB`, else `None` (the
/// system's `libnvidia-ml.so.1`).
pub fn library_path(configured: Option<&Path>) -> Option<PathBuf> {
    configured
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os(LIBRARY_ENV).filter(|v| !v.is_empty()).map(PathBuf::from))
}

/// Loads libnvidia-ml and initialises NVML; the error is one line saying why not.
pub fn load(path: Option<&Path>) -> Result<Nvml, String> {
    let mut builder = Nvml::builder();
    if let Some(p) = path {
        builder.lib_path(p.as_os_str());
    }
    let nvml = builder.init().map_err(|e| load_error(&e, path))?;
    // nvml-wrapper's Drop calls nvmlShutdown unchecked; a library without it is not NVML.
    if nvml.lib().nvmlShutdown.is_err() {
        std::mem::forget(nvml);
        return Err(format!("{} is not an NVML library (no nvmlShutdown)", shown(path)));
    }
    Ok(nvml)
}

fn shown(path: Option<&Path>) -> String {
    path.map_or_else(|| "libnvidia-ml.so.1".to_owned(), |p| p.display().to_string())
}

fn load_error(e: &NvmlError, path: Option<&Path>) -> String {
    let detail = match e {
        NvmlError::LibloadingError(inner) => inner.to_string(),
        NvmlError::DriverNotLoaded => "the NVIDIA driver is not loaded".to_owned(),
        NvmlError::NoPermission => "no permission to talk to the NVIDIA driver".to_owned(),
        NvmlError::LibraryNotFound => "the library was not found".to_owned(),
        other => other.to_string(),
    };
    let one_line = detail.split_whitespace().collect::<Vec<_>>().join(" ");
    format!("NVML unavailable ({}): {one_line}", shown(path))
}

/// Readings that are N/A for good on one GPU, one bit per [`Call`].
#[derive(Debug, Default, Clone, Copy)]
struct Unsupported(u32);

impl Unsupported {
    fn has(self, c: Call) -> bool {
        self.0 & (1 << c as u8) != 0
    }
    fn add(&mut self, c: Call) {
        self.0 |= 1 << c as u8;
    }
}

struct NvmlGpu<'a> {
    index: u32,
    device: Option<Device<'a>>,
    name: String,
    uuid: String,
    lost: bool,
    unsupported: Unsupported,
    /// The slowdown temperature does not change: asked once.
    slowdown_c: Option<u32>,
}

/// What one answer means for the reading.
enum Answer<T> {
    Value(T),
    /// N/A this time only (e.g. a transient error).
    Missing,
}

impl<'a> NvmlGpu<'a> {
    fn open(nvml: &'a Nvml, index: u32, tracker: &CallTracker) -> Self {
        let mut gpu = NvmlGpu {
            index,
            device: None,
            name: String::new(),
            uuid: String::new(),
            lost: false,
            unsupported: Unsupported::default(),
            slowdown_c: None,
        };
        match tracker.track(Call::DeviceHandle, Some(index), || nvml.device_by_index(index)) {
            Ok(d) => gpu.device = Some(d),
            Err(NvmlError::GpuLost) => gpu.lost = true,
            Err(e) => {
                tracing::warn!(gpu = index, error = %e, "cannot open GPU");
                gpu.name = format!("unavailable: {e}");
            }
        }
        if let Some(name) = gpu.read(tracker, Call::Name, |d| d.name()) {
            gpu.name = name;
        }
        if let Some(uuid) = gpu.read(tracker, Call::Uuid, |d| d.uuid()) {
            gpu.uuid = uuid;
        }
        gpu
    }

    /// Asks the driver once, unless the reading is known N/A or the GPU is lost.
    fn read<T>(
        &mut self,
        tracker: &CallTracker,
        call: Call,
        f: impl FnOnce(&Device<'a>) -> Result<T, NvmlError>,
    ) -> Option<T> {
        if self.lost || self.unsupported.has(call) {
            return None;
        }
        let device = self.device.as_ref()?;
        let result = tracker.track(call, Some(self.index), || f(device));
        match self.judge(call, result) {
            Answer::Value(v) => Some(v),
            Answer::Missing => None,
        }
    }

    fn judge<T>(&mut self, call: Call, result: Result<T, NvmlError>) -> Answer<T> {
        match result {
            Ok(v) => Answer::Value(v),
            Err(NvmlError::NotSupported | NvmlError::FunctionNotFound | NvmlError::FailedToLoadSymbol(_)) => {
                self.unsupported.add(call);
                Answer::Missing
            }
            Err(NvmlError::GpuLost) => {
                tracing::warn!(gpu = self.index, call = call.symbol(), "GPU is lost");
                self.lost = true;
                Answer::Missing
            }
            Err(e) => {
                tracing::debug!(gpu = self.index, call = call.symbol(), error = %e, "reading failed");
                Answer::Missing
            }
        }
    }

    fn sample(&mut self, nvml: &Nvml, tracker: &CallTracker) -> GpuSample {
        let mut s =
            GpuSample { index: self.index, name: self.name.clone(), uuid: self.uuid.clone(), ..Default::default() };
        if let Some(u) = self.read(tracker, Call::Utilization, |d| d.utilization_rates()) {
            s.utilization_gpu_pct = Some(u.gpu);
            s.utilization_memory_pct = Some(u.memory);
        }
        if let Some((total, used, reserved)) = self.memory(nvml, tracker) {
            s.memory_total_bytes = Some(total);
            s.memory_used_bytes = Some(used);
            s.memory_reserved_bytes = reserved;
        }
        s.temperature_c = self.read(tracker, Call::Temperature, |d| d.temperature(TemperatureSensor::Gpu));
        if self.slowdown_c.is_none() {
            self.slowdown_c = self
                .read(tracker, Call::TemperatureThreshold, |d| d.temperature_threshold(TemperatureThreshold::Slowdown));
        }
        s.temperature_slowdown_c = self.slowdown_c;
        s.power_draw_w = self.read(tracker, Call::Power, |d| d.power_usage()).map(milli);
        s.power_limit_w = self.read(tracker, Call::PowerLimit, |d| d.enforced_power_limit()).map(milli);
        s.energy_j = self.read(tracker, Call::Energy, |d| d.total_energy_consumption()).map(|mj| mj as f64 / 1000.0);
        s.sm_clock_mhz = self.read(tracker, Call::SmClock, |d| d.clock_info(Clock::SM));
        s.memory_clock_mhz = self.read(tracker, Call::MemoryClock, |d| d.clock_info(Clock::Memory));
        s.fan_pct = self.read(tracker, Call::Fan, |d| d.fan_speed(0));
        s.throttle_reasons = self
            .read(tracker, Call::Throttle, |d| d.current_throttle_reasons())
            .map(|r| throttle_reason_words(r.bits()));
        s.performance_state =
            self.read(tracker, Call::PerformanceState, |d| d.performance_state()).and_then(pstate_number);
        match self.read(tracker, Call::Processes, |d| d.running_compute_processes()) {
            Some(list) => {
                s.processes = list
                    .into_iter()
                    .map(|p| GpuProcess {
                        pid: p.pid,
                        used_memory_bytes: match p.used_gpu_memory {
                            UsedGpuMemory::Used(b) => Some(b),
                            UsedGpuMemory::Unavailable => None,
                        },
                        model: None,
                    })
                    .collect();
            }
            None => s.processes_na = self.unsupported.has(Call::Processes),
        }
        if self.lost || self.device.is_none() {
            return self.lost_sample();
        }
        s
    }

    /// (total, used, reserved): the v2 call where the driver has it (≥ 510), else v1.
    fn memory(&mut self, nvml: &Nvml, tracker: &CallTracker) -> Option<(u64, u64, Option<u64>)> {
        if !self.unsupported.has(Call::Memory) {
            if let Some(m) = self.read(tracker, Call::Memory, |d| d.memory_info()) {
                return Some((m.total, m.used, Some(m.reserved)));
            }
            if !self.unsupported.has(Call::Memory) {
                return None;
            }
        }
        let sym = match nvml.lib().nvmlDeviceGetMemoryInfo.as_ref() {
            Ok(sym) => *sym,
            Err(_) => {
                self.unsupported.add(Call::MemoryV1);
                return None;
            }
        };
        self.read(tracker, Call::MemoryV1, |d| {
            let mut m = MaybeUninit::zeroed();
            // SAFETY: the symbol has nvmlDeviceGetMemoryInfo's C signature, the handle comes
            // from this NVML instance, and `m` is a writable nvmlMemory_t.
            let rc = unsafe { sym(d.handle(), m.as_mut_ptr()) };
            nvml_result(rc)?;
            // SAFETY: zero-initialised plain integers, filled in on success.
            let m = unsafe { m.assume_init() };
            Ok((m.total, m.used, None))
        })
    }

    fn lost_sample(&self) -> GpuSample {
        GpuSample {
            index: self.index,
            name: self.name.clone(),
            uuid: self.uuid.clone(),
            lost: self.lost,
            processes_na: true,
            ..Default::default()
        }
    }
}

/// NVML return codes the v1 memory call can give, as nvml-wrapper's errors.
fn nvml_result(rc: u32) -> Result<(), NvmlError> {
    match rc {
        0 => Ok(()),
        3 => Err(NvmlError::NotSupported),
        13 => Err(NvmlError::FunctionNotFound),
        15 => Err(NvmlError::GpuLost),
        other => Err(NvmlError::UnexpectedVariant(other)),
    }
}

fn milli(v: u32) -> f64 {
    f64::from(v) / 1000.0
}

fn pstate_number(p: PerformanceState) -> Option<u32> {
    use PerformanceState::*;
    let n = match p {
        Zero => 0,
        One => 1,
        Two => 2,
        Three => 3,
        Four => 4,
        Five => 5,
        Six => 6,
        Seven => 7,
        Eight => 8,
        Nine => 9,
        Ten => 10,
        Eleven => 11,
        Twelve => 12,
        Thirteen => 13,
        Fourteen => 14,
        Fifteen => 15,
        Unknown => return None,
    };
    Some(n)
}

/// NVML GPUs. Borrows the loaded library; lives on the sampler thread.
pub struct NvmlSource<'a> {
    nvml: &'a Nvml,
    driver_version: Option<String>,
    gpus: Vec<NvmlGpu<'a>>,
    events: Option<EventSet<'a>>,
}

/// Xid events read per sample at most (a storm must not stall sampling).
const MAX_EVENTS_PER_SAMPLE: usize = 32;

impl<'a> NvmlSource<'a> {
    /// Enumerates the GPUs and subscribes to critical Xid events where supported.
    pub fn new(nvml: &'a Nvml, tracker: &CallTracker) -> Result<Self, String> {
        let driver_version = nvml.sys_driver_version().ok();
        let count = tracker
            .track(Call::DeviceCount, None, || nvml.device_count())
            .map_err(|e| format!("NVML loaded but cannot count GPUs: {e}"))?;
        let gpus: Vec<NvmlGpu<'a>> = (0..count).map(|i| NvmlGpu::open(nvml, i, tracker)).collect();
        let mut source = NvmlSource { nvml, driver_version, gpus, events: None };
        source.events = source.subscribe_xids(tracker);
        Ok(source)
    }

    pub fn driver_version(&self) -> Option<&str> {
        self.driver_version.as_deref()
    }

    fn subscribe_xids(&mut self, tracker: &CallTracker) -> Option<EventSet<'a>> {
        let lib = self.nvml.lib();
        // EventSet's Drop calls nvmlEventSetFree unchecked: only use events if it all exists.
        if lib.nvmlEventSetCreate.is_err()
            || lib.nvmlEventSetFree.is_err()
            || lib.nvmlEventSetWait_v2.is_err()
            || lib.nvmlDeviceRegisterEvents.is_err()
        {
            return None;
        }
        let nvml = self.nvml;
        let mut set = tracker.track(Call::EventSetup, None, || nvml.create_event_set()).ok()?;
        let mut any = false;
        for gpu in &mut self.gpus {
            let Some(device) = gpu.device.as_ref().filter(|_| !gpu.lost) else {
                continue;
            };
            let supported = tracker.track(Call::EventSetup, Some(gpu.index), || device.supported_event_types());
            if !supported.is_ok_and(|t| t.contains(EventTypes::CRITICAL_XID_ERROR)) {
                continue;
            }
            match tracker.track(Call::EventSetup, Some(gpu.index), || {
                device.register_events(EventTypes::CRITICAL_XID_ERROR, set)
            }) {
                Ok(s) => {
                    set = s;
                    any = true;
                }
                Err(e) => {
                    // The set was released; Xid events stay off rather than half-registered.
                    tracing::warn!(gpu = gpu.index, error = %e, "cannot listen for Xid events");
                    return None;
                }
            }
        }
        any.then_some(set)
    }
}

impl GpuSource for NvmlSource<'_> {
    fn status(&self) -> BackendStatus {
        BackendStatus::Nvml { driver_version: self.driver_version.clone() }
    }

    fn sample(&mut self, tracker: &CallTracker) -> Vec<GpuSample> {
        let nvml = self.nvml;
        self.gpus.iter_mut().map(|g| g.sample(nvml, tracker)).collect()
    }

    fn driver_events(&mut self, tracker: &CallTracker) -> Vec<XidEvent> {
        let Some(set) = self.events.as_ref() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for _ in 0..MAX_EVENTS_PER_SAMPLE {
            match tracker.track(Call::EventWait, None, || set.wait(0)) {
                Ok(data) => {
                    let Some(xid) = data.event_data else {
                        continue;
                    };
                    let gpu = tracker.track(Call::EventWait, None, || data.device.index()).unwrap_or(u32::MAX);
                    out.push(XidEvent {
                        gpu,
                        xid: match xid {
                            XidError::Value(v) => v,
                            XidError::Unknown => 999,
                        },
                    });
                }
                Err(NvmlError::Timeout) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "reading Xid events failed; no longer listening");
                    self.events = None;
                    break;
                }
            }
        }
        out
    }
}
