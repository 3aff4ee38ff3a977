//! The janitor's judgement and its one action: which of our consumer's sessions has a live
//! owner, which is an orphan (and why), and how a session is destroyed and confirmed
//! `stopped` (done, then polling, DELETE again on `failed`, STUCK when it stays `stopping`).

use std::time::Duration;

use super::ledger::{LedgerRecord, Owner};
use crate::protocol::SessionOwner;
use crate::shopper::{Session, SessionStatus, ShopperClient, ShopperError};

/// How far a session's `created_at` may be from its intent record's time and still be the
/// answer to that intent (a POST can take minutes on the real service).
const INTENT_WINDOW_BEFORE: chrono::Duration = chrono::Duration::seconds(60);
const INTENT_WINDOW_AFTER: chrono::Duration = chrono::Duration::minutes(10);

/// Who a session belongs to, and which ledger record says so.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    pub owner: SessionOwner,
    pub record: Option<String>,
}

/// Judges `session` against the ledger. `me` is this process; `my_runs` the runs this process
/// has going (a record owned by this process but by a run that ended is an orphan); another
/// live owner process is trusted to own its runs.
pub fn resolve(session: &Session, records: &[LedgerRecord], me: &Owner, my_runs: &[String]) -> Resolution {
    let by_id = records.iter().find(|r| r.session_id.as_deref() == Some(session.id.as_str()));
    let record = by_id.or_else(|| records.iter().find(|r| answers_intent(r, session)));
    let Some(record) = record else {
        let why = "no record of it in this installation's session ledger".to_owned();
        return Resolution { owner: SessionOwner::Orphan { why }, record: None };
    };
    let key = Some(record.key.clone());
    let this_engine = record.owner == *me;
    let live = if this_engine { my_runs.contains(&record.run_id) } else { record.owner.is_alive() };
    let owner = if record.kept {
        SessionOwner::Kept { test: record.test.clone() }
    } else if live {
        SessionOwner::Run { test: record.test.clone(), run_id: record.run_id.clone(), this_engine }
    } else if this_engine {
        SessionOwner::Orphan { why: format!("its run {} of {} is over", record.run_id, record.test) }
    } else if record.session_id.is_none() {
        SessionOwner::Orphan {
            why: format!("created for {} but llmdeck (pid {}) died before the answer", record.test, record.owner.pid),
        }
    } else {
        SessionOwner::Orphan { why: format!("owner gone (llmdeck pid {}, test {})", record.owner.pid, record.test) }
    };
    Resolution { owner, record: key }
}

/// An intent whose POST never answered explains a session on the same offer created within
/// its window.
fn answers_intent(record: &LedgerRecord, session: &Session) -> bool {
    let same_offer = match &session.offer_id {
        Some(offer) => *offer == record.offer_id,
        None => session.provider == record.provider && session.gpu_type == record.gpu_type,
    };
    record.session_id.is_none()
        && same_offer
        && session.created_at >= record.intent_at - INTENT_WINDOW_BEFORE
        && session.created_at <= record.intent_at + INTENT_WINDOW_AFTER
}

/// How a destroy ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Destroyed {
    /// `stopped`, or the shopper no longer knows it.
    Stopped,
    /// Still `stopping` after `stuck_after`: alert; the next attempt asks again.
    Stuck { last_error: Option<String> },
    /// The shopper could not be asked (down, or answering garbage); the record stays.
    Unreachable(String),
}

/// The steps of a destroy, for whoever shows progress.
#[derive(Debug, Clone, PartialEq)]
pub enum DestroyProgress {
    Asked,
    Status(SessionStatus),
    DeleteRetried,
}

