//! The state machine as one self-checking byte stream: used to bring a lagging member up to
//! date (raft snapshots), to let the raft log be truncated, and for `etcdctl snapshot save`.
//!
//! Layout: a length-delimited `SnapshotHeader`, length-delimited `SnapshotRecord`s (leases,
//! then key revisions in revision order), zero padding, and the SHA-256 of everything
//! before it. A zero byte where a record would start ends the records (it reads as an empty
//! record). The padding makes the size 32 more than a multiple of 512, which is what
//! etcdctl checks to decide that a snapshot ends in its checksum (etcd's bolt files come in
//! 512-byte multiples).

use bytes::{Buf, Bytes};
use prost::Message;
use sha2::{Digest, Sha256};

use flotilla_proto::etcdlite::{
    SnapshotHeader, SnapshotRecord, StoredLease, StoredRevision, snapshot_record::Record,
};

use super::MvccStore;
use super::backend::{AppliedIndex, BackendError, encode_revision};

/// The snapshot format this build writes and reads.
pub const FORMAT: u32 = 1;

/// Why a snapshot could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Reading the state failed.
    #[error("reading the state machine")]
    Backend(#[from] BackendError),
    /// The bytes are not a valid snapshot.
    #[error("snapshot is corrupt: {0}")]
    Corrupt(String),
}

/// A decoded snapshot.
#[derive(Debug, Default)]
pub struct Decoded {
    /// What the snapshot describes.
    pub header: SnapshotHeader,
    /// Every lease.
    pub leases: Vec<StoredLease>,
    /// Every retained key revision, in revision order.
    pub revisions: Vec<StoredRevision>,
}

/// Serialises a state (a copy taken at `applied`, so the caller may keep applying while
/// this runs).
pub fn encode(
    store: &MvccStore,
    cluster_id: u64,
    applied: AppliedIndex,
) -> Result<Vec<u8>, SnapshotError> {
    let header = SnapshotHeader {
        format: FORMAT,
        cluster_id,
        applied_index: applied.index,
        applied_term: applied.term,
        revision: store.revision(),
        compacted_revision: store.compacted_revision(),
    };
    let mut out = Vec::new();
    let push = |out: &mut Vec<u8>, record: Record| {
        SnapshotRecord {
            record: Some(record),
        }
        .encode_length_delimited(out)
        .map_err(|e| SnapshotError::Corrupt(e.to_string()))
    };
    header
        .encode_length_delimited(&mut out)
        .map_err(|e| SnapshotError::Corrupt(e.to_string()))?;
    for (id, lease) in store.leases() {
        push(
            &mut out,
            Record::Lease(StoredLease {
                id: *id,
                ttl: lease.ttl,
            }),
        )?;
    }
    // Loading needs revision order; the store keeps versions per key.
    let mut versions: Vec<_> = store
        .histories()
        .flat_map(|(key, h)| h.versions().iter().map(move |v| (key, v)))
        .collect();
    versions.sort_unstable_by_key(|(_, v)| v.rev);
    for (key, v) in versions {
        push(&mut out, Record::Revision(encode_revision(key, v)))?;
    }
    out.push(0);
    out.resize(out.len().div_ceil(512) * 512, 0);
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    Ok(out)
}

/// Verifies and decodes a snapshot.
pub fn decode(data: &[u8]) -> Result<Decoded, SnapshotError> {
    if data.len() < 32 {
        return Err(SnapshotError::Corrupt(format!("only {} bytes", data.len())));
    }
    let (body, digest) = data.split_at(data.len() - 32);
    if Sha256::digest(body).as_slice() != digest {
        return Err(SnapshotError::Corrupt("checksum mismatch".into()));
    }
    let mut buf = Bytes::copy_from_slice(body);
    let header = SnapshotHeader::decode_length_delimited(&mut buf)
        .map_err(|e| SnapshotError::Corrupt(format!("header: {e}")))?;
    if header.format != FORMAT {
        return Err(SnapshotError::Corrupt(format!(
            "format {} is not supported (this build reads {FORMAT})",
            header.format
        )));
    }
    let mut out = Decoded {
        header,
        ..Default::default()
    };
    while buf.has_remaining() {
        let rec = SnapshotRecord::decode_length_delimited(&mut buf)
            .map_err(|e| SnapshotError::Corrupt(format!("record: {e}")))?;
        match rec.record {
            Some(Record::Lease(l)) => out.leases.push(l),
            Some(Record::Revision(r)) => out.revisions.push(r),
            None => {
                if buf.iter().any(|b| *b != 0) {
                    return Err(SnapshotError::Corrupt(
                        "data after the end of the records".into(),
                    ));
                }
                return Ok(out);
            }
        }
    }
    Err(SnapshotError::Corrupt(
        "the record list has no end marker".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::backend::Backend;
    use crate::mvcc::requests::apply;
    use bytes::Bytes;
    use flotilla_proto::etcdlite::internal_request::Request;
    use flotilla_proto::etcdserverpb::{LeaseGrantRequest, PutRequest};

    fn store_with_data() -> MvccStore {
        let mut store = MvccStore::default();
        apply(
            &mut store,
            &Request::LeaseGrant(LeaseGrantRequest { ttl: 30, id: 9 }),
        )
        .expect("grant");
        for i in 0..50 {
            apply(
                &mut store,
                &Request::Put(PutRequest {
                    key: Bytes::from(format!("k{}", i % 7)),
                    value: Bytes::from(vec![b'v'; i]),
                    lease: if i % 2 == 0 { 9 } else { 0 },
                    ..Default::default()
                }),
            )
            .expect("put");
        }
        store.take_effects();
        store
    }

    #[test]
    fn a_snapshot_round_trips_and_ends_where_etcdctl_expects_a_checksum() {
        let store = store_with_data();
        let applied = AppliedIndex { index: 51, term: 2 };
        let data = encode(&store, 7, applied).expect("encode");
        assert_eq!(data.len() % 512, 32);
        let d = decode(&data).expect("decode");
        assert_eq!(d.header.applied_index, 51);
        assert_eq!(d.header.revision, 51);
        assert_eq!(d.leases.len(), 1);
        assert_eq!(d.revisions.len(), 50);
        let revs: Vec<i64> = d
            .revisions
            .iter()
            .map(|r| r.kv.as_ref().map_or(0, |kv| kv.mod_revision))
            .collect();
        assert!(
            revs.windows(2).all(|w| w[0] < w[1]),
            "records in revision order"
        );

        let tmp = tempfile::tempdir().expect("tempdir");
        let db = sled::open(tmp.path()).expect("sled");
        let restored = Backend::open(&db).expect("backend");
        restored
            .replace(&d.leases, &d.revisions, applied, d.header.revision, 0)
            .expect("replace");
        let (loaded, at) = restored.load().expect("load");
        assert_eq!(at, applied);
        assert_eq!(loaded.get(b"k3"), store.get(b"k3"));
        assert_eq!(
            loaded.lease(9).map(|l| l.keys.len()),
            store.lease(9).map(|l| l.keys.len())
        );
    }

    #[test]
    fn a_damaged_snapshot_is_refused() {
        let mut data = encode(&store_with_data(), 7, AppliedIndex::default()).expect("encode");
        data[40] ^= 0xff;
        assert!(matches!(decode(&data), Err(SnapshotError::Corrupt(m)) if m.contains("checksum")));
    }
}
