//! `State`: what a viewer needs to draw every pane, and the reducer that is the only code
//! allowed to change it. Pure: the same events always give the same state.

use super::ShopperStatus;
use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::event::{Alert, EngineEventKind, Event, HealthMode, ModelChange, ModelEvent};
use super::gpu::GpuState;
use super::runs::{RUN_HISTORY, Run, RunChange, RunEvent};
use crate::config::{Config, ModelConfig, TestKind};
use crate::logs::{LogBatch, LogSource};

/// How many timeline entries a model keeps (the detail view's "recent events").
pub const TIMELINE_LEN: usize = 32;
/// How many alerts the state keeps.
pub const ALERTS_LEN: usize = 50;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct State {
    pub host: String,
    pub version: String,
    pub config_path: Option<String>,
    /// Where the engine writes model and test logs (on the engine's machine).
    #[serde(default)]
    pub log_dir: Option<String>,
    pub running: bool,
    /// Set once shutdown began: what it still waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown: Option<ShutdownStatus>,
    pub models: Vec<ModelStatus>,
    pub gpus: GpuState,
    pub tests: Vec<TestStatus>,
    pub shopper: ShopperStatus,
    /// Per-source log counters; the lines themselves are events.
    pub logs: BTreeMap<LogSource, LogStats>,
    pub alerts: VecDeque<Alert>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelState {
    #[default]
    Stopped,
    Starting,
    Ready,
    Unhealthy,
    Crashed,
    Backoff,
    Failed,
    Stopping,
}

impl ModelState {
    pub fn name(self) -> &'static str {
        match self {
            ModelState::Stopped => "stopped",
            ModelState::Starting => "starting",
            ModelState::Ready => "ready",
            ModelState::Unhealthy => "unhealthy",
            ModelState::Crashed => "crashed",
            ModelState::Backoff => "backoff",
            ModelState::Failed => "failed",
            ModelState::Stopping => "stopping",
        }
    }

    /// A process exists (or is about to) that an operator's quit would stop.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            ModelState::Starting
                | ModelState::Ready
                | ModelState::Unhealthy
                | ModelState::Backoff
                | ModelState::Stopping
        )
    }
}

/// What the Models pane shows of a model's configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ModelSummary {
    /// Command line with secrets redacted.
    pub command_line: String,
    pub port: u16,
    pub base_url: String,
    pub policy: String,
    pub health_path: String,
    pub autostart: bool,
}

