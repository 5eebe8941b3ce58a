//! The container runtime interface, shaped like Kubernetes' CRI (RuntimeService): a pod
//! is a sandbox holding containers; containers are created, started, stopped, removed and
//! inspected by id; their output goes to CRI-format log files named by the caller. Images
//! are pulled, listed and removed through it too (CRI's ImageService). The process runtime
//! runs host commands in cgroups; the CRI runtime drives containerd.

pub mod cri;
pub mod fake;
pub mod process;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A runtime call that failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// No sandbox or container with that id.
    #[error("{0} not found")]
    NotFound(String),
    /// The container's process could not be started.
    #[error("starting the container: {0}")]
    StartFailed(String),
    /// The request cannot be carried out by this runtime.
    #[error("{0}")]
    Invalid(String),
    /// The runtime's state or the host failed.
    #[error("{0}")]
    Io(String),
    /// A command run in a container did not finish in time (and was stopped).
    #[error("the command did not finish within {0:?}")]
    TimedOut(Duration),
    /// A command run in a container wrote more than exec returns (at least this many
    /// bytes, stdout and stderr together) and was stopped.
    #[error(
        "the command wrote {0} bytes, more than exec returns ({max})",
        max = flotilla_proto::exec::MAX_OUTPUT
    )]
    OutputTooLarge(usize),
    /// An image could not be pulled (the registry's or the runtime's words).
    #[error("{0}")]
    Pull(String),
}

impl From<crate::shim::ShimError> for RuntimeError {
    fn from(e: crate::shim::ShimError) -> Self {
        RuntimeError::Io(e.to_string())
    }
}

/// What a pod's sandbox is made from (CRI's PodSandboxConfig, the parts used here).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SandboxConfig {
    /// The pod's name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Its uid.
    pub uid: String,
    /// The restart attempt of the sandbox.
    pub attempt: u32,
    /// The hostname inside the pod.
    pub hostname: String,
    /// Where the pod's container logs go.
    pub log_directory: PathBuf,
    /// The pod's labels.
    pub labels: BTreeMap<String, String>,
    /// Host ports forwarded to the pod (a CRI runtime maps them with CNI's portmap).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<PortMapping>,
    /// The pod's resolver configuration; None leaves the runtime's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsConfig>,
    /// Limits on the pod as a whole, on its cgroup parent.
    #[serde(default)]
    pub resources: LinuxResources,
}

/// A host port forwarded to a container port of the pod.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// The port inside the pod.
    pub container_port: i32,
    /// The port on the node.
    pub host_port: i32,
    /// The node address it is bound on (empty: all).
    pub host_ip: String,
}

/// The pod's /etc/resolv.conf.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DnsConfig {
    /// Name servers.
    pub servers: Vec<String>,
    /// Search domains.
    pub searches: Vec<String>,
    /// Resolver options (`ndots:5`).
    pub options: Vec<String>,
}

/// Whether a sandbox can hold running containers.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum SandboxState {
    /// Ready.
    Ready,
    /// Stopped.
    NotReady,
}

/// A sandbox as the runtime reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SandboxStatus {
    /// Its id.
    pub id: String,
    /// What it was made from.
    pub config: SandboxConfig,
    /// Its state.
    pub state: SandboxState,
    /// The pod's IP.
    pub ip: String,
    /// When it was made (RFC 3339).
    pub created_at: String,
}

/// Limits for a container's cgroup.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LinuxResources {
    /// Relative cpu weight (cgroup v1 shares, from requests).
    pub cpu_shares: u64,
    /// CFS quota in µs per period (from limits); 0 for none.
    pub cpu_quota: i64,
    /// CFS period in µs.
    pub cpu_period: u64,
    /// Memory limit in bytes; 0 for none.
    pub memory_limit: i64,
    /// Most processes at once; 0 for none.
    pub pids_limit: i64,
}

/// What a container is made from (CRI's ContainerConfig, the parts used here).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerConfig {
    /// The container's name in the pod.
    pub name: String,
    /// The restart attempt (0 first).
    pub attempt: u32,
    /// The image named in the pod.
    pub image: String,
    /// The pod's `command` (empty: the image's entrypoint).
    pub command: Vec<String>,
    /// The pod's `args` (empty: the image's cmd, when `command` is empty too).
    pub args: Vec<String>,
    /// The environment.
    pub env: Vec<(String, String)>,
    /// The working directory.
    pub working_dir: Option<String>,
    /// The log file, relative to the sandbox's log directory.
    pub log_path: PathBuf,
    /// cgroup limits.
    pub resources: LinuxResources,
    /// Labels (pod and container identity).
    pub labels: BTreeMap<String, String>,
}

