//! The taints the node lifecycle controller owns, computed from a node's conditions, and
//! tolerations matched against taints as Kubernetes matches them.
//!
//! NoSchedule taints follow the conditions at once (they only keep new pods away);
//! NoExecute taints (which evict) are added through the rate-limited tainting queue and
//! removed at once when the node is Ready again.

use k8s_openapi::api::core::v1::{Node, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The taint of a node whose agent reports it not ready.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The taint of a node that stopped reporting.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint of a cordoned node.
pub const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// Keeps new pods off.
pub const NO_SCHEDULE: &str = "NoSchedule";
/// Evicts pods that do not tolerate it.
pub const NO_EXECUTE: &str = "NoExecute";

/// Every NoSchedule taint key this controller sets and clears. Kubernetes also taints
/// nodes under memory, disk or PID pressure; Flotilla does not yet: its agents do not
/// evict under pressure either, and the two belong together (a node just under its disk
/// threshold would otherwise take no new pod while keeping every old one).
const OWNED_NO_SCHEDULE: [&str; 3] = [NOT_READY, UNREACHABLE, UNSCHEDULABLE];

/// The status ("True", "False", "Unknown") of a node condition, if the node has it.
pub fn condition_status<'a>(node: &'a Node, type_: &str) -> Option<&'a str> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.as_str())
}

/// The NoSchedule taint keys a node's conditions and spec call for (Kubernetes'
/// `doNoScheduleTaintingPass`): Ready False or Unknown, a cordon.
pub fn wanted_no_schedule(node: &Node) -> Vec<&'static str> {
    let mut keys = Vec::new();
    match condition_status(node, "Ready") {
        Some("False") => keys.push(NOT_READY),
        Some("Unknown") => keys.push(UNREACHABLE),
        _ => {}
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        keys.push(UNSCHEDULABLE);
    }
    keys
}

/// The NoExecute taint key a Ready status calls for: not-ready for False, unreachable
/// for Unknown (the two are exclusive, as the condition is), none for True or no
/// condition yet.
pub fn no_execute_key(ready: Option<&str>) -> Option<&'static str> {
    match ready {
        Some("False") => Some(NOT_READY),
        Some("Unknown") => Some(UNREACHABLE),
        _ => None,
    }
}

fn taints_of(node: &Node) -> &[Taint] {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

/// Does the node carry the taint `key:effect`?
pub fn has_taint(node: &Node, key: &str, effect: &str) -> bool {
    taints_of(node)
        .iter()
        .any(|t| t.key == key && t.effect == effect)
}

/// The node's NoExecute taints.
pub fn no_execute_taints(node: &Node) -> Vec<Taint> {
    taints_of(node)
        .iter()
        .filter(|t| t.effect == NO_EXECUTE)
        .cloned()
        .collect()
}

/// The node's taints with the controller's NoSchedule ones set to `wanted`, or None when
/// they already are. Every other taint is kept as it is.
pub fn with_no_schedule(node: &Node, wanted: &[&str]) -> Option<Vec<Taint>> {
    let current = taints_of(node);
    let owned = |t: &Taint| t.effect == NO_SCHEDULE && OWNED_NO_SCHEDULE.contains(&t.key.as_str());
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|k| !current.iter().any(|t| owned(t) && t.key == *k))
        .collect();
    let stale = current
        .iter()
        .any(|t| owned(t) && !wanted.contains(&t.key.as_str()));
    if missing.is_empty() && !stale {
        return None;
    }
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| !owned(t) || wanted.contains(&t.key.as_str()))
        .cloned()
        .collect();
    out.extend(missing.into_iter().map(|key| Taint {
        key: key.into(),
        effect: NO_SCHEDULE.into(),
        ..Default::default()
    }));
    Some(out)
}

/// The node's taints with its readiness NoExecute taint set to `wanted` (not-ready,
/// unreachable or none), or None when it already is. A new taint records `now` as its
/// timeAdded, the moment tolerationSeconds count from.
pub fn with_no_execute(
    node: &Node,
    wanted: Option<&str>,
    now: jiff::Timestamp,
) -> Option<Vec<Taint>> {
    let current = taints_of(node);
    let readiness =
        |t: &Taint| t.effect == NO_EXECUTE && (t.key == NOT_READY || t.key == UNREACHABLE);
    let has_wanted = wanted.is_none_or(|k| current.iter().any(|t| readiness(t) && t.key == k));
    let stale = current
        .iter()
        .any(|t| readiness(t) && Some(t.key.as_str()) != wanted);
    if has_wanted && !stale {
        return None;
    }
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| !readiness(t) || Some(t.key.as_str()) == wanted)
        .cloned()
        .collect();
    if !has_wanted && let Some(key) = wanted {
        out.push(Taint {
            key: key.into(),
            effect: NO_EXECUTE.into(),
            time_added: Some(Time(now)),
            value: None,
        });
    }
    Some(out)
}

pub use flotilla_client::taints::tolerates;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).expect("node")
    }

    fn keys(taints: &[Taint]) -> Vec<String> {
        taints
            .iter()
            .map(|t| format!("{}:{}", t.key, t.effect))
            .collect()
    }

    #[test]
    fn no_schedule_taints_follow_conditions_and_keep_foreign_taints() {
        let n = node(json!({
            "metadata": {"name": "n"},
            "spec": {"unschedulable": true, "taints": [
                {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
                {"key": NOT_READY, "effect": "NoSchedule"}
            ]},
            "status": {"conditions": [
                {"type": "Ready", "status": "Unknown"},
                {"type": "DiskPressure", "status": "True"}
            ]}
        }));
        let wanted = wanted_no_schedule(&n);
        assert_eq!(wanted, vec![UNREACHABLE, UNSCHEDULABLE]);
        let taints = with_no_schedule(&n, &wanted).expect("a change");
        assert_eq!(
            keys(&taints),
            vec![
                "dedicated:NoSchedule",
                "node.kubernetes.io/unreachable:NoSchedule",
                "node.kubernetes.io/unschedulable:NoSchedule"
            ]
        );
        let mut updated = n.clone();
        updated.spec.get_or_insert_with(Default::default).taints = Some(taints);
        assert!(with_no_schedule(&updated, &wanted).is_none(), "settled");
    }

    #[test]
    fn no_execute_taints_swap_and_clear() {
        let now = jiff::Timestamp::UNIX_EPOCH;
        let n = node(json!({"metadata": {"name": "n"}, "spec": {"taints": [
            {"key": NOT_READY, "effect": "NoExecute", "timeAdded": "2024-01-01T00:00:00Z"},
            {"key": "x", "effect": "NoExecute"}
        ]}}));
        let swapped = with_no_execute(&n, Some(UNREACHABLE), now).expect("swapped");
        assert_eq!(
            keys(&swapped),
            vec!["x:NoExecute", "node.kubernetes.io/unreachable:NoExecute"]
        );
        assert_eq!(swapped[1].time_added, Some(Time(now)));
        assert!(
            with_no_execute(&n, Some(NOT_READY), now).is_none(),
            "kept, with its time"
        );
        let cleared = with_no_execute(&n, None, now).expect("cleared");
        assert_eq!(keys(&cleared), vec!["x:NoExecute"]);
        assert_eq!(no_execute_key(Some("True")), None);
        assert_eq!(no_execute_key(None), None);
    }
}
