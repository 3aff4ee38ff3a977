//! Rented GPUs as every view sees them: the shopper's health and our consumer's sessions, each
//! resolved against the session ledger (whose run owns it, or why it is an orphan).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ShopperStatus {
    pub url: String,
    /// Who we are to the shopper; sessions of other consumers are not ours to judge.
    #[serde(default)]
    pub consumer_id: String,
    pub health: ShopperHealth,
    /// When the sessions were last listed (None: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked: Option<DateTime<Utc>>,
    /// Our consumer's sessions that are active or ended recently.
    #[serde(default)]
    pub sessions: Vec<RentedSession>,
}

impl ShopperStatus {
    pub fn active(&self) -> impl Iterator<Item = &RentedSession> {
        self.sessions.iter().filter(|s| s.is_active())
    }

    /// What the active sessions cost together, in dollars per hour.
    pub fn dollars_per_hour(&self) -> f64 {
        self.active().map(|s| s.price_per_hour).sum()
    }

    /// An orphan or a stuck session: something is left running that nobody is using.
    pub fn needs_attention(&self) -> bool {
        self.active().any(|s| s.is_orphan() || s.stuck_since.is_some())
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ShopperHealth {
    /// Nothing has asked the shopper yet.
    #[default]
    Unknown,
    /// No deployment test is configured and no rental is on record: the shopper is not asked.
    NotUsed,
    Ok,
    Unavailable {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RentedSession {
    pub id: String,
    pub provider: String,
    pub gpu_type: String,
    /// The shopper's status word: pending, provisioning, running, stopping, stopped, failed.
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub price_per_hour: f64,
    pub owner: SessionOwner,
    /// When it was first seen `stopping` after a destroy that did not finish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stuck_since: Option<DateTime<Utc>>,
    /// The shopper's `error`, or what llmdeck last did about it ("destroying", "DELETE retried").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl RentedSession {
    pub fn is_active(&self) -> bool {
        matches!(self.status.as_str(), "pending" | "provisioning" | "running" | "stopping")
    }

    pub fn is_orphan(&self) -> bool {
        matches!(self.owner, SessionOwner::Orphan { .. })
    }

    /// What it has cost so far at `now` (billing stops when it ends; we only know it is active).
    pub fn cost_so_far(&self, now: DateTime<Utc>) -> f64 {
        let hours = (now - self.created_at).num_milliseconds().max(0) as f64 / 3_600_000.0;
        hours * self.price_per_hour
    }

    /// `3f2a…`: enough to tell sessions apart on screen.
    pub fn short_id(&self) -> String {
        let head: String = self.id.chars().take(4).collect();
        if self.id.chars().count() > 4 { format!("{head}…") } else { head }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SessionOwner {
    /// A run of a test owns it; `this_engine` when that run is in this llmdeck.
    Run { test: String, run_id: String, this_engine: bool },
    /// Kept after its run by the test's `keep_session`: billing, on purpose.
    Kept { test: String },
    /// Nobody uses it: the owner process is gone, its creation never answered, or no record.
    Orphan { why: String },
}

/// The shopper was asked: its health and our sessions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShopperEvent {
    pub ts: DateTime<Utc>,
    pub health: ShopperHealth,
    /// None when the sessions could not be listed (the last list stays on screen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<Vec<RentedSession>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(status: &str, owner: SessionOwner, price: f64) -> RentedSession {
        let created_at = "2026-12-03T10:00:00Z".parse().expect("time");
        RentedSession {
            id: "3f2a9c01".into(),
            provider: "vastai".into(),
            gpu_type: "RTX 4090".into(),
            status: status.into(),
            created_at,
            expires_at: created_at + chrono::Duration::hours(1),
            price_per_hour: price,
            owner,
            stuck_since: None,
            note: None,
        }
    }

    #[test]
    fn totals_count_only_active_sessions_and_flag_orphans() {
        let run = SessionOwner::Run { test: "t".into(), run_id: "r".into(), this_engine: true };
        let orphan = SessionOwner::Orphan { why: "owner gone".into() };
        let mut status = ShopperStatus {
            sessions: vec![session("running", run.clone(), 0.4), session("stopped", orphan.clone(), 3.5)],
            ..Default::default()
        };
        assert!((status.dollars_per_hour() - 0.4).abs() < 1e-9);
        assert!(!status.needs_attention());
        status.sessions.push(session("running", orphan, 1.5));
        assert!((status.dollars_per_hour() - 1.9).abs() < 1e-9);
        assert!(status.needs_attention());
    }

    #[test]
    fn cost_so_far_counts_from_creation() {
        let s = session("running", SessionOwner::Orphan { why: String::new() }, 0.4);
        let later = s.created_at + chrono::Duration::minutes(30);
        assert!((s.cost_so_far(later) - 0.2).abs() < 1e-9);
        assert_eq!(s.cost_so_far(s.created_at - chrono::Duration::minutes(1)), 0.0);
        assert_eq!(s.short_id(), "3f2a…");
    }
}
