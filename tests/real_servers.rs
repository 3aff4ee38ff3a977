//! A real model server, end to end: llama.cpp's OpenAI-compatible server (`llama-cpp-python`)
//! on CPU serving SmolLM2-135M-Instruct, prepared by `scripts/real-servers.sh` (`.ci/run` runs
//! it). Supervised through `llmdeck daemon`, probed through `llmdeck probe`, crashed, tested
//! through the engine, stopped.
//!
//! Without the prepared server these tests say so on one line and are skipped — except in CI
//! (`CI` set), where a missing server is a failure, never a silent pass.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{BIN, Daemon, Sandbox, alive, free_port, wait_gone};
use serde_json::Value;

/// Loading the model takes a few seconds on a loaded 2-core machine; give it room.
const LONG: Duration = Duration::from_secs(120);

struct RealServer {
    python: PathBuf,
    model: PathBuf,
}

/// The prepared server, or `None` (and one line on stderr) when it is not prepared here.
fn real_server() -> Option<RealServer> {
    let from_env = || Some((std::env::var_os("LLMDECK_REAL_PYTHON")?, std::env::var_os("LLMDECK_REAL_MODEL")?));
    let from_cache = || {
        let cache = std::env::var_os("LLMDECK_REAL_SERVERS_DIR").map(PathBuf::from).or_else(|| {
            let base = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
            Some(base.join("llmdeck").join("real-servers"))
        })?;
        let text = std::fs::read_to_string(cache.join("env")).ok()?;
        let value = |key: &str| {
            text.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).map(|v| std::ffi::OsString::from(v.trim()))
        };
        Some((value("LLMDECK_REAL_PYTHON")?, value("LLMDECK_REAL_MODEL")?))
    };
    let found = from_env().or_else(from_cache).map(|(p, m)| RealServer { python: p.into(), model: m.into() });
    match found {
        Some(s) if s.python.exists() && s.model.exists() => Some(s),
        _ if std::env::var_os("CI").is_some() => {
            panic!("the real model server is not prepared: .ci/run runs scripts/real-servers.sh first")
        }
        _ => {
            eprintln!("skipped: no real model server here (run scripts/real-servers.sh to prepare it)");
            None
        }
    }
}

/// The `models:` entry of the real server on `port` (recipe: docs/servers.md, llama-cpp-python).
fn model_yaml(server: &RealServer, id: &str, port: u16, extra: &str) -> String {
    format!(
        "  - id: {id}\n    command: {python}\n    args: [-m, llama_cpp.server, --model, '{model}', --model_alias, smollm2, --host, 127.0.0.1, --port, \"{port}\", --n_ctx, \"2048\"]\n    port: {port}\n    health: {{ interval_s: 1, timeout_s: 10, startup_timeout_s: 120 }}\n    stop_timeout_s: 10\n{extra}",
        python = server.python.display(),
        model = server.model.display(),
    )
}

fn is(model: &'static str, state: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v["type"] == "model" && v["model"] == model && v["state"] == state
}

