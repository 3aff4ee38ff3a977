//! Deployment tests through the binary against `llmdeck mock-shopper`: `llmdeck test run`
//! rents, deploys `llmdeck mock-llm` over the fake's SSH server, probes it through a tunnel and
//! always destroys the session; the session ledger and the janitor leave no orphan after a
//! `kill -9`; `llmdeck sessions cleanup` finds exactly the orphans.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{MockShopper, Sandbox, describe_exit, tail_of_file, unsafe_kill, wait_child};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_llmdeck");

/// A config with one deploy test `dep` deploying mock-llm with `mock_args` (or `command`).
fn config(sb: &Sandbox, shop: &MockShopper, command: Option<&str>, extra_test: &str) -> PathBuf {
    let port = common::free_port();
    let command = command.map_or_else(
        || format!("{BIN} mock-llm --port {{port}} --model-name {{model}} --tokens-per-s 2000"),
        str::to_owned,
    );
    let yaml = format!(
        r#"shopper: {{ url: "{url}", poll_initial_s: 0.2, poll_max_s: 1, stuck_after_s: 10, janitor_interval_s: 1, poll_s: 1 }}
runs: {{ cleanup_budget_s: 30 }}
tests:
  - name: dep
    kind: deploy
    model: tiny-model
    max_price: 1.0
    min_vram_gb: 20
    deploy:
      command: {command:?}
      port: {port}
      ready_timeout_s: 30
      env: {{ SECRET_TOKEN: "s3cr3t-value" }}
    probe: {{ requests: 6, concurrency: 2, max_tokens: 8 }}
{extra_test}"#,
        url = shop.url
    );
    sb.write_config(&yaml)
}

fn test_run(sb: &Sandbox, config: &Path, extra: &[&str]) -> Child {
    let err = std::fs::File::create(sb.path().join("test-run.stderr")).expect("stderr file");
    let out = std::fs::File::create(sb.path().join("test-run.stdout")).expect("stdout file");
    sb.command()
        .arg("--config")
        .arg(config)
        .args(["test", "run", "dep"])
        .args(extra)
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("llmdeck test run")
}

/// Waits for `llmdeck test run` and says what it printed if it did not end in time.
fn finish(sb: &Sandbox, child: &mut Child, shop: &MockShopper) -> (i32, String, String) {
    let status = wait_child(child, Duration::from_secs(90)).unwrap_or_else(|| {
        let _ = child.kill();
        panic!(
            "llmdeck test run did not finish in 90 s; stderr:\n{}\nmock-shopper:\n{}",
            tail_of_file(&sb.path().join("test-run.stderr"), 40),
            shop.stderr()
        )
    });
    let stdout = std::fs::read_to_string(sb.path().join("test-run.stdout")).unwrap_or_default();
    let stderr = std::fs::read_to_string(sb.path().join("test-run.stderr")).unwrap_or_default();
    (status.code().unwrap_or_else(|| panic!("{}\n{stderr}", describe_exit(status))), stdout, stderr)
}

/// One HTTP request to the fake, answered as JSON.
fn http(method: reqwest::Method, url: String, body: Option<Value>) -> Value {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().expect("client");
        let mut req = client.request(method, &url);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        resp.json().await.unwrap_or_else(|e| panic!("{url}: {e}"))
    })
}

fn shop_sessions(shop: &MockShopper) -> Vec<Value> {
    let v = http(reqwest::Method::GET, format!("{}/_fake/sessions", shop.url), None);
    v["sessions"].as_array().cloned().unwrap_or_default()
}

