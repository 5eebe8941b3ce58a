//! ReplicaSets and Deployments: selector and template rules, rollout strategy, defaults.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentStrategy, ReplicaSet, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as K8sSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::names::{NameRule, validate_object_meta, validate_object_meta_update};
use super::pod::{default_pod_spec, validate_template};
use crate::defaults::ApplyDefaults;
use crate::selector::LabelSelector;
use crate::validation::{ErrorList, FieldError, FieldPath, Validate};

fn non_negative(errs: &mut ErrorList, path: FieldPath, v: Option<i32>) {
    if let Some(v) = v
        && v < 0
    {
        errs.push(FieldError::invalid(
            path,
            v,
            "must be greater than or equal to 0",
        ));
    }
}

/// Renders labels as Go prints a map, as Kubernetes' message shows them.
fn go_map(labels: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k:?}:{v:?}")).collect();
    format!("map[string]string{{{}}}", inner.join(", "))
}

struct Raw(String);

impl std::fmt::Debug for Raw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The selector is required, valid and non-empty, the template valid, its labels matched
/// by the selector and its restartPolicy Always.
fn validate_workload(
    selector: Option<&K8sSelector>,
    template: Option<&PodTemplateSpec>,
    kind: &str,
) -> ErrorList {
    let spec = FieldPath::new("spec");
    let mut errs = Vec::new();
    let parsed = match selector {
        None => {
            errs.push(FieldError::required(spec.child("selector"), ""));
            None
        }
        Some(s) => match LabelSelector::from_k8s(s) {
            Ok(sel) if sel.is_empty() => {
                errs.push(FieldError::invalid(
                    spec.child("selector"),
                    Raw("{}".into()),
                    format!("empty selector is invalid for {kind}"),
                ));
                None
            }
            Ok(sel) => Some(sel),
            Err(e) => {
                errs.push(FieldError::invalid(
                    spec.child("selector"),
                    Raw(String::new()),
                    e.to_string(),
                ));
                None
            }
        },
    };
    let tpath = spec.child("template");
    match template {
        None => errs.push(FieldError::required(tpath.clone(), "")),
        Some(t) => {
            let labels = t
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            if let Some(sel) = &parsed
                && !sel.matches(&labels)
            {
                errs.push(FieldError::invalid(
                    tpath.child("metadata").child("labels"),
                    Raw(go_map(&labels)),
                    "`selector` does not match template `labels`",
                ));
            }
            errs.extend(validate_template(t, &tpath));
            if let Some(rp) = t.spec.as_ref().and_then(|s| s.restart_policy.as_deref())
                && rp != "Always"
            {
                errs.push(FieldError::not_supported(
                    tpath.child("spec").child("restartPolicy"),
                    rp,
                    &["Always"],
                ));
            }
        }
    }
    errs
}

fn selector_immutable(new: &K8sSelector, old: &K8sSelector) -> ErrorList {
    if new != old {
        return vec![FieldError::invalid(
            FieldPath::new("spec").child("selector"),
            Raw(LabelSelector::from_k8s(new)
                .map(|s| s.to_string())
                .unwrap_or_default()),
            "field is immutable",
        )];
    }
    Vec::new()
}

impl Validate for ReplicaSet {
    fn validate(&self) -> ErrorList {
        let mut errs = validate_object_meta(&self.metadata, true, NameRule::Subdomain);
        let spec = FieldPath::new("spec");
        let s = &self.spec;
        non_negative(&mut errs, spec.child("replicas"), s.replicas);
        non_negative(
            &mut errs,
            spec.child("minReadySeconds"),
            s.min_ready_seconds,
        );
        errs.extend(validate_workload(
            Some(&s.selector),
            s.template.as_ref(),
            "replicaset",
        ));
        errs
    }

    fn validate_immutable(&self, old: &Self) -> ErrorList {
        selector_immutable(&self.spec.selector, &old.spec.selector)
    }

