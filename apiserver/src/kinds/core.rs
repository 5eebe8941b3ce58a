//! Namespaces, Nodes, ConfigMaps, Secrets, Events and Leases.

use std::collections::BTreeSet;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Node, Secret};

use super::names::{NameRule, check_quantity, qualified_name, validate_object_meta};
use crate::defaults::ApplyDefaults;
use crate::validation::{ErrorList, FieldError, FieldPath, Validate};

const CONFIG_KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";
/// Largest ConfigMap or Secret payload (Kubernetes' limit).
const MAX_DATA_BYTES: usize = 1024 * 1024;

/// Keys of data and binaryData: valid config keys, not in both.
fn validate_data<'a>(
    data: impl Iterator<Item = (&'a String, usize)>,
    binary: impl Iterator<Item = (&'a String, usize)>,
    errs: &mut ErrorList,
) {
    let mut seen = BTreeSet::new();
    let mut total = 0;
    for (field, entries) in [
        ("data", data.collect::<Vec<_>>()),
        ("binaryData", binary.collect::<Vec<_>>()),
    ] {
        for (k, len) in entries {
            total += len;
            let path = FieldPath::new(field);
            let valid = !k.is_empty()
                && k.len() <= 253
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid {
                errs.push(FieldError::invalid(path.clone(), k, CONFIG_KEY_MSG));
            } else if k == "." || k == ".." {
                errs.push(FieldError::invalid(
                    path.clone(),
                    k,
                    format!("must not be '{k}'"),
                ));
            }
            if !seen.insert(k.clone()) {
                errs.push(FieldError::invalid(
                    path,
                    k,
                    "duplicate of key present in data",
                ));
            }
        }
    }
    if total > MAX_DATA_BYTES {
        errs.push(FieldError::too_long(FieldPath::new(""), MAX_DATA_BYTES));
    }
}

fn immutable_data_unchanged<T: PartialEq>(
    immutable: Option<bool>,
    new: &T,
    old: &T,
    errs: &mut ErrorList,
) {
    if immutable == Some(true) && new != old {
        errs.push(FieldError::forbidden(
            FieldPath::new("data"),
            "field is immutable when `immutable` is set",
        ));
    }
}

impl Validate for Namespace {
    fn validate(&self) -> ErrorList {
        validate_object_meta(&self.metadata, false, NameRule::Label)
    }
}

impl ApplyDefaults for Namespace {
    fn apply_defaults(&mut self) {
        let status = self.status.get_or_insert_with(Default::default);
        status.phase.get_or_insert_with(|| "Active".into());
    }
}

impl Validate for Node {
    fn validate(&self) -> ErrorList {
        let mut errs = validate_object_meta(&self.metadata, false, NameRule::Subdomain);
        let spec = FieldPath::new("spec");
        let mut seen = BTreeSet::new();
        for (i, t) in self
            .spec
            .iter()
            .flat_map(|s| s.taints.iter().flatten())
            .enumerate()
        {
            let p = spec.child("taints").index(i);
            for e in qualified_name(&t.key) {
                errs.push(FieldError::invalid(p.child("key"), &t.key, e));
            }
            if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&t.effect.as_str()) {
                errs.push(FieldError::not_supported(
                    p.child("effect"),
                    &t.effect,
                    &["NoSchedule", "PreferNoSchedule", "NoExecute"],
                ));
            }
            if !seen.insert((t.key.clone(), t.effect.clone())) {
                errs.push(FieldError::duplicate(p, format!("{}:{}", t.key, t.effect)));
            }
        }
        if let Some(status) = &self.status {
            for (field, list) in [
                ("capacity", &status.capacity),
                ("allocatable", &status.allocatable),
            ] {
                for (name, q) in list.iter().flatten() {
                    if let Err(e) = check_quantity(&q.0) {
                        errs.push(FieldError::invalid(
                            FieldPath::new("status").child(field).key(name),
                            &q.0,
                            e,
                        ));
                    }
                }
            }
        }
        errs
    }
}

impl ApplyDefaults for Node {
    fn apply_defaults(&mut self) {}
}

impl Validate for ConfigMap {
    fn validate(&self) -> ErrorList {
        let mut errs = validate_object_meta(&self.metadata, true, NameRule::Subdomain);
        validate_data(
            self.data.iter().flatten().map(|(k, v)| (k, v.len())),
            self.binary_data
                .iter()
                .flatten()
                .map(|(k, v)| (k, v.0.len())),
            &mut errs,
        );
        errs
    }
    fn validate_immutable(&self, old: &Self) -> ErrorList {
        let mut errs = Vec::new();
        immutable_data_unchanged(
            old.immutable,
            &(&self.data, &self.binary_data),
            &(&old.data, &old.binary_data),
            &mut errs,
        );
        if old.immutable == Some(true) && self.immutable != Some(true) {
            errs.push(FieldError::forbidden(
                FieldPath::new("immutable"),
                "field is immutable when `immutable` is set",
            ));
        }
        errs
    }
}

impl ApplyDefaults for ConfigMap {
    fn apply_defaults(&mut self) {}
}

