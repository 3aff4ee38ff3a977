//! The engine through its public API: a local test probes a supervised mock model, reports live
//! figures as events, writes its report, and can be cancelled.

mod common;

use std::sync::Arc;
use std::time::Duration;

use llmdeck::config;
use llmdeck::engine::{Command, Engine, EngineOptions, Event, ModelChange, TestChange};
use tokio::sync::broadcast;

fn options(sb: &common::Sandbox, probe: &str, mock_args: &str) -> EngineOptions {
    let yaml = format!(
        "gpu: {{ backend: none }}\nmodels:\n{}{}tests:\n  - {{ name: smoke, kind: local, model: m, probe: {probe} }}\n  - {{ name: elsewhere, kind: local, model: idle }}\n",
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
    }
}

async fn next_matching(
    events: &mut broadcast::Receiver<Arc<Event>>,
    what: &str,
    pred: impl Fn(&Event) -> bool,
) -> Event {
    let wait = async {
        loop {
            match events.recv().await {
                Ok(e) if pred(&e) => return (*e).clone(),
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

fn is_verdict(e: &Event) -> bool {
    matches!(e, Event::Test(t) if !matches!(t.change, TestChange::Running { .. }))
}

/// An engine whose model `m` is ready, with every event since its start.
async fn engine_with_ready_model(
    sb: &common::Sandbox,
    probe: &str,
    mock_args: &str,
) -> (Engine, llmdeck::engine::EngineHandle, broadcast::Receiver<Arc<Event>>) {
    // Subscribed before the first event: a fast model's `ready` cannot slip past.
    let (engine, sub) = Engine::start_subscribed(options(sb, probe, mock_args)).await.expect("engine");
    let mut events = sub.events;
    next_matching(&mut events, "the model to be ready", model_ready("m")).await;
    let handle = engine.handle();
    (engine, handle, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_test_probes_its_model_with_live_progress_and_a_saved_report() {
    let sb = common::Sandbox::new();
    let (engine, handle, mut events) =
        engine_with_ready_model(&sb, "{ requests: 12, concurrency: 2, max_tokens: 16 }", ", --latency-ms, \"50\"")
            .await;

    // A test whose model is not running is refused with a reason, not queued.
    let refused = handle.send(Command::RunTest { test: "elsewhere".into() }).await.expect_err("idle model");
    assert!(refused.message.contains("not ready"), "{}", refused.message);

    handle.send(Command::RunTest { test: "smoke".into() }).await.expect("run accepted");
    let busy = handle.send(Command::RunTest { test: "smoke".into() }).await.expect_err("one at a time");
    assert!(busy.message.contains("one test runs at a time"), "{}", busy.message);
    next_matching(&mut events, "live probe figures", |e| matches!(e, Event::Probe(p) if p.test == "smoke")).await;
    let done = next_matching(&mut events, "the verdict", is_verdict).await;
    let Event::Test(t) = done else { unreachable!() };
    let TestChange::Passed { summary } = t.change else {
        let report = match &t.change {
            TestChange::Failed { summary: Some(s), .. } => {
                s.report_file.as_ref().and_then(|f| std::fs::read_to_string(f).ok())
            }
            _ => None,
        };
        panic!("expected a pass: {:?}\n{}", t.change, report.unwrap_or_default())
    };
    assert_eq!((summary.requests, summary.succeeded), (12, 12));
    assert_eq!(summary.expected_answer_rate, Some(1.0));
    let report = summary.report_file.expect("report written");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).expect("report file")).expect("json");
    assert_eq!(json["requests"], 12);
    assert_eq!(
        handle.snapshot().state.tests[0].last.as_ref().map(|r| r.verdict),
        Some(llmdeck::engine::TestVerdict::Pass)
    );
    engine.shutdown("test over").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_test_ends_it_as_cancelled() {
    let sb = common::Sandbox::new();
    let (engine, handle, mut events) =
        engine_with_ready_model(&sb, "{ requests: 1000, concurrency: 2, max_tokens: 16 }", ", --latency-ms, \"200\"")
            .await;
    handle.send(Command::RunTest { test: "smoke".into() }).await.expect("run accepted");
    next_matching(
        &mut events,
        "the run to start",
        |e| matches!(e, Event::Test(t) if matches!(t.change, TestChange::Running { .. })),
    )
    .await;
    handle.send(Command::CancelTest { test: "smoke".into() }).await.expect("cancel accepted");
    let done = next_matching(&mut events, "the verdict", is_verdict).await;
    assert!(matches!(done, Event::Test(ref t) if matches!(t.change, TestChange::Cancelled { .. })), "{done:?}");
    // The next run may start.
    handle.send(Command::RunTest { test: "smoke".into() }).await.expect("a new run after the cancel");
    engine.shutdown("test over").await;
}

/// Commands submitted one after another reach the model in that order: stop then start is
/// a restart, never a start (refused: already running) followed by a stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_reach_their_model_in_the_order_submitted() {
    let sb = common::Sandbox::new();
    let (engine, handle, mut events) = engine_with_ready_model(&sb, "{ requests: 1 }", "").await;
    for _ in 0..3 {
        let stop = handle.submit(Command::StopModel { model: "m".into() }).expect("stop queued");
        let start = handle.submit(Command::StartModel { model: "m".into() }).expect("start queued");
        llmdeck::engine::answered(stop).await.expect("stop accepted");
        // Swapped, the start would be refused ("already running") and the stop would win.
        let started = llmdeck::engine::answered(start).await.expect("start accepted, not refused as already running");
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
