//! `llmdeck mock-shopper`: a faithful fake of the GPU shopper service (`shopper-api.md`) for the
//! demo and the tests — its endpoints, status codes and bodies, the session lifecycle with
//! configurable timings, expiry and the 12 h limit, fault injection, and an embedded SSH server
//! standing in for every rented instance.
//!
//! Prints one line once it listens: `mock-shopper listening on http://127.0.0.1:PORT ssh 127.0.0.1:PORT`.

mod api;
mod ssh;
mod state;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use color_eyre::eyre::{Result, WrapErr};

use state::{Faults, Shop, Status, Timings};

#[derive(Debug, Clone, Args)]
pub struct MockShopperArgs {
    /// HTTP port on 127.0.0.1 (0: any free one; the line printed names it)
    #[arg(long, default_value = "8080")]
    pub port: u16,
    /// SSH port on 127.0.0.1 for the sessions' "instances" (0: any free one)
    #[arg(long, default_value = "0")]
    pub ssh_port: u16,
    /// How long a session stays `provisioning` before it is `running`
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = crate::util::parse_duration)]
    pub provision_delay: Duration,
    /// How long done and DELETE take (they are synchronous, like the real service's)
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = crate::util::parse_duration)]
    pub destroy_delay: Duration,
    /// How long a create takes to answer once the session exists (a client killed meanwhile
    /// leaves a session it never heard of)
    #[arg(long, value_name = "SECS", default_value = "0", value_parser = crate::util::parse_duration)]
    pub create_delay: Duration,
    /// Refuse connections this long before listening (the real service's start-up sweep)
    #[arg(long, value_name = "SECS", default_value = "0", value_parser = crate::util::parse_duration)]
    pub startup_delay: Duration,
    /// The first create answers 503 stale inventory
    #[arg(long)]
    pub stale_first_create: bool,
    /// Every provisioning ends `failed` with this error (e.g. "SSH verification timeout")
    #[arg(long, value_name = "ERROR")]
    pub fail_provisioning: Option<String>,
    /// The first done/DELETE fails (500) and leaves the session `stopping`
    #[arg(long)]
    pub destroy_fails_once: bool,
    /// `/health` and `/ready` answer 503
    #[arg(long)]
    pub health_unavailable: bool,
}

pub async fn run(args: MockShopperArgs) -> Result<ExitCode> {
    // The real service does not listen during its start-up sweep: connections are refused.
    tokio::time::sleep(args.startup_delay).await;
    let http = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .wrap_err_with(|| format!("listening on 127.0.0.1:{}", args.port))?;
    let ssh_listener = tokio::net::TcpListener::bind(("127.0.0.1", args.ssh_port))
        .await
        .wrap_err_with(|| format!("listening for SSH on 127.0.0.1:{}", args.ssh_port))?;
    let (http_addr, ssh_addr) = (http.local_addr()?, ssh_listener.local_addr()?);
    let root =
        tempfile::Builder::new().prefix("llmdeck-mock-shopper-").tempdir().wrap_err("a directory for the instances")?;
    let faults = Faults {
        next_create_stale: args.stale_first_create,
        provision_error: args.fail_provisioning.clone(),
        provision_error_always: args.fail_provisioning.is_some(),
        destroy_fail_once: args.destroy_fails_once,
        health_unavailable: args.health_unavailable,
        ..Faults::default()
    };
    let timings = Timings { provision: args.provision_delay, destroy: args.destroy_delay, create: args.create_delay };
    let shop = Shop::new(timings, ssh_addr.port(), root.path().to_owned(), faults);
    out!("mock-shopper listening on http://{http_addr} ssh {ssh_addr}");

    let ssh = tokio::spawn(ssh::serve(ssh_listener, shop.clone()));
    let expiry = tokio::spawn(expire(shop.clone()));
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let served = axum::serve(http, api::router(shop.clone())).with_graceful_shutdown(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = sigterm.recv() => {}
        }
    });
    let result = served.await;
    // Like the real service: shutting down destroys every active session.
    let active: Vec<String> =
        shop.lock().sessions.values().filter(|r| r.status.is_active()).map(|r| r.id.clone()).collect();
    for id in active {
        shop.stop(&id, Some("the shopper shut down".into()));
    }
    ssh.abort();
    expiry.abort();
    result.wrap_err("serving")?;
    Ok(crate::exit::code(crate::exit::OK))
}

/// Ends sessions past `expires_at` (a reservation is never longer than 12 h).
async fn expire(shop: Arc<Shop>) {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        let now = chrono::Utc::now();
        let due: Vec<String> = shop
            .lock()
            .sessions
            .values()
            .filter(|r| matches!(r.status, Status::Provisioning | Status::Running) && r.expires_at <= now)
            .map(|r| r.id.clone())
            .collect();
        for id in due {
            shop.stop(&id, Some("reservation expired".into()));
        }
    }
}
