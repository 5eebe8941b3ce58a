//! Strict decoding of Kubernetes objects: a manifest with a misspelt field or a value of the
//! wrong type is refused with the path of every such field, as kube-apiserver's strict
//! field validation refuses it, instead of being stored with the field silently dropped.
//!
//! How, given that k8s-openapi's hand-written `Deserialize` impls skip unknown keys:
//!
//! - Wrong types: [`serde_path_to_error`] records the path to the failing value (its
//!   tracking works through k8s-openapi's visitors: struct fields, list indices and map keys
//!   all come out). After each failure the offending key is removed and decoding retried, so
//!   every independent wrong value is reported, not just the first.
//! - Unknown fields: the decoded object is encoded again and compared with the input; a key
//!   of an input object that the encoding lacks is one the type does not know. Maps (labels,
//!   data, limits...) keep every key, so they never produce false reports; explicit nulls
//!   mean "unset" and are skipped; numbers are not compared, so `1.0` against `1` is fine.
//! - Paths: serde reports struct fields and map keys alike, but Kubernetes writes map keys
//!   in brackets (`metadata.labels[app]`). Only when something is reported does the decoder
//!   ask the type itself which is which: it adds a probe key to the object and decodes
//!   again; a map keeps the probe, a struct drops it.
//!
//! Numbers given for quantities (`cpu: 1`, `memory: 1.5`) need no help: k8s-openapi's
//! `Quantity` accepts JSON numbers and keeps their text, as Kubernetes does. IntOrString
//! fields take both forms as well.

use std::collections::HashMap;
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::validation::{ErrorList, FieldError, FieldErrorKind, FieldPath};

/// Wrong values reported at most; past this the input is hopeless and the list long enough.
const MAX_WRONG_VALUES: usize = 20;

/// Probe decodes per failed decode; beyond it, object keys print as fields (`a.b`), which
/// bounds the work a hostile manifest with thousands of errors can cause.
const MAX_PROBES: usize = 32;

/// The key added to an object to learn whether it is a map; no manifest has a NUL in a key.
const PROBE_KEY: &str = "\u{0}flotilla-decode-probe";

/// Decodes `value` as a `T`, refusing unknown fields and values of the wrong type; the
/// errors name every offending field by its path.
pub fn decode_strict<T>(value: &Value) -> Result<T, ErrorList>
where
    T: DeserializeOwned + Serialize,
{
    let first = match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(decoded) => {
            let encoded = encode(&decoded)?;
            let unknown = unknown_fields(value, &encoded);
            if unknown.is_empty() {
                return Ok(decoded);
            }
            let mut shapes = Shapes::<T>::new(Some(value));
            return Err(report(&[], unknown, &mut shapes));
        }
        Err(e) => e,
    };

    // Remove each offending key and decode again, until the rest decodes or nothing more
    // can be learnt; paths stay valid throughout because removing a key shifts nothing.
    let mut patched = value.clone();
    let mut wrong = vec![WrongValue::new(first, value)];
    let mut decoded = None;
    while wrong.len() < MAX_WRONG_VALUES {
        let Some(last) = wrong.last() else { break };
        if !remove_key_above(&mut patched, &last.steps) {
            break;
        }
        match serde_path_to_error::deserialize::<_, T>(&patched) {
            Ok(t) => {
                decoded = Some(t);
                break;
            }
            Err(e) => {
                let next = WrongValue::new(e, value);
                // A failure at (or above) a removed key is the removal's own doing, such as
                // a now-missing required field; it says nothing new about the input.
                if wrong.iter().any(|w| w.steps.starts_with(&next.steps)) {
                    break;
                }
                wrong.push(next);
            }
        }
    }

    let mut unknown = Vec::new();
    let mut probe_doc = None;
    if let Some(encoded) = decoded.as_ref().and_then(|t| encode(t).ok()) {
        unknown = unknown_fields(&patched, &encoded);
        probe_doc = Some(&patched);
    }
    let mut shapes = Shapes::<T>::new(probe_doc);
    Err(report(&wrong, unknown, &mut shapes))
}

