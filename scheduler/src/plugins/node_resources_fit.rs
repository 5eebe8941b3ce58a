//! NodeResourcesFit: a pod fits a node when, for every resource it requests, what the
//! node's pods already request plus the pod's request stays within the node's allocatable;
//! and its scores, LeastAllocated (spread) and MostAllocated (bin-pack), over cpu and memory
//! with equal weights, as Kubernetes' defaults.

use super::{FilterPlugin, MAX_NODE_SCORE, NodeInfo, PodInfo, ScorePlugin, Status};
use crate::resources::Resources;

/// The filter.
pub struct Fit;

/// Kubernetes' reasons: `Insufficient cpu`, `Too many pods`, …
pub fn insufficient(requests: &Resources, node: &NodeInfo) -> Vec<String> {
    let (a, used) = (&node.allocatable, &node.requested);
    let mut reasons = Vec::new();
    if used.pods + 1 > a.pods {
        reasons.push("Too many pods".to_string());
    }
    for (name, want, have, taken) in [
        ("cpu", requests.milli_cpu, a.milli_cpu, used.milli_cpu),
        ("memory", requests.memory, a.memory, used.memory),
        (
            "ephemeral-storage",
            requests.ephemeral_storage,
            a.ephemeral_storage,
            used.ephemeral_storage,
        ),
    ] {
        if want > 0 && taken + want > have {
            reasons.push(format!("Insufficient {name}"));
        }
    }
    for (name, want) in &requests.scalar {
        let have = a.scalar.get(name).copied().unwrap_or(0);
        let taken = used.scalar.get(name).copied().unwrap_or(0);
        if *want > 0 && taken + want > have {
            reasons.push(format!("Insufficient {name}"));
        }
    }
    reasons
}

impl FilterPlugin for Fit {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Status {
        let reasons = insufficient(&pod.requests, node);
        if reasons.is_empty() {
            Status::Success
        } else {
            Status::Unschedulable(reasons)
        }
    }
}

/// How scores favour free capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum Strategy {
    /// More free capacity after placing the pod scores higher (spreads load).
    LeastAllocated,
    /// Less free capacity scores higher (packs nodes, frees others).
    MostAllocated,
}

/// The score.
pub struct Score(pub Strategy);

fn ratio_score(strategy: Strategy, requested: i64, capacity: i64) -> i64 {
    if capacity <= 0 {
        return 0;
    }
    let requested = requested.clamp(0, capacity);
    match strategy {
        Strategy::LeastAllocated => (capacity - requested) * MAX_NODE_SCORE / capacity,
        Strategy::MostAllocated => requested * MAX_NODE_SCORE / capacity,
    }
}

impl ScorePlugin for Score {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }

    fn score(&self, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let requests = &pod.requests;
        let (a, used) = (&node.allocatable, &node.requested);
        let cpu = ratio_score(self.0, used.milli_cpu + requests.milli_cpu, a.milli_cpu);
        let mem = ratio_score(self.0, used.memory + requests.memory, a.memory);
        (cpu + mem) / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::requesting;
    use serde_json::json;

    fn node(cpu: &str, memory: &str, pods: &str) -> NodeInfo {
        NodeInfo::new(serde_json::from_value(json!({"metadata": {"name": "n"}, "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": pods}}})).expect("node"))
    }

    fn req(milli_cpu: i64, memory: i64) -> Resources {
        Resources {
            milli_cpu,
            memory,
            pods: 1,
            ..Default::default()
        }
    }

    #[test]
    fn a_node_is_never_overcommitted() {
        let mut n = node("2", "1Gi", "2");
        assert!(
            Fit.filter(&requesting(req(2000, 1 << 30)), &n).is_success(),
            "exactly full fits"
        );
        n.requested = req(1500, 0);
        assert_eq!(
            Fit.filter(&requesting(req(600, 0)), &n),
            Status::Unschedulable(vec!["Insufficient cpu".into()])
        );
        n.requested.pods = 2;
        assert_eq!(
            insufficient(&req(0, 0), &n),
            vec!["Too many pods".to_string()]
        );
        let mut gpu = req(0, 0);
        gpu.scalar.insert("example.com/gpu".into(), 1);
        assert_eq!(
            insufficient(&gpu, &node("1", "1Gi", "10")),
            vec!["Insufficient example.com/gpu".to_string()]
        );
    }

    #[test]
    fn least_allocated_spreads_and_most_allocated_packs() {
        let empty = node("4", "4Gi", "110");
        let mut busy = node("4", "4Gi", "110");
        busy.requested = req(2000, 2 << 30);
        let pod = requesting(req(1000, 1 << 30));
        let least = Score(Strategy::LeastAllocated);
        let most = Score(Strategy::MostAllocated);
        assert_eq!(least.score(&pod, &empty), 75);
        assert_eq!(least.score(&pod, &busy), 25);
        assert_eq!(most.score(&pod, &busy), 75);
    }
}
