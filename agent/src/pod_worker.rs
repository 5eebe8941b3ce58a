//! One pod's worker: it compares what the pod asks for with what the runtime has, and
//! acts — makes the sandbox, runs init containers in order, then the app containers,
//! restarts those that end as the restart policy says (after a back-off of 10 s doubling
//! to 5 minutes, reset once a container has run for 10 minutes), stops everything
//! gracefully when the pod is deleted and then removes it from the API — and reports the
//! pod's status when it changes. Level-triggered: it looks at the runtime's state every
//! time, so a worker started after an agent restart adopts what runs instead of starting
//! it again.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use flotilla_client::events::Recorder;
use flotilla_client::{Client, DeleteParams, Patch};
use k8s_openapi::api::core::v1::{Container, Pod, PodStatus};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::backoff::{self, Backoff};
use crate::image_pull::{self, EventSink, PullBackoff};
use crate::lifecycle_hooks::{self, Hook};
use crate::probe::{Kind, Prober};
use crate::runtime::{
    ContainerConfig, ContainerState, ContainerStatus, Runtime, RuntimeError, SandboxConfig,
    SandboxState, SandboxStatus,
};
use crate::status::{ContainerView, PodView, pod_status};

/// A container that ran this long starts its back-off afresh.
pub const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// How often a worker looks at its containers when nothing else wakes it (the kubelet's
/// PLEG relists every second).
pub const RESYNC: Duration = Duration::from_secs(1);
/// The grace period when a pod names none.
pub const DEFAULT_GRACE: i64 = 30;

/// What every worker of an agent shares.
pub struct Context<R> {
    /// The runtime.
    pub runtime: Arc<R>,
    /// The API.
    pub client: Client,
    /// This node's name.
    pub node_name: String,
    /// This node's IP.
    pub host_ip: String,
    /// Where pods' log directories go.
    pub log_root: PathBuf,
    /// The node's resolv.conf, read for each new sandbox.
    pub resolv_conf: PathBuf,
    /// The scheme of container IDs in statuses (`containerd`, `process`).
    pub runtime_scheme: String,
}

impl<R> Context<R> {
    /// Records an Event about `pod`, signed by this node's agent.
    async fn event(&self, pod: &Pod, type_: &str, reason: &str, message: &str) {
        let recorder = Recorder {
            component: "flotilla-agent",
            host: Some(&self.node_name),
        };
        recorder
            .record(&self.client, pod, type_, reason, message)
            .await;
    }
}

/// Events about one pod, for the image puller.
struct PodEvents<'a, R> {
    ctx: &'a Context<R>,
    pod: &'a Pod,
    /// The waiting message the pod's status shows for the container already.
    shown: Option<String>,
}

impl<R: Runtime> EventSink for PodEvents<'_, R> {
    async fn event(&self, type_: &str, reason: &str, message: &str) {
        // A container that cannot start is looked at every second; what its status says
        // already was told once, when it first said so.
        if type_ == "Warning" && self.shown.as_deref() == Some(message) {
            return;
        }
        self.ctx.event(self.pod, type_, reason, message).await;
    }
}

/// The waiting message the pod's status shows for container `name`.
fn waiting_message(pod: &Pod, name: &str) -> Option<String> {
    let status = pod.status.as_ref()?;
    status
        .container_statuses
        .iter()
        .flatten()
        .chain(status.init_container_statuses.iter().flatten())
        .find(|c| c.name == name)?
        .state
        .as_ref()?
        .waiting
        .as_ref()?
        .message
        .clone()
}

/// A worker's memory between syncs.
#[derive(Default)]
struct State {
    /// The restart back-off of each container, by name.
    backoff: HashMap<String, Backoff>,
    /// The back-off of the pod's failed image pulls.
    pull_backoff: PullBackoff,
    last: Option<PodStatus>,
    probes: HashMap<String, ContainerProbes>,
    sandbox: Option<String>,
    /// The last failure to make the sandbox, reported once as an Event, not every retry.
    sandbox_error: Option<String>,
}

/// The probes of one container instance (a new instance starts them afresh).
struct ContainerProbes {
    container_id: String,
    startup: Option<Prober>,
    liveness: Option<Prober>,
    readiness: Option<Prober>,
}

