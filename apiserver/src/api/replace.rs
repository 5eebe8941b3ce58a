//! Update, UpdateStatus, scale and Patch: read the stored object, build its replacement,
//! admit it, and store it on the condition that nothing changed since the read. A client
//! that sent a resourceVersion gets Conflict when it is stale; otherwise a lost race is
//! retried on the fresh object, as Kubernetes' GuaranteedUpdate does.

use serde_json::Value;

use crate::alloc;
use crate::defaults::toleration_seconds::add_default_tolerations;
use crate::error::ApiError;
use crate::meta::{fill_on_update, parse_resource_version, resource_version, spec_changed};
use crate::registry::Admission;
use crate::storage::{Commit, Cond, Op};

use super::create::claim_collisions;
use super::scale::{replicas_of, scale_of};
use super::{Api, Located, MAX_RETRIES, ObjectRef, check_type, name_of, parse_body, stamped};

/// The patch formats accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    /// RFC 7386.
    Merge,
    /// RFC 6902.
    Json,
}

/// Which part of the object a replacement writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Main,
    Status,
    Scale,
}

fn part_of(at: &Located, subresource: &str) -> Result<Part, ApiError> {
    match subresource {
        "" => Ok(Part::Main),
        "status" if at.info.status => Ok(Part::Status),
        "scale" if at.info.scale => Ok(Part::Scale),
        other => Err(ApiError::not_found_resource(
            &at.info.api_version,
            &format!("{}/{other}", at.info.plural),
        )),
    }
}

/// Builds the object to store from the client's view of the part it writes.
fn merge_part(
    at: &Located,
    part: Part,
    written: &Value,
    current: &Value,
    name: &str,
) -> Result<Value, ApiError> {
    match part {
        Part::Main => {
            let mut new = written.clone();
            if at.info.status
                && let Some(map) = new.as_object_mut()
            {
                match current.get("status") {
                    Some(s) => map.insert("status".into(), s.clone()),
                    None => map.remove("status"),
                };
            }
            Ok(new)
        }
        Part::Status => {
            let mut new = current.clone();
            if let Some(map) = new.as_object_mut() {
                map.insert(
                    "status".into(),
                    written.get("status").cloned().unwrap_or(Value::Null),
                );
            }
            Ok(new)
        }
        Part::Scale => {
            let replicas = replicas_of(written, name)?;
            let mut new = current.clone();
            if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
                spec.insert("replicas".into(), Value::from(replicas));
            }
            Ok(new)
        }
    }
}

