//! SelectorSpread: pods of the same owner (the ReplicaSet or StatefulSet that controls
//! them) are spread across nodes and, where nodes carry the
//! `topology.kubernetes.io/zone` label, across zones, so that losing one machine or one
//! zone takes as few of a workload's replicas as possible. Kubernetes weighs the zone two
//! thirds and the node one third; so does this.

use std::collections::HashMap;

use super::{MAX_NODE_SCORE, NodeInfo, PodInfo, ScorePlugin};

/// The plugin.
pub struct SelectorSpread;

impl ScorePlugin for SelectorSpread {
    fn name(&self) -> &'static str {
        "SelectorSpread"
    }

    /// The raw score: how many pods of the same owner the node already has.
    fn score(&self, pod: &PodInfo, node: &NodeInfo) -> i64 {
        pod.owner
            .as_ref()
            .and_then(|o| node.owners.get(o))
            .map_or(0, |n| i64::from(*n))
    }

    /// Fewer siblings scores higher, on the node and in its zone.
    fn normalize(&self, _: &PodInfo, nodes: &[&NodeInfo], scores: &mut [i64]) {
        let max_node = scores.iter().copied().max().unwrap_or(0);
        let mut by_zone: HashMap<&str, i64> = HashMap::new();
        for (n, s) in nodes.iter().zip(scores.iter()) {
            if let Some(z) = n.zone.as_deref() {
                *by_zone.entry(z).or_default() += s;
            }
        }
        let max_zone = by_zone.values().copied().max().unwrap_or(0);
        let fewer = |count: i64, max: i64| {
            if max > 0 {
                MAX_NODE_SCORE * (max - count) / max
            } else {
                MAX_NODE_SCORE
            }
        };
        for (n, s) in nodes.iter().zip(scores.iter_mut()) {
            let node_score = fewer(*s, max_node);
            *s = match n.zone.as_deref().and_then(|z| by_zone.get(z)) {
                Some(zone_count) => (node_score + 2 * fewer(*zone_count, max_zone)) / 3,
                None => node_score,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn replica() -> PodInfo {
        PodInfo::new(Arc::new(
            serde_json::from_value(json!({"metadata": {"name": "r", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "rs-1", "controller": true}]}, "spec": {"containers": []}}))
                .expect("pod"),
        ))
    }

    fn node(name: &str, zone: Option<&str>, siblings: usize) -> NodeInfo {
        let mut labels = serde_json::Map::new();
        if let Some(z) = zone {
            labels.insert("topology.kubernetes.io/zone".into(), z.into());
        }
        let mut n = NodeInfo::new(
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))
                .expect("node"),
        );
        for _ in 0..siblings {
            n.add_pod(&replica());
        }
        n
    }

    fn scores(nodes: &[NodeInfo]) -> Vec<i64> {
        let pod = replica();
        let refs: Vec<&NodeInfo> = nodes.iter().collect();
        let mut s: Vec<i64> = refs.iter().map(|n| SelectorSpread.score(&pod, n)).collect();
        SelectorSpread.normalize(&pod, &refs, &mut s);
        s
    }

    #[test]
    fn the_node_with_fewest_siblings_scores_highest() {
        assert_eq!(
            scores(&[node("a", None, 2), node("b", None, 1), node("c", None, 0)]),
            vec![0, 50, 100]
        );
        assert_eq!(
            scores(&[node("a", None, 0), node("b", None, 0)]),
            vec![100, 100],
            "no siblings anywhere: no preference"
        );
    }

    #[test]
    fn zones_weigh_two_thirds() {
        // Zone x holds 2 siblings on one node, zone y holds 1: an empty node in zone y
        // beats an empty node in zone x.
        let s = scores(&[
            node("x1", Some("x"), 2),
            node("x2", Some("x"), 0),
            node("y1", Some("y"), 1),
            node("y2", Some("y"), 0),
        ]);
        assert_eq!(s, vec![0, 33, 50, 66]);
        assert!(s[3] > s[1]);
    }

    #[test]
    fn pods_without_an_owner_are_not_spread() {
        let loner = PodInfo::new(Arc::new(Default::default()));
        let n = node("a", None, 3);
        assert_eq!(SelectorSpread.score(&loner, &n), 0);
    }
}
