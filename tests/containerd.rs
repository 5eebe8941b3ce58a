//! The agent's CRI runtime against a real containerd (started by the test, with its own
//! root, state and CNI bridge): a pod sandbox on a CNI address, a busybox container whose
//! log (rotated, and reopened by containerd), exec and stats work, its memory limit in the cgroup, an OOM kill reported as
//! OOMKilled, a graceful stop, the image service (status, list with the sandbox image
//! pinned, the images containers use, the image filesystem, removal), and everything
//! removed afterwards — cgroups included.
//! Then a whole cluster on it (API server, scheduler, controllers, an agent on the CRI
//! runtime writing its own CNI conflist): a Deployment of the HTTP image answering on its
//! pod IPs, limits in the pod's cgroups, CrashLoopBackOff, OOMKilled and graceful
//! deletion as the API reports them, an agent restart that adopts running pods without
//! restarting them, and no sandbox, cgroup or log left once the pods are deleted.

#[path = "support/api.rs"]
mod api;
#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/containerd.rs"]
mod containerd;
#[path = "support/http.rs"]
mod http;
#[path = "support/inproc.rs"]
mod inproc;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use agent::cni::PodCidr;
use agent::run::{AgentConfig, PodNetwork};
use agent::runtime::cri::CriRuntime;
use agent::runtime::{
    ContainerConfig, ContainerState, LinuxResources, Runtime, SandboxConfig, SandboxState,
};
use api::{ApiHarness, StoreSetup};
use containerd::Containerd;
use flotilla_client::{Client, DeleteParams, ExecParams, ListParams};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use tokio::sync::watch;

