//! The fake shop: offers, sessions and their lifecycle, the SSH keys that open each session's
//! "instance", the processes started there, and the faults armed for the next requests.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use russh::keys::{PrivateKey, PublicKey};
use serde_json::{Value, json};

/// The longest a session may live, whatever its reservation.
pub const HARD_LIMIT_HOURS: u32 = 12;

#[derive(Debug, Clone)]
pub struct Offer {
    pub id: &'static str,
    pub provider: &'static str,
    pub gpu_type: &'static str,
    pub vram_gb: u32,
    pub price: f64,
    pub location: &'static str,
    pub reliability: f64,
    pub confidence: f64,
}

/// The offers the fake rents out.
pub fn offers() -> Vec<Offer> {
    vec![
        Offer {
            id: "vastai-4090-1",
            provider: "vastai",
            gpu_type: "RTX 4090",
            vram_gb: 24,
            price: 0.40,
            location: "US-CA",
            reliability: 0.98,
            confidence: 0.9,
        },
        Offer {
            id: "tensordock-l4-7",
            provider: "tensordock",
            gpu_type: "L4",
            vram_gb: 24,
            price: 0.30,
            location: "EU-DE",
            reliability: 0.95,
            confidence: 0.9,
        },
        Offer {
            id: "vastai-a100-3",
            provider: "vastai",
            gpu_type: "A100",
            vram_gb: 80,
            price: 1.50,
            location: "US-TX",
            reliability: 0.99,
            confidence: 0.8,
        },
        Offer {
            id: "lambda-h100-2",
            provider: "lambda",
            gpu_type: "H100",
            vram_gb: 80,
            price: 3.50,
            location: "US-UT",
            reliability: 0.995,
            confidence: 0.7,
        },
    ]
}

impl Offer {
    pub fn json(&self, fetched_at: DateTime<Utc>) -> Value {
        json!({
            "id": self.id, "provider": self.provider, "provider_id": self.id.rsplit('-').next(),
            "gpu_type": self.gpu_type, "gpu_count": 1, "vram_gb": self.vram_gb,
            "price_per_hour": self.price, "location": self.location, "reliability": self.reliability,
            "available": true, "max_duration_hours": 0, "fetched_at": fetched_at,
            "availability_confidence": self.confidence, "cuda_version": 12.4,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Provisioning,
    Running,
    Stopping,
    Stopped,
    Failed,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Provisioning => "provisioning",
            Status::Running => "running",
            Status::Stopping => "stopping",
            Status::Stopped => "stopped",
            Status::Failed => "failed",
        }
    }

    pub fn is_active(self) -> bool {
        matches!(self, Status::Provisioning | Status::Running | Status::Stopping)
    }
}

pub struct Rental {
    pub id: String,
    pub consumer_id: String,
    pub offer: Offer,
    pub workload_type: String,
    pub reservation_hours: u32,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub stopped_at: Option<DateTime<Utc>>,
    pub status: Status,
    pub error: Option<String>,
    pub key: PublicKey,
    /// Process groups started over SSH.
    pub processes: Vec<u32>,
    pub connections: Vec<russh::server::Handle>,
}

impl Rental {
    pub fn json(&self, ssh_port: u16) -> Value {
        let mut v = json!({
            "id": self.id, "consumer_id": self.consumer_id, "provider": self.offer.provider,
            "gpu_type": self.offer.gpu_type, "gpu_count": 1, "status": self.status.name(),
            "workload_type": self.workload_type, "reservation_hours": self.reservation_hours,
            "price_per_hour": self.offer.price, "created_at": self.created_at, "expires_at": self.expires_at,
        });
        if self.status != Status::Provisioning {
            v["ssh_host"] = json!("127.0.0.1");
            v["ssh_port"] = json!(ssh_port);
            v["ssh_user"] = json!("root");
        }
        if let Some(e) = &self.error {
            v["error"] = json!(e);
        }
        v
    }

