//! Protocol definitions shared by Flotilla's components.
//!
//! - [`mvccpb`] and [`etcdserverpb`]: the etcd v3 API, wire-compatible with etcd, served by
//!   etcd-lite and spoken by every store client.
//! - [`etcdlite`]: etcd-lite's internal member-to-member protocol and on-disk records.
//! - [`api`]: Flotilla's API, `flotilla.api.v1.Resources` (see its .proto for the contract).
//! - [`agent`]: the node agent's endpoint, `flotilla.agent.v1.Agent`, and the Secret whose
//!   token its callers present.
//! - [`exec`]: exec's limits and request check, shared by the API server and the agent.
//! - [`cri`]: the Kubernetes Container Runtime Interface (`runtime.v1`), the part the agent
//!   uses to drive containerd.

pub mod exec;

// Lints are relaxed on the generated modules only, so that hand-written code here (exec)
// is held to the workspace's.

/// The Container Runtime Interface, v1: RuntimeService and ImageService.
#[allow(clippy::all, missing_docs)]
pub mod cri {
    tonic::include_proto!("runtime.v1");
}

/// etcd's MVCC types: key-values and watch events.
#[allow(clippy::all, missing_docs)]
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// etcd's v3 gRPC services: KV, Watch, Lease, Cluster, Maintenance.
#[allow(clippy::all, missing_docs)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// etcd-lite's peer protocol and persisted records.
pub use self::flotilla::etcdlite::v1 as etcdlite;

/// Flotilla's API: Kubernetes objects over gRPC.
pub use self::flotilla::api::v1 as api;

/// The node agent's endpoint, called by the API server.
pub use self::flotilla::agent::v1 as agent;

/// Flotilla's own protobuf packages, nested as their package names are.
#[allow(clippy::all, missing_docs)]
pub mod flotilla {
    /// etcd-lite's internal packages.
    pub mod etcdlite {
        /// Version 1 of etcd-lite's peer protocol and records.
        pub mod v1 {
            tonic::include_proto!("flotilla.etcdlite.v1");
        }
    }
    /// The node agent's packages.
    pub mod agent {
        /// Version 1 of the agent's endpoint.
        pub mod v1 {
            tonic::include_proto!("flotilla.agent.v1");

            /// The Secret (namespace, name) whose `token` the API server presents to
            /// agents and agents accept: the API server creates it, agents only read it.
            pub const PROXY_SECRET: (&str, &str) = ("kube-system", "flotilla-agent-proxy");
        }
    }
    /// Flotilla's API packages.
    pub mod api {
        /// Version 1 of the API.
        pub mod v1 {
            tonic::include_proto!("flotilla.api.v1");
        }
    }
}
