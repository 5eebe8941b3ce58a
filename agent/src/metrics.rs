//! The agent's Prometheus metrics at `/metrics` on its endpoint: what runs on the node and
//! what each container uses, read from the runtime at scrape time (as cAdvisor's are, so
//! nothing is kept between scrapes), with cAdvisor's names for the per-container figures
//! so dashboards and autoscalers written for the kubelet read them.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::runtime::{ContainerState, Runtime, RuntimeError};

type Labels = Vec<(&'static str, String)>;

/// The metrics text for the node's pods and containers as `runtime` has them now.
pub async fn render<R: Runtime>(runtime: &R, node: &str) -> Result<String, RuntimeError> {
    let sandboxes = runtime.list_pod_sandboxes().await?;
    let pods: HashMap<String, (String, String)> = sandboxes
        .iter()
        .map(|s| {
            (
                s.id.clone(),
                (s.config.namespace.clone(), s.config.name.clone()),
            )
        })
        .collect();
    let containers = runtime.list_containers(None).await?;

    let ready_sandboxes = Gauge::<i64>::default();
    ready_sandboxes.set(
        sandboxes
            .iter()
            .filter(|s| s.state == crate::runtime::SandboxState::Ready)
            .count() as i64,
    );
    let by_state = Family::<Labels, Gauge>::default();
    // A fresh registry per scrape: a counter made now and raised by the total reads as it.
    let cpu = Family::<Labels, Counter<f64, AtomicU64>>::default();
    let memory = Family::<Labels, Gauge>::default();
    for c in &containers {
        let state = match c.state {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Exited => "exited",
        };
        by_state
            .get_or_create(&vec![("state", state.to_string())])
            .inc();
        if c.state != ContainerState::Running {
            continue;
        }
        let Some((namespace, pod)) = pods.get(&c.sandbox_id) else {
            continue;
        };
        // A container that ends between the list and its stats has none to report.
        let Ok(stats) = runtime.container_stats(&c.id).await else {
            continue;
        };
        let labels: Labels = vec![
            ("namespace", namespace.clone()),
            ("pod", pod.clone()),
            ("container", c.config.name.clone()),
            ("node", node.to_string()),
        ];
        cpu.get_or_create(&labels)
            .inc_by(stats.cpu_usage_nanos as f64 / 1e9);
        memory
            .get_or_create(&labels)
            .set(i64::try_from(stats.memory_working_set_bytes).unwrap_or(i64::MAX));
    }

    let mut registry = Registry::default();
    registry.register(
        "flotilla_agent_running_pods",
        "Pod sandboxes ready on this node",
        ready_sandboxes,
    );
    registry.register(
        "flotilla_agent_containers",
        "Containers on this node by state",
        by_state,
    );
    registry.register(
        "container_cpu_usage_seconds",
        "Cumulative cpu time consumed by a running container, in seconds",
        cpu,
    );
    registry.register(
        "container_memory_working_set_bytes",
        "A running container's working set: memory in use that cannot be reclaimed",
        memory,
    );
    let mut out = String::new();
    encode(&mut out, &registry).map_err(|e| RuntimeError::Io(e.to_string()))?;
    Ok(out)
}
