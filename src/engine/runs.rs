//! Test runs: one at a time, each a list of steps reported as events, then a cleanup that runs
//! on every path (pass, fail, cancel, shutdown, a panic in the run) under its own cancellation
//! and within `runs.cleanup_budget_s`, then a versioned report.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::FutureExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::deploy_run::{DeployDeps, DeployRun};
use super::local_run::LocalRun;
use super::rentals::RentalsHandle;
use super::reports;
use crate::config::{Config, TestConfig, TestKind};
use crate::deploy::ledger::SessionLedger;
use crate::logs::{Level, LogBatch, LogLine, LogSource};
use crate::protocol::{
    Ack, CommandError, EngineEvent, EngineEventKind, Event, EventSink, Hub, ProbeReport, Run, RunChange, RunEvent,
    StepStatus, TestSummary, Verdict,
};
use crate::supervisor::SupervisorHandle;

/// How long shutdown waits beyond the cleanup budget for a run that ignores its cancellation
/// and the abandonment of its cleanup (a bug) before it aborts the run's task.
const OVERRUN_GRACE: Duration = Duration::from_secs(30);

pub(super) struct RunsSetup {
    pub config: Config,
    pub events: EventSink,
    pub hub: Arc<Hub>,
    pub supervisor: SupervisorHandle,
    pub data_dir: PathBuf,
    /// Cancelled when an operator gives up waiting for cleanups.
    pub abandon: CancellationToken,
    /// Deployment runs rent as this consumer and tell the session keeper what they did.
    pub consumer_id: String,
    pub rentals: RentalsHandle,
}

struct Current {
    test: String,
    run_id: String,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

/// The run manager: starts runs, cancels them, and at shutdown cancels the running one and
/// waits for its cleanup.
pub(super) struct Runs {
    setup: Arc<RunsSetup>,
    current: Option<Current>,
    /// Set at shutdown: past this, a run that still has not ended is aborted.
    overrun_deadline: Option<tokio::time::Instant>,
}

impl Runs {
    pub(super) fn new(setup: RunsSetup) -> Self {
        Self { setup: Arc::new(setup), current: None, overrun_deadline: None }
    }

    pub(super) fn is_running(&self) -> bool {
        self.current.is_some()
    }

    /// Forgets a run that has ended.
    pub(super) fn reap(&mut self) {
        if self.current.as_ref().is_some_and(|c| c.task.is_finished()) {
            self.current = None;
        }
    }

    /// Resolves when the current run's task has ended (at once if there is none). After
    /// shutdown began, a run that overruns its cleanup budget by far is aborted.
    pub(super) async fn wait_current(&mut self) {
        let Some(current) = self.current.as_mut() else { return };
        match self.overrun_deadline {
            None => {
                let _ = (&mut current.task).await;
            }
            Some(deadline) => {
                tokio::select! {
                    _ = &mut current.task => {}
                    () = tokio::time::sleep_until(deadline) => {
                        tracing::error!(
                            "the run {} of {} ignored its cancellation and its cleanup budget; aborted",
                            current.run_id,
                            current.test
                        );
                        current.task.abort();
                        let _ = (&mut current.task).await;
                    }
                }
            }
        }
        self.current = None;
    }

    pub(super) fn start(&mut self, name: &str) -> Result<Ack, CommandError> {
        self.reap();
        let setup = &self.setup;
        let test = setup
            .config
            .tests
            .iter()
            .find(|t| t.name == name)
            .cloned()
            .ok_or_else(|| CommandError::new(format!("no test `{name}` in the configuration")))?;
        if let Some(current) = &self.current {
            return Err(CommandError::new(format!("{} is running; one test runs at a time", current.test)));
        }
        let plan = match test.kind {
            TestKind::Local => Plan::Local(Box::new(LocalRun::new(&test, &setup.config, setup.supervisor.clone())?)),
            TestKind::Deploy => {
                let deps = DeployDeps {
                    consumer_id: setup.consumer_id.clone(),
                    ledger: SessionLedger::new(&setup.data_dir),
                    rentals: setup.rentals.clone(),
                };
                Plan::Deploy(Box::new(DeployRun::new(&test, &setup.config, deps)?))
            }
        };
        let run_id = new_run_id();
        let cancel = CancellationToken::new();
        let ctx = RunCtx::new(setup.clone(), &test, run_id.clone(), plan.target(&test), plan.steps(), cancel.clone());
        let task = tokio::spawn(drive(ctx, plan));
        self.current = Some(Current { test: name.to_owned(), run_id, cancel, task });
        Ok(Ack { message: format!("running {name}") })
    }

    pub(super) fn cancel(&mut self, name: &str) -> Result<Ack, CommandError> {
        self.reap();
        match &self.current {
            Some(current) if current.test == name => {
                current.cancel.cancel();
                Ok(Ack { message: format!("cancelling {name}") })
            }
            _ => Err(CommandError::new(format!("{name} is not running"))),
        }
    }

