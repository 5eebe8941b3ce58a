//! The in-memory MVCC state machine: every key's retained history, the change log that
//! watchers replay, and the leases. Disk persistence is the applier's job: every mutation
//! here is also recorded in [`Effects`], which the applier writes to sled in one batch.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use flotilla_proto::etcdserverpb::{
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    range_request::SortOrder, range_request::SortTarget,
};
use flotilla_proto::mvccpb::{Event, KeyValue, event::EventType};

use super::MvccError;
use super::history::{KeyHistory, Version};
use super::key_range::KeyRange;
use super::revision::Revision;

/// One change applied to a key: what it became and what it was.
#[derive(Clone, Debug)]
pub struct Change {
    /// The key changed.
    pub key: Bytes,
    /// The new version (a tombstone for a deletion).
    pub version: Version,
    /// The live version before the change, if any.
    pub prev: Option<Version>,
}

impl Change {
    /// The watch event for this change, always carrying the previous key-value; watchers
    /// that did not ask for it strip it.
    pub fn to_event(&self) -> Event {
        let kv = if self.version.tombstone {
            KeyValue {
                key: self.key.clone(),
                mod_revision: self.version.rev.main,
                ..Default::default()
            }
        } else {
            self.version.to_kv(&self.key)
        };
        Event {
            r#type: if self.version.tombstone {
                EventType::Delete as i32
            } else {
                EventType::Put as i32
            },
            kv: Some(kv),
            prev_kv: self.prev.as_ref().map(|p| p.to_kv(&self.key)),
        }
    }
}

/// A lease as the state machine knows it: its granted TTL and the keys attached to it.
#[derive(Clone, Debug, Default)]
pub struct Lease {
    /// Granted time-to-live, seconds.
    pub ttl: i64,
    /// Keys whose current version is attached to this lease.
    pub keys: BTreeSet<Bytes>,
}

/// What the last mutations changed, for the applier to persist and publish.
#[derive(Clone, Debug, Default)]
pub struct Effects {
    /// New key versions, in revision order.
    pub changes: Vec<Change>,
    /// Revisions compaction removed.
    pub dropped: Vec<Revision>,
    /// Leases granted (id, ttl).
    pub leases_granted: Vec<(i64, i64)>,
    /// Leases revoked.
    pub leases_revoked: Vec<i64>,
    /// Set when a compaction happened.
    pub compacted: Option<i64>,
}

/// The write in progress: every change of one request shares its main revision.
pub struct WriteTxn {
    main: i64,
    next_sub: i64,
}

/// The replicated key-value state. Cloning is cheap enough to take a consistent copy for a
/// snapshot: values are shared buffers, only the index is copied.
#[derive(Clone)]
pub struct MvccStore {
    keys: BTreeMap<Bytes, KeyHistory>,
    /// Every retained change in revision order; watchers replay history from here.
    log: VecDeque<(Revision, Bytes)>,
    revision: i64,
    compacted: i64,
    leases: BTreeMap<i64, Lease>,
    effects: Effects,
}

impl Default for MvccStore {
    /// An empty store at revision 1, as etcd starts.
    fn default() -> Self {
        MvccStore {
            keys: BTreeMap::new(),
            log: VecDeque::new(),
            revision: 1,
            compacted: 0,
            leases: BTreeMap::new(),
            effects: Effects::default(),
        }
    }
}

impl MvccStore {
    /// The newest revision.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The revision below which history is gone.
    pub fn compacted_revision(&self) -> i64 {
        self.compacted
    }

    /// Hands the effects of every mutation since the last call to the caller.
    pub fn take_effects(&mut self) -> Effects {
        std::mem::take(&mut self.effects)
    }

    /// Number of live and historical keys, for metrics.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    // ----- reads -----------------------------------------------------------------------

    /// Serves a range read at the request's revision (or the newest).
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, MvccError> {
        self.range_at(req, self.revision)
    }

