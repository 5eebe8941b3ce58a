//! The process runtime through its CRI-shaped interface, with the real shim
//! (`flotilla container-shim`): exit codes and reasons, CRI log files, graceful and forced
//! stops of whole process groups, refused containers, exec, and a runtime restarted over
//! the same state (an agent restart) finding its running containers as they are.

#[path = "support/inproc.rs"]
mod inproc;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agent::cri_log;
use agent::runtime::process::{NO_COMMAND, ProcessRuntime};
use agent::runtime::{
    ContainerConfig, ContainerState, ContainerStatus, Runtime, RuntimeError, SandboxConfig,
};

fn runtime(root: &Path) -> ProcessRuntime {
    ProcessRuntime::new(
        root,
        Path::new(env!("CARGO_BIN_EXE_flotilla-shim")),
        "127.0.0.1",
    )
    .expect("runtime")
}

async fn sandbox(rt: &ProcessRuntime, logs: &Path) -> String {
    rt.run_pod_sandbox(&SandboxConfig {
        name: "p".into(),
        namespace: "default".into(),
        // Unique, so that tests running at once have pod cgroups of their own.
        uid: format!("uid-{}-{}", std::process::id(), next_suffix()),
        hostname: "p".into(),
        log_directory: logs.to_path_buf(),
        labels: BTreeMap::new(),
        attempt: 0,
        ..Default::default()
    })
    .await
    .expect("sandbox")
}

fn next_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn sh(name: &str, script: &str) -> ContainerConfig {
    ContainerConfig {
        name: name.into(),
        image: "busybox:1.36".into(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        log_path: PathBuf::from(format!("{name}/0.log")),
        ..Default::default()
    }
}

async fn run(rt: &ProcessRuntime, sandbox: &str, cfg: &ContainerConfig) -> String {
    let id = rt.create_container(sandbox, cfg).await.expect("create");
    rt.start_container(&id).await.expect("start");
    id
}

async fn exited(rt: &ProcessRuntime, id: &str) -> ContainerStatus {
    inproc::wait_until(Duration::from_secs(10), "the container exits", || async {
        rt.container_status(id)
            .await
            .ok()
            .filter(|s| s.state == ContainerState::Exited)
    })
    .await
}

fn log_lines(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(cri_log::parse)
        .map(|r| (r.stream, r.text))
        .collect()
}

#[tokio::test]
async fn a_container_runs_and_its_end_is_reported_with_its_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(&dir.path().join("state"));
    let sb = sandbox(&rt, &dir.path().join("logs")).await;
    let mut cfg = sh(
        "main",
        "echo out; echo err >&2; echo $GREETING; pwd; exit 3",
    );
    cfg.env = vec![("GREETING".into(), "hello".into())];
    cfg.working_dir = Some("/tmp".into());
    let id = run(&rt, &sb, &cfg).await;
    let s = exited(&rt, &id).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (3, "Error"));
    assert!(!s.started_at.is_empty() && !s.finished_at.is_empty());
    let lines = log_lines(&s.log_path);
    for want in [
        ("stdout", "out"),
        ("stderr", "err"),
        ("stdout", "hello"),
        ("stdout", "/tmp"),
    ] {
        assert!(
            lines.contains(&(want.0.to_string(), want.1.to_string())),
            "{want:?} in {lines:?}"
        );
    }

    let ok = run(&rt, &sb, &sh("ok", "true")).await;
    let s = exited(&rt, &ok).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (0, "Completed"));
    rt.remove_pod_sandbox(&sb).await.expect("remove");
}

