//! The agent against a running API server and scheduler, with the process runtime and the
//! real shim: registration and heartbeat, pods running to Running / Succeeded / Failed with
//! truthful statuses, crash back-off, refused containers, environment from ConfigMaps and
//! the pod's fields, graceful deletion finished by the agent, and an agent restarted with
//! pods running that adopts them without starting anything twice.

#[path = "support/api.rs"]
mod api;
#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/http.rs"]
mod http;
#[path = "support/inproc.rs"]
mod inproc;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use agent::run::AgentConfig;
use agent::runtime::process::{NO_COMMAND, ProcessRuntime};
use api::{ApiHarness, StoreSetup};
use flotilla_client::{Client, DeleteParams};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{Value, json};
use tokio::sync::watch;

struct Cluster {
    h: ApiHarness,
    client: Client,
    stop: watch::Sender<bool>,
    scheduler: tokio::task::JoinHandle<()>,
    agent: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
    dir: tempfile::TempDir,
}

fn agent_config(dir: &Path) -> AgentConfig {
    AgentConfig {
        node_name: "worker-1".into(),
        host_ip: "127.0.0.1".into(),
        data_dir: dir.to_path_buf(),
        node_labels: [("disk".to_string(), "ssd".to_string())].into(),
        heartbeat_interval: Duration::from_secs(1),
        listen: "127.0.0.1:0".parse().expect("address"),
        ..Default::default()
    }
}

impl Cluster {
    async fn start() -> Self {
        let h = ApiHarness::start(StoreSetup::Embedded, |_| {}).await;
        let client = h.admin_client();
        let (stop, stop_rx) = watch::channel(false);
        let scheduler = tokio::spawn(scheduler::run(client.clone(), Default::default(), stop_rx));
        let mut c = Cluster {
            h,
            client,
            stop,
            scheduler,
            agent: None,
            dir: tempfile::tempdir().expect("tempdir"),
        };
        c.start_agent();
        c
    }

    fn start_agent(&mut self) {
        let data = self.dir.path().join("agent");
        std::fs::create_dir_all(&data).expect("agent dir");
        let runtime = ProcessRuntime::new(
            &data.join("runtime"),
            Path::new(env!("CARGO_BIN_EXE_flotilla-shim")),
            "127.0.0.1",
        )
        .expect("runtime");
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn({
            let client = self.client.clone();
            let cfg = agent_config(&data);
            async move {
                agent::run::run(client, Arc::new(runtime), cfg, rx)
                    .await
                    .expect("the agent runs");
            }
        });
        self.agent = Some((stop, task));
    }

    async fn stop_agent(&mut self) {
        if let Some((stop, task)) = self.agent.take() {
            stop.send_replace(true);
            task.await.expect("the agent stops");
        }
    }

    async fn create(&self, pod: Value) {
        let c = self.h.client().await;
        c.create("v1", "pods", "default", &pod).await.expect("pod");
    }

    async fn pod_until(&self, name: &str, what: &str, ok: impl Fn(&Pod) -> bool) -> Pod {
        let api = self.client.api::<Pod>("default");
        inproc::wait_until(Duration::from_secs(30), what, || {
            let api = api.clone();
            let name = name.to_string();
            let ok = &ok;
            async move { api.get_opt(&name).await.ok().flatten().filter(|p| ok(p)) }
        })
        .await
    }

    /// Deletes a pod and waits until the agent has stopped it and removed it from the API.
    async fn delete_pod_and_wait(&self, name: &str) {
        let api = self.client.api::<Pod>("default");
        api.delete(name, &DeleteParams::default())
            .await
            .expect("delete");
        inproc::wait_until(Duration::from_secs(20), "the agent removes the pod", || {
            let api = api.clone();
            async move {
                api.get_opt(name)
                    .await
                    .ok()
                    .filter(Option::is_none)
                    .map(|_| ())
            }
        })
        .await;
    }

    /// Deletes every pod and waits until the agent has stopped them and removed them, so
    /// that no process outlives the test.
    async fn delete_all_pods(&self) {
        let api = self.client.api::<Pod>("default");
        for p in api.list(&Default::default()).await.expect("pods").items {
            let name = p.metadata.name.unwrap_or_default();
            let _ = api.delete(&name, &DeleteParams::default()).await;
        }
        inproc::wait_until(
            Duration::from_secs(30),
            "every pod is stopped and removed",
            || {
                let api = api.clone();
                async move {
                    api.list(&Default::default())
                        .await
                        .ok()
                        .filter(|l| l.items.is_empty())
                        .map(|_| ())
                }
            },
        )
        .await;
    }

