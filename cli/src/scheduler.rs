//! `flotilla scheduler`: the scheduler as its own process, a client of the API server.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::component::{LeaderElectArgs, connect, identity};
use scheduler::SchedulerConfig;
use scheduler::config::{Configuration, ProfileConfig};
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
    /// Configuration file (KubeSchedulerConfiguration: profiles, plugins, weights,
    /// percentageOfNodesToScore); without one, Kubernetes' default profile.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Pods whose spec.schedulerName is this are scheduled here (without --config).
    #[arg(long, default_value = "default-scheduler", conflicts_with = "config")]
    pub scheduler_name: String,
    /// How nodes are ranked by free resources (without --config).
    #[arg(
        long,
        value_enum,
        default_value = "least-allocated",
        conflicts_with = "config"
    )]
    pub scoring_strategy: StrategyArg,
    /// Elect a leader among schedulers (Lease kube-system/<first profile's scheduler name>);
    /// only the leader schedules.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Leader-election timings.
    #[command(flatten)]
    pub leader_election: LeaderElectArgs,
    /// Where `/metrics` and `/healthz` are served (plain HTTP).
    #[arg(long, default_value = "127.0.0.1:10251")]
    pub metrics_bind_address: std::net::SocketAddr,
    /// Log level or a tracing filter.
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

/// Runs the scheduler until `shutdown`.
pub async fn run(args: SchedulerArgs, shutdown: impl Future<Output = ()>) -> Result<(), String> {
    let configuration = match &args.config {
        Some(path) => Configuration::load(path).map_err(|e| format!("--config: {e}"))?,
        None => {
            let mut profile = ProfileConfig::default_named(&args.scheduler_name);
            profile.strategy = match args.scoring_strategy {
                StrategyArg::LeastAllocated => Strategy::LeastAllocated,
                StrategyArg::MostAllocated => Strategy::MostAllocated,
            };
            Configuration {
                profiles: vec![profile],
                ..Default::default()
            }
        }
    };
    let timing = args.leader_election.to_config()?;
    let client = connect(args.kubeconfig.as_deref(), args.context.as_deref())?;
    let config = SchedulerConfig {
        configuration,
        leader_election: args.leader_elect.then(|| (identity(), timing)),
        metrics: Default::default(),
    };
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let metrics = config.metrics.clone();
    let endpoint = crate::component::serve_metrics(
        args.metrics_bind_address,
        move || metrics.render(),
        stop_rx.clone(),
    )
    .await?;
    let task = tokio::spawn(scheduler::run(client, config, stop_rx));
    shutdown.await;
    stop.send_replace(true);
    let _ = endpoint.await;
    task.await.map_err(|e| e.to_string())
}
