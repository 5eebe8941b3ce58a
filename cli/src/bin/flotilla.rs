//! `flotilla`: Flotilla's daemons in one binary.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use flotilla_cli::{etcd::EtcdArgs, logging, signals};

/// The daemons allocate many small short-lived buffers (gRPC frames, raft messages) across
/// threads, the pattern mimalloc is built for.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Flotilla: a Kubernetes-style cluster orchestrator.
#[derive(Parser, Debug)]
#[command(name = "flotilla", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one member of etcd-lite, the Raft-replicated store (etcd v3 API, etcd's flags).
    Etcd(Box<EtcdArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Etcd(args) => {
            logging::init(&args.log_level);
            let cfg = match args.into_config() {
                Ok(cfg) => cfg,
                Err(e) => {
                    eprintln!("flotilla etcd: {e}");
                    return ExitCode::from(2);
                }
            };
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("flotilla etcd: starting the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(etcd_lite::run(cfg, signals::shutdown())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("flotilla etcd: {}", etcd_lite::member::error_chain(&e));
                    ExitCode::FAILURE
                }
            }
        }
    }
}
