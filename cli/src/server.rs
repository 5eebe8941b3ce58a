//! `flotilla server`: the all-in-one control plane (API server with an embedded store, or
//! pointed at an external etcd-v3 cluster).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use apiserver::defaults::toleration_seconds::DefaultTolerationSeconds;
use apiserver::tls::TlsMode;
use apiserver::{Server, ServerConfig, ServerError};
use clap::Args;
use controller::manager::ManagerConfig;

use crate::component::{AutoscalerArgs, NodeLifecycleArgs, PodGcArgs};

/// The flags of `flotilla server`.
#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Directory for the embedded store, the token file and admin.yaml.
    #[arg(long, default_value = "flotilla-data")]
    pub data_dir: PathBuf,
    /// Address the API (gRPC, /healthz, /readyz, /metrics) listens on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub listen: SocketAddr,
    /// URL clients use to reach the API, written into admin.yaml [default: http://<listen>,
    /// https://<listen> with TLS].
    #[arg(long)]
    pub advertise_url: Option<String>,
    /// Serve TLS. Without --tls-cert-file, a CA, a serving certificate and an admin client
    /// certificate are created once under <data-dir>/pki and admin.yaml carries them.
    #[arg(long)]
    pub tls: bool,
    /// PEM serving certificate (chain) to serve TLS with; needs --tls-private-key-file.
    #[arg(long, value_name = "FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file.
    #[arg(long, value_name = "FILE")]
    pub tls_private_key_file: Option<PathBuf>,
    /// PEM CA bundle: a client certificate it signed authenticates as user CN in groups O.
    /// Needs TLS (--tls or --tls-cert-file).
    #[arg(long, value_name = "FILE")]
    pub client_ca_file: Option<PathBuf>,
    /// Comma-separated etcd v3 endpoints (etcd-lite or etcd) instead of the embedded store.
    #[arg(long, value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,
    /// CIDR Service cluster IPs are allocated from.
    #[arg(long, default_value = "10.96.0.0/12")]
    pub service_cluster_ip_range: String,
    /// Node ports Services are given, as FIRST-LAST.
    #[arg(long, default_value = "30000-32767")]
    pub service_node_port_range: String,
    /// Seconds between compactions of the store's history (history kept at least this long).
    #[arg(long, default_value_t = 300)]
    pub compaction_interval_seconds: u64,
    /// Seconds an Event is kept after its last write.
    #[arg(long, default_value_t = 3600)]
    pub event_ttl_seconds: u64,
    /// Do not run the scheduler in this process (run `flotilla scheduler` elsewhere).
    #[arg(long)]
    pub no_scheduler: bool,
    /// The in-process scheduler's configuration file (KubeSchedulerConfiguration).
    #[arg(long, value_name = "FILE", conflicts_with = "no_scheduler")]
    pub scheduler_config: Option<PathBuf>,
    /// Do not run the controllers in this process.
    #[arg(long)]
    pub no_controllers: bool,
    /// The in-process node lifecycle controller's settings.
    #[command(flatten)]
    pub node_lifecycle: NodeLifecycleArgs,
    /// The in-process pod garbage collector's settings.
    #[command(flatten)]
    pub pod_gc: PodGcArgs,
    /// The in-process horizontal pod autoscaler's settings.
    #[command(flatten)]
    pub autoscaler: AutoscalerArgs,
    /// tolerationSeconds of the `node.kubernetes.io/not-ready:NoExecute` toleration added
    /// to every pod that has none.
    #[arg(long, default_value_t = 300)]
    pub default_not_ready_toleration_seconds: i64,
    /// tolerationSeconds of the `node.kubernetes.io/unreachable:NoExecute` toleration added
    /// to every pod that has none.
    #[arg(long, default_value_t = 300)]
    pub default_unreachable_toleration_seconds: i64,
    /// Also run a node agent in this process (data under <data-dir>/agent), so that one
    /// command gives a cluster that runs pods.
    #[arg(long)]
    pub local_agent: bool,
    /// The local agent's runtime: auto uses containerd when --cri-socket answers, else
    /// the process runtime.
    #[arg(long, value_enum, default_value = "auto")]
    pub local_agent_runtime: crate::agent::RuntimeArg,
    #[command(flatten)]
    pub local_agent_network: crate::agent::NetworkArgs,
    #[command(flatten)]
    pub local_agent_logs: crate::agent::ContainerLogArgs,
    /// Log level (error, warn, info, debug, trace) or a tracing filter.
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

