//! A simulated runtime for scale tests (`flotilla hollow-nodes`, like Kubernetes'
//! kubemark): sandboxes and containers exist only in memory, containers "run" from the
//! moment they start until they are stopped, and nothing is executed. Never a default.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::{
    ContainerConfig, ContainerState, ContainerStats, ContainerStatus, ExecResult, Runtime,
    RuntimeError, SandboxConfig, SandboxState, SandboxStatus,
};

#[derive(Default)]
struct State {
    sandboxes: HashMap<String, SandboxStatus>,
    containers: HashMap<String, ContainerStatus>,
}

/// The simulated runtime.
#[derive(Default)]
pub struct FakeRuntime {
    state: Mutex<State>,
    ip: String,
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
        }
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
