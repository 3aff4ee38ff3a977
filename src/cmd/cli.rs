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
    /// Run the engine without a TUI: JSON events on stdout, a WebSocket for `attach`, /metrics
    Daemon(DaemonArgs),
    /// Open the TUI on a running daemon's state (over its WebSocket)
    Attach(AttachArgs),
    /// One-shot summary of a running daemon: models, GPUs, tests (exit 1 if a model failed)
    Status(StatusArgs),
    /// One-shot GPU table through NVML
    Gpus(super::gpus::GpusArgs),
    /// Smoke-test and benchmark an OpenAI-compatible endpoint
    Probe(super::probe::ProbeArgs),
    /// Check, locate or create the configuration file
    #[command(subcommand)]
    Config(ConfigCommand),
    /// List or run the configured tests headless (for CI)
    #[command(subcommand)]
    Test(super::test_cmd::TestCommand),
    /// Rented GPU sessions of this installation: list, destroy, clean up orphans
    #[command(subcommand)]
    Sessions(super::sessions_cmd::SessionsCommand),
    /// An OpenAI-compatible mock server with fault injection (for the demo and tests)
    MockLlm(crate::fakes::mock_llm::MockLlmArgs),
    /// A fake of the GPU shopper service, with an SSH server for its "instances" (demo, tests)
    MockShopper(crate::fakes::mock_shopper::MockShopperArgs),
    /// Internal: runs one model and stops its whole process tree if llmdeck dies
    #[command(hide = true)]
    Keeper(KeeperArgs),
    /// Print shell completions
    Completions {
        /// The shell to generate completions for
        shell: clap_complete::Shell,
    },
}

/// `llmdeck keeper --stop-timeout-ms N -- PROGRAM ARGS...` (started by the supervisor only).
#[derive(Debug, Clone, Args)]
pub struct KeeperArgs {
    /// How long the model gets after SIGTERM before SIGKILL, when llmdeck is gone
    #[arg(long, value_name = "MS")]
    pub stop_timeout_ms: u64,
    /// The model's `stop_command`, run first when llmdeck is gone
    #[arg(long, value_name = "SHELL COMMAND")]
    pub stop_command: Option<String>,
    /// The model's command
    #[arg(last = true, required = true, num_args = 1.., allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Args, Default)]
pub struct DemoArgs {
    /// Keep the demo's temporary directory (logs, ledger) after exit and print its path
    #[arg(long)]
    pub keep_dir: bool,
}

#[derive(Debug, Clone, Args, Default)]
pub struct DaemonArgs {
    /// Address for the WebSocket and /metrics (IP:PORT; default daemon.listen, 127.0.0.1:7777);
    /// port 0 picks a free one (the address is written to <state dir>/daemon.url)
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Allow listening on an address other than loopback (prefer an SSH tunnel)
    #[arg(long)]
    pub allow_remote: bool,
}

/// Where a daemon is and how to prove we may talk to it.
#[derive(Debug, Clone, Args, Default)]
pub struct DaemonTarget {
    /// The daemon's WebSocket URL (default: the local daemon's, from its state dir or daemon.listen)
    pub url: Option<String>,
    /// File holding the token (default: daemon.token_file, else the data dir's daemon.token)
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Args, Default)]
pub struct AttachArgs {
    #[command(flatten)]
    pub target: DaemonTarget,
}

#[derive(Debug, Clone, Args, Default)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: DaemonTarget,
    /// Print one JSON document (the daemon's state) instead of the summary
    #[arg(long)]
    pub json: bool,
}

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
