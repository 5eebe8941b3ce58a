//! Multi-version concurrency control, as etcd does it: a global revision, per-key version
//! history until compaction, reads at past revisions, transactions and leases.
//!
//! - [`store`]: the in-memory state machine (keys, change log, leases)
//! - [`history`]: one key's versions; [`revision`]: the logical clock
//! - [`key_range`]: etcd's key/range_end convention
//! - [`txn`]: compares and transactions; [`requests`]: applying one replicated request
//! - [`backend`]: persistence in sled; [`snapshot`]: the state as one consistent stream

pub mod backend;
pub mod history;
pub mod key_range;
pub mod requests;
pub mod revision;
pub mod snapshot;
pub mod store;
pub mod txn;

#[cfg(test)]
mod tests;

pub use revision::Revision;
pub use store::MvccStore;

/// Why the state machine refused a request; each maps to the error etcd returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MvccError {
    /// The revision asked for was compacted.
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    /// The revision asked for does not exist yet.
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,
    /// The lease does not exist.
    #[error("requested lease not found")]
    LeaseNotFound,
    /// A lease with that ID exists already.
    #[error("lease already exists")]
    LeaseExists,
    /// The key a put wanted to keep the value or lease of does not exist.
    #[error("key not found")]
    KeyNotFound,
}
