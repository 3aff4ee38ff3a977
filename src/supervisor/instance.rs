//! One engine per state directory. Two llmdecks supervising the same models (an operator who
//! opens a second SSH session and runs `llmdeck` again) would start every model twice, on the
//! same ports and GPUs. The lock is an OS file lock: it is released when the holder exits,
//! even by `kill -9`, so a stale lock cannot keep anyone out.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Held for the engine's lifetime.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
}

/// Another engine holds the lock.
#[derive(Debug)]
pub struct AlreadyRunning {
    pub dir: PathBuf,
    /// The holder's PID, as it wrote it (absent if it had not written it yet).
    pub pid: Option<u32>,
}

impl std::fmt::Display for AlreadyRunning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let who = self.pid.map_or_else(|| "another llmdeck".to_owned(), |pid| format!("another llmdeck (pid {pid})"));
        write!(
            f,
            "{who} is already supervising models with the state directory {}; a second one would start \
             every model twice. Stop that one first, or point this one elsewhere with XDG_STATE_HOME",
            self.dir.display()
        )
    }
}

impl std::error::Error for AlreadyRunning {}

#[derive(Debug)]
pub enum LockError {
    AlreadyRunning(AlreadyRunning),
    Io(io::Error),
}

impl InstanceLock {
    pub fn acquire(state_dir: &Path) -> Result<InstanceLock, LockError> {
        crate::util::create_private_dir(state_dir).map_err(LockError::Io)?;
        let path = state_dir.join("engine.lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(LockError::Io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(LockError::AlreadyRunning(AlreadyRunning {
                    dir: state_dir.to_owned(),
                    pid: text.trim().parse().ok(),
                }));
            }
            Err(TryLockError::Error(e)) => return Err(LockError::Io(e)),
        }
        // Only the holder writes: the PID is for the message others print.
        file.set_len(0).and_then(|()| file.rewind()).map_err(LockError::Io)?;
        write!(file, "{}", std::process::id()).and_then(|()| file.flush()).map_err(LockError::Io)?;
        Ok(InstanceLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_engine_on_the_same_state_dir_is_refused_until_the_first_is_gone() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = InstanceLock::acquire(dir.path()).expect("the first engine gets the lock");
        match InstanceLock::acquire(dir.path()) {
            Err(LockError::AlreadyRunning(held)) => {
                assert_eq!(held.pid, Some(std::process::id()));
                assert!(held.to_string().contains(&format!("pid {}", std::process::id())), "{held}");
            }
            other => panic!("expected AlreadyRunning, got {other:?}"),
        }
        drop(first);
        // A child another test forks at this moment holds a copy of the descriptor until its
        // exec closes it (close-on-exec), so the lock may take a moment to come free.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while let Err(e) = InstanceLock::acquire(dir.path()) {
            assert!(std::time::Instant::now() < deadline, "still locked after the holder is gone: {e:?}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
