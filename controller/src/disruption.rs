//! The disruption controller: keeps each PodDisruptionBudget's status current, which is
//! what the pods/eviction subresource decides on. For the pods its selector selects it
//! counts the healthy ones (Ready, not being deleted, not just evicted), works out how
//! many must stay healthy (`minAvailable`, or the expected count less `maxUnavailable`;
//! percentages of the pods' controllers' replicas, rounded up as Kubernetes does), and
//! reports the disruptions allowed now. Pods an eviction recorded in `disruptedPods` count
//! as gone until they are, or for two minutes, whichever comes first.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use flotilla_client::informer::key_of;
use flotilla_client::{Change, Client, ClientError, SharedInformers, Store, WorkQueue};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::pod_state::is_ready;
use crate::{selector, workers};

/// How long an evicted pod counts as disrupted before it must be gone (Kubernetes'
/// DeletionTimeout).
pub const DELETION_TIMEOUT: Duration = Duration::from_secs(120);
/// Workers syncing budgets at once.
const WORKERS: usize = 2;

struct Controller {
    client: Client,
    budgets: Store<PodDisruptionBudget>,
    pods: Store<Pod>,
    sets: Store<ReplicaSet>,
    deployments: Store<Deployment>,
}

/// Does the budget select the pod? (policy/v1: no selector selects nothing.)
fn selects(b: &PodDisruptionBudget, pod: &Pod) -> bool {
    b.spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .is_some_and(|s| selector::matches_opt(s, pod.metadata.labels.as_ref()))
}

fn is_healthy(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none() && is_ready(p)
}

/// `v` of `total`: a count, or a percentage rounded up.
fn scaled(v: &IntOrString, total: i32) -> i32 {
    match v {
        IntOrString::Int(n) => *n,
        IntOrString::String(s) => {
            let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            i32::try_from((i64::from(total) * pct + 99) / 100).unwrap_or(i32::MAX)
        }
    }
}

/// What a budget's numbers come to.
#[derive(Debug, PartialEq, Eq)]
struct Counts {
    expected: i32,
    desired: i32,
    healthy: i32,
}

