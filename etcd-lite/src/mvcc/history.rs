//! The version history of one key, as kept in memory until compaction.

use bytes::Bytes;

use super::revision::Revision;
use flotilla_proto::mvccpb::KeyValue;

/// One change to a key: a put (with the value it set) or a deletion.
#[derive(Clone, Debug, PartialEq)]
pub struct Version {
    /// When the change happened.
    pub rev: Revision,
    /// The revision that created the key's current generation (0 for a tombstone).
    pub create_revision: i64,
    /// Modifications since creation (0 for a tombstone).
    pub version: i64,
    /// The lease attached by this put.
    pub lease: i64,
    /// The value set by this put.
    pub value: Bytes,
    /// Whether this change deleted the key.
    pub tombstone: bool,
}

impl Version {
    /// The key-value as a client sees it after this change.
    pub fn to_kv(&self, key: &Bytes) -> KeyValue {
        KeyValue {
            key: key.clone(),
            create_revision: self.create_revision,
            mod_revision: self.rev.main,
            version: self.version,
            value: self.value.clone(),
            lease: self.lease,
        }
    }
}

/// Every retained change of one key, oldest first.
#[derive(Clone, Debug, Default)]
pub struct KeyHistory {
    versions: Vec<Version>,
}

impl KeyHistory {
    /// The live version at revision `rev`, or `None` if the key did not exist then.
    pub fn at(&self, rev: i64) -> Option<&Version> {
        let idx = self.versions.partition_point(|v| v.rev.main <= rev);
        let v = self.versions.get(idx.checked_sub(1)?)?;
        (!v.tombstone).then_some(v)
    }

    /// The newest live version, or `None` when the key is deleted.
    pub fn latest(&self) -> Option<&Version> {
        self.versions.last().filter(|v| !v.tombstone)
    }

    /// The change made exactly at `rev`, and the live version just before it.
    pub fn change_at(&self, rev: Revision) -> Option<(&Version, Option<&Version>)> {
        let idx = self.versions.binary_search_by(|v| v.rev.cmp(&rev)).ok()?;
        let prev = idx
            .checked_sub(1)
            .and_then(|i| self.versions.get(i))
            .filter(|v| !v.tombstone);
        Some((&self.versions[idx], prev))
    }

    /// Appends a change; revisions only grow.
    pub fn push(&mut self, v: Version) {
        debug_assert!(self.versions.last().is_none_or(|last| last.rev < v.rev));
        self.versions.push(v);
    }

    /// Drops what no read at or after `compact_rev` can see; returns the dropped revisions.
    /// Versions at or after `compact_rev` stay (watchers may still replay them), and so does
    /// the newest older version when it is live, because reads at `compact_rev` return it.
    pub fn compact(&mut self, compact_rev: i64) -> Vec<Revision> {
        let newer = self.versions.partition_point(|v| v.rev.main < compact_rev);
        let exact = self
            .versions
            .get(newer)
            .is_some_and(|v| v.rev.main == compact_rev);
        let mut keep_from = newer;
        if !exact && newer > 0 && !self.versions[newer - 1].tombstone {
            keep_from = newer - 1;
        }
        self.versions.drain(..keep_from).map(|v| v.rev).collect()
    }

    /// Whether nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }

    /// Every retained version, oldest first.
    pub fn versions(&self) -> &[Version] {
        &self.versions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(main: i64, create: i64, version: i64, value: &'static str) -> Version {
        Version {
            rev: Revision::new(main, 0),
            create_revision: create,
            version,
            lease: 0,
            value: Bytes::from_static(value.as_bytes()),
            tombstone: false,
        }
    }

    fn tomb(main: i64) -> Version {
        Version {
            rev: Revision::new(main, 0),
            create_revision: 0,
            version: 0,
            lease: 0,
            value: Bytes::new(),
            tombstone: true,
        }
    }

    fn history(vs: Vec<Version>) -> KeyHistory {
        let mut h = KeyHistory::default();
        vs.into_iter().for_each(|v| h.push(v));
        h
    }

    #[test]
    fn reads_see_the_version_current_at_their_revision() {
        let h = history(vec![
            put(2, 2, 1, "a"),
            put(4, 2, 2, "b"),
            tomb(6),
            put(8, 8, 1, "c"),
        ]);
        assert!(h.at(1).is_none());
        assert_eq!(h.at(3).map(|v| &v.value[..]), Some(&b"a"[..]));
        assert_eq!(h.at(5).map(|v| &v.value[..]), Some(&b"b"[..]));
        assert!(h.at(6).is_none());
        assert!(h.at(7).is_none());
        assert_eq!(h.at(9).map(|v| v.create_revision), Some(8));
    }

    #[test]
    fn compaction_keeps_the_version_visible_at_the_compacted_revision() {
        let mut h = history(vec![
            put(2, 2, 1, "a"),
            put(4, 2, 2, "b"),
            put(9, 2, 3, "c"),
        ]);
        let dropped = h.compact(5);
        assert_eq!(dropped, vec![Revision::new(2, 0)]);
        assert_eq!(h.at(5).map(|v| &v.value[..]), Some(&b"b"[..]));
    }

    #[test]
    fn compaction_drops_a_deleted_generation_entirely() {
        let mut h = history(vec![put(2, 2, 1, "a"), tomb(3)]);
        assert_eq!(h.compact(5).len(), 2);
        assert!(h.is_empty());
    }

    #[test]
    fn compaction_at_an_exact_change_keeps_that_change_for_watchers() {
        let mut h = history(vec![put(2, 2, 1, "a"), tomb(5)]);
        h.compact(5);
        assert_eq!(h.versions().len(), 1);
        assert!(h.change_at(Revision::new(5, 0)).is_some());
        assert!(h.at(5).is_none());
    }
}
