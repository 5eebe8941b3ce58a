//! When a pod on a NoExecute-tainted node must go (Kubernetes' taint manager): at once if
//! some NoExecute taint is not tolerated; never if every taint is tolerated forever;
//! otherwise when the shortest matching `tolerationSeconds` has passed since its taint
//! was added (the taint's timeAdded, so that a controller restarting or changing leader
//! does not restart the count).
//!
//! Also when a pod already being deleted on an unreachable node is force-deleted: no agent
//! is there to finish the deletion, so once its grace period has passed the controller
//! removes it from the API (see the module doc of `node_lifecycle` for why).

use k8s_openapi::api::core::v1::{Pod, Taint, Toleration};

use super::taints::tolerates;

/// What to do with a pod on a tainted node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It tolerates every NoExecute taint for good (or there is none).
    Stay,
    /// Delete it now.
    EvictNow,
    /// Delete it at this time, unless the taints change first.
    EvictAt(jiff::Timestamp),
}

/// The pod's tolerations.
pub fn tolerations(pod: &Pod) -> &[Toleration] {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default()
}

/// The verdict for a pod with `tolerations` on a node with the NoExecute taints `taints`.
/// `since(taint)` is when the taint was added (its timeAdded, or when the controller first
/// saw it if it has none).
pub fn verdict(
    tolerations: &[Toleration],
    taints: &[Taint],
    since: impl Fn(&Taint) -> jiff::Timestamp,
    now: jiff::Timestamp,
) -> Verdict {
    let mut due: Option<jiff::Timestamp> = None;
    for taint in taints {
        // Kubernetes uses the first toleration that matches each taint.
        let Some(t) = tolerations.iter().find(|t| tolerates(t, taint)) else {
            return Verdict::EvictNow;
        };
        let Some(seconds) = t.toleration_seconds else {
            continue;
        };
        if seconds <= 0 {
            return Verdict::EvictNow;
        }
        let at = since(taint) + jiff::SignedDuration::from_secs(seconds);
        due = Some(due.map_or(at, |d| d.min(at)));
    }
    match due {
        None => Verdict::Stay,
        Some(at) if at <= now => Verdict::EvictNow,
        Some(at) => Verdict::EvictAt(at),
    }
}

/// When a pod being deleted may be removed without its agent: when its deletionTimestamp
/// (the delete's time plus its grace period) is reached. None for a pod not being deleted.
pub fn force_delete_due(pod: &Pod) -> Option<jiff::Timestamp> {
    pod.metadata.deletion_timestamp.as_ref().map(|t| t.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node_lifecycle::taints::{NO_EXECUTE, NOT_READY, UNREACHABLE};
    use serde_json::json;

    fn tol(v: serde_json::Value) -> Vec<Toleration> {
        serde_json::from_value(v).expect("tolerations")
    }

    fn taint(key: &str, added: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: NO_EXECUTE.into(),
            time_added: added
                .parse()
                .ok()
                .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time),
            value: None,
        }
    }

    fn since(t: &Taint) -> jiff::Timestamp {
        t.time_added
            .as_ref()
            .map_or(jiff::Timestamp::UNIX_EPOCH, |t| t.0)
    }

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().expect("time")
    }

    #[test]
    fn an_untolerated_taint_evicts_at_once() {
        let taints = [taint(UNREACHABLE, "2024-01-01T00:00:00Z")];
        let now = at("2024-01-01T00:00:01Z");
        assert_eq!(verdict(&[], &taints, since, now), Verdict::EvictNow);
        let other = tol(
            json!([{"key": NOT_READY, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]),
        );
        assert_eq!(verdict(&other, &taints, since, now), Verdict::EvictNow);
        assert_eq!(verdict(&[], &[], since, now), Verdict::Stay, "no taint");
    }

    #[test]
    fn toleration_seconds_count_from_the_taints_time_added() {
        let taints = [taint(UNREACHABLE, "2024-01-01T00:00:00Z")];
        let t = tol(
            json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]),
        );
        assert_eq!(
            verdict(&t, &taints, since, at("2024-01-01T00:04:00Z")),
            Verdict::EvictAt(at("2024-01-01T00:05:00Z"))
        );
        assert_eq!(
            verdict(&t, &taints, since, at("2024-01-01T00:05:00Z")),
            Verdict::EvictNow
        );
        let zero = tol(json!([{"operator": "Exists", "tolerationSeconds": 0}]));
        assert_eq!(
            verdict(&zero, &taints, since, at("2024-01-01T00:00:00Z")),
            Verdict::EvictNow
        );
    }

    #[test]
    fn tolerating_forever_stays_and_the_shortest_toleration_wins() {
        let taints = [
            taint(UNREACHABLE, "2024-01-01T00:00:00Z"),
            taint("maintenance", "2024-01-01T00:01:00Z"),
        ];
        let forever = tol(json!([{"operator": "Exists"}]));
        assert_eq!(
            verdict(&forever, &taints, since, at("2030-01-01T00:00:00Z")),
            Verdict::Stay
        );
        let both = tol(json!([
            {"key": UNREACHABLE, "operator": "Exists", "tolerationSeconds": 600},
            {"key": "maintenance", "operator": "Exists", "tolerationSeconds": 60}
        ]));
        assert_eq!(
            verdict(&both, &taints, since, at("2024-01-01T00:00:30Z")),
            Verdict::EvictAt(at("2024-01-01T00:02:00Z"))
        );
    }
}
