//! The API server's only way to the store: the etcd v3 API.
//!
//! - [`etcd`]: a client over etcd's gRPC services (etcd-lite or a real etcd), with the few
//!   operations the API needs: reads at a revision, all-or-nothing conditional writes,
//!   watches from a revision, compaction.
//! - [`keys`]: where objects live, `/registry/<resource>/<namespace>/<name>`.

pub mod etcd;
pub mod keys;

pub use etcd::{
    Commit, Cond, Kv, Op, ProgressRequester, RangePage, Store, StoreError, StoreEvent,
    StoreEventKind, WatchItem, WatchStream,
};
