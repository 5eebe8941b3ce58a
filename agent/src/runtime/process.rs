//! The process runtime: a container is a host process running the pod's `command` and
//! `args` (the image is only recorded), supervised by a [shim](crate::shim) of its own, as
//! Nomad's exec driver runs tasks. Pods share the host's network, so a pod's IP is the
//! host's. State lives in files under the runtime's root, so a restarted agent sees every
//! sandbox and container exactly as they are:
//!
//! ```text
//! <root>/sandboxes/<id>/sandbox.json      SandboxStatus
//! <root>/sandboxes/<id>/containers/<cid>  one empty file per container of the sandbox
//! <root>/containers/<id>/meta.json        sandbox id, config, creation time
//! <root>/containers/<id>/config.json      what the shim runs
//! <root>/containers/<id>/shim.json        the shim's pid
//! <root>/containers/<id>/started.json     written by the shim: pid, start time
//! <root>/containers/<id>/exit.json        written by the shim: exit code, reason, time
//! ```

mod exec;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{
    ContainerConfig, ContainerState, ContainerStats, ContainerStatus, ExecResult, Runtime,
    RuntimeError, SandboxConfig, SandboxState, SandboxStatus,
};
use crate::cgroup::{Cgroup, Version};
use crate::log_rotation::LogLimits;
use crate::shim::{CgroupSpec, Exited, ShimConfig, Started, read_state, write_state};

/// The reason given when a container is refused for having no command.
pub const NO_COMMAND: &str = "the process runtime needs an explicit command";

/// How often state files are checked while waiting on a process.
const POLL: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    sandbox_id: String,
    config: ContainerConfig,
    created_at: String,
    log_path: PathBuf,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct ShimPid {
    pid: u32,
}

/// The runtime.
#[derive(Debug, Clone)]
pub struct ProcessRuntime {
    root: PathBuf,
    shim: PathBuf,
    host_ip: String,
    cgroups: Option<Version>,
    log_limits: LogLimits,
}

fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> RuntimeError {
    move |e| RuntimeError::Io(format!("{what}: {e}"))
}

fn alive(pid: u32) -> bool {
    i32::try_from(pid).is_ok_and(|p| kill(Pid::from_raw(p), None).is_ok())
}

