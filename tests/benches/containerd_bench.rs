//! Pod start-up on containerd: `flotilla server` and a `flotilla agent --runtime cri` as
//! processes of their own, over a containerd the benchmark starts (its own root, state,
//! socket and CNI configuration under a temp dir; the test images imported).
//!
//! `cargo bench -p flotilla-cli --bench containerd_bench` (as root, with containerd, runc
//! and the CNI plugins installed), tuned by environment variables:
//! - `PODS` (30): pods of the pause image created at once by 8 clients; a pod's start-up
//!   latency is from its create being sent to a watch seeing it Running (scheduling,
//!   binding, the agent's sandbox with its network, the container, the status write).
//! - `RAW` (10): sandbox + create + start of the same image straight through CRI, one
//!   after another, for the runtime's own share of that figure.
//!
//! The run ends with one `RESULT bench=containerd …` line.

#[path = "../support/api.rs"]
mod api;
#[path = "../support/cluster.rs"]
mod cluster;
#[path = "../support/containerd.rs"]
mod containerd;
#[path = "../support/inproc.rs"]
mod inproc;
#[path = "../support/server_process.rs"]
mod server_process;

use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use agent::runtime::cri::CriRuntime;
use agent::runtime::{ContainerConfig, Runtime, SandboxConfig};
use containerd::Containerd;
use serde_json::json;
use server_process::{Proc, ServerProcess, delete_pods, hist, knob, ms, start_pods};

/// Sandbox + create + start through CRI alone, `n` times in a row.
async fn raw_cri(cd: &Containerd, n: usize, results: &mut Vec<String>) {
    let rt = CriRuntime::connect(&cd.socket, "/flotilla-bench")
        .await
        .expect("connect");
    let logs = cd.dir.path().join("raw-logs");
    let mut h = hist();
    for i in 0..n {
        let sandbox = SandboxConfig {
            name: format!("raw-{i}"),
            namespace: "bench".into(),
            uid: format!("raw-uid-{i}"),
            hostname: format!("raw-{i}"),
            log_directory: logs.join(format!("raw-{i}")),
            ..Default::default()
        };
        let container = ContainerConfig {
            name: "pause".into(),
            image: containerd::PAUSE.into(),
            log_path: "pause/0.log".into(),
            ..Default::default()
        };
        let t = Instant::now();
        let sb = rt.run_pod_sandbox(&sandbox).await.expect("sandbox");
        let id = rt.create_container(&sb, &container).await.expect("create");
        rt.start_container(&id).await.expect("start");
        let _ = h.record(t.elapsed().as_micros().max(1) as u64);
        rt.stop_pod_sandbox(&sb, Duration::ZERO)
            .await
            .expect("stop");
        rt.remove_pod_sandbox(&sb).await.expect("remove");
    }
    println!(
        "raw CRI (sandbox + create + start), {n} in a row: p50 {:.0} ms, p99 {:.0} ms",
        ms(&h, 0.5),
        ms(&h, 0.99)
    );
    results.push(format!("cri_raw_p50_ms={:.0}", ms(&h, 0.5)));
    results.push(format!("cri_raw_p99_ms={:.0}", ms(&h, 0.99)));
}

async fn pod_startup(cd: &Containerd, pods: usize, results: &mut Vec<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(&dir.path().join("server"), &[], &[]).await;
    let kubeconfig = dir.path().join("server/admin.yaml");
    let _agent = Proc(
        Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .arg("agent")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--data-dir")
            .arg(dir.path().join("agent"))
            .args(["--runtime", "cri", "--cri-socket"])
            .arg(&cd.socket)
            .args(["--pod-cidr", "10.244.252.0/24", "--cni-conf-dir"])
            .arg(cd.cni_conf_dir())
            .args([
                "--node-name",
                "bench-node",
                "--node-ip",
                "127.0.0.1",
                "--listen",
                "127.0.0.1:0",
                "--log-level",
                "warn",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("flotilla agent starts"),
    );
    let c = server.client().await;
    inproc::wait_until(Duration::from_secs(60), "the node is registered", || {
        let c = c.clone();
        async move {
            c.get("v1", "nodes", "", "bench-node")
                .await
                .ok()
                .map(|_| ())
        }
    })
    .await;

    let spec = json!({"terminationGracePeriodSeconds": 2, "containers": [{"name": "pause", "image": containerd::PAUSE,
        "resources": {"requests": {"cpu": "1m", "memory": "1Mi"}}}]});
    let (running, latency) = start_pods(&c, pods, 8, &spec).await;
    println!(
        "pod start-up on containerd, {pods} pods at once: {running} running, p50 {:.0} ms, p99 {:.0} ms",
        ms(&latency, 0.5),
        ms(&latency, 0.99)
    );
    results.push(format!("pods={pods}"));
    results.push(format!("startup_p50_ms={:.0}", ms(&latency, 0.5)));
    results.push(format!("startup_p99_ms={:.0}", ms(&latency, 0.99)));
    assert_eq!(running, pods, "every pod runs");

    // The agent stops every sandbox before the pods go.
    delete_pods(&c, pods).await;
    server.stop();
}

fn main() -> ExitCode {
    if !containerd::available() {
        eprintln!("containerd_bench needs root and containerd");
        return ExitCode::FAILURE;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut results = vec!["bench=containerd".to_string()];
    runtime.block_on(async {
        let cd = Containerd::start_without_network().await;
        let pods: usize = knob("PODS", 30);
        if pods > 0 {
            pod_startup(&cd, pods, &mut results).await;
        }
        let raw: usize = knob("RAW", 10);
        if raw > 0 {
            raw_cri(&cd, raw, &mut results).await;
        }
    });
    println!("RESULT {}", results.join(" "));
    ExitCode::SUCCESS
}
