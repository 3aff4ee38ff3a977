//! Black-box tests of the supervisor through `llmdeck daemon` and real `llmdeck mock-llm`
//! processes: readiness, restart policies with backoff, OOM labelling, and no leftovers.

mod common;

use std::time::Duration;

use common::{Daemon, Sandbox, alive, free_port, mock_model, wait_gone};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(40);

fn is(model: &'static str, state: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v["type"] == "model" && v["model"] == model && v["state"] == state
}

fn pids_of(d: &Daemon, model: &str) -> Vec<u32> {
    d.model_events(model)
        .iter()
        .filter(|v| v["state"] == "starting")
        .filter_map(|v| v["pid"].as_u64())
        .map(|p| p as u32)
        .collect()
}

#[test]
fn restart_policies_backoff_and_oom_through_the_daemon() {
    let sb = Sandbox::new();
    let policy = |p: &str, max: u32| {
        format!("    restart: {{ policy: {p}, max_restarts: {max}, delay_s: 1, max_delay_s: 60 }}\n")
    };
    let models = [
        mock_model("ready", free_port(), "", ""),
        mock_model("exit3", free_port(), ", --crash-after, \"0.3\", --exit-code, \"3\"", &policy("on-failure", 3)),
        mock_model("oom", free_port(), ", --oom-after, \"0.3\"", &policy("no", 3)),
        mock_model(
            "clean-on-failure",
            free_port(),
            ", --crash-after, \"0.3\", --exit-code, \"0\"",
            &policy("on-failure", 3),
        ),
        mock_model("clean-always", free_port(), ", --crash-after, \"0.3\", --exit-code, \"0\"", &policy("always", 1)),
    ];
    let config = sb.write_config(&format!("gpu: {{ backend: none }}\nmodels:\n{}", models.join("")));
    let mut d = Daemon::start(&sb, &config);

    // (a) starts and becomes ready.
    let ready = d.wait_for("ready to be ready", LONG, is("ready", "ready"));
    assert!(
        ready["ts"].as_str().is_some_and(|ts| chrono::DateTime::parse_from_rfc3339(ts).is_ok()),
        "ts is RFC 3339: {ready}"
    );

    // (b) exit 3 under on-failure, max 3, delay 1 s: backoff 1000, 2000, 4000 ms, then failed.
    let failed = d.wait_for("exit3 to fail", LONG, is("exit3", "failed"));
    let backoffs: Vec<u64> = d
        .model_events("exit3")
        .iter()
        .filter(|v| v["state"] == "backoff")
        .filter_map(|v| v["delay_ms"].as_u64())
        .collect();
    assert_eq!(backoffs, [1000, 2000, 4000], "states: {:?}", d.states_of("exit3"));
    let attempts: Vec<u64> = d
        .model_events("exit3")
        .iter()
        .filter(|v| v["state"] == "backoff")
        .filter_map(|v| v["attempt"].as_u64())
        .collect();
    assert_eq!(attempts, [1, 2, 3]);
    let crashes: Vec<&Value> = d.model_events("exit3").into_iter().filter(|v| v["state"] == "crashed").collect();
    assert_eq!(crashes.len(), 4);
    assert!(crashes.iter().all(|c| c["exit_code"] == 3 && c["oom"] == false));
    assert!(failed["reason"].as_str().is_some_and(|r| r.contains("3 restarts")), "{failed}");

    // (c) OOM under policy no: crashed with oom and the line, never restarted.
    let crashed = d.wait_for("oom to crash", LONG, is("oom", "crashed"));
    assert_eq!(crashed["oom"], true, "{crashed}");
    assert!(crashed["oom_line"].as_str().is_some_and(|l| l.to_lowercase().contains("out of memory")), "{crashed}");
    assert_eq!(crashed["exit_code"], 1);
    d.wait_for("oom to be failed", LONG, is("oom", "failed"));

    // (d) exit 0 under on-failure: no restart.
    d.wait_for("clean-on-failure to stop", LONG, is("clean-on-failure", "stopped"));

    // (e) exit 0 under always: restarted (once, then max_restarts is reached).
    d.wait_for("clean-always to back off", LONG, is("clean-always", "backoff"));
    d.wait_for("clean-always to give up", LONG, is("clean-always", "failed"));

    // Nothing more happens to the models that settled.
    d.drain_for(Duration::from_millis(1500));
    for (model, starts) in [("oom", 1), ("clean-on-failure", 1), ("clean-always", 2), ("exit3", 4)] {
        assert_eq!(pids_of(&d, model).len(), starts, "{model} states: {:?}", d.states_of(model));
    }

    // SIGTERM: every model is stopped and the daemon exits 0, leaving no process behind.
    let ready_pid = pids_of(&d, "ready")[0];
    assert!(alive(ready_pid));
    d.signal(15);
    let status = d.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "daemon exit: {status:?}");
    d.wait_for("ready to be stopped", Duration::from_secs(1), is("ready", "stopped"));
    let all_pids: Vec<u32> =
        ["ready", "exit3", "oom", "clean-on-failure", "clean-always"].iter().flat_map(|m| pids_of(&d, m)).collect();
    for pid in all_pids {
        assert!(wait_gone(pid, Duration::from_secs(2)), "model process {pid} outlived the daemon");
    }
}