fn sandbox(name: &str, logs: &Path) -> SandboxConfig {
    SandboxConfig {
        name: name.into(),
        namespace: "default".into(),
        uid: format!("uid-{name}"),
        attempt: 0,
        hostname: name.into(),
        log_directory: logs.join(name),
        labels: [("app".to_string(), name.to_string())].into(),
        ..Default::default()
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
    let cd = Containerd::start("flottest0", "10.244.250.0/24").await;
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
    // A full log is rotated: renamed aside, and containerd reopens the log path, where the
    // container's later output lands.
    let limits = agent::log_rotation::LogLimits {
        max_size: 10,
        max_files: 2,
    };
    agent::log_rotation::rotate_pass(&rt, limits).await;
    let log_dir = sb_cfg.log_directory.join("main");
    let rotated: Vec<_> = std::fs::read_dir(&log_dir)
        .expect("log dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("0.log."))
        .map(|e| e.path())
        .collect();
    assert_eq!(rotated.len(), 1, "{rotated:?}");
    let old = std::fs::read_to_string(&rotated[0]).expect("rotated log");
    assert!(old.contains("hello from busybox"), "{old}");
    let said = rt
        .exec_sync(
            &id,
            &[
                "sh".into(),
                "-c".into(),
                "echo after rotation > /proc/1/fd/1".into(),
            ],
            Duration::from_secs(5),
        )
        .await
        .expect("exec");
    assert_eq!(
        said.exit_code,
        0,
        "{}",
        String::from_utf8_lossy(&said.stderr)
    );
    inproc::wait_until(
        Duration::from_secs(10),
        "output after rotation lands in the new log",
        || {
            let path = log_dir.join("0.log");
            async move {
                std::fs::read_to_string(path)
                    .ok()
                    .filter(|l| l.contains("after rotation") && !l.contains("hello from busybox"))
            }
        },
    )
    .await;
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
    // An exec over its timeout ends as timed out.
    let slow = rt
        .exec_sync(&id, &["sleep".into(), "10".into()], Duration::from_secs(1))
        .await;
    assert!(
        matches!(slow, Err(agent::runtime::RuntimeError::TimedOut(_))),
        "{slow:?}"
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

/// The cluster test's agent: node `worker-1` on the CRI runtime, its pod network on
/// `bridge` and `cidr`, written into containerd's CNI directory.
fn cluster_agent(cd: &Containerd, data: &Path, bridge: &str, cidr: &str) -> AgentConfig {
    AgentConfig {
        node_name: "worker-1".into(),
        host_ip: "127.0.0.1".into(),
        data_dir: data.to_path_buf(),
        heartbeat_interval: Duration::from_secs(1),
        listen: "127.0.0.1:0".parse().expect("address"),
        // The test images must stay whatever the disk's fill: collection off.
        image_gc: agent::image_gc::ImageGcPolicy::with_thresholds(100, 99).expect("policy"),
        pod_network: Some(PodNetwork {
            cidr: PodCidr::parse(cidr).expect("cidr"),
            cni_conf_dir: cd.cni_conf_dir(),
            bridge: bridge.into(),
        }),
        ..Default::default()
    }
}

/// GET `path` from a pod's port 8080.
async fn http_get(ip: &str, path: &str) -> Option<String> {
    http::get(ip, 8080, path).await
}

async fn pods(client: &Client, selector: &str) -> Vec<Pod> {
    client
        .api::<Pod>("default")
        .list(&ListParams {
            label_selector: selector.into(),
            ..Default::default()
        })
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

fn container_state(p: &Pod) -> Option<k8s_openapi::api::core::v1::ContainerStatus> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()
        .cloned()
}

/// Waits for a condition on one pod's first container status.
async fn until_pod<T>(client: &Client, name: &str, what: &str, f: impl Fn(&Pod) -> Option<T>) -> T {
    let api = client.api::<Pod>("default");
    let f = &f;
    let api = &api;
    inproc::wait_until(Duration::from_secs(90), what, || async move {
        api.get(name).await.ok().as_ref().and_then(f)
    })
    .await
}

fn spawn_agent(
    client: &Client,
    rt: Arc<CriRuntime>,
    cfg: AgentConfig,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (stop, rx) = watch::channel(false);
    let client = client.clone();
    let task = tokio::spawn(async move {
        agent::run::run(client, rt, cfg, rx)
            .await
            .expect("the agent runs");
    });
    (stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_runs_pods_on_containerd() {
    if !containerd::available() {
        eprintln!("skipped: containerd is not installed (or not root)");
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_test_writer()
        .try_init();
    // containerd starts without a network; the agent's --pod-cidr brings it.
    let cd = Containerd::start_without_network().await;
    let h = ApiHarness::start(StoreSetup::Embedded, |_| {}).await;
    let client = h.admin_client();
    let dir = tempfile::tempdir().expect("tempdir");
    // Per run, so that what a failed earlier run left cannot be mistaken for this one's.
    let cgroups = &format!("/flotilla-test-cluster-{}", std::process::id());
    let rt = Arc::new(
        CriRuntime::connect(&cd.socket, cgroups)
            .await
            .expect("connect"),
    );
    containerd::remove_link("flottest1");
    let cfg = cluster_agent(&cd, dir.path(), "flottest1", "10.244.251.0/24");
    let (stop_all, stop_rx) = watch::channel(false);
    let mut tasks = vec![
        tokio::spawn(scheduler::run(
            client.clone(),
            Default::default(),
            stop_rx.clone(),
        )),
        tokio::spawn(controller::manager::run(
            client.clone(),
            "manager-1".into(),
            Default::default(),
            stop_rx.clone(),
        )),
    ];
    let (stop_agent, agent_task) = spawn_agent(&client, rt.clone(), cfg.clone());

    let node = inproc::wait_until(Duration::from_secs(30), "the node registers", || {
        let api = client.api::<k8s_openapi::api::core::v1::Node>("");
        async move { api.get("worker-1").await.ok() }
    })
    .await;
    assert_eq!(
        node.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()),
        Some("10.244.251.0/24")
    );
    let info = node.status.and_then(|s| s.node_info).expect("nodeInfo");
    assert!(
        info.container_runtime_version.starts_with("containerd://"),
        "{}",
        info.container_runtime_version
    );

    // The README's example: a Deployment of the HTTP image, applied with flotctl, each
    // pod answering on its own address.
    let kubeconfig = h.server.as_ref().expect("running").kubeconfig.clone();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/http.yaml");
    let applied = std::process::Command::new(env!("CARGO_BIN_EXE_flotctl"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("apply")
        .arg("-f")
        .arg(&example)
        .output()
        .expect("flotctl runs");
    assert!(
        applied.status.success(),
        "flotctl apply: {}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let ready = inproc::wait_until(Duration::from_secs(120), "3 http pods are ready", || {
        let client = client.clone();
        async move {
            let list = pods(&client, "app=http").await;

            let ready: Vec<Pod> = list
                .into_iter()
                .filter(|p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|cs| {
                            cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        })
                })
                .collect();
            (ready.len() == 3).then_some(ready)
        }
    })
    .await;
    // The Service's Endpoints list the three pod IPs.
    let mut ips: Vec<String> = ready
        .iter()
        .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
        .collect();
    ips.sort();
    inproc::wait_until(
        Duration::from_secs(30),
        "the Service has 3 endpoints",
        || {
            let api = client.api::<k8s_openapi::api::core::v1::Endpoints>("default");
            let ips = ips.clone();
            async move {
                let e = api.get("http").await.ok()?;
                let mut got: Vec<String> = e
                    .subsets
                    .iter()
                    .flatten()
                    .flat_map(|s| s.addresses.iter().flatten())
                    .map(|a| a.ip.clone())
                    .collect();
                got.sort();
                (got == ips).then_some(())
            }
        },
    )
    .await;
    let mut before = Vec::new();
    for p in &ready {
        let name = p.metadata.name.clone().expect("name");
        let status = p.status.as_ref().expect("status");
        let ip = status.pod_ip.clone().expect("pod IP");
        assert!(ip.starts_with("10.244.251."), "{name}: pod IP {ip}");
        let page = http_get(&ip, "/").await.expect("the page");
        assert!(page.contains("flotilla.local/http:1"), "{page}");
        let who = http_get(&ip, "/cgi-bin/hostname").await.expect("cgi");
        assert!(who.contains(&format!("hostname: {name}")), "{who}");
        let c = container_state(p).expect("container status");
        let id = c.container_id.clone().expect("container id");
        assert!(id.starts_with("containerd://"), "{id}");
        // The container's limit is in its cgroup (read by exec through the API server),
        // and the pod's on the pod's cgroup.
        let cid = id.trim_start_matches("containerd://").to_string();
        let exec = ExecParams {
            command: vec![
                "cat".into(),
                "/sys/fs/cgroup/memory/memory.limit_in_bytes".into(),
            ],
            ..Default::default()
        };
        let out = client.exec("default", &name, &exec).await.expect("exec");
        assert_eq!(
            (out.exit_code, String::from_utf8_lossy(&out.stdout).trim()),
            (0, (32u64 << 20).to_string().as_str())
        );
        let uid = p.metadata.uid.clone().expect("uid");
        let pod_limit = std::fs::read_to_string(format!(
            "/sys/fs/cgroup/memory{cgroups}/pod{uid}/memory.limit_in_bytes"
        ))
        .expect("the pod's cgroup");
        assert_eq!(pod_limit.trim(), (32u64 << 20).to_string());
        let quota = std::fs::read_to_string(format!(
            "/sys/fs/cgroup/cpu{cgroups}/pod{uid}/cpu.cfs_quota_us"
        ))
        .expect("the pod's cpu cgroup");
        assert_eq!(quota.trim(), "20000");
        // httpd logs each request: the log, through the API server, has ours.
        let log = inproc::wait_until(Duration::from_secs(10), "the request is logged", || {
            let (client, name) = (client.clone(), name.clone());
            async move {
                let mut stream = client
                    .logs("default", &name, &Default::default())
                    .await
                    .ok()?;
                let mut log = Vec::new();
                while let Some(chunk) = stream.next().await {
                    log.extend(chunk.ok()?);
                }
                let log = String::from_utf8_lossy(&log).into_owned();
                log.contains("url:/cgi-bin/hostname").then_some(log)
            }
        })
        .await;
        assert!(!log.is_empty());
        before.push((name, cid));
    }

    // The agent's /metrics has each container's cpu and memory, as cAdvisor names them.
    let port = client
        .api::<k8s_openapi::api::core::v1::Node>("")
        .get("worker-1")
        .await
        .ok()
        .and_then(|n| n.status?.daemon_endpoints?.kubelet_endpoint)
        .map(|e| e.port as u16)
        .expect("the agent's port");
    let metrics = http::get("127.0.0.1", port, "/metrics")
        .await
        .expect("the agent's metrics");
    let pod = format!("pod=\"{}\"", before[1].0);
    let memory = http::sample(
        &metrics,
        "container_memory_working_set_bytes",
        &[&pod, "container=\"http\""],
    );
    assert!(memory.is_some_and(|m| m > 0.0), "{metrics}");
    assert!(
        http::sample(&metrics, "container_cpu_usage_seconds_total", &[&pod]).is_some(),
        "{metrics}"
    );
    assert!(
        http::sample(&metrics, "flotilla_agent_running_pods", &[]).is_some_and(|n| n >= 3.0),
        "{metrics}"
    );

    // A hostPort reaches the pod through the node's own address (CNI portmap).
    let api = h.client().await;
    let host_port = std::net::TcpListener::bind("0.0.0.0:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let edge = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "edge"},
        "spec": {"containers": [{"name": "http", "image": containerd::HTTP,
                                 "ports": [{"containerPort": 8080, "hostPort": host_port}]}]}
    });
    api.create("v1", "pods", "default", &edge)
        .await
        .expect("pod");
    // The address other machines reach this one on: the default route's source.
    let node_ip = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("192.0.2.1:9")?;
            s.local_addr()
        })
        .expect("a routable address")
        .ip()
        .to_string();
    inproc::wait_until(Duration::from_secs(60), "the hostPort answers", || {
        let node_ip = node_ip.clone();
        async move { http::get(&node_ip, host_port, "/").await }
    })
    .await;

    // Trouble, reported as the kubelet reports it.
    for (name, script, memory) in [
        ("crasher", "echo starting; exit 3", "32Mi"),
        ("hog", "tail /dev/zero", "16Mi"),
        (
            "slow",
            "trap 'echo bye; sleep 1; exit 0' TERM; while true; do sleep 1; done",
            "32Mi",
        ),
    ] {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"test": "trouble"}},
            "spec": {
                "restartPolicy": if name == "hog" { "Never" } else { "Always" },
                "terminationGracePeriodSeconds": 10,
                "containers": [{"name": "main", "image": containerd::BUSYBOX,
                                "command": ["sh", "-c", script],
                                "resources": {"limits": {"memory": memory}}}]
            }
        });
        api.create("v1", "pods", "default", &pod)
            .await
            .expect("pod");
    }
    let last = until_pod(&client, "crasher", "crasher is in CrashLoopBackOff", |p| {
        let c = container_state(p)?;
        let waiting = c.state.as_ref()?.waiting.as_ref()?;
        if waiting.reason.as_deref() != Some("CrashLoopBackOff") || c.restart_count < 1 {
            return None;
        }
        c.last_state?.terminated
    })
    .await;
    assert_eq!(last.exit_code, 3, "{last:?}");
    // Its log comes through the API server from the CRI log file.
    let mut stream = client
        .logs("default", "crasher", &Default::default())
        .await
        .expect("logs");
    let mut log = Vec::new();
    while let Some(chunk) = stream.next().await {
        log.extend(chunk.expect("log chunk"));
    }
    assert!(
        String::from_utf8_lossy(&log).contains("starting"),
        "{}",
        String::from_utf8_lossy(&log)
    );
    until_pod(&client, "hog", "hog is OOMKilled", |p| {
        let c = container_state(p)?;
        let t = c.state?.terminated?;
        (t.reason.as_deref() == Some("OOMKilled")).then_some(())
    })
    .await;
    until_pod(&client, "slow", "slow runs", |p| {
        container_state(p)?.state?.running.map(|_| ())
    })
    .await;
    let deleted = std::time::Instant::now();
    client
        .api::<Pod>("default")
        .delete("slow", &DeleteParams::default())
        .await
        .expect("delete slow");
    inproc::wait_until(Duration::from_secs(30), "slow is gone", || {
        let api = client.api::<Pod>("default");
        async move { api.get_opt("slow").await.ok()?.is_none().then_some(()) }
    })
    .await;
    // Its TERM trap takes a second; nowhere near the 10 s grace, nor a kill at its end.
    let took = deleted.elapsed();
    assert!(took < Duration::from_secs(8), "deletion took {took:?}");

    // The agent restarts: running pods are adopted, not restarted.
    stop_agent.send_replace(true);
    agent_task.await.expect("the agent stops");
    let (stop_agent, agent_task) = spawn_agent(&client, rt.clone(), cfg.clone());
    let victim = before[0].0.clone();
    client
        .api::<Pod>("default")
        .delete(&victim, &DeleteParams::default())
        .await
        .expect("delete one http pod");
    // The new agent handles the deletion and the replacement: it is running.
    inproc::wait_until(
        Duration::from_secs(60),
        "a replacement http pod is ready",
        || {
            let client = client.clone();
            let victim = victim.clone();
            async move {
                let list = pods(&client, "app=http").await;
                let ready = list
                    .iter()
                    .filter(|p| p.metadata.name.as_deref() != Some(&victim))
                    .filter(|p| container_state(p).is_some_and(|c| c.ready))
                    .count();
                (ready == 3 && list.len() == 3).then_some(())
            }
        },
    )
    .await;
    for (name, cid) in &before[1..] {
        let p = client.api::<Pod>("default").get(name).await.expect("pod");
        let c = container_state(&p).expect("status");
        assert_eq!(
            c.container_id.as_deref(),
            Some(format!("containerd://{cid}").as_str()),
            "{name} kept its container"
        );
        assert_eq!(c.restart_count, 0, "{name} was not restarted");
    }

    // Everything goes, and leaves nothing behind.
    client
        .api::<Deployment>("default")
        .delete("http", &DeleteParams::default())
        .await
        .expect("delete http");
    for name in ["crasher", "hog", "edge"] {
        client
            .api::<Pod>("default")
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete");
    }
    inproc::wait_until(Duration::from_secs(60), "every pod is gone", || {
        let client = client.clone();
        async move { pods(&client, "").await.is_empty().then_some(()) }
    })
    .await;
    inproc::wait_until(Duration::from_secs(30), "no sandbox is left", || {
        let rt = rt.clone();
        async move { rt.list_pod_sandboxes().await.ok()?.is_empty().then_some(()) }
    })
    .await;
    let leftover_cgroups: Vec<_> = std::fs::read_dir(format!("/sys/fs/cgroup/memory{cgroups}"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        leftover_cgroups.is_empty(),
        "pod cgroups left: {leftover_cgroups:?}"
    );
    let leftover_logs: Vec<_> = std::fs::read_dir(dir.path().join("pods"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(leftover_logs.is_empty(), "pod logs left: {leftover_logs:?}");
    for h in ["memory", "cpu", "pids"] {
        let _ = std::fs::remove_dir(format!("/sys/fs/cgroup/{h}{cgroups}"));
    }

    stop_agent.send_replace(true);
    let _ = agent_task.await;
    stop_all.send_replace(true);
    for t in tasks.drain(..) {
        let _ = t.await;
    }
    h.shutdown().await;
    drop(cd);
}
