//! The containerd runtime: the agent's [`Runtime`] over the Kubernetes Container Runtime
//! Interface (CRI v1 gRPC on containerd's Unix socket), as the kubelet drives it.
//!
//! What the agent needs back that CRI does not carry (the full sandbox and container
//! configs) travels in annotations on the sandbox and container, so an agent restarted
//! under running pods reads everything from the runtime. Every CreateContainer carries the
//! sandbox's complete config, rebuilt the same way each time: containerd needs it for the
//! container's cgroup and log. A pod's cgroup parent (`/flotilla/pod<uid>`) is created by
//! runc in every hierarchy and never removed by it, so the agent removes it after the
//! sandbox.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flotilla_proto::cri::image_service_client::ImageServiceClient;
use flotilla_proto::cri::runtime_service_client::RuntimeServiceClient;
use flotilla_proto::cri::{self as pb};
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

use super::{
    ContainerConfig, ContainerState, ContainerStats, ContainerStatus, ExecResult, ImageFsUsage,
    ImageInfo, RegistryAuth, Runtime, RuntimeError, SandboxConfig, SandboxState, SandboxStatus,
};
use crate::image_ref;

/// containerd's usual socket.
pub const DEFAULT_SOCKET: &str = "/run/containerd/containerd.sock";

/// The annotation holding the agent's sandbox config.
const SANDBOX_CONFIG: &str = "io.flotilla.sandbox-config";
/// The annotation holding the agent's container config.
const CONTAINER_CONFIG: &str = "io.flotilla.container-config";
/// The annotation naming a container's sandbox (CRI's ContainerStatus does not).
const SANDBOX_ID: &str = "io.flotilla.sandbox-id";
/// The label carrying a sandbox's pod uid (the kubelet's).
const POD_UID: &str = "io.kubernetes.pod.uid";
/// The label marking sandboxes and containers this agent made.
const MANAGED: &str = "io.flotilla.managed";

/// How long one CRI call may take before the agent gives up on it (image pulls and execs
/// excepted: they are bounded by their own timeouts).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an image pull may take: large images on slow links take minutes, and a pull
/// cut short starts again from its last complete layer anyway.
const PULL_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// A CRI runtime client.
#[derive(Clone)]
pub struct CriRuntime {
    runtime: RuntimeServiceClient<Channel>,
    /// The runtime service on the long-call connection, for ExecSync.
    long_runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    /// The image service on the long-call connection, for PullImage.
    pull_images: ImageServiceClient<Channel>,
    version: String,
    cgroup_root: String,
    /// The runtime's sandbox (pause) image, normalised, when its configuration says.
    sandbox_image: Option<String>,
}

fn rpc(e: tonic::Status) -> RuntimeError {
    match e.code() {
        tonic::Code::NotFound => RuntimeError::NotFound(e.message().to_string()),
        tonic::Code::InvalidArgument => RuntimeError::Invalid(e.message().to_string()),
        _ => RuntimeError::Io(format!("CRI {:?}: {}", e.code(), e.message())),
    }
}