/// Waits until the container has printed "ready" (its traps are set by then).
async fn wait_ready(rt: &ProcessRuntime, id: &str) {
    let log = rt.container_status(id).await.expect("status").log_path;
    inproc::wait_until(Duration::from_secs(10), "the container is ready", || {
        let ready = log_lines(&log).contains(&("stdout".into(), "ready".into()));
        async move { ready.then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn stopping_asks_first_and_kills_after_the_grace_period() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(&dir.path().join("state"));
    let sb = sandbox(&rt, &dir.path().join("logs")).await;

    let polite = run(
        &rt,
        &sb,
        &sh(
            "polite",
            "trap 'echo bye; exit 0' TERM; echo ready; while true; do sleep 0.05; done",
        ),
    )
    .await;
    wait_ready(&rt, &polite).await;
    rt.stop_container(&polite, Duration::from_secs(30))
        .await
        .expect("stop");
    let s = rt.container_status(&polite).await.expect("status");
    assert_eq!((s.state, s.exit_code), (ContainerState::Exited, 0));
    assert!(log_lines(&s.log_path).contains(&("stdout".into(), "bye".into())));

    // Ignores SIGTERM, and leaves a child behind: both are killed.
    let stubborn = run(
        &rt,
        &sb,
        &sh(
            "stubborn",
            "trap '' TERM; sleep 1000 & echo ready; while true; do sleep 0.05; done",
        ),
    )
    .await;
    wait_ready(&rt, &stubborn).await;
    rt.stop_container(&stubborn, Duration::from_millis(300))
        .await
        .expect("stop");
    let s = rt.container_status(&stubborn).await.expect("status");
    assert_eq!((s.state, s.exit_code), (ContainerState::Exited, 137));
    rt.stop_pod_sandbox(&sb, Duration::from_secs(1))
        .await
        .expect("stop sandbox");
    rt.remove_pod_sandbox(&sb).await.expect("remove");
    assert!(rt.list_containers(None).await.expect("list").is_empty());
}

#[tokio::test]
async fn a_pods_containers_share_one_grace_period() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(&dir.path().join("state"));
    let sb = sandbox(&rt, &dir.path().join("logs")).await;
    let mut ids = Vec::new();
    for name in ["a", "b", "c"] {
        let id = run(
            &rt,
            &sb,
            &sh(
                name,
                "trap '' TERM; echo ready; while true; do sleep 0.05; done",
            ),
        )
        .await;
        wait_ready(&rt, &id).await;
        ids.push(id);
    }
    // Three containers that ignore SIGTERM, one second of grace: killed together after
    // it, not one after another (three seconds).
    let start = std::time::Instant::now();
    rt.stop_pod_sandbox(&sb, Duration::from_secs(1))
        .await
        .expect("stop sandbox");
    assert!(
        start.elapsed() < Duration::from_millis(2500),
        "{:?}",
        start.elapsed()
    );
    for id in &ids {
        let s = rt.container_status(id).await.expect("status");
        assert_eq!((s.state, s.exit_code), (ContainerState::Exited, 137));
    }
    rt.remove_pod_sandbox(&sb).await.expect("remove");
}

#[tokio::test]
async fn containers_that_cannot_run_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(&dir.path().join("state"));
    let sb = sandbox(&rt, &dir.path().join("logs")).await;
    let mut no_command = sh("none", "");
    no_command.command.clear();
    match rt.create_container(&sb, &no_command).await {
        Err(RuntimeError::Invalid(m)) => assert_eq!(m, NO_COMMAND),
        other => panic!("{other:?}"),
    }
    let mut missing = sh("missing", "");
    missing.command = vec!["/nonexistent/program".into()];
    let id = rt.create_container(&sb, &missing).await.expect("create");
    // Refused by the shim (StartFailed), or by the step that joins the cgroup just after
    // the process began: either way the status says why.
    match rt.start_container(&id).await {
        Ok(()) => {}
        Err(RuntimeError::StartFailed(m)) => assert!(m.contains("/nonexistent/program"), "{m}"),
        other => panic!("{other:?}"),
    }
    let s = exited(&rt, &id).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (128, "StartError"));
    assert!(s.message.contains("/nonexistent/program"), "{}", s.message);
    rt.remove_pod_sandbox(&sb).await.expect("remove");
}

#[tokio::test]
async fn a_restarted_runtime_finds_its_containers_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let (sb, id) = {
        let rt = runtime(&state);
        let sb = sandbox(&rt, &dir.path().join("logs")).await;
        let id = run(&rt, &sb, &sh("long", "while true; do sleep 0.05; done")).await;
        (sb, id)
    };
    // As if the agent had restarted: a new runtime over the same state.
    let rt = runtime(&state);
    let s = rt.container_status(&id).await.expect("status");
    assert_eq!(s.state, ContainerState::Running);
    assert_eq!(rt.list_pod_sandboxes().await.expect("list")[0].id, sb);
    let out = rt
        .exec_sync(
            &id,
            &["sh".into(), "-c".into(), "echo hi; exit 4".into()],
            Duration::from_secs(5),
        )
        .await
        .expect("exec");
    assert_eq!(
        (out.exit_code, out.stdout.as_slice()),
        (4, b"hi\n".as_slice())
    );
    rt.stop_container(&id, Duration::from_secs(1))
        .await
        .expect("stop");
    assert_eq!(
        rt.container_status(&id).await.expect("status").state,
        ContainerState::Exited
    );
    rt.remove_pod_sandbox(&sb).await.expect("remove");
}

