//! How big a filesystem is and how much of it is free, from statvfs(2): the node's
//! ephemeral-storage capacity, its disk pressure and image garbage collection all read it
//! here.

use std::path::{Path, PathBuf};

/// A filesystem's size and free space, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsStats {
    /// Its size.
    pub capacity: u64,
    /// What unprivileged users may still write.
    pub available: u64,
}

/// statvfs failed for a path.
#[derive(Debug, thiserror::Error)]
#[error("statvfs {}: {source}", path.display())]
pub struct StatvfsError {
    /// The path asked about.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: nix::errno::Errno,
}

/// The size and free space of the filesystem holding `path`.
pub fn of(path: &Path) -> Result<FsStats, StatvfsError> {
    let s = nix::sys::statvfs::statvfs(path).map_err(|source| StatvfsError {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(from_blocks(
        s.blocks() as u64,
        s.blocks_available() as u64,
        s.fragment_size() as u64,
    ))
}

/// Block counts in bytes. statvfs counts blocks in units of the fragment size (f_frsize),
/// not the preferred I/O size (f_bsize), which can be larger.
fn from_blocks(blocks: u64, available: u64, fragment_size: u64) -> FsStats {
    FsStats {
        capacity: blocks.saturating_mul(fragment_size),
        available: available.saturating_mul(fragment_size),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_count_in_fragments_and_saturate() {
        assert_eq!(
            from_blocks(1000, 250, 4096),
            FsStats {
                capacity: 4_096_000,
                available: 1_024_000
            }
        );
        assert_eq!(
            from_blocks(u64::MAX / 2, 0, 4096),
            FsStats {
                capacity: u64::MAX,
                available: 0
            }
        );
    }

    #[test]
    fn a_real_directory_has_a_size_and_a_missing_one_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let fs = of(dir.path()).expect("statvfs");
        assert!(fs.capacity > 0);
        assert!(fs.available <= fs.capacity, "{fs:?}");
        let missing = dir.path().join("missing");
        let e = of(&missing).expect_err("no such directory");
        assert_eq!(e.source, nix::errno::Errno::ENOENT);
        assert!(e.to_string().contains("missing"), "{e}");
    }
}
