//! The command line (clap derive). Each subcommand's arguments live next to the code that runs
//! it; this file only assembles them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "llmdeck",
    version,
    about = "A terminal control panel for LLM servers on GPU machines",
    long_about = "A terminal control panel for LLM servers on GPU machines.\n\n\
        Without a subcommand, opens the TUI with the engine in-process, using the config from \
        --config, $LLMDECK_CONFIG or the XDG config path. Try `llmdeck demo` first."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Configuration file (default: $XDG_CONFIG_HOME/llmdeck/config.yaml)
    #[arg(long, global = true, env = "LLMDECK_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Turn colours off (NO_COLOR in the environment does the same)
    #[arg(long, global = true)]
    pub no_color: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Open the TUI on the embedded demo: mock model servers, simulated GPUs; no GPU or network needed
    Demo(DemoArgs),
    /// Run the engine without a TUI; one JSON object per event on stdout
    Daemon(DaemonArgs),
    /// One-shot GPU table through NVML
    Gpus(super::gpus::GpusArgs),
    /// Smoke-test and benchmark an OpenAI-compatible endpoint
    Probe(super::probe::ProbeArgs),
    /// Check, locate or create the configuration file
    #[command(subcommand)]
    Config(ConfigCommand),
    /// An OpenAI-compatible mock server with fault injection (for the demo and tests)
    MockLlm(crate::fakes::mock_llm::MockLlmArgs),
    /// Print shell completions
    Completions {
        /// The shell to generate completions for
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Clone, Args, Default)]
pub struct DemoArgs {
    /// Keep the demo's temporary directory (logs, ledger) after exit and print its path
    #[arg(long)]
    pub keep_dir: bool,
}

#[derive(Debug, Clone, Args, Default)]
pub struct DaemonArgs {}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file: a summary and exit 0, or every error and exit 2
    Check {
        /// The file to check (default: the --config path, else the XDG path)
        path: Option<PathBuf>,
    },
    /// Print the path llmdeck reads its configuration from
    Path,
    /// Write the documented example configuration to the config path (never overwrites)
    Init,
}
