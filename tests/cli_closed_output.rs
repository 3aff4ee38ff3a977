//! Output into a pipe that is already closed (`llmdeck ... | head -1`) ends quietly, never in
//! a panic: there is nobody left to read it.

mod common;

use std::process::Stdio;

use common::Sandbox;

fn run_with_closed_stdout(sb: &Sandbox, args: &[&str]) -> std::process::Output {
    let mut child = sb.command().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    // Close the reading end before llmdeck writes: its writes then fail with EPIPE.
    drop(child.stdout.take());
    child.wait_with_output().expect("wait")
}

#[test]
fn a_closed_stdout_is_not_a_panic() {
    let sb = Sandbox::new();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml");
    for args in [&["completions", "bash"][..], &["config", "check", example], &["config", "path"]] {
        let out = run_with_closed_stdout(&sb, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "llmdeck {args:?} panicked: {stderr}");
        assert_eq!(out.status.code(), Some(0), "llmdeck {args:?}: {stderr}");
    }
}