    /// Cancels the running run (its cleanup goes on) and says what shutdown waits for.
    pub(super) async fn begin_shutdown(&mut self, reason: &str) {
        self.reap();
        let runs: Vec<String> = self.current.iter().map(|c| c.run_id.clone()).collect();
        if let Some(current) = &self.current {
            current.cancel.cancel();
        }
        let budget = self.setup.config.runs.cleanup_budget_s;
        self.overrun_deadline = Some(tokio::time::Instant::now() + budget + OVERRUN_GRACE);
        let kind = EngineEventKind::CleaningUp { reason: reason.to_owned(), runs };
        let _ = self.setup.events.send(Event::Engine(EngineEvent { ts: Utc::now(), kind })).await;
    }
}

/// `20261203T104501Z-3fa2c1`: sorts by time, unique across restarts.
fn new_run_id() -> String {
    format!("{}-{:06x}", Utc::now().format("%Y%m%dT%H%M%SZ"), fastrand::u32(..0x0100_0000))
}

/// What a kind of run does.
pub(super) enum Plan {
    Local(Box<LocalRun>),
    Deploy(Box<DeployRun>),
}

impl Plan {
    fn target(&self, test: &TestConfig) -> String {
        match self {
            Plan::Local(run) => run.target(),
            Plan::Deploy(run) => run.target(test),
        }
    }

    fn steps(&self) -> Vec<String> {
        match self {
            Plan::Local(run) => run.steps(),
            Plan::Deploy(run) => run.steps(),
        }
    }

    async fn main(&mut self, ctx: &mut RunCtx) -> MainOutcome {
        match self {
            Plan::Local(run) => run.main(ctx).await,
            Plan::Deploy(run) => run.main(ctx).await,
        }
    }

    async fn cleanup(&mut self, ctx: &mut RunCtx, verdict: &Verdict) {
        match self {
            Plan::Local(run) => run.cleanup(ctx, verdict).await,
            Plan::Deploy(run) => run.cleanup(ctx, verdict).await,
        }
    }

    /// What the rental cost, for deployment runs.
    fn cost_usd(&self) -> Option<f64> {
        match self {
            Plan::Local(_) => None,
            Plan::Deploy(run) => run.cost_usd(),
        }
    }
}

/// What the steps before the cleanup found.
pub(super) struct MainOutcome {
    pub verdict: Verdict,
    pub probe: Option<ProbeReport>,
    /// GPU energy over the probe, when the model's GPUs are visible.
    pub energy: Option<crate::protocol::EnergyFigures>,
}

impl MainOutcome {
    pub fn ended(verdict: Verdict) -> Self {
        MainOutcome { verdict, probe: None, energy: None }
    }
}

/// A run as it goes: its own copy of the [`Run`] (the same changes the events carry), the
/// tokens it obeys, and the way to report.
pub(super) struct RunCtx {
    setup: Arc<RunsSetup>,
    pub test: TestConfig,
    pub run: Run,
    /// The run's cancellation (an operator's cancel, shutdown). The cleanup does not obey it.
    pub cancel: CancellationToken,
    /// When each running step started (durations by this clock, not the wall clock).
    step_started: Vec<Option<Instant>>,
    started: Instant,
}

impl RunCtx {
    fn new(
        setup: Arc<RunsSetup>,
        test: &TestConfig,
        id: String,
        target: String,
        steps: Vec<String>,
        cancel: CancellationToken,
    ) -> Self {
        let run = Run::new(id, test.name.clone(), test.kind, Utc::now(), target, &steps);
        Self { setup, test: test.clone(), run, cancel, step_started: vec![None; steps.len()], started: Instant::now() }
    }

    pub fn hub(&self) -> &Hub {
        &self.setup.hub
    }

    pub fn config(&self) -> &Config {
        &self.setup.config
    }

    /// Applies a change to this run's copy and publishes it.
    pub async fn change(&mut self, change: RunChange) {
        let ts = Utc::now();
        self.run.apply(ts, &change);
        let event = RunEvent { ts, run: self.run.id.clone(), test: self.test.name.clone(), change };
        let _ = self.setup.events.send(Event::Run(event)).await;
    }

    /// Step `index` starts (or, if running, says something new).
    pub async fn step_running(&mut self, index: usize, detail: impl Into<String>) {
        if let Some(slot) = self.step_started.get_mut(index) {
            slot.get_or_insert_with(Instant::now);
        }
        let change = RunChange::Step { index, status: StepStatus::Running, detail: detail.into(), duration_ms: None };
        self.change(change).await;
    }

    /// Step `index` is over.
    pub async fn step_over(&mut self, index: usize, status: StepStatus, detail: impl Into<String>) {
        let duration_ms = self
            .step_started
            .get(index)
            .copied()
            .flatten()
            .map(|t| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX));
        self.change(RunChange::Step { index, status, detail: detail.into(), duration_ms }).await;
    }

    /// Every step not started yet is skipped.
    pub async fn skip_pending(&mut self, why: &str) {
        let pending: Vec<usize> = self
            .run
            .steps
            .iter()
            .enumerate()
            // The cleanup step is not skipped: it runs next, whatever happened.
            .filter(|(_, s)| s.status == StepStatus::Pending && s.name != crate::protocol::local_steps::CLEANUP)
            .map(|(i, _)| i)
            .collect();
        for index in pending {
            self.step_over(index, StepStatus::Skipped, why).await;
        }
    }

