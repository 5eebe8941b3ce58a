//! NodeAffinity: a pod's nodeSelector and required node affinity must match the node's
//! labels (operators In, NotIn, Exists, DoesNotExist, Gt, Lt; terms are ORed, expressions
//! within a term ANDed); preferred terms add their weights to the score.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm};

use super::{FilterPlugin, NodeInfo, PodInfo, ScorePlugin, Status, default_normalize};

/// Kubernetes' reason.
pub const REASON: &str = "node(s) didn't match Pod's node affinity/selector";

fn requirement_matches(r: &NodeSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let value = labels.get(&r.key);
    let number = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => {
            matches!((value.and_then(|v| number(v)), values.first().and_then(|v| number(v))), (Some(a), Some(b)) if a > b)
        }
        "Lt" => {
            matches!((value.and_then(|v| number(v)), values.first().and_then(|v| number(v))), (Some(a), Some(b)) if a < b)
        }
        _ => false,
    }
}

/// Does a node selector term match? (An empty term matches nothing, as in Kubernetes.)
pub fn term_matches(term: &NodeSelectorTerm, labels: &BTreeMap<String, String>) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    if exprs.is_empty() {
        return false;
    }
    exprs.iter().all(|r| requirement_matches(r, labels))
}

/// The plugin (filter and score).
pub struct NodeAffinity;

impl FilterPlugin for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(spec) = pod.pod.spec.as_ref() else {
            return Status::Success;
        };
        // The node's labels are read only when the pod asks about them: most pods do not,
        // and reading them touches every node's object.
        let labels = || node.labels();
        let selector_ok = spec
            .node_selector
            .iter()
            .flatten()
            .all(|(k, v)| labels().get(k) == Some(v));
        let required = spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|na| {
                na.required_during_scheduling_ignored_during_execution
                    .as_ref()
            });
        let affinity_ok = required.is_none_or(|r| {
            r.node_selector_terms
                .iter()
                .any(|t| term_matches(t, labels()))
        });
        if selector_ok && affinity_ok {
            Status::Success
        } else {
            Status::UnschedulableAndUnresolvable(vec![REASON.into()])
        }
    }
}

impl ScorePlugin for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }

    /// The sum of the weights of the preferred terms the node matches (then normalised so
    /// the best node scores 100).
    fn score(&self, pod: &PodInfo, node: &NodeInfo) -> i64 {
        pod.pod
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|na| {
                na.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .into_iter()
            .flatten()
            .filter(|p| term_matches(&p.preference, node.labels()))
            .map(|p| i64::from(p.weight))
            .sum()
    }

    fn normalize(&self, _: &PodInfo, _: &[&NodeInfo], scores: &mut [i64]) {
        default_normalize(scores, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(labels: serde_json::Value) -> NodeInfo {
        NodeInfo::new(
            serde_json::from_value(json!({"metadata": {"name": "n", "labels": labels}}))
                .expect("node"),
        )
    }

    fn pod(spec: serde_json::Value) -> PodInfo {
        PodInfo::new(std::sync::Arc::new(
            serde_json::from_value(json!({"spec": spec})).expect("pod"),
        ))
    }

    #[test]
    fn every_operator_matches_as_kubernetes_matches() {
        let n = node(json!({"zone": "a", "cores": "8"}));
        let with = |op: &str, key: &str, values: serde_json::Value| {
            pod(
                json!({"containers": [], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": key, "operator": op, "values": values}]}]}}}}),
            )
        };
        let cases = [
            ("In", "zone", json!(["a", "b"]), true),
            ("In", "zone", json!(["c"]), false),
            ("NotIn", "zone", json!(["c"]), true),
            ("NotIn", "gpu", json!(["x"]), true),
            ("Exists", "zone", json!(null), true),
            ("DoesNotExist", "zone", json!(null), false),
            ("Gt", "cores", json!(["4"]), true),
            ("Lt", "cores", json!(["4"]), false),
        ];
        for (op, key, values, want) in cases {
            assert_eq!(
                NodeAffinity
                    .filter(&with(op, key, values.clone()), &n)
                    .is_success(),
                want,
                "{op} {key} {values}"
            );
        }
        assert!(
            NodeAffinity
                .filter(
                    &pod(json!({"containers": [], "nodeSelector": {"zone": "a"}})),
                    &n
                )
                .is_success()
        );
        assert!(
            !NodeAffinity
                .filter(
                    &pod(json!({"containers": [], "nodeSelector": {"zone": "b"}})),
                    &n
                )
                .is_success()
        );
    }

    #[test]
    fn preferred_terms_add_their_weights() {
        let n = node(json!({"zone": "a"}));
        let p = pod(
            json!({"containers": [], "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 30, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}},
                {"weight": 50, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}}
            ]}}}),
        );
        assert_eq!(ScorePlugin::score(&NodeAffinity, &p, &n), 30);
    }
}
