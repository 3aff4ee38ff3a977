//! Driving llmdeck's TUI like a person would: a tmux server on a private socket, keys in,
//! screen text out.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

pub struct Tmux {
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmux {
    /// A detached session running an interactive shell at `width`x`height`, with `env` set.
    pub fn start(width: u16, height: u16, env: &[(&str, String)]) -> Tmux {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("tmux.sock");
        let mut cmd = Command::new("tmux");
        cmd.arg("-S").arg(&socket).args(["-f", "/dev/null", "new-session", "-d", "-s", "t", "-x"]);
        cmd.arg(width.to_string()).arg("-y").arg(height.to_string());
        for (k, v) in env {
            cmd.arg("-e").arg(format!("{k}={v}"));
        }
        cmd.args(["bash", "--norc", "--noprofile"]);
        let status = cmd.status().expect("tmux is installed (.ci/run installs it)");
        assert!(status.success(), "tmux new-session failed");
        let t = Tmux { socket, _dir: dir };
        t.tmux(&["set-option", "-g", "status", "off"]);
        t.tmux(&["resize-window", "-t", "t", "-x", &width.to_string(), "-y", &height.to_string()]);
        t
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux").arg("-S").arg(&self.socket).args(args).output().expect("tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types a line into the shell.
    pub fn type_line(&self, line: &str) {
        self.tmux(&["send-keys", "-t", "t", "-l", line]);
        self.tmux(&["send-keys", "-t", "t", "Enter"]);
    }

    /// Sends tmux key names (`?`, `q`, `Tab`, `C-c`, ...).
    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend_from_slice(keys);
        self.tmux(&args);
    }

    /// The PID of the process in the pane (after `exec`, the program itself).
    pub fn pane_pid(&self) -> u32 {
        self.tmux(&["display-message", "-p", "-t", "t", "#{pane_pid}"]).trim().parse().expect("pane pid")
    }

    /// Ends the tmux server: the pane's terminal hangs up, as when an SSH session drops.
    pub fn hang_up(&self) {
        self.tmux(&["kill-server"]);
    }

    pub fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "t"])
    }

    /// Waits until the screen satisfies `pred`; returns how long it took.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> Duration {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if pred(&screen) {
                return start.elapsed();
            }
            assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}; screen:\n{screen}");
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn wait_text(&self, text: &str, timeout: Duration) -> Duration {
        self.wait_for(&format!("`{text}`"), timeout, |s| s.contains(text))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").arg("-S").arg(&self.socket).arg("kill-server").status();
    }
}
