//! The container shim (the `flotilla-shim` binary): one small process per container that starts the container's
//! process, copies its output into the CRI log file, waits for it, and records how it
//! ended. It runs in its own process group, so it outlives the agent: an agent restarted
//! at any moment finds every container's state in its directory (`started.json`,
//! `exit.json`) and re-adopts it without starting anything twice. containerd's shims play
//! the same part.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::cgroup::{Cgroup, Version};
use crate::cri_log::Writer;
use crate::runtime::LinuxResources;

/// The PATH a container gets when its environment sets none (containerd's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the shim runs, written by the runtime before it starts the shim.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ShimConfig {
    /// The command and its arguments.
    pub argv: Vec<String>,
    /// The environment, in order.
    pub env: Vec<(String, String)>,
    /// The working directory.
    pub working_dir: Option<String>,
    /// The CRI log file.
    pub log_path: PathBuf,
    /// Rotate the log past this size (0: never).
    pub max_log_bytes: u64,
    /// Rotated files to keep.
    pub max_log_files: usize,
    /// The cgroup to confine the process in, when the host allows it.
    #[serde(default)]
    pub cgroup: Option<CgroupSpec>,
}

/// A container's cgroup: where, and its limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CgroupSpec {
    /// The host's layout.
    pub version: Version,
    /// Relative to each hierarchy's root (`flotilla/pod<uid>/<container>`).
    pub path: String,
    /// The limits.
    pub resources: LinuxResources,
}

/// Why the program could not be executed inside its cgroup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExecError {
    /// The error.
    pub message: String,
}

/// The step between the shim and the container's program: joins the cgroup, then
/// becomes the program (same pid), so the program never runs outside its limits. Returns
/// only when it cannot: the reason is left in `state/exec-error.json`.
pub fn exec_in_cgroup(state: &Path, version: Version, path: &str, argv: &[String]) -> u8 {
    let fail = |message: String| {
        let _ = write_state(state, "exec-error.json", &ExecError { message });
        128
    };
    if let Err(e) = Cgroup::at(version, path).join_self() {
        return fail(format!("joining the container's cgroup: {e}"));
    }
    let Some((program, args)) = argv.split_first() else {
        return fail("no command to run".into());
    };
    let e = Command::new(program).args(args).exec();
    fail(format!("failed to start {program:?}: {e}"))
}

/// The process started.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Started {
    /// Its pid (and process group).
    pub pid: u32,
    /// When (RFC 3339).
    pub started_at: String,
}

/// The process ended (or never started).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Exited {
    /// The exit code; 128 + n for a process killed by signal n.
    pub exit_code: i32,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// Kubernetes' reason: Completed, Error, StartError.
    pub reason: String,
    /// Details (why it could not start).
    pub message: String,
    /// When (RFC 3339).
    pub finished_at: String,
}

/// The shim cannot do its job.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// The state directory cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// config.json is malformed.
    #[error("{path}: {source}")]
    Config {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// Writes `value` as JSON to `dir/name` atomically (a reader never sees half a file).
pub fn write_state<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<(), ShimError> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let io = |source| ShimError::Io {
        path: path.display().to_string(),
        source,
    };
    let bytes = serde_json::to_vec(value).map_err(|source| ShimError::Config {
        path: path.display().to_string(),
        source,
    })?;
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)
}

/// Reads `dir/name`, None if it does not exist.
pub fn read_state<T: for<'de> Deserialize<'de>>(
    dir: &Path,
    name: &str,
) -> Result<Option<T>, ShimError> {
    let path = dir.join(name);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| ShimError::Config {
                path: path.display().to_string(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ShimError::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

fn pump(mut from: impl Read, stream: &'static str, log: Arc<Mutex<Writer>>) {
    let mut reader = BufReader::new(&mut from);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let complete = line.last() == Some(&b'\n');
                if complete {
                    line.pop();
                }
                let mut w = log.lock().unwrap_or_else(|p| p.into_inner());
                // A full disk must not stop the container: its output is dropped.
                let _ = w.line(stream, &line, complete);
            }
        }
    }
}

