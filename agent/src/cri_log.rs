//! The CRI log format that the kubelet, containerd and `kubectl logs` share: one record a
//! line, `<RFC 3339 time> <stdout|stderr> <P|F> <text>`, where `P` marks a partial line
//! (split because it was too long) and `F` the end of one.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Lines longer than this are split into partial records, as containerd splits them.
pub const MAX_RECORD: usize = 16 * 1024;

/// One parsed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// When it was written (RFC 3339 with nanoseconds).
    pub time: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// Whether the line continues in the next record.
    pub partial: bool,
    /// The text, without the newline.
    pub text: String,
}

/// Parses one record; None for a malformed line.
pub fn parse(line: &str) -> Option<Record> {
    let mut parts = line.splitn(4, ' ');
    let time = parts.next()?;
    let stream = parts.next()?;
    let tag = parts.next()?;
    let text = parts.next().unwrap_or_default();
    if !matches!(stream, "stdout" | "stderr") {
        return None;
    }
    Some(Record {
        time: time.to_string(),
        stream: stream.to_string(),
        partial: tag.starts_with('P'),
        text: text.to_string(),
    })
}

/// Writes records to a log file, rotating it by size: `<path>` is current, `<path>.1` the
/// one before, up to `keep` old files.
pub struct Writer {
    path: PathBuf,
    file: File,
    written: u64,
    max_bytes: u64,
    keep: usize,
}

impl Writer {
    /// Opens (appending to) the log at `path`.
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let written = file.metadata()?.len();
        Ok(Writer {
            path: path.to_path_buf(),
            file,
            written,
            max_bytes,
            keep,
        })
    }

    /// Writes one line of output (without its newline; `complete` is false when the
    /// stream ended without one).
    pub fn line(&mut self, stream: &str, text: &[u8], complete: bool) -> io::Result<()> {
        let text = String::from_utf8_lossy(text);
        let mut chunks: Vec<&str> = Vec::new();
        let mut rest: &str = &text;
        while rest.len() > MAX_RECORD {
            let mut cut = MAX_RECORD;
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            let (head, tail) = rest.split_at(cut);
            chunks.push(head);
            rest = tail;
        }
        chunks.push(rest);
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.into_iter().enumerate() {
            let tag = if i == last && complete { 'F' } else { 'P' };
            let record = format!("{} {stream} {tag} {chunk}\n", jiff::Timestamp::now());
            self.write(record.as_bytes())?;
        }
        Ok(())
    }

    fn write(&mut self, record: &[u8]) -> io::Result<()> {
        if self.max_bytes > 0 && self.written + record.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(record)?;
        self.written += record.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let numbered = |n: usize| PathBuf::from(format!("{}.{n}", self.path.display()));
        if self.keep == 0 {
            self.file.set_len(0)?;
        } else {
            let _ = std::fs::remove_file(numbered(self.keep));
            for n in (1..self.keep).rev() {
                let _ = std::fs::rename(numbered(n), numbered(n + 1));
            }
            std::fs::rename(&self.path, numbered(1))?;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
        }
        self.written = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_long_lines_split() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0.log");
        let mut w = Writer::open(&path, 0, 0).expect("open");
        w.line("stdout", b"hello world", true).expect("write");
        w.line("stderr", &vec![b'x'; MAX_RECORD + 10], true)
            .expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        let records: Vec<Record> = text.lines().filter_map(parse).collect();
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].text, "hello world");
        assert_eq!(
            (records[0].stream.as_str(), records[0].partial),
            ("stdout", false)
        );
        assert!(records[1].partial && !records[2].partial);
        assert_eq!(
            records[1].text.len() + records[2].text.len(),
            MAX_RECORD + 10
        );
    }

    #[test]
    fn a_full_log_rotates_keeping_the_newest_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0.log");
        let mut w = Writer::open(&path, 200, 2).expect("open");
        for i in 0..20 {
            w.line("stdout", format!("line {i:02}").as_bytes(), true)
                .expect("write");
        }
        assert!(std::fs::metadata(&path).expect("current").len() <= 200);
        let older = std::fs::read_to_string(dir.path().join("0.log.1")).expect("rotated");
        assert!(older.contains("line"));
        assert!(!dir.path().join("0.log.3").exists(), "only two kept");
        let newest = std::fs::read_to_string(&path).expect("current");
        assert!(newest.contains("line 19"));
    }
}
