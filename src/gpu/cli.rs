//! `llmdeck gpus`.

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct GpusArgs {
    /// Print one JSON document instead of the table
    #[arg(long)]
    pub json: bool,
}

pub async fn run(
    _args: GpusArgs,
    _global: &crate::cli::GlobalArgs,
) -> color_eyre::Result<std::process::ExitCode> {
    eprintln!("llmdeck gpus: not built yet");
    Ok(crate::exit::code(crate::exit::MISSING))
}
