//! A Deployment's status as Kubernetes computes it: counts summed over its ReplicaSets,
//! the Available condition (minimum availability), and the Progressing condition that
//! measures progressDeadlineSeconds.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::rolling::Fenceposts;

/// The Progressing reason once the new ReplicaSet is fully available.
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
/// The Progressing reason while pods are being replaced.
pub const RS_UPDATED: &str = "ReplicaSetUpdated";
/// The Progressing reason once the deadline passed without progress.
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
/// The Progressing reason when a new ReplicaSet was created.
pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
/// The Progressing reason when the controller found the new ReplicaSet already there.
pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
/// The Progressing reason while paused.
pub const PAUSED: &str = "DeploymentPaused";
/// The Progressing reason when resumed.
pub const RESUMED: &str = "DeploymentResumed";

/// The condition of `type_`, if set.
pub fn condition<'a>(status: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_.as_deref() == Some(type_))
}

/// Builds a condition stamped `now`.
pub fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: jiff::Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: Some(type_.into()),
        status: Some(status.into()),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Sets a condition; one with the same status and reason is left as it is, and the
/// transition time survives a change that keeps the status.
pub fn set_condition(status: &mut DeploymentStatus, mut c: DeploymentCondition) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    if let Some(current) = conditions.iter().find(|x| x.type_ == c.type_) {
        if current.status == c.status && current.reason == c.reason {
            return;
        }
        if current.status == c.status {
            c.last_transition_time = current.last_transition_time.clone();
        }
    }
    conditions.retain(|x| x.type_ != c.type_);
    conditions.push(c);
}

/// Removes a condition.
pub fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(c) = status.conditions.as_mut() {
        c.retain(|x| x.type_.as_deref() != Some(type_));
    }
}

fn sum(sets: &[&ReplicaSet], f: impl Fn(&ReplicaSet) -> i32) -> i32 {
    sets.iter().map(|rs| f(rs)).sum()
}

/// The status the ReplicaSets add up to, with the Available condition (Progressing is
/// carried over from the current status).
pub fn calculate(
    d: &Deployment,
    new: Option<&ReplicaSet>,
    all: &[&ReplicaSet],
    f: Fenceposts,
    now: jiff::Timestamp,
) -> DeploymentStatus {
    let status_of = |rs: &ReplicaSet| rs.status.clone().unwrap_or_default();
    let available = sum(all, |rs| status_of(rs).available_replicas.unwrap_or(0));
    let total = sum(all, |rs| rs.spec.replicas.unwrap_or(1));
    let current = d.status.clone().unwrap_or_default();
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(sum(all, |rs| status_of(rs).replicas)),
        updated_replicas: Some(new.map_or(0, |rs| status_of(rs).replicas)),
        ready_replicas: Some(sum(all, |rs| status_of(rs).ready_replicas.unwrap_or(0))),
        available_replicas: Some(available),
        unavailable_replicas: Some((total - available).max(0)),
        collision_count: current.collision_count,
        conditions: current.conditions.clone(),
        terminating_replicas: None,
    };
    let replicas = d.spec.replicas.unwrap_or(1);
    let c = if available >= replicas - f.max_unavailable {
        new_condition(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
            now,
        )
    } else {
        new_condition(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
            now,
        )
    };
    set_condition(&mut status, c);
    status
}

/// Has the rollout finished: every pod updated and available, the spec observed?
pub fn is_complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let replicas = d.spec.replicas.unwrap_or(1);
    s.updated_replicas == Some(replicas)
        && s.replicas == Some(replicas)
        && s.available_replicas == Some(replicas)
        && s.observed_generation >= d.metadata.generation
}

/// Did anything move forward since the last status?
fn is_progressing(old: &DeploymentStatus, new: &DeploymentStatus) -> bool {
    let n = |v: Option<i32>| v.unwrap_or(0);
    n(new.updated_replicas) > n(old.updated_replicas)
        || n(new.ready_replicas) > n(old.ready_replicas)
        || n(old.replicas) - n(old.updated_replicas) > n(new.replicas) - n(new.updated_replicas)
        || n(new.available_replicas) > n(old.available_replicas)
}

