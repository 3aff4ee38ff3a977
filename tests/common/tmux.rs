//! Driving llmdeck's TUI like a person would: a tmux server on a private socket, keys in,
//! screen text out. A failure says what happened: the program in the pane exited (with its
//! status), the session vanished, or the screen never showed what was awaited.

use std::cell::RefCell;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// What a command started with [`Tmux::launch`] prints when it ends; the typed line itself
/// never contains this text (it is assembled by `printf`).
const EXITED: &str = "[llmdeck-exited ";

pub struct Tmux {
    socket: PathBuf,
    /// Written by the pane's wrapper with the exit status of the shell (or of the program it
    /// `exec`ed) once it ends.
    status_file: PathBuf,
    _dir: tempfile::TempDir,
    /// Files whose tails a failure report includes (llmdeck's own log, say).
    reported_files: RefCell<Vec<PathBuf>>,
    /// Set by [`Tmux::launch`]: the screen then says when the program ended.
    launched: RefCell<bool>,
}

impl Tmux {
    /// A detached session running an interactive shell at `width`x`height`, with `env` set.
    pub fn start(width: u16, height: u16, env: &[(&str, String)]) -> Tmux {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("tmux.sock");
        let status_file = dir.path().join("pane-status");
        let mut cmd = Command::new("tmux");
        cmd.arg("-S").arg(&socket).args(["-f", "/dev/null", "new-session", "-d", "-s", "t", "-x"]);
        cmd.arg(width.to_string()).arg("-y").arg(height.to_string());
        for (k, v) in env {
            cmd.arg("-e").arg(format!("{k}={v}"));
        }
        // A wrapper records how the shell (or what it `exec`s) ended: tmux's own pane status is
        // not always learned (tmux 3.3 can mark a pane dead without ever reaping its status).
        cmd.args(["sh", "-c", "bash --norc --noprofile; echo $? > \"$0\"", &status_file.display().to_string()]);
        let status = cmd.status().expect("tmux is installed (.ci/run installs it)");
        assert!(status.success(), "tmux new-session failed");
        let t = Tmux {
            socket,
            status_file,
            _dir: dir,
            reported_files: RefCell::new(Vec::new()),
            launched: RefCell::new(false),
        };
        t.tmux(&["set-option", "-g", "status", "off"]);
        // A pane whose program exits stays, with its exit status, instead of vanishing.
        t.tmux(&["set-option", "-g", "remain-on-exit", "on"]);
        t.tmux(&["resize-window", "-t", "t", "-x", &width.to_string(), "-y", &height.to_string()]);
        t
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux").arg("-S").arg(&self.socket).args(args).output().expect("tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Includes the tail of `path` in any failure report.
    pub fn report_file(&self, path: PathBuf) {
        self.reported_files.borrow_mut().push(path);
    }

    /// Types a line into the shell.
    pub fn type_line(&self, line: &str) {
        self.tmux(&["send-keys", "-t", "t", "-l", line]);
        self.tmux(&["send-keys", "-t", "t", "Enter"]);
    }

    /// Runs `command` in the shell so that its end and exit status show on the screen
    /// ([`Tmux::wait_exited`]); until then a wait that sees it end fails at once, saying so.
    pub fn launch(&self, command: &str) {
        *self.launched.borrow_mut() = true;
        self.type_line(&format!("{command}; printf '[%s %s]\\n' llmdeck-exited $?"));
    }

    /// Waits for the launched command to end; its exit status.
    pub fn wait_exited(&self, timeout: Duration) -> i32 {
        *self.launched.borrow_mut() = false;
        self.wait_text(EXITED, timeout);
        exit_marker(&self.screen()).expect("the exit marker carries the status")
    }

    /// Sends tmux key names (`?`, `q`, `Tab`, `C-c`, ...).
    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend_from_slice(keys);
        self.tmux(&args);
    }

