//! Local tests: the probe run against a model from `models:`, one test at a time, with live
//! figures as events and the full report written to the data dir. (Deployment tests, which
//! rent a GPU first, arrive with the deployment runner.)

use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use futures::FutureExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::event::{Event, ProbeEvent, TestChange, TestEvent, TestSummary};
use super::hub::Hub;
use super::{Ack, CommandError, EventSink, ModelState};
use crate::config::{Config, TestConfig, TestKind};
use crate::logs::{Level, LogBatch, LogLine, LogSource};
use crate::probe::{self, ApiKey, Outcome, ProbeOptions, ProbeReport};

pub(super) struct LocalTests {
    config: Config,
    events: EventSink,
    hub: Arc<Hub>,
    results_dir: PathBuf,
    engine_cancel: CancellationToken,
    running: Option<(String, CancellationToken)>,
    /// The running test's task, so shutdown can wait for its verdict.
    task: Option<tokio::task::JoinHandle<()>>,
    /// Told when a run ends, so the next one may start.
    finished_tx: mpsc::Sender<String>,
    finished_rx: mpsc::Receiver<String>,
}

impl LocalTests {
    pub(super) fn new(
        config: Config,
        events: EventSink,
        hub: Arc<Hub>,
        results_dir: PathBuf,
        engine_cancel: CancellationToken,
    ) -> Self {
        let (finished_tx, finished_rx) = mpsc::channel(4);
        Self { config, events, hub, results_dir, engine_cancel, running: None, task: None, finished_tx, finished_rx }
    }

    /// Forgets runs that have ended.
    fn reap(&mut self) {
        while let Ok(name) = self.finished_rx.try_recv() {
            if self.running.as_ref().is_some_and(|(n, _)| *n == name) {
                self.running = None;
            }
        }
    }

    pub(super) fn run(&mut self, name: &str) -> Result<Ack, CommandError> {
        self.reap();
        let test = self
            .config
            .tests
            .iter()
            .find(|t| t.name == name)
            .cloned()
            .ok_or_else(|| CommandError::new(format!("no test `{name}` in the configuration")))?;
        if let Some((other, _)) = &self.running {
            return Err(CommandError::new(format!("{other} is running; one test runs at a time")));
        }
        if test.kind == TestKind::Deploy {
            return Err(CommandError::new(format!(
                "{name} is a deployment test: renting GPUs through the shopper is not built into this version yet"
            )));
        }
        let model = self.config.models.iter().find(|m| m.id == test.model).ok_or_else(|| {
            CommandError::new(format!("{name} names model `{}`, which is not configured", test.model))
        })?;
        let state = self.hub.model_state(&model.id).unwrap_or_default();
        if state != ModelState::Ready {
            return Err(CommandError::new(format!("{} is {}, not ready: start it first", model.id, state.name())));
        }
        let mut opts = ProbeOptions::from_config(model.base_url(), None, &test.probe);
        let key_var = model.api_key_env.as_ref();
        opts.api_key =
            key_var.and_then(|var| model.env.get(var).cloned().or_else(|| std::env::var(var).ok())).map(ApiKey::new);
        let cancel = self.engine_cancel.child_token();
        self.running = Some((name.to_owned(), cancel.clone()));
        let run = TestRun {
            test,
            events: self.events.clone(),
            results_dir: self.results_dir.clone(),
            finished: self.finished_tx.clone(),
        };
        self.task = Some(tokio::spawn(guarded(run, opts, cancel)));
        Ok(Ack { message: format!("running {name}") })
    }

    /// Waits (briefly) for a cancelled run to report its verdict, then ends it regardless.
    pub(super) async fn finish(&mut self) {
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(std::time::Duration::from_secs(5), &mut task).await.is_err()
        {
            tracing::warn!("a test run did not end within 5 s of being cancelled; aborting it");
            task.abort();
        }
    }

    pub(super) fn cancel(&mut self, name: &str) -> Result<Ack, CommandError> {
        self.reap();
        match &self.running {
            Some((running, token)) if running == name => {
                token.cancel();
                Ok(Ack { message: format!("cancelling {name}") })
            }
            _ => Err(CommandError::new(format!("{name} is not running"))),
        }
    }
}

/// Runs a test; a panic in it (a bug) still ends with a verdict and frees the slot, so the
/// Tests pane never shows a run that will never finish.
async fn guarded(run: TestRun, opts: ProbeOptions, cancel: CancellationToken) {
    let (events, finished, name) = (run.events.clone(), run.finished.clone(), run.test.name.clone());
    if let Err(panic) = std::panic::AssertUnwindSafe(run.go(opts, cancel)).catch_unwind().await {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        tracing::error!("the test run of {name} panicked: {why}");
        let _ = finished.send(name.clone()).await;
        let reason = format!("the test run crashed (a bug in llmdeck): {why}");
        let change = TestChange::Failed { reason, summary: None };
        let _ = events.send(Event::Test(TestEvent { ts: Utc::now(), test: name, change })).await;
    }
}

