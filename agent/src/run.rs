//! The agent: registers its Node, beats its heartbeat, follows the pods bound to it
//! (a watch filtered by `spec.nodeName`), runs one worker per pod, and removes what the
//! runtime holds for pods that no longer exist.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_client::{Change, Client, Informer, ListParams, Patch};
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use serde_json::json;
use tokio::sync::watch;

use crate::heartbeat::{self, HeartbeatConfig};
use crate::image_gc::{self, ImageGcPolicy};
use crate::log_rotation::{self, LogLimits};
use crate::node::{HostResources, Registration, host_resources, node_object};
use crate::pod_worker::{self, Context};
use crate::runtime::Runtime;

/// How often sandboxes of vanished pods are looked for.
pub const HOUSEKEEPING: Duration = Duration::from_secs(30);

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The node's name.
    pub node_name: String,
    /// The node's IP (pods of the process runtime share it).
    pub host_ip: String,
    /// Holds the runtime's state and the pods' logs.
    pub data_dir: PathBuf,
    /// Labels added to the well-known ones.
    pub node_labels: BTreeMap<String, String>,
    /// Taints the node registers with.
    pub register_with_taints: Vec<Taint>,
    /// Subtracted from capacity.
    pub system_reserved: HostResources,
    /// How often the node Lease is renewed.
    pub heartbeat_interval: Duration,
    /// Where the agent's endpoint (logs and exec, for the API server) listens; port 0
    /// picks one.
    pub listen: std::net::SocketAddr,
    /// The node's resolv.conf, the base of its pods' DNS (`--resolv-conf`).
    pub resolv_conf: PathBuf,
    /// The node's pod subnet and where its CNI conflist goes (`--pod-cidr`); None leaves
    /// the runtime's network configuration alone.
    pub pod_network: Option<PodNetwork>,
    /// When unused images are removed.
    pub image_gc: ImageGcPolicy,
    /// How large container logs may grow, for runtimes that leave rotation to the agent
    /// (a runtime that rotates its own is configured when it is made).
    pub container_logs: LogLimits,
}

/// The node's pod network: a subnet on a bridge, written as a CNI conflist.
#[derive(Debug, Clone)]
pub struct PodNetwork {
    /// The node's pod subnet.
    pub cidr: crate::cni::PodCidr,
    /// Where the runtime reads CNI configuration (`--cni-conf-dir`).
    pub cni_conf_dir: PathBuf,
    /// The bridge's name.
    pub bridge: String,
}

impl Default for AgentConfig {
    /// The flags' defaults; the node's name, address and data directory are left empty.
    fn default() -> Self {
        AgentConfig {
            node_name: String::new(),
            host_ip: String::new(),
            data_dir: PathBuf::new(),
            node_labels: BTreeMap::new(),
            register_with_taints: Vec::new(),
            system_reserved: HostResources::default(),
            heartbeat_interval: Duration::from_secs(10),
            listen: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            pod_network: None,
            image_gc: ImageGcPolicy::default(),
            container_logs: LogLimits::default(),
        }
    }
}

/// The agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The endpoint's address cannot be listened on.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The pod network could not be configured.
    #[error("configuring the pod network: {0}")]
    Network(#[from] crate::cni::CniError),
    /// The Node could not be registered.
    #[error("registering node {node}: {reason}")]
    Register {
        /// The node.
        node: String,
        /// Why.
        reason: String,
    },
}