#[test]
fn health_404_means_models_only_and_sighup_is_survived() {
    let sb = Sandbox::new();
    let port = free_port();
    // A health path the mock does not serve: readiness rests on /v1/models alone.
    let stopped_file = sb.path().join("stop-command-ran");
    let model =
        mock_model("nohealth", port, "", &format!("    stop_command: \"touch '{}'\"\n", stopped_file.display()))
            .replace("health: {", "health: { path: /no-such-health,");
    let config = sb.write_config(&format!("gpu: {{ backend: none }}\nmodels:\n{model}"));
    let mut d = Daemon::start(&sb, &config);
    let ready = d.wait_for("ready", LONG, is("nohealth", "ready"));
    assert_eq!(ready["health"], "models_only", "{ready}");
    // A hang-up (the SSH session closed) does not stop the daemon or its models.
    d.signal(1);
    // It says it handled the signal: from then on, an exit would be a bug, not a race.
    d.wait_for("the note that SIGHUP was ignored", LONG, |v| {
        v["type"] == "log" && v["lines"][0]["text"].as_str().is_some_and(|t| t.contains("SIGHUP ignored"))
    });
    assert!(d.child.try_wait().expect("try_wait").is_none(), "the daemon exited on SIGHUP");
    assert!(!d.states_of("nohealth").contains(&"stopping".to_owned()));
    d.signal(2);
    assert!(d.wait_exit(Duration::from_secs(20)).success());
    assert!(stopped_file.exists(), "stopping the model did not run its stop_command");
}

/// A server that answers, but never 200 (here: it wants a key the config does not give):
/// the operator sees why while it starts, and the start-up timeout says what it last heard.
#[test]
fn start_up_answers_that_are_not_loading_are_shown_and_explain_the_timeout() {
    let sb = Sandbox::new();
    let port = free_port();
    let model = mock_model(
        "locked",
        port,
        ", --api-key-env, MOCK_KEY",
        "    env: { MOCK_KEY: sekrit }\n    restart: { policy: no }\n",
    )
    .replace("startup_timeout_s: 30", "startup_timeout_s: 5");
    let config = sb.write_config(&format!("gpu: {{ backend: none }}\nmodels:\n{model}"));
    let mut d = Daemon::start(&sb, &config);
    let note = d.wait_for("a start-up warning", LONG, |v| {
        v["type"] == "log" && v["lines"][0]["text"].as_str().is_some_and(|t| t.contains("not ready yet"))
    });
    let text = note["lines"][0]["text"].as_str().unwrap_or_default().to_owned();
    assert!(text.contains("/v1/models answered 401") && text.contains("api_key_env"), "{text}");
    let crashed = d.wait_for("the start-up timeout", LONG, is("locked", "crashed"));
    let reason = crashed["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("not ready within 5s") && reason.contains("last answer: /v1/models answered 401"),
        "{reason}"
    );
    d.wait_for("failed", LONG, is("locked", "failed"));
    let warnings = d.seen.iter().filter(|v| v.to_string().contains("not ready yet")).count();
    assert_eq!(warnings, 1, "the same answer is noted once, not on every poll");
    d.signal(15);
    assert!(d.wait_exit(Duration::from_secs(20)).success());
}

/// A helper that left the model's process group (setsid) is ended when the model exits, not
/// left holding the port and GPU memory the restart needs.
#[test]
fn helpers_that_left_the_process_group_end_with_the_model() {
    let sb = Sandbox::new();
    let port = free_port();
    let pidfile = sb.path().join("escaped.pid");
    let script =
        format!("setsid sleep 300 & echo $! > '{}'; exec '{}' mock-llm --port {port}", pidfile.display(), common::BIN);
    let model = format!(
        "  - id: escaper\n    command: sh\n    args: [-c, {script:?}]\n    port: {port}\n    health: {{ interval_s: 0.5, timeout_s: 1, startup_timeout_s: 30 }}\n    restart: {{ policy: no }}\n    stop_timeout_s: 3\n"
    );
    let config = sb.write_config(&format!("gpu: {{ backend: none }}\nmodels:\n{model}"));
    let mut d = Daemon::start(&sb, &config);
    d.wait_for("ready", LONG, is("escaper", "ready"));
    let escaped: u32 = std::fs::read_to_string(&pidfile).expect("pid file").trim().parse().expect("pid");
    assert!(alive(escaped), "test premise: the helper runs in its own session");

    // The model dies (here: killed from outside, once it is ready, however long that took).
    let leader = pids_of(&d, "escaper")[0];
    common::unsafe_kill(leader, 9);
    d.wait_for("the crash", LONG, is("escaper", "crashed"));
    assert!(wait_gone(escaped, Duration::from_secs(5)), "the escaped helper outlived its model");
    d.wait_for("a note naming it", LONG, |v| {
        v["type"] == "log"
            && v["lines"][0]["text"].as_str().is_some_and(|t| t.contains(&format!("ended pid {escaped}")))
    });
    d.signal(15);
    assert!(d.wait_exit(Duration::from_secs(20)).success());
}

