//! The Flotilla controller manager: controllers that keep the cluster's
//! state at what the objects ask for, on the shared informers and work queue, behind one
//! Lease-based leader election.
//!
//! - [`manager`]: runs the controllers while this process leads
//! - [`deployment`]: rolls Deployments out through ReplicaSets, with rollback history
//! - [`endpoints`]: a Service's ready and not-ready pod addresses
//! - [`replicaset`]: keeps `replicas` pods matching a ReplicaSet's selector
//! - [`garbage_collector`]: deletes what nobody owns any more (background,
//!   foreground and orphan deletion)
//! - [`node_lifecycle`]: node health from Leases, readiness taints, taint-based eviction
//!   with per-zone rate limits, and force deletion of pods stuck on unreachable nodes
//! - [`autoscaler`]: HorizontalPodAutoscalers, from the pods' use read off the agents
//! - [`disruption`]: PodDisruptionBudgets' status, which evictions are decided on
//! - [`pod_state`]: readiness and completion of a pod, as every controller reads them
//! - [`pod_gc`]: deletes pods whose node is gone and finished pods beyond a threshold
//! - [`expectations`]: creations and deletions in flight, so bursts of events never
//!   cause over- or under-shooting
//! - [`workers`]: the worker loop over the work queue, tasks that stop together
//! - [`selector`]: label selectors as Kubernetes evaluates them
//! - [`metrics`]: syncs and work queue depths, for Prometheus

pub mod autoscaler;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod expectations;
pub mod garbage_collector;
pub mod manager;
pub mod metrics;
pub mod node_lifecycle;
pub mod pod_gc;
pub mod pod_state;
pub mod replicaset;
pub mod selector;
pub mod workers;
