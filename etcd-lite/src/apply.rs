//! The applier: a dedicated thread that applies committed entries to the state machine in
//! log order, persists their effects, wakes watchers and waiting clients, and takes the
//! periodic snapshots that let the raft log be truncated. It runs off the async runtime
//! because its work is synchronous CPU and disk work (applying, encoding snapshots).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prost::Message as _;
use raft::prelude::{Entry, EntryType, Snapshot};
use tokio::sync::{Notify, mpsc, oneshot, watch};

use flotilla_proto::etcdlite::RequestBatch;

use crate::error::EtcdError;
use crate::metrics::Metrics;
use crate::mvcc::backend::{AppliedIndex, Backend, BackendError};
use crate::mvcc::requests;
use crate::mvcc::snapshot::{self, SnapshotError};
use crate::raft::node::Command;
use crate::raft::proposals::{Applied, Proposals};
use crate::raft::snapfiles::SnapFiles;
use crate::state::StateMachine;

/// Work for the applier, in log order.
pub enum ApplyTask {
    /// Committed entries.
    Entries(Vec<Entry>),
    /// Replace the state with a leader's snapshot; reply once it is durable.
    Restore {
        /// The snapshot.
        snapshot: Snapshot,
        /// Completion.
        done: oneshot::Sender<Result<(), ApplyError>>,
    },
    /// Stop after everything queued before.
    Stop,
}

