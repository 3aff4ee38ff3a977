//! The model supervisor: one task per model, process groups, restart policy with backoff,
//! readiness and health probes, OOM detection, log capture.

pub mod capture;
mod health;
pub mod instance;
pub mod keeper;
mod ledger;
mod model;
pub mod policy;
mod process;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use color_eyre::eyre::{Result, WrapErr};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::config::Config;
use crate::logs::file::RotatingFile;
use crate::protocol::{Alert, Answer, Command, CommandError, Event, EventSink, Severity};
use crate::util::procfs::ModelProcesses;
use model::{ModelTask, Request, Shared};

pub struct Supervisor {
    handle: SupervisorHandle,
    tasks: JoinSet<()>,
    ledger: Option<ledger::Ledger>,
    /// Released last, after every model is stopped.
    _instance: instance::InstanceLock,
    /// The longest stop timeout: shutdown waits that long (plus a margin) at most.
    max_stop_timeout: Duration,
    /// Tells every model task to SIGKILL its group now (shared with them).
    kill_now: tokio_util::sync::CancellationToken,
}

/// Routes commands to the model tasks.
#[derive(Clone)]
pub struct SupervisorHandle {
    models: BTreeMap<String, mpsc::Sender<Request>>,
}

/// Where the supervisor keeps its files, and what it starts models under.
#[derive(Debug, Clone)]
pub struct SupervisorSetup {
    /// Model logs.
    pub log_dir: std::path::PathBuf,
    /// The instance lock and the PID ledger.
    pub state_dir: std::path::PathBuf,
    /// The llmdeck binary: each model runs under `llmdeck keeper` ([`keeper`]), so nothing it
    /// starts outlives llmdeck, even `kill -9`. `None` (library use without the binary): models
    /// are direct children, ended by the parent-death signal and the next start's sweep.
    pub keeper_exe: Option<std::path::PathBuf>,
}

impl Supervisor {
    pub async fn start(
        config: &Config,
        dirs: &SupervisorSetup,
        events: EventSink,
        processes: ModelProcesses,
    ) -> Result<Self> {
        let instance = match instance::InstanceLock::acquire(&dirs.state_dir) {
            Ok(lock) => lock,
            Err(instance::LockError::AlreadyRunning(held)) => return Err(held.into()),
            Err(instance::LockError::Io(e)) => {
                return Err(e).wrap_err_with(|| format!("locking the state directory {}", dirs.state_dir.display()));
            }
        };
        let ledger = ledger::Ledger::open(&dirs.state_dir)
            .wrap_err_with(|| format!("recording this run in the PID ledger under {}", dirs.state_dir.display()))?;
        let leftovers = {
            let (dir, run_id) = (dirs.state_dir.clone(), ledger.run_id().to_owned());
            // Scans /proc: not on the async runtime.
            tokio::task::spawn_blocking(move || ledger::sweep(&dir, &run_id)).await.unwrap_or_default()
        };
        report_leftovers(&events, leftovers).await;

        let kill_now = tokio_util::sync::CancellationToken::new();
        let spawner = process::Spawner::start().wrap_err("starting the process spawner thread")?;
        let shared = Shared {
            events,
            processes,
            spawner,
            run_id: ledger.run_id().to_owned(),
            keeper_exe: dirs.keeper_exe.clone(),
            kill_now: kill_now.clone(),
        };
        let max_bytes = config.logs.max_file_mb.saturating_mul(1024 * 1024);
        let keep = config.logs.keep_files as usize;
        let mut tasks = JoinSet::new();
        let mut models = BTreeMap::new();
        for cfg in &config.models {
            let file = RotatingFile::open(&dirs.log_dir, &cfg.id, max_bytes, keep)
                .wrap_err_with(|| format!("opening the log file of {} in {}", cfg.id, dirs.log_dir.display()))?;
            let (tx, rx) = mpsc::channel(16);
            tasks.spawn(ModelTask::new(cfg.clone(), shared.clone(), file).run(rx));
            models.insert(cfg.id.clone(), tx);
        }
        let max_stop_timeout = config.models.iter().map(|m| m.stop_timeout_s).max().unwrap_or_default();
        Ok(Self {
            handle: SupervisorHandle { models },
            tasks,
            ledger: Some(ledger),
            _instance: instance,
            max_stop_timeout,
            kill_now,
        })
    }

    pub fn clone_handle(&self) -> SupervisorHandle {
        self.handle.clone()
    }

    /// Stops every model in parallel; returns once all are gone (SIGKILL has been sent to
    /// any that outlived its stop timeout, or to all of them once `kill_now` fires).
    pub async fn shutdown(&mut self, kill_now: tokio_util::sync::CancellationToken) {
        let limit = self.max_stop_timeout + Duration::from_secs(5);
        let models = self.handle.models.clone();
        let stop_all = async move {
            let mut waits = Vec::new();
            for tx in models.values() {
                let (done, wait) = oneshot::channel();
                if tx.send(Request::Shutdown(done)).await.is_ok() {
                    waits.push(wait);
                }
            }
            futures::future::join_all(waits).await;
        };
        let stop_all = tokio::time::timeout(limit, stop_all);
        tokio::pin!(stop_all);
        let mut killed = false;
        let stopped = loop {
            tokio::select! {
                stopped = &mut stop_all => break stopped,
                () = kill_now.cancelled(), if !killed => {
                    killed = true;
                    self.kill_now.cancel();
                }
            }
        };
        if stopped.is_err() {
            tracing::error!("models did not stop within {limit:?}; their process groups are killed on drop");
            self.tasks.abort_all();
        }
        while self.tasks.join_next().await.is_some() {}
        if let Some(ledger) = self.ledger.take() {
            let run_id = ledger.run_id().to_owned();
            let escaped =
                tokio::task::spawn_blocking(move || ledger::end_own_leftovers(&run_id)).await.unwrap_or_default();
            for l in escaped {
                tracing::warn!("ended process {} (`{}`) that had left its model's process group", l.pid, l.command);
            }
            ledger.close();
        }
    }
}

impl SupervisorHandle {
    /// Queues a command for its model at once (in the order called), for the answer to be
    /// awaited elsewhere.
    pub fn enqueue(&self, command: Command) -> Result<Answer, CommandError> {
        let (id, make): (&str, fn(model::Reply) -> Request) = match &command {
            Command::StartModel { model } => (model, Request::Start),
            Command::StopModel { model } => (model, Request::Stop),
            Command::RestartModel { model } => (model, Request::Restart),
            _ => {
                return Err(CommandError::new("tests are not the supervisor's to run"));
            }
        };
        let Some(tx) = self.models.get(id) else {
            return Err(CommandError::new(format!("no model `{id}` in the configuration")));
        };
        let (reply, answer) = oneshot::channel();
        tx.try_send(make(reply)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                CommandError::new(format!("{id} is busy with earlier commands; try again"))
            }
            mpsc::error::TrySendError::Closed(_) => CommandError::new(format!("{id}'s supervisor has stopped")),
        })?;
        Ok(answer)
    }
}

async fn report_leftovers(events: &EventSink, leftovers: Vec<ledger::Leftover>) {
    for l in leftovers {
        let message = format!(
            "ended leftover model process {} (`{}`) from llmdeck run {} that died without stopping it",
            l.pid, l.command, l.run_id
        );
        tracing::warn!("{message}");
        let alert = Alert { ts: Utc::now(), severity: Severity::Warning, source: "supervisor".into(), message };
        let _ = events.send(Event::Alert(alert)).await;
    }
}