/// Destroys a session and waits until the shopper says `stopped`: a graceful `done` first
/// (DELETE if that is refused), then polling; a `failed` session is DELETEd again; a session
/// still `stopping` after `stuck_after` is reported stuck.
pub async fn destroy(
    client: &ShopperClient,
    id: &str,
    stuck_after: Duration,
    mut progress: impl FnMut(DestroyProgress),
) -> Destroyed {
    progress(DestroyProgress::Asked);
    let mut last_error = match client.done(id).await {
        Ok(_) => None,
        Err(ShopperError::NotFound(_)) => return Destroyed::Stopped,
        // Already stopped or failed: the polling below sees which.
        Err(ShopperError::Conflict { .. }) => None,
        Err(e) => match client.delete(id).await {
            Ok(_) => None,
            Err(ShopperError::NotFound(_)) => return Destroyed::Stopped,
            Err(e2) => Some(format!("{e}; DELETE: {e2}")),
        },
    };
    let deadline = tokio::time::Instant::now() + stuck_after;
    let mut interval = Duration::from_millis(250);
    loop {
        match client.session(id).await {
            Ok(session) => {
                progress(DestroyProgress::Status(session.status));
                match session.status {
                    SessionStatus::Stopped => return Destroyed::Stopped,
                    SessionStatus::Failed => {
                        progress(DestroyProgress::DeleteRetried);
                        if let Err(e) = client.delete(id).await {
                            last_error = Some(format!("DELETE: {e}"));
                        }
                    }
                    _ => {}
                }
            }
            Err(ShopperError::NotFound(_)) => return Destroyed::Stopped,
            Err(e) if tokio::time::Instant::now() >= deadline => return Destroyed::Unreachable(e.to_string()),
            Err(e) => last_error = Some(e.to_string()),
        }
        if tokio::time::Instant::now() >= deadline {
            return Destroyed::Stuck { last_error };
        }
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;

    fn session(id: &str, offer: &str, created: DateTime<Utc>) -> Session {
        serde_json::from_value(serde_json::json!({
            "id": id, "consumer_id": "me", "provider": "vastai", "gpu_type": "RTX 4090", "gpu_count": 1,
            "status": "running", "workload_type": "llm", "reservation_hours": 1, "price_per_hour": 0.4,
            "created_at": created, "expires_at": created + chrono::Duration::hours(1), "offer_id": offer
        }))
        .expect("session")
    }

    fn record(key: &str, run: &str, owner: Owner, session: Option<&str>, at: DateTime<Utc>) -> LedgerRecord {
        LedgerRecord {
            key: key.into(),
            consumer_id: "me".into(),
            test: "t".into(),
            run_id: run.into(),
            offer_id: "o1".into(),
            provider: "vastai".into(),
            gpu_type: "RTX 4090".into(),
            price_per_hour: 0.4,
            owner,
            intent_at: at,
            session_id: session.map(str::to_owned),
            status: None,
            updated_at: at,
            kept: false,
        }
    }

    fn dead() -> Owner {
        // pid 0 is never a process we can stat.
        Owner { pid: 0, start_ticks: 1 }
    }

    #[test]
    fn a_live_run_of_this_engine_owns_its_session() {
        let now = Utc::now();
        let me = Owner::this_process();
        let records = vec![record("k", "r1", me, Some("s1"), now)];
        let r = resolve(&session("s1", "o1", now), &records, &me, &["r1".into()]);
        assert_eq!(r.owner, SessionOwner::Run { test: "t".into(), run_id: "r1".into(), this_engine: true });
        assert_eq!(r.record.as_deref(), Some("k"));
        // The run is over: an orphan, even though this process lives.
        let r = resolve(&session("s1", "o1", now), &records, &me, &[]);
        assert!(matches!(r.owner, SessionOwner::Orphan { .. }), "{r:?}");
    }

    #[test]
    fn a_dead_owner_an_unanswered_intent_and_no_record_are_orphans() {
        let now = Utc::now();
        let me = Owner::this_process();
        let records = vec![record("k1", "r1", dead(), Some("s1"), now), record("k2", "r2", dead(), None, now)];
        let gone = resolve(&session("s1", "o1", now), &records, &me, &[]);
        assert!(matches!(&gone.owner, SessionOwner::Orphan { why } if why.contains("owner gone")), "{gone:?}");
        let intent = resolve(&session("s2", "o1", now + chrono::Duration::seconds(5)), &records, &me, &[]);
        assert_eq!(intent.record.as_deref(), Some("k2"));
        assert!(matches!(&intent.owner, SessionOwner::Orphan { why } if why.contains("before the answer")));
        let stranger = resolve(&session("s3", "o9", now), &records, &me, &[]);
        assert_eq!(stranger.record, None);
        // Outside the intent's window: not explained by it.
        let late = resolve(&session("s4", "o1", now + chrono::Duration::hours(1)), &records, &me, &[]);
        assert_eq!(late.record, None);
    }

    #[test]
    fn an_unanswered_intent_of_a_live_run_is_not_touched() {
        let now = Utc::now();
        let me = Owner::this_process();
        let records = vec![record("k", "r1", me, None, now)];
        let r = resolve(&session("s1", "o1", now), &records, &me, &["r1".into()]);
        assert!(matches!(r.owner, SessionOwner::Run { .. }), "{r:?}");
    }
}
