//! A node agent on the process runtime (with the real shim) in this test's process: node
//! `worker-1` at 127.0.0.1, its endpoint on a free port.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use agent::run::AgentConfig;
use agent::runtime::process::ProcessRuntime;
use flotilla_client::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Runs the agent, its data under `dir/agent`, until `stop` flips.
pub fn spawn(client: &Client, dir: &Path, stop: watch::Receiver<bool>) -> JoinHandle<()> {
    let data = dir.join("agent");
    std::fs::create_dir_all(&data).expect("agent dir");
    let runtime = ProcessRuntime::new(
        &data.join("runtime"),
        Path::new(env!("CARGO_BIN_EXE_flotilla-shim")),
        "127.0.0.1",
    )
    .expect("runtime");
    let cfg = AgentConfig {
        node_name: "worker-1".into(),
        host_ip: "127.0.0.1".into(),
        data_dir: data,
        heartbeat_interval: Duration::from_secs(1),
        listen: "127.0.0.1:0".parse().expect("address"),
        ..Default::default()
    };
    let client = client.clone();
    tokio::spawn(async move {
        agent::run::run(client, Arc::new(runtime), cfg, stop)
            .await
            .expect("the agent runs");
    })
}
