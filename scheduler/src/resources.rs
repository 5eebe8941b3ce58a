//! What a pod asks for and what a node offers, as Kubernetes counts them: a pod requests
//! the larger of the sum over its containers and the largest init container (they run one
//! at a time, before the others), plus its overhead; a pod always takes one pod slot.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Node, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;

use crate::quantity::parse_quantity;

/// Amounts of every resource the scheduler tracks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU, in millicores.
    pub milli_cpu: i64,
    /// Memory, in bytes.
    pub memory: i64,
    /// Ephemeral storage, in bytes.
    pub ephemeral_storage: i64,
    /// Pod slots.
    pub pods: i64,
    /// Extended resources (`example.com/gpu`), hugepages, by name.
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    /// Reads a resource list; an unparsable quantity counts as zero (the API server has
    /// already refused those).
    pub fn from_list(list: Option<&BTreeMap<String, K8sQuantity>>) -> Self {
        let mut r = Resources::default();
        for (name, q) in list.into_iter().flatten() {
            let Ok(v) = parse_quantity(&q.0) else {
                continue;
            };
            match name.as_str() {
                "cpu" => r.milli_cpu = v.milli_value(),
                "memory" => r.memory = v.value(),
                "ephemeral-storage" => r.ephemeral_storage = v.value(),
                "pods" => r.pods = v.value(),
                other => {
                    r.scalar.insert(other.to_string(), v.value());
                }
            }
        }
        r
    }

    /// Adds another amount.
    pub fn add(&mut self, o: &Resources) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.ephemeral_storage += o.ephemeral_storage;
        self.pods += o.pods;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }

    /// Subtracts another amount (a pod leaving a node).
    pub fn sub(&mut self, o: &Resources) {
        self.milli_cpu -= o.milli_cpu;
        self.memory -= o.memory;
        self.ephemeral_storage -= o.ephemeral_storage;
        self.pods -= o.pods;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_default() -= v;
        }
    }

    /// Each resource the larger of the two.
    pub fn max_with(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(o.ephemeral_storage);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }
}

fn requests(c: &Container) -> Resources {
    Resources::from_list(c.resources.as_ref().and_then(|r| r.requests.as_ref()))
}

/// What a pod requests of a node.
pub fn pod_requests(spec: &PodSpec) -> Resources {
    let mut sum = Resources::default();
    for c in &spec.containers {
        sum.add(&requests(c));
    }
    for c in spec.init_containers.iter().flatten() {
        sum.max_with(&requests(c));
    }
    sum.add(&Resources::from_list(spec.overhead.as_ref()));
    sum.pods = 1;
    sum
}

/// What a node offers pods: its allocatable resources (its capacity if none reported).
pub fn node_allocatable(node: &Node) -> Resources {
    let status = node.status.as_ref();
    let list = status
        .and_then(|s| s.allocatable.as_ref())
        .or(status.and_then(|s| s.capacity.as_ref()));
    Resources::from_list(list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> PodSpec {
        serde_json::from_value(v).expect("pod spec")
    }

    #[test]
    fn init_containers_count_as_kubernetes_counts_them() {
        let s = spec(json!({
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "2", "memory": "64Mi"}}}],
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "128Mi"}}},
                {"name": "b", "resources": {"requests": {"cpu": "250m", "example.com/gpu": "1"}}}
            ]
        }));
        let r = pod_requests(&s);
        assert_eq!(
            r.milli_cpu, 2000,
            "the init container needs more cpu than the containers together"
        );
        assert_eq!(
            r.memory,
            128 * 1024 * 1024,
            "the containers need more memory"
        );
        assert_eq!(r.scalar["example.com/gpu"], 1);
        assert_eq!(r.pods, 1);
    }

    #[test]
    fn overhead_is_added() {
        let s = spec(
            json!({"containers": [{"name": "a", "resources": {"requests": {"cpu": "100m"}}}], "overhead": {"cpu": "50m"}}),
        );
        assert_eq!(pod_requests(&s).milli_cpu, 150);
    }
}