impl ContainerProbes {
    fn new(c: &Container, id: &str, started: Instant) -> Self {
        ContainerProbes {
            container_id: id.to_string(),
            startup: c
                .startup_probe
                .clone()
                .map(|p| Prober::new(Kind::Startup, p, started)),
            liveness: c
                .liveness_probe
                .clone()
                .map(|p| Prober::new(Kind::Liveness, p, started)),
            readiness: c
                .readiness_probe
                .clone()
                .map(|p| Prober::new(Kind::Readiness, p, started)),
        }
    }
}

/// When a container instance started, on the monotonic clock.
fn started_instant(c: &ContainerStatus) -> Instant {
    let ago = c
        .started_at
        .parse::<jiff::Timestamp>()
        .ok()
        .and_then(|t| jiff::Timestamp::now().duration_since(t).try_into().ok())
        .unwrap_or(Duration::ZERO);
    Instant::now().checked_sub(ago).unwrap_or_else(Instant::now)
}

/// What the probes of a running container say: (started, ready, why to kill it, when to
/// look again).
async fn run_probes<R: Runtime>(
    ctx: &Context<R>,
    pod: &Pod,
    c: &Container,
    latest: &ContainerStatus,
    ip: &str,
    state: &mut State,
) -> (bool, bool, Option<String>, Option<Instant>) {
    let probes = state
        .probes
        .entry(c.name.clone())
        .or_insert_with(|| ContainerProbes::new(c, &latest.id, started_instant(latest)));
    if probes.container_id != latest.id {
        *probes = ContainerProbes::new(c, &latest.id, started_instant(latest));
    }
    let now = Instant::now();
    let mut kill = None;
    let started = match probes.startup.as_mut() {
        None => true,
        Some(p) if p.passing => true,
        Some(p) => {
            if p.due(now) {
                probe_once(ctx, pod, c, latest, ip, p).await;
            }
            if p.failed() {
                kill = Some(format!(
                    "Container {} failed startup probe, will be restarted",
                    c.name
                ));
            }
            p.passing
        }
    };
    if started {
        for p in [probes.liveness.as_mut(), probes.readiness.as_mut()]
            .into_iter()
            .flatten()
        {
            if p.due(now) {
                probe_once(ctx, pod, c, latest, ip, p).await;
            }
        }
        if probes.liveness.as_ref().is_some_and(|p| !p.passing) {
            kill = Some(format!(
                "Container {} failed liveness probe, will be restarted",
                c.name
            ));
        }
    }
    let ready = started && probes.readiness.as_ref().is_none_or(|p| p.passing);
    let wake = [&probes.startup, &probes.liveness, &probes.readiness]
        .into_iter()
        .flatten()
        .map(Prober::next_run)
        .min();
    (started, ready, kill, wake)
}

async fn probe_once<R: Runtime>(
    ctx: &Context<R>,
    pod: &Pod,
    c: &Container,
    latest: &ContainerStatus,
    ip: &str,
    p: &mut Prober,
) {
    let outcome = p.run(ctx.runtime.as_ref(), &latest.id, ip, c).await;
    if let Err(why) = &outcome {
        ctx.event(
            pod,
            "Warning",
            "Unhealthy",
            &format!("{} probe failed: {why}", p.kind.name()),
        )
        .await;
    }
    p.record(outcome.is_ok(), outcome.err().unwrap_or_default());
}

fn grace_of(pod: &Pod) -> Duration {
    let secs = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(DEFAULT_GRACE);
    Duration::from_secs(secs.max(0) as u64)
}

fn uid_of(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

fn pod_label(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        uid_of(pod)
    )
}

