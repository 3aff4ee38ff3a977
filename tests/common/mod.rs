//! Shared harness for black-box tests: temp XDG dirs, the llmdeck binary, a daemon whose JSON
//! event lines are collected, and process checks.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod tmux;

pub const BIN: &str = env!("CARGO_BIN_EXE_llmdeck");

/// A temporary home with XDG dirs, so tests never touch the real ones.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox { dir: tempfile::tempdir().expect("temp dir") }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(BIN);
        let p = self.path();
        cmd.env("HOME", p)
            .env("XDG_CONFIG_HOME", p.join("config"))
            .env("XDG_DATA_HOME", p.join("data"))
            .env("XDG_STATE_HOME", p.join("state"))
            .env_remove("LLMDECK_CONFIG")
            .env_remove("LLMDECK_NVML_LIB")
            .env("NO_COLOR", "1");
        cmd
    }

    /// The environment for llmdeck in a tmux pane: these dirs, a real terminal type, a plain prompt.
    pub fn tmux_env(&self) -> Vec<(&'static str, String)> {
        let p = self.path();
        vec![
            ("HOME", p.display().to_string()),
            ("XDG_CONFIG_HOME", p.join("config").display().to_string()),
            ("XDG_DATA_HOME", p.join("data").display().to_string()),
            ("XDG_STATE_HOME", p.join("state").display().to_string()),
            ("TERM", "xterm-256color".into()),
            ("PS1", "$ ".into()),
        ]
    }

    pub fn write_config(&self, yaml: &str) -> PathBuf {
        let path = self.path().join("config.yaml");
        std::fs::write(&path, yaml).expect("write config");
        path
    }
}

/// A running `llmdeck daemon` with its stdout events collected on a thread.
pub struct Daemon {
    pub child: Child,
    events: mpsc::Receiver<Value>,
    pub seen: Vec<Value>,
}

impl Daemon {
    pub fn start(sandbox: &Sandbox, config: &Path) -> Daemon {
        let mut child = sandbox
            .command()
            .args(["daemon", "--config"])
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn daemon");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => {
                        if tx.send(v).is_err() {
                            break;
                        }
                    }
                    Err(e) => panic!("daemon printed a line that is not JSON ({e}): {line}"),
                }
            }
        });
        Daemon { child, events, seen: Vec::new() }
    }

    /// Waits for an event matching `pred` (events already seen count too).
    pub fn wait_for(&mut self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return v.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Err(_) => panic!("timed out after {timeout:?} waiting for {what}; saw:\n{}", self.model_events_text()),
            }
        }
    }

    /// Collects whatever arrives for `dur`.
    pub fn drain_for(&mut self, dur: Duration) {
        let deadline = Instant::now() + dur;
        while let Ok(v) = self.events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            self.seen.push(v);
        }
    }

    pub fn model_events(&self, model: &str) -> Vec<&Value> {
        self.seen.iter().filter(|v| v["type"] == "model" && v["model"] == model).collect()
    }

    pub fn states_of(&self, model: &str) -> Vec<String> {
        self.model_events(model).iter().map(|v| v["state"].as_str().unwrap_or("?").to_owned()).collect()
    }

    fn model_events_text(&self) -> String {
        self.seen.iter().filter(|v| v["type"] != "log").map(|v| v.to_string()).collect::<Vec<_>>().join("\n")
    }

    pub fn signal(&self, sig: i32) {
        unsafe_kill(self.child.id(), sig);
    }

    /// Waits for the daemon to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Read what is left on stdout.
                self.drain_for(Duration::from_millis(200));
                return status;
            }
            assert!(Instant::now() < deadline, "daemon did not exit within {timeout:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn unsafe_kill(pid: u32, sig: i32) {
    let _ = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
}

/// Whether a process exists (zombies count as gone).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()).unwrap_or("X");
            state != "Z" && state != "X"
        }
        Err(_) => false,
    }
}

/// Waits until `pid` is gone; false if it is still there after `timeout`.
/// Waits for `child` to exit by itself; `None` (and the child killed) after `timeout`.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

pub fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    !alive(pid)
}

/// The YAML of one mock-llm model for test configs.
pub fn mock_model(id: &str, port: u16, mock_args: &str, extra: &str) -> String {
    format!(
        "  - id: {id}\n    command: {BIN}\n    args: [mock-llm, --port, \"{port}\"{mock_args}]\n    port: {port}\n    health: {{ interval_s: 0.5, timeout_s: 1, startup_timeout_s: 30 }}\n    stop_timeout_s: 3\n{extra}"
    )
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}
