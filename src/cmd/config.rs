//! `llmdeck config check|path|init`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use color_eyre::eyre::{Result, WrapErr};

use super::cli::{ConfigCommand, GlobalArgs};
use crate::config;
use crate::exit::{OK, USAGE, code};

pub async fn run(cmd: ConfigCommand, global: &GlobalArgs) -> Result<ExitCode> {
    match cmd {
        ConfigCommand::Check { path } => check(path.or_else(|| global.config.clone())).await,
        ConfigCommand::Path => Ok(print_path(global)),
        ConfigCommand::Init => init(global).await,
    }
}

/// The path llmdeck reads, or a message saying why there is none.
fn config_path(explicit: Option<&Path>) -> Result<PathBuf, ExitCode> {
    config::config_path(explicit).ok_or_else(|| {
        say!("llmdeck: {}", config::NoHomeDir);
        code(USAGE)
    })
}

async fn check(explicit: Option<PathBuf>) -> Result<ExitCode> {
    let path = match config_path(explicit.as_deref()) {
        Ok(p) => p,
        Err(exit) => return Ok(exit),
    };
    let loaded = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || config::load(&path)).await.wrap_err("checking the configuration")?
    };
    match loaded {
        Ok(cfg) => {
            {
                use std::io::Write as _;
                let _ = write!(std::io::stdout(), "{}", config::summary(&cfg, &path));
            }
            Ok(code(OK))
        }
        Err(errors) => {
            say!("{errors}");
            if !errors.is_not_found() {
                let n = errors.len();
                let s = if n == 1 { "" } else { "s" };
                say!("{n} error{s} in {}", path.display());
            }
            Ok(code(USAGE))
        }
    }
}

fn print_path(global: &GlobalArgs) -> ExitCode {
    match config_path(global.config.as_deref()) {
        Ok(path) => {
            out!("{}", path.display());
            if !path.exists() {
                say!("(no file there yet: `llmdeck config init` writes a documented example)");
            }
            code(OK)
        }
        Err(exit) => exit,
    }
}

/// Writes the documented example where llmdeck reads its configuration, never overwriting.
async fn init(global: &GlobalArgs) -> Result<ExitCode> {
    let path = match config_path(global.config.as_deref()) {
        Ok(p) => p,
        Err(exit) => return Ok(exit),
    };
    let written = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || write_new(&path, config::EXAMPLE))
            .await
            .wrap_err("writing the example configuration")?
    };
    match written {
        Ok(()) => {
            out!("{}", path.display());
            say!("wrote the documented example; edit it, then run `llmdeck config check`");
            Ok(code(OK))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            say!(
                "llmdeck: {} already exists; leaving it as it is\n  hint: check it with \
                 `llmdeck config check`, or move it away and run `llmdeck config init` again",
                path.display()
            );
            Ok(code(USAGE))
        }
        Err(e) => {
            say!("llmdeck: cannot write {}: {e}", path.display());
            Ok(code(USAGE))
        }
    }
}

/// Creates `path` (and its directories) with `text`; fails if it exists, without a race.
fn write_new(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}
