//! `llmdeck sessions list|destroy|cleanup`: our consumer's rentals, from any shell. Cleanup
//! destroys every active session that no live llmdeck run owns and waits until each is
//! `stopped`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use color_eyre::eyre::Result;

use super::cli::GlobalArgs;
use super::engine_cmd::load_config;
use crate::config::{self, Config};
use crate::deploy::janitor::{self, Destroyed};
use crate::deploy::ledger::{Owner, SessionLedger};
use crate::exit;
use crate::protocol::SessionOwner;
use crate::shopper::{Session, ShopperClient};

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// Our consumer's sessions, each with its owner (or why it is an orphan)
    List {
        #[arg(long)]
        json: bool,
    },
    /// Destroy one session and wait until it is stopped
    Destroy {
        /// The session id
        id: String,
    },
    /// Destroy every active session no live llmdeck run owns, and wait until each is stopped
    Cleanup {
        /// Only list what would be destroyed
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
}

struct Context {
    config: Config,
    client: ShopperClient,
    consumer_id: String,
    ledger: SessionLedger,
}

pub async fn run(command: SessionsCommand, global: &GlobalArgs) -> Result<ExitCode> {
    let (config, path) = match load_config(global).await {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    let paths = config::Paths::resolve(&config, Some(&path)).map_err(|e| color_eyre::eyre::eyre!("{e}"))?;
    let consumer_id = config::consumer_id(&config, &paths.data_dir)?;
    let client = match ShopperClient::new(&config.shopper.url) {
        Ok(c) => c,
        Err(e) => {
            say!("llmdeck sessions: {e}");
            return Ok(exit::code(exit::USAGE));
        }
    };
    let ctx = Context { ledger: SessionLedger::new(&paths.data_dir), config, client, consumer_id };
    match command {
        SessionsCommand::List { json } => list(&ctx, json).await,
        SessionsCommand::Destroy { id } => destroy_one(&ctx, &id).await,
        SessionsCommand::Cleanup { dry_run, json } => cleanup(&ctx, dry_run, json).await,
    }
}

/// Our sessions, each resolved against the ledger. Another process's runs are live while that
/// process lives; this command owns no runs.
async fn resolved(ctx: &Context, active_only: bool) -> Result<Vec<(Session, SessionOwner)>, ExitCode> {
    let list = match ctx.client.sessions(&ctx.consumer_id, None).await {
        Ok(list) => list.sessions,
        Err(e) => {
            say!("llmdeck sessions: {} ({})", e, ctx.client.base_url());
            return Err(exit::code(exit::FAILED));
        }
    };
    let records = ctx.ledger.list();
    let me = Owner::this_process();
    Ok(list
        .into_iter()
        .filter(|s| !active_only || s.status.is_active())
        .map(|s| {
            let owner = janitor::resolve(&s, &records, &me, &[]).owner;
            (s, owner)
        })
        .collect())
}

async fn list(ctx: &Context, json: bool) -> Result<ExitCode> {
    let sessions = match resolved(ctx, false).await {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    if json {
        out!("{}", serde_json::Value::Array(sessions.iter().map(|(s, o)| as_json(s, o)).collect()));
    } else if sessions.is_empty() {
        out!("no sessions for consumer {}", ctx.consumer_id);
    } else {
        out!("consumer {} at {}", ctx.consumer_id, ctx.client.base_url());
        for (s, owner) in &sessions {
            out!(
                "{:<38} {:<12} {:<14} {:<12} ${:>5.2}/h  {}",
                s.id,
                s.provider,
                s.gpu_type,
                s.status.name(),
                s.price_per_hour,
                describe(owner)
            );
        }
    }
    Ok(exit::code(exit::OK))
}

fn describe(owner: &SessionOwner) -> String {
    match owner {
        SessionOwner::Run { test, run_id, .. } => format!("{test} run {run_id}"),
        SessionOwner::Kept { test } => format!("kept by {test} (keep_session)"),
        SessionOwner::Orphan { why } => format!("ORPHAN — {why}"),
    }
}

fn as_json(s: &Session, owner: &SessionOwner) -> serde_json::Value {
    serde_json::json!({
        "id": s.id, "provider": s.provider, "gpu_type": s.gpu_type, "status": s.status.name(),
        "price_per_hour": s.price_per_hour, "created_at": s.created_at, "expires_at": s.expires_at,
        "owner": owner,
    })
}

async fn destroy_one(ctx: &Context, id: &str) -> Result<ExitCode> {
    say!("destroying {id}…");
    let ok = destroy_and_say(ctx, id).await;
    Ok(exit::code(if ok { exit::OK } else { exit::FAILED }))
}

async fn destroy_and_say(ctx: &Context, id: &str) -> bool {
    let outcome = janitor::destroy(&ctx.client, id, ctx.config.shopper.stuck_after_s, |_| {}).await;
    match outcome {
        Destroyed::Stopped => {
            for record in ctx.ledger.list().into_iter().filter(|r| r.session_id.as_deref() == Some(id)) {
                let _ = ctx.ledger.remove(&record.key);
            }
            say!("{id}: stopped");
            true
        }
        Destroyed::Stuck { last_error } => {
            say!("{id}: STUCK stopping{}", last_error.map(|e| format!(" ({e})")).unwrap_or_default());
            false
        }
        Destroyed::Unreachable(e) => {
            say!("{id}: not confirmed: {e}");
            false
        }
    }
}

async fn cleanup(ctx: &Context, dry_run: bool, json: bool) -> Result<ExitCode> {
    let sessions = match resolved(ctx, true).await {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let orphans: Vec<&(Session, SessionOwner)> =
        sessions.iter().filter(|(_, o)| matches!(o, SessionOwner::Orphan { .. })).collect();
    if json {
        out!("{}", serde_json::Value::Array(orphans.iter().map(|(s, o)| as_json(s, o)).collect()));
    } else {
        for (s, owner) in &orphans {
            out!("{} {} {} ${:.2}/h  {}", s.id, s.provider, s.gpu_type, s.price_per_hour, describe(owner));
        }
        if orphans.is_empty() {
            say!("no orphaned sessions for consumer {}", ctx.consumer_id);
        }
    }
    if dry_run {
        return Ok(exit::code(exit::OK));
    }
    // One at a time keeps the output readable; each destroy is bounded by stuck_after_s.
    let mut all_stopped = true;
    for (s, _) in &orphans {
        all_stopped &= tokio::time::timeout(
            ctx.config.shopper.stuck_after_s + Duration::from_secs(330),
            destroy_and_say(ctx, &s.id),
        )
        .await
        .unwrap_or(false);
    }
    Ok(exit::code(if all_stopped { exit::OK } else { exit::FAILED }))
}
