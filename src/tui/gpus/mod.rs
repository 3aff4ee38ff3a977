//! The GPUs pane: one block per GPU (utilisation and memory gauges, temperature, power with its
//! limit, a history sparkline, which model holds how much memory, throttling, Xid errors), a
//! compact one-line-per-GPU mode when they do not fit, and the `Enter` detail view.
//!
//! The detail view lives in [`detail`]. Both draw inside `area` (the app draws borders and titles). Every number carries
//! its unit; every state has a word (`LOST`, `STALE`, `N/A`), so it reads without colour.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};

use super::theme::Theme;

mod detail;
use crate::protocol::{BackendStatus, EnergySource, GpuHistory, GpuSample, GpuState};
pub use detail::render_detail;

use crate::util::fmt_gib;
/// Sparkline levels: the lowest still shows, so "near zero" differs from N/A (`·`).
const SPARK: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
const PARTIAL: [&str; 8] = ["", "▏", "▎", "▍", "▌", "▋", "▊", "▉"];

/// Draws the pane inside `area`. `selected` is a position in `gpus.gpus`; it is marked when the
/// pane is focused.
/// The pane's own state: which GPU is selected.
#[derive(Debug, Clone, Default)]
pub struct GpusPane {
    pub selection: super::widgets::Selection,
}

impl GpusPane {
    /// The pane's own keys; `None` if it has none for `action`.
    pub fn on_action(
        &mut self,
        action: super::keymap::Action,
        state: &crate::protocol::State,
    ) -> Option<super::app::Reaction> {
        use super::app::{Overlay, Reaction};
        let len = state.gpus.gpus.len();
        if self.selection.apply(action, len) {
            return Some(Reaction::Nothing);
        }
        match action {
            super::keymap::Action::Detail if len > 0 => {
                Some(Reaction::Overlay(Overlay::GpuDetail(self.selection.index(len))))
            }
            _ => None,
        }
    }
}

pub fn render(frame: &mut Frame, area: Rect, gpus: &GpuState, theme: &Theme, focused: bool, selected: usize) {
    if area.width == 0 || area.height == 0 {
        return;
    }
    if gpus.gpus.is_empty() {
        render_empty(frame, area, gpus, theme);
        return;
    }
    let lines = pane_lines(gpus, theme, focused, selected, area.width, area.height);
    frame.render_widget(Paragraph::new(lines), area);
}

fn render_empty(frame: &mut Frame, area: Rect, gpus: &GpuState, theme: &Theme) {
    let lines = match &gpus.backend {
        BackendStatus::Off => vec![
            Line::from(Span::styled("No GPUs shown", theme.dim())),
            Line::from("GPU monitoring is off (gpu.backend: none; `auto` uses NVML when the driver is there)"),
        ],
        BackendStatus::None { reason } => vec![
            Line::from(Span::styled("No GPUs shown", theme.warn())),
            Line::from(reason.clone()),
            Line::from(Span::styled(
                "Set gpu.nvml_library or LLMDECK_NVML_LIB to the NVIDIA driver's libnvidia-ml.so.1; `llmdeck demo` shows simulated GPUs.",
                theme.dim(),
            )),
        ],
        BackendStatus::Starting => vec![Line::from(Span::styled("Looking for GPUs…", theme.dim()))],
        BackendStatus::Nvml { driver_version } => {
            vec![Line::from(format!("NVML found no GPUs (driver {})", driver_version.as_deref().unwrap_or("unknown")))]
        }
        BackendStatus::Simulated => vec![Line::from("The simulated backend has no GPUs")],
    };
    let mut lines = lines;
    if let Some(stale) = stale_line(gpus, theme, usize::from(area.width)) {
        lines.insert(0, stale);
    }
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }), area);
}

