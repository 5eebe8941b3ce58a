//! Node health as the controller observes it: the last moment it saw a sign of life (a
//! renewal of the node's Lease, or a new heartbeat on its Ready condition), timed on the
//! controller's own clock when it sees the change, never from the timestamps inside the
//! objects, so that clock skew between machines cannot make a node look dead or alive.
//! A node silent for longer than its grace period gets all its conditions set to Unknown.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::time::Instant;

/// The conditions an agent posts, and that go Unknown when it stops.
pub const CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];
/// The reason of a condition the controller set to Unknown.
pub const REASON_UNKNOWN: &str = "NodeStatusUnknown";
/// Its message (Kubernetes' wording).
pub const MESSAGE_UNKNOWN: &str = "Kubelet stopped posting node status.";
/// The reason of a condition the agent never posted.
pub const REASON_NEVER_UPDATED: &str = "NodeStatusNeverUpdated";

#[derive(Debug, Clone)]
struct Probe {
    /// When the controller last saw the node alive.
    at: Instant,
    /// The Lease's renewTime seen then.
    lease_renew: Option<jiff::Timestamp>,
    /// The Ready condition's lastHeartbeatTime seen then.
    ready_heartbeat: Option<jiff::Timestamp>,
}

/// The last sign of life of every node.
#[derive(Debug, Default)]
pub struct Health {
    nodes: Mutex<HashMap<String, Probe>>,
}

fn ready_heartbeat(node: &Node) -> Option<jiff::Timestamp> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?
        .last_heartbeat_time
        .as_ref()
        .map(|t| t.0)
}

impl Health {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Probe>> {
        // Every update is a single insert: a panic elsewhere cannot leave it half-done.
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The node's Lease was seen with `renew` as its renewTime.
    pub fn lease_seen(&self, node: &str, renew: Option<jiff::Timestamp>, now: Instant) {
        let mut nodes = self.lock();
        match nodes.get_mut(node) {
            Some(p) if p.lease_renew == renew => {}
            Some(p) => {
                p.lease_renew = renew;
                p.at = now;
            }
            None => {
                nodes.insert(
                    node.to_string(),
                    Probe {
                        at: now,
                        lease_renew: renew,
                        ready_heartbeat: None,
                    },
                );
            }
        }
    }

    /// Looks at the node's Ready heartbeat; returns when the node was last seen alive. A
    /// node seen for the first time counts as alive now: a controller that just started
    /// gives every node a full grace period.
    pub fn observe(&self, node: &Node, now: Instant) -> Instant {
        let name = node.metadata.name.clone().unwrap_or_default();
        let beat = ready_heartbeat(node);
        let mut nodes = self.lock();
        let p = nodes.entry(name).or_insert(Probe {
            at: now,
            lease_renew: None,
            ready_heartbeat: beat,
        });
        if p.ready_heartbeat != beat {
            p.ready_heartbeat = beat;
            p.at = now;
        }
        p.at
    }

    /// Counts every node as seen alive now (leaving a cluster-wide disruption, when the
    /// silence was more likely the control plane's network than the nodes).
    pub fn reset_all(&self, now: Instant) {
        for p in self.lock().values_mut() {
            p.at = now;
        }
    }

    /// The node is gone.
    pub fn forget(&self, node: &str) {
        self.lock().remove(node);
    }
}

/// Has a node last seen alive at `last` been silent for longer than `grace`?
pub fn is_stale(last: Instant, now: Instant, grace: Duration) -> bool {
    now.saturating_duration_since(last) > grace
}

/// The node's conditions with every agent-posted one set to Unknown, or None when they
/// already all are. A condition keeps its heartbeat time; it gets `now` as transition time
/// when its status changes; one never posted is added (heartbeat: the node's creation).
pub fn unknown_conditions(node: &Node, now: jiff::Timestamp) -> Option<Vec<NodeCondition>> {
    let mut conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut changed = false;
    for type_ in CONDITIONS {
        match conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) if c.status == "Unknown" => {}
            Some(c) => {
                c.status = "Unknown".into();
                c.reason = Some(REASON_UNKNOWN.into());
                c.message = Some(MESSAGE_UNKNOWN.into());
                c.last_transition_time = Some(Time(now));
                changed = true;
            }
            None => {
                conditions.push(NodeCondition {
                    type_: type_.into(),
                    status: "Unknown".into(),
                    reason: Some(REASON_NEVER_UPDATED.into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_heartbeat_time: node.metadata.creation_timestamp.clone(),
                    last_transition_time: Some(Time(now)),
                });
                changed = true;
            }
        }
    }
    changed.then_some(conditions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(heartbeat: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "n1", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "status": {"conditions": [
                {"type": "Ready", "status": "True", "lastHeartbeatTime": heartbeat,
                 "lastTransitionTime": "2024-01-01T00:00:00Z"},
                {"type": "MemoryPressure", "status": "False"}
            ]}
        }))
        .expect("node")
    }

    #[tokio::test(start_paused = true)]
    async fn silence_is_timed_from_the_controllers_own_observations() {
        let h = Health::default();
        let grace = Duration::from_secs(40);
        let start = Instant::now();
        let n = node("2024-01-01T00:00:00Z");
        assert_eq!(h.observe(&n, start), start, "first sight counts as alive");
        // A renewTime far in the past (a skewed clock) still counts when it changes.
        let t = |s: &str| s.parse::<jiff::Timestamp>().ok();
        tokio::time::advance(Duration::from_secs(30)).await;
        h.lease_seen("n1", t("1999-01-01T00:00:00Z"), Instant::now());
        let renewed = Instant::now();
        assert_eq!(h.observe(&n, renewed), renewed);
        tokio::time::advance(Duration::from_secs(30)).await;
        // The same renewTime seen again is no new sign of life.
        h.lease_seen("n1", t("1999-01-01T00:00:00Z"), Instant::now());
        assert_eq!(h.observe(&n, Instant::now()), renewed);
        assert!(!is_stale(renewed, Instant::now(), grace));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(is_stale(renewed, Instant::now(), grace));
        // A new Ready heartbeat is one.
        let beat = node("2024-01-01T00:01:00Z");
        assert_eq!(h.observe(&beat, Instant::now()), Instant::now());
    }

    #[test]
    fn a_silent_node_gets_every_condition_unknown() {
        let now: jiff::Timestamp = "2024-01-02T00:00:00Z".parse().expect("time");
        let n = node("2024-01-01T00:00:00Z");
        let conditions = unknown_conditions(&n, now).expect("changed");
        let ready = conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .expect("Ready");
        assert_eq!(ready.status, "Unknown");
        assert_eq!(ready.reason.as_deref(), Some(REASON_UNKNOWN));
        assert_eq!(ready.message.as_deref(), Some(MESSAGE_UNKNOWN));
        assert_eq!(ready.last_transition_time, Some(Time(now)));
        assert_eq!(
            ready.last_heartbeat_time.as_ref().map(|t| t.0.to_string()),
            Some("2024-01-01T00:00:00Z".to_string()),
            "the heartbeat is the agent's, kept"
        );
        let disk = conditions
            .iter()
            .find(|c| c.type_ == "DiskPressure")
            .expect("added");
        assert_eq!(disk.reason.as_deref(), Some(REASON_NEVER_UPDATED));
        assert_eq!(conditions.len(), 4);
        let mut marked = n;
        marked
            .status
            .get_or_insert_with(Default::default)
            .conditions = Some(conditions);
        assert!(
            unknown_conditions(&marked, now).is_none(),
            "already Unknown"
        );
    }
}