fn ledger_files(sb: &Sandbox) -> Vec<PathBuf> {
    let dir = sb.path().join("data").join("llmdeck").join("sessions");
    std::fs::read_dir(dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn all_stopped(shop: &MockShopper) -> bool {
    shop_sessions(shop).iter().all(|s| s["status"] == "stopped" && s["processes"].as_array().is_none_or(Vec::is_empty))
}

#[test]
fn a_passing_run_destroys_its_session_and_writes_json_and_junit() {
    let sb = Sandbox::new();
    let shop = MockShopper::start(&sb, &["--provision-delay", "0.5", "--destroy-delay", "0.3"]);
    let cfg = config(&sb, &shop, None, "");
    let junit = sb.path().join("junit.xml");
    let mut child = test_run(&sb, &cfg, &["--json", "--junit", junit.to_str().expect("utf-8")]);
    let (code, stdout, stderr) = finish(&sb, &mut child, &shop);
    assert_eq!(code, 0, "{stderr}\n{}", shop.stderr());
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let steps = report["run"]["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 11);
    assert!(steps.iter().all(|s| s["status"] == "done"), "{steps:#?}");
    assert!(report["cost_usd"].as_f64().is_some_and(|c| c > 0.0), "{report}");
    assert_eq!(report["run"]["offer"]["gpu_type"], "L4", "the cheapest offer that fits");
    // The secret went through the SSH channel's environment, never into the report or the output.
    assert!(!stdout.contains("s3cr3t-value") && !stderr.contains("s3cr3t-value"));
    let xml = std::fs::read_to_string(&junit).expect("junit written");
    assert!(xml.contains("<testsuite name=\"dep\" tests=\"11\" failures=\"0\""), "{xml}");
    assert_eq!(xml.matches("<testcase ").count(), 11);
    assert!(all_stopped(&shop), "{:#?}", shop_sessions(&shop));
    assert!(ledger_files(&sb).is_empty(), "the ledger forgets a stopped session");
}

#[test]
fn a_stale_offer_is_skipped_and_the_next_one_rented() {
    let sb = Sandbox::new();
    let shop = MockShopper::start(&sb, &["--provision-delay", "0.2", "--stale-first-create"]);
    let cfg = config(&sb, &shop, None, "");
    let mut child = test_run(&sb, &cfg, &["--json"]);
    let (code, stdout, stderr) = finish(&sb, &mut child, &shop);
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("report");
    assert_eq!(report["run"]["offer"]["gpu_type"], "RTX 4090", "the next cheapest: {report}");
    let sessions = shop_sessions(&shop);
    assert_eq!(sessions.len(), 1, "only one session was ever created: {sessions:#?}");
    assert!(all_stopped(&shop));
}

#[test]
fn failed_provisioning_fails_the_run_and_leaves_nothing() {
    let sb = Sandbox::new();
    let shop =
        MockShopper::start(&sb, &["--provision-delay", "0.2", "--fail-provisioning", "SSH verification timeout"]);
    let cfg = config(&sb, &shop, None, "");
    let mut child = test_run(&sb, &cfg, &[]);
    let (code, _stdout, stderr) = finish(&sb, &mut child, &shop);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("SSH verification timeout"), "{stderr}");
    assert!(all_stopped(&shop), "{:#?}", shop_sessions(&shop));
    assert!(ledger_files(&sb).is_empty());
}

#[test]
fn an_oom_while_loading_fails_at_wait_ready_with_the_line() {
    let sb = Sandbox::new();
    let shop = MockShopper::start(&sb, &["--provision-delay", "0.2"]);
    let oom = "sh -c 'echo loading; echo \"torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\" >&2; sleep 60'";
    let cfg = config(&sb, &shop, Some(oom), "");
    let mut child = test_run(&sb, &cfg, &["--json"]);
    let (code, stdout, stderr) = finish(&sb, &mut child, &shop);
    assert_eq!(code, 1, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("report");
    let wait_ready = &report["run"]["steps"][8];
    assert_eq!(wait_ready["status"], "failed");
    assert!(wait_ready["detail"].as_str().is_some_and(|d| d.contains("CUDA out of memory")), "{wait_ready}");
    assert!(all_stopped(&shop), "the sleep on the instance was killed with the session");
}

#[test]
fn the_instances_model_dying_during_the_probe_fails_the_run_and_cleanup_still_runs() {
    let sb = Sandbox::new();
    let shop = MockShopper::start(&sb, &["--provision-delay", "0.2"]);
    let slow = format!("{BIN} mock-llm --port {{port}} --model-name {{model}} --latency-ms 200");
    let cfg = config(&sb, &shop, Some(&slow), "");
    // Many slow requests: the probe is surely running when the server is killed.
    let text = std::fs::read_to_string(&cfg).expect("config").replace("requests: 6,", "requests: 400,");
    std::fs::write(&cfg, text).expect("config");
    let mut child = test_run(&sb, &cfg, &["--json"]);
    let stderr_file = sb.path().join("test-run.stderr");
    wait_until("the probe to start", Duration::from_secs(60), || {
        std::fs::read_to_string(&stderr_file).is_ok_and(|t| t.contains("▶ probe"))
    });
    std::thread::sleep(Duration::from_millis(500));
    let pids: Vec<u64> = shop_sessions(&shop)
        .iter()
        .flat_map(|s| s["processes"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p.as_u64())
        .collect();
    assert!(!pids.is_empty(), "the deployed server runs on the instance");
    // Each is the process group of a command run on the "instance": kill it whole.
    for pgid in pids {
        let _ = std::process::Command::new("kill").args(["-9", "--", &format!("-{pgid}")]).status();
    }
    let (code, stdout, stderr) = finish(&sb, &mut child, &shop);
    assert_eq!(code, 1, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("report");
    let outcomes = &report["probe"]["outcomes"];
    let failed: u64 = outcomes
        .as_object()
        .expect("outcomes")
        .iter()
        .filter(|(k, _)| *k != "success")
        .filter_map(|(_, v)| v.as_u64())
        .sum();
    assert!(failed > 0, "the failures are classified: {outcomes}");
    assert_eq!(report["run"]["steps"][10]["status"], "done", "the cleanup still ran: {}", report["run"]["steps"][10]);
    assert!(all_stopped(&shop));
}

#[test]
fn sigint_while_waiting_for_running_exits_130_after_the_session_stopped() {
    let sb = Sandbox::new();
    let shop = MockShopper::start(&sb, &["--provision-delay", "60"]);
    let cfg = config(&sb, &shop, None, "");
    let mut child = test_run(&sb, &cfg, &[]);
    wait_until("the session to exist", Duration::from_secs(30), || !shop_sessions(&shop).is_empty());
    unsafe_kill(child.id(), 2);
    let (code, _stdout, stderr) = finish(&sb, &mut child, &shop);
    assert_eq!(code, 130, "{stderr}");
    assert!(all_stopped(&shop), "{:#?}", shop_sessions(&shop));
}

#[test]
fn a_second_concurrent_run_in_one_engine_is_refused() {
    // One run at a time per engine: the same test asked twice while it runs is refused.
    let sb = Sandbox::new();
    let shop = MockShopper::start(&sb, &["--provision-delay", "60"]);
    let cfg = config(&sb, &shop, None, "");
    let mut daemon = common::Daemon::start(&sb, &cfg);
    let url = daemon.ws_url(&sb);
    let token =
        llmdeck::remote::token::read(&sb.path().join("data").join("llmdeck").join("daemon.token")).expect("token");
    let send = |url: &str| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let link = llmdeck::remote::WsLink::connect(url, token.clone()).await.expect("attach");
            let first =
                llmdeck::protocol::Link::submit(&link, llmdeck::protocol::Command::RunTest { test: "dep".into() })
                    .expect("submitted");
            let first = llmdeck::protocol::answered(first).await;
            let second =
                llmdeck::protocol::Link::submit(&link, llmdeck::protocol::Command::RunTest { test: "dep".into() })
                    .expect("submitted");
            (first, llmdeck::protocol::answered(second).await)
        })
    };
    let (first, second) = send(&url);
    assert!(first.is_ok(), "{first:?}");
    let refused = second.expect_err("a second run is refused");
    assert!(refused.message.contains("one test runs at a time"), "{refused}");
    daemon.signal(15);
    let status = daemon.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "{}", describe_exit(status));
    assert!(all_stopped(&shop), "SIGTERM's cleanup destroyed the session: {:#?}", shop_sessions(&shop));
}

/// Starts `llmdeck test run`, kills it with SIGKILL once `ready` says so, then lets a new
/// llmdeck (the daemon) start: its janitor must destroy the orphan.
fn orphan_after_kill(shop_args: &[&str], ready: impl Fn(&Sandbox, &MockShopper) -> bool) {
    let sb = Sandbox::new();
    let shop = MockShopper::start(&sb, shop_args);
    let cfg = config(&sb, &shop, None, "");
    let mut child = test_run(&sb, &cfg, &[]);
    wait_until("the moment to kill", Duration::from_secs(30), || ready(&sb, &shop));
    child.kill().expect("kill -9");
    let _ = child.wait();
    let sessions = shop_sessions(&shop);
    assert_eq!(sessions.len(), 1);
    assert_ne!(sessions[0]["status"], "stopped", "the kill left a live rental behind: {sessions:#?}");

    // `sessions cleanup --dry-run` lists exactly the orphan and destroys nothing.
    let id = sessions[0]["id"].as_str().expect("id").to_owned();
    let dry = sb
        .command()
        .arg("--config")
        .arg(&cfg)
        .args(["sessions", "cleanup", "--dry-run", "--json"])
        .output()
        .expect("cleanup");
    assert!(dry.status.success(), "{}", String::from_utf8_lossy(&dry.stderr));
    let listed: Value = serde_json::from_slice(&dry.stdout).expect("json");
    let ids: Vec<&str> = listed.as_array().expect("array").iter().filter_map(|s| s["id"].as_str()).collect();
    assert_eq!(ids, vec![id.as_str()]);
    assert_ne!(shop_sessions(&shop)[0]["status"], "stopped", "a dry run destroys nothing");

    // The next llmdeck's janitor destroys it at start.
    let mut daemon = common::Daemon::start(&sb, &cfg);
    wait_until("the janitor to stop the orphan", Duration::from_secs(30), || all_stopped(&shop));
    daemon.signal(15);
    let status = daemon.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{}", describe_exit(status));
    wait_until("the ledger to forget it", Duration::from_secs(5), || ledger_files(&sb).is_empty());
}

#[test]
fn kill_9_after_the_create_answered_leaves_an_orphan_the_next_start_destroys() {
    orphan_after_kill(&["--provision-delay", "60"], |sb, _| {
        ledger_files(sb).iter().any(|f| std::fs::read_to_string(f).is_ok_and(|t| t.contains("\"session_id\": \"")))
    });
}

#[test]
fn kill_9_between_the_intent_and_the_answer_is_resolved_too() {
    orphan_after_kill(&["--provision-delay", "60", "--create-delay", "30"], |sb, shop| {
        !ledger_files(sb).is_empty() && !shop_sessions(shop).is_empty()
    });
}

#[test]
fn sessions_cleanup_destroys_orphans_and_waits_for_stopped() {
    let sb = Sandbox::new();
    let shop = MockShopper::start(&sb, &["--provision-delay", "0.2", "--destroy-delay", "0.5"]);
    let cfg = config(&sb, &shop, None, "");
    // A session nobody recorded: created straight through the API as our consumer.
    let list = sb.command().arg("--config").arg(&cfg).args(["config", "check"]).output().expect("config check");
    let summary = String::from_utf8_lossy(&list.stdout).to_string();
    let consumer = summary
        .split("consumer id ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(|s| s.trim_end_matches(')').to_owned())
        .unwrap_or_else(|| panic!("config check shows the consumer id: {summary}"));
    assert!(consumer.starts_with("llmdeck-"), "{consumer}");
    let body = serde_json::json!({"consumer_id": consumer, "offer_id": "tensordock-l4-7", "workload_type": "llm", "reservation_hours": 1});
    let created = http(reqwest::Method::POST, format!("{}/api/v1/sessions", shop.url), Some(body));
    assert!(created["session"]["id"].is_string(), "{created}");
    let out = sb
        .command()
        .arg("--config")
        .arg(&cfg)
        .args(["sessions", "cleanup"])
        .stdin(Stdio::null())
        .output()
        .expect("cleanup");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(all_stopped(&shop), "{:#?}", shop_sessions(&shop));
}
