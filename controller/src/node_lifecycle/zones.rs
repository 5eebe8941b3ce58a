//! Zones and their disruption state, and the eviction rate each state allows, as
//! Kubernetes decides them (`ComputeZoneState`, `handleDisruption`, `ReducedQPSFunc`):
//!
//! - a zone is in **FullDisruption** when none of its nodes is ready, in
//!   **PartialDisruption** when more than two are not ready and they are at least
//!   `unhealthy_zone_threshold` of it, and **Normal** otherwise;
//! - Normal and FullDisruption zones taint at `node_eviction_rate` (a zone that is wholly
//!   down, while others are up, most likely lost its machines); PartialDisruption zones at
//!   `secondary_node_eviction_rate` when larger than `large_cluster_size_threshold` nodes,
//!   else not at all (a small zone losing most nodes is more likely a network problem,
//!   and evicting would pile the load on the few left);
//! - when **every** zone is in FullDisruption, the control plane is the likely one cut
//!   off: no node is tainted, the NoExecute readiness taints are removed from all nodes,
//!   and when nodes come back, every node gets a fresh grace period.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;

/// The zone label.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// The region label.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
/// A node with this label is left out of the zone's disruption count.
pub const EXCLUDE_DISRUPTION_LABEL: &str = "node.kubernetes.io/exclude-disruption";

/// A zone's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneState {
    /// Too few nodes not ready to worry.
    Normal,
    /// Many nodes not ready: evict slowly or not at all.
    PartialDisruption,
    /// No node ready.
    FullDisruption,
}

/// The thresholds and rates of the decisions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rates {
    /// Nodes tainted per second in a healthy zone.
    pub node_eviction_rate: f64,
    /// Nodes tainted per second in a partially disrupted zone larger than
    /// `large_cluster_size_threshold`.
    pub secondary_node_eviction_rate: f64,
    /// The share of not-ready nodes (more than two) that makes a zone partially disrupted.
    pub unhealthy_zone_threshold: f64,
    /// Zones up to this many nodes stop evicting when partially disrupted.
    pub large_cluster_size_threshold: usize,
}

/// The zone of a node: its region and zone labels ("" when it has neither).
pub fn zone_key(node: &Node) -> String {
    let labels = node.metadata.labels.as_ref();
    let get = |k: &str| labels.and_then(|l| l.get(k)).cloned().unwrap_or_default();
    let (region, zone) = (get(REGION_LABEL), get(ZONE_LABEL));
    if region.is_empty() && zone.is_empty() {
        String::new()
    } else {
        format!("{region}:\u{0}:{zone}")
    }
}

/// Is the node counted in its zone's disruption state?
pub fn counts_for_disruption(node: &Node) -> bool {
    !node
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(EXCLUDE_DISRUPTION_LABEL))
}

/// A zone's state from whether each of its nodes is ready.
pub fn zone_state(ready: &[bool], unhealthy_zone_threshold: f64) -> ZoneState {
    let ready_nodes = ready.iter().filter(|r| **r).count();
    let not_ready = ready.len() - ready_nodes;
    if ready_nodes == 0 && not_ready > 0 {
        ZoneState::FullDisruption
    } else if not_ready > 2 && not_ready as f64 / ready.len() as f64 >= unhealthy_zone_threshold {
        ZoneState::PartialDisruption
    } else {
        ZoneState::Normal
    }
}

/// Nodes per second a zone of `size` nodes in `state` may have tainted for eviction.
pub fn eviction_rate(state: ZoneState, size: usize, rates: &Rates) -> f64 {
    match state {
        ZoneState::Normal | ZoneState::FullDisruption => rates.node_eviction_rate,
        ZoneState::PartialDisruption if size > rates.large_cluster_size_threshold => {
            rates.secondary_node_eviction_rate
        }
        ZoneState::PartialDisruption => 0.0,
    }
}

/// What a change of zone states asks of the controller.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// Every zone is now fully disrupted: stop all tainting and remove the NoExecute
    /// readiness taints from every node.
    EnterClusterDisruption,
    /// Some node is ready again after a cluster-wide disruption: give every node a fresh
    /// grace period and set every zone's rate from its state.
    LeaveClusterDisruption,
    /// Set these zones' rates from their new states.
    Update(Vec<String>),
    /// Stay in the cluster-wide disruption.
    StayInClusterDisruption,
}

