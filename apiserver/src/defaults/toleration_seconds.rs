//! DefaultTolerationSeconds, Kubernetes' admission plugin of that name: a pod that does
//! not tolerate the `node.kubernetes.io/not-ready` or `node.kubernetes.io/unreachable`
//! NoExecute taint gets a toleration of it for a limited time (300 s by default), so that
//! its node failing evicts it after that time rather than at once. Applied to pods written
//! through the main resource (create, update, patch), as Kubernetes applies it; a pod that
//! already tolerates the taint (a toleration with that key or no key, and effect NoExecute
//! or none) is left as it is.

use serde_json::{Value, json};

/// The taint of a node reporting not ready.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The taint of a node that stopped reporting.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

/// The seconds of the added tolerations (`--default-not-ready-toleration-seconds`,
/// `--default-unreachable-toleration-seconds`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DefaultTolerationSeconds {
    /// tolerationSeconds for not-ready.
    pub not_ready: i64,
    /// tolerationSeconds for unreachable.
    pub unreachable: i64,
}

impl Default for DefaultTolerationSeconds {
    fn default() -> Self {
        DefaultTolerationSeconds {
            not_ready: 300,
            unreachable: 300,
        }
    }
}

/// Does a toleration (as JSON) already cover the NoExecute taint `key`?
fn covers(t: &Value, key: &str) -> bool {
    let k = t["key"].as_str().unwrap_or_default();
    let effect = t["effect"].as_str().unwrap_or_default();
    (k.is_empty() || k == key) && (effect.is_empty() || effect == "NoExecute")
}

/// Adds the missing default tolerations to a pod (a JSON object with a `spec`); a pod
/// without a spec object is left for validation to refuse.
pub fn add_default_tolerations(pod: &mut Value, seconds: &DefaultTolerationSeconds) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let list = spec.entry("tolerations").or_insert_with(|| json!([]));
    if list.is_null() {
        *list = json!([]);
    }
    let Some(list) = list.as_array_mut() else {
        return;
    };
    for (key, secs) in [
        (NOT_READY, seconds.not_ready),
        (UNREACHABLE, seconds.unreachable),
    ] {
        if !list.iter().any(|t| covers(t, key)) {
            list.push(json!({
                "key": key,
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": secs,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tolerations(pod: &Value) -> Vec<(String, Option<i64>)> {
        pod["spec"]["tolerations"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                (
                    t["key"].as_str().unwrap_or_default().to_string(),
                    t["tolerationSeconds"].as_i64(),
                )
            })
            .collect()
    }

    #[test]
    fn a_pod_without_tolerations_gets_both_for_five_minutes() {
        let mut pod = json!({"spec": {"containers": [{"name": "c", "image": "x"}]}});
        add_default_tolerations(&mut pod, &DefaultTolerationSeconds::default());
        assert_eq!(
            tolerations(&pod),
            vec![
                (NOT_READY.to_string(), Some(300)),
                (UNREACHABLE.to_string(), Some(300))
            ]
        );
        assert_eq!(pod["spec"]["tolerations"][0]["operator"], "Exists");
        assert_eq!(pod["spec"]["tolerations"][0]["effect"], "NoExecute");
        let again = pod.clone();
        add_default_tolerations(&mut pod, &DefaultTolerationSeconds::default());
        assert_eq!(pod, again, "applying twice changes nothing");
    }

    #[test]
    fn an_existing_toleration_of_the_taint_is_kept() {
        let mut pod = json!({"spec": {"tolerations": [
            {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 6000},
            {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}
        ]}});
        let seconds = DefaultTolerationSeconds {
            not_ready: 2,
            unreachable: 3,
        };
        add_default_tolerations(&mut pod, &seconds);
        assert_eq!(
            tolerations(&pod),
            vec![
                (UNREACHABLE.to_string(), Some(6000)),
                ("dedicated".to_string(), None),
                (NOT_READY.to_string(), Some(2))
            ]
        );
        // Tolerating every taint (no key, no effect) covers both.
        let mut all = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        add_default_tolerations(&mut all, &seconds);
        assert_eq!(tolerations(&all).len(), 1);
        // A NoSchedule toleration of the key does not cover the NoExecute taint.
        let mut no_schedule = json!({"spec": {"tolerations": [
            {"key": NOT_READY, "operator": "Exists", "effect": "NoSchedule"}]}});
        add_default_tolerations(&mut no_schedule, &seconds);
        assert_eq!(tolerations(&no_schedule).len(), 3);
        let mut no_spec = json!({"metadata": {}});
        add_default_tolerations(&mut no_spec, &seconds);
        assert!(no_spec.get("spec").is_none());
    }
}