/// Creates the Node, or brings an existing one's labels, capacity and info up to date.
pub async fn register<R: Runtime>(
    client: &Client,
    cfg: &AgentConfig,
    runtime: &R,
    port: u16,
) -> Result<(), AgentError> {
    let reg = Registration {
        name: cfg.node_name.clone(),
        host_ip: cfg.host_ip.clone(),
        labels: cfg.node_labels.clone(),
        taints: cfg.register_with_taints.clone(),
        reserved: cfg.system_reserved,
        runtime_version: runtime.version(),
        pod_cidr: cfg.pod_network.as_ref().map(|n| n.cidr.to_string()),
        port,
    };
    let node = node_object(&reg, host_resources(&cfg.data_dir));
    let api = client.api::<Node>("");
    let err = |e: flotilla_client::ClientError| AgentError::Register {
        node: cfg.node_name.clone(),
        reason: e.to_string(),
    };
    match api.create(&node).await {
        Ok(_) => {
            tracing::info!(node = %cfg.node_name, "node registered");
            Ok(())
        }
        Err(e) if e.is_already_exists() => {
            // Known already (an agent restart): refresh what the host says; taints set
            // since (a cordon, the lifecycle controller) stay.
            let labels = node.metadata.labels.clone();
            let mut patch = json!({"metadata": {"labels": labels}});
            // A node's pod subnet is set once, as in Kubernetes; a different --pod-cidr
            // on a registered node is reported rather than applied.
            let existing = api.get(&cfg.node_name).await.map_err(err)?;
            let had = existing.spec.and_then(|s| s.pod_cidr);
            let wants = node.spec.as_ref().and_then(|s| s.pod_cidr.clone());
            match (&had, &wants) {
                (None, Some(c)) => patch["spec"] = json!({"podCIDR": c, "podCIDRs": [c]}),
                (Some(h), Some(w)) if h != w => {
                    tracing::warn!(node = %cfg.node_name, registered = %h, flag = %w, "the node keeps its registered pod CIDR")
                }
                _ => {}
            }
            api.patch(&cfg.node_name, &Patch::Merge(patch))
                .await
                .map_err(err)?;
            api.patch_status(
                &cfg.node_name,
                &Patch::Merge(json!({"status": {
                    "capacity": node.status.as_ref().and_then(|s| s.capacity.clone()),
                    "allocatable": node.status.as_ref().and_then(|s| s.allocatable.clone()),
                    "addresses": node.status.as_ref().and_then(|s| s.addresses.clone()),
                    "nodeInfo": node.status.as_ref().and_then(|s| s.node_info.clone()),
                    "daemonEndpoints": node.status.as_ref().and_then(|s| s.daemon_endpoints.clone()),
                }})),
            )
            .await
            .map_err(err)?;
            tracing::info!(node = %cfg.node_name, "node re-registered");
            Ok(())
        }
        Err(e) => Err(err(e)),
    }
}