/// Runs the worker of one pod until the pod is gone (deleted and cleaned up) or
/// `shutdown` flips. `pod` carries the pod's latest version; None once it is deleted.
pub async fn run<R: Runtime>(
    ctx: Arc<Context<R>>,
    mut pod: watch::Receiver<Option<Arc<Pod>>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut state = State::default();
    let mut last_seen: Option<Arc<Pod>> = None;
    loop {
        let current = pod.borrow_and_update().clone();
        let next = match current {
            None => {
                if let Some(p) = &last_seen {
                    // Removed from the API without waiting for us: stop what runs.
                    if let Err(e) = tear_down(&ctx, p, grace_of(p)).await {
                        tracing::warn!(pod = %pod_label(p), error = %e, "cleaning up a deleted pod");
                    }
                }
                return;
            }
            Some(p) if p.metadata.deletion_timestamp.is_some() => match terminate(&ctx, &p).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(pod = %pod_label(&p), error = %e, "terminating");
                    last_seen = Some(p);
                    RESYNC
                }
            },
            Some(p) => {
                let next = match sync(&ctx, &p, &mut state).await {
                    Ok(next) => next,
                    Err(e) => {
                        tracing::warn!(pod = %pod_label(&p), error = %e, "sync failed");
                        RESYNC
                    }
                };
                last_seen = Some(p);
                next
            }
        };
        let due = Instant::now() + next;
        loop {
            tokio::select! {
                changed = pod.changed() => {
                    if changed.is_err() {
                        // The agent dropped the worker's channel: it is stopping.
                        return;
                    }
                    // The worker's own status write comes back as a change: it asks for
                    // nothing new, and syncing on it at once would cut short what the
                    // status shows (ErrImagePull before ImagePullBackOff), as the kubelet
                    // does not sync on status either.
                    let changed = pod.borrow().clone();
                    if !only_status_differs(last_seen.as_deref(), changed.as_deref()) {
                        break;
                    }
                }
                _ = tokio::time::sleep_until(due) => break,
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }
}

/// Do `a` and `b` differ in their status (and resourceVersion) alone?
fn only_status_differs(a: Option<&Pod>, b: Option<&Pod>) -> bool {
    let (Some(a), Some(b)) = (a, b) else {
        return false;
    };
    let meta = |p: &Pod| {
        let mut m = p.metadata.clone();
        m.resource_version = None;
        m.managed_fields = None;
        m
    };
    a.spec == b.spec && meta(a) == meta(b)
}

/// Stops the pod's containers gracefully, removes its sandbox, then deletes the pod from
/// the API (grace 0, only this uid), as the kubelet finishes a deletion.
async fn terminate<R: Runtime>(ctx: &Context<R>, pod: &Pod) -> Result<(), String> {
    tear_down(ctx, pod, grace_of(pod)).await?;
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        precondition_uid: uid_of(pod),
        ..Default::default()
    };
    match ctx.client.api::<Pod>(&ns).delete(&name, &params).await {
        Ok(_) => {
            tracing::info!(pod = %pod_label(pod), "pod stopped and removed");
            Ok(())
        }
        Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

async fn tear_down<R: Runtime>(ctx: &Context<R>, pod: &Pod, grace: Duration) -> Result<(), String> {
    let uid = uid_of(pod);
    let sandboxes = ctx
        .runtime
        .pod_sandboxes(&uid)
        .await
        .map_err(|e| e.to_string())?;
    for s in &sandboxes {
        let grace = pre_stop_all(ctx, pod, s, grace).await;
        ctx.runtime
            .stop_pod_sandbox(&s.id, grace)
            .await
            .map_err(|e| e.to_string())?;
        ctx.runtime
            .remove_pod_sandbox(&s.id)
            .await
            .map_err(|e| e.to_string())?;
        // Runtimes leave the pod's log files behind (CRI never deletes them); a deleted
        // pod's logs go with it, as the kubelet removes them.
        remove_logs(&s.config.log_directory);
    }
    Ok(())
}

/// Runs the preStop hooks of the sandbox's running containers, all at once, within
/// `grace`; returns the grace the stop has left.
async fn pre_stop_all<R: Runtime>(
    ctx: &Context<R>,
    pod: &Pod,
    sandbox: &SandboxStatus,
    grace: Duration,
) -> Duration {
    let specs = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let running = match ctx.runtime.list_containers(Some(&sandbox.id)).await {
        Ok(cs) => cs,
        Err(e) => {
            tracing::warn!(pod = %pod_label(pod), error = %e, "listing containers for preStop hooks");
            return grace;
        }
    };
    let hooks: Vec<_> = running
        .iter()
        .filter(|r| r.state == ContainerState::Running)
        .filter_map(|r| {
            let c = specs.iter().find(|c| c.name == r.config.name)?;
            Hook::PreStop.handler(c)?;
            Some(pre_stop(ctx, pod, c, &r.id, &sandbox.ip, grace))
        })
        .collect();
    if hooks.is_empty() {
        return grace;
    }
    let started = Instant::now();
    futures::future::join_all(hooks).await;
    lifecycle_hooks::grace_left(grace, started)
}

/// Removes a gone pod's log directory.
pub(crate) fn remove_logs(dir: &std::path::Path) {
    if dir.as_os_str().is_empty() {
        return;
    }
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!(dir = %dir.display(), error = %e, "removing a pod's logs");
        }
        _ => {}
    }
}

