//! Taints and tolerations as Kubernetes matches them, shared by the scheduler (which keeps
//! pods off tainted nodes) and the node lifecycle controller (which evicts them).

use k8s_openapi::api::core::v1::{Taint, Toleration};

/// Does the toleration tolerate the taint? (Kubernetes' `ToleratesTaint`: an empty effect
/// matches every effect, an empty key with Exists matches every key, and Equal compares
/// values, absent ones as empty.)
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(v: serde_json::Value) -> Toleration {
        serde_json::from_value(v).expect("toleration")
    }

    #[test]
    fn tolerations_match_as_kubernetes_matches_them() {
        let taint: Taint = serde_json::from_value(
            json!({"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}),
        )
        .expect("taint");
        assert!(
            tolerates(&t(json!({"operator": "Exists"})), &taint),
            "empty key, Exists: all"
        );
        assert!(tolerates(
            &t(json!({"key": "dedicated", "operator": "Exists"})),
            &taint
        ));
        assert!(
            tolerates(&t(json!({"key": "dedicated", "value": "gpu"})), &taint),
            "Equal by default"
        );
        assert!(!tolerates(
            &t(json!({"key": "dedicated", "value": "cpu"})),
            &taint
        ));
        assert!(!tolerates(
            &t(json!({"key": "other", "operator": "Exists"})),
            &taint
        ));
        assert!(!tolerates(
            &t(json!({"key": "dedicated", "operator": "Exists", "effect": "NoExecute"})),
            &taint
        ));
        assert!(tolerates(
            &t(json!({"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"})),
            &taint
        ));
        assert!(
            !tolerates(&t(json!({"key": "dedicated", "operator": "Gt"})), &taint),
            "unknown operator"
        );
        let unreachable: Taint = serde_json::from_value(
            json!({"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}),
        )
        .expect("taint");
        assert!(
            tolerates(
                &t(json!({"key": "node.kubernetes.io/unreachable"})),
                &unreachable
            ),
            "Equal to an absent value"
        );
    }
}
