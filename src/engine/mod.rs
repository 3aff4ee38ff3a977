//! The engine: owns every background task, takes [`Command`]s, emits [`Event`]s, and folds them
//! into [`State`] through one reducer. The TUI, the daemon and `--json` output are its views.

mod clocks;
mod command;
mod event;
mod hub;
mod local_tests;
mod state;

use std::path::PathBuf;
use std::sync::Arc;

use color_eyre::eyre::{Result, WrapErr};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub use clocks::ModelClocks;
pub use command::{Ack, Command, CommandError};
pub use event::*;
pub use hub::{LOG_TAIL_LINES, Snapshot, Subscription};
pub use state::*;

use crate::config::{Config, GpuBackend};
use crate::supervisor::{ModelProcesses, Supervisor};

/// Producers' end of the event channel.
pub type EventSink = mpsc::Sender<Event>;

/// How long shutdown waits for the engine's own tasks after the models are gone.
const SHUTDOWN_JOIN: std::time::Duration = std::time::Duration::from_secs(5);

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
    /// Test results go here (`results/`).
    pub data_dir: PathBuf,
    /// Overrides `gpu.backend` (the demo forces the simulated backend).
    pub gpu_backend: Option<GpuBackend>,
}

struct CommandRequest {
    command: Command,
    reply: oneshot::Sender<Result<Ack, CommandError>>,
}

/// A cheap, cloneable way to talk to a running engine.
#[derive(Clone)]
pub struct EngineHandle {
    commands: mpsc::Sender<CommandRequest>,
    hub: Arc<hub::Hub>,
}

/// The answer to a submitted command, to await.
pub type Answer = oneshot::Receiver<Result<Ack, CommandError>>;

impl EngineHandle {
    /// Sends a command and waits for its ack or error.
    pub async fn send(&self, command: Command) -> Result<Ack, CommandError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(CommandRequest { command, reply })
            .await
            .map_err(|_| CommandError::new("the engine has stopped"))?;
        answered(answer).await
    }

    /// Queues a command without waiting: commands submitted one after another reach their
    /// model in that order (an operator's stop, then start, must not swap).
    pub fn submit(&self, command: Command) -> Result<Answer, CommandError> {
        let (reply, answer) = oneshot::channel();
        self.commands.try_send(CommandRequest { command, reply }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                CommandError::new("the engine is busy with earlier commands; try again")
            }
            mpsc::error::TrySendError::Closed(_) => CommandError::new("the engine has stopped"),
        })?;
        Ok(answer)
    }

    /// The current state plus every event after it, with no gap and no overlap.
    pub fn subscribe(&self) -> Subscription {
        self.hub.subscribe()
    }

    pub fn snapshot(&self) -> Snapshot {
        self.hub.snapshot()
    }
}

/// Waits for a submitted command's answer.
pub async fn answered(answer: Answer) -> Result<Ack, CommandError> {
    answer.await.map_err(|_| CommandError::new("the engine stopped before answering"))?
}

/// A running engine. Dropping it without [`Engine::shutdown`] still stops the model processes
/// (their process groups are killed on drop), but not gracefully.
pub struct Engine {
    handle: EngineHandle,
    cancel: CancellationToken,
    supervisor: Supervisor,
    tasks: tokio::task::JoinSet<()>,
    events: EventSink,
    /// The command router; it ends (after any running test ended) when the engine is cancelled.
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
        let config_path = opts.config_path.as_ref().map(|p| p.display().to_string());
        let mut initial = State::new(&opts.config, config_path, host.clone());
        initial.log_dir = Some(opts.log_dir.display().to_string());
        let (events, events_rx) = mpsc::channel(EVENT_QUEUE);
        let hub = Arc::new(hub::Hub::new(initial));
        let first_subscriber = hub.subscribe();
        let cancel = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(hub::run(hub.clone(), events_rx));
        crate::logs::app_layer::connect(&events);

        emit(
            &events,
            Event::Engine(EngineEvent {
                ts: chrono::Utc::now(),
                kind: EngineEventKind::Started { host, version: env!("CARGO_PKG_VERSION").into() },
            }),
        )
        .await;

        let processes = ModelProcesses::default();
        let supervisor = Supervisor::start(&opts, events.clone(), processes.clone())
            .await
            .wrap_err("starting the model supervisor")?;
        crate::gpu::spawn_sampler(&opts, events.clone(), processes, cancel.clone(), &mut tasks);

        let (commands, commands_rx) = mpsc::channel(64);
        let tests = local_tests::LocalTests::new(
            opts.config.clone(),
            events.clone(),
            hub.clone(),
            opts.data_dir.join("results"),
            cancel.clone(),
        );
        let router = tokio::spawn(route_commands(commands_rx, supervisor.clone_handle(), tests, cancel.clone()));
        let engine = Engine { handle: EngineHandle { commands, hub }, cancel, supervisor, tasks, events, router };
        Ok((engine, first_subscriber))
    }

    pub fn handle(&self) -> EngineHandle {
        self.handle.clone()
    }

    /// Orderly shutdown: stop every model (in parallel, within the largest stop timeout),
    /// stop the samplers, then let the hub drain.
    pub async fn shutdown(mut self, reason: &str) {
        emit(
            &self.events,
            Event::Engine(EngineEvent {
                ts: chrono::Utc::now(),
                kind: EngineEventKind::Stopping { reason: reason.into() },
            }),
        )
        .await;
        // Tests first (they end as cancelled, not as failed because their model went away),
        // then the models, in parallel.
        self.cancel.cancel();
        let _ = (&mut self.router).await;
        self.supervisor.shutdown().await;
        emit(&self.events, Event::Engine(EngineEvent { ts: chrono::Utc::now(), kind: EngineEventKind::Stopped })).await;
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

async fn emit(sink: &EventSink, event: Event) {
    // The hub only stops after every sender is dropped, so this cannot fail while we hold one.
    let _ = sink.send(event).await;
}

async fn route_commands(
    mut rx: mpsc::Receiver<CommandRequest>,
    supervisor: crate::supervisor::SupervisorHandle,
    mut tests: local_tests::LocalTests,
    cancel: CancellationToken,
) {
    loop {
        let req = tokio::select! {
            _ = cancel.cancelled() => break,
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
                            let _ = reply.send(answered(answer).await);
                        });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
                continue;
            }
            Command::RunTest { test } => tests.run(&test),
            Command::CancelTest { test } => tests.cancel(&test),
        };
        let _ = reply.send(answer);
    }
    tests.finish().await;
    // Whatever is still queued gets an answer, not silence.
    rx.close();
    while let Ok(req) = rx.try_recv() {
        let _ = req.reply.send(Err(CommandError::new("the engine is shutting down")));
    }
}
