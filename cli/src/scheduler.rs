//! `flotilla scheduler`: the scheduler as its own process, a client of the API server.

use std::path::PathBuf;
use std::time::Duration;

use crate::etcd::parse_duration;

use clap::{Args, ValueEnum};
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
    /// How long a leader's Lease holds after its last renewal (a standby waits this long
    /// after the leader dies).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub leader_elect_lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up leading.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub leader_elect_renew_deadline: Duration,
    /// How often candidates try to acquire or renew the Lease.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub leader_elect_retry_period: Duration,
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
    if args.leader_elect_renew_deadline >= args.leader_elect_lease_duration
        || args.leader_elect_retry_period >= args.leader_elect_renew_deadline
    {
        return Err(
            "--leader-elect-retry-period < --leader-elect-renew-deadline < --leader-elect-lease-duration is required"
                .into(),
        );
    }
    let cfg =
        flotilla_client::Kubeconfig::load(args.kubeconfig.as_deref()).map_err(|e| e.to_string())?;
    let resolved = cfg
        .resolve(args.context.as_deref())
        .map_err(|e| e.to_string())?;
    let client = flotilla_client::Client::new(&resolved).map_err(|e| e.to_string())?;
    let config = SchedulerConfig {
        configuration,
        leader_election: args.leader_elect.then(|| {
            (
                format!("{}-{}", crate::server::hostname(), std::process::id()),
                flotilla_client::LeaderConfig {
                    lease_duration: args.leader_elect_lease_duration,
                    renew_deadline: args.leader_elect_renew_deadline,
                    retry_period: args.leader_elect_retry_period,
                },
            )
        }),
    };
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(scheduler::run(client, config, stop_rx));
    shutdown.await;
    stop.send_replace(true);
    task.await.map_err(|e| e.to_string())
}
