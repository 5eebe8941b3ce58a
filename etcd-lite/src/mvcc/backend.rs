//! Persistence of the MVCC state in a sled tree. Records are keyed so that sled's key order
//! is the order they must be loaded in: leases (`l`), then key revisions (`r`) by revision.
//! Each applied raft entry is written as one atomic batch together with the applied index,
//! so after a crash the state is exactly "everything up to the stored applied index".

use bytes::Bytes;
use prost::Message;

use flotilla_proto::etcdlite::{StoredLease, StoredRevision};
use flotilla_proto::mvccpb::KeyValue;

use super::history::Version;
use super::revision::Revision;
use super::store::{Effects, MvccStore};

const LEASE: u8 = b'l';
const REVISION: u8 = b'r';
const META_APPLIED: &[u8] = b"m/applied";
const META_REVISION: &[u8] = b"m/revision";
const META_COMPACTED: &[u8] = b"m/compacted";

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

fn revision_key(rev: Revision) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = REVISION;
    k[1..].copy_from_slice(&rev.to_bytes());
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

/// Converts a stored revision record to its in-memory form.
pub fn decode_revision(rev_key: &[u8], value: &[u8]) -> Result<(Bytes, Version), BackendError> {
    let rev = Revision::from_bytes(rev_key).ok_or_else(|| corrupt("revision key", "bad length"))?;
    let stored =
        StoredRevision::decode(value).map_err(|e| corrupt(format!("revision {rev:?}"), e))?;
    let kv = stored.kv.unwrap_or_default();
    Ok((
        kv.key,
        Version {
            rev,
            create_revision: kv.create_revision,
            version: kv.version,
            lease: kv.lease,
            value: kv.value,
            tombstone: stored.tombstone,
        },
    ))
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

    /// The tree, for snapshots.
    pub fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    /// Rebuilds the in-memory state from disk.
    pub fn load(&self) -> Result<(MvccStore, AppliedIndex), BackendError> {
        let mut store = MvccStore::default();
        // etcd's empty store is at revision 1; its first write makes revision 2.
        let revision = read_i64(&self.tree, META_REVISION)?.max(1);
        let compacted = read_i64(&self.tree, META_COMPACTED)?;
        store.load_meta(revision, compacted);
        for item in self.tree.scan_prefix([LEASE]) {
            let (k, v) = item?;
            let lease = StoredLease::decode(v.as_ref()).map_err(|e| corrupt("lease", e))?;
            if k.len() != 9 {
                return Err(corrupt("lease key", "bad length"));
            }
            store.load_lease(lease.id, lease.ttl);
        }
        for item in self.tree.scan_prefix([REVISION]) {
            let (k, v) = item?;
            let (key, version) = decode_revision(&k[1..], &v)?;
            if version.rev.main > revision {
                return Err(corrupt(
                    "revision",
                    format!(
                        "{} is past the stored revision {revision}",
                        version.rev.main
                    ),
                ));
            }
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
        store: &MvccStore,
    ) -> Result<(), BackendError> {
        let mut batch = sled::Batch::default();
        for (id, ttl) in &effects.leases_granted {
            let rec = StoredLease { id: *id, ttl: *ttl };
            batch.insert(&lease_key(*id), rec.encode_to_vec());
        }
        for id in &effects.leases_revoked {
            batch.remove(&lease_key(*id));
        }
        for c in &effects.changes {
            batch.insert(
                &revision_key(c.version.rev),
                encode_revision(&c.key, &c.version).encode_to_vec(),
            );
        }
        for rev in &effects.dropped {
            batch.remove(&revision_key(*rev));
        }
        batch.insert(META_APPLIED, &encode_applied(applied));
        batch.insert(META_REVISION, &store.revision().to_be_bytes());
        batch.insert(META_COMPACTED, &store.compacted_revision().to_be_bytes());
        self.tree.apply_batch(batch)?;
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
        for r in revisions {
            let main = r.kv.as_ref().map_or(0, |kv| kv.mod_revision);
            batch.insert(&revision_key(Revision::new(main, r.sub)), r.encode_to_vec());
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
        self.tree.scan_prefix([REVISION]).map(|item| {
            let (_, v) = item?;
            StoredRevision::decode(v.as_ref()).map_err(|e| corrupt("revision", e))
        })
    }
}
