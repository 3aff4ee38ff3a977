//! Tests of the test harness itself: a failure must say what happened — the program exited
//! (with its status and stderr), its output stream closed, or it simply timed out.

mod common;

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use common::{BIN, Daemon, Sandbox, free_port, mock_model};

/// The panic message of `f`, which must panic.
fn failure_of(f: impl FnOnce()) -> String {
    let payload = std::panic::catch_unwind(AssertUnwindSafe(f)).expect_err("the harness should have failed");
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

#[test]
fn a_daemon_that_exits_at_start_is_reported_with_its_status_and_stderr() {
    let sb = Sandbox::new();
    // Two models on one port: the daemon refuses the configuration and exits 2 at once.
    let port = free_port();
    let models = format!("{}{}", mock_model("first", port, "", ""), mock_model("second", port, "", ""));
    let config = sb.write_config(&format!("gpu: {{ backend: none }}\nmodels:\n{models}"));
    let mut daemon = Daemon::start(&sb, &config);
    let message = failure_of(|| {
        daemon.wait_for("first to be ready", Duration::from_secs(30), |_| false);
    });
    assert!(message.contains("the daemon's event stream closed"), "{message}");
    assert!(message.contains("the daemon exited: exit code 2"), "{message}");
    assert!(message.contains("is already used by model `first`"), "stderr is in the report: {message}");
    assert!(!message.contains("timed out"), "{message}");
}

#[test]
fn a_daemon_that_runs_but_never_says_it_is_reported_as_a_timeout() {
    let sb = Sandbox::new();
    let config = sb.write_config("gpu: { backend: none }\n");
    let mut daemon = Daemon::start(&sb, &config);
    let message = failure_of(|| {
        daemon.wait_for("something that never happens", Duration::from_millis(1500), |_| false);
    });
    assert!(message.contains("timed out after 1.5s waiting for something that never happens"), "{message}");
    assert!(message.contains("is still running"), "{message}");
    assert!(message.contains("\"event\":\"started\""), "the events it sent are listed: {message}");
    daemon.signal(15);
    assert!(daemon.wait_exit(Duration::from_secs(20)).success());
}

#[test]
fn a_pane_whose_program_exits_is_reported_with_its_status() {
    let sb = Sandbox::new();
    let t = sb.tmux(80, 24, &[]);
    t.type_line("exec sh -c 'echo bye; exit 3'");
    let message = failure_of(|| {
        t.wait_text("never shown", Duration::from_secs(20));
    });
    assert!(message.contains("the pane's program exited with code 3"), "{message}");
    assert!(message.contains("bye"), "the screen is in the report: {message}");
}

#[test]
fn a_launched_command_that_ends_early_is_reported_at_once() {
    let sb = Sandbox::new();
    let t = sb.tmux(80, 24, &[]);
    // No configuration: llmdeck explains and exits 2.
    t.launch(&format!("'{BIN}'"));
    let message = failure_of(|| {
        t.wait_text("1 Models", Duration::from_secs(20));
    });
    assert!(message.contains("the launched command exited with status 2"), "{message}");
    assert!(message.contains("no configuration file at"), "{message}");
}
