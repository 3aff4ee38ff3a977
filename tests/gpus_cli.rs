//! `llmdeck gpus` as a script sees it: the binary against the fake libnvidia-ml
//! (tests/fake_nvml, selected with LLMDECK_NVML_LIB and FAKE_NVML_* variables).

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

const GIB: u64 = 1 << 30;

fn fake() -> &'static str {
    let built = env!("LLMDECK_FAKE_NVML");
    assert!(!built.is_empty(), "build.rs could not compile tests/fake_nvml");
    built
}

/// The binary with a clean environment for GPUs: no config file, the fake's scenario unset.
fn llmdeck(home: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_llmdeck"));
    cmd.env_remove("LLMDECK_CONFIG")
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_STATE_HOME", home.join("state"))
        .env_remove("FAKE_NVML_SCENARIO")
        .env_remove("FAKE_NVML_PROCESS_PID")
        .env_remove("FAKE_NVML_XID")
        .stdin(Stdio::null());
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run llmdeck")
}

/// A running child with LLMDECK_MODEL_ID set, as llmdeck starts model servers; returns once it
/// has exec'd (before that, /proc shows the parent's environment).
fn model_process(model: &str) -> std::process::Child {
    let mut child = Command::new("sh")
        .args(["-c", "echo ready; exec sleep 30"])
        .env("LLMDECK_MODEL_ID", model)
        .stdout(Stdio::piped())
        .spawn()
        .expect("sh");
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    assert_eq!(line.trim(), "ready");
    child
}

#[test]
fn json_reports_exactly_the_fakes_values() {
    let home = tempfile::tempdir().expect("temp dir");
    let mut child = model_process("qwen-7b");
    let out = run(llmdeck(home.path())
        .args(["gpus", "--json"])
        .env("LLMDECK_NVML_LIB", fake())
        .env("FAKE_NVML_SCENARIO", "two")
        .env("FAKE_NVML_PROCESS_PID", child.id().to_string()));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let got: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let expected = json!({
        "driver_version": "550.54.15-fake",
        "gpus": [
            {
                "index": 0,
                "name": "NVIDIA H100 80GB HBM3",
                "uuid": "GPU-00000000-fake-4e56-8d4c-000000000000",
                "utilization_gpu_pct": 37,
                "utilization_memory_pct": 12,
                "memory_used_bytes": 8 * GIB,
                "memory_total_bytes": 85_520_809_984_u64,
                "temperature_c": 45,
                "power_draw_w": 312.345,
                "power_limit_w": 700.0,
                "energy_j": 123_456.789,
                "sm_clock_mhz": 1980,
                "memory_clock_mhz": 2619,
                "fan_pct": null,
                "throttle_reasons": ["power cap"],
                "processes": [
                    {"pid": child.id(), "used_memory_bytes": 6 * GIB, "model": "qwen-7b"}
                ]
            },
            {
                "index": 1,
                "name": "NVIDIA H100 80GB HBM3",
                "uuid": "GPU-00000000-fake-4e56-8d4c-000000000001",
                "utilization_gpu_pct": 48,
                "utilization_memory_pct": 17,
                "memory_used_bytes": 12 * GIB,
                "memory_total_bytes": 85_520_809_984_u64,
                "temperature_c": 47,
                "power_draw_w": 313.845,
                "power_limit_w": 700.0,
                "energy_j": 123_457.789,
                "sm_clock_mhz": 1965,
                "memory_clock_mhz": 2619,
                "fan_pct": 31,
                "throttle_reasons": ["sw thermal slowdown", "hw thermal slowdown"],
                "processes": [
                    {"pid": 4_199_455, "used_memory_bytes": null, "model": null}
                ]
            }
        ]
    });
    assert_eq!(got, expected);
}

#[test]
fn json_has_null_for_every_reading_the_driver_does_not_support() {
    let home = tempfile::tempdir().expect("temp dir");
    let out = run(llmdeck(home.path())
        .args(["gpus", "--json"])
        .env("LLMDECK_NVML_LIB", fake())
        .env("FAKE_NVML_SCENARIO", "na"));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let got: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let g = &got["gpus"][0];
    for key in [
        "utilization_gpu_pct",
        "utilization_memory_pct",
        "energy_j",
        "sm_clock_mhz",
        "memory_clock_mhz",
        "fan_pct",
        "throttle_reasons",
        "processes",
    ] {
        assert_eq!(g[key], Value::Null, "{key}");
    }
    assert_eq!(g["name"], "Tesla K80");
    assert_eq!(g["temperature_c"], 45);
    assert_eq!(g["power_limit_w"], 149.0);
}

