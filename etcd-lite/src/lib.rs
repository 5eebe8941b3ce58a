//! etcd-lite: a Raft-replicated key-value store that speaks the etcd v3 API.
//!
//! # Layout
//!
//! A member is a handful of cooperating parts, each in its own module:
//!
//! - [`config`]: etcd's flags and the member/cluster IDs derived from them
//! - [`datadir`]: the data directory, its identity and corruption checks
//! - [`raft`]: consensus with raft-rs — the Ready loop ([`raft::node`]), the sled-backed
//!   log ([`raft::storage`]), snapshots on disk, and the gRPC peer transport
//! - [`apply`]: the applier thread that applies committed entries in order
//! - [`mvcc`]: the state machine — revisions, key history, transactions, leases, and its
//!   persistence in sled
//! - [`watch`]: watchers, live delivery and replay from history
//! - [`lease`]: lease expiry on the leader
//! - [`server`]: the etcd v3 gRPC services and HTTP endpoints
//! - [`member`]: wiring and lifecycle ([`member::run`], [`member::Member`])
//!
//! Data flow for a write: client → [`server::kv`] → [`raft::node`] (batched with other
//! proposals into one entry, fsynced, replicated) → committed → [`apply`] applies it to
//! [`mvcc`], persists it, wakes watchers and answers the client.

pub mod apply;
pub mod config;
pub mod datadir;
pub mod error;
pub mod lease;
pub mod member;
pub mod metrics;
pub mod mvcc;
pub mod raft;
pub mod server;
pub mod state;
pub mod watch;

pub use config::{ClusterState, EtcdConfig, InitialMember};
pub use error::EtcdError;
pub use member::{Listeners, Member, MemberError, run};