/// A flag with a value that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("--{flag}: {reason}")]
pub struct ServerArgsError {
    flag: &'static str,
    reason: String,
}

impl ServerArgs {
    /// The local agent's configuration, or None without --local-agent.
    pub fn local_agent_config(&self) -> Result<Option<crate::agent::LocalAgent>, ServerArgsError> {
        if !self.local_agent {
            return Ok(None);
        }
        let logs = self
            .local_agent_logs
            .to_limits()
            .map_err(|(flag, reason)| ServerArgsError { flag, reason })?;
        crate::agent::local_agent_config(
            &self.data_dir.join("agent"),
            self.local_agent_runtime,
            &self.local_agent_network,
            logs,
        )
        .map(Some)
        .map_err(|reason| ServerArgsError {
            flag: "pod-cidr",
            reason,
        })
    }

    /// The in-process scheduler's configuration, or None when it is disabled.
    pub fn scheduler_configuration(
        &self,
    ) -> Result<Option<scheduler::config::Configuration>, ServerArgsError> {
        if self.no_scheduler {
            return Ok(None);
        }
        match &self.scheduler_config {
            None => Ok(Some(Default::default())),
            Some(path) => scheduler::config::Configuration::load(path)
                .map(Some)
                .map_err(|e| ServerArgsError {
                    flag: "scheduler-config",
                    reason: e.to_string(),
                }),
        }
    }

    /// The in-process controller manager's configuration, or None with --no-controllers.
    pub fn manager_config(&self) -> Result<Option<ManagerConfig>, ServerArgsError> {
        if self.no_controllers {
            return Ok(None);
        }
        let node_lifecycle = self
            .node_lifecycle
            .to_config()
            .map_err(|e| ServerArgsError {
                flag: e.flag,
                reason: e.reason,
            })?;
        Ok(Some(ManagerConfig {
            node_lifecycle,
            pod_gc: self.pod_gc.to_config(),
            autoscaler: self.autoscaler.to_config(),
            ..Default::default()
        }))
    }

    /// The configuration these flags describe.
    pub fn into_config(self) -> Result<(ServerConfig, SocketAddr), ServerArgsError> {
        let (first, last) = self
            .service_node_port_range
            .split_once('-')
            .and_then(|(a, b)| Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?)))
            .filter(|(a, b)| a <= b)
            .ok_or_else(|| ServerArgsError {
                flag: "service-node-port-range",
                reason: format!(
                    "{:?} is not a range such as 30000-32767",
                    self.service_node_port_range
                ),
            })?;
        if self.compaction_interval_seconds == 0 {
            return Err(ServerArgsError {
                flag: "compaction-interval-seconds",
                reason: "must be at least 1".into(),
            });
        }
        for (flag, seconds) in [
            (
                "default-not-ready-toleration-seconds",
                self.default_not_ready_toleration_seconds,
            ),
            (
                "default-unreachable-toleration-seconds",
                self.default_unreachable_toleration_seconds,
            ),
        ] {
            if seconds < 0 {
                return Err(ServerArgsError {
                    flag,
                    reason: "must not be negative".into(),
                });
            }
        }
        if self.event_ttl_seconds < 2 {
            return Err(ServerArgsError {
                flag: "event-ttl-seconds",
                reason: "must be at least 2 (the store's shortest lease)".into(),
            });
        }
        let tls = match (self.tls_cert_file, self.tls_private_key_file) {
            (Some(cert), Some(key)) => TlsMode::Files {
                cert,
                key,
                client_ca: self.client_ca_file,
            },
            (Some(_), None) => {
                return Err(ServerArgsError {
                    flag: "tls-cert-file",
                    reason: "needs --tls-private-key-file".into(),
                });
            }
            (None, Some(_)) => {
                return Err(ServerArgsError {
                    flag: "tls-private-key-file",
                    reason: "needs --tls-cert-file".into(),
                });
            }
            (None, None) if self.tls => TlsMode::Generated {
                client_ca: self.client_ca_file,
            },
            (None, None) => {
                if self.client_ca_file.is_some() {
                    return Err(ServerArgsError {
                        flag: "client-ca-file",
                        reason: "client certificates need TLS: add --tls, or --tls-cert-file and --tls-private-key-file".into(),
                    });
                }
                TlsMode::Off
            }
        };
        let cfg = ServerConfig {
            tls,
            data_dir: self.data_dir,
            advertise: self.advertise_url,
            etcd_endpoints: self.etcd_endpoints,
            service_cidr: self.service_cluster_ip_range,
            node_ports: first..=last,
            compaction_interval: Duration::from_secs(self.compaction_interval_seconds),
            event_ttl: Duration::from_secs(self.event_ttl_seconds),
            default_toleration_seconds: DefaultTolerationSeconds {
                not_ready: self.default_not_ready_toleration_seconds,
                unreachable: self.default_unreachable_toleration_seconds,
            },
            ..Default::default()
        };
        Ok((cfg, self.listen))
    }
}

