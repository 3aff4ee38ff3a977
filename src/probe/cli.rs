//! `llmdeck probe`.

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// The server root, e.g. http://127.0.0.1:8001
    pub base_url: String,
}

pub async fn run(_args: ProbeArgs) -> color_eyre::Result<std::process::ExitCode> {
    eprintln!("llmdeck probe: not built yet");
    Ok(crate::exit::code(crate::exit::USAGE))
}
