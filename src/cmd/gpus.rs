//! `llmdeck gpus`: a compact one-shot GPU table through NVML, `--json` for scripts, `--watch`
//! to repeat. The readings come from the same sampler the engine runs (driver calls on their
//! own thread); a driver that does not answer makes the command fail with the call it is stuck
//! in, never hang.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use clap::Args;
use color_eyre::eyre::{Result, WrapErr};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{self, GpuBackend, GpuConfig};
use crate::exit;
use crate::gpu::SamplerConfig;
use crate::protocol::{BackendStatus, Event, GpuEvent, GpuSample};
use crate::util::procfs::{ModelProcesses, model_from_environment};

#[derive(Debug, Clone, Args)]
pub struct GpusArgs {
    /// Print one JSON document instead of the table (one per line with --watch)
    #[arg(long)]
    pub json: bool,

    /// Repeat every SECS (plain seconds or with a unit: 2, 500ms) until Ctrl-C
    #[arg(long, value_name = "SECS", value_parser = crate::util::parse_duration)]
    pub watch: Option<Duration>,

    /// Give up (exit 1, naming the stuck driver call) if NVML does not answer within SECS;
    /// start-up can take seconds without persistence mode
    #[arg(long, value_name = "SECS", default_value = "15", value_parser = crate::util::parse_duration)]
    pub timeout: Duration,
}

