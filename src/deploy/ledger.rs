//! The session ledger: one file per rental in `<data>/sessions/`, written atomically and
//! readable by the owner only. The intent (offer, test, run, owner process) is written before
//! the shopper is asked for a session, so a crash at any point leaves a record the janitor can
//! resolve. The session's private key is never written here.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::util::procfs;

/// The process that owns a rental: a pid and its start time, so a recycled pid is not
/// mistaken for the owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub pid: u32,
    pub start_ticks: u64,
}

impl Owner {
    pub fn this_process() -> Owner {
        let pid = std::process::id();
        Owner { pid, start_ticks: procfs::stat(pid).map_or(0, |s| s.start_ticks) }
    }

    pub fn is_alive(&self) -> bool {
        procfs::stat(self.pid).is_some_and(|s| s.start_ticks == self.start_ticks && s.state != 'Z')
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerRecord {
    /// The file's name: `<run id>-<attempt>`.
    pub key: String,
    pub consumer_id: String,
    pub test: String,
    pub run_id: String,
    pub offer_id: String,
    pub provider: String,
    pub gpu_type: String,
    pub price_per_hour: f64,
    pub owner: Owner,
    /// When the session was about to be asked for.
    pub intent_at: DateTime<Utc>,
    /// Known once the shopper answered the create.
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    pub updated_at: DateTime<Utc>,
    /// The test keeps its session (`keep_session`): not an orphan when the run is over.
    #[serde(default)]
    pub kept: bool,
}

impl LedgerRecord {
    /// A record of the intent to rent `offer` for a run, owned by this process.
    pub fn intent(key: String, consumer_id: &str, test: &str, run_id: &str, offer: &crate::shopper::Offer) -> Self {
        let now = Utc::now();
        LedgerRecord {
            key,
            consumer_id: consumer_id.to_owned(),
            test: test.to_owned(),
            run_id: run_id.to_owned(),
            offer_id: offer.id.clone(),
            provider: offer.provider.clone(),
            gpu_type: offer.gpu_type.clone(),
            price_per_hour: offer.price_per_hour,
            owner: Owner::this_process(),
            intent_at: now,
            session_id: None,
            status: None,
            updated_at: now,
            kept: false,
        }
    }
}

/// The ledger's directory. Cheap to clone; every call reads or writes the files directly, so
/// several processes (an engine, `llmdeck sessions cleanup`) see the same records.
#[derive(Debug, Clone)]
pub struct SessionLedger {
    dir: PathBuf,
}

impl SessionLedger {
    pub fn new(data_dir: &Path) -> Self {
        SessionLedger { dir: data_dir.join("sessions") }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes (or replaces) a record, whole.
    pub fn write(&self, record: &LedgerRecord) -> std::io::Result<()> {
        crate::util::create_private_dir(&self.dir)?;
        let bytes = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
        crate::util::write_private_atomic(&self.path(&record.key), &bytes)
    }

    /// Forgets a rental that is over (stopped, or never created).
    pub fn remove(&self, key: &str) -> std::io::Result<()> {
        match std::fs::remove_file(self.path(key)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every record; files that do not parse are named in a warning and skipped (never removed:
    /// they may be all that is left of a rental).
    pub fn list(&self) -> Vec<LedgerRecord> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut records: Vec<LedgerRecord> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter_map(|p| match std::fs::read(&p).map(|b| serde_json::from_slice::<LedgerRecord>(&b)) {
                Ok(Ok(record)) => Some(record),
                Ok(Err(e)) => {
                    tracing::warn!("session ledger: {} does not parse ({e}); left in place", p.display());
                    None
                }
                Err(e) => {
                    tracing::warn!("session ledger: cannot read {} ({e})", p.display());
                    None
                }
            })
            .collect();
        records.sort_by_key(|r| r.intent_at);
        records
    }

    fn path(&self, key: &str) -> PathBuf {
        // Keys are ours (`<run id>-<n>`), but a file name must never climb out of the dir.
        let safe: String = key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
        self.dir.join(format!("{safe}.json"))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn offer() -> crate::shopper::Offer {
        serde_json::from_value(serde_json::json!({
            "id": "o1", "provider": "vastai", "gpu_type": "RTX 4090", "gpu_count": 1, "vram_gb": 24,
            "price_per_hour": 0.4, "available": true, "max_duration_hours": 12
        }))
        .expect("offer")
    }

    #[test]
    fn records_round_trip_privately_and_broken_files_are_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = SessionLedger::new(dir.path());
        let mut record = LedgerRecord::intent("r1-1".into(), "me", "t", "r1", &offer());
        ledger.write(&record).expect("write");
        record.session_id = Some("s1".into());
        ledger.write(&record).expect("rewrite");
        assert_eq!(ledger.list(), vec![record.clone()]);
        let file = ledger.dir().join("r1-1.json");
        assert_eq!(std::fs::metadata(&file).expect("meta").permissions().mode() & 0o777, 0o600);
        std::fs::write(ledger.dir().join("broken.json"), "{").expect("broken");
        assert_eq!(ledger.list().len(), 1);
        assert!(ledger.dir().join("broken.json").exists());
        ledger.remove("r1-1").expect("remove");
        ledger.remove("r1-1").expect("twice is fine");
        assert!(ledger.list().is_empty());
    }

    #[test]
    fn this_process_is_alive_and_a_recycled_pid_is_not() {
        let me = Owner::this_process();
        assert!(me.is_alive());
        assert!(!Owner { start_ticks: me.start_ticks + 1, ..me }.is_alive());
    }

    #[test]
    fn keys_cannot_escape_the_directory() {
        let ledger = SessionLedger::new(Path::new("/data"));
        assert_eq!(ledger.path("../x"), PathBuf::from("/data/sessions/___x.json"));
    }
}