/// `llmdeck daemon | less`, with less suspended: stdout fills up. SIGTERM still stops the
/// models and ends the daemon.
#[test]
fn a_daemon_whose_stdout_nobody_reads_still_exits_on_sigterm() {
    let sb = Sandbox::new();
    let port = free_port();
    let model = mock_model("chatty", port, ", --log-rate, \"2000\"", "");
    let config = sb.write_config(&format!("gpu: {{ backend: none }}\nmodels:\n{model}"));
    let stderr_file = sb.fresh_file("daemon", "stderr");
    let mut daemon = common::Reaped(
        sb.command()
            .args(["daemon", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .stdout(std::process::Stdio::piped()) // never read
            .stderr(std::fs::File::create(&stderr_file).expect("stderr file"))
            .spawn()
            .expect("start the daemon"),
    );
    let report = |what: &str| format!("{what}\n--- daemon stderr:\n{}", common::tail_of_file(&stderr_file, 40));
    // Wait until the model serves: by then the pipe is long full of log events.
    let deadline = std::time::Instant::now() + LONG;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = daemon.0.try_wait() {
            panic!(
                "{}",
                report(&format!("the daemon exited ({}) before its model listened", common::describe_exit(status)))
            );
        }
        assert!(std::time::Instant::now() < deadline, "{}", report("the model never listened"));
        std::thread::sleep(Duration::from_millis(50));
    }
    // Until the pipe is full: then every event the daemon writes blocks.
    while !printer_blocked_on_stdout(daemon.0.id()) {
        assert!(std::time::Instant::now() < deadline, "{}", report("the pipe never filled"));
        std::thread::sleep(Duration::from_millis(20));
    }
    common::unsafe_kill(daemon.0.id(), 15);
    let status = common::wait_child(&mut daemon.0, Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "{}", report(&format!("the daemon did not exit cleanly: {status:?}")));
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "the model still serves");
}

#[test]
fn a_second_llmdeck_on_the_same_state_dir_is_refused() {
    let sb = Sandbox::new();
    let port = free_port();
    let config = sb.write_config(&format!(
        "gpu: {{ backend: none }}\nmodels:\n{}tests:\n  - {{ name: smoke, kind: local, model: solo }}\n",
        mock_model("solo", port, "", "")
    ));
    let mut first = Daemon::start(&sb, &config);
    first.wait_for("ready", LONG, is("solo", "ready"));

    // `llmdeck test run` of a local test would start the model again: refused the same way.
    let run = sb.command().args(["test", "run", "smoke", "--config"]).arg(&config).output().expect("test run");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&first.child.id().to_string()), "names the llmdeck that holds the models: {stderr}");

    let mut second = sb
        .command()
        .args(["daemon", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start a second daemon");
    let status = common::wait_child(&mut second, Duration::from_secs(20)).expect("the second daemon exits by itself");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().expect("stderr"), &mut stderr).expect("read stderr");
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("already supervising") && stderr.contains(&first.child.id().to_string()), "{stderr}");

    // The first one was not disturbed: its model was started once and still serves.
    first.drain_for(Duration::from_millis(300));
    assert_eq!(first.states_of("solo"), ["starting", "ready"]);
    first.signal(15);
    assert!(first.wait_exit(Duration::from_secs(20)).success());
}