/// The `--json` document. Keys are a contract: exactly these, `null` where N/A.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpusReport {
    pub driver_version: Option<String>,
    pub gpus: Vec<GpuReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuReport {
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
    pub sm_clock_mhz: Option<u32>,
    pub memory_clock_mhz: Option<u32>,
    pub fan_pct: Option<u32>,
    pub throttle_reasons: Option<Vec<String>>,
    pub processes: Option<Vec<ProcessReport>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessReport {
    pub pid: u32,
    pub used_memory_bytes: Option<u64>,
    pub model: Option<String>,
}

impl GpuReport {
    pub fn from_sample(s: &GpuSample) -> Self {
        Self {
            index: s.index,
            name: s.name.clone(),
            uuid: s.uuid.clone(),
            utilization_gpu_pct: s.utilization_gpu_pct,
            utilization_memory_pct: s.utilization_memory_pct,
            memory_used_bytes: s.memory_used_bytes,
            memory_total_bytes: s.memory_total_bytes,
            temperature_c: s.temperature_c,
            power_draw_w: s.power_draw_w,
            power_limit_w: s.power_limit_w,
            energy_j: s.energy_j,
            sm_clock_mhz: s.sm_clock_mhz,
            memory_clock_mhz: s.memory_clock_mhz,
            fan_pct: s.fan_pct,
            throttle_reasons: s.throttle_reasons.clone(),
            processes: (!s.processes_na).then(|| {
                s.processes
                    .iter()
                    .map(|p| ProcessReport {
                        pid: p.pid,
                        used_memory_bytes: p.used_memory_bytes,
                        model: p.model.clone(),
                    })
                    .collect()
            }),
        }
    }
}

pub async fn run(args: GpusArgs, global: &super::cli::GlobalArgs) -> Result<std::process::ExitCode> {
    let gpu = match gpu_config(global).await {
        Ok(gpu) => gpu,
        Err(code) => return Ok(code),
    };
    let watch = args.watch.map(|w| w.max(crate::gpu::MIN_INTERVAL));
    let mut sampler = SamplerConfig::from_config(&gpu, Some(GpuBackend::Nvml));
    // One-shot: only the first sample is read.
    sampler.interval = watch.unwrap_or(Duration::from_secs(1));
    // Without a counter, energy is integrated power: meaningless in a single reading.
    sampler.integrate_energy = watch.is_some();
    let (tx, mut rx) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    let mut tasks = tokio::task::JoinSet::new();
    let tracker = crate::gpu::start(sampler, tx, ModelProcesses::default(), cancel, &mut tasks);

    // One listener for the whole run: a SIGINT that lands between two waits is not lost.
    let mut sigint =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).wrap_err("listening for SIGINT")?;
    let mut driver_version = None;
    let mut first = true;
    let mut out = std::io::stdout();
    let mut limit = args.timeout;
    let mut deadline = tokio::time::Instant::now() + limit;
    loop {
        let event = tokio::select! {
            e = tokio::time::timeout_at(deadline, rx.recv()) => e,
            _ = sigint.recv() => return Ok(exit::code(exit::CANCELLED)),
        };
        let gpus = match event {
            Err(_) => {
                let call = tracker.in_flight().map_or_else(|| "NVML".to_owned(), |f| f.call);
                say!(
                    "llmdeck gpus: the NVIDIA driver did not answer within {:.1}s ({call} has not returned)",
                    limit.as_secs_f64()
                );
                return Ok(exit::code(exit::FAILED));
            }
            Ok(None) => return Ok(exit::code(exit::OK)),
            Ok(Some(Event::Gpu(GpuEvent::Backend { status, .. }))) => {
                match status {
                    BackendStatus::Nvml { driver_version: v } => driver_version = v,
                    BackendStatus::None { reason } => {
                        // One line, with the way out: where llmdeck looks for the driver's library.
                        say!(
                            "llmdeck gpus: {reason}; set gpu.nvml_library or LLMDECK_NVML_LIB to the driver's libnvidia-ml.so.1"
                        );
                        return Ok(exit::code(exit::MISSING));
                    }
                    BackendStatus::Starting | BackendStatus::Simulated | BackendStatus::Off => {}
                }
                continue;
            }
            Ok(Some(Event::Gpu(GpuEvent::Sampled { mut gpus, .. }))) => {
                for p in gpus.iter_mut().flat_map(|g| g.processes.iter_mut()) {
                    p.model = model_from_environment(p.pid);
                }
                gpus
            }
            // Staleness, Xid events and alerts: the deadline names a stuck call.
            Ok(Some(_)) => continue,
        };
        let report = GpusReport {
            driver_version: driver_version.clone(),
            gpus: gpus.iter().map(GpuReport::from_sample).collect(),
        };
        let text = if args.json {
            let mut s = serde_json::to_string(&report).wrap_err("writing JSON")?;
            s.push('\n');
            s
        } else {
            let mut s = String::new();
            if watch.is_some() && out.is_terminal() {
                s.push_str("\x1b[H\x1b[2J");
            } else if !first {
                s.push('\n');
            }
            s.push_str(&table(&report, &gpus));
            s
        };
        out.write_all(text.as_bytes()).and_then(|()| out.flush()).wrap_err("writing to stdout")?;
        let Some(every) = watch else { return Ok(exit::code(exit::OK)) };
        first = false;
        limit = every + args.timeout;
        deadline = tokio::time::Instant::now() + limit;
    }
}

/// The `gpu` settings: from `--config`/`LLMDECK_CONFIG` (which must exist), else from the XDG
/// config file if there is one, else the defaults. A broken file is a usage error (exit 2).
async fn gpu_config(global: &super::cli::GlobalArgs) -> std::result::Result<GpuConfig, std::process::ExitCode> {
    let explicit = global.config.is_some();
    let Some(path) = config::config_path(global.config.as_deref()) else {
        return Ok(GpuConfig::default());
    };
    if !path.exists() {
        if explicit {
            say!("llmdeck gpus: no configuration file at {}", path.display());
            return Err(exit::code(exit::USAGE));
        }
        return Ok(GpuConfig::default());
    }
    let loaded = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || config::load(&path)).await
    };
    match loaded {
        Ok(Ok(cfg)) => Ok(cfg.gpu),
        Ok(Err(errors)) => {
            say!("{errors}");
            Err(exit::code(exit::USAGE))
        }
        Err(e) => {
            say!("llmdeck gpus: reading {} failed: {e}", path.display());
            Err(exit::code(exit::FAILED))
        }
    }
}

