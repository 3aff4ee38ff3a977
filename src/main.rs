use std::process::ExitCode;

use clap::Parser;
use llmdeck::cmd::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match llmdeck::cmd::dispatch(cli) {
        Ok(code) => code,
        Err(report) => {
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "llmdeck: {report:?}");
            llmdeck::exit::code(llmdeck::exit::FAILED)
        }
    }
}