    /// The PID of the pane's shell (after `exec`, the program itself): the child of the
    /// pane's wrapper.
    pub fn pane_pid(&self) -> u32 {
        let wrapper: u32 =
            self.tmux(&["display-message", "-p", "-t", "t", "#{pane_pid}"]).trim().parse().expect("pane pid");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = Command::new("pgrep").arg("-P").arg(wrapper.to_string()).output().expect("pgrep");
            if let Some(pid) = String::from_utf8_lossy(&out.stdout).lines().find_map(|l| l.trim().parse().ok()) {
                return pid;
            }
            assert!(Instant::now() < deadline, "the pane's wrapper {wrapper} has no shell");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Ends the tmux server: the pane's terminal hangs up, as when an SSH session drops.
    pub fn hang_up(&self) {
        self.tmux(&["kill-server"]);
    }

    pub fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "t"])
    }

    /// `None` while the pane's program runs; how it ended otherwise.
    fn pane_ended(&self) -> Option<String> {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(["display-message", "-p", "-t", "t", "#{pane_dead}"])
            .output()
            .expect("tmux");
        if !out.status.success() {
            return Some("the tmux session is gone".into());
        }
        let dead = String::from_utf8_lossy(&out.stdout).trim() == "1";
        // Read after asking tmux: a dead wrapper has written its file, if it could.
        let recorded = std::fs::read_to_string(&self.status_file).ok().and_then(|t| t.trim().parse::<i32>().ok());
        match (recorded, dead) {
            (Some(code @ 129..), _) => Some(format!("the pane's program was killed by signal {}", code - 128)),
            (Some(code), _) => Some(format!("the pane's program exited with code {code}")),
            // The wrapper itself died (a hang-up): no status to tell.
            (None, true) => Some("the pane's program and its wrapper ended".into()),
            (None, false) => None,
        }
    }

    /// Waits until the screen satisfies `pred`; returns how long it took.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> Duration {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if pred(&screen) {
                return start.elapsed();
            }
            if let Some(ended) = self.pane_ended() {
                // What the program printed last, now that it has ended.
                self.fail(&format!("waiting for {what}, {ended}"), &self.screen());
            }
            if *self.launched.borrow()
                && let Some(code) = exit_marker(&screen)
            {
                self.fail(&format!("waiting for {what}, the launched command exited with status {code}"), &screen);
            }
            if start.elapsed() >= timeout {
                self.fail(&format!("timed out after {timeout:?} waiting for {what}"), &screen);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn wait_text(&self, text: &str, timeout: Duration) -> Duration {
        self.wait_for(&format!("`{text}`"), timeout, |s| s.contains(text))
    }

    #[track_caller]
    fn fail(&self, what: &str, screen: &str) -> ! {
        let mut report = format!("{what}\n--- screen:\n{screen}");
        for path in self.reported_files.borrow().iter() {
            let files = if path.is_dir() { logs_under(path) } else { vec![path.clone()] };
            for file in files {
                report.push_str(&format!(
                    "\n--- {} (last 30 lines):\n{}",
                    file.display(),
                    super::tail_of_file(&file, 30)
                ));
            }
        }
        panic!("{report}");
    }
}

/// Every `llmdeck.log` under `dir` (a demo's temporary directory), a few levels deep.
fn logs_under(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![(dir.to_path_buf(), 0)];
    while let Some((d, depth)) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() && depth < 4 {
                todo.push((path, depth + 1));
            } else if path.file_name().is_some_and(|n| n == "llmdeck.log") {
                found.push(path);
            }
        }
    }
    found
}

/// The status in `[llmdeck-exited N]`, if the screen shows it.
fn exit_marker(screen: &str) -> Option<i32> {
    let rest = &screen[screen.rfind(EXITED)? + EXITED.len()..];
    rest.split(']').next()?.trim().parse().ok()
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").arg("-S").arg(&self.socket).arg("kill-server").status();
    }
}
