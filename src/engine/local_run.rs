//! A local test run: **wait ready** (a stopped model is started by the run, bounded by the
//! test's `wait_ready_s`), **probe** (`probe::run` against the model, live figures as events),
//! **verdict**; and **cleanup** when the test has a `cleanup_command`.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{broadcast, mpsc};

use super::runs::{MainOutcome, RunCtx};
use crate::config::{Config, ModelConfig, TestConfig};
use crate::logs::Level;
use crate::probe::{self, ApiKey, Outcome, ProbeOptions, ProbeReport};
use crate::protocol::{
    Command, CommandError, Event, ModelChange, ModelState, RunChange, StepStatus, Verdict, VerdictOutcome, local_steps,
};
use crate::supervisor::SupervisorHandle;

const WAIT_READY: usize = 0;
const PROBE: usize = 1;
const VERDICT: usize = 2;
const CLEANUP: usize = 3;

pub(super) struct LocalRun {
    model: ModelConfig,
    opts: ProbeOptions,
    supervisor: SupervisorHandle,
    wait_ready: Duration,
    cleanup_command: Option<String>,
}

impl LocalRun {
    pub(super) fn new(test: &TestConfig, config: &Config, supervisor: SupervisorHandle) -> Result<Self, CommandError> {
        let model = config.models.iter().find(|m| m.id == test.model).cloned().ok_or_else(|| {
            CommandError::new(format!("{} names model `{}`, which is not configured", test.name, test.model))
        })?;
        let mut opts = ProbeOptions::from_config(model.base_url(), None, &test.probe);
        opts.api_key = model.api_key().map(ApiKey::new);
        Ok(Self {
            model,
            opts,
            supervisor,
            wait_ready: test.wait_ready_s,
            cleanup_command: test.cleanup_command.clone(),
        })
    }

    pub(super) fn target(&self) -> String {
        self.opts.base_url.clone()
    }

    pub(super) fn steps(&self) -> Vec<String> {
        let mut steps: Vec<String> =
            [local_steps::WAIT_READY, local_steps::PROBE, local_steps::VERDICT].map(String::from).into();
        if self.cleanup_command.is_some() {
            steps.push(local_steps::CLEANUP.into());
        }
        steps
    }

    pub(super) async fn main(&mut self, ctx: &mut RunCtx) -> MainOutcome {
        if let Err(verdict) = self.wait_until_ready(ctx).await {
            return MainOutcome::ended(verdict);
        }
        let before = gpu_energy(ctx, &self.model.id);
        let report = match probe_step(ctx, PROBE, self.opts.clone()).await {
            Ok(report) => report,
            Err(verdict) => return MainOutcome::ended(verdict),
        };
        let after = gpu_energy(ctx, &self.model.id);
        let energy = crate::protocol::EnergyFigures::between(&before, &after, report.extra.output_tokens);
        let verdict = super::verdict::judge(&report, &ctx.test.pass, ctx.cancel.is_cancelled());
        let (status, detail) = match verdict.outcome {
            VerdictOutcome::Pass => (StepStatus::Done, "pass".to_owned()),
            VerdictOutcome::Fail => (StepStatus::Failed, format!("fail: {}", verdict.reasons.join("; "))),
            VerdictOutcome::Cancelled => (StepStatus::Skipped, "cancelled".to_owned()),
        };
        ctx.step_running(VERDICT, "judging").await;
        ctx.step_over(VERDICT, status, detail).await;
        MainOutcome { verdict, probe: Some(report), energy }
    }

