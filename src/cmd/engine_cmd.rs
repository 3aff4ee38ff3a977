//! The commands that run the engine: the in-process TUI (`llmdeck`), `demo` and `daemon`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;

use color_eyre::eyre::{Result, WrapErr};
use tokio::sync::broadcast;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use super::cli::{DaemonArgs, DemoArgs, GlobalArgs};
use crate::config::{self, Config, GpuBackend};
use crate::engine::{Engine, EngineHandle, EngineOptions};
use crate::exit;
use crate::protocol::{EngineEventKind, Event, Link, Sequenced, SharedLink, State};
use crate::supervisor::instance::AlreadyRunning;
use crate::tui::{self, Exit, TuiOptions};
use crate::util::ports::{PortReservation, reserve_loopback_ports};
use crate::util::signals::Signals;

/// The demo's configuration, with `${...}` filled in by [`demo`].
pub const DEMO_CONFIG: &str = include_str!("../../assets/demo.yaml");

/// Where the config comes from: `--config`/`LLMDECK_CONFIG`, else the XDG path.
pub fn config_path(global: &GlobalArgs) -> Option<PathBuf> {
    config::config_path(global.config.as_deref())
}

/// Loads the config for commands that need one, or explains what to do and gives exit 2.
pub async fn load_config(global: &GlobalArgs) -> std::result::Result<(Config, PathBuf), ExitCode> {
    let Some(path) = config_path(global) else {
        say!("llmdeck: cannot work out a config path (no home directory); pass --config PATH");
        return Err(exit::code(exit::USAGE));
    };
    if !path.exists() {
        say!("llmdeck: no configuration file at {}", path.display());
        say!("  try `llmdeck demo` to see llmdeck on built-in mock models,");
        say!("  or `llmdeck config init` to write a documented example there, then edit it.");
        return Err(exit::code(exit::USAGE));
    }
    let loaded = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || config::load(&path)).await
    };
    match loaded {
        Ok(Ok(cfg)) => Ok((cfg, path)),
        Err(join_error) => {
            say!("llmdeck: reading the configuration failed: {join_error}");
            Err(exit::code(exit::FAILED))
        }
        Ok(Err(errors)) => {
            say!("{errors}");
            Err(exit::code(exit::USAGE))
        }
    }
}

/// llmdeck's own log file, in the state dir (`llmdeck.log`), rotated at this size, three kept.
const APP_LOG_NAME: &str = "llmdeck";
const APP_LOG_MAX_BYTES: u64 = 10 << 20;
const APP_LOG_KEEP_FILES: usize = 3;

/// llmdeck's own log: a file in the state dir, plus the Logs pane (info and above).
pub(super) fn init_tracing(state_dir: &Path) -> Result<tracing_appender::non_blocking::WorkerGuard> {
    let appender =
        crate::logs::file::RotatingFile::open(state_dir, APP_LOG_NAME, APP_LOG_MAX_BYTES, APP_LOG_KEEP_FILES)
            .wrap_err_with(|| format!("opening llmdeck's log in {}", state_dir.display()))?;
    let (writer, guard) = tracing_appender::non_blocking(appender);
    let filter = tracing_subscriber::EnvFilter::try_from_env("LLMDECK_LOG").unwrap_or_else(|_| "info".into());
    let file_layer = tracing_subscriber::fmt::layer().with_writer(writer).with_ansi(false);
    // A second init (tests running several commands in one process) is harmless.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(file_layer)
        .with(crate::logs::app_layer::AppLogLayer)
        .try_init();
    // Now a state dir others can write to is warned about where it can be read.
    crate::util::create_private_dir(state_dir).wrap_err_with(|| format!("creating {}", state_dir.display()))?;
    Ok(guard)
}

/// This binary, for the models' keepers; `None` when it is gone from disk (replaced by an
/// upgrade while running): models then run without one, as direct children.
pub(super) fn keeper_exe() -> Option<PathBuf> {
    std::env::current_exe().ok().filter(|p| p.is_file())
}

