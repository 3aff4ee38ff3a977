//! Snapshots of the GPUs pane and its detail view (ratatui TestBackend): 1, 2 and 8 GPUs, N/A
//! readings, a lost GPU, stale readings, no backend. States are built through the reducer.

use chrono::{TimeZone, Utc};
use llmdeck::protocol::{BackendStatus, GpuEvent, GpuProcess, GpuSample, GpuState};
use llmdeck::tui::gpus::{render, render_detail};
use llmdeck::tui::theme::Theme;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::Color;

const GIB: u64 = 1 << 30;
const H100_BYTES: u64 = 85_520_809_984;

fn h100(index: u32, util: u32, used_gib: f64) -> GpuSample {
    GpuSample {
        index,
        name: "NVIDIA H100 80GB HBM3".into(),
        uuid: format!("GPU-00000000-fake-4e56-8d4c-{index:012}"),
        utilization_gpu_pct: Some(util),
        utilization_memory_pct: Some(util / 2),
        memory_used_bytes: Some((used_gib * GIB as f64) as u64),
        memory_total_bytes: Some(H100_BYTES),
        memory_reserved_bytes: Some(GIB / 2),
        temperature_c: Some(40 + util / 4),
        temperature_slowdown_c: Some(87),
        power_draw_w: Some(90.0 + f64::from(util) * 2.7),
        power_limit_w: Some(700.0),
        energy_j: Some(1_000_000.0),
        energy_source: Some(llmdeck::protocol::EnergySource::Counter),
        sm_clock_mhz: Some(1980),
        memory_clock_mhz: Some(2619),
        fan_pct: None,
        throttle_reasons: Some(Vec::new()),
        performance_state: Some(0),
        processes: Vec::new(),
        processes_na: false,
        lost: false,
    }
}

fn process(pid: u32, gib: f64, model: Option<&str>) -> GpuProcess {
    GpuProcess { pid, used_memory_bytes: Some((gib * GIB as f64) as u64), model: model.map(str::to_owned) }
}

/// The state after `points` samples: utilisation wanders, energy grows, the last is `gpus`.
fn state_with(gpus: Vec<GpuSample>, points: u32) -> GpuState {
    let mut s = GpuState::default();
    s.apply(&GpuEvent::Backend {
        status: BackendStatus::Nvml { driver_version: Some("550.54.15".into()) },
        sample_ms: 1000,
        history_len: 600,
    });
    let ts = Utc.with_ymd_and_hms(2025, 11, 23, 14, 2, 31).single().expect("time");
    for step in 0..points {
        let mut sample = gpus.clone();
        for g in &mut sample {
            let wave = (step * 7 + g.index * 13) % 40;
            g.utilization_gpu_pct = g.utilization_gpu_pct.map(|u| (u + wave).saturating_sub(20).min(100));
            g.energy_j = g.energy_j.map(|e| e + f64::from(step) * 5_000.0);
        }
        if step + 1 == points {
            for (g, last) in sample.iter_mut().zip(&gpus) {
                g.utilization_gpu_pct = last.utilization_gpu_pct;
            }
        }
        s.apply(&GpuEvent::Sampled { ts, gpus: sample });
    }
    s
}

fn two_gpus() -> Vec<GpuSample> {
    let mut a = h100(0, 83, 61.2);
    a.processes = vec![process(4242, 57.1, Some("qwen-7b")), process(4300, 0.0, Some("llama-8b"))];
    a.temperature_c = Some(64);
    a.power_draw_w = Some(312.0);
    let mut b = h100(1, 24, 31.0);
    b.processes = vec![process(5151, 30.2, Some("llama-8b"))];
    b.throttle_reasons = Some(vec!["power cap".into()]);
    vec![a, b]
}

fn text(buffer: &Buffer) -> String {
    let area = buffer.area;
    let mut out = String::new();
    for y in 0..area.height {
        let row: String = (0..area.width).map(|x| buffer[(x, y)].symbol().to_owned()).collect();
        out.push_str(row.trim_end());
        out.push('\n');
    }
    out
}

fn draw(state: &GpuState, width: u16, height: u16, focused: bool, selected: usize, theme: Theme) -> Buffer {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("terminal");
    terminal.draw(|f| render(f, f.area(), state, &theme, focused, selected)).expect("draw");
    terminal.backend().buffer().clone()
}

fn pane(state: &GpuState, width: u16, height: u16, selected: usize) -> String {
    text(&draw(state, width, height, true, selected, Theme::new(true)))
}

#[test]
fn one_gpu() {
    let mut g = h100(0, 83, 61.2);
    g.processes = vec![process(4242, 57.1, Some("qwen-7b"))];
    let state = state_with(vec![g], 40);
    insta::assert_snapshot!("one_gpu", pane(&state, 58, 6, 0));
}

#[test]
fn two_gpus_as_blocks() {
    let state = state_with(two_gpus(), 60);
    insta::assert_snapshot!("two_gpus", pane(&state, 58, 9, 1));
}