/// All the pane's lines for this size: full blocks (3 lines a GPU), without the process line (2),
/// or compact (1), whichever fits; scrolled so the selected GPU is visible.
fn pane_lines(
    gpus: &GpuState,
    theme: &Theme,
    focused: bool,
    selected: usize,
    width: u16,
    height: u16,
) -> Vec<Line<'static>> {
    let n = gpus.gpus.len();
    let selected = selected.min(n.saturating_sub(1));
    let stale = stale_line(gpus, theme, usize::from(width));
    let rows = usize::from(height).saturating_sub(usize::from(stale.is_some()));
    // (lines per GPU, blank lines between GPUs): the roomiest that fits with the footer.
    let (per_gpu, gap) = [(4, 1), (4, 0), (3, 1), (3, 0), (2, 0), (1, 0)]
        .into_iter()
        .find(|(per, gap)| per * n + gap * n.saturating_sub(1) < rows)
        .unwrap_or((1, 0));
    let footer = per_gpu * n + gap * n.saturating_sub(1) < rows;
    let layout = Columns::new(gpus, usize::from(width), per_gpu == 1);
    let mut out: Vec<Line<'static>> = stale.into_iter().collect();
    let visible = if footer { n } else { rows.max(1) };
    let first = selected.saturating_sub(visible.saturating_sub(1));
    for (pos, g) in gpus.gpus.iter().enumerate().skip(first).take(visible) {
        let marked = focused && pos == selected;
        let history = gpus.history_of(pos);
        if pos > first {
            out.extend((0..gap).map(|_| Line::from("")));
        }
        if per_gpu == 1 {
            out.push(layout.compact_line(g, marked, theme));
        } else {
            out.extend(layout.block_lines(g, history, gpus, marked, theme, per_gpu));
        }
    }
    if footer {
        out.push(footer_line(gpus, theme, usize::from(width)));
    }
    out
}

fn stale_line(gpus: &GpuState, theme: &Theme, width: usize) -> Option<Line<'static>> {
    let stale = gpus.stale.as_ref()?;
    let mut text = format!("⚠ STALE for {}s", stale.stale_ms / 1000);
    if let Some(call) = &stale.call {
        text.push_str(&format!(" · {call} hung"));
    }
    Some(Line::from(Span::styled(fit(&text, width).trim_end().to_owned(), theme.bad())))
}

/// Widths shared by every GPU's lines, so gauges line up.
struct Columns {
    width: usize,
    index_w: usize,
    name_w: usize,
    name_cap: usize,
    bar_w: usize,
    /// `util` and `mem` before the gauges.
    labels: bool,
}

impl Columns {
    fn new(gpus: &GpuState, width: usize, compact: bool) -> Self {
        let index_w = gpus.gpus.iter().map(|g| g.index.to_string().len()).max().unwrap_or(1);
        let name_cap = match (compact, width) {
            (true, 90..) => 9,
            (true, _) => 5,
            (false, 90..) => 16,
            (false, 56..) => 10,
            (false, _) => 5,
        };
        let name_w = gpus.gpus.iter().map(|g| short_name(g, name_cap).chars().count()).max().unwrap_or(3);
        let head = 2 + index_w + name_w;
        // Narrow panes (80x24 terminals) drop the `util`/`mem` words: the numbers say it.
        let labels = !compact && width >= head + 31 + 6;
        let bar_w = if compact {
            // head " 100% ▕bar▏ 61.2/79.6G 64°C 1000/700W " and at least 10 for the models;
            // no gauge at all when that leaves less than 3 cells
            match width.saturating_sub(head + 34 + 10) {
                0..3 => 0,
                room => room.min(12),
            }
        } else {
            let label = if labels { 7 } else { 1 };
            // line 1: head label "▕bar▏ 100%  100°C 1000/700W"
            let line1 = width.saturating_sub(head + label + 24).min(24);
            // line 2: head label "▕bar▏ 61.2/79.6G  util " and a sparkline of 10 or more
            let with_history = width.saturating_sub(head + label + 20 + 10);
            if with_history >= 6 { line1.min(with_history) } else { line1 }.max(3)
        };
        Self { width, index_w, name_w, name_cap, bar_w, labels }
    }

