//! PreFilter: what the scheduler works out about a pod once per cycle (its requests, host
//! ports and owner) rather than once per node; the cache keeps the same record for every
//! pod it counts against a node.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use crate::resources::{Resources, pod_requests};

/// A host port: (protocol, host IP, port).
pub type HostPort = (String, String, i32);

/// A pod with its derived scheduling facts.
#[derive(Debug, Clone)]
pub struct PodInfo {
    /// The pod.
    pub pod: Arc<Pod>,
    /// What it requests of a node (init containers and overhead counted).
    pub requests: Resources,
    /// The host ports it holds.
    pub host_ports: Vec<HostPort>,
    /// The uid of its controlling owner (ReplicaSet, StatefulSet, …), whose pods are spread.
    pub owner: Option<String>,
}

impl PodInfo {
    /// Works out the facts for `pod`.
    pub fn new(pod: Arc<Pod>) -> Self {
        PodInfo {
            requests: pod.spec.as_ref().map(pod_requests).unwrap_or_default(),
            host_ports: host_ports(&pod),
            owner: controller_uid(&pod),
            pod,
        }
    }

    /// The node it names in spec.nodeName, if any.
    pub fn node_name(&self) -> Option<&str> {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .filter(|n| !n.is_empty())
    }
}

/// (protocol, host IP, port) of every hostPort a pod asks for.
pub fn host_ports(pod: &Pod) -> Vec<HostPort> {
    pod.spec
        .iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|h| *h > 0)?;
            let ip = p
                .host_ip
                .clone()
                .filter(|ip| !ip.is_empty())
                .unwrap_or_else(|| "0.0.0.0".into());
            Some((p.protocol.clone().unwrap_or_else(|| "TCP".into()), ip, port))
        })
        .collect()
}

fn controller_uid(pod: &Pod) -> Option<String> {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.clone())
}
