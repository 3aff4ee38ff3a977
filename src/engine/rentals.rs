//! Rented GPUs, engine side: keeps the shopper's health and our sessions live in the state,
//! runs the janitor (at start, then every `shopper.janitor_interval_s`) that resolves each
//! session against the session ledger and destroys orphans, and carries out operators'
//! destroy and extend commands. Never blocks the command router: slow shopper calls run on
//! their own tasks and report back.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, TestKind};
use crate::deploy::janitor::{self, Destroyed, Resolution};
use crate::deploy::ledger::{LedgerRecord, Owner, SessionLedger};
use crate::protocol::{
    Ack, Alert, CommandError, Event, EventSink, Hub, RentedSession, SessionOwner, Severity, ShopperEvent, ShopperHealth,
};
use crate::shopper::{Session, SessionStatus, ShopperClient, ShopperError};

/// Ended sessions stay on screen this long (a `failed` one may still hold an instance).
const SHOW_ENDED: chrono::Duration = chrono::Duration::hours(1);

pub(super) struct RentalsSetup {
    pub config: Config,
    pub events: EventSink,
    pub hub: Arc<Hub>,
    pub ledger: SessionLedger,
    pub consumer_id: String,
    pub cancel: CancellationToken,
}

enum Request {
    Destroy { session: String, reply: oneshot::Sender<Result<Ack, CommandError>> },
    Extend { session: String, hours: u32, reply: oneshot::Sender<Result<Ack, CommandError>> },
}

/// The router's and the runs' way to the rentals task.
#[derive(Clone)]
pub(super) struct RentalsHandle {
    requests: mpsc::Sender<Request>,
    refresh: Arc<Notify>,
}

impl RentalsHandle {
    /// Asks for a fresh look at the shopper (a run created or destroyed something).
    pub fn refresh(&self) {
        self.refresh.notify_one();
    }

    pub fn destroy(&self, session: String, reply: oneshot::Sender<Result<Ack, CommandError>>) {
        self.forward(Request::Destroy { session, reply });
    }

    pub fn extend(&self, session: String, hours: u32, reply: oneshot::Sender<Result<Ack, CommandError>>) {
        self.forward(Request::Extend { session, hours, reply });
    }

    fn forward(&self, request: Request) {
        if let Err(e) = self.requests.try_send(request) {
            let reply = match e.into_inner() {
                Request::Destroy { reply, .. } | Request::Extend { reply, .. } => reply,
            };
            let _ = reply.send(Err(CommandError::new("the session keeper is busy or stopped; try again")));
        }
    }
}

pub(super) fn start(setup: RentalsSetup, tasks: &mut tokio::task::JoinSet<()>) -> RentalsHandle {
    let (requests, rx) = mpsc::channel(16);
    let refresh = Arc::new(Notify::new());
    tasks.spawn(run(setup, rx, refresh.clone()));
    RentalsHandle { requests, refresh }
}

/// What a destroy job reports back.
struct JobDone {
    session: String,
    record: Option<String>,
    outcome: Destroyed,
}

struct Keeper {
    setup: RentalsSetup,
    client: Result<ShopperClient, String>,
    me: Owner,
    jobs: mpsc::Sender<JobDone>,
    destroying: HashSet<String>,
    stuck: HashMap<String, DateTime<Utc>>,
    notes: HashMap<String, String>,
    flagged: HashSet<String>,
    /// The last list, resolved, for the view and for commands.
    last: Vec<RentedSession>,
    health: ShopperHealth,
    refresh: Arc<Notify>,
}

async fn run(setup: RentalsSetup, mut requests: mpsc::Receiver<Request>, refresh: Arc<Notify>) {
    let client = ShopperClient::new(&setup.config.shopper.url).map_err(|e| e.to_string());
    let (jobs, mut done) = mpsc::channel(16);
    let mut poll = tokio::time::interval(setup.config.shopper.poll_s);
    let mut sweep = tokio::time::interval(setup.config.shopper.janitor_interval_s);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    poll.reset();
    let cancel = setup.cancel.clone();
    let mut keeper = Keeper {
        setup,
        client,
        me: Owner::this_process(),
        jobs,
        destroying: HashSet::new(),
        stuck: HashMap::new(),
        notes: HashMap::new(),
        flagged: HashSet::new(),
        last: Vec::new(),
        health: ShopperHealth::Unknown,
        refresh: refresh.clone(),
    };
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = sweep.tick() => keeper.look(true).await,
            _ = poll.tick() => keeper.look(false).await,
            () = refresh.notified() => keeper.look(false).await,
            Some(request) = requests.recv() => keeper.handle(request),
            Some(job) = done.recv() => {
                keeper.job_done(job).await;
                keeper.look(false).await;
            }
        }
    }
}

impl Keeper {
    fn in_use(&self) -> bool {
        self.setup.config.tests.iter().any(|t| t.kind == TestKind::Deploy)
            || !self.setup.ledger.list().is_empty()
            || self.last.iter().any(RentedSession::is_active)
    }