/// `kill -9` of llmdeck leaves nothing running — not the models, not what a wrapper shell
/// started, not a helper that left for its own session — within the stop timeout and two
/// seconds, without starting llmdeck again: each model's keeper stops its whole tree.
#[test]
fn kill_9_of_the_daemon_leaves_no_model_behind() {
    let sb = Sandbox::new();
    let (p1, p2) = (free_port(), free_port());
    let plain = mock_model("plain", p1, "", "");
    let helper_file = sb.path().join("helper.pid");
    let stopped_file = sb.path().join("stop-command-ran");
    let wrapped = format!(
        "  - id: wrapped\n    command: sh\n    args: [-c, \"'{}' mock-llm --port {p2} & setsid sleep 300 & echo $! > '{}'; wait\"]\n    port: {p2}\n    health: {{ interval_s: 0.5, timeout_s: 1, startup_timeout_s: 30 }}\n    stop_timeout_s: 3\n    stop_command: \"touch '{}'\"\n",
        common::BIN,
        helper_file.display(),
        stopped_file.display()
    );
    let config = sb.write_config(&format!("gpu: {{ backend: none }}\nmodels:\n{plain}{wrapped}"));
    let mut d = Daemon::start(&sb, &config);
    d.wait_for("plain ready", LONG, is("plain", "ready"));
    d.wait_for("wrapped ready", LONG, is("wrapped", "ready"));
    let helper: u32 = std::fs::read_to_string(&helper_file).expect("helper pid").trim().parse().expect("pid");
    let tree = common::descendants_of(d.child.id());
    for pid in [listener_pid(p1).expect("plain listens"), listener_pid(p2).expect("wrapped listens"), helper] {
        assert!(tree.contains(&pid), "test premise: {pid} runs below llmdeck ({tree:?})");
    }
    assert!(
        llmdeck::util::procfs::stat(helper).is_some_and(|s| s.pgid == helper),
        "test premise: the helper left the group"
    );

    d.signal(9);
    d.wait_exit(Duration::from_secs(5));
    // Within stop_timeout_s (3) + 2 s of the kill.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let left: Vec<u32> = tree
        .iter()
        .copied()
        .filter(|pid| !wait_gone(*pid, deadline.saturating_duration_since(std::time::Instant::now())))
        .collect();
    let described: Vec<String> =
        left.iter().map(|pid| format!("{pid} {:?}", llmdeck::util::procfs::cmdline_args(*pid))).collect();
    assert!(left.is_empty(), "still running after kill -9 of llmdeck: {described:?}");
    assert!(stopped_file.exists(), "the keeper did not run the model's stop_command");
}

/// Whether the daemon's event printer is blocked writing to its stdout (the pipe is full):
/// its thread sleeps in a pipe write (the kernel's wait channel), or in `write(1, …)`.
fn printer_blocked_on_stdout(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.flatten().any(|task| {
        let dir = task.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.starts_with("llmdeck-events") {
            return false;
        }
        let wchan = std::fs::read_to_string(dir.join("wchan")).unwrap_or_default();
        let syscall = std::fs::read_to_string(dir.join("syscall")).unwrap_or_default();
        let mut fields = syscall.split_whitespace();
        let write_to_stdout = matches!(fields.next(), Some("1" | "64")) && fields.next() == Some("0x1");
        wchan.contains("pipe_write") || write_to_stdout
    })
}

/// The PID of the process listening on a loopback port (via /proc/net/tcp and fd links).
fn listener_pid(port: u16) -> Option<u32> {
    let tcp = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let inode = tcp.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let local_port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
        (local_port == port && *f.get(3)? == "0A").then(|| f.get(9).map(|s| s.to_string()))?
    })?;
    let target = format!("socket:[{inode}]");
    for p in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == target) {
                return Some(pid);
            }
        }
    }
    None
}

/// A model that ignores SIGTERM holds shutdown for its whole stop timeout; the operator's
/// third signal ends the wait: SIGKILL to every group, said so, and the daemon exits.
#[test]
fn a_third_signal_during_shutdown_kills_the_models_now() {
    let sb = Sandbox::new();
    let port = free_port();
    let model =
        mock_model("stubborn", port, ", --ignore-sigterm", "").replace("stop_timeout_s: 3", "stop_timeout_s: 600");
    let config = sb.write_config(&format!("gpu: {{ backend: none }}\nmodels:\n{model}"));
    let mut d = Daemon::start(&sb, &config);
    d.wait_for("ready", LONG, is("stubborn", "ready"));
    let pid = pids_of(&d, "stubborn")[0];
    let wait_said = |d: &Daemon, what: &str| {
        let deadline = std::time::Instant::now() + LONG;
        while !d.stderr().contains(what) {
            assert!(std::time::Instant::now() < deadline, "the daemon never said `{what}`: {}", d.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    d.signal(15);
    wait_said(&d, "stopping every model");
    d.wait_for("the model stopping", LONG, is("stubborn", "stopping"));
    d.signal(15);
    wait_said(&d, "send it again to kill them now");
    d.signal(15);
    wait_said(&d, "killing every model now");
    assert!(d.wait_exit(Duration::from_secs(20)).success());
    assert!(wait_gone(pid, Duration::from_secs(5)), "the stubborn model survived");
    assert!(listener_pid(port).is_none(), "something still serves its port");
}
