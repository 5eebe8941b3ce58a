//! The autoscaling/v1 Scale view of ReplicaSets and Deployments.

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::selector::LabelSelector;
use crate::validation::{FieldError, FieldPath};

/// The Scale of an object: its replicas wanted and seen, and its selector as text.
pub fn scale_of(obj: &Value) -> Result<Value, ApiError> {
    let selector: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector =
        serde_json::from_value(obj["spec"]["selector"].clone()).unwrap_or_default();
    let selector = LabelSelector::from_k8s(&selector)
        .map(|s| s.to_string())
        .map_err(|e| ApiError::internal(format!("stored selector is invalid: {e}")))?;
    let meta = &obj["metadata"];
    Ok(json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"],
            "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {
            "replicas": obj["status"]["replicas"].as_i64().unwrap_or(0),
            "selector": selector,
        },
    }))
}

/// spec.replicas of a Scale sent by a client.
pub fn replicas_of(scale: &Value, name: &str) -> Result<i64, ApiError> {
    let path = FieldPath::new("spec").child("replicas");
    let invalid = |e: FieldError| ApiError::invalid("Scale", "autoscaling", name, vec![e]);
    match &scale["spec"]["replicas"] {
        Value::Null => Ok(0),
        Value::Number(n) => match n.as_i64() {
            Some(r) if r >= 0 && r <= i64::from(i32::MAX) => Ok(r),
            Some(r) if r < 0 => Err(invalid(FieldError::invalid(
                path,
                r,
                "must be greater than or equal to 0",
            ))),
            _ => Err(invalid(FieldError::invalid(
                path,
                n,
                "must be a 32-bit integer",
            ))),
        },
        other => Err(invalid(FieldError::invalid(
            path,
            other,
            "must be an integer",
        ))),
    }
}
