//! The scheduler's cache: every node with the aggregates of the pods on it, kept
//! incrementally from informer events, plus pods *assumed* on a node from the moment they
//! are chosen until the informer shows them bound (or their binding fails and the
//! assumption is rolled back). Each scheduling cycle works on a [`Snapshot`], brought up
//! to date by copying only the nodes that changed since the last one.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};

use crate::node_info::NodeInfo;
use crate::pod_info::PodInfo;

#[derive(Debug)]
struct PodState {
    node: String,
    info: PodInfo,
    /// Chosen by us, not yet seen bound by the informer.
    assumed: bool,
}

/// A node's aggregates; `info.node` is absent while pods are known on a node the informer
/// has not shown (or no longer shows).
#[derive(Debug)]
struct NodeEntry {
    info: Arc<NodeInfo>,
    present: bool,
}

/// Nodes and the pods counted against them.
#[derive(Debug, Default)]
pub struct Cache {
    nodes: HashMap<String, NodeEntry>,
    pods: HashMap<String, PodState>,
    /// Nodes changed since the last snapshot.
    dirty: HashSet<String>,
}

/// A consistent view of every node for one scheduling cycle.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    nodes: Vec<Arc<NodeInfo>>,
    index: HashMap<String, usize>,
}

impl Snapshot {
    /// Every node, in a stable order.
    pub fn nodes(&self) -> &[Arc<NodeInfo>] {
        &self.nodes
    }

    /// One node by name.
    pub fn get(&self, name: &str) -> Option<&Arc<NodeInfo>> {
        self.index.get(name).map(|i| &self.nodes[*i])
    }
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

impl Cache {
    fn entry(&mut self, name: &str) -> &mut NodeEntry {
        self.dirty.insert(name.to_string());
        self.nodes
            .entry(name.to_string())
            .or_insert_with(|| NodeEntry {
                info: Arc::new(NodeInfo::from_arc(Arc::new(Node {
                    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                        name: Some(name.to_string()),
                        ..Default::default()
                    },
                    ..Default::default()
                }))),
                present: false,
            })
    }

    /// A node was added or changed.
    pub fn upsert_node(&mut self, node: Arc<Node>) {
        let name = node.metadata.name.clone().unwrap_or_default();
        let e = self.entry(&name);
        Arc::make_mut(&mut e.info).set_node(node);
        e.present = true;
    }

    /// A node was deleted; its pods stay counted until they are deleted too.
    pub fn remove_node(&mut self, name: &str) {
        let has_pods = self
            .nodes
            .get(name)
            .is_some_and(|e| e.info.requested.pods > 0);
        self.dirty.insert(name.to_string());
        if has_pods {
            if let Some(e) = self.nodes.get_mut(name) {
                e.present = false;
            }
        } else {
            self.nodes.remove(name);
        }
    }

    fn place(&mut self, key: &str, node: &str, info: PodInfo, assumed: bool) {
        self.unplace(key);
        Arc::make_mut(&mut self.entry(node).info).add_pod(&info);
        self.pods.insert(
            key.to_string(),
            PodState {
                node: node.to_string(),
                info,
                assumed,
            },
        );
    }

    fn unplace(&mut self, key: &str) -> Option<PodState> {
        let state = self.pods.remove(key)?;
        let node = state.node.clone();
        let gone = {
            let e = self.entry(&node);
            Arc::make_mut(&mut e.info).remove_pod(&state.info);
            !e.present && e.info.requested.pods == 0
        };
        if gone {
            self.nodes.remove(&node);
        }
        Some(state)
    }

    /// A pod was added or changed, as the informer shows it.
    pub fn upsert_pod(&mut self, key: &str, pod: Arc<Pod>) {
        let info = PodInfo::new(pod);
        match info.node_name().map(str::to_string) {
            Some(node) if !is_terminal(&info.pod) => {
                // Bound: counted from the informer's copy from now on (this confirms an
                // assumption, or moves the pod if someone else bound it elsewhere).
                let same = self.pods.get(key).is_some_and(|s| {
                    !s.assumed
                        && s.node == node
                        && s.info.requests == info.requests
                        && s.info.host_ports == info.host_ports
                });
                if !same {
                    self.place(key, &node, info, false);
                }
            }
            // An unbound pod we assumed stays assumed until its binding shows up.
            None if self.pods.get(key).is_some_and(|s| s.assumed) => {}
            // Unbound, or finished (a finished pod holds nothing).
            _ => {
                self.unplace(key);
            }
        }
    }

    /// A pod was deleted.
    pub fn remove_pod(&mut self, key: &str) {
        self.unplace(key);
    }

    /// Reserve: counts a pod against the node chosen for it while it is being bound.
    pub fn assume(&mut self, key: &str, pod: PodInfo, node: &str) {
        self.place(key, node, pod, true);
    }

