//! Container lifecycle hooks, as the kubelet runs them. `postStart` runs right after the
//! container starts; when it fails the container is killed (Event FailedPostStartHook) and
//! restarted as its policy says. `preStop` runs before a container is stopped — the pod
//! being deleted, or a failed liveness probe — within the pod's grace period, and the stop
//! then gets what is left of it (at least two seconds): the usual way to let load balancers
//! forget a pod before it gets SIGTERM (`sleep`), or to ask it to drain (`exec`,
//! `httpGet`). A failed preStop is reported (FailedPreStopHook) and the stop goes ahead.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler};
use tokio::time::Instant;

use crate::probe::Action;
use crate::runtime::Runtime;

/// The least a container gets to stop after its preStop hook (the kubelet's
/// minimumGracePeriodInSeconds).
pub const MIN_GRACE_AFTER_HOOK: Duration = Duration::from_secs(2);
/// How long a postStart hook may run (the kubelet waits as long as it takes; a hook that
/// never returns would hold the pod's worker forever).
pub const POST_START_TIMEOUT: Duration = Duration::from_secs(120);

/// Which hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// After the container starts.
    PostStart,
    /// Before the container is stopped.
    PreStop,
}

impl Hook {
    /// The container's handler for this hook, if it has one.
    pub fn handler(self, c: &Container) -> Option<&LifecycleHandler> {
        let l = c.lifecycle.as_ref()?;
        match self {
            Hook::PostStart => l.post_start.as_ref(),
            Hook::PreStop => l.pre_stop.as_ref(),
        }
    }

    /// The Event reason of its failure.
    pub fn failure_reason(self) -> &'static str {
        match self {
            Hook::PostStart => "FailedPostStartHook",
            Hook::PreStop => "FailedPreStopHook",
        }
    }
}

/// Runs `handler` for container `id` (spec `c`, pod IP `ip`) for at most `timeout`.
pub async fn run<R: Runtime>(
    rt: &R,
    id: &str,
    ip: &str,
    c: &Container,
    handler: &LifecycleHandler,
    timeout: Duration,
) -> Result<(), String> {
    if let Some(sleep) = &handler.sleep {
        let wanted = Duration::from_secs(u64::try_from(sleep.seconds).unwrap_or(0));
        tokio::time::sleep(wanted.min(timeout)).await;
        return Ok(());
    }
    if handler.tcp_socket.is_some() {
        // As the kubelet: tcpSocket is accepted in the API for compatibility only.
        return Err(
            "tcpSocket is not a valid lifecycle handler (use exec, httpGet or sleep)".into(),
        );
    }
    let action = Action {
        exec: handler.exec.as_ref(),
        http_get: handler.http_get.as_ref(),
        tcp_socket: None,
    };
    // The runtime is asked to stop at `timeout` too, but a runtime that does not (an
    // exec whose background child holds its pipes) must not hold the pod's worker.
    match tokio::time::timeout(timeout, action.run(rt, id, ip, c, timeout)).await {
        Ok(Some(result)) => result,
        Ok(None) => Err("the hook names no action (exec, httpGet, sleep)".into()),
        Err(_) => Err(format!("the hook did not finish within {timeout:?}")),
    }
}

/// What a stop that began at `started` with `grace` has left once its preStop hook is
/// done: the rest of the grace period, at least [`MIN_GRACE_AFTER_HOOK`].
pub fn grace_left(grace: Duration, started: Instant) -> Duration {
    grace
        .saturating_sub(started.elapsed())
        .max(MIN_GRACE_AFTER_HOOK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::fake::FakeRuntime;
    use serde_json::json;

    fn container(lifecycle: serde_json::Value) -> Container {
        serde_json::from_value(json!({"name": "c", "lifecycle": lifecycle})).expect("container")
    }

    #[tokio::test(start_paused = true)]
    async fn a_sleep_hook_sleeps_within_its_timeout() {
        let c = container(json!({"preStop": {"sleep": {"seconds": 30}}}));
        let h = Hook::PreStop.handler(&c).expect("handler");
        let start = Instant::now();
        run(
            &FakeRuntime::new("127.0.0.1"),
            "id",
            "127.0.0.1",
            &c,
            h,
            Duration::from_secs(5),
        )
        .await
        .expect("slept");
        assert_eq!(start.elapsed().as_secs(), 5, "cut at the timeout");
        assert!(Hook::PostStart.handler(&c).is_none());
    }

    #[tokio::test]
    async fn a_hook_without_an_action_fails() {
        let c = container(json!({"postStart": {}}));
        let h = Hook::PostStart.handler(&c).expect("handler");
        let e = run(
            &FakeRuntime::new("127.0.0.1"),
            "id",
            "127.0.0.1",
            &c,
            h,
            Duration::from_secs(1),
        )
        .await
        .expect_err("no action");
        assert!(e.contains("names no action"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_stop_gets_what_the_hook_left_and_never_less_than_two_seconds() {
        let started = Instant::now();
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(
            grace_left(Duration::from_secs(30), started),
            Duration::from_secs(20)
        );
        assert_eq!(
            grace_left(Duration::from_secs(5), started),
            MIN_GRACE_AFTER_HOOK
        );
    }
}
