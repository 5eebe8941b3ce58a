//! The raft log, hard state and conf state in a sled tree, implementing raft-rs's `Storage`.
//!
//! Writes are staged in a `sled::Batch` by the Ready loop and applied atomically; the loop
//! then flushes (fsync) before anything that depends on them leaves the member. The tail of
//! the log is cached in memory because leaders read it back for every append they send.

use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};

use super::entry_cache::EntryCache;
use super::snapfiles::SnapFiles;

const ENTRY: u8 = b'e';
const HARD_STATE: &[u8] = b"h";
const CONF_STATE: &[u8] = b"c";
const TRUNCATED: &[u8] = b"t";

/// Why the raft log could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// sled failed.
    #[error("storage engine error")]
    Sled(#[from] sled::Error),
    /// A record does not decode, or the log is inconsistent.
    #[error("corrupt raft log: {0}")]
    Corrupt(String),
}

fn entry_key(index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = ENTRY;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

fn store_err(e: impl std::error::Error + Send + Sync + 'static) -> raft::Error {
    raft::Error::Store(StorageError::Other(Box::new(e)))
}

/// The persisted raft state of one member.
pub struct RaftLog {
    db: sled::Db,
    tree: sled::Tree,
    hard_state: HardState,
    conf_state: ConfState,
    /// Index and term of the last entry discarded by compaction or replaced by a snapshot.
    truncated: (u64, u64),
    last_index: u64,
    cache: EntryCache,
    snaps: SnapFiles,
}

impl RaftLog {
    /// Opens the log; on a fresh directory the voters are written as the initial conf state.
    pub fn open(
        db: sled::Db,
        snaps: SnapFiles,
        bootstrap_voters: &[u64],
    ) -> Result<Self, LogError> {
        let tree = db.open_tree("raft")?;
        let hard_state = match tree.get(HARD_STATE)? {
            Some(v) => HardState::parse_from_bytes(&v)
                .map_err(|e| LogError::Corrupt(format!("hard state: {e}")))?,
            None => HardState::default(),
        };
        let conf_state = match tree.get(CONF_STATE)? {
            Some(v) => ConfState::parse_from_bytes(&v)
                .map_err(|e| LogError::Corrupt(format!("conf state: {e}")))?,
            None => {
                let cs = ConfState {
                    voters: bootstrap_voters.to_vec(),
                    ..Default::default()
                };
                tree.insert(
                    CONF_STATE,
                    cs.write_to_bytes()
                        .map_err(|e| LogError::Corrupt(e.to_string()))?,
                )?;
                cs
            }
        };
        let truncated = match tree.get(TRUNCATED)? {
            Some(v) if v.len() == 16 => (
                u64::from_be_bytes(v[..8].try_into().unwrap_or_default()),
                u64::from_be_bytes(v[8..].try_into().unwrap_or_default()),
            ),
            Some(_) => {
                return Err(LogError::Corrupt(
                    "truncation record has a bad length".into(),
                ));
            }
            None => (0, 0),
        };
        let last_index = match tree.scan_prefix([ENTRY]).next_back() {
            Some(item) => {
                let (k, _) = item?;
                u64::from_be_bytes(
                    k[1..]
                        .try_into()
                        .map_err(|_| LogError::Corrupt("entry key".into()))?,
                )
            }
            None => truncated.0,
        };
        if last_index < truncated.0 {
            return Err(LogError::Corrupt(format!(
                "last entry {last_index} is before the truncation point {}",
                truncated.0
            )));
        }
        let mut log = RaftLog {
            db,
            tree,
            hard_state,
            conf_state,
            truncated,
            last_index,
            cache: EntryCache::default(),
            snaps,
        };
        log.check_contiguous()?;
        Ok(log)
    }

    /// A log with a hole in it cannot be trusted: every index from the truncation point to
    /// the last entry must be present.
    fn check_contiguous(&mut self) -> Result<(), LogError> {
        // Entries at or below the truncation point may remain if a crash interrupted their
        // removal (which runs in the background); they are removed again, not read.
        let first = self.truncated.0 + 1;
        if let Some(Ok((oldest, _))) = self.tree.scan_prefix([ENTRY]).next()
            && oldest.as_ref() < entry_key(first).as_slice()
        {
            delete_entries_in_background(self.tree.clone(), 0, first - 1);
        }
        let live = self.tree.range(entry_key(first)..entry_key(u64::MAX));
        for (expect, item) in (first..).zip(live) {
            let (k, _) = item?;
            let idx = u64::from_be_bytes(
                k[1..]
                    .try_into()
                    .map_err(|_| LogError::Corrupt("entry key".into()))?,
            );
            if idx != expect {
                return Err(LogError::Corrupt(format!(
                    "entry {expect} is missing (found {idx})"
                )));
            }
        }
        Ok(())
    }

    /// The current hard state.
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// The current conf state.
    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// The snapshot directory.
    pub fn snap_files(&self) -> &SnapFiles {
        &self.snaps
    }

    /// Stages new entries, replacing any conflicting suffix.
    pub fn append(&mut self, entries: &[Entry], batch: &mut sled::Batch) -> Result<(), LogError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index <= self.truncated.0 {
            return Err(LogError::Corrupt(format!(
                "appending entry {} before the truncation point {}",
                first.index, self.truncated.0
            )));
        }
        for stale in first.index..=self.last_index {
            batch.remove(&entry_key(stale));
        }

        for e in entries {
            let bytes = e
                .write_to_bytes()
                .map_err(|e| LogError::Corrupt(e.to_string()))?;
            batch.insert(&entry_key(e.index), bytes);
        }
        self.cache.append(entries);
        self.last_index = entries[entries.len() - 1].index;
        Ok(())
    }

    /// Stages a new hard state.
    pub fn set_hard_state(
        &mut self,
        hs: &HardState,
        batch: &mut sled::Batch,
    ) -> Result<(), LogError> {
        self.hard_state = hs.clone();
        self.stage_hard_state(batch)
    }

    /// Stages a commit index advance (needs no fsync of its own: it is re-derived on restart).
    pub fn set_commit(&mut self, commit: u64, batch: &mut sled::Batch) -> Result<(), LogError> {
        self.hard_state.commit = commit;
        self.stage_hard_state(batch)
    }

    fn stage_hard_state(&self, batch: &mut sled::Batch) -> Result<(), LogError> {
        let bytes = self
            .hard_state
            .write_to_bytes()
            .map_err(|e| LogError::Corrupt(e.to_string()))?;
        batch.insert(HARD_STATE, bytes);
        Ok(())
    }

    /// Applies a staged batch (not yet durable: call [`RaftLog::sync`]).
    pub fn write(&self, batch: sled::Batch) -> Result<(), LogError> {
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Makes everything written so far durable.
    pub async fn sync(&self) -> Result<(), LogError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// Entries applied by the state machine are committed, even if the lazily written commit
    /// index did not reach the disk before a crash; raft-rs refuses an applied index past
    /// the commit index, so raise it.
    pub fn ensure_commit_at_least(&mut self, applied: u64) -> Result<(), LogError> {
        if applied > self.last_index {
            return Err(LogError::Corrupt(format!(
                "the state machine applied entry {applied} but the log ends at {}",
                self.last_index
            )));
        }
        if self.hard_state.commit < applied {
            self.hard_state.commit = applied;
            let mut batch = sled::Batch::default();
            self.stage_hard_state(&mut batch)?;
            self.write(batch)?;
        }
        Ok(())
    }

    /// Discards entries up to and including `index`, which the saved snapshot covers.
    pub fn compact_to(&mut self, index: u64) -> Result<(), LogError> {
        if index <= self.truncated.0 || index > self.last_index {
            return Ok(());
        }
        let term = self
            .term_of(index)
            .map_err(|e| LogError::Corrupt(format!("term of {index}: {e}")))?;
        // The truncation point is recorded first, so any removal that reaches the disk
        // implies it did; removing the entries themselves (tens of thousands of sled
        // deletes) happens off the Ready loop.
        self.tree
            .insert(TRUNCATED, &truncation_record(index, term))?;
        let from = self.truncated.0 + 1;
        self.truncated = (index, term);
        self.cache.evict_through(index);
        delete_entries_in_background(self.tree.clone(), from, index);
        Ok(())
    }

    /// Replaces the log by a snapshot received from the leader.
    pub fn apply_snapshot(
        &mut self,
        meta: &SnapshotMetadata,
        batch: &mut sled::Batch,
    ) -> Result<(), LogError> {
        // Entries past the snapshot would conflict with what follows it: removed with the
        // batch. Those it covers go in the background.
        for idx in meta.index + 1..=self.last_index {
            batch.remove(&entry_key(idx));
        }
        delete_entries_in_background(
            self.tree.clone(),
            self.truncated.0 + 1,
            meta.index.min(self.last_index),
        );
        self.cache.clear();
        self.truncated = (meta.index, meta.term);
        self.last_index = meta.index;
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.conf_state = meta.get_conf_state().clone();
        batch.insert(TRUNCATED, &truncation_record(meta.index, meta.term));
        batch.insert(
            CONF_STATE,
            self.conf_state
                .write_to_bytes()
                .map_err(|e| LogError::Corrupt(e.to_string()))?,
        );
        self.stage_hard_state(batch)
    }

    /// The first index still in the log.
    pub fn first(&self) -> u64 {
        self.truncated.0 + 1
    }

    /// The last index in the log.
    pub fn last(&self) -> u64 {
        self.last_index
    }

    fn term_of(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.truncated.0 {
            return Ok(self.truncated.1);
        }
        if idx < self.truncated.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last_index {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        if let Some(e) = self.cache.get(idx) {
            return Ok(e.term);
        }
        self.read_entry(idx).map(|e| e.term)
    }

    fn read_entry(&self, idx: u64) -> raft::Result<Entry> {
        let v = self
            .tree
            .get(entry_key(idx))
            .map_err(store_err)?
            .ok_or(raft::Error::Store(StorageError::Unavailable))?;
        Entry::parse_from_bytes(&v)
            .map_err(|e| raft::Error::Store(StorageError::Other(Box::new(e))))
    }
}

/// Entries removed per sled batch when truncating, small enough not to hold up writers.
const DELETE_CHUNK: u64 = 1024;

/// Removes the entries `from..=to` on a background thread, in chunks.
fn delete_entries_in_background(tree: sled::Tree, from: u64, to: u64) {
    if from > to {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("raft-log-truncate".into())
        .spawn(move || {
            let mut start = from;
            while start <= to {
                let end = to.min(start.saturating_add(DELETE_CHUNK - 1));
                let mut batch = sled::Batch::default();
                for item in tree.range(entry_key(start)..=entry_key(end)).keys() {
                    match item {
                        Ok(k) => batch.remove(k),
                        Err(e) => {
                            tracing::warn!(error = %e, "truncating the raft log");
                            return;
                        }
                    }
                }
                if let Err(e) = tree.apply_batch(batch) {
                    tracing::warn!(error = %e, "truncating the raft log");
                    return;
                }
                start = end.saturating_add(1);
                if end == u64::MAX {
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start truncating the raft log; entries stay on disk");
    }
}

fn truncation_record(index: u64, term: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&index.to_be_bytes());
    out[8..].copy_from_slice(&term.to_be_bytes());
    out
}

impl raft::Storage for RaftLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.truncated.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let mut out = Vec::with_capacity((high - low) as usize);
        let cache_first = self.cache.first_index();
        if cache_first.is_some_and(|f| low >= f) {
            for idx in low..high {
                match self.cache.get(idx) {
                    Some(e) => out.push(e.clone()),
                    None => return Err(raft::Error::Store(StorageError::Unavailable)),
                }
            }
        } else {
            for item in self.tree.range(entry_key(low)..entry_key(high)) {
                let (_, v) = item.map_err(store_err)?;
                out.push(
                    Entry::parse_from_bytes(&v)
                        .map_err(|e| raft::Error::Store(StorageError::Other(Box::new(e))))?,
                );
            }
            if out.len() as u64 != high - low {
                return Err(raft::Error::Store(StorageError::Unavailable));
            }
        }
        raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.term_of(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.truncated.0 + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index)
    }

    /// Hands out the newest saved snapshot; the log is only ever compacted up to a saved
    /// snapshot, so it always covers what followers are missing.
    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let latest = self.snaps.latest().map_err(store_err)?;
        let Some(file) = latest.filter(|s| s.index >= request_index && s.index >= self.truncated.0)
        else {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        };
        let data = self.snaps.read(&file).map_err(store_err)?;
        let mut snap = Snapshot {
            data: data.into(),
            ..Default::default()
        };
        let meta = snap.mut_metadata();
        meta.index = file.index;
        meta.term = file.term;
        meta.set_conf_state(self.conf_state.clone());
        Ok(snap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Default::default()
        }
    }

    fn open(dir: &std::path::Path) -> RaftLog {
        let db = sled::open(dir.join("db")).expect("sled");
        std::fs::create_dir_all(dir.join("snap")).expect("snap dir");
        RaftLog::open(db, SnapFiles::new(dir.join("snap")), &[1, 2, 3]).expect("open")
    }

    #[test]
    fn appended_entries_survive_a_reopen_and_conflicts_are_replaced() {
        let tmp = tempfile::tempdir().expect("tempdir");
        {
            let mut log = open(tmp.path());
            let mut b = sled::Batch::default();
            log.append(&[entry(1, 1), entry(2, 1), entry(3, 1)], &mut b)
                .expect("append");
            log.write(b).expect("write");
            let mut b = sled::Batch::default();
            log.append(&[entry(2, 2)], &mut b).expect("append");
            log.write(b).expect("write");
            assert_eq!(log.last(), 2);
            log.db.flush().expect("flush");
        }
        let log = open(tmp.path());
        assert_eq!(log.last(), 2);
        assert_eq!(log.term(2).expect("term"), 2);
        assert!(log.term(3).is_err());
        assert_eq!(
            log.initial_state().expect("state").conf_state.voters,
            vec![1, 2, 3]
        );
    }

    #[test]
    fn compaction_keeps_the_term_of_the_truncation_point() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut log = open(tmp.path());
        let mut b = sled::Batch::default();
        let ents: Vec<_> = (1..=10).map(|i| entry(i, 1 + i / 5)).collect();
        log.append(&ents, &mut b).expect("append");
        log.write(b).expect("write");
        log.compact_to(6).expect("compact");
        assert_eq!(log.first_index().expect("first"), 7);
        assert_eq!(log.term(6).expect("term"), 2);
        assert!(matches!(
            log.entries(5, 8, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert_eq!(
            log.entries(7, 11, None, GetEntriesContext::empty(false))
                .expect("entries")
                .len(),
            4
        );
    }

    #[test]
    fn a_hole_in_the_log_is_reported_as_corruption() {
        let tmp = tempfile::tempdir().expect("tempdir");
        {
            let mut log = open(tmp.path());
            let mut b = sled::Batch::default();
            log.append(&[entry(1, 1), entry(2, 1), entry(3, 1)], &mut b)
                .expect("append");
            log.write(b).expect("write");
            log.tree.remove(entry_key(2)).expect("remove");
            log.db.flush().expect("flush");
        }
        let db = sled::open(tmp.path().join("db")).expect("sled");
        let err = RaftLog::open(db, SnapFiles::new(tmp.path().join("snap")), &[1])
            .err()
            .expect("corrupt");
        assert!(err.to_string().contains("entry 2 is missing"), "{err}");
    }
}