impl Api {
    /// Replaces an object (or its status, or its scale) with the one sent.
    pub async fn update(
        &self,
        r: &ObjectRef,
        body: &[u8],
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let at = self.locate(r, true)?;
        let part = part_of(&at, &r.subresource)?;
        let mut written = parse_body(body)?;
        match part {
            Part::Scale => check_type("autoscaling/v1", "Scale", &mut written)?,
            _ => check_type(&at.info.api_version, at.info.kind, &mut written)?,
        }
        let name = if r.name.is_empty() {
            name_of(&written).to_string()
        } else {
            r.name.clone()
        };
        if name_of(&written) != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the request ({name})",
                name_of(&written)
            )));
        }
        if at.info.namespaced
            && let Some(ns) = written["metadata"]["namespace"].as_str()
            && !ns.is_empty()
            && ns != at.namespace
        {
            return Err(ApiError::bad_request(format!(
                "the namespace of the object ({ns}) does not match the namespace on the request ({})",
                at.namespace
            )));
        }
        if at.info.namespaced && part != Part::Scale {
            // The request names the namespace; a manifest usually does not.
            super::set_meta(
                &mut written,
                "namespace",
                Value::String(at.namespace.clone()),
            );
        }
        let precondition = parse_resource_version(resource_version(&written).unwrap_or_default())?;
        let out = self
            .replace(&at, &name, precondition, dry_run, part, |current| {
                merge_part(&at, part, &written, current, &name)
            })
            .await?;
        if part == Part::Scale {
            scale_of(&out)
        } else {
            Ok(out)
        }
    }

    /// Applies a patch to an object (or its status, or its scale).
    pub async fn patch(
        &self,
        r: &ObjectRef,
        patch: &[u8],
        ty: PatchType,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let at = self.locate(r, true)?;
        let part = part_of(&at, &r.subresource)?;
        if patch.len() > super::MAX_REQUEST_BYTES {
            return Err(ApiError::too_large(super::MAX_REQUEST_BYTES));
        }
        let doc: Value = serde_json::from_slice(patch)
            .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))?;
        let json_patch: Option<json_patch::Patch> = match ty {
            PatchType::Merge if !doc.is_object() => {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            PatchType::Merge => None,
            PatchType::Json => Some(serde_json::from_value(doc.clone()).map_err(|e| {
                ApiError::bad_request(format!("the JSON patch is not a list of operations: {e}"))
            })?),
        };
        let name = r.name.clone();
        let out = self
            .replace(&at, &name, None, dry_run, part, |current| {
                let mut target = if part == Part::Scale {
                    scale_of(current)?
                } else {
                    current.clone()
                };
                let before = resource_version(&target).map(str::to_string);
                match &json_patch {
                    None => json_patch::merge(&mut target, &doc),
                    Some(p) => json_patch::patch(&mut target, p).map_err(|e| {
                        ApiError::bad_request(format!("the JSON patch cannot be applied: {e}"))
                    })?,
                }
                // A patch that sets resourceVersion makes it a precondition.
                if resource_version(&target).map(str::to_string) != before {
                    return Err(ApiError::stale(at.info.plural, at.info.group, &name));
                }
                if part == Part::Main {
                    check_type(&at.info.api_version, at.info.kind, &mut target)?;
                    if name_of(&target) != name {
                        return Err(ApiError::bad_request(
                            "a patch may not change metadata.name",
                        ));
                    }
                }
                merge_part(&at, part, &target, current, &name)
            })
            .await?;
        if part == Part::Scale {
            scale_of(&out)
        } else {
            Ok(out)
        }
    }

    /// The read-build-admit-store loop every replacement goes through.
    async fn replace(
        &self,
        at: &Located,
        name: &str,
        precondition: Option<i64>,
        dry_run: bool,
        part: Part,
        build: impl Fn(&Value) -> Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        let info = &at.info;
        let key = at.key(name);
        let mode = if part == Part::Status {
            Admission::Status
        } else {
            Admission::Update
        };
        for _ in 0..MAX_RETRIES {
            let (current, mod_rev) = self.current(at, name).await?;
            if precondition.is_some_and(|p| p != mod_rev) {
                return Err(ApiError::stale(info.plural, info.group, name));
            }
            let mut new = build(&current)?;
            if info.plural == "services" && part == Part::Main {
                alloc::keep_allocated(&mut new, &current);
            }
            // As Kubernetes admits pod updates too: a pod replaced from its original
            // manifest keeps the tolerations it was given.
            if info.plural == "pods" && part == Part::Main {
                add_default_tolerations(&mut new, &self.config.default_toleration_seconds);
            }
            let mut new = info
                .ops
                .admit(&new, Some(&current), mode, &|m, old| {
                    if let Some(old) = old {
                        fill_on_update(m, old);
                    }
                })
                .map_err(|e| Self::admit_error(info, name, e))?;
            if info.tracks_generation && spec_changed(&new, &current) {
                let generation = current["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
                super::set_meta(&mut new, "generation", Value::from(generation));
            }
            let unchanged = stamped(new.clone(), mod_rev) == current;
            if unchanged {
                return Ok(current);
            }
            let held = if info.plural == "services" {
                alloc::held_keys(&current)
            } else {
                Vec::new()
            };
            let claims = if info.plural == "services" {
                alloc::allocate(&mut new, &self.config.service_ranges, &held)
            } else {
                Vec::new()
            };
            let released: Vec<String> = if info.plural == "services" {
                let now = alloc::held_keys(&new);
                held.into_iter().filter(|k| !now.contains(k)).collect()
            } else {
                Vec::new()
            };
            let finished = !new["metadata"]["deletionTimestamp"].is_null()
                && new["metadata"]["finalizers"]
                    .as_array()
                    .is_none_or(Vec::is_empty);
            if dry_run {
                return Ok(stamped(new, mod_rev));
            }
            let mut conds = vec![Cond::ModRevision(key.clone(), mod_rev)];
            let mut ops = Vec::new();
            if finished {
                // The last finalizer is gone from an object being deleted: it goes now.
                ops.push(Op::Delete(key.clone()));
                ops.extend(alloc::held_keys(&current).into_iter().map(Op::Delete));
            } else {
                ops.push(self.put_op(info, &key, &new).await?);
                for c in &claims {
                    conds.push(Cond::Absent(c.key.clone()));
                    ops.push(Op::Put(c.key.clone(), key.clone().into()));
                }
                ops.extend(released.into_iter().map(Op::Delete));
            }
            match self.commit(&conds, ops).await? {
                Commit::Done(rev) => return Ok(stamped(new, rev)),
                Commit::Failed(states) => {
                    if !states.first().is_some_and(|s| s.0) {
                        if precondition.is_some() {
                            return Err(ApiError::stale(info.plural, info.group, name));
                        }
                        continue;
                    }
                    claim_collisions(info.kind, info.group, name, &claims, &states[1..])?;
                }
            }
        }
        Err(ApiError::conflict(
            info.plural,
            info.group,
            name,
            "too many concurrent changes; please try again",
        ))
    }
}
