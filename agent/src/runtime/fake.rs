//! A simulated runtime for scale tests (`flotilla hollow-nodes`, like Kubernetes'
//! kubemark): sandboxes and containers exist only in memory, containers "run" from the
//! moment they start until they are stopped, and nothing is executed. Never a default.
//! Unit tests may give it images ([`FakeRuntime::with_images`]): a store of images and a
//! pretend registry to pull from, with credentials, so the agent's pulls and image garbage
//! collection can be exercised without a registry.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use super::{
    ContainerConfig, ContainerState, ContainerStats, ContainerStatus, ExecResult, ImageFsUsage,
    ImageInfo, RegistryAuth, Runtime, RuntimeError, SandboxConfig, SandboxState, SandboxStatus,
};

/// An image the pretend registry serves: its size and the credentials it asks for.
#[derive(Debug, Clone)]
struct Served {
    size: u64,
    credentials: Option<(String, String)>,
}

#[derive(Default)]
struct State {
    sandboxes: HashMap<String, SandboxStatus>,
    containers: HashMap<String, ContainerStatus>,
    /// Images held, by id.
    images: BTreeMap<String, ImageInfo>,
    registry: HashMap<String, Served>,
    pulls: Vec<(String, Option<RegistryAuth>)>,
    reopened: Vec<String>,
    image_status_calls: usize,
}

impl State {
    fn image_named(&self, name: &str) -> Option<&ImageInfo> {
        self.images
            .values()
            .find(|i| i.id == name || i.repo_tags.iter().any(|t| t == name))
    }
}

/// The simulated runtime.
#[derive(Default)]
pub struct FakeRuntime {
    state: Mutex<State>,
    ip: String,
    images: bool,
    /// Leaves log rotation to the agent, as a CRI runtime does.
    agent_rotates_logs: bool,
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

impl FakeRuntime {
    /// A runtime whose pods report `ip`.
    pub fn new(ip: &str) -> Self {
        FakeRuntime {
            state: Mutex::default(),
            ip: ip.to_string(),
            images: false,
            agent_rotates_logs: false,
        }
    }

    /// The same runtime leaving log rotation to the agent: a log reopened is recreated
    /// empty at its path, as containerd does.
    pub fn without_log_rotation(mut self) -> Self {
        self.agent_rotates_logs = true;
        self
    }

    /// The containers whose logs were reopened, in order.
    pub fn reopened(&self) -> Vec<String> {
        self.lock().reopened.clone()
    }

    /// The same runtime managing images: containers need them pulled first.
    pub fn with_images(mut self) -> Self {
        self.images = true;
        self
    }

    /// Makes `name` present, as if pulled before, with its own id; returns the id.
    pub fn add_image(&self, name: &str, size: u64) -> String {
        let id = format!("sha256:{}", uuid::Uuid::new_v4().simple());
        self.lock().images.insert(
            id.clone(),
            ImageInfo {
                id: id.clone(),
                repo_tags: vec![name.to_string()],
                repo_digests: Vec::new(),
                size,
                pinned: false,
            },
        );
        id
    }

    /// Lets `name` be pulled, only with `credentials` (user, password) when given.
    pub fn serve_image(&self, name: &str, size: u64, credentials: Option<(&str, &str)>) {
        self.lock().registry.insert(
            name.to_string(),
            Served {
                size,
                credentials: credentials.map(|(u, p)| (u.to_string(), p.to_string())),
            },
        );
    }

    /// Every pull asked for, in order, with the credentials it carried.
    pub fn pulls(&self) -> Vec<(String, Option<RegistryAuth>)> {
        self.lock().pulls.clone()
    }