fn should_restart(policy: &str, exit_code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

fn ran_for(c: &ContainerStatus) -> Duration {
    let parse = |s: &str| s.parse::<jiff::Timestamp>().ok();
    match (parse(&c.started_at), parse(&c.finished_at)) {
        (Some(a), Some(b)) => b.duration_since(a).try_into().unwrap_or(Duration::ZERO),
        _ => Duration::ZERO,
    }
}

/// Instances of each container, newest attempt first.
fn by_name(list: Vec<ContainerStatus>) -> HashMap<String, Vec<ContainerStatus>> {
    let mut map: HashMap<String, Vec<ContainerStatus>> = HashMap::new();
    for c in list {
        map.entry(c.config.name.clone()).or_default().push(c);
    }
    for v in map.values_mut() {
        v.sort_by_key(|c| std::cmp::Reverse(c.config.attempt));
    }
    map
}

/// What became of one attempt to make a container run.
enum Step {
    /// Started (or tried: its status tells).
    Started,
    /// It cannot be made yet (reason, message).
    Waiting(String, String),
}

async fn start<R: Runtime>(
    ctx: &Context<R>,
    pod: &Pod,
    sandbox: &SandboxStatus,
    c: &Container,
    attempt: u32,
    older: &[ContainerStatus],
    pull_backoff: &mut PullBackoff,
) -> Result<Step, RuntimeError> {
    if ctx.runtime.manages_images() {
        let events = PodEvents {
            ctx,
            pod,
            shown: waiting_message(pod, &c.name),
        };
        let credentials = || image_pull::pull_credentials(&ctx.client, pod, &events);
        if let Err(w) =
            image_pull::ensure_image(ctx.runtime.as_ref(), pull_backoff, &events, c, credentials)
                .await
        {
            return Ok(Step::Waiting(w.reason, w.message));
        }
    }
    let ips = crate::env::Ips {
        host: &ctx.host_ip,
        pod: &sandbox.ip,
    };
    let built = match crate::env::build(&ctx.client, pod, c, ips).await {
        Ok(x) => x,
        Err(e) => {
            return Ok(Step::Waiting(
                "CreateContainerConfigError".into(),
                e.to_string(),
            ));
        }
    };
    // Keep the instance just before this one for `logs --previous`; older ones go.
    for old in older.iter().skip(1) {
        ctx.runtime.remove_container(&old.id).await?;
    }
    let cfg = ContainerConfig {
        name: c.name.clone(),
        attempt,
        image: c.image.clone().unwrap_or_default(),
        command: built.command,
        args: built.args,
        env: built.env,
        working_dir: c.working_dir.clone(),
        log_path: PathBuf::from(format!("{}/{attempt}.log", c.name)),
        resources: crate::resources::linux_resources(c),
        labels: [
            ("io.kubernetes.pod.uid".to_string(), uid_of(pod)),
            ("io.kubernetes.container.name".to_string(), c.name.clone()),
        ]
        .into(),
    };
    let id = match ctx.runtime.create_container(&sandbox.id, &cfg).await {
        Ok(id) => id,
        Err(RuntimeError::Invalid(m)) => {
            return Ok(Step::Waiting("CreateContainerError".into(), m));
        }
        Err(e) => return Err(e),
    };
    match ctx.runtime.start_container(&id).await {
        Ok(()) => {}
        // A process that cannot start shows as exited (StartError) and is restarted
        // as the policy says.
        Err(RuntimeError::StartFailed(_)) => return Ok(Step::Started),
        Err(e) => return Err(e),
    }
    if let Some(h) = Hook::PostStart.handler(c) {
        let hooked = lifecycle_hooks::run(
            ctx.runtime.as_ref(),
            &id,
            &sandbox.ip,
            c,
            h,
            lifecycle_hooks::POST_START_TIMEOUT,
        )
        .await;
        if let Err(why) = hooked {
            let reason = Hook::PostStart.failure_reason();
            ctx.event(
                pod,
                "Warning",
                reason,
                &format!("PostStartHook failed: {why}"),
            )
            .await;
            // Killed as any container is stopped: its preStop first, as the kubelet does.
            let grace = pre_stop(ctx, pod, c, &id, &sandbox.ip, grace_of(pod)).await;
            ctx.runtime.stop_container(&id, grace).await?;
        }
    }
    Ok(Step::Started)
}

/// Runs container `c`'s preStop hook (instance `id`, pod IP `ip`) if it has one, within
/// `grace`, reporting a failure; returns the grace its stop has left.
async fn pre_stop<R: Runtime>(
    ctx: &Context<R>,
    pod: &Pod,
    c: &Container,
    id: &str,
    ip: &str,
    grace: Duration,
) -> Duration {
    // A forced stop (grace 0) runs no hook, as the kubelet's does not.
    let Some(h) = Hook::PreStop.handler(c).filter(|_| !grace.is_zero()) else {
        return grace;
    };
    let started = Instant::now();
    if let Err(why) = lifecycle_hooks::run(ctx.runtime.as_ref(), id, ip, c, h, grace).await {
        let reason = Hook::PreStop.failure_reason();
        ctx.event(
            pod,
            "Warning",
            reason,
            &format!("PreStopHook failed: {why}"),
        )
        .await;
    }
    lifecycle_hooks::grace_left(grace, started)
}

/// One container's turn: start it, leave it, or restart it after its back-off. Returns
/// its view and when it next needs a look.
async fn reconcile_container<R: Runtime>(
    ctx: &Context<R>,
    pod: &Pod,
    sandbox: &SandboxStatus,
    c: &Container,
    instances: &[ContainerStatus],
    policy: &str,
    state: &mut State,
) -> Result<(ContainerView, Option<Instant>), RuntimeError> {
    let mut view = ContainerView {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        latest: instances.first().cloned(),
        previous: instances.get(1).cloned(),
        ..Default::default()
    };
    let mut wake = None;
    match instances.first() {
        None => match start(ctx, pod, sandbox, c, 0, instances, &mut state.pull_backoff).await? {
            Step::Started => wake = Some(Instant::now()),
            Step::Waiting(reason, message) => {
                view.waiting = Some((reason, message));
                wake = Some(Instant::now() + backoff::INITIAL);
            }
        },
        Some(latest) if latest.state == ContainerState::Running => {
            // Probes reach the pod on its own address, as the kubelet's do.
            let (started, ready, kill, next) =
                run_probes(ctx, pod, c, latest, &sandbox.ip, state).await;
            view.started = started;
            view.ready = ready;
            wake = next;
            if let Some(why) = kill {
                ctx.event(pod, "Normal", "Killing", &why).await;
                let grace = pre_stop(ctx, pod, c, &latest.id, &sandbox.ip, grace_of(pod)).await;
                ctx.runtime.stop_container(&latest.id, grace).await?;
                view.ready = false;
                wake = Some(Instant::now());
            }
        }
        Some(latest)
            if latest.state == ContainerState::Exited
                && should_restart(policy, latest.exit_code) =>
        {
            let now = Instant::now();
            let b = *state
                .backoff
                .entry(c.name.clone())
                .or_insert_with(|| Backoff::new(now));
            if b.waiting(now) {
                view.waiting = Some((
                    "CrashLoopBackOff".into(),
                    format!(
                        "back-off {}s restarting failed container={} pod={}",
                        b.delay().as_secs(),
                        c.name,
                        pod_label(pod)
                    ),
                ));
                wake = Some(b.until());
            } else {
                let attempt = latest.config.attempt + 1;
                match start(
                    ctx,
                    pod,
                    sandbox,
                    c,
                    attempt,
                    instances,
                    &mut state.pull_backoff,
                )
                .await?
                {
                    Step::Started => {
                        let now = Instant::now();
                        let next = if ran_for(latest) >= BACKOFF_RESET {
                            Backoff::new(now)
                        } else {
                            b.next(now)
                        };
                        state.backoff.insert(c.name.clone(), next);
                        wake = Some(now);
                    }
                    Step::Waiting(reason, message) => {
                        view.waiting = Some((reason, message));
                        wake = Some(Instant::now() + b.delay());
                    }
                }
            }
        }
        Some(_) => {}
    }
    Ok((view, wake))
}

/// Brings the pod's containers to what it asks for and reports its status; returns when
/// to look again.
async fn sync<R: Runtime>(
    ctx: &Context<R>,
    pod: &Pod,
    state: &mut State,
) -> Result<Duration, RuntimeError> {
    let uid = uid_of(pod);
    let spec = pod.spec.clone().unwrap_or_default();
    let policy = spec
        .restart_policy
        .clone()
        .unwrap_or_else(|| "Always".into());
    let already_done = state
        .last
        .as_ref()
        .or(pod.status.as_ref())
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed");

    // The sandbox this worker made or found before, read alone; the list only when there
    // is none yet (a new pod, or a restarted agent adopting one).
    let known = match state.sandbox.as_deref() {
        Some(id) => ctx.runtime.pod_sandbox_status(id).await.ok(),
        None => None,
    };
    let ready = |s: &SandboxStatus| s.config.uid == uid && s.state == SandboxState::Ready;
    let (found, stale) = match known.filter(|s| ready(s)) {
        Some(s) => (Some(s), Vec::new()),
        None => {
            let (ready, stale): (Vec<_>, Vec<_>) = ctx
                .runtime
                .pod_sandboxes(&uid)
                .await?
                .into_iter()
                .partition(|s| ready(s));
            (ready.into_iter().next(), stale)
        }
    };
    let sandbox = match found {
        Some(s) => s,
        None if already_done => return Ok(RESYNC * 10),
        None => {
            // A sandbox that stopped, or one a failed RunPodSandbox left behind, holds the
            // pod's sandbox name: it goes, and the new sandbox is the next attempt.
            let attempt = stale
                .iter()
                .map(|s| s.config.attempt + 1)
                .max()
                .unwrap_or(0);
            for s in &stale {
                ctx.runtime.stop_pod_sandbox(&s.id, Duration::ZERO).await?;
                ctx.runtime.remove_pod_sandbox(&s.id).await?;
                tracing::info!(pod = %pod_label(pod), sandbox = %s.id, "removed a sandbox that is not ready");
            }
            let cfg = SandboxConfig {
                name: pod.metadata.name.clone().unwrap_or_default(),
                namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                uid: uid.clone(),
                attempt,
                hostname: spec
                    .hostname
                    .clone()
                    .or_else(|| pod.metadata.name.clone())
                    .unwrap_or_default(),
                log_directory: ctx.log_root.join(format!(
                    "{}_{}_{}",
                    pod.metadata.namespace.as_deref().unwrap_or_default(),
                    pod.metadata.name.as_deref().unwrap_or_default(),
                    uid
                )),
                labels: pod.metadata.labels.clone().unwrap_or_default(),
                port_mappings: port_mappings(&spec),
                dns: Some(crate::dns::pod_dns(
                    &spec,
                    &crate::dns::parse_resolv_conf(
                        &std::fs::read_to_string(&ctx.resolv_conf).unwrap_or_default(),
                    ),
                )),
                resources: crate::resources::pod_resources(&spec),
            };
            let id = match ctx.runtime.run_pod_sandbox(&cfg).await {
                Ok(id) => id,
                Err(e) => {
                    let message = format!("Failed to create pod sandbox: {e}");
                    if state.sandbox_error.as_deref() != Some(message.as_str()) {
                        ctx.event(pod, "Warning", "FailedCreatePodSandBox", &message)
                            .await;
                        state.sandbox_error = Some(message);
                    }
                    return Err(e);
                }
            };
            state.sandbox_error = None;
            tracing::info!(pod = %pod_label(pod), sandbox = %id, attempt, "sandbox created");
            ctx.runtime.pod_sandbox_status(&id).await?
        }
    };
    state.sandbox = Some(sandbox.id.clone());
    let instances = by_name(ctx.runtime.list_containers(Some(&sandbox.id)).await?);
    let none: Vec<ContainerStatus> = Vec::new();
    let mut view = PodView {
        pod_ip: Some(sandbox.ip.clone()),
        host_ip: ctx.host_ip.clone(),
        runtime: ctx.runtime_scheme.clone(),
        initialized: true,
        ..Default::default()
    };
    let mut wakes: Vec<Instant> = Vec::new();
    let mut init_failed = false;

    // Init containers, one after another, each to success.
    for c in spec.init_containers.iter().flatten() {
        let list = instances.get(&c.name).unwrap_or(&none);
        let done_ok = list
            .first()
            .is_some_and(|l| l.state == ContainerState::Exited && l.exit_code == 0);
        if done_ok || already_done || !view.initialized {
            view.init.push(ContainerView {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                latest: list.first().cloned(),
                previous: list.get(1).cloned(),
                waiting: (!done_ok && list.is_empty())
                    .then(|| ("PodInitializing".to_string(), String::new())),
                ..Default::default()
            });
            if !done_ok {
                view.initialized = false;
            }
            continue;
        }
        view.initialized = false;
        // Init containers restart unless the pod never restarts anything.
        let init_policy = if policy == "Never" {
            "Never"
        } else {
            "OnFailure"
        };
        let (mut v, wake) =
            reconcile_container(ctx, pod, &sandbox, c, list, init_policy, state).await?;
        v.ready = false;
        if let Some(l) = list.first()
            && l.state == ContainerState::Exited
            && l.exit_code != 0
            && init_policy == "Never"
        {
            init_failed = true;
        }
        view.init.push(v);
        wakes.extend(wake);
    }

    for c in &spec.containers {
        let list = instances.get(&c.name).unwrap_or(&none);
        if !view.initialized || already_done {
            view.containers.push(ContainerView {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                latest: list.first().cloned(),
                previous: list.get(1).cloned(),
                waiting: list
                    .is_empty()
                    .then(|| ("PodInitializing".to_string(), String::new())),
                ..Default::default()
            });
            continue;
        }
        let (v, wake) = reconcile_container(ctx, pod, &sandbox, c, list, &policy, state).await?;
        view.containers.push(v);
        wakes.extend(wake);
    }

    view.phase = phase(&view, &policy, init_failed);
    let status = pod_status(pod, state.last.as_ref(), &view);
    if state.last.as_ref() != Some(&status) {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let patch = Patch::Merge(json!({"status": status}));
        match ctx.client.api::<Pod>(&ns).patch_status(&name, &patch).await {
            Ok(_) => {
                tracing::debug!(pod = %pod_label(pod), phase = %view.phase, "status reported");
                state.last = Some(status);
            }
            // Reported at the next look.
            Err(e) => tracing::warn!(pod = %pod_label(pod), error = %e, "reporting status"),
        }
    }
    let now = Instant::now();
    let next = wakes
        .into_iter()
        .map(|w| w.saturating_duration_since(now))
        .min()
        .unwrap_or(RESYNC)
        .min(RESYNC);
    Ok(next)
}

/// The hostPorts the pod's containers ask for.
fn port_mappings(spec: &k8s_openapi::api::core::v1::PodSpec) -> Vec<crate::runtime::PortMapping> {
    spec.containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.is_some_and(|h| h > 0))
        .map(|p| crate::runtime::PortMapping {
            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            container_port: p.container_port,
            host_port: p.host_port.unwrap_or_default(),
            host_ip: p.host_ip.clone().unwrap_or_default(),
        })
        .collect()
}

