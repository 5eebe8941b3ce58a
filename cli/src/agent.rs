//! `flotilla agent`: the node agent, a client of the API server.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agent::image_gc::ImageGcPolicy;
use agent::log_rotation::LogLimits;
use agent::node::{parse_labels, parse_reserved, parse_taints};
use agent::run::AgentConfig;
use agent::runtime::process::ProcessRuntime;
use clap::{Args, ValueEnum};

use crate::etcd::parse_duration;

/// The cgroup under which a CRI runtime's pods are confined.
pub const CGROUP_ROOT: &str = "/flotilla";

/// `--runtime`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RuntimeArg {
    /// CRI when its socket (--cri-socket) answers, else the process runtime.
    Auto,
    /// Containers are host processes, each in its own process group.
    Process,
    /// containerd (or another CRI runtime) over the CRI socket (--cri-socket).
    Cri,
}

/// Which runtime an agent uses and where the CRI one listens.
#[derive(Clone, Debug)]
pub struct RuntimeChoice {
    /// The runtime, or auto.
    pub runtime: RuntimeArg,
    /// The CRI runtime's socket.
    pub cri_socket: PathBuf,
}

/// The container log caps shared by `flotilla agent` and `flotilla server --local-agent`,
/// with the kubelet's names and defaults.
#[derive(Args, Debug, Clone)]
pub struct ContainerLogArgs {
    /// A container's log file is rotated once it is larger than this (a quantity: 10Mi,
    /// 500Ki).
    #[arg(long, default_value = "10Mi")]
    pub container_log_max_size: String,
    /// Log files kept per container, the one being written included (at least 2).
    #[arg(long, default_value_t = 5)]
    pub container_log_max_files: usize,
}

impl ContainerLogArgs {
    /// The limits, or the flag at fault and why.
    pub fn to_limits(&self) -> Result<LogLimits, (&'static str, String)> {
        let size = &self.container_log_max_size;
        let max_size = scheduler::quantity::parse_quantity(size)
            .ok()
            .and_then(|q| u64::try_from(q.value()).ok())
            .ok_or_else(|| {
                (
                    "container-log-max-size",
                    format!("{size:?} is not a size (e.g. 10Mi)"),
                )
            })?;
        let limits = LogLimits {
            max_size,
            max_files: self.container_log_max_files,
        };
        limits.validate().map_err(|e| (e.flag(), e.to_string()))?;
        Ok(limits)
    }
}

/// The pod network flags shared by `flotilla agent` and `flotilla server --local-agent`.
#[derive(Args, Debug, Clone)]
pub struct NetworkArgs {
    /// The CRI runtime's socket, with the CRI runtime.
    #[arg(long, default_value = agent::runtime::cri::DEFAULT_SOCKET)]
    pub cri_socket: PathBuf,
    /// This node's pod subnet (e.g. 10.244.1.0/24): with the CRI runtime the agent writes
    /// a CNI bridge conflist for it into --cni-conf-dir and records it in the Node.
    #[arg(long)]
    pub pod_cidr: Option<String>,
    /// Where the CRI runtime reads its CNI configuration.
    #[arg(long, default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
    /// The resolv.conf pods' DNS starts from (dnsPolicy Default, and ClusterFirst, since
    /// there is no cluster DNS).
    #[arg(long, default_value = "/etc/resolv.conf")]
    pub resolv_conf: PathBuf,
}

impl NetworkArgs {
    /// Applies these flags to `cfg`, or names the flag at fault.
    pub fn apply(&self, cfg: &mut AgentConfig) -> Result<(), String> {
        cfg.resolv_conf = self.resolv_conf.clone();
        cfg.pod_network = match &self.pod_cidr {
            None => None,
            Some(c) => Some(agent::run::PodNetwork {
                cidr: agent::cni::PodCidr::parse(c).map_err(|e| format!("--pod-cidr: {e}"))?,
                cni_conf_dir: self.cni_conf_dir.clone(),
                bridge: agent::cni::DEFAULT_BRIDGE.into(),
            }),
        };
        Ok(())
    }
}

