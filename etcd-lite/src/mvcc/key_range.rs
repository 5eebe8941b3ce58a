//! etcd's key-range convention: a key alone, a half-open range, or everything from a key on.

use std::ops::Bound;

use bytes::Bytes;

/// Lower and upper bounds over byte-string keys.
pub type Bounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// The keys a request or watcher covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRange {
    /// Exactly one key (`range_end` empty).
    Single(Bytes),
    /// `[start, end)`; `end == None` means every key from `start` on (`range_end` = "\0").
    Span { start: Bytes, end: Option<Bytes> },
}

impl KeyRange {
    /// Interprets a request's `key` and `range_end` as etcd does.
    pub fn new(key: &Bytes, range_end: &Bytes) -> Self {
        match range_end.as_ref() {
            [] => KeyRange::Single(key.clone()),
            [0] => KeyRange::Span {
                start: key.clone(),
                end: None,
            },
            _ => KeyRange::Span {
                start: key.clone(),
                end: Some(range_end.clone()),
            },
        }
    }

    /// Whether `key` lies in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeyRange::Single(k) => k.as_ref() == key,
            KeyRange::Span { start, end } => {
                key >= start.as_ref() && end.as_ref().is_none_or(|e| key < e.as_ref())
            }
        }
    }

    /// The range as B-tree bounds; `None` when it is empty (end at or before start), so that
    /// callers never hand an inverted range to `BTreeMap::range`, which would panic.
    pub fn bounds(&self) -> Option<Bounds<'_>> {
        match self {
            KeyRange::Single(k) => Some((Bound::Included(k.as_ref()), Bound::Included(k.as_ref()))),
            KeyRange::Span { start, end: None } => {
                Some((Bound::Included(start.as_ref()), Bound::Unbounded))
            }
            KeyRange::Span {
                start,
                end: Some(end),
            } => (end > start).then_some((
                Bound::Included(start.as_ref()),
                Bound::Excluded(end.as_ref()),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &'static [u8]) -> Bytes {
        Bytes::from_static(s)
    }

    #[test]
    fn empty_range_end_means_one_key() {
        let r = KeyRange::new(&b(b"a"), &b(b""));
        assert!(r.contains(b"a"));
        assert!(!r.contains(b"ab"));
    }

    #[test]
    fn zero_byte_range_end_means_every_key_from_the_start() {
        let r = KeyRange::new(&b(b"b"), &b(b"\0"));
        assert!(r.contains(b"b") && r.contains(b"zzz"));
        assert!(!r.contains(b"a"));
    }

    #[test]
    fn inverted_range_is_empty_not_a_panic() {
        let r = KeyRange::new(&b(b"z"), &b(b"a"));
        assert!(r.bounds().is_none());
        assert!(!r.contains(b"m"));
    }
}