/// The scheme of container IDs: the runtime's name in its version string.
pub fn runtime_scheme(version: &str) -> String {
    version.split("://").next().unwrap_or_default().to_string()
}

/// The phase, as the kubelet's getPhase decides it.
fn phase(view: &PodView, policy: &str, init_failed: bool) -> String {
    if init_failed {
        return "Failed".into();
    }
    if !view.initialized {
        return "Pending".into();
    }
    let mut running = 0;
    let mut pending = 0;
    let mut succeeded = 0;
    let mut failed = 0;
    for c in &view.containers {
        match &c.latest {
            Some(l) if l.state == ContainerState::Running => running += 1,
            Some(l) if l.state == ContainerState::Exited => {
                if should_restart(policy, l.exit_code) {
                    // It ran and will run again.
                    running += 1;
                } else if l.exit_code == 0 {
                    succeeded += 1;
                } else {
                    failed += 1;
                }
            }
            _ => pending += 1,
        }
    }
    if pending > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if failed > 0 {
        "Failed"
    } else if succeeded > 0 {
        "Succeeded"
    } else {
        "Pending"
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_write_alone_is_no_reason_to_sync() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "resourceVersion": "5"},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
        }))
        .expect("pod");
        let mut status_only = pod.clone();
        status_only.metadata.resource_version = Some("6".into());
        status_only.status = Some(PodStatus {
            phase: Some("Pending".into()),
            ..Default::default()
        });
        assert!(only_status_differs(Some(&pod), Some(&status_only)));
        let mut deleted = status_only.clone();
        deleted.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
        );
        assert!(!only_status_differs(Some(&pod), Some(&deleted)));
        assert!(!only_status_differs(None, Some(&pod)));
        assert!(!only_status_differs(Some(&pod), None));
    }
}
