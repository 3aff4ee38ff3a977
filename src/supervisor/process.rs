//! Spawning model servers in their own process group, from one long-lived thread (so the
//! children's parent-death signal fires when llmdeck dies, not when some worker thread retires),
//! and signalling whole groups.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{ChildStderr, ChildStdout, ExitStatus, Stdio};
use std::sync::mpsc as std_mpsc;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use process_wrap::std::{ChildWrapper, CommandWrap, ProcessGroup};
use tokio::sync::oneshot;

/// Marks every process llmdeck starts, so a later run can prove leftovers are ours.
pub const RUN_ID_ENV: &str = "LLMDECK_RUN_ID";

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
}

/// A started process group: its leader's PID (= the group id) and its output pipes. The exit
/// status arrives on `exit` once the leader and its reapable children are gone.
pub struct Spawned {
    pub pgid: u32,
    pub stdout: ChildStdout,
    pub stderr: ChildStderr,
    pub exit: oneshot::Receiver<io::Result<ExitStatus>>,
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
                let _ = req.reply.send(spawn_group(req.spec));
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
    let mut cmd = CommandWrap::with_new(&spec.program, |c| {
        c.args(&spec.args)
            .envs(&spec.env)
            .env(RUN_ID_ENV, &spec.run_id)
            .env(crate::gpu::cli::MODEL_ID_ENV, &spec.model_id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = &spec.cwd {
            c.current_dir(dir);
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
    let stdout = child.stdout().take().ok_or_else(|| io::Error::other("no stdout pipe"))?;
    let stderr = child.stderr().take().ok_or_else(|| io::Error::other("no stderr pipe"))?;
    let (exit_tx, exit) = oneshot::channel();
    std::thread::Builder::new().name(format!("llmdeck-wait-{pgid}")).spawn(move || {
        let _ = exit_tx.send(wait_for(child));
    })?;
    Ok(Spawned { pgid, stdout, stderr, exit })
}

fn wait_for(mut child: Box<dyn ChildWrapper>) -> io::Result<ExitStatus> {
    child.wait()
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
