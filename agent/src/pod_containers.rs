//! The containers the runtime holds for one pod, found through its sandboxes: by uid when
//! the caller knows it (a pod deleted and made again under the same name is another pod),
//! else by namespace and name; and, for logs and exec alike, the instances of the
//! container a request names.

use tonic::Status;

use crate::runtime::{ContainerStatus, Runtime, RuntimeError};

/// Why the container a request names cannot be found.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The runtime holds no container of the pod.
    #[error("pod {pod} has no containers on this node yet")]
    NoContainers {
        /// namespace/name.
        pod: String,
    },
    /// No container named, and the pod has several.
    #[error("a container name must be specified for pod {pod}, choose one of: [{names}]")]
    ContainerRequired {
        /// namespace/name.
        pod: String,
        /// Its containers, space-separated.
        names: String,
    },
    /// The runtime holds no container of that name for the pod. The API server has
    /// checked the name against the pod's spec, so this is one not created yet (or a
    /// caller that went around the API server).
    #[error(
        "container {container} of pod {pod} has not been created on this node; its containers here: {names}"
    )]
    UnknownContainer {
        /// The name asked for.
        container: String,
        /// namespace/name.
        pod: String,
        /// Its containers, comma-separated.
        names: String,
    },
    /// Listing the pod's containers failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl LookupError {
    /// The gRPC status the API server turns back into an API error.
    pub fn to_status(&self) -> Status {
        let msg = self.to_string();
        match self {
            LookupError::NoContainers { .. } | LookupError::Runtime(RuntimeError::NotFound(_)) => {
                Status::not_found(msg)
            }
            LookupError::ContainerRequired { .. } | LookupError::UnknownContainer { .. } => {
                Status::invalid_argument(msg)
            }
            LookupError::Runtime(_) => Status::internal(msg),
        }
    }
}

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

/// The instances of one container of a pod, all attempts the runtime still holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instances {
    /// The latest attempt.
    pub newest: ContainerStatus,
    /// The attempts before it, newest first.
    pub older: Vec<ContainerStatus>,
}

/// The instances of container `wanted` (empty: the pod's only container) among
/// `containers`, those of pod `pod` (namespace/name).
pub fn instances(
    containers: Vec<ContainerStatus>,
    pod: &str,
    wanted: &str,
) -> Result<Instances, LookupError> {
    let names = names(&containers);
    let name = match (wanted, names.as_slice()) {
        (_, []) => return Err(LookupError::NoContainers { pod: pod.into() }),
        ("", [one]) => one.clone(),
        ("", many) => {
            return Err(LookupError::ContainerRequired {
                pod: pod.into(),
                names: many.join(" "),
            });
        }
        (w, _) if !names.iter().any(|n| n == w) => {
            return Err(LookupError::UnknownContainer {
                container: w.into(),
                pod: pod.into(),
                names: names.join(", "),
            });
        }
        (w, _) => w.to_string(),
    };
    let mut mine: Vec<ContainerStatus> = containers
        .into_iter()
        .filter(|c| c.config.name == name)
        .collect();
    mine.sort_by_key(|c| std::cmp::Reverse(c.config.attempt));
    let mut newest_first = mine.into_iter();
    // The name was read off one of these containers, so there is at least one.
    let newest = newest_first
        .next()
        .ok_or_else(|| LookupError::NoContainers { pod: pod.into() })?;
    Ok(Instances {
        newest,
        older: newest_first.collect(),
    })
}

/// The instances of the container `wanted` (empty: the only one) of pod `namespace/name`
/// (`uid`, when known, picks the pod among namesakes), as logs and exec requests name it.
pub async fn lookup<R: Runtime>(
    runtime: &R,
    namespace: &str,
    name: &str,
    uid: &str,
    wanted: &str,
) -> Result<Instances, LookupError> {
    let containers = of_pod(runtime, namespace, name, uid).await?;
    instances(containers, &format!("{namespace}/{name}"), wanted)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::runtime::{ContainerConfig, ContainerState};

    /// A container instance `name`-`attempt`.
    pub(crate) fn status(name: &str, attempt: u32, state: ContainerState) -> ContainerStatus {
        ContainerStatus {
            id: format!("{name}-{attempt}"),
            sandbox_id: "sb".into(),
            config: ContainerConfig {
                name: name.into(),
                attempt,
                ..Default::default()
            },
            state,
            created_at: String::new(),
            started_at: String::new(),
            finished_at: String::new(),
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            log_path: Default::default(),
            image_id: String::new(),
        }
    }

    fn ids(found: &Instances) -> Vec<&str> {
        std::iter::once(&found.newest)
            .chain(&found.older)
            .map(|c| c.id.as_str())
            .collect()
    }

    #[test]
    fn the_named_containers_instances_come_newest_first() {
        let all = vec![
            status("main", 0, ContainerState::Exited),
            status("side", 0, ContainerState::Running),
            status("main", 2, ContainerState::Running),
            status("main", 1, ContainerState::Exited),
        ];
        let found = instances(all.clone(), "ns/p", "main").expect("main");
        assert_eq!(ids(&found), ["main-2", "main-1", "main-0"]);
        let found = instances(all, "ns/p", "side").expect("side");
        assert_eq!(ids(&found), ["side-0"]);
        let only = vec![status("main", 0, ContainerState::Running)];
        let found = instances(only, "ns/p", "").expect("the only one");
        assert_eq!(ids(&found), ["main-0"]);
    }

    #[test]
    fn a_container_that_is_missing_or_ambiguous_is_named_in_the_error() {
        let all = vec![
            status("main", 0, ContainerState::Running),
            status("side", 0, ContainerState::Exited),
        ];
        let e = instances(all.clone(), "ns/p", "nope").expect_err("unknown");
        assert_eq!(
            e.to_string(),
            "container nope of pod ns/p has not been created on this node; its containers here: main, side"
        );
        assert_eq!(e.to_status().code(), tonic::Code::InvalidArgument);
        let e = instances(all, "ns/p", "").expect_err("ambiguous");
        assert_eq!(
            e.to_string(),
            "a container name must be specified for pod ns/p, choose one of: [main side]"
        );
        assert_eq!(e.to_status().code(), tonic::Code::InvalidArgument);
        let e = instances(Vec::new(), "ns/p", "main").expect_err("none");
        assert_eq!(e.to_string(), "pod ns/p has no containers on this node yet");
        assert_eq!(e.to_status().code(), tonic::Code::NotFound);
    }
}
