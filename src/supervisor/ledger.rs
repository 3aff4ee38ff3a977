//! The PID ledger: which llmdeck runs have started model processes. A run that died without
//! cleaning up (kill -9, power loss of the terminal) leaves its entry behind; the next start
//! ends the leftovers it can prove are ours — processes carrying that run's id in their
//! environment — and reports them.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use crate::util::procfs::{self, MODEL_ID_ENV, RUN_ID_ENV};

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    run_id: String,
    owner_pid: u32,
    owner_start_ticks: u64,
}

/// This process's entry in the ledger; removed when dropped after a clean shutdown.
pub struct Ledger {
    path: PathBuf,
    run_id: String,
}

/// A leftover process from a dead run that was ended.
#[derive(Debug, Clone)]
pub struct Leftover {
    pub pid: u32,
    pub run_id: String,
    pub command: String,
}

impl Ledger {
    /// Records this run. The run id is `<pid>-<start ticks>-<n>`: unique on this machine, and its
    /// owner is checkable in /proc.
    pub fn open(state_dir: &Path) -> io::Result<Ledger> {
        let dir = state_dir.join("ledger");
        crate::util::create_private_dir(&dir)?;
        let me = std::process::id();
        let ticks = procfs::stat(me).map(|s| s.start_ticks).unwrap_or(0);
        // Several engines may run in one process (tests do): each gets its own id.
        static ENGINES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = ENGINES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let run_id = format!("{me}-{ticks}-{n}");
        let path = dir.join(format!("{run_id}.json"));
        let entry = Entry { run_id: run_id.clone(), owner_pid: me, owner_start_ticks: ticks };
        crate::util::write_private_atomic(&path, &serde_json::to_vec(&entry).map_err(io::Error::other)?)?;
        Ok(Ledger { path, run_id })
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Removes this run's entry (after every model was stopped).
    pub fn close(self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Ends the processes of every dead run in the ledger and drops their entries.
pub fn sweep(state_dir: &Path, own_run_id: &str) -> Vec<Leftover> {
    let dir = state_dir.join("ledger");
    let Ok(entries) = fs::read_dir(&dir) else { return Vec::new() };
    let mut dead_runs = Vec::new();
    for file in entries.flatten() {
        let path = file.path();
        let Some(entry) = fs::read(&path).ok().and_then(|b| serde_json::from_slice::<Entry>(&b).ok()) else {
            let _ = fs::remove_file(&path); // unreadable: not ours to trust, not worth keeping
            continue;
        };
        if entry.run_id == own_run_id || owner_alive(&entry) {
            continue;
        }
        dead_runs.push((path, entry.run_id));
    }
    if dead_runs.is_empty() {
        return Vec::new();
    }
    let ended = end_marked(dead_runs.iter().map(|(_, id)| id.as_str()));
    for (path, _) in dead_runs {
        let _ = fs::remove_file(path);
    }
    ended
}

/// Ends every process still carrying this run's id: model helpers that left their process
/// group (setsid, daemonising wrappers) and so escaped the group's signals.
pub fn end_own_leftovers(run_id: &str) -> Vec<Leftover> {
    end_marked(std::iter::once(run_id))
}

/// Ends the processes of one model of this run that escaped its process group, once the
/// model has exited: they would hold its port and GPU memory against the restart.
pub fn end_model_escapees(run_id: &str, model_id: &str) -> Vec<Leftover> {
    let model_marker = format!("{MODEL_ID_ENV}={model_id}");
    let of_model = |environ: &[u8]| environ.split(|b| *b == 0).any(|var| var == model_marker.as_bytes());
    kill_all(processes_marked_with(std::iter::once(run_id), of_model))
}

fn end_marked<'a>(run_ids: impl Iterator<Item = &'a str>) -> Vec<Leftover> {
    kill_all(processes_marked_with(run_ids, |_| true))
}

fn kill_all(marked: Vec<(u32, String)>) -> Vec<Leftover> {
    let mut ended = Vec::new();
    for (pid, run_id) in marked {
        // Read the command line first: after SIGKILL it is gone. It goes into alerts, logs
        // and events: redacted here, once.
        let command = crate::util::redact_args(&procfs::cmdline_args(pid)).join(" ");
        // By pidfd, opened before the marker is checked again: the process the scan found,
        // or none — never one that got its pid after it exited.
        let Ok(fd) = procfs::pidfd_open(pid) else { continue };
        let marker = format!("{RUN_ID_ENV}={run_id}");
        let still_marked =
            procfs::environ(pid).is_some_and(|environ| environ.split(|b| *b == 0).any(|var| var == marker.as_bytes()));
        if still_marked && procfs::pidfd_signal(&fd, Signal::SIGKILL).is_ok() {
            ended.push(Leftover { pid, run_id, command });
        }
    }
    ended
}

fn owner_alive(entry: &Entry) -> bool {
    procfs::stat(entry.owner_pid).is_some_and(|s| s.start_ticks == entry.owner_start_ticks)
}

/// PIDs whose environment carries one of the run ids and satisfies `also`.
fn processes_marked_with<'a>(
    run_ids: impl Iterator<Item = &'a str>,
    also: impl Fn(&[u8]) -> bool,
) -> Vec<(u32, String)> {
    let markers: Vec<(String, String)> = run_ids.map(|id| (format!("{RUN_ID_ENV}={id}"), id.to_owned())).collect();
    let mut found = Vec::new();
    for pid in procfs::pids() {
        let Some(environ) = procfs::environ(pid) else { continue };
        let run = environ.split(|b| *b == 0).find_map(|var| markers.iter().find(|(m, _)| m.as_bytes() == var));
        if let Some((_, id)) = run
            && also(&environ)
        {
            found.push((pid, id.clone()));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_for_marker(pid: u32, run_id: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while processes_marked_with(std::iter::once(run_id), |_| true).iter().all(|(p, _)| *p != pid) {
            assert!(std::time::Instant::now() < deadline, "pid {pid} never showed {RUN_ID_ENV}={run_id} in /proc");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn sweeps_marked_processes_of_dead_runs_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ledger_dir = dir.path().join("ledger");
        fs::create_dir_all(&ledger_dir).expect("ledger dir");
        // Markers unique to this test run: a sweep ends every process on the machine carrying
        // a dead run's id, another suite's processes included.
        let unique = format!("{}-{}", std::process::id(), fastrand::u64(..));
        let (dead_id, other_id) = (format!("dead-run-{unique}"), format!("someone-else-{unique}"));
        // A dead run (owner pid u32::MAX never matches) and a process carrying its id.
        let dead = Entry { run_id: dead_id.clone(), owner_pid: u32::MAX, owner_start_ticks: 1 };
        fs::write(ledger_dir.join("dead.json"), serde_json::to_vec(&dead).expect("json")).expect("write");
        let mut child = std::process::Command::new("sleep").arg("30").env(RUN_ID_ENV, &dead_id).spawn().expect("sleep");
        let mut innocent =
            std::process::Command::new("sleep").arg("30").env(RUN_ID_ENV, &other_id).spawn().expect("sleep");

        // spawn() returns once exec has begun, but the kernel fills in /proc/<pid>/environ a
        // moment later; a sweep in that gap sees an empty environment.
        wait_for_marker(child.id(), &dead_id);
        wait_for_marker(innocent.id(), &other_id);

        let ended = sweep(dir.path(), "me");
        assert_eq!(ended.iter().map(|l| l.pid).collect::<Vec<_>>(), [child.id()]);
        let status = child.wait().expect("wait");
        assert!(!status.success());
        assert!(innocent.try_wait().expect("try_wait").is_none(), "an unmarked process is left alone");
        let _ = innocent.kill();
        let _ = innocent.wait();
        assert!(!ledger_dir.join("dead.json").exists());
    }
}
