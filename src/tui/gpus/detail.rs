//! The GPUs pane's `Enter` detail: every reading of one GPU, throttle reasons, processes, Xid
//! errors, and larger history charts.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Sparkline, Wrap};

use super::*;
use crate::protocol::{BackendStatus, GpuHistory, GpuSample, GpuState};

/// The detail of the GPU at position `index` in `gpus.gpus`: every reading, throttle reasons,
/// processes, Xid errors, and larger history charts. Draws inside `area`.
pub fn render_detail(frame: &mut Frame, area: Rect, gpus: &GpuState, index: usize, theme: &Theme) {
    let Some(g) = gpus.gpus.get(index) else {
        frame.render_widget(Paragraph::new(Span::styled("That GPU is gone.", theme.dim())), area);
        return;
    };
    let [head, body] = Layout::vertical([Constraint::Length(2), Constraint::Min(1)]).areas(area);
    frame.render_widget(Paragraph::new(detail_head(g, gpus, theme)), head);
    let [info, charts] = Layout::horizontal([Constraint::Length(46), Constraint::Min(10)]).areas(body);
    frame.render_widget(Paragraph::new(detail_info(g, gpus, theme)).wrap(Wrap { trim: false }), info);
    if let Some(h) = gpus.history_of(index) {
        render_charts(frame, charts, g, h, gpus.sample_ms, theme);
    }
}

fn detail_head(g: &GpuSample, gpus: &GpuState, theme: &Theme) -> Vec<Line<'static>> {
    let mut first = vec![Span::styled(format!("GPU {} · {}", g.index, g.name), theme.header())];
    if g.lost {
        first.push(Span::styled("  ✖ LOST: GPU is not answering", theme.bad()));
    }
    let mut second = vec![Span::styled(
        format!("{} · {}", if g.uuid.is_empty() { "uuid N/A" } else { &g.uuid }, backend_text(&gpus.backend)),
        theme.dim(),
    )];
    if let Some(stale) = &gpus.stale {
        second.push(Span::styled(format!("  ⚠ STALE for {}s", stale.stale_ms / 1000), theme.bad()));
    }
    vec![Line::from(first), Line::from(second)]
}

fn backend_text(b: &BackendStatus) -> String {
    match b {
        BackendStatus::Nvml { driver_version } => {
            format!("NVML, driver {}", driver_version.as_deref().unwrap_or("unknown"))
        }
        BackendStatus::Simulated => "simulated".into(),
        BackendStatus::Starting => "starting".into(),
        BackendStatus::None { .. } => "no backend".into(),
        BackendStatus::Off => "off".into(),
    }
}

fn na<T: std::fmt::Display>(v: Option<T>, unit: &str) -> String {
    v.map_or_else(|| "N/A".into(), |v| format!("{v}{unit}"))
}

