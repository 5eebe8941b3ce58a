//! `apply`: create-or-update with kubectl's client-side apply semantics. The manifest last
//! applied is kept in the `kubectl.kubernetes.io/last-applied-configuration` annotation; an
//! update is a three-way merge of (last applied, new manifest, live object): a field the
//! new manifest drops is removed, a field it sets is set, and fields only the system set
//! (status, clusterIP, defaults) stay.

use serde_json::{Map, Value};

/// The annotation holding the last applied manifest.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The manifest as it is recorded: without the annotation itself.
pub fn last_applied_of(manifest: &Value) -> Value {
    let mut m = manifest.clone();
    if let Some(ann) = m
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        ann.remove(LAST_APPLIED);
        if ann.is_empty()
            && let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut)
        {
            meta.remove("annotations");
        }
    }
    m
}

/// The manifest with its own record attached (what is sent).
pub fn with_record(manifest: &Value) -> Value {
    let record = last_applied_of(manifest);
    let mut m = manifest.clone();
    if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
        let ann = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(ann) = ann.as_object_mut() {
            ann.insert(LAST_APPLIED.into(), Value::String(format!("{record}\n")));
        }
    }
    m
}

/// The last applied manifest recorded on a live object ({} when there is none).
pub fn recorded(live: &Value) -> Value {
    live["metadata"]["annotations"][LAST_APPLIED]
        .as_str()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_else(|| Value::Object(Map::new()))
}

/// The JSON merge patch taking `current` to what `modified` asks for, given that
/// `original` was applied before: removals come from original → modified, additions and
/// changes from current → modified. Lists are replaced whole (merge-patch semantics), and
/// only when the manifest changed them (there is no strategic merge by list keys).
pub fn three_way_merge_patch(original: &Value, modified: &Value, current: &Value) -> Value {
    let mut patch = Map::new();
    let empty = Map::new();
    let o = original.as_object().unwrap_or(&empty);
    let m = modified.as_object().unwrap_or(&empty);
    let c = current.as_object().unwrap_or(&empty);
    for (k, ov) in o {
        if !m.contains_key(k) && !ov.is_null() && c.contains_key(k) {
            patch.insert(k.clone(), Value::Null);
        }
    }
    for (k, mv) in m {
        let cv = c.get(k);
        match (mv, cv) {
            (Value::Object(_), Some(cv @ Value::Object(_))) => {
                let ov = o.get(k).cloned().unwrap_or(Value::Object(Map::new()));
                let sub = three_way_merge_patch(&ov, mv, cv);
                if sub.as_object().is_some_and(|s| !s.is_empty()) {
                    patch.insert(k.clone(), sub);
                }
            }
            (mv, Some(cv)) if mv == cv => {}
            // A merge patch replaces lists whole, and the live list carries what the server
            // filled in (protocols, node ports): a list is only sent when the manifest's
            // changed since it was last applied.
            (Value::Array(_), Some(_)) if o.get(k) == Some(mv) => {}
            (mv, _) => {
                patch.insert(k.clone(), mv.clone());
            }
        }
    }
    Value::Object(patch)
}

/// Is the patch a no-op?
pub fn is_empty(patch: &Value) -> bool {
    patch.as_object().is_none_or(Map::is_empty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Case {
        name: &'static str,
        original: Value,
        modified: Value,
        current: Value,
        patch: Value,
    }

    #[test]
    fn three_way_merges_follow_kubectl() {
        let cases = [
            Case {
                name: "a field removed from the manifest is removed",
                original: json!({"spec": {"replicas": 2, "paused": true}}),
                modified: json!({"spec": {"replicas": 2}}),
                current: json!({"spec": {"replicas": 2, "paused": true, "strategy": {"type": "RollingUpdate"}}}),
                patch: json!({"spec": {"paused": null}}),
            },
            Case {
                name: "a field added to the manifest is added",
                original: json!({"metadata": {"labels": {"a": "1"}}}),
                modified: json!({"metadata": {"labels": {"a": "1", "b": "2"}}}),
                current: json!({"metadata": {"labels": {"a": "1"}, "uid": "u"}}),
                patch: json!({"metadata": {"labels": {"b": "2"}}}),
            },
            Case {
                name: "a changed list is replaced whole",
                original: json!({"spec": {"ports": [{"port": 80}]}}),
                modified: json!({"spec": {"ports": [{"port": 80}, {"port": 443}]}}),
                current: json!({"spec": {"ports": [{"port": 80, "protocol": "TCP"}]}}),
                patch: json!({"spec": {"ports": [{"port": 80}, {"port": 443}]}}),
            },
            Case {
                name: "an unchanged list keeps what the server filled in",
                original: json!({"spec": {"ports": [{"port": 80}]}}),
                modified: json!({"spec": {"ports": [{"port": 80}]}}),
                current: json!({"spec": {"ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}]}}),
                patch: json!({}),
            },
            Case {
                name: "fields the system set stay",
                original: json!({"spec": {"type": "ClusterIP"}}),
                modified: json!({"spec": {"type": "ClusterIP"}}),
                current: json!({"spec": {"type": "ClusterIP", "clusterIP": "10.96.0.9"}, "status": {"loadBalancer": {}}}),
                patch: json!({}),
            },
            Case {
                name: "a value someone else changed is set back",
                original: json!({"spec": {"replicas": 2}}),
                modified: json!({"spec": {"replicas": 2}}),
                current: json!({"spec": {"replicas": 5}}),
                patch: json!({"spec": {"replicas": 2}}),
            },
            Case {
                name: "a field never applied is left alone even when absent from the manifest",
                original: json!({}),
                modified: json!({"spec": {}}),
                current: json!({"spec": {"replicas": 3}}),
                patch: json!({}),
            },
        ];
        for c in cases {
            assert_eq!(
                three_way_merge_patch(&c.original, &c.modified, &c.current),
                c.patch,
                "{}",
                c.name
            );
        }
    }

    #[test]
    fn the_record_is_the_manifest_without_itself() {
        let m = json!({"metadata": {"name": "a"}, "data": {"k": "v"}});
        let sent = with_record(&m);
        let rec = recorded(&sent);
        assert_eq!(rec, m);
        assert_eq!(last_applied_of(&sent), m);
    }
}
