//! TaintToleration: a node's NoSchedule and NoExecute taints keep out pods that do not
//! tolerate them; PreferNoSchedule taints only lower the score.

use k8s_openapi::api::core::v1::{Pod, Taint, Toleration};

use super::{FilterPlugin, MAX_NODE_SCORE, NodeInfo, ScorePlugin, Status};
use crate::resources::Resources;

/// Does the toleration tolerate the taint? (Kubernetes' `ToleratesTaint`.)
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = t.effect.as_deref().filter(|e| !e.is_empty())
        && e != taint.effect
    {
        return false;
    }
    let key = t.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            t.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

fn tolerations(pod: &Pod) -> &[Toleration] {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default()
}

fn taints(node: &NodeInfo) -> &[Taint] {
    node.node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

/// The plugin (filter and score).
pub struct TaintToleration;

impl FilterPlugin for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }

    fn filter(&self, pod: &Pod, _: &Resources, node: &NodeInfo) -> Status {
        let untolerated = taints(node)
            .iter()
            .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
            .find(|taint| !tolerations(pod).iter().any(|t| tolerates(t, taint)));
        match untolerated {
            None => Status::Success,
            Some(t) => {
                let value = t
                    .value
                    .as_deref()
                    .map(|v| format!(": {v}"))
                    .unwrap_or_default();
                Status::UnschedulableAndUnresolvable(vec![format!(
                    "node(s) had untolerated taint {{{}{value}}}",
                    t.key
                )])
            }
        }
    }
}

impl ScorePlugin for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }

    /// Fewer untolerated PreferNoSchedule taints score higher (100 with none).
    fn score(&self, pod: &Pod, _: &Resources, node: &NodeInfo) -> i64 {
        let prefer: Vec<&Taint> = taints(node)
            .iter()
            .filter(|t| t.effect == "PreferNoSchedule")
            .collect();
        if prefer.is_empty() {
            return MAX_NODE_SCORE;
        }
        let bad = prefer
            .iter()
            .filter(|taint| !tolerations(pod).iter().any(|t| tolerates(t, taint)))
            .count() as i64;
        MAX_NODE_SCORE - bad * MAX_NODE_SCORE / prefer.len() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(taints: serde_json::Value) -> NodeInfo {
        NodeInfo::new(
            serde_json::from_value(json!({"metadata": {"name": "n"}, "spec": {"taints": taints}}))
                .expect("node"),
        )
    }

    fn pod(tolerations: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"spec": {"containers": [], "tolerations": tolerations}}))
            .expect("pod")
    }

    #[test]
    fn untolerated_taints_keep_pods_out() {
        let n = node(json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]));
        let r = Resources::default();
        assert_eq!(
            TaintToleration.filter(&pod(json!([])), &r, &n),
            Status::UnschedulableAndUnresolvable(vec![
                "node(s) had untolerated taint {dedicated: gpu}".into()
            ])
        );
        assert!(
            TaintToleration
                .filter(
                    &pod(json!([{"key": "dedicated", "operator": "Equal", "value": "gpu"}])),
                    &r,
                    &n
                )
                .is_success()
        );
        assert!(
            TaintToleration
                .filter(
                    &pod(
                        json!([{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}])
                    ),
                    &r,
                    &n
                )
                .is_success()
        );
        assert!(
            TaintToleration
                .filter(&pod(json!([{"operator": "Exists"}])), &r, &n)
                .is_success(),
            "an empty key with Exists tolerates everything"
        );
        assert!(
            !TaintToleration
                .filter(&pod(json!([{"key": "dedicated", "value": "cpu"}])), &r, &n)
                .is_success()
        );
        assert!(
            !TaintToleration
                .filter(
                    &pod(
                        json!([{"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}])
                    ),
                    &r,
                    &n
                )
                .is_success()
        );
    }

    #[test]
    fn prefer_no_schedule_only_lowers_the_score() {
        let n = node(json!([{"key": "spot", "effect": "PreferNoSchedule"}]));
        let r = Resources::default();
        assert!(TaintToleration.filter(&pod(json!([])), &r, &n).is_success());
        assert_eq!(
            ScorePlugin::score(&TaintToleration, &pod(json!([])), &r, &n),
            0
        );
        assert_eq!(
            ScorePlugin::score(
                &TaintToleration,
                &pod(json!([{"key": "spot", "operator": "Exists"}])),
                &r,
                &n
            ),
            100
        );
    }
}