    async fn shutdown(mut self) {
        if self.agent.is_some() {
            self.delete_all_pods().await;
        }
        self.stop_agent().await;
        self.stop.send_replace(true);
        let _ = (&mut self.scheduler).await;
        self.h.shutdown().await;
    }
}

fn pod(name: &str, script: &str, restart: &str) -> Value {
    json!({
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 5,
            "containers": [{"name": "main", "image": "busybox:1.36", "command": ["sh", "-c", script]}]
        }
    })
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

fn main_status(p: &Pod) -> Option<&k8s_openapi::api::core::v1::ContainerStatus> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == "main")
}

fn condition(p: &Pod, type_: &str) -> Option<String> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_runs_reports_truthfully_and_is_removed_when_deleted() {
    let c = Cluster::start().await;
    // The node registers itself and keeps its Lease fresh.
    let node = inproc::wait_until(
        Duration::from_secs(10),
        "the node is registered and ready",
        || {
            let api = c.client.api::<Node>("");
            async move {
                api.get_opt("worker-1").await.ok().flatten().filter(|n| {
                    n.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|cs| {
                            cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        })
                })
            }
        },
    )
    .await;
    let labels = node.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels["disk"], "ssd");
    assert_eq!(labels["kubernetes.io/hostname"], "worker-1");
    let alloc = node
        .status
        .as_ref()
        .and_then(|s| s.allocatable.clone())
        .unwrap_or_default();
    assert!(alloc.contains_key("cpu") && alloc.contains_key("memory"));
    let lease = c
        .client
        .api::<Lease>("kube-node-lease")
        .get("worker-1")
        .await
        .expect("the node lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("worker-1")
    );

    c.create(pod(
        "web",
        "echo hello; trap 'exit 0' TERM; while true; do sleep 0.1; done",
        "Always",
    ))
    .await;
    let p = c
        .pod_until("web", "the pod runs", |p| {
            phase(p) == "Running" && condition(p, "Ready").as_deref() == Some("True")
        })
        .await;
    let st = p.status.as_ref().expect("status");
    assert_eq!(st.pod_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(st.host_ip.as_deref(), Some("127.0.0.1"));
    assert!(st.start_time.is_some());
    let cs = main_status(&p).expect("container status");
    assert!(cs.ready && cs.restart_count == 0);
    assert!(cs.state.as_ref().and_then(|s| s.running.as_ref()).is_some());
    assert!(
        cs.container_id
            .as_deref()
            .is_some_and(|id| id.starts_with("process://"))
    );
    for cond in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
        assert_eq!(condition(&p, cond).as_deref(), Some("True"), "{cond}");
    }
    // The agent's /metrics counts the pod and has its container's usage.
    let port = node
        .status
        .as_ref()
        .and_then(|s| s.daemon_endpoints.as_ref())
        .and_then(|d| d.kubelet_endpoint.as_ref())
        .map(|e| e.port as u16)
        .expect("the agent's port");
    let metrics = http::get("127.0.0.1", port, "/metrics")
        .await
        .expect("the agent's metrics");
    assert_eq!(
        http::sample(&metrics, "flotilla_agent_running_pods", &[]),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        http::sample(
            &metrics,
            "container_memory_working_set_bytes",
            &["pod=\"web\"", "namespace=\"default\""]
        )
        .is_some(),
        "{metrics}"
    );

    // Deleting waits for the agent: it stops the container, then removes the pod.
    c.delete_pod_and_wait("web").await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_end_as_their_restart_policy_says() {
    let c = Cluster::start().await;
    c.create(pod("fails", "echo bad >&2; exit 3", "Never"))
        .await;
    c.create(pod("works", "exit 0", "OnFailure")).await;
    let mut refused = pod("no-command", "", "Always");
    refused["spec"]["containers"][0]
        .as_object_mut()
        .expect("container")
        .remove("command");
    c.create(refused).await;

    let p = c
        .pod_until("fails", "the pod fails", |p| phase(p) == "Failed")
        .await;
    let t = main_status(&p)
        .and_then(|s| s.state.as_ref())
        .and_then(|s| s.terminated.clone())
        .expect("terminated");
    assert_eq!((t.exit_code, t.reason.as_deref()), (3, Some("Error")));
    assert!(t.started_at.is_some() && t.finished_at.is_some());

    c.pod_until("works", "the pod succeeds", |p| phase(p) == "Succeeded")
        .await;

    let p = c
        .pod_until("no-command", "the container is refused", |p| {
            main_status(p)
                .and_then(|s| s.state.as_ref())
                .and_then(|s| s.waiting.as_ref())
                .is_some_and(|w| w.reason.as_deref() == Some("CreateContainerError"))
        })
        .await;
    let w = main_status(&p)
        .and_then(|s| s.state.clone())
        .and_then(|s| s.waiting)
        .expect("waiting");
    assert_eq!(w.message.as_deref(), Some(NO_COMMAND));
    assert_eq!(phase(&p), "Pending");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_container_backs_off_and_restarts() {
    let c = Cluster::start().await;
    c.create(pod("crash", "echo attempt; exit 1", "Always"))
        .await;
    let p = c
        .pod_until("crash", "the container waits in CrashLoopBackOff", |p| {
            main_status(p)
                .and_then(|s| s.state.as_ref())
                .and_then(|s| s.waiting.as_ref())
                .is_some_and(|w| w.reason.as_deref() == Some("CrashLoopBackOff"))
        })
        .await;
    let cs = main_status(&p).expect("status");
    let last = cs
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("last termination");
    assert_eq!(last.exit_code, 1);
    assert_eq!(phase(&p), "Running", "it ran and will run again");
    // After the 10 s back-off it runs again.
    c.pod_until("crash", "the container restarts", |p| {
        main_status(p).is_some_and(|s| s.restart_count >= 1)
    })
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_comes_from_config_maps_and_the_pod() {
    let c = Cluster::start().await;
    let h = c.h.client().await;
    h.create(
        "v1",
        "configmaps",
        "default",
        &json!({"metadata": {"name": "settings"}, "data": {"color": "blue", "size": "L"}}),
    )
    .await
    .expect("configmap");
    c.create(json!({
        "metadata": {"name": "env"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "main", "image": "busybox:1.36",
                "command": ["sh", "-c", "echo $COLOR $CFG_size $POD_NAME $NODE $(GREETING)"],
                "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
                "env": [
                    {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "color"}}},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                    {"name": "GREETING", "value": "hi-$(POD_NAME)"}
                ]
            }]
        }
    }))
    .await;
    c.pod_until("env", "the pod succeeds", |p| phase(p) == "Succeeded")
        .await;
    let logs = std::fs::read_dir(c.dir.path().join("agent/pods"))
        .expect("pod log dirs")
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().starts_with("default_env_"))
        .expect("the pod's log dir")
        .path()
        .join("main/0.log");
    let text = std::fs::read_to_string(&logs).expect("log");
    let line = text
        .lines()
        .filter_map(agent::cri_log::parse)
        .map(|r| r.text)
        .next()
        .expect("a line");
    assert_eq!(line, "blue L env worker-1 hi-env");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_drive_readiness_and_restart_unhealthy_containers() {
    let c = Cluster::start().await;
    let flag = c.dir.path().join("ready-flag");
    c.create(json!({
        "metadata": {"name": "probed"},
        "spec": {"containers": [{
            "name": "main", "image": "busybox:1.36",
            "command": ["sh", "-c", "while true; do sleep 0.1; done"],
            "readinessProbe": {"exec": {"command": ["test", "-f", flag.display().to_string()]}, "periodSeconds": 1},
        }]}
    }))
    .await;
    let p = c
        .pod_until("probed", "the pod runs, not ready", |p| {
            phase(p) == "Running"
        })
        .await;
    assert_eq!(condition(&p, "Ready").as_deref(), Some("False"));
    assert!(!main_status(&p).expect("status").ready);
    std::fs::write(&flag, b"").expect("flag");
    c.pod_until("probed", "the readiness probe passes", |p| {
        condition(p, "Ready").as_deref() == Some("True")
    })
    .await;

    // Nothing listens on the port: after one failure the container is killed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    c.create(json!({
        "metadata": {"name": "unhealthy"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "main", "image": "busybox:1.36",
            "command": ["sh", "-c", "while true; do sleep 0.1; done"],
            "livenessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 1, "failureThreshold": 1},
        }]}
    }))
    .await;
    let p = c
        .pod_until("unhealthy", "the container is killed", |p| {
            main_status(p)
                .and_then(|s| s.last_state.as_ref())
                .and_then(|s| s.terminated.as_ref())
                .is_some()
        })
        .await;
    assert_eq!(phase(&p), "Running", "it will be restarted");
    let h = c.h.client().await;
    let events = h
        .list("v1", "events", "default")
        .await
        .expect("events")
        .items;
    let about = |reason: &str| {
        events
            .iter()
            .filter(|e| e["involvedObject"]["name"] == "unhealthy" && e["reason"] == reason)
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    };
    assert!(
        about("Unhealthy")
            .iter()
            .any(|m| m.starts_with("Liveness probe failed: dial tcp")),
        "{events:?}"
    );
    assert_eq!(
        about("Killing"),
        vec!["Container main failed liveness probe, will be restarted".to_string()]
    );
    c.shutdown().await;
}