impl Controller {
    /// The replicas the pods' controllers ask for, each controller once (a ReplicaSet a
    /// Deployment owns counts as the Deployment). A pod no controller owns, or owned by a
    /// kind whose scale this server does not keep, leaves the count unknown: as in
    /// Kubernetes, the budget then allows nothing rather than guess.
    fn expected_from_controllers(&self, pods: &[Arc<Pod>]) -> Result<i32, String> {
        let mut controllers: HashMap<String, i32> = HashMap::new();
        for p in pods {
            let ns = p.metadata.namespace.clone().unwrap_or_default();
            let name = p.metadata.name.clone().unwrap_or_default();
            let owner = p
                .metadata
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.controller == Some(true))
                .ok_or_else(|| format!("found no controller for pod {ns}/{name}"))?;
            if owner.kind != "ReplicaSet" {
                return Err(format!(
                    "cannot count the replicas of {} {:?} (pod {ns}/{name})",
                    owner.kind, owner.name
                ));
            }
            let rs = self
                .sets
                .get(&format!("{ns}/{}", owner.name))
                .ok_or_else(|| format!("ReplicaSet {ns}/{} not found", owner.name))?;
            let deployment = rs
                .metadata
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.controller == Some(true) && o.kind == "Deployment")
                .and_then(|o| self.deployments.get(&format!("{ns}/{}", o.name)));
            match deployment {
                Some(d) => {
                    controllers.insert(
                        d.metadata.uid.clone().unwrap_or_default(),
                        d.spec.replicas.unwrap_or(1),
                    );
                }
                None => {
                    controllers.insert(owner.uid.clone(), rs.spec.replicas.unwrap_or(1));
                }
            }
        }
        Ok(controllers.values().sum())
    }

    fn counts(
        &self,
        b: &PodDisruptionBudget,
        pods: &[Arc<Pod>],
        disrupted: &HashSet<&str>,
    ) -> Result<Counts, String> {
        let spec = b.spec.clone().unwrap_or_default();
        let healthy = pods
            .iter()
            .filter(|p| is_healthy(p))
            .filter(|p| !disrupted.contains(p.metadata.name.as_deref().unwrap_or_default()))
            .count();
        let healthy = i32::try_from(healthy).unwrap_or(i32::MAX);
        let pod_count = i32::try_from(pods.len()).unwrap_or(i32::MAX);
        let (expected, desired) = match (&spec.min_available, &spec.max_unavailable) {
            (Some(IntOrString::Int(n)), _) => (pod_count, *n),
            (Some(pct), _) => {
                let e = self.expected_from_controllers(pods)?;
                (e, scaled(pct, e))
            }
            (None, Some(mu)) => {
                let e = self.expected_from_controllers(pods)?;
                (e, (e - scaled(mu, e)).max(0))
            }
            (None, None) => (pod_count, 0),
        };
        Ok(Counts {
            expected,
            desired,
            healthy,
        })
    }

    /// Brings one budget's status up to date; returns when to look again (an evicted
    /// pod's record expiring).
    async fn sync(&self, key: &str) -> Result<Option<Duration>, ClientError> {
        let Some(b) = self.budgets.get(key) else {
            return Ok(None);
        };
        let ns = b.metadata.namespace.clone().unwrap_or_default();
        let pods: Vec<Arc<Pod>> = self
            .pods
            .by_index("namespace", &ns)
            .into_iter()
            .filter(|p| selects(&b, p))
            .collect();
        let old = b.status.clone().unwrap_or_default();
        let now = jiff::Timestamp::now();
        let mut recheck: Option<Duration> = None;
        // An evicted pod stays recorded while it exists, is not yet being deleted, and
        // the deletion timeout has not passed.
        let alive: HashSet<&str> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.metadata.name.as_deref())
            .collect();
        let disrupted: BTreeMap<String, Time> = old
            .disrupted_pods
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|(name, at)| {
                let alive = alive.contains(name.as_str());
                let left = jiff::SignedDuration::try_from(DELETION_TIMEOUT)
                    .ok()
                    .and_then(|t| at.0.checked_add(t).ok())
                    .and_then(|end| Duration::try_from(end.duration_since(now)).ok());
                if let (true, Some(left)) = (alive, left) {
                    recheck = Some(recheck.map_or(left, |r| r.min(left)));
                    true
                } else {
                    false
                }
            })
            .collect();
        let names: HashSet<&str> = disrupted.keys().map(String::as_str).collect();
        let generation = b.metadata.generation;
        let (c, allowed, condition) = match self.counts(&b, &pods, &names) {
            Ok(c) => {
                let allowed = (c.healthy - c.desired).max(0);
                let condition = if allowed > 0 {
                    ("True", "SufficientPods", String::new())
                } else {
                    (
                        "False",
                        "InsufficientPods",
                        format!(
                            "The disruption budget needs {} healthy pods and has {} currently",
                            c.desired, c.healthy
                        ),
                    )
                };
                (c, allowed, condition)
            }
            // The expected count is unknown: allow nothing, and say why.
            Err(why) => (
                Counts {
                    expected: 0,
                    desired: 0,
                    healthy: 0,
                },
                0,
                ("False", "SyncFailed", why),
            ),
        };
        let kept = old
            .conditions
            .iter()
            .flatten()
            .find(|x| x.type_ == "DisruptionAllowed")
            .filter(|x| x.status == condition.0 && x.reason == condition.1)
            .map(|x| x.last_transition_time.clone());
        let status = PodDisruptionBudgetStatus {
            observed_generation: generation,
            current_healthy: Some(c.healthy),
            desired_healthy: Some(c.desired),
            expected_pods: Some(c.expected),
            disruptions_allowed: Some(allowed),
            disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
            conditions: Some(vec![Condition {
                type_: "DisruptionAllowed".into(),
                status: condition.0.into(),
                reason: condition.1.into(),
                message: condition.2,
                observed_generation: generation,
                last_transition_time: kept.unwrap_or(Time(now)),
            }]),
        };
        if b.status.as_ref() != Some(&status) {
            let mut updated = (*b).clone();
            updated.status = Some(status);
            self.client
                .api::<PodDisruptionBudget>(&ns)
                .update_status(&updated)
                .await?;
        }
        Ok(recheck)
    }
}

