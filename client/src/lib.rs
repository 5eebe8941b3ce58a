//! A typed client for Flotilla's API (`flotilla.api.v1.Resources`), shared by flotctl,
//! the scheduler, the controllers and the agents.
//!
//! - [`kubeconfig`]: finding and reading kubeconfig files, resolving a context
//! - [`api`]: the connection, [`api::DynamicApi`] (JSON, any resource) and [`api::Api`]
//!   (any k8s-openapi type)
//! - [`error`]: the server's statuses as a typed enum

pub mod api;
pub mod error;
pub mod kubeconfig;

pub use api::{Api, Client, DeleteParams, DynamicApi, ListParams, ObjectList, Patch, WatchEvent};
pub use error::ClientError;
pub use kubeconfig::{Kubeconfig, Resolved};
