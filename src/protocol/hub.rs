//! The hub: the one place events are numbered, reduced into the authoritative [`State`] and fanned
//! out to viewers. Subscribing takes the snapshot and the event stream under one lock, so a viewer
//! sees every event after its snapshot exactly once. The engine publishes into one; a remote
//! viewer's link keeps a mirror of the daemon's in another.
//!
//! Publishing holds the lock only to reduce and to push into the broadcast channel; a snapshot is
//! taken under the lock too, so its cost is bounded: GPU history and log tails in a snapshot are
//! capped (the state's full history stays in the hub).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::clocks::Clocks;
use super::event::{Event, Sequenced};
use super::state::{ModelState, State};
use crate::logs::ring::Ring;
use crate::logs::{LogLine, LogSource};

/// How many recent lines per source the hub keeps for snapshots, so a fresh viewer is not blank.
pub const LOG_TAIL_LINES: usize = 300;
/// Bytes of log text a snapshot carries over all sources (newest lines first, shared evenly).
pub const SNAPSHOT_LOG_BYTES: usize = 384 * 1024;
/// Samples of GPU history per GPU a snapshot carries (10 minutes at 1 Hz); viewers draw less.
pub const SNAPSHOT_GPU_HISTORY: usize = 600;
/// Events a slow viewer may fall behind by before it must resubscribe.
pub const FANOUT_CAPACITY: usize = 1024;

/// What a viewer needs after (re)connecting: the state, the last lines of every log source, the
/// number of the last event folded in, and the engine's epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub state: State,
    pub log_tail: BTreeMap<LogSource, Vec<LogLine>>,
    /// The `seq` of the last event the state includes; the next event is `seq + 1`.
    #[serde(default)]
    pub seq: u64,
    /// Random per engine start: a different epoch means the engine restarted.
    #[serde(default)]
    pub epoch: String,
}

pub struct Subscription {
    pub snapshot: Snapshot,
    /// Every event after the snapshot, in order. `Lagged(n)` means the viewer fell behind:
    /// count the loss, then resubscribe.
    pub events: broadcast::Receiver<Arc<Sequenced>>,
}

pub struct Hub {
    inner: Mutex<Inner>,
    fanout: broadcast::Sender<Arc<Sequenced>>,
}

struct Inner {
    state: State,
    tails: BTreeMap<LogSource, Ring<LogLine>>,
    /// When things began, by this process's clock: snapshots carry ages, never instants.
    clocks: Clocks,
    seq: u64,
    epoch: String,
}

impl Hub {
    pub fn new(state: State, epoch: String) -> Self {
        let (fanout, _) = broadcast::channel(FANOUT_CAPACITY);
        let inner = Inner { state, tails: BTreeMap::new(), clocks: Clocks::default(), seq: 0, epoch };
        Self { inner: Mutex::new(inner), fanout }
    }

    /// A hub that starts where `snapshot` stands (a viewer's mirror of a remote engine).
    pub fn from_snapshot(snapshot: Snapshot) -> Self {
        let hub = Self::new(State::default(), String::new());
        hub.reset(snapshot);
        hub
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while reducing would be a bug in the reducer; the state is still usable.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Numbers, reduces and fans out the next event; its `seq`.
    pub fn publish(&self, event: Event) -> u64 {
        let mut inner = self.lock();
        let seq = inner.seq + 1;
        self.fold(&mut inner, Sequenced { seq, event });
        seq
    }

    /// Folds an event numbered elsewhere (a mirror). `false`, and nothing folded, unless it is
    /// the next one: the caller must resynchronise.
    pub fn publish_numbered(&self, event: Sequenced) -> bool {
        let mut inner = self.lock();
        if event.seq != inner.seq + 1 {
            return false;
        }
        self.fold(&mut inner, event);
        true
    }

    fn fold(&self, inner: &mut Inner, event: Sequenced) {
        inner.seq = event.seq;
        // The reducer is pure and total; a panic in it is a bug, and must not take the hub (and
        // with it every viewer) down: the event is skipped.
        let reduced = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.state.apply(&event.event)));
        if reduced.is_err() {
            tracing::error!("the reducer panicked on event {}; it was skipped", event.seq);
        }
        inner.clocks.on_event(&event.event, Instant::now());
        if let Event::Log(batch) = &event.event {
            let tail = inner.tails.entry(batch.source.clone()).or_insert_with(|| Ring::new(LOG_TAIL_LINES));
            let skip = batch.lines.len().saturating_sub(LOG_TAIL_LINES);
            for line in &batch.lines[skip..] {
                tail.push(line.clone());
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.fanout.send(Arc::new(event));
    }

    /// Replaces everything with `snapshot` (a mirror that resynchronised).
    pub fn reset(&self, snapshot: Snapshot) {
        let mut inner = self.lock();
        inner.clocks = Clocks::from_state(&snapshot.state);
        inner.state = snapshot.state;
        inner.seq = snapshot.seq;
        inner.epoch = snapshot.epoch;
        inner.tails = snapshot
            .log_tail
            .into_iter()
            .map(|(source, lines)| {
                let mut ring = Ring::new(LOG_TAIL_LINES);
                for line in lines {
                    ring.push(line);
                }
                (source, ring)
            })
            .collect();
    }

    pub fn snapshot(&self) -> Snapshot {
        snapshot_of(&self.lock())
    }

    pub fn subscribe(&self) -> Subscription {
        let inner = self.lock();
        Subscription { snapshot: snapshot_of(&inner), events: self.fanout.subscribe() }
    }

    /// One model's state, without cloning a whole snapshot.
    pub fn model_state(&self, id: &str) -> Option<ModelState> {
        self.lock().state.model(id).map(|m| m.state)
    }

    /// Reads the state in place (keep `f` short: publishers wait meanwhile).
    pub fn with_state<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.lock().state)
    }

    pub fn seq(&self) -> u64 {
        self.lock().seq
    }

    pub fn epoch(&self) -> String {
        self.lock().epoch.clone()
    }
}

