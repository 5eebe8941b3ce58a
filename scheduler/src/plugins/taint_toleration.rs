//! TaintToleration: a node's NoSchedule and NoExecute taints keep out pods that do not
//! tolerate them; PreferNoSchedule taints only lower the score.

use k8s_openapi::api::core::v1::{Pod, Taint, Toleration};

use super::{FilterPlugin, MAX_NODE_SCORE, NodeInfo, PodInfo, ScorePlugin, Status};

pub use flotilla_client::taints::tolerates;

fn tolerations(pod: &Pod) -> &[Toleration] {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default()
}

/// Kubernetes' reason for a taint a pod does not tolerate: `{key: value}`, the value
/// empty when the taint has none.
pub fn untolerated_reason(t: &Taint) -> String {
    format!(
        "node(s) had untolerated taint {{{}: {}}}",
        t.key,
        t.value.as_deref().unwrap_or_default()
    )
}

/// The plugin (filter and score).
pub struct TaintToleration;

impl FilterPlugin for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Status {
        let untolerated = node
            .taints()
            .iter()
            .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
            .find(|taint| !tolerations(&pod.pod).iter().any(|t| tolerates(t, taint)));
        match untolerated {
            None => Status::Success,
            Some(t) => Status::UnschedulableAndUnresolvable(vec![untolerated_reason(t)]),
        }
    }
}

impl ScorePlugin for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }

    /// Fewer untolerated PreferNoSchedule taints score higher (100 with none).
    fn score(&self, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let prefer: Vec<&Taint> = node
            .taints()
            .iter()
            .filter(|t| t.effect == "PreferNoSchedule")
            .collect();
        if prefer.is_empty() {
            return MAX_NODE_SCORE;
        }
        let bad = prefer
            .iter()
            .filter(|taint| !tolerations(&pod.pod).iter().any(|t| tolerates(t, taint)))
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

    fn pod(tolerations: serde_json::Value) -> PodInfo {
        PodInfo::new(std::sync::Arc::new(
            serde_json::from_value(json!({"spec": {"containers": [], "tolerations": tolerations}}))
                .expect("pod"),
        ))
    }

    #[test]
    fn untolerated_taints_keep_pods_out() {
        let n = node(json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]));
        assert_eq!(
            TaintToleration.filter(&pod(json!([])), &n),
            Status::UnschedulableAndUnresolvable(vec![
                "node(s) had untolerated taint {dedicated: gpu}".into()
            ])
        );
        assert!(
            TaintToleration
                .filter(
                    &pod(json!([{"key": "dedicated", "operator": "Equal", "value": "gpu"}])),
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
                    &n
                )
                .is_success()
        );
        assert!(
            TaintToleration
                .filter(&pod(json!([{"operator": "Exists"}])), &n)
                .is_success(),
            "an empty key with Exists tolerates everything"
        );
        assert!(
            !TaintToleration
                .filter(&pod(json!([{"key": "dedicated", "value": "cpu"}])), &n)
                .is_success()
        );
        assert!(
            !TaintToleration
                .filter(
                    &pod(
                        json!([{"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}])
                    ),
                    &n
                )
                .is_success()
        );
    }

    #[test]
    fn prefer_no_schedule_only_lowers_the_score() {
        let n = node(json!([{"key": "spot", "effect": "PreferNoSchedule"}]));
        assert!(TaintToleration.filter(&pod(json!([])), &n).is_success());
        assert_eq!(ScorePlugin::score(&TaintToleration, &pod(json!([])), &n), 0);
        assert_eq!(
            ScorePlugin::score(
                &TaintToleration,
                &pod(json!([{"key": "spot", "operator": "Exists"}])),
                &n
            ),
            100
        );
    }
}