#[test]
fn two_gpus_with_room_show_power_and_temperature_history() {
    let state = state_with(two_gpus(), 60);
    insta::assert_snapshot!("two_gpus_roomy", pane(&state, 58, 16, 0));
}

#[test]
fn narrow_pane_of_an_80_column_terminal() {
    let state = state_with(two_gpus(), 30);
    insta::assert_snapshot!("two_gpus_narrow", pane(&state, 38, 9, 0));
    let eight: Vec<GpuSample> = (0..8).map(|i| h100(i, 10 + i * 11, 5.0 + f64::from(i) * 9.0)).collect();
    insta::assert_snapshot!("eight_gpus_narrow", pane(&state_with(eight, 5), 38, 9, 0));
}

#[test]
fn eight_gpus_compact_when_they_do_not_fit() {
    let gpus: Vec<GpuSample> = (0..8)
        .map(|i| {
            let mut g = h100(i, 10 + i * 11, 5.0 + f64::from(i) * 9.0);
            if i % 3 == 0 {
                g.processes = vec![process(7000 + i, 40.0, Some(&format!("model-{i}")))];
            }
            g
        })
        .collect();
    let state = state_with(gpus, 30);
    insta::assert_snapshot!("eight_gpus_compact", pane(&state, 58, 10, 2));
    insta::assert_snapshot!("eight_gpus_blocks_when_tall", pane(&state, 100, 26, 2));
    insta::assert_snapshot!("eight_gpus_scrolled_to_the_selected", pane(&state, 58, 5, 7));
}

#[test]
fn na_fields_read_n_a() {
    let g = GpuSample {
        index: 0,
        name: "Tesla K80".into(),
        uuid: "GPU-k80".into(),
        memory_used_bytes: Some(3 * GIB),
        memory_total_bytes: Some(11_996_954_624),
        temperature_c: Some(45),
        power_draw_w: Some(61.0),
        power_limit_w: Some(149.0),
        processes_na: true,
        ..Default::default()
    };
    let state = state_with(vec![g], 5);
    insta::assert_snapshot!("na_fields", pane(&state, 58, 6, 0));
}

#[test]
fn lost_gpu_with_its_xid() {
    let mut gpus = two_gpus();
    gpus[1] = GpuSample {
        index: 1,
        name: "NVIDIA H100 80GB HBM3".into(),
        lost: true,
        processes_na: true,
        ..Default::default()
    };
    let mut state = state_with(gpus, 10);
    state.apply(&GpuEvent::Xid {
        ts: Utc.with_ymd_and_hms(2025, 11, 23, 14, 2, 30).single().expect("time"),
        gpu: 1,
        xid: 79,
        meaning: "GPU has fallen off the bus".into(),
    });
    insta::assert_snapshot!("lost_gpu", pane(&state, 58, 9, 0));
}

#[test]
fn stale_readings_say_so() {
    let mut state = state_with(two_gpus(), 20);
    state.apply(&GpuEvent::Stale { stale_ms: 12_400, call: Some("nvmlDeviceGetPowerUsage (GPU 1)".into()) });
    insta::assert_snapshot!("stale", pane(&state, 58, 9, 0));
}

#[test]
fn no_backend_says_why() {
    let mut state = GpuState::default();
    state.apply(&GpuEvent::Backend {
        status: BackendStatus::None {
            reason: "NVML unavailable (libnvidia-ml.so.1): libnvidia-ml.so.1: cannot open shared object file: No such file or directory".into(),
        },
        sample_ms: 1000,
        history_len: 600,
    });
    insta::assert_snapshot!("none_backend", pane(&state, 58, 8, 0));
}

#[test]
fn detail_view() {
    let state = state_with(two_gpus(), 120);
    let mut terminal = Terminal::new(TestBackend::new(100, 26)).expect("terminal");
    terminal.draw(|f| render_detail(f, f.area(), &state, 1, &Theme::new(true))).expect("draw");
    insta::assert_snapshot!("detail", text(terminal.backend().buffer()));
}

#[test]
fn monochrome_uses_no_colour_and_marks_the_selection_with_a_symbol() {
    let state = state_with(two_gpus(), 10);
    let buffer = draw(&state, 58, 9, true, 1, Theme::monochrome());
    for cell in buffer.content() {
        assert_eq!(cell.fg, Color::Reset, "no colour in monochrome");
        assert_eq!(cell.bg, Color::Reset, "no colour in monochrome");
    }
    let shown = text(&buffer);
    assert!(shown.contains("▶1 H100"), "{shown}");
    let unfocused = text(&draw(&state, 58, 9, false, 1, Theme::monochrome()));
    assert!(!unfocused.contains('▶'), "{unfocused}");
}

#[test]
fn tiny_areas_do_not_panic() {
    let state = state_with(two_gpus(), 10);
    for (w, h) in [(1, 1), (10, 2), (20, 1), (30, 3)] {
        draw(&state, w, h, true, 5, Theme::new(true));
        let mut terminal = Terminal::new(TestBackend::new(w, h)).expect("terminal");
        terminal.draw(|f| render_detail(f, f.area(), &state, 0, &Theme::new(true))).expect("draw");
    }
}