/// The flags of `flotilla agent`.
#[derive(Args, Debug)]
pub struct AgentArgs {
    /// kubeconfig with the API server and credentials (else $KUBECONFIG, else ~/.flotilla/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The API server's URL, overriding the kubeconfig's.
    #[arg(long)]
    pub server: Option<String>,
    /// The node's name [default: this host's name].
    #[arg(long)]
    pub node_name: Option<String>,
    /// The node's IP [default: the address of the default route's interface].
    #[arg(long)]
    pub node_ip: Option<String>,
    /// Holds the runtime's state and the pods' logs.
    #[arg(long, default_value = "flotilla-agent")]
    pub data_dir: PathBuf,
    /// The container runtime.
    #[arg(long, value_enum, default_value = "process")]
    pub runtime: RuntimeArg,
    #[command(flatten)]
    pub network: NetworkArgs,
    /// Resources kept for the system, subtracted from allocatable (cpu=500m,memory=1Gi).
    #[arg(long, default_value = "")]
    pub system_reserved: String,
    /// Labels added to the node (k=v,k2=v2).
    #[arg(long, default_value = "")]
    pub node_labels: String,
    /// Taints the node registers with (key=value:Effect,...).
    #[arg(long, default_value = "")]
    pub register_with_taints: String,
    /// How often the node Lease is renewed.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub node_lease_renew_interval: Duration,
    /// Where the agent's endpoint (container logs, called by the API server) listens.
    #[arg(long, default_value = "0.0.0.0:10250")]
    pub listen: std::net::SocketAddr,
    /// Image garbage collection starts when the image filesystem is this full (percent).
    #[arg(long, default_value_t = u32::from(agent::image_gc::DEFAULT_HIGH_THRESHOLD))]
    pub image_gc_high_threshold: u32,
    /// Image garbage collection frees space until the image filesystem is below this
    /// (percent; lower than the high threshold).
    #[arg(long, default_value_t = u32::from(agent::image_gc::DEFAULT_LOW_THRESHOLD))]
    pub image_gc_low_threshold: u32,
    #[command(flatten)]
    pub container_logs: ContainerLogArgs,
    /// Log level or a tracing filter.
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

/// The address this host reaches others from: the source address of the default route
/// (a UDP "connect" sends nothing), else loopback.
pub fn default_host_ip() -> String {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("192.0.2.1:9")?;
            s.local_addr()
        })
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| "127.0.0.1".into())
}

impl AgentArgs {
    /// The agent's configuration from these flags, or the flag at fault.
    pub fn to_config(&self) -> Result<AgentConfig, String> {
        let mut cfg = AgentConfig {
            node_name: self
                .node_name
                .clone()
                .unwrap_or_else(crate::server::hostname),
            host_ip: self.node_ip.clone().unwrap_or_else(default_host_ip),
            data_dir: self.data_dir.clone(),
            node_labels: parse_labels(&self.node_labels)
                .map_err(|e| format!("--node-labels: {e}"))?,
            register_with_taints: parse_taints(&self.register_with_taints)
                .map_err(|e| format!("--register-with-taints: {e}"))?,
            system_reserved: parse_reserved(&self.system_reserved)
                .map_err(|e| format!("--system-reserved: {e}"))?,
            heartbeat_interval: self.node_lease_renew_interval,
            listen: self.listen,
            image_gc: ImageGcPolicy::with_thresholds(
                self.image_gc_high_threshold,
                self.image_gc_low_threshold,
            )
            .map_err(|e| format!("--image-gc-high-threshold / --image-gc-low-threshold: {e}"))?,
            container_logs: self
                .container_logs
                .to_limits()
                .map_err(|(flag, reason)| format!("--{flag}: {reason}"))?,
            ..Default::default()
        };
        self.network.apply(&mut cfg)?;
        Ok(cfg)
    }
}

