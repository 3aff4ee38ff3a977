//! One supervising task per model. Every start, stop, restart, exit and health result goes
//! through its loop, so a restart can never be scheduled twice.

use std::io;
use std::process::ExitStatus;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use nix::sys::signal::Signal;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until};

use super::capture::{CaptureTarget, spawn_capture};
use super::health::{CheckOutcome, HealthChecker};
use super::policy::{Decision, ExitCause, decide};
use super::process::{LeaderExit, SpawnSpec, Spawned, Spawner, signal_group};
use crate::config::{ModelConfig, RestartPolicy};
use crate::logs::file::RotatingFile;
use crate::logs::oom::OomWatch;
use crate::logs::{Level, LogBatch, LogLine, LogSource, Stream};
use crate::protocol::{Ack, CommandError, Event, EventSink, HealthMode, ModelChange, ModelEvent};
use crate::util::procfs::ModelProcesses;

/// How often readiness is polled while a model starts.
const STARTUP_POLL: Duration = Duration::from_millis(250);
/// How long to wait for the last output lines after the process exits.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

pub type Reply = oneshot::Sender<Result<Ack, CommandError>>;

pub enum Request {
    Start(Reply),
    Stop(Reply),
    Restart(Reply),
    /// Stop for good (llmdeck is exiting); answered once the process group is gone.
    Shutdown(oneshot::Sender<()>),
}

/// What the shared parts of the supervisor give every model task.
#[derive(Clone)]
pub struct Shared {
    pub events: EventSink,
    pub processes: ModelProcesses,
    pub spawner: Spawner,
    pub run_id: String,
    /// Models run under `llmdeck keeper` when set (see [`super::keeper`]).
    pub keeper_exe: Option<std::path::PathBuf>,
    /// Fired during shutdown when the operator stops waiting: SIGKILL now.
    pub kill_now: tokio_util::sync::CancellationToken,
}

pub struct ModelTask {
    cfg: ModelConfig,
    shared: Shared,
    capture: CaptureTarget,
    /// Restarts made in a row (reset by `reset_after_s` of continuous readiness).
    restarts_in_row: u32,
    phase: Phase,
    /// Set once a shutdown was asked for: the loop ends when the process is gone.
    shutdown: Option<oneshot::Sender<()>>,
}

enum Phase {
    Idle,
    Running(Box<Run>),
    Backoff { until: Instant, attempt: u32 },
}

/// What to do once a stopping process has exited.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AfterExit {
    Policy,
    StayStopped,
    StartAgain,
}

struct Run {
    pgid: u32,
    spawned_at: Instant,
    exit: oneshot::Receiver<LeaderExit>,
    drained: Vec<oneshot::Receiver<()>>,
    probes: mpsc::Receiver<CheckOutcome>,
    prober: tokio::task::JoinHandle<()>,
    ready_since: Option<Instant>,
    ever_ready: bool,
    /// The last answer other than "not listening" while starting: the likely reason it never
    /// gets ready (a 401 without the key, a 500 from a broken load).
    startup_problem: Option<String>,
    health_failures: u32,
    /// Why we are killing it, if we are.
    killing: Option<ExitCause>,
    after_exit: AfterExit,
    /// When SIGKILL follows the SIGTERM.
    kill_deadline: Option<Instant>,
    /// SIGKILL was sent on the operator's word ([`Shared::kill_now`]).
    killed_now: bool,
    startup_deadline: Instant,
    exited: bool,
}

impl Drop for Run {
    fn drop(&mut self) {
        self.prober.abort();
        if !self.exited {
            // Every exit path, including a panic in this task, takes the group down.
            let _ = signal_group(self.pgid, Signal::SIGKILL);
        }
    }
}

enum Wake {
    Request(Option<Request>),
    Exited(LeaderExit),
    Probe(CheckOutcome),
    StartupTimeout,
    KillDeadline,
    KillNow,
    BackoffOver,
}