    /// How many times an image's status was asked for.
    pub fn image_status_calls(&self) -> usize {
        self.lock().image_status_calls
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn missing(what: &str, id: &str) -> RuntimeError {
    RuntimeError::NotFound(format!("{what} {id}"))
}

impl Runtime for FakeRuntime {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn version(&self) -> String {
        concat!("fake://", env!("CARGO_PKG_VERSION")).to_string()
    }

    async fn run_pod_sandbox(&self, cfg: &SandboxConfig) -> Result<String, RuntimeError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        self.lock().sandboxes.insert(
            id.clone(),
            SandboxStatus {
                id: id.clone(),
                config: cfg.clone(),
                state: SandboxState::Ready,
                ip: self.ip.clone(),
                created_at: now(),
            },
        );
        Ok(id)
    }

    async fn stop_pod_sandbox(&self, id: &str, _grace: Duration) -> Result<(), RuntimeError> {
        let mut s = self.lock();
        for c in s.containers.values_mut().filter(|c| c.sandbox_id == id) {
            if c.state == ContainerState::Running {
                c.state = ContainerState::Exited;
                c.finished_at = now();
                c.reason = "Completed".into();
            }
        }
        let sandbox = s
            .sandboxes
            .get_mut(id)
            .ok_or_else(|| missing("sandbox", id))?;
        sandbox.state = SandboxState::NotReady;
        Ok(())
    }

    async fn remove_pod_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        let mut s = self.lock();
        s.containers.retain(|_, c| c.sandbox_id != id);
        s.sandboxes.remove(id);
        Ok(())
    }

    async fn pod_sandbox_status(&self, id: &str) -> Result<SandboxStatus, RuntimeError> {
        self.lock()
            .sandboxes
            .get(id)
            .cloned()
            .ok_or_else(|| missing("sandbox", id))
    }

    async fn list_pod_sandboxes(&self) -> Result<Vec<SandboxStatus>, RuntimeError> {
        Ok(self.lock().sandboxes.values().cloned().collect())
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        cfg: &ContainerConfig,
    ) -> Result<String, RuntimeError> {
        let mut s = self.lock();
        let log_dir = s
            .sandboxes
            .get(sandbox_id)
            .map(|sb| sb.config.log_directory.clone())
            .ok_or_else(|| missing("sandbox", sandbox_id))?;
        let image_id = s.image_named(&cfg.image).map(|i| i.id.clone());
        if self.images && image_id.is_none() {
            // As containerd's CreateContainer: it never pulls.
            return Err(RuntimeError::NotFound(format!("image {}", cfg.image)));
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        s.containers.insert(
            id.clone(),
            ContainerStatus {
                id: id.clone(),
                sandbox_id: sandbox_id.to_string(),
                config: cfg.clone(),
                state: ContainerState::Created,
                created_at: now(),
                started_at: String::new(),
                finished_at: String::new(),
                exit_code: 0,
                reason: String::new(),
                message: String::new(),
                log_path: log_dir.join(&cfg.log_path),
                image_id: image_id.unwrap_or_default(),
            },
        );
        Ok(id)
    }

    async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        let mut s = self.lock();
        let c = s
            .containers
            .get_mut(id)
            .ok_or_else(|| missing("container", id))?;
        c.state = ContainerState::Running;
        c.started_at = now();
        Ok(())
    }

    async fn stop_container(&self, id: &str, _grace: Duration) -> Result<(), RuntimeError> {
        let mut s = self.lock();
        let c = s
            .containers
            .get_mut(id)
            .ok_or_else(|| missing("container", id))?;
        if c.state == ContainerState::Running {
            c.state = ContainerState::Exited;
            c.finished_at = now();
            c.reason = "Completed".into();
        }
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        self.lock().containers.remove(id);
        Ok(())
    }

    async fn container_status(&self, id: &str) -> Result<ContainerStatus, RuntimeError> {
        self.lock()
            .containers
            .get(id)
            .cloned()
            .ok_or_else(|| missing("container", id))
    }

    async fn list_containers(
        &self,
        sandbox_id: Option<&str>,
    ) -> Result<Vec<ContainerStatus>, RuntimeError> {
        Ok(self
            .lock()
            .containers
            .values()
            .filter(|c| sandbox_id.is_none_or(|s| c.sandbox_id == s))
            .cloned()
            .collect())
    }

