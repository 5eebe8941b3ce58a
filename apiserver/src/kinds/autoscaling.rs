//! HorizontalPodAutoscalers (autoscaling/v2): a scale target, replica bounds, and the
//! metrics this server can act on — cpu or memory utilization of the pods' requests —
//! with the stabilization windows of `behavior`. What the autoscaler could not act on
//! (pods, object and external metrics, scaling policies) is refused, naming the field,
//! rather than stored and ignored.

use k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscaler, MetricSpec, MetricTarget, ResourceMetricSource,
};

use super::names::{NameRule, validate_object_meta};
use crate::defaults::ApplyDefaults;
use crate::validation::{ErrorList, FieldError, FieldPath, Validate};

/// The kinds whose scale the autoscaler sets.
pub const SCALABLE_KINDS: [&str; 2] = ["Deployment", "ReplicaSet"];
/// The longest stabilization window Kubernetes accepts (one hour).
const MAX_WINDOW_SECONDS: i32 = 3600;
/// The target when none is given: 80 % of the pods' cpu requests.
pub const DEFAULT_CPU_UTILIZATION: i32 = 80;

impl Validate for HorizontalPodAutoscaler {
    fn validate(&self) -> ErrorList {
        let mut errs = validate_object_meta(&self.metadata, true, NameRule::Subdomain);
        let spec = &self.spec;
        let path = FieldPath::new("spec");
        let target = path.child("scaleTargetRef");
        if spec.scale_target_ref.kind.is_empty() {
            errs.push(FieldError::required(target.child("kind"), ""));
        } else if !SCALABLE_KINDS.contains(&spec.scale_target_ref.kind.as_str()) {
            errs.push(FieldError::not_supported(
                target.child("kind"),
                &spec.scale_target_ref.kind,
                &SCALABLE_KINDS,
            ));
        }
        if spec.scale_target_ref.name.is_empty() {
            errs.push(FieldError::required(target.child("name"), ""));
        }
        let min = spec.min_replicas.unwrap_or(1);
        if min < 1 {
            errs.push(FieldError::invalid(
                path.child("minReplicas"),
                min,
                "must be greater than or equal to 1",
            ));
        }
        if spec.max_replicas < min {
            errs.push(FieldError::invalid(
                path.child("maxReplicas"),
                spec.max_replicas,
                "must be greater than or equal to `minReplicas`",
            ));
        }
        for (i, m) in spec.metrics.iter().flatten().enumerate() {
            validate_metric(&mut errs, path.child("metrics").index(i), m);
        }
        if let Some(b) = &spec.behavior {
            let bp = path.child("behavior");
            for (name, rules) in [("scaleUp", &b.scale_up), ("scaleDown", &b.scale_down)] {
                let Some(r) = rules else { continue };
                let rp = bp.child(name);
                if let Some(w) = r.stabilization_window_seconds
                    && !(0..=MAX_WINDOW_SECONDS).contains(&w)
                {
                    errs.push(FieldError::invalid(
                        rp.child("stabilizationWindowSeconds"),
                        w,
                        format!("must be between 0 and {MAX_WINDOW_SECONDS}"),
                    ));
                }
                for (field, set) in [
                    ("policies", r.policies.is_some()),
                    ("selectPolicy", r.select_policy.is_some()),
                    ("tolerance", r.tolerance.is_some()),
                ] {
                    if set {
                        errs.push(FieldError::forbidden(
                            rp.child(field),
                            "not supported by this server: only stabilizationWindowSeconds is",
                        ));
                    }
                }
            }
        }
        errs
    }
}

fn validate_metric(errs: &mut ErrorList, path: FieldPath, m: &MetricSpec) {
    if m.type_ != "Resource" {
        errs.push(FieldError::not_supported(
            path.child("type"),
            &m.type_,
            &["Resource"],
        ));
        return;
    }
    let Some(r) = &m.resource else {
        errs.push(FieldError::required(
            path.child("resource"),
            "must populate information for the given metric source",
        ));
        return;
    };
    let rp = path.child("resource");
    if !["cpu", "memory"].contains(&r.name.as_str()) {
        errs.push(FieldError::not_supported(
            rp.child("name"),
            &r.name,
            &["cpu", "memory"],
        ));
    }
    let tp = rp.child("target");
    if r.target.type_ != "Utilization" {
        errs.push(FieldError::not_supported(
            tp.child("type"),
            &r.target.type_,
            &["Utilization"],
        ));
    } else {
        match r.target.average_utilization {
            None => errs.push(FieldError::required(
                tp.child("averageUtilization"),
                "must set `averageUtilization` when `type` is `Utilization`",
            )),
            Some(u) if u <= 0 => errs.push(FieldError::invalid(
                tp.child("averageUtilization"),
                u,
                "must be greater than 0",
            )),
            Some(_) => {}
        }
    }
}

impl ApplyDefaults for HorizontalPodAutoscaler {
    /// Kubernetes' defaults: at least one replica, and 80 % cpu when no metric is named.
    fn apply_defaults(&mut self) {
        self.spec.min_replicas.get_or_insert(1);
        if self.spec.metrics.as_ref().is_none_or(Vec::is_empty) {
            self.spec.metrics = Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(DEFAULT_CPU_UTILIZATION),
                        ..Default::default()
                    },
                }),
                ..Default::default()
            }]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hpa(spec: serde_json::Value) -> HorizontalPodAutoscaler {
        serde_json::from_value(
            json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec}),
        )
        .expect("hpa")
    }

    fn errors(h: &HorizontalPodAutoscaler) -> Vec<String> {
        h.validate().iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn a_plain_autoscaler_is_valid_and_defaults_to_80_percent_cpu() {
        let mut h =
            hpa(json!({"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 5}));
        assert!(errors(&h).is_empty(), "{:?}", errors(&h));
        h.apply_defaults();
        assert_eq!(h.spec.min_replicas, Some(1));
        let m = &h.spec.metrics.as_ref().expect("metrics")[0];
        assert_eq!(
            m.resource.as_ref().map(|r| r.target.average_utilization),
            Some(Some(80))
        );
    }

    #[test]
    fn what_cannot_be_acted_on_is_refused_by_field() {
        let h = hpa(json!({
            "scaleTargetRef": {"kind": "StatefulSet", "name": ""},
            "minReplicas": 3, "maxReplicas": 2,
            "metrics": [
                {"type": "External", "external": {}},
                {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization"}}}
            ],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 7200, "policies": []}}
        }));
        let e = errors(&h);
        let fields: Vec<&str> = e
            .iter()
            .map(|m| m.split(':').next().unwrap_or_default())
            .collect();
        assert_eq!(
            fields,
            [
                "spec.scaleTargetRef.kind",
                "spec.scaleTargetRef.name",
                "spec.maxReplicas",
                "spec.metrics[0].type",
                "spec.metrics[1].resource.target.averageUtilization",
                "spec.behavior.scaleDown.stabilizationWindowSeconds",
                "spec.behavior.scaleDown.policies",
            ],
            "{e:#?}"
        );
    }
}
