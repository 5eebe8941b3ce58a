//! Container log rotation for runtimes that do not cap their logs (containerd writes a
//! container's output to its log file for as long as it runs), as the kubelet's container
//! log manager does it: every period, a running container's log that has grown past the
//! maximum size is renamed `<log>.<UTC timestamp>` and the runtime is asked to reopen the
//! log path (CRI ReopenContainerLog); rotated files beyond the maximum count are removed,
//! oldest first. A log flood therefore costs a container at most max-size × max-files of
//! disk, not the node's disk.
//!
//! Unlike the kubelet, rotated files are not compressed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::runtime::{ContainerState, Runtime};

/// How often logs are looked at (the kubelet's ContainerLogMonitorInterval).
pub const PERIOD: Duration = Duration::from_secs(10);

/// How big a container's log may grow and how many files it may keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// A log file past this many bytes is rotated.
    pub max_size: u64,
    /// Files kept per container, the one being written included (at least 2).
    pub max_files: usize,
}

impl Default for LogLimits {
    /// The kubelet's defaults: 10 MiB, 5 files.
    fn default() -> Self {
        LogLimits {
            max_size: 10 << 20,
            max_files: 5,
        }
    }
}

/// Limits that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LimitsError {
    /// A log of size 0 would be rotated on every pass.
    #[error("must be more than 0")]
    ZeroSize,
    /// Fewer than two files leaves nothing to rotate into.
    #[error("must be at least 2 (the file being written and one rotated), not {0}")]
    TooFewFiles(usize),
}

impl LimitsError {
    /// The kubelet flag that sets the value at fault.
    pub fn flag(&self) -> &'static str {
        match self {
            LimitsError::ZeroSize => "container-log-max-size",
            LimitsError::TooFewFiles(_) => "container-log-max-files",
        }
    }
}

impl LogLimits {
    /// Checks the limits.
    pub fn validate(&self) -> Result<(), LimitsError> {
        if self.max_size == 0 {
            return Err(LimitsError::ZeroSize);
        }
        if self.max_files < 2 {
            return Err(LimitsError::TooFewFiles(self.max_files));
        }
        Ok(())
    }
}

/// The rotated files of `log`, oldest first (their timestamp suffixes sort by age).
fn rotated_files(log: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (log.parent(), log.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    let prefix = format!("{name}.");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.strip_prefix(&prefix).is_some_and(|s| !s.is_empty()))
        })
        .map(|e| e.path())
        .collect();
    files.sort();
    files
}

/// Removes the oldest rotated files of `log` beyond `keep`.
fn prune(log: &Path, keep: usize) {
    let files = rotated_files(log);
    let surplus = files.len().saturating_sub(keep);
    for f in &files[..surplus] {
        if let Err(e) = std::fs::remove_file(f) {
            tracing::warn!(file = %f.display(), error = %e, "removing a rotated container log");
        }
    }
}

/// The name a log rotated at `now` gets (the kubelet's `20060102-150405`, with
/// microseconds so two rotations within a second do not collide).
fn rotated_name(log: &Path, now: jiff::Timestamp) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(format!(".{}", now.strftime("%Y%m%d-%H%M%S.%6f")));
    PathBuf::from(name)
}