impl ModelTask {
    pub fn new(cfg: ModelConfig, shared: Shared, log_file: RotatingFile) -> Self {
        let capture = CaptureTarget {
            source: LogSource::Model(cfg.id.clone()),
            events: shared.events.downgrade(),
            file: Arc::new(Mutex::new(log_file)),
            oom: Arc::new(Mutex::new(OomWatch::default())),
            dropped: Arc::new(AtomicU64::new(0)),
        };
        Self { cfg, shared, capture, restarts_in_row: 0, phase: Phase::Idle, shutdown: None }
    }

    pub async fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        if self.cfg.autostart {
            self.spawn(0).await;
        }
        loop {
            if self.shutdown.is_some() && !matches!(self.phase, Phase::Running(_)) {
                break;
            }
            let wake = self.next_wake(&mut requests).await;
            match wake {
                Wake::Request(Some(req)) => self.on_request(req).await,
                Wake::Request(None) => self.on_request_channel_closed().await,
                Wake::Exited(exit) => self.on_exit(exit).await,
                Wake::Probe(outcome) => self.on_probe(outcome).await,
                Wake::StartupTimeout => self.on_startup_timeout().await,
                Wake::KillDeadline => self.on_kill_deadline(),
                Wake::KillNow => {
                    if let Phase::Running(run) = &mut self.phase {
                        run.killed_now = true;
                        let _ = signal_group(run.pgid, Signal::SIGKILL);
                    }
                }
                Wake::BackoffOver => {
                    if let Phase::Backoff { attempt, .. } = self.phase {
                        self.spawn(attempt).await;
                    }
                }
            }
        }
        if let Some(done) = self.shutdown.take() {
            let _ = done.send(());
        }
    }

    async fn next_wake(&mut self, requests: &mut mpsc::Receiver<Request>) -> Wake {
        match &mut self.phase {
            Phase::Idle => Wake::Request(requests.recv().await),
            Phase::Backoff { until, .. } => {
                let until = *until;
                tokio::select! {
                    req = requests.recv() => Wake::Request(req),
                    () = sleep_until(until) => Wake::BackoffOver,
                }
            }
            Phase::Running(run) => {
                let startup = (!run.ever_ready && run.killing.is_none()).then_some(run.startup_deadline);
                let kill = run.kill_deadline;
                tokio::select! {
                    req = requests.recv(), if self.shutdown.is_none() => Wake::Request(req),
                    exit = &mut run.exit => Wake::Exited(exit.unwrap_or_else(|_| LeaderExit::vanished())),
                    Some(outcome) = run.probes.recv() => Wake::Probe(outcome),
                    () = sleep_opt(startup) => Wake::StartupTimeout,
                    () = sleep_opt(kill) => Wake::KillDeadline,
                    () = self.shared.kill_now.cancelled(), if !run.killed_now => Wake::KillNow,
                }
            }
        }
    }

    async fn on_request(&mut self, req: Request) {
        match req {
            Request::Start(reply) => {
                let answer = match self.phase {
                    Phase::Running(ref mut run) if run.killing == Some(ExitCause::OperatorStop) => {
                        // Stopping: start it again once it is gone.
                        run.after_exit = AfterExit::StartAgain;
                        Ok(ack(format!("{} will start again once stopped", self.cfg.id)))
                    }
                    Phase::Running(_) => Err(CommandError::new(format!("{} is already running", self.cfg.id))),
                    Phase::Idle | Phase::Backoff { .. } => {
                        self.restarts_in_row = 0;
                        self.spawn(0).await;
                        Ok(ack(format!("starting {}", self.cfg.id)))
                    }
                };
                let _ = reply.send(answer);
            }
            Request::Stop(reply) => {
                let answer = match &mut self.phase {
                    Phase::Running(_) => {
                        self.begin_stop("stopped by operator", AfterExit::StayStopped).await;
                        Ok(ack(format!("stopping {}", self.cfg.id)))
                    }
                    Phase::Backoff { .. } => {
                        self.phase = Phase::Idle;
                        self.emit(ModelChange::Stopped { reason: Some("stopped by operator during backoff".into()) })
                            .await;
                        Ok(ack(format!("{} will not be restarted", self.cfg.id)))
                    }
                    Phase::Idle => Err(CommandError::new(format!("{} is not running", self.cfg.id))),
                };
                let _ = reply.send(answer);
            }
            Request::Restart(reply) => {
                self.restarts_in_row = 0;
                match self.phase {
                    Phase::Running(_) => self.begin_stop("restart requested by operator", AfterExit::StartAgain).await,
                    Phase::Idle | Phase::Backoff { .. } => self.spawn(0).await,
                }
                let _ = reply.send(Ok(ack(format!("restarting {}", self.cfg.id))));
            }
            Request::Shutdown(done) => {
                self.shutdown = Some(done);
                match self.phase {
                    Phase::Running(_) => self.begin_stop("llmdeck is shutting down", AfterExit::StayStopped).await,
                    Phase::Backoff { .. } => {
                        self.phase = Phase::Idle;
                        self.emit(ModelChange::Stopped { reason: Some("llmdeck is shutting down".into()) }).await;
                    }
                    Phase::Idle => {}
                }
            }
        }
    }

    /// The supervisor is gone without asking for a shutdown: stop anyway.
    async fn on_request_channel_closed(&mut self) {
        let (done, _) = oneshot::channel();
        self.on_request(Request::Shutdown(done)).await;
    }

    async fn spawn(&mut self, attempt: u32) {
        let spec = SpawnSpec {
            program: self.cfg.command.clone(),
            args: self.cfg.args.clone(),
            env: self.cfg.env.clone(),
            cwd: self.cfg.cwd.clone(),
            run_id: self.shared.run_id.clone(),
            model_id: self.cfg.id.clone(),
            keeper: self.shared.keeper_exe.clone().map(|exe| super::process::KeeperSpec {
                exe,
                stop_timeout: self.cfg.stop_timeout_s,
                stop_command: self.cfg.stop_command.clone(),
            }),
        };
        let spawned = match self.shared.spawner.spawn(spec).await {
            Ok(s) => s,
            Err(e) => {
                self.phase = Phase::Idle;
                let reason = spawn_failure(&self.cfg.command, self.cfg.cwd.as_deref(), &e);
                self.note(Level::Error, &reason);
                if attempt == 0 {
                    // A first start that fails is a configuration problem: say so, don't retry.
                    self.emit(ModelChange::Failed { reason }).await;
                } else {
                    // A restart that fails (EAGAIN, ENOMEM under pressure) is one more failed attempt.
                    self.apply_policy(ExitCause::SpawnFailed, reason).await;
                }
                return;
            }
        };
        self.shared.processes.set(&self.cfg.id, spawned.pgid);
        *self.capture.oom.lock().unwrap_or_else(|p| p.into_inner()) = OomWatch::default();
        let pgid = spawned.pgid;
        let run = self.start_run(spawned);
        self.phase = Phase::Running(Box::new(run));
        self.emit(ModelChange::Starting { pid: pgid, attempt }).await;
    }

    fn start_run(&self, spawned: Spawned) -> Run {
        let Spawned { pgid, stdout, stderr, exit } = spawned;
        let mut drained = Vec::new();
        for (reader, stream) in
            [(Box::new(stdout) as Box<dyn io::Read + Send>, Stream::Stdout), (Box::new(stderr), Stream::Stderr)]
        {
            match spawn_capture(reader, stream, self.capture.clone()) {
                Ok(done) => drained.push(done),
                Err(e) => tracing::error!("cannot start log capture for {}: {e}", self.cfg.id),
            }
        }
        let (probe_tx, probes) = mpsc::channel(8);
        let prober = tokio::spawn(probe_loop(self.cfg.clone(), probe_tx));
        let now = Instant::now();
        Run {
            pgid,
            spawned_at: now,
            exit,
            drained,
            probes,
            prober,
            ready_since: None,
            ever_ready: false,
            startup_problem: None,
            health_failures: 0,
            killing: None,
            after_exit: AfterExit::Policy,
            kill_deadline: None,
            killed_now: false,
            startup_deadline: now + self.cfg.health.startup_timeout_s,
            exited: false,
        }
    }

    /// SIGTERM to the group now, SIGKILL after `stop_timeout_s`.
    async fn begin_stop(&mut self, reason: &str, after: AfterExit) {
        let Phase::Running(run) = &mut self.phase else { return };
        run.after_exit = after;
        if run.killing == Some(ExitCause::OperatorStop) {
            return; // already stopping; only what happens afterwards changed
        }
        run.killing = Some(ExitCause::OperatorStop);
        run.kill_deadline = Some(Instant::now() + self.cfg.stop_timeout_s);
        let pgid = run.pgid;
        // Before SIGTERM, and waited for: `docker stop` ends the container, then its client.
        if let Some(stop) = self.stop_command() {
            stop.await;
        }
        if let Err(e) = signal_group(pgid, Signal::SIGTERM) {
            tracing::warn!("SIGTERM to {} (group {pgid}): {e}", self.cfg.id);
        }
        self.emit(ModelChange::Stopping { reason: reason.into() }).await;
    }

    /// A failure-driven kill (health, start-up timeout): the policy decides what follows.
    fn kill_for(&mut self, cause: ExitCause) {
        let Phase::Running(run) = &mut self.phase else { return };
        if run.killing.is_some() {
            return;
        }
        run.killing = Some(cause);
        run.kill_deadline = Some(Instant::now() + self.cfg.stop_timeout_s);
        let pgid = run.pgid;
        if let Some(stop) = self.stop_command() {
            tokio::spawn(stop);
        }
        let _ = signal_group(pgid, Signal::SIGTERM);
    }

    /// The model's `stop_command`, if any: `sh -c` in its own process group, given
    /// `stop_timeout_s`, then killed whole; its failure is noted in llmdeck's log.
    fn stop_command(&self) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        let command = self.cfg.stop_command.clone()?;
        let (id, limit) = (self.cfg.id.clone(), self.cfg.stop_timeout_s);
        Some(async move {
            let child = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(&command)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .process_group(0)
                .kill_on_drop(true)
                .spawn();
            let mut child = match child {
                Ok(child) => child,
                Err(e) => return tracing::warn!("the stop_command of {id}: {e}"),
            };
            let pid = child.id();
            match tokio::time::timeout(limit, child.wait()).await {
                Ok(Ok(status)) if status.success() => {}
                Ok(Ok(status)) => tracing::warn!("the stop_command of {id} ended with {status}"),
                Ok(Err(e)) => tracing::warn!("waiting for the stop_command of {id}: {e}"),
                Err(_) => {
                    tracing::warn!("the stop_command of {id} did not finish within {limit:?}: killed");
                    if let Some(pid) = pid {
                        let _ = signal_group(pid, Signal::SIGKILL);
                    }
                }
            }
        })
    }

    fn on_kill_deadline(&mut self) {
        if let Phase::Running(run) = &mut self.phase {
            run.kill_deadline = None;
            tracing::warn!("{} did not stop within {:?}: SIGKILL", self.cfg.id, self.cfg.stop_timeout_s);
            let _ = signal_group(run.pgid, Signal::SIGKILL);
        }
    }

    async fn on_startup_timeout(&mut self) {
        let secs = self.cfg.health.startup_timeout_s.as_secs_f64();
        self.note(Level::Error, &format!("not ready within startup_timeout_s ({secs}s): stopping it"));
        self.kill_for(ExitCause::StartupTimeout);
    }

    async fn on_probe(&mut self, outcome: CheckOutcome) {
        let Phase::Running(run) = &mut self.phase else { return };
        if run.killing.is_some() {
            return;
        }
        match outcome {
            CheckOutcome::Healthy(mode) => {
                let was_ready = run.ready_since.is_some();
                run.health_failures = 0;
                // Continuous readiness for reset_after_s forgives earlier restarts, even if this
                // run later ends by a health kill (which clears ready_since first).
                if run.ready_since.is_some_and(|t| t.elapsed() >= self.cfg.restart.reset_after_s) {
                    self.restarts_in_row = 0;
                }
                if !was_ready {
                    run.ready_since = Some(Instant::now());
                    run.ever_ready = true;
                    let startup_ms = run.spawned_at.elapsed().as_millis() as u64;
                    if mode == HealthMode::ModelsOnly {
                        self.note(
                            Level::Info,
                            &format!(
                                "{} answers 404: no health endpoint, readiness rests on /v1/models",
                                self.cfg.health.path
                            ),
                        );
                    }
                    self.emit(ModelChange::Ready { health: mode, startup_ms }).await;
                }
            }
            CheckOutcome::NotListening if !run.ever_ready => {} // still loading
            CheckOutcome::NotListening | CheckOutcome::Unhealthy(_) => {
                let answered = matches!(outcome, CheckOutcome::Unhealthy(_));
                let reason = match outcome {
                    CheckOutcome::Unhealthy(r) => r,
                    _ => "connection refused".into(),
                };
                if !run.ever_ready {
                    // Start-up is judged by startup_timeout_s, not by health; but an answer
                    // that is not "still loading" is worth showing once, when it changes.
                    if answered && run.startup_problem.as_deref() != Some(&reason) {
                        run.startup_problem = Some(reason.clone());
                        self.note(Level::Warn, &format!("not ready yet: {reason}"));
                    }
                    return;
                }
                run.health_failures += 1;
                run.ready_since = None;
                let failures = run.health_failures;
                let threshold = self.cfg.health.failure_threshold;
                if failures == 1 || failures == threshold {
                    self.emit(ModelChange::Unhealthy { reason: reason.clone(), consecutive_failures: failures }).await;
                }
                if failures >= threshold && self.cfg.restart.policy != RestartPolicy::No {
                    self.note(Level::Warn, &format!("{failures} health checks failed in a row ({reason}): restarting"));
                    self.kill_for(ExitCause::HealthFailure);
                }
            }
        }
    }

    async fn on_exit(&mut self, LeaderExit { status, hold }: LeaderExit) {
        let Phase::Running(mut run) = std::mem::replace(&mut self.phase, Phase::Idle) else { return };
        run.exited = true;
        run.prober.abort();
        self.shared.processes.clear(&self.cfg.id);
        // Stragglers that left the leader behind still hold the GPU: take the group down. The
        // leader is reaped only after that, so the group id cannot name a stranger yet.
        let _ = signal_group(run.pgid, Signal::SIGKILL);
        drop(hold);
        if self.shutdown.is_none() {
            // At shutdown one sweep for the whole run follows (`end_own_leftovers`).
            self.end_escapees().await;
        }
        // Both streams at once: the wait is for their last lines, not one after the other.
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, futures::future::join_all(run.drained.drain(..))).await;
        let oom_line = self.capture.oom.lock().unwrap_or_else(|p| p.into_inner()).explaining_line().map(str::to_owned);
        let (cause, exit_code, signal) = classify(&status, run.killing);

        if cause == ExitCause::OperatorStop {
            match run.after_exit {
                AfterExit::StartAgain => {
                    self.emit(ModelChange::Stopped { reason: Some("restarting".into()) }).await;
                    self.spawn(0).await;
                }
                AfterExit::StayStopped | AfterExit::Policy => {
                    let reason = self.stop_reason(run.killing);
                    self.emit(ModelChange::Stopped { reason: Some(reason) }).await;
                }
            }
            return;
        }

        let oom = oom_line.is_some();
        let mut reason = crash_reason(cause, &status, oom_line.as_deref(), &self.cfg);
        if let (ExitCause::StartupTimeout, Some(problem)) = (cause, &run.startup_problem) {
            reason.push_str(&format!(" (last answer: {problem})"));
        }
        self.note(Level::Error, &reason);
        self.emit(ModelChange::Crashed { exit_code, signal, oom, oom_line, reason: reason.clone() }).await;

        if run.ready_since.is_some_and(|t| t.elapsed() >= self.cfg.restart.reset_after_s) {
            self.restarts_in_row = 0;
        }
        self.apply_policy(cause, reason).await;
    }

    /// After a failure (a crash, a failed health or start-up, a failed restart): back off and
    /// restart, or settle in `stopped` / `failed`, as the policy says.
    async fn apply_policy(&mut self, cause: ExitCause, reason: String) {
        if self.shutdown.is_some() {
            self.emit(ModelChange::Stopped { reason: Some("llmdeck is shutting down".into()) }).await;
            return;
        }
        match decide(&self.cfg.restart, cause, self.restarts_in_row) {
            Decision::Restart { attempt, delay } => {
                self.restarts_in_row = attempt;
                let delay_ms = delay.as_millis() as u64;
                // The reason was noted just before; the log needs only what happens next.
                let max = self.cfg.restart.max_restarts;
                self.note(
                    Level::Warn,
                    &format!("restart {attempt} of {max} in {}", crate::util::fmt_duration_ms(delay_ms)),
                );
                self.phase = Phase::Backoff { until: Instant::now() + delay, attempt };
                self.emit(ModelChange::Backoff { attempt, delay_ms, reason }).await;
            }
            Decision::NoRestart if cause == ExitCause::Exited(0) => {
                let reason = format!(
                    "exited with code 0; restart policy {} does not restart it",
                    self.cfg.restart.policy.name()
                );
                self.emit(ModelChange::Stopped { reason: Some(reason) }).await;
            }
            Decision::NoRestart => {
                let reason = format!("{reason}; restart policy {}", self.cfg.restart.policy.name());
                self.emit(ModelChange::Failed { reason }).await;
            }
            Decision::GiveUp => {
                let reason = format!("gave up after {} restarts in a row; last: {reason}", self.restarts_in_row);
                self.note(Level::Error, &reason);
                self.emit(ModelChange::Failed { reason }).await;
            }
        }
    }

    fn stop_reason(&self, killing: Option<ExitCause>) -> String {
        match (killing, self.shutdown.is_some()) {
            (_, true) => "llmdeck is shutting down".into(),
            _ => "stopped by operator".into(),
        }
    }

    /// Helpers that left the process group (setsid) survive its SIGKILL: end them too, or the
    /// restart finds its port and GPU memory taken.
    async fn end_escapees(&self) {
        let (run_id, model_id) = (self.shared.run_id.clone(), self.cfg.id.clone());
        let scan = tokio::task::spawn_blocking(move || super::ledger::end_model_escapees(&run_id, &model_id));
        for escaped in scan.await.unwrap_or_default() {
            self.note(
                Level::Warn,
                &format!("ended pid {} (`{}`), which had left the process group", escaped.pid, escaped.command),
            );
        }
    }

    async fn emit(&self, change: ModelChange) {
        let event = Event::Model(ModelEvent { ts: Utc::now(), model: self.cfg.id.clone(), change });
        let _ = self.shared.events.send(event).await;
    }

    /// A line from llmdeck about this model, into its log and the Logs pane.
    fn note(&self, level: Level, text: &str) {
        let line = LogLine::internal(level, format!("llmdeck: {text}"));
        {
            let mut file = self.capture.file.lock().unwrap_or_else(|p| p.into_inner());
            let _ = file.write_line(line.text.as_bytes()).and_then(|()| file.flush());
        }
        // Counted with the captured lines when the queue is full: losses are shown, never silent.
        let carried = self.capture.dropped.swap(0, std::sync::atomic::Ordering::Relaxed);
        let batch = LogBatch { dropped_before: carried, ..LogBatch::single(self.capture.source.clone(), line) };
        if self.shared.events.try_send(Event::Log(batch)).is_err() {
            self.capture.dropped.fetch_add(carried + 1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Why a model could not be started, in words that point at the fix: exec's ENOENT can mean
/// a missing program or a missing working directory.
fn spawn_failure(command: &str, cwd: Option<&std::path::Path>, e: &io::Error) -> String {
    if e.kind() == io::ErrorKind::NotFound {
        if let Some(dir) = cwd.filter(|d| !d.is_dir()) {
            return format!("could not start `{command}`: its working directory {} does not exist", dir.display());
        }
        if !command.contains('/') {
            return format!("could not start `{command}`: not found on PATH (give the full path, or fix PATH)");
        }
        return format!("could not start `{command}`: no such file");
    }
    if e.kind() == io::ErrorKind::PermissionDenied {
        return format!("could not start `{command}`: permission denied (is it executable?)");
    }
    format!("could not start `{command}`: {e}")
}

fn ack(message: String) -> Ack {
    Ack { message }
}

async fn sleep_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The cause of an exit, and its code or signal.
fn classify(status: &io::Result<ExitStatus>, killing: Option<ExitCause>) -> (ExitCause, Option<i32>, Option<i32>) {
    use std::os::unix::process::ExitStatusExt;
    let (code, signal) = match status {
        Ok(s) => (s.code(), s.signal()),
        Err(_) => (None, None),
    };
    let cause = match (killing, code, signal) {
        (Some(cause), _, _) => cause,
        (None, Some(c), _) => ExitCause::Exited(c),
        (None, None, Some(s)) => ExitCause::Signalled(s),
        (None, None, None) => ExitCause::Signalled(0),
    };
    (cause, code, signal)
}

fn crash_reason(
    cause: ExitCause,
    status: &io::Result<ExitStatus>,
    oom_line: Option<&str>,
    cfg: &ModelConfig,
) -> String {
    let base = match cause {
        ExitCause::Exited(code) => format!("exited with code {code}"),
        ExitCause::Signalled(sig) => match Signal::try_from(sig) {
            Ok(s) => format!("killed by {s}"),
            Err(_) => format!("killed by signal {sig}"),
        },
        ExitCause::HealthFailure => format!("stopped after {} failed health checks", cfg.health.failure_threshold),
        ExitCause::StartupTimeout => format!("not ready within {}s", cfg.health.startup_timeout_s.as_secs_f64()),
        ExitCause::OperatorStop => "stopped by operator".into(),
        ExitCause::SpawnFailed => "could not be started".into(),
    };
    let base = match status {
        Err(e) => format!("{base} (waiting for it failed: {e})"),
        Ok(_) => base,
    };
    match oom_line {
        Some(line) => format!("CUDA out of memory ({base}): {}", crate::logs::level::without_header(line)),
        None => base,
    }
}

/// Polls readiness every [`STARTUP_POLL`] until ready, then health every `interval_s`.
async fn probe_loop(cfg: ModelConfig, out: mpsc::Sender<CheckOutcome>) {
    let api_key = cfg.api_key();
    let mut checker = match HealthChecker::new(&cfg.base_url(), &cfg.health.path, api_key, cfg.health.timeout_s) {
        Ok(c) => c,
        Err(e) => {
            let _ = out.send(CheckOutcome::Unhealthy(format!("cannot build the HTTP client: {e}"))).await;
            return;
        }
    };
    let mut ready = false;
    loop {
        let outcome = checker.check().await;
        if matches!(outcome, CheckOutcome::Healthy(_)) {
            ready = true;
        }
        if out.send(outcome).await.is_err() {
            return;
        }
        tokio::time::sleep(if ready { cfg.health.interval_s } else { STARTUP_POLL }).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn real_error(program: &str, cwd: Option<&str>) -> io::Error {
        let mut cmd = std::process::Command::new(program);
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        cmd.spawn().expect_err("the spawn fails")
    }

    #[test]
    fn spawn_failures_name_what_is_missing() {
        let e = real_error("sleep", Some("/nonexistent-llmdeck-dir"));
        let cwd = std::path::Path::new("/nonexistent-llmdeck-dir");
        assert_eq!(
            spawn_failure("sleep", Some(cwd), &e),
            "could not start `sleep`: its working directory /nonexistent-llmdeck-dir does not exist"
        );
        let e = real_error("no-such-llmdeck-server", None);
        assert!(spawn_failure("no-such-llmdeck-server", None, &e).contains("not found on PATH"));
        let e = real_error("/nonexistent/vllm", None);
        assert_eq!(spawn_failure("/nonexistent/vllm", None, &e), "could not start `/nonexistent/vllm`: no such file");
        let dir = tempfile::tempdir().expect("temp dir");
        let not_executable = dir.path().join("server");
        std::fs::write(&not_executable, "#!/bin/sh\n").expect("write");
        let path = not_executable.to_str().expect("utf-8 path");
        let e = real_error(path, None);
        assert!(spawn_failure(path, None, &e).contains("permission denied"), "{e}");
    }
}