/// The progress deadline, when the Deployment has one.
pub fn deadline(d: &Deployment) -> Option<i32> {
    d.spec.progress_deadline_seconds.filter(|s| *s != i32::MAX)
}

/// Has the deadline passed since progress was last made?
pub fn timed_out(d: &Deployment, s: &DeploymentStatus, now: jiff::Timestamp) -> bool {
    let (Some(secs), Some(c)) = (deadline(d), condition(s, "Progressing")) else {
        return false;
    };
    match c.reason.as_deref() {
        Some(NEW_RS_AVAILABLE) => false,
        Some(TIMED_OUT) => true,
        _ => c
            .last_update_time
            .as_ref()
            .is_some_and(|t| now.duration_since(t.0).as_secs() > i64::from(secs)),
    }
}

/// Sets the Progressing condition for the rollout's state: complete, progressing (which
/// restarts the deadline), or timed out.
pub fn update_progressing(
    d: &Deployment,
    new_rs: Option<&ReplicaSet>,
    status: &mut DeploymentStatus,
    now: jiff::Timestamp,
) {
    if deadline(d).is_none() {
        remove_condition(status, "Progressing");
        return;
    }
    let current = condition(status, "Progressing").cloned();
    let already_complete = status.replicas == status.updated_replicas
        && current.as_ref().and_then(|c| c.reason.as_deref()) == Some(NEW_RS_AVAILABLE);
    if already_complete {
        return;
    }
    let subject = match new_rs.and_then(|rs| rs.metadata.name.as_deref()) {
        Some(name) => format!("ReplicaSet \"{name}\""),
        None => format!(
            "Deployment \"{}\"",
            d.metadata.name.as_deref().unwrap_or_default()
        ),
    };
    let old = d.status.clone().unwrap_or_default();
    if is_complete(d, status) {
        set_condition(
            status,
            new_condition(
                "Progressing",
                "True",
                NEW_RS_AVAILABLE,
                format!("{subject} has successfully progressed."),
                now,
            ),
        );
    } else if is_progressing(&old, status) {
        let mut c = new_condition(
            "Progressing",
            "True",
            RS_UPDATED,
            format!("{subject} is progressing."),
            now,
        );
        if let Some(cur) = current.filter(|c| c.status.as_deref() == Some("True")) {
            c.last_transition_time = cur.last_transition_time;
        }
        // Progress restarts the deadline: the condition is replaced, not kept.
        remove_condition(status, "Progressing");
        set_condition(status, c);
    } else if timed_out(d, status, now) {
        set_condition(
            status,
            new_condition(
                "Progressing",
                "False",
                TIMED_OUT,
                format!("{subject} has timed out progressing."),
                now,
            ),
        );
    }
}

/// Copies a ReplicaSet's ReplicaFailure condition (the new one's first) onto the
/// Deployment, or clears it, so that `describe` shows why pods are not being created.
pub fn update_replica_failure(
    new: Option<&ReplicaSet>,
    all: &[&ReplicaSet],
    status: &mut DeploymentStatus,
    now: jiff::Timestamp,
) {
    let failure = |rs: &ReplicaSet| {
        rs.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_.as_deref() == Some("ReplicaFailure"))
            .cloned()
    };
    let found = match new {
        Some(rs) => failure(rs),
        None => all.iter().find_map(|rs| failure(rs)),
    };
    match found {
        Some(c) => {
            let mut d = new_condition(
                "ReplicaFailure",
                c.status.as_deref().unwrap_or("True"),
                c.reason.as_deref().unwrap_or_default(),
                c.message.unwrap_or_default(),
                now,
            );
            d.last_transition_time = c.last_transition_time.or(d.last_transition_time);
            set_condition(status, d);
        }
        None => remove_condition(status, "ReplicaFailure"),
    }
}

