//! One Deployment's reconciliation, in Kubernetes' order: claim its ReplicaSets, note
//! pause and resume, then either scale (paused, or resized mid-rollout) or roll out
//! (RollingUpdate or Recreate), clean up old revisions once complete, and write status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flotilla_client::{ClientError, DeleteParams, Patch};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde_json::json;

use super::proportional::{self, Sized};
use super::revisions::{self, DESIRED_REPLICAS, HASH_LABEL, MAX_REPLICAS};
use super::rolling::{self, Fenceposts, Rs};
use super::status::{self, FOUND_NEW_RS, NEW_RS_CREATED, PAUSED, RESUMED, TIMED_OUT};
use super::{Controller, EVENTS, controller_of};
use crate::selector;

/// Does the Deployment replace all pods at once?
pub fn is_recreate(d: &Deployment) -> bool {
    d.spec
        .strategy
        .as_ref()
        .is_some_and(|s| s.type_.as_deref() == Some("Recreate"))
}

fn name_of(meta: &ObjectMeta) -> String {
    meta.name.clone().unwrap_or_default()
}

fn replicas_of(d: &Deployment) -> i32 {
    d.spec.replicas.unwrap_or(1)
}

fn created(meta: &ObjectMeta) -> jiff::Timestamp {
    meta.creation_timestamp
        .as_ref()
        .map_or(jiff::Timestamp::UNIX_EPOCH, |t| t.0)
}

fn view(rs: &ReplicaSet) -> Rs {
    let replicas = rs.spec.replicas.unwrap_or(1);
    let available = rs
        .status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0);
    Rs {
        name: name_of(&rs.metadata),
        replicas,
        available: available.min(replicas),
        created: created(&rs.metadata),
    }
}

fn is_active(rs: &ReplicaSet) -> bool {
    rs.spec.replicas.unwrap_or(1) > 0
}

/// A Deployment's ReplicaSets, split into the one running its current template (if any)
/// and the others.
struct Revisions {
    new: Option<ReplicaSet>,
    old: Vec<Arc<ReplicaSet>>,
}

impl Revisions {
    fn all(&self) -> Vec<&ReplicaSet> {
        self.old
            .iter()
            .map(Arc::as_ref)
            .chain(self.new.as_ref())
            .collect()
    }
}

impl Controller {
    /// Reconciles one Deployment; returns when to look again, if a deadline is due.
    pub(crate) async fn sync(&self, key: &str) -> Result<Option<Duration>, ClientError> {
        let Some(d) = self.deployments.get(key) else {
            return Ok(None);
        };
        let mut d = Deployment::clone(&d);
        if selector::is_empty(&d.spec.selector) {
            self.event(
                &d,
                "Warning",
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.",
            )
            .await;
            return Ok(None);
        }
        let sets = self.claim(&d).await?;
        if d.metadata.deletion_timestamp.is_some() {
            let revs = self.revisions(&mut d, &sets, false).await?;
            return self.write_status(&d, &revs, false).await;
        }
        if self.note_pause(&d).await? {
            // The status write comes back as an event; continue from there.
            return Ok(None);
        }
        if d.spec.paused == Some(true) || self.is_scaling_event(&d, &sets) {
            return self.scale_only(&mut d, &sets).await;
        }
        if is_recreate(&d) {
            self.recreate(&mut d, &sets).await
        } else {
            self.rolling(&mut d, &sets).await
        }
    }

    /// The ReplicaSets this Deployment controls, after adopting matching orphans and
    /// releasing ones that stopped matching.
    async fn claim(&self, d: &Deployment) -> Result<Vec<Arc<ReplicaSet>>, ClientError> {
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let uid = d.metadata.uid.clone().unwrap_or_default();
        let api = self.client.api::<ReplicaSet>(&ns);
        let mut mine = Vec::new();
        for rs in self.sets.by_index("namespace", &ns) {
            let labels = rs.metadata.labels.clone().unwrap_or_default();
            let matching = selector::matches(&d.spec.selector, &labels);
            let rs_name = name_of(&rs.metadata);
            match controller_of(&rs.metadata) {
                Some(o) if o.uid == uid => {
                    if matching {
                        mine.push(rs);
                        continue;
                    }
                    let others: Vec<&OwnerReference> = rs
                        .metadata
                        .owner_references
                        .iter()
                        .flatten()
                        .filter(|r| r.uid != uid)
                        .collect();
                    let patch = Patch::Merge(json!({"metadata": {"ownerReferences": others}}));
                    match api.patch(&rs_name, &patch).await {
                        Ok(_) => {
                            tracing::info!(deployment = %name_of(&d.metadata), replicaset = %rs_name, "released")
                        }
                        Err(e) if e.is_not_found() => {}
                        Err(e) => return Err(e),
                    }
                }
                Some(_) => {}
                None if matching
                    && rs.metadata.deletion_timestamp.is_none()
                    && d.metadata.deletion_timestamp.is_none() =>
                {
                    let mut refs = rs.metadata.owner_references.clone().unwrap_or_default();
                    refs.push(owner_ref(d));
                    let patch = Patch::Merge(json!({"metadata": {
                        "ownerReferences": refs,
                        "resourceVersion": rs.metadata.resource_version,
                    }}));
                    match api.patch(&rs_name, &patch).await {
                        Ok(adopted) => {
                            tracing::info!(deployment = %name_of(&d.metadata), replicaset = %rs_name, "adopted");
                            mine.push(Arc::new(adopted));
                        }
                        Err(e) if e.is_not_found() => {}
                        Err(e) => return Err(e),
                    }
                }
                None => {}
            }
        }
        Ok(mine)
    }

