//! The engine's GPU sampler (`gpu::start`): its thread, its watchdog, and the events it
//! sends, against the fake libnvidia-ml (tests/fake_nvml) and the simulated backend.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use llmdeck::config::{Config, GpuBackend};
use llmdeck::gpu::SamplerConfig;
use llmdeck::protocol::{BackendStatus, Event, GpuEvent, GpuSample, ModelStatus, Severity, State};
use llmdeck::util::procfs::ModelProcesses;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

const GIB: u64 = 1 << 30;
/// Upper bound for anything to arrive; tests end as soon as it does.
const PATIENCE: Duration = Duration::from_secs(10);

fn fake_library(scenario: &str) -> (tempfile::TempDir, PathBuf) {
    let built = env!("LLMDECK_FAKE_NVML");
    assert!(!built.is_empty(), "build.rs could not compile tests/fake_nvml");
    let dir = tempfile::tempdir().expect("temp dir");
    let lib = dir.path().join("libnvidia-ml.so.1");
    std::fs::copy(built, &lib).expect("copy the fake library");
    std::fs::write(dir.path().join("libnvidia-ml.so.1.scenario"), scenario).expect("scenario");
    (dir, lib)
}

fn options(backend: GpuBackend, library: Option<PathBuf>, sample_ms: u64) -> Config {
    let mut config = Config::default();
    config.gpu.backend = backend;
    config.gpu.nvml_library = library;
    config.gpu.sample_ms = sample_ms;
    config.gpu.history_s = 60;
    config.gpu.simulated_count = 3;
    config
}

struct Running {
    events: mpsc::Receiver<Event>,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
    seen: Vec<Event>,
}

fn start(config: &Config, processes: ModelProcesses) -> Running {
    start_with(config, None, processes)
}

/// With the backend overridden (as the demo forces the simulated one).
fn start_with(config: &Config, backend: Option<GpuBackend>, processes: ModelProcesses) -> Running {
    let (sink, events) = mpsc::channel(64);
    let cancel = CancellationToken::new();
    let mut tasks = JoinSet::new();
    llmdeck::gpu::start(SamplerConfig::from_config(&config.gpu, backend), sink, processes, cancel.clone(), &mut tasks);
    Running { events, cancel, tasks, seen: Vec::new() }
}

impl Running {
    /// The next event matching `pred`, within [`PATIENCE`].
    async fn wait_for(&mut self, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.events.recv()).await {
                Ok(Some(e)) => {
                    self.seen.push(e.clone());
                    if pred(&e) {
                        return e;
                    }
                }
                Ok(None) => panic!("the sampler stopped before {what}; saw {:?}", self.seen),
                Err(_) => panic!("no {what} within {PATIENCE:?}; saw {:?}", self.seen),
            }
        }
    }

    async fn next_sample(&mut self) -> Vec<GpuSample> {
        match self.wait_for("a sample", |e| matches!(e, Event::Gpu(GpuEvent::Sampled { .. }))).await {
            Event::Gpu(GpuEvent::Sampled { gpus, .. }) => gpus,
            _ => unreachable!(),
        }
    }

    /// Cancels and checks the sampler's tasks end promptly (even with the thread stuck).
    async fn stop(mut self) {
        self.cancel.cancel();
        let ended = tokio::time::timeout(PATIENCE, async { while self.tasks.join_next().await.is_some() {} }).await;
        assert!(ended.is_ok(), "the sampler's tasks did not end on cancel");
    }
}

/// A child in its own process group (its PID is the group id), like a supervised model.
fn model_like_child() -> std::process::Child {
    use std::os::unix::process::CommandExt;
    std::process::Command::new("sleep").arg("30").process_group(0).spawn().expect("sleep")
}

#[tokio::test]
async fn nvml_samples_name_the_model_holding_the_memory() {
    let mut child = model_like_child();
    let pid = child.id();
    let (_dir, lib) = fake_library(&format!("scenario=two\nprocess_pid={pid}\n"));
    let processes = ModelProcesses::default();
    processes.set("qwen-7b", pid);
    let mut run = start(&options(GpuBackend::Nvml, Some(lib), 100), processes);

    let backend = run.wait_for("the backend", |e| matches!(e, Event::Gpu(GpuEvent::Backend { .. }))).await;
    assert_eq!(
        backend,
        Event::Gpu(GpuEvent::Backend {
            status: BackendStatus::Nvml { driver_version: Some("550.54.15-fake".into()) },
            sample_ms: 100,
            history_len: 600,
        })
    );
    let gpus = run.next_sample().await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(gpus[0].processes[0].pid, pid);
    assert_eq!(gpus[0].processes[0].model.as_deref(), Some("qwen-7b"));
    assert_eq!(gpus[1].processes[0].model, None, "PID 4199455 is not ours");

    // The engine's reducer sums it into the model's GPU memory column.
    let mut state =
        State { models: vec![ModelStatus { id: "qwen-7b".into(), ..Default::default() }], ..Default::default() };
    for e in &run.seen {
        state.apply(e);
    }
    assert_eq!(state.models[0].gpu_memory_bytes, Some(6 * GIB));
    assert_eq!(state.gpus.gpus.len(), 2);
    assert_eq!(state.gpus.history[0].util_pct.back(), Some(&Some(37)));
    run.stop().await;
}

