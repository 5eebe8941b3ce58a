//! Delete, as Kubernetes deletes: an object with finalizers is only marked (deletionTimestamp)
//! until its last finalizer is removed; a pod on a node is marked with a grace period and
//! its agent completes the deletion once the containers have stopped; a namespace takes
//! everything in it along.
//!
//! Dependents follow the propagation policy, as in Kubernetes: Background (the default)
//! removes the object and leaves its dependents to the garbage collector; Foreground and
//! Orphan mark the object with the `foregroundDeletion` or `orphan` finalizer, which the
//! garbage collector removes once the dependents are deleted or released.

use serde_json::{Value, json};

use crate::alloc;
use crate::error::ApiError;
use crate::storage::{Commit, Cond, Op};

use super::namespaces::SYSTEM_NAMESPACES;
use super::{Api, Located, MAX_RETRIES, ObjectRef, set_meta, stamped};

/// Delete parameters.
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    /// Check everything, change nothing.
    pub dry_run: bool,
    /// Pods: seconds the containers get to stop (None: the pod's own setting).
    pub grace_period_seconds: Option<i64>,
    /// Only if the object still has this uid.
    pub precondition_uid: String,
    /// Only if the object is still at this resourceVersion.
    pub precondition_resource_version: String,
    /// "", "Background", "Foreground" or "Orphan".
    pub propagation_policy: String,
}

/// The finalizer a propagation policy puts on the object, if any.
pub(crate) fn policy_finalizer(policy: &str) -> Result<Option<&'static str>, ApiError> {
    match policy {
        "" | "Background" => Ok(None),
        "Foreground" => Ok(Some("foregroundDeletion")),
        "Orphan" => Ok(Some("orphan")),
        other => Err(ApiError::bad_request(format!(
            "propagationPolicy: Unsupported value: \"{other}\": supported values: \"Background\", \"Foreground\", \"Orphan\""
        ))),
    }
}

/// What a delete does to the object it finds.
enum Action {
    /// Remove it now.
    Remove,
    /// Mark it with a deletionTimestamp (and grace period) and keep it.
    Mark { grace: i64 },
    /// It is already marked at least as urgently: nothing to do.
    Nothing,
}