    /// Serves a range read where "newest" means `latest` (a write transaction reads its own
    /// uncommitted revision).
    fn range_at(&self, req: &RangeRequest, latest: i64) -> Result<RangeResponse, MvccError> {
        let rev = if req.revision > 0 {
            req.revision
        } else {
            latest
        };
        if rev > latest {
            return Err(MvccError::FutureRevision);
        }
        if rev < self.compacted {
            return Err(MvccError::Compacted);
        }
        let range = KeyRange::new(&req.key, &req.range_end);
        // As etcd does it: unless an order is given (a sort target alone does not count) or a
        // filter applies, only the first limit+1 keys in key order are read, and a sort by
        // another target sorts just those. The count is of every key in the range, filters
        // notwithstanding.
        let reads_all = req.sort_order != SortOrder::None as i32
            || req.min_mod_revision != 0
            || req.max_mod_revision != 0
            || req.min_create_revision != 0
            || req.max_create_revision != 0;
        let collect_cap = if reads_all || req.limit <= 0 {
            usize::MAX
        } else {
            req.limit as usize + 1
        };
        let mut kvs = Vec::new();
        let mut count = 0i64;
        for (key, version) in self.visible(&range, rev) {
            count += 1;
            if !req.count_only && kvs.len() < collect_cap && passes_filters(req, version) {
                let mut kv = version.to_kv(key);
                if req.keys_only {
                    kv.value = Bytes::new();
                }
                kvs.push(kv);
            }
        }
        sort_kvs(&mut kvs, req);
        let mut more = false;
        if req.limit > 0 && kvs.len() > req.limit as usize {
            kvs.truncate(req.limit as usize);
            more = true;
        }
        Ok(RangeResponse {
            header: None,
            kvs,
            more,
            count,
        })
    }