/// The local agent of `flotilla server --local-agent`: this host, its defaults, data
/// under `data_dir`, its endpoint on any free port (the Node records it).
/// With the CRI runtime, pods get addresses from `network`'s --pod-cidr, else from
/// [`LOCAL_POD_CIDR`].
pub fn local_agent_config(
    data_dir: &Path,
    runtime: RuntimeArg,
    network: &NetworkArgs,
    container_logs: LogLimits,
) -> Result<LocalAgent, String> {
    let mut config = AgentConfig {
        container_logs,
        node_name: crate::server::hostname(),
        host_ip: default_host_ip(),
        data_dir: data_dir.to_path_buf(),
        heartbeat_interval: Duration::from_secs(10),
        listen: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
        ..Default::default()
    };
    network.apply(&mut config)?;
    if config.pod_network.is_none() {
        config.pod_network = Some(agent::run::PodNetwork {
            cidr: agent::cni::PodCidr::parse(LOCAL_POD_CIDR).map_err(|e| e.to_string())?,
            cni_conf_dir: network.cni_conf_dir.clone(),
            bridge: agent::cni::DEFAULT_BRIDGE.into(),
        });
    }
    Ok(LocalAgent {
        config,
        runtime: RuntimeChoice {
            runtime,
            cri_socket: network.cri_socket.clone(),
        },
    })
}

/// The local agent's pod subnet when --pod-cidr is not given.
pub const LOCAL_POD_CIDR: &str = "10.244.0.0/24";

/// The agent `flotilla server --local-agent` runs: its configuration and runtime.
#[derive(Debug, Clone)]
pub struct LocalAgent {
    /// Its configuration.
    pub config: AgentConfig,
    /// Its runtime.
    pub runtime: RuntimeChoice,
}

/// The process runtime under `data_dir/runtime`, with `flotilla-shim` (installed beside
/// this binary) as its shim.
pub fn process_runtime(data_dir: &Path, host_ip: &str) -> Result<ProcessRuntime, String> {
    let me = std::env::current_exe().map_err(|e| format!("finding this binary: {e}"))?;
    let shim = me.with_file_name("flotilla-shim");
    if !shim.exists() {
        return Err(format!(
            "the process runtime needs {} (built and installed with flotilla)",
            shim.display()
        ));
    }
    ProcessRuntime::new(&data_dir.join("runtime"), &shim, host_ip).map_err(|e| e.to_string())
}

/// Runs the agent until `shutdown`.
pub async fn run(args: AgentArgs, shutdown: impl Future<Output = ()>) -> Result<(), String> {
    let cfg = args.to_config()?;
    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(|e| format!("--data-dir {}: {e}", cfg.data_dir.display()))?;
    let mut resolved = crate::component::resolve(args.kubeconfig.as_deref(), None)?;
    if let Some(server) = args.server {
        resolved.server = server;
    }
    let client = flotilla_client::Client::new(&resolved).map_err(|e| e.to_string())?;
    let choice = RuntimeChoice {
        runtime: args.runtime,
        cri_socket: args.network.cri_socket.clone(),
    };
    run_agent(client, cfg, &choice, shutdown).await
}

