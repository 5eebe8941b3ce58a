//! Exec (`pods/exec`): the API server checks the request against the pod (a command, a
//! sane timeout, a pod that is placed and not finished, a container it has), defaults the
//! container to the pod's first, and asks the pod's node agent to run the command
//! (`flotilla.agent.v1.Agent/ExecSync`), returning its output and exit code whole.

use std::time::Duration;

use flotilla_proto::api::{ExecRequest, ExecResponse};
use serde_json::Value;

use super::Api;
use super::agent_proxy::{agent_error, object};
use crate::error::ApiError;

/// How long past the command's timeout the agent gets to answer (connecting, reporting a
/// command it had to stop).
const AGENT_GRACE: Duration = Duration::from_secs(10);

/// Where an exec request goes, once checked against its pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecTarget {
    /// The pod's node.
    pub node: String,
    /// The container (the pod's first when the request named none).
    pub container: String,
    /// The pod's uid, so that the agent finds this pod and not an older namesake.
    pub uid: String,
}

/// The request's command and timeout, checked as the agent checks them; returns the
/// timeout.
pub fn check_request(req: &ExecRequest) -> Result<Duration, ApiError> {
    flotilla_proto::exec::check(req).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// Where a command for container `container` (empty: the first) of `pod` runs, or why it
/// cannot.
pub fn exec_target(pod: &Value, container: &str) -> Result<ExecTarget, ApiError> {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let phase = pod["status"]["phase"].as_str().unwrap_or_default();
    if matches!(phase, "Succeeded" | "Failed") {
        return Err(ApiError::bad_request(format!(
            "cannot exec into a container in a completed pod; current phase is {phase}"
        )));
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
    let container = if container.is_empty() {
        containers
            .first()
            .copied()
            .ok_or_else(|| ApiError::bad_request(format!("pod {name} has no containers")))?
    } else if containers.contains(&container) || names("initContainers").contains(&container) {
        container
    } else {
        let mut all = names("initContainers");
        all.extend(&containers);
        return Err(ApiError::bad_request(format!(
            "container {container} is not valid for pod {name}; its containers: {}",
            all.join(", ")
        )));
    };
    Ok(ExecTarget {
        node: node.to_string(),
        container: container.to_string(),
        uid: pod["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    })
}

impl Api {
    /// Runs `req.command` in a container of pod `req.namespace/req.name`, through its
    /// node's agent.
    pub async fn exec(&self, mut req: ExecRequest) -> Result<ExecResponse, ApiError> {
        let timeout = check_request(&req)?;
        let pod = self
            .get(&object("v1", "pods", &req.namespace, &req.name), "")
            .await?;
        let target = exec_target(&pod, &req.container)?;
        req.container = target.container;
        req.pod_uid = target.uid;
        req.timeout_seconds = i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX);
        let mut agent = self.agent_of(&target.node).await?;
        let call = self.agent_request(req).await?;
        let answer = tokio::time::timeout(timeout + AGENT_GRACE, agent.exec_sync(call))
            .await
            .map_err(|_| {
                ApiError::timeout(format!(
                    "the agent of node {} did not answer within {:?}",
                    target.node,
                    timeout + AGENT_GRACE
                ))
            })?;
        Ok(answer.map_err(|s| agent_error(&s))?.into_inner())
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
    fn a_bad_command_or_timeout_is_a_bad_request_naming_it() {
        let e = check_request(&ExecRequest::default()).expect_err("no command");
        assert_eq!(e.reason, Reason::BadRequest);
        assert!(e.message.contains("at least one command"), "{}", e.message);
        let too_long = ExecRequest {
            command: vec!["ls".into()],
            timeout_seconds: 601,
            ..Default::default()
        };
        let e = check_request(&too_long).expect_err("out of range");
        assert_eq!(e.reason, Reason::BadRequest);
        assert_eq!(
            e.message,
            "timeoutSeconds 601 is out of range: 1 to 600 (0 for 60)"
        );
    }

    #[test]
    fn the_first_container_is_the_default_and_others_are_checked() {
        let p = pod("n1", "Running");
        let t = exec_target(&p, "").expect("default");
        assert_eq!(
            t,
            ExecTarget {
                node: "n1".into(),
                container: "main".into(),
                uid: "u1".into()
            }
        );
        assert_eq!(exec_target(&p, "side").expect("side").container, "side");
        assert_eq!(exec_target(&p, "setup").expect("init").container, "setup");
        let e = exec_target(&p, "nope").expect_err("unknown");
        assert_eq!(
            e.message,
            "container nope is not valid for pod web; its containers: setup, main, side"
        );
    }

    #[test]
    fn a_pod_not_placed_or_finished_is_refused() {
        let e = exec_target(&pod("", "Pending"), "").expect_err("unscheduled");
        assert_eq!(e.reason, Reason::BadRequest);
        assert_eq!(e.message, "pod web does not have a host assigned");
        let e = exec_target(&pod("n1", "Succeeded"), "").expect_err("done");
        assert!(
            e.message
                .contains("completed pod; current phase is Succeeded")
        );
        assert!(exec_target(&pod("n1", "Pending"), "main").is_ok());
    }
}
