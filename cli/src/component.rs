//! What the components that run against an API server (`flotilla scheduler`,
//! `controller`, `agent`, `hollow-nodes`) share: reaching the server through a kubeconfig,
//! kube-scheduler's leader-election flags, and kube-controller-manager's node lifecycle
//! and pod garbage collection flags (taken by `flotilla controller` and by `flotilla server` for its in-process
//! controllers).

use std::path::Path;
use std::time::Duration;

use clap::Args;
use controller::autoscaler::AutoscalerConfig;
use controller::node_lifecycle::{ConfigError, NodeLifecycleConfig, Rates};
use controller::pod_gc::PodGcConfig;
use flotilla_client::{Client, Kubeconfig, LeaderConfig, Resolved};

use crate::etcd::parse_duration;

/// The context of `kubeconfig` (else $KUBECONFIG, else ~/.flotilla/config).
pub fn resolve(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<Resolved, String> {
    Kubeconfig::load(kubeconfig)
        .and_then(|k| k.resolve(context))
        .map_err(|e| e.to_string())
}

/// A client for the context of `kubeconfig`.
pub fn connect(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<Client, String> {
    Client::new(&resolve(kubeconfig, context)?).map_err(|e| e.to_string())
}

/// This process's identity in an election: host name and pid.
pub fn identity() -> String {
    format!("{}-{}", crate::server::hostname(), std::process::id())
}

/// Leader-election timings, with kube-scheduler's flag names and defaults.
#[derive(Args, Debug, Clone)]
pub struct LeaderElectArgs {
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
}

impl LeaderElectArgs {
    /// The timings, if they can work (retry < renew deadline < lease duration).
    pub fn to_config(&self) -> Result<LeaderConfig, String> {
        if self.leader_elect_renew_deadline >= self.leader_elect_lease_duration
            || self.leader_elect_retry_period >= self.leader_elect_renew_deadline
        {
            return Err(
                "--leader-elect-retry-period < --leader-elect-renew-deadline < --leader-elect-lease-duration is required"
                    .into(),
            );
        }
        Ok(LeaderConfig {
            lease_duration: self.leader_elect_lease_duration,
            renew_deadline: self.leader_elect_renew_deadline,
            retry_period: self.leader_elect_retry_period,
        })
    }
}

/// The node lifecycle controller's flags, with kube-controller-manager's names and
/// defaults.
#[derive(Args, Debug, Clone)]
pub struct NodeLifecycleArgs {
    /// How long a node may go without renewing its Lease before its conditions become
    /// Unknown and it is tainted unreachable.
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    pub node_monitor_grace_period: Duration,
    /// How often node health is checked [default: 5s, or a fifth of
    /// --node-monitor-grace-period when that is shorter than 25s].
    #[arg(long, value_parser = parse_duration)]
    pub node_monitor_period: Option<Duration>,
    /// The grace period of a node that never posted its Ready condition [default: 1m, or
    /// --node-monitor-grace-period when that is longer].
    #[arg(long, value_parser = parse_duration)]
    pub node_startup_grace_period: Option<Duration>,
    /// Nodes per second tainted for eviction in a healthy zone.
    #[arg(long, default_value_t = 0.1)]
    pub node_eviction_rate: f64,
    /// Nodes per second tainted for eviction in a partially disrupted zone larger than
    /// --large-cluster-size-threshold (smaller ones stop evicting).
    #[arg(long, default_value_t = 0.01)]
    pub secondary_node_eviction_rate: f64,
    /// The share of not-ready nodes (more than two) that makes a zone partially disrupted.
    #[arg(long, default_value_t = 0.55)]
    pub unhealthy_zone_threshold: f64,
    /// Zones with more nodes than this keep evicting, at the secondary rate, when partially
    /// disrupted.
    #[arg(long, default_value_t = 50)]
    pub large_cluster_size_threshold: usize,
}

impl NodeLifecycleArgs {
    /// The controller's configuration, if the values can work together.
    pub fn to_config(&self) -> Result<NodeLifecycleConfig, ConfigError> {
        let grace = self.node_monitor_grace_period;
        let cfg = NodeLifecycleConfig {
            node_monitor_period: self
                .node_monitor_period
                .unwrap_or_else(|| (grace / 5).min(Duration::from_secs(5))),
            node_monitor_grace_period: grace,
            node_startup_grace_period: self
                .node_startup_grace_period
                .unwrap_or_else(|| grace.max(Duration::from_secs(60))),
            rates: Rates {
                node_eviction_rate: self.node_eviction_rate,
                secondary_node_eviction_rate: self.secondary_node_eviction_rate,
                unhealthy_zone_threshold: self.unhealthy_zone_threshold,
                large_cluster_size_threshold: self.large_cluster_size_threshold,
            },
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// The pod garbage collector's flag, with kube-controller-manager's name and default.
#[derive(Args, Debug, Clone)]
pub struct PodGcArgs {
    /// Finished pods (Succeeded or Failed) kept before the oldest are deleted; 0 keeps
    /// them all.
    #[arg(long, default_value_t = 12_500)]
    pub terminated_pod_gc_threshold: usize,
}

impl PodGcArgs {
    /// The collector's configuration (its periods are Kubernetes').
    pub fn to_config(&self) -> PodGcConfig {
        PodGcConfig {
            terminated_pod_gc_threshold: self.terminated_pod_gc_threshold,
            ..PodGcConfig::default()
        }
    }
}

/// The horizontal pod autoscaler's flag, with kube-controller-manager's name and default.
#[derive(Args, Debug, Clone)]
pub struct AutoscalerArgs {
    /// How often every HorizontalPodAutoscaler is looked at (and the agents' metrics read).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub horizontal_pod_autoscaler_sync_period: Duration,
}

impl AutoscalerArgs {
    /// The autoscaler's configuration.
    pub fn to_config(&self) -> AutoscalerConfig {
        AutoscalerConfig {
            sync_period: self.horizontal_pod_autoscaler_sync_period,
        }
    }
}

/// Serves `/metrics` (what `render` says) and `/healthz` over plain HTTP on `addr` until
/// `shutdown` flips: the standalone components' endpoint for Prometheus.
pub async fn serve_metrics(
    addr: std::net::SocketAddr,
    render: impl Fn() -> String + Clone + Send + Sync + 'static,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("--metrics-bind-address {addr}: {e}"))?;
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let render = render.clone();
                async move { render() }
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok" }));
    tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "serving /metrics");
    Ok(tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = shutdown.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the metrics endpoint stopped");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        node: NodeLifecycleArgs,
        #[command(flatten)]
        pod_gc: PodGcArgs,
    }

    #[test]
    fn the_pod_gc_threshold_defaults_as_kubernetes() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("test").chain(args.iter().copied()))
                .expect("flags parse")
                .pod_gc
                .to_config()
        };
        assert_eq!(parse(&[]), PodGcConfig::default());
        assert_eq!(
            parse(&["--terminated-pod-gc-threshold=0"]).terminated_pod_gc_threshold,
            0
        );
    }

    fn config(args: &[&str]) -> Result<NodeLifecycleConfig, ConfigError> {
        let cli = Cli::try_parse_from(std::iter::once("test").chain(args.iter().copied()))
            .expect("flags parse");
        cli.node.to_config()
    }

    #[test]
    fn node_lifecycle_flags_default_as_kubernetes_and_scale_the_period_to_a_short_grace() {
        assert_eq!(config(&[]), Ok(NodeLifecycleConfig::default()));
        let short = config(&["--node-monitor-grace-period", "2s"]).expect("valid");
        assert_eq!(short.node_monitor_period, Duration::from_millis(400));
        assert_eq!(short.node_startup_grace_period, Duration::from_secs(60));
        let custom = config(&[
            "--node-monitor-grace-period=1m",
            "--node-monitor-period=10s",
            "--node-eviction-rate=1",
            "--secondary-node-eviction-rate=0",
            "--unhealthy-zone-threshold=0.4",
            "--large-cluster-size-threshold=10",
        ])
        .expect("valid");
        assert_eq!(custom.node_monitor_period, Duration::from_secs(10));
        assert_eq!(custom.node_startup_grace_period, Duration::from_secs(60));
        assert_eq!(custom.rates.large_cluster_size_threshold, 10);
        let bad = config(&["--node-monitor-grace-period=2s", "--node-monitor-period=5s"])
            .expect_err("period longer than grace");
        assert_eq!(bad.flag, "node-monitor-grace-period");
    }
}
