//! `llmdeck config check|path|init`.

use std::process::ExitCode;

use color_eyre::eyre::Result;

use crate::cli::{ConfigCommand, GlobalArgs};

pub async fn run(_cmd: ConfigCommand, _global: &GlobalArgs) -> Result<ExitCode> {
    eprintln!("llmdeck config: not built yet");
    Ok(crate::exit::code(crate::exit::USAGE))
}
