//! The Flotilla scheduler (being built): what pods ask for, what nodes offer, and the
//! filter and score plugins of Kubernetes' scheduling framework.
//!
//! - [`quantity`]: exact resource quantities
//! - [`resources`]: a pod's requests and a node's allocatable resources
//! - [`plugins`]: one module per plugin

pub mod plugins;
pub mod quantity;
pub mod resources;