/// One pass over every container: rotates the running ones' full logs, then keeps each
/// container's rotated files within the limit.
pub async fn rotate_pass<R: Runtime>(runtime: &R, limits: LogLimits) {
    let containers = match runtime.list_containers(None).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "listing containers for log rotation");
            return;
        }
    };
    for c in containers {
        let log = c.log_path.clone();
        if log.as_os_str().is_empty() {
            continue;
        }
        let size = on_disk({
            let log = log.clone();
            move || std::fs::metadata(&log).map(|m| m.len()).ok()
        })
        .await
        .flatten();
        if c.state == ContainerState::Running && size.is_none() {
            // The log path is gone (a reopen failed after a rename): without a reopen the
            // container would write to the renamed file, uncapped, for good.
            if let Err(e) = runtime.reopen_container_log(&c.id).await {
                tracing::warn!(container = %c.id, error = %e, "reopening a missing container log");
            }
            continue;
        }
        let full = size.is_some_and(|n| n > limits.max_size);
        if c.state == ContainerState::Running && full {
            let rotated = rotated_name(&log, jiff::Timestamp::now());
            let renamed = on_disk({
                let (log, rotated) = (log.clone(), rotated.clone());
                move || {
                    // Room for the file about to be rotated: the live one counts as one.
                    prune(&log, limits.max_files.saturating_sub(2));
                    std::fs::rename(&log, &rotated)
                }
            })
            .await;
            match renamed {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    tracing::warn!(container = %c.id, log = %log.display(), error = %e, "rotating a container log");
                    continue;
                }
                None => continue,
            }
            if let Err(e) = runtime.reopen_container_log(&c.id).await {
                // Put it back, or the container would go on writing to the renamed file
                // with nothing at its log path.
                tracing::warn!(container = %c.id, error = %e, "reopening a rotated container log");
                let restored = on_disk({
                    let (log, rotated) = (log.clone(), rotated.clone());
                    move || std::fs::rename(&rotated, &log)
                })
                .await;
                if !matches!(restored, Some(Ok(()))) {
                    tracing::warn!(container = %c.id, "restoring a container log failed");
                }
                continue;
            }
            tracing::debug!(container = %c.id, rotated = %rotated.display(), "container log rotated");
        }
        on_disk(move || prune(&log, limits.max_files.saturating_sub(1))).await;
    }
}

/// Runs filesystem work off the async threads: a slow disk must not stall them.
async fn on_disk<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

/// Rotates logs every [`PERIOD`] until `shutdown` flips, if the runtime needs it.
pub async fn run<R: Runtime>(
    runtime: Arc<R>,
    limits: LogLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    if runtime.rotates_logs() {
        return;
    }
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        rotate_pass(runtime.as_ref(), limits).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::fake::FakeRuntime;
    use crate::runtime::{ContainerConfig, SandboxConfig};

    #[test]
    fn limits_are_checked() {
        assert_eq!(LogLimits::default().validate(), Ok(()));
        let zero = LogLimits {
            max_size: 0,
            ..Default::default()
        };
        assert_eq!(zero.validate(), Err(LimitsError::ZeroSize));
        let one = LogLimits {
            max_files: 1,
            ..Default::default()
        };
        assert_eq!(one.validate(), Err(LimitsError::TooFewFiles(1)));
    }

    #[tokio::test]
    async fn a_full_log_is_rotated_reopened_and_old_files_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = FakeRuntime::new("127.0.0.1").without_log_rotation();
        let sb = rt
            .run_pod_sandbox(&SandboxConfig {
                name: "p".into(),
                uid: "u".into(),
                log_directory: dir.path().to_path_buf(),
                ..Default::default()
            })
            .await
            .expect("sandbox");
        let id = rt
            .create_container(
                &sb,
                &ContainerConfig {
                    name: "c".into(),
                    log_path: "c/0.log".into(),
                    ..Default::default()
                },
            )
            .await
            .expect("container");
        rt.start_container(&id).await.expect("start");
        let log = dir.path().join("c/0.log");
        std::fs::create_dir_all(dir.path().join("c")).expect("log dir");
        let limits = LogLimits {
            max_size: 100,
            max_files: 3,
        };

        // Under the limit: nothing happens.
        std::fs::write(&log, [b'x'; 100]).expect("log");
        rotate_pass(&rt, limits).await;
        assert!(rotated_files(&log).is_empty());
        assert!(rt.reopened().is_empty());

        // Over it, four times: rotated and reopened each time, two rotated files kept.
        for round in 0..4u8 {
            std::fs::write(&log, [b'a' + round; 101]).expect("log");
            rotate_pass(&rt, limits).await;
            assert_eq!(rt.reopened().len(), usize::from(round) + 1);
            assert!(log.exists(), "the runtime reopened the log path");
        }
        let kept = rotated_files(&log);
        assert_eq!(kept.len(), 2, "{kept:?}");
        let newest = std::fs::read(&kept[1]).expect("rotated");
        assert_eq!(
            newest, [b'd'; 101],
            "the newest rotations are the ones kept"
        );
        assert_eq!(std::fs::read(&kept[0]).expect("rotated"), [b'c'; 101]);
    }
}