/// RFC 3339 from CRI's nanoseconds since the epoch ("" for 0: not yet).
fn rfc3339(nanos: i64) -> String {
    if nanos <= 0 {
        return String::new();
    }
    jiff::Timestamp::from_nanosecond(i128::from(nanos))
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// The pod's cgroup parent, relative to every hierarchy's root.
fn cgroup_parent(root: &str, uid: &str) -> String {
    format!("{root}/pod{uid}")
}

/// The CRI sandbox config for the agent's, built identically every time it is needed.
fn sandbox_config(cfg: &SandboxConfig, cgroup_root: &str) -> pb::PodSandboxConfig {
    let mut labels: HashMap<String, String> = cfg.labels.clone().into_iter().collect();
    labels.insert("io.kubernetes.pod.name".into(), cfg.name.clone());
    labels.insert("io.kubernetes.pod.namespace".into(), cfg.namespace.clone());
    labels.insert(POD_UID.into(), cfg.uid.clone());
    labels.insert(MANAGED.into(), "true".into());
    let annotations = HashMap::from([(
        SANDBOX_CONFIG.to_string(),
        serde_json::to_string(cfg).unwrap_or_default(),
    )]);
    pb::PodSandboxConfig {
        metadata: Some(pb::PodSandboxMetadata {
            name: cfg.name.clone(),
            uid: cfg.uid.clone(),
            namespace: cfg.namespace.clone(),
            attempt: cfg.attempt,
        }),
        hostname: cfg.hostname.clone(),
        log_directory: cfg.log_directory.display().to_string(),
        dns_config: cfg.dns.as_ref().map(|d| pb::DnsConfig {
            servers: d.servers.clone(),
            searches: d.searches.clone(),
            options: d.options.clone(),
        }),
        port_mappings: cfg
            .port_mappings
            .iter()
            .map(|p| pb::PortMapping {
                protocol: match p.protocol.as_str() {
                    "UDP" => pb::Protocol::Udp,
                    "SCTP" => pb::Protocol::Sctp,
                    _ => pb::Protocol::Tcp,
                } as i32,
                container_port: p.container_port,
                host_port: p.host_port,
                host_ip: p.host_ip.clone(),
            })
            .collect(),
        labels,
        annotations,
        linux: Some(pb::LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent(cgroup_root, &cfg.uid),
            security_context: Some(pb::LinuxSandboxSecurityContext {
                namespace_options: Some(pb::NamespaceOption {
                    network: pb::NamespaceMode::Pod as i32,
                    pid: pb::NamespaceMode::Container as i32,
                    ipc: pb::NamespaceMode::Pod as i32,
                    target_id: String::new(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

fn container_config(sandbox_id: &str, cfg: &ContainerConfig) -> pb::ContainerConfig {
    let mut labels: HashMap<String, String> = cfg.labels.clone().into_iter().collect();
    labels.insert("io.kubernetes.container.name".into(), cfg.name.clone());
    labels.insert(MANAGED.into(), "true".into());
    let r = &cfg.resources;
    pb::ContainerConfig {
        metadata: Some(pb::ContainerMetadata {
            name: cfg.name.clone(),
            attempt: cfg.attempt,
        }),
        image: Some(pb::ImageSpec {
            image: cfg.image.clone(),
            ..Default::default()
        }),
        command: cfg.command.clone(),
        args: cfg.args.clone(),
        working_dir: cfg.working_dir.clone().unwrap_or_default(),
        envs: cfg
            .env
            .iter()
            .map(|(k, v)| pb::KeyValue {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        labels,
        annotations: HashMap::from([
            (
                CONTAINER_CONFIG.to_string(),
                serde_json::to_string(cfg).unwrap_or_default(),
            ),
            (SANDBOX_ID.to_string(), sandbox_id.to_string()),
        ]),
        log_path: cfg.log_path.display().to_string(),
        linux: Some(pb::LinuxContainerConfig {
            resources: Some(pb::LinuxContainerResources {
                cpu_period: i64::try_from(r.cpu_period).unwrap_or(0),
                cpu_quota: r.cpu_quota,
                cpu_shares: i64::try_from(r.cpu_shares).unwrap_or(0),
                memory_limit_in_bytes: r.memory_limit,
                ..Default::default()
            }),
            security_context: Some(pb::LinuxContainerSecurityContext {
                namespace_options: Some(pb::NamespaceOption {
                    network: pb::NamespaceMode::Pod as i32,
                    pid: pb::NamespaceMode::Container as i32,
                    ipc: pb::NamespaceMode::Pod as i32,
                    target_id: String::new(),
                }),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

/// A connection to the CRI socket whose calls give up after `timeout`.
async fn dial(socket: &Path, timeout: Duration) -> Result<Channel, RuntimeError> {
    let path = socket.to_path_buf();
    // The URI is never dialled: every connection is the Unix socket.
    Endpoint::try_from("http://cri.invalid")
        .map_err(|e| RuntimeError::Io(e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(timeout)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|e| {
            RuntimeError::Io(format!(
                "cannot reach the CRI socket {}: {e}",
                socket.display()
            ))
        })
}

/// The sandbox image from the runtime's verbose status (containerd reports its CRI config
/// there, `sandboxImage` included); None when the runtime does not say.
async fn sandbox_image(runtime: &mut RuntimeServiceClient<Channel>) -> Option<String> {
    let status = runtime
        .status(pb::StatusRequest { verbose: true })
        .await
        .ok()?
        .into_inner();
    let config: serde_json::Value = serde_json::from_str(status.info.get("config")?).ok()?;
    image_ref::normalize(config.get("sandboxImage")?.as_str()?)
}

fn image_spec(image: &str) -> Option<pb::ImageSpec> {
    Some(pb::ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

fn parse<T: serde::de::DeserializeOwned + Default>(
    annotations: &HashMap<String, String>,
    key: &str,
) -> T {
    annotations
        .get(key)
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default()
}

impl CriRuntime {
    /// Connects to the CRI endpoint on `socket` and asks its version; pod cgroups go under
    /// `cgroup_root` (e.g. `/flotilla`).
    pub async fn connect(socket: &Path, cgroup_root: &str) -> Result<Self, RuntimeError> {
        let channel = dial(socket, CALL_TIMEOUT).await?;
        // Pulls and execs get their own connection: they may take far longer than any
        // other call, and the connection's timeout bounds every call on it.
        let long_channel = dial(socket, PULL_TIMEOUT).await?;
        let mut runtime = RuntimeServiceClient::new(channel.clone());
        let v = runtime
            .version(pb::VersionRequest {
                version: "v1".into(),
            })
            .await
            .map_err(rpc)?
            .into_inner();
        let sandbox_image = sandbox_image(&mut runtime).await;
        tracing::debug!(sandbox_image = ?sandbox_image, "the runtime's sandbox image");
        Ok(CriRuntime {
            runtime,
            long_runtime: RuntimeServiceClient::new(long_channel.clone()),
            images: ImageServiceClient::new(channel),
            pull_images: ImageServiceClient::new(long_channel),
            version: format!("{}://{}", v.runtime_name, v.runtime_version),
            cgroup_root: cgroup_root.trim_end_matches('/').to_string(),
            sandbox_image,
        })
    }

    fn image_info(&self, i: pb::Image) -> ImageInfo {
        let sandbox = self.sandbox_image.as_deref().is_some_and(|s| {
            i.repo_tags
                .iter()
                .any(|t| image_ref::normalize(t).as_deref() == Some(s))
        });
        ImageInfo {
            id: i.id,
            repo_tags: i.repo_tags,
            repo_digests: i.repo_digests,
            size: i.size,
            pinned: i.pinned || sandbox,
        }
    }

    async fn sandbox_status_raw(&self, id: &str) -> Result<pb::PodSandboxStatus, RuntimeError> {
        self.runtime
            .clone()
            .pod_sandbox_status(pb::PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: false,
            })
            .await
            .map_err(rpc)?
            .into_inner()
            .status
            .ok_or_else(|| RuntimeError::NotFound(format!("sandbox {id}")))
    }

    /// This agent's sandboxes that also carry `labels`, with their status.
    async fn sandboxes_labelled(
        &self,
        mut labels: HashMap<String, String>,
    ) -> Result<Vec<SandboxStatus>, RuntimeError> {
        labels.insert(MANAGED.to_string(), "true".to_string());
        let items = self
            .runtime
            .clone()
            .list_pod_sandbox(pb::ListPodSandboxRequest {
                filter: Some(pb::PodSandboxFilter {
                    label_selector: labels,
                    ..Default::default()
                }),
            })
            .await
            .map_err(rpc)?
            .into_inner()
            .items;
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            match self.pod_sandbox_status(&item.id).await {
                Ok(s) => out.push(s),
                Err(RuntimeError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Makes the pod's cgroup parent with its pod-level limits before the runtime puts
    /// the sandbox in it (runc would create it bare).
    fn create_cgroup_parent(&self, cfg: &SandboxConfig) -> Result<(), RuntimeError> {
        let Some(version) = crate::cgroup::detect() else {
            return Ok(());
        };
        let relative = cgroup_parent(&self.cgroup_root, &cfg.uid);
        crate::cgroup::Cgroup::at(version, relative.trim_start_matches('/'))
            .create(&cfg.resources)
            .map_err(|e| RuntimeError::Io(format!("the pod's cgroup {relative}: {e}")))
    }

    async fn remove_cgroup_parent(&self, uid: &str) {
        let relative = cgroup_parent(&self.cgroup_root, uid);
        let Some(version) = crate::cgroup::detect() else {
            return;
        };
        let cg = crate::cgroup::Cgroup::at(version, relative.trim_start_matches('/'));
        // Removal may wait out a busy cgroup: not on the runtime's threads.
        match tokio::task::spawn_blocking(move || cg.remove()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(cgroup = %relative, error = %e, "could not remove the pod's cgroup");
            }
            Err(e) => tracing::warn!(cgroup = %relative, error = %e, "removing the pod's cgroup"),
        }
    }
}

impl Runtime for CriRuntime {
    fn name(&self) -> &'static str {
        "cri"
    }

    fn version(&self) -> String {
        self.version.clone()
    }

    async fn run_pod_sandbox(&self, cfg: &SandboxConfig) -> Result<String, RuntimeError> {
        let config = sandbox_config(cfg, &self.cgroup_root);
        self.create_cgroup_parent(cfg)?;
        Ok(self
            .runtime
            .clone()
            .run_pod_sandbox(pb::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await
            .map_err(rpc)?
            .into_inner()
            .pod_sandbox_id)
    }

    async fn stop_pod_sandbox(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        // Containers first, with the pod's grace period; StopPodSandbox alone would kill
        // them at once.
        self.stop_running_containers(id, grace).await?;
        match self
            .runtime
            .clone()
            .stop_pod_sandbox(pb::StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await
        {
            Err(e) if e.code() != tonic::Code::NotFound => Err(rpc(e)),
            _ => Ok(()),
        }
    }

    async fn remove_pod_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        let uid = match self.sandbox_status_raw(id).await {
            Ok(s) => s.metadata.map(|m| m.uid).unwrap_or_default(),
            Err(RuntimeError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        match self
            .runtime
            .clone()
            .remove_pod_sandbox(pb::RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await
        {
            Err(e) if e.code() != tonic::Code::NotFound => return Err(rpc(e)),
            _ => {}
        }
        if !uid.is_empty() {
            self.remove_cgroup_parent(&uid).await;
        }
        Ok(())
    }

    async fn pod_sandbox_status(&self, id: &str) -> Result<SandboxStatus, RuntimeError> {
        let s = self.sandbox_status_raw(id).await?;
        let mut config: SandboxConfig = parse(&s.annotations, SANDBOX_CONFIG);
        // Without a readable annotation the pod is still known by its CRI metadata: an
        // agent must never mistake its own pod's sandbox for an orphan and remove it.
        if config.uid.is_empty()
            && let Some(m) = &s.metadata
        {
            config.name = m.name.clone();
            config.namespace = m.namespace.clone();
            config.uid = m.uid.clone();
            config.attempt = m.attempt;
        }
        Ok(SandboxStatus {
            id: s.id.clone(),
            config,
            state: if s.state == pb::PodSandboxState::SandboxReady as i32 {
                SandboxState::Ready
            } else {
                SandboxState::NotReady
            },
            ip: s.network.map(|n| n.ip).unwrap_or_default(),
            created_at: rfc3339(s.created_at),
        })
    }

    async fn list_pod_sandboxes(&self) -> Result<Vec<SandboxStatus>, RuntimeError> {
        self.sandboxes_labelled(HashMap::new()).await
    }

    async fn pod_sandboxes(&self, uid: &str) -> Result<Vec<SandboxStatus>, RuntimeError> {
        self.sandboxes_labelled(HashMap::from([(POD_UID.to_string(), uid.to_string())]))
            .await
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        cfg: &ContainerConfig,
    ) -> Result<String, RuntimeError> {
        // The agent pulled the image before, as the pod's imagePullPolicy says:
        // CreateContainer never pulls.
        let sandbox = self.pod_sandbox_status(sandbox_id).await?;
        let request = pb::CreateContainerRequest {
            pod_sandbox_id: sandbox_id.into(),
            config: Some(container_config(sandbox_id, cfg)),
            sandbox_config: Some(sandbox_config(&sandbox.config, &self.cgroup_root)),
        };
        Ok(self
            .runtime
            .clone()
            .create_container(request)
            .await
            .map_err(|e| RuntimeError::StartFailed(e.message().to_string()))?
            .into_inner()
            .container_id)
    }

    async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        self.runtime
            .clone()
            .start_container(pb::StartContainerRequest {
                container_id: id.into(),
            })
            .await
            .map_err(|e| RuntimeError::StartFailed(e.message().to_string()))?;
        Ok(())
    }

    async fn stop_container(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        match self
            .runtime
            .clone()
            .stop_container(pb::StopContainerRequest {
                container_id: id.into(),
                timeout: i64::try_from(grace.as_secs()).unwrap_or(i64::MAX),
            })
            .await
        {
            Err(e) if e.code() != tonic::Code::NotFound => Err(rpc(e)),
            _ => Ok(()),
        }
    }

    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        match self
            .runtime
            .clone()
            .remove_container(pb::RemoveContainerRequest {
                container_id: id.into(),
            })
            .await
        {
            Err(e) if e.code() != tonic::Code::NotFound => Err(rpc(e)),
            _ => Ok(()),
        }
    }

    async fn container_status(&self, id: &str) -> Result<ContainerStatus, RuntimeError> {
        let s = self
            .runtime
            .clone()
            .container_status(pb::ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await
            .map_err(rpc)?
            .into_inner()
            .status
            .ok_or_else(|| RuntimeError::NotFound(format!("container {id}")))?;
        let state = match pb::ContainerState::try_from(s.state) {
            Ok(pb::ContainerState::ContainerCreated) => ContainerState::Created,
            Ok(pb::ContainerState::ContainerRunning) => ContainerState::Running,
            _ => ContainerState::Exited,
        };
        let sandbox_id = s.annotations.get(SANDBOX_ID).cloned().unwrap_or_default();
        let mut config: ContainerConfig = parse(&s.annotations, CONTAINER_CONFIG);
        // As for sandboxes: the CRI metadata names the container when the annotation
        // cannot, so that it is restarted under its next attempt, not recreated as new.
        if config.name.is_empty()
            && let Some(m) = &s.metadata
        {
            config.name = m.name.clone();
            config.attempt = m.attempt;
            config.image = s
                .image
                .as_ref()
                .map(|i| i.image.clone())
                .unwrap_or_default();
        }
        Ok(ContainerStatus {
            id: s.id,
            sandbox_id,
            config,
            state,
            created_at: rfc3339(s.created_at),
            started_at: rfc3339(s.started_at),
            finished_at: rfc3339(s.finished_at),
            exit_code: s.exit_code,
            reason: s.reason,
            message: s.message,
            log_path: PathBuf::from(s.log_path),
            image_id: String::new(),
        })
    }

    async fn list_containers(
        &self,
        sandbox_id: Option<&str>,
    ) -> Result<Vec<ContainerStatus>, RuntimeError> {
        let containers = self
            .runtime
            .clone()
            .list_containers(pb::ListContainersRequest {
                filter: Some(pb::ContainerFilter {
                    pod_sandbox_id: sandbox_id.unwrap_or_default().into(),
                    label_selector: HashMap::from([(MANAGED.to_string(), "true".to_string())]),
                    ..Default::default()
                }),
            })
            .await
            .map_err(rpc)?
            .into_inner()
            .containers;
        let mut out = Vec::with_capacity(containers.len());
        for c in containers {
            match self.container_status(&c.id).await {
                Ok(mut s) => {
                    s.sandbox_id = c.pod_sandbox_id;
                    // The list names the image by id; the status by a digest.
                    s.image_id = c.image_ref;
                    out.push(s);
                }
                Err(RuntimeError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    async fn container_stats(&self, id: &str) -> Result<ContainerStats, RuntimeError> {
        let s = self
            .runtime
            .clone()
            .container_stats(pb::ContainerStatsRequest {
                container_id: id.into(),
            })
            .await
            .map_err(rpc)?
            .into_inner()
            .stats
            .unwrap_or_default();
        Ok(ContainerStats {
            cpu_usage_nanos: s
                .cpu
                .and_then(|c| c.usage_core_nano_seconds)
                .map_or(0, |v| v.value),
            memory_working_set_bytes: s
                .memory
                .and_then(|m| m.working_set_bytes)
                .map_or(0, |v| v.value),
        })
    }

    async fn exec_sync(
        &self,
        id: &str,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecResult, RuntimeError> {
        let r = self
            .long_runtime
            .clone()
            .exec_sync(pb::ExecSyncRequest {
                container_id: id.into(),
                cmd: argv.to_vec(),
                timeout: i64::try_from(timeout.as_secs().max(1)).unwrap_or(i64::MAX),
            })
            .await
            .map_err(|e| match e.code() {
                tonic::Code::DeadlineExceeded => RuntimeError::TimedOut(timeout),
                _ => rpc(e),
            })?
            .into_inner();
        Ok(ExecResult {
            exit_code: r.exit_code,
            stdout: r.stdout.to_vec(),
            stderr: r.stderr.to_vec(),
        })
    }

    fn rotates_logs(&self) -> bool {
        false
    }

    async fn reopen_container_log(&self, id: &str) -> Result<(), RuntimeError> {
        self.runtime
            .clone()
            .reopen_container_log(pb::ReopenContainerLogRequest {
                container_id: id.into(),
            })
            .await
            .map_err(rpc)?;
        Ok(())
    }

    fn manages_images(&self) -> bool {
        true
    }

    async fn image_status(&self, image: &str) -> Result<Option<ImageInfo>, RuntimeError> {
        let found = self
            .images
            .clone()
            .image_status(pb::ImageStatusRequest {
                image: image_spec(image),
                verbose: false,
            })
            .await
            .map_err(rpc)?
            .into_inner()
            .image;
        Ok(found.map(|i| self.image_info(i)))
    }

    async fn pull_image(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<String, RuntimeError> {
        // No server_address, as the kubelet sends none: containerd compares it with the
        // host it resolves the image to (a mirror's, docker.io's registry-1), and drops
        // the credentials when they differ.
        let auth = auth.map(|a| pb::AuthConfig {
            username: a.username.clone(),
            password: a.password.clone(),
            ..Default::default()
        });
        let pulled = self
            .pull_images
            .clone()
            .pull_image(pb::PullImageRequest {
                image: image_spec(image),
                auth,
                sandbox_config: None,
            })
            .await
            .map_err(|e| RuntimeError::Pull(e.message().to_string()))?;
        Ok(pulled.into_inner().image_ref)
    }

    async fn list_images(&self) -> Result<Vec<ImageInfo>, RuntimeError> {
        let images = self
            .images
            .clone()
            .list_images(pb::ListImagesRequest { filter: None })
            .await
            .map_err(rpc)?
            .into_inner()
            .images;
        Ok(images.into_iter().map(|i| self.image_info(i)).collect())
    }

    async fn container_images(&self) -> Result<Vec<String>, RuntimeError> {
        // No label filter: containers other clients made use images too.
        let containers = self
            .runtime
            .clone()
            .list_containers(pb::ListContainersRequest { filter: None })
            .await
            .map_err(rpc)?
            .into_inner()
            .containers;
        Ok(containers
            .into_iter()
            .flat_map(|c| [c.image_ref, c.image.map(|i| i.image).unwrap_or_default()])
            .filter(|i| !i.is_empty())
            .collect())
    }

    async fn remove_image(&self, image: &str) -> Result<(), RuntimeError> {
        match self
            .images
            .clone()
            .remove_image(pb::RemoveImageRequest {
                image: image_spec(image),
            })
            .await
        {
            Err(e) if e.code() != tonic::Code::NotFound => Err(rpc(e)),
            _ => Ok(()),
        }
    }

    async fn image_fs_usage(&self) -> Result<Option<ImageFsUsage>, RuntimeError> {
        let info = self
            .images
            .clone()
            .image_fs_info(pb::ImageFsInfoRequest {})
            .await
            .map_err(rpc)?
            .into_inner();
        // A filesystem the runtime does not locate cannot be measured: none, not "".
        Ok(info.image_filesystems.into_iter().find_map(|fs| {
            let mountpoint = fs.fs_id.map(|f| f.mountpoint).filter(|m| !m.is_empty())?;
            Some(ImageFsUsage {
                mountpoint: PathBuf::from(mountpoint),
                used_bytes: fs.used_bytes.map_or(0, |u| u.value),
            })
        }))
    }
}
