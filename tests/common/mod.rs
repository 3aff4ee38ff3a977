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

    /// llmdeck's own log for commands run in this sandbox.
    pub fn app_log(&self) -> PathBuf {
        self.path().join("state").join("llmdeck").join("llmdeck.log")
    }

    /// A path in the sandbox no other call has returned: `<stem>-<n>.<ext>`.
    pub fn fresh_file(&self, stem: &str, ext: &str) -> PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.path().join(format!("{stem}-{n}.{ext}"))
    }

    /// `TMPDIR` for programs run in this sandbox (the demo makes its directory there).
    pub fn tmp_dir(&self) -> PathBuf {
        let dir = self.path().join("tmp");
        std::fs::create_dir_all(&dir).expect("tmp dir");
        dir
    }

    /// A tmux session on this sandbox's environment (plus `extra`), whose failure reports
    /// include llmdeck's own log (the demo's too: it keeps it under `TMPDIR`).
    pub fn tmux(&self, width: u16, height: u16, extra: &[(&'static str, String)]) -> tmux::Tmux {
        let mut env = self.tmux_env();
        env.push(("TMPDIR", self.tmp_dir().display().to_string()));
        env.extend(extra.iter().cloned());
        let t = tmux::Tmux::start(width, height, &env);
        t.report_file(self.app_log());
        t.report_file(self.tmp_dir());
        t
    }

    /// The daemon's token (generated in the data dir at its first start).
    pub fn daemon_token(&self) -> String {
        let file = self.path().join("data").join("llmdeck").join("daemon.token");
        std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display())).trim().to_owned()
    }

    pub fn write_config(&self, yaml: &str) -> PathBuf {
        let path = self.path().join("config.yaml");
        std::fs::write(&path, yaml).expect("write config");
        path
    }
}

/// What the reader thread of a child's stdout passes on.
enum Received {
    Event(Value),
    /// A line that is not JSON: a bug in the daemon's output (or something else writing to it).
    NotJson(String),
    /// Reading failed (not UTF-8, an I/O error).
    ReadError(String),
}

/// A running `llmdeck daemon` with its stdout events collected on a thread and its stderr kept
/// in a file, so a failure can say what the daemon did: its exit status, its stderr, the tail
/// of llmdeck's own log, and every event it sent.
pub struct Daemon {
    pub child: Child,
    events: mpsc::Receiver<Received>,
    pub seen: Vec<Value>,
    stderr_file: PathBuf,
    app_log: PathBuf,
    /// The exit status, once observed (the child is reaped then).
    status: Option<std::process::ExitStatus>,
}

impl Daemon {
    /// A daemon whose viewers' port the OS picks (its URL: [`Daemon::ws_url`]).
    pub fn start(sandbox: &Sandbox, config: &Path) -> Daemon {
        Self::start_with(sandbox, &["daemon", "--listen", "127.0.0.1:0", "--config"], config)
    }

    /// `llmdeck ARGS CONFIG` as a daemon-like process printing JSON lines.
    pub fn start_with(sandbox: &Sandbox, args: &[&str], config: &Path) -> Daemon {
        let stderr_file = sandbox.fresh_file("daemon", "stderr");
        let stderr = std::fs::File::create(&stderr_file).expect("create the daemon's stderr file");
        let mut child = sandbox
            .command()
            .args(args)
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn daemon");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || read_json_lines(stdout, tx));
        Daemon { child, events, seen: Vec::new(), stderr_file, app_log: sandbox.app_log(), status: None }
    }

