//! The containers the runtime holds for one pod, found through its sandboxes: by uid when
//! the caller knows it (a pod deleted and made again under the same name is another pod),
//! else by namespace and name.

use crate::runtime::{ContainerStatus, Runtime, RuntimeError};

/// Every container instance (all attempts) of the pod's sandboxes on this node.
pub async fn of_pod<R: Runtime>(
    runtime: &R,
    namespace: &str,
    name: &str,
    uid: &str,
) -> Result<Vec<ContainerStatus>, RuntimeError> {
    let sandboxes = if uid.is_empty() {
        runtime
            .list_pod_sandboxes()
            .await?
            .into_iter()
            .filter(|s| s.config.namespace == namespace && s.config.name == name)
            .collect()
    } else {
        runtime.pod_sandboxes(uid).await?
    };
    let mut containers = Vec::new();
    for s in &sandboxes {
        containers.extend(runtime.list_containers(Some(&s.id)).await?);
    }
    Ok(containers)
}

/// The distinct container names among `containers`, sorted.
pub fn names(containers: &[ContainerStatus]) -> Vec<String> {
    let mut names: Vec<String> = containers.iter().map(|c| c.config.name.clone()).collect();
    names.sort();
    names.dedup();
    names
}
