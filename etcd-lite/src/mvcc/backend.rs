//! Persistence of the MVCC state in a sled tree. Records are keyed so that sled's key order
//! is the order they must be loaded in: leases (`l`), then change batches (`c`) by their
//! first revision. A change batch holds every key revision one apply round produced: one
//! record per round, because a sled insert per revision cost more than everything else a
//! write does. Each round is one atomic sled batch together with the applied index, so
//! after a crash the state is exactly "everything up to the stored applied index" and the
//! raft log replays the rest.

use std::collections::HashSet;

use bytes::Bytes;
use prost::Message;

use flotilla_proto::etcdlite::{ChangeBatch, StoredLease, StoredRevision};
use flotilla_proto::mvccpb::KeyValue;

use super::history::Version;
use super::revision::Revision;
use super::store::{Effects, MvccStore};

const LEASE: u8 = b'l';
const CHANGES: u8 = b'c';
const META_APPLIED: &[u8] = b"m/applied";
const META_REVISION: &[u8] = b"m/revision";
const META_COMPACTED: &[u8] = b"m/compacted";
/// Revisions per record when a whole state is written at once (snapshot restore).
const RESTORE_BATCH: usize = 1024;

/// The last raft entry whose effects the state machine holds.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct AppliedIndex {
    /// The entry's index.
    pub index: u64,
    /// The entry's term.
    pub term: u64,
}

/// Why the persisted state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// sled failed.
    #[error("storage engine error")]
    Sled(#[from] sled::Error),
    /// A record does not decode: the data is corrupt.
    #[error("corrupt record {what}: {detail}")]
    Corrupt {
        /// Which record.
        what: String,
        /// What is wrong with it.
        detail: String,
    },
}

/// The sled tree holding the state machine.
#[derive(Clone)]
pub struct Backend {
    tree: sled::Tree,
}

fn corrupt(what: impl Into<String>, detail: impl ToString) -> BackendError {
    BackendError::Corrupt {
        what: what.into(),
        detail: detail.to_string(),
    }
}

fn lease_key(id: i64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = LEASE;
    k[1..].copy_from_slice(&(id as u64).to_be_bytes());
    k
}

fn changes_key(first: Revision) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = CHANGES;
    k[1..].copy_from_slice(&first.to_bytes());
    k
}

fn read_i64(tree: &sled::Tree, key: &[u8]) -> Result<i64, BackendError> {
    match tree.get(key)? {
        None => Ok(0),
        Some(v) => {
            let arr: [u8; 8] = v.as_ref().try_into().map_err(|_| {
                corrupt(
                    String::from_utf8_lossy(key),
                    format!("{} bytes, want 8", v.len()),
                )
            })?;
            Ok(i64::from_be_bytes(arr))
        }
    }
}

fn encode_applied(a: AppliedIndex) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&a.index.to_be_bytes());
    out[8..].copy_from_slice(&a.term.to_be_bytes());
    out
}

fn revision_of(r: &StoredRevision) -> Revision {
    Revision::new(r.kv.as_ref().map_or(0, |kv| kv.mod_revision), r.sub)
}

/// Converts a stored revision record to its in-memory form.
pub fn decode_revision(stored: StoredRevision) -> (Bytes, Version) {
    let rev = revision_of(&stored);
    let kv = stored.kv.unwrap_or_default();
    (
        kv.key,
        Version {
            rev,
            create_revision: kv.create_revision,
            version: kv.version,
            lease: kv.lease,
            value: kv.value,
            tombstone: stored.tombstone,
        },
    )
}

/// Converts an in-memory version to its stored record.
pub fn encode_revision(key: &Bytes, v: &Version) -> StoredRevision {
    StoredRevision {
        kv: Some(KeyValue {
            key: key.clone(),
            create_revision: v.create_revision,
            mod_revision: v.rev.main,
            version: v.version,
            value: v.value.clone(),
            lease: v.lease,
        }),
        tombstone: v.tombstone,
        sub: v.rev.sub,
    }
}

