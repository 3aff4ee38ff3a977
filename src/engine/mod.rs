//! The engine: wires the parts together and owns every background task. It takes
//! [`Command`]s, routes them to the supervisor or the run manager, and publishes the parts'
//! [`Event`]s through the [`Hub`], which numbers them, folds them into `State` and fans them
//! out. Viewers reach it through an [`EngineHandle`], its [`Link`].
//!
//! Shutdown is ordered: runs are cancelled and their cleanups run, each within
//! `runs.cleanup_budget_s` and under its own cancellation (destroying a rented GPU must not be
//! cut short); only then are the models stopped and the tasks ended.

mod deploy_run;
mod local_run;
mod rentals;
mod reports;
mod runs;
mod verdict;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use color_eyre::eyre::{Result, WrapErr};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, GpuBackend};
use crate::protocol::{
    Ack, Answer, Command, CommandError, EngineEvent, EngineEventKind, Event, EventSink, Hub, Link, LinkStatus,
    Snapshot, State, Subscription,
};
use crate::supervisor::{Supervisor, SupervisorSetup};
use crate::util::procfs::ModelProcesses;

/// How long shutdown waits for the engine's own tasks after the models are gone.
const SHUTDOWN_JOIN: Duration = Duration::from_secs(5);

/// How many events may wait for the hub before producers wait (logs are dropped instead).
pub const EVENT_QUEUE: usize = 1024;

/// Everything the engine needs to start.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub config: Config,
    pub config_path: Option<PathBuf>,
    /// Model logs go here.
    pub log_dir: PathBuf,
    /// The PID ledger and other run-time state go here.
    pub state_dir: PathBuf,
    /// Run reports go here (`results/`).
    pub data_dir: PathBuf,
    /// Overrides `gpu.backend` (the demo forces the simulated backend).
    pub gpu_backend: Option<GpuBackend>,
    /// The llmdeck binary, to run each model under a keeper that stops it if llmdeck dies,
    /// even by `kill -9` (`None`: models are direct children; see `supervisor::keeper`).
    pub keeper_exe: Option<PathBuf>,
}

struct CommandRequest {
    command: Command,
    reply: oneshot::Sender<Result<Ack, CommandError>>,
}

/// Shutdown's controls, shared by every handle.
struct Control {
    /// Begins shutdown: runs are cancelled and clean up.
    shutdown: CancellationToken,
    /// Stops waiting for the cleanups still running.
    abandon: CancellationToken,
    /// Stops waiting for models to stop: SIGKILL to every group now.
    kill_models: CancellationToken,
    reason: Mutex<String>,
    status: watch::Sender<LinkStatus>,
}

impl Control {
    fn reason(&self) -> String {
        self.reason.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A cheap, cloneable way to talk to a running engine: the in-process [`Link`].
#[derive(Clone)]
pub struct EngineHandle {
    commands: mpsc::Sender<CommandRequest>,
    hub: Arc<Hub>,
    control: Arc<Control>,
    describe: Arc<str>,
}

impl EngineHandle {
    /// During shutdown: stop waiting for the models' stop timeouts, SIGKILL every group now
    /// (an operator's third Ctrl-C).
    pub fn kill_models_now(&self) {
        self.control.kill_models.cancel();
    }

    /// Sends a command and waits for its ack or error.
    pub async fn send(&self, command: Command) -> Result<Ack, CommandError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(CommandRequest { command, reply })
            .await
            .map_err(|_| CommandError::new("the engine has stopped"))?;
        crate::protocol::answered(answer).await
    }

    pub fn snapshot(&self) -> Snapshot {
        self.hub.snapshot()
    }

    /// Reads the state in place (keep `f` short).
    pub fn with_state<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        self.hub.with_state(f)
    }

    /// The same handle, described as `mode` in viewers' headers (`in-process`, `demo`).
    pub fn described_as(mut self, mode: &str) -> Self {
        self.describe = mode.into();
        self
    }
}

impl Link for EngineHandle {
    fn subscribe(&self) -> Subscription {
        self.hub.subscribe()
    }