    fn head(&self, g: &GpuSample, marked: bool, theme: &Theme) -> Vec<Span<'static>> {
        let marker = if marked { "▶" } else { " " };
        let name = fit(&short_name(g, self.name_cap), self.name_w);
        let text = format!("{marker}{:>w$} {name}", g.index, w = self.index_w);
        let style = if marked { theme.selected() } else { theme.header() };
        vec![Span::styled(text, style)]
    }

    fn indent(&self) -> String {
        " ".repeat(1 + self.index_w + 1 + self.name_w)
    }

    fn block_lines(
        &self,
        g: &GpuSample,
        history: Option<&GpuHistory>,
        state: &GpuState,
        marked: bool,
        theme: &Theme,
        per_gpu: usize,
    ) -> Vec<Line<'static>> {
        let mut first = self.head(g, marked, theme);
        if g.lost {
            first.push(Span::styled("  ✖ LOST: GPU is not answering", theme.bad()));
            let mut lines = vec![Line::from(first)];
            if per_gpu >= 2 {
                let last_xid = state.xids_of(g.index).next().map_or_else(
                    || "no readings; the GPU needs a reset".to_owned(),
                    |x| format!("Xid {}: {}", x.xid, x.meaning),
                );
                lines.push(Line::from(vec![
                    Span::raw(self.indent()),
                    Span::styled(format!("  {last_xid}"), theme.bad()),
                ]));
            }
            lines.extend((lines.len()..per_gpu).map(|_| Line::from("")));
            return lines;
        }
        first.push(Span::styled(if self.labels { "  util " } else { " " }, theme.dim()));
        first.extend(gauge(g.utilization_gpu_pct.map(|u| f64::from(u) / 100.0), self.bar_w, theme.accent(), theme));
        first.push(pct_span(g.utilization_gpu_pct, theme));
        first.push(Span::raw("  "));
        first.push(temperature_span(g, theme));
        first.push(Span::raw(" "));
        first.push(power_span(g, theme));

        let mut second =
            vec![Span::raw(self.indent()), Span::styled(if self.labels { "  mem  " } else { " " }, theme.dim())];
        second.extend(gauge(memory_fraction(g), self.bar_w, memory_style(g, theme), theme));
        let mem = memory_text(g);
        second.push(Span::raw(format!(" {mem}")));
        let used: usize = second.iter().map(|s| s.content.chars().count()).sum();
        let room = self.width.saturating_sub(used + 2 + 5);
        if let Some(h) = history.filter(|_| room >= 6) {
            second.push(Span::styled("  util ", theme.dim()));
            second.push(Span::styled(
                sparkline_text(h.util_pct.iter().map(|v| v.map(u64::from)), 100, room),
                theme.accent(),
            ));
        }
        let mut lines = vec![Line::from(first), Line::from(second)];
        if per_gpu >= 3 {
            lines.push(self.third_line(g, state, theme));
        }
        if per_gpu >= 4 {
            lines.push(self.history_line(g, history, theme));
        }
        lines
    }

    /// Power and temperature history, side by side, scaled to their limits.
    fn history_line(&self, g: &GpuSample, history: Option<&GpuHistory>, theme: &Theme) -> Line<'static> {
        let Some(h) = history else {
            return Line::from("");
        };
        let room = self.width.saturating_sub(self.indent().len() + 2 + 7 + 7 + 2);
        let each = room / 2;
        if each < 4 {
            return Line::from("");
        }
        let power_max = g.power_limit_w.map_or(0, |l| l.round() as u64);
        let temp_max = g.temperature_slowdown_c.map_or(100, |t| u64::from(t) + 10);
        Line::from(vec![
            Span::raw(self.indent()),
            Span::styled("  power ", theme.dim()),
            Span::styled(sparkline_text(h.power_w.iter().map(|v| v.map(u64::from)), power_max, each), theme.accent()),
            Span::styled("  temp ", theme.dim()),
            Span::styled(
                sparkline_text(h.temperature_c.iter().map(|v| v.map(u64::from)), temp_max, each),
                theme.accent(),
            ),
        ])
    }

    /// Who holds the memory, and what slows the GPU down (Xid errors first).
    fn third_line(&self, g: &GpuSample, state: &GpuState, theme: &Theme) -> Line<'static> {
        let mut spans = vec![Span::raw(self.indent()), Span::raw("  ")];
        let (holders, style) = holders_text(g, theme);
        let trouble = trouble_span(g, state, theme);
        let budget = self
            .width
            .saturating_sub(self.indent().len() + 2)
            .saturating_sub(trouble.as_ref().map_or(0, |t| t.content.chars().count() + 2));
        spans.push(Span::styled(fit(&holders, budget), style));
        if let Some(t) = trouble {
            spans.push(Span::raw("  "));
            spans.push(t);
        }
        Line::from(spans)
    }

    fn compact_line(&self, g: &GpuSample, marked: bool, theme: &Theme) -> Line<'static> {
        let mut spans = self.head(g, marked, theme);
        if g.lost {
            spans.push(Span::styled(" ✖ LOST: GPU is not answering", theme.bad()));
            return Line::from(spans);
        }
        spans.push(pct_span(g.utilization_gpu_pct, theme));
        if self.bar_w > 0 {
            spans.push(Span::raw(" "));
            spans.extend(gauge(g.utilization_gpu_pct.map(|u| f64::from(u) / 100.0), self.bar_w, theme.accent(), theme));
        }
        spans.push(Span::styled(format!(" {:>10}", memory_text(g)), memory_style(g, theme)));
        spans.push(Span::raw(" "));
        spans.push(temperature_span(g, theme));
        spans.push(Span::raw(" "));
        spans.push(power_span(g, theme));
        let used: usize = spans.iter().map(|s| s.content.chars().count()).sum();
        let room = self.width.saturating_sub(used + 1);
        let holders = holder_names(g);
        let trouble = throttle_summary(g).map(|w| format!("⚠{w} ")).unwrap_or_default();
        let tail = format!("{trouble}{holders}");
        if room > 2 && !tail.is_empty() {
            spans.push(Span::raw(" "));
            spans.push(Span::raw(fit(&tail, room).trim_end().to_owned()));
        }
        Line::from(spans)
    }
}

