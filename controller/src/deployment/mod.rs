//! The Deployment controller: a Deployment owns one ReplicaSet per pod template (named
//! with the template's hash, numbered by the revision annotation) and moves pods from the
//! old ones to the new one — a rolling update within maxSurge and maxUnavailable, or
//! Recreate — scales proportionally when resized mid-rollout, honours pause, keeps
//! revisionHistoryLimit old revisions for rollback, and reports the Available and
//! Progressing conditions against progressDeadlineSeconds.
//!
//! Every write carries the resourceVersion the decision was made on, so a decision made
//! on a stale cache fails with a conflict and is retried on fresher state instead of being
//! applied twice.
//!
//! - [`rolling`]: maxSurge/maxUnavailable arithmetic
//! - [`proportional`]: spreading a resize over the active ReplicaSets
//! - [`revisions`]: template hashes, revision annotations, history
//! - [`status`]: counts and conditions
//! - `sync`: one Deployment's reconciliation

pub mod proportional;
pub mod revisions;
pub mod rolling;
pub mod status;
mod sync;

use std::sync::Arc;
use std::time::Duration;

use flotilla_client::events::Recorder;
use flotilla_client::informer::{by_owner, key_of};
use flotilla_client::{Change, Client, SharedInformers, Store, WorkQueue};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::{selector, workers};

/// How the controller signs its Events.
const EVENTS: Recorder<'static> = Recorder {
    component: "deployment-controller",
    host: None,
};

/// Workers syncing Deployments at once.
pub const WORKERS: usize = 4;

pub(crate) struct Controller {
    client: Client,
    deployments: Store<Deployment>,
    sets: Store<ReplicaSet>,
    pods: Store<Pod>,
}

/// The controlling owner reference of an object, if it has one.
pub(crate) fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
}

/// The cache key of the `kind` object controlling `meta`, in its namespace.
fn controller_key(meta: &ObjectMeta, kind: &str) -> Option<String> {
    let o = controller_of(meta)?;
    (o.kind == kind).then(|| {
        format!(
            "{}/{}",
            meta.namespace.as_deref().unwrap_or_default(),
            o.name
        )
    })
}

/// Registers the controller on the shared informers; the future it returns runs the
/// controller once they have started, until `shutdown` flips.
pub fn start(
    client: Client,
    informers: &mut SharedInformers,
    shutdown: watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send + use<> {
    let queue = WorkQueue::new(Duration::from_millis(5), Duration::from_secs(300));
    let deployments = {
        let q = queue.clone();
        informers
            .informer::<Deployment>()
            .add_handler(move |c| {
                let d = c.latest();
                q.add(key_of(&d.metadata));
            })
            .store()
    };
    let sets = {
        let (q, deployments) = (queue.clone(), deployments.clone());
        informers
            .informer::<ReplicaSet>()
            .add_handler(move |c| {
                let enqueue = |rs: &ReplicaSet| match controller_key(&rs.metadata, "Deployment") {
                    Some(k) => q.add(k),
                    None => {
                        // An orphan may be adopted by a Deployment that selects it.
                        let ns = rs.metadata.namespace.clone().unwrap_or_default();
                        let labels = rs.metadata.labels.clone().unwrap_or_default();
                        for d in deployments.by_index("namespace", &ns) {
                            if selector::matches(&d.spec.selector, &labels) {
                                q.add(key_of(&d.metadata));
                            }
                        }
                    }
                };
                match c {
                    Change::Added(rs) | Change::Deleted(rs) => enqueue(rs),
                    Change::Updated { old, new } => {
                        enqueue(new);
                        if controller_key(&old.metadata, "Deployment")
                            != controller_key(&new.metadata, "Deployment")
                        {
                            enqueue(old);
                        }
                    }
                }
            })
            .store()
    };
    let pods = {
        let (q, sets, deployments) = (queue.clone(), sets.clone(), deployments.clone());
        informers
            .informer::<Pod>()
            .add_index("owner", by_owner)
            .add_handler(move |c| {
                // Recreate waits for the old pods to be gone: their going moves it on.
                if let Change::Deleted(p) = c
                    && let Some(rs) =
                        controller_key(&p.metadata, "ReplicaSet").and_then(|k| sets.get(&k))
                    && let Some(dk) = controller_key(&rs.metadata, "Deployment")
                    && deployments.get(&dk).is_some_and(|d| sync::is_recreate(&d))
                {
                    q.add(dk);
                }
            })
            .store()
    };
    async move {
        let mut tasks = JoinSet::new();
        deployments.wait_until_ready().await;
        sets.wait_until_ready().await;
        pods.wait_until_ready().await;
        let ctl = Arc::new(Controller {
            client,
            deployments,
            sets,
            pods,
        });
        workers::spawn(&mut tasks, WORKERS, "deployment", &queue, &ctl, |c, k| {
            Box::pin(c.sync(k))
        });
        workers::run_until(tasks, &queue, shutdown).await;
    }
}
