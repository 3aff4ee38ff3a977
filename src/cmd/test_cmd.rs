//! `llmdeck test list|run`: tests headless, for CI. Progress on stderr, the report on stdout;
//! exit 0 pass, 1 fail, 2 configuration or usage error, 130 cancelled by SIGINT (after the
//! cleanup finished).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use color_eyre::eyre::{Result, WrapErr};
use tokio::sync::broadcast;

use super::cli::GlobalArgs;
use super::engine_cmd::{engine_start_failed, init_tracing, load_config};
use crate::config::{self, Config, GpuBackend, TestKind};
use crate::engine::{Engine, EngineOptions};
use crate::exit;
use crate::logs::LogSource;
use crate::protocol::{Command, Event, Link, RunChange, RunReport, StepStatus, VerdictOutcome};
use crate::util::signals::Signals;

#[derive(Debug, Subcommand)]
pub enum TestCommand {
    /// The configured tests
    List {
        #[arg(long)]
        json: bool,
    },
    /// Run one test headless: progress on stderr, the report on stdout
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The test's name (see `llmdeck test list`)
    pub name: String,
    /// Print the run report as JSON
    #[arg(long)]
    pub json: bool,
    /// Also write the report as JUnit XML
    #[arg(long, value_name = "PATH")]
    pub junit: Option<PathBuf>,
    /// Also write the report as Markdown
    #[arg(long, value_name = "PATH")]
    pub markdown: Option<PathBuf>,
}

/// The test's log lines a JUnit failure quotes.
const QUOTED_LINES: usize = 20;

