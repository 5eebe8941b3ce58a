//! `flotctl`: Flotilla's command line, with kubectl's verbs and flags.

use std::process::ExitCode;

use clap::Parser;
use flotilla_cli::flotctl::{Cli, commands};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(&cli.global, &cli.command)) {
        Ok(status) => ExitCode::from(status),
        Err(e) => {
            if !e.0.is_empty() {
                eprintln!("{}", e.0);
            }
            ExitCode::FAILURE
        }
    }
}