/// One step from a JSON value to one of its children.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Step {
    /// A key of an object: a struct field or a map key.
    Key(String),
    /// An element of a list.
    Index(usize),
}

/// A value the type refused, and why.
#[derive(Debug)]
struct WrongValue {
    steps: Vec<Step>,
    /// serde's explanation (`invalid type: string "three", expected i32`).
    message: String,
    /// The offending value from the input, rendered; None when the path names no value.
    shown: Option<String>,
}

impl WrongValue {
    fn new(error: serde_path_to_error::Error<serde_json::Error>, input: &Value) -> Self {
        let message = error.inner().to_string();
        let mut steps: Vec<Step> = error
            .path()
            .iter()
            .map(|segment| match segment {
                serde_path_to_error::Segment::Seq { index } => Step::Index(*index),
                serde_path_to_error::Segment::Map { key } => Step::Key(key.clone()),
                serde_path_to_error::Segment::Enum { variant } => Step::Key(variant.clone()),
                serde_path_to_error::Segment::Unknown => Step::Key("?".into()),
            })
            .collect();
        if steps.is_empty() {
            // k8s-openapi checks apiVersion and kind after reading them, so the failure
            // carries the object's path, not theirs; the message names the value given.
            for field in ["apiVersion", "kind"] {
                if let Some(given) = input.get(field).and_then(Value::as_str)
                    && message.starts_with(&format!("invalid value: string {given:?}"))
                {
                    steps.push(Step::Key(field.to_string()));
                    break;
                }
            }
        }
        let shown = lookup(input, &steps).map(show);
        WrongValue {
            steps,
            message,
            shown,
        }
    }

    fn to_field_error(
        &self,
        shapes: &mut Shapes<'_, impl DeserializeOwned + Serialize>,
    ) -> FieldError {
        let path = field_path(&self.steps, shapes);
        // serde words a required field as "missing field `name`" on the enclosing object;
        // Kubernetes reports it as a Required error on the field itself.
        if let Some(name) = self
            .message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.strip_suffix('`'))
        {
            return FieldError::required(path.child(name), "");
        }
        FieldError {
            path,
            kind: FieldErrorKind::Invalid,
            value: self.shown.clone(),
            detail: self.message.clone(),
        }
    }
}

/// Renders a value as Kubernetes shows one in a field error: strings quoted, other JSON as
/// text, long values cut short.
fn show(value: &Value) -> String {
    const LIMIT: usize = 64;
    let text = match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    };
    if text.len() <= LIMIT {
        return text;
    }
    let mut cut = LIMIT;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...", &text[..cut])
}

