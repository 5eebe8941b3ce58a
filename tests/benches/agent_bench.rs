//! Agent benchmark: pod start-up through one agent with the process runtime, and the API
//! server's cost of many nodes heartbeating (hollow nodes, as kubemark measures it).
//!
//! `cargo bench -p flotilla-cli --bench agent_bench`, tuned by environment variables:
//! - `PODS` (100): pods created at once, each running `sleep 3600`; a pod's start-up
//!   latency is from its create being sent to a watch seeing it Running (scheduling,
//!   binding, the agent's sandbox and container, the status write). The agent's memory
//!   (VmRSS) is read with them all running; each container's shim is its own process
//!   (`flotilla-shim`), whose memory is reported apart as Pss, since the shims share their
//!   binary's pages.
//! - `HOLLOW` (1000): simulated nodes (`flotilla hollow-nodes`, each a real agent with
//!   Lease heartbeats every `HEARTBEAT` seconds (10) over a runtime that runs nothing)
//!   against one API server; once all are Ready, the server's cpu use is measured over
//!   `WINDOW` seconds (30) and its memory read.
//!
//! `flotilla server`, `flotilla agent` and `flotilla hollow-nodes` run as processes of
//! their own. The run ends with one `RESULT bench=agent …` line.

#[path = "../support/api.rs"]
mod api;
#[path = "../support/cluster.rs"]
mod cluster;
#[path = "../support/inproc.rs"]
mod inproc;
#[path = "../support/server_process.rs"]
mod server_process;

use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use server_process::{Proc, ServerProcess, delete_pods, knob, ms, rss_mib, start_pods};

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat: 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// Pss (resident memory, pages shared between processes divided among them) of a
/// process, in MiB: what it really costs when many copies of one binary run.
fn pss_mib(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The shims of the containers under `data` (their command line names it): how many, and
/// their total Pss in MiB.
fn shims_pss_mib(data: &Path) -> (usize, f64) {
    let needle = data.display().to_string();
    let mut n = 0;
    let mut total = 0.0;
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        if cmd.contains("container-shim") && cmd.contains(&needle) {
            n += 1;
            total += pss_mib(pid);
        }
    }
    (n, total)
}

async fn ready_nodes(c: &api::Client) -> usize {
    c.list("v1", "nodes", "")
        .await
        .map(|p| {
            p.items
                .iter()
                .filter(|n| {
                    n["status"]["conditions"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
                })
                .count()
        })
        .unwrap_or(0)
}

async fn pod_startup(pods: usize, results: &mut Vec<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(&dir.path().join("server"), &[], &[]).await;
    let kubeconfig = dir.path().join("server/admin.yaml");
    let data = dir.path().join("agent");
    let agent = Proc(
        Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .arg("agent")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--data-dir")
            .arg(&data)
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
    inproc::wait_until(Duration::from_secs(30), "the node is ready", || {
        let c = c.clone();
        async move { (ready_nodes(&c).await == 1).then_some(()) }
    })
    .await;

    let spec = json!({"terminationGracePeriodSeconds": 2, "containers": [{"name": "c", "image": "busybox:1.36", "command": ["sleep", "3600"],
        "resources": {"requests": {"cpu": "1m", "memory": "1Mi"}}}]});
    let (running, latency) = start_pods(&c, pods, 16, &spec).await;
    let agent_rss = rss_mib(agent.0.id());
    let (shims, shims_pss) = shims_pss_mib(&data);
    println!(
        "pod start-up, {pods} pods on one agent: {running} running, p50 {:.0} ms, p99 {:.0} ms; agent {agent_rss:.1} MiB (RSS), {shims} shims {shims_pss:.1} MiB (Pss) in all",
        ms(&latency, 0.5),
        ms(&latency, 0.99)
    );
    results.push(format!("pods={pods}"));
    results.push(format!("startup_p50_ms={:.0}", ms(&latency, 0.5)));
    results.push(format!("startup_p99_ms={:.0}", ms(&latency, 0.99)));
    results.push(format!("agent_rss_mib={agent_rss:.1}"));
    results.push(format!(
        "shim_pss_mib_each={:.2}",
        shims_pss / shims.max(1) as f64
    ));
    assert_eq!(running, pods, "every pod runs");

    // Clean up: the agent stops every container before the pods go.
    delete_pods(&c, pods).await;
    drop(agent);
    server.stop();
}

async fn hollow(count: usize, heartbeat: u64, window: u64, results: &mut Vec<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(&dir.path().join("server"), &[], &[]).await;
    let kubeconfig = dir.path().join("server/admin.yaml");
    let nodes = Proc(
        Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .arg("hollow-nodes")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--data-dir")
            .arg(dir.path().join("hollow"))
            .arg("--count")
            .arg(count.to_string())
            .arg("--node-lease-renew-interval")
            .arg(format!("{heartbeat}s"))
            .stdout(Stdio::null())
            .spawn()
            .expect("flotilla hollow-nodes starts"),
    );
    let c = server.client().await;
    let start = Instant::now();
    inproc::wait_until(
        Duration::from_secs(600),
        "every hollow node is ready",
        || {
            let c = c.clone();
            async move { (ready_nodes(&c).await == count).then_some(()) }
        },
    )
    .await;
    let registered = start.elapsed().as_secs_f64();
    let (c0, h0) = (cpu_seconds(server.pid()), cpu_seconds(nodes.0.id()));
    tokio::time::sleep(Duration::from_secs(window)).await;
    let server_cpu = (cpu_seconds(server.pid()) - c0) / window as f64;
    let hollow_cpu = (cpu_seconds(nodes.0.id()) - h0) / window as f64;
    let server_rss = rss_mib(server.pid());
    let hollow_rss = rss_mib(nodes.0.id());
    println!(
        "{count} hollow nodes (Lease every {heartbeat}s): all ready after {registered:.1} s; API server {server_cpu:.3} cores, {server_rss:.0} MiB; hollow-nodes process {hollow_cpu:.3} cores, {hollow_rss:.0} MiB"
    );
    results.push(format!("hollow_nodes={count}"));
    results.push(format!("hollow_ready_s={registered:.1}"));
    results.push(format!("apiserver_cpu_cores={server_cpu:.3}"));
    results.push(format!("apiserver_rss_mib={server_rss:.0}"));
    results.push(format!("hollow_rss_mib={hollow_rss:.0}"));
    drop(nodes);
    server.stop();
}

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut results = vec!["bench=agent".to_string()];
    runtime.block_on(async {
        let pods: usize = knob("PODS", 100);
        if pods > 0 {
            pod_startup(pods, &mut results).await;
        }
        let count: usize = knob("HOLLOW", 1000);
        if count > 0 {
            hollow(
                count,
                knob("HEARTBEAT", 10),
                knob("WINDOW", 30),
                &mut results,
            )
            .await;
        }
    });
    println!("RESULT {}", results.join(" "));
    ExitCode::SUCCESS
}
