//! The engine through its public API: a local test run waits for (or starts) its model, probes
//! it with live figures as events, judges it, writes a versioned report, keeps its history
//! across restarts, can be cancelled, and its cleanup is waited for at shutdown.

mod common;

use std::sync::Arc;
use std::time::Duration;

use llmdeck::config;
use llmdeck::engine::{Engine, EngineHandle, EngineOptions};
use llmdeck::protocol::{
    Command, Event, Link, ModelChange, RunChange, Sequenced, StepStatus, VerdictOutcome, answered, local_steps,
};
use tokio::sync::broadcast;

fn options(sb: &common::Sandbox, probe: &str, mock_args: &str, extra_test: &str) -> EngineOptions {
    let yaml = format!(
        "gpu: {{ backend: none }}\nruns: {{ cleanup_budget_s: 20 }}\nmodels:\n{}{}tests:\n  - {{ name: smoke, kind: local, model: m, probe: {probe} }}\n  - {{ name: elsewhere, kind: local, model: idle, probe: {{ requests: 2 }} }}\n{extra_test}",
        common::mock_model("m", common::free_port(), mock_args, ""),
        common::mock_model("idle", common::free_port(), "", "    autostart: false\n"),
    );
    let config = config::load_str(&yaml, "test").unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    EngineOptions {
        log_dir: sb.path().join("logs"),
        state_dir: sb.path().join("state"),
        data_dir: sb.path().join("data"),
        config,
        config_path: None,
        gpu_backend: None,
        keeper_exe: Some(env!("CARGO_BIN_EXE_llmdeck").into()),
    }
}

