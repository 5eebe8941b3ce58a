//! State-machine snapshots on disk, named `<term>-<index>.snap` (hex) as etcd names them.
//! A snapshot is written to a temporary file, synced, then renamed into place, so a crash
//! never leaves a partial snapshot under a real name.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Where a snapshot file sits and what point of the log it covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapFile {
    /// The last log index the snapshot includes.
    pub index: u64,
    /// That entry's term.
    pub term: u64,
    /// The file.
    pub path: PathBuf,
}

/// The snapshot directory.
#[derive(Clone, Debug)]
pub struct SnapFiles {
    dir: PathBuf,
}

/// How many snapshots to keep; older ones are deleted after a new one is saved.
const KEEP: usize = 2;

impl SnapFiles {
    /// Uses `dir`, which must exist.
    pub fn new(dir: PathBuf) -> Self {
        SnapFiles { dir }
    }

    /// Durably stores a snapshot and deletes all but the newest few.
    pub fn save(&self, index: u64, term: u64, data: &[u8]) -> io::Result<SnapFile> {
        let name = format!("{term:016x}-{index:016x}.snap");
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        fs::write(&tmp, data)?;
        fs::File::open(&tmp)?.sync_all()?;
        fs::rename(&tmp, &path)?;
        fs::File::open(&self.dir)?.sync_all()?;
        let mut all = self.list()?;
        all.sort_by_key(|s| s.index);
        let excess = all.len().saturating_sub(KEEP);
        for old in all.into_iter().take(excess) {
            let _ = fs::remove_file(old.path);
        }
        Ok(SnapFile { index, term, path })
    }

    /// The newest snapshot, if any.
    pub fn latest(&self) -> io::Result<Option<SnapFile>> {
        Ok(self.list()?.into_iter().max_by_key(|s| s.index))
    }

    /// Reads a snapshot's bytes.
    pub fn read(&self, snap: &SnapFile) -> io::Result<Vec<u8>> {
        fs::read(&snap.path)
    }

    fn list(&self) -> io::Result<Vec<SnapFile>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if let Some(s) = parse_name(&path) {
                out.push(s);
            }
        }
        Ok(out)
    }
}

fn parse_name(path: &Path) -> Option<SnapFile> {
    let name = path.file_name()?.to_str()?.strip_suffix(".snap")?;
    let (term, index) = name.split_once('-')?;
    Some(SnapFile {
        index: u64::from_str_radix(index, 16).ok()?,
        term: u64::from_str_radix(term, 16).ok()?,
        path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saving_keeps_only_the_newest_snapshots() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let s = SnapFiles::new(tmp.path().to_path_buf());
        for i in 1..=4u64 {
            s.save(i * 10, 1, &[i as u8]).expect("save");
        }
        let latest = s.latest().expect("list").expect("some");
        assert_eq!(latest.index, 40);
        assert_eq!(s.read(&latest).expect("read"), vec![4]);
        assert_eq!(s.list().expect("list").len(), KEEP);
    }
}
