//! PodDisruptionBudgets (policy/v1): how many of a set of pods must stay up while pods are
//! evicted on purpose (`flotctl drain`, the pods/eviction subresource).

use k8s_openapi::api::policy::v1::PodDisruptionBudget;

use super::apps::int_or_percent;
use super::names::{NameRule, validate_object_meta};
use crate::defaults::ApplyDefaults;
use crate::selector::LabelSelector;
use crate::validation::{ErrorList, FieldError, FieldPath, Validate};

impl Validate for PodDisruptionBudget {
    fn validate(&self) -> ErrorList {
        let mut errs = validate_object_meta(&self.metadata, true, NameRule::Subdomain);
        let path = FieldPath::new("spec");
        let Some(spec) = &self.spec else {
            return errs;
        };
        if spec.min_available.is_some() && spec.max_unavailable.is_some() {
            errs.push(FieldError::invalid(
                path.clone(),
                Raw(String::new()),
                "minAvailable and maxUnavailable cannot be both set",
            ));
        }
        if let Some(v) = &spec.min_available {
            int_or_percent(&mut errs, path.child("minAvailable"), v, Some(100));
        }
        if let Some(v) = &spec.max_unavailable {
            int_or_percent(&mut errs, path.child("maxUnavailable"), v, Some(100));
        }
        if let Some(sel) = &spec.selector
            && let Err(e) = LabelSelector::from_k8s(sel)
        {
            errs.push(FieldError::invalid(
                path.child("selector"),
                Raw(String::new()),
                e.to_string(),
            ));
        }
        if let Some(policy) = &spec.unhealthy_pod_eviction_policy
            && !["IfHealthyBudget", "AlwaysAllow"].contains(&policy.as_str())
        {
            errs.push(FieldError::not_supported(
                path.child("unhealthyPodEvictionPolicy"),
                policy,
                &["AlwaysAllow", "IfHealthyBudget"],
            ));
        }
        errs
    }
}

impl ApplyDefaults for PodDisruptionBudget {
    fn apply_defaults(&mut self) {}
}

/// Renders a value verbatim in a field error.
struct Raw(String);

impl std::fmt::Debug for Raw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pdb(spec: serde_json::Value) -> PodDisruptionBudget {
        serde_json::from_value(
            json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec}),
        )
        .expect("pdb")
    }

    fn fields(p: &PodDisruptionBudget) -> Vec<String> {
        p.validate().iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn budgets_are_a_count_or_a_percent_but_not_both() {
        assert!(
            fields(&pdb(
                json!({"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}})
            ))
            .is_empty()
        );
        assert!(fields(&pdb(json!({"maxUnavailable": "25%"}))).is_empty());
        let both = fields(&pdb(json!({"minAvailable": 1, "maxUnavailable": 1})));
        assert_eq!(
            both,
            ["spec: Invalid value: : minAvailable and maxUnavailable cannot be both set"]
        );
        let negative = fields(&pdb(json!({"minAvailable": -1})));
        assert!(
            negative[0].starts_with("spec.minAvailable: Invalid value: -1"),
            "{negative:?}"
        );
        let over = fields(&pdb(json!({"maxUnavailable": "150%"})));
        assert!(over[0].starts_with("spec.maxUnavailable"), "{over:?}");
        let policy = fields(&pdb(json!({"unhealthyPodEvictionPolicy": "Sometimes"})));
        assert!(
            policy[0].starts_with("spec.unhealthyPodEvictionPolicy: Unsupported value"),
            "{policy:?}"
        );
    }
}
