//! Where a `pods/log` or `pods/exec` request goes, checked against the pod as the API
//! holds it: the pod's node, its uid (so that the agent finds this pod and not an older
//! namesake), and the container the request names.

use serde_json::Value;

use super::Api;
use super::agent_proxy::object;
use crate::error::ApiError;

/// The pod subresource a request is for: they accept different pods and containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    /// `pods/log`: a pod in any phase (a finished pod's log is still there); with no
    /// container named, the agent takes the pod's only one or names the choices.
    Log,
    /// `pods/exec`: a pod not finished; with no container named, the pod's first.
    Exec,
}

/// Where a request goes, once checked against its pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodTarget {
    /// The pod's node.
    pub node: String,
    /// The container: the one named, or the default [`Subresource`] says (empty for a
    /// log request that named none).
    pub container: String,
    /// The pod's uid.
    pub uid: String,
}

/// Where a `sub` request for container `container` (empty: the default) of `pod` goes,
/// or why it cannot.
pub fn pod_target(pod: &Value, container: &str, sub: Subresource) -> Result<PodTarget, ApiError> {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    if sub == Subresource::Exec {
        let phase = pod["status"]["phase"].as_str().unwrap_or_default();
        if matches!(phase, "Succeeded" | "Failed") {
            return Err(ApiError::bad_request(format!(
                "cannot exec into a container in a completed pod; current phase is {phase}"
            )));
        }
    }
    let Some(node) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) else {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    };
    let names = |key: &str| -> Vec<&str> {
        pod["spec"][key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str())
            .collect()
    };
    let containers = names("containers");
    let container = match (container, sub) {
        ("", Subresource::Log) => "",
        ("", Subresource::Exec) => containers
            .first()
            .copied()
            .ok_or_else(|| ApiError::bad_request(format!("pod {name} has no containers")))?,
        (c, _) if containers.contains(&c) || names("initContainers").contains(&c) => c,
        (c, _) => {
            let mut all = names("initContainers");
            all.extend(&containers);
            return Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {name}; its containers: {}",
                all.join(", ")
            )));
        }
    };
    Ok(PodTarget {
        node: node.to_string(),
        container: container.to_string(),
        uid: pod["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    })
}

impl Api {
    /// Where a `sub` request for container `container` of pod `namespace/name` goes, the
    /// pod read as it is now.
    pub async fn pod_target(
        &self,
        namespace: &str,
        name: &str,
        container: &str,
        sub: Subresource,
    ) -> Result<PodTarget, ApiError> {
        let pod = self.get(&object("v1", "pods", namespace, name), "").await?;
        pod_target(&pod, container, sub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Reason;
    use serde_json::json;

    fn pod(node: &str, phase: &str) -> Value {
        json!({
            "metadata": {"name": "web", "uid": "u1"},
            "spec": {
                "nodeName": node,
                "initContainers": [{"name": "setup"}],
                "containers": [{"name": "main"}, {"name": "side"}],
            },
            "status": {"phase": phase},
        })
    }

    #[test]
    fn exec_defaults_to_the_first_container_and_logs_leave_it_to_the_agent() {
        let p = pod("n1", "Running");
        let target = |c, sub| pod_target(&p, c, sub).expect("a target");
        assert_eq!(
            target("", Subresource::Exec),
            PodTarget {
                node: "n1".into(),
                container: "main".into(),
                uid: "u1".into()
            }
        );
        assert_eq!(target("", Subresource::Log).container, "");
        for sub in [Subresource::Log, Subresource::Exec] {
            assert_eq!(target("side", sub).container, "side");
            assert_eq!(target("setup", sub).container, "setup");
        }
    }

    #[test]
    fn a_container_the_pod_does_not_have_is_refused_with_the_ones_it_has() {
        let p = pod("n1", "Running");
        for sub in [Subresource::Log, Subresource::Exec] {
            let e = pod_target(&p, "nope", sub).expect_err("unknown");
            assert_eq!(e.reason, Reason::BadRequest);
            assert_eq!(
                e.message,
                "container nope is not valid for pod web; its containers: setup, main, side"
            );
        }
    }

    #[test]
    fn a_pod_not_placed_is_refused_and_a_finished_one_only_for_exec() {
        for sub in [Subresource::Log, Subresource::Exec] {
            let e = pod_target(&pod("", "Pending"), "", sub).expect_err("unscheduled");
            assert_eq!(e.reason, Reason::BadRequest);
            assert_eq!(e.message, "pod web does not have a host assigned");
        }
        let e = pod_target(&pod("n1", "Succeeded"), "", Subresource::Exec).expect_err("done");
        assert!(
            e.message
                .contains("completed pod; current phase is Succeeded"),
            "{}",
            e.message
        );
        assert!(pod_target(&pod("n1", "Succeeded"), "main", Subresource::Log).is_ok());
        assert!(pod_target(&pod("n1", "Pending"), "main", Subresource::Exec).is_ok());
    }
}