fn snapshot_of(inner: &Inner) -> Snapshot {
    let mut state = inner.state.clone_for_snapshot(SNAPSHOT_GPU_HISTORY);
    inner.clocks.stamp(&mut state, Instant::now());
    Snapshot { state, log_tail: bounded_tails(&inner.tails), seq: inner.seq, epoch: inner.epoch.clone() }
}

/// The newest lines of every source within [`SNAPSHOT_LOG_BYTES`], shared evenly between
/// sources; a single line longer than a source's share is cut.
fn bounded_tails(tails: &BTreeMap<LogSource, Ring<LogLine>>) -> BTreeMap<LogSource, Vec<LogLine>> {
    let share = SNAPSHOT_LOG_BYTES / tails.len().max(1);
    tails
        .iter()
        .map(|(source, ring)| {
            let mut budget = share;
            let mut newest_first = Vec::new();
            for line in ring.iter().rev() {
                if budget == 0 {
                    break;
                }
                let mut line = line.clone();
                if line.text.len() > budget {
                    let mut cut = budget;
                    while !line.text.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    line.text.truncate(cut);
                    line.truncated = true;
                }
                budget -= line.text.len().max(1).min(budget);
                newest_first.push(line);
            }
            newest_first.reverse();
            (source.clone(), newest_first)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::{Level, LogBatch};
    use crate::protocol::{GpuEvent, GpuProcess, GpuSample};

    fn busy_box() -> Hub {
        let mut yaml = String::from("models:\n");
        for i in 0..8 {
            yaml.push_str(&format!("  - {{ id: model-{i}, command: x, port: {} }}\n", 9000 + i));
        }
        let config = crate::config::load_str(&yaml, "test").expect("config");
        let hub = Hub::new(State::new(&config, None, "host".into()), "e".into());
        hub.publish(Event::Gpu(GpuEvent::Backend {
            status: crate::protocol::BackendStatus::Simulated,
            sample_ms: 1000,
            history_len: crate::protocol::MAX_HISTORY_LEN,
        }));
        for n in 0..crate::protocol::MAX_HISTORY_LEN {
            let gpus = (0..8)
                .map(|i| GpuSample {
                    index: i,
                    name: "NVIDIA H100 80GB HBM3".into(),
                    utilization_gpu_pct: Some((n % 101) as u32),
                    memory_used_bytes: Some(80_000_000_000),
                    power_draw_w: Some(699.0),
                    temperature_c: Some(80),
                    processes: vec![GpuProcess {
                        pid: 123_456,
                        used_memory_bytes: Some(70_000_000_000),
                        model: Some(format!("model-{i}")),
                    }],
                    ..Default::default()
                })
                .collect();
            hub.publish(Event::Gpu(GpuEvent::Sampled { ts: chrono::Utc::now(), gpus }));
        }
        // Every model logs long lines.
        for i in 0..8 {
            let source = LogSource::Model(format!("model-{i}"));
            for _ in 0..LOG_TAIL_LINES {
                let line = LogLine::internal(Level::Info, "x".repeat(4096));
                hub.publish(Event::Log(LogBatch::single(source.clone(), line)));
            }
        }
        hub
    }

    #[test]
    fn a_busy_eight_gpu_snapshot_stays_well_under_a_megabyte() {
        let hub = busy_box();
        let snapshot = hub.snapshot();
        let bytes = serde_json::to_vec(&snapshot).map(|v| v.len()).unwrap_or(usize::MAX);
        assert!(bytes < 800_000, "snapshot of a busy 8-GPU box: {bytes} bytes");
        assert!(snapshot.state.gpus.history.iter().all(|h| h.len() <= SNAPSHOT_GPU_HISTORY));
        assert!(snapshot.log_tail.values().all(|lines| !lines.is_empty()), "every source keeps some tail");
    }

    #[test]
    fn events_are_numbered_gap_free_and_a_mirror_refuses_a_gap() {
        let hub = Hub::new(State::default(), "epoch-1".into());
        let mut sub = hub.subscribe();
        assert_eq!(sub.snapshot.seq, 0);
        for _ in 0..3 {
            hub.publish(Event::Log(LogBatch::single(LogSource::App, LogLine::internal(Level::Info, "x".into()))));
        }
        let seqs: Vec<u64> = (0..3).map(|_| sub.events.try_recv().map(|e| e.seq).unwrap_or(0)).collect();
        assert_eq!(seqs, [1, 2, 3]);

        let mirror = Hub::from_snapshot(hub.snapshot());
        assert_eq!((mirror.seq(), mirror.epoch()), (3, "epoch-1".to_owned()));
        let event = |seq| Sequenced {
            seq,
            event: Event::Log(LogBatch::single(LogSource::App, LogLine::internal(Level::Info, "y".into()))),
        };
        assert!(!mirror.publish_numbered(event(5)), "4 is missing");
        assert!(mirror.publish_numbered(event(4)));
        assert_eq!(mirror.seq(), 4);
    }
}
