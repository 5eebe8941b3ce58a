//! The horizontal pod autoscaler: every sync period it reads the pods' use from the agents
//! ([`pod_metrics`]), and for each HorizontalPodAutoscaler sets its Deployment's or
//! ReplicaSet's replicas to what the pods' utilization of their requests asks for
//! ([`recommend`]), within its min and max, reporting what it saw and did in its status,
//! conditions and Events (SuccessfulRescale), as Kubernetes' does.

pub mod pod_metrics;
pub mod recommend;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use flotilla_client::events::Recorder;
use flotilla_client::informer::key_of;
use flotilla_client::{Client, ClientError, Patch, SharedInformers, Store};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition, HorizontalPodAutoscalerStatus,
    MetricStatus, MetricValueStatus, ResourceMetricStatus,
};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::pod_state::is_ready;
use crate::{metrics, selector};
use pod_metrics::PodMetrics;
use recommend::{History, Limit};

/// How the autoscaler signs its Events.
const EVENTS: Recorder<'static> = Recorder {
    component: "horizontal-pod-autoscaler",
    host: None,
};

/// How often the autoscaler looks.
#[derive(Clone, Debug, PartialEq)]
pub struct AutoscalerConfig {
    /// Kubernetes' --horizontal-pod-autoscaler-sync-period (15 s).
    pub sync_period: Duration,
}

impl Default for AutoscalerConfig {
    fn default() -> Self {
        AutoscalerConfig {
            sync_period: Duration::from_secs(15),
        }
    }
}

struct Autoscaler {
    client: Client,
    hpas: Store<HorizontalPodAutoscaler>,
    pods: Store<Pod>,
    nodes: Store<Node>,
    deployments: Store<Deployment>,
    sets: Store<ReplicaSet>,
    metrics: PodMetrics,
    /// Each autoscaler's recent recommendations.
    history: HashMap<String, History>,
}

/// What was measured for one metric.
struct Measured {
    resource: String,
    utilization: i32,
    average: f64,
    desired: i32,
}

/// The scale target's replicas and selector.
struct Target {
    replicas: i32,
    selector: LabelSelector,
}

fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
) -> HorizontalPodAutoscalerCondition {
    HorizontalPodAutoscalerCondition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: Some(Time(jiff::Timestamp::now())),
        observed_generation: None,
    }
}

/// A pod's request of `resource` (millicores for cpu, bytes for memory), None when a
/// container requests none.
fn request_of(pod: &Pod, resource: &str) -> Option<f64> {
    let spec = pod.spec.as_ref()?;
    let mut total = 0.0;
    for c in &spec.containers {
        let q = c.resources.as_ref()?.requests.as_ref()?.get(resource)?;
        let q = scheduler::quantity::parse_quantity(&q.0).ok()?;
        total += if resource == "cpu" {
            q.milli_value() as f64 / 1000.0
        } else {
            q.value() as f64
        };
    }
    Some(total)
}

