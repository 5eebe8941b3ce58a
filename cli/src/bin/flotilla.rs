//! `flotilla`: Flotilla's daemons in one binary.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use flotilla_cli::{
    agent::AgentArgs, controller::ControllerArgs, etcd::EtcdArgs, hollow::HollowArgs, logging,
    scheduler::SchedulerArgs, server::ServerArgs, signals,
};

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
    /// Run the control plane: the API server with an embedded store (or --etcd-endpoints).
    Server(Box<ServerArgs>),
    /// Run the scheduler against an API server (flotilla server runs one in-process).
    Scheduler(Box<SchedulerArgs>),
    /// Run the controller manager against an API server (flotilla server runs one
    /// in-process).
    Controller(Box<ControllerArgs>),
    /// Run the node agent: register this machine and run the pods bound to it.
    Agent(Box<AgentArgs>),
    /// Simulate many nodes in one process (scale tests only): real agents over a runtime
    /// that runs nothing.
    HollowNodes(Box<HollowArgs>),
}

fn runtime(what: &str) -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Runtime::new() {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("flotilla {what}: starting the runtime: {e}");
            None
        }
    }
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
            let Some(runtime) = runtime("etcd") else {
                return ExitCode::FAILURE;
            };
            match runtime.block_on(etcd_lite::run(cfg, signals::shutdown())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("flotilla etcd: {}", etcd_lite::member::error_chain(&e));
                    ExitCode::FAILURE
                }
            }
        }
        Command::Server(args) => {
            logging::init(&args.log_level);
            let checked = args.scheduler_configuration().and_then(|sched| {
                let agent = args.local_agent_config()?;
                let controllers = args.manager_config()?;
                Ok((sched, agent, controllers, args.into_config()?))
            });
            let (scheduler, local_agent, controllers, (cfg, listen)) = match checked {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("flotilla server: {e}");
                    return ExitCode::from(2);
                }
            };
            let Some(runtime) = runtime("server") else {
                return ExitCode::FAILURE;
            };
            match runtime.block_on(flotilla_cli::server::run_control_plane(
                cfg,
                listen,
                scheduler,
                local_agent,
                controllers,
                signals::shutdown(),
            )) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("flotilla server: {}", etcd_lite::member::error_chain(&e));
                    ExitCode::FAILURE
                }
            }
        }
        Command::Agent(args) => {
            logging::init(&args.log_level);
            let Some(runtime) = runtime("agent") else {
                return ExitCode::FAILURE;
            };
            match runtime.block_on(flotilla_cli::agent::run(*args, signals::shutdown())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("flotilla agent: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Controller(args) => {
            logging::init(&args.log_level);
            let Some(runtime) = runtime("controller") else {
                return ExitCode::FAILURE;
            };
            match runtime.block_on(flotilla_cli::controller::run(*args, signals::shutdown())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("flotilla controller: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::HollowNodes(args) => {
            logging::init(&args.log_level);
            let Some(runtime) = runtime("hollow-nodes") else {
                return ExitCode::FAILURE;
            };
            match runtime.block_on(flotilla_cli::hollow::run(*args, signals::shutdown())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("flotilla hollow-nodes: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Scheduler(args) => {
            logging::init(&args.log_level);
            let Some(runtime) = runtime("scheduler") else {
                return ExitCode::FAILURE;
            };
            match runtime.block_on(flotilla_cli::scheduler::run(*args, signals::shutdown())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("flotilla scheduler: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
