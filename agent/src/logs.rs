//! Container logs for the agent's endpoint: a container's CRI log file read back as lines
//! (partial records joined), with tail, since, timestamps and previous, and followed as it
//! grows — through rotation, the old file read to its end first — until the container
//! ends or the caller goes.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::api::{LogsChunk, LogsRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tonic::codegen::BoxStream;

use crate::runtime::{ContainerState, ContainerStatus, Runtime};
use crate::{cri_log, pod_containers};

/// How often a followed log is checked for new output.
pub const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// The container instance a request is about: the newest, or the one before it when
/// the request asks for the previous.
async fn instance<R: Runtime>(runtime: &R, r: &LogsRequest) -> Result<ContainerStatus, Status> {
    let found = pod_containers::lookup(runtime, &r.namespace, &r.name, &r.pod_uid, &r.container)
        .await
        .map_err(|e| e.to_status())?;
    if !r.previous {
        return Ok(found.newest);
    }
    found.older.into_iter().next().ok_or_else(|| {
        Status::invalid_argument(format!(
            "previous terminated container {:?} in pod {:?} not found",
            found.newest.config.name, r.name
        ))
    })
}

/// Turns CRI records into output lines: partial records joined, filtered by time, with
/// the time prefixed when asked.
#[derive(Default)]
struct Lines {
    pending: String,
    since: Option<jiff::Timestamp>,
    timestamps: bool,
}

impl Lines {
    fn push(&mut self, record: &str, out: &mut Vec<String>) {
        let Some(r) = cri_log::parse(record) else {
            return;
        };
        self.pending.push_str(&r.text);
        if r.partial {
            return;
        }
        let text = std::mem::take(&mut self.pending);
        let t = r.time.parse::<jiff::Timestamp>().ok();
        if let (Some(since), Some(t)) = (self.since, t)
            && t < since
        {
            return;
        }
        out.push(if self.timestamps {
            format!("{} {text}\n", r.time)
        } else {
            format!("{text}\n")
        });
    }
}

/// Reads whatever follows `offset` in `f`; returns the complete records and moves
/// `offset` past them (a record still being written waits for the next read).
fn read_records(f: &mut std::fs::File, offset: &mut u64) -> std::io::Result<Vec<String>> {
    f.seek(SeekFrom::Start(*offset))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    let complete = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    *offset += complete as u64;
    Ok(String::from_utf8_lossy(&buf[..complete])
        .lines()
        .map(str::to_string)
        .collect())
}

/// Reads the complete records of the file at `path` from its start.
fn read_from(path: &Path, offset: u64) -> std::io::Result<(u64, Vec<String>)> {
    let mut f = std::fs::File::open(path)?;
    let mut offset = offset;
    let records = read_records(&mut f, &mut offset)?;
    Ok((offset, records))
}

/// A container's log followed through rotation. Rotation renames the file the container
/// was writing and a new one appears at the path: the open file is read to its end before
/// the new one is taken up, so nothing written just before a rotation is lost.
struct Follower {
    path: PathBuf,
    /// The file being read, and its inode.
    file: Option<(std::fs::File, u64)>,
    offset: u64,
}

impl Follower {
    fn new(path: PathBuf) -> Self {
        Follower {
            path,
            file: None,
            offset: 0,
        }
    }

    /// The complete records written since the last read.
    fn read(&mut self) -> std::io::Result<Vec<String>> {
        use std::os::unix::fs::MetadataExt;
        let at_path = std::fs::metadata(&self.path).ok().map(|m| m.ino());
        let mut records = Vec::new();
        if let Some((f, ino)) = &mut self.file {
            records.extend(read_records(f, &mut self.offset)?);
            if at_path.is_some_and(|now| now != *ino) {
                self.file = None;
            } else if f.metadata()?.len() < self.offset {
                // Truncated where it is: start it again.
                self.offset = 0;
                records.extend(read_records(f, &mut self.offset)?);
            }
        }
        if self.file.is_none()
            && let Ok(mut f) = std::fs::File::open(&self.path)
        {
            let ino = f.metadata()?.ino();
            self.offset = 0;
            records.extend(read_records(&mut f, &mut self.offset)?);
            self.file = Some((f, ino));
        }
        Ok(records)
    }
}

fn rotated(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.1", path.display()))
}

