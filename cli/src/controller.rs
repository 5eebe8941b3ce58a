//! `flotilla controller`: the controller manager as its own process, a client of the API
//! server (flotilla server runs one in-process).

use std::path::PathBuf;

use clap::Args;

use controller::manager::ManagerConfig;

use crate::component::{
    AutoscalerArgs, LeaderElectArgs, NodeLifecycleArgs, PodGcArgs, connect, identity,
};

/// The flags of `flotilla controller`.
#[derive(Args, Debug)]
pub struct ControllerArgs {
    /// kubeconfig with the API server and credentials (else $KUBECONFIG, else ~/.flotilla/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context.
    #[arg(long)]
    pub context: Option<String>,
    /// Leader-election timings.
    #[command(flatten)]
    pub leader_election: LeaderElectArgs,
    /// Node health and taint-based eviction.
    #[command(flatten)]
    pub node_lifecycle: NodeLifecycleArgs,
    /// Pod garbage collection.
    #[command(flatten)]
    pub pod_gc: PodGcArgs,
    /// Horizontal pod autoscaling.
    #[command(flatten)]
    pub autoscaler: AutoscalerArgs,
    /// Where `/metrics` and `/healthz` are served (plain HTTP).
    #[arg(long, default_value = "127.0.0.1:10252")]
    pub metrics_bind_address: std::net::SocketAddr,
    /// Log level or a tracing filter.
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

/// Runs the controllers (while leading) until `shutdown`.
pub async fn run(args: ControllerArgs, shutdown: impl Future<Output = ()>) -> Result<(), String> {
    let config = ManagerConfig {
        leader_election: args.leader_election.to_config()?,
        node_lifecycle: args.node_lifecycle.to_config().map_err(|e| e.to_string())?,
        pod_gc: args.pod_gc.to_config(),
        autoscaler: args.autoscaler.to_config(),
    };
    let client = connect(args.kubeconfig.as_deref(), args.context.as_deref())?;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let endpoint = crate::component::serve_metrics(
        args.metrics_bind_address,
        controller::metrics::render,
        stop_rx.clone(),
    )
    .await?;
    let task = tokio::spawn(controller::manager::run(
        client,
        identity(),
        config,
        stop_rx,
    ));
    shutdown.await;
    stop.send_replace(true);
    let _ = endpoint.await;
    task.await.map_err(|e| e.to_string())
}
