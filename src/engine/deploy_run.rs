//! A deployment test run on a rented GPU: check shopper → requirements → inventory → select
//! offer → create session (intent in the session ledger first) → wait running → ssh connect →
//! deploy → wait ready (through an SSH tunnel) → probe → cleanup, which runs on every path and
//! destroys the session unless the test keeps it. A cancel at any step jumps to the cleanup.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::local_run::probe_step;
use super::rentals::RentalsHandle;
use super::runs::{MainOutcome, RunCtx};
use crate::config::{Config, DeployConfig, TestConfig};
use crate::deploy::janitor::{self, Destroyed};
use crate::deploy::ledger::{LedgerRecord, SessionLedger};
use crate::deploy::requirements::required_vram;
use crate::deploy::ssh::{ExitOutcome, OutputLine, RemoteCommand, SshSession, SshTarget, Tunnel};
use crate::logs::{Level, LogBatch, LogLine, LogSource};
use crate::probe::ProbeOptions;
use crate::protocol::{
    CommandError, Event, OfferInfo, ProbeReport, RunChange, SessionInfo, StepStatus, Verdict, deploy_steps,
};
use crate::shopper::{
    CreateSession, InventoryQuery, Offer, PrivateKeyPem, Session, SessionStatus, ShopperClient, ShopperError,
};

const CHECK_SHOPPER: usize = 0;
const REQUIREMENTS: usize = 1;
const INVENTORY: usize = 2;
const SELECT_OFFER: usize = 3;
const CREATE_SESSION: usize = 4;
const WAIT_RUNNING: usize = 5;
const SSH_CONNECT: usize = 6;
const DEPLOY: usize = 7;
const WAIT_READY: usize = 8;
const PROBE: usize = 9;
const CLEANUP: usize = 10;

/// How long the run waits for the shopper to become ready before giving up.
const SHOPPER_READY_WAIT: Duration = Duration::from_secs(60);
/// The remote output lines a failure quotes.
const LAST_LINES: usize = 12;

/// What stopped a step.
enum Stop {
    Cancelled,
    Failed(String),
}

impl From<String> for Stop {
    fn from(why: String) -> Self {
        Stop::Failed(why)
    }
}

/// Everything a deploy run needs from the engine.
pub(super) struct DeployDeps {
    pub consumer_id: String,
    pub ledger: SessionLedger,
    pub rentals: RentalsHandle,
}

pub(super) struct DeployRun {
    deploy: DeployConfig,
    config: Config,
    deps: DeployDeps,
    client: ShopperClient,
    offer: Option<Offer>,
    record: Option<LedgerRecord>,
    session: Option<Session>,
    key: Option<PrivateKeyPem>,
    rented_at: Option<Instant>,
    ssh: Option<SshSession>,
    remote: Option<RemoteCommand>,
    follower: Option<RemoteCommand>,
    tunnel: Option<Tunnel>,
    output: Output,
    cost_usd: Option<f64>,
}

/// The remote command's output as the run watches it: the last lines, and the first OOM line.
#[derive(Clone)]
struct Output {
    last: Arc<Mutex<VecDeque<String>>>,
    oom: watch::Sender<Option<String>>,
}