    /// Ready already, or started by the run and ready within `wait_ready_s`.
    async fn wait_until_ready(&mut self, ctx: &mut RunCtx) -> Result<(), Verdict> {
        let id = self.model.id.clone();
        // Subscribed before looking, so no state change slips between the look and the wait.
        let mut sub = ctx.hub().subscribe();
        let mut state = sub.snapshot.state.model(&id).map(|m| m.state).unwrap_or_default();
        if state == ModelState::Ready {
            ctx.step_running(WAIT_READY, format!("{id} is ready")).await;
            ctx.step_over(WAIT_READY, StepStatus::Done, format!("{id} is ready")).await;
            return Ok(());
        }
        if matches!(state, ModelState::Stopped | ModelState::Failed) {
            ctx.step_running(WAIT_READY, format!("starting {id} (it was {})", state.name())).await;
            ctx.log(Level::Info, format!("{id} is {}: the run starts it", state.name())).await;
            let started = match self.supervisor.enqueue(Command::StartModel { model: id.clone() }) {
                Ok(answer) => crate::protocol::answered(answer).await,
                Err(e) => Err(e),
            };
            if let Err(e) = started {
                return Err(self.wait_failed(ctx, format!("could not start {id}: {e}")).await);
            }
        } else {
            ctx.step_running(WAIT_READY, format!("waiting for {id} ({})", state.name())).await;
        }
        let deadline = tokio::time::Instant::now() + self.wait_ready;
        loop {
            let event = tokio::select! {
                () = ctx.cancel.cancelled() => {
                    ctx.step_over(WAIT_READY, StepStatus::Failed, "cancelled").await;
                    return Err(Verdict::cancelled("cancelled while waiting for the model"));
                }
                () = tokio::time::sleep_until(deadline) => {
                    let waited = crate::util::fmt_duration_ms(u64::try_from(self.wait_ready.as_millis()).unwrap_or(u64::MAX));
                    let why = format!("{id} was not ready within wait_ready_s ({waited}); it is {}", state.name());
                    return Err(self.wait_failed(ctx, why).await);
                }
                event = sub.events.recv() => event,
            };
            let change = match event {
                Ok(event) => match &event.event {
                    Event::Model(m) if m.model == id => m.change.clone(),
                    _ => continue,
                },
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    sub = ctx.hub().subscribe();
                    state = sub.snapshot.state.model(&id).map(|m| m.state).unwrap_or_default();
                    if state == ModelState::Ready {
                        break;
                    }
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => {
                    return Err(self.wait_failed(ctx, "the engine stopped".into()).await);
                }
            };
            match change {
                ModelChange::Ready { .. } => break,
                ModelChange::Failed { reason } => {
                    return Err(self.wait_failed(ctx, format!("{id} failed: {reason}")).await);
                }
                ModelChange::Stopped { reason } if reason.as_deref() != Some("restarting") => {
                    return Err(self.wait_failed(ctx, format!("{id} was stopped while the run waited")).await);
                }
                other => {
                    state = state_of(&other);
                    ctx.step_running(WAIT_READY, format!("waiting for {id} ({})", state.name())).await;
                }
            }
        }
        ctx.step_over(WAIT_READY, StepStatus::Done, format!("{id} is ready")).await;
        Ok(())
    }

    async fn wait_failed(&self, ctx: &mut RunCtx, why: String) -> Verdict {
        ctx.step_over(WAIT_READY, StepStatus::Failed, why.clone()).await;
        Verdict::fail(why)
    }

    /// The test's `cleanup_command`, if any: `sh -c` in its own process group, killed whole if
    /// the cleanup is cut short; its output goes to the test's log.
    pub(super) async fn cleanup(&mut self, ctx: &mut RunCtx, verdict: &Verdict) {
        let Some(command) = self.cleanup_command.clone() else { return };
        ctx.step_running(CLEANUP, format!("sh -c {:?}", crate::util::redact_command_line(&command))).await;
        ctx.log(Level::Info, format!("cleanup: running {command:?}")).await;
        let (status, detail) = match run_cleanup_command(ctx, &command, verdict).await {
            Ok(status) if status.success() => (StepStatus::Done, "exit 0".to_owned()),
            Ok(status) => (StepStatus::Failed, format!("cleanup command ended with {status}")),
            Err(e) => (StepStatus::Failed, format!("cannot run the cleanup command: {e}")),
        };
        ctx.step_over(CLEANUP, status, detail).await;
    }
}

/// The model state a change leads to.
fn state_of(change: &ModelChange) -> ModelState {
    match change {
        ModelChange::Starting { .. } => ModelState::Starting,
        ModelChange::Ready { .. } => ModelState::Ready,
        ModelChange::Unhealthy { .. } => ModelState::Unhealthy,
        ModelChange::Crashed { .. } => ModelState::Crashed,
        ModelChange::Backoff { .. } => ModelState::Backoff,
        ModelChange::Failed { .. } => ModelState::Failed,
        ModelChange::Stopping { .. } => ModelState::Stopping,
        ModelChange::Stopped { .. } => ModelState::Stopped,
    }
}