/// The name without the vendor, shortened word by word to at most `cap` characters
/// (`NVIDIA H100 80GB HBM3` → `H100 80GB`).
fn short_name(g: &GpuSample, cap: usize) -> String {
    let name = g.name.strip_prefix("NVIDIA ").unwrap_or(&g.name).trim();
    let name = if name.is_empty() { "GPU" } else { name };
    let mut out = String::new();
    for word in name.split_whitespace() {
        let len = out.chars().count() + usize::from(!out.is_empty()) + word.chars().count();
        if len > cap {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    if out.is_empty() { fit(name, cap).trim_end().to_owned() } else { out }
}

/// Pads or cuts to exactly `width` characters (cut text ends with `…`).
fn fit(text: &str, width: usize) -> String {
    let count = text.chars().count();
    if count <= width {
        format!("{text:<width$}")
    } else if width == 0 {
        String::new()
    } else {
        let mut s: String = text.chars().take(width - 1).collect();
        s.push('…');
        s
    }
}

/// `▕████▌░░░▏`: a gauge of `width` cells; dotted when N/A.
fn gauge(fraction: Option<f64>, width: usize, style: Style, theme: &Theme) -> Vec<Span<'static>> {
    let Some(f) = fraction else {
        return vec![Span::styled(format!("▕{}▏", "·".repeat(width)), theme.dim())];
    };
    let eighths = (f.clamp(0.0, 1.0) * (width * 8) as f64).round() as usize;
    let full = eighths / 8;
    let part = PARTIAL[eighths % 8];
    let used = full + usize::from(!part.is_empty());
    vec![
        Span::raw("▕"),
        Span::styled(format!("{}{part}", "█".repeat(full)), style),
        Span::styled("░".repeat(width.saturating_sub(used)), theme.dim()),
        Span::raw("▏"),
    ]
}

fn pct_span(pct: Option<u32>, theme: &Theme) -> Span<'static> {
    match pct {
        Some(p) => Span::raw(format!(" {p:>3}%")),
        None => Span::styled("  N/A", theme.dim()),
    }
}