impl Validate for Secret {
    fn validate(&self) -> ErrorList {
        let mut errs = validate_object_meta(&self.metadata, true, NameRule::Subdomain);
        validate_data(
            self.data.iter().flatten().map(|(k, v)| (k, v.0.len())),
            self.string_data.iter().flatten().map(|(k, v)| (k, v.len())),
            &mut errs,
        );
        if self.type_.as_deref() == Some("kubernetes.io/dockerconfigjson")
            && !self
                .data
                .as_ref()
                .is_some_and(|d| d.contains_key(".dockerconfigjson"))
        {
            errs.push(FieldError::required(
                FieldPath::new("data").key(".dockerconfigjson"),
                "",
            ));
        }
        errs
    }
    fn validate_immutable(&self, old: &Self) -> ErrorList {
        let mut errs = Vec::new();
        if self.type_ != old.type_ {
            errs.push(FieldError::invalid(
                FieldPath::new("type"),
                self.type_.as_deref().unwrap_or_default(),
                "field is immutable",
            ));
        }
        immutable_data_unchanged(old.immutable, &self.data, &old.data, &mut errs);
        errs
    }
}

impl ApplyDefaults for Secret {
    fn apply_defaults(&mut self) {
        self.type_.get_or_insert_with(|| "Opaque".into());
        // stringData is a write-only convenience: it is merged into data, as Kubernetes does.
        if let Some(sd) = self.string_data.take() {
            let data = self.data.get_or_insert_with(Default::default);
            for (k, v) in sd {
                data.insert(k, k8s_openapi::ByteString(v.into_bytes()));
            }
        }
    }
}

impl Validate for Event {
    fn validate(&self) -> ErrorList {
        let mut errs = validate_object_meta(&self.metadata, true, NameRule::PathSegment);
        let io = &self.involved_object;
        let p = FieldPath::new("involvedObject");
        if io.kind.as_deref().is_none_or(str::is_empty) {
            errs.push(FieldError::required(p.child("kind"), ""));
        }
        if io.name.as_deref().is_none_or(str::is_empty) {
            errs.push(FieldError::required(p.child("name"), ""));
        }
        if let (Some(ns), Some(own)) = (
            io.namespace.as_deref().filter(|n| !n.is_empty()),
            self.metadata.namespace.as_deref(),
        ) && ns != own
        {
            errs.push(FieldError::invalid(
                p.child("namespace"),
                ns,
                "does not match event.namespace",
            ));
        }
        if self.reason.as_deref().is_some_and(|r| r.len() > 128) {
            errs.push(FieldError::too_long(FieldPath::new("reason"), 128));
        }
        if let Some(t) = self.type_.as_deref().filter(|t| !t.is_empty())
            && !["Normal", "Warning"].contains(&t)
        {
            errs.push(FieldError::not_supported(
                FieldPath::new("type"),
                t,
                &["Normal", "Warning"],
            ));
        }
        errs
    }
}

impl ApplyDefaults for Event {
    fn apply_defaults(&mut self) {}
}

impl Validate for Lease {
    fn validate(&self) -> ErrorList {
        let mut errs = validate_object_meta(&self.metadata, true, NameRule::Subdomain);
        let p = FieldPath::new("spec");
        if let Some(s) = &self.spec {
            if let Some(d) = s.lease_duration_seconds
                && d <= 0
            {
                errs.push(FieldError::invalid(
                    p.child("leaseDurationSeconds"),
                    d,
                    "must be greater than 0",
                ));
            }
            if let Some(t) = s.lease_transitions
                && t < 0
            {
                errs.push(FieldError::invalid(
                    p.child("leaseTransitions"),
                    t,
                    "must be greater than or equal to 0",
                ));
            }
        }
        errs
    }
}

impl ApplyDefaults for Lease {
    fn apply_defaults(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn config_keys_follow_kubernetes() {
        let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "c", "namespace": "d"}, "data": {"good.key": "v", "bad key": "v"}})).expect("cm");
        let errs = cm.validate();
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0]
                .to_string()
                .starts_with("data: Invalid value: \"bad key\": a valid config key")
        );
    }

    #[test]
    fn namespaces_are_cluster_scoped_labels() {
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": "a.b"}})).expect("ns");
        assert_eq!(ns.validate().len(), 1);
    }

    #[test]
    fn secret_string_data_lands_in_data() {
        let mut s: Secret = serde_json::from_value(
            json!({"metadata": {"name": "s", "namespace": "d"}, "stringData": {"k": "v"}}),
        )
        .expect("secret");
        s.apply_defaults();
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
        assert_eq!(s.data.expect("data")["k"].0, b"v".to_vec());
        assert!(s.string_data.is_none());
    }

    #[test]
    fn an_event_must_name_what_it_is_about() {
        let e: Event = serde_json::from_value(
            json!({"metadata": {"name": "e", "namespace": "d"}, "involvedObject": {}}),
        )
        .expect("event");
        let errs: Vec<String> = e.validate().iter().map(ToString::to_string).collect();
        assert_eq!(
            errs,
            vec![
                "involvedObject.kind: Required value",
                "involvedObject.name: Required value"
            ]
        );
    }
}
