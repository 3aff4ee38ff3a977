//! The publish path under load: how long `Hub::publish` takes while a model floods logs and ten
//! viewers keep subscribing (each subscription takes a snapshot under the hub's lock), on a
//! busy 8-GPU box; plus what one snapshot costs and weighs.
//!
//! `cargo bench --bench hub_publish`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use llmdeck::logs::{Level, LogBatch, LogLine, LogSource};
use llmdeck::protocol::{
    BackendStatus, Event, GpuEvent, GpuProcess, GpuSample, Hub, LOG_TAIL_LINES, MAX_HISTORY_LEN, State,
};

const VIEWERS: usize = 10;
const PUBLISHES: usize = 50_000;

fn busy_box() -> Hub {
    let mut yaml = String::from("models:\n");
    for i in 0..8 {
        yaml.push_str(&format!("  - {{ id: model-{i}, command: x, port: {} }}\n", 9000 + i));
    }
    let config = llmdeck::config::load_str(&yaml, "bench").expect("config");
    let hub = Hub::new(State::new(&config, None, "bench".into()), "bench".into());
    hub.publish(Event::Gpu(GpuEvent::Backend {
        status: BackendStatus::Simulated,
        sample_ms: 1000,
        history_len: MAX_HISTORY_LEN,
    }));
    for n in 0..MAX_HISTORY_LEN {
        let gpus = (0..8)
            .map(|i| GpuSample {
                index: i,
                name: "NVIDIA H100 80GB HBM3".into(),
                utilization_gpu_pct: Some((n % 101) as u32),
                memory_used_bytes: Some(80_000_000_000),
                memory_total_bytes: Some(85_520_809_984),
                power_draw_w: Some(650.0),
                temperature_c: Some(70),
                processes: vec![GpuProcess {
                    pid: 100 + i,
                    used_memory_bytes: Some(70_000_000_000),
                    model: Some(format!("model-{i}")),
                }],
                ..Default::default()
            })
            .collect();
        hub.publish(Event::Gpu(GpuEvent::Sampled { ts: chrono::Utc::now(), gpus }));
    }
    for i in 0..8 {
        for n in 0..LOG_TAIL_LINES {
            hub.publish(log_batch(i, n, 1));
        }
    }
    hub
}

fn log_batch(model: usize, n: usize, lines: usize) -> Event {
    let source = LogSource::Model(format!("model-{model}"));
    let lines = (0..lines)
        .map(|k| {
            LogLine::internal(
                Level::Info,
                format!("INFO 12-03 10:00:00 [loggers.py:116] Engine 000: Avg prompt throughput: {n}.{k} tokens/s"),
            )
        })
        .collect();
    Event::Log(LogBatch { source, lines, dropped_before: 0 })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn publish_latencies(hub: &Hub, count: usize) -> Vec<Duration> {
    let mut took = Vec::with_capacity(count);
    for n in 0..count {
        let event = log_batch(n % 8, n, 16);
        let start = Instant::now();
        hub.publish(event);
        took.push(start.elapsed());
    }
    took.sort_unstable();
    took
}

fn report(label: &str, took: &[Duration]) {
    println!(
        "{label:<44} p50 {:>8.1?}  p99 {:>8.1?}  p99.9 {:>8.1?}  max {:>8.1?}",
        percentile(took, 50.0),
        percentile(took, 99.0),
        percentile(took, 99.9),
        took.last().copied().unwrap_or_default()
    );
}

fn main() {
    let hub = Arc::new(busy_box());

    let start = Instant::now();
    let snapshot = hub.snapshot();
    let snapshot_took = start.elapsed();
    let bytes = serde_json::to_vec(&snapshot).map(|v| v.len()).unwrap_or(0);
    println!("one snapshot of a busy 8-GPU box: {snapshot_took:.1?} to take, {} KiB as JSON", bytes / 1024);

    let quiet = publish_latencies(&hub, PUBLISHES);
    report("publish (16-line log batch), no viewers:", &quiet);

    // Ten viewers subscribing over and over (a storm of reconnects: each reads for 10 ms, then
    // starts again from a fresh snapshot).
    let stop = Arc::new(AtomicBool::new(false));
    let subscriptions = Arc::new(AtomicU64::new(0));
    let viewers: Vec<_> = (0..VIEWERS)
        .map(|_| {
            let (hub, stop, subscriptions) = (hub.clone(), stop.clone(), subscriptions.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let mut sub = hub.subscribe();
                    subscriptions.fetch_add(1, Ordering::Relaxed);
                    let until = Instant::now() + Duration::from_millis(10);
                    while Instant::now() < until {
                        if sub.events.try_recv().is_err() {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                }
            })
        })
        .collect();
    let loaded = publish_latencies(&hub, PUBLISHES);
    stop.store(true, Ordering::Relaxed);
    for v in viewers {
        let _ = v.join();
    }
    report(&format!("publish while {VIEWERS} viewers keep subscribing:"), &loaded);
    println!("({} subscriptions, each with a snapshot, during those publishes)", subscriptions.load(Ordering::Relaxed));
}