/// Pass when every request succeeded; otherwise the failures by class.
/// Kills the cleanup command's whole process group unless it was waited for: a cleanup cut
/// short must not leave its children running.
struct GroupGuard {
    pgid: Option<i32>,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid.filter(|p| *p > 1) {
            // The leader is not reaped until the child is dropped after this: the id is ours.
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

async fn run_cleanup_command(
    ctx: &RunCtx,
    command: &str,
    verdict: &Verdict,
) -> std::io::Result<std::process::ExitStatus> {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .env("LLMDECK_TEST", &ctx.test.name)
        .env("LLMDECK_TEST_RUN", &ctx.run.id)
        .env("LLMDECK_VERDICT", verdict.outcome.name())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let mut guard = GroupGuard { pgid: child.id().and_then(|p| i32::try_from(p).ok()) };
    let lines = {
        let (tx, rx) = mpsc::channel::<String>(64);
        for out in [
            child.stdout.take().map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            child.stderr.take().map(|e| Box::new(e) as _),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(out).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    if tx.send(line).await.is_err() {
                        break;
                    }
                }
            });
        }
        rx
    };
    let mut lines = lines;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status?,
            Some(line) = lines.recv() => ctx.log(Level::Info, format!("cleanup: {line}")).await,
        }
    };
    // Reaped: the group id may name someone else from now on.
    guard.pgid = None;
    while let Ok(line) = lines.try_recv() {
        ctx.log(Level::Info, format!("cleanup: {line}")).await;
    }
    Ok(status)
}

/// The energy counters of the GPUs `model`'s processes hold memory on (index, joules).
fn gpu_energy(ctx: &RunCtx, model: &str) -> Vec<(u32, f64)> {
    ctx.hub().with_state(|s| {
        s.gpus
            .gpus
            .iter()
            .filter(|g| g.processes.iter().any(|p| p.model.as_deref() == Some(model)))
            .filter_map(|g| g.energy_j.map(|j| (g.index, j)))
            .collect()
    })
}

/// The probe as a step of a run: live figures as events, the outcome in the step's detail.
pub(super) async fn probe_step(ctx: &mut RunCtx, index: usize, opts: ProbeOptions) -> Result<ProbeReport, Verdict> {
    let amount = match opts.stop {
        probe::Stop::Requests(n) => format!("{n} requests"),
        probe::Stop::Duration(d) => format!("requests for {}", crate::util::fmt_duration_ms(d.as_millis() as u64)),
    };
    let shape = format!(
        "{amount}, concurrency {}, {}",
        opts.concurrency,
        if opts.stream { "streaming" } else { "not streaming" }
    );
    ctx.step_running(index, shape.clone()).await;
    ctx.log(Level::Info, format!("probing {} ({shape})", opts.base_url)).await;
    let (progress_tx, mut progress) = mpsc::channel(8);
    let run = probe::run(opts, ctx.cancel.clone(), Some(progress_tx));
    tokio::pin!(run);
    let result = loop {
        tokio::select! {
            result = &mut run => break result,
            Some(p) = progress.recv() => ctx.change(RunChange::Probe { progress: p }).await,
        }
    };
    while let Ok(p) = progress.try_recv() {
        ctx.change(RunChange::Probe { progress: p }).await;
    }
    match result {
        Ok(report) => {
            let ok = report.count(Outcome::Success);
            let mut detail = format!("{ok}/{} ok", report.requests);
            if let Some(p50) = report.latency_ms.p50 {
                detail.push_str(&format!(" · p50 {}", crate::util::fmt_ms(p50)));
            }
            let status = if ctx.cancel.is_cancelled() { StepStatus::Failed } else { StepStatus::Done };
            if status == StepStatus::Failed {
                detail = format!("cancelled after {detail}");
            }
            ctx.step_over(index, status, detail).await;
            Ok(report)
        }
        Err(probe::ProbeError::Cancelled) => {
            ctx.step_over(index, StepStatus::Failed, "cancelled").await;
            Err(Verdict::cancelled("cancelled before the first request"))
        }
        Err(e) => {
            ctx.step_over(index, StepStatus::Failed, e.to_string()).await;
            Err(Verdict::fail(e.to_string()))
        }
    }
}