impl Output {
    fn last_lines(&self) -> String {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

impl DeployRun {
    pub(super) fn new(test: &TestConfig, config: &Config, deps: DeployDeps) -> Result<Self, CommandError> {
        let deploy = test.deploy.clone().ok_or_else(|| {
            CommandError::new(format!("{} is a deployment test without a `deploy:` section", test.name))
        })?;
        let client = ShopperClient::new(&config.shopper.url)
            .map_err(|e| CommandError::new(format!("{}: the shopper URL: {e}", test.name)))?;
        Ok(Self {
            deploy,
            config: config.clone(),
            deps,
            client,
            offer: None,
            record: None,
            session: None,
            key: None,
            rented_at: None,
            ssh: None,
            remote: None,
            follower: None,
            tunnel: None,
            output: Output { last: Arc::default(), oom: watch::channel(None).0 },
            cost_usd: None,
        })
    }

    pub(super) fn target(&self, test: &TestConfig) -> String {
        test.model.clone()
    }

    pub(super) fn steps(&self) -> Vec<String> {
        deploy_steps::ALL.map(String::from).into()
    }

    pub(super) fn cost_usd(&self) -> Option<f64> {
        self.cost_usd
    }

    pub(super) async fn main(&mut self, ctx: &mut RunCtx) -> MainOutcome {
        match self.steps_until_probe(ctx).await {
            Ok(report) => {
                let verdict = super::verdict::judge(&report, &ctx.test.pass, ctx.cancel.is_cancelled());
                MainOutcome { verdict, probe: Some(report), energy: None }
            }
            Err(verdict) => MainOutcome::ended(verdict),
        }
    }

    async fn steps_until_probe(&mut self, ctx: &mut RunCtx) -> Result<ProbeReport, Verdict> {
        let cancel = ctx.cancel.clone();
        ctx.step_running(CHECK_SHOPPER, format!("asking {}", self.client.base_url())).await;
        let health = guarded(&cancel, self.check_shopper(ctx)).await;
        self.over(ctx, CHECK_SHOPPER, health).await?;

        let test = ctx.test.clone();
        let need = required_vram(&test.model, test.min_vram_gb, self.deploy.quantization.as_deref());
        let detail = format!("{:.1} GB GPU memory ({})", need.vram_gb, need.source);
        ctx.step_running(REQUIREMENTS, detail.clone()).await;
        ctx.step_over(REQUIREMENTS, StepStatus::Done, detail).await;

        ctx.step_running(INVENTORY, "listing offers").await;
        let offers = guarded(&cancel, self.inventory(&test, need.vram_gb)).await;
        let mut offers = self.over(ctx, INVENTORY, offers).await?;

        ctx.step_running(SELECT_OFFER, "cheapest that fits").await;
        offers.sort_by(|a, b| a.price_per_hour.total_cmp(&b.price_per_hour));
        let detail = describe_choice(&offers);
        ctx.step_over(SELECT_OFFER, StepStatus::Done, detail).await;

        ctx.step_running(CREATE_SESSION, "").await;
        // Not cancellable midway: a create cut off may still rent; it is bounded by the
        // client's write timeout, and a cancel is honoured right after.
        let created = self.create_session(ctx, &offers).await;
        self.over(ctx, CREATE_SESSION, created).await?;
        if cancel.is_cancelled() {
            return Err(Verdict::cancelled("cancelled after the session was created"));
        }

        ctx.step_running(WAIT_RUNNING, "provisioning").await;
        let running = guarded(&cancel, self.wait_running(ctx)).await;
        self.over(ctx, WAIT_RUNNING, running).await?;

        ctx.step_running(SSH_CONNECT, "").await;
        let connected = guarded(&cancel, self.ssh_connect(ctx)).await;
        self.over(ctx, SSH_CONNECT, connected).await?;

        let command = self.command(&test);
        ctx.step_running(DEPLOY, crate::util::redact_command_line(&command)).await;
        let deployed = guarded(&cancel, self.start_deploy(ctx, &command)).await;
        self.over(ctx, DEPLOY, deployed).await?;

        ctx.step_running(WAIT_READY, format!("port {} through an SSH tunnel", self.deploy.port)).await;
        let ready = guarded(&cancel, self.wait_ready(ctx, &test.model)).await;
        let base_url = self.over(ctx, WAIT_READY, ready).await?.base_url;

        let opts = ProbeOptions::from_config(base_url, Some(test.model.clone()), &test.probe);
        probe_step(ctx, PROBE, opts).await
    }

    /// Ends step `index` as its result says; a failure or a cancel becomes the run's verdict.
    async fn over<T: StepDetail>(
        &mut self,
        ctx: &mut RunCtx,
        index: usize,
        result: Result<T, Stop>,
    ) -> Result<T, Verdict> {
        match result {
            Ok(value) => {
                ctx.step_over(index, StepStatus::Done, value.detail()).await;
                Ok(value)
            }
            Err(Stop::Cancelled) => {
                ctx.step_over(index, StepStatus::Failed, "cancelled").await;
                Err(Verdict::cancelled(format!("cancelled at {}", deploy_steps::ALL[index])))
            }
            Err(Stop::Failed(why)) => {
                ctx.step_over(index, StepStatus::Failed, why.clone()).await;
                ctx.log(Level::Error, format!("{}: {why}", deploy_steps::ALL[index])).await;
                Err(Verdict::fail(format!("{}: {why}", deploy_steps::ALL[index])))
            }
        }
    }

    /// `/health` and `/ready`, waiting (bounded) while the shopper starts up.
    async fn check_shopper(&self, ctx: &mut RunCtx) -> Result<String, Stop> {
        let deadline = tokio::time::Instant::now() + SHOPPER_READY_WAIT;
        loop {
            let outcome = match self.client.health().await {
                Ok(_) => match self.client.ready().await {
                    Ok(r) if r.ready => return Ok("healthy and ready".into()),
                    Ok(_) => "healthy, not ready yet".to_owned(),
                    Err(e) => e.to_string(),
                },
                Err(e) => e.to_string(),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(Stop::Failed(format!("the shopper is not ready after {SHOPPER_READY_WAIT:?}: {outcome}")));
            }
            ctx.step_running(CHECK_SHOPPER, format!("waiting: {outcome}")).await;
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    async fn inventory(&self, test: &TestConfig, vram_gb: f64) -> Result<Vec<Offer>, Stop> {
        let query = InventoryQuery {
            min_vram: Some(vram_gb.ceil() as u32),
            max_price: test.max_price,
            gpu_type: test.gpu_type.clone(),
            min_reliability: test.min_reliability,
            ..InventoryQuery::default()
        };
        let offers = self.client.inventory(&query).await.map_err(|e| format!("listing offers: {e}"))?.offers;
        // The service filters too; llmdeck checks again rather than rent what it did not ask for.
        let fits: Vec<Offer> = offers
            .into_iter()
            .filter(|o| o.available && f64::from(o.vram_gb) >= vram_gb)
            .filter(|o| test.max_price.is_none_or(|p| o.price_per_hour <= p))
            .filter(|o| test.gpu_type.as_ref().is_none_or(|g| o.gpu_type.eq_ignore_ascii_case(g)))
            .filter(|o| test.min_reliability.is_none_or(|r| o.reliability.is_none_or(|have| have >= r)))
            .collect();
        if fits.is_empty() {
            let price = test.max_price.map(|p| format!(" at most ${p:.2}/h")).unwrap_or_default();
            let gpu = test.gpu_type.as_ref().map(|g| format!(" of type {g}")).unwrap_or_default();
            return Err(Stop::Failed(format!("no available offer with {vram_gb:.1} GB or more{gpu}{price}")));
        }
        Ok(fits)
    }

    /// Tries the offers in order: the intent goes into the ledger before each POST; a stale
    /// offer is excluded and the next tried, up to `shopper.create_attempts`.
    async fn create_session(&mut self, ctx: &mut RunCtx, offers: &[Offer]) -> Result<String, Stop> {
        let attempts = self.config.shopper.create_attempts as usize;
        let mut stale = Vec::new();
        for (attempt, offer) in offers.iter().take(attempts).enumerate() {
            let key = format!("{}-{}", ctx.run.id, attempt + 1);
            let record = LedgerRecord::intent(key, &self.deps.consumer_id, &ctx.test.name, &ctx.run.id, offer);
            self.deps.ledger.write(&record).map_err(|e| {
                format!(
                    "cannot write the session ledger in {} ({e}); nothing was rented",
                    self.deps.ledger.dir().display()
                )
            })?;
            self.record = Some(record);
            self.offer = Some(offer.clone());
            ctx.change(RunChange::Offer { offer: offer_info(offer) }).await;
            ctx.step_running(
                CREATE_SESSION,
                format!("renting {} {} at ${:.2}/h", offer.provider, offer.gpu_type, offer.price_per_hour),
            )
            .await;
            let mut request = CreateSession::new(&self.deps.consumer_id, &offer.id, "llm", ctx.test.reservation_hours);
            request.model_id = Some(ctx.test.model.clone());
            request.exposed_ports = Some(vec![self.deploy.port]);
            match self.client.create(&request).await {
                Ok(created) => {
                    self.rented_at = Some(Instant::now());
                    self.key = Some(created.ssh_private_key);
                    let session = created.session;
                    if let Some(record) = &mut self.record {
                        record.session_id = Some(session.id.clone());
                        record.status = Some(session.status.name().to_owned());
                        record.updated_at = Utc::now();
                        if let Err(e) = self.deps.ledger.write(record) {
                            tracing::warn!("session ledger: recording session {}: {e}", session.id);
                        }
                    }
                    self.session_changed(ctx, &session).await;
                    self.session = Some(session.clone());
                    self.deps.rentals.refresh();
                    return Ok(format!(
                        "session {} · expires {}",
                        short(&session.id),
                        session.expires_at.format("%H:%M UTC")
                    ));
                }
                Err(ShopperError::StaleInventory { offer_id }) => {
                    // Nothing was rented: the intent is void.
                    self.forget_record();
                    ctx.log(
                        Level::Warn,
                        format!("offer {offer_id} was taken meanwhile (stale inventory); trying the next"),
                    )
                    .await;
                    stale.push(offer_id);
                }
                Err(ShopperError::Conflict { existing_session, message }) => {
                    self.forget_record();
                    let existing = existing_session.map(|s| format!(" ({s})")).unwrap_or_default();
                    return Err(Stop::Failed(format!(
                        "the shopper says this consumer already has a session{existing} on this offer: {message}; \
                         llmdeck does not adopt it (see the Sessions view, S)"
                    )));
                }
                Err(e) => {
                    // The record stays: if the shopper rented anyway, the cleanup finds it.
                    return Err(Stop::Failed(format!("creating the session: {e}")));
                }
            }
        }
        Err(Stop::Failed(format!("every offer tried was taken meanwhile ({})", stale.join(", "))))
    }

    fn forget_record(&mut self) {
        if let Some(record) = self.record.take()
            && let Err(e) = self.deps.ledger.remove(&record.key)
        {
            tracing::warn!("session ledger: removing {}: {e}", record.key);
        }
    }

    async fn session_changed(&self, ctx: &mut RunCtx, session: &Session) {
        let info = SessionInfo {
            id: session.id.clone(),
            status: session.status.name().to_owned(),
            price_per_hour: session.price_per_hour,
            rented_ms: None,
        };
        ctx.change(RunChange::Session { session: info }).await;
    }

    /// Polls with growing intervals until `running`; `failed` or `stopped` ends the run.
    async fn wait_running(&mut self, ctx: &mut RunCtx) -> Result<String, Stop> {
        let Some(id) = self.session.as_ref().map(|s| s.id.clone()) else {
            return Err(Stop::Failed("no session".into()));
        };
        let shopper = &self.config.shopper;
        let deadline = tokio::time::Instant::now() + shopper.wait_running_timeout_s;
        let mut interval = shopper.poll_initial_s;
        let started = Instant::now();
        let mut last_status = None;
        loop {
            match self.client.session(&id).await {
                Ok(session) => {
                    if last_status != Some(session.status) {
                        last_status = Some(session.status);
                        self.session_changed(ctx, &session).await;
                    }
                    let status = session.status;
                    let error = session.error.clone().unwrap_or_else(|| "no reason given".into());
                    self.session = Some(session);
                    match status {
                        SessionStatus::Running => {
                            return Ok(format!("running after {}", secs(started.elapsed())));
                        }
                        SessionStatus::Failed => return Err(Stop::Failed(format!("the session failed: {error}"))),
                        SessionStatus::Stopped | SessionStatus::Stopping => {
                            return Err(Stop::Failed(format!("the session ended before it ran: {error}")));
                        }
                        other => {
                            ctx.step_running(WAIT_RUNNING, format!("{} for {}", other.name(), secs(started.elapsed())))
                                .await;
                        }
                    }
                }
                Err(e) => ctx.step_running(WAIT_RUNNING, format!("asking again: {e}")).await,
            }
            if tokio::time::Instant::now() + interval > deadline {
                let waited = secs(shopper.wait_running_timeout_s);
                return Err(Stop::Failed(format!("not running within shopper.wait_running_timeout_s ({waited})")));
            }
            tokio::time::sleep(interval).await;
            interval = interval.mul_f64(1.5).min(shopper.poll_max_s);
        }
    }

    /// Connects with the key held in memory, retrying while the instance's sshd comes up.
    async fn ssh_connect(&mut self, ctx: &mut RunCtx) -> Result<String, Stop> {
        let (Some(session), Some(key)) = (&self.session, &self.key) else {
            return Err(Stop::Failed("no session to connect to".into()));
        };
        let (Some(host), Some(port)) = (session.ssh_host.clone(), session.ssh_port) else {
            return Err(Stop::Failed("the running session has no ssh_host/ssh_port".into()));
        };
        let target = SshTarget { host, port, user: session.ssh_user.clone().unwrap_or_else(|| "root".into()) };
        let deadline = tokio::time::Instant::now() + self.config.shopper.ssh_connect_timeout_s;
        let mut tries = 0;
        loop {
            tries += 1;
            ctx.step_running(SSH_CONNECT, format!("{target} (try {tries})")).await;
            match SshSession::connect(&target, key.expose(), Duration::from_secs(20)).await {
                Ok(ssh) => {
                    self.ssh = Some(ssh);
                    return Ok(format!("{target}"));
                }
                Err(e @ crate::deploy::ssh::SshError::Key(_)) => return Err(Stop::Failed(e.to_string())),
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    let waited = secs(self.config.shopper.ssh_connect_timeout_s);
                    return Err(Stop::Failed(format!("{e} (gave up after {tries} tries in {waited})")));
                }
                Err(e) => {
                    ctx.log(Level::Warn, format!("ssh {target}: {e}; retrying")).await;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
    }

    /// `deploy.command` with its placeholders filled in.
    fn command(&self, test: &TestConfig) -> String {
        let d = &self.deploy;
        d.command
            .replace("{model}", &test.model)
            .replace("{port}", &d.port.to_string())
            .replace("{quantization}", d.quantization.as_deref().unwrap_or(""))
            .replace("{max_model_len}", &d.max_model_len.map(|n| n.to_string()).unwrap_or_default())
    }

    /// Starts the command. In the foreground (no `logs_command`) its channel stays open and
    /// streams; a command that detaches must exit 0, then `logs_command` follows the output.
    async fn start_deploy(&mut self, ctx: &mut RunCtx, command: &str) -> Result<String, Stop> {
        let Some(ssh) = self.ssh.clone() else { return Err(Stop::Failed("not connected".into())) };
        let env: Vec<(String, String)> = self.deploy.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let remote = ssh.exec(command, &env, self.forward_output(ctx)).await.map_err(|e| e.to_string())?;
        let Some(logs_command) = self.deploy.logs_command.clone() else {
            self.remote = Some(remote);
            let names: Vec<&str> = self.deploy.env.keys().map(String::as_str).collect();
            let env_note = if names.is_empty() { String::new() } else { format!(" · env {}", names.join(", ")) };
            return Ok(format!("started in the foreground{env_note}"));
        };
        match remote.wait().await {
            ExitOutcome::Code(0) => {}
            other => {
                return Err(Stop::Failed(format!(
                    "the command ended with {}:\n{}",
                    describe_exit(&other),
                    self.output.last_lines()
                )));
            }
        }
        let follower = ssh.exec(&logs_command, &env, self.forward_output(ctx)).await.map_err(|e| e.to_string())?;
        self.follower = Some(follower);
        Ok(format!("detached; following `{}`", crate::util::redact_command_line(&logs_command)))
    }

    /// A channel whose lines go to the test's log, remembered for failures and checked for OOM.
    fn forward_output(&self, ctx: &RunCtx) -> mpsc::Sender<OutputLine> {
        let (tx, mut rx) = mpsc::channel::<OutputLine>(256);
        let events = ctx.events().clone();
        let source = LogSource::Test(ctx.test.name.clone());
        let output = self.output.clone();
        tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                let oom = crate::logs::oom::is_oom_line(&line.text);
                {
                    let mut last = output.last.lock().unwrap_or_else(|p| p.into_inner());
                    if last.len() == LAST_LINES {
                        last.pop_front();
                    }
                    last.push_back(line.text.clone());
                }
                if oom && output.oom.borrow().is_none() {
                    output.oom.send_replace(Some(crate::logs::oom::capped(&line.text)));
                }
                let stream = match line.stream {
                    crate::deploy::ssh::Stream::Stdout => crate::logs::Stream::Stdout,
                    crate::deploy::ssh::Stream::Stderr => crate::logs::Stream::Stderr,
                };
                let level = crate::logs::level::parse_level(&line.text);
                let log = LogLine { ts: Utc::now(), stream, level, text: line.text, truncated: false, oom };
                let _ = events.send(Event::Log(LogBatch::single(source.clone(), log))).await;
            }
        });
        tx
    }

    /// Through a tunnel: `/health` 200 (404: `/v1/models` alone) and `/v1/models` listing the
    /// model, within `deploy.ready_timeout_s`; an OOM line or the command's exit fails early.
    async fn wait_ready(&mut self, ctx: &mut RunCtx, model: &str) -> Result<Ready, Stop> {
        let Some(ssh) = &self.ssh else { return Err(Stop::Failed("not connected".into())) };
        let tunnel = ssh.tunnel(self.deploy.port).await.map_err(|e| e.to_string())?;
        let base_url = format!("http://127.0.0.1:{}", tunnel.local_port);
        self.tunnel = Some(tunnel);
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("an HTTP client: {e}"))?;
        let deadline = tokio::time::Instant::now() + self.deploy.ready_timeout_s;
        let started = Instant::now();
        let mut oom = self.output.oom.subscribe();
        let mut models_only = false;
        loop {
            if let Some(line) = oom.borrow_and_update().clone() {
                return Err(Stop::Failed(format!("CUDA out of memory while loading: {line}")));
            }
            if let Some(remote) = &mut self.remote
                && let Some(outcome) = remote.try_outcome()
            {
                return Err(Stop::Failed(format!(
                    "the server exited ({}) before it was ready; its last lines:\n{}",
                    describe_exit(&outcome),
                    self.output.last_lines()
                )));
            }
            let state = ready_check(&http, &base_url, model, &mut models_only).await;
            match state {
                Ok(()) => {
                    let how = if models_only { "/v1/models (no /health)" } else { "/health and /v1/models" };
                    let detail = format!("ready after {} · {how}", secs(started.elapsed()));
                    return Ok(Ready { base_url, detail });
                }
                Err(why) => ctx.step_running(WAIT_READY, format!("{} · {why}", secs(started.elapsed()))).await,
            }
            if tokio::time::Instant::now() >= deadline {
                let waited = secs(self.deploy.ready_timeout_s);
                return Err(Stop::Failed(format!("not ready within deploy.ready_timeout_s ({waited})")));
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = oom.changed() => {}
            }
        }
    }

    /// Always: stops what runs on the instance, then destroys the session (unless the test
    /// keeps it) and waits until the shopper says `stopped`, updating the ledger.
    pub(super) async fn cleanup(&mut self, ctx: &mut RunCtx, _verdict: &Verdict) {
        ctx.step_running(CLEANUP, "").await;
        self.tunnel = None;
        self.remote = None;
        self.follower = None;
        if let Some(ssh) = self.ssh.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), ssh.close()).await;
        }
        if self.session.is_none() && self.record.is_some() {
            // The create never answered: did the shopper rent anyway?
            self.find_unanswered(ctx).await;
        }
        let Some(session) = self.session.clone() else {
            self.forget_record();
            ctx.step_over(CLEANUP, StepStatus::Done, "nothing was rented").await;
            return;
        };
        let id = short(&session.id);
        if ctx.test.keep_session {
            if let Some(record) = &mut self.record {
                record.kept = true;
                let _ = self.deps.ledger.write(record);
            }
            let why = format!(
                "kept as configured (keep_session): session {id} keeps running at ${:.2}/h",
                session.price_per_hour
            );
            ctx.log(Level::Error, why.clone()).await;
            ctx.step_over(CLEANUP, StepStatus::Failed, why).await;
            return;
        }
        ctx.step_running(CLEANUP, format!("destroying session {id}")).await;
        let stuck_after = self.config.shopper.stuck_after_s;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let outcome = {
            let destroy = janitor::destroy(&self.client, &session.id, stuck_after, move |p| {
                let _ = tx.send(p);
            });
            tokio::pin!(destroy);
            loop {
                tokio::select! {
                    outcome = &mut destroy => break outcome,
                    Some(progress) = rx.recv() => {
                        if let janitor::DestroyProgress::Status(status) = progress {
                            ctx.step_running(CLEANUP, format!("session {id} {}", status.name())).await;
                        }
                    }
                }
            }
        };
        let rented = self.rented_at.map(|t| t.elapsed()).unwrap_or_default();
        self.cost_usd = Some(session.price_per_hour * rented.as_secs_f64() / 3600.0);
        self.deps.rentals.refresh();
        match outcome {
            Destroyed::Stopped => {
                self.forget_record();
                let stopped = SessionInfo { status: "stopped".into(), ..self.session_info(&session) };
                ctx.change(RunChange::Session { session: stopped }).await;
                let detail =
                    format!("session {id} stopped · rented {} · ${:.4}", secs(rented), self.cost_usd.unwrap_or(0.0));
                ctx.step_over(CLEANUP, StepStatus::Done, detail).await;
            }
            Destroyed::Stuck { last_error } => {
                let why = format!(
                    "session {id} is STUCK stopping{}; it stays in the session ledger and the janitor retries",
                    last_error.map(|e| format!(" ({e})")).unwrap_or_default()
                );
                ctx.log(Level::Error, why.clone()).await;
                ctx.step_over(CLEANUP, StepStatus::Failed, why).await;
            }
            Destroyed::Unreachable(e) => {
                let why = format!("session {id}: destroy not confirmed ({e}); the janitor retries at the next pass");
                ctx.log(Level::Error, why.clone()).await;
                ctx.step_over(CLEANUP, StepStatus::Failed, why).await;
            }
        }
    }

    fn session_info(&self, session: &Session) -> SessionInfo {
        SessionInfo {
            id: session.id.clone(),
            status: session.status.name().to_owned(),
            price_per_hour: session.price_per_hour,
            rented_ms: None,
        }
    }

    /// A create that failed or timed out may still have rented: a session of our consumer that
    /// answers the intent is this run's to destroy.
    async fn find_unanswered(&mut self, ctx: &mut RunCtx) {
        let Some(record) = self.record.clone() else { return };
        ctx.step_running(CLEANUP, "the create did not answer: looking for a session it made").await;
        let Ok(list) = self.client.sessions(&self.deps.consumer_id, None).await else {
            ctx.log(Level::Warn, "cannot list sessions; the janitor resolves the unanswered create later").await;
            return;
        };
        let me = crate::deploy::ledger::Owner::this_process();
        let runs = vec![record.run_id.clone()];
        let found = list.sessions.into_iter().find(|s| {
            s.status.is_active()
                && janitor::resolve(s, std::slice::from_ref(&record), &me, &runs).record.as_deref()
                    == Some(record.key.as_str())
        });
        if let Some(session) = found {
            ctx.log(Level::Warn, format!("found session {} made by the unanswered create; destroying it", session.id))
                .await;
            self.rented_at = Some(Instant::now() - (Utc::now() - session.created_at).to_std().unwrap_or_default());
            self.session = Some(session);
        }
    }
}