fn is_running(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

impl Autoscaler {
    fn target(&self, ns: &str, hpa: &HorizontalPodAutoscaler) -> Option<Target> {
        let r = &hpa.spec.scale_target_ref;
        let key = format!("{ns}/{}", r.name);
        match r.kind.as_str() {
            "Deployment" => self.deployments.get(&key).map(|d| Target {
                replicas: d.spec.replicas.unwrap_or(1),
                selector: d.spec.selector.clone(),
            }),
            "ReplicaSet" => self.sets.get(&key).map(|s| Target {
                replicas: s.spec.replicas.unwrap_or(1),
                selector: s.spec.selector.clone(),
            }),
            _ => None,
        }
    }

    /// One metric over the target's running pods: their use of `resource` as a
    /// percentage of their requests, and the replicas that would bring it to `target`.
    fn measure(
        &self,
        pods: &[Arc<Pod>],
        resource: &str,
        target: i32,
        current: i32,
    ) -> Result<Measured, (&'static str, String)> {
        let mut samples = Vec::with_capacity(pods.len());
        let (mut used, mut measured) = (0.0, 0);
        for p in pods {
            let name = p.metadata.name.clone().unwrap_or_default();
            let ns = p.metadata.namespace.clone().unwrap_or_default();
            let Some(request) = request_of(p, resource).filter(|r| *r > 0.0) else {
                return Err((
                    "FailedGetResourceMetric",
                    format!("missing request for {resource} in pod {ns}/{name}"),
                ));
            };
            let usage = self.metrics.usage(&ns, &name).map(|u| {
                if resource == "cpu" {
                    u.cpu_cores
                } else {
                    u.memory_bytes
                }
            });
            if let Some(u) = usage {
                used += u;
                measured += 1;
            }
            samples.push(recommend::PodSample {
                usage,
                request,
                // Memory is judged whatever the pod's readiness; cpu only once it is ready
                // (a starting process's burst says nothing about its load).
                ready: resource != "cpu" || is_ready(p),
            });
        }
        let Some((desired, utilization)) = recommend::replicas(current, &samples, target) else {
            return Err((
                "FailedGetResourceMetric",
                format!("did not receive metrics for any ready pod of the target ({resource})"),
            ));
        };
        Ok(Measured {
            resource: resource.to_string(),
            utilization,
            average: used / f64::from(measured.max(1)),
            desired,
        })
    }

    async fn sync(
        &mut self,
        hpa: &HorizontalPodAutoscaler,
        target: Option<(Target, Vec<Arc<Pod>>)>,
    ) -> Result<(), ClientError> {
        let ns = hpa.metadata.namespace.clone().unwrap_or_default();
        let key = key_of(&hpa.metadata);
        let spec = &hpa.spec;
        let old = hpa.status.clone().unwrap_or_default();
        let mut status = HorizontalPodAutoscalerStatus {
            observed_generation: hpa.metadata.generation,
            last_scale_time: old.last_scale_time.clone(),
            current_replicas: old.current_replicas,
            desired_replicas: old.desired_replicas,
            ..Default::default()
        };
        let Some((target, pods)) = target else {
            let r = &spec.scale_target_ref;
            let why = format!("the {} {:?} does not exist", r.kind, r.name);
            status.conditions = Some(vec![condition("AbleToScale", false, "FailedGetScale", why)]);
            return self.write_status(hpa, status).await;
        };
        let current = target.replicas;
        status.current_replicas = Some(current);
        if current == 0 {
            status.desired_replicas = 0;
            status.conditions = Some(vec![condition(
                "ScalingActive",
                false,
                "ScalingDisabled",
                "scaling is disabled since the replica count of the target is zero".into(),
            )]);
            return self.write_status(hpa, status).await;
        }
        let min = spec.min_replicas.unwrap_or(1);
        let mut measured = Vec::new();
        let mut failure = None;
        for m in spec.metrics.iter().flatten() {
            let Some(r) = &m.resource else { continue };
            let Some(goal) = r.target.average_utilization else {
                continue;
            };
            match self.measure(&pods, &r.name, goal, current) {
                Ok(x) => measured.push(x),
                Err(e) => failure = Some(e),
            }
        }
        let mut conditions = Vec::new();
        let Some(best) = measured.iter().max_by_key(|m| m.desired) else {
            let (reason, message) =
                failure.unwrap_or(("FailedGetResourceMetric", "no metrics".into()));
            conditions.push(condition(
                "AbleToScale",
                true,
                "SucceededGetScale",
                "the HPA controller was able to get the target's current scale".into(),
            ));
            conditions.push(condition("ScalingActive", false, reason, message));
            // Without metrics the bounds still hold (a target scaled by hand past them).
            let bounded = current.clamp(min, spec.max_replicas.max(min));
            status.desired_replicas = bounded;
            if bounded != current {
                self.rescale(
                    hpa,
                    &ns,
                    current,
                    bounded,
                    "the replica count is outside the autoscaler's bounds",
                    &mut status,
                )
                .await?;
            }
            status.conditions = Some(conditions);
            return self.write_status(hpa, status).await;
        };
        // A metric that could not be read may be the busy one: never scale down then.
        let desired = if failure.is_some() {
            best.desired.max(current)
        } else {
            best.desired
        };
        let now = Instant::now();
        let windows = spec.behavior.as_ref();
        let window = |rules: Option<&k8s_openapi::api::autoscaling::v2::HPAScalingRules>,
                      default: Duration| {
            rules
                .and_then(|r| r.stabilization_window_seconds)
                .map_or(default, |s| {
                    Duration::from_secs(u64::try_from(s).unwrap_or(0))
                })
        };
        let up = window(windows.and_then(|b| b.scale_up.as_ref()), Duration::ZERO);
        let down = window(
            windows.and_then(|b| b.scale_down.as_ref()),
            recommend::DEFAULT_SCALE_DOWN_WINDOW,
        );
        let stabilized = self
            .history
            .entry(key.clone())
            .or_default()
            .stabilize(now, current, desired, up, down);
        let (replicas, limit) = recommend::bounded(current, stabilized, min, spec.max_replicas);
        status.desired_replicas = replicas;
        status.current_metrics = Some(
            measured
                .iter()
                .map(|m| MetricStatus {
                    type_: "Resource".into(),
                    resource: Some(ResourceMetricStatus {
                        name: m.resource.clone(),
                        current: MetricValueStatus {
                            average_utilization: Some(m.utilization),
                            average_value: Some(average_quantity(&m.resource, m.average)),
                            value: None,
                        },
                    }),
                    ..Default::default()
                })
                .collect(),
        );
        if replicas != current {
            let why = if replicas > current {
                format!(
                    "{} resource utilization (percentage of request) above target",
                    best.resource
                )
            } else {
                "All metrics below target".to_string()
            };
            self.rescale(hpa, &ns, current, replicas, &why, &mut status)
                .await?;
            conditions.push(condition(
                "AbleToScale",
                true,
                "SucceededRescale",
                format!("the HPA controller was able to update the target scale to {replicas}"),
            ));
        } else {
            conditions.push(condition(
                "AbleToScale",
                true,
                "ReadyForNewScale",
                "recommended size matches current size".into(),
            ));
        }
        conditions.push(condition(
            "ScalingActive",
            true,
            "ValidMetricFound",
            format!("the HPA was able to successfully calculate a replica count from {} resource utilization (percentage of request)", best.resource),
        ));
        conditions.push(match limit {
            Limit::None => condition(
                "ScalingLimited",
                false,
                "DesiredWithinRange",
                "the desired count is within the acceptable range".into(),
            ),
            Limit::TooMany => condition(
                "ScalingLimited",
                true,
                "TooManyReplicas",
                "the desired replica count is more than the maximum replica count".into(),
            ),
            Limit::TooFew => condition(
                "ScalingLimited",
                true,
                "TooFewReplicas",
                "the desired replica count is less than the minimum replica count".into(),
            ),
            Limit::ScaleUpLimit => condition(
                "ScalingLimited",
                true,
                "ScaleUpLimit",
                "the desired replica count is increasing faster than the maximum scale rate".into(),
            ),
        });
        status.conditions = Some(conditions);
        self.write_status(hpa, status).await
    }

    /// Sets the target's replicas and says so (SuccessfulRescale); a failure is an
    /// AbleToScale=False condition and a FailedRescale Event.
    async fn rescale(
        &self,
        hpa: &HorizontalPodAutoscaler,
        ns: &str,
        from: i32,
        to: i32,
        why: &str,
        status: &mut HorizontalPodAutoscalerStatus,
    ) -> Result<(), ClientError> {
        let key = key_of(&hpa.metadata);
        if let Err(e) = self.scale(hpa, ns, to).await {
            let message = format!("New size: {to}; reason: {why}; error: {e}");
            EVENTS
                .record(&self.client, hpa, "Warning", "FailedRescale", &message)
                .await;
            status.conditions = Some(vec![condition(
                "AbleToScale",
                false,
                "FailedUpdateScale",
                format!("the HPA controller was unable to update the target scale: {e}"),
            )]);
            let _ = self.write_status(hpa, status.clone()).await;
            return Err(e);
        }
        EVENTS
            .record(
                &self.client,
                hpa,
                "Normal",
                "SuccessfulRescale",
                &format!("New size: {to}; reason: {why}"),
            )
            .await;
        tracing::info!(hpa = %key, from, to, "rescaled");
        status.last_scale_time = Some(Time(jiff::Timestamp::now()));
        Ok(())
    }

    async fn scale(
        &self,
        hpa: &HorizontalPodAutoscaler,
        ns: &str,
        replicas: i32,
    ) -> Result<(), ClientError> {
        let r = &hpa.spec.scale_target_ref;
        let patch = Patch::Merge(json!({"spec": {"replicas": replicas}}));
        match r.kind.as_str() {
            "Deployment" => self
                .client
                .api::<Deployment>(ns)
                .patch(&r.name, &patch)
                .await
                .map(|_| ()),
            _ => self
                .client
                .api::<ReplicaSet>(ns)
                .patch(&r.name, &patch)
                .await
                .map(|_| ()),
        }
    }

    /// Writes the status, keeping a condition's transition time while its status holds.
    async fn write_status(
        &self,
        hpa: &HorizontalPodAutoscaler,
        mut status: HorizontalPodAutoscalerStatus,
    ) -> Result<(), ClientError> {
        let before: BTreeMap<String, HorizontalPodAutoscalerCondition> = hpa
            .status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten())
            .map(|c| (c.type_.clone(), c.clone()))
            .collect();
        for c in status.conditions.iter_mut().flatten() {
            if let Some(b) = before.get(&c.type_).filter(|b| b.status == c.status) {
                c.last_transition_time = b.last_transition_time.clone();
            }
        }
        if hpa.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let mut updated = hpa.clone();
        updated.status = Some(status);
        let ns = hpa.metadata.namespace.clone().unwrap_or_default();
        self.client
            .api::<HorizontalPodAutoscaler>(&ns)
            .update_status(&updated)
            .await
            .map(|_| ())
    }

    /// The running pods an autoscaler's target selects.
    fn targeted_pods(&self, hpa: &HorizontalPodAutoscaler, target: &Target) -> Vec<Arc<Pod>> {
        let ns = hpa.metadata.namespace.clone().unwrap_or_default();
        self.pods
            .by_index("namespace", &ns)
            .into_iter()
            .filter(|p| is_running(p))
            .filter(|p| selector::matches_opt(&target.selector, p.metadata.labels.as_ref()))
            .collect()
    }

    /// One period: read the agents of the nodes running targeted pods (none when there is
    /// no autoscaler), then every autoscaler, stopping early if `shutdown` flips (the
    /// Lease may be someone else's by then).
    async fn pass(&mut self, shutdown: &watch::Receiver<bool>) {
        let hpas = self.hpas.list();
        let targets: Vec<Option<(Target, Vec<Arc<Pod>>)>> = hpas
            .iter()
            .map(|hpa| {
                let ns = hpa.metadata.namespace.clone().unwrap_or_default();
                let target = self.target(&ns, hpa)?;
                let pods = self.targeted_pods(hpa, &target);
                Some((target, pods))
            })
            .collect();
        let wanted: HashSet<String> = targets
            .iter()
            .flatten()
            .flat_map(|(_, pods)| pods.iter())
            .filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()))
            .collect();
        let nodes: Vec<Arc<Node>> = wanted.iter().filter_map(|n| self.nodes.get(n)).collect();
        let failed = self.metrics.refresh(&nodes).await;
        for (node, why) in failed {
            tracing::debug!(node, error = %why, "reading an agent's metrics");
        }
        let live: HashSet<String> = hpas.iter().map(|h| key_of(&h.metadata)).collect();
        self.history.retain(|k, _| live.contains(k));
        for (hpa, target) in hpas.iter().zip(targets) {
            if *shutdown.borrow() {
                return;
            }
            let started = std::time::Instant::now();
            let result = self.sync(hpa, target).await;
            if let Err(e) = &result {
                tracing::warn!(hpa = %key_of(&hpa.metadata), error = %e, "autoscaling failed; retrying next period");
            }
            metrics::sync(
                "horizontal-pod-autoscaler",
                if result.is_ok() { "success" } else { "error" },
                started.elapsed(),
            );
        }
    }
}