    fn validate_status_update(&self, old: &Self) -> ErrorList {
        let mut errs = validate_object_meta_update(&self.metadata, &old.metadata);
        if let Some(st) = &self.status {
            let p = FieldPath::new("status");
            non_negative(&mut errs, p.child("replicas"), Some(st.replicas));
            non_negative(&mut errs, p.child("readyReplicas"), st.ready_replicas);
            non_negative(
                &mut errs,
                p.child("availableReplicas"),
                st.available_replicas,
            );
        }
        errs
    }
}

pub(crate) fn int_or_percent(
    errs: &mut ErrorList,
    path: FieldPath,
    v: &IntOrString,
    max_percent: Option<i32>,
) -> i64 {
    match v {
        IntOrString::Int(i) => {
            if *i < 0 {
                errs.push(FieldError::invalid(
                    path,
                    *i,
                    "must be greater than or equal to 0",
                ));
            }
            i64::from(*i)
        }
        IntOrString::String(s) => {
            let Some(p) = s.strip_suffix('%').and_then(|n| n.parse::<i32>().ok()) else {
                errs.push(FieldError::invalid(path, s, "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')"));
                return 0;
            };
            if p < 0 {
                errs.push(FieldError::invalid(
                    path,
                    s,
                    "must be greater than or equal to 0",
                ));
            } else if let Some(max) = max_percent
                && p > max
            {
                errs.push(FieldError::invalid(
                    path,
                    s,
                    "must not be greater than 100%",
                ));
            }
            i64::from(p)
        }
    }
}