    /// A line in the test's own log source (`l` on the test shows it).
    pub async fn log(&self, level: Level, text: impl Into<String>) {
        let line = LogLine::internal(level, text.into());
        let batch = LogBatch::single(LogSource::Test(self.test.name.clone()), line);
        let _ = self.setup.events.send(Event::Log(batch)).await;
    }

    pub fn events(&self) -> &EventSink {
        &self.setup.events
    }
}

/// Runs the plan's steps, then its cleanup (always), then writes the report and publishes the
/// verdict. A panic in the steps (a bug) still ends with a verdict, a cleanup and a report.
async fn drive(mut ctx: RunCtx, mut plan: Plan) {
    let (kind, target, steps) =
        (ctx.test.kind, ctx.run.target.clone(), ctx.run.steps.iter().map(|s| s.name.clone()).collect());
    ctx.change(RunChange::Started { kind, target, steps }).await;
    let main = std::panic::AssertUnwindSafe(plan.main(&mut ctx)).catch_unwind().await;
    let outcome = match main {
        Ok(outcome) => outcome,
        Err(panic) => {
            let why = panic_message(panic.as_ref());
            tracing::error!("the run of {} panicked: {why}", ctx.test.name);
            MainOutcome::ended(Verdict::fail(format!("the run crashed (a bug in llmdeck): {why}")))
        }
    };
    ctx.skip_pending(skip_reason(&outcome.verdict)).await;
    let abandoned = clean_up(&mut ctx, &mut plan, &outcome.verdict).await;
    let mut verdict = outcome.verdict;
    if let Some(why) = abandoned {
        verdict.reasons.push(why);
    }
    let summary = outcome.probe.as_ref().map(TestSummary::of);
    ctx.run.summary.clone_from(&summary);
    ctx.run.verdict = Some(verdict.clone());
    ctx.run.finished = Some(Utc::now());
    let extras = reports::Extras { cost_usd: plan.cost_usd(), energy: outcome.energy };
    let report_file =
        reports::write(&ctx.setup.data_dir, &ctx.run, &ctx.test, ctx.started.elapsed(), outcome.probe, extras)
            .await
            .map_err(|e| tracing::warn!("writing the report of {}: {e}", ctx.test.name))
            .ok();
    let (data_dir, test, keep) =
        (ctx.setup.data_dir.clone(), ctx.test.name.clone(), ctx.config().runs.keep_reports as usize);
    let _ = tokio::task::spawn_blocking(move || reports::prune(&data_dir, &test, keep)).await;
    let (level, text) = match verdict.outcome {
        crate::protocol::VerdictOutcome::Pass => (Level::Info, format!("{} passed", ctx.test.name)),
        crate::protocol::VerdictOutcome::Fail => {
            (Level::Error, format!("{} failed: {}", ctx.test.name, verdict.reasons.join("; ")))
        }
        crate::protocol::VerdictOutcome::Cancelled => (Level::Warn, format!("{} cancelled", ctx.test.name)),
    };
    ctx.log(level, text).await;
    ctx.change(RunChange::Finished { verdict, summary, report_file }).await;
}

fn skip_reason(verdict: &Verdict) -> &'static str {
    match verdict.outcome {
        crate::protocol::VerdictOutcome::Cancelled => "cancelled",
        _ => "not reached",
    }
}

/// The plan's cleanup, within the budget and until abandoned; why it was cut short, if it was.
async fn clean_up(ctx: &mut RunCtx, plan: &mut Plan, verdict: &Verdict) -> Option<String> {
    let budget = ctx.config().runs.cleanup_budget_s;
    let abandon = ctx.setup.abandon.clone();
    let cut_short = {
        let cleanup = std::panic::AssertUnwindSafe(plan.cleanup(ctx, verdict)).catch_unwind();
        tokio::select! {
            done = cleanup => match done {
                Ok(()) => None,
                Err(panic) => Some(format!("the cleanup crashed (a bug in llmdeck): {}", panic_message(panic.as_ref()))),
            },
            () = tokio::time::sleep(budget) => Some(format!(
                "the cleanup did not finish within runs.cleanup_budget_s ({})",
                crate::util::fmt_duration_ms(u64::try_from(budget.as_millis()).unwrap_or(u64::MAX))
            )),
            () = abandon.cancelled() => Some("the cleanup was abandoned at shutdown".to_owned()),
        }
    };
    let why = cut_short?;
    // The step that was cleaning up says so.
    if let Some((index, _)) = ctx.run.current_step() {
        ctx.step_over(index, StepStatus::Failed, why.clone()).await;
    }
    ctx.log(Level::Error, format!("{}: {why}; what it was cleaning up may still be running", ctx.test.name)).await;
    reports::record_abandoned(&ctx.setup.data_dir, &ctx.run, &why).await;
    let kind = EngineEventKind::CleanupAbandoned { runs: vec![ctx.run.id.clone()], reason: why.clone() };
    let _ = ctx.events().send(Event::Engine(EngineEvent { ts: Utc::now(), kind })).await;
    Some(why)
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
