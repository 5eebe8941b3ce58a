//! The garbage collector. Background deletion (Kubernetes' default): an object whose every
//! owner is gone is deleted; an object that lost only some owners has those references
//! removed. Owners are checked against the API server, not only the cache, so an owner
//! created a moment ago is never mistaken for a missing one.
//!
//! Owners deleted with another propagation policy carry a finalizer: `orphan` — their
//! dependents' references to them are removed, then the finalizer; `foregroundDeletion` —
//! their dependents are deleted (foreground too, so chains go down level by level) and
//! the finalizer is removed once none is left, so the owner goes last.
//!
//! Dependents watched: Pods (owned by ReplicaSets and others) and ReplicaSets (owned by
//! Deployments).

use std::sync::Arc;
use std::time::Duration;

use flotilla_client::informer::{by_owner, key_of};
use flotilla_client::{
    Change, Client, ClientError, DeleteParams, ListParams, Patch, SharedInformers, Store, WorkQueue,
};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::workers;

/// What the queue holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Item {
    /// A dependent to check: (resource, namespace/name).
    Dependent(&'static str, String),
    /// An owner held by a propagation finalizer: (resource, namespace/name).
    Owner(&'static str, String),
}

/// The finalizers the API server adds for foreground and orphan deletion.
const ORPHAN: &str = "orphan";
const FOREGROUND: &str = "foregroundDeletion";

/// Kinds that may be dependents, as (api version, resource).
const DEPENDENT_KINDS: [(&str, &str); 2] = [("v1", "pods"), ("apps/v1", "replicasets")];

/// Is the object being deleted with a propagation finalizer?
fn held_for_dependents(meta: &ObjectMeta) -> bool {
    meta.deletion_timestamp.is_some()
        && meta
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == ORPHAN || f == FOREGROUND)
}

/// The API resource (version, plural) of an owner kind, for the kinds known here.
fn resource_of(owner: &OwnerReference) -> Option<(&'static str, &'static str)> {
    Some(match (owner.api_version.as_str(), owner.kind.as_str()) {
        ("apps/v1", "ReplicaSet") => ("apps/v1", "replicasets"),
        ("apps/v1", "Deployment") => ("apps/v1", "deployments"),
        ("apps/v1", "StatefulSet") => ("apps/v1", "statefulsets"),
        ("apps/v1", "DaemonSet") => ("apps/v1", "daemonsets"),
        ("v1", "Pod") => ("v1", "pods"),
        ("v1", "ReplicationController") => ("v1", "replicationcontrollers"),
        _ => return None,
    })
}

struct Collector {
    client: Client,
    pods: Store<Pod>,
    sets: Store<ReplicaSet>,
}

fn has_owners(meta: &ObjectMeta) -> bool {
    meta.owner_references
        .as_ref()
        .is_some_and(|o| !o.is_empty())
}