/// (cpu ns, resident bytes) of one process, from /proc (clock ticks of 10 ms).
fn proc_usage(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let cpu = (ticks(11) + ticks(12)) * 10_000_000;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib = crate::node::meminfo_kib(&status, "VmRSS").unwrap_or(0);
    (cpu, rss_kib.max(0) as u64 * 1024)
}

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl ProcessRuntime {
    /// A runtime keeping its state under `root`, starting containers through the shim
    /// binary `shim` (`<shim> container-shim <dir>`), reporting `host_ip` as pods' IP.
    pub fn new(root: &Path, shim: &Path, host_ip: &str) -> Result<Self, RuntimeError> {
        for d in ["sandboxes", "containers"] {
            std::fs::create_dir_all(root.join(d)).map_err(io(root.join(d).display()))?;
        }
        let cgroups = crate::cgroup::detect();
        if cgroups.is_none() {
            tracing::warn!(
                "cgroups are not writable here (not root?): containers run without resource limits"
            );
        }
        Ok(ProcessRuntime {
            root: root.to_path_buf(),
            shim: shim.to_path_buf(),
            host_ip: host_ip.to_string(),
            cgroups,
            log_limits: LogLimits::default(),
        })
    }

    /// The same runtime capping container logs at `limits` (its shims rotate them).
    pub fn with_log_limits(mut self, limits: LogLimits) -> Self {
        self.log_limits = limits;
        self
    }

    /// The cgroup layout containers are confined in; None when they cannot be.
    pub fn cgroups(&self) -> Option<Version> {
        self.cgroups
    }

    fn pod_cgroup(uid: &str) -> String {
        format!("flotilla/pod{uid}")
    }

    fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.root.join("sandboxes").join(id)
    }

    fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }

    fn sandbox(&self, id: &str) -> Result<SandboxStatus, RuntimeError> {
        read_state(&self.sandbox_dir(id), "sandbox.json")?
            .ok_or_else(|| RuntimeError::NotFound(format!("sandbox {id}")))
    }

    fn meta(&self, id: &str) -> Result<Meta, RuntimeError> {
        read_state(&self.container_dir(id), "meta.json")?
            .ok_or_else(|| RuntimeError::NotFound(format!("container {id}")))
    }

    fn status_of(&self, id: &str) -> Result<ContainerStatus, RuntimeError> {
        let dir = self.container_dir(id);
        let meta = self.meta(id)?;
        let started: Option<Started> = read_state(&dir, "started.json")?;
        let exited: Option<Exited> = read_state(&dir, "exit.json")?;
        let shim: Option<ShimPid> = read_state(&dir, "shim.json")?;
        let mut status = ContainerStatus {
            id: id.to_string(),
            sandbox_id: meta.sandbox_id,
            config: meta.config,
            state: ContainerState::Created,
            created_at: meta.created_at,
            started_at: started
                .as_ref()
                .map(|s| s.started_at.clone())
                .unwrap_or_default(),
            finished_at: String::new(),
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            log_path: meta.log_path,
            image_id: String::new(),
        };
        match (exited, started, shim) {
            (Some(e), _, _) => {
                status.state = ContainerState::Exited;
                status.exit_code = e.exit_code;
                status.reason = e.reason;
                status.message = e.message;
                status.finished_at = e.finished_at;
            }
            (None, Some(s), shim) => {
                let watched = shim.is_some_and(|p| alive(p.pid));
                if watched || alive(s.pid) {
                    status.state = ContainerState::Running;
                } else {
                    // Both gone without a word (the host rebooted, someone killed the
                    // shim): report it as Kubernetes does for a container it lost.
                    status.state = ContainerState::Exited;
                    status.exit_code = 137;
                    status.reason = "ContainerStatusUnknown".into();
                    status.message = "the container's process and its shim are gone".into();
                }
            }
            (None, None, Some(p)) if !alive(p.pid) => {
                status.state = ContainerState::Exited;
                status.exit_code = 128;
                status.reason = "StartError".into();
                status.message = "the shim ended before starting the process".into();
            }
            _ => {}
        }
        Ok(status)
    }

    /// Waits until the container has an exit record or `deadline` passes.
    async fn wait_exit(&self, id: &str, deadline: Instant) -> Result<bool, RuntimeError> {
        loop {
            if self.status_of(id)?.state == ContainerState::Exited {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Runtime for ProcessRuntime {
    fn name(&self) -> &'static str {
        "process"
    }

    fn version(&self) -> String {
        concat!("process://", env!("CARGO_PKG_VERSION")).to_string()
    }

    async fn run_pod_sandbox(&self, cfg: &SandboxConfig) -> Result<String, RuntimeError> {
        let id = new_id();
        let dir = self.sandbox_dir(&id);
        std::fs::create_dir_all(&dir).map_err(io(dir.display()))?;
        std::fs::create_dir_all(&cfg.log_directory).map_err(io(cfg.log_directory.display()))?;
        if let Some(version) = self.cgroups {
            // The pod's limits as a whole; its containers' cgroups nest inside.
            Cgroup::at(version, &Self::pod_cgroup(&cfg.uid))
                .create(&cfg.resources)
                .map_err(|e| RuntimeError::Io(e.to_string()))?;
        }
        let status = SandboxStatus {
            id: id.clone(),
            config: cfg.clone(),
            state: SandboxState::Ready,
            ip: self.host_ip.clone(),
            created_at: jiff::Timestamp::now().to_string(),
        };
        write_state(&dir, "sandbox.json", &status)?;
        Ok(id)
    }

    async fn stop_pod_sandbox(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let mut sandbox = self.sandbox(id)?;
        self.stop_running_containers(id, grace).await?;
        sandbox.state = SandboxState::NotReady;
        write_state(&self.sandbox_dir(id), "sandbox.json", &sandbox)?;
        Ok(())
    }

    async fn remove_pod_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        for c in self.list_containers(Some(id)).await? {
            if c.state == ContainerState::Running {
                self.stop_container(&c.id, Duration::ZERO).await?;
            }
            self.remove_container(&c.id).await?;
        }
        if let (Some(version), Ok(sandbox)) = (self.cgroups, self.sandbox(id)) {
            // The pod's parent cgroup, empty once its containers are gone (removal may
            // wait out a busy cgroup: not on the runtime's threads).
            let cg = Cgroup::at(version, &Self::pod_cgroup(&sandbox.config.uid));
            match tokio::task::spawn_blocking(move || cg.remove()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(sandbox = id, error = %e, "removing the pod's cgroup"),
                Err(e) => tracing::warn!(sandbox = id, error = %e, "removing the pod's cgroup"),
            }
        }
        let dir = self.sandbox_dir(id);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(dir.display())(e)),
            _ => Ok(()),
        }
    }

    async fn pod_sandbox_status(&self, id: &str) -> Result<SandboxStatus, RuntimeError> {
        self.sandbox(id)
    }

    async fn list_pod_sandboxes(&self) -> Result<Vec<SandboxStatus>, RuntimeError> {
        let dir = self.root.join("sandboxes");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io(dir.display()))? {
            let entry = entry.map_err(io(dir.display()))?;
            if let Some(s) = read_state(&entry.path(), "sandbox.json")? {
                out.push(s);
            }
        }
        Ok(out)
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        cfg: &ContainerConfig,
    ) -> Result<String, RuntimeError> {
        let sandbox = self.sandbox(sandbox_id)?;
        if sandbox.state != SandboxState::Ready {
            return Err(RuntimeError::Invalid(format!(
                "sandbox {sandbox_id} is not ready"
            )));
        }
        if cfg.command.is_empty() && cfg.args.is_empty() {
            return Err(RuntimeError::Invalid(NO_COMMAND.into()));
        }
        let id = new_id();
        let dir = self.container_dir(&id);
        std::fs::create_dir_all(&dir).map_err(io(dir.display()))?;
        // The sandbox's index of its containers: listing a pod's containers reads only its
        // own, however many pods the node runs.
        let index = self.sandbox_dir(sandbox_id).join("containers");
        std::fs::create_dir_all(&index).map_err(io(index.display()))?;
        std::fs::write(index.join(&id), b"").map_err(io(index.display()))?;
        let log_path = sandbox.config.log_directory.join(&cfg.log_path);
        write_state(
            &dir,
            "config.json",
            &ShimConfig {
                argv: cfg.argv(),
                env: cfg.env.clone(),
                working_dir: cfg.working_dir.clone(),
                log_path: log_path.clone(),
                max_log_bytes: self.log_limits.max_size,
                // The shim counts rotated files; the limit counts the live one too.
                max_log_files: self.log_limits.max_files.saturating_sub(1),
                cgroup: self.cgroups.map(|version| CgroupSpec {
                    version,
                    path: format!("{}/{id}", Self::pod_cgroup(&sandbox.config.uid)),
                    resources: cfg.resources.clone(),
                }),
            },
        )?;
        write_state(
            &dir,
            "meta.json",
            &Meta {
                sandbox_id: sandbox_id.to_string(),
                config: cfg.clone(),
                created_at: jiff::Timestamp::now().to_string(),
                log_path,
            },
        )?;
        Ok(id)
    }

    async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        let status = self.status_of(id)?;
        if status.state != ContainerState::Created {
            return Err(RuntimeError::Invalid(format!(
                "container {id} is {:?}, not Created",
                status.state
            )));
        }
        let dir = self.container_dir(id);
        let shim_log = std::fs::File::create(dir.join("shim.log")).map_err(io(dir.display()))?;
        let mut child = tokio::process::Command::new(&self.shim)
            .arg("container-shim")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(shim_log)
            // Its own group: signals meant for the agent (a Ctrl-C, a SIGTERM to the
            // group) do not reach the containers.
            .process_group(0)
            .spawn()
            .map_err(io(self.shim.display()))?;
        let pid = child.id().unwrap_or_default();
        write_state(&dir, "shim.json", &ShimPid { pid })?;
        // Reap the shim when it ends (it is our child while we live).
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = self.status_of(id)?;
            match s.state {
                ContainerState::Running => return Ok(()),
                ContainerState::Exited if s.reason == "StartError" => {
                    return Err(RuntimeError::StartFailed(s.message));
                }
                ContainerState::Exited => return Ok(()),
                ContainerState::Created if Instant::now() >= deadline => {
                    return Err(RuntimeError::StartFailed(
                        "the shim did not start the process within 10s".into(),
                    ));
                }
                ContainerState::Created => tokio::time::sleep(POLL).await,
            }
        }
    }

    async fn stop_container(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let dir = self.container_dir(id);
        if self.status_of(id)?.state != ContainerState::Running {
            return Ok(());
        }
        let Some(started) = read_state::<Started>(&dir, "started.json")? else {
            return Ok(());
        };
        let group = Pid::from_raw(i32::try_from(started.pid).unwrap_or(i32::MAX));
        if !grace.is_zero() {
            let _ = killpg(group, Signal::SIGTERM);
            if self.wait_exit(id, Instant::now() + grace).await? {
                return Ok(());
            }
        }
        let _ = killpg(group, Signal::SIGKILL);
        if self
            .wait_exit(id, Instant::now() + Duration::from_secs(10))
            .await?
        {
            Ok(())
        } else {
            Err(RuntimeError::Io(format!(
                "container {id} did not end after SIGKILL"
            )))
        }
    }

    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        if self.status_of(id)?.state == ContainerState::Running {
            return Err(RuntimeError::Invalid(format!(
                "container {id} is running; stop it first"
            )));
        }
        let sandbox_id = self.meta(id)?.sandbox_id;
        let _ = std::fs::remove_file(self.sandbox_dir(&sandbox_id).join("containers").join(id));
        let dir = self.container_dir(id);
        std::fs::remove_dir_all(&dir).map_err(io(dir.display()))
    }

    async fn container_status(&self, id: &str) -> Result<ContainerStatus, RuntimeError> {
        self.status_of(id)
    }

    async fn list_containers(
        &self,
        sandbox_id: Option<&str>,
    ) -> Result<Vec<ContainerStatus>, RuntimeError> {
        let dir = match sandbox_id {
            Some(sb) => self.sandbox_dir(sb).join("containers"),
            None => self.root.join("containers"),
        };
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            // A sandbox with no container yet has no index.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(dir.display())(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io(dir.display()))?;
            let id = entry.file_name().to_string_lossy().to_string();
            match self.status_of(&id) {
                Ok(s) => out.push(s),
                Err(RuntimeError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    async fn container_stats(&self, id: &str) -> Result<ContainerStats, RuntimeError> {
        let dir = self.container_dir(id);
        if self.status_of(id)?.state != ContainerState::Running {
            return Err(RuntimeError::Invalid(format!(
                "container {id} is not running"
            )));
        }
        let cfg: Option<ShimConfig> = read_state(&dir, "config.json")?;
        let (cpu, memory) = match cfg.and_then(|c| c.cgroup) {
            Some(spec) => Cgroup::at(spec.version, &spec.path).usage(),
            // Unconfined: the main process alone, from /proc.
            None => {
                let pid = read_state::<Started>(&dir, "started.json")?
                    .map(|s| s.pid)
                    .unwrap_or(0);
                proc_usage(pid)
            }
        };
        Ok(ContainerStats {
            cpu_usage_nanos: cpu,
            memory_working_set_bytes: memory,
        })
    }

    async fn exec_sync(
        &self,
        id: &str,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecResult, RuntimeError> {
        let meta = self.meta(id)?;
        let Some((program, args)) = argv.split_first() else {
            return Err(RuntimeError::Invalid("exec needs a command".into()));
        };
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args).env_clear();
        if !meta.config.env.iter().any(|(k, _)| k == "PATH") {
            cmd.env("PATH", crate::shim::DEFAULT_PATH);
        }
        cmd.envs(meta.config.env.iter().map(|(k, v)| (k, v)));
        if let Some(wd) = meta.config.working_dir.as_deref().filter(|w| !w.is_empty()) {
            cmd.current_dir(wd);
        }
        exec::run(cmd, timeout, flotilla_proto::exec::MAX_OUTPUT).await
    }
}
