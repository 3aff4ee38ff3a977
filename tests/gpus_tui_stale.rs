//! End-to-end: the TUI (in tmux) on the fake libnvidia-ml whose power reading hangs. The GPUs
//! pane must say STALE while every key is still answered, and quitting must not wait for the
//! stuck driver thread.

mod common;

use std::time::Duration;

use common::{BIN, Sandbox};

#[test]
fn a_hung_nvml_call_marks_the_pane_stale_while_keys_still_work() {
    let fake = env!("LLMDECK_FAKE_NVML");
    assert!(!fake.is_empty(), "build.rs could not compile tests/fake_nvml");
    let sb = Sandbox::new();
    let config = sb.write_config("gpu:\n  backend: nvml\n  sample_ms: 200\n");
    let t = sb.tmux(
        120,
        40,
        &[
            ("LLMDECK_NVML_LIB", fake.to_owned()),
            // The third power reading (the second sample's GPU 0) never returns.
            ("FAKE_NVML_SCENARIO", "hang".into()),
            ("FAKE_NVML_HANG_FN", "nvmlDeviceGetPowerUsage".into()),
            ("FAKE_NVML_HANG_AFTER", "2".into()),
        ],
    );
    t.launch(&format!("'{BIN}' --config '{}'", config.display()));
    t.wait_text("H100 80GB", Duration::from_secs(10));
    t.wait_text("STALE for", Duration::from_secs(10));
    t.wait_text("nvmlDeviceGetPowerUsage (GPU 0) hung", Duration::from_secs(5));
    // The last readings stay on screen.
    assert!(t.screen().contains("312/700W"), "{}", t.screen());

    // Keys are answered while the driver thread is stuck.
    t.keys(&["?"]);
    t.wait_text("Keys (one map for every pane)", Duration::from_secs(5));
    t.keys(&["Escape"]);
    t.wait_for("help to close", Duration::from_secs(5), |s| !s.contains("Keys (one map for every pane)"));
    t.keys(&["2"]);
    t.keys(&["Enter"]);
    t.wait_text("GPU detail", Duration::from_secs(5));
    t.wait_text("slowdown at 87°C", Duration::from_secs(5));
    t.keys(&["Escape"]);
    t.wait_for("the detail to close", Duration::from_secs(5), |s| !s.contains("GPU detail"));

    // The stale time keeps counting: the pane is fed by the watchdog, not by the stuck thread.
    t.wait_for("the stale time to pass 2s", Duration::from_secs(10), |s| {
        s.lines().any(|l| {
            l.split("STALE for ")
                .nth(1)
                .and_then(|rest| rest.split('s').next())
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| n >= 2)
        })
    });

    // Quitting does not wait for the stuck thread.
    t.keys(&["q"]);
    assert_eq!(t.wait_exited(Duration::from_secs(10)), 0);
    t.type_line("echo back-$((40+2))");
    t.wait_text("back-42", Duration::from_secs(10));
}