impl Backend {
    /// Opens (or creates) the state machine's tree.
    pub fn open(db: &sled::Db) -> Result<Self, BackendError> {
        Ok(Backend {
            tree: db.open_tree("mvcc")?,
        })
    }

    /// Rebuilds the in-memory state from disk.
    pub fn load(&self) -> Result<(MvccStore, AppliedIndex), BackendError> {
        let mut store = MvccStore::default();
        // etcd's empty store is at revision 1; its first write makes revision 2.
        let revision = read_i64(&self.tree, META_REVISION)?.max(1);
        let compacted = read_i64(&self.tree, META_COMPACTED)?;
        store.load_meta(revision, compacted);
        for lease in self.leases() {
            let lease = lease?;
            store.load_lease(lease.id, lease.ttl);
        }
        let mut last = Revision::default();
        for rev in self.revisions() {
            let (key, version) = decode_revision(rev?);
            if version.rev <= last || version.rev.main > revision {
                return Err(corrupt(
                    "change batch",
                    format!(
                        "revision {:?} out of order (after {last:?}, store at {revision})",
                        version.rev
                    ),
                ));
            }
            last = version.rev;
            store.load_revision(key, version);
        }
        let applied = match self.tree.get(META_APPLIED)? {
            None => AppliedIndex::default(),
            Some(v) if v.len() == 16 => AppliedIndex {
                index: u64::from_be_bytes(v[..8].try_into().unwrap_or_default()),
                term: u64::from_be_bytes(v[8..].try_into().unwrap_or_default()),
            },
            Some(v) => return Err(corrupt("applied index", format!("{} bytes", v.len()))),
        };
        Ok((store, applied))
    }

    /// Writes the effects of the entries applied up to `applied` as one atomic batch.
    pub fn persist(
        &self,
        effects: &Effects,
        applied: AppliedIndex,
        revision: i64,
        compacted: i64,
    ) -> Result<(), BackendError> {
        let mut batch = sled::Batch::default();
        for (id, ttl) in &effects.leases_granted {
            let rec = StoredLease { id: *id, ttl: *ttl };
            batch.insert(&lease_key(*id), rec.encode_to_vec());
        }
        for id in &effects.leases_revoked {
            batch.remove(&lease_key(*id));
        }
        if let Some(first) = effects.changes.first() {
            let record = ChangeBatch {
                revisions: effects
                    .changes
                    .iter()
                    .map(|c| encode_revision(&c.key, &c.version))
                    .collect(),
            };
            batch.insert(&changes_key(first.version.rev), record.encode_to_vec());
        }
        if !effects.dropped.is_empty() {
            self.drop_revisions(&effects.dropped, &mut batch)?;
        }
        batch.insert(META_APPLIED, &encode_applied(applied));
        batch.insert(META_REVISION, &revision.to_be_bytes());
        batch.insert(META_COMPACTED, &compacted.to_be_bytes());
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Stages the removal of compacted revisions: records that lose all their revisions
    /// are deleted, the others rewritten with what they keep.
    fn drop_revisions(
        &self,
        dropped: &[Revision],
        batch: &mut sled::Batch,
    ) -> Result<(), BackendError> {
        let doomed: HashSet<Revision> = dropped.iter().copied().collect();
        let Some(last) = dropped.iter().max() else {
            return Ok(());
        };
        let end = changes_key(Revision::new(last.main, last.sub + 1));
        for item in self.tree.range(changes_key(Revision::default())..end) {
            let (k, v) = item?;
            let record = ChangeBatch::decode(v.as_ref()).map_err(|e| corrupt("change batch", e))?;
            let before = record.revisions.len();
            let kept: Vec<StoredRevision> = record
                .revisions
                .into_iter()
                .filter(|r| !doomed.contains(&revision_of(r)))
                .collect();
            if kept.len() == before {
                continue;
            }
            batch.remove(k.as_ref());
            if let Some(first) = kept.first() {
                let first = revision_of(first);
                batch.insert(
                    &changes_key(first),
                    ChangeBatch { revisions: kept }.encode_to_vec(),
                );
            }
        }
        Ok(())
    }

    /// Replaces the whole state with snapshot records.
    pub fn replace(
        &self,
        leases: &[StoredLease],
        revisions: &[StoredRevision],
        applied: AppliedIndex,
        revision: i64,
        compacted: i64,
    ) -> Result<(), BackendError> {
        self.tree.clear()?;
        let mut batch = sled::Batch::default();
        for l in leases {
            batch.insert(&lease_key(l.id), l.encode_to_vec());
        }
        for chunk in revisions.chunks(RESTORE_BATCH) {
            let first = revision_of(&chunk[0]);
            let record = ChangeBatch {
                revisions: chunk.to_vec(),
            };
            batch.insert(&changes_key(first), record.encode_to_vec());
        }
        batch.insert(META_APPLIED, &encode_applied(applied));
        batch.insert(META_REVISION, &revision.to_be_bytes());
        batch.insert(META_COMPACTED, &compacted.to_be_bytes());
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Every stored lease, in id order.
    pub fn leases(&self) -> impl Iterator<Item = Result<StoredLease, BackendError>> + '_ {
        self.tree.scan_prefix([LEASE]).map(|item| {
            let (_, v) = item?;
            StoredLease::decode(v.as_ref()).map_err(|e| corrupt("lease", e))
        })
    }

    /// Every stored revision record, in revision order.
    pub fn revisions(&self) -> impl Iterator<Item = Result<StoredRevision, BackendError>> + '_ {
        self.tree.scan_prefix([CHANGES]).flat_map(|item| {
            let decoded = item.map_err(BackendError::from).and_then(|(_, v)| {
                ChangeBatch::decode(v.as_ref()).map_err(|e| corrupt("change batch", e))
            });
            let out: Vec<Result<StoredRevision, BackendError>> = match decoded {
                Ok(record) => record.revisions.into_iter().map(Ok).collect(),
                Err(e) => vec![Err(e)],
            };
            out
        })
    }