async fn read_logs(
    c: &Client,
    pod: &str,
    p: &flotilla_client::LogParams,
) -> Result<String, String> {
    use futures::StreamExt;
    let mut s = c.logs("default", pod, p).await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        out.extend(chunk.map_err(|e| e.to_string())?);
    }
    Ok(String::from_utf8_lossy(&out).to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_come_through_the_api_server() {
    use futures::StreamExt;
    let c = Cluster::start().await;
    let gate = c.dir.path().join("gate");
    c.create(pod(
        "talker",
        &format!(
            "echo one; echo two; while [ ! -f {} ]; do sleep 0.05; done; echo three; sleep 0.2",
            gate.display()
        ),
        "Never",
    ))
    .await;
    c.pod_until("talker", "the pod runs", |p| phase(p) == "Running")
        .await;
    let all = inproc::wait_until(Duration::from_secs(10), "both lines are logged", || {
        let client = c.client.clone();
        async move {
            read_logs(&client, "talker", &Default::default())
                .await
                .ok()
                .filter(|l| l == "one\ntwo\n")
        }
    })
    .await;
    assert_eq!(all, "one\ntwo\n");
    let tail = flotilla_client::LogParams {
        tail_lines: Some(1),
        ..Default::default()
    };
    assert_eq!(
        read_logs(&c.client, "talker", &tail).await.as_deref(),
        Ok("two\n")
    );
    let stamped = flotilla_client::LogParams {
        timestamps: true,
        ..Default::default()
    };
    let line = read_logs(&c.client, "talker", &stamped)
        .await
        .expect("logs");
    assert!(
        line.split(' ')
            .next()
            .is_some_and(|t| t.parse::<jiff::Timestamp>().is_ok()),
        "{line}"
    );

    // Follow: new output arrives, and the stream ends when the container does.
    let follow = flotilla_client::LogParams {
        follow: true,
        ..Default::default()
    };
    let mut stream = c
        .client
        .logs("default", "talker", &follow)
        .await
        .expect("follow");
    let first = stream.next().await.expect("a chunk").expect("ok");
    assert_eq!(String::from_utf8_lossy(&first), "one\ntwo\n");
    std::fs::write(&gate, b"").expect("gate");
    let mut rest = Vec::new();
    while let Some(chunk) = stream.next().await {
        rest.extend(chunk.expect("ok"));
    }
    assert_eq!(String::from_utf8_lossy(&rest), "three\n");

    // The same through flotctl.
    let kubeconfig = c.h.server.as_ref().expect("running").kubeconfig.clone();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flotctl"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["logs", "pod/talker", "--tail", "2"])
        .output()
        .expect("flotctl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "two\nthree\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flotctl"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["logs", "talker", "--previous"])
        .output()
        .expect("flotctl runs");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("previous terminated container \"main\" in pod \"talker\" not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = read_logs(
        &c.client,
        "talker",
        &flotilla_client::LogParams {
            container: "sidecar".into(),
            ..Default::default()
        },
    )
    .await
    .expect_err("no such container");
    assert!(
        err.contains("container sidecar is not valid for pod talker"),
        "{err}"
    );
    c.shutdown().await;
}

/// `flotilla agent` as its own process (killed when dropped).
struct AgentProcess(std::process::Child);

impl AgentProcess {
    fn start(kubeconfig: &Path, data: &Path, node: &str) -> Self {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .arg("agent")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--data-dir")
            .arg(data)
            .args([
                "--node-name",
                node,
                "--node-ip",
                "127.0.0.1",
                "--listen",
                "127.0.0.1:0",
            ])
            .args(["--node-lease-renew-interval", "1s", "--log-level", "warn"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("flotilla agent starts");
        AgentProcess(child)
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_under_running_pods_adopts_them_when_it_returns() {
    let mut c = Cluster::start().await;
    c.stop_agent().await;
    let kubeconfig = c.h.server.as_ref().expect("running").kubeconfig.clone();
    let data = c.dir.path().join("process-agent");
    let agent = AgentProcess::start(&kubeconfig, &data, "worker-2");
    let mut p = pod(
        "survivor",
        "trap 'exit 0' TERM; while true; do sleep 0.1; done",
        "Always",
    );
    p["spec"]["nodeName"] = json!("worker-2");
    c.create(p).await;
    let before = c
        .pod_until("survivor", "the pod runs", |p| phase(p) == "Running")
        .await;
    let id = main_status(&before).and_then(|s| s.container_id.clone());
    assert!(id.is_some());

    drop(agent); // SIGKILL
    let agent = AgentProcess::start(&kubeconfig, &data, "worker-2");
    // Once a pod created after the restart runs, the new agent has synced the old one
    // too (its worker started first, from the informer's initial list).
    let mut p = pod("newcomer", "while true; do sleep 0.1; done", "Always");
    p["spec"]["nodeName"] = json!("worker-2");
    c.create(p).await;
    c.pod_until("newcomer", "the new agent runs a new pod", |p| {
        phase(p) == "Running"
    })
    .await;
    let after = c
        .pod_until("survivor", "the pod still runs", |p| phase(p) == "Running")
        .await;
    let cs = main_status(&after).expect("status");
    assert_eq!(
        cs.container_id, id,
        "the same container, through the agent's death"
    );
    assert_eq!(cs.restart_count, 0);
    let containers = std::fs::read_dir(data.join("runtime/containers"))
        .expect("containers")
        .count();
    assert_eq!(
        containers, 2,
        "one container per pod: nothing started twice"
    );

    // The new agent stops both pods and removes them.
    c.delete_all_pods().await;
    // Before the server goes, so that it does not spend the rest of the run retrying.
    drop(agent);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_adopts_running_pods() {
    let mut c = Cluster::start().await;
    c.create(pod("long", "while true; do sleep 0.1; done", "Always"))
        .await;
    let before = c
        .pod_until("long", "the pod runs", |p| phase(p) == "Running")
        .await;
    let id = main_status(&before).and_then(|s| s.container_id.clone());
    c.stop_agent().await;
    c.start_agent();
    // Once a pod created after the restart runs, the new agent has synced the old one
    // too; it reports the same container, not a new one.
    c.create(pod("later", "while true; do sleep 0.1; done", "Always"))
        .await;
    c.pod_until("later", "the new agent runs a new pod", |p| {
        phase(p) == "Running"
    })
    .await;
    let p = c
        .pod_until("long", "the pod still runs", |p| phase(p) == "Running")
        .await;
    let cs = main_status(&p).expect("status");
    assert_eq!(cs.container_id, id);
    assert_eq!(cs.restart_count, 0);
    let runtime_dir = c.dir.path().join("agent/runtime/containers");
    let containers = std::fs::read_dir(&runtime_dir).expect("containers").count();
    assert_eq!(
        containers, 2,
        "one container per pod: nothing started twice"
    );
    c.delete_pod_and_wait("long").await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_hooks_run_after_start_and_before_stop() {
    let c = Cluster::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = dir.path().join("journal");
    let note = |what: &str| json!({"exec": {"command": ["sh", "-c", format!("echo {what} >> {}", journal.display())]}});
    // The container notes SIGTERM in the same journal as its hooks.
    let mut p = pod(
        "hooked",
        &format!(
            "trap 'echo term >> {}; exit 0' TERM; while true; do sleep 0.1; done",
            journal.display()
        ),
        "Always",
    );
    p["spec"]["containers"][0]["lifecycle"] =
        json!({"postStart": note("poststart"), "preStop": note("prestop")});
    c.create(p).await;
    c.pod_until("hooked", "the hooked pod runs", |p| phase(p) == "Running")
        .await;
    let read = || std::fs::read_to_string(&journal).unwrap_or_default();
    assert_eq!(
        read(),
        "poststart\n",
        "postStart ran once the container started"
    );

    // preStop runs before the container is asked to stop.
    c.delete_pod_and_wait("hooked").await;
    assert_eq!(read(), "poststart\nprestop\nterm\n");

    // A failing postStart kills the container, which restarts, and says why.
    let mut failing = pod("failing", "while true; do sleep 0.1; done", "Always");
    failing["spec"]["containers"][0]["lifecycle"] =
        json!({"postStart": {"exec": {"command": ["sh", "-c", "exit 3"]}}});
    c.create(failing).await;
    c.pod_until("failing", "the container is restarted", |p| {
        main_status(p).is_some_and(|s| s.restart_count >= 1)
    })
    .await;
    let events = c
        .client
        .api::<k8s_openapi::api::core::v1::Event>("default")
        .list(&Default::default())
        .await
        .expect("events")
        .items;
    let failed = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("FailedPostStartHook"))
        .expect("a FailedPostStartHook event");
    assert!(
        failed
            .message
            .as_deref()
            .is_some_and(|m| m.contains("exited with 3")),
        "{failed:?}"
    );
    c.shutdown().await;
}