pub async fn run(command: TestCommand, global: &GlobalArgs) -> Result<ExitCode> {
    let (config, path) = match load_config(global).await {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    match command {
        TestCommand::List { json } => Ok(list(&config, json)),
        TestCommand::Run(args) => run_one(config, path, &args).await,
    }
}

fn list(config: &Config, json: bool) -> ExitCode {
    if json {
        let tests: Vec<serde_json::Value> = config
            .tests
            .iter()
            .map(|t| serde_json::json!({ "name": t.name, "kind": t.kind, "model": t.model, "max_price": t.max_price }))
            .collect();
        out!("{}", serde_json::Value::Array(tests));
    } else if config.tests.is_empty() {
        out!("no tests configured (add them under `tests:`)");
    } else {
        for t in &config.tests {
            let kind = match t.kind {
                TestKind::Deploy => "deploy",
                TestKind::Local => "local",
            };
            out!("{:<24} {kind:<7} {}", t.name, t.model);
        }
    }
    exit::code(exit::OK)
}

async fn run_one(mut config: Config, path: PathBuf, args: &RunArgs) -> Result<ExitCode> {
    let Some(test) = config.tests.iter().find(|t| t.name == args.name).cloned() else {
        let names: Vec<&str> = config.tests.iter().map(|t| t.name.as_str()).collect();
        say!("llmdeck test run: no test `{}` in {} (tests: {})", args.name, path.display(), names.join(", "));
        return Ok(exit::code(exit::USAGE));
    };
    let paths = config::Paths::resolve(&config, Some(&path)).map_err(|e| color_eyre::eyre::eyre!("{e}"))?;
    paths.create_dirs().wrap_err("creating llmdeck's directories")?;
    // A deploy test needs no local supervisor: no lock, no models, its own scratch state dir.
    let scratch = tempfile::Builder::new().prefix("llmdeck-test-").tempdir().wrap_err("a scratch directory")?;
    let (state_dir, log_dir, gpu_backend) = match test.kind {
        TestKind::Deploy => {
            config.models.clear();
            (scratch.path().join("state"), scratch.path().join("logs"), Some(GpuBackend::None))
        }
        TestKind::Local => {
            // Only the model it names; started by the run if it is not running.
            config.models.retain(|m| m.id == test.model);
            for m in &mut config.models {
                m.autostart = false;
            }
            (paths.state_dir.clone(), paths.log_dir.clone(), None)
        }
    };
    config.tests.retain(|t| t.name == test.name);
    let _log_guard = init_tracing(&paths.state_dir)?;
    let mut signals = Signals::install().wrap_err("listening for signals")?;
    let opts = EngineOptions {
        config,
        config_path: Some(path),
        log_dir,
        state_dir,
        data_dir: paths.data_dir.clone(),
        gpu_backend,
        keeper_exe: super::engine_cmd::keeper_exe(),
    };
    let (engine, sub) = match Engine::start_subscribed(opts).await {
        Ok(started) => started,
        Err(report) => return engine_start_failed(report),
    };
    let handle = engine.handle();
    if let Err(e) = handle.send(Command::RunTest { test: test.name.clone() }).await {
        say!("llmdeck test run: {e}");
        engine.shutdown("the test could not start").await;
        return Ok(exit::code(exit::USAGE));
    }
    let watched = watch_run(&test.name, sub.events, &handle, &mut signals).await;
    engine.shutdown("the test run is over").await;
    let Some(outcome) = watched else {
        say!("llmdeck test run: the engine stopped before the run finished");
        return Ok(exit::code(exit::FAILED));
    };
    Ok(report_outcome(outcome, args))
}

/// How a watched run ended.
struct Watched {
    report_file: Option<String>,
    verdict: VerdictOutcome,
    interrupted: bool,
    last_lines: Vec<String>,
}

/// Prints each step as it starts and ends; a first SIGINT/SIGTERM cancels the run (its cleanup
/// still runs), a third stops waiting.
async fn watch_run(
    name: &str,
    mut events: broadcast::Receiver<std::sync::Arc<crate::protocol::Sequenced>>,
    handle: &crate::engine::EngineHandle,
    signals: &mut Signals,
) -> Option<Watched> {
    let mut steps: Vec<String> = Vec::new();
    let mut statuses: Vec<StepStatus> = Vec::new();
    let mut last_lines: VecDeque<String> = VecDeque::new();
    let mut interrupts = 0;
    loop {
        let event = tokio::select! {
            _ = signals.int.recv() => { interrupts += 1; None }
            _ = signals.term.recv() => { interrupts += 1; None }
            event = events.recv() => Some(event),
        };
        let Some(event) = event else {
            if interrupts == 1 {
                say!("llmdeck test run: cancelling {name}; its cleanup runs first (signal twice more to stop waiting)");
                let _ = handle.send(Command::CancelTest { test: name.to_owned() }).await;
            } else if interrupts >= 3 {
                say!("llmdeck test run: stopped waiting for the cleanup");
                handle.abandon_cleanups();
            }
            continue;
        };
        let event = match event {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        match &event.event {
            Event::Log(batch) if batch.source == LogSource::Test(name.to_owned()) => {
                for line in &batch.lines {
                    if last_lines.len() == QUOTED_LINES {
                        last_lines.pop_front();
                    }
                    last_lines.push_back(line.text.clone());
                }
            }
            Event::Run(run) if run.test == name => match &run.change {
                RunChange::Started { steps: names, .. } => {
                    steps.clone_from(names);
                    statuses = vec![StepStatus::Pending; names.len()];
                    say!("{name}: {} steps", names.len());
                }
                RunChange::Step { index, status, detail, duration_ms } => {
                    let Some(previous) = statuses.get_mut(*index) else { continue };
                    if *previous == *status {
                        continue;
                    }
                    *previous = *status;
                    let step = steps.get(*index).map_or("?", String::as_str);
                    let time = duration_ms.map(|ms| format!(" ({:.1}s)", ms as f64 / 1000.0)).unwrap_or_default();
                    let first_line = detail.lines().next().unwrap_or("");
                    say!("  [{}/{}] {} {step}{time} {first_line}", index + 1, steps.len(), status.symbol());
                }
                RunChange::Finished { verdict, report_file, .. } => {
                    for reason in &verdict.reasons {
                        say!("  {reason}");
                    }
                    return Some(Watched {
                        report_file: report_file.clone(),
                        verdict: verdict.outcome,
                        interrupted: interrupts > 0,
                        last_lines: last_lines.into(),
                    });
                }
                _ => {}
            },
            _ => {}
        }
    }
}

fn report_outcome(watched: Watched, args: &RunArgs) -> ExitCode {
    let report: Option<RunReport> = watched
        .report_file
        .as_ref()
        .and_then(|f| std::fs::read(f).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    match &report {
        Some(report) if args.json => out!("{}", serde_json::to_string_pretty(report).unwrap_or_default()),
        Some(report) => out!("{}", super::test_export::markdown(report)),
        None => say!("llmdeck test run: the run's report could not be read"),
    }
    if let Some(report) = &report {
        let exports = [
            (&args.junit, super::test_export::junit(report, &watched.last_lines)),
            (&args.markdown, super::test_export::markdown(report)),
        ];
        for (path, text) in exports {
            if let Some(path) = path
                && let Err(e) = std::fs::write(path, text)
            {
                say!("llmdeck test run: writing {}: {e}", path.display());
            }
        }
    }
    if let Some(file) = &watched.report_file {
        say!("report: {file}");
    }
    match watched.verdict {
        VerdictOutcome::Pass => exit::code(exit::OK),
        VerdictOutcome::Cancelled if watched.interrupted => exit::code(exit::CANCELLED),
        _ => exit::code(exit::FAILED),
    }
}
