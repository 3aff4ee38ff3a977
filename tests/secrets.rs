//! No secret on screen, in a file or in an event: a model whose arguments and whose escaping
//! helper carry secrets goes through a test run, a crash, a leftover sweep after `kill -9` and a
//! stop; then no event, no log, no report and no other file llmdeck wrote holds a secret.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Daemon, Sandbox, alive, free_port, wait_gone};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(60);
/// Every secret below contains it; nothing else llmdeck writes does.
const MARK: &str = "SECRET";

fn is(model: &'static str, state: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v["type"] == "model" && v["model"] == model && v["state"] == state
}

/// Files under `dir` (recursively) whose bytes contain [`MARK`].
fn files_with_a_secret(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return found };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_with_a_secret(&path));
        } else if std::fs::read(&path).is_ok_and(|b| b.windows(MARK.len()).any(|w| w == MARK.as_bytes())) {
            found.push(path.display().to_string());
        }
    }
    found
}

fn assert_no_secret_in(what: &str, text: &str) {
    assert!(!text.contains(MARK), "a secret in {what}: {}", excerpt_around(text));
}

fn excerpt_around(text: &str) -> String {
    let at = text.find(MARK).unwrap_or(0);
    let start = text[..at].char_indices().rev().nth(200).map_or(0, |(i, _)| i);
    text[start..].chars().take(400).collect()
}

#[test]
fn secrets_in_a_models_arguments_and_its_helpers_show_up_nowhere() {
    let sb = Sandbox::new();
    let port = free_port();
    let pidfile = sb.path().join("escaped.pid");
    // A helper that leaves the process group with a key in its arguments, a token in the
    // server's environment assignment, and a secret flag in the model's own argv.
    let script = format!(
        "setsid sh -c 'sleep 300; :' helper --api-key sk-{MARK}-one & echo $! > '{}'; HF_TOKEN=hf_{MARK}_two exec '{}' mock-llm --port {port}",
        pidfile.display(),
        common::BIN
    );
    let config = sb.write_config(&format!(
        "gpu: {{ backend: none }}
models:
  - id: m
    command: sh
    args: [-c, {script:?}, sh, --hf-token, tk-{MARK}-three, 'https://bob:{MARK}-four@example.com/x']
    port: {port}
    health: {{ interval_s: 0.5, timeout_s: 1, startup_timeout_s: 30 }}
    restart: {{ policy: on-failure, delay_s: 0.2 }}
    stop_timeout_s: 3
tests:
  - name: smoke
    kind: local
    model: m
    cleanup_command: \"true --password={MARK}-five\"
    probe: {{ requests: 2, concurrency: 1, max_tokens: 8 }}
"
    ));

    // A run: starts the model, probes it, cleans up, stops it (the helper is ended with it).
    let run = sb.command().args(["test", "run", "smoke", "--config"]).arg(&config).output().expect("test run");
    assert_eq!(run.status.code(), Some(0), "{}", String::from_utf8_lossy(&run.stderr));
    assert_no_secret_in("`test run`'s stdout", &String::from_utf8_lossy(&run.stdout));
    assert_no_secret_in("`test run`'s stderr", &String::from_utf8_lossy(&run.stderr));

    // A crash: the helper that left the group is ended and named.
    let mut d = Daemon::start(&sb, &config);
    d.wait_for("ready", LONG, is("m", "ready"));
    let helper: u32 = std::fs::read_to_string(&pidfile).expect("pid file").trim().parse().expect("pid");
    let leader = d.seen.iter().rev().find_map(|v| is("m", "starting")(v).then(|| v["pid"].as_u64()).flatten());
    let leader = leader.expect("the starting event names the pid");
    common::unsafe_kill(u32::try_from(leader).expect("pid"), 9);
    d.wait_for("the crash", LONG, is("m", "crashed"));
    assert!(wait_gone(helper, Duration::from_secs(5)), "the helper outlived its model");
    let restart = d.wait_for("the restart", LONG, |v| is("m", "starting")(v) && v["pid"].as_u64() != Some(leader));
    let after = restart["seq"].as_u64().expect("events carry seq");
    d.wait_for("ready again", LONG, |v| is("m", "ready")(v) && v["seq"].as_u64().is_some_and(|s| s > after));

    // kill -9 of llmdeck and of the model's keeper at once (what the OOM killer may do): the
    // helper is left over, and the next start sweeps it and says what it ended. llmdeck is
    // held stopped meanwhile, so that it cannot see the keeper die and end the helper itself.
    let helper: u32 = std::fs::read_to_string(&pidfile).expect("pid file").trim().parse().expect("pid");
    let keeper = d.seen.iter().rev().find_map(|v| is("m", "starting")(v).then(|| v["pid"].as_u64()).flatten());
    let keeper = u32::try_from(keeper.expect("the restart's pid")).expect("pid");
    d.signal(19); // SIGSTOP
    let daemon = d.child.id();
    let stopped = || std::fs::read_to_string(format!("/proc/{daemon}/stat")).is_ok_and(|s| s.contains(") T "));
    let deadline = std::time::Instant::now() + LONG;
    while !stopped() {
        assert!(std::time::Instant::now() < deadline, "llmdeck never stopped");
        std::thread::sleep(Duration::from_millis(10));
    }
    common::unsafe_kill(keeper, 9);
    d.signal(9);
    d.wait_exit(Duration::from_secs(5));
    assert!(wait_gone(keeper, Duration::from_secs(5)), "the keeper survived SIGKILL");
    assert!(alive(helper), "test premise: the helper is left over");
    let mut next = Daemon::start(&sb, &config);
    next.wait_for("a leftover alert", LONG, |v| {
        v["type"] == "alert" && v["message"].as_str().is_some_and(|m| m.contains(&helper.to_string()))
    });
    assert!(wait_gone(helper, Duration::from_secs(5)), "the leftover helper was not ended");
    next.wait_for("ready", LONG, is("m", "ready"));
    // A stop.
    next.signal(15);
    assert!(next.wait_exit(Duration::from_secs(20)).success());

    for (name, daemon) in [("the first daemon", &d), ("the second daemon", &next)] {
        let events: Vec<String> = daemon.seen.iter().map(Value::to_string).collect();
        assert_no_secret_in(&format!("the events of {name}"), &events.join("\n"));
    }
    // Whatever llmdeck wrote: logs, ledgers, reports, its own log, the daemons' stderr.
    let mut leaked = Vec::new();
    for dir in ["state", "data", "config/llmdeck"] {
        leaked.extend(files_with_a_secret(&sb.path().join(dir)));
    }
    for entry in std::fs::read_dir(sb.path()).expect("sandbox").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".stderr") && files_with_a_secret_in_file(&entry.path()) {
            leaked.push(name);
        }
    }
    let shown: Vec<String> = leaked
        .iter()
        .map(|f| format!("{f}: {}", excerpt_around(&std::fs::read_to_string(f).unwrap_or_default())))
        .collect();
    assert!(leaked.is_empty(), "secrets in files llmdeck wrote:\n{}", shown.join("\n"));
}