impl ContainerConfig {
    /// The program and its arguments for a runtime without images: `command` then `args`.
    pub fn argv(&self) -> Vec<String> {
        self.command.iter().chain(&self.args).cloned().collect()
    }
}

/// A container's state.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum ContainerState {
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Ended (or never started).
    Exited,
}

/// A container as the runtime reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    /// Its id.
    pub id: String,
    /// The sandbox it belongs to.
    pub sandbox_id: String,
    /// Its name, image and attempt.
    pub config: ContainerConfig,
    /// Its state.
    pub state: ContainerState,
    /// When it was created, started and finished (RFC 3339; empty if not yet).
    pub created_at: String,
    /// See `created_at`.
    pub started_at: String,
    /// See `created_at`.
    pub finished_at: String,
    /// Exit code, once exited.
    pub exit_code: i32,
    /// Kubernetes' reason once exited: Completed, Error, OOMKilled, StartError, …
    pub reason: String,
    /// Details.
    pub message: String,
    /// The full path of its log file.
    pub log_path: PathBuf,
    /// The id of the image it was made from, as [`ImageInfo::id`] names it ("" when the
    /// runtime does not say).
    #[serde(default)]
    pub image_id: String,
}

/// An image the runtime holds (CRI's Image, the parts used here).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageInfo {
    /// Its id (for OCI images, the config's digest).
    pub id: String,
    /// Names it is known by (`registry/repository:tag`).
    pub repo_tags: Vec<String>,
    /// Digests it is known by (`registry/repository@sha256:…`).
    pub repo_digests: Vec<String>,
    /// Bytes it takes.
    pub size: u64,
    /// The runtime needs it (the sandbox image): never removed by garbage collection.
    pub pinned: bool,
}

/// Credentials for a registry (CRI's AuthConfig).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RegistryAuth {
    /// The user.
    pub username: String,
    /// Their password.
    pub password: String,
    /// The registry's host (`host[:port]`) these were chosen for (for logs).
    pub server_address: String,
}

impl std::fmt::Debug for RegistryAuth {
    /// Never prints the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("server_address", &self.server_address)
            .finish_non_exhaustive()
    }
}

/// Where a runtime keeps its images and how much they take (CRI's ImageFsInfo).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFsUsage {
    /// The directory images are stored under (its filesystem's size comes from statvfs).
    pub mountpoint: PathBuf,
    /// Bytes the images take there.
    pub used_bytes: u64,
}

/// A container's resource use (CRI's ContainerStats, the parts used here).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerStats {
    /// CPU time used since the container started, in nanoseconds.
    pub cpu_usage_nanos: u64,
    /// Memory in use that cannot be reclaimed at once (usage less inactive file pages).
    pub memory_working_set_bytes: u64,
}

/// The outcome of a command run in a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecResult {
    /// Its exit code.
    pub exit_code: i32,
    /// What it wrote.
    pub stdout: Vec<u8>,
    /// See `stdout`.
    pub stderr: Vec<u8>,
}

