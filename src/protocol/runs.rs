//! Test runs: a run has an id, its test, a list of steps, optional offer and session (for
//! deployment runs), live probe figures, and a verdict with reasons. The same [`Run`] is what
//! the Tests pane draws, what the daemon sends, and what a run report (schema 1) keeps.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::probe::{ProbeProgress, ProbeReport};
use crate::config::TestKind;

/// How many finished runs [`super::State`] keeps per test (reloaded from the reports at start).
pub const RUN_HISTORY: usize = 20;
/// The version of the run report format; bumped on any incompatible change.
pub const REPORT_SCHEMA: u32 = 1;

/// The step names of a local test run, in order.
pub mod local_steps {
    pub const WAIT_READY: &str = "wait ready";
    pub const PROBE: &str = "probe";
    pub const VERDICT: &str = "verdict";
    /// Only when the test has a `cleanup_command`.
    pub const CLEANUP: &str = "cleanup";
}

/// The step names of a deployment test run, in order.
pub mod deploy_steps {
    pub const ALL: [&str; 11] = [
        "check shopper",
        "requirements",
        "inventory",
        "select offer",
        "create session",
        "wait running",
        "ssh connect",
        "deploy",
        "wait ready",
        "probe",
        "cleanup",
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    #[default]
    Pending,
    Running,
    Done,
    Failed,
    Skipped,
}

impl StepStatus {
    pub fn name(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Running => "running",
            StepStatus::Done => "done",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
        }
    }

    /// A symbol that reads without colour.
    pub fn symbol(self) -> &'static str {
        match self {
            StepStatus::Pending => "·",
            StepStatus::Running => "▶",
            StepStatus::Done => "✔",
            StepStatus::Failed => "✖",
            StepStatus::Skipped => "-",
        }
    }

    /// Done, failed or skipped.
    pub fn is_over(self) -> bool {
        matches!(self, StepStatus::Done | StepStatus::Failed | StepStatus::Skipped)
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    pub status: StepStatus,
    /// When it started (display only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<DateTime<Utc>>,
    /// Set once it is over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// One line: what it is doing or what it found.
    #[serde(default)]
    pub detail: String,
    /// In snapshots only, while running: how long it has been running, measured by the engine
    /// when it took the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictOutcome {
    Pass,
    Fail,
    Cancelled,
}

impl VerdictOutcome {
    pub fn name(self) -> &'static str {
        match self {
            VerdictOutcome::Pass => "pass",
            VerdictOutcome::Fail => "fail",
            VerdictOutcome::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub outcome: VerdictOutcome,
    /// Why it failed or was cancelled (empty for a pass).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

impl Verdict {
    pub fn pass() -> Self {
        Self { outcome: VerdictOutcome::Pass, reasons: Vec::new() }
    }

    pub fn fail(reason: impl Into<String>) -> Self {
        Self { outcome: VerdictOutcome::Fail, reasons: vec![reason.into()] }
    }

    pub fn cancelled(reason: impl Into<String>) -> Self {
        Self { outcome: VerdictOutcome::Cancelled, reasons: vec![reason.into()] }
    }
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
}

impl TestSummary {
    pub fn of(report: &ProbeReport) -> Self {
        Self {
            requests: report.requests,
            succeeded: report.count(super::probe::Outcome::Success),
            latency_p50_ms: report.latency_ms.p50,
            ttft_p50_ms: report.ttft_ms.p50,
            output_tokens_per_s: report.output_tokens_per_s,
            expected_answer_rate: report.expected_answer_rate,
        }
    }
}

/// The rented offer of a deployment run.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct OfferInfo {
    pub id: String,
    pub provider: String,
    pub gpu_type: String,
    pub gpu_count: u32,
    pub vram_gb: u32,
    pub price_per_hour: f64,
}

/// The session of a deployment run.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SessionInfo {
    pub id: String,
    pub status: String,
    pub price_per_hour: f64,
    /// In snapshots only: how long it has been rented, measured by the engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rented_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// Unique across restarts: `<start time>-<6 hex>`.
    pub id: String,
    pub test: String,
    pub kind: TestKind,
    pub started: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<DateTime<Utc>>,
    /// What is probed: the endpoint of a local model, the model of a deployment.
    #[serde(default)]
    pub target: String,
    pub steps: Vec<Step>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer: Option<OfferInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionInfo>,
    /// Live probe figures (the last ones once it is over).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeProgress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<TestSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// Where its report was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_file: Option<String>,
    /// In snapshots only, while it runs: how long ago it started, measured by the engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_ms: Option<u64>,
}

