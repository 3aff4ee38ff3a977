//! The NVML backend through the real nvml-wrapper path, against the fake libnvidia-ml built by
//! build.rs (tests/fake_nvml). Each test loads its own copy of the library, with its scenario in
//! a file next to it, so tests in this process do not share the fake's state.

use std::ffi::{CString, c_char, c_long};
use std::path::PathBuf;

use llmdeck::gpu::nvml::{self, NvmlSource};
use llmdeck::gpu::{CallTracker, GpuSource, XidEvent};
use llmdeck::protocol::EnergySource;

const GIB: u64 = 1 << 30;

/// A private copy of the fake library with `scenario` (key=value lines) next to it.
fn fake_library(scenario: &str) -> (tempfile::TempDir, PathBuf) {
    let built = env!("LLMDECK_FAKE_NVML");
    assert!(!built.is_empty(), "build.rs could not compile tests/fake_nvml (see the cargo warnings)");
    let dir = tempfile::tempdir().expect("temp dir");
    let lib = dir.path().join("libnvidia-ml.so.1");
    std::fs::copy(built, &lib).expect("copy the fake library");
    std::fs::write(dir.path().join("libnvidia-ml.so.1.scenario"), scenario).expect("scenario");
    (dir, lib)
}

/// How often the fake's `function` was called (its test-only export).
fn calls(nvml: &nvml_wrapper::Nvml, function: &str) -> c_long {
    let name = CString::new(function).expect("name");
    // SAFETY: the fake exports `long fake_nvml_call_count(const char *)`.
    unsafe {
        let count = nvml
            .lib()
            .__library
            .get::<unsafe extern "C" fn(*const c_char) -> c_long>(b"fake_nvml_call_count\0")
            .expect("the fake's call counter");
        count(name.as_ptr())
    }
}

#[test]
fn two_gpus_read_exactly_the_fakes_values() {
    let (_dir, lib) = fake_library("scenario=two\nprocess_pid=777\n");
    let nvml = nvml::load(Some(&lib)).expect("the fake loads");
    let tracker = CallTracker::default();
    let mut source = NvmlSource::new(&nvml, &tracker).expect("GPUs");
    assert_eq!(source.driver_version(), Some("550.54.15-fake"));
    let gpus = source.sample(&tracker);
    assert_eq!(gpus.len(), 2);

    let g0 = &gpus[0];
    assert_eq!(g0.index, 0);
    assert_eq!(g0.name, "NVIDIA H100 80GB HBM3");
    assert_eq!(g0.uuid, "GPU-00000000-fake-4e56-8d4c-000000000000");
    assert_eq!(g0.utilization_gpu_pct, Some(37));
    assert_eq!(g0.utilization_memory_pct, Some(12));
    assert_eq!(g0.memory_total_bytes, Some(85_520_809_984));
    assert_eq!(g0.memory_used_bytes, Some(8 * GIB));
    assert_eq!(g0.memory_reserved_bytes, Some(536_870_912));
    assert_eq!(g0.temperature_c, Some(45));
    assert_eq!(g0.temperature_slowdown_c, Some(87));
    assert_eq!(g0.power_draw_w, Some(312.345));
    assert_eq!(g0.power_limit_w, Some(700.0));
    assert_eq!(g0.energy_j, Some(123_456.789));
    assert_eq!(g0.sm_clock_mhz, Some(1980));
    assert_eq!(g0.memory_clock_mhz, Some(2619));
    assert_eq!(g0.fan_pct, None, "even GPUs have no fan reading");
    assert_eq!(g0.throttle_reasons, Some(vec!["power cap".to_owned()]));
    assert_eq!(g0.performance_state, Some(0));
    assert_eq!(g0.processes.len(), 1);
    assert_eq!(g0.processes[0].pid, 777);
    assert_eq!(g0.processes[0].used_memory_bytes, Some(6 * GIB));
    assert!(!g0.lost && !g0.processes_na);

    let g1 = &gpus[1];
    assert_eq!(g1.utilization_gpu_pct, Some(48));
    assert_eq!(g1.memory_used_bytes, Some(12 * GIB));
    assert_eq!(g1.power_draw_w, Some(313.845));
    assert_eq!(g1.fan_pct, Some(31));
    assert_eq!(g1.throttle_reasons, Some(vec!["sw thermal slowdown".to_owned(), "hw thermal slowdown".to_owned()]));
    assert_eq!(g1.processes[0].pid, 4_199_455);
    assert_eq!(g1.processes[0].used_memory_bytes, None, "NVML_VALUE_NOT_AVAILABLE");
    assert!(source.driver_events(&tracker).is_empty());
}

#[test]
fn eight_gpus_are_all_read() {
    let (_dir, lib) = fake_library("scenario=eight\n");
    let nvml = nvml::load(Some(&lib)).expect("the fake loads");
    let tracker = CallTracker::default();
    let mut source = NvmlSource::new(&nvml, &tracker).expect("GPUs");
    let gpus = source.sample(&tracker);
    assert_eq!(gpus.len(), 8);
    assert_eq!(gpus.iter().map(|g| g.index).collect::<Vec<_>>(), (0..8).collect::<Vec<_>>());
    assert_eq!(gpus[7].temperature_c, Some(59));
    assert_eq!(gpus[7].performance_state, Some(8));
    assert_eq!(gpus[7].throttle_reasons, Some(vec!["idle".to_owned()]));
    assert!(gpus[7].processes.is_empty());
}

