//! `llmdeck attach` and `llmdeck status`: a daemon's state over its WebSocket, and where a
//! local daemon is (its URL file in the state dir, its token in the data dir).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use color_eyre::eyre::{Result, WrapErr};

use super::cli::{AttachArgs, DaemonTarget, GlobalArgs, StatusArgs};
use crate::config::{self, Config};
use crate::exit;
use crate::protocol::{ModelState, SharedLink, State};
use crate::remote::{Token, WsLink};
use crate::tui::{self, TuiOptions};
use crate::util::signals::Signals;

/// The daemon's token file: `daemon.token_file`, else `<data dir>/daemon.token`.
pub fn token_path(config: &Config, data_dir: &Path) -> PathBuf {
    config.daemon.token_file.clone().unwrap_or_else(|| crate::remote::token::default_path(data_dir))
}

/// Where a running daemon writes the URL it listens on.
pub fn url_file(state_dir: &Path) -> PathBuf {
    state_dir.join("daemon.url")
}

/// The configuration if there is one (a broken one is an error), else the defaults.
async fn optional_config(global: &GlobalArgs) -> std::result::Result<(Config, Option<PathBuf>), ExitCode> {
    match config::config_path(global.config.as_deref()) {
        Some(path) if path.exists() || global.config.is_some() => {
            super::engine_cmd::load_config(global).await.map(|(c, p)| (c, Some(p)))
        }
        _ => Ok((Config::default(), None)),
    }
}

/// The URL and token of the daemon `target` names, or of the local one.
pub fn resolve(config: &Config, config_path: Option<&Path>, target: &DaemonTarget) -> Result<(String, Token)> {
    let paths = config::Paths::resolve(config, config_path).map_err(|e| color_eyre::eyre::eyre!("{e}"))?;
    let url = match &target.url {
        Some(url) if url.contains("://") => url.clone(),
        Some(addr) => format!("ws://{addr}/ws"),
        None => std::fs::read_to_string(url_file(&paths.state_dir))
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("ws://{}/ws", config.daemon.listen)),
    };
    let token_file = target.token_file.clone().unwrap_or_else(|| token_path(config, &paths.data_dir));
    let token = crate::remote::token::read(&token_file)
        .wrap_err_with(|| format!("reading the daemon's token from {} (pass --token-file)", token_file.display()))?;
    Ok((url, token))
}

/// `llmdeck attach [URL]`: the TUI on a daemon's state.
pub async fn attach(args: &AttachArgs, global: &GlobalArgs) -> Result<ExitCode> {
    let (config, path) = match optional_config(global).await {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let (url, token) = match resolve(&config, path.as_deref(), &args.target) {
        Ok(found) => found,
        Err(e) => {
            say!("llmdeck attach: {e:#}");
            return Ok(exit::code(exit::USAGE));
        }
    };
    let link = match WsLink::connect(&url, token.clone()).await {
        Ok(link) => link,
        Err(e) => {
            say!("llmdeck attach: {e}");
            return Ok(exit::code(exit::FAILED));
        }
    };
    run_attached(link, token, &config, global).await
}

/// The TUI on an attached daemon; quitting detaches and leaves the daemon running.
pub async fn run_attached(link: WsLink, token: Token, config: &Config, global: &GlobalArgs) -> Result<ExitCode> {
    crate::tui::terminal::install_panic_hook()?;
    let mut signals = Signals::install().wrap_err("listening for signals")?;
    let ui = &config.ui;
    let fetch = link.log_fetcher(token);
    let opts = TuiOptions {
        mouse: ui.mouse,
        color: tui::colors_enabled(global.no_color, ui.theme == config::Theme::Monochrome),
        refresh: std::time::Duration::from_millis(ui.refresh_ms.max(100)),
        ring_lines: config.logs.ring_lines,
        log_memory_bytes: usize::try_from(config.logs.memory_mb << 20).unwrap_or(usize::MAX),
        log_dir: PathBuf::new(),
        app_log: PathBuf::new(),
        fetch_log: Some(Arc::new(fetch)),
    };
    let link: SharedLink = Arc::new(link);
    let outcome = tui::run(link, opts, &mut signals).await?;
    Ok(match outcome {
        tui::Exit::Signal("SIGINT") => exit::code(exit::CANCELLED),
        _ => exit::code(exit::OK),
    })
}

/// `llmdeck status [URL]`: a one-shot summary; exit 1 if a model is failed or crashed.
pub async fn status(args: &StatusArgs, global: &GlobalArgs) -> Result<ExitCode> {
    let (config, path) = match optional_config(global).await {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let (url, token) = match resolve(&config, path.as_deref(), &args.target) {
        Ok(found) => found,
        Err(e) => {
            say!("llmdeck status: {e:#}");
            return Ok(exit::code(exit::USAGE));
        }
    };
    let link = match WsLink::connect(&url, token).await {
        Ok(link) => link,
        Err(e) => {
            say!("llmdeck status: {e}");
            return Ok(exit::code(exit::FAILED));
        }
    };
    let state = link.state();
    if args.json {
        out!("{}", serde_json::to_string(&state).wrap_err("writing JSON")?);
    } else {
        out!("{}", summary(&state, &url));
    }
    let broken = state.models.iter().any(|m| matches!(m.state, ModelState::Failed | ModelState::Crashed));
    Ok(exit::code(if broken { exit::FAILED } else { exit::OK }))
}

fn summary(state: &State, url: &str) -> String {
    use std::fmt::Write;
    let clean = |s: &str| crate::util::clean_excerpt(s, 200);
    let mut out = format!("llmdeck {} on {} ({url})\n", clean(&state.version), clean(&state.host));
    let _ = writeln!(out, "models ({}):", state.models.len());
    for m in &state.models {
        let why = m.reason.as_deref().map(|r| format!(" — {}", clean(r))).unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<20} {:<10} restarts {:<3} OOMs {:<3} port {}{why}",
            clean(&m.id),
            m.state.name(),
            m.restarts,
            m.ooms,
            m.summary.port
        );
    }
    let g = &state.gpus;
    let _ = writeln!(out, "GPUs ({}, {}):", g.gpus.len(), g.backend.name());
    for gpu in &g.gpus {
        let util = gpu.utilization_gpu_pct.map_or("N/A".into(), |u| format!("{u}%"));
        let mem = match (gpu.memory_used_bytes, gpu.memory_total_bytes) {
            (Some(u), Some(t)) => format!("{}/{} GiB", crate::util::fmt_gib(u), crate::util::fmt_gib(t)),
            _ => "N/A".into(),
        };
        let _ = writeln!(out, "  {} {:<24} util {util:<5} mem {mem}", gpu.index, clean(&gpu.name));
    }
    let _ = writeln!(out, "tests ({}):", state.tests.len());
    for t in &state.tests {
        let last = match (&t.current, t.last().and_then(|r| r.verdict.as_ref())) {
            (Some(run), _) => format!("running ({})", run.current_step().map_or("starting", |(_, s)| s.name.as_str())),
            (None, Some(v)) => v.outcome.name().to_owned(),
            (None, None) => "not run".into(),
        };
        let _ = writeln!(out, "  {:<20} {last}", clean(&t.name));
    }
    out.trim_end().to_owned()
}
