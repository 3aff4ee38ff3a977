//! `llmdeck gpus`: a compact one-shot GPU table through NVML, `--json` for scripts, `--watch`
//! to repeat. Driver calls run on their own thread; a driver that does not answer makes the
//! command fail with the call it is stuck in, never hang.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use clap::Args;
use color_eyre::eyre::{Result, WrapErr};
use serde::Serialize;
use tokio::sync::mpsc;

use super::nvml::{self, NvmlSource};
use super::source::{Call, CallTracker, EnergyIntegrator, GpuSource};
use super::types::GpuSample;
use crate::config::{self, GpuConfig};
use crate::exit;

/// Environment variable llmdeck sets on every model process it starts (the model id).
pub const MODEL_ID_ENV: &str = "LLMDECK_MODEL_ID";

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

/// What the driver thread tells the command.
enum Message {
    Unavailable(String),
    Sample { driver_version: Option<String>, gpus: Vec<GpuSample> },
}

pub async fn run(args: GpusArgs, global: &crate::cli::GlobalArgs) -> Result<std::process::ExitCode> {
    let gpu = match gpu_config(global).await {
        Ok(gpu) => gpu,
        Err(code) => return Ok(code),
    };
    let library = nvml::library_path(gpu.nvml_library.as_deref());
    let tracker = Arc::new(CallTracker::default());
    let (tx, mut rx) = mpsc::channel::<Message>(2);
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let watch = args.watch.map(|w| w.max(super::MIN_INTERVAL));
    let thread_tracker = tracker.clone();
    std::thread::Builder::new()
        .name("llmdeck-gpu".into())
        .spawn(move || driver_thread(library.as_deref(), watch, &tx, &stop_rx, &thread_tracker))
        .wrap_err("starting the GPU thread")?;

    // One listener for the whole run: a SIGINT that lands between two waits is not lost.
    let mut sigint =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).wrap_err("listening for SIGINT")?;
    let mut first = true;
    let mut out = std::io::stdout();
    loop {
        let limit = if first { args.timeout } else { watch.unwrap_or_default() + args.timeout };
        let message = tokio::select! {
            m = tokio::time::timeout(limit, rx.recv()) => m,
            _ = sigint.recv() => {
                drop(stop_tx);
                return Ok(exit::code(exit::CANCELLED));
            }
        };
        match message {
            Err(_) => {
                let call = tracker.in_flight().map_or_else(|| "NVML".to_owned(), |f| f.call);
                say!(
                    "llmdeck gpus: the NVIDIA driver did not answer within {:.1}s ({call} has not returned)",
                    limit.as_secs_f64()
                );
                return Ok(exit::code(exit::FAILED));
            }
            Ok(None) => return Ok(exit::code(exit::OK)),
            Ok(Some(Message::Unavailable(reason))) => {
                // One line, with the way out: where llmdeck looks for the driver's library.
                say!(
                    "llmdeck gpus: {reason}; set gpu.nvml_library or LLMDECK_NVML_LIB to the driver's libnvidia-ml.so.1"
                );
                return Ok(exit::code(exit::MISSING));
            }
            Ok(Some(Message::Sample { driver_version, gpus })) => {
                let report = GpusReport { driver_version, gpus: gpus.iter().map(GpuReport::from_sample).collect() };
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
                if watch.is_none() {
                    return Ok(exit::code(exit::OK));
                }
                first = false;
            }
        }
    }
}

/// The `gpu` settings: from `--config`/`LLMDECK_CONFIG` (which must exist), else from the XDG
/// config file if there is one, else the defaults. A broken file is a usage error (exit 2).
async fn gpu_config(global: &crate::cli::GlobalArgs) -> std::result::Result<GpuConfig, std::process::ExitCode> {
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

fn driver_thread(
    library: Option<&Path>,
    watch: Option<Duration>,
    tx: &mpsc::Sender<Message>,
    stop: &Receiver<()>,
    tracker: &CallTracker,
) {
    let nvml = match tracker.track(Call::Init, None, || nvml::load(library)) {
        Ok(n) => n,
        Err(reason) => {
            let _ = tx.blocking_send(Message::Unavailable(reason));
            return;
        }
    };
    let mut source = match NvmlSource::new(&nvml, tracker) {
        Ok(s) => s,
        Err(reason) => {
            let _ = tx.blocking_send(Message::Unavailable(reason));
            return;
        }
    };
    let driver_version = source.driver_version().map(str::to_owned);
    let mut energy = EnergyIntegrator::default();
    let mut next = Instant::now();
    loop {
        let mut gpus = source.sample(tracker);
        if watch.is_some() {
            // Without a counter, energy is integrated power: meaningless in a single reading.
            energy.apply(&mut gpus, Instant::now());
        }
        for p in gpus.iter_mut().flat_map(|g| g.processes.iter_mut()) {
            p.model = model_from_environment(p.pid);
        }
        let message = Message::Sample { driver_version: driver_version.clone(), gpus };
        if tx.blocking_send(message).is_err() {
            return;
        }
        let Some(every) = watch else { return };
        let now = Instant::now();
        next += every;
        if next <= now {
            next = now + every;
        }
        match stop.recv_timeout(next - now) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// The llmdeck model a process belongs to, from `LLMDECK_MODEL_ID` in its environment or its
/// ancestors' (llmdeck sets it on every model server it starts; workers inherit it). Works for
/// models run by any llmdeck instance of this user; other users' processes are not readable.
pub fn model_from_environment(pid: u32) -> Option<String> {
    let mut current = pid;
    for _ in 0..64 {
        if let Some(model) = environment_value(current, MODEL_ID_ENV) {
            return Some(model);
        }
        let parent = parent_pid(current)?;
        if parent <= 1 {
            return None;
        }
        current = parent;
    }
    None
}

fn environment_value(pid: u32, key: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{key}=");
    environ
        .split(|b| *b == 0)
        .find_map(|entry| entry.strip_prefix(prefix.as_bytes()))
        .and_then(|v| String::from_utf8(v.to_vec()).ok())
        .filter(|v| !v.is_empty())
}

fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: count fields after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
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

fn gib(b: u64) -> String {
    format!("{:.1}", b as f64 / (1u64 << 30) as f64)
}

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
    fn a_process_is_named_by_its_environment() {
        use std::io::BufRead;
        // The shell stays (no exec: /proc/<pid>/environ is unreadable while a process execs)
        // and waits on its stdin until killed.
        let child = std::process::Command::new("sh")
            .args(["-c", "echo ready; read _"])
            .env(MODEL_ID_ENV, "qwen-7b")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn();
        let Ok(mut child) = child else {
            panic!("cannot start sh");
        };
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = std::io::BufReader::new(out).read_line(&mut line);
        }
        let named = model_from_environment(child.id());
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(line.trim(), "ready");
        assert_eq!(named.as_deref(), Some("qwen-7b"));
        assert_eq!(model_from_environment(u32::MAX - 3), None);
    }

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
