//! The metadata the server owns, handled as Kubernetes handles it: uid, creationTimestamp,
//! generateName, generation, resourceVersion, deletionTimestamp.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use rand::Rng;
use serde_json::Value;

/// Kubernetes appends five characters to a generateName prefix, from an alphabet without
/// vowels (no accidental words) and without look-alike characters.
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A generated name is at most 63 characters: the prefix is cut to leave room.
const MAX_GENERATED_PREFIX: usize = 58;

/// The current time as Kubernetes stores it (whole seconds).
pub fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// A name from a generateName prefix: the prefix (cut to 58 characters) and five random
/// characters.
pub fn generate_name(prefix: &str) -> String {
    let mut base: String = prefix.chars().take(MAX_GENERATED_PREFIX).collect();
    let mut rng = rand::rng();
    for _ in 0..5 {
        let i = rng.random_range(0..SUFFIX_ALPHABET.len());
        base.push(char::from(SUFFIX_ALPHABET[i]));
    }
    base
}

/// Sets what the server owns on a new object; anything a client put there is replaced.
pub fn fill_on_create(meta: &mut ObjectMeta, tracks_generation: bool) {
    meta.uid = Some(uuid::Uuid::new_v4().to_string());
    meta.creation_timestamp = Some(now());
    meta.generation = tracks_generation.then_some(1);
    meta.resource_version = None;
    meta.deletion_timestamp = None;
    meta.deletion_grace_period_seconds = None;
    meta.self_link = None;
    meta.managed_fields = None;
}

/// Carries the server-owned fields of the stored object into its replacement. uid and
/// creationTimestamp are only filled when the client left them out, so that a client that
/// changes them is told they are immutable rather than silently ignored.
pub fn fill_on_update(meta: &mut ObjectMeta, old: &ObjectMeta) {
    if meta.uid.is_none() {
        meta.uid.clone_from(&old.uid);
    }
    if meta.creation_timestamp.is_none() {
        meta.creation_timestamp.clone_from(&old.creation_timestamp);
    }
    meta.generation = old.generation;
    meta.deletion_timestamp.clone_from(&old.deletion_timestamp);
    meta.deletion_grace_period_seconds = old.deletion_grace_period_seconds;
    meta.resource_version = None;
    meta.self_link = None;
    meta.managed_fields = None;
}

/// Did anything other than metadata and status change? (What bumps generation.)
pub fn spec_changed(new: &Value, old: &Value) -> bool {
    const IGNORED: [&str; 4] = ["metadata", "status", "apiVersion", "kind"];
    let (Some(n), Some(o)) = (new.as_object(), old.as_object()) else {
        return new != old;
    };
    let keys = n
        .keys()
        .chain(o.keys())
        .filter(|k| !IGNORED.contains(&k.as_str()));
    for k in keys {
        if n.get(k) != o.get(k) {
            return true;
        }
    }
    false
}

/// metadata.resourceVersion of a JSON object, if set and not empty.
pub fn resource_version(obj: &Value) -> Option<&str> {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .filter(|s| !s.is_empty())
}

/// Parses a resourceVersion ("" is none).
pub fn parse_resource_version(rv: &str) -> Result<Option<i64>, crate::error::ApiError> {
    if rv.is_empty() {
        return Ok(None);
    }
    rv.parse::<i64>().map(Some).map_err(|_| {
        crate::error::ApiError::bad_request(format!(
            "invalid resourceVersion {rv:?}: must be a number"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn generated_names_keep_the_prefix_and_fit_in_63_characters() {
        let n = generate_name("web-");
        assert!(n.starts_with("web-") && n.len() == 9, "{n}");
        let long = "a".repeat(80);
        assert_eq!(generate_name(&long).len(), 63);
    }

    #[test]
    fn only_changes_outside_metadata_and_status_count_as_spec_changes() {
        let old =
            json!({"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 1}, "status": {}});
        let relabelled = json!({"metadata": {"labels": {"a": "2"}}, "spec": {"replicas": 1}, "status": {"x": 1}});
        let scaled = json!({"metadata": {}, "spec": {"replicas": 2}});
        assert!(!spec_changed(&relabelled, &old));
        assert!(spec_changed(&scaled, &old));
        let cm_old = json!({"metadata": {}, "data": {"k": "v"}});
        let cm_new = json!({"metadata": {}, "data": {"k": "w"}});
        assert!(spec_changed(&cm_new, &cm_old));
    }
}
