//! The tail of the raft log, kept in memory: a leader reads recent entries back for every
//! append it sends, and reading them from sled each time would cost a lookup and a decode.

use std::collections::VecDeque;

use protobuf::Message as _;
use raft::prelude::Entry;

/// Most entries kept.
const MAX_ENTRIES: usize = 16 * 1024;
/// Most bytes kept.
const MAX_BYTES: usize = 64 * 1024 * 1024;

/// A contiguous run of the newest log entries.
#[derive(Default)]
pub struct EntryCache {
    entries: VecDeque<Entry>,
    bytes: usize,
}

impl EntryCache {
    /// Appends entries, first dropping any cached ones they replace, then trims the oldest
    /// to stay within the limits.
    pub fn append(&mut self, new: &[Entry]) {
        let Some(first) = new.first() else {
            return;
        };
        while self.entries.back().is_some_and(|e| e.index >= first.index) {
            self.pop_back();
        }
        if self
            .entries
            .back()
            .is_some_and(|e| e.index + 1 != first.index)
        {
            // Not contiguous with what is cached (after a snapshot, say): start afresh.
            self.clear();
        }
        for e in new {
            self.bytes += e.compute_size() as usize;
            self.entries.push_back(e.clone());
        }
        while self.entries.len() > MAX_ENTRIES || self.bytes > MAX_BYTES {
            self.pop_front();
        }
    }

    /// Forgets entries up to and including `index`.
    pub fn evict_through(&mut self, index: u64) {
        while self.entries.front().is_some_and(|e| e.index <= index) {
            self.pop_front();
        }
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// The entry at `index`, if cached.
    pub fn get(&self, index: u64) -> Option<&Entry> {
        let first = self.entries.front()?.index;
        self.entries.get(index.checked_sub(first)? as usize)
    }

    /// The first cached index.
    pub fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|e| e.index)
    }

    fn pop_front(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            self.bytes -= e.compute_size() as usize;
        }
    }

    fn pop_back(&mut self) {
        if let Some(e) = self.entries.pop_back() {
            self.bytes -= e.compute_size() as usize;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Default::default()
        }
    }

    #[test]
    fn conflicting_entries_replace_the_cached_suffix() {
        let mut c = EntryCache::default();
        c.append(&[entry(1, 1), entry(2, 1), entry(3, 1)]);
        c.append(&[entry(2, 2)]);
        assert_eq!(c.get(2).map(|e| e.term), Some(2));
        assert!(c.get(3).is_none());
        c.evict_through(1);
        assert_eq!(c.first_index(), Some(2));
    }

    #[test]
    fn a_gap_starts_the_cache_afresh() {
        let mut c = EntryCache::default();
        c.append(&[entry(1, 1)]);
        c.append(&[entry(10, 1)]);
        assert!(c.get(1).is_none());
        assert_eq!(c.first_index(), Some(10));
    }
}
