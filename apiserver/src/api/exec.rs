//! Exec (`pods/exec`): the API server checks the request against the pod (a command, a
//! sane timeout, a pod that is placed and not finished, a container it has), defaults the
//! container to the pod's first, and asks the pod's node agent to run the command
//! (`flotilla.agent.v1.Agent/ExecSync`), returning its output and exit code whole.

use std::time::Duration;

use flotilla_proto::api::{ExecRequest, ExecResponse};

use super::Api;
use super::agent_proxy::agent_error;
use super::pod_target::Subresource;
use crate::error::ApiError;

/// How long past the command's timeout the agent gets to answer (connecting, reporting a
/// command it had to stop).
const AGENT_GRACE: Duration = Duration::from_secs(10);

/// The request's command and timeout, checked as the agent checks them; returns the
/// timeout.
pub fn check_request(req: &ExecRequest) -> Result<Duration, ApiError> {
    flotilla_proto::exec::check(req).map_err(|e| ApiError::bad_request(e.to_string()))
}

impl Api {
    /// Runs `req.command` in a container of pod `req.namespace/req.name`, through its
    /// node's agent.
    pub async fn exec(&self, mut req: ExecRequest) -> Result<ExecResponse, ApiError> {
        let timeout = check_request(&req)?;
        let target = self
            .pod_target(&req.namespace, &req.name, &req.container, Subresource::Exec)
            .await?;
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
}
