//! The node lifecycle controller, after kube-controller-manager's (node health with
//! taint-based eviction, and the part of pod garbage collection that concerns dead nodes):
//!
//! - [`health`]: a node whose Lease has not been renewed (and whose Ready heartbeat has not
//!   moved) for `node_monitor_grace_period`, timed on this controller's clock, gets every
//!   condition set to Unknown ("Kubelet stopped posting node status.").
//! - [`taints`]: NoSchedule taints follow the conditions at once (`not-ready`,
//!   `unreachable`, and `unschedulable` for a cordon); the NoExecute `not-ready` / `unreachable`
//!   taint is added through a per-zone rate limit ([`rate_limit`], decided by [`zones`])
//!   and removed as soon as the node is Ready again.
//! - [`pods`] (with the decisions in [`eviction`]): pods on a node gone Unknown are marked
//!   Ready=False; a pod that does not tolerate a NoExecute taint is deleted (Event
//!   `TaintManagerEviction`), at once or when its `tolerationSeconds` have passed since the
//!   taint's timeAdded; a pod tolerating it forever stays.
//!
//! **Force deletion.** A pod deleted on an unreachable node keeps its deletionTimestamp
//! forever: deletion is finished by the node's agent, and none is there. Kubernetes leaves
//! such pods until an operator marks the node out of service (or deletes the Node);
//! Flotilla removes them (grace period 0) once their own grace period has passed and the
//! node is still unreachable, so that evicted pods leave the API and their replacements
//! are the only ones counted. The cost is Kubernetes' reason for waiting: if the node is
//! only cut off, not dead, its containers may still run until its agent returns and
//! stops them (it stops every container of a pod no longer in the API). No workload here
//! needs at-most-one semantics yet; one that does (StatefulSets) would need the
//! out-of-service taint first.
//!
//! The monitor runs every `node_monitor_period`; tainting for eviction is tried every
//! 100 ms (Kubernetes' eviction period) so that rates above one node per monitor period
//! hold.

pub mod eviction;
pub mod health;
mod monitor;
mod pods;
pub mod rate_limit;
pub mod taints;
pub mod zones;

use std::sync::Arc;
use std::time::Duration;

use flotilla_client::informer::{key_of, pods_by_node};
use flotilla_client::{Change, Client, Informer, ListParams, SharedInformers, WorkQueue};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use tokio::sync::watch;
use tokio::time::Instant;

use health::Health;
pub use zones::Rates;

/// The namespace of node Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// Workers syncing pods at once.
pub const POD_WORKERS: usize = 2;

/// How the controller runs (kube-controller-manager's flags and defaults).
#[derive(Clone, Debug, PartialEq)]
pub struct NodeLifecycleConfig {
    /// How often nodes are checked (`--node-monitor-period`, 5 s).
    pub node_monitor_period: Duration,
    /// How long a node may go without a sign of life before it is Unknown
    /// (`--node-monitor-grace-period`, 40 s).
    pub node_monitor_grace_period: Duration,
    /// The same, for a node that never posted its Ready condition
    /// (`--node-startup-grace-period`, 60 s).
    pub node_startup_grace_period: Duration,
    /// Eviction rates and zone thresholds.
    pub rates: Rates,
}

impl Default for NodeLifecycleConfig {
    fn default() -> Self {
        NodeLifecycleConfig {
            node_monitor_period: Duration::from_secs(5),
            node_monitor_grace_period: Duration::from_secs(40),
            node_startup_grace_period: Duration::from_secs(60),
            rates: Rates {
                node_eviction_rate: 0.1,
                secondary_node_eviction_rate: 0.01,
                unhealthy_zone_threshold: 0.55,
                large_cluster_size_threshold: 50,
            },
        }
    }
}

/// A setting that cannot work, named by its flag.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("--{flag}: {reason}")]
pub struct ConfigError {
    /// The flag.
    pub flag: &'static str,
    /// What is wrong.
    pub reason: String,
}

impl NodeLifecycleConfig {
    /// Checks that the settings can work together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |flag, reason: &str| {
            Err(ConfigError {
                flag,
                reason: reason.into(),
            })
        };
        if self.node_monitor_period.is_zero() {
            return err("node-monitor-period", "must be more than 0");
        }
        if self.node_monitor_grace_period <= self.node_monitor_period {
            return err(
                "node-monitor-grace-period",
                "must be longer than --node-monitor-period (a node is checked several times within its grace)",
            );
        }
        if self.node_startup_grace_period < self.node_monitor_grace_period {
            return err(
                "node-startup-grace-period",
                "must be at least --node-monitor-grace-period",
            );
        }
        let r = &self.rates;
        if !(r.node_eviction_rate >= 0.0 && r.node_eviction_rate.is_finite()) {
            return err("node-eviction-rate", "must be a number ≥ 0");
        }
        if !(r.secondary_node_eviction_rate >= 0.0 && r.secondary_node_eviction_rate.is_finite()) {
            return err("secondary-node-eviction-rate", "must be a number ≥ 0");
        }
        if !(r.unhealthy_zone_threshold > 0.0 && r.unhealthy_zone_threshold <= 1.0) {
            return err(
                "unhealthy-zone-threshold",
                "must be more than 0 and at most 1",
            );
        }
        Ok(())
    }
}

