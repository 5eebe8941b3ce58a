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
    /// Where the agent's endpoint (logs, for the API server) listens; port 0 picks one.
    pub listen: std::net::SocketAddr,
    /// When unused images are removed.
    pub image_gc: ImageGcPolicy,
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
        runtime_version: format!("{}://{}", runtime.name(), runtime.version()),
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
            api.patch(
                &cfg.node_name,
                &Patch::Merge(json!({"metadata": {"labels": labels}})),
            )
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
    register(&client, &cfg, runtime.as_ref(), port).await?;
    let endpoint = {
        let service = flotilla_proto::agent::agent_server::AgentServer::new(
            crate::logs::LogService::new(runtime.clone(), client.clone(), shutdown.clone()),
        );
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let served = tonic::transport::Server::builder()
                .add_service(service)
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
        pull_backoff: Default::default(),
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
        if let Err(e) = ctx.runtime.remove_pod_sandbox(&s.id).await {
            tracing::warn!(sandbox = %s.id, error = %e, "removing an orphaned sandbox");
        }
    }
}