fn engine_options(
    config: Config,
    paths: config::Paths,
    config_path: Option<PathBuf>,
    gpu_backend: Option<GpuBackend>,
) -> Result<EngineOptions> {
    paths
        .create_dirs()
        .wrap_err_with(|| format!("creating llmdeck's directories under {}", paths.state_dir.display()))?;
    Ok(EngineOptions {
        log_dir: paths.log_dir,
        state_dir: paths.state_dir,
        data_dir: paths.data_dir,
        config,
        config_path,
        gpu_backend,
        keeper_exe: keeper_exe(),
    })
}

/// Options for a config read from `path`, with the XDG data and state dirs.
fn engine_options_for(config: Config, path: PathBuf) -> Result<EngineOptions> {
    let paths = config::Paths::resolve(&config, Some(&path)).map_err(|e| color_eyre::eyre::eyre!("{e}"))?;
    engine_options(config, paths, Some(path), None)
}

/// `llmdeck`: the TUI with the engine in-process.
pub async fn tui(global: &GlobalArgs) -> Result<ExitCode> {
    let (config, path) = match load_config(global).await {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    let opts = engine_options_for(config.clone(), path.clone())?;
    let held = match run_tui(opts, global, "in-process").await? {
        Ok(code) => return Ok(code),
        Err(held) => held,
    };
    // Another llmdeck holds the state dir: if it is a daemon, show its models instead.
    let target = super::cli::DaemonTarget::default();
    let attached = match super::remote_cmd::resolve(&config, Some(&path), &target) {
        Ok((url, token)) => match crate::remote::WsLink::connect(&url, token.clone()).await {
            Ok(link) => Ok((link, token)),
            Err(e) => Err(e.to_string()),
        },
        Err(e) => Err(format!("{e:#}")),
    };
    match attached {
        Ok((link, token)) => super::remote_cmd::run_attached(link, token, &config, global).await,
        Err(why) => {
            say!("llmdeck: {held}");
            say!("  (attaching to it as a daemon failed: {why})");
            Ok(exit::code(exit::USAGE))
        }
    }
}

/// The TUI on an engine in this process; `Err(held)` if another llmdeck holds the state dir.
async fn run_tui(
    opts: EngineOptions,
    global: &GlobalArgs,
    mode: &str,
) -> Result<std::result::Result<ExitCode, AlreadyRunning>> {
    crate::tui::terminal::install_panic_hook()?;
    let _log_guard = init_tracing(&opts.state_dir)?;
    // Before any model starts: a signal from now on stops everything in order.
    let mut signals = Signals::install().wrap_err("listening for signals")?;
    let ui = opts.config.ui.clone();
    let tui_opts = TuiOptions {
        mouse: ui.mouse,
        color: tui::colors_enabled(global.no_color, ui.theme == config::Theme::Monochrome),
        refresh: std::time::Duration::from_millis(ui.refresh_ms.max(100)),
        ring_lines: opts.config.logs.ring_lines,
        log_memory_bytes: usize::try_from(opts.config.logs.memory_mb << 20).unwrap_or(usize::MAX),
        log_dir: opts.log_dir.clone(),
        app_log: crate::logs::file::log_path(&opts.state_dir, APP_LOG_NAME),
        fetch_log: None,
    };
    let engine = match Engine::start(opts).await {
        Ok(engine) => engine,
        Err(report) => return already_running(report).map(Err),
    };
    let handle = engine.handle().described_as(mode);
    let link: SharedLink = Arc::new(handle.clone());
    let outcome = tui::run(link, tui_opts, &mut signals).await;
    // The terminal is restored by now: progress can go to stderr.
    let reason = match &outcome {
        Ok(Exit::Quit) => "the operator quit".to_owned(),
        Ok(Exit::Signal(name)) => format!("{name} received"),
        Err(_) => "the TUI failed".to_owned(),
    };
    let cleaning = handle.with_state(cleanups_in_progress);
    if !cleaning.is_empty() {
        say!("llmdeck: waiting for the cleanup of {}…", cleaning.join(", "));
    }
    let active = handle.with_state(|s| s.models.iter().filter(|m| m.state.is_active()).count());
    if active > 0 {
        say!("llmdeck: stopping {active} model{}…", if active == 1 { "" } else { "s" });
    }
    shut_down(engine, &handle, &reason, &mut signals).await;
    Ok(Ok(match outcome? {
        Exit::Quit => exit::code(exit::OK),
        Exit::Signal("SIGINT") => exit::code(exit::CANCELLED),
        Exit::Signal(_) => exit::code(exit::OK),
    }))
}

/// Another llmdeck on the same state dir is not a crash: the holder, for the caller to name.
fn already_running(report: color_eyre::Report) -> Result<AlreadyRunning> {
    match report.chain().find_map(|e| e.downcast_ref::<AlreadyRunning>()) {
        Some(held) => Ok(AlreadyRunning { dir: held.dir.clone(), pid: held.pid }),
        None => Err(report.wrap_err("starting the engine")),
    }
}

/// The runs still cleaning up (`test (step)`).
fn cleanups_in_progress(state: &State) -> Vec<String> {
    state
        .running_runs()
        .map(|run| match run.current_step() {
            Some((_, step)) => format!("{} ({})", run.test, step.name),
            None => run.test.clone(),
        })
        .collect()
}

/// Stops the engine (cleanups first, then the models) while listening to signals: a second
/// SIGINT/SIGTERM says what it still waits for, the next one stops waiting — for cleanups,
/// then for the models' stop timeouts (SIGKILL to every group).
async fn shut_down(engine: Engine, handle: &EngineHandle, reason: &str, signals: &mut Signals) {
    let shutdown = engine.shutdown(reason);
    tokio::pin!(shutdown);
    let mut warned = false;
    let mut warned_models = false;
    loop {
        let name = tokio::select! {
            () = &mut shutdown => return,
            _ = signals.int.recv() => "SIGINT",
            _ = signals.term.recv() => "SIGTERM",
            _ = signals.hup.recv() => continue,
        };
        let cleaning = handle.with_state(cleanups_in_progress);
        if cleaning.is_empty() && !warned_models {
            warned_models = true;
            say!(
                "llmdeck: {name}: still stopping the models (each within its stop_timeout_s); send it again to kill them now"
            );
        } else if cleaning.is_empty() {
            say!("llmdeck: {name}: killing every model now (SIGKILL)");
            handle.kill_models_now();
        } else if !warned {
            warned = true;
            say!(
                "llmdeck: {name}: still cleaning up {}; send it again to stop waiting (what it cleans up may keep running)",
                cleaning.join(", ")
            );
        } else {
            say!(
                "llmdeck: {name}: stopped waiting for the cleanup of {}; it is recorded for the next start",
                cleaning.join(", ")
            );
            handle.abandon_cleanups();
        }
    }
}

/// `llmdeck demo`: the TUI on the embedded demo, in a temporary directory.
pub async fn demo(args: &DemoArgs, global: &GlobalArgs) -> Result<ExitCode> {
    // Earlier demos that died without cleaning up (kill -9, a power cut) leave their dirs.
    let _ = tokio::task::spawn_blocking(sweep_stale_demo_dirs).await;
    let dir = tempfile::Builder::new()
        .prefix(DEMO_DIR_PREFIX)
        .tempdir()
        .wrap_err("creating the demo's temporary directory")?;
    std::fs::write(dir.path().join(DEMO_RUNNING), format!("{}\n", std::process::id()))
        .wrap_err("marking the demo's directory as in use")?;
    // The demo's GPU shopper, with its SSH "instances" on this machine.
    let shopper = DemoShopper::start(dir.path()).await?;
    // Held until the demo ends: no other llmdeck picks these ports meanwhile.
    let (text, _ports) = demo_config_text(dir.path(), &shopper.url)?;
    let config = match config::load_str(&text, "embedded demo config (assets/demo.yaml)") {
        Ok(c) => c,
        Err(errors) => {
            // A broken embedded config is our bug, but say it plainly.
            say!("{errors}");
            return Ok(exit::code(exit::FAILED));
        }
    };
    let paths = config::Paths::under(dir.path(), &config);
    let opts = engine_options(config, paths, None, Some(GpuBackend::Simulated))?;
    let code = match run_tui(opts, global, "demo").await {
        Ok(Ok(code)) => Ok(code),
        Ok(Err(held)) => {
            say!("llmdeck: {held}");
            Ok(exit::code(exit::USAGE))
        }
        Err(e) => Err(e),
    };
    shopper.stop().await;
    let _ = std::fs::remove_file(dir.path().join(DEMO_RUNNING));
    if args.keep_dir {
        let kept = dir.keep();
        say!("llmdeck: the demo's logs are in {}", kept.display());
    }
    code
}

const DEMO_DIR_PREFIX: &str = "llmdeck-demo-";
/// In a demo's directory while that demo runs; a directory that has it but whose engine lock
/// nobody holds belongs to a demo that died.
const DEMO_RUNNING: &str = "RUNNING";

/// Removes the directories of demos that died without cleaning up: marked running, their
/// engine lock free, and older than a starting demo can be. Kept ones (`--keep-dir`) have no
/// mark and stay.
fn sweep_stale_demo_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let dir = entry.path();
        let is_demo = entry.file_name().to_string_lossy().starts_with(DEMO_DIR_PREFIX);
        let marked = std::fs::metadata(dir.join(DEMO_RUNNING));
        let Ok(marked) = marked else { continue };
        let old = marked.modified().ok().and_then(|t| t.elapsed().ok()).is_some_and(|age| age.as_secs() > 60);
        if is_demo && old && !engine_lock_held(&dir.join("state")) {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => tracing::info!("removed {}, left by a demo that did not exit cleanly", dir.display()),
                Err(e) => tracing::warn!("removing {}, left by an earlier demo: {e}", dir.display()),
            }
        }
    }
}

