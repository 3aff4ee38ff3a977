//! A model that floods its log: every line reaches the file in order, memory stays bounded,
//! and the TUI keeps answering keys while the flood runs.

mod common;

use std::io::BufRead;
use std::time::Duration;

use common::{BIN, Sandbox};

const LINES: u64 = 2_000_000;

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status of llmdeck");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM")
}

#[test]
fn a_two_million_line_flood_is_kept_in_order_in_bounded_memory_while_keys_work() {
    let sb = Sandbox::new();
    let logs = sb.path().join("logs");
    let yaml = [
        "gpu: { backend: none }".to_owned(),
        format!("logs: {{ dir: {}, max_file_mb: 1000, ring_lines: 20000 }}", logs.display()),
        "models:".into(),
        "  - id: flood".into(),
        "    command: seq".into(),
        format!("    args: [-f, \"INFO flood line %.0f\", \"1\", \"{LINES}\"]"),
        "    port: 1".into(),
        "    restart: { policy: no }".into(),
        "  - id: endless".into(),
        "    command: yes".into(),
        "    args: [\"WARNING endless flood line, as fast as the pipe takes it\"]".into(),
        "    port: 2".into(),
        "    restart: { policy: no }".into(),
        "    stop_timeout_s: 2".into(),
    ];
    let config = sb.write_config(&yaml.join("\n"));
    let t = sb.tmux(120, 40, &[]);
    t.type_line(&format!("exec '{BIN}' --config '{}'", config.display()));
    t.wait_text("4 Logs", Duration::from_secs(10));
    let pid = t.pane_pid();

    // The endless flood is running: the help overlay still opens promptly.
    t.wait_text("endless flood line", Duration::from_secs(10));
    t.keys(&["?"]);
    // How long it takes is printed, not asserted: a loaded machine is slow, not broken.
    let took = t.wait_text("Keys (one map for every pane)", Duration::from_secs(10));
    eprintln!("the help overlay opened {took:?} after the key, during the flood");
    t.keys(&["Escape"]);

    // The finite flood ends (its model stops with exit 0) while the endless one goes on.
    t.wait_for("the flood model to stop", Duration::from_secs(120), |s| {
        s.lines().any(|l| l.contains("flood ") && l.contains("stopped"))
    });
    let hwm_mib = vm_hwm_kib(pid) / 1024;
    assert!(hwm_mib < 150, "llmdeck's peak resident memory was {hwm_mib} MiB");

    // Quit (models are running, so it asks), which stops the endless flood.
    t.keys(&["q"]);
    t.wait_text("Quit?", Duration::from_secs(5));
    t.keys(&["y"]);

    let file = std::fs::File::open(logs.join("flood.log")).expect("flood.log");
    let mut expected = 1u64;
    for line in std::io::BufReader::new(file).lines() {
        let line = line.expect("utf-8 line");
        if line.starts_with("llmdeck: ") {
            continue; // llmdeck's own notes about the model
        }
        assert_eq!(line, format!("INFO flood line {expected}"), "line {expected} out of order or missing");
        expected += 1;
    }
    assert_eq!(expected - 1, LINES, "lines in the file");
    eprintln!("peak RSS {hwm_mib} MiB; help opened in {took:?} during the flood");
}