    /// The live version of every key in `range` at revision `rev`, in key order.
    pub fn visible<'a>(
        &'a self,
        range: &KeyRange,
        rev: i64,
    ) -> impl Iterator<Item = (&'a Bytes, &'a Version)> + 'a {
        let iter = range.bounds().map(|(lo, hi)| {
            self.keys
                .range::<[u8], _>((lo, hi))
                .filter_map(move |(k, h)| h.at(rev).map(|v| (k, v)))
        });
        iter.into_iter().flatten()
    }

    /// The live key-value of `key` now.
    pub fn get(&self, key: &[u8]) -> Option<KeyValue> {
        let (k, h) = self.keys.get_key_value(key)?;
        h.latest().map(|v| v.to_kv(k))
    }

    /// The live version of `key` now.
    pub fn latest(&self, key: &[u8]) -> Option<&Version> {
        self.keys.get(key).and_then(|h| h.latest())
    }

    /// Replays the changes with revisions in `[from, to]`, oldest first: at least `max` of
    /// them when there are that many, and never part of a revision.
    pub fn changes_between(&self, from: i64, to: i64, max: usize) -> Vec<Change> {
        let start = self.log.partition_point(|(r, _)| r.main < from);
        let mut out = Vec::new();
        let mut last_main = None;
        for (rev, key) in self.log.range(start..) {
            if rev.main > to || (out.len() >= max && last_main != Some(rev.main)) {
                break;
            }
            last_main = Some(rev.main);
            if let Some((version, prev)) = self.keys.get(key).and_then(|h| h.change_at(*rev)) {
                out.push(Change {
                    key: key.clone(),
                    version: version.clone(),
                    prev: prev.cloned(),
                });
            }
        }
        out
    }

    // ----- writes ----------------------------------------------------------------------

    /// Starts a write; its changes take the next revision.
    pub fn begin(&self) -> WriteTxn {
        WriteTxn {
            main: self.revision + 1,
            next_sub: 0,
        }
    }

    /// Finishes a write: the revision advances only if something changed.
    pub fn end(&mut self, txn: WriteTxn) -> i64 {
        if txn.next_sub > 0 {
            self.revision = txn.main;
        }
        self.revision
    }

    /// A range read inside a write transaction, seeing the transaction's own changes.
    pub fn txn_range(
        &self,
        txn: &WriteTxn,
        req: &RangeRequest,
    ) -> Result<RangeResponse, MvccError> {
        let latest = if txn.next_sub > 0 {
            txn.main
        } else {
            self.revision
        };
        self.range_at(req, latest)
    }

    /// Checks that a put can be applied: its lease exists, and the key exists when the
    /// put keeps the current value or lease.
    pub fn check_put(&self, req: &PutRequest) -> Result<(), MvccError> {
        if req.lease != 0 && !self.leases.contains_key(&req.lease) {
            return Err(MvccError::LeaseNotFound);
        }
        if (req.ignore_value || req.ignore_lease) && self.latest(&req.key).is_none() {
            return Err(MvccError::KeyNotFound);
        }
        Ok(())
    }

    /// Applies a checked put.
    pub fn put(&mut self, txn: &mut WriteTxn, req: &PutRequest) -> PutResponse {
        let prev = self.latest(&req.key).cloned();
        let value = match (&prev, req.ignore_value) {
            (Some(p), true) => p.value.clone(),
            _ => req.value.clone(),
        };
        let lease = match (&prev, req.ignore_lease) {
            (Some(p), true) => p.lease,
            _ => req.lease,
        };
        let rev = Revision::new(txn.main, txn.next_sub);
        txn.next_sub += 1;
        let version = Version {
            rev,
            create_revision: prev.as_ref().map_or(txn.main, |p| p.create_revision),
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            lease,
            value,
            tombstone: false,
        };
        if let Some(p) = &prev
            && p.lease != 0
            && p.lease != lease
        {
            self.detach(p.lease, &req.key);
        }
        if let Some(l) = self.leases.get_mut(&lease) {
            l.keys.insert(req.key.clone());
        }
        let prev_kv = if req.prev_kv {
            prev.as_ref().map(|p| p.to_kv(&req.key))
        } else {
            None
        };
        self.record(req.key.clone(), version, prev);
        PutResponse {
            header: None,
            prev_kv,
        }
    }

    /// Deletes every live key in the range.
    pub fn delete_range(
        &mut self,
        txn: &mut WriteTxn,
        req: &DeleteRangeRequest,
    ) -> DeleteRangeResponse {
        let range = KeyRange::new(&req.key, &req.range_end);
        let latest = if txn.next_sub > 0 {
            txn.main
        } else {
            self.revision
        };
        let doomed: Vec<Bytes> = self
            .visible(&range, latest)
            .map(|(k, _)| k.clone())
            .collect();
        let mut prev_kvs = Vec::new();
        for key in &doomed {
            let prev = self.delete_key(txn, key);
            if req.prev_kv {
                prev_kvs.extend(prev);
            }
        }
        DeleteRangeResponse {
            header: None,
            deleted: doomed.len() as i64,
            prev_kvs,
        }
    }

    fn delete_key(&mut self, txn: &mut WriteTxn, key: &Bytes) -> Option<KeyValue> {
        let prev = self.latest(key).cloned()?;
        if prev.lease != 0 {
            self.detach(prev.lease, key);
        }
        let rev = Revision::new(txn.main, txn.next_sub);
        txn.next_sub += 1;
        let kv = prev.to_kv(key);
        let tombstone = Version {
            rev,
            create_revision: 0,
            version: 0,
            lease: 0,
            value: Bytes::new(),
            tombstone: true,
        };
        self.record(key.clone(), tombstone, Some(prev));
        Some(kv)
    }

    fn record(&mut self, key: Bytes, version: Version, prev: Option<Version>) {
        self.keys
            .entry(key.clone())
            .or_default()
            .push(version.clone());
        self.log.push_back((version.rev, key.clone()));
        self.effects.changes.push(Change { key, version, prev });
    }

    fn detach(&mut self, lease: i64, key: &[u8]) {
        if let Some(l) = self.leases.get_mut(&lease) {
            l.keys.remove(key);
        }
    }

    /// Discards history before `rev`.
    pub fn compact(&mut self, rev: i64) -> Result<(), MvccError> {
        if rev <= self.compacted {
            return Err(MvccError::Compacted);
        }
        if rev > self.revision {
            return Err(MvccError::FutureRevision);
        }
        let mut dropped = Vec::new();
        self.keys.retain(|_, h| {
            dropped.extend(h.compact(rev));
            !h.is_empty()
        });
        let keep_from = self.log.partition_point(|(r, _)| r.main < rev);
        self.log.drain(..keep_from);
        self.compacted = rev;
        self.effects.dropped.extend(dropped);
        self.effects.compacted = Some(rev);
        Ok(())
    }

    // ----- leases ----------------------------------------------------------------------

    /// Creates a lease.
    pub fn lease_grant(&mut self, id: i64, ttl: i64) -> Result<(), MvccError> {
        if self.leases.contains_key(&id) {
            return Err(MvccError::LeaseExists);
        }
        self.leases.insert(
            id,
            Lease {
                ttl,
                keys: BTreeSet::new(),
            },
        );
        self.effects.leases_granted.push((id, ttl));
        Ok(())
    }

    /// Removes a lease and deletes its keys, all in one revision.
    pub fn lease_revoke(&mut self, txn: &mut WriteTxn, id: i64) -> Result<(), MvccError> {
        let lease = self.leases.remove(&id).ok_or(MvccError::LeaseNotFound)?;
        for key in &lease.keys {
            self.delete_key(txn, key);
        }
        self.effects.leases_revoked.push(id);
        Ok(())
    }

    /// A lease by id.
    pub fn lease(&self, id: i64) -> Option<&Lease> {
        self.leases.get(&id)
    }

    /// Every lease.
    pub fn leases(&self) -> &BTreeMap<i64, Lease> {
        &self.leases
    }

    // ----- loading ---------------------------------------------------------------------

    /// Rebuilds the state from persisted records; revisions must arrive in order.
    pub fn load_revision(&mut self, key: Bytes, version: Version) {
        let prev = self.latest(&key).cloned();
        if let Some(p) = &prev
            && p.lease != 0
        {
            self.detach(p.lease, &key);
        }
        // Leases are loaded first; an old version's lease that has since been revoked is
        // simply not there to attach to.
        if !version.tombstone
            && let Some(l) = self.leases.get_mut(&version.lease)
        {
            l.keys.insert(key.clone());
        }
        let rev = version.rev;
        self.keys.entry(key.clone()).or_default().push(version);
        // A version kept from before the compacted revision serves reads, not replays.
        if rev.main >= self.compacted {
            self.log.push_back((rev, key));
        }
    }

    /// Restores a persisted lease (before its keys are loaded).
    pub fn load_lease(&mut self, id: i64, ttl: i64) {
        self.leases.entry(id).or_default().ttl = ttl;
    }

    /// Restores the revision counters.
    pub fn load_meta(&mut self, revision: i64, compacted: i64) {
        self.revision = revision;
        self.compacted = compacted;
    }

    /// Every retained key history, for snapshots.
    pub fn histories(&self) -> impl Iterator<Item = (&Bytes, &KeyHistory)> {
        self.keys.iter()
    }

    /// The change log in revision order, for snapshots.
    pub fn log(&self) -> impl Iterator<Item = &(Revision, Bytes)> {
        self.log.iter()
    }
}