fn temperature_span(g: &GpuSample, theme: &Theme) -> Span<'static> {
    match (g.temperature_c, g.temperature_slowdown_c) {
        (Some(t), Some(limit)) if t >= limit => Span::styled(format!("{t}°C!"), theme.bad()),
        (Some(t), Some(limit)) if t + 5 >= limit => Span::styled(format!("{t}°C"), theme.warn()),
        (Some(t), _) => Span::raw(format!("{t}°C")),
        (None, _) => Span::styled("N/A°C", theme.dim()),
    }
}

fn power_span(g: &GpuSample, theme: &Theme) -> Span<'static> {
    match (g.power_draw_w, g.power_limit_w) {
        (Some(d), Some(l)) => {
            let style = if d >= l * 0.97 { theme.warn() } else { Style::new() };
            Span::styled(format!("{:.0}/{:.0}W", d, l), style)
        }
        (Some(d), None) => Span::raw(format!("{d:.0}W")),
        (None, Some(l)) => Span::styled(format!("N/A/{l:.0}W"), theme.dim()),
        (None, None) => Span::styled("N/A W", theme.dim()),
    }
}

fn memory_fraction(g: &GpuSample) -> Option<f64> {
    match (g.memory_used_bytes, g.memory_total_bytes) {
        (Some(u), Some(t)) if t > 0 => Some(u as f64 / t as f64),
        _ => None,
    }
}

fn memory_style(g: &GpuSample, theme: &Theme) -> Style {
    match memory_fraction(g) {
        Some(f) if f >= 0.97 => theme.bad(),
        Some(f) if f >= 0.90 => theme.warn(),
        _ => theme.accent(),
    }
}

fn memory_text(g: &GpuSample) -> String {
    match (g.memory_used_bytes, g.memory_total_bytes) {
        (Some(u), Some(t)) => format!("{}/{}G", fmt_gib(u), fmt_gib(t)),
        (Some(u), None) => format!("{}G", fmt_gib(u)),
        _ => "mem N/A".into(),
    }
}

pub(super) fn gib(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "N/A".into(), |b| format!("{}G", crate::util::fmt_gib(b)))
}

/// `qwen-7b 57.1G · pid 5151 N/A`: memory per model (summed), then unknown processes.
fn holders_text(g: &GpuSample, theme: &Theme) -> (String, Style) {
    if g.processes_na {
        return ("processes N/A".into(), theme.dim());
    }
    if g.processes.is_empty() {
        return ("no processes".into(), theme.dim());
    }
    let mut models: Vec<(&str, Option<u64>)> = Vec::new();
    let mut others = Vec::new();
    for p in &g.processes {
        match &p.model {
            Some(m) => match models.iter_mut().find(|(name, _)| name == m) {
                Some((_, total)) => {
                    *total = match (*total, p.used_memory_bytes) {
                        (Some(a), Some(b)) => Some(a + b),
                        (a, b) => a.or(b),
                    }
                }
                None => models.push((m, p.used_memory_bytes)),
            },
            None => others.push(format!("pid {} {}", p.pid, gib(p.used_memory_bytes))),
        }
    }
    let parts: Vec<String> = models.iter().map(|(m, b)| format!("{m} {}", gib(*b))).chain(others).collect();
    (parts.join(" · "), Style::new())
}