impl ModelSummary {
    pub fn from_config(m: &ModelConfig) -> Self {
        let mut words = vec![m.command.clone()];
        words.extend(crate::util::redact_args(&m.args));
        Self {
            command_line: words.join(" "),
            port: m.port,
            base_url: m.base_url(),
            policy: m.restart.policy.name().into(),
            health_path: m.health.path.clone(),
            autostart: m.autostart,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitInfo {
    pub ts: DateTime<Utc>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub oom: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub ts: DateTime<Utc>,
    pub state: ModelState,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ModelStatus {
    pub id: String,
    pub summary: ModelSummary,
    pub state: ModelState,
    /// Wall-clock time of the last state change (display only).
    pub since: Option<DateTime<Utc>>,
    pub pid: Option<u32>,
    pub restarts: u32,
    pub ooms: u32,
    pub health: HealthMode,
    pub last_exit: Option<ExitInfo>,
    pub last_oom_line: Option<String>,
    /// Current reason (why unhealthy, why backing off, why failed).
    pub reason: Option<String>,
    /// Backoff: the attempt about to be made and its delay, measured when the event was sent.
    pub backoff_attempt: Option<u32>,
    pub backoff_delay_ms: Option<u64>,
    /// GPU memory held by this model's processes, summed over GPUs (from the latest sample).
    pub gpu_memory_bytes: Option<u64>,
    /// In snapshots only: how long ago the current state began, measured by the engine when it
    /// took the snapshot (viewers count on from when they received it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_age_ms: Option<u64>,
    /// In snapshots only: how long the current process has been up (starting, ready or
    /// unhealthy), measured like `state_age_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_ms: Option<u64>,
    pub timeline: VecDeque<TimelineEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestStatus {
    pub name: String,
    pub kind: TestKind,
    pub model: String,
    /// The run in progress (its cleanup included), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<Run>,
    /// Finished runs, oldest first, at most [`RUN_HISTORY`].
    #[serde(default)]
    pub history: VecDeque<Run>,
}

impl TestStatus {
    /// The last finished run.
    pub fn last(&self) -> Option<&Run> {
        self.history.back()
    }
}

/// What shutdown is waiting for.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ShutdownStatus {
    pub reason: String,
    /// Runs whose cleanup shutdown waits for (ids); a run leaves this list when it finishes.
    pub cleaning_up: Vec<String>,
    /// Runs whose cleanup was given up on (ids).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub abandoned: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LogStats {
    pub lines: u64,
    pub dropped: u64,
    pub errors: u64,
    pub ooms: u64,
}

impl State {
    /// The state before any event: every configured model stopped, every test idle.
    pub fn new(config: &Config, config_path: Option<String>, host: String) -> Self {
        Self {
            host,
            version: env!("CARGO_PKG_VERSION").into(),
            config_path,
            log_dir: None,
            running: false,
            shutdown: None,
            models: config
                .models
                .iter()
                .map(|m| ModelStatus { id: m.id.clone(), summary: ModelSummary::from_config(m), ..Default::default() })
                .collect(),
            gpus: GpuState::default(),
            tests: config
                .tests
                .iter()
                .map(|t| TestStatus {
                    name: t.name.clone(),
                    kind: t.kind,
                    model: t.model.clone(),
                    current: None,
                    history: VecDeque::new(),
                })
                .collect(),
            shopper: ShopperStatus { url: config.shopper.url.clone(), ..Default::default() },
            logs: BTreeMap::new(),
            alerts: VecDeque::new(),
        }
    }

    pub fn model(&self, id: &str) -> Option<&ModelStatus> {
        self.models.iter().find(|m| m.id == id)
    }

    /// A copy for a snapshot: GPU history cut to the newest `gpu_history` samples per series.
    pub fn clone_for_snapshot(&self, gpu_history: usize) -> Self {
        Self {
            host: self.host.clone(),
            version: self.version.clone(),
            config_path: self.config_path.clone(),
            log_dir: self.log_dir.clone(),
            running: self.running,
            shutdown: self.shutdown.clone(),
            models: self.models.clone(),
            gpus: self.gpus.clone_recent(gpu_history),
            tests: self.tests.clone(),
            shopper: self.shopper.clone(),
            logs: self.logs.clone(),
            alerts: self.alerts.clone(),
        }
    }

    pub fn test(&self, name: &str) -> Option<&TestStatus> {
        self.tests.iter().find(|t| t.name == name)
    }

    /// Runs in progress, cleanups included.
    pub fn running_runs(&self) -> impl Iterator<Item = &Run> {
        self.tests.iter().filter_map(|t| t.current.as_ref())
    }

    /// Puts finished runs (reloaded from their reports) into each test's history, oldest first.
    pub fn load_history(&mut self, runs: impl IntoIterator<Item = Run>) {
        let mut runs: Vec<Run> = runs.into_iter().collect();
        runs.sort_by(|a, b| a.started.cmp(&b.started).then_with(|| a.id.cmp(&b.id)));
        for run in runs {
            if let Some(t) = self.tests.iter_mut().find(|t| t.name == run.test) {
                push_bounded(&mut t.history, run, RUN_HISTORY);
            }
        }
    }

    /// The reducer.
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::Engine(e) => match &e.kind {
                EngineEventKind::Started { host, version, .. } => {
                    self.host.clone_from(host);
                    self.version.clone_from(version);
                    self.running = true;
                }
                EngineEventKind::CleaningUp { reason, runs } => {
                    self.running = false;
                    self.shutdown = Some(ShutdownStatus {
                        reason: reason.clone(),
                        cleaning_up: runs.clone(),
                        abandoned: Vec::new(),
                    });
                }
                EngineEventKind::CleanupAbandoned { runs, .. } => {
                    let shutdown = self.shutdown.get_or_insert_with(ShutdownStatus::default);
                    shutdown.cleaning_up.retain(|id| !runs.contains(id));
                    shutdown.abandoned.extend(runs.iter().cloned());
                }
                EngineEventKind::Stopping { reason } => {
                    self.running = false;
                    self.shutdown
                        .get_or_insert_with(|| ShutdownStatus { reason: reason.clone(), ..Default::default() });
                }
                EngineEventKind::Stopped => self.running = false,
            },
            Event::Model(e) => self.apply_model(e),
            Event::Log(batch) => self.apply_logs(batch),
            Event::Gpu(e) => {
                self.gpus.apply(e);
                self.join_gpu_memory();
            }
            Event::Alert(a) => push_bounded(&mut self.alerts, a.clone(), ALERTS_LEN),
            Event::Run(e) => self.apply_run(e),
            Event::Shopper(e) => {
                self.shopper.health = e.health.clone();
                if let Some(sessions) = &e.sessions {
                    self.shopper.sessions.clone_from(sessions);
                    self.shopper.checked = Some(e.ts);
                }
            }
        }
    }

    fn apply_run(&mut self, e: &RunEvent) {
        let Some(t) = self.tests.iter_mut().find(|t| t.name == e.test) else { return };
        if let RunChange::Started { kind, target, steps } = &e.change {
            t.current = Some(Run::new(e.run.clone(), e.test.clone(), *kind, e.ts, target.clone(), steps));
            return;
        }
        let Some(run) = t.current.as_mut().filter(|r| r.id == e.run) else { return };
        run.apply(e.ts, &e.change);
        if matches!(e.change, RunChange::Finished { .. })
            && let Some(finished) = t.current.take()
        {
            if let Some(shutdown) = &mut self.shutdown {
                shutdown.cleaning_up.retain(|id| *id != finished.id);
            }
            push_bounded(&mut t.history, finished, RUN_HISTORY);
        }
    }

    fn apply_model(&mut self, e: &ModelEvent) {
        let Some(m) = self.models.iter_mut().find(|m| m.id == e.model) else {
            return;
        };
        m.since = Some(e.ts);
        let (state, detail) = match &e.change {
            ModelChange::Starting { pid, attempt } => {
                m.pid = Some(*pid);
                m.reason = None;
                m.health = HealthMode::Unknown;
                m.backoff_attempt = None;
                m.backoff_delay_ms = None;
                if *attempt > 0 {
                    m.restarts += 1;
                }
                let detail = if *attempt > 0 { format!("pid {pid}, restart {attempt}") } else { format!("pid {pid}") };
                (ModelState::Starting, detail)
            }
            ModelChange::Ready { health, startup_ms } => {
                m.health = *health;
                m.reason = None;
                // After an unhealthy spell it is the same process recovering, not a start-up.
                let detail = if m.state == ModelState::Unhealthy {
                    "healthy again".to_owned()
                } else {
                    format!("ready after {}", crate::util::fmt_duration_ms(*startup_ms))
                };
                (ModelState::Ready, detail)
            }
            ModelChange::Unhealthy { reason, .. } => {
                m.reason = Some(reason.clone());
                (ModelState::Unhealthy, reason.clone())
            }
            ModelChange::Crashed { exit_code, signal, oom, oom_line, reason } => {
                m.pid = None;
                m.last_exit = Some(ExitInfo { ts: e.ts, exit_code: *exit_code, signal: *signal, oom: *oom });
                if *oom {
                    m.ooms += 1;
                    m.last_oom_line.clone_from(oom_line);
                }
                m.reason = Some(reason.clone());
                (ModelState::Crashed, reason.clone())
            }
            ModelChange::Backoff { attempt, delay_ms, reason } => {
                m.backoff_attempt = Some(*attempt);
                m.backoff_delay_ms = Some(*delay_ms);
                m.reason = Some(reason.clone());
                (ModelState::Backoff, format!("restart {attempt} in {}", crate::util::fmt_duration_ms(*delay_ms)))
            }
            ModelChange::Failed { reason } => {
                m.pid = None;
                m.reason = Some(reason.clone());
                (ModelState::Failed, reason.clone())
            }
            ModelChange::Stopping { reason } => (ModelState::Stopping, reason.clone()),
            ModelChange::Stopped { reason } => {
                m.pid = None;
                m.backoff_attempt = None;
                m.backoff_delay_ms = None;
                m.reason.clone_from(reason);
                (ModelState::Stopped, reason.clone().unwrap_or_default())
            }
        };
        m.state = state;
        push_bounded(&mut m.timeline, TimelineEntry { ts: e.ts, state, detail }, TIMELINE_LEN);
    }

    fn apply_logs(&mut self, batch: &LogBatch) {
        let stats = self.logs.entry(batch.source.clone()).or_default();
        stats.lines = stats.lines.saturating_add(batch.lines.len() as u64);
        stats.dropped = stats.dropped.saturating_add(batch.dropped_before);
        for line in &batch.lines {
            stats.errors += u64::from(line.is_error());
            stats.ooms += u64::from(line.oom);
        }
    }

    /// Sums each model's GPU memory from the latest sample's process list.
    fn join_gpu_memory(&mut self) {
        for m in &mut self.models {
            let mut total = None;
            for gpu in &self.gpus.gpus {
                for p in gpu.processes.iter().filter(|p| p.model.as_deref() == Some(m.id.as_str())) {
                    // The driver's numbers: a nonsense one saturates instead of overflowing.
                    let sum = total.get_or_insert(0u64);
                    *sum = sum.saturating_add(p.used_memory_bytes.unwrap_or(0));
                }
            }
            m.gpu_memory_bytes = total;
        }
    }
}

fn push_bounded<T>(queue: &mut VecDeque<T>, item: T, cap: usize) {
    if queue.len() == cap {
        queue.pop_front();
    }
    queue.push_back(item);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{HealthMode, ModelChange, ModelEvent};

    fn model_event(change: ModelChange) -> Event {
        Event::Model(ModelEvent { ts: chrono::Utc::now(), model: "m".into(), change })
    }

    #[test]
    fn the_timeline_tells_a_recovery_from_a_start() {
        let config =
            crate::config::load_str("models:\n  - { id: m, command: x, port: 9001 }\n", "test").expect("config");
        let mut state = State::new(&config, None, "host".into());
        let ready = |startup_ms| ModelChange::Ready { health: HealthMode::HealthAndModels, startup_ms };
        state.apply(&model_event(ModelChange::Starting { pid: 7, attempt: 0 }));
        state.apply(&model_event(ready(4_000)));
        state.apply(&model_event(ModelChange::Unhealthy { reason: "timed out".into(), consecutive_failures: 1 }));
        state.apply(&model_event(ready(18_000_000)));
        let details: Vec<&str> = state.models[0].timeline.iter().map(|e| e.detail.as_str()).collect();
        assert_eq!(details, ["pid 7", "ready after 4s", "timed out", "healthy again"]);
        assert_eq!(state.models[0].state, ModelState::Ready);
    }

    /// Numbers from the driver or a peer that do not fit: the sums saturate, no panic.
    #[test]
    fn absurd_gpu_memory_numbers_saturate() {
        use crate::protocol::{GpuEvent, GpuProcess, GpuSample};
        let config =
            crate::config::load_str("models:\n  - { id: m, command: x, port: 9001 }\n", "test").expect("config");
        let mut state = State::new(&config, None, "host".into());
        let process = GpuProcess { pid: 1, used_memory_bytes: Some(u64::MAX), model: Some("m".into()) };
        let gpu = |index| GpuSample { index, processes: vec![process.clone(), process.clone()], ..Default::default() };
        state.apply(&Event::Gpu(GpuEvent::Sampled { ts: chrono::Utc::now(), gpus: vec![gpu(0), gpu(1)] }));
        assert_eq!(state.models[0].gpu_memory_bytes, Some(u64::MAX));
    }
}