    /// The number of records, to size snapshot buffers.
    pub fn approximate_len(&self) -> usize {
        self.tree.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::requests::apply;
    use flotilla_proto::etcdlite::internal_request::Request;
    use flotilla_proto::etcdserverpb::{CompactionRequest, PutRequest};

    fn put(store: &mut MvccStore, k: &str, v: &str) {
        apply(
            store,
            &Request::Put(PutRequest {
                key: Bytes::copy_from_slice(k.as_bytes()),
                value: Bytes::copy_from_slice(v.as_bytes()),
                ..Default::default()
            }),
        )
        .expect("put");
    }

    #[test]
    fn compaction_rewrites_batches_and_a_reload_matches_memory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let db = sled::open(tmp.path()).expect("sled");
        let backend = Backend::open(&db).expect("backend");
        let mut store = MvccStore::default();
        let mut index = 0;
        for round in 0..5 {
            for k in ["a", "b", "c"] {
                put(&mut store, k, &format!("{k}{round}"));
            }
            index += 1;
            let effects = store.take_effects();
            backend
                .persist(
                    &effects,
                    AppliedIndex { index, term: 1 },
                    store.revision(),
                    0,
                )
                .expect("persist");
        }
        apply(
            &mut store,
            &Request::Compaction(CompactionRequest {
                revision: 9,
                physical: false,
            }),
        )
        .expect("compact");
        let effects = store.take_effects();
        assert!(!effects.dropped.is_empty());
        backend
            .persist(
                &effects,
                AppliedIndex {
                    index: index + 1,
                    term: 1,
                },
                store.revision(),
                store.compacted_revision(),
            )
            .expect("persist");
        let (loaded, applied) = backend.load().expect("load");
        assert_eq!(applied.index, index + 1);
        assert_eq!(loaded.compacted_revision(), 9);
        let mine: Vec<_> = store
            .histories()
            .map(|(k, h)| (k.clone(), h.versions().to_vec()))
            .collect();
        let theirs: Vec<_> = loaded
            .histories()
            .map(|(k, h)| (k.clone(), h.versions().to_vec()))
            .collect();
        assert_eq!(mine, theirs);
    }
}