fn passes_filters(req: &RangeRequest, v: &Version) -> bool {
    (req.min_mod_revision == 0 || v.rev.main >= req.min_mod_revision)
        && (req.max_mod_revision == 0 || v.rev.main <= req.max_mod_revision)
        && (req.min_create_revision == 0 || v.create_revision >= req.min_create_revision)
        && (req.max_create_revision == 0 || v.create_revision <= req.max_create_revision)
}

/// Sorts as etcd does: by key ascending unless asked otherwise; a target other than the key
/// with no order given means ascending; an order etcd does not know leaves key order.
fn sort_kvs(kvs: &mut [KeyValue], req: &RangeRequest) {
    let target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
    let Ok(mut order) = SortOrder::try_from(req.sort_order) else {
        return;
    };
    if target != SortTarget::Key && order == SortOrder::None {
        order = SortOrder::Ascend;
    }
    if order == SortOrder::None {
        return;
    }
    let cmp = |a: &KeyValue, b: &KeyValue| match target {
        SortTarget::Key => a.key.cmp(&b.key),
        SortTarget::Version => a.version.cmp(&b.version),
        SortTarget::Create => a.create_revision.cmp(&b.create_revision),
        SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
        SortTarget::Value => a.value.cmp(&b.value),
    };
    if order == SortOrder::Descend {
        kvs.sort_by(|a, b| cmp(b, a));
    } else {
        kvs.sort_by(cmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    /// Keys a..d whose values run against key order: a=4, b=2, c=3, d=0.
    fn store() -> MvccStore {
        let mut s = MvccStore::default();
        for (k, v) in [("a", "4"), ("b", "2"), ("c", "3"), ("d", "0")] {
            let mut txn = s.begin();
            s.put(
                &mut txn,
                &PutRequest {
                    key: b(k),
                    value: b(v),
                    ..Default::default()
                },
            );
            s.end(txn);
        }
        s
    }

    fn keys(s: &MvccStore, req: RangeRequest) -> (Vec<String>, bool, i64) {
        let resp = s
            .range(&RangeRequest {
                key: b("a"),
                range_end: b("z"),
                ..req
            })
            .expect("range");
        let keys = resp
            .kvs
            .iter()
            .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
            .collect();
        (keys, resp.more, resp.count)
    }

    #[test]
    fn a_sort_target_without_an_order_sorts_only_the_first_limit_plus_one_keys() {
        let by_value = |limit| RangeRequest {
            sort_target: SortTarget::Value as i32,
            limit,
            ..Default::default()
        };
        // etcd reads a and b (limit + 1) in key order, sorts them by value, keeps one.
        assert_eq!(keys(&store(), by_value(1)), (vec!["b".into()], true, 4));
        // Without a limit every key is sorted.
        assert_eq!(
            keys(&store(), by_value(0)).0,
            ["d", "b", "c", "a"].map(String::from)
        );
        // An order makes etcd read every key before sorting.
        let ascending = RangeRequest {
            sort_order: SortOrder::Ascend as i32,
            ..by_value(1)
        };
        assert_eq!(keys(&store(), ascending), (vec!["d".into()], true, 4));
    }

    #[test]
    fn an_unknown_sort_order_keeps_key_order() {
        let unknown = RangeRequest {
            sort_order: 3,
            sort_target: SortTarget::Value as i32,
            limit: 2,
            ..Default::default()
        };
        assert_eq!(
            keys(&store(), unknown),
            (vec!["a".into(), "b".into()], true, 4)
        );
    }

    #[test]
    fn the_count_ignores_revision_filters_as_etcd_does() {
        let filtered = RangeRequest {
            min_mod_revision: 4,
            ..Default::default()
        };
        assert_eq!(
            keys(&store(), filtered),
            (vec!["c".into(), "d".into()], false, 4)
        );
    }
}