/// An average use as a quantity: millicores for cpu, bytes for memory.
fn average_quantity(
    resource: &str,
    average: f64,
) -> k8s_openapi::apimachinery::pkg::api::resource::Quantity {
    k8s_openapi::apimachinery::pkg::api::resource::Quantity(if resource == "cpu" {
        format!("{}m", (average * 1000.0).round() as i64)
    } else {
        format!("{}", average.round() as i64)
    })
}

/// Registers the autoscaler on the shared informers; the future it returns runs it once
/// they have started, until `shutdown` flips.
pub fn start(
    client: Client,
    config: AutoscalerConfig,
    informers: &mut SharedInformers,
    mut shutdown: watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send + use<> {
    let hpas = informers.informer::<HorizontalPodAutoscaler>().store();
    let pods = informers.informer::<Pod>().store();
    let nodes = informers.informer::<Node>().store();
    let deployments = informers.informer::<Deployment>().store();
    let sets = informers.informer::<ReplicaSet>().store();
    async move {
        let ready = async {
            hpas.wait_until_ready().await
                && pods.wait_until_ready().await
                && nodes.wait_until_ready().await
                && deployments.wait_until_ready().await
                && sets.wait_until_ready().await
        };
        let synced = tokio::select! {
            r = ready => r,
            _ = shutdown.wait_for(|s| *s) => false,
        };
        if !synced {
            return;
        }
        let mut a = Autoscaler {
            client,
            hpas,
            pods,
            nodes,
            deployments,
            sets,
            metrics: PodMetrics::default(),
            history: HashMap::new(),
        };
        let mut tick = tokio::time::interval(config.sync_period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            a.pass(&shutdown).await;
        }
    }
}
