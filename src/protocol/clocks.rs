//! When each model's current state began and when its current process came up, on a local
//! monotonic clock. The engine keeps one to put ages into snapshots; each viewer keeps one to
//! count uptimes and countdowns on from when it heard of them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{ModelChange, ModelEvent, Snapshot};

#[derive(Debug, Default, Clone)]
pub struct ModelClocks {
    state_since: HashMap<String, Instant>,
    /// Set while a process is starting or serving: a flap between ready and unhealthy is the
    /// same process, so it keeps its uptime; any other change ends it.
    up_since: HashMap<String, Instant>,
}

impl ModelClocks {
    /// Clocks from the ages an engine measured when it took `snapshot`, counted back from now.
    pub fn from_snapshot(snapshot: &Snapshot) -> Self {
        let now = Instant::now();
        let back = |ms: u64| now.checked_sub(Duration::from_millis(ms)).unwrap_or(now);
        let mut clocks = Self::default();
        for m in &snapshot.state.models {
            if let Some(age) = m.state_age_ms {
                clocks.state_since.insert(m.id.clone(), back(age));
            }
            if let Some(up) = m.uptime_ms {
                clocks.up_since.insert(m.id.clone(), back(up));
            }
        }
        clocks
    }

    pub fn on_model_event(&mut self, event: &ModelEvent, now: Instant) {
        self.state_since.insert(event.model.clone(), now);
        match event.change {
            ModelChange::Starting { .. } => {
                self.up_since.insert(event.model.clone(), now);
            }
            ModelChange::Ready { .. } | ModelChange::Unhealthy { .. } => {
                self.up_since.entry(event.model.clone()).or_insert(now);
            }
            _ => {
                self.up_since.remove(&event.model);
            }
        }
    }

    /// How long the model has been in its current state.
    pub fn state_age(&self, id: &str, now: Instant) -> Option<Duration> {
        self.state_since.get(id).map(|t| now.saturating_duration_since(*t))
    }

    /// How long the model's current process has been up (none when there is no process).
    pub fn uptime(&self, id: &str, now: Instant) -> Option<Duration> {
        self.up_since.get(id).map(|t| now.saturating_duration_since(*t))
    }

    /// Pretends the model changed state `ago` before `now`, with its process up for `up` (tests).
    pub fn set_ages(&mut self, id: &str, now: Instant, ago: Duration, up: Option<Duration>) {
        self.state_since.insert(id.to_owned(), now.checked_sub(ago).unwrap_or(now));
        match up {
            Some(up) => self.up_since.insert(id.to_owned(), now.checked_sub(up).unwrap_or(now)),
            None => self.up_since.remove(id),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::HealthMode;

    fn event(change: ModelChange) -> ModelEvent {
        ModelEvent { ts: chrono::Utc::now(), model: "m".into(), change }
    }

    #[test]
    fn uptime_spans_ready_unhealthy_flaps_and_ends_with_the_process() {
        let mut clocks = ModelClocks::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        clocks.on_model_event(&event(ModelChange::Starting { pid: 1, attempt: 0 }), at(0));
        clocks.on_model_event(
            &event(ModelChange::Ready { health: HealthMode::HealthAndModels, startup_ms: 5000 }),
            at(5),
        );
        clocks
            .on_model_event(&event(ModelChange::Unhealthy { reason: "slow".into(), consecutive_failures: 1 }), at(60));
        clocks
            .on_model_event(&event(ModelChange::Ready { health: HealthMode::HealthAndModels, startup_ms: 0 }), at(70));
        assert_eq!(clocks.uptime("m", at(100)), Some(Duration::from_secs(100)));
        assert_eq!(clocks.state_age("m", at(100)), Some(Duration::from_secs(30)));

        clocks.on_model_event(&event(ModelChange::Stopping { reason: "operator".into() }), at(101));
        assert_eq!(clocks.uptime("m", at(102)), None);
        clocks.on_model_event(&event(ModelChange::Starting { pid: 2, attempt: 1 }), at(110));
        assert_eq!(clocks.uptime("m", at(111)), Some(Duration::from_secs(1)));
    }
}
