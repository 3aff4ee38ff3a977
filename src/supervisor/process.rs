//! Spawning model servers in their own process group, from one long-lived thread (so the
//! children's parent-death signal fires when llmdeck dies, not when some worker thread retires),
//! and signalling whole groups.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{ChildStderr, ChildStdout, ExitStatus, Stdio};
use std::sync::mpsc as std_mpsc;

use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;
use process_wrap::std::{ChildWrapper, CommandWrap, ProcessGroup};
use tokio::sync::oneshot;

use crate::util::procfs::{MODEL_ID_ENV, RUN_ID_ENV};

#[derive(Debug, Clone)]
pub struct SpawnSpec {
    pub program: String,
    pub args: Vec<String>,
    /// Merged over llmdeck's own environment.
    pub env: BTreeMap<String, String>,
    pub cwd: Option<PathBuf>,
    pub run_id: String,
    /// Set as `LLMDECK_MODEL_ID`, so `llmdeck gpus` can name the model holding GPU memory.
    pub model_id: String,
    /// Run the model under `llmdeck keeper` (it leads the group; the model is its child).
    pub keeper: Option<KeeperSpec>,
}

#[derive(Debug, Clone)]
pub struct KeeperSpec {
    /// The llmdeck binary.
    pub exe: PathBuf,
    /// The model's stop timeout: what the keeper gives it before SIGKILL when llmdeck is gone.
    pub stop_timeout: std::time::Duration,
    /// The model's `stop_command`, which the keeper runs first when llmdeck is gone.
    pub stop_command: Option<String>,
}

/// A started process group: its leader's PID (= the group id) and its output pipes. The
/// leader's exit arrives on `exit`.
pub struct Spawned {
    pub pgid: u32,
    pub stdout: ChildStdout,
    pub stderr: ChildStderr,
    pub exit: oneshot::Receiver<LeaderExit>,
}

/// The group leader has exited but is not reaped yet.
pub struct LeaderExit {
    pub status: io::Result<ExitStatus>,
    pub hold: LeaderHold,
}

impl LeaderExit {
    /// The wait thread ended without a word (it cannot, short of a bug): nothing is held.
    pub fn vanished() -> Self {
        Self {
            status: Err(io::Error::other("the wait thread vanished")),
            hold: LeaderHold { _release: std_mpsc::channel().0 },
        }
    }
}

/// Keeps an exited leader a zombie, so its PID, and with it the group id, cannot be given to
/// another process while we still signal the group's stragglers. Dropping it lets the wait
/// thread reap the leader.
pub struct LeaderHold {
    _release: std_mpsc::Sender<()>,
}

struct Request {
    spec: SpawnSpec,
    reply: oneshot::Sender<io::Result<Spawned>>,
}

/// The spawning thread. It lives as long as any clone of this handle.
#[derive(Clone)]
pub struct Spawner {
    tx: std_mpsc::Sender<Request>,
}

impl Spawner {
    pub fn start() -> io::Result<Spawner> {
        let (tx, rx) = std_mpsc::channel::<Request>();
        std::thread::Builder::new().name("llmdeck-spawner".into()).spawn(move || {
            for req in rx {
                // Nobody waits for the answer any more (the model's task is gone): what was
                // started must not run on unseen.
                if let Err(Ok(orphan)) = req.reply.send(spawn_group(req.spec)) {
                    let _ = signal_group(orphan.pgid, Signal::SIGKILL);
                }
            }
        })?;
        Ok(Spawner { tx })
    }

    pub async fn spawn(&self, spec: SpawnSpec) -> io::Result<Spawned> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Request { spec, reply }).map_err(|_| io::Error::other("the spawner thread has stopped"))?;
        answer.await.map_err(|_| io::Error::other("the spawner thread stopped while spawning"))?
    }
}

fn spawn_group(spec: SpawnSpec) -> io::Result<Spawned> {
    let parent = nix::unistd::getpid();
    let (program, args) = match &spec.keeper {
        Some(keeper) => {
            // The model's own spawn error (not found, not executable), as it would be without
            // a keeper between us.
            super::keeper::check_executable(
                &spec.program,
                spec.env.get("PATH").map(String::as_str),
                spec.cwd.as_deref(),
            )?;
            let args = super::keeper::keeper_args(
                keeper.stop_timeout,
                keeper.stop_command.as_deref(),
                &spec.program,
                &spec.args,
            );
            (keeper.exe.display().to_string(), args)
        }
        None => (spec.program.clone(), spec.args.clone()),
    };
    let keeper = spec.keeper.is_some();
    let mut cmd = CommandWrap::with_new(&program, |c| {
        c.args(&args)
            .envs(&spec.env)
            .env(RUN_ID_ENV, &spec.run_id)
            .env(MODEL_ID_ENV, &spec.model_id)
            // A keeper's stdin is the pipe whose EOF tells it llmdeck is gone: its write end
            // stays in the child handle, held by the wait thread for the keeper's lifetime.
            .stdin(if keeper { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = &spec.cwd {
            c.current_dir(dir);
        }
        // A keeper outlives llmdeck on purpose (to stop the model); a bare model must not.
        if keeper {
            return;
        }
        // SAFETY: only async-signal-safe calls (prctl, getppid) between fork and exec.
        unsafe {
            c.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
                // llmdeck may have died between fork and prctl: then nobody would kill us.
                if nix::unistd::getppid() != parent {
                    return Err(io::Error::other("llmdeck exited while starting the model"));
                }
                Ok(())
            });
        }
    });
    cmd.wrap(ProcessGroup::leader());
    let mut child = cmd.spawn()?;
    let pgid = child.id();
    let (Some(stdout), Some(stderr)) = (child.stdout().take(), child.stderr().take()) else {
        abandon(pgid);
        return Err(io::Error::other("the model's output pipes are missing"));
    };
    let (exit_tx, exit) = oneshot::channel();
    let waiter =
        std::thread::Builder::new().name(format!("llmdeck-wait-{pgid}")).spawn(move || wait_for(child, pgid, exit_tx));
    if let Err(e) = waiter {
        abandon(pgid);
        return Err(e);
    }
    Ok(Spawned { pgid, stdout, stderr, exit })
}

