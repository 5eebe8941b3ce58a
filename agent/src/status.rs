//! A pod's status computed from what the runtime reports, as the kubelet computes it:
//! the phase, the Initialized / ContainersReady / Ready conditions, every container's
//! state (running, terminated, or waiting with a reason such as CrashLoopBackOff) with
//! its last termination, restart count and readiness. Timestamps of conditions carry over
//! while a condition keeps its value, so an unchanged pod computes an unchanged status and
//! costs no write.

use k8s_openapi::api::core::v1::{
    ContainerState as K8sState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus as K8sContainerStatus, Pod, PodCondition, PodIP,
    PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::runtime::{ContainerState, ContainerStatus};

/// What the pod worker knows about one container of the spec.
#[derive(Debug, Clone, Default)]
pub struct ContainerView {
    /// The container's name.
    pub name: String,
    /// The image in the spec.
    pub image: String,
    /// The latest instance.
    pub latest: Option<ContainerStatus>,
    /// The instance before it (for lastState).
    pub previous: Option<ContainerStatus>,
    /// Why it waits, when it is not running (reason, message).
    pub waiting: Option<(String, String)>,
    /// Ready (its readiness probe passes, or it runs and has none).
    pub ready: bool,
    /// Started (its startup probe passed, or it runs and has none).
    pub started: bool,
}

/// The pod's phase and status inputs.
#[derive(Debug, Clone, Default)]
pub struct PodView {
    /// Init containers in order.
    pub init: Vec<ContainerView>,
    /// App containers.
    pub containers: Vec<ContainerView>,
    /// Whether the init containers have all completed.
    pub initialized: bool,
    /// The pod's IP, once its sandbox exists.
    pub pod_ip: Option<String>,
    /// The node's IP.
    pub host_ip: String,
    /// The runtime's scheme for container IDs (`containerd`, `process`).
    pub runtime: String,
    /// Is the pod done for good (Succeeded or Failed)?
    pub phase: String,
}

fn ts(s: &str) -> Option<Time> {
    s.parse::<jiff::Timestamp>().ok().map(Time)
}

fn terminated(c: &ContainerStatus, runtime: &str) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: c.exit_code,
        reason: Some(c.reason.clone()).filter(|r| !r.is_empty()),
        message: Some(c.message.clone()).filter(|m| !m.is_empty()),
        started_at: ts(&c.started_at),
        finished_at: ts(&c.finished_at),
        container_id: Some(format!("{runtime}://{}", c.id)),
        signal: None,
    }
}

fn container_status(v: &ContainerView, runtime: &str) -> K8sContainerStatus {
    let state = match (&v.latest, &v.waiting) {
        (Some(c), _) if c.state == ContainerState::Running => K8sState {
            running: Some(ContainerStateRunning {
                started_at: ts(&c.started_at),
            }),
            ..Default::default()
        },
        (_, Some((reason, message))) => K8sState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: Some(message.clone()).filter(|m| !m.is_empty()),
            }),
            ..Default::default()
        },
        (Some(c), None) if c.state == ContainerState::Exited => K8sState {
            terminated: Some(terminated(c, runtime)),
            ..Default::default()
        },
        _ => K8sState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("ContainerCreating".into()),
                message: None,
            }),
            ..Default::default()
        },
    };
    // lastState: the instance before the current one, or the current one while it waits
    // to be restarted.
    let last = match (&v.latest, &v.waiting) {
        (Some(c), Some(_)) if c.state == ContainerState::Exited => Some(c),
        _ => v
            .previous
            .as_ref()
            .filter(|p| p.state == ContainerState::Exited),
    };
    K8sContainerStatus {
        name: v.name.clone(),
        image: v.image.clone(),
        image_id: String::new(),
        container_id: v.latest.as_ref().map(|c| format!("{runtime}://{}", c.id)),
        ready: v.ready,
        started: Some(v.started),
        restart_count: v.latest.as_ref().map_or(0, |c| c.config.attempt as i32),
        state: Some(state),
        last_state: Some(K8sState {
            terminated: last.map(|c| terminated(c, runtime)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn condition(old: Option<&PodStatus>, type_: &str, ok: bool, reason: Option<&str>) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let previous = old
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_));
    let since = previous
        .filter(|c| c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(jiff::Timestamp::now()));
    PodCondition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.map(str::to_string),
        last_transition_time: Some(since),
        ..Default::default()
    }
}

/// The status to report for `pod`; `last` is what this agent computed before (its
/// timestamps carry over), else the pod's own status is.
pub fn pod_status(pod: &Pod, last: Option<&PodStatus>, view: &PodView) -> PodStatus {
    let old = last.or(pod.status.as_ref());
    let containers_ready = !view.containers.is_empty() && view.containers.iter().all(|c| c.ready);
    let terminal = matches!(view.phase.as_str(), "Succeeded" | "Failed");
    let not_ready_reason = |ok: bool| {
        if ok {
            None
        } else if terminal {
            Some("PodCompleted")
        } else {
            Some("ContainersNotReady")
        }
    };
    let mut conditions = vec![
        condition(
            old,
            "Initialized",
            view.initialized,
            (!view.initialized).then_some("ContainersNotInitialized"),
        ),
        condition(
            old,
            "ContainersReady",
            containers_ready,
            not_ready_reason(containers_ready),
        ),
        condition(
            old,
            "Ready",
            containers_ready,
            not_ready_reason(containers_ready),
        ),
    ];
    // PodScheduled is the scheduler's; it is kept as it is.
    if let Some(c) = old
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
    {
        conditions.insert(0, c.clone());
    }
    PodStatus {
        phase: Some(view.phase.clone()),
        conditions: Some(conditions),
        host_ip: Some(view.host_ip.clone()),
        host_ips: None,
        pod_ip: view.pod_ip.clone(),
        pod_ips: view.pod_ip.clone().map(|ip| vec![PodIP { ip }]),
        start_time: old
            .and_then(|s| s.start_time.clone())
            .or_else(|| Some(Time(jiff::Timestamp::now()))),
        init_container_statuses: (!view.init.is_empty()).then(|| {
            view.init
                .iter()
                .map(|c| container_status(c, &view.runtime))
                .collect()
        }),
        container_statuses: Some(
            view.containers
                .iter()
                .map(|c| container_status(c, &view.runtime))
                .collect(),
        ),
        qos_class: old.and_then(|s| s.qos_class.clone()),
        ..Default::default()
    }
}