    /// Commands submitted one after another reach their model in that order (an operator's
    /// stop, then start, must not swap).
    fn submit(&self, command: Command) -> Result<Answer, CommandError> {
        let (reply, answer) = oneshot::channel();
        self.commands.try_send(CommandRequest { command, reply }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                CommandError::new("the engine is busy with earlier commands; try again")
            }
            mpsc::error::TrySendError::Closed(_) => CommandError::new("the engine has stopped"),
        })?;
        Ok(answer)
    }

    fn status(&self) -> watch::Receiver<LinkStatus> {
        self.control.status.subscribe()
    }

    fn describe(&self) -> String {
        self.describe.to_string()
    }

    fn quitting_stops_engine(&self) -> bool {
        true
    }

    fn begin_shutdown(&self, reason: &str) {
        if !self.control.shutdown.is_cancelled() {
            *self.control.reason.lock().unwrap_or_else(|p| p.into_inner()) = reason.to_owned();
            self.control.shutdown.cancel();
        }
    }

    fn abandon_cleanups(&self) {
        self.control.abandon.cancel();
    }
}

/// A running engine. Dropping it without [`Engine::shutdown`] still stops the model processes
/// (their process groups are killed on drop), but not gracefully, and runs get no cleanup.
pub struct Engine {
    handle: EngineHandle,
    /// Ends the engine's own tasks (the GPU sampler).
    cancel: CancellationToken,
    supervisor: Supervisor,
    tasks: tokio::task::JoinSet<()>,
    events: EventSink,
    /// The command router; it ends once shutdown began and every run finished its cleanup.
    router: tokio::task::JoinHandle<()>,
}

impl Engine {
    pub async fn start(opts: EngineOptions) -> Result<Engine> {
        Ok(Self::start_subscribed(opts).await?.0)
    }

    /// Starts the engine with a subscription taken before the first event, so the subscriber
    /// sees every event (the daemon's JSON stream must not miss the first `starting`).
    pub async fn start_subscribed(opts: EngineOptions) -> Result<(Engine, Subscription)> {
        let host = crate::util::hostname();
        let epoch = format!("{:016x}", fastrand::u64(..));
        let config_path = opts.config_path.as_ref().map(|p| p.display().to_string());
        let mut initial = State::new(&opts.config, config_path, host.clone());
        initial.log_dir = Some(opts.log_dir.display().to_string());
        let results_dir = opts.data_dir.join("results");
        let history = {
            let (dir, config) = (results_dir.clone(), opts.config.clone());
            tokio::task::spawn_blocking(move || reports::load_history(&dir, &config)).await.unwrap_or_default()
        };
        initial.load_history(history);

        let (events, events_rx) = mpsc::channel(EVENT_QUEUE);
        let hub = Arc::new(Hub::new(initial, epoch.clone()));
        let first_subscriber = hub.subscribe();
        let cancel = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(publish_all(hub.clone(), events_rx));
        let weak = events.downgrade();
        crate::logs::app_layer::connect(Box::new(move |batch| {
            weak.upgrade().is_some_and(|sink| sink.try_send(Event::Log(batch)).is_ok())
        }));

        let version = env!("CARGO_PKG_VERSION").into();
        emit(&events, EngineEventKind::Started { host, version, epoch }).await;
        for alert in reports::take_abandoned(&opts.data_dir) {
            let _ = events.send(Event::Alert(alert)).await;
        }

        let processes = ModelProcesses::default();
        let dirs = SupervisorSetup {
            log_dir: opts.log_dir.clone(),
            state_dir: opts.state_dir.clone(),
            keeper_exe: opts.keeper_exe.clone(),
        };
        let supervisor = Supervisor::start(&opts.config, &dirs, events.clone(), processes.clone())
            .await
            .wrap_err("starting the model supervisor")?;
        let sampler = crate::gpu::SamplerConfig::from_config(&opts.config.gpu, opts.gpu_backend);
        crate::gpu::start(sampler, events.clone(), processes, cancel.clone(), &mut tasks);

        let (status, _) = watch::channel(LinkStatus::Connected);
        let control = Arc::new(Control {
            shutdown: CancellationToken::new(),
            abandon: CancellationToken::new(),
            kill_models: CancellationToken::new(),
            reason: Mutex::new(String::new()),
            status,
        });
        let consumer_id = crate::config::consumer_id(&opts.config, &opts.data_dir)
            .wrap_err_with(|| format!("preparing the shopper consumer id in {}", opts.data_dir.display()))?;
        let rentals = rentals::start(
            rentals::RentalsSetup {
                config: opts.config.clone(),
                events: events.clone(),
                hub: hub.clone(),
                ledger: crate::deploy::ledger::SessionLedger::new(&opts.data_dir),
                consumer_id: consumer_id.clone(),
                cancel: cancel.clone(),
            },
            &mut tasks,
        );
        let (commands, commands_rx) = mpsc::channel(64);
        let runs = runs::Runs::new(runs::RunsSetup {
            config: opts.config.clone(),
            events: events.clone(),
            hub: hub.clone(),
            supervisor: supervisor.clone_handle(),
            data_dir: opts.data_dir.clone(),
            abandon: control.abandon.clone(),
            consumer_id,
            rentals: rentals.clone(),
        });
        let router =
            tokio::spawn(route_commands(commands_rx, supervisor.clone_handle(), runs, rentals, control.clone()));
        let handle = EngineHandle { commands, hub, control, describe: "in-process".into() };
        let engine = Engine { handle, cancel, supervisor, tasks, events, router };
        Ok((engine, first_subscriber))
    }