/// The errors for the wrong values, then those for the unknown fields, each sorted by path.
fn report<T>(wrong: &[WrongValue], unknown: Vec<Vec<Step>>, shapes: &mut Shapes<'_, T>) -> ErrorList
where
    T: DeserializeOwned + Serialize,
{
    let mut errors: ErrorList = wrong.iter().map(|w| w.to_field_error(shapes)).collect();
    // Sorted, so the report does not depend on the order serde_json keeps object keys in.
    errors.sort_by(|a, b| a.path.as_str().cmp(b.path.as_str()));
    for steps in &unknown {
        // The object holding an unknown key dropped it, so it is a struct: no probe needed.
        shapes.learn(&steps[..steps.len().saturating_sub(1)], false);
    }
    let mut unknown: ErrorList = unknown
        .iter()
        .map(|steps| {
            let path = field_path(steps, shapes);
            let detail = format!("unknown field \"{path}\"");
            FieldError {
                path,
                kind: FieldErrorKind::NotFound,
                value: None,
                detail,
            }
        })
        .collect();
    unknown.sort_by(|a, b| a.path.as_str().cmp(b.path.as_str()));
    errors.extend(unknown);
    errors
}

/// The decoded object as JSON, to compare with the input.
fn encode<T: Serialize>(decoded: &T) -> Result<Value, ErrorList> {
    // Encoding what was just decoded cannot fail for k8s-openapi types; the error is kept
    // for the odd hand-written type rather than unwrapped.
    serde_json::to_value(decoded).map_err(|e| {
        vec![FieldError {
            path: FieldPath::new("<root>"),
            kind: FieldErrorKind::Invalid,
            value: None,
            detail: format!("the decoded object cannot be encoded again: {e}"),
        }]
    })
}

/// The paths of input keys that the encoded object lacks, in input order.
fn unknown_fields(input: &Value, encoded: &Value) -> Vec<Vec<Step>> {
    let mut found = Vec::new();
    walk(input, encoded, &mut Vec::new(), &mut found);
    found
}

fn walk(input: &Value, encoded: &Value, at: &mut Vec<Step>, found: &mut Vec<Vec<Step>>) {
    match (input, encoded) {
        (Value::Object(input), Value::Object(encoded)) => {
            for (key, value) in input {
                if value.is_null() {
                    continue;
                }
                at.push(Step::Key(key.clone()));
                match encoded.get(key) {
                    Some(kept) => walk(value, kept, at, found),
                    None => found.push(at.clone()),
                }
                at.pop();
            }
        }
        (Value::Array(input), Value::Array(encoded)) => {
            for (i, (value, kept)) in input.iter().zip(encoded).enumerate() {
                at.push(Step::Index(i));
                walk(value, kept, at, found);
                at.pop();
            }
        }
        _ => {}
    }
}

/// The value at `steps`, if the input has one there.
fn lookup<'v>(value: &'v Value, steps: &[Step]) -> Option<&'v Value> {
    steps.iter().try_fold(value, |v, step| match step {
        Step::Key(k) => v.get(k.as_str()),
        Step::Index(i) => v.get(*i),
    })
}

fn lookup_mut<'v>(value: &'v mut Value, steps: &[Step]) -> Option<&'v mut Value> {
    steps.iter().try_fold(value, |v, step| match step {
        Step::Key(k) => v.get_mut(k.as_str()),
        Step::Index(i) => v.get_mut(*i),
    })
}

/// Removes the innermost object key on `steps` (for a bad list element, the whole list);
/// false when there is none to remove.
fn remove_key_above(doc: &mut Value, steps: &[Step]) -> bool {
    let Some(i) = steps.iter().rposition(|s| matches!(s, Step::Key(_))) else {
        return false;
    };
    let (Step::Key(key), Some(Value::Object(parent))) = (&steps[i], lookup_mut(doc, &steps[..i]))
    else {
        return false;
    };
    parent.remove(key).is_some()
}

/// Renders steps as a Kubernetes field path: `spec.containers[0].name`,
/// `metadata.labels[app]`.
fn field_path<T>(steps: &[Step], shapes: &mut Shapes<'_, T>) -> FieldPath
where
    T: DeserializeOwned + Serialize,
{
    let mut path: Option<FieldPath> = None;
    for (i, step) in steps.iter().enumerate() {
        path = Some(match (step, path) {
            (Step::Index(n), path) => path.unwrap_or_default().index(*n),
            // The top level is the resource itself, a struct.
            (Step::Key(k), None) => FieldPath::new(k),
            (Step::Key(k), Some(path)) if shapes.is_map(&steps[..i], k) => path.key(k),
            (Step::Key(k), Some(path)) => path.child(k),
        });
    }
    path.unwrap_or_else(|| FieldPath::new("<root>"))
}

/// Which objects of a document decode as maps, learnt by probing and remembered by shape
/// (list indices do not matter: every element of a list has the same type).
struct Shapes<'d, T> {
    /// A document that decodes as `T`; None when there is none and nothing can be probed.
    doc: Option<&'d Value>,
    known: HashMap<Vec<Step>, bool>,
    probes: usize,
    decodes_as: PhantomData<fn() -> T>,
}

