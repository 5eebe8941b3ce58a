//! The controller manager: every controller runs while this process holds the Lease
//! `kube-system/flotilla-controller-manager`, so that of several managers only one acts;
//! losing the Lease stops them (the next leader starts from the cluster's state).

use flotilla_client::{Client, LeaderConfig, LeaderElector, SharedInformers};
use k8s_openapi::api::coordination::v1::Lease;
use tokio::sync::watch;

use crate::autoscaler::AutoscalerConfig;
use crate::node_lifecycle::NodeLifecycleConfig;
use crate::pod_gc::PodGcConfig;

/// The Lease the managers elect a leader on.
pub const LEASE: &str = "flotilla-controller-manager";

/// How the manager and its controllers run.
#[derive(Clone, Debug, Default)]
pub struct ManagerConfig {
    /// Leader-election timings.
    pub leader_election: LeaderConfig,
    /// The node lifecycle controller's periods, grace periods and eviction rates.
    pub node_lifecycle: NodeLifecycleConfig,
    /// The pod garbage collector's threshold and periods.
    pub pod_gc: PodGcConfig,
    /// The horizontal pod autoscaler's period.
    pub autoscaler: AutoscalerConfig,
}

/// Runs the controllers while leading, until `shutdown` flips.
pub async fn run(
    client: Client,
    identity: String,
    config: ManagerConfig,
    shutdown: watch::Receiver<bool>,
) {
    let ManagerConfig {
        leader_election,
        node_lifecycle,
        pod_gc,
        autoscaler,
    } = config;
    LeaderElector::new(
        client.api::<Lease>("kube-system"),
        LEASE,
        &identity,
        leader_election,
    )
    .run_while_leading(shutdown, |stop| async move {
        // A JoinSet, so that this future being dropped stops every controller.
        let mut controllers = tokio::task::JoinSet::new();
        // The controllers share one informer per kind: each Pod is watched, decoded and
        // cached once for all of them.
        let mut informers = SharedInformers::new(client.clone());
        let i = &mut informers;
        controllers.spawn(crate::replicaset::start(client.clone(), i, stop.clone()));
        controllers.spawn(crate::deployment::start(client.clone(), i, stop.clone()));
        controllers.spawn(crate::endpoints::start(client.clone(), i, stop.clone()));
        controllers.spawn(crate::garbage_collector::start(
            client.clone(),
            i,
            stop.clone(),
        ));
        controllers.spawn(crate::disruption::start(client.clone(), i, stop.clone()));
        controllers.spawn(crate::autoscaler::start(
            client.clone(),
            autoscaler,
            i,
            stop.clone(),
        ));
        controllers.spawn(crate::pod_gc::start(
            client.clone(),
            pod_gc,
            i,
            stop.clone(),
        ));
        controllers.spawn(crate::node_lifecycle::start(
            client,
            node_lifecycle,
            i,
            stop.clone(),
        ));
        informers.spawn(&mut controllers, &stop);
        while controllers.join_next().await.is_some() {}
    })
    .await;
}