/// A handler queueing the budgets of a controller's namespace when its replicas may
/// have changed.
fn on_scale_change<K: k8s_openapi::Metadata<Ty = ObjectMeta> + 'static>(
    q: Arc<WorkQueue<String>>,
    budgets: Store<PodDisruptionBudget>,
    replicas: fn(&K) -> Option<i32>,
) -> impl Fn(&Change<K>) + Send + Sync + 'static {
    move |c| {
        if let Change::Updated { old, new } = c
            && replicas(old) == replicas(new)
        {
            return;
        }
        let ns = c.latest().metadata().namespace.clone().unwrap_or_default();
        for b in budgets.by_index("namespace", &ns) {
            q.add(key_of(&b.metadata));
        }
    }
}

/// Registers the controller on the shared informers; the future it returns runs it once
/// they have started, until `shutdown` flips.
pub fn start(
    client: Client,
    informers: &mut SharedInformers,
    shutdown: watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send + use<> {
    let queue: Arc<WorkQueue<String>> =
        WorkQueue::new(Duration::from_millis(5), Duration::from_secs(300));
    let budgets = {
        let q = queue.clone();
        informers
            .informer::<PodDisruptionBudget>()
            .add_handler(move |c| {
                let b = c.latest();
                q.add(key_of(&b.metadata));
            })
            .store()
    };
    // Every budget of the namespace that selects the pod (before or after a change).
    let enqueue_for = |q: Arc<WorkQueue<String>>, budgets: Store<PodDisruptionBudget>| {
        move |p: &Pod| {
            let ns = p.metadata.namespace.clone().unwrap_or_default();
            for b in budgets.by_index("namespace", &ns) {
                if selects(&b, p) {
                    q.add(key_of(&b.metadata));
                }
            }
        }
    };
    let pods = {
        let enqueue = enqueue_for(queue.clone(), budgets.clone());
        informers
            .informer::<Pod>()
            .add_handler(move |c| match c {
                Change::Added(p) | Change::Deleted(p) => enqueue(p),
                Change::Updated { old, new } => {
                    enqueue(new);
                    if old.metadata.labels != new.metadata.labels {
                        enqueue(old);
                    }
                }
            })
            .store()
    };
    // A controller's scale changes the expected count of percentages: look at the
    // namespace's budgets again when one appears, goes or changes its replicas (not on its
    // status, which changes with every pod).
    let sets = informers
        .informer::<ReplicaSet>()
        .add_handler(on_scale_change(
            queue.clone(),
            budgets.clone(),
            |rs: &ReplicaSet| rs.spec.replicas,
        ))
        .store();
    let deployments = informers
        .informer::<Deployment>()
        .add_handler(on_scale_change(
            queue.clone(),
            budgets.clone(),
            |d: &Deployment| d.spec.replicas,
        ))
        .store();
    async move {
        let mut tasks = JoinSet::new();
        if !(budgets.wait_until_ready().await
            && pods.wait_until_ready().await
            && sets.wait_until_ready().await
            && deployments.wait_until_ready().await)
        {
            return;
        }
        let ctl = Arc::new(Controller {
            client,
            budgets,
            pods,
            sets,
            deployments,
        });
        workers::spawn(&mut tasks, WORKERS, "disruption", &queue, &ctl, |c, k| {
            Box::pin(c.sync(k))
        });
        workers::run_until(tasks, &queue, shutdown).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_up_as_kubernetes_does() {
        assert_eq!(scaled(&IntOrString::String("50%".into()), 3), 2);
        assert_eq!(scaled(&IntOrString::String("25%".into()), 4), 1);
        assert_eq!(scaled(&IntOrString::String("0%".into()), 5), 0);
        assert_eq!(scaled(&IntOrString::Int(2), 5), 2);
    }
}