impl Run {
    pub fn new(
        id: String,
        test: String,
        kind: TestKind,
        started: DateTime<Utc>,
        target: String,
        steps: &[String],
    ) -> Self {
        Self {
            id,
            test,
            kind,
            started,
            finished: None,
            target,
            steps: steps.iter().map(|name| Step { name: name.clone(), ..Step::default() }).collect(),
            offer: None,
            session: None,
            probe: None,
            summary: None,
            verdict: None,
            report_file: None,
            age_ms: None,
        }
    }

    pub fn is_over(&self) -> bool {
        self.verdict.is_some()
    }

    /// The step running now, with its position.
    pub fn current_step(&self) -> Option<(usize, &Step)> {
        self.steps.iter().enumerate().find(|(_, s)| s.status == StepStatus::Running)
    }

    /// Folds one change of this run (`Started` creates a run; it is the caller's).
    pub fn apply(&mut self, ts: DateTime<Utc>, change: &RunChange) {
        match change {
            RunChange::Started { .. } => {}
            RunChange::Step { index, status, detail, duration_ms } => {
                let Some(step) = self.steps.get_mut(*index) else { return };
                if *status == StepStatus::Running && step.status != StepStatus::Running {
                    step.started = Some(ts);
                }
                step.status = *status;
                step.detail.clone_from(detail);
                step.duration_ms = *duration_ms;
                if status.is_over() {
                    step.age_ms = None;
                }
            }
            RunChange::Probe { progress } => self.probe = Some(progress.clone()),
            RunChange::Offer { offer } => self.offer = Some(offer.clone()),
            RunChange::Session { session } => self.session = Some(session.clone()),
            RunChange::Finished { verdict, summary, report_file } => {
                self.verdict = Some(verdict.clone());
                self.summary.clone_from(summary);
                self.report_file.clone_from(report_file);
                self.finished = Some(ts);
                self.age_ms = None;
            }
        }
    }

    /// The step named `name`.
    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
    }
}

/// Events of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEvent {
    pub ts: DateTime<Utc>,
    pub run: String,
    pub test: String,
    #[serde(flatten)]
    pub change: RunChange,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum RunChange {
    Started {
        kind: TestKind,
        target: String,
        steps: Vec<String>,
    },
    /// A step changed status (or its detail changed while it runs).
    Step {
        index: usize,
        status: StepStatus,
        #[serde(default)]
        detail: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration_ms: Option<u64>,
    },
    /// Live figures of the run's probe.
    Probe {
        progress: ProbeProgress,
    },
    Offer {
        offer: OfferInfo,
    },
    Session {
        session: SessionInfo,
    },
    Finished {
        verdict: Verdict,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        summary: Option<TestSummary>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        report_file: Option<String>,
    },
}

/// A run report: one JSON file per run in `<data>/results/`, written when the run ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// [`REPORT_SCHEMA`].
    pub schema: u32,
    pub run: Run,
    /// The test's configuration as run, secrets redacted.
    #[serde(default)]
    pub config: serde_json::Value,
    /// Wall time from start to end, cleanup included.
    pub wall_time_s: f64,
    /// The probe's full report, if it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeReport>,
    /// What the rental cost (deployment runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// Cost per million output tokens (deployment runs with a probe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_per_million_output_tokens_usd: Option<f64>,
    /// GPU energy over the probe (local runs whose model's GPUs are visible); `null` when not
    /// known.
    #[serde(default)]
    pub energy: Option<EnergyFigures>,
}

/// GPU energy spent during a probe, from the GPU sampler's energy counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnergyFigures {
    /// Joules over the probe, summed over `gpus`.
    pub joules: f64,
    /// Joules per output token of successful requests (`null` without tokens).
    pub joules_per_output_token: Option<f64>,
    /// The GPUs the model's processes held memory on (a GPU shared with another model counts
    /// whole).
    pub gpus: Vec<u32>,
}

impl EnergyFigures {
    /// Energy between two readings of the same GPUs (index → joules); `None` when a GPU has
    /// no reading in either, or the counters did not move.
    pub fn between(before: &[(u32, f64)], after: &[(u32, f64)], output_tokens: u64) -> Option<EnergyFigures> {
        if before.is_empty() {
            return None;
        }
        let mut joules = 0.0;
        for (gpu, start) in before {
            let (_, end) = after.iter().find(|(g, _)| g == gpu)?;
            joules += (end - start).max(0.0);
        }
        if joules <= 0.0 || !joules.is_finite() {
            return None;
        }
        let per_token = (output_tokens > 0).then(|| joules / output_tokens as f64);
        Some(EnergyFigures {
            joules,
            joules_per_output_token: per_token,
            gpus: before.iter().map(|(g, _)| *g).collect(),
        })
    }
}
