//! A scheduling profile: the filters every node must pass and the weighted scores that rank
//! the rest, and the explanation when no node passes, in Kubernetes' words ("0/3 nodes are
//! available: 1 Insufficient cpu, 2 node(s) had untolerated taint {…}.").

use std::collections::BTreeMap;
use std::fmt;

use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

use crate::config::ProfileConfig;
use crate::plugins::node_resources_fit::{Fit, Score, Strategy};
use crate::plugins::{
    FilterPlugin, NodeInfo, PodInfo, ScorePlugin, Status, balanced_allocation::BalancedAllocation,
    node_affinity::NodeAffinity, node_name::NodeName, node_ports::NodePorts,
    node_readiness::NodeReadiness, node_unschedulable::NodeUnschedulable,
    selector_spread::SelectorSpread, taint_toleration::TaintToleration,
};

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

/// Below this many nodes, every node is checked.
pub const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// The adaptive percentage never drops below this.
pub const MIN_FEASIBLE_NODES_PERCENTAGE: usize = 5;

/// How many feasible nodes to find before scoring (Kubernetes' numFeasibleNodesToFind):
/// all of a small cluster; of a large one, a share that shrinks from 50 % as the cluster
/// grows (50 − nodes/125, at least 5 %), or the configured percentage; never fewer than 100.
pub fn feasible_nodes_to_find(percentage: Option<u32>, nodes: usize) -> usize {
    if nodes < MIN_FEASIBLE_NODES_TO_FIND || percentage.is_some_and(|p| p >= 100) {
        return nodes;
    }
    let pct = match percentage {
        Some(p) => p as usize,
        None => 50usize
            .saturating_sub(nodes / 125)
            .max(MIN_FEASIBLE_NODES_PERCENTAGE),
    };
    (nodes * pct / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
}

/// One scheduling profile: filters, weighted scores, and where the next search starts.
pub struct Profile {
    filters: Vec<Box<dyn FilterPlugin>>,
    scores: Vec<(Box<dyn ScorePlugin>, i64)>,
    percentage: Option<u32>,
    /// Searches start where the last one stopped, so every node gets its turn to be
    /// considered when only a sample is.
    next_start: AtomicUsize,
}

fn filter_plugin(name: &str) -> Option<Box<dyn FilterPlugin>> {
    Some(match name {
        "NodeUnschedulable" => Box::new(NodeUnschedulable),
        "NodeName" => Box::new(NodeName),
        "NodeReadiness" => Box::new(NodeReadiness),
        "TaintToleration" => Box::new(TaintToleration),
        "NodeAffinity" => Box::new(NodeAffinity),
        "NodePorts" => Box::new(NodePorts),
        "NodeResourcesFit" => Box::new(Fit),
        _ => return None,
    })
}

fn score_plugin(name: &str, strategy: Strategy) -> Option<Box<dyn ScorePlugin>> {
    Some(match name {
        "NodeResourcesFit" => Box::new(Score(strategy)),
        "NodeResourcesBalancedAllocation" => Box::new(BalancedAllocation),
        "NodeAffinity" => Box::new(NodeAffinity),
        "TaintToleration" => Box::new(TaintToleration),
        "SelectorSpread" => Box::new(SelectorSpread),
        _ => return None,
    })
}

impl Profile {
    /// The profile a validated configuration describes.
    pub fn new(cfg: &ProfileConfig, percentage: Option<u32>) -> Self {
        Profile {
            // Names were checked against the same lists when the configuration was read.
            filters: cfg
                .filters
                .iter()
                .filter_map(|n| filter_plugin(n))
                .collect(),
            scores: cfg
                .scores
                .iter()
                .filter_map(|(n, w)| Some((score_plugin(n, cfg.strategy)?, *w)))
                .collect(),
            percentage,
            next_start: AtomicUsize::new(0),
        }
    }

    /// Kubernetes' default plugins and weights, with the given resource strategy.
    pub fn default_with(strategy: Strategy) -> Self {
        let mut cfg = ProfileConfig::default_named("default-scheduler");
        cfg.strategy = strategy;
        Self::new(&cfg, None)
    }

    fn passes(
        &self,
        pod: &PodInfo,
        node: &NodeInfo,
        reasons: &mut BTreeMap<String, usize>,
    ) -> bool {
        for f in &self.filters {
            match f.filter(pod, node) {
                Status::Success => {}
                Status::Unschedulable(rs) | Status::UnschedulableAndUnresolvable(rs) => {
                    for r in rs {
                        *reasons.entry(r).or_default() += 1;
                    }
                    return false;
                }
            }
        }
        true
    }

    /// Filter, then score: the node that fits the pod best, or why none does. Only a
    /// sample of a large cluster's feasible nodes is scored (see
    /// [`feasible_nodes_to_find`]); ties go to the node found first.
    pub fn schedule<N: AsRef<NodeInfo>>(
        &self,
        pod: &PodInfo,
        nodes: &[N],
    ) -> Result<String, FitError> {
        let total = nodes.len();
        if total == 0 {
            return Err(FitError {
                nodes: 0,
                reasons: BTreeMap::new(),
            });
        }
        let want = feasible_nodes_to_find(self.percentage, total);
        let start = self.next_start.load(AtomicOrdering::Relaxed) % total;
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let mut feasible: Vec<&NodeInfo> = Vec::with_capacity(want.min(total));
        let mut processed = 0;
        for i in 0..total {
            let n = nodes[(start + i) % total].as_ref();
            processed += 1;
            if self.passes(pod, n, &mut reasons) {
                feasible.push(n);
                if feasible.len() >= want {
                    break;
                }
            }
        }
        self.next_start
            .store((start + processed) % total, AtomicOrdering::Relaxed);
        if feasible.is_empty() {
            return Err(FitError {
                nodes: total,
                reasons,
            });
        }
        if feasible.len() == 1 {
            return Ok(feasible[0].name().to_string());
        }
        let mut totals = vec![0i64; feasible.len()];
        let mut scores = vec![0i64; feasible.len()];
        for (plugin, weight) in &self.scores {
            for (s, n) in scores.iter_mut().zip(&feasible) {
                *s = plugin.score(pod, n);
            }
            plugin.normalize(pod, &feasible, &mut scores);
            for (t, s) in totals.iter_mut().zip(&scores) {
                *t += s * weight;
            }
        }
        let best = totals
            .iter()
            .enumerate()
            .max_by_key(|(i, t)| (**t, std::cmp::Reverse(*i)))
            .map_or(0, |(i, _)| i);
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

    fn pod(cpu: &str) -> PodInfo {
        PodInfo::new(std::sync::Arc::new(serde_json::from_value(json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": "1Gi"}}}]}})).expect("pod")))
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

    #[test]
    fn large_clusters_are_sampled_as_kubernetes_samples_them() {
        assert_eq!(feasible_nodes_to_find(None, 50), 50, "small: all");
        assert_eq!(feasible_nodes_to_find(None, 500), 230, "50% - 4%");
        assert_eq!(feasible_nodes_to_find(None, 5000), 500, "50% - 40%");
        assert_eq!(feasible_nodes_to_find(None, 100_000), 5000, "at least 5%");
        assert_eq!(
            feasible_nodes_to_find(Some(1), 1000),
            100,
            "never fewer than 100"
        );
        assert_eq!(feasible_nodes_to_find(Some(100), 5000), 5000);
    }

    #[test]
    fn each_search_starts_where_the_last_stopped() {
        let nodes: Vec<NodeInfo> = (0..300)
            .map(|i| node(&format!("n{i:03}"), "4", json!({})))
            .collect();
        let mut cfg = ProfileConfig::default_named("s");
        cfg.scores.clear();
        let profile = Profile::new(&cfg, Some(1));
        // With no scores, the first of the 100 feasible nodes found wins.
        assert_eq!(profile.schedule(&pod("1"), &nodes), Ok("n000".into()));
        assert_eq!(profile.schedule(&pod("1"), &nodes), Ok("n100".into()));
        assert_eq!(profile.schedule(&pod("1"), &nodes), Ok("n200".into()));
        assert_eq!(profile.schedule(&pod("1"), &nodes), Ok("n000".into()));
    }
}
