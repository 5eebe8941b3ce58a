//! `flotilla hollow-nodes`: many simulated nodes in one process, for scale tests (as
//! Kubernetes' kubemark runs hollow kubelets). Each is a real agent — registration,
//! Lease heartbeat, node conditions, a pod informer and pod workers — over the fake
//! runtime, whose containers run without running anything. A simulation tool, never for a
//! real cluster.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agent::run::AgentConfig;
use agent::runtime::fake::FakeRuntime;
use clap::Args;

use crate::etcd::parse_duration;

/// Nodes sharing one connection to the API server.
pub const NODES_PER_CONNECTION: usize = 50;

/// The flags of `flotilla hollow-nodes`.
#[derive(Args, Debug)]
pub struct HollowArgs {
    /// kubeconfig with the API server and credentials.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// How many nodes.
    #[arg(long)]
    pub count: usize,
    /// Node names are this followed by a number.
    #[arg(long, default_value = "hollow-node-")]
    pub name_prefix: String,
    /// How often each node renews its Lease.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub node_lease_renew_interval: Duration,
    /// Where the nodes keep their (small) state.
    #[arg(long, default_value = "flotilla-hollow")]
    pub data_dir: PathBuf,
    /// Log level or a tracing filter.
    #[arg(long, default_value = "warn")]
    pub log_level: String,
}

/// Runs the nodes until `shutdown`.
pub async fn run(args: HollowArgs, shutdown: impl Future<Output = ()>) -> Result<(), String> {
    if args.count == 0 {
        return Err("--count: must be at least 1".into());
    }
    let resolved = crate::component::resolve(args.kubeconfig.as_deref(), None)?;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    let mut client = None;
    for i in 0..args.count {
        if i % NODES_PER_CONNECTION == 0 {
            client = Some(flotilla_client::Client::new(&resolved).map_err(|e| e.to_string())?);
        }
        let Some(client) = client.clone() else {
            continue;
        };
        let name = format!("{}{i}", args.name_prefix);
        let data_dir = args.data_dir.join(&name);
        std::fs::create_dir_all(&data_dir)
            .map_err(|e| format!("--data-dir {}: {e}", data_dir.display()))?;
        // Addresses from 10.64.0.0/10, one per node, never reached: logs of hollow pods
        // are not served.
        let ip = format!("10.{}.{}.{}", 64 + (i >> 16), (i >> 8) & 0xff, i & 0xff);
        let cfg = AgentConfig {
            node_name: name,
            host_ip: ip.clone(),
            data_dir,
            node_labels: [("flotilla.io/hollow".to_string(), "true".to_string())].into(),
            register_with_taints: Vec::new(),
            system_reserved: Default::default(),
            heartbeat_interval: args.node_lease_renew_interval,
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            image_gc: Default::default(),
        };
        let runtime = Arc::new(FakeRuntime::new(&ip));
        let stop_rx = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let node = cfg.node_name.clone();
            if let Err(e) = agent::run::run(client, runtime, cfg, stop_rx).await {
                tracing::error!(node = %node, error = %e, "hollow node stopped");
            }
        }));
    }
    tracing::info!(count = args.count, "hollow nodes running");
    shutdown.await;
    stop.send_replace(true);
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}