/// `llmdeck probe ... --json` against `base`.
fn probe(base: &str, args: &[&str]) -> Value {
    let out = Command::new(BIN)
        .arg("probe")
        .arg(base)
        .args(["--max-tokens", "16", "--json"])
        .args(args)
        .output()
        .expect("run llmdeck probe");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "probe printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn supervised_probed_crashed_and_stopped() {
    let Some(server) = real_server() else { return };
    let sb = Sandbox::new();
    let port = free_port();
    let config = sb.write_config(&format!(
        "gpu: {{ backend: none }}\nmodels:\n{}",
        model_yaml(&server, "smol", port, "    restart: { policy: on-failure, delay_s: 1 }\n")
    ));
    let mut d = Daemon::start(&sb, &config);

    // Readiness as it must be judged for this server: it has no /health (404), so /v1/models
    // alone decides.
    let ready = d.wait_for("smol ready", LONG, is("smol", "ready"));
    assert_eq!(ready["health"], "models_only", "{ready}");
    // Its output is captured with sensible levels: uvicorn's INFO lines are info, and the
    // loader's chatter on stderr is not taken for errors.
    let logs: Vec<&Value> = d.seen.iter().filter(|v| v["type"] == "log" && v["source"] == "model:smol").collect();
    let lines: Vec<&Value> = logs.iter().flat_map(|v| v["lines"].as_array().into_iter().flatten()).collect();
    assert!(
        lines
            .iter()
            .any(|l| l["text"].as_str().is_some_and(|t| t.contains("Uvicorn running on")) && l["level"] == "info"),
        "uvicorn's start line, at info"
    );
    let errors = lines.iter().filter(|l| l["level"] == "error" || l["level"] == "critical").count();
    assert_eq!(
        errors,
        0,
        "a healthy start logs no errors: {:?}",
        lines.iter().filter(|l| l["level"] == "error").take(3).collect::<Vec<_>>()
    );

    // The probe, non-streaming and streaming, one request at a time.
    let base = format!("http://127.0.0.1:{port}");
    let plain = probe(&base, &["--requests", "4", "--concurrency", "1", "--no-stream"]);
    eprintln!("real server, non-streaming: {plain}");
    assert_eq!(plain["outcomes"]["success"], 4, "{plain}");
    assert!(plain["output_tokens_per_s"].as_f64().is_some_and(|t| t > 0.0), "{plain}");
    assert_eq!(plain["model"], "smollm2");
    // Even one at a time, this server sometimes answers a stream that follows another at once
    // with the role chunk and `[DONE]` (it is still busy finishing the last one): counted as
    // `incomplete`, never as a success. The first request of a run always gets an answer.
    let streamed = probe(&base, &["--requests", "4", "--concurrency", "1", "--stream"]);
    eprintln!("real server, streaming: {streamed}");
    let (ok, cut) = (streamed["outcomes"]["success"].as_u64(), streamed["outcomes"]["incomplete"].as_u64());
    assert_eq!(ok.unwrap_or(0) + cut.unwrap_or(0), 4, "{streamed}");
    assert!(ok.is_some_and(|n| n >= 1), "{streamed}");
    let (ttft, latency) = (streamed["ttft_ms"]["p50"].as_f64(), streamed["latency_ms"]["p50"].as_f64());
    assert!(ttft.is_some_and(|t| latency.is_some_and(|l| t < l)), "TTFT below latency: {streamed}");
    // Concurrent streams, as this server really answers them: at most one at a time is served
    // (none, right after another stream), the others are cut off (a role chunk, then [DONE]) —
    // counted as `incomplete`, never as successes.
    let busy = probe(&base, &["--requests", "8", "--concurrency", "4", "--stream"]);
    eprintln!("real server, 4 concurrent streams: {busy}");
    let success = busy["outcomes"]["success"].as_u64().unwrap_or(0);
    let cut_off = busy["outcomes"]["incomplete"].as_u64().unwrap_or(0);
    assert_eq!(success + cut_off, 8, "every request ends as a success or a cut-off answer: {busy}");
    // It serves one stream at a time: of four sent at once, at least three are cut off.
    assert!(cut_off >= 3, "{busy}");

    // A crash (kill -9) is labelled, backed off and restarted to ready.
    let pid = d
        .model_events("smol")
        .iter()
        .filter(|v| v["state"] == "starting")
        .find_map(|v| v["pid"].as_u64())
        .expect("pid");
    common::unsafe_kill(pid as u32, 9);
    let crashed = d.wait_for("the crash", LONG, is("smol", "crashed"));
    assert_eq!(crashed["signal"], 9, "{crashed}");
    d.wait_for("the backoff", LONG, is("smol", "backoff"));
    let again =
        d.wait_for("ready again", LONG, |v| is("smol", "ready")(v) && v["seq"].as_u64() > crashed["seq"].as_u64());
    assert_eq!(again["health"], "models_only");

    // Stop leaves nothing running: the process is gone and the port is free.
    let pid = d
        .model_events("smol")
        .iter()
        .filter(|v| v["state"] == "starting")
        .filter_map(|v| v["pid"].as_u64())
        .next_back()
        .expect("pid") as u32;
    assert!(alive(pid));
    d.signal(15);
    assert!(d.wait_exit(LONG).success());
    assert!(wait_gone(pid, Duration::from_secs(15)), "the server outlived llmdeck");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "the port is free");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_test_run_against_it_produces_a_report() {
    use llmdeck::engine::{Engine, EngineOptions};
    use llmdeck::protocol::{Command, Event, RunChange, VerdictOutcome};
    let Some(server) = real_server() else { return };
    let sb = Sandbox::new();
    let yaml = format!(
        "gpu: {{ backend: none }}\nmodels:\n{}tests:\n  - {{ name: smol-local, kind: local, model: smol, probe: {{ requests: 4, concurrency: 1, max_tokens: 16, stream: false }} }}\n",
        model_yaml(&server, "smol", free_port(), "    autostart: false\n")
    );
    let config = llmdeck::config::load_str(&yaml, "test").unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let opts = EngineOptions {
        log_dir: sb.path().join("logs"),
        state_dir: sb.path().join("state"),
        data_dir: sb.path().join("data"),
        config,
        config_path: None,
        gpu_backend: None,
        keeper_exe: Some(env!("CARGO_BIN_EXE_llmdeck").into()),
    };
    let (engine, sub) = Engine::start_subscribed(opts).await.expect("engine");
    let mut events = sub.events;
    // The model is stopped: the run starts it, waits for it, probes it.
    engine.handle().send(Command::RunTest { test: "smol-local".into() }).await.expect("run accepted");
    let finished = tokio::time::timeout(LONG * 2, async {
        loop {
            match events.recv().await {
                Ok(e) => {
                    if let Event::Run(r) = &e.event
                        && let RunChange::Finished { verdict, report_file, .. } = &r.change
                    {
                        return (verdict.clone(), report_file.clone());
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("the engine went away: {e}"),
            }
        }
    })
    .await
    .expect("the run finishes");
    let (verdict, report) = finished;
    assert_eq!(verdict.outcome, VerdictOutcome::Pass, "{verdict:?}");
    let report: Value = serde_json::from_slice(&std::fs::read(report.expect("a report")).expect("read")).expect("JSON");
    assert_eq!(report["schema"], 1);
    assert_eq!(report["probe"]["outcomes"]["success"], 4);
    eprintln!("real server, local test: {}", report["probe"]);
    engine.shutdown("test over").await;
}