/// Registers the controller on the shared informers; the future it returns runs the
/// controller once they have started, until `shutdown` flips.
pub fn start(
    client: Client,
    informers: &mut SharedInformers,
    shutdown: watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send + use<> {
    let queue: Arc<WorkQueue<Item>> =
        WorkQueue::new(Duration::from_millis(5), Duration::from_secs(300));
    let pods = {
        let q = queue.clone();
        informers
            .informer::<Pod>()
            .add_index("owner", by_owner)
            .add_handler(move |c| {
                if let Change::Added(p) | Change::Updated { new: p, .. } = c
                    && has_owners(&p.metadata)
                {
                    q.add(Item::Dependent("pods", key_of(&p.metadata)));
                }
            })
            .store()
    };
    let sets = {
        let (q, pods) = (queue.clone(), pods.clone());
        informers
            .informer::<ReplicaSet>()
            .add_index("owner", by_owner)
            .add_handler(move |c| match c {
                Change::Added(rs) | Change::Updated { new: rs, .. } => {
                    if has_owners(&rs.metadata) {
                        q.add(Item::Dependent("replicasets", key_of(&rs.metadata)));
                    }
                    if held_for_dependents(&rs.metadata) {
                        q.add(Item::Owner("replicasets", key_of(&rs.metadata)));
                    }
                }
                // Its pods may now be orphans.
                Change::Deleted(rs) => {
                    let uid = rs.metadata.uid.clone().unwrap_or_default();
                    for p in pods.by_index("owner", &uid) {
                        q.add(Item::Dependent("pods", key_of(&p.metadata)));
                    }
                }
            })
            .store()
    };
    {
        let (q, sets) = (queue.clone(), sets.clone());
        informers
            .informer::<Deployment>()
            .add_handler(move |c| match c {
                Change::Deleted(d) => {
                    let uid = d.metadata.uid.clone().unwrap_or_default();
                    for rs in sets.by_index("owner", &uid) {
                        q.add(Item::Dependent("replicasets", key_of(&rs.metadata)));
                    }
                }
                Change::Added(d) | Change::Updated { new: d, .. } => {
                    if held_for_dependents(&d.metadata) {
                        q.add(Item::Owner("deployments", key_of(&d.metadata)));
                    }
                }
            })
    };
    async move {
        let mut tasks = JoinSet::new();
        let gc = Arc::new(Collector { client, pods, sets });
        gc.pods.wait_until_ready().await;
        gc.sets.wait_until_ready().await;
        workers::spawn(
            &mut tasks,
            1,
            "garbage-collector",
            &queue,
            &gc,
            |c, item| {
                Box::pin(async move {
                    match item {
                        Item::Dependent(resource, key) => {
                            c.collect(resource, key).await.map(|()| None)
                        }
                        Item::Owner(resource, key) => c.finalize(resource, key).await,
                    }
                })
            },
        );
        workers::run_until(tasks, &queue, shutdown).await;
    }
}

impl Collector {
    /// Deletes the dependent if all its owners are gone; drops the references to the gone
    /// ones otherwise.
    async fn collect(&self, resource: &str, key: &str) -> Result<(), ClientError> {
        let meta = match resource {
            "pods" => self.pods.get(key).map(|p| p.metadata.clone()),
            _ => self.sets.get(key).map(|r| r.metadata.clone()),
        };
        let Some(meta) = meta else {
            return Ok(());
        };
        if meta.deletion_timestamp.is_some() {
            return Ok(());
        }
        let ns = meta.namespace.clone().unwrap_or_default();
        let name = meta.name.clone().unwrap_or_default();
        let refs = meta.owner_references.clone().unwrap_or_default();
        let mut alive = Vec::new();
        for r in &refs {
            let Some((version, plural)) = resource_of(r) else {
                // Unknown kinds are presumed alive: never delete on a guess.
                alive.push(r.clone());
                continue;
            };
            // Owners live in the dependent's namespace (or are cluster-scoped; none of
            // the kinds above are).
            match self
                .client
                .dynamic(version, plural, &ns)
                .get(&r.name, "")
                .await
            {
                Ok(o) if o["metadata"]["uid"].as_str() == Some(r.uid.as_str()) => {
                    alive.push(r.clone())
                }
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        if alive.len() == refs.len() {
            return Ok(());
        }
        let api = self.client.dynamic(
            if resource == "pods" { "v1" } else { "apps/v1" },
            resource,
            &ns,
        );
        let outcome = if alive.is_empty() {
            let params = DeleteParams {
                precondition_uid: meta.uid.clone().unwrap_or_default(),
                ..Default::default()
            };
            tracing::info!(resource, object = %key, "deleting: its owners are gone");
            api.delete(&name, &params).await.map(|_| ())
        } else {
            let patch = Patch::Merge(json!({"metadata": {"ownerReferences": alive}}));
            api.patch(&name, "", &patch, false).await.map(|_| ())
        };
        match outcome {
            Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
            other => other,
        }
    }

    /// Works through an owner held by the orphan or foregroundDeletion finalizer; returns
    /// when to look again while foreground dependents are still going.
    async fn finalize(&self, resource: &str, key: &str) -> Result<Option<Duration>, ClientError> {
        let (ns, name) = key.split_once('/').unwrap_or(("", key));
        let owners = self.client.dynamic("apps/v1", resource, ns);
        let owner = match owners.get(name, "").await {
            Ok(o) => o,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let meta: ObjectMeta = serde_json::from_value(owner["metadata"].clone())
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        if !held_for_dependents(&meta) {
            return Ok(None);
        }
        let uid = meta.uid.clone().unwrap_or_default();
        let finalizers = meta.finalizers.clone().unwrap_or_default();
        let orphan = finalizers.iter().any(|f| f == ORPHAN);
        // The API server's view, not the cache's: a dependent created a moment ago must
        // not be missed.
        let mut remaining = 0;
        for (version, plural) in DEPENDENT_KINDS {
            let api = self.client.dynamic(version, plural, ns);
            for d in api.list(&ListParams::default()).await?.items {
                let refs: Vec<OwnerReference> =
                    serde_json::from_value(d["metadata"]["ownerReferences"].clone())
                        .unwrap_or_default();
                if !refs.iter().any(|r| r.uid == uid) {
                    continue;
                }
                let d_name = d["metadata"]["name"].as_str().unwrap_or_default();
                let outcome = if orphan {
                    let kept: Vec<&OwnerReference> = refs.iter().filter(|r| r.uid != uid).collect();
                    let patch = Patch::Merge(json!({"metadata": {
                        "ownerReferences": kept,
                        "resourceVersion": d["metadata"]["resourceVersion"],
                    }}));
                    tracing::info!(owner = %key, dependent = %d_name, resource = plural, "orphaning");
                    api.patch(d_name, "", &patch, false).await.map(|_| ())
                } else {
                    remaining += 1;
                    if !d["metadata"]["deletionTimestamp"].is_null() {
                        continue;
                    }
                    tracing::info!(owner = %key, dependent = %d_name, resource = plural, "deleting before its owner");
                    let params = DeleteParams {
                        precondition_uid: d["metadata"]["uid"].as_str().unwrap_or_default().into(),
                        propagation_policy: "Foreground".into(),
                        ..Default::default()
                    };
                    api.delete(d_name, &params).await.map(|_| ())
                };
                match outcome {
                    Err(e) if e.is_not_found() => {}
                    other => other?,
                }
            }
        }
        if remaining > 0 {
            return Ok(Some(Duration::from_millis(500)));
        }
        let kept: Vec<&String> = finalizers
            .iter()
            .filter(|f| *f != ORPHAN && *f != FOREGROUND)
            .collect();
        let patch = Patch::Merge(json!({"metadata": {
            "finalizers": kept,
            "resourceVersion": meta.resource_version,
        }}));
        tracing::info!(owner = %key, "dependents dealt with; removing the finalizer");
        match owners.patch(name, "", &patch, false).await {
            Err(e) if e.is_not_found() => Ok(None),
            other => other.map(|_| None),
        }
    }
}