fn validate_strategy(s: &DeploymentStrategy, errs: &mut ErrorList) {
    let path = FieldPath::new("spec").child("strategy");
    match s.type_.as_deref() {
        Some("Recreate") => {
            if s.rolling_update.is_some() {
                errs.push(FieldError::forbidden(
                    path.child("rollingUpdate"),
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        Some("RollingUpdate") | None => {
            if let Some(ru) = &s.rolling_update {
                let rp = path.child("rollingUpdate");
                let surge = ru
                    .max_surge
                    .as_ref()
                    .map(|v| int_or_percent(errs, rp.child("maxSurge"), v, None));
                let unavailable = ru
                    .max_unavailable
                    .as_ref()
                    .map(|v| int_or_percent(errs, rp.child("maxUnavailable"), v, Some(100)));
                if surge == Some(0) && unavailable == Some(0) {
                    errs.push(FieldError::invalid(
                        rp.child("maxUnavailable"),
                        0,
                        "may not be 0 when `maxSurge` is 0",
                    ));
                }
            }
        }
        Some(other) => errs.push(FieldError::not_supported(
            path.child("type"),
            other,
            &["Recreate", "RollingUpdate"],
        )),
    }
}

impl Validate for Deployment {
    fn validate(&self) -> ErrorList {
        let mut errs = validate_object_meta(&self.metadata, true, NameRule::Subdomain);
        let spec = FieldPath::new("spec");
        let s = &self.spec;
        non_negative(&mut errs, spec.child("replicas"), s.replicas);
        non_negative(
            &mut errs,
            spec.child("minReadySeconds"),
            s.min_ready_seconds,
        );
        non_negative(
            &mut errs,
            spec.child("revisionHistoryLimit"),
            s.revision_history_limit,
        );
        errs.extend(validate_workload(
            Some(&s.selector),
            Some(&s.template),
            "deployment",
        ));
        if let Some(st) = &s.strategy {
            validate_strategy(st, &mut errs);
        }
        if let Some(pd) = s.progress_deadline_seconds
            && pd <= s.min_ready_seconds.unwrap_or(0)
        {
            errs.push(FieldError::invalid(
                spec.child("progressDeadlineSeconds"),
                pd,
                "must be greater than minReadySeconds",
            ));
        }
        errs
    }

    fn validate_immutable(&self, old: &Self) -> ErrorList {
        selector_immutable(&self.spec.selector, &old.spec.selector)
    }

    fn validate_status_update(&self, old: &Self) -> ErrorList {
        let mut errs = validate_object_meta_update(&self.metadata, &old.metadata);
        if let Some(st) = &self.status {
            let p = FieldPath::new("status");
            non_negative(&mut errs, p.child("replicas"), st.replicas);
            non_negative(&mut errs, p.child("updatedReplicas"), st.updated_replicas);
            non_negative(&mut errs, p.child("readyReplicas"), st.ready_replicas);
            non_negative(
                &mut errs,
                p.child("availableReplicas"),
                st.available_replicas,
            );
        }
        errs
    }
}

fn default_template(t: &mut PodTemplateSpec) {
    if let Some(spec) = t.spec.as_mut() {
        default_pod_spec(spec);
    }
}

impl ApplyDefaults for ReplicaSet {
    fn apply_defaults(&mut self) {
        let s = &mut self.spec;
        s.replicas.get_or_insert(1);
        if let Some(t) = s.template.as_mut() {
            default_template(t);
        }
    }
}

impl ApplyDefaults for Deployment {
    fn apply_defaults(&mut self) {
        let s = &mut self.spec;
        s.replicas.get_or_insert(1);
        s.revision_history_limit.get_or_insert(10);
        s.progress_deadline_seconds.get_or_insert(600);
        let strategy = s.strategy.get_or_insert_with(Default::default);
        let ty = strategy.type_.get_or_insert_with(|| "RollingUpdate".into());
        if ty == "RollingUpdate" {
            let ru = strategy
                .rolling_update
                .get_or_insert_with(RollingUpdateDeployment::default);
            ru.max_surge
                .get_or_insert_with(|| IntOrString::String("25%".into()));
            ru.max_unavailable
                .get_or_insert_with(|| IntOrString::String("25%".into()));
        }
        default_template(&mut s.template);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(spec: serde_json::Value) -> Deployment {
        serde_json::from_value(
            json!({"metadata": {"name": "d", "namespace": "default"}, "spec": spec}),
        )
        .expect("a deployment")
    }

    fn valid_spec() -> serde_json::Value {
        json!({
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "a", "image": "x"}]}}
        })
    }

    #[test]
    fn the_selector_must_match_the_template() {
        let mut spec = valid_spec();
        spec["template"]["metadata"]["labels"] = json!({"app": "db"});
        let errs: Vec<String> = deployment(spec)
            .validate()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errs,
            vec![
                "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"db\"}: `selector` does not match template `labels`"
            ]
        );
        let mut empty = valid_spec();
        empty["selector"] = json!({});
        let errs: Vec<String> = deployment(empty)
            .validate()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            errs[0].ends_with("empty selector is invalid for deployment"),
            "{errs:?}"
        );
    }

    #[test]
    fn strategy_and_counts_are_checked() {
        let mut spec = valid_spec();
        spec["replicas"] = json!(-1);
        spec["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}});
        spec["template"]["spec"]["restartPolicy"] = json!("Never");
        let errs: Vec<String> = deployment(spec)
            .validate()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            errs.contains(
                &"spec.replicas: Invalid value: -1: must be greater than or equal to 0".to_string()
            ),
            "{errs:?}"
        );
        assert!(errs.contains(&"spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0".to_string()), "{errs:?}");
        assert!(errs.contains(&"spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"".to_string()), "{errs:?}");
    }

    #[test]
    fn deployments_default_to_a_quarter_surge_and_unavailability() {
        let mut d = deployment(valid_spec());
        d.apply_defaults();
        let s = d.spec;
        assert_eq!(s.replicas, Some(1));
        assert_eq!(s.revision_history_limit, Some(10));
        assert_eq!(s.progress_deadline_seconds, Some(600));
        let ru = s
            .strategy
            .and_then(|st| st.rolling_update)
            .expect("rolling update");
        assert_eq!(ru.max_surge, Some(IntOrString::String("25%".into())));
        assert!(d.metadata.name.is_some());
    }

    #[test]
    fn the_selector_is_immutable() {
        let old = deployment(valid_spec());
        let mut spec = valid_spec();
        spec["selector"] = json!({"matchLabels": {"app": "web", "v": "2"}});
        spec["template"]["metadata"]["labels"] = json!({"app": "web", "v": "2"});
        let errs = deployment(spec).validate_update(&old);
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0]
                .to_string()
                .starts_with("spec.selector: Invalid value")
        );
        assert!(errs[0].to_string().ends_with("field is immutable"));
    }
}
