//! `llmdeck mock-llm`.

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct MockLlmArgs {
    /// Port to listen on
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
}

pub async fn run(_args: MockLlmArgs) -> color_eyre::Result<std::process::ExitCode> {
    eprintln!("llmdeck mock-llm: not built yet");
    Ok(crate::exit::code(crate::exit::USAGE))
}
