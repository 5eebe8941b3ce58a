//! Per-kind validation and defaulting, as Kubernetes does it for the fields users rely on:
//! one file per kind family, on the k8s-openapi types.
//!
//! - [`names`]: name, label, annotation and quantity syntax, and ObjectMeta
//! - [`pod`]: Pod and the pod template (shared by ReplicaSet and Deployment)
//! - [`apps`]: ReplicaSet and Deployment
//! - [`autoscaling`]: HorizontalPodAutoscaler targets, bounds and metrics
//! - [`service`]: Service and Endpoints
//! - [`core`]: Namespace, Node, ConfigMap, Secret, Event, Lease
//! - [`policy`]: PodDisruptionBudget counts and percentages

pub mod apps;
pub mod autoscaling;
pub mod core;
pub mod names;
pub mod pod;
pub mod policy;
pub mod service;
