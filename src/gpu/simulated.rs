//! The simulated backend (for `demo`): N GPUs with plausible, smoothly varying readings. Memory
//! and utilisation follow the running models: each running model lives on one GPU (chosen from
//! its id), loads its weights over ~15 s, then holds them, and its process group leader is the
//! GPU process. The backend status says "simulated", so it is never mistaken for real data.

use std::collections::BTreeMap;
use std::time::Instant;

use super::source::{Call, CallTracker, GpuSource, XidEvent};
use crate::protocol::{BackendStatus, GpuProcess, GpuSample};
use crate::util::procfs::{self, ModelProcesses};

const GIB: u64 = 1024 * 1024 * 1024;
const TOTAL_BYTES: u64 = 85_520_809_984;
const POWER_LIMIT_W: f64 = 700.0;
const IDLE_POWER_W: f64 = 72.0;
const LOAD_SECONDS: f64 = 15.0;

pub struct SimulatedSource {
    count: u32,
    processes: ModelProcesses,
    start: Instant,
    /// Each running (model, pgid): when it was first seen (its weights load from then on) and
    /// the GPU it lives on.
    placed: BTreeMap<(String, u32), Placement>,
    /// Temperatures lag behind the load.
    temperature: Vec<f64>,
}

impl SimulatedSource {
    pub fn new(count: u32, processes: ModelProcesses) -> Self {
        Self {
            count,
            processes,
            start: Instant::now(),
            placed: BTreeMap::new(),
            temperature: vec![33.0; count as usize],
        }
    }

    /// The readings `t` seconds after start.
    pub fn sample_at(&mut self, t: f64) -> Vec<GpuSample> {
        let running = self.processes.running();
        self.placed.retain(|k, _| running.iter().any(|(m, p)| m == &k.0 && *p == k.1));
        for (model, pgid) in &running {
            let count = self.count;
            self.placed.entry((model.clone(), *pgid)).or_insert_with(|| Placement {
                since: t,
                gpu: visible_device(*pgid).unwrap_or_else(|| gpu_of(model, count)) % count.max(1),
            });
        }
        (0..self.count).map(|i| self.gpu_at(i, t, &running)).collect()
    }

