//! The ReplicaSet controller: keeps exactly `replicas` active pods matching each
//! ReplicaSet's selector. It creates missing pods from the template (owned by the
//! ReplicaSet, in slow-start batches of 1, 2, 4, …), adopts matching orphans, releases
//! owned pods that stopped matching, deletes surplus pods least valuable first
//! (unscheduled, then pending, then not ready, then the most restarted, then the newest),
//! and reports replicas, fullyLabeledReplicas, readyReplicas, availableReplicas
//! (minReadySeconds) and observedGeneration. Expectations keep a burst of watch events
//! from causing a second round of creations or deletions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flotilla_client::events::Recorder;
use flotilla_client::informer::key_of;
use flotilla_client::{
    Change, Client, ClientError, DeleteParams, Patch, SharedInformers, Store, WorkQueue,
};
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::expectations::Expectations;
use crate::{selector, workers};

/// How the controller signs its Events.
const EVENTS: Recorder<'static> = Recorder {
    component: "replicaset-controller",
    host: None,
};

/// Most pods created or deleted for one ReplicaSet in one sync.
pub const BURST: usize = 500;
/// Workers syncing ReplicaSets at once.
pub const WORKERS: usize = 4;

struct Controller {
    client: Client,
    sets: Store<ReplicaSet>,
    pods: Store<Pod>,
    expectations: Arc<Expectations>,
}

/// The ReplicaSet that controls a pod, as a cache key, if one does.
fn owner_key(p: &Pod) -> Option<String> {
    let o = controller_ref(p)?;
    (o.kind == "ReplicaSet").then(|| {
        format!(
            "{}/{}",
            p.metadata.namespace.as_deref().unwrap_or_default(),
            o.name
        )
    })
}

fn controller_ref(p: &Pod) -> Option<&OwnerReference> {
    p.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
}

fn labels(p: &Pod) -> BTreeMap<String, String> {
    p.metadata.labels.clone().unwrap_or_default()
}

fn is_active(p: &Pod) -> bool {
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
    p.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

fn ready_since(p: &Pod) -> Option<jiff::Timestamp> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .map(|c| {
            c.last_transition_time
                .as_ref()
                .map_or(jiff::Timestamp::UNIX_EPOCH, |t| t.0)
        })
}

/// The conditions with ReplicaFailure set for a failed create or delete (kept as first
/// reported while it keeps failing) or cleared once the ReplicaSet manages again.
fn with_failure(
    mut conditions: Vec<ReplicaSetCondition>,
    failure: Option<(&str, String)>,
    now: jiff::Timestamp,
) -> Vec<ReplicaSetCondition> {
    let failing = conditions
        .iter()
        .any(|c| c.type_.as_deref() == Some("ReplicaFailure"));
    match failure {
        Some((reason, message)) if !failing => conditions.push(ReplicaSetCondition {
            type_: Some("ReplicaFailure".into()),
            status: Some("True".into()),
            reason: Some(reason.into()),
            message: Some(message),
            last_transition_time: Some(Time(now)),
        }),
        None if failing => {
            conditions.retain(|c| c.type_.as_deref() != Some("ReplicaFailure"));
        }
        _ => {}
    }
    conditions
}

/// Deletion order: the pods worth least first.
fn rank(p: &Pod) -> (u8, u8, u8, i32, std::cmp::Reverse<jiff::Timestamp>) {
    let spec = p.spec.as_ref();
    let assigned = spec
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let phase = match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Running") => 2,
        _ => 1,
    };
    let restarts: i32 = p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |cs| cs.iter().map(|c| c.restart_count).sum());
    let created = p
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(jiff::Timestamp::UNIX_EPOCH, |t| t.0);
    (
        u8::from(assigned),
        phase,
        u8::from(ready_since(p).is_some()),
        -restarts,
        std::cmp::Reverse(created),
    )
}

