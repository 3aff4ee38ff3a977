//! The daemon's event stream as a viewer relies on it: every JSON line carries a gap-free `seq`
//! (a printer that fell behind says how many it missed, and the numbers account for them), and
//! a restarted daemon announces a new `epoch`.

mod common;

use std::time::{Duration, Instant};

use common::{Daemon, Sandbox, free_port, mock_model};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(40);

/// The numbers are consecutive, except that a `lagged` line accounts for the ones skipped.
fn check_sequence(seen: &[Value]) -> (u64, u64) {
    let (mut last, mut lagged_total, mut pending_lag) = (0u64, 0u64, 0u64);
    for (i, v) in seen.iter().enumerate() {
        if v["type"] == "lagged" {
            let missed = v["missed"].as_u64().unwrap_or_else(|| panic!("line {i}: lagged without a count: {v}"));
            pending_lag += missed;
            lagged_total += missed;
            continue;
        }
        let seq = v["seq"].as_u64().unwrap_or_else(|| panic!("line {i} carries no seq: {v}"));
        assert_eq!(
            seq,
            last + 1 + pending_lag,
            "line {i}: a gap after seq {last} ({pending_lag} reported missed): {v}"
        );
        last = seq;
        pending_lag = 0;
    }
    (last, lagged_total)
}

#[test]
fn seq_is_gap_free_over_a_busy_minute_and_a_restart_changes_the_epoch() {
    let sb = Sandbox::new();
    // Two chatty models: hundreds of log lines a second, plus state changes.
    let models = format!(
        "{}{}",
        mock_model("chatty-a", free_port(), ", --log-rate, \"300\"", ""),
        mock_model(
            "chatty-b",
            free_port(),
            ", --log-rate, \"300\", --crash-after, \"5\"",
            "    restart: { policy: always, delay_s: 1 }\n"
        ),
    );
    let config = sb.write_config(&format!("gpu: {{ backend: simulated, sample_ms: 200 }}\nmodels:\n{models}"));
    let mut d = Daemon::start(&sb, &config);
    let started = d.wait_for("the engine to start", LONG, |v| v["type"] == "engine" && v["event"] == "started");
    let epoch = started["epoch"].as_str().expect("the started event names the epoch").to_owned();
    assert_eq!(started["seq"], 1, "numbering starts at 1: {started}");
    d.wait_for("chatty-a ready", LONG, |v| v["type"] == "model" && v["model"] == "chatty-a" && v["state"] == "ready");
    let busy_until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < busy_until {
        d.drain_for(Duration::from_secs(1));
    }
    let (last, lagged) = check_sequence(&d.seen);
    eprintln!("{last} events in the busy minute, {lagged} reported missed by the printer");
    assert!(last > 1000, "a busy minute: {last} events");
    d.signal(15);
    assert!(d.wait_exit(LONG).success());
    check_sequence(&d.seen);

    let mut again = Daemon::start(&sb, &config);
    let restarted =
        again.wait_for("the engine to start again", LONG, |v| v["type"] == "engine" && v["event"] == "started");
    assert_eq!(restarted["seq"], 1, "a new engine numbers from 1 again: {restarted}");
    let new_epoch = restarted["epoch"].as_str().expect("epoch");
    assert_ne!(new_epoch, epoch, "a restart changes the epoch");
    again.signal(15);
    assert!(again.wait_exit(LONG).success());
}
