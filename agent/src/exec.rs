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

use crate::pod_containers;
use crate::runtime::{ContainerState, ContainerStatus, Runtime, RuntimeError};

/// How long past its timeout a runtime gets to report before the agent stops waiting.
const RUNTIME_GRACE: Duration = Duration::from_secs(5);

/// Why a command was not run, or its outcome cannot be returned.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The request's command or timeout is not one that can be run.
    #[error(transparent)]
    Invalid(#[from] InvalidExecRequest),
    /// The runtime holds no container of the pod.
    #[error("pod {pod} has no containers on this node")]
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
    /// The pod has no container of that name.
    #[error("container {container} is not valid for pod {pod}; its containers: {names}")]
    UnknownContainer {
        /// The name asked for.
        container: String,
        /// namespace/name.
        pod: String,
        /// Its containers, comma-separated.
        names: String,
    },
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
    /// The command wrote more than one answer carries.
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
            other => ExecError::Runtime(other),
        }
    }
}

impl ExecError {
    /// The gRPC status the API server turns back into an API error.
    pub fn to_status(&self) -> Status {
        let msg = self.to_string();
        match self {
            ExecError::Invalid(_)
            | ExecError::ContainerRequired { .. }
            | ExecError::UnknownContainer { .. }
            | ExecError::CannotStart(_) => Status::invalid_argument(msg),
            ExecError::NoContainers { .. } | ExecError::Runtime(RuntimeError::NotFound(_)) => {
                Status::not_found(msg)
            }
            ExecError::NotRunning { .. } => Status::failed_precondition(msg),
            ExecError::TimedOut(_) => Status::deadline_exceeded(msg),
            ExecError::OutputTooLarge(_) => Status::resource_exhausted(msg),
            ExecError::Runtime(_) => Status::internal(msg),
        }
    }
}

/// The running instance of the container `wanted` (empty: the pod's only container) among
/// every instance the runtime holds for pod `pod`.
pub fn pick<'a>(
    containers: &'a [ContainerStatus],
    pod: &str,
    wanted: &str,
) -> Result<&'a ContainerStatus, ExecError> {
    let names = pod_containers::names(containers);
    let name = match (wanted, names.as_slice()) {
        (_, []) => return Err(ExecError::NoContainers { pod: pod.into() }),
        ("", [one]) => one.as_str(),
        ("", many) => {
            return Err(ExecError::ContainerRequired {
                pod: pod.into(),
                names: many.join(" "),
            });
        }
        (w, _) if !names.iter().any(|n| n == w) => {
            return Err(ExecError::UnknownContainer {
                container: w.into(),
                pod: pod.into(),
                names: names.join(", "),
            });
        }
        (w, _) => w,
    };
    containers
        .iter()
        .filter(|c| c.config.name == name)
        .max_by_key(|c| c.config.attempt)
        .filter(|c| c.state == ContainerState::Running)
        .ok_or_else(|| ExecError::NotRunning {
            container: name.into(),
            pod: pod.into(),
        })
}

/// Runs the request's command in its container and returns what it did.
pub async fn run<R: Runtime>(runtime: &R, r: ExecRequest) -> Result<ExecResponse, ExecError> {
    let timeout = flotilla_proto::exec::check(&r)?;
    let pod = format!("{}/{}", r.namespace, r.name);
    let containers = pod_containers::of_pod(runtime, &r.namespace, &r.name, &r.pod_uid).await?;
    let c = pick(&containers, &pod, &r.container)?;
    // The runtime enforces the timeout; this bounds a runtime that does not.
    let out = tokio::time::timeout(
        timeout + RUNTIME_GRACE,
        runtime.exec_sync(&c.id, &r.command, timeout),
    )
    .await
    .map_err(|_| ExecError::TimedOut(timeout))??;
    let written = out.stdout.len() + out.stderr.len();
    if written > MAX_OUTPUT {
        return Err(ExecError::OutputTooLarge(written));
    }
    Ok(ExecResponse {
        stdout: out.stdout.into(),
        stderr: out.stderr.into(),
        exit_code: out.exit_code,
        container: c.config.name.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::fake::FakeRuntime;
    use crate::runtime::{ContainerConfig, SandboxConfig};

    fn status(name: &str, attempt: u32, state: ContainerState) -> ContainerStatus {
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

    #[test]
    fn the_newest_running_instance_of_the_named_container_is_picked() {
        let all = [
            status("main", 0, ContainerState::Exited),
            status("main", 1, ContainerState::Running),
            status("side", 0, ContainerState::Running),
        ];
        assert_eq!(pick(&all, "ns/p", "main").expect("main").id, "main-1");
        assert_eq!(pick(&all, "ns/p", "side").expect("side").id, "side-0");
        let only = [status("main", 0, ContainerState::Running)];
        assert_eq!(pick(&only, "ns/p", "").expect("default").id, "main-0");
    }

    #[test]
    fn a_container_that_is_missing_ambiguous_or_stopped_is_named_in_the_error() {
        let all = [
            status("main", 0, ContainerState::Running),
            status("side", 0, ContainerState::Exited),
        ];
        let e = pick(&all, "ns/p", "nope").expect_err("unknown");
        assert_eq!(
            e.to_string(),
            "container nope is not valid for pod ns/p; its containers: main, side"
        );
        assert_eq!(e.to_status().code(), tonic::Code::InvalidArgument);
        let e = pick(&all, "ns/p", "").expect_err("ambiguous");
        assert!(e.to_string().contains("choose one of: [main side]"), "{e}");
        let e = pick(&all, "ns/p", "side").expect_err("stopped");
        assert_eq!(e.to_string(), "container side in pod ns/p is not running");
        assert_eq!(e.to_status().code(), tonic::Code::FailedPrecondition);
        let e = pick(&[], "ns/p", "main").expect_err("none");
        assert_eq!(e.to_status().code(), tonic::Code::NotFound);
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
        assert!(matches!(e, ExecError::NoContainers { .. }), "{e}");
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