/// Runs an agent on the runtime `choice` names until `shutdown`. With auto, the CRI
/// runtime is used when its socket answers, and the log says which was chosen (the Node's
/// nodeInfo.containerRuntimeVersion too).
pub async fn run_agent(
    client: flotilla_client::Client,
    mut cfg: AgentConfig,
    choice: &RuntimeChoice,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let cri = match choice.runtime {
        RuntimeArg::Process => None,
        RuntimeArg::Cri => Some(
            agent::runtime::cri::CriRuntime::connect(&choice.cri_socket, CGROUP_ROOT)
                .await
                .map_err(|e| format!("--cri-socket: {e}"))?,
        ),
        RuntimeArg::Auto if !choice.cri_socket.exists() => None,
        RuntimeArg::Auto => {
            match agent::runtime::cri::CriRuntime::connect(&choice.cri_socket, CGROUP_ROOT).await {
                Ok(rt) => Some(rt),
                Err(e) => {
                    tracing::warn!(socket = %choice.cri_socket.display(), error = %e, "the CRI socket does not answer; using the process runtime");
                    None
                }
            }
        }
    };
    match cri {
        Some(runtime) => {
            tracing::info!(socket = %choice.cri_socket.display(), version = %agent::runtime::Runtime::version(&runtime), "using the CRI runtime");
            run_with(client, Arc::new(runtime), cfg, shutdown).await
        }
        None => {
            // Pods of the process runtime share the host's network: no CNI to configure.
            cfg.pod_network = None;
            let runtime =
                process_runtime(&cfg.data_dir, &cfg.host_ip)?.with_log_limits(cfg.container_logs);
            tracing::info!(version = %agent::runtime::Runtime::version(&runtime), "using the process runtime");
            run_with(client, Arc::new(runtime), cfg, shutdown).await
        }
    }
}

/// Runs the agent on `runtime` until `shutdown` (or until it fails).
async fn run_with<R: agent::runtime::Runtime>(
    client: flotilla_client::Client,
    runtime: Arc<R>,
    cfg: AgentConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let mut task = tokio::spawn(agent::run::run(client, runtime, cfg, stop_rx));
    // The agent may fail before shutdown is asked for (registration refused).
    let early = tokio::select! {
        _ = shutdown => None,
        done = &mut task => Some(done),
    };
    let done = match early {
        Some(done) => done,
        None => {
            stop.send_replace(true);
            task.await
        }
    };
    match done {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        agent: AgentArgs,
    }

    fn config(args: &[&str]) -> Result<AgentConfig, String> {
        let cli = Cli::try_parse_from(std::iter::once("test").chain(args.iter().copied()))
            .expect("flags parse");
        cli.agent.to_config()
    }

    #[test]
    fn image_gc_thresholds_default_as_the_kubelets_and_are_validated() {
        let default = config(&[]).expect("valid");
        assert_eq!(default.image_gc, ImageGcPolicy::default());
        assert_eq!(
            (
                default.image_gc.high_threshold_percent,
                default.image_gc.low_threshold_percent
            ),
            (85, 80)
        );
        let custom = config(&[
            "--image-gc-high-threshold=90",
            "--image-gc-low-threshold=50",
        ])
        .expect("valid");
        assert_eq!(custom.image_gc.high_threshold_percent, 90);
        assert_eq!(custom.image_gc.low_threshold_percent, 50);
        let err = config(&["--image-gc-high-threshold=70"]).expect_err("low 80 ≥ high 70");
        assert!(err.contains("must be below the high threshold"), "{err}");
        let err = config(&["--image-gc-high-threshold=101"]).expect_err("above 100");
        assert!(err.contains("above 100%"), "{err}");
    }

    #[test]
    fn container_log_limits_default_as_the_kubelets_and_are_validated() {
        assert_eq!(
            config(&[]).expect("valid").container_logs,
            LogLimits::default()
        );
        let custom = config(&[
            "--container-log-max-size=500Ki",
            "--container-log-max-files=2",
        ])
        .expect("valid");
        assert_eq!(
            custom.container_logs,
            LogLimits {
                max_size: 500 << 10,
                max_files: 2
            }
        );
        let err = config(&["--container-log-max-size=lots"]).expect_err("not a size");
        assert!(err.starts_with("--container-log-max-size: "), "{err}");
        let err = config(&["--container-log-max-size=0"]).expect_err("zero");
        assert!(
            err.starts_with("--container-log-max-size: must be"),
            "{err}"
        );
        let err = config(&["--container-log-max-files=1"]).expect_err("one file");
        assert!(
            err.starts_with("--container-log-max-files: must be"),
            "{err}"
        );
    }
}
