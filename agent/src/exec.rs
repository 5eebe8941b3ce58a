//! Exec for the agent's endpoint: a command run in a running container of a pod through
//! the runtime's `exec_sync`, without stdin or a terminal. The answer is one
//! `flotilla.api.v1.ExecResponse`: everything the command wrote to stdout, then to stderr
//! (each whole, not interleaved), its exit code, and the container it ran in. A command
//! that ran is a success whatever its exit code; the call fails only when it could not
//! run, did not finish in time, or wrote more than [`MAX_OUTPUT`]. The request is checked
//! as the API server checks it ([`flotilla_proto::exec`]), since a caller holding the
//! proxy token can come here directly.

use std::time::Duration;

use flotilla_proto::api::{ExecRequest, ExecResponse};
use flotilla_proto::exec::{InvalidExecRequest, MAX_OUTPUT};
use tonic::Status;

use crate::pod_containers::{self, Instances, LookupError};
use crate::runtime::{ContainerState, ContainerStatus, Runtime, RuntimeError};

/// How long past its timeout a runtime gets to report before the agent stops waiting.
const RUNTIME_GRACE: Duration = Duration::from_secs(5);

/// Why a command was not run, or its outcome cannot be returned.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The request's command or timeout is not one that can be run.
    #[error(transparent)]
    Invalid(#[from] InvalidExecRequest),
    /// The container named is not among the pod's on this node.
    #[error(transparent)]
    Container(#[from] LookupError),
    /// The container exists but does not run (not yet started, or ended).
    #[error("container {container} in pod {pod} is not running")]
    NotRunning {
        /// The container.
        container: String,
        /// namespace/name.
        pod: String,
    },
    /// The program could not be started (not found, not executable).
    #[error("cannot run the command: {0}")]
    CannotStart(String),
    /// The command did not finish in time and was stopped.
    #[error("the command did not finish within {0:?}")]
    TimedOut(Duration),
    /// The command wrote more than one answer carries (at least this many bytes: a
    /// runtime may stop it as soon as it passes the limit).
    #[error(
        "the command wrote {0} bytes, more than exec returns ({MAX_OUTPUT}): redirect its output to a file in the container"
    )]
    OutputTooLarge(usize),
    /// The runtime failed otherwise.
    #[error(transparent)]
    Runtime(RuntimeError),
}

impl From<RuntimeError> for ExecError {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::TimedOut(d) => ExecError::TimedOut(d),
            RuntimeError::StartFailed(m) => ExecError::CannotStart(m),
            RuntimeError::OutputTooLarge(n) => ExecError::OutputTooLarge(n),
            other => ExecError::Runtime(other),
        }
    }
}

impl ExecError {
    /// The gRPC status the API server turns back into an API error.
    pub fn to_status(&self) -> Status {
        let msg = self.to_string();
        match self {
            ExecError::Container(e) => e.to_status(),
            ExecError::Invalid(_) | ExecError::CannotStart(_) => Status::invalid_argument(msg),
            ExecError::Runtime(RuntimeError::NotFound(_)) => Status::not_found(msg),
            ExecError::NotRunning { .. } => Status::failed_precondition(msg),
            ExecError::TimedOut(_) => Status::deadline_exceeded(msg),
            ExecError::OutputTooLarge(_) => Status::resource_exhausted(msg),
            ExecError::Runtime(_) => Status::internal(msg),
        }
    }
}

/// The instance a command runs in: the newest, when it is running.
fn running(found: Instances, pod: &str) -> Result<ContainerStatus, ExecError> {
    if found.newest.state != ContainerState::Running {
        return Err(ExecError::NotRunning {
            container: found.newest.config.name,
            pod: pod.into(),
        });
    }
    Ok(found.newest)
}