/// Sends `lines` as one chunk (nothing when empty); false once the caller has gone.
async fn send(tx: &mpsc::Sender<Result<LogsChunk, Status>>, lines: &[String]) -> bool {
    lines.is_empty()
        || tx
            .send(Ok(LogsChunk {
                data: lines.concat().into(),
            }))
            .await
            .is_ok()
}

/// The log a request asks for: what is there now, then (when following) what the
/// container writes until it ends, the caller goes or `stopping` flips.
pub async fn stream<R: Runtime>(
    runtime: Arc<R>,
    r: LogsRequest,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) -> Result<BoxStream<LogsChunk>, Status> {
    let c = instance(runtime.as_ref(), &r).await?;
    let path = c.log_path.clone();
    let mut lines = Lines {
        since: r
            .since_seconds
            .map(|s| jiff::Timestamp::now() - jiff::SignedDuration::from_secs(s.max(0))),
        timestamps: r.timestamps,
        ..Default::default()
    };
    // What is there now: the rotated file, then the current one.
    let mut out = Vec::new();
    if let Ok((_, records)) = read_from(&rotated(&path), 0) {
        for rec in &records {
            lines.push(rec, &mut out);
        }
    }
    let mut follower = Follower::new(path.clone());
    for rec in &follower.read().unwrap_or_default() {
        lines.push(rec, &mut out);
    }
    if let Some(n) = r.tail_lines {
        let keep = usize::try_from(n.max(0)).unwrap_or(usize::MAX);
        let drop = out.len().saturating_sub(keep);
        out.drain(..drop);
    }
    let (tx, rx) = mpsc::channel(16);
    let follow = r.follow && !r.previous;
    tokio::spawn(async move {
        if !send(&tx, &out).await || !follow {
            return;
        }
        loop {
            let ended = runtime
                .container_status(&c.id)
                .await
                .map_or(true, |s| s.state == ContainerState::Exited);
            let Ok(records) = follower.read() else {
                return;
            };
            let mut out = Vec::new();
            for rec in &records {
                lines.push(rec, &mut out);
            }
            if !send(&tx, &out).await || ended {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
                _ = tx.closed() => return,
                _ = stopping.wait_for(|s| *s) => return,
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_records_join_and_old_lines_are_filtered() {
        let mut l = Lines {
            since: Some("2026-01-01T00:00:01Z".parse().expect("time")),
            timestamps: false,
            ..Default::default()
        };
        let mut out = Vec::new();
        l.push("2026-01-01T00:00:00Z stdout F too old", &mut out);
        l.push("2026-01-01T00:00:02Z stdout P hello ", &mut out);
        l.push("2026-01-01T00:00:02Z stdout F world", &mut out);
        assert_eq!(out, vec!["hello world\n".to_string()]);
    }

    #[test]
    fn a_follower_reads_the_old_file_to_its_end_across_a_rotation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("0.log");
        let rec = |t: &str| format!("2026-01-01T00:00:00Z stdout F {t}\n");
        std::fs::write(&p, rec("one")).expect("write");
        let mut f = Follower::new(p.clone());
        assert_eq!(f.read().expect("read").len(), 1);
        // Written just before the rotation, then renamed away; the new file is already
        // longer than the old offset.
        let mut old = std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .expect("open");
        std::io::Write::write_all(&mut old, rec("two").as_bytes()).expect("append");
        std::fs::rename(&p, dir.path().join("0.log.20260101-000000")).expect("rotate");
        std::fs::write(&p, rec("three") + &rec("four") + &rec("five")).expect("new file");
        let got = f.read().expect("read");
        let texts: Vec<&str> = got
            .iter()
            .map(|r| r.rsplit(' ').next().unwrap_or_default())
            .collect();
        assert_eq!(texts, ["two", "three", "four", "five"]);
        assert!(f.read().expect("read").is_empty());
    }

    #[test]
    fn incomplete_records_wait_for_their_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("0.log");
        std::fs::write(
            &p,
            "2026-01-01T00:00:00Z stdout F a\n2026-01-01T00:00:00Z stdout F b",
        )
        .expect("write");
        let (off, recs) = read_from(&p, 0).expect("read");
        assert_eq!(recs.len(), 1);
        std::fs::write(
            &p,
            "2026-01-01T00:00:00Z stdout F a\n2026-01-01T00:00:00Z stdout F b\n",
        )
        .expect("write");
        let (_, recs) = read_from(&p, off).expect("read");
        assert_eq!(recs, vec!["2026-01-01T00:00:00Z stdout F b".to_string()]);
    }
}
