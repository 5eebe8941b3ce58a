//! `flotilla controller`: the controller manager as its own process, a client of the API
//! server (flotilla server runs one in-process).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::etcd::parse_duration;

/// The flags of `flotilla controller`.
#[derive(Args, Debug)]
pub struct ControllerArgs {
    /// kubeconfig with the API server and credentials (else $KUBECONFIG, else ~/.flotilla/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context.
    #[arg(long)]
    pub context: Option<String>,
    /// How long a leader's Lease holds after its last renewal.
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

/// Runs the controllers (while leading) until `shutdown`.
pub async fn run(args: ControllerArgs, shutdown: impl Future<Output = ()>) -> Result<(), String> {
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
    let timing = flotilla_client::LeaderConfig {
        lease_duration: args.leader_elect_lease_duration,
        renew_deadline: args.leader_elect_renew_deadline,
        retry_period: args.leader_elect_retry_period,
    };
    let identity = format!("{}-{}", crate::server::hostname(), std::process::id());
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(controller::manager::run(client, identity, timing, stop_rx));
    shutdown.await;
    stop.send_replace(true);
    task.await.map_err(|e| e.to_string())
}
