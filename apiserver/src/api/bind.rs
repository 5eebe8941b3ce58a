//! Bind: the scheduler's one write. Sets spec.nodeName on a pod that has none, and records
//! the PodScheduled condition; a pod that is already bound or being deleted is a Conflict.

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::meta::now;
use crate::storage::{Commit, Cond, Op};
use crate::validation::{FieldError, FieldPath};

use super::{Api, MAX_RETRIES, ObjectRef, stamped, stored_bytes};

impl Api {
    /// Binds pod `namespace/name` to `node`; returns the bound pod.
    pub async fn bind(
        &self,
        namespace: &str,
        name: &str,
        node: &str,
        pod_uid: &str,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let at = self.locate(
            &ObjectRef {
                api_version: "v1".into(),
                resource: "pods".into(),
                namespace: namespace.to_string(),
                name: name.to_string(),
                subresource: String::new(),
            },
            true,
        )?;
        if node.is_empty() {
            return Err(ApiError::invalid(
                "Binding",
                "",
                name,
                vec![FieldError::required(
                    FieldPath::new("target").child("name"),
                    "",
                )],
            ));
        }
        let conflict = |why: String| ApiError::conflict("pods/binding", "", name, &why);
        let key = at.key(name);
        // The first try starts from the watch cache's copy, as Kubernetes' guaranteed
        // update does: the write is conditional on that copy's revision, so a stale copy
        // costs one failed write and the retries read the store. The scheduler binds
        // pods the cache has just shown it, so the store read it saves is one per pod.
        let mut cached = self
            .cache(&at.info)
            .ok()
            .and_then(|c| c.get(&key))
            .and_then(|o| Some((serde_json::from_slice::<Value>(&o.json).ok()?, o.revision)));
        for _ in 0..MAX_RETRIES {
            let from_cache = cached.is_some();
            let (current, mod_rev) = match cached.take() {
                Some(c) => c,
                None => self.current(&at, name).await?,
            };
            let uid = current["metadata"]["uid"].as_str().unwrap_or_default();
            let refusal = if !pod_uid.is_empty() && pod_uid != uid {
                Some(format!(
                    "Precondition failed: UID in precondition: {pod_uid}, UID in object meta: {uid}"
                ))
            } else if let Some(bound) = current["spec"]["nodeName"]
                .as_str()
                .filter(|n| !n.is_empty())
            {
                Some(format!(
                    "pod {name} is already assigned to node \"{bound}\""
                ))
            } else if !current["metadata"]["deletionTimestamp"].is_null() {
                Some(format!(
                    "pod {name} is being deleted, cannot be assigned to a host"
                ))
            } else {
                None
            };
            if let Some(why) = refusal {
                // Refusals are decided on the store's copy alone: the cache may be behind.
                if from_cache {
                    continue;
                }
                return Err(conflict(why));
            }
            let mut pod = current.clone();
            bind_pod(&mut pod, node);
            if dry_run {
                return Ok(pod);
            }
            match self
                .commit(
                    &[Cond::ModRevision(key.clone(), mod_rev)],
                    vec![Op::Put(key.clone(), stored_bytes(&pod))],
                )
                .await?
            {
                Commit::Done(rev) => {
                    tracing::debug!(namespace, pod = name, node, revision = rev, "bound");
                    return Ok(stamped(pod, rev));
                }
                // Changed since the read (a status write, or another binder): look again.
                Commit::Failed(_) => continue,
            }
        }
        Err(conflict(
            "too many concurrent changes; please try again".into(),
        ))
    }
}

/// Sets the node and the PodScheduled=True condition.
fn bind_pod(pod: &mut Value, node: &str) {
    if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("nodeName".into(), json!(node));
    }
    let Some(map) = pod.as_object_mut() else {
        return;
    };
    let status = map.entry("status").or_insert_with(|| json!({}));
    let Some(status) = status.as_object_mut() else {
        return;
    };
    let conditions = status.entry("conditions").or_insert_with(|| json!([]));
    let Some(list) = conditions.as_array_mut() else {
        return;
    };
    list.retain(|c| c["type"] != "PodScheduled");
    list.push(json!({
        "type": "PodScheduled",
        "status": "True",
        "lastTransitionTime": serde_json::to_value(now()).unwrap_or(Value::Null),
    }));
}