/// Just the holders' names, for the compact line: models, then unknown PIDs.
fn holder_names(g: &GpuSample) -> String {
    let mut names: Vec<String> = Vec::new();
    for p in &g.processes {
        let name = p.model.clone().unwrap_or_else(|| format!("pid {}", p.pid));
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names.join(",")
}

/// Throttle reasons that mean something is wrong (idle is normal).
pub(super) fn throttle_summary(g: &GpuSample) -> Option<String> {
    let words: Vec<&str> = g.throttle_reasons.as_ref()?.iter().map(String::as_str).filter(|w| *w != "idle").collect();
    (!words.is_empty()).then(|| words.join(", "))
}

fn trouble_span(g: &GpuSample, state: &GpuState, theme: &Theme) -> Option<Span<'static>> {
    if let Some(x) = state.xids_of(g.index).next() {
        return Some(Span::styled(format!("✖ Xid {}: {}", x.xid, x.meaning), theme.bad()));
    }
    throttle_summary(g).map(|w| Span::styled(format!("throttle: {w}"), theme.warn()))
}

/// Xid count (bad news first), energy since start, backend; parts that do not fit are left out.
fn footer_line(gpus: &GpuState, theme: &Theme, width: usize) -> Line<'static> {
    let mut spans = vec![match gpus.xids.back() {
        Some(x) => Span::styled(format!("Xid {} · last: GPU {} Xid {}", gpus.xid_count, x.gpu, x.xid), theme.bad()),
        None => Span::styled("Xid 0", theme.dim()),
    }];
    let mut optional = Vec::new();
    if let Some(j) = energy_since_start(gpus) {
        optional.push(format!(" · energy since start {}", fmt_energy(j)));
    }
    match &gpus.backend {
        BackendStatus::Nvml { driver_version: Some(v) } => optional.push(format!(" · driver {v}")),
        BackendStatus::Simulated => optional.push(" · simulated".to_owned()),
        _ => {}
    }
    let mut used = spans[0].content.chars().count();
    for part in optional {
        let len = part.chars().count();
        if used + len <= width {
            used += len;
            spans.push(Span::styled(part, theme.dim()));
        }
    }
    Line::from(spans)
}

fn energy_since_start(gpus: &GpuState) -> Option<f64> {
    let mut total = None;
    for (g, h) in gpus.gpus.iter().zip(&gpus.history) {
        if let (Some(now), Some(start)) = (g.energy_j, h.energy_start_j) {
            *total.get_or_insert(0.0) += (now - start).max(0.0);
        }
    }
    total
}

/// `1.92 kWh`, `312 Wh`, `0.4 Wh`.
pub(super) fn fmt_energy(joules: f64) -> String {
    let wh = joules / 3600.0;
    if wh >= 1000.0 {
        format!("{:.2} kWh", wh / 1000.0)
    } else if wh >= 10.0 {
        format!("{wh:.0} Wh")
    } else {
        format!("{wh:.1} Wh")
    }
}

/// The last `width` values as one line of bar characters, scaled to `max`; `·` where N/A.
fn sparkline_text(values: impl DoubleEndedIterator<Item = Option<u64>>, max: u64, width: usize) -> String {
    let mut tail: Vec<Option<u64>> = values.rev().take(width).collect();
    tail.reverse();
    // No known limit: scale to what was seen.
    let max = if max == 0 { tail.iter().flatten().copied().max().unwrap_or(1) } else { max };
    tail.iter()
        .map(|v| match v {
            Some(v) => {
                let level = (*v as f64 / max.max(1) as f64 * 7.0).round() as usize;
                SPARK[level.min(7)]
            }
            None => '·',
        })
        .collect()
}