/// A failure that stops the member: the state machine can no longer be trusted to match
/// the log.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Persisting or loading failed.
    #[error("state machine storage")]
    Backend(#[from] BackendError),
    /// A snapshot could not be made or read.
    #[error("snapshot")]
    Snapshot(#[from] SnapshotError),
    /// A committed entry does not decode.
    #[error("committed entry {index} does not decode: {reason}")]
    BadEntry {
        /// Its index.
        index: u64,
        /// Why.
        reason: String,
    },
    /// A snapshot belongs to another cluster.
    #[error("snapshot belongs to cluster {found:x}, not {want:x}")]
    ForeignSnapshot {
        /// Its cluster.
        found: u64,
        /// Ours.
        want: u64,
    },
    /// Disk I/O on snapshot files failed.
    #[error("snapshot file")]
    Io(#[from] std::io::Error),
    /// sled failed.
    #[error("storage engine")]
    Sled(#[from] sled::Error),
}

/// The applier's state.
pub struct Applier {
    /// The shared state machine.
    pub state: Arc<StateMachine>,
    /// Its persistence.
    pub backend: Backend,
    /// The state machine's database (flushed before the log is truncated).
    pub db: sled::Db,
    /// The raft log's database (only measured here, for the size metric).
    pub log_db: sled::Db,
    /// Snapshot files.
    pub snaps: SnapFiles,
    /// Waiting proposers.
    pub proposals: Arc<Proposals>,
    /// This member.
    pub me: u64,
    /// This cluster.
    pub cluster_id: u64,
    /// Entries between snapshots.
    pub snapshot_count: u64,
    /// Index of the last snapshot.
    pub last_snapshot: u64,
    /// To ask the node to truncate the log.
    pub node: mpsc::Sender<Command>,
    /// Published applied index.
    pub applied: watch::Sender<AppliedIndex>,
    /// Wakes the watch syncer.
    pub syncer: Arc<Notify>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// When the database size was last measured.
    pub size_checked: Option<std::time::Instant>,
    /// Whether a snapshot is being written.
    pub snapshotting: Arc<AtomicBool>,
}

/// A snapshot being written in the background.
struct SnapshotJob {
    store: crate::mvcc::MvccStore,
    applied: AppliedIndex,
    cluster_id: u64,
    db: sled::Db,
    snaps: SnapFiles,
    node: mpsc::Sender<Command>,
    busy: Arc<AtomicBool>,
}

impl SnapshotJob {
    fn run(self) {
        let started = std::time::Instant::now();
        let index = self.applied.index;
        match self.write() {
            Ok(bytes) => {
                tracing::info!(
                    index,
                    bytes,
                    took_ms = started.elapsed().as_millis() as u64,
                    "saved a state-machine snapshot"
                );
                let _ = self.node.blocking_send(Command::Compact(index));
            }
            // Not fatal: the log just grows until the next attempt.
            Err(e) => {
                tracing::error!(index, error = %crate::member::error_chain(&e), "saving a snapshot failed")
            }
        }
        self.busy.store(false, Ordering::Release);
    }

    fn write(&self) -> Result<usize, ApplyError> {
        let data = snapshot::encode(&self.store, self.cluster_id, self.applied)?;
        // The applier has persisted at least up to the copy's index; that must be on disk
        // before the log that could rebuild it is discarded.
        self.db.flush()?;
        self.snaps
            .save(self.applied.index, self.applied.term, &data)?;
        Ok(data.len())
    }
}

impl Applier {
    /// Runs on the current thread until the task queue closes or a fatal error.
    pub fn run(mut self, mut tasks: mpsc::UnboundedReceiver<ApplyTask>) -> Result<(), ApplyError> {
        let mut next: Option<ApplyTask> = None;
        loop {
            let task = match next.take() {
                Some(t) => t,
                None => match tasks.blocking_recv() {
                    Some(t) => t,
                    None => return Ok(()),
                },
            };
            match task {
                ApplyTask::Entries(mut entries) => {
                    // Apply everything queued in one go: one lock, one batch, one wake-up.
                    loop {
                        match tasks.try_recv() {
                            Ok(ApplyTask::Entries(more)) => entries.extend(more),
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.apply_entries(entries)?;
                    self.maybe_snapshot();
                }
                ApplyTask::Restore { snapshot, done } => {
                    let result = self.restore(snapshot);
                    let failed = result.as_ref().err().map(|e| e.to_string());
                    let _ = done.send(result);
                    if let Some(e) = failed {
                        tracing::error!(error = %e, "restoring a snapshot failed; stopping");
                        return Ok(());
                    }
                }
                ApplyTask::Stop => return Ok(()),
            }
        }
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<(), ApplyError> {
        let mut replies = Vec::new();
        let mut sm = self.state.write();
        for e in &entries {
            if e.index <= sm.applied.index {
                continue;
            }
            if e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty() {
                let batch =
                    RequestBatch::decode(e.data.as_ref()).map_err(|err| ApplyError::BadEntry {
                        index: e.index,
                        reason: err.to_string(),
                    })?;
                for r in batch.requests {
                    let Some(req) = r.request else { continue };
                    let result = requests::apply(&mut sm.store, &req);
                    if r.proposer == self.me {
                        replies.push((r.id, result, e.term));
                    }
                }
            } else if e.get_entry_type() != EntryType::EntryNormal {
                tracing::warn!(
                    index = e.index,
                    "ignoring a configuration change entry: membership changes are not supported"
                );
            }
            sm.applied = AppliedIndex {
                index: e.index,
                term: e.term,
            };
        }
        let effects = sm.store.take_effects();
        let current = sm.store.revision();
        let compacted = sm.store.compacted_revision();
        sm.watchers.dispatch(&effects.changes, current);
        let unsynced = sm.watchers.has_unsynced();
        let applied = sm.applied;
        drop(sm);
        if unsynced {
            self.syncer.notify_one();
        }
        self.metrics.applied_entries.inc_by(entries.len() as u64);
        for (id, result, term) in replies {
            let result = result
                .map(|(response, revision)| Applied {
                    response,
                    revision,
                    term,
                })
                .map_err(EtcdError::from);
            self.proposals.complete(id, result);
        }
        self.applied.send_replace(applied);
        // Clients and watchers are answered first: the raft log already makes the entries
        // durable, and after a crash the state database is caught up from it.
        self.backend
            .persist(&effects, applied, current, compacted)?;
        if self
            .size_checked
            .is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(1))
        {
            self.size_checked = Some(std::time::Instant::now());
            self.metrics
                .db_size_bytes
                .set(crate::member::db_size(&[&self.db, &self.log_db]) as i64);
        }
        Ok(())
    }

    /// Every `snapshot_count` entries, snapshots a copy of the state on a background
    /// thread (encoding a large state takes long enough to hold up writes), then lets the
    /// node truncate the log.
    fn maybe_snapshot(&mut self) {
        let applied = *self.applied.borrow();
        if applied.index < self.last_snapshot + self.snapshot_count
            || self.snapshotting.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let (store, applied) = {
            let sm = self.state.read();
            (sm.store.clone(), sm.applied)
        };
        self.last_snapshot = applied.index;
        let job = SnapshotJob {
            store,
            applied,
            cluster_id: self.cluster_id,
            db: self.db.clone(),
            snaps: self.snaps.clone(),
            node: self.node.clone(),
            busy: self.snapshotting.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name("snapshot".into())
            .spawn(move || job.run());
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start a snapshot; retrying after more entries");
            self.snapshotting.store(false, Ordering::Release);
        }
    }

    fn restore(&mut self, snap: Snapshot) -> Result<(), ApplyError> {
        let meta = snap.get_metadata();
        let decoded = snapshot::decode(&snap.data)?;
        if decoded.header.cluster_id != self.cluster_id {
            return Err(ApplyError::ForeignSnapshot {
                found: decoded.header.cluster_id,
                want: self.cluster_id,
            });
        }
        let applied = AppliedIndex {
            index: meta.index,
            term: meta.term,
        };
        self.backend.replace(
            &decoded.leases,
            &decoded.revisions,
            applied,
            decoded.header.revision,
            decoded.header.compacted_revision,
        )?;
        self.db.flush()?;
        self.snaps.save(meta.index, meta.term, &snap.data)?;
        self.last_snapshot = meta.index;
        let (store, loaded) = self.backend.load()?;
        let mut sm = self.state.write();
        sm.store = store;
        sm.applied = loaded;
        sm.watchers.unsync_all();
        drop(sm);
        self.syncer.notify_one();
        self.applied.send_replace(loaded);
        tracing::info!(
            index = meta.index,
            revision = decoded.header.revision,
            "state machine restored from snapshot"
        );
        Ok(())
    }
}