/// Whether a running llmdeck holds the engine lock in `state_dir`.
fn engine_lock_held(state_dir: &Path) -> bool {
    let Ok(file) = std::fs::OpenOptions::new().read(true).write(true).open(state_dir.join("engine.lock")) else {
        return false;
    };
    matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock))
}

/// The demo config with this binary's path, reserved loopback ports and the temp dir filled
/// in. The ports stay reserved while the returned reservations live.
pub fn demo_config_text(dir: &Path, shopper_url: &str) -> Result<(String, Vec<PortReservation>)> {
    let exe = std::env::current_exe().wrap_err("finding the llmdeck executable for the demo's mock models")?;
    let mut text = DEMO_CONFIG
        .replace("${LLMDECK_EXE}", &exe.display().to_string())
        .replace("${DEMO_DIR}", &dir.display().to_string())
        .replace("${DEMO_SHOPPER_URL}", shopper_url);
    let placeholders: Vec<String> =
        (1..=9).map(|n| format!("${{DEMO_PORT_{n}}}")).filter(|p| text.contains(p.as_str())).collect();
    let ports =
        reserve_loopback_ports(placeholders.len()).wrap_err("reserving loopback ports for the demo's models")?;
    for (placeholder, port) in placeholders.iter().zip(&ports) {
        text = text.replace(placeholder.as_str(), &port.port().to_string());
    }
    Ok((text, ports))
}