/// Registers the controller on the shared informers; the future it returns runs the
/// controller once they have started, until `shutdown` flips.
pub fn start(
    client: Client,
    informers: &mut SharedInformers,
    shutdown: watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send + use<> {
    let queue = WorkQueue::new(Duration::from_millis(5), Duration::from_secs(300));
    let expectations = Arc::new(Expectations::default());
    let sets = {
        let q = queue.clone();
        informers
            .informer::<ReplicaSet>()
            .add_handler(move |c| {
                let rs = c.latest();
                q.add(key_of(&rs.metadata));
            })
            .store()
    };
    let pods = {
        let (q, e, sets) = (queue.clone(), expectations.clone(), sets.clone());
        informers
            .informer::<Pod>()
            .add_handler(move |c| {
                let enqueue_matching = |p: &Pod| {
                    // An orphan may be adopted by any ReplicaSet of its namespace that
                    // selects it.
                    let ns = p.metadata.namespace.clone().unwrap_or_default();
                    for rs in sets.by_index("namespace", &ns) {
                        if selector::matches(&rs.spec.selector, &labels(p)) {
                            q.add(key_of(&rs.metadata));
                        }
                    }
                };
                match c {
                    Change::Added(p) => match owner_key(p) {
                        Some(k) => {
                            e.creation_observed(&k);
                            q.add(k);
                        }
                        None => enqueue_matching(p),
                    },
                    Change::Updated { old, new } => {
                        if old.metadata.deletion_timestamp.is_none()
                            && new.metadata.deletion_timestamp.is_some()
                            && let Some(k) = owner_key(new)
                        {
                            e.deletion_observed(&k);
                        }
                        let (ko, kn) = (owner_key(old), owner_key(new));
                        if ko != kn
                            && let Some(k) = ko
                        {
                            q.add(k);
                        }
                        match kn {
                            Some(k) => q.add(k),
                            None => enqueue_matching(new),
                        }
                        if old.metadata.labels != new.metadata.labels {
                            enqueue_matching(new);
                        }
                    }
                    Change::Deleted(p) => {
                        if let Some(k) = owner_key(p) {
                            if p.metadata.deletion_timestamp.is_none() {
                                e.deletion_observed(&k);
                            }
                            q.add(k);
                        }
                    }
                }
            })
            .store()
    };
    async move {
        let mut tasks = JoinSet::new();
        sets.wait_until_ready().await;
        pods.wait_until_ready().await;
        let ctl = Arc::new(Controller {
            client,
            sets,
            pods,
            expectations,
        });
        workers::spawn(&mut tasks, WORKERS, "replicaset", &queue, &ctl, |c, k| {
            Box::pin(c.sync(k))
        });
        workers::run_until(tasks, &queue, shutdown).await;
    }
}

impl Controller {
    /// Brings one ReplicaSet's pods to its replicas; returns when to look again, if a
    /// pod's availability is due.
    async fn sync(&self, key: &str) -> Result<Option<Duration>, ClientError> {
        let Some(rs) = self.sets.get(key) else {
            self.expectations.forget(key);
            return Ok(None);
        };
        let spec = &rs.spec;
        if rs.metadata.deletion_timestamp.is_some() || selector::is_empty(&spec.selector) {
            return Ok(None);
        }
        let ns = rs.metadata.namespace.clone().unwrap_or_default();
        let name = rs.metadata.name.clone().unwrap_or_default();
        let uid = rs.metadata.uid.clone().unwrap_or_default();
        let pods_api = self.client.api::<Pod>(&ns);

        // Claim: ours if owned and matching; adopt matching orphans; release the rest.
        let mut mine: Vec<Arc<Pod>> = Vec::new();
        for p in self.pods.by_index("namespace", &ns) {
            let matching = selector::matches(&spec.selector, &labels(&p));
            let pod_name = p.metadata.name.clone().unwrap_or_default();
            match controller_ref(&p) {
                Some(o) if o.uid == uid => {
                    if matching {
                        mine.push(p);
                    } else {
                        let others: Vec<&OwnerReference> = p
                            .metadata
                            .owner_references
                            .iter()
                            .flatten()
                            .filter(|r| r.uid != uid)
                            .collect();
                        let patch = Patch::Merge(json!({"metadata": {"ownerReferences": others}}));
                        match pods_api.patch(&pod_name, &patch).await {
                            Ok(_) => tracing::info!(replicaset = %key, pod = %pod_name, "released"),
                            Err(e) if e.is_not_found() => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                Some(_) => {}
                None if matching && p.metadata.deletion_timestamp.is_none() => {
                    let mut refs: Vec<OwnerReference> =
                        p.metadata.owner_references.clone().unwrap_or_default();
                    refs.push(self.owner_ref(&rs));
                    let patch = Patch::Merge(json!({"metadata": {"ownerReferences": refs}}));
                    match pods_api.patch(&pod_name, &patch).await {
                        Ok(adopted) => {
                            tracing::info!(replicaset = %key, pod = %pod_name, "adopted");
                            mine.push(Arc::new(adopted));
                        }
                        Err(e) if e.is_not_found() => {}
                        Err(e) => return Err(e),
                    }
                }
                None => {}
            }
        }
        let mut active: Vec<Arc<Pod>> = mine.iter().filter(|p| is_active(p)).cloned().collect();
        let want = i64::from(spec.replicas.unwrap_or(1).max(0));

        // A failed create or delete is reported in the ReplicaFailure condition before
        // it is returned (and retried with back-off).
        let mut failure: Option<(&str, ClientError)> = None;
        if self.expectations.satisfied(key) {
            let diff = active.len() as i64 - want;
            if diff < 0 {
                let n = usize::try_from(-diff).unwrap_or(0).min(BURST);
                if let Err(e) = self.create_pods(&rs, key, n).await {
                    failure = Some(("FailedCreate", e));
                }
            } else if diff > 0 {
                let n = usize::try_from(diff).unwrap_or(0).min(BURST);
                active.sort_by_key(|p| rank(p));
                let doomed: Vec<Arc<Pod>> = active.drain(..n).collect();
                if let Err(e) = self.delete_pods(&rs, key, doomed).await {
                    failure = Some(("FailedDelete", e));
                }
            }
        }

        // Status.
        let min_ready = i64::from(spec.min_ready_seconds.unwrap_or(0).max(0));
        let now = jiff::Timestamp::now();
        let template_labels = spec
            .template
            .as_ref()
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        let counted: Vec<&Arc<Pod>> = mine.iter().filter(|p| is_active(p)).collect();
        let fully_labeled = counted
            .iter()
            .filter(|p| {
                let l = labels(p);
                template_labels.iter().all(|(k, v)| l.get(k) == Some(v))
            })
            .count();
        let ready: Vec<jiff::Timestamp> = counted.iter().filter_map(|p| ready_since(p)).collect();
        let available = ready
            .iter()
            .filter(|since| now.duration_since(**since).as_secs() >= min_ready)
            .count();
        let current = rs.status.as_ref();
        let conditions = with_failure(
            current
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default(),
            failure.as_ref().map(|(reason, e)| (*reason, e.to_string())),
            now,
        );
        let status = json!({
            "replicas": counted.len(),
            "fullyLabeledReplicas": fully_labeled,
            "readyReplicas": ready.len(),
            "availableReplicas": available,
            "observedGeneration": rs.metadata.generation,
            "conditions": conditions,
        });
        let same = current.is_some_and(|s| {
            i64::from(s.replicas) == counted.len() as i64
                && s.fully_labeled_replicas.map_or(0, i64::from) == fully_labeled as i64
                && s.ready_replicas.map_or(0, i64::from) == ready.len() as i64
                && s.available_replicas.map_or(0, i64::from) == available as i64
                && s.observed_generation == rs.metadata.generation
                && s.conditions.clone().unwrap_or_default() == conditions
        });
        if !same {
            match self
                .client
                .api::<ReplicaSet>(&ns)
                .patch_status(&name, &Patch::Merge(json!({"status": status})))
                .await
            {
                Ok(_) => {}
                Err(e) if e.is_not_found() => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        if let Some((_, e)) = failure {
            return Err(e);
        }
        // A ready pod becomes available after minReadySeconds: look again then.
        Ok((available < ready.len()).then(|| Duration::from_secs(min_ready.max(1) as u64)))
    }

    /// Deletes the chosen surplus pods, expecting to see each go.
    async fn delete_pods(
        &self,
        rs: &ReplicaSet,
        key: &str,
        doomed: Vec<Arc<Pod>>,
    ) -> Result<(), ClientError> {
        let ns = rs.metadata.namespace.clone().unwrap_or_default();
        let pods_api = self.client.api::<Pod>(&ns);
        self.expectations.expect(key, 0, doomed.len() as i64);
        let mut result = Ok(());
        for p in doomed {
            let pod_name = p.metadata.name.clone().unwrap_or_default();
            let params = DeleteParams {
                precondition_uid: p.metadata.uid.clone().unwrap_or_default(),
                ..Default::default()
            };
            match pods_api.delete(&pod_name, &params).await {
                Ok(_) => {
                    let msg = format!("Deleted pod: {pod_name}");
                    self.event(rs, "Normal", "SuccessfulDelete", &msg).await;
                }
                Err(e) => {
                    // It will not be seen going: stop waiting for it.
                    self.expectations.deletion_observed(key);
                    if !e.is_not_found() {
                        let msg = format!("Error deleting: {e}");
                        self.event(rs, "Warning", "FailedDelete", &msg).await;
                        result = Err(e);
                    }
                }
            }
        }
        result
    }

    fn owner_ref(&self, rs: &ReplicaSet) -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: rs.metadata.name.clone().unwrap_or_default(),
            uid: rs.metadata.uid.clone().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    /// Creates `n` pods from the template in slow-start batches: 1, then 2, 4, … while
    /// they succeed, so a template the API server refuses fails once, not n times.
    async fn create_pods(&self, rs: &ReplicaSet, key: &str, n: usize) -> Result<(), ClientError> {
        let ns = rs.metadata.namespace.clone().unwrap_or_default();
        let name = rs.metadata.name.clone().unwrap_or_default();
        let template = rs.spec.template.clone().unwrap_or_default();
        let meta = template.metadata.unwrap_or_default();
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "generateName": format!("{name}-"),
                "namespace": ns,
                "labels": meta.labels,
                "annotations": meta.annotations,
                "ownerReferences": [self.owner_ref(rs)],
            },
            "spec": template.spec,
        });
        self.expectations.expect(key, n as i64, 0);
        let api = self.client.dynamic("v1", "pods", &ns);
        let mut remaining = n;
        let mut batch = 1;
        while remaining > 0 {
            let size = batch.min(remaining);
            let results = create_many(&api, &pod, size).await;
            let mut failed = None;
            for r in results {
                match r {
                    Ok(created) => {
                        let pod_name = created["metadata"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string();
                        self.event(
                            rs,
                            "Normal",
                            "SuccessfulCreate",
                            &format!("Created pod: {pod_name}"),
                        )
                        .await;
                    }
                    Err(e) => {
                        self.expectations.creation_observed(key);
                        failed = Some(e);
                    }
                }
            }
            remaining -= size;
            if let Some(e) = failed {
                // The rest of this round is not attempted: none will be seen.
                for _ in 0..remaining {
                    self.expectations.creation_observed(key);
                }
                self.event(
                    rs,
                    "Warning",
                    "FailedCreate",
                    &format!("Error creating: {e}"),
                )
                .await;
                return Err(e);
            }
            batch *= 2;
        }
        Ok(())
    }

    async fn event(&self, rs: &ReplicaSet, type_: &str, reason: &str, message: &str) {
        EVENTS
            .record(&self.client, rs, type_, reason, message)
            .await;
    }
}

/// Creates `n` copies of `pod` at once.
async fn create_many(
    api: &flotilla_client::DynamicApi,
    pod: &serde_json::Value,
    n: usize,
) -> Vec<Result<serde_json::Value, ClientError>> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (api, pod) = (api.clone(), pod.clone());
        set.spawn(async move { api.create(&pod, false).await });
    }
    let mut out = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        out.push(r.unwrap_or_else(|e| Err(ClientError::Decode(e.to_string()))));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_failure_is_set_while_failing_and_cleared_after() {
        let now = jiff::Timestamp::now();
        let failed = with_failure(Vec::new(), Some(("FailedCreate", "forbidden".into())), now);
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].reason.as_deref(), Some("FailedCreate"));
        assert_eq!(failed[0].message.as_deref(), Some("forbidden"));
        let again = with_failure(failed.clone(), Some(("FailedCreate", "other".into())), now);
        assert_eq!(again, failed, "kept as first reported");
        assert!(with_failure(failed, None, now).is_empty());
    }
}
