//! End-to-end through `llmdeck daemon`: the fake libnvidia-ml reports the PID of a model server
//! llmdeck started, and the GPU sample names that model.

mod common;

use std::time::Duration;

use common::{Daemon, Sandbox, free_port, mock_model};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(30);

#[test]
fn a_gpu_process_is_named_after_the_model_llmdeck_runs() {
    let fake = env!("LLMDECK_FAKE_NVML");
    assert!(!fake.is_empty(), "build.rs could not compile tests/fake_nvml");
    let sb = Sandbox::new();
    // A private copy of the fake, with its scenario next to it: GPU 0's compute process is
    // whatever PID the file holds (written once the model has started).
    let lib = sb.path().join("libnvidia-ml.so.1");
    std::fs::copy(fake, &lib).expect("copy the fake");
    let pid_file = sb.path().join("model.pid");
    std::fs::write(
        sb.path().join("libnvidia-ml.so.1.scenario"),
        format!("scenario=two\nprocess_pid_file={}\n", pid_file.display()),
    )
    .expect("scenario");
    let config = sb.write_config(&format!(
        "gpu: {{ backend: nvml, nvml_library: '{}', sample_ms: 200 }}\nmodels:\n{}",
        lib.display(),
        mock_model("qwen-7b", free_port(), "", "")
    ));
    let mut d = Daemon::start(&sb, &config);

    let starting = d.wait_for("qwen-7b to start", LONG, |v| {
        v["type"] == "model" && v["model"] == "qwen-7b" && v["state"] == "starting"
    });
    let pid = starting["pid"].as_u64().expect("a pid");
    let tmp = sb.path().join("model.pid.tmp");
    std::fs::write(&tmp, pid.to_string()).expect("write pid");
    std::fs::rename(&tmp, &pid_file).expect("rename pid file");

    let holder = |v: &Value| v["type"] == "gpu" && v["kind"] == "sampled" && v["gpus"][0]["processes"][0]["pid"] == pid;
    let sample = d.wait_for("a GPU sample with the model's PID", LONG, holder);
    let process = &sample["gpus"][0]["processes"][0];
    assert_eq!(process["model"], "qwen-7b", "{sample}");
    assert_eq!(process["used_memory_bytes"], 6u64 << 30);
    assert_eq!(sample["gpus"][1]["processes"][0]["model"], Value::Null, "PID 4199455 is nobody's");

    d.signal(15);
    let status = d.wait_exit(LONG);
    assert!(status.success(), "daemon exit: {status:?}");
}