/// Runs a step's future unless the run is cancelled first.
async fn guarded<T>(cancel: &CancellationToken, step: impl Future<Output = Result<T, Stop>>) -> Result<T, Stop> {
    tokio::select! {
        () = cancel.cancelled() => Err(Stop::Cancelled),
        result = step => result,
    }
}

/// A server answering through the tunnel.
struct Ready {
    base_url: String,
    detail: String,
}

impl StepDetail for Ready {
    fn detail(&self) -> String {
        self.detail.clone()
    }
}

/// What a step's result says in its detail.
trait StepDetail {
    fn detail(&self) -> String;
}

impl StepDetail for String {
    fn detail(&self) -> String {
        self.clone()
    }
}

impl StepDetail for Vec<Offer> {
    fn detail(&self) -> String {
        format!("{} offers fit", self.len())
    }
}

/// One look at the server through the tunnel.
async fn ready_check(http: &reqwest::Client, base: &str, model: &str, models_only: &mut bool) -> Result<(), String> {
    if !*models_only {
        match http.get(format!("{base}/health")).send().await {
            Ok(r) if r.status() == reqwest::StatusCode::OK => {}
            Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => *models_only = true,
            Ok(r) => return Err(format!("/health answered {}", r.status())),
            Err(_) => return Err("not listening yet".into()),
        }
    }
    let response = http.get(format!("{base}/v1/models")).send().await.map_err(|_| "not listening yet".to_owned())?;
    if response.status() != reqwest::StatusCode::OK {
        return Err(format!("/v1/models answered {}", response.status()));
    }
    let body: serde_json::Value = response.json().await.map_err(|e| format!("/v1/models: {e}"))?;
    let ids: Vec<&str> =
        body["data"].as_array().map(|a| a.iter().filter_map(|m| m["id"].as_str()).collect()).unwrap_or_default();
    if ids.contains(&model) {
        Ok(())
    } else {
        Err(format!(
            "/v1/models lists {} but not {model}",
            if ids.is_empty() { "nothing".into() } else { ids.join(", ") }
        ))
    }
}

