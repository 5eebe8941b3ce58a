//! The agent's CRI runtime against a real containerd (started by the test, with its own
//! root, state and CNI bridge): a pod sandbox on a CNI address, a busybox container whose
//! log, exec and stats work, its memory limit in the cgroup, an OOM kill reported as
//! OOMKilled, a graceful stop, the image service (status, list with the sandbox image
//! pinned, the images containers use, the image filesystem, removal), and everything
//! removed afterwards — cgroups included.

#[path = "support/containerd.rs"]
mod containerd;
#[path = "support/inproc.rs"]
mod inproc;

use std::path::Path;
use std::time::Duration;

use agent::runtime::cri::CriRuntime;
use agent::runtime::{
    ContainerConfig, ContainerState, LinuxResources, Runtime, SandboxConfig, SandboxState,
};
use containerd::Containerd;

fn sandbox(name: &str, logs: &Path) -> SandboxConfig {
    SandboxConfig {
        name: name.into(),
        namespace: "default".into(),
        uid: format!("uid-{name}"),
        attempt: 0,
        hostname: name.into(),
        log_directory: logs.join(name),
        labels: [("app".to_string(), name.to_string())].into(),
    }
}

fn busybox(name: &str, script: &str, memory_limit: i64) -> ContainerConfig {
    ContainerConfig {
        name: name.into(),
        image: containerd::BUSYBOX.into(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        log_path: format!("{name}/0.log").into(),
        resources: LinuxResources {
            cpu_shares: 256,
            memory_limit,
            ..Default::default()
        },
        ..Default::default()
    }
}

async fn until_exited(rt: &CriRuntime, id: &str) -> agent::runtime::ContainerStatus {
    inproc::wait_until(
        Duration::from_secs(30),
        "the container exits",
        || async move {
            rt.container_status(id)
                .await
                .ok()
                .filter(|s| s.state == ContainerState::Exited)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_runs_pods_through_cri() {
    if !containerd::available() {
        eprintln!("skipped: containerd is not installed (or not root)");
        return;
    }
    let cd = Containerd::start("flottest0", "10.244.250.0/24", "10.244.250.1").await;
    let rt = CriRuntime::connect(&cd.socket, "/flotilla-test")
        .await
        .expect("connect");
    assert!(
        rt.version().starts_with("containerd://"),
        "{}",
        rt.version()
    );
    let logs = cd.dir.path().join("pods");

    // A sandbox gets an address from the CNI bridge's subnet.
    let sb_cfg = sandbox("web", &logs);
    let sb = rt.run_pod_sandbox(&sb_cfg).await.expect("sandbox");
    let status = rt.pod_sandbox_status(&sb).await.expect("sandbox status");
    assert_eq!(status.state, SandboxState::Ready);
    assert!(status.ip.starts_with("10.244.250."), "pod IP {}", status.ip);
    assert_eq!(
        status.config, sb_cfg,
        "the agent's config comes back from the runtime"
    );

    // A container runs, logs, answers exec and reports stats; its limit is in its cgroup.
    let cfg = busybox(
        "main",
        "echo hello from busybox; trap 'exit 0' TERM; while true; do sleep 1; done",
        64 << 20,
    );
    let id = rt.create_container(&sb, &cfg).await.expect("create");
    rt.start_container(&id).await.expect("start");
    let running = rt.container_status(&id).await.expect("status");
    assert_eq!(running.state, ContainerState::Running);
    assert_eq!(
        running.config, cfg,
        "the container's config comes back from the runtime"
    );
    let log = inproc::wait_until(Duration::from_secs(10), "the log has the greeting", || {
        let path = sb_cfg.log_directory.join("main/0.log");
        async move {
            std::fs::read_to_string(path)
                .ok()
                .filter(|l| l.contains("hello from busybox"))
        }
    })
    .await;
    assert!(
        log.contains(" stdout F hello from busybox"),
        "CRI log format: {log}"
    );
    let out = rt
        .exec_sync(
            &id,
            &[
                "cat".into(),
                "/sys/fs/cgroup/memory/memory.limit_in_bytes".into(),
            ],
            Duration::from_secs(5),
        )
        .await
        .expect("exec");
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        (64u64 << 20).to_string()
    );
    let stats = rt.container_stats(&id).await.expect("stats");
    assert!(stats.memory_working_set_bytes > 0, "{stats:?}");
    assert_eq!(rt.list_containers(Some(&sb)).await.expect("list").len(), 1);
    assert!(
        rt.list_pod_sandboxes()
            .await
            .expect("list")
            .iter()
            .any(|s| s.id == sb)
    );

    // Stopped with a grace period, it exits on its TERM trap.
    rt.stop_container(&id, Duration::from_secs(5))
        .await
        .expect("stop");
    let stopped = until_exited(&rt, &id).await;
    assert_eq!(stopped.exit_code, 0, "{stopped:?}");

    // A container over its memory limit is OOM-killed, and says so.
    let hog = busybox("hog", "tail /dev/zero", 16 << 20);
    let hog_id = rt.create_container(&sb, &hog).await.expect("create");
    rt.start_container(&hog_id).await.expect("start");
    let oom = until_exited(&rt, &hog_id).await;
    assert_eq!(
        (oom.exit_code, oom.reason.as_str()),
        (137, "OOMKilled"),
        "{oom:?}"
    );

    // A missing image fails to create with the runtime's reason.
    let missing = ContainerConfig {
        image: "flotilla.local/nonexistent:1".into(),
        ..busybox("missing", "true", 0)
    };
    assert!(rt.create_container(&sb, &missing).await.is_err());

    // Images: present ones are found, the sandbox image is pinned, the image
    // filesystem is reported, and an unused image can be removed.
    let busybox_image = rt
        .image_status(containerd::BUSYBOX)
        .await
        .expect("image status")
        .expect("busybox is present");
    assert!(
        !busybox_image.pinned && busybox_image.size > 0,
        "{busybox_image:?}"
    );
    assert_eq!(
        rt.image_status("flotilla.local/nonexistent:1")
            .await
            .expect("image status"),
        None
    );
    let used = rt.container_images().await.expect("container images");
    assert!(
        used.iter()
            .any(|u| *u == busybox_image.id || u == containerd::BUSYBOX),
        "the containers' image is in use: {used:?}"
    );
    let images = rt.list_images().await.expect("list images");
    let pause = images
        .iter()
        .find(|i| i.repo_tags.iter().any(|t| t == containerd::PAUSE))
        .expect("the pause image is listed");
    assert!(pause.pinned, "the sandbox image is pinned: {pause:?}");
    let fs = rt
        .image_fs_usage()
        .await
        .expect("image fs")
        .expect("containerd reports its image filesystem");
    // (used_bytes is containerd's periodic measurement: 0 until its first.)
    assert!(fs.mountpoint.starts_with(cd.dir.path()), "{fs:?}");
    rt.remove_image("flotilla.local/http:1")
        .await
        .expect("remove image");
    assert_eq!(
        rt.image_status("flotilla.local/http:1")
            .await
            .expect("image status"),
        None
    );
    rt.remove_image("flotilla.local/http:1")
        .await
        .expect("removing twice is fine");

    // Everything goes: containers, sandbox, and the pod's cgroup.
    rt.stop_pod_sandbox(&sb, Duration::from_secs(2))
        .await
        .expect("stop sandbox");
    assert_eq!(
        rt.pod_sandbox_status(&sb).await.expect("status").state,
        SandboxState::NotReady
    );
    rt.remove_pod_sandbox(&sb).await.expect("remove sandbox");
    assert!(rt.pod_sandbox_status(&sb).await.is_err(), "removed");
    assert!(
        !Path::new("/sys/fs/cgroup/memory/flotilla-test/poduid-web").exists(),
        "the pod's cgroup is removed"
    );
    drop(cd);
}
