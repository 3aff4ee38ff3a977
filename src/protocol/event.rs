//! Events: facts that happened. The reducer ([`super::State::apply`]) is the only code that turns
//! them into state; the daemon prints them as JSON lines, and remote viewers receive them as-is.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::gpu::GpuEvent;
use crate::logs::LogBatch;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The engine's own lifecycle.
    Engine(EngineEvent),
    /// A model changed state (`type: "model"`, with `state`).
    Model(ModelEvent),
    /// Lines captured from one source (a model, a test, llmdeck itself).
    Log(LogBatch),
    /// GPU backend status, samples, staleness and driver events.
    Gpu(GpuEvent),
    /// Something an operator should see even if they were not looking at the pane.
    Alert(Alert),
    /// A test started or ended.
    Test(TestEvent),
    /// Live figures of a running probe (a test's probe step).
    Probe(ProbeEvent),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestEvent {
    pub ts: DateTime<Utc>,
    pub test: String,
    #[serde(flatten)]
    pub change: TestChange,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TestChange {
    Running {
        /// The endpoint being probed.
        target: String,
    },
    Passed {
        summary: TestSummary,
    },
    Failed {
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        summary: Option<TestSummary>,
    },
    Cancelled {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        summary: Option<TestSummary>,
    },
}

/// The figures of a finished probe that the Tests pane shows.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TestSummary {
    pub requests: u64,
    pub succeeded: u64,
    pub latency_p50_ms: Option<f64>,
    pub ttft_p50_ms: Option<f64>,
    pub output_tokens_per_s: f64,
    pub expected_answer_rate: Option<f64>,
    /// Where the full report was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_file: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeEvent {
    pub ts: DateTime<Utc>,
    pub test: String,
    #[serde(flatten)]
    pub progress: crate::probe::ProbeProgress,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineEvent {
    pub ts: DateTime<Utc>,
    #[serde(flatten)]
    pub kind: EngineEventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EngineEventKind {
    Started { host: String, version: String },
    Stopping { reason: String },
    Stopped,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelEvent {
    pub ts: DateTime<Utc>,
    pub model: String,
    #[serde(flatten)]
    pub change: ModelChange,
}

/// How readiness and health are judged for a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthMode {
    /// Not known yet (never reached ready).
    #[default]
    Unknown,
    /// The health path answers 200, and `/v1/models` does too.
    HealthAndModels,
    /// The health path answered 404: the server has none; `/v1/models` alone decides.
    ModelsOnly,
}

/// A model's state transition, as in DESIGN.md's state machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ModelChange {
    Starting {
        pid: u32,
        /// 0 for the first start, n for the n-th restart after a crash.
        attempt: u32,
    },
    Ready {
        health: HealthMode,
        /// Time from spawn to ready.
        startup_ms: u64,
    },
    Unhealthy {
        reason: String,
        consecutive_failures: u32,
    },
    Crashed {
        exit_code: Option<i32>,
        signal: Option<i32>,
        oom: bool,
        oom_line: Option<String>,
        reason: String,
    },
    Backoff {
        attempt: u32,
        delay_ms: u64,
        reason: String,
    },
    Failed {
        reason: String,
    },
    Stopping {
        reason: String,
    },
    Stopped {
        #[serde(skip_serializing_if = "Option::is_none", default)]
        reason: Option<String>,
    },
}

impl ModelChange {
    pub fn state_name(&self) -> &'static str {
        match self {
            ModelChange::Starting { .. } => "starting",
            ModelChange::Ready { .. } => "ready",
            ModelChange::Unhealthy { .. } => "unhealthy",
            ModelChange::Crashed { .. } => "crashed",
            ModelChange::Backoff { .. } => "backoff",
            ModelChange::Failed { .. } => "failed",
            ModelChange::Stopping { .. } => "stopping",
            ModelChange::Stopped { .. } => "stopped",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub ts: DateTime<Utc>,
    pub severity: Severity,
    /// Where it comes from: a model id, `gpu`, `engine`, ...
    pub source: String,
    pub message: String,
}
