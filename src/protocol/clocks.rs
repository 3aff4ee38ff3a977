//! One clock mechanism for everything the engine times: when each model's current state began
//! and its process came up, when each run and each running step started, and how long a run's
//! session has been rented — on a local monotonic clock.
//!
//! The engine keeps one to stamp ages into snapshots; each viewer keeps one, rebuilt from the
//! ages in the snapshot it received and moved on by the events after it, to count uptimes,
//! countdowns and durations on from when it heard of them. No viewer ever compares its own
//! clock with the engine's (a remote daemon's clock may differ).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::event::{Event, ModelChange, ModelEvent};
use super::runs::{RunChange, RunEvent, StepStatus};
use super::state::State;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    /// The model's current state.
    ModelState(String),
    /// The model's current process (starting, ready or unhealthy).
    ModelUp(String),
    /// A run in progress, by run id.
    Run(String),
    /// A running step of a run.
    Step(String, usize),
    /// A run's rented session.
    Session(String),
}

#[derive(Debug, Default, Clone)]
pub struct Clocks {
    since: HashMap<Key, Instant>,
}

impl Clocks {
    /// Clocks from the ages an engine measured when it took `state`, counted back from now.
    pub fn from_state(state: &State) -> Self {
        let now = Instant::now();
        let mut clocks = Self::default();
        let mut set = |key: Key, age_ms: Option<u64>| {
            if let Some(ms) = age_ms {
                clocks.since.insert(key, now.checked_sub(Duration::from_millis(ms)).unwrap_or(now));
            }
        };
        for m in &state.models {
            set(Key::ModelState(m.id.clone()), m.state_age_ms);
            set(Key::ModelUp(m.id.clone()), m.uptime_ms);
        }
        for run in state.running_runs() {
            set(Key::Run(run.id.clone()), run.age_ms);
            for (i, step) in run.steps.iter().enumerate() {
                set(Key::Step(run.id.clone(), i), step.age_ms);
            }
            set(Key::Session(run.id.clone()), run.session.as_ref().and_then(|s| s.rented_ms));
        }
        clocks
    }

    /// Starts and ends clocks as `event` says.
    pub fn on_event(&mut self, event: &Event, now: Instant) {
        match event {
            Event::Model(m) => self.on_model_event(m, now),
            Event::Run(r) => self.on_run_event(r, now),
            _ => {}
        }
    }

    fn on_model_event(&mut self, event: &ModelEvent, now: Instant) {
        self.since.insert(Key::ModelState(event.model.clone()), now);
        let up = Key::ModelUp(event.model.clone());
        match event.change {
            ModelChange::Starting { .. } => {
                self.since.insert(up, now);
            }
            // A flap between ready and unhealthy is the same process: it keeps its uptime.
            ModelChange::Ready { .. } | ModelChange::Unhealthy { .. } => {
                self.since.entry(up).or_insert(now);
            }
            _ => {
                self.since.remove(&up);
            }
        }
    }

    fn on_run_event(&mut self, event: &RunEvent, now: Instant) {
        let run = &event.run;
        match &event.change {
            RunChange::Started { .. } => {
                self.since.insert(Key::Run(run.clone()), now);
            }
            RunChange::Step { index, status, .. } => {
                let key = Key::Step(run.clone(), *index);
                if *status == StepStatus::Running {
                    self.since.entry(key).or_insert(now);
                } else {
                    self.since.remove(&key);
                }
            }
            RunChange::Session { .. } => {
                self.since.entry(Key::Session(run.clone())).or_insert(now);
            }
            RunChange::Finished { .. } => self.since.retain(|key, _| !key.belongs_to(run)),
            RunChange::Probe { .. } | RunChange::Offer { .. } => {}
        }
    }

    /// Writes the ages measured at `now` into `state` (for a snapshot).
    pub fn stamp(&self, state: &mut State, now: Instant) {
        for m in &mut state.models {
            m.state_age_ms = self.age_ms(&Key::ModelState(m.id.clone()), now);
            m.uptime_ms = self.age_ms(&Key::ModelUp(m.id.clone()), now);
        }
        for run in state.tests.iter_mut().filter_map(|t| t.current.as_mut()) {
            run.age_ms = self.age_ms(&Key::Run(run.id.clone()), now);
            for (i, step) in run.steps.iter_mut().enumerate() {
                step.age_ms = self.age_ms(&Key::Step(run.id.clone(), i), now);
            }
            if let Some(session) = &mut run.session {
                session.rented_ms = self.age_ms(&Key::Session(run.id.clone()), now);
            }
        }
    }

    fn age(&self, key: &Key, now: Instant) -> Option<Duration> {
        self.since.get(key).map(|t| now.saturating_duration_since(*t))
    }