/// The demo's `llmdeck mock-shopper`, a child in its own process group: stopped with SIGTERM
/// (it destroys its sessions and what runs in them), then killed whole. It runs under a keeper
/// like the models, so a `kill -9` of the demo does not leave it and its "instances" running.
struct DemoShopper {
    /// The keeper (whose stdin pipe stays open while this lives), with the shopper below it.
    child: tokio::process::Child,
    url: String,
}

/// How long the demo's shopper gets to destroy its sessions after SIGTERM.
const DEMO_SHOPPER_STOP: std::time::Duration = std::time::Duration::from_secs(5);

impl DemoShopper {
    async fn start(dir: &Path) -> Result<DemoShopper> {
        use tokio::io::AsyncBufReadExt;
        let exe = std::env::current_exe().wrap_err("finding the llmdeck executable for the demo's shopper")?;
        let log = std::fs::File::create(dir.join("mock-shopper.log")).wrap_err("the demo shopper's log file")?;
        let shopper =
            ["mock-shopper", "--port", "0", "--ssh-port", "0", "--provision-delay", "4", "--destroy-delay", "1"];
        let shopper: Vec<String> = shopper.iter().map(|s| s.to_string()).collect();
        let args =
            crate::supervisor::keeper::keeper_args(DEMO_SHOPPER_STOP, None, &exe.display().to_string(), &shopper);
        let mut child = tokio::process::Command::new(&exe)
            .args(&args)
            // The keeper's lifeline: EOF when the demo is gone, however it went.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            // Its "instances" live inside the demo's directory, removed with it.
            .env("TMPDIR", dir)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .wrap_err("starting the demo's mock-shopper")?;
        let stdout = child.stdout.take().ok_or_else(|| color_eyre::eyre::eyre!("the demo shopper has no stdout"))?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let first = tokio::time::timeout(std::time::Duration::from_secs(20), lines.next_line()).await;
        let line = match first {
            Ok(Ok(Some(line))) => line,
            other => {
                let _ = child.start_kill();
                return Err(color_eyre::eyre::eyre!(
                    "the demo's mock-shopper did not start ({other:?}); see {}",
                    dir.join("mock-shopper.log").display()
                ));
            }
        };
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .ok_or_else(|| color_eyre::eyre::eyre!("the demo shopper said `{line}`"))?
            .to_owned();
        // Keep draining its stdout so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(DemoShopper { child, url })
    }

    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let group = nix::unistd::Pid::from_raw(-(pid as i32));
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGTERM);
            if tokio::time::timeout(DEMO_SHOPPER_STOP, self.child.wait()).await.is_err() {
                let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
            }
        }
        let _ = self.child.wait().await;
    }
}

