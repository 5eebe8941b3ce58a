//! ReplicaSets as a Deployment's revisions: the pod-template-hash that names them, the
//! revision annotations, which annotations a ReplicaSet inherits from its Deployment, and
//! which old revisions the history limit lets go. `flotctl rollout` reads revisions
//! through the same functions.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;

/// The label (and selector requirement) that tells a Deployment's ReplicaSets apart.
pub const HASH_LABEL: &str = "pod-template-hash";
/// The revision number, on Deployments and their ReplicaSets.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Earlier revision numbers a ReplicaSet carried (a rollback reuses a ReplicaSet).
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// The Deployment's replicas when the ReplicaSet was last scaled.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// The Deployment's replicas plus surge when the ReplicaSet was last scaled.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// Why a revision was made, shown by `rollout history`.
pub const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";

/// Annotations a ReplicaSet never takes from its Deployment (they are its own, or
/// client-side apply's record of the Deployment).
const NOT_COPIED: [&str; 5] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
];

/// Does an annotation belong to the Deployment alone?
pub fn is_own_annotation(key: &str) -> bool {
    NOT_COPIED.contains(&key) || key == "deprecated.deployment.rollback.to"
}

/// The pod-template-hash of a template: FNV-1a over its canonical JSON (and the
/// collision count, when there was a collision), spelled in the alphabet Kubernetes uses
/// so that names never form words or look like numbers.
pub fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let json = serde_json::to_vec(template).unwrap_or_default();
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    feed(&json);
    if let Some(c) = collision_count {
        feed(&c.to_le_bytes());
    }
    h.to_string()
        .bytes()
        .map(|d| char::from(ALPHABET[usize::from(d) % ALPHABET.len()]))
        .collect()
}

/// A template without the pod-template-hash label (what two revisions compare by).
pub fn without_hash(template: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = template.clone();
    if let Some(m) = t.metadata.as_mut()
        && let Some(labels) = m.labels.as_mut()
    {
        labels.remove(HASH_LABEL);
        if labels.is_empty() {
            m.labels = None;
        }
    }
    if let Some(m) = t.metadata.as_ref()
        && m == &Default::default()
    {
        t.metadata = None;
    }
    t
}

/// Is this ReplicaSet's template the Deployment's (apart from the hash label)?
pub fn same_template(rs: &ReplicaSet, d: &Deployment) -> bool {
    let t = rs.spec.template.clone().unwrap_or_default();
    without_hash(&t) == without_hash(&d.spec.template)
}

/// The revision number an object carries (0 when it has none).
pub fn revision_of(annotations: Option<&BTreeMap<String, String>>) -> i64 {
    annotations
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The ReplicaSet's revision.
pub fn rs_revision(rs: &ReplicaSet) -> i64 {
    revision_of(rs.metadata.annotations.as_ref())
}

/// Sets the annotations a Deployment's new ReplicaSet carries: the Deployment's own
/// (except its bookkeeping), and `revision` if the set's is lower (remembering the old
/// number in the revision history). Returns whether anything changed.
pub fn set_new_rs_annotations(d: &Deployment, rs: &mut ReplicaSet, revision: i64) -> bool {
    let before = rs.metadata.annotations.clone();
    let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if !is_own_annotation(k) {
            annotations.insert(k.clone(), v.clone());
        }
    }
    let old = revision_of(Some(annotations));
    if old < revision {
        if old > 0 {
            let history = match annotations.get(REVISION_HISTORY) {
                Some(h) if !h.is_empty() => format!("{h},{old}"),
                _ => old.to_string(),
            };
            annotations.insert(REVISION_HISTORY.into(), history);
        }
        annotations.insert(REVISION.into(), revision.to_string());
    }
    rs.metadata.annotations != before
}

/// Sets the replica annotations proportional scaling reads; returns whether they changed.
pub fn set_replica_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (k, v) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        let v = v.to_string();
        if annotations.get(k) != Some(&v) {
            annotations.insert(k.into(), v);
            changed = true;
        }
    }
    changed
}