#[test]
fn a_lost_gpu_has_null_readings() {
    let home = tempfile::tempdir().expect("temp dir");
    let out = run(llmdeck(home.path())
        .args(["gpus", "--json"])
        .env("LLMDECK_NVML_LIB", fake())
        .env("FAKE_NVML_SCENARIO", "lost"));
    assert_eq!(out.status.code(), Some(0));
    let got: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(got["gpus"][0]["utilization_gpu_pct"], 37);
    assert_eq!(got["gpus"][1]["index"], 1);
    assert_eq!(got["gpus"][1]["memory_used_bytes"], Value::Null);
    assert_eq!(got["gpus"][1]["processes"], Value::Null);
}

#[test]
fn without_nvml_one_line_on_stderr_and_exit_3() {
    let home = tempfile::tempdir().expect("temp dir");
    let missing = home.path().join("libnvidia-ml.so.1");
    for json in [false, true] {
        let mut cmd = llmdeck(home.path());
        cmd.arg("gpus").env("LLMDECK_NVML_LIB", &missing);
        if json {
            cmd.arg("--json");
        }
        let out = run(&mut cmd);
        assert_eq!(out.status.code(), Some(3));
        assert!(out.stdout.is_empty(), "nothing on stdout");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("llmdeck gpus: NVML unavailable"), "{err}");
        assert!(err.contains(&missing.display().to_string()), "{err}");
    }
}

#[test]
fn the_table_shows_units_limits_and_processes() {
    let home = tempfile::tempdir().expect("temp dir");
    let out = run(llmdeck(home.path()).arg("gpus").env("LLMDECK_NVML_LIB", fake()).env("FAKE_NVML_SCENARIO", "two"));
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    insta::assert_snapshot!("gpus_table_two", text);
}

#[test]
fn watch_repeats_until_interrupted() {
    let home = tempfile::tempdir().expect("temp dir");
    let mut child = llmdeck(home.path())
        .args(["gpus", "--json", "--watch", "100ms"])
        .env("LLMDECK_NVML_LIB", fake())
        .env("FAKE_NVML_SCENARIO", "one")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("llmdeck");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut docs = Vec::new();
    for _ in 0..3 {
        let line = lines.next().expect("a line").expect("readable");
        docs.push(serde_json::from_str::<Value>(&line).expect("one JSON document per line"));
    }
    assert!(docs.iter().all(|d| d["gpus"][0]["index"] == 0));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait());
    });
    let status = match done_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(status) => status.expect("wait"),
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            panic!("llmdeck gpus --watch did not stop on SIGINT");
        }
    };
    assert_eq!(status.code(), Some(130));
}

#[test]
fn the_library_can_come_from_the_config_file() {
    let home = tempfile::tempdir().expect("temp dir");
    let config = home.path().join("llmdeck.yaml");
    std::fs::write(&config, format!("gpu:\n  nvml_library: {}\n", fake())).expect("config");
    let out = run(llmdeck(home.path())
        .args(["gpus", "--json", "--config"])
        .arg(&config)
        .env_remove("LLMDECK_NVML_LIB")
        .env("FAKE_NVML_SCENARIO", "one"));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let got: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(got["gpus"].as_array().map(Vec::len), Some(1));
}

#[test]
fn a_broken_config_is_a_usage_error() {
    let home = tempfile::tempdir().expect("temp dir");
    let config = home.path().join("llmdeck.yaml");
    std::fs::write(&config, "gpu:\n  nvml_libary: /x\n").expect("config");
    let out = run(llmdeck(home.path()).args(["gpus", "--config"]).arg(&config).env("LLMDECK_NVML_LIB", fake()));
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let missing = run(llmdeck(home.path())
        .args(["gpus", "--config"])
        .arg(home.path().join("nope.yaml"))
        .env("LLMDECK_NVML_LIB", fake()));
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn a_hung_driver_fails_naming_the_call_instead_of_hanging() {
    let home = tempfile::tempdir().expect("temp dir");
    let out = run(llmdeck(home.path())
        .args(["gpus", "--json", "--timeout", "300ms"])
        .env("LLMDECK_NVML_LIB", fake())
        .env("FAKE_NVML_SCENARIO", "hang")
        .env("FAKE_NVML_HANG_FN", "nvmlDeviceGetPowerUsage")
        .env("FAKE_NVML_HANG_AFTER", "0"));
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("nvmlDeviceGetPowerUsage (GPU 0) has not returned"), "{err}");
}
