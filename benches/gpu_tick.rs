//! Cost of one GPU sampling tick for 8 GPUs through the fake libnvidia-ml (tests/fake_nvml,
//! built by build.rs) and the real nvml-wrapper path, plus what the engine and the TUI then do
//! with the sample (reducer, pane drawing).
//!
//! `cargo bench --bench gpu_tick` (TICKS=5000 per round by default, best and median of 7 rounds).
//! The fake answers instantly, so this is llmdeck's own cost per tick: nvml-wrapper, the
//! N/A bookkeeping, the watchdog's call tracking, energy integration and PID → model mapping.

use std::ffi::c_long;
use std::time::{Duration, Instant};

use chrono::Utc;
use llmdeck::gpu::nvml::{self, NvmlSource};
use llmdeck::gpu::{CallTracker, EnergyIntegrator, GpuSource, map_models};
use llmdeck::protocol::{BackendStatus, GpuEvent, GpuState};
use llmdeck::tui::gpus;
use llmdeck::tui::theme::Theme;
use llmdeck::util::procfs::ModelProcesses;
use ratatui::Terminal;
use ratatui::backend::TestBackend;

const ROUNDS: usize = 7;

fn main() {
    let ticks: u32 = std::env::var("TICKS").ok().and_then(|s| s.parse().ok()).unwrap_or(5000);
    let built = env!("LLMDECK_FAKE_NVML");
    assert!(!built.is_empty(), "build.rs could not compile tests/fake_nvml");
    let dir = tempfile::tempdir().expect("temp dir");
    let lib = dir.path().join("libnvidia-ml.so.1");
    std::fs::copy(built, &lib).expect("copy the fake library");
    // GPU 0 reports this process as a compute process, registered as a model's group: the
    // model mapping reads /proc like it does for a real model server.
    let me = std::process::id();
    std::fs::write(dir.path().join("libnvidia-ml.so.1.scenario"), format!("scenario=eight\nprocess_pid={me}\n"))
        .expect("scenario");
    let processes = ModelProcesses::default();
    processes.set("bench-model", nix::unistd::getpgrp().as_raw() as u32);

    let nvml = nvml::load(Some(&lib)).expect("the fake loads");
    let tracker = CallTracker::default();
    let mut source = NvmlSource::new(&nvml, &tracker).expect("GPUs");
    let total_calls = || -> c_long {
        // SAFETY: the fake exports `long fake_nvml_total_calls(void)`.
        unsafe {
            let f = nvml
                .lib()
                .__library
                .get::<unsafe extern "C" fn() -> c_long>(b"fake_nvml_total_calls\0")
                .expect("the fake's counter");
            f()
        }
    };

    // Warm up (and check the shape once).
    let mut energy = EnergyIntegrator::default();
    let mut gpus = Vec::new();
    for _ in 0..200 {
        gpus = source.sample(&tracker);
        source.driver_events(&tracker);
        energy.apply(&mut gpus, Instant::now());
        map_models(&mut gpus, &processes);
    }
    assert_eq!(gpus.len(), 8);
    assert_eq!(gpus[0].processes[0].model.as_deref(), Some("bench-model"));

    let before = total_calls();
    let nvml_only = rounds(ticks, || {
        let _ = source.sample(&tracker);
        let _ = source.driver_events(&tracker);
    });
    let calls_per_tick = (total_calls() - before) as f64 / f64::from(ticks * ROUNDS as u32);
    let full = rounds(ticks, || {
        let mut g = source.sample(&tracker);
        let _ = source.driver_events(&tracker);
        energy.apply(&mut g, Instant::now());
        map_models(&mut g, &processes);
    });

    // What the engine and a viewer do with each sample.
    let mut state = GpuState::default();
    state.apply(&GpuEvent::Backend {
        status: BackendStatus::Nvml { driver_version: source.driver_version().map(str::to_owned) },
        sample_ms: 1000,
        history_len: 600,
    });
    let event = GpuEvent::Sampled { ts: Utc::now(), gpus: gpus.clone() };
    for _ in 0..600 {
        state.apply(&event);
    }
    let reducer = rounds(ticks, || state.apply(&event));
    let snapshot_bytes = serde_json::to_vec(&state).map(|v| v.len()).unwrap_or(0);
    let theme = Theme::new(true);
    let mut compact = Terminal::new(TestBackend::new(58, 16)).expect("terminal");
    let draw_compact = rounds(ticks / 10, || {
        compact.draw(|f| gpus::render(f, f.area(), &state, &theme, true, 3)).expect("draw");
    });
    let mut blocks = Terminal::new(TestBackend::new(120, 30)).expect("terminal");
    let draw_blocks = rounds(ticks / 10, || {
        blocks.draw(|f| gpus::render(f, f.area(), &state, &theme, true, 3)).expect("draw");
    });

    println!("gpu_tick: 8 GPUs through the fake libnvidia-ml, {ticks} ticks × {ROUNDS} rounds");
    println!("  NVML calls per tick:                {calls_per_tick:.0}");
    report("NVML tick (sample + Xid poll)", nvml_only);
    report("full tick (+ energy, PID → model)", full);
    report("reducer (GpuState::apply, 600-pt history)", reducer);
    report("pane draw, compact 58x16", draw_compact);
    report("pane draw, blocks 120x30", draw_blocks);
    println!("  8-GPU GpuState as JSON, 600 samples of history: {snapshot_bytes} bytes");
}

/// Per-iteration times of each round, sorted.
fn rounds(n: u32, mut f: impl FnMut()) -> Vec<Duration> {
    let n = n.max(1);
    let mut out: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..n {
                f();
            }
            start.elapsed() / n
        })
        .collect();
    out.sort();
    out
}

fn report(what: &str, times: Vec<Duration>) {
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!("  {what:<42} best {:>8.2} µs   median {:>8.2} µs", us(times[0]), us(times[times.len() / 2]));
}