/// What to do when the zone states go from `old` to `new` (zones with no nodes left are
/// in neither).
pub fn plan(old: &BTreeMap<String, ZoneState>, new: &BTreeMap<String, ZoneState>) -> Plan {
    let all_full =
        |m: &BTreeMap<String, ZoneState>| m.values().all(|s| *s == ZoneState::FullDisruption);
    let was = all_full(old) && !old.is_empty();
    let is = all_full(new) && !new.is_empty();
    match (was, is) {
        (true, true) => Plan::StayInClusterDisruption,
        (false, true) => Plan::EnterClusterDisruption,
        (true, false) => Plan::LeaveClusterDisruption,
        (false, false) => Plan::Update(
            new.iter()
                .filter(|(zone, state)| old.get(*zone) != Some(*state))
                .map(|(zone, _)| zone.clone())
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATES: Rates = Rates {
        node_eviction_rate: 0.1,
        secondary_node_eviction_rate: 0.01,
        unhealthy_zone_threshold: 0.55,
        large_cluster_size_threshold: 50,
    };

    #[test]
    fn zone_states_follow_the_share_of_nodes_not_ready() {
        assert_eq!(zone_state(&[true, false], 0.55), ZoneState::Normal);
        assert_eq!(zone_state(&[false], 0.55), ZoneState::FullDisruption);
        assert_eq!(zone_state(&[false, false], 0.55), ZoneState::FullDisruption);
        // Two not ready of three is a lot, but never more than two: Normal.
        assert_eq!(zone_state(&[true, false, false], 0.55), ZoneState::Normal);
        assert_eq!(
            zone_state(&[true, true, true, false, false, false, false], 0.55),
            ZoneState::PartialDisruption,
            "4/7 ≥ 0.55"
        );
        assert_eq!(
            zone_state(&[true, true, true, true, false, false, false], 0.55),
            ZoneState::Normal,
            "3/7 < 0.55"
        );
        assert_eq!(zone_state(&[], 0.55), ZoneState::Normal);
    }

    #[test]
    fn rates_slow_down_or_stop_in_partial_disruption() {
        assert_eq!(eviction_rate(ZoneState::Normal, 3, &RATES), 0.1);
        assert_eq!(eviction_rate(ZoneState::FullDisruption, 3, &RATES), 0.1);
        assert_eq!(eviction_rate(ZoneState::PartialDisruption, 50, &RATES), 0.0);
        assert_eq!(
            eviction_rate(ZoneState::PartialDisruption, 51, &RATES),
            0.01
        );
    }

    #[test]
    fn a_cluster_wholly_down_stops_evicting_until_a_node_is_back() {
        let m = |v: &[(&str, ZoneState)]| -> BTreeMap<String, ZoneState> {
            v.iter().map(|(z, s)| (z.to_string(), *s)).collect()
        };
        use ZoneState::*;
        let normal = m(&[("a", Normal), ("b", Normal)]);
        let one_down = m(&[("a", FullDisruption), ("b", Normal)]);
        let all_down = m(&[("a", FullDisruption), ("b", FullDisruption)]);
        assert_eq!(plan(&normal, &one_down), Plan::Update(vec!["a".into()]));
        assert_eq!(plan(&one_down, &all_down), Plan::EnterClusterDisruption);
        assert_eq!(plan(&all_down, &all_down), Plan::StayInClusterDisruption);
        assert_eq!(plan(&all_down, &one_down), Plan::LeaveClusterDisruption);
        assert_eq!(plan(&normal, &normal), Plan::Update(vec![]));
        assert_eq!(
            plan(&BTreeMap::new(), &BTreeMap::new()),
            Plan::Update(vec![])
        );
    }

    #[test]
    fn zones_come_from_the_topology_labels() {
        let n: Node = serde_json::from_value(serde_json::json!({"metadata": {"name": "n",
            "labels": {ZONE_LABEL: "z1", REGION_LABEL: "r1"}}}))
        .expect("node");
        assert_eq!(zone_key(&n), "r1:\u{0}:z1");
        assert_eq!(zone_key(&Node::default()), "");
        assert!(counts_for_disruption(&n));
    }
}