/// Runs the request's command in its container and returns what it did.
pub async fn run<R: Runtime>(runtime: &R, r: ExecRequest) -> Result<ExecResponse, ExecError> {
    let timeout = flotilla_proto::exec::check(&r)?;
    let pod = format!("{}/{}", r.namespace, r.name);
    let found =
        pod_containers::lookup(runtime, &r.namespace, &r.name, &r.pod_uid, &r.container).await?;
    let c = running(found, &pod)?;
    // The runtime enforces the timeout; this bounds a runtime that does not.
    let out = tokio::time::timeout(
        timeout + RUNTIME_GRACE,
        runtime.exec_sync(&c.id, &r.command, timeout),
    )
    .await
    .map_err(|_| ExecError::TimedOut(timeout))??;
    // The process runtime stops a command at the limit; a runtime that buffers all of
    // it (containerd) is checked here.
    let written = out.stdout.len() + out.stderr.len();
    if written > MAX_OUTPUT {
        return Err(ExecError::OutputTooLarge(written));
    }
    Ok(ExecResponse {
        stdout: out.stdout.into(),
        stderr: out.stderr.into(),
        exit_code: out.exit_code,
        container: c.config.name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod_containers::tests::status;
    use crate::runtime::fake::FakeRuntime;
    use crate::runtime::{ContainerConfig, SandboxConfig};

    #[test]
    fn the_newest_instance_runs_the_command_only_while_it_runs() {
        let restarted = Instances {
            newest: status("main", 1, ContainerState::Running),
            older: vec![status("main", 0, ContainerState::Exited)],
        };
        assert_eq!(running(restarted, "ns/p").expect("running").id, "main-1");
        let stopped = Instances {
            newest: status("side", 1, ContainerState::Exited),
            older: vec![status("side", 0, ContainerState::Running)],
        };
        let e = running(stopped, "ns/p").expect_err("stopped");
        assert_eq!(e.to_string(), "container side in pod ns/p is not running");
        assert_eq!(e.to_status().code(), tonic::Code::FailedPrecondition);
    }

    #[test]
    fn errors_map_to_the_statuses_the_api_server_expects() {
        let cases = [
            (
                ExecError::from(InvalidExecRequest::NoCommand),
                tonic::Code::InvalidArgument,
            ),
            (
                ExecError::from(RuntimeError::StartFailed("nope".into())),
                tonic::Code::InvalidArgument,
            ),
            (
                ExecError::from(RuntimeError::TimedOut(Duration::from_secs(1))),
                tonic::Code::DeadlineExceeded,
            ),
            (
                ExecError::from(RuntimeError::OutputTooLarge(MAX_OUTPUT + 1)),
                tonic::Code::ResourceExhausted,
            ),
            (
                ExecError::from(RuntimeError::NotFound("container c".into())),
                tonic::Code::NotFound,
            ),
            (
                ExecError::from(RuntimeError::Io("disk".into())),
                tonic::Code::Internal,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(e.to_status().code(), code, "{e}");
        }
        let e = ExecError::from(RuntimeError::OutputTooLarge(MAX_OUTPUT + 1));
        assert!(e.to_string().contains("more than exec returns"), "{e}");
    }

    #[tokio::test]
    async fn a_request_runs_in_the_pods_container_and_says_which() {
        let rt = FakeRuntime::new("10.0.0.9");
        let sb = rt
            .run_pod_sandbox(&SandboxConfig {
                name: "web".into(),
                namespace: "default".into(),
                uid: "u1".into(),
                ..Default::default()
            })
            .await
            .expect("sandbox");
        let id = rt
            .create_container(
                &sb,
                &ContainerConfig {
                    name: "main".into(),
                    ..Default::default()
                },
            )
            .await
            .expect("create");
        let req = ExecRequest {
            namespace: "default".into(),
            name: "web".into(),
            command: vec!["true".into()],
            pod_uid: "u1".into(),
            ..Default::default()
        };
        let e = run(&rt, req.clone()).await.expect_err("not started");
        assert!(matches!(e, ExecError::NotRunning { .. }), "{e}");
        rt.start_container(&id).await.expect("start");
        let out = run(&rt, req.clone()).await.expect("runs");
        assert_eq!((out.exit_code, out.container.as_str()), (0, "main"));
        let other_pod = ExecRequest {
            pod_uid: "u2".into(),
            ..req.clone()
        };
        let e = run(&rt, other_pod).await.expect_err("another pod");
        assert!(
            matches!(e, ExecError::Container(LookupError::NoContainers { .. })),
            "{e}"
        );
        // A caller that goes around the API server is held to the same checks.
        let empty = ExecRequest {
            command: Vec::new(),
            ..req.clone()
        };
        let e = run(&rt, empty).await.expect_err("no command");
        assert!(
            matches!(e, ExecError::Invalid(InvalidExecRequest::NoCommand)),
            "{e}"
        );
        let too_long = ExecRequest {
            timeout_seconds: 601,
            ..req
        };
        let e = run(&rt, too_long).await.expect_err("timeout out of range");
        assert!(
            matches!(
                e,
                ExecError::Invalid(InvalidExecRequest::TimeoutOutOfRange(601))
            ),
            "{e}"
        );
        assert_eq!(e.to_status().code(), tonic::Code::InvalidArgument);
    }
}