    fn age_ms(&self, key: &Key, now: Instant) -> Option<u64> {
        self.age(key, now).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// How long the model has been in its current state.
    pub fn state_age(&self, id: &str, now: Instant) -> Option<Duration> {
        self.age(&Key::ModelState(id.to_owned()), now)
    }

    /// How long the model's current process has been up (none when there is no process).
    pub fn uptime(&self, id: &str, now: Instant) -> Option<Duration> {
        self.age(&Key::ModelUp(id.to_owned()), now)
    }

    /// How long the run has been going.
    pub fn run_age(&self, run: &str, now: Instant) -> Option<Duration> {
        self.age(&Key::Run(run.to_owned()), now)
    }

    /// How long the run's step `index` has been running.
    pub fn step_age(&self, run: &str, index: usize, now: Instant) -> Option<Duration> {
        self.age(&Key::Step(run.to_owned(), index), now)
    }

    /// How long the run's session has been rented.
    pub fn session_age(&self, run: &str, now: Instant) -> Option<Duration> {
        self.age(&Key::Session(run.to_owned()), now)
    }

    /// Pretends the model changed state `ago` before `now`, with its process up for `up` (tests).
    pub fn set_ages(&mut self, id: &str, now: Instant, ago: Duration, up: Option<Duration>) {
        self.since.insert(Key::ModelState(id.to_owned()), now.checked_sub(ago).unwrap_or(now));
        match up {
            Some(up) => self.since.insert(Key::ModelUp(id.to_owned()), now.checked_sub(up).unwrap_or(now)),
            None => self.since.remove(&Key::ModelUp(id.to_owned())),
        };
    }

    /// Pretends the run started `ago` before `now` and its step `index` (if any) is running
    /// since then too (tests).
    pub fn set_run_age(&mut self, run: &str, step: Option<usize>, now: Instant, ago: Duration) {
        let then = now.checked_sub(ago).unwrap_or(now);
        self.since.insert(Key::Run(run.to_owned()), then);
        if let Some(i) = step {
            self.since.insert(Key::Step(run.to_owned(), i), then);
        }
    }
}

impl Clocks {
    /// Pretends the run's session was rented `ago` before `now` (tests).
    pub fn set_session_age(&mut self, run: &str, now: Instant, ago: Duration) {
        self.since.insert(Key::Session(run.to_owned()), now.checked_sub(ago).unwrap_or(now));
    }
}

impl Key {
    fn belongs_to(&self, run: &str) -> bool {
        match self {
            Key::Run(id) | Key::Step(id, _) | Key::Session(id) => id == run,
            Key::ModelState(_) | Key::ModelUp(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::HealthMode;

    fn model(change: ModelChange) -> Event {
        Event::Model(ModelEvent { ts: chrono::Utc::now(), model: "m".into(), change })
    }

    fn run(change: RunChange) -> Event {
        Event::Run(RunEvent { ts: chrono::Utc::now(), run: "r1".into(), test: "t".into(), change })
    }

    #[test]
    fn uptime_spans_ready_unhealthy_flaps_and_ends_with_the_process() {
        let mut clocks = Clocks::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        clocks.on_event(&model(ModelChange::Starting { pid: 1, attempt: 0 }), at(0));
        clocks.on_event(&model(ModelChange::Ready { health: HealthMode::HealthAndModels, startup_ms: 5000 }), at(5));
        clocks.on_event(&model(ModelChange::Unhealthy { reason: "slow".into(), consecutive_failures: 1 }), at(60));
        clocks.on_event(&model(ModelChange::Ready { health: HealthMode::HealthAndModels, startup_ms: 0 }), at(70));
        assert_eq!(clocks.uptime("m", at(100)), Some(Duration::from_secs(100)));
        assert_eq!(clocks.state_age("m", at(100)), Some(Duration::from_secs(30)));

        clocks.on_event(&model(ModelChange::Stopping { reason: "operator".into() }), at(101));
        assert_eq!(clocks.uptime("m", at(102)), None);
        clocks.on_event(&model(ModelChange::Starting { pid: 2, attempt: 1 }), at(110));
        assert_eq!(clocks.uptime("m", at(111)), Some(Duration::from_secs(1)));
    }

    #[test]
    fn runs_and_their_steps_are_timed_until_they_end() {
        let mut clocks = Clocks::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let started = RunChange::Started {
            kind: crate::config::TestKind::Local,
            target: "x".into(),
            steps: vec!["a".into(), "b".into()],
        };
        clocks.on_event(&run(started), at(0));
        let step = |index, status| RunChange::Step { index, status, detail: String::new(), duration_ms: None };
        clocks.on_event(&run(step(0, StepStatus::Running)), at(1));
        // A detail update while it runs keeps its start.
        clocks.on_event(&run(step(0, StepStatus::Running)), at(3));
        assert_eq!(clocks.step_age("r1", 0, at(4)), Some(Duration::from_secs(3)));
        clocks.on_event(&run(step(0, StepStatus::Done)), at(5));
        assert_eq!(clocks.step_age("r1", 0, at(6)), None);
        assert_eq!(clocks.run_age("r1", at(6)), Some(Duration::from_secs(6)));
        let verdict = crate::protocol::Verdict::pass();
        clocks.on_event(&run(RunChange::Finished { verdict, summary: None, report_file: None }), at(7));
        assert_eq!(clocks.run_age("r1", at(8)), None);
    }
}
