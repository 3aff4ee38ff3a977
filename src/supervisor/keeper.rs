//! The per-model keeper (`llmdeck keeper`, hidden): what makes sure nothing a model started
//! outlives llmdeck, not even after `kill -9` or the OOM killer, the way container runtimes'
//! shims do it.
//!
//! llmdeck starts the keeper as the leader of the model's process group; the keeper starts the
//! model in that group and becomes a child subreaper, so everything the model starts — workers,
//! helpers that call `setsid`, grandchildren whose parents died — stays its descendant. It
//! holds the read end of a pipe whose write end only llmdeck has (close-on-exec, so no other
//! child inherits it): EOF on it means llmdeck is gone, at once, without polling. Then the
//! keeper stops the whole tree — SIGTERM, the model's stop timeout, SIGKILL — and exits.
//!
//! While llmdeck lives the keeper is invisible: the model's output goes straight to llmdeck's
//! pipes (the keeper closes its own copies), the group's signals reach the model (the keeper
//! lets them pass), and when the model exits the keeper exits the same way — with its code, or
//! by its signal — so the supervisor sees the model's own exit status.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// How often the tree is looked at while it stops (only then: never while the model runs).
const STOPPING_POLL: Duration = Duration::from_millis(50);
/// After SIGKILL, how long the keeper waits for the tree to be gone before it exits anyway.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// The keeper's command line after `llmdeck keeper`: the model's stop timeout, then the
/// model's own command.
pub fn keeper_args(stop_timeout: Duration, stop_command: Option<&str>, program: &str, args: &[String]) -> Vec<String> {
    let mut out = vec!["keeper".to_owned(), "--stop-timeout-ms".to_owned(), stop_timeout.as_millis().to_string()];
    if let Some(command) = stop_command {
        out.push("--stop-command".to_owned());
        out.push(command.to_owned());
    }
    out.push("--".to_owned());
    out.push(program.to_owned());
    out.extend(args.iter().cloned());
    out
}

/// Runs the keeper: starts `program` and watches it and llmdeck until one of them is gone.
/// Returns the exit code to use when the model could not be started or llmdeck went away;
/// mirrors the model's exit otherwise (and does not return when that was a signal).
pub fn run(stop_timeout: Duration, stop_command: Option<&str>, program: &str, args: &[String]) -> i32 {
    // Everything the model starts stays ours to stop, whatever it does with sessions.
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        eprintln!("llmdeck keeper: cannot become a subreaper: {e}");
    }
    // The group's SIGTERM and SIGINT are for the model: the keeper lets them pass and stays
    // to report its exit. A handler (not SIG_IGN) so that the model does not inherit it.
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        let action = SigAction::new(SigHandler::Handler(let_pass), SaFlags::SA_RESTART, SigSet::empty());
        // SAFETY: the handler does nothing, which is async-signal-safe.
        let _ = unsafe { sigaction(signal, &action) };
    }
    let keeper = nix::unistd::getpid();
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null());
    // SAFETY: only async-signal-safe calls (prctl, getppid) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
            if nix::unistd::getppid() != keeper {
                return Err(io::Error::other("the keeper exited while starting the model"));
            }
            Ok(())
        });
    }
    let child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("llmdeck keeper: could not start `{program}`: {e}");
            return 127;
        }
    };
    let model = Pid::from_raw(child.id() as i32);
    // The model's output goes to llmdeck directly: the keeper's copies of the pipes must not
    // keep them open after the model and its children are done.
    silence_own_output();
    match watch(model) {
        Watched::ModelExited(status) => mirror(status),
        Watched::LlmdeckGone => {
            if let Some(command) = stop_command {
                run_stop_command(command, stop_timeout);
            }
            stop_tree(keeper, stop_timeout);
            0
        }
    }
}

extern "C" fn let_pass(_: nix::libc::c_int) {}

enum Watched {
    ModelExited(ExitStatus),
    LlmdeckGone,
}

