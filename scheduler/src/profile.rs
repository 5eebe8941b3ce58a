//! A scheduling profile: the filters every node must pass and the weighted scores that rank
//! the rest, and the explanation when no node passes, in Kubernetes' words ("0/3 nodes are
//! available: 1 Insufficient cpu, 2 node(s) had untolerated taint {…}.").

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::Pod;

use crate::plugins::node_resources_fit::{Fit, Score, Strategy};
use crate::plugins::{
    FilterPlugin, MAX_NODE_SCORE, NodeInfo, ScorePlugin, Status,
    balanced_allocation::BalancedAllocation, node_affinity::NodeAffinity, node_name::NodeName,
    node_ports::NodePorts, node_unschedulable::NodeUnschedulable,
    taint_toleration::TaintToleration,
};
use crate::resources::pod_requests;

/// Why a pod fits no node: how many nodes gave each reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FitError {
    /// Nodes considered.
    pub nodes: usize,
    /// Reason → number of nodes.
    pub reasons: BTreeMap<String, usize>,
}

impl fmt::Display for FitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .reasons
            .iter()
            .map(|(r, n)| format!("{n} {r}"))
            .collect();
        if parts.is_empty() {
            write!(f, "0/{} nodes are available.", self.nodes)
        } else {
            write!(
                f,
                "0/{} nodes are available: {}.",
                self.nodes,
                parts.join(", ")
            )
        }
    }
}

impl std::error::Error for FitError {}

/// Filters and weighted scores.
pub struct Profile {
    filters: Vec<Box<dyn FilterPlugin>>,
    scores: Vec<(Box<dyn ScorePlugin>, i64, bool)>,
}

impl Profile {
    /// Kubernetes' default plugins and weights, with the given resource strategy.
    pub fn default_with(strategy: Strategy) -> Self {
        Profile {
            filters: vec![
                Box::new(NodeUnschedulable),
                Box::new(NodeName),
                Box::new(TaintToleration),
                Box::new(NodeAffinity),
                Box::new(NodePorts),
                Box::new(Fit),
            ],
            scores: vec![
                (Box::new(Score(strategy)), 1, false),
                (Box::new(BalancedAllocation), 1, false),
                (Box::new(NodeAffinity), 2, true),
                (Box::new(TaintToleration), 3, false),
            ],
        }
    }

    /// The node that fits the pod best, or why none does. Ties go to the first node in the
    /// order given.
    pub fn schedule(&self, pod: &Pod, nodes: &[NodeInfo]) -> Result<String, FitError> {
        let requests = pod.spec.as_ref().map(pod_requests).unwrap_or_default();
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let mut feasible: Vec<&NodeInfo> = Vec::new();
        'nodes: for n in nodes {
            for f in &self.filters {
                match f.filter(pod, &requests, n) {
                    Status::Success => {}
                    Status::Unschedulable(rs) | Status::UnschedulableAndUnresolvable(rs) => {
                        for r in rs {
                            *reasons.entry(r).or_default() += 1;
                        }
                        continue 'nodes;
                    }
                }
            }
            feasible.push(n);
        }
        if feasible.is_empty() {
            return Err(FitError {
                nodes: nodes.len(),
                reasons,
            });
        }
        let mut totals = vec![0i64; feasible.len()];
        for (plugin, weight, normalize) in &self.scores {
            let raw: Vec<i64> = feasible
                .iter()
                .map(|n| plugin.score(pod, &requests, n))
                .collect();
            let max = raw.iter().copied().max().unwrap_or(0);
            for (t, s) in totals.iter_mut().zip(raw) {
                let s = if *normalize && max > 0 {
                    s * MAX_NODE_SCORE / max
                } else {
                    s
                };
                *t += s * weight;
            }
        }
        let best = totals
            .iter()
            .enumerate()
            .max_by_key(|(i, t)| (**t, std::cmp::Reverse(*i)))
            .map(|(i, _)| i)
            .unwrap_or(0);
        Ok(feasible[best].name().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, cpu: &str, extra: serde_json::Value) -> NodeInfo {
        let mut v = json!({"metadata": {"name": name}, "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"}}});
        if let Some(spec) = extra.get("spec") {
            v["spec"] = spec.clone();
        }
        NodeInfo::new(serde_json::from_value(v).expect("node"))
    }

    fn pod(cpu: &str) -> Pod {
        serde_json::from_value(json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": "1Gi"}}}]}})).expect("pod")
    }

    #[test]
    fn the_emptiest_node_wins_by_default_and_the_fullest_when_packing() {
        let mut busy = node("busy", "4", json!({}));
        busy.add_pod(&pod("2"));
        let nodes = vec![busy, node("idle", "4", json!({}))];
        assert_eq!(
            Profile::default_with(Strategy::LeastAllocated).schedule(&pod("1"), &nodes),
            Ok("idle".into())
        );
        assert_eq!(
            Profile::default_with(Strategy::MostAllocated).schedule(&pod("1"), &nodes),
            Ok("busy".into())
        );
    }

    #[test]
    fn no_fit_is_explained_node_by_node() {
        let nodes = vec![
            node("small", "1", json!({})),
            node("tiny", "500m", json!({})),
            node(
                "tainted",
                "8",
                json!({"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}}),
            ),
        ];
        let err = Profile::default_with(Strategy::LeastAllocated)
            .schedule(&pod("2"), &nodes)
            .expect_err("nothing fits");
        assert_eq!(
            err.to_string(),
            "0/3 nodes are available: 2 Insufficient cpu, 1 node(s) had untolerated taint {dedicated: db}."
        );
    }
}