/// A started model that nobody could supervise (no wait thread, under thread or memory
/// pressure): it must not run on unseen, holding a port and a GPU.
fn abandon(pgid: u32) {
    let _ = signal_group(pgid, Signal::SIGKILL);
    if let Ok(raw) = i32::try_from(pgid) {
        let _ = nix::sys::wait::waitpid(Pid::from_raw(raw), None);
    }
}

/// Reports the leader's exit while it is still a zombie, and reaps it once the hold is dropped.
fn wait_for(mut child: Box<dyn ChildWrapper>, pid: u32, exit_tx: oneshot::Sender<LeaderExit>) {
    let (hold_tx, released) = std_mpsc::channel::<()>();
    let hold = LeaderHold { _release: hold_tx };
    match wait_unreaped(pid) {
        Ok(status) => {
            // If nobody listens any more, the hold is dropped with the message.
            let _ = exit_tx.send(LeaderExit { status: Ok(status), hold });
            let _ = released.recv(); // an error means the hold was dropped: reap
            let _ = child.wait();
        }
        Err(e) => {
            tracing::warn!("waiting for process {pid} without reaping it: {e}; reaping it now");
            let status = child.wait().map_err(|reap| io::Error::other(format!("{e}; then reaping it: {reap}")));
            let _ = exit_tx.send(LeaderExit { status, hold });
        }
    }
}

/// Blocks until `pid` (our child) exits, leaving it unreaped.
fn wait_unreaped(pid: u32) -> io::Result<ExitStatus> {
    let pid = Pid::from_raw(i32::try_from(pid).map_err(|_| io::Error::other(format!("pid {pid} out of range")))?);
    loop {
        match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(ExitStatus::from_raw((code & 0xff) << 8)),
            Ok(WaitStatus::Signaled(_, signal, core_dumped)) => {
                return Ok(ExitStatus::from_raw(signal as i32 | if core_dumped { 0x80 } else { 0 }));
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(io::Error::from(e)),
        }
    }
}

/// Sends `signal` to every process in the group. A group that is already gone is not an error.
pub fn signal_group(pgid: u32, signal: Signal) -> io::Result<()> {
    let Ok(raw) = i32::try_from(pgid) else {
        return Err(io::Error::other(format!("process group {pgid} out of range")));
    };
    if raw <= 1 {
        return Err(io::Error::other(format!("refusing to signal process group {raw}")));
    }
    match killpg(Pid::from_raw(raw), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(io::Error::from(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spawn_sh(script: &str) -> Spawned {
        let spec = SpawnSpec {
            program: "sh".into(),
            args: vec!["-c".into(), script.into()],
            env: BTreeMap::new(),
            cwd: None,
            // Unique to this test run: nothing another suite sweeps.
            run_id: format!("process-test-{}-{}", std::process::id(), fastrand::u64(..)),
            model_id: "process-test".into(),
            keeper: None,
        };
        spawn_group(spec).expect("spawn sh")
    }

    fn process_state(pid: u32) -> Option<char> {
        crate::util::procfs::stat(pid).map(|s| s.state)
    }

    #[tokio::test]
    async fn the_leader_stays_a_zombie_until_the_hold_is_dropped() {
        let spawned = spawn_sh("exit 3");
        let pid = spawned.pgid;
        let exit = spawned.exit.await.expect("exit reported");
        assert_eq!(exit.status.expect("status").code(), Some(3));
        assert_eq!(process_state(pid), Some('Z'), "unreaped while held, so the pid cannot be reused");
        assert!(signal_group(pid, Signal::SIGKILL).is_ok(), "the group id still names only our zombie");

        drop(exit.hold);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while process_state(pid).is_some() {
            assert!(std::time::Instant::now() < deadline, "pid {pid} was never reaped");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[tokio::test]
    async fn deaths_by_signal_keep_their_signal() {
        let exit = spawn_sh("kill -9 $$").exit.await.expect("exit reported");
        assert_eq!(exit.status.expect("status").signal(), Some(9));
    }

    #[tokio::test]
    async fn a_spawn_nobody_waits_for_is_killed() {
        let spawner = Spawner::start().expect("spawner");
        let marker = format!("process-test-{}-{}", std::process::id(), fastrand::u64(..));
        let spec = |run_id: &str| SpawnSpec {
            program: "sleep".into(),
            args: vec!["300".into()],
            env: BTreeMap::new(),
            cwd: None,
            run_id: run_id.to_owned(),
            model_id: "process-test".into(),
            keeper: None,
        };
        let (reply, answer) = oneshot::channel();
        drop(answer); // the model's task is gone
        spawner.tx.send(Request { spec: spec(&marker), reply }).expect("spawner listens");
        // Requests are served in order: once this one is answered, the first was handled.
        let second = spawner.spawn(spec(&format!("{marker}-second"))).await.expect("second spawn");
        let _ = signal_group(second.pgid, Signal::SIGKILL);
        let marked = format!("{RUN_ID_ENV}={marker}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let running: Vec<u32> = crate::util::procfs::pids()
                .into_iter()
                .filter(|pid| {
                    crate::util::procfs::environ(*pid)
                        .is_some_and(|env| env.split(|b| *b == 0).any(|var| var == marked.as_bytes()))
                })
                .collect();
            if running.is_empty() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{running:?} run on, unseen");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
