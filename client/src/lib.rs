//! A typed client for Flotilla's API (`flotilla.api.v1.Resources`), shared by flotctl,
//! the scheduler, the controllers and the agents.
//!
//! - [`kubeconfig`]: finding and reading kubeconfig files, resolving a context
//! - [`api`]: the connection, [`api::DynamicApi`] (JSON, any resource) and [`api::Api`]
//!   (any k8s-openapi type)
//! - [`error`]: the server's statuses and the kubeconfig's unusable TLS values as typed enums
//! - `tls`: https servers (CA, client certificate, insecure-skip-tls-verify)
//! - [`events`]: recording Events about objects
//! - [`informer`]: list + watch into a local cache with indexes and change handlers
//! - [`shared_informers`]: one informer per kind shared by the controllers of a process
//! - [`leader`]: leader election on a coordination.k8s.io Lease
//! - [`workqueue`]: a de-duplicating, rate-limited work queue for controllers

pub mod api;
pub mod error;
pub mod events;
pub mod informer;
pub mod kubeconfig;
pub mod leader;
pub mod shared_informers;
pub mod taints;
mod tls;
pub mod workqueue;

pub use api::{
    Api, Client, DeleteParams, DynamicApi, ExecOutput, ExecParams, ListParams, LogParams,
    LogStream, ObjectList, Patch, WatchEvent,
};
pub use error::{ClientError, TlsConfigError};
pub use informer::{Change, Informer, Store};
pub use kubeconfig::{Kubeconfig, PemSource, Resolved};
pub use leader::{LeaderConfig, LeaderElector};
pub use shared_informers::SharedInformers;
pub use workqueue::WorkQueue;