/// An integer annotation of a ReplicaSet.
pub fn int_annotation(rs: &ReplicaSet, key: &str) -> Option<i32> {
    rs.metadata.annotations.as_ref()?.get(key)?.parse().ok()
}

/// The old ReplicaSets the history limit lets go: empty ones (no pods asked for or left,
/// status current), lowest revisions first, beyond the newest `limit`.
pub fn beyond_history<'a>(olds: &[&'a ReplicaSet], limit: i32) -> Vec<&'a ReplicaSet> {
    let mut empty: Vec<&ReplicaSet> = olds
        .iter()
        .copied()
        .filter(|rs| {
            rs.metadata.deletion_timestamp.is_none()
                && rs.spec.replicas.unwrap_or(1) == 0
                && rs.status.as_ref().is_none_or(|s| s.replicas == 0)
                && rs.status.as_ref().and_then(|s| s.observed_generation) >= rs.metadata.generation
        })
        .collect();
    let excess = empty
        .len()
        .saturating_sub(usize::try_from(limit.max(0)).unwrap_or(0));
    empty.sort_by_key(|rs| rs_revision(rs));
    empty.truncate(excess);
    empty
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(image: &str) -> PodTemplateSpec {
        serde_json::from_value(serde_json::json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": image}]},
        }))
        .expect("template")
    }

    #[test]
    fn the_hash_follows_the_template_and_the_collision_count() {
        let a = template_hash(&template("web:1"), None);
        assert_eq!(a, template_hash(&template("web:1"), None), "stable");
        assert_ne!(a, template_hash(&template("web:2"), None));
        assert_ne!(a, template_hash(&template("web:1"), Some(1)));
        assert!(
            a.bytes()
                .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)),
            "{a}"
        );
    }

    #[test]
    fn templates_compare_without_the_hash_label() {
        let mut t = template("web:1");
        t.metadata
            .as_mut()
            .and_then(|m| m.labels.as_mut())
            .map(|l| l.insert(HASH_LABEL.into(), "abc".into()));
        assert_eq!(without_hash(&t), template("web:1"));
    }

    #[test]
    fn a_reused_set_takes_the_new_revision_and_remembers_the_old() {
        let d: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "annotations": {
                CHANGE_CAUSE: "rollback", REVISION: "9",
                "kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"selector": {}, "template": {}},
        }))
        .expect("deployment");
        let mut rs: ReplicaSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1", "annotations": {REVISION: "1"}},
        }))
        .expect("rs");
        assert!(set_new_rs_annotations(&d, &mut rs, 3));
        let a = rs.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(a.get(REVISION).map(String::as_str), Some("3"));
        assert_eq!(a.get(REVISION_HISTORY).map(String::as_str), Some("1"));
        assert_eq!(a.get(CHANGE_CAUSE).map(String::as_str), Some("rollback"));
        assert!(!a.contains_key("kubectl.kubernetes.io/last-applied-configuration"));
        assert!(
            !set_new_rs_annotations(&d, &mut rs, 3),
            "nothing more to change"
        );
    }

    #[test]
    fn history_keeps_the_newest_empty_revisions() {
        let rs = |name: &str, rev: i64, replicas: i32| -> ReplicaSet {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "generation": 1, "annotations": {REVISION: rev.to_string()}},
                "spec": {"replicas": replicas, "selector": {}},
                "status": {"replicas": replicas, "observedGeneration": 1},
            }))
            .expect("rs")
        };
        let sets = [rs("a", 1, 0), rs("b", 2, 0), rs("c", 3, 1), rs("d", 4, 0)];
        let refs: Vec<&ReplicaSet> = sets.iter().collect();
        let names = |v: Vec<&ReplicaSet>| -> Vec<String> {
            v.iter().filter_map(|r| r.metadata.name.clone()).collect()
        };
        assert_eq!(names(beyond_history(&refs, 1)), vec!["a", "b"]);
        assert!(beyond_history(&refs, 10).is_empty());
        assert_eq!(names(beyond_history(&refs, 0)), vec!["a", "b", "d"]);
    }
}