/// Did the node's readiness or NoExecute taints change (what its pods' fate depends on)?
fn matters_to_pods(old: &Node, new: &Node) -> bool {
    taints::condition_status(old, "Ready") != taints::condition_status(new, "Ready")
        || taints::no_execute_taints(old) != taints::no_execute_taints(new)
}

fn renew_time(lease: &Lease) -> Option<jiff::Timestamp> {
    lease.spec.as_ref()?.renew_time.as_ref().map(|t| t.0)
}

/// Registers the controller on the shared informers; the future it returns runs the
/// controller once they have started, until `shutdown` flips.
pub fn start(
    client: Client,
    config: NodeLifecycleConfig,
    informers: &mut SharedInformers,
    shutdown: watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send + use<> {
    let health = Arc::new(Health::default());
    let queue: Arc<WorkQueue<String>> =
        WorkQueue::new(Duration::from_millis(5), Duration::from_secs(300));
    let leases_informer = {
        let health = health.clone();
        Informer::new(client.api::<Lease>(LEASE_NAMESPACE), ListParams::default()).on_change(
            move |c| match c {
                Change::Added(l) | Change::Updated { new: l, .. } => {
                    let node = l.metadata.name.clone().unwrap_or_default();
                    health.lease_seen(&node, renew_time(l), Instant::now());
                }
                Change::Deleted(_) => {}
            },
        )
    };
    let pods_store = {
        let q = queue.clone();
        informers
            .informer::<Pod>()
            .add_index("node", pods_by_node)
            .add_handler(move |c| {
                if let Change::Added(p) | Change::Updated { new: p, .. } = c
                    && pods_by_node(p).iter().any(|n| !n.is_empty())
                {
                    q.add(key_of(&p.metadata));
                }
            })
            .store()
    };
    let nodes_store = {
        let (q, pods, health) = (queue.clone(), pods_store.clone(), health.clone());
        informers.informer::<Node>().add_handler(move |c| {
            let enqueue_pods = |n: &Node| {
                for p in pods.by_index("node", n.metadata.name.as_deref().unwrap_or_default()) {
                    q.add(key_of(&p.metadata));
                }
            };
            match c {
                Change::Added(n) => enqueue_pods(n),
                Change::Updated { old, new } if matters_to_pods(old, new) => enqueue_pods(new),
                Change::Updated { .. } => {}
                Change::Deleted(n) => health.forget(n.metadata.name.as_deref().unwrap_or_default()),
            }
        });
        informers.informer::<Node>().store()
    };
    let leases_store = leases_informer.store();
    async move {
        // One JoinSet, so that dropping the controller stops everything it started. The
        // Leases are watched in their one namespace, by this controller alone.
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(leases_informer.run(shutdown.clone()));
        let ready = async {
            leases_store.wait_until_ready().await
                && nodes_store.wait_until_ready().await
                && pods_store.wait_until_ready().await
        };
        let mut stop = shutdown.clone();
        let synced = tokio::select! {
            r = ready => r,
            _ = stop.wait_for(|s| *s) => false,
        };
        if synced {
            tracing::info!(
                grace = ?config.node_monitor_grace_period,
                period = ?config.node_monitor_period,
                "node lifecycle controller running"
            );
            let worker = Arc::new(pods::PodWorker::new(
                client.clone(),
                nodes_store.clone(),
                pods_store.clone(),
                queue.clone(),
            ));
            for _ in 0..POD_WORKERS {
                tasks.spawn(worker.clone().run());
            }
            let monitor = monitor::Monitor::new(client, config, nodes_store, health);
            tasks.spawn(monitor.run(shutdown.clone()));
        }
        let _ = stop.wait_for(|s| *s).await;
        queue.shut_down();
        while tasks.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_kubernetes_and_bad_settings_are_named() {
        let d = NodeLifecycleConfig::default();
        assert!(d.validate().is_ok());
        assert_eq!(d.node_monitor_grace_period, Duration::from_secs(40));
        let short = NodeLifecycleConfig {
            node_monitor_grace_period: Duration::from_secs(5),
            ..d.clone()
        };
        assert_eq!(
            short.validate().map_err(|e| e.flag),
            Err("node-monitor-grace-period")
        );
        let mut bad = d;
        bad.rates.unhealthy_zone_threshold = 1.5;
        assert_eq!(
            bad.validate().map_err(|e| e.flag),
            Err("unhealthy-zone-threshold")
        );
    }
}
