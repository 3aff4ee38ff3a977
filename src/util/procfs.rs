//! Reading `/proc`: a process's stat line, environment and command line, and the markers llmdeck
//! puts in the environment of every model process it starts.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

/// Marks every process llmdeck starts with the id of the llmdeck run that started it, so a later
/// run can prove leftovers are ours.
pub const RUN_ID_ENV: &str = "LLMDECK_RUN_ID";
/// Marks every model process (and, by inheritance, its workers) with its model id, so `llmdeck
/// gpus` can name the model holding GPU memory.
pub const MODEL_ID_ENV: &str = "LLMDECK_MODEL_ID";

/// Which process groups belong to which model: written by the supervisor as models start and
/// exit, read by the GPU sampler to say which model holds which GPU memory.
/// Model id → process group id of its running server (the leader's PID).
#[derive(Debug, Clone, Default)]
pub struct ModelProcesses {
    inner: Arc<RwLock<BTreeMap<String, u32>>>,
}

impl ModelProcesses {
    pub fn set(&self, model: &str, pgid: u32) {
        self.write().insert(model.to_owned(), pgid);
    }

    pub fn clear(&self, model: &str) {
        self.write().remove(model);
    }

    /// (model id, process group id) of every running model.
    pub fn running(&self) -> Vec<(String, u32)> {
        self.read().iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// The model whose process group or process tree contains `pid`.
    pub fn model_of(&self, pid: u32) -> Option<String> {
        let groups = self.read().clone();
        if groups.is_empty() {
            return None;
        }
        let by_group = |pgid: u32| groups.iter().find(|(_, g)| **g == pgid).map(|(m, _)| m.clone());
        // Walk up the parent chain: a process may have left the group (setsid) but is still
        // a descendant of the model's leader.
        let mut current = pid;
        for _ in 0..64 {
            if let Some(m) = by_group(current) {
                return Some(m);
            }
            let stat = stat(current)?;
            if let Some(m) = by_group(stat.pgid) {
                return Some(m);
            }
            if stat.ppid <= 1 {
                return None;
            }
            current = stat.ppid;
        }
        None
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, u32>> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, u32>> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// The fields of `/proc/<pid>/stat` llmdeck uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// The state letter (`R`, `S`, `Z`, ...).
    pub state: char,
    pub ppid: u32,
    pub pgid: u32,
    /// Start time in clock ticks since boot: with the PID, it names a process uniquely.
    pub start_ticks: u64,
}

/// Reads `/proc/<pid>/stat`. The command name may contain spaces and parentheses, so fields are
/// counted from the last `)`.
pub fn stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) pgrp(2) ... starttime is field 22 of the line, 19 here.
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgid: fields.get(2)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

/// The raw environment block (`NAME=value\0...`); `None` if unreadable (gone, another user's).
pub fn environ(pid: u32) -> Option<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/environ")).ok()
}

/// The non-empty value of `key` in an environment block.
pub fn environment_value(environ: &[u8], key: &str) -> Option<String> {
    let prefix = format!("{key}=");
    environ
        .split(|b| *b == 0)
        .find_map(|entry| entry.strip_prefix(prefix.as_bytes()))
        .and_then(|v| String::from_utf8(v.to_vec()).ok())
        .filter(|v| !v.is_empty())
}

/// A pidfd for `pid`: signals sent through it reach that process or none, never one that got
/// its pid after it was reaped.
pub fn pidfd_open(pid: u32) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let pid = i32::try_from(pid).map_err(|_| std::io::Error::other(format!("pid {pid} out of range")))?;
    // SAFETY: a plain syscall; the descriptor it returns is owned below.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0u32) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// Sends `signal` through a pidfd ([`pidfd_open`]).
pub fn pidfd_signal(fd: &std::os::fd::OwnedFd, signal: nix::sys::signal::Signal) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on a descriptor we own.
    let rc =
        unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_send_signal, fd.as_raw_fd(), signal as i32, 0usize, 0u32) };
    if rc < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}

/// The command line's arguments (empty for kernel threads or if gone).
pub fn cmdline_args(pid: u32) -> Vec<String> {
    let Ok(bytes) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return Vec::new() };
    bytes.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
}

/// Every PID in `/proc` right now.
pub fn pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(Path::new("/proc")) else { return Vec::new() };
    entries.flatten().filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok())).collect()
}

/// The llmdeck model a process belongs to, from [`MODEL_ID_ENV`] in its environment or its
/// ancestors' (workers inherit it). Works for models run by any llmdeck instance of this user;
/// other users' processes are not readable.
pub fn model_from_environment(pid: u32) -> Option<String> {
    let mut current = pid;
    for _ in 0..64 {
        if let Some(model) = environ(current).and_then(|env| environment_value(&env, MODEL_ID_ENV)) {
            return Some(model);
        }
        let parent = stat(current)?.ppid;
        if parent <= 1 {
            return None;
        }
        current = parent;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_found_through_its_group() {
        let me = std::process::id();
        let own = stat(me).expect("our own /proc entry");
        let reg = ModelProcesses::default();
        reg.set("m", own.pgid);
        assert_eq!(reg.model_of(me).as_deref(), Some("m"));
        reg.clear("m");
        assert_eq!(reg.model_of(me), None);
    }

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let line = "42 (a (b) c) S 7 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 123456 0 0";
        let s = parse_stat(line).expect("parsed");
        assert_eq!((s.state, s.ppid, s.pgid, s.start_ticks), ('S', 7, 42, 123_456));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_process_reads_back() {
        let me = std::process::id();
        let s = stat(me).expect("our own stat");
        assert!(s.start_ticks > 0);
        assert!(!cmdline_args(me).is_empty());
        assert!(pids().contains(&me));
    }

    #[test]
    fn environment_values_are_found_by_exact_name() {
        let env = b"A=1\0LLMDECK_MODEL_ID=qwen\0LLMDECK_MODEL_IDX=no\0EMPTY=\0";
        assert_eq!(environment_value(env, MODEL_ID_ENV).as_deref(), Some("qwen"));
        assert_eq!(environment_value(env, "EMPTY"), None);
        assert_eq!(environment_value(env, "MISSING"), None);
    }

    #[test]
    fn a_process_is_named_by_its_environment() {
        use std::io::BufRead;
        // The shell stays (no exec: /proc/<pid>/environ is unreadable while a process execs)
        // and waits on its stdin until killed.
        let child = std::process::Command::new("sh")
            .args(["-c", "echo ready; read _"])
            .env(MODEL_ID_ENV, "qwen-7b")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn();
        let Ok(mut child) = child else { panic!("cannot start sh") };
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = std::io::BufReader::new(out).read_line(&mut line);
        }
        let named = model_from_environment(child.id());
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(line.trim(), "ready");
        assert_eq!(named.as_deref(), Some("qwen-7b"));
        assert_eq!(model_from_environment(u32::MAX - 3), None);
    }
}
