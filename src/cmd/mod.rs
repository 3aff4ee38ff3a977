//! Glue between the command line and the parts: one function per subcommand.

use std::process::ExitCode;

use color_eyre::eyre::{Result, WrapErr};

use crate::cli::{Cli, Command};

pub mod config;

/// Runs the parsed command line; the returned code is the process's exit code.
pub fn dispatch(cli: Cli) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("llmdeck")
        .build()
        .wrap_err("starting the async runtime")?;
    let global = cli.global;
    runtime.block_on(async move {
        match cli.command {
            None => Ok(crate::exit::code(crate::exit::OK)),
            Some(Command::Demo(_)) => Ok(crate::exit::code(crate::exit::OK)),
            Some(Command::Daemon(_)) => Ok(crate::exit::code(crate::exit::OK)),
            Some(Command::Config(cmd)) => config::run(cmd, &global).await,
            Some(Command::Gpus(args)) => crate::gpu::cli::run(args, &global).await,
            Some(Command::Probe(args)) => crate::probe::cli::run(args).await,
            Some(Command::MockLlm(args)) => crate::fakes::mock_llm::run(args).await,
            Some(Command::Completions { shell }) => {
                use clap::CommandFactory;
                clap_complete::generate(
                    shell,
                    &mut Cli::command(),
                    "llmdeck",
                    &mut std::io::stdout(),
                );
                Ok(crate::exit::code(crate::exit::OK))
            }
        }
    })
}
