//! The hub: the one place events are reduced into the authoritative [`State`] and fanned out to
//! viewers. Subscribing takes the snapshot and the event stream under one lock, so a viewer
//! sees every event after its snapshot exactly once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

use super::{Event, ModelClocks, State};
use crate::logs::ring::Ring;
use crate::logs::{LogLine, LogSource};

/// How many recent lines per source a snapshot carries, so a fresh viewer is not blank.
pub const LOG_TAIL_LINES: usize = 300;
/// Events a slow viewer may fall behind by before it must resubscribe.
const FANOUT_CAPACITY: usize = 1024;

/// What a viewer needs after (re)connecting.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub state: State,
    pub log_tail: BTreeMap<LogSource, Vec<LogLine>>,
}

pub struct Subscription {
    pub snapshot: Snapshot,
    /// `Lagged(n)` means the viewer fell behind: count the loss, then resubscribe.
    pub events: broadcast::Receiver<Arc<Event>>,
}

pub(super) struct Hub {
    inner: Mutex<Inner>,
    fanout: broadcast::Sender<Arc<Event>>,
}

struct Inner {
    state: State,
    tails: BTreeMap<LogSource, Ring<LogLine>>,
    /// When each model last changed state and came up, by the engine's clock: snapshots carry
    /// ages, never instants, so a viewer counts uptimes and countdowns on from when it received them.
    clocks: ModelClocks,
}

impl Hub {
    pub(super) fn new(state: State) -> Self {
        let (fanout, _) = broadcast::channel(FANOUT_CAPACITY);
        Self { inner: Mutex::new(Inner { state, tails: BTreeMap::new(), clocks: ModelClocks::default() }), fanout }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while reducing would be a bug in the reducer; the state is still usable.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn publish(&self, event: Event) {
        let mut inner = self.lock();
        inner.state.apply(&event);
        if let Event::Model(m) = &event {
            inner.clocks.on_model_event(m, Instant::now());
        }
        if let Event::Log(batch) = &event {
            let tail = inner.tails.entry(batch.source.clone()).or_insert_with(|| Ring::new(LOG_TAIL_LINES));
            let skip = batch.lines.len().saturating_sub(LOG_TAIL_LINES);
            for line in &batch.lines[skip..] {
                tail.push(line.clone());
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.fanout.send(Arc::new(event));
    }

    pub(super) fn snapshot(&self) -> Snapshot {
        snapshot_of(&self.lock())
    }

    /// One model's state, without cloning a whole snapshot.
    pub(super) fn model_state(&self, id: &str) -> Option<super::ModelState> {
        self.lock().state.model(id).map(|m| m.state)
    }

    pub(super) fn subscribe(&self) -> Subscription {
        let inner = self.lock();
        Subscription { snapshot: snapshot_of(&inner), events: self.fanout.subscribe() }
    }
}

fn snapshot_of(inner: &Inner) -> Snapshot {
    let mut state = inner.state.clone();
    let now = Instant::now();
    for m in &mut state.models {
        m.state_age_ms = inner.clocks.state_age(&m.id, now).map(|d| d.as_millis() as u64);
        m.uptime_ms = inner.clocks.uptime(&m.id, now).map(|d| d.as_millis() as u64);
    }
    Snapshot {
        state,
        log_tail: inner.tails.iter().map(|(k, ring)| (k.clone(), ring.iter().cloned().collect())).collect(),
    }
}

pub(super) async fn run(hub: Arc<Hub>, mut events: mpsc::Receiver<Event>) {
    while let Some(event) = events.recv().await {
        hub.publish(event);
    }
}