    fn gpu_at(&mut self, index: u32, t: f64, running: &[(String, u32)]) -> GpuSample {
        let phase = f64::from(index) * 1.7;
        let mut processes = Vec::new();
        let mut used = 600 * 1024 * 1024_u64;
        for (model, pgid) in running.iter() {
            let Some(place) = self.placed.get(&(model.clone(), *pgid)).filter(|p| p.gpu == index) else {
                continue;
            };
            let since = place.since;
            let loaded = ((t - since) / LOAD_SECONDS).clamp(0.0, 1.0);
            let bytes = (footprint(model) as f64 * loaded) as u64;
            used += bytes;
            processes.push(GpuProcess { pid: *pgid, used_memory_bytes: Some(bytes), model: Some(model.clone()) });
        }
        let used = used.min(TOTAL_BYTES - GIB / 2);
        let busy = !processes.is_empty();
        let util = if busy {
            55.0 + 25.0 * (t / 17.0 + phase).sin() + 12.0 * (t / 3.1 + 2.0 * phase).sin()
        } else {
            1.5 + 1.5 * (t / 5.0 + phase).sin()
        }
        .clamp(0.0, 100.0);
        let power = (IDLE_POWER_W + util / 100.0 * 600.0).min(POWER_LIMIT_W);
        let slot = &mut self.temperature[index as usize];
        *slot += (31.0 + util * 0.42 - *slot) * 0.15;
        let temperature = *slot;
        let mut throttle = Vec::new();
        if util < 5.0 {
            throttle.push("idle".to_owned());
        }
        if power > 0.93 * POWER_LIMIT_W {
            throttle.push("power cap".to_owned());
        }
        GpuSample {
            index,
            name: "NVIDIA H100 80GB HBM3".into(),
            uuid: format!("GPU-5173a1b0-0000-4000-8000-{index:012}"),
            utilization_gpu_pct: Some(util.round() as u32),
            utilization_memory_pct: Some((util * 0.6).round() as u32),
            memory_used_bytes: Some(used),
            memory_total_bytes: Some(TOTAL_BYTES),
            memory_reserved_bytes: Some(GIB / 2),
            temperature_c: Some(temperature.round() as u32),
            temperature_slowdown_c: Some(87),
            power_draw_w: Some((power * 10.0).round() / 10.0),
            power_limit_w: Some(POWER_LIMIT_W),
            // Integrated from power by the sampler, like a GPU without an energy counter.
            energy_j: None,
            energy_source: None,
            sm_clock_mhz: Some(if busy { 1980 } else { 345 }),
            memory_clock_mhz: Some(if busy { 2619 } else { 1593 }),
            // Data-centre GPUs are passively cooled: no fan reading, as on a real H100.
            fan_pct: None,
            throttle_reasons: Some(throttle),
            performance_state: Some(if busy { 0 } else { 8 }),
            processes,
            processes_na: false,
            lost: false,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Placement {
    since: f64,
    gpu: u32,
}

/// The first GPU in the process's `CUDA_VISIBLE_DEVICES`, as a real server would use it.
fn visible_device(pid: u32) -> Option<u32> {
    let value = procfs::environment_value(&procfs::environ(pid)?, "CUDA_VISIBLE_DEVICES")?;
    value.split(',').next()?.trim().parse().ok()
}

/// Without `CUDA_VISIBLE_DEVICES`, the GPU a model lives on: stable for its id.
fn gpu_of(model: &str, count: u32) -> u32 {
    (fnv1a(model) % u64::from(count.max(1))) as u32
}

/// GPU memory a model holds once loaded: 12-40 GiB, stable for its id.
fn footprint(model: &str) -> u64 {
    (12 + fnv1a(model) / 7 % 29) * GIB
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

impl GpuSource for SimulatedSource {
    fn status(&self) -> BackendStatus {
        BackendStatus::Simulated
    }

    fn sample(&mut self, tracker: &CallTracker) -> Vec<GpuSample> {
        let t = self.start.elapsed().as_secs_f64();
        tracker.track(Call::Simulated, None, || self.sample_at(t))
    }

    fn driver_events(&mut self, _tracker: &CallTracker) -> Vec<XidEvent> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Above any pid_max: no /proc entry, so placement falls back to the id's hash.
    const NO_SUCH_PID: u32 = 4_000_000_000;

    #[test]
    fn a_model_lives_on_its_cuda_visible_device() {
        use std::io::BufRead;
        let child = std::process::Command::new("sh")
            .args(["-c", "echo ready; exec sleep 30"])
            .env("CUDA_VISIBLE_DEVICES", "1,0")
            .stdout(std::process::Stdio::piped())
            .spawn();
        let Ok(mut child) = child else { panic!("cannot start sh") };
        // Once it says ready it has exec'd: /proc shows its own environment.
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = std::io::BufReader::new(out).read_line(&mut line);
        }
        let reg = ModelProcesses::default();
        reg.set("any-model", child.id());
        let gpus = SimulatedSource::new(2, reg).sample_at(1.0);
        let _ = child.kill();
        let _ = child.wait();
        assert!(gpus[0].processes.is_empty());
        assert_eq!(gpus[1].processes[0].model.as_deref(), Some("any-model"));
    }

    #[test]
    fn idle_gpus_hold_no_model_memory() {
        let mut sim = SimulatedSource::new(2, ModelProcesses::default());
        let gpus = sim.sample_at(3.0);
        assert_eq!(gpus.len(), 2);
        assert!(gpus.iter().all(|g| g.processes.is_empty()));
        assert!(gpus.iter().all(|g| g.utilization_gpu_pct < Some(5)));
        assert!(gpus[0].throttle_reasons.as_ref().is_some_and(|r| r.contains(&"idle".to_owned())));
    }

    #[test]
    fn a_running_model_loads_then_holds_memory_on_its_gpu() {
        let reg = ModelProcesses::default();
        reg.set("qwen-7b", NO_SUCH_PID);
        let mut sim = SimulatedSource::new(2, reg.clone());
        let gpu = gpu_of("qwen-7b", 2) as usize;
        let start = sim.sample_at(10.0);
        let loading = sim.sample_at(10.0 + LOAD_SECONDS / 2.0);
        let loaded = sim.sample_at(10.0 + LOAD_SECONDS * 2.0);
        let held = |s: &[GpuSample]| s[gpu].processes[0].used_memory_bytes.unwrap_or(0);
        assert_eq!(held(&start), 0);
        assert_eq!(held(&loading), footprint("qwen-7b") / 2);
        assert_eq!(held(&loaded), footprint("qwen-7b"));
        assert_eq!(loaded[gpu].processes[0].pid, NO_SUCH_PID);
        assert_eq!(loaded[gpu].processes[0].model.as_deref(), Some("qwen-7b"));
        assert!(loaded[gpu].utilization_gpu_pct > Some(5));
        reg.clear("qwen-7b");
        let after = sim.sample_at(60.0);
        assert!(after[gpu].processes.is_empty());
    }

    #[test]
    fn readings_vary_smoothly() {
        let reg = ModelProcesses::default();
        reg.set("m", NO_SUCH_PID);
        let mut sim = SimulatedSource::new(1, reg);
        let mut last: Option<i64> = None;
        for step in 0..120 {
            let g = &sim.sample_at(f64::from(step))[0];
            let util = i64::from(g.utilization_gpu_pct.unwrap_or(0));
            if let Some(prev) = last {
                assert!((util - prev).abs() <= 15, "{prev} → {util}");
            }
            last = Some(util);
        }
    }
}
