//! A durable high-water mark of the raft log, kept outside sled. sled reads damage in the
//! middle of its log as a torn tail and silently drops everything after it; a member would
//! then restart with acknowledged entries missing and no error. Every so often the Ready
//! loop records how far the log is committed and durable; on restart a log that ends
//! before the mark is refused as damaged.
//!
//! The mark is two 12-byte slots (index, CRC-32) written alternately with `fdatasync`, so a
//! crash in the middle of a write leaves the other slot intact.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// How often the mark is brought up to date: the window in which damage can go unnoticed.
const INTERVAL: Duration = Duration::from_millis(100);
const SLOT: u64 = 12;

/// The mark file.
pub struct CommitMark {
    file: File,
    recorded: u64,
    next_slot: u64,
    last_write: Option<Instant>,
}

fn encode(index: u64) -> [u8; SLOT as usize] {
    let mut out = [0u8; SLOT as usize];
    out[..8].copy_from_slice(&index.to_be_bytes());
    let crc = crc32fast::hash(&out[..8]);
    out[8..].copy_from_slice(&crc.to_be_bytes());
    out
}

fn decode(slot: &[u8]) -> Option<u64> {
    let (index, crc) = slot.split_at(8);
    (crc32fast::hash(index).to_be_bytes() == crc)
        .then(|| u64::from_be_bytes(index.try_into().unwrap_or_default()))
}

impl CommitMark {
    /// Opens (or creates) the mark; returns it with the index it holds.
    pub fn open(path: &Path) -> io::Result<(Self, u64)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let mut raw = [0u8; 2 * SLOT as usize];
        let len = file.read_at(&mut raw, 0)?;
        let slots = [&raw[..SLOT as usize], &raw[SLOT as usize..]];
        let valid: Vec<(u64, u64)> = slots
            .iter()
            .enumerate()
            .filter(|(i, _)| len >= (*i + 1) * SLOT as usize)
            .filter_map(|(i, s)| decode(s).map(|v| (i as u64, v)))
            .collect();
        let (newest_slot, recorded) = valid
            .iter()
            .copied()
            .max_by_key(|(_, v)| *v)
            .unwrap_or((1, 0));
        Ok((
            CommitMark {
                file,
                recorded,
                next_slot: 1 - newest_slot,
                last_write: None,
            },
            recorded,
        ))
    }

    /// Records `index` if it moved on and the last write is old enough.
    pub fn maybe_record(&mut self, index: u64) -> io::Result<()> {
        if index <= self.recorded || self.last_write.is_some_and(|t| t.elapsed() < INTERVAL) {
            return Ok(());
        }
        self.file
            .write_all_at(&encode(index), self.next_slot * SLOT)?;
        self.file.sync_data()?;
        self.recorded = index;
        self.next_slot = 1 - self.next_slot;
        self.last_write = Some(Instant::now());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mark_survives_a_reopen_and_a_torn_slot() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("mark");
        let (mut m, at) = CommitMark::open(&path).expect("open");
        assert_eq!(at, 0);
        m.maybe_record(7).expect("record");
        m.last_write = None;
        m.maybe_record(9).expect("record");
        drop(m);
        assert_eq!(CommitMark::open(&path).expect("reopen").1, 9);
        // Tear the newest slot: the older one still holds.
        let f = OpenOptions::new().write(true).open(&path).expect("open");
        f.write_all_at(&[0xff; 4], SLOT).expect("tear");
        assert_eq!(CommitMark::open(&path).expect("reopen").1, 7);
    }

    #[test]
    fn the_mark_is_written_at_most_once_per_interval() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (mut m, _) = CommitMark::open(&tmp.path().join("mark")).expect("open");
        m.maybe_record(3).expect("record");
        m.maybe_record(4).expect("record");
        assert_eq!(m.recorded, 3);
    }
}