type Workers = Arc<Mutex<HashMap<String, watch::Sender<Option<Arc<Pod>>>>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs the agent until `shutdown` flips. Containers keep running when the agent stops:
/// the next agent adopts them.
pub async fn run<R: Runtime>(
    client: Client,
    runtime: Arc<R>,
    cfg: AgentConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| AgentError::Listen {
            addr: cfg.listen,
            source,
        })?;
    let port = listener
        .local_addr()
        .map_err(|source| AgentError::Listen {
            addr: cfg.listen,
            source,
        })?
        .port();
    if let Some(net) = &cfg.pod_network {
        // host-local keeps its address leases with the agent's state.
        let ipam = std::path::absolute(cfg.data_dir.join("cni-ipam")).map_err(|e| {
            crate::cni::CniError::Write {
                path: cfg.data_dir.display().to_string(),
                reason: e.to_string(),
            }
        })?;
        let path = crate::cni::install(
            &net.cni_conf_dir,
            &crate::cni::conflist(&net.cidr, &net.bridge, &ipam),
        )?;
        tracing::info!(cidr = %net.cidr, conflist = %path.display(), "pod network configured");
    }
    register(&client, &cfg, runtime.as_ref(), port).await?;
    let endpoint = {
        let service = flotilla_proto::agent::agent_server::AgentServer::new(
            crate::endpoint::AgentEndpoint::new(runtime.clone(), client.clone(), shutdown.clone()),
        );
        // Prometheus scrapes /metrics over plain HTTP on the same port, beside the gRPC
        // endpoint, as it does the kubelet's.
        let metrics = {
            let (runtime, node) = (runtime.clone(), cfg.node_name.clone());
            axum::Router::new().route(
                "/metrics",
                axum::routing::get(move || {
                    let (runtime, node) = (runtime.clone(), node.clone());
                    async move {
                        crate::metrics::render(runtime.as_ref(), &node)
                            .await
                            .map_err(|e| {
                                (axum::http::StatusCode::SERVICE_UNAVAILABLE, e.to_string())
                            })
                    }
                }),
            )
        };
        let routes = tonic::service::Routes::new(service)
            .into_axum_router()
            .merge(metrics);
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let served = tonic::transport::Server::builder()
                .accept_http1(true)
                .add_routes(tonic::service::Routes::from(routes))
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "the agent endpoint stopped");
            }
        })
    };
    let ctx = Arc::new(Context {
        runtime: runtime.clone(),
        client: client.clone(),
        node_name: cfg.node_name.clone(),
        host_ip: cfg.host_ip.clone(),
        log_root: cfg.data_dir.join("pods"),
        resolv_conf: cfg.resolv_conf.clone(),
        runtime_scheme: pod_worker::runtime_scheme(&runtime.version()),
    });
    let heartbeat = tokio::spawn(heartbeat::run(
        client.clone(),
        HeartbeatConfig {
            node_name: cfg.node_name.clone(),
            interval: cfg.heartbeat_interval,
            data_dir: cfg.data_dir.clone(),
        },
        shutdown.clone(),
    ));

    let image_gc = tokio::spawn(image_gc::run(
        runtime.clone(),
        cfg.image_gc,
        shutdown.clone(),
    ));

    let log_rotation = tokio::spawn(log_rotation::run(
        runtime.clone(),
        cfg.container_logs,
        shutdown.clone(),
    ));

    let workers: Workers = Arc::default();
    let tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
    let informer = {
        let (workers, tasks, ctx, shutdown) = (
            workers.clone(),
            tasks.clone(),
            ctx.clone(),
            shutdown.clone(),
        );
        Informer::new(
            client.api::<Pod>(""),
            ListParams {
                field_selector: format!("spec.nodeName={}", cfg.node_name),
                ..Default::default()
            },
        )
        .on_change(move |c| match c {
            Change::Added(p) | Change::Updated { new: p, .. } => {
                let uid = p.metadata.uid.clone().unwrap_or_default();
                let mut map = lock(&workers);
                match map.get(&uid) {
                    Some(tx) => {
                        tx.send_replace(Some(p.clone()));
                    }
                    None => {
                        let (tx, rx) = watch::channel(Some(p.clone()));
                        map.insert(uid.clone(), tx);
                        let (ctx, workers, shutdown) =
                            (ctx.clone(), workers.clone(), shutdown.clone());
                        lock(&tasks).push(tokio::spawn(async move {
                            pod_worker::run(ctx, rx, shutdown).await;
                            lock(&workers).remove(&uid);
                        }));
                    }
                }
            }
            Change::Deleted(p) => {
                let uid = p.metadata.uid.clone().unwrap_or_default();
                if let Some(tx) = lock(&workers).get(&uid) {
                    tx.send_replace(None);
                }
            }
        })
    };
    let pods = informer.store();
    let informer_task = tokio::spawn(informer.run(shutdown.clone()));
    pods.wait_until_ready().await;
    tracing::info!(node = %cfg.node_name, runtime = runtime.name(), "agent running");

    let mut stop = shutdown.clone();
    loop {
        housekeeping(&ctx, &pods).await;
        tokio::select! {
            _ = tokio::time::sleep(HOUSEKEEPING) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    let _ = informer_task.await;
    let _ = heartbeat.await;
    let _ = image_gc.await;
    let _ = log_rotation.await;
    let _ = endpoint.await;
    let pending: Vec<_> = lock(&tasks).drain(..).collect();
    for t in pending {
        let _ = t.await;
    }
    Ok(())
}

/// Removes sandboxes whose pod is not bound here any more (deleted while the agent was
/// away).
async fn housekeeping<R: Runtime>(ctx: &Context<R>, pods: &flotilla_client::Store<Pod>) {
    let known: std::collections::HashSet<String> = pods
        .list()
        .iter()
        .filter_map(|p| p.metadata.uid.clone())
        .collect();
    let Ok(sandboxes) = ctx.runtime.list_pod_sandboxes().await else {
        return;
    };
    for s in sandboxes
        .into_iter()
        .filter(|s| !known.contains(&s.config.uid))
    {
        tracing::info!(pod = %format!("{}/{}", s.config.namespace, s.config.name), sandbox = %s.id, "removing the sandbox of a pod that is gone");
        let grace = Duration::from_secs(pod_worker::DEFAULT_GRACE as u64);
        if let Err(e) = ctx.runtime.stop_pod_sandbox(&s.id, grace).await {
            tracing::warn!(sandbox = %s.id, error = %e, "stopping an orphaned sandbox");
            continue;
        }
        match ctx.runtime.remove_pod_sandbox(&s.id).await {
            Ok(()) => pod_worker::remove_logs(&s.config.log_directory),
            Err(e) => tracing::warn!(sandbox = %s.id, error = %e, "removing an orphaned sandbox"),
        }
    }
}