    /// Sets Progressing to DeploymentPaused or DeploymentResumed when pause changes;
    /// returns whether it wrote.
    async fn note_pause(&self, d: &Deployment) -> Result<bool, ClientError> {
        if status::deadline(d).is_none() {
            return Ok(false);
        }
        let mut s = d.status.clone().unwrap_or_default();
        let reason = status::condition(&s, "Progressing").and_then(|c| c.reason.clone());
        if reason.as_deref() == Some(TIMED_OUT) {
            return Ok(false);
        }
        let shown_paused = reason.as_deref() == Some(PAUSED);
        let paused = d.spec.paused == Some(true);
        let now = jiff::Timestamp::now();
        let c = match (paused, shown_paused) {
            (true, false) => status::new_condition(
                "Progressing",
                "Unknown",
                PAUSED,
                "Deployment is paused".into(),
                now,
            ),
            (false, true) => status::new_condition(
                "Progressing",
                "Unknown",
                RESUMED,
                "Deployment is resumed".into(),
                now,
            ),
            _ => return Ok(false),
        };
        status::set_condition(&mut s, c);
        self.put_status(d, s).await?;
        Ok(true)
    }

    /// Was the Deployment resized since its active ReplicaSets were last scaled?
    fn is_scaling_event(&self, d: &Deployment, sets: &[Arc<ReplicaSet>]) -> bool {
        let replicas = replicas_of(d);
        sets.iter()
            .filter(|rs| is_active(rs))
            .filter_map(|rs| revisions::int_annotation(rs, DESIRED_REPLICAS))
            .any(|desired| desired != replicas)
    }

    /// Finds the new ReplicaSet (creating it if `create`), brings revision annotations up
    /// to date on it and on the Deployment.
    async fn revisions(
        &self,
        d: &mut Deployment,
        sets: &[Arc<ReplicaSet>],
        create: bool,
    ) -> Result<Revisions, ClientError> {
        let mut sorted: Vec<Arc<ReplicaSet>> = sets.to_vec();
        sorted.sort_by(|a, b| {
            created(&a.metadata)
                .cmp(&created(&b.metadata))
                .then_with(|| name_of(&a.metadata).cmp(&name_of(&b.metadata)))
        });
        let new_idx = sorted.iter().position(|rs| revisions::same_template(rs, d));
        let existing = new_idx.map(|i| sorted.remove(i));
        let old = sorted;
        let max_old = old
            .iter()
            .map(|rs| revisions::rs_revision(rs))
            .max()
            .unwrap_or(0);
        let revision = max_old + 1;
        let f = rolling::fenceposts(&d.spec);
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let api = self.client.api::<ReplicaSet>(&ns);
        let mut s = d.status.clone().unwrap_or_default();
        let now = jiff::Timestamp::now();

        let new = if let Some(existing) = existing {
            let mut rs = ReplicaSet::clone(&existing);
            let annotated = revisions::set_new_rs_annotations(d, &mut rs, revision);
            if annotated || rs.spec.min_ready_seconds != d.spec.min_ready_seconds {
                rs.spec.min_ready_seconds = d.spec.min_ready_seconds;
                rs = api.update(&rs).await?;
            }
            if status::deadline(d).is_some() && status::condition(&s, "Progressing").is_none() {
                let msg = format!("Found new replica set \"{}\"", name_of(&rs.metadata));
                status::set_condition(
                    &mut s,
                    status::new_condition("Progressing", "True", FOUND_NEW_RS, msg, now),
                );
            }
            Some(rs)
        } else if create {
            Some(self.create_new(d, &old, revision, f, &mut s, now).await?)
        } else {
            None
        };
        if let Some(rs) = &new {
            self.set_deployment_revision(d, revisions::rs_revision(rs))
                .await?;
        }
        if Some(&s) != d.status.as_ref() && s != DeploymentStatus::default() {
            *d = self.put_status(d, s).await?;
        }
        Ok(Revisions { new, old })
    }

