//! The Flotilla scheduler: Kubernetes' scheduling framework (queue, cache with assumed pods,
//! filter and score plugins, profiles) over the shared informers.
//!
//! - [`pod_info`], [`node_info`]: a pod's derived facts (PreFilter), a node's aggregates
//! - [`cache`]: nodes and pods kept incrementally, assumed pods, per-cycle snapshots
//! - [`config`]: the configuration file (profiles, plugins, weights)
//! - [`quantity`]: exact resource quantities
//! - [`resources`]: a pod's requests and a node's allocatable resources
//! - [`plugins`]: one module per plugin
//! - [`queue`]: the scheduling queue (active, back-off, unschedulable)
//! - [`metrics`]: Prometheus metrics (attempts, bindings, the queue)
//! - [`run`]: the loop (informers, cache with assumed pods, background binding, Events)
//! - [`profile`]: filters, weighted scores, and the explanation when nothing fits

pub mod cache;
pub mod config;
pub mod metrics;
pub mod node_info;
pub mod plugins;
pub mod pod_info;
pub mod profile;
pub mod quantity;
pub mod queue;
pub mod resources;
pub mod run;

pub use run::{SchedulerConfig, run};