fn files_with_a_secret_in_file(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|b| b.windows(MARK.len()).any(|w| w == MARK.as_bytes()))
}

/// Everything llmdeck writes — its log, the lock, the PID ledger, model logs, reports, the
/// consumer id — is readable by the owner only, in directories only the owner can enter; a
/// state directory others can write to keeps its mode and is warned about.
#[test]
fn files_llmdeck_writes_are_private_and_a_shared_directory_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new();
    let port = free_port();
    let state = sb.path().join("state").join("llmdeck");
    std::fs::create_dir_all(&state).expect("state dir");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let config = sb.write_config(&format!(
        "gpu: {{ backend: none }}\nmodels:\n{}tests:\n  - {{ name: smoke, kind: local, model: m, probe: {{ requests: 2 }} }}\n",
        common::mock_model("m", port, "", "")
    ));
    let run = sb.command().args(["test", "run", "smoke", "--config"]).arg(&config).output().expect("test run");
    assert_eq!(run.status.code(), Some(0), "{}", String::from_utf8_lossy(&run.stderr));

    let log = std::fs::read_to_string(sb.app_log()).unwrap_or_default();
    assert!(log.contains("can be written by others"), "no warning about the shared state dir: {log}");
    let mut checked = 0;
    let mut wrong = Vec::new();
    for root in [state.clone(), sb.path().join("data").join("llmdeck")] {
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("list").flatten() {
                let path = entry.path();
                let mode = entry.metadata().expect("metadata").permissions().mode() & 0o777;
                let want = if path.is_dir() { 0o700 } else { 0o600 };
                if path.is_dir() {
                    stack.push(path.clone());
                }
                checked += 1;
                if mode != want {
                    wrong.push(format!("{} is {mode:o}, not {want:o}", path.display()));
                }
            }
        }
    }
    assert!(checked >= 5, "too few files to judge: {checked}");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let shared = std::fs::metadata(&state).expect("state").permissions().mode() & 0o777;
    assert_eq!(shared, 0o777, "an existing directory keeps the mode its owner gave it");
}