fn decide(at: &Located, obj: &Value, requested_grace: Option<i64>) -> Result<Action, ApiError> {
    let meta = &obj["metadata"];
    let has_finalizers = meta["finalizers"].as_array().is_some_and(|f| !f.is_empty());
    let marked = !meta["deletionTimestamp"].is_null();
    let current_grace = meta["deletionGracePeriodSeconds"].as_i64();
    if at.info.plural == "pods" {
        if requested_grace.is_some_and(|g| g < 0) {
            return Err(ApiError::bad_request(
                "gracePeriodSeconds must not be negative",
            ));
        }
        let bound = obj["spec"]["nodeName"]
            .as_str()
            .is_some_and(|n| !n.is_empty());
        let finished = matches!(
            obj["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        );
        let grace = requested_grace
            .or_else(|| obj["spec"]["terminationGracePeriodSeconds"].as_i64())
            .unwrap_or(30);
        // Nothing runs for an unbound or finished pod, so nobody needs time to stop it.
        let grace = if !bound || finished { 0 } else { grace };
        if grace > 0 {
            return Ok(match current_grace {
                Some(g) if marked && g <= grace => Action::Nothing,
                _ => Action::Mark { grace },
            });
        }
    }
    if has_finalizers {
        return Ok(if marked && current_grace == Some(0) {
            Action::Nothing
        } else {
            Action::Mark { grace: 0 }
        });
    }
    Ok(Action::Remove)
}

impl Api {
    /// Deletes an object; returns it as deleted, or as marked when deletion is pending.
    pub async fn delete(&self, r: &ObjectRef, opts: &DeleteOptions) -> Result<Value, ApiError> {
        if !r.subresource.is_empty() {
            return Err(ApiError::method_not_allowed(format!(
                "delete is not supported on the {} subresource",
                r.subresource
            )));
        }
        let at = self.locate(r, true)?;
        let info = &at.info;
        if info.plural == "namespaces" && SYSTEM_NAMESPACES.contains(&r.name.as_str()) {
            return Err(ApiError::forbidden(format!(
                "namespaces \"{}\" is forbidden: this namespace may not be deleted",
                r.name
            )));
        }
        let key = at.key(&r.name);
        let finalizer = policy_finalizer(&opts.propagation_policy)?;
        for _ in 0..MAX_RETRIES {
            let (mut current, mod_rev) = self.current(&at, &r.name).await?;
            check_preconditions(&at, &r.name, &current, mod_rev, opts)?;
            // The finalizer holds the object until the garbage collector has dealt with
            // its dependents (pods own nothing, namespaces have their own cleanup).
            let added = match finalizer {
                Some(f) if !matches!(info.plural, "namespaces" | "pods") => {
                    add_finalizer(&mut current, f)
                }
                _ => false,
            };
            let action = if info.plural == "namespaces" {
                Action::Mark { grace: 0 }
            } else {
                match decide(&at, &current, opts.grace_period_seconds)? {
                    Action::Nothing if added => Action::Mark { grace: 0 },
                    action => action,
                }
            };
            let (ops, result) = match action {
                Action::Nothing => return Ok(current),
                Action::Remove => {
                    let mut ops = vec![Op::Delete(key.clone())];
                    if info.plural == "services" {
                        ops.extend(alloc::held_keys(&current).into_iter().map(Op::Delete));
                    }
                    (ops, current.clone())
                }
                Action::Mark { grace } => {
                    let mut marked = current.clone();
                    let at_time = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(grace);
                    if marked["metadata"]["deletionTimestamp"].is_null() || grace > 0 {
                        let ts = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at_time);
                        set_meta(
                            &mut marked,
                            "deletionTimestamp",
                            serde_json::to_value(ts).unwrap_or(Value::Null),
                        );
                    }
                    set_meta(&mut marked, "deletionGracePeriodSeconds", json!(grace));
                    if info.plural == "namespaces"
                        && let Some(map) = marked.as_object_mut()
                    {
                        map.insert("status".into(), json!({"phase": "Terminating"}));
                    }
                    (vec![self.put_op(info, &key, &marked).await?], marked)
                }
            };
            if opts.dry_run {
                return Ok(result);
            }
            match self
                .commit(&[Cond::ModRevision(key.clone(), mod_rev)], ops)
                .await?
            {
                Commit::Done(rev) => {
                    tracing::debug!(resource = info.plural, namespace = %at.namespace, name = %r.name, revision = rev, "deleted or marked");
                    if info.plural == "namespaces" {
                        self.finish_namespace_deletion(&r.name).await?;
                    }
                    return Ok(stamped(result, rev));
                }
                Commit::Failed(_) if !opts.precondition_resource_version.is_empty() => {
                    return Err(ApiError::stale(info.plural, info.group, &r.name));
                }
                Commit::Failed(_) => continue,
            }
        }
        Err(ApiError::conflict(
            info.plural,
            info.group,
            &r.name,
            "too many concurrent changes; please try again",
        ))
    }
}

/// Adds `f` to the object's finalizers, replacing the other propagation finalizer (the
/// latest request decides, as in Kubernetes).
/// Returns whether the finalizers changed.
fn add_finalizer(obj: &mut Value, f: &str) -> bool {
    let before = obj["metadata"]["finalizers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut list: Vec<Value> = before
        .iter()
        .filter(|v| *v != "orphan" && *v != "foregroundDeletion")
        .cloned()
        .collect();
    list.push(json!(f));
    if list == before {
        return false;
    }
    set_meta(obj, "finalizers", Value::Array(list));
    true
}

fn check_preconditions(
    at: &Located,
    name: &str,
    obj: &Value,
    mod_rev: i64,
    opts: &DeleteOptions,
) -> Result<(), ApiError> {
    let uid = obj["metadata"]["uid"].as_str().unwrap_or_default();
    if !opts.precondition_uid.is_empty() && opts.precondition_uid != uid {
        return Err(ApiError::conflict(
            at.info.plural,
            at.info.group,
            name,
            &format!(
                "Precondition failed: UID in precondition: {}, UID in object meta: {uid}",
                opts.precondition_uid
            ),
        ));
    }
    if !opts.precondition_resource_version.is_empty()
        && opts.precondition_resource_version != mod_rev.to_string()
    {
        return Err(ApiError::conflict(
            at.info.plural,
            at.info.group,
            name,
            &format!(
                "Precondition failed: ResourceVersion in precondition: {}, ResourceVersion in object meta: {mod_rev}",
                opts.precondition_resource_version
            ),
        ));
    }
    Ok(())
}