struct TestRun {
    test: TestConfig,
    events: EventSink,
    results_dir: PathBuf,
    finished: mpsc::Sender<String>,
}

impl TestRun {
    async fn go(self, opts: ProbeOptions, cancel: CancellationToken) {
        let name = self.test.name.clone();
        self.emit(TestChange::Running { target: opts.base_url.clone() }).await;
        let amount = match opts.stop {
            probe::Stop::Requests(n) => format!("{n} requests"),
            probe::Stop::Duration(d) => format!("requests for {}", crate::util::fmt_duration_ms(d.as_millis() as u64)),
        };
        let shape = format!(
            "{amount}, concurrency {}, {}",
            opts.concurrency,
            if opts.stream { "streaming" } else { "not streaming" }
        );
        self.log(Level::Info, format!("probing {} ({shape})", opts.base_url)).await;
        let (progress_tx, mut progress_rx) = mpsc::channel(8);
        let forward = {
            let (events, test) = (self.events.clone(), name.clone());
            tokio::spawn(async move {
                while let Some(progress) = progress_rx.recv().await {
                    let _ =
                        events.send(Event::Probe(ProbeEvent { ts: Utc::now(), test: test.clone(), progress })).await;
                }
            })
        };
        let result = probe::run(opts, cancel.clone(), Some(progress_tx)).await;
        let _ = forward.await;
        let change = match result {
            Ok(report) => {
                let mut summary = summarize(&report);
                summary.report_file = self.save(&report).await;
                if cancel.is_cancelled() {
                    TestChange::Cancelled { summary: Some(summary) }
                } else if report.all_succeeded() {
                    TestChange::Passed { summary }
                } else {
                    let failed = report.requests - report.count(Outcome::Success);
                    TestChange::Failed {
                        reason: format!("{failed} of {} requests failed", report.requests),
                        summary: Some(summary),
                    }
                }
            }
            Err(probe::ProbeError::Cancelled) => TestChange::Cancelled { summary: None },
            Err(e) => TestChange::Failed { reason: e.to_string(), summary: None },
        };
        let (level, verdict) = match &change {
            TestChange::Passed { .. } => (Level::Info, "passed".to_owned()),
            TestChange::Failed { reason, .. } => (Level::Error, format!("failed: {reason}")),
            TestChange::Cancelled { .. } => (Level::Warn, "cancelled".to_owned()),
            TestChange::Running { .. } => (Level::Info, "running".to_owned()),
        };
        self.log(level, format!("{name} {verdict}")).await;
        // Free the slot first: whoever sees the verdict may start the next run at once.
        let _ = self.finished.send(name).await;
        self.emit(change).await;
    }

    /// A line in the test's own log source (`l` on the test shows it).
    async fn log(&self, level: Level, text: String) {
        let batch = LogBatch::single(LogSource::Test(self.test.name.clone()), LogLine::internal(level, text));
        let _ = self.events.send(Event::Log(batch)).await;
    }

    async fn emit(&self, change: TestChange) {
        let _ = self.events.send(Event::Test(TestEvent { ts: Utc::now(), test: self.test.name.clone(), change })).await;
    }

    /// Writes the report as JSON to `<data dir>/results/<test>-<time>.json`.
    async fn save(&self, report: &ProbeReport) -> Option<String> {
        let stem = crate::logs::file::sanitize_file_stem(&self.test.name);
        let path = self.results_dir.join(format!("{stem}-{}.json", Utc::now().format("%Y%m%dT%H%M%SZ")));
        let json = serde_json::to_vec_pretty(report).ok()?;
        let write = async {
            tokio::fs::create_dir_all(&self.results_dir).await?;
            tokio::fs::write(&path, json).await
        };
        match write.await {
            Ok(()) => Some(path.display().to_string()),
            Err(e) => {
                tracing::warn!("writing the report of {} to {}: {e}", self.test.name, path.display());
                None
            }
        }
    }
}

fn summarize(r: &ProbeReport) -> TestSummary {
    TestSummary {
        requests: r.requests,
        succeeded: r.count(Outcome::Success),
        latency_p50_ms: r.latency_ms.p50,
        ttft_p50_ms: r.ttft_ms.p50,
        output_tokens_per_s: r.output_tokens_per_s,
        expected_answer_rate: r.expected_answer_rate,
        report_file: None,
    }
}