/// Starting the engine failed. Another llmdeck on the same state directory is not a crash:
/// one plain line and the usage exit code.
pub(super) fn engine_start_failed(report: color_eyre::Report) -> Result<ExitCode> {
    if let Some(held) = report.chain().find_map(|e| e.downcast_ref::<AlreadyRunning>()) {
        say!("llmdeck: {held}");
        return Ok(exit::code(exit::USAGE));
    }
    Err(report.wrap_err("starting the engine"))
}

/// `llmdeck daemon`: the engine without a TUI; one JSON object per event on stdout, and the
/// WebSocket (`/ws`), `/metrics` and `/logs/{source}` for remote viewers.
pub async fn daemon(args: &DaemonArgs, global: &GlobalArgs) -> Result<ExitCode> {
    let (config, path) = match load_config(global).await {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    let opts = engine_options_for(config, path)?;
    let _log_guard = init_tracing(&opts.state_dir)?;
    let mut signals = Signals::install().wrap_err("listening for signals")?;
    let daemon_cfg = opts.config.daemon.clone();
    let listen = args.listen.clone().unwrap_or_else(|| daemon_cfg.listen.clone());
    let Ok(addr) = listen.parse::<std::net::SocketAddr>() else {
        say!("llmdeck daemon: `{listen}` is not an address; write IP:PORT, e.g. 127.0.0.1:7777");
        return Ok(exit::code(exit::USAGE));
    };
    if !addr.ip().is_loopback() {
        if !args.allow_remote {
            say!(
                "llmdeck daemon: {addr} is reachable from other machines; pass --allow-remote if that is what you \
                 want, or keep 127.0.0.1 and reach it through an SSH tunnel (ssh -L 7777:127.0.0.1:7777 host)"
            );
            return Ok(exit::code(exit::USAGE));
        }
        tracing::warn!("listening on {addr}: reachable from other machines; an SSH tunnel to 127.0.0.1 is safer");
    }
    // Another llmdeck on this state dir is the likelier reason a port is taken: say that.
    if let Err(crate::supervisor::instance::LockError::AlreadyRunning(held)) =
        crate::supervisor::instance::InstanceLock::acquire(&opts.state_dir)
    {
        say!("llmdeck: {held}");
        return Ok(exit::code(exit::USAGE));
    }
    let token_path = super::remote_cmd::token_path(&opts.config, &opts.data_dir);
    let token = crate::remote::token::read_or_create(&token_path)
        .wrap_err_with(|| format!("reading or creating the daemon's token in {}", token_path.display()))?;
    let readonly = match &daemon_cfg.readonly_token_file {
        Some(file) => match crate::remote::token::read(file) {
            Ok(t) => Some(t),
            Err(e) => {
                say!("llmdeck daemon: daemon.readonly_token_file {}: {e}", file.display());
                return Ok(exit::code(exit::USAGE));
            }
        },
        None => None,
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            say!(
                "llmdeck daemon: cannot listen on {addr}: {e} (is another daemon running? set daemon.listen or --listen)"
            );
            return Ok(exit::code(exit::USAGE));
        }
    };
    let bound = listener.local_addr().wrap_err("reading the listening address")?;
    let url = format!("ws://{bound}/ws");
    let url_file = super::remote_cmd::url_file(&opts.state_dir);
    let server_opts = crate::remote::ServerOptions {
        token,
        readonly,
        max_clients: daemon_cfg.max_clients as usize,
        metrics_public: daemon_cfg.metrics_public,
        log_dir: opts.log_dir.clone(),
        app_log: crate::logs::file::log_path(&opts.state_dir, APP_LOG_NAME),
    };
    let (models, log_dir) = (opts.config.models.len(), opts.log_dir.clone());
    let (engine, sub) = match Engine::start_subscribed(opts).await {
        Ok(started) => started,
        Err(report) => return engine_start_failed(report),
    };
    // Written once this daemon holds the state dir: `llmdeck attach` and `llmdeck` find it here.
    if let Err(e) = write_private(&url_file, &url) {
        tracing::warn!("writing {}: {e}", url_file.display());
    }
    say!(
        "llmdeck daemon: supervising {models} model(s); model logs in {}; events on stdout; viewers at {url} (token in {})",
        log_dir.display(),
        token_path.display()
    );
    let stop_serving = tokio_util::sync::CancellationToken::new();
    let link: SharedLink = Arc::new(engine.handle().described_as("daemon"));
    let server = tokio::spawn(crate::remote::serve(listener, link, server_opts, stop_serving.clone()));
    // A thread: a slow reader of stdout must never stall the runtime.
    let printer = std::thread::Builder::new()
        .name("llmdeck-events-out".into())
        .spawn(move || print_events(sub.events))
        .wrap_err("starting the event printer")?;
    let reason = loop {
        tokio::select! {
            _ = signals.int.recv() => break "SIGINT",
            _ = signals.term.recv() => break "SIGTERM",
            // A daemon outlives the SSH session that started it: a hang-up is noted, not obeyed.
            _ = signals.hup.recv() => tracing::info!("SIGHUP ignored: the daemon keeps supervising (stop it with SIGTERM)"),
        }
    };
    let handle = engine.handle();
    let cleaning = handle.with_state(cleanups_in_progress);
    if cleaning.is_empty() {
        say!("llmdeck daemon: {reason}: stopping every model");
    } else {
        say!("llmdeck daemon: {reason}: cleaning up {}, then stopping every model", cleaning.join(", "));
    }
    shut_down(engine, &handle, &format!("{reason} received"), &mut signals).await;
    let _ = std::fs::remove_file(&url_file);
    stop_serving.cancel();
    if tokio::time::timeout(std::time::Duration::from_secs(2), server).await.is_err() {
        tracing::warn!("the viewers' server did not stop within 2 s");
    }
    // A reader that stopped reading (a suspended pager) must not keep the daemon alive once
    // the models are stopped.
    let printed = tokio::task::spawn_blocking(move || printer.join());
    if tokio::time::timeout(std::time::Duration::from_secs(2), printed).await.is_err() {
        say!("llmdeck daemon: stdout is not being read; the last events were not printed");
    }
    Ok(exit::code(exit::OK))
}

/// Writes a small file readable by its owner only.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(path)?;
    writeln!(file, "{text}")
}

/// Prints events as JSON lines until the engine says it stopped.
fn print_events(mut events: broadcast::Receiver<Arc<Sequenced>>) {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    loop {
        let event = match events.blocking_recv() {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                let _ = writeln!(out, "{{\"type\":\"lagged\",\"missed\":{missed}}}");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => break,
        };
        // Whole lines only: an event that cannot be encoded becomes a line saying so, never
        // half a JSON document.
        let line = serde_json::to_vec(event.as_ref()).unwrap_or_else(|e| {
            let error = serde_json::json!({ "type": "unprintable", "seq": event.seq, "error": e.to_string() });
            error.to_string().into_bytes()
        });
        if out.write_all(&line).and_then(|()| writeln!(out)).is_err() {
            break; // stdout is gone (closed pipe): nobody is listening
        }
        if events.is_empty() && out.flush().is_err() {
            break;
        }
        if let Event::Engine(e) = &event.event
            && e.kind == EngineEventKind::Stopped
        {
            break;
        }
    }
    let _ = out.flush();
}