    /// The binding failed: the pod no longer counts against the node.
    pub fn forget(&mut self, key: &str) {
        if self.pods.get(key).is_some_and(|s| s.assumed) {
            self.unplace(key);
        }
    }

    /// Is the pod assumed (chosen, binding not yet seen)?
    pub fn is_assumed(&self, key: &str) -> bool {
        self.pods.get(key).is_some_and(|s| s.assumed)
    }

    /// Brings `snapshot` up to date, copying only the nodes that changed.
    pub fn update_snapshot(&mut self, snapshot: &mut Snapshot) {
        for name in self.dirty.drain() {
            let current = self
                .nodes
                .get(&name)
                .filter(|e| e.present)
                .map(|e| e.info.clone());
            match (current, snapshot.index.get(&name).copied()) {
                (Some(info), Some(i)) => snapshot.nodes[i] = info,
                (Some(info), None) => {
                    snapshot.index.insert(name, snapshot.nodes.len());
                    snapshot.nodes.push(info);
                }
                (None, Some(i)) => {
                    snapshot.index.remove(&name);
                    snapshot.nodes.swap_remove(i);
                    if let Some(moved) = snapshot.nodes.get(i) {
                        snapshot.index.insert(moved.name().to_string(), i);
                    }
                }
                (None, None) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name}, "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}}))
                .expect("node"),
        )
    }

    fn pod(name: &str, node: Option<&str>, phase: Option<&str>) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"nodeName": node, "containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]},
                "status": {"phase": phase}
            }))
            .expect("pod"),
        )
    }

    fn cpu(s: &Snapshot, node: &str) -> i64 {
        s.get(node).map_or(-1, |n| n.requested.milli_cpu)
    }

    #[test]
    fn an_assumed_pod_counts_until_confirmed_and_only_once() {
        let mut c = Cache::default();
        let mut s = Snapshot::default();
        c.upsert_node(node("n1"));
        c.upsert_pod("default/p", pod("p", None, None));
        c.update_snapshot(&mut s);
        assert_eq!(cpu(&s, "n1"), 0, "pending pods hold nothing");

        c.assume("default/p", PodInfo::new(pod("p", None, None)), "n1");
        // A status update of the still-unbound pod keeps the assumption.
        c.upsert_pod("default/p", pod("p", None, Some("Pending")));
        c.update_snapshot(&mut s);
        assert_eq!(cpu(&s, "n1"), 1000);
        assert!(c.is_assumed("default/p"));

        c.upsert_pod("default/p", pod("p", Some("n1"), Some("Pending")));
        c.update_snapshot(&mut s);
        assert_eq!(cpu(&s, "n1"), 1000, "confirmed, not counted twice");
        assert!(!c.is_assumed("default/p"));

        c.upsert_pod("default/p", pod("p", Some("n1"), Some("Succeeded")));
        c.update_snapshot(&mut s);
        assert_eq!(cpu(&s, "n1"), 0, "finished pods hold nothing");
    }

    #[test]
    fn a_failed_binding_is_rolled_back() {
        let mut c = Cache::default();
        let mut s = Snapshot::default();
        c.upsert_node(node("n1"));
        c.assume("default/p", PodInfo::new(pod("p", None, None)), "n1");
        c.update_snapshot(&mut s);
        assert_eq!(cpu(&s, "n1"), 1000);
        c.forget("default/p");
        c.update_snapshot(&mut s);
        assert_eq!(cpu(&s, "n1"), 0);
    }

    #[test]
    fn snapshots_follow_nodes_coming_and_going() {
        let mut c = Cache::default();
        let mut s = Snapshot::default();
        for n in ["a", "b", "c"] {
            c.upsert_node(node(n));
        }
        c.update_snapshot(&mut s);
        let before = s.nodes()[0].clone();
        c.upsert_pod("default/p", pod("p", Some("c"), None));
        c.update_snapshot(&mut s);
        assert!(
            Arc::ptr_eq(&before, &s.nodes()[0]) || before.name() == "c",
            "unchanged nodes are shared, not copied"
        );
        c.remove_node("a");
        c.update_snapshot(&mut s);
        let mut names: Vec<&str> = s.nodes().iter().map(|n| n.name()).collect();
        names.sort_unstable();
        assert_eq!(names, vec!["b", "c"]);
        assert_eq!(cpu(&s, "c"), 1000);

        // A pod bound to a node the informer has not shown yet: counted once it appears.
        c.upsert_pod("default/q", pod("q", Some("d"), None));
        c.update_snapshot(&mut s);
        assert!(s.get("d").is_none());
        c.upsert_node(node("d"));
        c.update_snapshot(&mut s);
        assert_eq!(cpu(&s, "d"), 1000);
        c.remove_node("d");
        c.remove_pod("default/q");
        c.update_snapshot(&mut s);
        assert!(s.get("d").is_none());
        assert_eq!(s.nodes().len(), 2);
    }
}
