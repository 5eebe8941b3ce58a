//! Revisions: the store's logical clock.

/// A point in the store's history: `main` is the global revision a write created, `sub`
/// orders the changes inside one transaction.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision {
    /// The global revision.
    pub main: i64,
    /// The change's position inside its transaction.
    pub sub: i64,
}

impl Revision {
    /// Creates a revision.
    pub fn new(main: i64, sub: i64) -> Self {
        Revision { main, sub }
    }

    /// Big-endian bytes, so byte order equals revision order in the on-disk index.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&(self.main as u64).to_be_bytes());
        out[8..].copy_from_slice(&(self.sub as u64).to_be_bytes());
        out
    }

    /// Parses [`Revision::to_bytes`]'s output; `None` when the slice is not 16 bytes long.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let main = u64::from_be_bytes(b.get(..8)?.try_into().ok()?);
        let sub = u64::from_be_bytes(b.get(8..16)?.try_into().ok()?);
        (b.len() == 16).then_some(Revision {
            main: main as i64,
            sub: sub as i64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_order_is_revision_order() {
        let a = Revision::new(5, 9);
        let b = Revision::new(6, 0);
        assert!(a.to_bytes() < b.to_bytes());
        assert_eq!(Revision::from_bytes(&a.to_bytes()), Some(a));
        assert_eq!(Revision::from_bytes(&[0; 3]), None);
    }
}