#[test]
fn not_supported_readings_are_none_and_never_asked_again() {
    let (_dir, lib) = fake_library("scenario=na\n");
    let nvml = nvml::load(Some(&lib)).expect("the fake loads");
    let tracker = CallTracker::default();
    let mut source = NvmlSource::new(&nvml, &tracker).expect("GPUs");
    let mut last = Vec::new();
    for _ in 0..3 {
        last = source.sample(&tracker);
    }
    let g = &last[0];
    assert_eq!(g.name, "Tesla K80");
    assert_eq!(g.memory_total_bytes, Some(11_996_954_624));
    assert_eq!(g.temperature_c, Some(45));
    assert_eq!(g.power_draw_w, Some(312.345));
    assert_eq!(g.utilization_gpu_pct, None);
    assert_eq!(g.utilization_memory_pct, None);
    assert_eq!(g.energy_j, None, "FUNCTION_NOT_FOUND");
    assert_eq!(g.sm_clock_mhz, None);
    assert_eq!(g.fan_pct, None);
    assert_eq!(g.throttle_reasons, None);
    assert_eq!(g.performance_state, None);
    assert!(g.processes_na);
    for function in [
        "nvmlDeviceGetUtilizationRates",
        "nvmlDeviceGetTotalEnergyConsumption",
        "nvmlDeviceGetFanSpeed_v2",
        "nvmlDeviceGetCurrentClocksThrottleReasons",
        "nvmlDeviceGetComputeRunningProcesses_v3",
        "nvmlDeviceGetPerformanceState",
        "nvmlDeviceGetTemperatureThreshold",
    ] {
        assert_eq!(calls(&nvml, function), 1, "{function} asked once only");
    }
    assert_eq!(calls(&nvml, "nvmlDeviceGetClockInfo"), 2, "SM and memory clock, once each");
    assert_eq!(calls(&nvml, "nvmlDeviceGetPowerUsage"), 3, "supported: every sample");
}

#[test]
fn missing_symbols_are_tolerated_and_memory_falls_back_to_v1() {
    let built = env!("LLMDECK_FAKE_NVML_MINIMAL");
    assert!(!built.is_empty(), "build.rs could not compile the minimal fake");
    let dir = tempfile::tempdir().expect("temp dir");
    let lib = dir.path().join("libnvidia-ml.so.1");
    std::fs::copy(built, &lib).expect("copy");
    std::fs::write(dir.path().join("libnvidia-ml.so.1.scenario"), "scenario=two\n").expect("write");
    let nvml = nvml::load(Some(&lib)).expect("a library without optional symbols still loads");
    let tracker = CallTracker::default();
    let mut source = NvmlSource::new(&nvml, &tracker).expect("GPUs");
    let gpus = source.sample(&tracker);
    let g = &gpus[0];
    assert_eq!(g.memory_used_bytes, Some(8 * GIB), "nvmlDeviceGetMemoryInfo (v1)");
    assert_eq!(g.memory_total_bytes, Some(85_520_809_984));
    assert_eq!(g.memory_reserved_bytes, None, "v1 has no reserved field");
    assert_eq!(g.energy_j, None);
    assert_eq!(g.fan_pct, None);
    assert_eq!(g.throttle_reasons, None);
    assert!(g.processes_na);
    assert_eq!(g.power_draw_w, Some(312.345));
    assert!(source.driver_events(&tracker).is_empty(), "no event symbols: no events");
    source.sample(&tracker);
    assert_eq!(calls(&nvml, "nvmlDeviceGetMemoryInfo"), 4, "2 GPUs × 2 samples");
}

#[test]
fn a_lost_gpu_is_marked_and_never_asked_again_and_its_xid_arrives() {
    let (_dir, lib) = fake_library("scenario=lost\n");
    let nvml = nvml::load(Some(&lib)).expect("the fake loads");
    let tracker = CallTracker::default();
    let mut source = NvmlSource::new(&nvml, &tracker).expect("GPUs");
    let first = source.sample(&tracker);
    let second = source.sample(&tracker);
    assert!(!first[0].lost);
    assert_eq!(first[0].utilization_gpu_pct, Some(37));
    for gpus in [&first, &second] {
        let g = &gpus[1];
        assert!(g.lost);
        assert_eq!(g.utilization_gpu_pct, None);
        assert_eq!(g.memory_used_bytes, None);
        assert_eq!(g.power_draw_w, None);
    }
    assert_eq!(calls(&nvml, "nvmlDeviceGetUtilizationRates"), 3, "GPU 0 twice; GPU 1 once, then never again");
    assert_eq!(second[1].name, "NVIDIA H100 80GB HBM3", "known from before");
    assert_eq!(source.driver_events(&tracker), vec![XidEvent { gpu: 1, xid: 79 }]);
    assert!(source.driver_events(&tracker).is_empty());
}

#[test]
fn a_missing_library_is_one_line_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lib = dir.path().join("no-such-libnvidia-ml.so.1");
    let Err(reason) = nvml::load(Some(&lib)) else {
        panic!("a missing library must not load");
    };
    assert!(!reason.contains('\n'), "{reason}");
    assert!(reason.contains("no-such-libnvidia-ml.so.1"), "{reason}");
    assert!(reason.starts_with("NVML unavailable"), "{reason}");
}

#[test]
fn energy_source_is_the_counter_when_supported() {
    let (_dir, lib) = fake_library("scenario=one\n");
    let nvml = nvml::load(Some(&lib)).expect("the fake loads");
    let tracker = CallTracker::default();
    let mut source = NvmlSource::new(&nvml, &tracker).expect("GPUs");
    let mut gpus = source.sample(&tracker);
    llmdeck::gpu::EnergyIntegrator::default().apply(&mut gpus, std::time::Instant::now());
    assert_eq!(gpus[0].energy_source, Some(EnergySource::Counter));
    assert_eq!(gpus[0].energy_j, Some(123_456.789));
}
