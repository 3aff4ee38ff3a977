//! The engine's GPU sampler: every driver call runs on a dedicated OS thread; a task on the
//! runtime forwards its events to the engine and watches it. A call that does not return within
//! two sampling intervals makes the task emit `Stale` (and an alert) while the thread stays
//! stuck; nothing else waits for it.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::nvml::{self, NvmlSource};
use super::simulated::SimulatedSource;
use super::source::{Call, CallTracker, EnergyIntegrator, GpuSource, map_models, xid_meaning};
use crate::config::{GpuBackend, GpuConfig};
use crate::protocol::{Alert, BackendStatus, Event, GpuEvent, MAX_HISTORY_LEN, Severity};
use crate::util::procfs::ModelProcesses;

/// Shortest sampling interval accepted (a smaller configured value is raised to this).
pub const MIN_INTERVAL: Duration = Duration::from_millis(50);
/// Events the sampler thread may queue before it waits for the forwarder.
const THREAD_QUEUE: usize = 16;

/// What the sampler needs to know, resolved from the configuration and the engine's options.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerConfig {
    pub backend: GpuBackend,
    /// `gpu.nvml_library`, else `$LLMDECK_NVML_LIB`, else `None` (system default).
    pub library: Option<PathBuf>,
    pub interval: Duration,
    pub history_len: usize,
    pub simulated_count: u32,
    /// Integrate power into energy where the driver has no counter (meaningless for a one-shot
    /// reading, so `llmdeck gpus` without `--watch` turns it off).
    pub integrate_energy: bool,
}

impl SamplerConfig {
    /// From the `gpu:` section; `backend` overrides its backend (the demo forces the simulated one).
    pub fn from_config(gpu: &GpuConfig, backend: Option<GpuBackend>) -> Self {
        let interval = Duration::from_millis(gpu.sample_ms).max(MIN_INTERVAL);
        let history_len =
            (u128::from(gpu.history_s) * 1000 / interval.as_millis().max(1)).clamp(2, MAX_HISTORY_LEN as u128) as usize;
        Self {
            backend: backend.unwrap_or(gpu.backend),
            library: nvml::library_path(gpu.nvml_library.as_deref()),
            interval,
            history_len,
            simulated_count: gpu.simulated_count,
            integrate_energy: true,
        }
    }

    fn backend_event(&self, status: BackendStatus) -> Event {
        Event::Gpu(GpuEvent::Backend {
            status,
            sample_ms: u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX),
            history_len: self.history_len,
        })
    }
}

/// Starts the sampler: its events go to `sink` until `cancel`. The returned tracker tells which
/// driver call is in flight (for a caller with its own deadline).
pub fn start(
    cfg: SamplerConfig,
    sink: mpsc::Sender<Event>,
    processes: ModelProcesses,
    cancel: CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Arc<CallTracker> {
    let tracker = Arc::new(CallTracker::default());
    if cfg.backend == GpuBackend::None {
        let event = cfg.backend_event(BackendStatus::Off);
        tasks.spawn(async move {
            let _ = sink.send(event).await;
        });
        return tracker;
    }
    let (events_tx, events_rx) = mpsc::channel(THREAD_QUEUE);
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let thread =
        SamplerThread { cfg: cfg.clone(), events: events_tx, stop: stop_rx, tracker: tracker.clone(), processes };
    let spawned = std::thread::Builder::new().name("llmdeck-gpu".into()).spawn(move || thread.run());
    if let Err(e) = spawned {
        let event =
            cfg.backend_event(BackendStatus::None { reason: format!("cannot start the GPU sampler thread: {e}") });
        tasks.spawn(async move {
            let _ = sink.send(event).await;
        });
        return tracker;
    }
    tasks.spawn(forward_and_watch(events_rx, sink, tracker.clone(), cfg.interval, cancel, stop_tx));
    tracker
}

/// Forwards the thread's events and watches it. Ends on cancel or when the thread ends; a
/// thread stuck in the driver is left behind (it holds no engine sender, so shutdown does not
/// wait for it), and dropping `stop` ends a healthy one at its next wait.
async fn forward_and_watch(
    mut events: mpsc::Receiver<Event>,
    sink: mpsc::Sender<Event>,
    tracker: Arc<CallTracker>,
    interval: Duration,
    cancel: CancellationToken,
    stop: Sender<()>,
) {
    let mut check = tokio::time::interval(interval);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut stale_since_alert = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            event = events.recv() => {
                let Some(event) = event else { break };
                if sink.send(event).await.is_err() {
                    break;
                }
            }
            _ = check.tick() => {
                for event in watchdog_events(&tracker, interval, &mut stale_since_alert) {
                    if sink.send(event).await.is_err() {
                        break;
                    }
                }
            }
        }
    }
    drop(stop);
}

/// Stale (and, once per episode, an alert) while a call runs past two intervals; an info alert
/// when the driver answers again.
fn watchdog_events(tracker: &CallTracker, interval: Duration, alerted: &mut bool) -> Vec<Event> {
    let mut out = Vec::new();
    match tracker.in_flight() {
        Some(call) if call.running_for >= interval * 2 => {
            let stale = tracker.since_last_sample();
            if !*alerted {
                *alerted = true;
                out.push(alert(
                    Severity::Warning,
                    format!(
                        "{} has not returned for {:.1}s: GPU readings are stale",
                        call.call,
                        call.running_for.as_secs_f64()
                    ),
                ));
            }
            out.push(Event::Gpu(GpuEvent::Stale {
                stale_ms: u64::try_from(stale.as_millis()).unwrap_or(u64::MAX),
                call: Some(call.call),
            }));
        }
        None if *alerted => {
            *alerted = false;
            out.push(alert(Severity::Info, "the NVIDIA driver answers again: GPU readings are fresh".into()));
        }
        _ => {}
    }
    out
}