#[tokio::test]
async fn a_hung_call_makes_the_sampler_report_stale_and_shutdown_does_not_wait() {
    // The third power reading (second sample, GPU 0) never returns.
    let (_dir, lib) = fake_library("scenario=hang\nhang_fn=nvmlDeviceGetPowerUsage\nhang_after=2\n");
    let mut run = start(&options(GpuBackend::Nvml, Some(lib), 100), ModelProcesses::default());
    run.next_sample().await;
    let alert = run.wait_for("the stale alert", |e| matches!(e, Event::Alert(_))).await;
    let Event::Alert(alert) = alert else { unreachable!() };
    assert_eq!(alert.severity, Severity::Warning);
    assert!(alert.message.contains("nvmlDeviceGetPowerUsage (GPU 0) has not returned"), "{}", alert.message);
    let mut stale = Vec::new();
    while stale.len() < 2 {
        if let Event::Gpu(GpuEvent::Stale { stale_ms, call }) =
            run.wait_for("stale", |e| matches!(e, Event::Gpu(GpuEvent::Stale { .. }))).await
        {
            assert_eq!(call.as_deref(), Some("nvmlDeviceGetPowerUsage (GPU 0)"));
            stale.push(stale_ms);
        }
    }
    assert!(stale[0] >= 200, "two intervals at least: {stale:?}");
    assert!(stale[1] > stale[0], "stale time keeps counting: {stale:?}");
    let mut state = State::default();
    for e in &run.seen {
        state.apply(e);
    }
    assert_eq!(state.gpus.stale.as_ref().map(|s| s.stale_ms), Some(stale[1]));
    assert_eq!(state.gpus.gpus.len(), 2, "the last readings stay on screen");
    run.stop().await;
}

#[tokio::test]
async fn without_a_library_auto_means_none_with_the_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lib = dir.path().join("libnvidia-ml.so.1");
    let mut run = start(&options(GpuBackend::Auto, Some(lib), 100), ModelProcesses::default());
    let event = run.wait_for("the backend", |e| matches!(e, Event::Gpu(GpuEvent::Backend { .. }))).await;
    let Event::Gpu(GpuEvent::Backend { status: BackendStatus::None { reason }, .. }) = event else {
        panic!("expected the none backend, got {event:?}");
    };
    assert!(reason.contains("libnvidia-ml.so.1") && !reason.contains('\n'), "{reason}");
    assert!(run.seen.iter().all(|e| !matches!(e, Event::Alert(_))), "auto without NVML is normal: no alert");
    run.stop().await;
}

#[tokio::test]
async fn a_lost_gpu_and_its_xid_become_events_and_alerts() {
    let (_dir, lib) = fake_library("scenario=lost\n");
    let mut run = start(&options(GpuBackend::Nvml, Some(lib), 100), ModelProcesses::default());
    let gpus = run.next_sample().await;
    assert!(gpus[1].lost && !gpus[0].lost);
    let xid = run.seen.iter().find(|e| matches!(e, Event::Gpu(GpuEvent::Xid { .. }))).cloned();
    let Some(Event::Gpu(GpuEvent::Xid { gpu, xid, meaning, .. })) = xid else {
        panic!("no Xid event before the sample: {:?}", run.seen);
    };
    assert_eq!((gpu, xid, meaning.as_str()), (1, 79, "GPU has fallen off the bus"));
    let alerts: Vec<String> = run
        .seen
        .iter()
        .filter_map(|e| match e {
            Event::Alert(a) if a.severity == Severity::Error => Some(a.message.clone()),
            _ => None,
        })
        .collect();
    assert!(alerts.iter().any(|m| m.contains("Xid 79")), "{alerts:?}");
    assert!(alerts.iter().any(|m| m.contains("GPU 1 is lost")), "{alerts:?}");
    // The lost alert is sent once, not with every sample.
    run.next_sample().await;
    run.next_sample().await;
    let lost_alerts = run.seen.iter().filter(|e| matches!(e, Event::Alert(a) if a.message.contains("is lost"))).count();
    assert_eq!(lost_alerts, 1);
    run.stop().await;
}

#[tokio::test]
async fn the_simulated_backend_follows_the_running_models() {
    let processes = ModelProcesses::default();
    processes.set("demo-a", 4_000_000_000);
    let opts = options(GpuBackend::None, None, 100);
    let mut run = start_with(&opts, Some(GpuBackend::Simulated), processes);
    let gpus = run.next_sample().await;
    assert_eq!(gpus.len(), 3);
    assert!(
        run.seen.iter().any(|e| matches!(e, Event::Gpu(GpuEvent::Backend { status: BackendStatus::Simulated, .. }))),
        "the status says simulated"
    );
    let holders: Vec<_> = gpus.iter().flat_map(|g| &g.processes).map(|p| (p.pid, p.model.clone())).collect();
    assert_eq!(holders, vec![(4_000_000_000, Some("demo-a".to_owned()))]);
    assert!(gpus.iter().all(|g| g.energy_j.is_some()), "integrated energy");
    run.stop().await;
}

#[tokio::test]
async fn backend_none_says_monitoring_is_off() {
    let mut run = start(&options(GpuBackend::None, None, 100), ModelProcesses::default());
    let event = run.wait_for("the backend", |e| matches!(e, Event::Gpu(GpuEvent::Backend { .. }))).await;
    assert!(matches!(&event, Event::Gpu(GpuEvent::Backend { status: BackendStatus::Off, .. })), "{event:?}");
    run.stop().await;
}
