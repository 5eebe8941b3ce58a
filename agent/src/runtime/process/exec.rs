//! A command run for the process runtime's `exec_sync`: in a process group of its own, its
//! output read as it comes and bounded, and the whole group killed when it outlives its
//! timeout, writes more than the caller takes, or the caller goes away.

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use crate::runtime::{ExecResult, RuntimeError};

/// How much room each read of a pipe is given.
const READ_CHUNK: usize = 64 * 1024;
/// How long a command killed for its output gets to be reaped before the error is
/// returned anyway (SIGKILL cannot be caught, but a process stuck in the kernel ends late).
const REAP_WAIT: Duration = Duration::from_secs(10);

/// Kills an exec'd command's process group when dropped (unless emptied first).
struct GroupKiller(Option<i32>);

impl Drop for GroupKiller {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }
}

/// Reads `pipe` to its end, counting what it yields into `total` (shared with the
/// command's other pipe); fails as soon as `total` passes `limit`, so that what is held
/// never grows much beyond it.
async fn drain(
    mut pipe: impl AsyncRead + Unpin,
    total: &AtomicUsize,
    limit: usize,
) -> Result<Vec<u8>, RuntimeError> {
    let mut kept = Vec::new();
    loop {
        kept.reserve(READ_CHUNK);
        let n = pipe
            .read_buf(&mut kept)
            .await
            .map_err(|e| RuntimeError::Io(format!("reading the command's output: {e}")))?;
        if n == 0 {
            return Ok(kept);
        }
        let written = total.fetch_add(n, Ordering::Relaxed) + n;
        if written > limit {
            return Err(RuntimeError::OutputTooLarge(written));
        }
    }
}

/// Runs `cmd` (its program, arguments, environment and directory set) without stdin, for
/// at most `timeout`, returning its exit code and output; fails with
/// [`RuntimeError::OutputTooLarge`] once stdout and stderr together pass `max_output`.
pub(super) async fn run(
    mut cmd: Command,
    timeout: Duration,
    max_output: usize,
) -> Result<ExecResult, RuntimeError> {
    let program = cmd.as_std().get_program().to_owned();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so that a timeout or a caller who goes away stops what the
        // command started too (`sh -c '…'`), not only the command.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| RuntimeError::StartFailed(format!("{program:?}: {e}")))?;
    let mut group = GroupKiller(child.id().and_then(|p| i32::try_from(p).ok()));
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(RuntimeError::Io(format!(
            "{program:?}: its output is not piped"
        )));
    };
    let total = AtomicUsize::new(0);
    let finished = async {
        let (stdout, stderr) = tokio::try_join!(
            drain(stdout, &total, max_output),
            drain(stderr, &total, max_output)
        )?;
        let status = child
            .wait()
            .await
            .map_err(|e| RuntimeError::Io(format!("waiting for {program:?}: {e}")))?;
        Ok::<_, RuntimeError>((status, stdout, stderr))
    };
    let (status, stdout, stderr) = match tokio::time::timeout(timeout, finished).await {
        Err(_) => return Err(RuntimeError::TimedOut(timeout)),
        Ok(Err(e @ RuntimeError::OutputTooLarge(_))) => {
            // Killed now, not at the timeout, and reaped: a command writing without end
            // is gone by the time the caller hears why.
            drop(group);
            let _ = tokio::time::timeout(REAP_WAIT, child.wait()).await;
            return Err(e);
        }
        Ok(Err(e)) => return Err(e),
        Ok(Ok(done)) => done,
    };
    // It ended by itself: what it left running in the background may stay, as in a
    // container.
    group.0 = None;
    Ok(ExecResult {
        exit_code: status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
        stdout,
        stderr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_proto::exec::MAX_OUTPUT;
    use std::path::Path;

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(script);
        cmd
    }

    #[tokio::test]
    async fn output_and_exit_code_come_back_apart() {
        let out = run(
            sh("echo out; echo err >&2; exit 3"),
            Duration::from_secs(10),
            MAX_OUTPUT,
        )
        .await
        .expect("runs");
        assert_eq!(
            (out.exit_code, out.stdout.as_slice(), out.stderr.as_slice()),
            (3, b"out\n".as_slice(), b"err\n".as_slice())
        );
    }

    #[tokio::test]
    async fn output_up_to_the_limit_is_returned_whole() {
        // Both streams count: 6 + 4 bytes are within 10.
        let out = run(
            sh("printf 123456; printf abcd >&2"),
            Duration::from_secs(10),
            10,
        )
        .await
        .expect("within the limit");
        assert_eq!((out.stdout.len(), out.stderr.len()), (6, 4));
        let e = run(
            sh("printf 123456; printf abcde >&2"),
            Duration::from_secs(10),
            10,
        )
        .await
        .expect_err("one byte over");
        assert!(matches!(e, RuntimeError::OutputTooLarge(11)), "{e:?}");
    }

    #[tokio::test]
    async fn endless_output_is_stopped_at_the_limit_not_the_timeout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("yes.pid");
        let script = format!("echo $$ > {}; exec yes", pidfile.display());
        let started = std::time::Instant::now();
        let e = run(sh(&script), Duration::from_secs(60), MAX_OUTPUT)
            .await
            .expect_err("too much output");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "returned after {:?}",
            started.elapsed()
        );
        match e {
            RuntimeError::OutputTooLarge(n) => assert!(n > MAX_OUTPUT, "{n}"),
            other => panic!("expected OutputTooLarge, got {other:?}"),
        }
        // Killed and reaped before the error came back: not even a zombie is left.
        let pid = std::fs::read_to_string(&pidfile).expect("the script wrote its pid");
        let proc = Path::new("/proc").join(pid.trim());
        assert!(!proc.exists(), "{} is still there", proc.display());
    }
}