/// A container runtime.
pub trait Runtime: Send + Sync + 'static {
    /// The runtime's name (for the Node's nodeInfo).
    fn name(&self) -> &'static str;
    /// The runtime and its version as nodeInfo.containerRuntimeVersion shows them
    /// (`containerd://1.6.20`, `process://0.1.0`).
    fn version(&self) -> String;

    /// Makes a pod's sandbox; returns its id.
    fn run_pod_sandbox(
        &self,
        cfg: &SandboxConfig,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send;
    /// Stops every container of the sandbox (each with `grace`) and marks it not ready.
    fn stop_pod_sandbox(
        &self,
        id: &str,
        grace: Duration,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Removes a stopped sandbox and its containers.
    fn remove_pod_sandbox(&self, id: &str)
    -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// One sandbox.
    fn pod_sandbox_status(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<SandboxStatus, RuntimeError>> + Send;
    /// Every sandbox.
    fn list_pod_sandboxes(
        &self,
    ) -> impl Future<Output = Result<Vec<SandboxStatus>, RuntimeError>> + Send;
    /// The sandboxes of the pod with `uid`. A runtime that can filter by pod should: every
    /// new pod asks, and listing all sandboxes for each makes a burst of N pods cost N².
    fn pod_sandboxes(
        &self,
        uid: &str,
    ) -> impl Future<Output = Result<Vec<SandboxStatus>, RuntimeError>> + Send {
        async move {
            Ok(self
                .list_pod_sandboxes()
                .await?
                .into_iter()
                .filter(|s| s.config.uid == uid)
                .collect())
        }
    }

    /// Creates a container in a sandbox; returns its id.
    fn create_container(
        &self,
        sandbox_id: &str,
        cfg: &ContainerConfig,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send;
    /// Starts a created container.
    fn start_container(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Stops a container: SIGTERM, then SIGKILL after `grace`.
    fn stop_container(
        &self,
        id: &str,
        grace: Duration,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Removes a container that is not running.
    fn remove_container(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Stops every running container of a sandbox at once, each with `grace`: a pod's grace
    /// period is the pod's, not each container's in turn.
    fn stop_running_containers(
        &self,
        sandbox_id: &str,
        grace: Duration,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        async move {
            let running: Vec<ContainerStatus> = self
                .list_containers(Some(sandbox_id))
                .await?
                .into_iter()
                .filter(|c| c.state == ContainerState::Running)
                .collect();
            futures::future::try_join_all(running.iter().map(|c| self.stop_container(&c.id, grace)))
                .await
                .map(|_| ())
        }
    }
    /// One container.
    fn container_status(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<ContainerStatus, RuntimeError>> + Send;
    /// Every container, or those of one sandbox.
    fn list_containers(
        &self,
        sandbox_id: Option<&str>,
    ) -> impl Future<Output = Result<Vec<ContainerStatus>, RuntimeError>> + Send;
    /// A running container's cpu and memory use.
    fn container_stats(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<ContainerStats, RuntimeError>> + Send;
    /// Runs a command in a container's context and waits for it (at most `timeout`). A
    /// runtime that reads the command's output itself stops it once it has written more
    /// than [`flotilla_proto::exec::MAX_OUTPUT`] ([`RuntimeError::OutputTooLarge`]).
    fn exec_sync(
        &self,
        id: &str,
        argv: &[String],
        timeout: Duration,
    ) -> impl Future<Output = Result<ExecResult, RuntimeError>> + Send;

    /// Whether the runtime caps its containers' log files itself. When not (CRI runtimes:
    /// containerd never rotates), the agent renames a full log and has the runtime reopen
    /// it (see [`crate::log_rotation`]).
    fn rotates_logs(&self) -> bool {
        true
    }
    /// Makes a running container write to a new file at its log path, the old one having
    /// been renamed (CRI's ReopenContainerLog). Only called when [`Runtime::rotates_logs`]
    /// is false.
    fn reopen_container_log(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        let id = id.to_string();
        async move {
            Err(RuntimeError::Invalid(format!(
                "container {id}: this runtime rotates its logs itself"
            )))
        }
    }

    // Images (CRI's ImageService). Each default means "this runtime does not manage
    // images": a container is made from its command alone, so every image is present,
    // a pull has nothing to do, and there is nothing to list, collect or measure.

    /// Whether containers come from images this runtime pulls and stores. When not, the
    /// agent neither pulls nor collects images, nor records Pulling / Pulled Events.
    fn manages_images(&self) -> bool {
        false
    }
    /// The image `image` names, or None when the runtime does not hold it.
    fn image_status(
        &self,
        image: &str,
    ) -> impl Future<Output = Result<Option<ImageInfo>, RuntimeError>> + Send {
        async move {
            Ok(Some(ImageInfo {
                id: image.to_string(),
                repo_tags: vec![image.to_string()],
                ..Default::default()
            }))
        }
    }
    /// Pulls `image`, with `auth` when given; returns the pulled image's reference.
    fn pull_image(
        &self,
        image: &str,
        _auth: Option<&RegistryAuth>,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send {
        async move { Ok(image.to_string()) }
    }
    /// Every image held.
    fn list_images(&self) -> impl Future<Output = Result<Vec<ImageInfo>, RuntimeError>> + Send {
        async { Ok(Vec::new()) }
    }
    /// The images (ids or names) of every container the runtime holds, running or not,
    /// whoever made it: garbage collection must keep them all.
    fn container_images(&self) -> impl Future<Output = Result<Vec<String>, RuntimeError>> + Send {
        async { Ok(Vec::new()) }
    }
    /// Removes an image by id or name (nothing if it is gone already).
    fn remove_image(&self, _image: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        async { Ok(()) }
    }
    /// Where images are stored and how much they take; None when the runtime stores none.
    fn image_fs_usage(
        &self,
    ) -> impl Future<Output = Result<Option<ImageFsUsage>, RuntimeError>> + Send {
        async { Ok(None) }
    }
}
