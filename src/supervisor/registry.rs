//! Which process groups belong to which model, shared with the GPU sampler so it can say which
//! model holds which GPU memory.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

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
            let stat = proc_stat(current)?;
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

pub(crate) struct ProcStat {
    pub ppid: u32,
    pub pgid: u32,
    /// Start time in clock ticks since boot: with the PID, it names a process uniquely.
    pub start_ticks: u64,
}

/// Reads `/proc/<pid>/stat`. The command name may contain spaces and parentheses, so fields are
/// counted from the last `)`.
pub(crate) fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) pgrp(2) ... starttime is field 22 of the line, 19 here.
    Some(ProcStat {
        ppid: fields.get(1)?.parse().ok()?,
        pgid: fields.get(2)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_found_through_its_group() {
        let me = std::process::id();
        let stat = proc_stat(me).expect("our own /proc entry");
        let reg = ModelProcesses::default();
        reg.set("m", stat.pgid);
        assert_eq!(reg.model_of(me).as_deref(), Some("m"));
        reg.clear("m");
        assert_eq!(reg.model_of(me), None);
    }
}