/// Sleeps until the model exits (its pidfd) or llmdeck is gone (EOF on stdin).
fn watch(model: Pid) -> Watched {
    let pidfd = pidfd_open(model).ok();
    let stdin = io::stdin();
    loop {
        let mut fds = vec![PollFd::new(std::os::fd::AsFd::as_fd(&stdin), PollFlags::POLLIN)];
        if let Some(fd) = &pidfd {
            // SAFETY: the pidfd is open for the whole loop.
            fds.push(PollFd::new(unsafe { BorrowedFd::borrow_raw(fd.as_raw_fd()) }, PollFlags::POLLIN));
        }
        // Without a pidfd (an old kernel), look at the model now and then.
        let timeout = if pidfd.is_some() { PollTimeout::NONE } else { PollTimeout::from(200u16) };
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => std::thread::sleep(STOPPING_POLL),
        }
        let llmdeck_said = fds[0].revents().is_some_and(|r| !r.is_empty());
        if let Some(status) = reap(Some(model)) {
            return Watched::ModelExited(status);
        }
        if llmdeck_said {
            let mut byte = [0u8; 64];
            match io::stdin().lock().read(&mut byte) {
                Ok(0) => return Watched::LlmdeckGone,
                Err(e) if e.kind() != io::ErrorKind::Interrupted => return Watched::LlmdeckGone,
                _ => {}
            }
        }
    }
}

/// Reaps every child that has exited (orphans end up here: we are their subreaper); the
/// model's exit status if it was among them.
fn reap(model: Option<Pid>) -> Option<ExitStatus> {
    let mut model_status = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if Some(pid) == model => {
                model_status = Some(ExitStatus::from_raw((code & 0xff) << 8));
            }
            Ok(WaitStatus::Signaled(pid, signal, core)) if Some(pid) == model => {
                model_status = Some(ExitStatus::from_raw(signal as i32 | if core { 0x80 } else { 0 }));
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return model_status,
            Ok(_) => {}
        }
    }
}

/// Exits the way the model did: its code, or its signal.
fn mirror(status: ExitStatus) -> i32 {
    if let Some(code) = status.code() {
        return code;
    }
    let Some(raw) = status.signal() else { return 1 };
    if let Ok(signal) = Signal::try_from(raw) {
        // No core file of the keeper for the model's crash.
        let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
        // SAFETY: restoring the default action is async-signal-safe and the keeper is done.
        let _ = unsafe { nix::sys::signal::signal(signal, SigHandler::SigDfl) };
        let mut set = SigSet::empty();
        set.add(signal);
        let _ = set.thread_unblock();
        let _ = nix::sys::signal::raise(signal);
    }
    128 + raw
}

/// Points the keeper's stdout and stderr at /dev/null.
fn silence_own_output() {
    let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") else { return };
    for fd in [1, 2] {
        // SAFETY: dup2 onto the standard descriptors, which stay open (now on /dev/null).
        let _ = unsafe { nix::libc::dup2(null.as_raw_fd(), fd) };
    }
}

/// The model's `stop_command` (`sh -c`), given at most `limit`; its own tree is stopped with
/// the model's.
fn run_stop_command(command: &str, limit: Duration) {
    let Ok(mut child) = Command::new("sh").arg("-c").arg(command).stdin(Stdio::null()).spawn() else { return };
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(STOPPING_POLL);
    }
}

/// Stops every descendant: SIGTERM, up to `stop_timeout` for them to go, then SIGKILL.
fn stop_tree(keeper: Pid, stop_timeout: Duration) {
    signal_tree(keeper, Signal::SIGTERM);
    let deadline = Instant::now() + stop_timeout;
    while !descendants(keeper).is_empty() && Instant::now() < deadline {
        let _ = reap(None);
        std::thread::sleep(STOPPING_POLL);
    }
    let deadline = Instant::now() + KILL_GRACE;
    loop {
        signal_tree(keeper, Signal::SIGKILL);
        let _ = reap(None);
        if descendants(keeper).is_empty() || Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(STOPPING_POLL);
    }
}

/// Signals each living descendant through a pidfd opened while it is ours, so a pid that was
/// reaped and given to someone else meanwhile is never signalled.
fn signal_tree(keeper: Pid, signal: Signal) {
    for pid in descendants(keeper) {
        let Ok(fd) = pidfd_open(pid) else { continue };
        if !descends_from(pid, keeper) {
            continue;
        }
        let _ = crate::util::procfs::pidfd_signal(&fd, signal);
    }
}

