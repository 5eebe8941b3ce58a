//! BalancedAllocation: favours nodes whose cpu and memory would be used in similar
//! proportions, so neither runs out while the other sits idle.

use super::{MAX_NODE_SCORE, NodeInfo, PodInfo, ScorePlugin};

/// The plugin.
pub struct BalancedAllocation;

impl ScorePlugin for BalancedAllocation {
    fn name(&self) -> &'static str {
        "NodeResourcesBalancedAllocation"
    }

    /// 100 × (1 − standard deviation of the cpu and memory fractions), as Kubernetes scores
    /// two resources (the deviation of two values is half their difference).
    fn score(&self, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let requests = &pod.requests;
        let (a, used) = (&node.allocatable, &node.requested);
        if a.milli_cpu <= 0 || a.memory <= 0 {
            return 0;
        }
        let cpu = ((used.milli_cpu + requests.milli_cpu) as f64 / a.milli_cpu as f64).min(1.0);
        let mem = ((used.memory + requests.memory) as f64 / a.memory as f64).min(1.0);
        let std = (cpu - mem).abs() / 2.0;
        ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::requesting;
    use crate::resources::Resources;
    use serde_json::json;

    #[test]
    fn balanced_use_scores_higher() {
        let n = NodeInfo::new(serde_json::from_value(json!({"metadata": {"name": "n"}, "status": {"allocatable": {"cpu": "4", "memory": "4Gi"}}})).expect("node"));
        let even = Resources {
            milli_cpu: 2000,
            memory: 2 << 30,
            ..Default::default()
        };
        let skewed = Resources {
            milli_cpu: 4000,
            memory: 0,
            ..Default::default()
        };
        assert_eq!(BalancedAllocation.score(&requesting(even), &n), 100);
        assert_eq!(BalancedAllocation.score(&requesting(skewed), &n), 50);
    }
}