    /// Billed in whole started hours.
    pub fn cost(&self, now: DateTime<Utc>) -> f64 {
        let end = self.stopped_at.unwrap_or(now);
        let secs = (end - self.created_at).num_seconds().max(0) as f64;
        (secs / 3600.0).ceil().max(1.0) * self.offer.price
    }
}

/// Faults armed through flags or the `/_fake` admin API.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    pub next_create_stale: bool,
    /// Every provisioning (`always`) or the next one ends `failed` with this error.
    pub provision_error: Option<String>,
    pub provision_error_always: bool,
    pub destroy_fail_once: bool,
    pub health_unavailable: bool,
    pub next_html_502: bool,
    pub next_truncated: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct Timings {
    pub provision: Duration,
    pub destroy: Duration,
    /// How long a create takes to answer after the session exists (the real one is synchronous).
    pub create: Duration,
}

pub struct Shop {
    inner: Mutex<Inner>,
    pub timings: Timings,
    pub ssh_port: u16,
    /// Each session's working directory lives under this one.
    pub root: PathBuf,
}

pub struct Inner {
    pub sessions: HashMap<String, Rental>,
    pub faults: Faults,
    next_id: u64,
}

impl Shop {
    pub fn new(timings: Timings, ssh_port: u16, root: PathBuf, faults: Faults) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner { sessions: HashMap::new(), faults, next_id: 1 }),
            timings,
            ssh_port,
            root,
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session id: random-looking, unique in this run.
    pub fn new_id(inner: &mut Inner) -> String {
        inner.next_id += 1;
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}",
            fastrand::u32(..),
            inner.next_id & 0xffff,
            fastrand::u16(..0x1000),
            fastrand::u16(..)
        )
    }

    /// A new RSA key pair: the public half for the server, the private half as PKCS#1 PEM
    /// (what the real service returns).
    pub fn new_key() -> Result<(PublicKey, String), String> {
        use pkcs1::EncodeRsaPrivateKey;
        let keypair = russh::keys::ssh_key::private::RsaKeypair::random(&mut rand::rng(), 2048)
            .map_err(|e| format!("generating a key: {e}"))?;
        let rsa = rsa::PrivateKey::try_from(&keypair).map_err(|e| format!("converting the key: {e}"))?;
        let pem = rsa.to_pkcs1_pem(pkcs1::LineEnding::LF).map_err(|e| format!("encoding the key: {e}"))?;
        let private = PrivateKey::from(keypair);
        Ok((private.public_key().clone(), pem.to_string()))
    }

    /// The active session `key` opens.
    pub fn session_of_key(&self, key: &PublicKey) -> Option<String> {
        let inner = self.lock();
        inner
            .sessions
            .values()
            .find(|r| matches!(r.status, Status::Provisioning | Status::Running) && r.key.key_data() == key.key_data())
            .map(|r| r.id.clone())
    }

    pub fn register_connection(&self, id: &str, handle: russh::server::Handle) {
        if let Some(r) = self.lock().sessions.get_mut(id) {
            r.connections.push(handle);
        }
    }

    pub fn register_process(&self, id: &str, pgid: u32) {
        if let Some(r) = self.lock().sessions.get_mut(id) {
            r.processes.push(pgid);
        }
    }

    pub fn session_dir(&self, id: &str) -> std::io::Result<PathBuf> {
        let dir = self.root.join(crate::logs::file::sanitize_file_stem(id));
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Ends everything a session started: its processes (whole groups) and SSH connections.
    pub fn tear_down(&self, id: &str) {
        let (processes, connections) = match self.lock().sessions.get_mut(id) {
            Some(r) => (std::mem::take(&mut r.processes), std::mem::take(&mut r.connections)),
            None => return,
        };
        for pgid in processes {
            if let Ok(pgid) = i32::try_from(pgid)
                && pgid > 1
            {
                let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), nix::sys::signal::Signal::SIGKILL);
            }
        }
        for handle in connections {
            tokio::spawn(async move {
                let _ = handle
                    .disconnect(russh::Disconnect::ByApplication, "the instance was destroyed".into(), "en".into())
                    .await;
            });
        }
    }

    /// Marks a session stopped (with `error` if given) and tears it down.
    pub fn stop(&self, id: &str, error: Option<String>) {
        {
            let mut inner = self.lock();
            let Some(r) = inner.sessions.get_mut(id) else { return };
            r.status = Status::Stopped;
            r.stopped_at = Some(Utc::now());
            if error.is_some() {
                r.error = error;
            }
        }
        self.tear_down(id);
    }
}