/// Every process below `root` (not zombies: they are only waiting to be reaped).
pub fn descendants(root: Pid) -> Vec<Pid> {
    let table = process_table();
    let mut found = Vec::new();
    let mut frontier = vec![root.as_raw()];
    while let Some(parent) = frontier.pop() {
        for (pid, ppid, state) in &table {
            if *ppid == parent && *pid != root.as_raw() {
                frontier.push(*pid);
                if *state != 'Z' {
                    found.push(Pid::from_raw(*pid));
                }
            }
        }
    }
    found
}

fn descends_from(pid: Pid, root: Pid) -> bool {
    let mut at = pid.as_raw();
    for _ in 0..4096 {
        if at == root.as_raw() {
            return true;
        }
        match u32::try_from(at).ok().and_then(crate::util::procfs::stat) {
            Some(stat) if stat.ppid > 0 => at = stat.ppid as i32,
            _ => return false,
        }
    }
    false
}

/// (pid, parent pid, state) of every process.
fn process_table() -> Vec<(i32, i32, char)> {
    crate::util::procfs::pids()
        .into_iter()
        .filter_map(|pid| crate::util::procfs::stat(pid).map(|s| (pid as i32, s.ppid as i32, s.state)))
        .collect()
}

fn pidfd_open(pid: Pid) -> io::Result<OwnedFd> {
    crate::util::procfs::pidfd_open(u32::try_from(pid.as_raw()).map_err(|_| io::Error::other("negative pid"))?)
}

/// What `execvp` would find for `program` (relative to `cwd`, on `path`), as the error the
/// spawn itself would give: with a keeper between them, the model's own spawn error would
/// otherwise become an exit code of the keeper.
pub fn check_executable(program: &str, path: Option<&str>, cwd: Option<&Path>) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let in_cwd = |p: &Path| -> PathBuf {
        match cwd {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_owned(),
        }
    };
    let candidates: Vec<PathBuf> = if program.contains('/') {
        vec![in_cwd(Path::new(program))]
    } else {
        let path = path.map(str::to_owned).or_else(|| std::env::var("PATH").ok()).unwrap_or_default();
        path.split(':').map(|dir| in_cwd(&Path::new(if dir.is_empty() { "." } else { dir }).join(program))).collect()
    };
    let mut denied = false;
    for candidate in candidates {
        let Ok(meta) = std::fs::metadata(&candidate) else { continue };
        if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
            return Ok(());
        }
        denied = true;
    }
    Err(if denied { io::ErrorKind::PermissionDenied.into() } else { io::ErrorKind::NotFound.into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_as_exec_would() {
        assert!(check_executable("sh", None, None).is_ok());
        assert_eq!(
            check_executable("no-such-llmdeck-server", None, None).map_err(|e| e.kind()),
            Err(io::ErrorKind::NotFound)
        );
        assert_eq!(
            check_executable("/nonexistent/vllm", None, None).map_err(|e| e.kind()),
            Err(io::ErrorKind::NotFound)
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let script = dir.path().join("server");
        std::fs::write(&script, "#!/bin/sh\n").expect("write");
        let shown = script.to_str().expect("utf-8");
        assert_eq!(check_executable(shown, None, None).map_err(|e| e.kind()), Err(io::ErrorKind::PermissionDenied));
        assert_eq!(
            check_executable("server", Some(&dir.path().display().to_string()), None).map_err(|e| e.kind()),
            Err(io::ErrorKind::PermissionDenied)
        );
        assert!(check_executable("./server", None, Some(dir.path())).is_err());
    }

    #[test]
    fn our_own_children_are_our_descendants() {
        let mut child = Command::new("sleep").arg("30").spawn().expect("sleep");
        let me = nix::unistd::getpid();
        let pid = Pid::from_raw(child.id() as i32);
        assert!(descendants(me).contains(&pid));
        assert!(descends_from(pid, me));
        let _ = child.kill();
        let _ = child.wait();
    }
}