/// The human table: one line per GPU, then its processes.
fn table(report: &GpusReport, samples: &[GpuSample]) -> String {
    let header =
        ["GPU", "NAME", "UTIL", "MEMORY", "TEMP", "POWER", "ENERGY", "SM/MEM CLOCK", "FAN", "PSTATE", "THROTTLE"];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| (*s).to_owned()).collect()];
    let mut extra: Vec<Vec<String>> = Vec::new();
    for s in samples {
        rows.push(gpu_row(s));
        extra.push(process_lines(s));
    }
    let widths: Vec<usize> =
        (0..header.len()).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = format!(
        "driver {} · {} GPU{}\n",
        report.driver_version.as_deref().unwrap_or("unknown"),
        samples.len(),
        if samples.len() == 1 { "" } else { "s" }
    );
    for (i, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
        if i > 0 {
            for line in &extra[i - 1] {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

fn na<T: std::fmt::Display>(v: Option<T>, unit: &str) -> String {
    v.map_or_else(|| "N/A".into(), |v| format!("{v}{unit}"))
}

use crate::util::fmt_gib as gib;

fn gpu_row(s: &GpuSample) -> Vec<String> {
    let name = s.name.strip_prefix("NVIDIA ").unwrap_or(&s.name).to_owned();
    if s.lost {
        let mut row = vec![s.index.to_string(), name, "LOST".into()];
        row.resize(11, String::new());
        row[3] = "fell off the bus or stopped answering".into();
        return row;
    }
    let memory = match (s.memory_used_bytes, s.memory_total_bytes) {
        (Some(u), Some(t)) => format!("{}/{} GiB", gib(u), gib(t)),
        (Some(u), None) => format!("{} GiB", gib(u)),
        _ => "N/A".into(),
    };
    let power = match (s.power_draw_w, s.power_limit_w) {
        (Some(d), Some(l)) => format!("{d:.0}/{l:.0} W"),
        (Some(d), None) => format!("{d:.0} W"),
        _ => "N/A".into(),
    };
    let energy = s.energy_j.map_or_else(
        || "N/A".into(),
        |j| {
            if j >= 1e6 { format!("{:.1} MJ", j / 1e6) } else { format!("{:.1} kJ", j / 1e3) }
        },
    );
    let clocks = match (s.sm_clock_mhz, s.memory_clock_mhz) {
        (None, None) => "N/A".into(),
        (sm, mem) => format!("{}/{} MHz", na(sm, ""), na(mem, "")),
    };
    let throttle = match &s.throttle_reasons {
        None => "N/A".into(),
        Some(w) if w.is_empty() => "none".into(),
        Some(w) => w.join(", "),
    };
    vec![
        s.index.to_string(),
        name,
        na(s.utilization_gpu_pct, "%"),
        memory,
        na(s.temperature_c, "°C"),
        power,
        energy,
        clocks,
        na(s.fan_pct, "%"),
        s.performance_state.map_or_else(|| "N/A".into(), |p| format!("P{p}")),
        throttle,
    ]
}

fn process_lines(s: &GpuSample) -> Vec<String> {
    if s.processes_na && !s.lost {
        return vec!["     processes N/A".into()];
    }
    s.processes
        .iter()
        .map(|p| {
            format!(
                "     pid {:<8} {:>9}  {}",
                p.pid,
                p.used_memory_bytes.map_or_else(|| "N/A".into(), |b| format!("{} GiB", gib(b))),
                p.model.as_deref().unwrap_or("")
            )
            .trim_end()
            .to_owned()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_gpus_and_na_readings_read_as_words() {
        let lost = GpuSample { index: 1, name: "NVIDIA H100".into(), lost: true, ..Default::default() };
        let row = gpu_row(&lost);
        assert_eq!(row[2], "LOST");
        let na = GpuSample { index: 0, name: "Tesla K80".into(), performance_state: Some(8), ..Default::default() };
        let row = gpu_row(&na);
        assert_eq!(row[2], "N/A");
        assert_eq!(row[9], "P8");
        assert_eq!(row[10], "N/A");
    }
}
