//! Prometheus metrics of a member, served at `/metrics` on its client URLs as etcd does.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Every metric the member exports.
pub struct Metrics {
    registry: Registry,
    /// Time to fsync a Ready's log writes.
    pub fsync_seconds: Histogram,
    /// Client requests carried by one raft entry (group commit).
    pub proposals_per_entry: Histogram,
    /// Leader changes seen.
    pub leader_changes: Counter,
    /// Raft entries applied.
    pub applied_entries: Counter,
    /// 1 if this member leads.
    pub is_leader: Gauge,
    /// The raft term.
    pub term: Gauge,
    /// The raft commit index.
    pub commit_index: Gauge,
    /// The applied index.
    pub applied_index: Gauge,
    /// The store revision.
    pub revision: Gauge,
    /// Keys with retained history.
    pub keys: Gauge,
    /// Active watchers.
    pub watchers: Gauge,
    /// Bytes on disk.
    pub db_size_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("etcd_lite");
        let fsync_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        let proposals_per_entry = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        let m = Metrics {
            fsync_seconds,
            proposals_per_entry,
            leader_changes: Counter::default(),
            applied_entries: Counter::default(),
            is_leader: Gauge::default(),
            term: Gauge::default(),
            commit_index: Gauge::default(),
            applied_index: Gauge::default(),
            revision: Gauge::default(),
            keys: Gauge::default(),
            watchers: Gauge::default(),
            db_size_bytes: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "disk_fsync_duration_seconds",
            "Time to fsync a batch of raft log writes",
            m.fsync_seconds.clone(),
        );
        registry.register(
            "proposals_per_entry",
            "Client requests carried by one raft entry",
            m.proposals_per_entry.clone(),
        );
        registry.register(
            "leader_changes_seen",
            "Raft role changes seen by this member",
            m.leader_changes.clone(),
        );
        registry.register(
            "applied_entries",
            "Raft entries applied to the state machine",
            m.applied_entries.clone(),
        );
        registry.register(
            "is_leader",
            "1 if this member is the raft leader",
            m.is_leader.clone(),
        );
        registry.register("raft_term", "The current raft term", m.term.clone());
        registry.register(
            "raft_commit_index",
            "The raft commit index",
            m.commit_index.clone(),
        );
        registry.register(
            "raft_applied_index",
            "The last applied raft index",
            m.applied_index.clone(),
        );
        registry.register(
            "mvcc_revision",
            "The current store revision",
            m.revision.clone(),
        );
        registry.register("mvcc_keys", "Keys with retained history", m.keys.clone());
        registry.register("watchers", "Active watchers", m.watchers.clone());
        registry.register(
            "db_size_bytes",
            "Size of the member's database on disk",
            m.db_size_bytes.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
