//! Eviction: the pods/eviction subresource, as Kubernetes serves it. An eviction is a
//! delete that a PodDisruptionBudget may refuse: when the pod is covered by a budget that
//! allows no disruption now, the answer is 429 TooManyRequests and nothing changes; when
//! it allows one, the budget's `disruptionsAllowed` is taken down by one and the pod
//! recorded in its `disruptedPods` (a write conditional on the budget's revision, so two
//! evictions can never spend the same disruption), then the pod is deleted with the
//! eviction's options. The disruption controller recomputes the budget from the pods.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::selector::LabelSelector;
use crate::storage::keys::namespace_prefix;
use crate::storage::{Commit, Cond, Op};
use crate::watch_cache::object::decode_stored;

use super::delete::DeleteOptions;
use super::{Api, MAX_RETRIES, ObjectRef, parse_body, stored_bytes};

/// The most evictions a budget may have in flight before the controller confirms them.
const MAX_DISRUPTED_PODS: usize = 2000;

/// Kubernetes' words when a budget refuses.
pub const REFUSED: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

/// A budget covering the pod, as stored.
struct Budget {
    key: String,
    revision: i64,
    object: Value,
}

fn labels(obj: &Value) -> BTreeMap<String, String> {
    obj["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Does the budget's selector select these labels? (policy/v1: a missing selector selects
/// nothing, an empty one everything.)
fn selects(budget: &Value, pod_labels: &BTreeMap<String, String>) -> bool {
    let selector = &budget["spec"]["selector"];
    if selector.is_null() {
        return false;
    }
    serde_json::from_value(selector.clone())
        .ok()
        .and_then(|s| LabelSelector::from_k8s(&s).ok())
        .is_some_and(|s| s.matches(pod_labels))
}

/// A pod whose disruption costs nothing: already going, finished, or never started.
fn free_to_evict(pod: &Value) -> bool {
    !pod["metadata"]["deletionTimestamp"].is_null()
        || matches!(
            pod["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed" | "Pending")
        )
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// The delete options an Eviction carries (`deleteOptions`).
fn delete_options(eviction: &Value, dry_run: bool) -> Result<DeleteOptions, ApiError> {
    let opts = &eviction["deleteOptions"];
    let grace = match &opts["gracePeriodSeconds"] {
        Value::Null => None,
        v => Some(v.as_i64().ok_or_else(|| {
            ApiError::bad_request("deleteOptions.gracePeriodSeconds must be an integer")
        })?),
    };
    if grace.is_some_and(|g| g < 0) {
        return Err(ApiError::bad_request(
            "deleteOptions.gracePeriodSeconds must not be negative",
        ));
    }
    // A dry run asked for in the body counts as much as one asked for on the request.
    let body_dry_run = opts["dryRun"]
        .as_array()
        .is_some_and(|d| d.iter().any(|v| v == "All"));
    let policy = opts["propagationPolicy"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    super::delete::policy_finalizer(&policy)?;
    Ok(DeleteOptions {
        dry_run: dry_run || body_dry_run,
        grace_period_seconds: grace,
        precondition_uid: opts["preconditions"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        precondition_resource_version: opts["preconditions"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        propagation_policy: policy,
    })
}

impl Api {
    /// Evicts pod `r.name` as the Eviction in `body` asks; returns a Success Status.
    pub async fn evict(
        &self,
        r: &ObjectRef,
        body: &[u8],
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let eviction = parse_body(body)?;
        if eviction["kind"].as_str() != Some("Eviction")
            || !matches!(
                eviction["apiVersion"].as_str(),
                Some("policy/v1" | "policy/v1beta1")
            )
        {
            return Err(ApiError::bad_request(
                "the body of pods/eviction must be a policy/v1 Eviction",
            ));
        }
        let named = eviction["metadata"]["name"].as_str().unwrap_or_default();
        if named != r.name {
            return Err(ApiError::bad_request(format!(
                "name in URL does not match name in Eviction object ({:?} and {named:?})",
                r.name
            )));
        }
        let opts = delete_options(&eviction, dry_run)?;
        let pod_ref = ObjectRef {
            subresource: String::new(),
            ..r.clone()
        };
        let at = self.locate(&pod_ref, true)?;
        for _ in 0..MAX_RETRIES {
            let (pod, revision) = self.current(&at, &r.name).await?;
            // The caller's preconditions are checked before a disruption is spent on a
            // delete that would refuse.
            let meta = &pod["metadata"];
            if !opts.precondition_uid.is_empty()
                && meta["uid"].as_str() != Some(opts.precondition_uid.as_str())
            {
                return Err(ApiError::conflict(
                    "pods",
                    "",
                    &r.name,
                    &format!(
                        "Precondition failed: UID in precondition: {}, UID in object meta: {}",
                        opts.precondition_uid,
                        meta["uid"].as_str().unwrap_or_default()
                    ),
                ));
            }
            if !opts.precondition_resource_version.is_empty()
                && opts.precondition_resource_version != revision.to_string()
            {
                return Err(ApiError::conflict(
                    "pods",
                    "",
                    &r.name,
                    "the object has been modified; please apply your changes to the latest version and try again",
                ));
            }
            let spend = if free_to_evict(&pod) {
                Spend::Nothing
            } else {
                let budgets = self.budgets_of(&at.namespace, &pod).await?;
                if budgets.len() > 1 {
                    return Err(ApiError::internal(
                        "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                    ));
                }
                match budgets.into_iter().next() {
                    None => Spend::Nothing,
                    Some(b) => decide(&b.object, is_ready(&pod))?.on(b),
                }
            };
            let spent = match &spend {
                Spend::One(budget) if !opts.dry_run => {
                    self.spend_disruption(budget, &r.name).await?
                }
                _ => true,
            };
            if !spent {
                // The budget changed under us: decide again on its new state.
                continue;
            }
            // Evicted without a disruption spent: only as the pod was judged, so a pod that
            // turned ready meanwhile is not let through for free.
            let mut opts = opts.clone();
            let pinned =
                matches!(spend, Spend::Nothing) && opts.precondition_resource_version.is_empty();
            if pinned {
                opts.precondition_resource_version = revision.to_string();
            }
            match self.delete(&pod_ref, &opts).await {
                Ok(_) => {
                    return Ok(json!({
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Success",
                    }));
                }
                // The pod changed since it was judged: judge it again.
                Err(e) if pinned && e.reason == crate::error::Reason::Conflict => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ApiError::too_many_requests(format!(
            "{REFUSED} The pod or its disruption budget kept changing; please try again"
        )))
    }

    /// The budgets in `namespace` whose selector selects `pod`, read from the store.
    async fn budgets_of(&self, namespace: &str, pod: &Value) -> Result<Vec<Budget>, ApiError> {
        let prefix = namespace_prefix("poddisruptionbudgets", namespace);
        let page = self.store().range(&prefix, prefix.as_bytes(), 0, 0).await?;
        let pod_labels = labels(pod);
        let mut out = Vec::new();
        for kv in page.kvs {
            let key = String::from_utf8_lossy(&kv.key).to_string();
            let object = decode_stored(&key, &kv.value, kv.mod_revision)
                .map_err(|e| ApiError::internal(e.to_string()))?;
            if selects(&object, &pod_labels) {
                out.push(Budget {
                    key,
                    revision: kv.mod_revision,
                    object,
                });
            }
        }
        Ok(out)
    }

    /// Takes one disruption from the budget for `pod`: false when the budget changed
    /// since it was read.
    async fn spend_disruption(&self, budget: &Budget, pod: &str) -> Result<bool, ApiError> {
        let mut updated = budget.object.clone();
        let allowed = updated["status"]["disruptionsAllowed"]
            .as_i64()
            .unwrap_or(0);
        updated["status"]["disruptionsAllowed"] = json!(allowed - 1);
        let now = serde_json::to_value(crate::meta::now()).unwrap_or(Value::Null);
        match updated["status"]["disruptedPods"].as_object_mut() {
            Some(m) => {
                m.insert(pod.to_string(), now);
            }
            None => updated["status"]["disruptedPods"] = json!({ pod: now }),
        }
        Ok(matches!(
            self.commit(
                &[Cond::ModRevision(budget.key.clone(), budget.revision)],
                vec![Op::Put(budget.key.clone(), stored_bytes(&updated))],
            )
            .await?,
            Commit::Done(_)
        ))
    }
}

/// What an eviction costs a budget.
enum Spend {
    /// Nothing: the pod's going disrupts nothing the budget counts.
    Nothing,
    /// One of its disruptions.
    One(Budget),
}

/// What an eviction of a pod (ready or not) costs `budget`, or why it is refused. A pod
/// that is not ready costs nothing when the budget is met without it (Kubernetes'
/// IfHealthyBudget), or always with AlwaysAllow.
fn decide(budget: &Value, ready: bool) -> Result<Cost, ApiError> {
    let status = &budget["status"];
    let healthy_enough = status["currentHealthy"].as_i64().unwrap_or(0)
        >= status["desiredHealthy"].as_i64().unwrap_or(0);
    let always = budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow";
    if !ready && (always || healthy_enough) && observed(budget) {
        return Ok(Cost::Free);
    }
    match refusal(budget) {
        Some(why) => Err(why),
        None => Ok(Cost::Disruption),
    }
}

/// The cost [`decide`] finds.
#[derive(Debug, PartialEq, Eq)]
enum Cost {
    Free,
    Disruption,
}

impl Cost {
    fn on(self, budget: Budget) -> Spend {
        match self {
            Cost::Free => Spend::Nothing,
            Cost::Disruption => Spend::One(budget),
        }
    }
}

/// Has the disruption controller seen the budget's current spec?
fn observed(budget: &Value) -> bool {
    budget["status"]["observedGeneration"].as_i64().unwrap_or(0)
        >= budget["metadata"]["generation"].as_i64().unwrap_or(0)
}

/// Why the budget allows no eviction now, if it does not.
fn refusal(budget: &Value) -> Option<ApiError> {
    let name = budget["metadata"]["name"].as_str().unwrap_or_default();
    if !observed(budget) {
        return Some(ApiError::too_many_requests(format!(
            "{REFUSED} The disruption budget {name} is still being processed by the server."
        )));
    }
    let status = &budget["status"];
    let allowed = status["disruptionsAllowed"].as_i64().unwrap_or(0);
    if allowed < 0 {
        return Some(ApiError::forbidden(format!(
            "pdb disruptions allowed is negative: the disruption budget {name} cannot be used until its status is fixed"
        )));
    }
    // Kubernetes' bound on the evictions a budget may hold in flight.
    if status["disruptedPods"]
        .as_object()
        .is_some_and(|m| m.len() > MAX_DISRUPTED_PODS)
    {
        return Some(ApiError::forbidden(format!(
            "DisruptedPods map too big - too many evictions not confirmed by the disruption budget {name}'s controller"
        )));
    }
    if allowed <= 0 {
        return Some(ApiError::too_many_requests(format!(
            "{REFUSED} The disruption budget {name} needs {} healthy pods and has {} currently",
            status["desiredHealthy"].as_i64().unwrap_or(0),
            status["currentHealthy"].as_i64().unwrap_or(0)
        )));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(allowed: i64, generation: i64, observed: i64) -> Value {
        json!({
            "metadata": {"name": "web", "generation": generation},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "minAvailable": 2},
            "status": {"disruptionsAllowed": allowed, "currentHealthy": 2 + allowed,
                       "desiredHealthy": 2, "observedGeneration": observed},
        })
    }

    #[test]
    fn a_budget_refuses_when_it_allows_nothing_or_is_not_yet_observed() {
        assert!(refusal(&budget(1, 1, 1)).is_none());
        let none = refusal(&budget(0, 1, 1)).expect("refused");
        assert_eq!(none.reason, crate::error::Reason::TooManyRequests);
        assert!(
            none.message
                .ends_with("The disruption budget web needs 2 healthy pods and has 2 currently"),
            "{}",
            none.message
        );
        assert!(
            refusal(&budget(3, 2, 1)).is_some(),
            "spec changed, not yet recomputed"
        );
    }

    #[test]
    fn a_pod_that_is_not_ready_goes_free_while_the_budget_is_met() {
        assert_eq!(decide(&budget(0, 1, 1), false).ok(), Some(Cost::Free));
        assert_eq!(decide(&budget(1, 1, 1), true).ok(), Some(Cost::Disruption));
        assert!(
            decide(&budget(0, 1, 1), true).is_err(),
            "ready, nothing allowed"
        );
        let mut short = budget(0, 1, 1);
        short["status"]["currentHealthy"] = json!(1);
        assert!(decide(&short, false).is_err(), "the budget is not met");
        short["spec"]["unhealthyPodEvictionPolicy"] = json!("AlwaysAllow");
        assert_eq!(decide(&short, false).ok(), Some(Cost::Free));
    }

    #[test]
    fn the_bodys_options_are_checked_and_its_dry_run_counts() {
        let with = |opts: Value| json!({"deleteOptions": opts});
        let dry = delete_options(&with(json!({"dryRun": ["All"]})), false).expect("valid");
        assert!(dry.dry_run);
        assert!(delete_options(&with(json!({"gracePeriodSeconds": -1})), false).is_err());
        assert!(delete_options(&with(json!({"propagationPolicy": "Sideways"})), false).is_err());
        let pinned = delete_options(
            &with(json!({"preconditions": {"uid": "u1", "resourceVersion": "7"}})),
            false,
        )
        .expect("valid");
        assert_eq!(
            (
                pinned.precondition_uid.as_str(),
                pinned.precondition_resource_version.as_str()
            ),
            ("u1", "7")
        );
    }

    #[test]
    fn selectors_follow_policy_v1() {
        let pod = BTreeMap::from([("app".to_string(), "web".to_string())]);
        assert!(selects(&budget(1, 1, 1), &pod));
        assert!(!selects(&json!({"spec": {}}), &pod), "no selector: nothing");
        assert!(
            selects(&json!({"spec": {"selector": {}}}), &pod),
            "empty: everything"
        );
    }

    #[test]
    fn finished_pending_and_terminating_pods_cost_no_disruption() {
        assert!(free_to_evict(&json!({"status": {"phase": "Pending"}})));
        assert!(free_to_evict(&json!({"status": {"phase": "Succeeded"}})));
        assert!(free_to_evict(
            &json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}, "status": {"phase": "Running"}})
        ));
        assert!(!free_to_evict(&json!({"status": {"phase": "Running"}})));
    }
}