/// Runs the container described by `dir/config.json` to its end; records `started.json`
/// and `exit.json` in `dir`.
pub fn run(dir: &Path) -> Result<Exited, ShimError> {
    let cfg: ShimConfig = read_state(dir, "config.json")?.ok_or_else(|| ShimError::Io {
        path: dir.join("config.json").display().to_string(),
        source: std::io::ErrorKind::NotFound.into(),
    })?;
    let log =
        Writer::open(&cfg.log_path, cfg.max_log_bytes, cfg.max_log_files).map_err(|source| {
            ShimError::Io {
                path: cfg.log_path.display().to_string(),
                source,
            }
        })?;
    let log = Arc::new(Mutex::new(log));
    let Some((program, args)) = cfg.argv.split_first() else {
        let exited = Exited {
            exit_code: 128,
            signal: None,
            reason: "StartError".into(),
            message: "no command to run".into(),
            finished_at: now(),
        };
        write_state(dir, "exit.json", &exited)?;
        return Ok(exited);
    };
    let cgroup = match &cfg.cgroup {
        None => None,
        Some(spec) => {
            let cg = Cgroup::at(spec.version, &spec.path);
            if let Err(e) = cg.create(&spec.resources) {
                let exited = Exited {
                    exit_code: 128,
                    signal: None,
                    reason: "StartError".into(),
                    message: format!("creating the container's cgroup: {e}"),
                    finished_at: now(),
                };
                write_state(dir, "exit.json", &exited)?;
                return Ok(exited);
            }
            Some((cg, spec))
        }
    };
    let mut cmd = match &cgroup {
        None => {
            let mut c = Command::new(program);
            c.args(args);
            c
        }
        Some((_, spec)) => {
            let me = std::env::current_exe().map_err(|source| ShimError::Io {
                path: "the shim's own binary".into(),
                source,
            })?;
            let mut c = Command::new(me);
            c.arg("cgroup-exec")
                .arg("--state")
                .arg(dir)
                .arg("--version")
                .arg(match spec.version {
                    Version::V1 => "v1",
                    Version::V2 => "v2",
                })
                .arg("--path")
                .arg(&spec.path)
                .arg("--")
                .args(&cfg.argv);
            c
        }
    };
    cmd.env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group: stopping the container signals everything it started.
        .process_group(0);
    if !cfg.env.iter().any(|(k, _)| k == "PATH") {
        cmd.env("PATH", DEFAULT_PATH);
    }
    cmd.envs(cfg.env.iter().map(|(k, v)| (k, v)));
    if let Some(wd) = cfg.working_dir.as_deref().filter(|w| !w.is_empty()) {
        cmd.current_dir(wd);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let exited = Exited {
                exit_code: 128,
                signal: None,
                reason: "StartError".into(),
                message: format!("failed to start {program:?}: {e}"),
                finished_at: now(),
            };
            write_state(dir, "exit.json", &exited)?;
            return Ok(exited);
        }
    };
    if let Some((cg, _)) = &cgroup {
        // Running means confined: wait until the process has joined its cgroup (or
        // failed to), which takes the exec step a few milliseconds.
        let pid = child.id().to_string();
        let procs = cg.dirs()[0].join("cgroup.procs");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < deadline
            && !std::fs::read_to_string(&procs).is_ok_and(|p| p.lines().any(|l| l == pid))
            && !dir.join("exec-error.json").exists()
            && matches!(child.try_wait(), Ok(None))
        {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    write_state(
        dir,
        "started.json",
        &Started {
            pid: child.id(),
            started_at: now(),
        },
    )?;
    let mut pumps = Vec::new();
    if let Some(out) = child.stdout.take() {
        let log = log.clone();
        pumps.push(std::thread::spawn(move || pump(out, "stdout", log)));
    }
    if let Some(err) = child.stderr.take() {
        let log = log.clone();
        pumps.push(std::thread::spawn(move || pump(err, "stderr", log)));
    }
    let status = child.wait().map_err(|source| ShimError::Io {
        path: program.clone(),
        source,
    })?;
    // A container ends with its main process: whatever it left running goes too (as
    // when a pid namespace's init exits), which also closes the output pipes.
    if let Ok(pgid) = i32::try_from(child.id()) {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
    for p in pumps {
        let _ = p.join();
    }
    let signal = status.signal();
    let exit_code = status.code().unwrap_or_else(|| 128 + signal.unwrap_or(0));
    let exec_error: Option<ExecError> = read_state(dir, "exec-error.json")?;
    let oom = cgroup.as_ref().is_some_and(|(cg, _)| cg.oom_killed());
    let (reason, message) = match (&exec_error, oom) {
        (Some(e), _) => ("StartError", e.message.clone()),
        (None, true) => ("OOMKilled", String::new()),
        (None, false) if exit_code == 0 => ("Completed", String::new()),
        (None, false) => ("Error", String::new()),
    };
    if let Some((cg, _)) = &cgroup
        && let Err(e) = cg.remove()
    {
        eprintln!("removing the container's cgroup: {e}");
    }
    let exited = Exited {
        exit_code: if exec_error.is_some() { 128 } else { exit_code },
        signal,
        reason: reason.into(),
        message,
        finished_at: now(),
    };
    write_state(dir, "exit.json", &exited)?;
    Ok(exited)
}
