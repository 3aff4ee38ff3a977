//! Glue between the command line and the parts: one function per subcommand.

use std::process::ExitCode;

use color_eyre::eyre::{Result, WrapErr};

use cli::{Cli, Command};

pub mod cli;
pub mod config;
pub mod engine_cmd;
pub mod gpus;
pub mod probe;
pub mod remote_cmd;
pub mod sessions_cmd;
pub mod test_cmd;
mod test_export;

/// Runs the parsed command line; the returned code is the process's exit code.
pub fn dispatch(cli: Cli) -> Result<ExitCode> {
    // The keeper is a small synchronous process: no runtime, no threads, no hooks.
    if let Some(Command::Keeper(args)) = &cli.command {
        let (program, rest) =
            args.command.split_first().ok_or_else(|| color_eyre::eyre::eyre!("keeper: no command"))?;
        let stop_timeout = std::time::Duration::from_millis(args.stop_timeout_ms);
        let code = crate::supervisor::keeper::run(stop_timeout, args.stop_command.as_deref(), program, rest);
        return Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("llmdeck")
        .build()
        .wrap_err("starting the async runtime")?;
    let global = cli.global;
    let code = runtime.block_on(async move {
        match cli.command {
            None => engine_cmd::tui(&global).await,
            Some(Command::Demo(args)) => engine_cmd::demo(&args, &global).await,
            Some(Command::Daemon(args)) => engine_cmd::daemon(&args, &global).await,
            Some(Command::Attach(args)) => remote_cmd::attach(&args, &global).await,
            Some(Command::Status(args)) => remote_cmd::status(&args, &global).await,
            Some(Command::Config(cmd)) => config::run(cmd, &global).await,
            Some(Command::Test(cmd)) => test_cmd::run(cmd, &global).await,
            Some(Command::Sessions(cmd)) => sessions_cmd::run(cmd, &global).await,
            Some(Command::Gpus(args)) => gpus::run(args, &global).await,
            Some(Command::Probe(args)) => probe::run(args).await,
            Some(Command::MockLlm(args)) => crate::fakes::mock_llm::run(args).await,
            Some(Command::MockShopper(args)) => crate::fakes::mock_shopper::run(args).await,
            Some(Command::Keeper(_)) => Ok(crate::exit::code(crate::exit::USAGE)),
            Some(Command::Completions { shell }) => {
                use clap::CommandFactory;
                // Into memory first: clap_complete panics when its writer fails (`| head`).
                let mut script = Vec::new();
                clap_complete::generate(shell, &mut Cli::command(), "llmdeck", &mut script);
                use std::io::Write as _;
                let _ = std::io::stdout().write_all(&script);
                Ok(crate::exit::code(crate::exit::OK))
            }
        }
    });
    // Don't let a stuck blocking task hold the exit hostage.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    code
}