/// When to look again so that a stuck rollout is noticed at its deadline.
pub fn recheck_after(
    d: &Deployment,
    s: &DeploymentStatus,
    now: jiff::Timestamp,
) -> Option<std::time::Duration> {
    let secs = deadline(d)?;
    if is_complete(d, s) || timed_out(d, s, now) {
        return None;
    }
    let c = condition(s, "Progressing")?;
    let since = c.last_update_time.as_ref()?.0;
    let left = i64::from(secs) - now.duration_since(since).as_secs();
    Some(std::time::Duration::from_secs(
        u64::try_from(left.max(0)).unwrap_or(0) + 1,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(replicas: i32, deadline: i32) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "generation": 2},
            "spec": {"replicas": replicas, "progressDeadlineSeconds": deadline,
                     "selector": {}, "template": {}},
            "status": {"observedGeneration": 1},
        }))
        .expect("deployment")
    }

    fn rs(name: &str, replicas: i32, available: i32) -> ReplicaSet {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {}},
            "status": {"replicas": replicas, "readyReplicas": available, "availableReplicas": available},
        }))
        .expect("rs")
    }

    const F: Fenceposts = Fenceposts {
        max_surge: 1,
        max_unavailable: 0,
    };

    #[test]
    fn counts_add_up_and_availability_follows_the_bound() {
        let t = jiff::Timestamp::now();
        let (old, new) = (rs("old", 2, 2), rs("new", 2, 1));
        let s = calculate(&d(3, 600), Some(&new), &[&old, &new], F, t);
        assert_eq!(
            (
                s.replicas,
                s.updated_replicas,
                s.available_replicas,
                s.unavailable_replicas
            ),
            (Some(4), Some(2), Some(3), Some(1))
        );
        assert_eq!(s.observed_generation, Some(2));
        assert_eq!(
            condition(&s, "Available").and_then(|c| c.status.as_deref()),
            Some("True")
        );
        let s = calculate(&d(3, 600), Some(&new), &[&new], F, t);
        assert_eq!(
            condition(&s, "Available").and_then(|c| c.reason.as_deref()),
            Some("MinimumReplicasUnavailable")
        );
    }

    #[test]
    fn progress_restarts_the_deadline_and_its_absence_times_out() {
        let t0 = jiff::Timestamp::from_second(1_000_000).expect("time");
        let dep = d(3, 10);
        let new = rs("web-1", 1, 0);
        let mut s = calculate(&dep, Some(&new), &[&new], F, t0);
        update_progressing(&dep, Some(&new), &mut s, t0);
        let c = condition(&s, "Progressing").cloned().expect("progressing");
        assert_eq!(c.reason.as_deref(), Some(RS_UPDATED));
        assert_eq!(
            c.message.as_deref(),
            Some("ReplicaSet \"web-1\" is progressing.")
        );

        // No progress for longer than the deadline.
        let mut stuck = dep.clone();
        stuck.status = Some(s.clone());
        let later = t0 + jiff::SignedDuration::from_secs(11);
        let mut s2 = calculate(&stuck, Some(&new), &[&new], F, later);
        assert_eq!(
            recheck_after(&stuck, &s2, t0 + jiff::SignedDuration::from_secs(4)),
            Some(std::time::Duration::from_secs(7))
        );
        update_progressing(&stuck, Some(&new), &mut s2, later);
        let c = condition(&s2, "Progressing").cloned().expect("progressing");
        assert_eq!(
            (c.status.as_deref(), c.reason.as_deref()),
            (Some("False"), Some(TIMED_OUT))
        );
        assert_eq!(
            c.message.as_deref(),
            Some("ReplicaSet \"web-1\" has timed out progressing.")
        );
    }

    #[test]
    fn a_complete_rollout_says_so() {
        let t = jiff::Timestamp::now();
        let mut dep = d(3, 600);
        dep.metadata.generation = Some(1);
        let new = rs("web-2", 3, 3);
        let mut s = calculate(&dep, Some(&new), &[&new], F, t);
        assert!(is_complete(&dep, &s));
        update_progressing(&dep, Some(&new), &mut s, t);
        let c = condition(&s, "Progressing").cloned().expect("progressing");
        assert_eq!(c.reason.as_deref(), Some(NEW_RS_AVAILABLE));
        assert_eq!(
            c.message.as_deref(),
            Some("ReplicaSet \"web-2\" has successfully progressed.")
        );
    }
}