async fn next_matching(
    events: &mut broadcast::Receiver<Arc<Sequenced>>,
    what: &str,
    pred: impl Fn(&Event) -> bool,
) -> Event {
    let wait = async {
        loop {
            match events.recv().await {
                Ok(e) if pred(&e.event) => return e.event.clone(),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("engine closed while waiting for {what}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait).await.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn model_ready(id: &'static str) -> impl Fn(&Event) -> bool {
    move |e| matches!(e, Event::Model(m) if m.model == id && matches!(m.change, ModelChange::Ready { .. }))
}

fn finished(test: &'static str) -> impl Fn(&Event) -> bool {
    move |e| matches!(e, Event::Run(r) if r.test == test && matches!(r.change, RunChange::Finished { .. }))
}

/// An engine whose model `m` is ready, with every event since its start.
async fn engine_with_ready_model(opts: EngineOptions) -> (Engine, EngineHandle, broadcast::Receiver<Arc<Sequenced>>) {
    // Subscribed before the first event: a fast model's `ready` cannot slip past.
    let (engine, sub) = Engine::start_subscribed(opts).await.expect("engine");
    let mut events = sub.events;
    next_matching(&mut events, "the model to be ready", model_ready("m")).await;
    let handle = engine.handle();
    (engine, handle, events)
}

fn verdict_of(event: &Event) -> (VerdictOutcome, Vec<String>, Option<String>) {
    match event {
        Event::Run(r) => match &r.change {
            RunChange::Finished { verdict, report_file, .. } => {
                (verdict.outcome, verdict.reasons.clone(), report_file.clone())
            }
            other => panic!("not a verdict: {other:?}"),
        },
        other => panic!("not a run event: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_run_has_three_steps_live_progress_and_a_versioned_report() {
    let sb = common::Sandbox::new();
    let opts = options(&sb, "{ requests: 12, concurrency: 2, max_tokens: 16 }", ", --latency-ms, \"50\"", "");
    let (engine, handle, mut events) = engine_with_ready_model(opts).await;

    handle.send(Command::RunTest { test: "smoke".into() }).await.expect("run accepted");
    let busy = handle.send(Command::RunTest { test: "smoke".into() }).await.expect_err("one at a time");
    assert!(busy.message.contains("one test runs at a time"), "{}", busy.message);
    let started = next_matching(
        &mut events,
        "the run to start",
        |e| matches!(e, Event::Run(r) if r.test == "smoke" && matches!(r.change, RunChange::Started { .. })),
    )
    .await;
    let Event::Run(started) = started else { unreachable!() };
    let RunChange::Started { steps, .. } = &started.change else { unreachable!() };
    assert_eq!(steps, &[local_steps::WAIT_READY, local_steps::PROBE, local_steps::VERDICT]);
    next_matching(
        &mut events,
        "live probe figures",
        |e| matches!(e, Event::Run(r) if r.test == "smoke" && matches!(r.change, RunChange::Probe { .. })),
    )
    .await;
    let done = next_matching(&mut events, "the verdict", finished("smoke")).await;
    let (outcome, reasons, report) = verdict_of(&done);
    assert_eq!(outcome, VerdictOutcome::Pass, "{reasons:?}");

    let report = report.expect("report written");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).expect("report file")).expect("json");
    assert_eq!(json["schema"], 1);
    assert_eq!(json["probe"]["requests"], 12);
    assert_eq!(json["run"]["verdict"]["outcome"], "pass");
    let steps: Vec<(&str, &str)> = json["run"]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| (s["name"].as_str().unwrap_or("?"), s["status"].as_str().unwrap_or("?")))
        .collect();
    assert_eq!(steps, [("wait ready", "done"), ("probe", "done"), ("verdict", "done")]);

    let last = handle.snapshot().state.tests[0].last().cloned().expect("the run is in the history");
    assert_eq!(last.summary.as_ref().map(|s| (s.requests, s.succeeded)), Some((12, 12)));
    assert_eq!(last.summary.as_ref().and_then(|s| s.expected_answer_rate), Some(1.0));
    engine.shutdown("test over").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_model_is_started_by_the_run_and_the_history_survives_a_restart() {
    let sb = common::Sandbox::new();
    let opts = options(&sb, "{ requests: 2 }", "", "");
    let (engine, handle, mut events) = engine_with_ready_model(opts.clone()).await;
    assert_eq!(handle.snapshot().state.model("idle").map(|m| m.state.name()), Some("stopped"));

    handle.send(Command::RunTest { test: "elsewhere".into() }).await.expect("run accepted");
    next_matching(&mut events, "the idle model started by the run", model_ready("idle")).await;
    let (outcome, reasons, _) = verdict_of(&next_matching(&mut events, "the verdict", finished("elsewhere")).await);
    assert_eq!(outcome, VerdictOutcome::Pass, "{reasons:?}");
    let run = handle.snapshot().state.tests[1].last().cloned().expect("history");
    assert!(run.steps[0].detail.contains("idle is ready"), "{:?}", run.steps[0]);
    engine.shutdown("restart").await;

    // The next engine on the same directories knows the last runs.
    let again = Engine::start(opts).await.expect("engine again");
    let state = again.handle().snapshot().state;
    let reloaded = state.tests[1].last().expect("history reloaded from the report");
    assert_eq!(reloaded.id, run.id);
    assert_eq!(reloaded.verdict.as_ref().map(|v| v.outcome), Some(VerdictOutcome::Pass));
    again.shutdown("test over").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_test_ends_it_as_cancelled() {
    let sb = common::Sandbox::new();
    let opts = options(&sb, "{ requests: 1000, concurrency: 2, max_tokens: 16 }", ", --latency-ms, \"200\"", "");
    let (engine, handle, mut events) = engine_with_ready_model(opts).await;
    handle.send(Command::RunTest { test: "smoke".into() }).await.expect("run accepted");
    next_matching(&mut events, "the probe to run", |e| {
        matches!(e, Event::Run(r) if matches!(r.change, RunChange::Step { index: 1, status: StepStatus::Running, .. }))
    })
    .await;
    handle.send(Command::CancelTest { test: "smoke".into() }).await.expect("cancel accepted");
    let (outcome, _, _) = verdict_of(&next_matching(&mut events, "the verdict", finished("smoke")).await);
    assert_eq!(outcome, VerdictOutcome::Cancelled);
    let run = handle.snapshot().state.tests[0].last().cloned().expect("history");
    assert_eq!(run.steps[2].status, StepStatus::Skipped, "{:?}", run.steps);
    // The next run may start.
    handle.send(Command::RunTest { test: "smoke".into() }).await.expect("a new run after the cancel");
    engine.shutdown("test over").await;
}

/// Shutdown cancels a run and waits for its cleanup (a command that takes a few seconds): it
/// finishes, and is reported done, before the models stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_a_runs_cleanup() {
    let sb = common::Sandbox::new();
    let marker = sb.path().join("cleaned");
    let slow = format!(
        "  - name: slow-cleanup\n    kind: local\n    model: m\n    probe: {{ requests: 1000, concurrency: 1 }}\n    cleanup_command: \"sleep 2; echo cleaned > '{}'\"\n",
        marker.display()
    );
    let opts = options(&sb, "{ requests: 2 }", ", --latency-ms, \"200\"", &slow);
    let (engine, handle, mut events) = engine_with_ready_model(opts).await;
    handle.send(Command::RunTest { test: "slow-cleanup".into() }).await.expect("run accepted");
    next_matching(&mut events, "the probe to run", |e| {
        matches!(e, Event::Run(r) if matches!(r.change, RunChange::Step { index: 1, status: StepStatus::Running, .. }))
    })
    .await;
    let waiter = tokio::spawn(async move {
        let mut seen = Vec::new();
        // Until the engine says it stopped (this test still holds a handle, so the stream
        // itself stays open).
        while let Ok(e) = events.recv().await {
            let stopped =
                matches!(&e.event, Event::Engine(en) if en.kind == llmdeck::protocol::EngineEventKind::Stopped);
            seen.push(e.event.clone());
            if stopped {
                break;
            }
        }
        seen
    });
    tokio::time::timeout(Duration::from_secs(60), engine.shutdown("test over")).await.expect("shutdown ends");
    assert!(marker.exists(), "the cleanup command ran to its end before shutdown returned");
    let seen = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the engine said it stopped")
        .expect("events");
    let cleanup_done = seen.iter().position(|e| {
        matches!(e, Event::Run(r) if matches!(r.change, RunChange::Step { index: 3, status: StepStatus::Done, .. }))
    });
    let model_stopping = seen.iter().position(
        |e| matches!(e, Event::Model(m) if m.model == "m" && matches!(m.change, ModelChange::Stopping { .. })),
    );
    assert!(cleanup_done.is_some(), "the cleanup step is reported done: {seen:#?}");
    assert!(cleanup_done < model_stopping, "the cleanup finished before the models were stopped");
    let verdict = seen.iter().find(|e| finished("slow-cleanup")(e)).expect("a verdict");
    assert_eq!(verdict_of(verdict).0, VerdictOutcome::Cancelled);
}

/// Commands submitted one after another reach the model in that order: stop then start is
/// a restart, never a start (refused: already running) followed by a stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_reach_their_model_in_the_order_submitted() {
    let sb = common::Sandbox::new();
    let (engine, handle, mut events) = engine_with_ready_model(options(&sb, "{ requests: 1 }", "", "")).await;
    for _ in 0..3 {
        let stop = handle.submit(Command::StopModel { model: "m".into() }).expect("stop queued");
        let start = handle.submit(Command::StartModel { model: "m".into() }).expect("start queued");
        answered(stop).await.expect("stop accepted");
        // Swapped, the start would be refused ("already running") and the stop would win.
        let started = answered(start).await.expect("start accepted, not refused as already running");
        assert!(
            started.message.contains("start again once stopped") || started.message.contains("starting"),
            "{}",
            started.message
        );
        next_matching(
            &mut events,
            "stopped",
            |e| matches!(e, Event::Model(m) if m.model == "m" && matches!(m.change, ModelChange::Stopped { .. })),
        )
        .await;
        next_matching(&mut events, "ready again", model_ready("m")).await;
    }
    engine.shutdown("test over").await;
}

/// With visible GPUs (simulated here), a local run reports the GPU energy its probe took and
/// the joules per output token, from the sampler's energy counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_run_on_simulated_gpus_reports_energy_per_token() {
    let sb = common::Sandbox::new();
    let mut opts = options(&sb, "{ requests: 12, concurrency: 1, max_tokens: 16 }", ", --latency-ms, \"150\"", "");
    opts.config.gpu.backend = config::GpuBackend::Simulated;
    opts.config.gpu.sample_ms = 100;
    let (engine, handle, mut events) = engine_with_ready_model(opts).await;
    // The sampler has seen the model's process on a GPU before the probe starts.
    next_matching(&mut events, "a sample showing the model on a GPU", |e| {
        matches!(e, Event::Gpu(llmdeck::protocol::GpuEvent::Sampled { gpus, .. })
            if gpus.iter().any(|g| g.processes.iter().any(|p| p.model.as_deref() == Some("m"))))
    })
    .await;
    handle.send(Command::RunTest { test: "smoke".into() }).await.expect("run accepted");
    let done = next_matching(&mut events, "the verdict", finished("smoke")).await;
    let (outcome, reasons, report) = verdict_of(&done);
    assert_eq!(outcome, VerdictOutcome::Pass, "{reasons:?}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.expect("report")).expect("report file")).expect("json");
    let energy = &json["energy"];
    let joules = energy["joules"].as_f64().unwrap_or(0.0);
    assert!(joules > 0.0, "energy over the probe: {json}");
    let per_token = energy["joules_per_output_token"].as_f64().unwrap_or(0.0);
    assert!(per_token > 0.0 && per_token < joules, "{energy}");
    assert!(!energy["gpus"].as_array().is_none_or(Vec::is_empty), "{energy}");
    engine.shutdown("test over").await;
}