    pub fn handle(&self) -> EngineHandle {
        self.handle.clone()
    }

    /// Orderly shutdown: runs are cancelled and their cleanups finish (within the cleanup
    /// budget, unless abandoned through the handle), then every model is stopped (in parallel,
    /// within the largest stop timeout), then the samplers, then the hub drains.
    pub async fn shutdown(mut self, reason: &str) {
        self.handle.begin_shutdown(reason);
        let _ = (&mut self.router).await;
        let reason = self.handle.control.reason();
        emit(&self.events, EngineEventKind::Stopping { reason }).await;
        self.cancel.cancel();
        self.supervisor.shutdown(self.handle.control.kill_models.clone()).await;
        emit(&self.events, EngineEventKind::Stopped).await;
        let _ = self
            .handle
            .control
            .status
            .send(LinkStatus::Disconnected { reason: "the engine has stopped".into(), retry_in_s: None });
        drop(self.events);
        // The hub ends when every sender is gone (capture threads hold only weak ones).
        drop(self.handle);
        let join_all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_JOIN, join_all).await.is_err() {
            tracing::warn!("engine tasks still running {SHUTDOWN_JOIN:?} after shutdown: aborted");
            self.tasks.abort_all();
        }
    }
}

async fn publish_all(hub: Arc<Hub>, mut events: mpsc::Receiver<Event>) {
    while let Some(event) = events.recv().await {
        hub.publish(event);
    }
}

async fn emit(sink: &EventSink, kind: EngineEventKind) {
    // The hub only stops after every sender is dropped, so this cannot fail while we hold one.
    let _ = sink.send(Event::Engine(EngineEvent { ts: chrono::Utc::now(), kind })).await;
}

/// Routes commands until shutdown began and every run has finished its cleanup.
async fn route_commands(
    mut rx: mpsc::Receiver<CommandRequest>,
    supervisor: crate::supervisor::SupervisorHandle,
    mut runs: runs::Runs,
    rentals: rentals::RentalsHandle,
    control: Arc<Control>,
) {
    let mut shutting_down = false;
    loop {
        let req = tokio::select! {
            biased;
            () = control.shutdown.cancelled(), if !shutting_down => {
                shutting_down = true;
                runs.begin_shutdown(&control.reason()).await;
                continue;
            }
            () = runs.wait_current(), if shutting_down || runs.is_running() => {
                if shutting_down {
                    break;
                }
                runs.reap();
                continue;
            }
            req = rx.recv() => match req { Some(r) => r, None => break },
        };
        let CommandRequest { command, reply } = req;
        let answer = match command {
            model_command @ (Command::StartModel { .. } | Command::StopModel { .. } | Command::RestartModel { .. }) => {
                // Queued in order here; only the wait is on its own task, so a model busy
                // exiting holds up neither the others nor this loop.
                match supervisor.enqueue(model_command) {
                    Ok(answer) => {
                        tokio::spawn(async move {
                            let _ = reply.send(crate::protocol::answered(answer).await);
                        });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
                continue;
            }
            Command::DestroySession { session } => {
                rentals.destroy(session, reply);
                continue;
            }
            Command::ExtendSession { session, hours } => {
                rentals.extend(session, hours, reply);
                continue;
            }
            Command::RunTest { .. } if shutting_down => Err(CommandError::new("llmdeck is shutting down")),
            Command::RunTest { test } => runs.start(&test),
            Command::CancelTest { test } => runs.cancel(&test),
        };
        let _ = reply.send(answer);
    }
    // Whatever is still queued gets an answer, not silence.
    rx.close();
    while let Ok(req) = rx.try_recv() {
        let _ = req.reply.send(Err(CommandError::new("the engine is shutting down")));
    }
}