/// Why the control plane stopped.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    /// The API server failed.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The in-process components could not reach it.
    #[error("connecting the in-process components: {0}")]
    Client(String),
}

/// Runs the API server and, unless disabled, the scheduler and the controller manager
/// (`controllers`) beside it, and optionally a local agent (each a client of the API like
/// any other, over loopback with the admin credentials), until `shutdown`.
pub async fn run_control_plane(
    cfg: ServerConfig,
    listen: SocketAddr,
    scheduler: Option<scheduler::config::Configuration>,
    local_agent: Option<crate::agent::LocalAgent>,
    controllers: Option<ManagerConfig>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ControlPlaneError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| ServerError::Config(format!("--listen {listen}: {e}")))?;
    let server = Server::start(cfg, listener).await?;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    // The admin credentials the server just wrote (token, and with --tls the client
    // certificate and CA), over loopback where the serving certificate names it.
    let mut resolved = flotilla_client::Kubeconfig::read(&server.kubeconfig)
        .and_then(|k| k.resolve(None))
        .map_err(|e| ControlPlaneError::Client(e.to_string()))?;
    resolved.server = server.local_url.clone();
    if let Some(configuration) = scheduler {
        let client = flotilla_client::Client::new(&resolved)
            .map_err(|e| ControlPlaneError::Client(e.to_string()))?;
        // Several servers may share one store: only the elected scheduler acts.
        let config = scheduler::SchedulerConfig {
            configuration,
            leader_election: Some((
                format!("{}-{}", hostname(), server.addr),
                Default::default(),
            )),
            metrics: Default::default(),
        };
        // Served on the API server's /metrics, after its own.
        let metrics = config.metrics.clone();
        server
            .metrics
            .add_source(std::sync::Arc::new(move || metrics.render()));
        tasks.push(tokio::spawn(scheduler::run(
            client,
            config,
            stop_rx.clone(),
        )));
        tracing::info!("scheduler running in-process");
    }
    if let Some(config) = controllers {
        let client = flotilla_client::Client::new(&resolved)
            .map_err(|e| ControlPlaneError::Client(e.to_string()))?;
        server
            .metrics
            .add_source(std::sync::Arc::new(controller::metrics::render));
        tasks.push(tokio::spawn(controller::manager::run(
            client,
            format!("{}-{}", hostname(), server.addr),
            config,
            stop_rx.clone(),
        )));
        tracing::info!("controllers running in-process");
    }
    if let Some(local) = local_agent {
        let client = flotilla_client::Client::new(&resolved)
            .map_err(|e| ControlPlaneError::Client(e.to_string()))?;
        std::fs::create_dir_all(&local.config.data_dir).map_err(|e| {
            ControlPlaneError::Client(format!("{}: {e}", local.config.data_dir.display()))
        })?;
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) =
                crate::agent::run_agent(client, local.config, &local.runtime, shutdown).await
            {
                tracing::error!(error = %e, "the local agent stopped");
            }
        }));
        tracing::info!("local agent running in-process");
    }
    shutdown.await;
    tracing::info!("shutting down");
    stop.send_replace(true);
    for t in tasks {
        let _ = t.await;
    }
    server.shutdown().await;
    Ok(())
}

/// This machine's name, for leader-election identities.
pub fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
