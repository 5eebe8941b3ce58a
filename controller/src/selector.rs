//! Label selectors (`matchLabels` and `matchExpressions` with In, NotIn, Exists,
//! DoesNotExist), as Kubernetes evaluates them: every requirement must hold.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Do `labels` satisfy `selector`? An empty selector matches everything (controllers
/// refuse those before asking, as the API server does).
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    by_labels
        && selector.match_expressions.iter().flatten().all(|r| {
            let values = r.values.as_deref().unwrap_or_default();
            let value = labels.get(&r.key);
            match r.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

/// Does `selector` select an object with these (possibly absent) labels? Borrows them:
/// handlers ask this for every object on every event.
pub fn matches_opt(selector: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    static NONE: BTreeMap<String, String> = BTreeMap::new();
    matches(selector, labels.unwrap_or(&NONE))
}

/// Does the selector select nothing in particular (no requirement at all)?
pub fn is_empty(selector: &LabelSelector) -> bool {
    selector
        .match_labels
        .as_ref()
        .is_none_or(BTreeMap::is_empty)
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(Vec::is_empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(v: serde_json::Value) -> LabelSelector {
        serde_json::from_value(v).expect("selector")
    }

    #[test]
    fn every_requirement_must_hold() {
        let labels = BTreeMap::from([
            ("app".to_string(), "web".to_string()),
            ("tier".to_string(), "front".to_string()),
        ]);
        assert!(matches(
            &sel(serde_json::json!({"matchLabels": {"app": "web"}})),
            &labels
        ));
        assert!(!matches(
            &sel(serde_json::json!({"matchLabels": {"app": "db"}})),
            &labels
        ));
        assert!(matches(
            &sel(serde_json::json!({"matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["front", "edge"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "app", "operator": "NotIn", "values": ["db"]},
                {"key": "app", "operator": "Exists"}
            ]})),
            &labels
        ));
        assert!(!matches(
            &sel(
                serde_json::json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["back"]}]})
            ),
            &labels
        ));
        assert!(is_empty(&sel(serde_json::json!({}))));
    }
}
