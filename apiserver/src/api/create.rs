//! Create: decode strictly, default, fill server-owned metadata, validate, then store on
//! the condition that the name is free (and, for Services, that every allocated value is).

use serde_json::{Value, json};

use crate::alloc;
use crate::defaults::toleration_seconds::add_default_tolerations;
use crate::error::ApiError;
use crate::meta::{fill_on_create, generate_name};
use crate::registry::Admission;
use crate::storage::{Commit, Cond, Op};
use crate::validation::{FieldError, FieldPath};

use super::{Api, MAX_RETRIES, ObjectRef, check_type, name_of, parse_body, set_meta, stamped};

impl Api {
    /// Creates an object and returns it as stored.
    pub async fn create(
        &self,
        r: &ObjectRef,
        body: &[u8],
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        if r.subresource == "eviction" && r.resource == "pods" {
            return self.evict(r, body, dry_run).await;
        }
        if !r.subresource.is_empty() {
            return Err(ApiError::method_not_allowed(format!(
                "create is not supported on the {} subresource",
                r.subresource
            )));
        }
        let mut obj = parse_body(body)?;
        let obj_ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let at = self.locate(
            &ObjectRef {
                namespace: if r.namespace.is_empty() {
                    obj_ns.clone()
                } else {
                    r.namespace.clone()
                },
                ..r.clone()
            },
            true,
        )?;
        let info = &at.info;
        check_type(&info.api_version, info.kind, &mut obj)?;
        if info.namespaced {
            if !obj_ns.is_empty() && obj_ns != at.namespace {
                return Err(ApiError::bad_request(format!(
                    "the namespace of the provided object ({obj_ns}) does not match the namespace sent on the request ({})",
                    at.namespace
                )));
            }
            set_meta(&mut obj, "namespace", json!(at.namespace));
        }
        if name_of(&obj).is_empty()
            && let Some(prefix) = obj["metadata"]["generateName"]
                .as_str()
                .filter(|p| !p.is_empty())
        {
            let name = generate_name(prefix);
            set_meta(&mut obj, "name", json!(name));
        }
        let name = name_of(&obj).to_string();
        if !r.name.is_empty() && r.name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({name}) does not match the name on the request ({})",
                r.name
            )));
        }
        if info.namespaced {
            self.ensure_namespace_open(&at.namespace).await?;
        }
        // Status is what controllers and agents observe, not what a client declares:
        // Kubernetes drops it on create, except for a Node, whose agent registers it with
        // its capacity.
        if info.status
            && info.plural != "nodes"
            && let Some(map) = obj.as_object_mut()
        {
            map.remove("status");
        }
        if info.plural == "pods" {
            add_default_tolerations(&mut obj, &self.config.default_toleration_seconds);
        }
        let mut obj = info
            .ops
            .admit(&obj, None, Admission::Create, &|m, _| {
                fill_on_create(m, info.tracks_generation)
            })
            .map_err(|e| Self::admit_error(info, &name, e))?;
        if info.plural == "pods" {
            initial_pod_status(&mut obj);
        }
        let key = at.key(&name);
        for _ in 0..MAX_RETRIES {
            let claims = if info.plural == "services" {
                alloc::allocate(&mut obj, &self.config.service_ranges, &[])
            } else {
                Vec::new()
            };
            if dry_run {
                return Ok(obj);
            }
            let mut conds = vec![Cond::Absent(key.clone())];
            let mut ops = vec![self.put_op(info, &key, &obj).await?];
            for c in &claims {
                conds.push(Cond::Absent(c.key.clone()));
                ops.push(Op::Put(c.key.clone(), key.clone().into()));
            }
            match self.commit(&conds, ops).await? {
                Commit::Done(rev) => {
                    tracing::debug!(resource = info.plural, namespace = %at.namespace, name = %name, revision = rev, "created");
                    return Ok(stamped(obj, rev));
                }
                Commit::Failed(states) => {
                    if !states.first().is_some_and(|s| s.0) {
                        return Err(ApiError::already_exists(info.plural, info.group, &name));
                    }
                    claim_collisions(info.kind, info.group, &name, &claims, &states[1..])?;
                    alloc::forget(&mut obj, &claims);
                }
            }
        }
        Err(ApiError::internal(format!(
            "could not allocate a free value for {} {name:?} after {MAX_RETRIES} attempts",
            info.kind
        )))
    }
}

/// Turns a collision on a client-chosen value into Invalid; collisions on server-chosen
/// values are retried by the caller.
pub(crate) fn claim_collisions(
    kind: &str,
    group: &str,
    name: &str,
    claims: &[alloc::Claim],
    states: &[(bool, Option<crate::storage::Kv>)],
) -> Result<(), ApiError> {
    let errors: Vec<FieldError> = claims
        .iter()
        .zip(states)
        .filter(|(c, s)| c.by_client && !s.0)
        .map(|(c, _)| {
            let what = if c.field.ends_with("nodePort") {
                "port"
            } else {
                "IP"
            };
            FieldError::invalid(
                field_path(&c.field),
                Raw(c.value.to_string()),
                format!("provided {what} is already allocated"),
            )
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(kind, group, name, errors))
    }
}

/// Renders a value verbatim in a field error (JSON text: `30080`, `["10.96.0.10"]`).
struct Raw(String);

impl std::fmt::Debug for Raw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn field_path(dotted: &str) -> FieldPath {
    // The claim's field is already rendered; a single-segment path keeps it verbatim.
    FieldPath::new(dotted)
}

/// A new pod starts Pending, with its QoS class.
fn initial_pod_status(pod: &mut Value) {
    let qos = qos_class(pod);
    if let Some(map) = pod.as_object_mut() {
        let status = map.entry("status").or_insert_with(|| json!({}));
        if let Some(s) = status.as_object_mut() {
            s.entry("phase").or_insert(json!("Pending"));
            s.insert("qosClass".into(), json!(qos));
        }
    }
}

/// Kubernetes' QoS class: Guaranteed when every container's cpu and memory limits equal
/// its requests, BestEffort when nothing is requested or limited, Burstable otherwise.
pub fn qos_class(pod: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .flat_map(|f| pod["spec"][f].as_array().into_iter().flatten())
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in containers {
        let req = &c["resources"]["requests"];
        let lim = &c["resources"]["limits"];
        let has = |v: &Value| v.as_object().is_some_and(|m| !m.is_empty());
        any |= has(req) || has(lim);
        for r in ["cpu", "memory"] {
            let l = &lim[r];
            if l.is_null() || (!req[r].is_null() && req[r] != *l) {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos_follows_requests_and_limits() {
        let best = json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(qos_class(&best), "BestEffort");
        let guaranteed = json!({"spec": {"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}}}]}});
        assert_eq!(qos_class(&guaranteed), "Guaranteed");
        let burst = json!({"spec": {"containers": [{"resources": {"requests": {"cpu": "100m"}}}]}});
        assert_eq!(qos_class(&burst), "Burstable");
    }
}