    async fn container_stats(&self, id: &str) -> Result<ContainerStats, RuntimeError> {
        self.container_status(id).await?;
        Ok(ContainerStats::default())
    }

    async fn exec_sync(
        &self,
        id: &str,
        _argv: &[String],
        _timeout: Duration,
    ) -> Result<ExecResult, RuntimeError> {
        self.container_status(id).await?;
        Ok(ExecResult {
            exit_code: 0,
            stdout: Vec::new(),
            stderr: Vec::new(),
        })
    }

    fn rotates_logs(&self) -> bool {
        !self.agent_rotates_logs
    }

    async fn reopen_container_log(&self, id: &str) -> Result<(), RuntimeError> {
        let log = self.container_status(id).await?.log_path;
        std::fs::File::create(&log)
            .map_err(|e| RuntimeError::Io(format!("{}: {e}", log.display())))?;
        self.lock().reopened.push(id.to_string());
        Ok(())
    }

    fn manages_images(&self) -> bool {
        self.images
    }

    async fn image_status(&self, image: &str) -> Result<Option<ImageInfo>, RuntimeError> {
        self.lock().image_status_calls += 1;
        if !self.images {
            return Ok(Some(ImageInfo {
                id: image.to_string(),
                repo_tags: vec![image.to_string()],
                ..Default::default()
            }));
        }
        Ok(self.lock().image_named(image).cloned())
    }

    async fn pull_image(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<String, RuntimeError> {
        let mut s = self.lock();
        s.pulls.push((image.to_string(), auth.cloned()));
        if !self.images {
            return Ok(image.to_string());
        }
        let served = s
            .registry
            .get(image)
            .cloned()
            .ok_or_else(|| RuntimeError::Pull(format!("{image}: not found")))?;
        if let Some((user, password)) = &served.credentials {
            let given = auth.map(|a| (a.username.as_str(), a.password.as_str()));
            if given != Some((user.as_str(), password.as_str())) {
                return Err(RuntimeError::Pull(format!(
                    "pulling {image}: 401 Unauthorized"
                )));
            }
        }
        if let Some(held) = s.image_named(image) {
            return Ok(held.id.clone());
        }
        drop(s);
        Ok(self.add_image(image, served.size))
    }

    async fn list_images(&self) -> Result<Vec<ImageInfo>, RuntimeError> {
        Ok(self.lock().images.values().cloned().collect())
    }

    async fn container_images(&self) -> Result<Vec<String>, RuntimeError> {
        Ok(self
            .lock()
            .containers
            .values()
            .flat_map(|c| [c.image_id.clone(), c.config.image.clone()])
            .filter(|i| !i.is_empty())
            .collect())
    }

    async fn remove_image(&self, image: &str) -> Result<(), RuntimeError> {
        let mut s = self.lock();
        if let Some(id) = s.image_named(image).map(|i| i.id.clone()) {
            s.images.remove(&id);
        }
        Ok(())
    }

    async fn image_fs_usage(&self) -> Result<Option<ImageFsUsage>, RuntimeError> {
        if !self.images {
            return Ok(None);
        }
        Ok(Some(ImageFsUsage {
            mountpoint: std::path::PathBuf::from("/"),
            used_bytes: self.lock().images.values().map(|i| i.size).sum(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn containers_run_until_stopped() {
        let rt = FakeRuntime::new("10.0.0.9");
        let sb = rt
            .run_pod_sandbox(&SandboxConfig::default())
            .await
            .expect("sandbox");
        let id = rt
            .create_container(&sb, &ContainerConfig::default())
            .await
            .expect("create");
        rt.start_container(&id).await.expect("start");
        assert_eq!(
            rt.container_status(&id).await.expect("status").state,
            ContainerState::Running
        );
        rt.stop_pod_sandbox(&sb, Duration::ZERO)
            .await
            .expect("stop");
        assert_eq!(
            rt.container_status(&id).await.expect("status").state,
            ContainerState::Exited
        );
        rt.remove_pod_sandbox(&sb).await.expect("remove");
        assert!(rt.list_containers(None).await.expect("list").is_empty());
    }
}
