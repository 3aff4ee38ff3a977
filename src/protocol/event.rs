//! Events: facts that happened. The reducer ([`super::State::apply`]) is the only code that turns
//! them into state; the daemon prints them as JSON lines, and remote viewers receive them as-is.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::gpu::GpuEvent;
use super::runs::RunEvent;
use crate::logs::LogBatch;

/// An event as published: numbered gap-free from 1 within one engine start (its epoch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sequenced {
    pub seq: u64,
    #[serde(flatten)]
    pub event: Event,
}

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
    /// A test run started, moved a step, reported probe figures, or ended.
    Run(RunEvent),
    /// The shopper was asked: its health and our rented sessions.
    Shopper(super::ShopperEvent),
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
    Started {
        host: String,
        version: String,
        /// Random per engine start: a viewer that sees it change knows the engine restarted.
        #[serde(default)]
        epoch: String,
    },
    /// Shutdown began: the listed runs were cancelled and their cleanups run, each within the
    /// cleanup budget; models are stopped after them.
    CleaningUp {
        reason: String,
        runs: Vec<String>,
    },
    /// Shutdown stopped waiting for these runs' cleanups (an operator gave up, or the budget
    /// ran out); what they were cleaning up may still be running.
    CleanupAbandoned {
        runs: Vec<String>,
        reason: String,
    },
    /// The models are being stopped.
    Stopping {
        reason: String,
    },
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