impl<'d, T> Shapes<'d, T>
where
    T: DeserializeOwned + Serialize,
{
    fn new(doc: Option<&'d Value>) -> Self {
        Shapes {
            doc,
            known: HashMap::new(),
            probes: 0,
            decodes_as: PhantomData,
        }
    }

    fn shape(node: &[Step]) -> Vec<Step> {
        node.iter()
            .map(|s| match s {
                Step::Index(_) => Step::Index(0),
                key => key.clone(),
            })
            .collect()
    }

    fn learn(&mut self, node: &[Step], is_map: bool) {
        self.known.insert(Self::shape(node), is_map);
    }

    /// Whether the object at `node` is a map (its keys are data, not field names); `child`
    /// is the key being rendered.
    fn is_map(&mut self, node: &[Step], child: &str) -> bool {
        let shape = Self::shape(node);
        if let Some(known) = self.known.get(&shape) {
            return *known;
        }
        if self.probes >= MAX_PROBES {
            return false;
        }
        self.probes += 1;
        let is_map = self.probe(node, child);
        self.known.insert(shape, is_map);
        is_map
    }

    /// Adds [`PROBE_KEY`] to the object at `node` and decodes: a map keeps the key, a struct
    /// drops it. The probe's value copies a value the object already holds, which the map's
    /// value type accepts; an object with none gets `""`, which maps of strings, quantities
    /// and bytes all accept.
    fn probe(&self, node: &[Step], child: &str) -> bool {
        let Some(mut doc) = self.doc.cloned() else {
            return false;
        };
        let Some(Value::Object(object)) = lookup_mut(&mut doc, node) else {
            return false;
        };
        let sample = object
            .get(child)
            .filter(|v| !v.is_null())
            .or_else(|| object.values().find(|v| !v.is_null()))
            .cloned()
            .unwrap_or_else(|| Value::String(String::new()));
        object.insert(PROBE_KEY.to_string(), sample);
        let Ok(decoded) = serde_json::from_value::<T>(doc) else {
            return false;
        };
        let Ok(encoded) = serde_json::to_value(&decoded) else {
            return false;
        };
        lookup(&encoded, node)
            .and_then(Value::as_object)
            .is_some_and(|o: &Map<String, Value>| o.contains_key(PROBE_KEY))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{Node, Pod, Secret, Service};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use serde_json::json;

    fn decoded<T: DeserializeOwned + Serialize>(value: Value) -> T {
        match decode_strict::<T>(&value) {
            Ok(t) => t,
            Err(errors) => panic!("should decode, got {errors:?}"),
        }
    }

    fn refused<T: DeserializeOwned + Serialize>(value: Value) -> Vec<String> {
        match decode_strict::<T>(&value) {
            Ok(_) => panic!("should be refused: {value}"),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    /// The Pod from https://kubernetes.io/docs/concepts/workloads/pods/, fleshed out with the
    /// fields a real manifest carries.
    fn nginx_pod() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "nginx",
                "labels": {"app.kubernetes.io/name": "nginx"},
                "annotations": {"example.com/owner": "team-a"},
            },
            "spec": {
                "containers": [{
                    "name": "nginx",
                    "image": "nginx:1.14.2",
                    "imagePullPolicy": "IfNotPresent",
                    "ports": [{"containerPort": 80, "name": "http", "protocol": "TCP"}],
                    "env": [{"name": "MODE", "value": "prod"}],
                    "resources": {
                        "limits": {"cpu": "500m", "memory": "128Mi"},
                        "requests": {"cpu": "250m", "memory": "64Mi"},
                    },
                    "livenessProbe": {"httpGet": {"path": "/", "port": 80}, "initialDelaySeconds": 3},
                    "readinessProbe": {"httpGet": {"path": "/", "port": "http"}},
                    "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
                }],
                "volumes": [{"name": "cache", "emptyDir": {}}],
                "nodeSelector": {"kubernetes.io/os": "linux"},
                "restartPolicy": "Always",
                "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
            },
        })
    }

    /// The Deployment from https://kubernetes.io/docs/concepts/workloads/controllers/deployment/.
    fn nginx_deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "nginx-deployment", "labels": {"app": "nginx"}},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "nginx"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
                "template": {
                    "metadata": {"labels": {"app": "nginx"}},
                    "spec": {"containers": [{
                        "name": "nginx",
                        "image": "nginx:1.14.2",
                        "ports": [{"containerPort": 80}],
                    }]},
                },
            },
        })
    }

    /// The Service from https://kubernetes.io/docs/concepts/services-networking/service/.
    fn my_service() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "my-service"},
            "spec": {
                "selector": {"app.kubernetes.io/name": "MyApp"},
                "type": "NodePort",
                "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 9376, "nodePort": 30007}],
            },
        })
    }

    #[test]
    fn documented_manifests_decode_without_errors() {
        let pod: Pod = decoded(nginx_pod());
        assert_eq!(pod.metadata.name.as_deref(), Some("nginx"));
        let deployment: Deployment = decoded(nginx_deployment());
        assert_eq!(deployment.spec.replicas, Some(3));
        let service: Service = decoded(my_service());
        assert_eq!(
            service.spec.and_then(|s| s.type_).as_deref(),
            Some("NodePort")
        );
    }

    #[test]
    fn a_misspelt_container_field_is_an_unknown_field() {
        let mut pod = nginx_pod();
        pod["spec"]["containers"][0]["imagePullPolice"] = json!("Always");
        assert_eq!(
            refused::<Pod>(pod),
            [
                "spec.containers[0].imagePullPolice: Not found: unknown field \
                 \"spec.containers[0].imagePullPolice\""
            ]
        );
    }

    #[test]
    fn an_unknown_top_level_key_is_reported() {
        let mut service = my_service();
        service["extra"] = json!({"a": 1});
        assert_eq!(
            refused::<Service>(service),
            ["extra: Not found: unknown field \"extra\""]
        );
    }

    #[test]
    fn an_unknown_key_under_metadata_is_reported() {
        let mut deployment = nginx_deployment();
        deployment["spec"]["template"]["metadata"]["lables"] = json!({"app": "nginx"});
        let errors = refused::<Deployment>(deployment);
        assert_eq!(
            errors,
            [
                "spec.template.metadata.lables: Not found: unknown field \"spec.template.metadata.lables\""
            ]
        );
    }

    #[test]
    fn every_unknown_field_is_reported_in_path_order() {
        let mut pod = nginx_pod();
        pod["zeta"] = json!(1);
        pod["spec"]["containers"][0]["ports"][0]["hostPorts"] = json!(8080);
        pod["metadata"]["nmae"] = json!("x");
        pod["spec"]["volumes"][0]["emptyDir"]["sizelimit"] = json!("1Gi");
        let paths: Vec<String> = refused::<Pod>(pod)
            .iter()
            .map(|e| e.split(':').next().unwrap_or_default().to_string())
            .collect();
        assert_eq!(
            paths,
            [
                "metadata.nmae",
                "spec.containers[0].ports[0].hostPorts",
                "spec.volumes[0].emptyDir.sizelimit",
                "zeta",
            ]
        );
    }

    #[test]
    fn a_string_for_an_integer_names_the_field_and_both_types() {
        let mut deployment = nginx_deployment();
        deployment["spec"]["replicas"] = json!("three");
        assert_eq!(
            refused::<Deployment>(deployment),
            [
                "spec.replicas: Invalid value: \"three\": invalid type: string \"three\", expected i32"
            ]
        );
    }

    #[test]
    fn wrong_types_deep_in_lists_have_their_full_path() {
        let mut pod = nginx_pod();
        pod["spec"]["containers"][0]["ports"][0]["containerPort"] = json!("eighty");
        assert_eq!(
            refused::<Pod>(pod),
            [
                "spec.containers[0].ports[0].containerPort: Invalid value: \"eighty\": invalid type: \
                 string \"eighty\", expected i32"
            ]
        );
    }

    #[test]
    fn every_wrong_value_is_reported_along_with_unknown_fields() {
        let mut deployment = nginx_deployment();
        deployment["spec"]["replicas"] = json!("three");
        deployment["spec"]["paused"] = json!("yes");
        deployment["spec"]["template"]["spec"]["containers"] = json!(["nginx"]);
        deployment["spec"]["minReadySecond"] = json!(5);
        assert_eq!(
            refused::<Deployment>(deployment),
            [
                "spec.paused: Invalid value: \"yes\": invalid type: string \"yes\", expected a boolean",
                "spec.replicas: Invalid value: \"three\": invalid type: string \"three\", expected i32",
                "spec.template.spec.containers[0]: Invalid value: \"nginx\": invalid type: string \
                 \"nginx\", expected Container",
                "spec.minReadySecond: Not found: unknown field \"spec.minReadySecond\"",
            ]
        );
    }

    #[test]
    fn map_entries_are_written_with_brackets() {
        let mut pod = nginx_pod();
        pod["metadata"]["labels"]["tier"] = json!(1);
        assert_eq!(
            refused::<Pod>(pod),
            [
                "metadata.labels[tier]: Invalid value: 1: invalid type: integer `1`, expected a string"
            ]
        );
        let mut pod = nginx_pod();
        pod["spec"]["nodeSelector"] = json!({"disk": true});
        assert_eq!(
            refused::<Pod>(pod),
            [
                "spec.nodeSelector[disk]: Invalid value: true: invalid type: boolean `true`, expected a string"
            ]
        );
    }

    #[test]
    fn a_wrong_kind_or_api_version_is_blamed_on_that_field() {
        let mut pod = nginx_pod();
        pod["kind"] = json!("Service");
        assert_eq!(
            refused::<Pod>(pod),
            ["kind: Invalid value: \"Service\": invalid value: string \"Service\", expected Pod"]
        );
        let mut deployment = nginx_deployment();
        deployment["apiVersion"] = json!("apps/v2");
        assert_eq!(
            refused::<Deployment>(deployment),
            [
                "apiVersion: Invalid value: \"apps/v2\": invalid value: string \"apps/v2\", expected apps/v1"
            ]
        );
    }

    #[test]
    fn something_other_than_an_object_is_refused_at_the_root() {
        assert_eq!(
            refused::<Pod>(json!("pod")),
            ["<root>: Invalid value: \"pod\": invalid type: string \"pod\", expected Pod"]
        );
    }

    #[test]
    fn a_missing_required_field_is_reported_as_required_on_that_field() {
        use k8s_openapi::api::policy::v1::PodDisruptionBudget;
        let pdb = json!({
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "web"},
            "spec": {"minAvailable": 1},
            "status": {
                "currentHealthy": 1, "desiredHealthy": 1, "disruptionsAllowed": 0, "expectedPods": 1,
                "conditions": [{"type": "DisruptionAllowed", "status": "False", "reason": "r", "message": "m"}],
            },
        });
        assert_eq!(
            refused::<PodDisruptionBudget>(pdb),
            ["status.conditions[0].lastTransitionTime: Required value"]
        );
    }

    #[test]
    fn a_wrong_value_that_leaves_a_required_field_missing_is_reported_once() {
        use k8s_openapi::api::policy::v1::PodDisruptionBudget;
        let pdb = json!({
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "web"},
            "status": {
                "currentHealthy": 1, "desiredHealthy": 1, "disruptionsAllowed": 0, "expectedPods": 1,
                "conditions": [{"type": "T", "status": "True", "reason": "r", "message": "m", "lastTransitionTime": 5}],
            },
        });
        let errors = refused::<PodDisruptionBudget>(pdb);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("status.conditions[0].lastTransitionTime: Invalid value: 5: ")
        );
    }

    #[test]
    fn explicit_nulls_mean_unset() {
        let mut pod = nginx_pod();
        pod["status"] = Value::Null;
        pod["metadata"]["namespace"] = Value::Null;
        pod["spec"]["containers"][0]["command"] = Value::Null;
        pod["spec"]["unknownButNull"] = Value::Null;
        let pod: Pod = decoded(pod);
        assert!(pod.status.is_none());
    }

    #[test]
    fn empty_objects_for_optional_structs_are_kept() {
        let mut pod = nginx_pod();
        pod["spec"]["securityContext"] = json!({});
        pod["spec"]["containers"][0]["securityContext"] = json!({});
        pod["spec"]["containers"][0]["lifecycle"] = json!({});
        decoded::<Pod>(pod);
    }

    #[test]
    fn numbers_are_accepted_for_quantities() {
        let mut pod = nginx_pod();
        pod["spec"]["containers"][0]["resources"] =
            json!({"limits": {"cpu": 1, "memory": 1.5}, "requests": {"cpu": 0.5}});
        pod["spec"]["overhead"] = json!({"cpu": 2});
        let pod: Pod = decoded(pod);
        let spec = pod.spec.unwrap_or_default();
        let resources = spec.containers[0].resources.clone().unwrap_or_default();
        let limits = resources.limits.unwrap_or_default();
        assert_eq!(limits.get("cpu"), Some(&Quantity("1".into())));
        assert_eq!(limits.get("memory"), Some(&Quantity("1.5".into())));
        assert_eq!(
            spec.overhead.unwrap_or_default().get("cpu"),
            Some(&Quantity("2".into()))
        );
        let node: Node = decoded(json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
            "status": {"capacity": {"cpu": 4, "pods": 110}, "allocatable": {"cpu": 3.5}},
        }));
        let status = node.status.unwrap_or_default();
        assert_eq!(
            status.capacity.unwrap_or_default().get("pods"),
            Some(&Quantity("110".into()))
        );
    }

    #[test]
    fn int_or_string_fields_take_both_forms() {
        let mut service = my_service();
        service["spec"]["ports"] = json!([
            {"name": "a", "port": 80, "targetPort": 8080},
            {"name": "b", "port": 81, "targetPort": "http"},
        ]);
        let service: Service = decoded(service);
        let ports = service.spec.unwrap_or_default().ports.unwrap_or_default();
        assert_eq!(ports[0].target_port, Some(IntOrString::Int(8080)));
        assert_eq!(
            ports[1].target_port,
            Some(IntOrString::String("http".into()))
        );
        let mut service = my_service();
        service["spec"]["ports"][0]["targetPort"] = json!(true);
        assert_eq!(
            refused::<Service>(service),
            [
                "spec.ports[0].targetPort: Invalid value: true: invalid type: boolean `true`, expected IntOrString"
            ]
        );
    }

    #[test]
    fn float_spelled_integers_are_not_unknown_fields() {
        // Only keys are compared: 3.0 is the same field as 3 even if re-encoded differently.
        let mut pod = nginx_pod();
        pod["spec"]["containers"][0]["resources"]["limits"]["cpu"] = json!(1.0);
        decoded::<Pod>(pod);
    }

    #[test]
    fn map_keys_never_count_as_unknown_fields() {
        let secret: Secret = decoded(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s", "labels": {"anything": "goes", "example.com/x": ""}},
            "type": "Opaque",
            "data": {"password": "c2VjcmV0", "weird key": ""},
            "stringData": {"user": "admin"},
        }));
        assert_eq!(secret.data.map(|d| d.len()), Some(2));
    }

    #[test]
    fn an_unknown_field_under_a_map_entry_is_written_with_brackets() {
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
        let crd = json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "names": {"kind": "Widget", "plural": "widgets"},
                "scope": "Namespaced",
                "versions": [{
                    "name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {
                        "type": "object",
                        "properties": {"size": {"type": "integer", "minimun": 1}},
                    }},
                }],
            },
        });
        let path = "spec.versions[0].schema.openAPIV3Schema.properties[size].minimun";
        assert_eq!(
            refused::<CustomResourceDefinition>(crd),
            [format!("{path}: Not found: unknown field \"{path}\"")]
        );
    }
}
