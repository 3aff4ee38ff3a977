//! The shopper API's requests and answers (`shopper-api.md`). Unknown fields in answers are
//! ignored; optional ones are `None`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    #[serde(default)]
    pub timestamp: Option<DateTime<Utc>>,
    #[serde(default)]
    pub services: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ready {
    pub ready: bool,
    #[serde(default)]
    pub timestamp: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offer {
    pub id: String,
    pub provider: String,
    #[serde(default)]
    pub provider_id: Option<String>,
    pub gpu_type: String,
    pub gpu_count: u32,
    /// Per GPU.
    pub vram_gb: u32,
    pub price_per_hour: f64,
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub reliability: Option<f64>,
    #[serde(default = "yes")]
    pub available: bool,
    /// 0 = no limit.
    #[serde(default)]
    pub max_duration_hours: u32,
    #[serde(default)]
    pub fetched_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub availability_confidence: Option<f64>,
    #[serde(default)]
    pub cuda_version: Option<f64>,
    #[serde(default)]
    pub machine_id: Option<String>,
    #[serde(default)]
    pub interruptible: Option<bool>,
    #[serde(default)]
    pub min_bid: Option<f64>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    pub offers: Vec<Offer>,
    #[serde(default)]
    pub count: Option<u64>,
    #[serde(default)]
    pub total: Option<u64>,
}

/// Filters of `GET /api/v1/inventory`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InventoryQuery {
    pub provider: Option<String>,
    pub gpu_type: Option<String>,
    pub location: Option<String>,
    pub min_vram: Option<u32>,
    pub max_price: Option<f64>,
    pub min_gpu_count: Option<u32>,
    pub min_reliability: Option<f64>,
    pub min_availability_confidence: Option<f64>,
    pub min_cuda: Option<f64>,
    pub template_hash_id: Option<String>,
    pub limit: Option<u32>,
    pub offset: Option<u32>,
}

impl InventoryQuery {
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        let mut put = |k: &'static str, v: Option<String>| {
            if let Some(v) = v {
                q.push((k, v));
            }
        };
        put("provider", self.provider.clone());
        put("gpu_type", self.gpu_type.clone());
        put("location", self.location.clone());
        put("min_vram", self.min_vram.map(|v| v.to_string()));
        put("max_price", self.max_price.map(|v| v.to_string()));
        put("min_gpu_count", self.min_gpu_count.map(|v| v.to_string()));
        put("min_reliability", self.min_reliability.map(|v| v.to_string()));
        put("min_availability_confidence", self.min_availability_confidence.map(|v| v.to_string()));
        put("min_cuda", self.min_cuda.map(|v| v.to_string()));
        put("template_hash_id", self.template_hash_id.clone());
        put("limit", self.limit.map(|v| v.to_string()));
        put("offset", self.offset.map(|v| v.to_string()));
        q
    }
}

/// `pending` → `provisioning` → `running` → `stopping` → `stopped`, and `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    Pending,
    Provisioning,
    Running,
    Stopping,
    Stopped,
    Failed,
    /// A status this client does not know (the service may add some).
    #[serde(other)]
    Unknown,
}

impl SessionStatus {
    pub fn name(self) -> &'static str {
        match self {
            SessionStatus::Pending => "pending",
            SessionStatus::Provisioning => "provisioning",
            SessionStatus::Running => "running",
            SessionStatus::Stopping => "stopping",
            SessionStatus::Stopped => "stopped",
            SessionStatus::Failed => "failed",
            SessionStatus::Unknown => "unknown",
        }
    }

    /// Not `stopped`: it may still cost money (a `failed` session can still hold an instance).
    pub fn is_active(self) -> bool {
        !matches!(self, SessionStatus::Stopped)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    pub consumer_id: String,
    pub provider: String,
    pub gpu_type: String,
    pub gpu_count: u32,
    pub status: SessionStatus,
    pub workload_type: String,
    pub reservation_hours: u32,
    pub price_per_hour: f64,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    #[serde(default)]
    pub offer_id: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub ssh_host: Option<String>,
    #[serde(default)]
    pub ssh_port: Option<u16>,
    #[serde(default)]
    pub ssh_user: Option<String>,
    #[serde(default)]
    pub template_name: Option<String>,
    #[serde(default)]
    pub retry_count: Option<u32>,
    #[serde(default)]
    pub retry_parent_id: Option<String>,
    #[serde(default)]
    pub retry_child_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionList {
    pub sessions: Vec<Session>,
    #[serde(default)]
    pub count: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateSession {
    pub consumer_id: String,
    pub offer_id: String,
    pub workload_type: String,
    pub reservation_hours: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_gb: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<Vec<u16>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_timeout_minutes: Option<u32>,
}

impl CreateSession {
    /// The fields every create needs; the rest default.
    pub fn new(consumer_id: &str, offer_id: &str, workload_type: &str, reservation_hours: u32) -> Self {
        Self {
            consumer_id: consumer_id.into(),
            offer_id: offer_id.into(),
            workload_type: workload_type.into(),
            reservation_hours,
            storage_policy: None,
            launch_mode: None,
            disk_gb: None,
            model_id: None,
            docker_image: None,
            exposed_ports: None,
            quantization: None,
            ssh_timeout_minutes: None,
        }
    }
}

/// The SSH private key of a new session: given once, kept in memory, never printed.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct PrivateKeyPem(String);

impl PrivateKeyPem {
    pub fn new(pem: String) -> Self {
        Self(pem)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for PrivateKeyPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKeyPem(***)")
    }
}

impl std::fmt::Display for PrivateKeyPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Created {
    pub session: Session,
    pub ssh_private_key: PrivateKeyPem,
}

/// The answer of done, DELETE and extend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Done {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub session_id: String,
    #[serde(default)]
    pub new_expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnostics {
    pub session_id: String,
    pub status: SessionStatus,
    #[serde(default)]
    pub ssh_host: Option<String>,
    #[serde(default)]
    pub ssh_port: Option<u16>,
    #[serde(default)]
    pub ssh_user: Option<String>,
    #[serde(default)]
    pub uptime: Option<String>,
    #[serde(default)]
    pub time_to_expiry: Option<String>,
    #[serde(default)]
    pub ssh_available: Option<bool>,
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    #[serde(default)]
    pub session_id: Option<String>,
    pub total_cost: f64,
    #[serde(default)]
    pub currency: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostSummary {
    pub total_cost: f64,
    #[serde(default)]
    pub session_count: Option<u64>,
    #[serde(default)]
    pub hours_used: Option<f64>,
    #[serde(default)]
    pub by_provider: Option<serde_json::Value>,
    #[serde(default)]
    pub by_gpu_type: Option<serde_json::Value>,
}