    /// Waits for an event matching `pred` (events already seen count too). Panics with what
    /// happened otherwise: the stream closed (and how the daemon exited), a line that is not
    /// JSON, or a plain timeout.
    pub fn wait_for(&mut self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return v.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(Received::Event(v)) => {
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Ok(Received::NotJson(line)) => {
                    self.fail(&format!("waiting for {what}, the daemon printed a line that is not JSON: {line:?}"))
                }
                Ok(Received::ReadError(e)) => {
                    self.fail(&format!("waiting for {what}, reading the daemon's stdout failed: {e}"))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.fail(&format!("waiting for {what}, the daemon's event stream closed"))
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.fail(&format!("timed out after {timeout:?} waiting for {what}"))
                }
            }
        }
    }

    /// Collects whatever arrives for `dur` (or until the stream ends).
    pub fn drain_for(&mut self, dur: Duration) {
        let deadline = Instant::now() + dur;
        loop {
            match self.events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Received::Event(v)) => self.seen.push(v),
                Ok(Received::NotJson(line)) => {
                    self.fail(&format!("the daemon printed a line that is not JSON: {line:?}"))
                }
                Ok(Received::ReadError(e)) => self.fail(&format!("reading the daemon's stdout failed: {e}")),
                Err(_) => return,
            }
        }
    }

    /// What the daemon wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_file).unwrap_or_default()
    }

    pub fn model_events(&self, model: &str) -> Vec<&Value> {
        self.seen.iter().filter(|v| v["type"] == "model" && v["model"] == model).collect()
    }

    pub fn states_of(&self, model: &str) -> Vec<String> {
        self.model_events(model).iter().map(|v| v["state"].as_str().unwrap_or("?").to_owned()).collect()
    }

    pub fn signal(&self, sig: i32) {
        assert!(self.status.is_none(), "the daemon was already reaped: its pid may name another process now");
        unsafe_kill(self.child.id(), sig);
    }

    /// Waits for the daemon to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                // Read what is left on stdout.
                self.drain_for(Duration::from_millis(500));
                return status;
            }
            if Instant::now() >= deadline {
                self.fail(&format!("the daemon did not exit within {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's WebSocket URL, once it has written it (it listens by then).
    pub fn ws_url(&mut self, sandbox: &Sandbox) -> String {
        let file = sandbox.path().join("state").join("llmdeck").join("daemon.url");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(url) = std::fs::read_to_string(&file)
                && !url.trim().is_empty()
            {
                return url.trim().to_owned();
            }
            if self.try_status().is_some() || Instant::now() >= deadline {
                self.fail(&format!("the daemon never wrote {}", file.display()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn try_status(&mut self) -> Option<std::process::ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Everything a reader of a failed test needs, then the panic.
    #[track_caller]
    pub fn fail(&mut self, what: &str) -> ! {
        // A closed stream usually means the daemon is exiting: give it a moment to say how.
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.try_status().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        // Events still queued belong in the report.
        while let Ok(Received::Event(v)) = self.events.try_recv() {
            self.seen.push(v);
        }
        let status = match self.status {
            Some(status) => format!("the daemon exited: {}", describe_exit(status)),
            None => format!("the daemon (pid {}) is still running", self.child.id()),
        };
        panic!(
            "{what}\n{status}\n--- its stderr (last 40 lines of {}):\n{}\n--- llmdeck's own log (last 40 lines):\n{}\n--- the {} events it sent (log lines left out):\n{}",
            self.stderr_file.display(),
            tail_of_file(&self.stderr_file, 40),
            tail_of_file(&self.app_log, 40),
            self.seen.len(),
            self.events_text()
        )
    }

    fn events_text(&self) -> String {
        let shown: Vec<String> = self.seen.iter().filter(|v| v["type"] != "log").map(|v| v.to_string()).collect();
        if shown.is_empty() { "(none)".into() } else { shown.join("\n") }
    }
}

fn read_json_lines(stdout: impl std::io::Read, tx: mpsc::Sender<Received>) {
    for line in BufReader::new(stdout).lines() {
        let received = match line {
            Ok(line) => match serde_json::from_str::<Value>(&line) {
                Ok(v) => Received::Event(v),
                Err(_) => Received::NotJson(line),
            },
            Err(e) => Received::ReadError(e.to_string()),
        };
        let stop = !matches!(received, Received::Event(_));
        if tx.send(received).is_err() || stop {
            return;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Every process below `root` now.
pub fn descendants_of(root: u32) -> Vec<u32> {
    let table: Vec<(u32, u32)> = llmdeck::util::procfs::pids()
        .into_iter()
        .filter_map(|pid| llmdeck::util::procfs::stat(pid).map(|s| (pid, s.ppid)))
        .collect();
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for (pid, ppid) in &table {
            if *ppid == parent {
                found.push(*pid);
                frontier.push(*pid);
            }
        }
    }
    found
}

/// A child killed and reaped when dropped: a test that fails half-way leaves nothing running
/// (a leftover daemon would hold its port and state against the tests after it).
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `exit code 2`, `killed by signal 9 (SIGKILL)`.
pub fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => {
            let name = nix::sys::signal::Signal::try_from(sig).map(|s| s.as_str()).unwrap_or("?");
            format!("killed by signal {sig} ({name})")
        }
        (None, None) => format!("{status}"),
    }
}

/// The last `n` lines of a file, or why there are none.
pub fn tail_of_file(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) if bytes.is_empty() => "(empty)".into(),
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("({}: {e})", path.display()),
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

/// A loopback port for a server under test that picks no port itself: never handed out twice
/// on this machine while this test binary runs (see `llmdeck::util::ports`), and outside the
/// kernel's ephemeral range, so no `bind(0)` or outgoing connection takes it meanwhile.
pub fn free_port() -> u16 {
    static HELD: std::sync::Mutex<Vec<llmdeck::util::ports::PortReservation>> = std::sync::Mutex::new(Vec::new());
    let mut reserved = llmdeck::util::ports::reserve_loopback_ports(1).expect("a free loopback port");
    let reservation = reserved.pop().expect("one port");
    let port = reservation.port();
    HELD.lock().unwrap_or_else(|p| p.into_inner()).push(reservation);
    port
}

/// A running `llmdeck mock-shopper` on OS-assigned ports, killed when dropped.
pub struct MockShopper {
    pub child: Child,
    pub url: String,
    pub ssh_port: u16,
    stderr_file: PathBuf,
}

impl MockShopper {
    /// Starts it with `args` (e.g. `--provision-delay 0.2`) and waits for its listening line.
    pub fn start(sandbox: &Sandbox, args: &[&str]) -> MockShopper {
        let stderr_file = sandbox.fresh_file("mock-shopper", "stderr");
        let mut child = Command::new(BIN)
            .args(["mock-shopper", "--port", "0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_file).expect("stderr file"))
            .spawn()
            .expect("start mock-shopper");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(_) => {
                let status = wait_child(&mut child, Duration::from_secs(1));
                panic!(
                    "mock-shopper printed no listening line ({}); stderr:\n{}",
                    status.map_or("still running, now killed".into(), describe_exit),
                    tail_of_file(&stderr_file, 40)
                );
            }
        };
        // `mock-shopper listening on http://127.0.0.1:PORT ssh 127.0.0.1:PORT`
        let mut words = line.split_whitespace();
        let url = words.find(|w| w.starts_with("http://")).expect("the URL").to_owned();
        let ssh_port =
            words.last().and_then(|a| a.rsplit(':').next()).and_then(|p| p.parse().ok()).expect("the SSH port");
        MockShopper { child, url, ssh_port, stderr_file }
    }

    /// Its stderr so far (for failure messages).
    pub fn stderr(&self) -> String {
        tail_of_file(&self.stderr_file, 40)
    }
}

impl Drop for MockShopper {
    fn drop(&mut self) {
        // SIGTERM: it destroys its sessions (and what they started) as it goes.
        if let Ok(None) = self.child.try_wait() {
            unsafe_kill(self.child.id(), 15);
            if wait_child(&mut self.child, Duration::from_secs(10)).is_none() {
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
    }
}