    /// Asks the shopper for its health and our sessions, resolves them, publishes; with `act`,
    /// the janitor also destroys (or flags) orphans and tidies the ledger.
    async fn look(&mut self, act: bool) {
        if !self.in_use() {
            if self.health != ShopperHealth::NotUsed {
                self.health = ShopperHealth::NotUsed;
                self.publish(Some(Vec::new())).await;
            }
            return;
        }
        let client = match &self.client {
            Ok(c) => c.clone(),
            Err(e) => {
                self.health = ShopperHealth::Unavailable { reason: e.clone() };
                self.publish(None).await;
                return;
            }
        };
        self.health = match client.health().await {
            Ok(_) => ShopperHealth::Ok,
            Err(e) => ShopperHealth::Unavailable { reason: e.to_string() },
        };
        let listed = match client.sessions(&self.setup.consumer_id, None).await {
            Ok(list) => list.sessions,
            Err(e) => {
                if self.health == ShopperHealth::Ok {
                    self.health = ShopperHealth::Unavailable { reason: format!("listing sessions: {e}") };
                }
                // Lose nothing: the last list stays, the ledger is untouched.
                self.publish(None).await;
                return;
            }
        };
        let records = self.setup.ledger.list();
        let my_runs = self.my_runs();
        let now = Utc::now();
        let mut shown = Vec::new();
        for session in &listed {
            let resolution = janitor::resolve(session, &records, &self.me, &my_runs);
            if let Some(key) = &resolution.record {
                self.note_session_id(&records, key, session);
            }
            if session.status.is_active() && matches!(resolution.owner, SessionOwner::Orphan { .. }) && act {
                self.orphan(session, &resolution);
            }
            if session.status == SessionStatus::Stopping && self.stuck.contains_key(&session.id) && act {
                self.start_destroy(&client, session.id.clone(), resolution.record.clone());
            }
            if session.status.is_active()
                || now - session.created_at < SHOW_ENDED && session.status == SessionStatus::Failed
            {
                shown.push(self.view(session, resolution.owner));
            }
            if !session.status.is_active() {
                self.stuck.remove(&session.id);
            }
        }
        if act {
            self.tidy_ledger(&client, &records, &listed).await;
        }
        self.last.clone_from(&shown);
        self.publish(Some(shown)).await;
    }

    /// The runs of this engine that are still going (their cleanup included).
    fn my_runs(&self) -> Vec<String> {
        self.setup.hub.with_state(|s| {
            s.tests
                .iter()
                .filter_map(|t| t.current.as_ref())
                .filter(|r| r.finished.is_none())
                .map(|r| r.id.clone())
                .collect()
        })
    }

    /// A session found for an intent whose answer never came: remember its id.
    fn note_session_id(&self, records: &[LedgerRecord], key: &str, session: &Session) {
        if let Some(record) = records.iter().find(|r| r.key == key && r.session_id.is_none()) {
            let mut record = record.clone();
            record.session_id = Some(session.id.clone());
            record.status = Some(session.status.name().to_owned());
            record.updated_at = Utc::now();
            if let Err(e) = self.setup.ledger.write(&record) {
                tracing::warn!("session ledger: recording {} for {}: {e}", session.id, record.key);
            }
        }
    }

    fn orphan(&mut self, session: &Session, resolution: &Resolution) {
        let SessionOwner::Orphan { why } = &resolution.owner else { return };
        let what = format!(
            "{} {} {} (${:.2}/h)",
            short(&session.id),
            session.provider,
            session.gpu_type,
            session.price_per_hour
        );
        if self.setup.config.shopper.auto_cleanup_orphans {
            if self.destroying.contains(&session.id) || session.status == SessionStatus::Stopping {
                return;
            }
            self.alert(Severity::Warning, format!("orphaned session {what}: {why}; destroying it"));
            if let Ok(client) = self.client.clone() {
                self.start_destroy(&client, session.id.clone(), resolution.record.clone());
            }
        } else if self.flagged.insert(session.id.clone()) {
            self.alert(
                Severity::Error,
                format!(
                    "orphaned session {what}: {why}; left running because shopper.auto_cleanup_orphans is off \
                     (destroy it from the Sessions view, S, or `llmdeck sessions cleanup`)"
                ),
            );
        }
    }

    fn start_destroy(&mut self, client: &ShopperClient, session: String, record: Option<String>) {
        if !self.destroying.insert(session.clone()) {
            return;
        }
        self.notes.insert(session.clone(), "destroying".into());
        let (client, jobs) = (client.clone(), self.jobs.clone());
        let stuck_after = self.setup.config.shopper.stuck_after_s;
        tokio::spawn(async move {
            let outcome = janitor::destroy(&client, &session, stuck_after, |_| {}).await;
            let _ = jobs.send(JobDone { session, record, outcome }).await;
        });
    }