fn offer_info(o: &Offer) -> OfferInfo {
    OfferInfo {
        id: o.id.clone(),
        provider: o.provider.clone(),
        gpu_type: o.gpu_type.clone(),
        gpu_count: o.gpu_count,
        vram_gb: o.vram_gb,
        price_per_hour: o.price_per_hour,
    }
}

/// `RTX 4090 24G · $0.40/h (vastai); next: L4 $0.30/h ...`
fn describe_choice(sorted: &[Offer]) -> String {
    let Some(best) = sorted.first() else { return "no offer".into() };
    let mut detail = format!("{} {}G · ${:.2}/h ({})", best.gpu_type, best.vram_gb, best.price_per_hour, best.provider);
    let next: Vec<String> =
        sorted.iter().skip(1).take(2).map(|o| format!("{} ${:.2}/h", o.gpu_type, o.price_per_hour)).collect();
    if !next.is_empty() {
        detail.push_str(&format!("; next: {}", next.join(", ")));
    }
    detail
}

fn describe_exit(outcome: &ExitOutcome) -> String {
    match outcome {
        ExitOutcome::Code(code) => format!("exit {code}"),
        ExitOutcome::Signal(signal) => format!("signal {signal}"),
        ExitOutcome::Closed => "its channel closed".into(),
    }
}

fn short(id: &str) -> String {
    id.chars().take(8).collect()
}

fn secs(d: Duration) -> String {
    crate::util::fmt_duration_ms(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(gpu: &str, price: f64) -> Offer {
        serde_json::from_value(serde_json::json!({
            "id": gpu, "provider": "vastai", "gpu_type": gpu, "gpu_count": 1, "vram_gb": 24,
            "price_per_hour": price, "available": true, "max_duration_hours": 12
        }))
        .expect("offer")
    }

    #[test]
    fn the_choice_names_the_runners_up() {
        let offers = vec![offer("L4", 0.3), offer("RTX 4090", 0.4), offer("A100", 1.5), offer("H100", 3.5)];
        assert_eq!(describe_choice(&offers), "L4 24G · $0.30/h (vastai); next: RTX 4090 $0.40/h, A100 $1.50/h");
        assert_eq!(describe_choice(&offers[3..]), "H100 24G · $3.50/h (vastai)");
    }
}