    /// Creates the ReplicaSet for the Deployment's current template.
    async fn create_new(
        &self,
        d: &Deployment,
        old: &[Arc<ReplicaSet>],
        revision: i64,
        f: Fenceposts,
        s: &mut DeploymentStatus,
        now: jiff::Timestamp,
    ) -> Result<ReplicaSet, ClientError> {
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let d_name = name_of(&d.metadata);
        let api = self.client.api::<ReplicaSet>(&ns);
        let mut template = d.spec.template.clone();
        let hash = revisions::template_hash(&template, s.collision_count);
        let meta = template.metadata.get_or_insert_with(Default::default);
        meta.labels
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_LABEL.into(), hash.clone());
        let mut selector = d.spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_LABEL.into(), hash.clone());
        let name = format!("{d_name}-{hash}");
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                labels: meta.labels.clone(),
                owner_references: Some(vec![owner_ref(d)]),
                ..Default::default()
            },
            spec: ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: d.spec.min_ready_seconds,
                selector,
                template: Some(template),
            },
            status: None,
        };
        let replicas = replicas_of(d);
        let size = if is_recreate(d) {
            replicas
        } else {
            let mut all: Vec<Rs> = old.iter().map(|r| view(r)).collect();
            let v = view(&rs);
            all.push(v.clone());
            rolling::new_rs_size(replicas, f, &v, &all)
        };
        rs.spec.replicas = Some(size);
        revisions::set_new_rs_annotations(d, &mut rs, revision);
        revisions::set_replica_annotations(&mut rs, replicas, replicas + f.max_surge);
        let created = match api.create(&rs).await {
            Ok(created) => created,
            Err(e) if e.is_already_exists() => {
                let existing = api.get(&name).await?;
                let ours = controller_of(&existing.metadata)
                    .is_some_and(|o| Some(&o.uid) == d.metadata.uid.as_ref());
                if ours && revisions::same_template(&existing, d) {
                    return Ok(existing);
                }
                // A different ReplicaSet holds the name: hash again with a new count.
                s.collision_count = Some(s.collision_count.unwrap_or(0) + 1);
                self.put_status(d, s.clone()).await?;
                return Err(e);
            }
            Err(e) => {
                if status::deadline(d).is_some() {
                    let msg = format!("Failed to create new replica set \"{name}\": {e}");
                    status::set_condition(
                        s,
                        status::new_condition(
                            "Progressing",
                            "False",
                            "ReplicaSetCreateError",
                            msg,
                            now,
                        ),
                    );
                    self.put_status(d, s.clone()).await?;
                }
                return Err(e);
            }
        };
        tracing::info!(deployment = %d_name, replicaset = %name, revision, "created a ReplicaSet");
        if size > 0 {
            self.event(
                d,
                "Normal",
                "ScalingReplicaSet",
                &format!("Scaled up replica set {name} from 0 to {size}"),
            )
            .await;
        }
        if status::deadline(d).is_some() {
            let msg = format!("Created new replica set \"{name}\"");
            status::set_condition(
                s,
                status::new_condition("Progressing", "True", NEW_RS_CREATED, msg, now),
            );
        }
        Ok(created)
    }

    /// Writes the revision annotation on the Deployment when it moved.
    async fn set_deployment_revision(
        &self,
        d: &mut Deployment,
        revision: i64,
    ) -> Result<(), ClientError> {
        let current = revisions::revision_of(d.metadata.annotations.as_ref());
        if current == revision {
            return Ok(());
        }
        let mut copy = d.clone();
        copy.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(revisions::REVISION.into(), revision.to_string());
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        *d = self.client.api::<Deployment>(&ns).update(&copy).await?;
        Ok(())
    }

    /// Sets a ReplicaSet's size (and the annotations proportional scaling reads);
    /// returns whether it wrote.
    async fn scale(&self, d: &Deployment, rs: &ReplicaSet, size: i32) -> Result<bool, ClientError> {
        let f = rolling::fenceposts(&d.spec);
        let replicas = replicas_of(d);
        let mut copy = rs.clone();
        let was = rs.spec.replicas.unwrap_or(1);
        let annotated =
            revisions::set_replica_annotations(&mut copy, replicas, replicas + f.max_surge);
        if was == size && !annotated {
            return Ok(false);
        }
        copy.spec.replicas = Some(size);
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        self.client.api::<ReplicaSet>(&ns).update(&copy).await?;
        if was != size {
            let direction = if size > was { "up" } else { "down" };
            let rs_name = name_of(&rs.metadata);
            tracing::info!(deployment = %name_of(&d.metadata), replicaset = %rs_name, from = was, to = size, "scaled");
            self.event(
                d,
                "Normal",
                "ScalingReplicaSet",
                &format!("Scaled {direction} replica set {rs_name} from {was} to {size}"),
            )
            .await;
        }
        Ok(true)
    }

    /// Paused, or resized mid-rollout: resize the active ReplicaSets (proportionally when
    /// more than one is active), no rollout step.
    async fn scale_only(
        &self,
        d: &mut Deployment,
        sets: &[Arc<ReplicaSet>],
    ) -> Result<Option<Duration>, ClientError> {
        let revs = self.revisions(d, sets, false).await?;
        let replicas = replicas_of(d);
        let all = revs.all();
        let active: Vec<&ReplicaSet> = all.iter().copied().filter(|rs| is_active(rs)).collect();
        let only = match active.len() {
            0 => revs.new.as_ref().or_else(|| {
                revs.old
                    .iter()
                    .max_by_key(|rs| created(&rs.metadata))
                    .map(Arc::as_ref)
            }),
            1 => active.first().copied(),
            _ => None,
        };
        if let Some(rs) = only {
            self.scale(d, rs, replicas).await?;
        } else if revs.new.as_ref().is_some_and(|n| is_saturated(d, n)) {
            for rs in revs.old.iter().filter(|rs| is_active(rs)) {
                self.scale(d, rs, 0).await?;
            }
        } else if !is_recreate(d) {
            let f = rolling::fenceposts(&d.spec);
            let status_replicas = d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
            let sized: Vec<Sized> = active
                .iter()
                .map(|rs| Sized {
                    name: name_of(&rs.metadata),
                    replicas: rs.spec.replicas.unwrap_or(1),
                    max_replicas: revisions::int_annotation(rs, MAX_REPLICAS),
                    created: created(&rs.metadata),
                })
                .collect();
            for (name, size) in
                proportional::distribute(replicas, f.max_surge, status_replicas, &sized)
            {
                if let Some(rs) = active.iter().find(|rs| name_of(&rs.metadata) == name) {
                    self.scale(d, rs, size).await?;
                }
            }
        }
        if d.spec.paused == Some(true) {
            self.clean_up(d, &revs).await?;
        }
        self.write_status(d, &revs, false).await
    }

    /// One step of a rolling update: grow the new ReplicaSet within the surge, else shrink
    /// old ones within the availability bound, else (done) trim history.
    async fn rolling(
        &self,
        d: &mut Deployment,
        sets: &[Arc<ReplicaSet>],
    ) -> Result<Option<Duration>, ClientError> {
        let revs = self.revisions(d, sets, true).await?;
        let replicas = replicas_of(d);
        let f = rolling::fenceposts(&d.spec);
        let views: Vec<Rs> = revs.all().into_iter().map(view).collect();
        if let Some(new) = &revs.new {
            let v = view(new);
            let size = rolling::new_rs_size(replicas, f, &v, &views);
            if self.scale(d, new, size).await? && size != v.replicas {
                return self.write_status(d, &revs, true).await;
            }
        }
        let olds: Vec<Rs> = revs
            .old
            .iter()
            .filter(|rs| is_active(rs))
            .map(|rs| view(rs))
            .collect();
        let plan = rolling::old_rs_sizes(replicas, f, revs.new.as_ref().map(view).as_ref(), &olds);
        let mut scaled = false;
        for (name, size) in plan {
            if let Some(rs) = revs.old.iter().find(|rs| name_of(&rs.metadata) == name) {
                scaled |= self.scale(d, rs, size).await?;
            }
        }
        if !scaled && d.status.as_ref().is_some_and(|s| status::is_complete(d, s)) {
            self.clean_up(d, &revs).await?;
        }
        self.write_status(d, &revs, true).await
    }

    /// Recreate: every old pod goes before the new ReplicaSet gets any.
    async fn recreate(
        &self,
        d: &mut Deployment,
        sets: &[Arc<ReplicaSet>],
    ) -> Result<Option<Duration>, ClientError> {
        let revs = self.revisions(d, sets, false).await?;
        let mut scaled = false;
        for rs in revs.old.iter().filter(|rs| is_active(rs)) {
            scaled |= self.scale(d, rs, 0).await?;
        }
        if scaled || self.old_pods_running(&revs) {
            return self.write_status(d, &revs, true).await;
        }
        let revs = match revs.new {
            Some(_) => revs,
            None => self.revisions(d, sets, true).await?,
        };
        if let Some(new) = &revs.new {
            self.scale(d, new, replicas_of(d)).await?;
        }
        if d.status.as_ref().is_some_and(|s| status::is_complete(d, s)) {
            self.clean_up(d, &revs).await?;
        }
        self.write_status(d, &revs, true).await
    }

    /// Are pods of the old ReplicaSets still there (and not finished)?
    fn old_pods_running(&self, revs: &Revisions) -> bool {
        let counted: i32 = revs
            .old
            .iter()
            .map(|rs| rs.status.as_ref().map_or(0, |s| s.replicas))
            .sum();
        counted > 0
            || revs.old.iter().any(|rs| {
                let uid = rs.metadata.uid.clone().unwrap_or_default();
                self.pods.by_index("owner", &uid).iter().any(|p| {
                    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                    !matches!(phase, Some("Succeeded" | "Failed"))
                })
            })
    }

    /// Deletes the old revisions beyond revisionHistoryLimit.
    async fn clean_up(&self, d: &Deployment, revs: &Revisions) -> Result<(), ClientError> {
        let Some(limit) = d.spec.revision_history_limit else {
            return Ok(());
        };
        let olds: Vec<&ReplicaSet> = revs.old.iter().map(Arc::as_ref).collect();
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let api = self.client.api::<ReplicaSet>(&ns);
        for rs in revisions::beyond_history(&olds, limit) {
            let rs_name = name_of(&rs.metadata);
            tracing::info!(deployment = %name_of(&d.metadata), replicaset = %rs_name, "deleting an old revision beyond the history limit");
            let params = DeleteParams {
                precondition_uid: rs.metadata.uid.clone().unwrap_or_default(),
                ..Default::default()
            };
            match api.delete(&rs_name, &params).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() || e.is_conflict() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes the status the ReplicaSets add up to (and, for a rollout, the Progressing
    /// condition); returns when to check the progress deadline.
    async fn write_status(
        &self,
        d: &Deployment,
        revs: &Revisions,
        rollout: bool,
    ) -> Result<Option<Duration>, ClientError> {
        let now = jiff::Timestamp::now();
        let f = rolling::fenceposts(&d.spec);
        let mut s = status::calculate(d, revs.new.as_ref(), &revs.all(), f, now);
        if rollout {
            status::update_progressing(d, revs.new.as_ref(), &mut s, now);
            status::update_replica_failure(revs.new.as_ref(), &revs.all(), &mut s, now);
        }
        if Some(&s) == d.status.as_ref() {
            return Ok(status::recheck_after(d, &s, now));
        }
        let timed_out_now = status::condition(&s, "Progressing").and_then(|c| c.reason.as_deref())
            == Some(TIMED_OUT)
            && d.status
                .as_ref()
                .and_then(|s| status::condition(s, "Progressing"))
                .and_then(|c| c.reason.as_deref())
                != Some(TIMED_OUT);
        self.put_status(d, s).await?;
        if timed_out_now {
            let name = name_of(&d.metadata);
            tracing::warn!(deployment = %name, "the rollout exceeded its progress deadline");
            self.event(
                d,
                "Warning",
                TIMED_OUT,
                &format!("Deployment \"{name}\" has timed out progressing."),
            )
            .await;
        }
        Ok(None)
    }

    async fn put_status(
        &self,
        d: &Deployment,
        s: DeploymentStatus,
    ) -> Result<Deployment, ClientError> {
        let mut copy = d.clone();
        copy.status = Some(s);
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        self.client
            .api::<Deployment>(&ns)
            .update_status(&copy)
            .await
    }

    async fn event(&self, d: &Deployment, type_: &str, reason: &str, message: &str) {
        EVENTS.record(&self.client, d, type_, reason, message).await;
    }
}

/// Has the new ReplicaSet everything the Deployment asks for, all available?
fn is_saturated(d: &Deployment, rs: &ReplicaSet) -> bool {
    let replicas = replicas_of(d);
    rs.spec.replicas == Some(replicas)
        && revisions::int_annotation(rs, DESIRED_REPLICAS) == Some(replicas)
        && rs.status.as_ref().and_then(|s| s.available_replicas) == Some(replicas)
}

/// The owner reference a Deployment puts on its ReplicaSets.
fn owner_ref(d: &Deployment) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: name_of(&d.metadata),
        uid: d.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}