    async fn job_done(&mut self, job: JobDone) {
        self.destroying.remove(&job.session);
        let id = short(&job.session);
        match job.outcome {
            Destroyed::Stopped => {
                self.stuck.remove(&job.session);
                self.notes.remove(&job.session);
                if let Some(key) = &job.record
                    && let Err(e) = self.setup.ledger.remove(key)
                {
                    tracing::warn!("session ledger: removing {key}: {e}");
                }
                self.alert(Severity::Info, format!("session {id} destroyed (stopped)"));
            }
            Destroyed::Stuck { last_error } => {
                let since = *self.stuck.entry(job.session.clone()).or_insert_with(Utc::now);
                let detail = last_error.map(|e| format!(" ({e})")).unwrap_or_default();
                self.notes.insert(job.session.clone(), "destroy retried".into());
                self.alert(
                    Severity::Error,
                    format!(
                        "session {id} is STUCK stopping since {}{detail}; llmdeck asks again at every janitor pass",
                        since.format("%H:%M:%S")
                    ),
                );
            }
            Destroyed::Unreachable(e) => {
                self.notes.insert(job.session.clone(), "destroy not confirmed".into());
                self.alert(
                    Severity::Error,
                    format!("session {id}: destroy not confirmed, the shopper is unreachable: {e}"),
                );
            }
        }
    }

    /// Records whose session is over, or whose intent never became a session, are forgotten.
    async fn tidy_ledger(&self, client: &ShopperClient, records: &[LedgerRecord], listed: &[Session]) {
        let now = Utc::now();
        for record in records {
            let over = match &record.session_id {
                Some(id) => match listed.iter().find(|s| s.id == *id) {
                    Some(s) => s.status == SessionStatus::Stopped,
                    None => matches!(client.session(id).await, Err(ShopperError::NotFound(_))),
                },
                None => {
                    !record.owner.is_alive()
                        && now - record.intent_at > chrono::Duration::minutes(15)
                        && !listed
                            .iter()
                            .any(|s| janitor::resolve(s, std::slice::from_ref(record), &self.me, &[]).record.is_some())
                }
            };
            if over && let Err(e) = self.setup.ledger.remove(&record.key) {
                tracing::warn!("session ledger: removing {}: {e}", record.key);
            }
        }
    }

    fn view(&self, s: &Session, owner: SessionOwner) -> RentedSession {
        RentedSession {
            id: s.id.clone(),
            provider: s.provider.clone(),
            gpu_type: s.gpu_type.clone(),
            status: s.status.name().to_owned(),
            created_at: s.created_at,
            expires_at: s.expires_at,
            price_per_hour: s.price_per_hour,
            owner,
            stuck_since: self.stuck.get(&s.id).copied(),
            note: self.notes.get(&s.id).cloned().or_else(|| s.error.clone()),
        }
    }

    fn handle(&mut self, request: Request) {
        let client = match &self.client {
            Ok(c) => c.clone(),
            Err(e) => {
                let reply = match request {
                    Request::Destroy { reply, .. } | Request::Extend { reply, .. } => reply,
                };
                let _ = reply.send(Err(CommandError::new(format!("the shopper is not usable: {e}"))));
                return;
            }
        };
        match request {
            Request::Destroy { session, reply } => {
                let record = self.setup.ledger.list().into_iter().find(|r| r.session_id.as_deref() == Some(&session));
                let _ = reply.send(Ok(Ack { message: format!("destroying session {}", short(&session)) }));
                self.start_destroy(&client, session, record.map(|r| r.key));
            }
            Request::Extend { session, hours, reply } => {
                let refresh = self.refresh.clone();
                tokio::spawn(async move {
                    let answer = client
                        .extend(&session, hours)
                        .await
                        .map(|done| Ack {
                            message: match done.new_expires_at {
                                Some(at) => {
                                    format!("session {} now expires at {}", short(&session), at.format("%H:%M UTC"))
                                }
                                None => format!("session {} extended by {hours} h", short(&session)),
                            },
                        })
                        .map_err(|e| CommandError::new(format!("extending {}: {e}", short(&session))));
                    let _ = reply.send(answer);
                    // The view shows the new expiry at once.
                    refresh.notify_one();
                });
            }
        }
    }

    fn alert(&self, severity: Severity, message: String) {
        match severity {
            Severity::Error => tracing::error!("{message}"),
            Severity::Warning => tracing::warn!("{message}"),
            Severity::Info => tracing::info!("{message}"),
        }
        let alert = Alert { ts: Utc::now(), severity, source: "shopper".into(), message };
        // Alerts are worth waiting for, but never from inside the loop: a full queue drops it.
        if self.setup.events.try_send(Event::Alert(alert)).is_err() {
            tracing::warn!("event queue full: a shopper alert went only to the log");
        }
    }

    async fn publish(&self, sessions: Option<Vec<RentedSession>>) {
        let event = ShopperEvent { ts: Utc::now(), health: self.health.clone(), sessions };
        let _ = self.setup.events.send(Event::Shopper(event)).await;
    }
}

fn short(id: &str) -> String {
    id.chars().take(8).collect()
}