/// Whether process `pid` still runs (a zombie no longer does).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // The state follows the parenthesised command name.
            let state = s.rsplit_once(')')?.1.trim_start().chars().next()?;
            Some(state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

/// Waits until the process whose pid an exec'd script wrote to `pidfile` is killed.
async fn background_child_killed(pidfile: &Path) {
    let pid: i32 = std::fs::read_to_string(pidfile)
        .expect("the script wrote its child's pid")
        .trim()
        .parse()
        .expect("a pid");
    inproc::wait_until(
        Duration::from_secs(5),
        "the command's background child is killed",
        || async move { (!alive(pid)).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn a_timed_out_exec_stops_everything_it_started() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(&dir.path().join("state"));
    let sb = sandbox(&rt, &dir.path().join("logs")).await;
    let id = run(&rt, &sb, &sh("long", "while true; do sleep 0.05; done")).await;
    let pidfile = dir.path().join("background.pid");
    let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
    let e = rt
        .exec_sync(
            &id,
            &["sh".into(), "-c".into(), script],
            Duration::from_millis(500),
        )
        .await
        .expect_err("times out");
    assert!(matches!(e, RuntimeError::TimedOut(_)), "{e:?}");
    background_child_killed(&pidfile).await;
    rt.stop_container(&id, Duration::ZERO).await.expect("stop");
    rt.remove_pod_sandbox(&sb).await.expect("remove");
}

#[tokio::test]
async fn an_exec_writing_without_end_is_stopped_at_the_output_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(&dir.path().join("state"));
    let sb = sandbox(&rt, &dir.path().join("logs")).await;
    let id = run(&rt, &sb, &sh("long", "while true; do sleep 0.05; done")).await;
    let pidfile = dir.path().join("background.pid");
    let script = format!("sleep 30 & echo $! > {}; exec yes", pidfile.display());
    let started = std::time::Instant::now();
    let e = rt
        .exec_sync(
            &id,
            &["sh".into(), "-c".into(), script],
            Duration::from_secs(60),
        )
        .await
        .expect_err("too much output");
    assert!(matches!(e, RuntimeError::OutputTooLarge(_)), "{e:?}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "stopped after {:?}, not at the limit",
        started.elapsed()
    );
    background_child_killed(&pidfile).await;
    rt.stop_container(&id, Duration::ZERO).await.expect("stop");
    rt.remove_pod_sandbox(&sb).await.expect("remove");
}

/// Cgroups need root: CI runs as root and sets FLOTILLA_REQUIRE_ROOT_TESTS, so there the
/// test fails rather than skips when they are missing.
fn cgroups_or_skip(rt: &ProcessRuntime) -> bool {
    if rt.cgroups().is_some() {
        return true;
    }
    assert!(
        std::env::var_os("FLOTILLA_REQUIRE_ROOT_TESTS").is_none(),
        "cgroups are not usable, but FLOTILLA_REQUIRE_ROOT_TESTS is set"
    );
    eprintln!("skipped: cgroups are not usable (run as root)");
    false
}

#[tokio::test]
async fn limits_confine_the_container_and_the_oom_killer_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(&dir.path().join("state"));
    if !cgroups_or_skip(&rt) {
        return;
    }
    let sb = sandbox(&rt, &dir.path().join("logs")).await;
    let limits = agent::runtime::LinuxResources {
        cpu_shares: 512,
        cpu_quota: 50_000,
        cpu_period: 100_000,
        memory_limit: 20 << 20,
        pids_limit: 64,
    };

    let mut sleeper = sh("limited", "while true; do sleep 0.05; done");
    sleeper.resources = limits.clone();
    let id = run(&rt, &sb, &sleeper).await;
    let uid = rt
        .pod_sandbox_status(&sb)
        .await
        .expect("sandbox")
        .config
        .uid;
    let cg = |ctrl: &str, file: &str| {
        std::fs::read_to_string(format!(
            "/sys/fs/cgroup/{ctrl}/flotilla/pod{uid}/{id}/{file}"
        ))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
    };
    match agent::cgroup::detect() {
        Some(agent::cgroup::Version::V1) => {
            assert_eq!(
                cg("memory", "memory.limit_in_bytes"),
                (20 << 20).to_string()
            );
            assert_eq!(cg("cpu", "cpu.cfs_quota_us"), "50000");
            assert_eq!(cg("cpu", "cpu.shares"), "512");
            assert_eq!(cg("pids", "pids.max"), "64");
            let pid = rt.container_status(&id).await.expect("status");
            assert_eq!(pid.state, ContainerState::Running);
            let procs = cg("memory", "cgroup.procs");
            assert!(!procs.is_empty(), "the container's process is inside");
        }
        _ => {
            let v2 = std::fs::read_to_string(format!(
                "/sys/fs/cgroup/flotilla/pod{uid}/{id}/memory.max"
            ))
            .unwrap_or_default();
            assert_eq!(v2.trim(), (20 << 20).to_string());
        }
    }
    let stats = rt.container_stats(&id).await.expect("stats");
    assert!(stats.memory_working_set_bytes > 0, "{stats:?}");
    assert!(stats.memory_working_set_bytes < 20 << 20, "{stats:?}");
    rt.stop_container(&id, Duration::from_secs(1))
        .await
        .expect("stop");

    // dd's 100 MiB buffer does not fit in 20 MiB.
    let mut hog = sh("hog", "dd if=/dev/zero of=/dev/null bs=100M count=1");
    hog.resources = limits;
    let id = run(&rt, &sb, &hog).await;
    let s = exited(&rt, &id).await;
    assert_eq!(
        (s.reason.as_str(), s.exit_code),
        ("OOMKilled", 137),
        "{s:?}"
    );
    rt.remove_pod_sandbox(&sb).await.expect("remove");
    assert!(
        !Path::new(&format!("/sys/fs/cgroup/memory/flotilla/pod{uid}")).exists(),
        "the pod's cgroup is removed with it"
    );
}
