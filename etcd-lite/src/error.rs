//! The errors a client can get, each with the exact gRPC code and message etcd uses, so
//! etcd clients recognise them (etcdctl prints them, client libraries branch on them).

use tonic::{Code, Status};

use crate::mvcc::MvccError;

/// A request-level failure, as etcd reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EtcdError {
    /// A key was empty.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// ignore_value / ignore_lease on a key that does not exist, or an empty txn op.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// ignore_value with a value.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// ignore_lease with a lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// More txn operations than --max-txn-ops.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// A txn writes the same key twice.
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// An unknown sort order or target.
    #[error("etcdserver: invalid sort option")]
    InvalidSortOption,
    /// The revision asked for was compacted.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    /// The revision asked for does not exist yet.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    /// The lease does not exist.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// The lease exists already.
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// The TTL is above the maximum.
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    /// The request is over --max-request-bytes.
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    /// No leader is known.
    #[error("etcdserver: no leader")]
    NoLeader,
    /// The request needs the leader and this member is not it.
    #[error("etcdserver: not leader")]
    NotLeader,
    /// Leadership changed while the request was in flight; it may or may not have applied.
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    /// The member is shutting down.
    #[error("etcdserver: server stopped")]
    Stopped,
    /// The request did not complete in time; it may or may not have applied.
    #[error("etcdserver: request timed out")]
    Timeout,
    /// The member is not a valid transfer target.
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    /// The member does not exist.
    #[error("etcdserver: member not found")]
    MemberNotFound,
    /// Membership changes are not supported.
    #[error("etcdserver: {0}")]
    Unsupported(&'static str),
    /// An internal failure (a storage error); the member is unhealthy.
    #[error("etcdserver: {0}")]
    Internal(String),
}

impl From<MvccError> for EtcdError {
    fn from(e: MvccError) -> Self {
        match e {
            MvccError::Compacted => EtcdError::Compacted,
            MvccError::FutureRevision => EtcdError::FutureRevision,
            MvccError::LeaseNotFound => EtcdError::LeaseNotFound,
            MvccError::LeaseExists => EtcdError::LeaseExists,
            MvccError::KeyNotFound => EtcdError::KeyNotFound,
        }
    }
}

impl EtcdError {
    /// The gRPC code etcd sends with this error.
    pub fn code(&self) -> Code {
        use EtcdError::*;
        match self {
            EmptyKey | KeyNotFound | ValueProvided | LeaseProvided | TooManyOps | DuplicateKey
            | InvalidSortOption | RequestTooLarge => Code::InvalidArgument,
            Compacted | FutureRevision | LeaseTtlTooLarge => Code::OutOfRange,
            LeaseNotFound | MemberNotFound => Code::NotFound,
            LeaseExists | NotLeader | BadLeaderTransferee => Code::FailedPrecondition,
            NoLeader | LeaderChanged | Stopped | Timeout => Code::Unavailable,
            Unsupported(_) => Code::Unimplemented,
            Internal(_) => Code::Internal,
        }
    }
}

impl From<EtcdError> for Status {
    fn from(e: EtcdError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}
