//! `flotilla scheduler`: the scheduler as its own process, a client of the API server.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use scheduler::SchedulerConfig;
use scheduler::plugins::node_resources_fit::Strategy;

/// `--scoring-strategy`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum StrategyArg {
    /// Spread pods over the emptiest nodes (Kubernetes' default).
    LeastAllocated,
    /// Pack pods onto the fullest nodes that fit.
    MostAllocated,
}

/// The flags of `flotilla scheduler`.
#[derive(Args, Debug)]
pub struct SchedulerArgs {
    /// kubeconfig with the API server and credentials (else $KUBECONFIG, else ~/.flotilla/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context.
    #[arg(long)]
    pub context: Option<String>,
    /// Pods whose spec.schedulerName is this are scheduled here.
    #[arg(long, default_value = "default-scheduler")]
    pub scheduler_name: String,
    /// How nodes are ranked by free resources.
    #[arg(long, value_enum, default_value = "least-allocated")]
    pub scoring_strategy: StrategyArg,
    /// Elect a leader among schedulers (Lease kube-system/<scheduler-name>); only the leader
    /// schedules.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Log level or a tracing filter.
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

/// Runs the scheduler until `shutdown`.
pub async fn run(args: SchedulerArgs, shutdown: impl Future<Output = ()>) -> Result<(), String> {
    let cfg =
        flotilla_client::Kubeconfig::load(args.kubeconfig.as_deref()).map_err(|e| e.to_string())?;
    let resolved = cfg
        .resolve(args.context.as_deref())
        .map_err(|e| e.to_string())?;
    let client = flotilla_client::Client::new(&resolved).map_err(|e| e.to_string())?;
    let config = SchedulerConfig {
        name: args.scheduler_name,
        strategy: match args.scoring_strategy {
            StrategyArg::LeastAllocated => Strategy::LeastAllocated,
            StrategyArg::MostAllocated => Strategy::MostAllocated,
        },
        leader_election: args.leader_elect.then(|| {
            (
                format!("{}-{}", crate::server::hostname(), std::process::id()),
                Default::default(),
            )
        }),
    };
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(scheduler::run(client, config, stop_rx));
    shutdown.await;
    stop.send_replace(true);
    task.await.map_err(|e| e.to_string())
}