fn alert(severity: Severity, message: String) -> Event {
    Event::Alert(Alert { ts: Utc::now(), severity, source: "gpu".into(), message })
}

struct SamplerThread {
    cfg: SamplerConfig,
    events: mpsc::Sender<Event>,
    stop: Receiver<()>,
    tracker: Arc<CallTracker>,
    processes: ModelProcesses,
}

impl SamplerThread {
    fn emit(&self, event: Event) -> bool {
        self.events.blocking_send(event).is_ok()
    }

    fn run(self) {
        match self.cfg.backend {
            GpuBackend::Simulated => {
                let source = SimulatedSource::new(self.cfg.simulated_count, self.processes.clone());
                self.sample_loop(source);
            }
            GpuBackend::Nvml | GpuBackend::Auto => self.run_nvml(),
            GpuBackend::None => {}
        }
    }

    fn run_nvml(self) {
        let path = self.cfg.library.clone();
        let loaded = self.tracker.track(Call::Init, None, || nvml::load(path.as_deref()));
        let nvml = match loaded {
            Ok(nvml) => nvml,
            Err(reason) => return self.unavailable(reason),
        };
        match NvmlSource::new(&nvml, &self.tracker) {
            Ok(source) => self.sample_loop(source),
            Err(reason) => self.unavailable(reason),
        }
    }

    fn unavailable(&self, reason: String) {
        tracing::info!(%reason, "no GPU backend");
        if self.cfg.backend == GpuBackend::Nvml {
            // Asked for explicitly: worth an alert, not only the pane's line.
            self.emit(alert(Severity::Warning, reason.clone()));
        }
        self.emit(self.cfg.backend_event(BackendStatus::None { reason }));
    }

    fn sample_loop<S: GpuSource>(&self, mut source: S) {
        if !self.emit(self.cfg.backend_event(source.status())) {
            return;
        }
        let mut energy = EnergyIntegrator::default();
        let mut lost = BTreeSet::new();
        let mut next = Instant::now();
        loop {
            let mut gpus = source.sample(&self.tracker);
            let xids = source.driver_events(&self.tracker);
            self.tracker.sample_done();
            if self.cfg.integrate_energy {
                energy.apply(&mut gpus, Instant::now());
            }
            map_models(&mut gpus, &self.processes);
            let ts = Utc::now();
            let mut events = Vec::new();
            for x in xids {
                let meaning = xid_meaning(x.xid);
                events.push(alert(Severity::Error, format!("GPU {}: Xid {} — {meaning}", x.gpu, x.xid)));
                events.push(Event::Gpu(GpuEvent::Xid { ts, gpu: x.gpu, xid: x.xid, meaning }));
            }
            for g in gpus.iter().filter(|g| g.lost) {
                if lost.insert(g.index) {
                    events.push(alert(
                        Severity::Error,
                        format!("GPU {} is lost: it fell off the bus or stopped answering (NVML GPU_IS_LOST)", g.index),
                    ));
                }
            }
            events.push(Event::Gpu(GpuEvent::Sampled { ts, gpus }));
            for event in events {
                if !self.emit(event) {
                    return;
                }
            }
            let now = Instant::now();
            next += self.cfg.interval;
            if next <= now {
                // After a slow or hung call: start afresh rather than sample in a burst.
                next = now + self.cfg.interval;
            }
            match self.stop.recv_timeout(next - now) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_quiet_while_calls_are_quick() {
        let tracker = CallTracker::default();
        let mut alerted = false;
        let events =
            tracker.track(Call::Power, Some(0), || watchdog_events(&tracker, Duration::from_secs(1), &mut alerted));
        assert!(events.is_empty());
        assert!(!alerted);
    }

    #[test]
    fn the_watchdog_reports_a_call_past_two_intervals_then_recovery() {
        let tracker = CallTracker::default();
        let mut alerted = false;
        let interval = Duration::from_millis(5);
        let events = tracker.track(Call::Power, Some(1), || {
            std::thread::sleep(interval * 3);
            let first = watchdog_events(&tracker, interval, &mut alerted);
            let second = watchdog_events(&tracker, interval, &mut alerted);
            (first, second)
        });
        let (first, second) = events;
        assert!(matches!(first[0], Event::Alert(ref a) if a.severity == Severity::Warning));
        assert!(matches!(
            &first[1],
            Event::Gpu(GpuEvent::Stale { call: Some(c), .. }) if c == "nvmlDeviceGetPowerUsage (GPU 1)"
        ));
        assert_eq!(second.len(), 1, "the alert is sent once per episode");
        let after = watchdog_events(&tracker, interval, &mut alerted);
        assert!(matches!(&after[0], Event::Alert(a) if a.severity == Severity::Info));
    }

    #[test]
    fn history_length_follows_history_s_and_interval() {
        let gpu = GpuConfig { sample_ms: 500, history_s: 60, ..GpuConfig::default() };
        let cfg = SamplerConfig::from_config(&gpu, Some(GpuBackend::Simulated));
        assert_eq!(cfg.history_len, 120);
        assert_eq!(cfg.backend, GpuBackend::Simulated);
    }
}