fn detail_info(g: &GpuSample, gpus: &GpuState, theme: &Theme) -> Vec<Line<'static>> {
    let row = |label: &str, value: String| {
        Line::from(vec![Span::styled(format!("{label:<14}"), theme.dim()), Span::raw(value)])
    };
    let energy = match (g.energy_j, g.energy_source) {
        (Some(j), Some(EnergySource::Counter)) => format!("{} (driver counter)", fmt_energy(j)),
        (Some(j), _) => format!("{} (integrated power)", fmt_energy(j)),
        (None, _) => "N/A".into(),
    };
    let since_start = gpus
        .history_of(gpus.gpus.iter().position(|x| x.index == g.index).unwrap_or(0))
        .and_then(|h| Some(g.energy_j? - h.energy_start_j?))
        .map_or_else(|| "N/A".into(), |j| fmt_energy(j.max(0.0)));
    let mut lines = vec![
        row("utilization", na(g.utilization_gpu_pct, "%")),
        row("memory ctrl", na(g.utilization_memory_pct, "%")),
        row(
            "memory",
            format!(
                "{} of {} ({} reserved)",
                gib(g.memory_used_bytes),
                gib(g.memory_total_bytes),
                gib(g.memory_reserved_bytes)
            ),
        ),
        row(
            "temperature",
            format!("{} (slowdown at {})", na(g.temperature_c, "°C"), na(g.temperature_slowdown_c, "°C")),
        ),
        row(
            "power",
            format!(
                "{} of {} limit",
                na(g.power_draw_w.map(|w| format!("{w:.1}")), "W"),
                na(g.power_limit_w.map(|w| format!("{w:.0}")), "W")
            ),
        ),
        row("energy", energy),
        row("since start", since_start),
        row("clocks", format!("SM {} · memory {}", na(g.sm_clock_mhz, " MHz"), na(g.memory_clock_mhz, " MHz"))),
        row("fan", na(g.fan_pct, "%")),
        row("perf state", na(g.performance_state.map(|p| format!("P{p}")), "")),
    ];
    let throttle = match &g.throttle_reasons {
        None => "N/A".to_owned(),
        Some(w) if w.is_empty() => "none".to_owned(),
        Some(w) => w.join(", "),
    };
    let style = if throttle_summary(g).is_some() { theme.warn() } else { Style::new() };
    lines.push(Line::from(vec![
        Span::styled(format!("{:<14}", "throttle"), theme.dim()),
        Span::styled(throttle, style),
    ]));
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled("processes", theme.header())));
    if g.processes_na {
        lines.push(Line::from(Span::styled("  N/A", theme.dim())));
    } else if g.processes.is_empty() {
        lines.push(Line::from(Span::styled("  none", theme.dim())));
    }
    for p in &g.processes {
        lines.push(Line::from(format!(
            "  pid {:<8} {:>7}  {}",
            p.pid,
            gib(p.used_memory_bytes),
            p.model.as_deref().unwrap_or("—")
        )));
    }
    let xids: Vec<_> = gpus.xids_of(g.index).collect();
    if !xids.is_empty() {
        lines.push(Line::from(""));
        lines.push(Line::from(Span::styled("driver errors", theme.header())));
        for x in xids {
            lines.push(Line::from(Span::styled(
                format!("  {} Xid {}: {}", x.ts.with_timezone(&chrono::Local).format("%H:%M:%S"), x.xid, x.meaning),
                theme.bad(),
            )));
        }
    }
    lines
}

fn render_charts(frame: &mut Frame, area: Rect, g: &GpuSample, h: &GpuHistory, sample_ms: u64, theme: &Theme) {
    let window = crate::util::fmt_duration_ms(h.len() as u64 * sample_ms.max(1));
    let mem_max = g.memory_total_bytes.map_or(0, |t| t / (1024 * 1024));
    let power_max = g.power_limit_w.map_or(0, |l| l.round() as u64);
    let temp_max = g.temperature_slowdown_c.map_or(100, |t| u64::from(t) + 10);
    let charts: [(String, Vec<Option<u64>>, u64); 4] = [
        (
            format!("utilization {} (last {window})", na(g.utilization_gpu_pct, "%")),
            h.util_pct.iter().map(|v| v.map(u64::from)).collect(),
            100,
        ),
        (
            format!("memory {} of {}", gib(g.memory_used_bytes), gib(g.memory_total_bytes)),
            h.memory_mib.iter().map(|v| v.map(u64::from)).collect(),
            mem_max,
        ),
        (
            format!(
                "power {} of {}",
                na(g.power_draw_w.map(|w| format!("{w:.0}")), "W"),
                na(g.power_limit_w.map(|w| format!("{w:.0}")), "W")
            ),
            h.power_w.iter().map(|v| v.map(u64::from)).collect(),
            power_max,
        ),
        (
            format!("temperature {}", na(g.temperature_c, "°C")),
            h.temperature_c.iter().map(|v| v.map(u64::from)).collect(),
            temp_max,
        ),
    ];
    let peak_text: [fn(u64) -> String; 4] =
        [|v| format!("{v}%"), |mib| format!("{:.1}G", mib as f64 / 1024.0), |w| format!("{w}W"), |c| format!("{c}°C")];
    let rows = Layout::vertical([Constraint::Ratio(1, 4); 4]).split(area);
    for (((title, data, max), rect), peak_text) in charts.into_iter().zip(rows.iter()).zip(peak_text) {
        let [label, chart] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(*rect);
        let peak = data.iter().flatten().max().map(|p| format!("  peak {}", peak_text(*p))).unwrap_or_default();
        frame.render_widget(
            Paragraph::new(Line::from(vec![Span::styled(title, theme.header()), Span::styled(peak, theme.dim())])),
            label,
        );
        if chart.height == 0 {
            continue;
        }
        let width = usize::from(chart.width);
        let tail: Vec<Option<u64>> = data[data.len().saturating_sub(width)..].to_vec();
        let mut spark = Sparkline::default()
            .data(tail)
            .style(theme.accent())
            .absent_value_symbol("·")
            .absent_value_style(theme.dim());
        if max > 0 {
            spark = spark.max(max);
        }
        frame.render_widget(spark, chart);
    }
}
